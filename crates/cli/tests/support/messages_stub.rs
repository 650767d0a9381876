//! A scripted stub of the Anthropic Messages API, for driving a real Claude
//! Code offline (`ANTHROPIC_BASE_URL=<stub.url>`). The server, the recording,
//! the turn queue and hold/release are [`stub_server`]'s; here are the routes
//! and the wire format.
//!
//! - `POST /v1/messages` with `"stream": true` answers with server-sent events
//!   (`message_start`, `content_block_start`, `content_block_delta`,
//!   `content_block_stop`, `message_delta`, `message_stop`) for the next
//!   scripted [`Turn`]; with the queue empty it answers the default reply.
//!   [`MessagesStub::hold`] makes these requests wait.
//! - `POST /v1/messages` without `stream` answers one JSON message. Such a
//!   request takes a scripted turn only if it offers tools (a main-loop
//!   request); side requests (titles and the like) get the default reply.
//! - `POST /v1/messages/count_tokens` answers a rough count.
//! - `HEAD|GET /api/hello` (Claude Code's connectivity probe, made when
//!   nonessential traffic is not disabled) answers 200.
//! - Anything else is answered 404 in the API's error shape.
//!
//! [`MessagesStub::bodies`] are those of every `POST /v1/messages`.

#![allow(dead_code)]

#[path = "stub_server.rs"]
mod stub_server;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
pub use stub_server::Recorded;
use stub_server::{halves, is_main_loop, model_of, rough_tokens, sse_events, Api, Ids, Route};

/// The running stub; `url` is the value for `ANTHROPIC_BASE_URL`.
pub type MessagesStub = stub_server::StubServer<Messages>;

/// The stub's answer to one main-loop request.
#[derive(Clone, Debug)]
pub enum Turn {
    /// A text block; `stop_reason: "end_turn"`.
    Text(String),
    /// A `tool_use` block; `stop_reason: "tool_use"`.
    ToolUse { name: String, input: Value },
}

impl Turn {
    pub fn text(s: impl Into<String>) -> Self {
        Turn::Text(s.into())
    }
    pub fn tool_use(name: impl Into<String>, input: Value) -> Self {
        Turn::ToolUse {
            name: name.into(),
            input,
        }
    }
}

/// The Messages API.
pub struct Messages;

impl Api for Messages {
    type Turn = Turn;
    const NAME: &'static str = "messages_stub";

    fn text(text: &str) -> Turn {
        Turn::text(text)
    }

    fn route(req: &Recorded) -> Route {
        match (req.method.as_str(), req.path()) {
            ("POST", "/v1/messages") => {
                let stream = req.body["stream"] == json!(true);
                Route::Model {
                    held: stream,
                    scripted: stream || is_main_loop(&req.body),
                }
            }
            ("POST", "/v1/messages/count_tokens") => Route::Answer(
                axum::Json(json!({ "input_tokens": rough_tokens(&req.body) })).into_response(),
            ),
            ("HEAD" | "GET", "/api/hello") => Route::Answer(StatusCode::OK.into_response()),
            _ => Route::Unknown,
        }
    }

    fn is_model(req: &Recorded) -> bool {
        req.is_post("/v1/messages")
    }

    fn answer(req: &Recorded, turn: &Turn, ids: &Ids) -> Response {
        if req.body["stream"] == json!(true) {
            stream_answer(ids, &req.body, turn)
        } else {
            json_answer(ids, &req.body, turn)
        }
    }

    fn not_found(what: &str) -> Value {
        json!({
            "type": "error",
            "error": { "type": "not_found_error", "message": format!("the stub does not serve {what}") }
        })
    }
}

fn usage(req: &Value, output_tokens: usize) -> Value {
    json!({
        "input_tokens": rough_tokens(req),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

/// The content block (complete), its stop reason and a rough token count.
fn block_of(ids: &Ids, turn: &Turn) -> (Value, &'static str, usize) {
    match turn {
        Turn::Text(text) => (
            json!({ "type": "text", "text": text }),
            "end_turn",
            text.len() / 4 + 1,
        ),
        Turn::ToolUse { name, input } => (
            json!({ "type": "tool_use", "id": ids.next("toolu"), "name": name, "input": input }),
            "tool_use",
            input.to_string().len() / 4 + 1,
        ),
    }
}

fn json_answer(ids: &Ids, req: &Value, turn: &Turn) -> Response {
    let (block, stop_reason, out) = block_of(ids, turn);
    axum::Json(json!({
        "id": ids.next("msg"),
        "type": "message",
        "role": "assistant",
        "model": model_of(req, "claude-stub"),
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage(req, out),
    }))
    .into_response()
}

fn stream_answer(ids: &Ids, req: &Value, turn: &Turn) -> Response {
    let (block, stop_reason, out) = block_of(ids, turn);
    let mut events: Vec<(&str, Value)> = vec![(
        "message_start",
        json!({
            "type": "message_start",
            "message": {
                "id": ids.next("msg"),
                "type": "message",
                "role": "assistant",
                "model": model_of(req, "claude-stub"),
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage(req, 1),
            }
        }),
    )];
    match turn {
        Turn::Text(text) => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in halves(text) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
        }
        Turn::ToolUse { input, .. } => {
            let mut start = block.clone();
            start["input"] = json!({});
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": start}),
            ));
            for piece in halves(&input.to_string()) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
        }
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": out}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    sse_events(events)
}
