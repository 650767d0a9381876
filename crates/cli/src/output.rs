//! Human output: tables, relative times, and making peer text safe for a terminal.

use std::time::{SystemTime, UNIX_EPOCH};

use muster_core::Millis;

/// Wall clock now, in the daemon's unit.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// How long ago `then` was, e.g. "4s ago", "12m ago", "3h ago", "2d ago".
/// A time slightly in the future (clock skew between hosts) reads "just now".
pub fn ago(then: Millis, now: Millis) -> String {
    let ms = now.saturating_sub(then);
    if ms < 1_000 {
        return "just now".to_string();
    }
    format!("{} ago", span(ms))
}

/// A positive span in its largest whole unit: "4s", "12m", "3h", "2d".
pub fn span(ms: Millis) -> String {
    let s = ms / 1_000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m", s / 60),
        3_600..=86_399 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Wall-clock time of day in UTC, `HH:MM:SSZ` (the CLI carries no time-zone database).
pub fn clock_utc(at: Millis) -> String {
    let secs = at.div_euclid(1_000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// The first 8 characters of a session id; operator principals (`op:…`) whole.
pub fn short_id(id: &str) -> String {
    if id.starts_with("op:") {
        id.to_string()
    } else {
        id.chars().take(8).collect()
    }
}

/// Peer-supplied text with control characters (terminal escapes, bidi
/// overrides, zero-width marks) replaced, so it cannot rewrite the screen.
/// Newlines and tabs are kept only when `multiline`.
pub fn clean(text: &str, multiline: bool) -> String {
    text.chars()
        .map(|c| match c {
            '\n' if multiline => '\n',
            '\t' if multiline => '\t',
            '\n' | '\t' => ' ',
            c if c.is_control() || is_invisible(c) => '\u{FFFD}',
            c => c,
        })
        .collect()
}

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// One line of text cut to `max` characters with an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A plain left-aligned table; the last column is not padded.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i + 1 < columns {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
                } else {
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes text to stdout and flushes. Returns false if stdout is gone (a closed
/// pipe, as in `muster tail | head`), which callers treat as "stop", never a panic.
pub fn emit(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}

/// Writes one line to stdout (see `emit`).
pub fn emit_line(text: &str) -> bool {
    emit(&format!("{text}\n"))
}

/// Prints a JSON value as one pretty document on stdout.
pub fn print_json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    emit_line(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_uses_the_largest_whole_unit() {
        // Proves relative times read "4s ago", "12m ago", "3h ago", "2d ago", and skew reads "just now".
        let now = 1_000_000_000;
        assert_eq!(ago(now - 4_000, now), "4s ago");
        assert_eq!(ago(now - 12 * 60_000 - 5_000, now), "12m ago");
        assert_eq!(ago(now - 3 * 3_600_000, now), "3h ago");
        assert_eq!(ago(now - 2 * 86_400_000, now), "2d ago");
        assert_eq!(ago(now - 300, now), "just now");
        assert_eq!(ago(now + 5_000, now), "just now");
    }

    #[test]
    fn clock_and_short_ids() {
        // Proves UTC clock formatting and 8-character ids that keep operator principals whole.
        assert_eq!(clock_utc(3_600_000 + 2 * 60_000 + 3_000), "01:02:03Z");
        assert_eq!(short_id("1a2b3c4d-5e6f-7a8b"), "1a2b3c4d");
        assert_eq!(short_id("op:alice"), "op:alice");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn clean_strips_terminal_escapes_and_invisible_marks() {
        // Proves peer text cannot smuggle ANSI escapes or bidi overrides onto the terminal.
        assert_eq!(clean("hi\x1b[2Jthere", false), "hi\u{FFFD}[2Jthere");
        assert_eq!(clean("a\u{202E}b", false), "a\u{FFFD}b");
        assert_eq!(clean("one\ntwo", false), "one two");
        assert_eq!(clean("one\ntwo", true), "one\ntwo");
    }

    #[test]
    fn table_aligns_columns_and_truncates() {
        // Proves tables pad every column but the last and that long cells are cut with an ellipsis.
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide-cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide-cell  x\n");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
