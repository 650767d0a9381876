//! The shim's stdin guard (the CLI's `mcp::stdio::StdioTransport`): what an
//! MCP client writes, line by line, before rmcp sees any of it.

use std::io::Cursor;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rmcp::transport::Transport;
use serde_json::Value;
use tokio::io::AsyncWrite;

use crate::runtime::block_on;
use crate::stdio_guard::StdioTransport;

/// What the guard wrote back to the client, kept after the transport ends.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<u8>>>);

impl AsyncWrite for Written {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Any bytes as the client's stdin: every line is passed on as one message,
/// answered with one JSON-RPC error line, or dropped (never more than one
/// of these); every answer is a whole JSON-RPC error line.
pub fn stdin_guard(data: &[u8]) {
    let written = Written::default();
    let passed = block_on(async {
        let mut transport = StdioTransport::new(Cursor::new(data.to_vec()), written.clone());
        let mut passed = 0usize;
        while let Some(message) = transport.receive().await {
            serde_json::to_value(&message).expect("a passed message encodes");
            passed += 1;
        }
        transport
            .close()
            .await
            .expect("closing an in-memory writer");
        passed
    });
    let out = written.0.lock().expect("not poisoned").clone();
    let out = String::from_utf8(out).expect("answers are UTF-8");
    assert!(
        out.is_empty() || out.ends_with('\n'),
        "half a line written: {out:?}"
    );
    let mut answers = 0usize;
    for line in out.lines() {
        let answer: Value = serde_json::from_str(line).expect("an answer is one JSON line");
        assert_eq!(answer["jsonrpc"], "2.0", "{line}");
        assert!(answer["error"]["code"].is_i64(), "{line}");
        answers += 1;
    }
    let lines = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    assert!(
        passed + answers <= lines,
        "{lines} lines gave {passed} messages and {answers} answers"
    );
}
