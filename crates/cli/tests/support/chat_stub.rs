//! A scripted stub of the OpenAI Chat Completions API, for driving a real
//! opencode offline (a provider using `@ai-sdk/openai-compatible` with
//! `baseURL = "<stub.url>/v1"`). The server, the recording, the turn queue and
//! hold/release are [`stub_server`]'s; here are the routes and the wire format.
//!
//! - `POST /v1/chat/completions` with `"stream": true` answers with
//!   `chat.completion.chunk` lines as server-sent events, then `data: [DONE]`;
//!   without `stream` it answers one `chat.completion`. A request that offers
//!   tools (a main-loop request) takes the next scripted [`Turn`]; others (a
//!   title request) and requests when the queue is empty get the default reply.
//!   [`ChatStub::hold`] makes main-loop requests wait.
//! - Anything else is answered 404 in the API's error shape.
//!
//! [`ChatStub::bodies`] are those of the main-loop requests.

#![allow(dead_code)]

#[path = "stub_server.rs"]
mod stub_server;

use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use stub_server::{halves, model_of, rough_tokens, sse, Api, Ids, Route};
pub use stub_server::{is_main_loop, Recorded};

/// The running stub (the provider's `baseURL` is its `url` plus `/v1`).
pub type ChatStub = stub_server::StubServer<Chat>;

/// The stub's answer to one main-loop request.
#[derive(Clone, Debug)]
pub enum Turn {
    /// Assistant content; `finish_reason: "stop"`.
    Text(String),
    /// One `tool_calls` entry; `finish_reason: "tool_calls"`.
    ToolCall { name: String, arguments: Value },
}

impl Turn {
    pub fn text(s: impl Into<String>) -> Self {
        Turn::Text(s.into())
    }
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Turn::ToolCall {
            name: name.into(),
            arguments,
        }
    }
}

/// The Chat Completions API.
pub struct Chat;

impl Api for Chat {
    type Turn = Turn;
    const NAME: &'static str = "chat_stub";

    fn text(text: &str) -> Turn {
        Turn::text(text)
    }

    fn route(req: &Recorded) -> Route {
        if req.is_post("/v1/chat/completions") {
            let main_loop = is_main_loop(&req.body);
            Route::Model {
                held: main_loop,
                scripted: main_loop,
            }
        } else {
            Route::Unknown
        }
    }

    fn is_model(req: &Recorded) -> bool {
        req.is_post("/v1/chat/completions") && is_main_loop(&req.body)
    }

    fn answer(req: &Recorded, turn: &Turn, ids: &Ids) -> Response {
        if req.body["stream"] == json!(true) {
            stream_answer(ids, &req.body, turn)
        } else {
            json_answer(ids, &req.body, turn)
        }
    }

    fn not_found(what: &str) -> Value {
        json!({"error": {"type": "invalid_request_error", "message": format!("the stub does not serve {what}")}})
    }
}

fn usage(req: &Value) -> Value {
    let prompt = rough_tokens(req);
    json!({"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5})
}

fn tool_call(ids: &Ids, name: &str, arguments: &Value) -> Value {
    json!({"index": 0, "id": ids.next("call"), "type": "function",
        "function": {"name": name, "arguments": arguments.to_string()}})
}

fn json_answer(ids: &Ids, req: &Value, turn: &Turn) -> Response {
    let (message, finish) = match turn {
        Turn::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Turn::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "tool_calls": [tool_call(ids, name, arguments)]}),
            "tool_calls",
        ),
    };
    axum::Json(json!({
        "id": ids.next("chatcmpl"), "object": "chat.completion", "created": 0, "model": model_of(req, "stub-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage(req),
    }))
    .into_response()
}

fn stream_answer(ids: &Ids, req: &Value, turn: &Turn) -> Response {
    let id = ids.next("chatcmpl");
    let model = model_of(req, "stub-model");
    let chunk = |choices: Value| json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": choices});
    let mut chunks = Vec::new();
    let finish = match turn {
        Turn::Text(text) => {
            for (i, piece) in halves(text).into_iter().enumerate() {
                let delta = if i == 0 {
                    json!({"role": "assistant", "content": piece})
                } else {
                    json!({"content": piece})
                };
                chunks.push(chunk(
                    json!([{"index": 0, "delta": delta, "finish_reason": null}]),
                ));
            }
            "stop"
        }
        Turn::ToolCall { name, arguments } => {
            let delta =
                json!({"role": "assistant", "tool_calls": [tool_call(ids, name, arguments)]});
            chunks.push(chunk(
                json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            ));
            "tool_calls"
        }
    };
    chunks.push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
    ));
    let mut last = chunk(json!([]));
    last["usage"] = usage(req);
    chunks.push(last);

    let mut body = String::new();
    for c in chunks {
        body.push_str(&format!("data: {c}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    sse(body)
}
