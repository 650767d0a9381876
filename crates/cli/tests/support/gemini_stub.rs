//! A scripted stub of the Gemini API (`generativelanguage`, v1beta), for
//! driving a real Gemini CLI offline (`GOOGLE_GEMINI_BASE_URL=<stub.url>`,
//! `GEMINI_API_KEY=<anything>`). The server, the recording, the turn queue and
//! hold/release are [`stub_server`]'s; here are the routes and the wire format.
//!
//! - `POST /v1beta/models/MODEL:streamGenerateContent?alt=sse` answers one
//!   server-sent event `data: {"candidates": [...]}`; `:generateContent`
//!   answers the same object as JSON. A request that offers tools (the agent's
//!   own loop) takes the next scripted [`Turn`]; others, and requests when the
//!   queue is empty, get the default reply. [`GeminiStub::hold`] makes
//!   main-loop requests wait.
//! - `POST …:countTokens` answers a rough count.
//! - Anything else is answered 404 in the API's error shape.
//!
//! [`GeminiStub::bodies`] are those of the main-loop requests.

#![allow(dead_code)]

#[path = "stub_server.rs"]
mod stub_server;

use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
pub use stub_server::{is_main_loop, Recorded};
use stub_server::{rough_tokens, sse, Api, Ids, Route};

/// The running stub; `url` is the value for `GOOGLE_GEMINI_BASE_URL`.
pub type GeminiStub = stub_server::StubServer<Gemini>;

/// The stub's answer to one main-loop request.
#[derive(Clone, Debug)]
pub enum Turn {
    /// A `text` part; `finishReason: "STOP"`.
    Text(String),
    /// A `functionCall` part (Gemini CLI names MCP tools `mcp_<server>_<tool>`).
    Call { name: String, args: Value },
}

impl Turn {
    pub fn text(s: impl Into<String>) -> Self {
        Turn::Text(s.into())
    }
    pub fn call(name: impl Into<String>, args: Value) -> Self {
        Turn::Call {
            name: name.into(),
            args,
        }
    }
}

/// Whether this is a model request (`…:streamGenerateContent` or `…:generateContent`).
fn generates(req: &Recorded) -> bool {
    req.method == "POST"
        && (req.path().ends_with(":streamGenerateContent")
            || req.path().ends_with(":generateContent"))
}

/// The Gemini API.
pub struct Gemini;

impl Api for Gemini {
    type Turn = Turn;
    const NAME: &'static str = "gemini_stub";

    fn text(text: &str) -> Turn {
        Turn::text(text)
    }

    fn route(req: &Recorded) -> Route {
        if generates(req) {
            let main_loop = is_main_loop(&req.body);
            Route::Model {
                held: main_loop,
                scripted: main_loop,
            }
        } else if req.method == "POST" && req.path().ends_with(":countTokens") {
            Route::Answer(
                axum::Json(json!({"totalTokens": rough_tokens(&req.body)})).into_response(),
            )
        } else {
            Route::Unknown
        }
    }

    fn is_model(req: &Recorded) -> bool {
        generates(req) && is_main_loop(&req.body)
    }

    fn answer(req: &Recorded, turn: &Turn, _ids: &Ids) -> Response {
        let part = match turn {
            Turn::Text(text) => json!({"text": text}),
            Turn::Call { name, args } => json!({"functionCall": {"name": name, "args": args}}),
        };
        let prompt = rough_tokens(&req.body);
        let answer = json!({
            "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": 5, "totalTokenCount": prompt + 5},
            "modelVersion": "stub-model",
        });
        if req.path().ends_with(":streamGenerateContent") {
            sse(format!("data: {answer}\r\n\r\n"))
        } else {
            axum::Json(answer).into_response()
        }
    }

    fn not_found(what: &str) -> Value {
        json!({"error": {"code": 404, "status": "NOT_FOUND", "message": format!("the stub does not serve {what}")}})
    }
}
