//! `muster tail`: follow the daemon's event stream, one line per event.

use futures_util::StreamExt;
use muster_core::api::{DeliveryView, Event};
use muster_core::{Message, Session, Target};
use serde_json::Value;

use crate::client::ClientError;
use crate::commands::roster;
use crate::context::Context;
use crate::output::{self, clean, clock_utc, short_id, truncate};
use crate::sse::{SseEvent, SseParser};

pub async fn run(ctx: &Context) -> Result<i32, ClientError> {
    let client = ctx.streaming_client()?;
    let response = client.open_stream("/api/v1/events").await?;
    if !ctx.json {
        eprintln!("following {} (Ctrl-C to stop)", client.base());
    }
    let mut stream = response.bytes_stream();
    let mut parser = SseParser::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(0),
            chunk = stream.next() => match chunk {
                Some(Ok(bytes)) => {
                    for event in parser.feed(&bytes) {
                        if let Some(line) = render(&event, ctx.json) {
                            if !output::emit_line(&line) {
                                return Ok(0); // stdout closed (e.g. piped into `head`)
                            }
                        }
                    }
                }
                Some(Err(_)) | None => return Err(ClientError::local("connection to daemon lost")),
            },
        }
    }
}

/// The line to print for one SSE event: its `Event` JSON compacted (`--json`)
/// or a sentence. The stream's opening `ready` event is not a change and is
/// skipped; events whose data is not JSON are skipped with a note.
pub fn render(event: &SseEvent, json: bool) -> Option<String> {
    if event.event == "ready" {
        return None;
    }
    let value: Value = match serde_json::from_str(&event.data) {
        Ok(value) => value,
        Err(_) => {
            eprintln!(
                "note: skipped an event that is not JSON ({})",
                truncate(&clean(&event.data, false), 80)
            );
            return None;
        }
    };
    if json {
        return Some(value.to_string());
    }
    Some(match serde_json::from_value::<Event>(value.clone()) {
        Ok(e) => format!(
            "{} {:<16} {}",
            clock_utc(e.at),
            clean(&e.kind, false),
            describe(&e.kind, &e.data)
        ),
        Err(_) => format!(
            "{:<25} {}",
            clean(&event.event, false),
            truncate(&clean(&value.to_string(), false), 160)
        ),
    })
}

/// A value as an object of the given shape, either the data itself or nested under `key`.
fn shaped<T: serde::de::DeserializeOwned>(data: &Value, key: &str) -> Option<T> {
    serde_json::from_value(data.clone()).ok().or_else(|| {
        data.get(key)
            .and_then(|inner| serde_json::from_value(inner.clone()).ok())
    })
}

/// The first string field present among `keys`.
fn text<'a>(data: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| data.get(*k).and_then(Value::as_str))
}

fn who(session: &Session) -> String {
    format!(
        "{} ({})",
        clean(&session.nickname, false),
        clean(&short_id(&session.id), false)
    )
}

fn address(target: &Target) -> String {
    match target {
        Target::Session(id) => short_id(id),
        Target::Operator(name) => format!("op:{name}"),
        Target::Room(room) => format!("#{room}"),
    }
}

/// A sentence for an event's data; anything unrecognised is shown as compact JSON.
pub fn describe(kind: &str, data: &Value) -> String {
    let described = match kind {
        "session.joined" => shaped::<Session>(data, "session").map(|s| {
            let harness = if s.harness.is_empty() {
                "unknown harness".to_string()
            } else {
                clean(&s.harness, false)
            };
            format!(
                "{} joined: {harness} in {}",
                who(&s),
                clean(&roster::place(&s), false)
            )
        }),
        "session.updated" => shaped::<Session>(data, "session").map(|s| {
            let mut line = format!("{} {}", who(&s), clean(&roster::activity(&s), false));
            if !s.status.is_empty() {
                line.push_str(&format!(" — {}", truncate(&clean(&s.status, false), 60)));
            }
            line
        }),
        "session.left" => {
            shaped::<Session>(data, "session").map(|s| match text(data, &["reason"]) {
                Some(reason) => format!("{} left ({})", who(&s), clean(reason, false)),
                None => format!("{} left", who(&s)),
            })
        }
        "message.sent" => shaped::<Message>(data, "message").map(|m| describe_sent(&m, data)),
        "delivery.updated" => text(data, &["state"]).map(|state| describe_delivery(state, data)),
        "room.joined" | "room.left" => text(data, &["room", "name"]).map(|room| {
            let member = text(data, &["nickname"])
                .or_else(|| text(data, &["session_id", "session", "id"]))
                .unwrap_or("?");
            let verb = if kind == "room.joined" {
                "joined"
            } else {
                "left"
            };
            format!(
                "{} {verb} #{}",
                clean(&short_id(member), false),
                clean(room, false)
            )
        }),
        _ => None,
    };
    described.unwrap_or_else(|| truncate(&clean(&data.to_string(), false), 160))
}

/// `message.sent`: who wrote to whom, and the start of the body.
fn describe_sent(m: &Message, data: &Value) -> String {
    // A direct message's recipient reads better by nickname, which the deliveries carry.
    let deliveries: Vec<DeliveryView> = data
        .get("deliveries")
        .and_then(|d| serde_json::from_value(d.clone()).ok())
        .unwrap_or_default();
    let to = match (&m.to, deliveries.as_slice()) {
        (Target::Session(_), [only]) => {
            format!("{} ({})", only.nickname, short_id(&only.recipient))
        }
        (to, _) => address(to),
    };
    format!(
        "{} ({}) → {}: {}",
        clean(&m.from_nickname, false),
        clean(&short_id(&m.from), false),
        clean(&to, false),
        truncate(&clean(&m.body, false), 80)
    )
}

/// `delivery.updated`: which messages reached which state for whom.
fn describe_delivery(state: &str, data: &Value) -> String {
    let ids: Vec<&str> = match data.get("message_ids").and_then(Value::as_array) {
        Some(ids) => ids.iter().filter_map(Value::as_str).collect(),
        None => text(data, &["message_id", "id"]).into_iter().collect(),
    };
    let messages = match ids.as_slice() {
        [one] => format!("message {}", clean(one, false)),
        many => format!("{} messages", many.len()),
    };
    let recipient = text(data, &["nickname"])
        .or_else(|| text(data, &["recipient"]))
        .unwrap_or("?");
    format!(
        "{messages} → {}: {}",
        clean(&short_id(recipient), false),
        clean(state, false)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sse(kind: &str, data: Value) -> SseEvent {
        SseEvent {
            event: kind.into(),
            data: json!({"seq": 7, "at": 3_723_000, "kind": kind, "data": data}).to_string(),
        }
    }

    #[test]
    fn json_mode_prints_each_event_as_one_line() {
        // Proves --json prints the Event document compacted onto a single line.
        let line = render(&sse("sweep", json!({"swept": 2})), true).unwrap();
        assert!(!line.contains('\n'));
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!((back.seq, back.kind.as_str()), (7, "sweep"));
    }

    #[test]
    fn human_lines_describe_known_events() {
        // Proves sessions and messages are described in words, with the event's UTC clock time.
        let mut session = Session::new("1a2b3c4d-5e6f", "calm-heron", 0);
        session.harness = "claude".into();
        session.project = "muster".into();
        let line = render(
            &sse("session.joined", serde_json::to_value(&session).unwrap()),
            false,
        )
        .unwrap();
        assert_eq!(
            line,
            "01:02:03Z session.joined   calm-heron (1a2b3c4d) joined: claude in muster"
        );

        let message = json!({"id": "01A", "from": "op:alice", "from_nickname": "alice",
            "to": {"kind": "room", "name": "everyone"}, "reply_to": null, "body": "hi\nall", "sent_at": 0});
        let line = render(&sse("message.sent", json!({ "message": message })), false).unwrap();
        assert!(
            line.ends_with("alice (op:alice) → #everyone: hi all"),
            "{line}"
        );
    }

    #[test]
    fn unknown_shapes_fall_back_to_json_and_bad_data_is_skipped() {
        // Proves an event with an unexpected shape still prints, and non-JSON data is skipped without a panic.
        let line = render(&sse("something.new", json!({"x": 1})), false).unwrap();
        assert!(line.ends_with(r#"{"x":1}"#), "{line}");
        assert!(render(
            &SseEvent {
                event: "x".into(),
                data: "not json".into()
            },
            false
        )
        .is_none());
        assert!(render(
            &SseEvent {
                event: "ready".into(),
                data: r#"{"version":"0.1.0"}"#.into()
            },
            true
        )
        .is_none());
    }

    #[test]
    fn daemon_event_shapes_read_as_sentences() {
        // Proves the daemon's delivery, room and departure events are described with short ids and reasons.
        let line = describe(
            "delivery.updated",
            &json!({"recipient": "1a2b3c4d-5e6f", "message_ids": ["01A"], "state": "surfaced"}),
        );
        assert_eq!(line, "message 01A → 1a2b3c4d: surfaced");
        let line = describe(
            "delivery.updated",
            &json!({"recipient": "op:bob", "message_ids": ["01A", "01B"], "state": "acked"}),
        );
        assert_eq!(line, "2 messages → op:bob: acked");
        assert_eq!(
            describe(
                "room.joined",
                &json!({"room": "ops", "session": "1a2b3c4d-5e6f"})
            ),
            "1a2b3c4d joined #ops"
        );
        let session = serde_json::to_value(Session::new("1a2b3c4d-5e6f", "calm-heron", 0)).unwrap();
        assert_eq!(
            describe(
                "session.left",
                &json!({"session": session, "reason": "swept"})
            ),
            "calm-heron (1a2b3c4d) left (swept)"
        );
    }
}
