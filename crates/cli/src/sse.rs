//! A server-sent-events reader: bytes in, whole events out. Lines may end in
//! `\n`, `\r\n` or `\r`, and chunks may split anywhere, even inside a UTF-8
//! character or between `\r` and `\n`.

/// One dispatched event: its `event:` name (default `message`) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Largest line kept; a longer line is a broken stream and is dropped rather
/// than letting it grow memory without bound.
const MAX_LINE_BYTES: usize = 4 << 20;

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`; a leading `\n` belongs to it.
    after_cr: bool,
    overlong: bool,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.end_line(&mut out);
                    self.after_cr = true;
                }
                _ if self.line.len() >= MAX_LINE_BYTES => self.overlong = true,
                _ => self.line.push(b),
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let raw = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.overlong) {
            return;
        }
        let line = String::from_utf8_lossy(&raw);
        if line.is_empty() {
            // A blank line dispatches what was gathered; an event with no data is dropped, per the spec.
            let event = self.event.take();
            if !self.data.is_empty() {
                let data = std::mem::take(&mut self.data).join("\n");
                out.push(SseEvent {
                    event: event.unwrap_or_else(|| "message".to_string()),
                    data,
                });
            }
            return;
        }
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => self.data.push(value.to_string()),
            _ => {} // id, retry and unknown fields do not matter to a one-shot tail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() {
        // Proves events are assembled correctly however the byte stream is chunked.
        let stream = b"event: session.joined\ndata: {\"seq\":1}\n\n: keep-alive\n\nevent: sweep\ndata: {\"seq\":2}\n\n";
        let whole = SseParser::new().feed(stream);
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: "session.joined".into(),
                    data: "{\"seq\":1}".into()
                },
                SseEvent {
                    event: "sweep".into(),
                    data: "{\"seq\":2}".into()
                },
            ]
        );
        for split in 1..stream.len() {
            let mut parser = SseParser::new();
            let mut events = parser.feed(&stream[..split]);
            events.extend(parser.feed(&stream[split..]));
            assert_eq!(events, whole, "split at {split}");
        }
    }

    #[test]
    fn handles_crlf_cr_multiline_data_and_defaults() {
        // Proves CRLF and CR line ends, multi-line data and the default event name follow the SSE spec.
        let mut parser = SseParser::new();
        let mut events = parser.feed(b"data: a\r\ndata:b\r");
        events.extend(parser.feed(b"\n\r\nevent: x\rdata\r\r"));
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "message".into(),
                    data: "a\nb".into()
                },
                SseEvent {
                    event: "x".into(),
                    data: "".into()
                },
            ]
        );
    }

    #[test]
    fn events_without_data_are_dropped() {
        // Proves an `event:` line with no data is not dispatched and does not leak into the next event.
        let mut parser = SseParser::new();
        assert!(parser.feed(b"event: lonely\n\n").is_empty());
        assert_eq!(
            parser.feed(b"data: 1\n\n"),
            vec![SseEvent {
                event: "message".into(),
                data: "1".into()
            }]
        );
    }
}
