//! The shim's stdio, guarded: every line from the client is checked before
//! the MCP server sees it, and a line that is not a JSON-RPC message gets a
//! JSON-RPC error (-32700 parse error, -32600 invalid request) instead of
//! silence. Our error lines and the server's messages share stdout whole
//! line by whole line, so they never interleave mid-message.

use serde_json::{json, Value};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio::sync::mpsc;

/// Stdin as an async reader: a pipe (what MCP clients give us) is read
/// directly by the runtime; anything else goes through tokio's blocking
/// reader. The pipe path saves a thread hand-off on every message.
pub fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    use std::os::fd::AsFd;
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok());
    match pipe {
        Some(p) => Box::new(p),
        None => Box::new(tokio::io::stdin()),
    }
}

/// Stdout as an async writer, a pipe written directly where possible.
pub fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    use std::os::fd::AsFd;
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok());
    match pipe {
        Some(p) => Box::new(p),
        None => Box::new(tokio::io::stdout()),
    }
}

/// Longest line accepted from the client (a tool call with a full message
/// body is a few kilobytes).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The fields that make a JSON-RPC message, read without building the rest
/// (this runs on every line, so it borrows and skips what it does not need).
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// Why a client line is refused, as a JSON-RPC error response.
fn refusal(line: &[u8]) -> Option<Value> {
    let error = |id: Value, code: i64, message: String| {
        Some(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
    };
    if line.len() > MAX_LINE_BYTES {
        return error(
            Value::Null,
            -32600,
            format!("message over {MAX_LINE_BYTES} bytes"),
        );
    }
    let probe: Probe = match serde_json::from_slice(line) {
        Ok(p) => p,
        Err(e) if e.is_data() => {
            let what = if line.first() == Some(&b'[') {
                "expected one JSON-RPC object (batches are not supported)".to_string()
            } else {
                format!("not a JSON-RPC message: {e}")
            };
            return error(Value::Null, -32600, format!("invalid request: {what}"));
        }
        Err(e) => return error(Value::Null, -32700, format!("parse error: {e}")),
    };
    let id = probe.id.clone().unwrap_or(Value::Null);
    if probe.jsonrpc.as_deref() != Some("2.0") {
        return error(
            id,
            -32600,
            "invalid request: \"jsonrpc\" must be \"2.0\"".into(),
        );
    }
    let is_call = probe.method.is_some();
    let is_answer = probe.id.is_some() && (probe.result.is_some() || probe.error.is_some());
    if !is_call && !is_answer {
        return error(
            id,
            -32600,
            "invalid request: neither a method call nor a response".into(),
        );
    }
    None
}

/// Copies valid client lines from `input` into `to_server`; answers the
/// others on `errors`. Ends (closing `to_server`) when `input` closes.
pub async fn filter_input(
    input: impl AsyncRead + Unpin,
    mut to_server: DuplexStream,
    errors: mpsc::Sender<Value>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Read at most one byte past the limit so a huge line cannot grow the buffer without bound.
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && line.len() > MAX_LINE_BYTES {
            // Discard the rest of the oversized line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = (&mut reader)
                    .take(64 * 1024)
                    .read_until(b'\n', &mut rest)
                    .await?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        match refusal(trimmed) {
            None => {
                to_server.write_all(trimmed).await?;
                to_server.write_all(b"\n").await?;
            }
            Some(answer) => {
                let _ = errors.send(answer).await;
            }
        }
    }
}

/// Writes the server's output and our error answers to `output`, whole lines only.
pub async fn merge_output(
    from_server: DuplexStream,
    mut errors: mpsc::Receiver<Value>,
    mut output: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let mut lines = BufReader::new(from_server);
    let mut line = Vec::new();
    let mut errors_open = true;
    loop {
        tokio::select! {
            n = lines.read_until(b'\n', &mut line) => {
                if n? == 0 {
                    return Ok(());
                }
                output.write_all(&line).await?;
                output.flush().await?;
                line.clear();
            }
            answer = errors.recv(), if errors_open => match answer {
                Some(answer) => {
                    output.write_all(format!("{answer}\n").as_bytes()).await?;
                    output.flush().await?;
                }
                None => errors_open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_json_rpc() {
        assert_eq!(refusal(b"{bad json").unwrap()["error"]["code"], -32700);
        assert_eq!(refusal(b"[1,2]").unwrap()["error"]["code"], -32600);
        assert_eq!(refusal(br#"{"id":3,"method":"x"}"#).unwrap()["id"], 3);
        assert_eq!(
            refusal(br#"{"jsonrpc":"2.0","id":4}"#).unwrap()["error"]["code"],
            -32600
        );
        assert!(refusal(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_none());
        assert!(refusal(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_none());
        assert!(refusal(br#"{"jsonrpc":"2.0","id":9,"result":{}}"#).is_none());
    }

    #[tokio::test]
    async fn bad_lines_are_answered_and_good_ones_pass_through() {
        let input = b"{bad\n{\"jsonrpc\":\"2.0\",\"method\":\"m\"}\n\n".to_vec();
        let (to_server, mut server_side) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(8);
        filter_input(&input[..], to_server, tx).await.unwrap();
        let mut passed = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut server_side, &mut passed)
            .await
            .unwrap();
        assert_eq!(passed, "{\"jsonrpc\":\"2.0\",\"method\":\"m\"}\n");
        assert_eq!(rx.recv().await.unwrap()["error"]["code"], -32700);
    }

    #[tokio::test]
    async fn an_oversized_line_is_refused_and_the_next_one_still_passes() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\n{\"jsonrpc\":\"2.0\",\"method\":\"m\"}\n");
        let (to_server, mut server_side) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(8);
        filter_input(&input[..], to_server, tx).await.unwrap();
        let mut passed = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut server_side, &mut passed)
            .await
            .unwrap();
        assert_eq!(passed, "{\"jsonrpc\":\"2.0\",\"method\":\"m\"}\n");
        assert_eq!(rx.recv().await.unwrap()["error"]["code"], -32600);
    }
}
