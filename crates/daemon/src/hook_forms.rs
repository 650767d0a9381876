//! Hook answers shaped for one harness, beside the Claude Code / Codex form
//! `hooks` writes by default.
//!
//! Gemini CLI starts muster's MCP server once and tells it nothing of the
//! session calling it. Its BeforeTool hook, though, may rewrite a tool's
//! arguments (`hookSpecificOutput.tool_input`), so muster's answer to a
//! BeforeTool for one of muster's own tools (`mcp_muster_<tool>`) hands the
//! arguments back with `_session_id` set to the session the hook ran for; the
//! shim then acts for that session (see `muster_mcp::CallContext::arg_session`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_core::protocol::{Harness, HookEvent};
use serde_json::{json, Map, Value};

/// How Gemini CLI names muster's MCP tools (`mcp_<server>_<tool>`, server `muster`).
const GEMINI_MUSTER_TOOL_PREFIX: &str = "mcp_muster_";

/// For a Gemini CLI `pre-tool-use` of one of muster's tools: the tool's
/// arguments with `_session_id` naming `session`. None for anything else.
pub fn gemini_tool_input(
    harness: Harness,
    event: HookEvent,
    session: &str,
    tool_name: Option<&str>,
    tool_input: Option<&Value>,
) -> Option<Value> {
    if harness != Harness::Gemini || event != HookEvent::PreToolUse {
        return None;
    }
    tool_name.filter(|t| t.starts_with(GEMINI_MUSTER_TOOL_PREFIX))?;
    // Gemini sends the arguments as an object; anything else is replaced whole.
    let mut input = tool_input
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(Map::new);
    input.insert("_session_id".into(), json!(session));
    Some(Value::Object(input))
}

/// A refusal of a tool call in the harness's form: Gemini CLI obeys a
/// top-level `decision`/`reason`; Claude Code and Codex read
/// `hookSpecificOutput.permissionDecision` (`deny`, or `ask` for the person).
pub fn refusal(harness: Harness, event_name: &str, ask: bool, reason: &str) -> Response {
    let body = if harness == Harness::Gemini {
        json!({"decision": "deny", "reason": reason})
    } else {
        json!({
            "hookSpecificOutput": {
                "hookEventName": event_name,
                "permissionDecision": if ask { "ask" } else { "deny" },
                "permissionDecisionReason": reason,
            }
        })
    };
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What a Claude Code Stop held for mail gives as its reason: Claude Code
/// 2.1.332 puts a Stop reason into the next request twice (a user "Stop hook
/// feedback" message and a system "blocking error" message), so the mail
/// itself goes in `additionalContext`, which it renders once.
const CLAUDE_HOLD_REASON: &str =
    "New muster mail arrived (in the context below). Deal with it before you stop; \
answer with muster's send_message tool.";

/// A Stop (Gemini CLI: AfterAgent) answer that keeps the turn going with
/// `mail`. Codex and Gemini CLI take the reason as the continuation's input,
/// once; Claude Code gets it as context (see `CLAUDE_HOLD_REASON`).
pub fn hold(harness: Harness, mail: &str) -> Value {
    match harness {
        Harness::Claude => json!({
            "decision": "block",
            "reason": CLAUDE_HOLD_REASON,
            "hookSpecificOutput": {"hookEventName": "Stop", "additionalContext": mail},
        }),
        // opencode's plugin, too, sends the reason as the next prompt.
        Harness::Codex | Harness::Opencode | Harness::Gemini => {
            json!({"decision": "block", "reason": mail})
        }
    }
}

/// The BeforeTool answer carrying `input` (all the tool's arguments: one of
/// Gemini's code paths replaces them rather than merging), plus any context.
pub fn tool_input_answer(event_name: &str, input: Value, context: &str) -> Response {
    let mut output = json!({"hookEventName": event_name, "tool_input": input});
    if !context.is_empty() {
        output["additionalContext"] = json!(context);
    }
    let body = json!({ "hookSpecificOutput": output });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_muster_tools_in_gemini_get_the_session() {
        // Proves the session id is added to a Gemini call of a muster tool, keeping its arguments, and to nothing else.
        let input = json!({"to": "peer", "body": "hi", "_session_id": "someone-else"});
        let named = gemini_tool_input(
            Harness::Gemini,
            HookEvent::PreToolUse,
            "s-1",
            Some("mcp_muster_send_message"),
            Some(&input),
        );
        assert_eq!(
            named,
            Some(json!({"to": "peer", "body": "hi", "_session_id": "s-1"}))
        );
        let empty = gemini_tool_input(
            Harness::Gemini,
            HookEvent::PreToolUse,
            "s-1",
            Some("mcp_muster_whoami"),
            None,
        );
        assert_eq!(empty, Some(json!({"_session_id": "s-1"})));
        for (harness, event, tool) in [
            (Harness::Gemini, HookEvent::PreToolUse, "run_shell_command"),
            (Harness::Gemini, HookEvent::PostToolUse, "mcp_muster_whoami"),
            (Harness::Claude, HookEvent::PreToolUse, "mcp_muster_whoami"),
        ] {
            assert_eq!(
                gemini_tool_input(harness, event, "s-1", Some(tool), Some(&input)),
                None,
                "{harness} {event} {tool}"
            );
        }
    }
}
