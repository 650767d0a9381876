//! A scripted stub of the OpenAI Responses API, for driving a real Codex CLI
//! offline (a `model_providers.<name>` with `base_url = "<stub.url>/v1"` and
//! `wire_api = "responses"`). The server, the recording (headers included),
//! the turn queue and hold/release are [`stub_server`]'s; here are the routes
//! and the wire format.
//!
//! - `POST /v1/responses` answers with server-sent events (`response.created`,
//!   `response.output_item.added`, `response.output_text.delta` for text,
//!   `response.output_item.done`, `response.completed`) for the next scripted
//!   [`Turn`]; with the queue empty it answers the default reply.
//!   [`ResponsesStub::hold`] makes these requests wait.
//! - Anything else is answered 404 in the API's error shape.

#![allow(dead_code)]

#[path = "stub_server.rs"]
mod stub_server;

use axum::response::Response;
use serde_json::{json, Value};
pub use stub_server::Recorded;
use stub_server::{halves, model_of, rough_tokens, sse_events, Api, Ids, Route};

/// The running stub (the provider's `base_url` is its `url` plus `/v1`).
pub type ResponsesStub = stub_server::StubServer<Responses>;

/// The stub's answer to one model request.
#[derive(Clone, Debug)]
pub enum Turn {
    /// An assistant message with one `output_text`.
    Text(String),
    /// A `function_call` output item; `namespace` is how Codex groups MCP
    /// tools (`mcp__<server>`), `arguments` is sent as JSON text.
    Call {
        namespace: Option<String>,
        name: String,
        arguments: Value,
    },
}

impl Turn {
    pub fn text(s: impl Into<String>) -> Self {
        Turn::Text(s.into())
    }
    /// A call of MCP tool `tool` on server `server`, as Codex offers it.
    pub fn mcp_call(server: &str, tool: &str, arguments: Value) -> Self {
        Turn::Call {
            namespace: Some(format!("mcp__{server}")),
            name: tool.into(),
            arguments,
        }
    }
}

/// The Responses API.
pub struct Responses;

impl Api for Responses {
    type Turn = Turn;
    const NAME: &'static str = "responses_stub";

    fn text(text: &str) -> Turn {
        Turn::text(text)
    }

    fn route(req: &Recorded) -> Route {
        if Self::is_model(req) {
            Route::Model {
                held: true,
                scripted: true,
            }
        } else {
            Route::Unknown
        }
    }

    fn is_model(req: &Recorded) -> bool {
        req.is_post("/v1/responses")
    }

    fn answer(req: &Recorded, turn: &Turn, ids: &Ids) -> Response {
        stream_answer(ids, &req.body, turn)
    }

    fn not_found(what: &str) -> Value {
        json!({"error": {"type": "invalid_request_error", "message": format!("the stub does not serve {what}")}})
    }
}

fn stream_answer(ids: &Ids, req: &Value, turn: &Turn) -> Response {
    let response_id = ids.next("resp");
    let model = model_of(req, "stub-model");
    let response = |status: &str, output: Value| json!({"id": response_id, "object": "response", "created_at": 0, "model": model, "status": status, "output": output});
    let mut events: Vec<(&str, Value)> = vec![(
        "response.created",
        json!({"type": "response.created", "response": response("in_progress", json!([]))}),
    )];
    let item = match turn {
        Turn::Text(text) => {
            let id = ids.next("msg");
            let done = json!({"type": "message", "id": id, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]});
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 0,
                    "item": {"type": "message", "id": id, "role": "assistant", "status": "in_progress", "content": []}}),
            ));
            for piece in halves(text) {
                events.push((
                    "response.output_text.delta",
                    json!({"type": "response.output_text.delta", "item_id": id, "output_index": 0, "content_index": 0, "delta": piece}),
                ));
            }
            done
        }
        Turn::Call {
            namespace,
            name,
            arguments,
        } => {
            let mut call = json!({"type": "function_call", "id": ids.next("fc"), "call_id": ids.next("call"),
                "name": name, "arguments": arguments.to_string(), "status": "completed"});
            if let Some(ns) = namespace {
                call["namespace"] = json!(ns);
            }
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 0, "item": call}),
            ));
            call
        }
    };
    events.push((
        "response.output_item.done",
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    ));
    let mut completed = response("completed", json!([item]));
    let input_tokens = rough_tokens(req);
    completed["usage"] = json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": input_tokens + 5});
    events.push((
        "response.completed",
        json!({"type": "response.completed", "response": completed}),
    ));
    sse_events(events)
}
