//! The shim's stdio, guarded: every line from the client is checked before
//! the MCP server sees it, and a line that is not a JSON-RPC message gets a
//! JSON-RPC error (-32700 parse error, -32600 invalid request) instead of
//! silence. Our error lines and the server's messages share stdout whole
//! line by whole line, so they never interleave mid-message.

use std::future::Future;
use std::sync::Arc;

use rmcp::model::ErrorData;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::RoleServer;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

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

/// The shim's MCP transport over stdio: reads the client's lines, answers
/// the malformed ones itself (see [`refusal`]) and hands the rest, parsed,
/// to the MCP server; writes each outgoing message as one whole line with a
/// single write. Our error lines and the server's messages share one
/// writer, taken whole line by whole line, so they never interleave.
pub struct StdioTransport<R, W> {
    input: BufReader<R>,
    /// The line being read (kept across cancelled reads: `receive` is
    /// polled inside a `select!`), at most `MAX_LINE_BYTES + 1` bytes.
    line: Vec<u8>,
    /// The line being read went past the limit; the rest of it is dropped.
    over: bool,
    output: Arc<Mutex<Option<W>>>,
    /// Our own answers still being written; `close` waits for them.
    answering: Vec<tokio::task::JoinHandle<()>>,
    /// Answers some requests without rmcp (see [`QuickPath`]).
    quick: Option<QuickPath>,
}

/// A future that yields one whole answer line.
pub type QuickAnswer = std::pin::Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// Given a client line, the answer to it when it is a request the shim
/// answers itself (muster-mcp's quick `tools/call`), or `None` for rmcp.
pub type QuickPath = Box<dyn Fn(&[u8]) -> Option<QuickAnswer> + Send>;

impl<R, W> StdioTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    pub fn new(input: R, output: W) -> Self {
        StdioTransport {
            input: BufReader::new(input),
            line: Vec::new(),
            over: false,
            output: Arc::new(Mutex::new(Some(output))),
            answering: Vec::new(),
            quick: None,
        }
    }

    /// Lets `quick` answer the lines it takes; rmcp gets the rest.
    pub fn with_quick_path(mut self, quick: QuickPath) -> Self {
        self.quick = Some(quick);
        self
    }

    /// Runs a quick answer in a task of its own and writes it whole, so a
    /// slow call never holds up the lines behind it.
    fn answer_quickly(&self, answer: QuickAnswer) {
        let output = self.output.clone();
        tokio::spawn(async move {
            if let Err(e) = write_line(&output, &answer.await).await {
                tracing::warn!("could not answer the MCP client: {e}");
            }
        });
    }

    /// Reads one line (without its newline) into `self.line`, keeping at
    /// most one byte past the limit so a huge line cannot grow the buffer
    /// without bound. False at end of input with nothing read.
    async fn read_line(&mut self) -> std::io::Result<bool> {
        loop {
            let (used, ended) = {
                let available = self.input.fill_buf().await?;
                if available.is_empty() {
                    return Ok(!self.line.is_empty() || self.over);
                }
                let newline = available.iter().position(|b| *b == b'\n');
                let content = &available[..newline.unwrap_or(available.len())];
                let room = (MAX_LINE_BYTES + 1).saturating_sub(self.line.len());
                if content.len() > room {
                    self.over = true;
                }
                self.line
                    .extend_from_slice(&content[..content.len().min(room)]);
                (
                    newline.map_or(available.len(), |i| i + 1),
                    newline.is_some(),
                )
            };
            self.input.consume(used);
            if ended {
                return Ok(true);
            }
        }
    }

    /// A handle on the output, for messages that do not come from the MCP
    /// server (pushes): written whole, between the server's own lines.
    pub fn output(&self) -> Output<W> {
        Output(self.output.clone())
    }

    /// Waits until our answers so far are written (cancel-safe: a handle
    /// leaves the list only once its task has finished).
    async fn answered(&mut self) {
        while let Some(task) = self.answering.last_mut() {
            let _ = task.await;
            self.answering.pop();
        }
    }

    /// Writes one whole line to the client from a task of its own, so a
    /// cancelled `receive` can never leave half a line on stdout.
    fn answer(&mut self, line: Vec<u8>) {
        let output = self.output.clone();
        self.answering.retain(|task| !task.is_finished());
        self.answering.push(tokio::spawn(async move {
            if let Err(e) = write_line(&output, &line).await {
                tracing::warn!("could not answer the MCP client: {e}");
            }
        }));
    }
}

/// The transport's output (see [`StdioTransport::output`]).
pub struct Output<W>(Arc<Mutex<Option<W>>>);

impl<W: AsyncWrite + Unpin> Output<W> {
    /// Writes one whole line (one JSON-RPC message, its newline included,
    /// as `muster_mcp::channel_line` makes a push); fails once the
    /// transport is closed.
    pub async fn send_line(&self, line: &[u8]) -> std::io::Result<()> {
        write_line(&self.0, line).await
    }
}

async fn write_line<W: AsyncWrite + Unpin>(
    output: &Mutex<Option<W>>,
    line: &[u8],
) -> std::io::Result<()> {
    let mut output = output.lock().await;
    let Some(output) = output.as_mut() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "the transport is closed",
        ));
    };
    output.write_all(line).await?;
    output.flush().await
}

impl<R, W> Transport<RoleServer> for StdioTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let line = serde_json::to_vec(&item).map(|mut line| {
            line.push(b'\n');
            line
        });
        let output = self.output.clone();
        async move { write_line(&output, &line?).await }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            match self.read_line().await {
                Ok(true) => {}
                Ok(false) => {
                    // The answer to a last bad line still goes out, even
                    // when the server then ends without closing us.
                    self.answered().await;
                    return None;
                }
                Err(e) => {
                    tracing::error!("cannot read from the MCP client: {e}");
                    self.answered().await;
                    return None;
                }
            }
            let parsed = {
                let trimmed = self.line.trim_ascii();
                // The quick path takes only whole, well-formed JSON-RPC
                // calls (it parses the line itself), so a line it takes
                // needs no guard's look first.
                let quick = match &self.quick {
                    Some(quick) if trimmed.len() <= MAX_LINE_BYTES => quick(trimmed),
                    _ => None,
                };
                if trimmed.is_empty() {
                    None
                } else if let Some(answer) = quick {
                    self.answer_quickly(answer);
                    None
                } else if let Some(answer) = refusal(trimmed) {
                    self.answer(format!("{answer}\n").into_bytes());
                    None
                } else {
                    Some(parse(trimmed))
                }
            };
            self.line.clear();
            self.over = false;
            match parsed {
                None | Some(Parsed::Skip) => {}
                Some(Parsed::Message(message)) => return Some(*message),
                Some(Parsed::Invalid) => {
                    let error = TxJsonRpcMessage::<RoleServer>::error(
                        ErrorData::invalid_request("Invalid request", None),
                        None,
                    );
                    if let Ok(mut line) = serde_json::to_vec(&error) {
                        line.push(b'\n');
                        self.answer(line);
                    }
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.answered().await;
        let taken = self.output.lock().await.take();
        if let Some(mut output) = taken {
            output.flush().await?;
        }
        Ok(())
    }
}

enum Parsed {
    Message(Box<RxJsonRpcMessage<RoleServer>>),
    /// A notification outside MCP, ignored as rmcp's own stdio transport does.
    Skip,
    /// JSON-RPC that is no MCP message: answered "Invalid request", as rmcp's
    /// own stdio transport does.
    Invalid,
}

/// Parses a line that passed [`refusal`] the way rmcp's stdio transport does.
fn parse(line: &[u8]) -> Parsed {
    match serde_json::from_slice(line) {
        Ok(message) => Parsed::Message(Box::new(message)),
        Err(e) => {
            let ignored = serde_json::from_slice::<Value>(line).ok().is_some_and(|v| {
                v.get("method")
                    .and_then(Value::as_str)
                    .is_some_and(|m| ignored_notification(&v, m))
            });
            if ignored {
                return Parsed::Skip;
            }
            tracing::debug!("protocol error on a message from the MCP client: {e}");
            match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    Parsed::Skip
                }
                _ => Parsed::Invalid,
            }
        }
    }
}

/// rmcp's rule for a message it cannot parse: a notification whose method is
/// not MCP's (or an unknown `notifications/…` one) is ignored.
fn ignored_notification(message: &Value, method: &str) -> bool {
    const NOTIFICATIONS: [&str; 10] = [
        "notifications/cancelled",
        "notifications/initialized",
        "notifications/message",
        "notifications/progress",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/resources/updated",
        "notifications/roots/list_changed",
        "notifications/subscriptions/acknowledged",
        "notifications/tools/list_changed",
    ];
    const METHODS: [&str; 18] = [
        "initialize",
        "ping",
        "server/discover",
        "prompts/get",
        "prompts/list",
        "resources/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "resources/templates/list",
        "subscriptions/listen",
        "tools/call",
        "tools/list",
        "completion/complete",
        "elicitation/create",
        "logging/setLevel",
        "roots/list",
        "sampling/createMessage",
    ];
    let notification = NOTIFICATIONS.contains(&method);
    let standard = notification || METHODS.contains(&method);
    (message.get("id").is_none() && !standard)
        || (method.starts_with("notifications/") && !notification)
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

    /// Drives the transport over `input` to its end: the messages the server
    /// got, as JSON, and what was written to the client.
    async fn run(input: Vec<u8>) -> (Vec<Value>, String) {
        let (client, out) = tokio::io::duplex(1 << 16);
        let mut transport = StdioTransport::new(std::io::Cursor::new(input), out);
        let mut got = Vec::new();
        while let Some(message) = transport.receive().await {
            got.push(serde_json::to_value(&message).unwrap());
        }
        // Refusals are written by tasks of their own; closing waits for them.
        transport.close().await.unwrap();
        drop(transport);
        let mut written = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut &mut { client }, &mut written)
            .await
            .unwrap();
        (got, written)
    }

    #[tokio::test]
    async fn bad_lines_are_answered_and_good_ones_pass_through() {
        let input =
            b"{bad\n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n\n".to_vec();
        let (got, written) = run(input).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["method"], "notifications/initialized");
        let answers: Vec<Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0]["error"]["code"], -32700);
    }

    #[tokio::test]
    async fn an_oversized_line_is_refused_and_the_next_one_still_passes() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n");
        let (got, written) = run(input).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["method"], "tools/list");
        let answer: Value = serde_json::from_str(written.trim()).unwrap();
        assert_eq!(answer["error"]["code"], -32600);
    }

    #[tokio::test]
    async fn what_rmcp_cannot_take_is_answered_or_ignored_as_before() {
        let input = concat!(
            // JSON-RPC, but no MCP request: "Invalid request".
            "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":7}\n",
            // A notification outside MCP that rmcp cannot parse: ignored.
            "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/other\",\"params\":7}\n",
            // The last line may end without a newline.
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}",
        );
        let (got, written) = run(input.as_bytes().to_vec()).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["method"], "ping");
        let answer: Value = serde_json::from_str(written.trim()).unwrap();
        assert_eq!(answer["error"]["code"], -32600);
        assert_eq!(answer["error"]["message"], "Invalid request");
    }

    #[tokio::test]
    async fn a_last_bad_line_is_answered_before_the_end_of_input_is_reported() {
        let (client, out) = tokio::io::duplex(1 << 16);
        let mut transport = StdioTransport::new(&b"{bad\n"[..], out);
        assert!(transport.receive().await.is_none());
        drop(transport); // as when the server gives up before initializing
        let mut written = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut &mut { client }, &mut written)
            .await
            .unwrap();
        let answer: Value = serde_json::from_str(written.trim()).unwrap();
        assert_eq!(answer["error"]["code"], -32700);
    }

    #[tokio::test]
    async fn each_message_is_one_line() {
        let (client, out) = tokio::io::duplex(1 << 16);
        let mut transport = StdioTransport::new(tokio::io::empty(), out);
        let ping =
            TxJsonRpcMessage::<RoleServer>::error(ErrorData::invalid_request("x", None), None);
        transport.send(ping.clone()).await.unwrap();
        transport.close().await.unwrap();
        drop(transport);
        let mut written = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut &mut { client }, &mut written)
            .await
            .unwrap();
        assert_eq!(
            written,
            format!("{}\n", serde_json::to_string(&ping).unwrap())
        );
    }
}
