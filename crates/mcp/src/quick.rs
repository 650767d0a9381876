//! The stdio shim's quick path for `tools/call`: the one request an agent
//! makes over and over (every `send_message`), answered without rmcp's
//! request types and service loop. rmcp reads a request into an untagged
//! enum (the line is parsed twice, once into serde's buffered `Content`) and
//! hands it through two tasks and a channel before our handler runs; for a
//! call whose work is one round trip to the daemon, that was most of the
//! shim's CPU. Everything else (the handshake, `tools/list`, pings,
//! notifications) still goes through rmcp, and so does any call this path
//! does not recognise exactly.
//!
//! The answer is written straight from the call's outcome in the shape
//! rmcp gives it for the peer's protocol version (a protocol error still
//! goes through rmcp's error type), so the bytes on the wire are the ones
//! the slow path writes (a test below holds the two side by side).

use std::borrow::Cow;

use rmcp::model::{JsonObject, RequestId};
use rmcp::service::TxJsonRpcMessage;
use rmcp::{ErrorData as McpError, RoleServer};
use serde::{Deserialize, Serialize};

use crate::{CallContext, Executor, McpServer, ToolOutcome};

/// A `tools/call` request, read without building anything it does not need.
/// Only a whole JSON-RPC 2.0 call parses (the shim's guard does not look at
/// a line this path takes).
#[derive(Deserialize)]
struct Call<'a> {
    #[serde(borrow)]
    jsonrpc: Cow<'a, str>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    id: RequestId,
    params: CallParams,
}

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
    #[serde(rename = "_meta", default)]
    meta: Option<JsonObject>,
}

impl Call<'_> {
    /// A JSON-RPC 2.0 `tools/call`: anything else is the guard's and rmcp's.
    fn is_quick(&self) -> bool {
        self.method == "tools/call" && self.jsonrpc == "2.0"
    }
}

/// The first protocol revision whose results rmcp shapes differently
/// (inline negotiation, `resultType`, cache hints): its calls take the slow path.
const FIRST_MODERN_REVISION: &str = "2026-07-28";

impl<E: Executor> McpServer<E> {
    /// Whether the client finished the classic handshake for a revision
    /// before 2026-07-28: the only peers the quick path answers.
    fn quick_path_open(&self) -> bool {
        self.peer.borrow().as_ref().is_some_and(|peer| {
            peer.peer_info()
                .is_some_and(|info| info.protocol_version.as_str() < FIRST_MODERN_REVISION)
        })
    }

    /// If `line` is a `tools/call` this path answers, a future that runs it
    /// and yields the whole answer line (newline included); otherwise `None`
    /// and the line goes to rmcp as before.
    pub fn quick_call(
        &self,
        line: &[u8],
    ) -> Option<impl std::future::Future<Output = Vec<u8>> + Send + 'static> {
        // A cheap look first: most lines that are not calls never get parsed.
        if !contains(line, b"\"tools/call\"") || !self.quick_path_open() {
            return None;
        }
        let call: Call = serde_json::from_slice(line).ok()?;
        if !call.is_quick() {
            return None;
        }
        let server = self.clone();
        Some(async move {
            let params = call.params;
            let args = params.arguments.unwrap_or_default();
            let context = CallContext::from_fields(None, params.meta.as_ref(), &args);
            let outcome = server.run_call(&params.name, &args, context).await;
            legacy_answer_line(call.id, outcome)
        })
    }
}

/// A tool call's answer as rmcp writes it to a peer on a revision before
/// 2026-07-28 (no `resultType`), written straight from the outcome's text:
/// building rmcp's result and message types first cost the sender's shim
/// about a seventh of its instructions per call (callgrind). A protocol
/// error (the call never ran) still goes through rmcp's error type.
fn legacy_answer_line(id: RequestId, outcome: Result<ToolOutcome, McpError>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Answer<'a> {
        jsonrpc: &'static str,
        id: &'a RequestId,
        result: ToolResult<'a>,
    }
    #[derive(Serialize)]
    struct ToolResult<'a> {
        content: [TextBlock<'a>; 1],
        #[serde(rename = "isError")]
        is_error: bool,
    }
    #[derive(Serialize)]
    struct TextBlock<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        text: &'a str,
    }
    let answer = |text: &str, is_error: bool| {
        serde_json::to_vec(&Answer {
            jsonrpc: "2.0",
            id: &id,
            result: ToolResult {
                content: [TextBlock { kind: "text", text }],
                is_error,
            },
        })
    };
    let written = match outcome {
        Ok(ToolOutcome::Answer(value)) => answer(value.as_str(), false),
        Ok(ToolOutcome::Failed(text)) => answer(&text, true),
        Err(error) => serde_json::to_vec(&TxJsonRpcMessage::<RoleServer>::error(
            error,
            Some(id.clone()),
        )),
    };
    // Only strings, numbers and string-keyed structs: serializing cannot
    // fail; the fallback keeps the JSON-RPC contract anyway.
    let mut line = written.unwrap_or_else(|e| {
        format!(r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":-32603,"message":"{e}"}}}}"#)
            .into_bytes()
    });
    line.push(b'\n');
    line
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::api::ErrorDetail;
    use muster_core::link::{JsonText, Op};
    use rmcp::model::{CallToolResult, ContentBlock};
    use serde_json::{json, Value};

    struct Echo;

    impl Executor for Echo {
        async fn execute(&self, op: Op, call: CallContext) -> Result<JsonText, ErrorDetail> {
            match op {
                Op::Whoami => Ok(JsonText::from_value(&json!({
                    "meta": call.meta_session, "arg": call.arg_session
                }))),
                _ => Err(ErrorDetail {
                    code: "refused".into(),
                    message: "no such luck".into(),
                    matches: Vec::new(),
                }),
            }
        }
    }

    fn server() -> McpServer<Echo> {
        McpServer::new(std::sync::Arc::new(Echo))
    }

    #[test]
    fn nothing_is_answered_before_a_classic_handshake() {
        let line = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami"}}"#;
        assert!(server().quick_call(line).is_none());
    }

    #[tokio::test]
    async fn a_call_is_read_with_its_session_fields() {
        let line = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"whoami","arguments":{"_session_id":"s-arg"},"_meta":{"sessionId":"s-meta"}}}"#;
        let call: Call = serde_json::from_slice(line).unwrap();
        let args = call.params.arguments.clone().unwrap_or_default();
        let context = CallContext::from_fields(None, call.params.meta.as_ref(), &args);
        assert_eq!(context.meta_session.as_deref(), Some("s-meta"));
        assert_eq!(context.arg_session.as_deref(), Some("s-arg"));
        let outcome = server().run_call("whoami", &args, context).await;
        let answer: Value = serde_json::from_slice(&legacy_answer_line(call.id, outcome)).unwrap();
        assert_eq!(answer["id"], 7);
        assert_eq!(
            answer["result"]["content"][0]["text"],
            r#"{"meta":"s-meta","arg":"s-arg"}"#
        );
        assert!(answer["result"].get("resultType").is_none());
    }

    #[test]
    fn answers_match_what_rmcp_writes_for_a_legacy_peer() {
        // What the slow path's handler returns, shaped as rmcp's server
        // handler shapes it for a pre-2026-07-28 peer, then serialized.
        let slow = |result: CallToolResult, id: RequestId| {
            let mut result = rmcp::model::ServerResult::CallToolResult(result);
            result.strip_result_type_for_legacy_peer();
            result.strip_non_object_output_for_legacy_peer();
            let mut line =
                serde_json::to_vec(&TxJsonRpcMessage::<RoleServer>::response(result, id)).unwrap();
            line.push(b'\n');
            line
        };
        // An answer with escapes, non-ASCII and a string id; a tool error.
        let answer = JsonText::from_value(
            &json!({"x": 1, "said": "a \"quote\"\n\u{e9} ☃\u{7}", "n": [1, 2]}),
        );
        let ok = CallToolResult::success(vec![ContentBlock::text(answer.as_str())]);
        assert_eq!(
            legacy_answer_line(RequestId::Number(3), Ok(ToolOutcome::Answer(answer))),
            slow(ok, RequestId::Number(3))
        );
        let ok = CallToolResult::success(vec![ContentBlock::text("{}")]);
        assert_eq!(
            legacy_answer_line(
                RequestId::String("req-1".into()),
                Ok(ToolOutcome::Answer(JsonText::from_value(&json!({}))))
            ),
            slow(ok, RequestId::String("req-1".into()))
        );
        let failed = CallToolResult::error(vec![ContentBlock::text("no\n- s-1 \"x\"")]);
        assert_eq!(
            legacy_answer_line(
                RequestId::Number(4),
                Ok(ToolOutcome::Failed("no\n- s-1 \"x\"".into()))
            ),
            slow(failed, RequestId::Number(4))
        );
        let text = String::from_utf8(legacy_answer_line(
            RequestId::String("q".into()),
            Err(McpError::invalid_params("bad", None)),
        ))
        .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "q");
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["message"], "bad");
    }

    #[test]
    fn lines_that_are_not_calls_are_left_to_rmcp() {
        assert!(!contains(br#"{"method":"tools/list"}"#, b"\"tools/call\""));
        let notification: Result<Call, _> = serde_json::from_slice(
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
        );
        assert!(
            notification.is_err(),
            "a call without an id is rmcp's to refuse"
        );
        // The guard does not look at a line this path takes, so a line
        // that is not JSON-RPC 2.0 must not be taken: the guard refuses it.
        let parse = |line: &[u8]| serde_json::from_slice::<Call>(line).map(|c| c.is_quick());
        assert!(parse(br#"{"id":1,"method":"tools/call","params":{"name":"x"}}"#).is_err());
        assert!(
            !parse(br#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"x"}}"#)
                .unwrap()
        );
        assert!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#)
                .unwrap()
        );
        assert!(parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"id":2}"#
        )
        .is_err());
    }
}
