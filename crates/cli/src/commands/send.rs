//! `muster send` and `muster broadcast`: leave a message and say truthfully what happened to it.

use muster_core::protocol::SendOutcome;
use std::io::Read;

use clap::Args;
use muster_core::api::{BroadcastRequest, DeliveryView, SendRequest, SendResponse};
use muster_core::limits::DEFAULT_MAX_REQUEST_BYTES;
use muster_core::DeliveryState;

use crate::client::{decode, ClientError};
use crate::context::Context;
use crate::output::{self, clean, short_id};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Recipient: session id, nickname, unique id prefix, or op:<name>
    pub to: String,
    /// Message text; `-` reads it from stdin
    pub body: String,
    /// Act as this session (id, nickname or prefix) or op:<name> [default: $MUSTER_SESSION_ID,
    /// else $CLAUDE_CODE_SESSION_ID, else op:<operator>]
    #[arg(long = "as", value_name = "SESSION")]
    pub as_: Option<String>,
    /// Id of the message this one answers
    #[arg(long, value_name = "MSG")]
    pub reply_to: Option<String>,
}

#[derive(Debug, Args)]
pub struct BroadcastArgs {
    /// Room: everyone, project:<name>, op:<name> or a named room
    pub room: String,
    /// Message text; `-` reads it from stdin
    pub body: String,
    /// Act as this session (id, nickname or prefix) or op:<name> [default: $MUSTER_SESSION_ID,
    /// else $CLAUDE_CODE_SESSION_ID, else op:<operator>]
    #[arg(long = "as", value_name = "SESSION")]
    pub as_: Option<String>,
}

/// Most delivery lines a broadcast prints before summarising the rest.
const MAX_DELIVERY_LINES: usize = 20;

pub async fn run_send(ctx: &Context, args: SendArgs) -> Result<i32, ClientError> {
    let (as_, as_from_env) = ctx.acting_as_from_env(args.as_.as_deref());
    let request = SendRequest {
        as_: Some(as_),
        to: args.to,
        body: read_body(&args.body, std::io::stdin().lock())?,
        reply_to: args.reply_to,
        as_from_env,
        via: Default::default(),
    };
    let value = ctx.client()?.post("/api/v1/messages", &request).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let response: SendResponse = decode(value, "send answer")?;
    output::emit(&render_send(&response));
    Ok(0)
}

pub async fn run_broadcast(ctx: &Context, args: BroadcastArgs) -> Result<i32, ClientError> {
    let room = args
        .room
        .strip_prefix('#')
        .unwrap_or(&args.room)
        .to_string();
    let (as_, as_from_env) = ctx.acting_as_from_env(args.as_.as_deref());
    let request = BroadcastRequest {
        as_: Some(as_),
        room: room.clone(),
        body: read_body(&args.body, std::io::stdin().lock())?,
        as_from_env,
        via: Default::default(),
    };
    let value = ctx.client()?.post("/api/v1/broadcast", &request).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let response: SendResponse = decode(value, "broadcast answer")?;
    output::emit(&render_broadcast(&room, &response));
    Ok(0)
}

/// The message body: the argument, or stdin for `-` (bounded, one trailing newline dropped).
pub fn read_body(arg: &str, stdin: impl Read) -> Result<String, ClientError> {
    if arg != "-" {
        return Ok(arg.to_string());
    }
    let mut bytes = Vec::new();
    stdin
        .take(DEFAULT_MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::local(format!("cannot read the message from stdin: {e}")))?;
    if bytes.len() > DEFAULT_MAX_REQUEST_BYTES {
        return Err(ClientError::local("the message on stdin is over 1 MiB"));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ClientError::local("the message on stdin is not UTF-8 text"))?;
    let trimmed = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(trimmed.to_string())
}

/// One recipient's fate in a sentence.
pub fn delivery_line(d: &DeliveryView) -> String {
    let who = format!(
        "{} ({})",
        clean(&d.nickname, false),
        clean(&short_id(&d.recipient), false)
    );
    let person = d.recipient.starts_with("op:");
    match d.state {
        DeliveryState::Pushed => format!("pushed to {who}"),
        DeliveryState::Queued if d.woken => {
            format!("queued for {who}: it was idle, a turn was started for it (woken)")
        }
        DeliveryState::Queued if person => {
            format!("queued for {who}: waits in their inbox (muster inbox)")
        }
        DeliveryState::Queued if !d.present => {
            format!("queued for {who}: away; waits for its return")
        }
        DeliveryState::Queued => format!("queued for {who}: will surface at its next turn"),
        state => format!("{} for {who}", state.as_str()),
    }
}

pub fn render_send(response: &SendResponse) -> String {
    let mut out = String::new();
    if response.deliveries.is_empty() {
        out.push_str(&format!("sent ({})\n", response.state.as_str()));
    }
    for d in &response.deliveries {
        out.push_str(&delivery_line(d));
        out.push('\n');
    }
    out.push_str(&format!("message {}\n", response.message.id));
    out
}

pub fn render_broadcast(room: &str, response: &SendResponse) -> String {
    let room = clean(room, false);
    let mut out = String::new();
    let n = response.deliveries.len();
    if response.state == SendOutcome::None || n == 0 {
        out.push_str(&format!("sent to #{room}, but no one else is in it\n"));
    } else {
        let pushed = response
            .deliveries
            .iter()
            .filter(|d| d.state == DeliveryState::Pushed)
            .count();
        let away = response
            .deliveries
            .iter()
            .filter(|d| !d.present && !d.recipient.starts_with("op:"))
            .count();
        let mut summary = format!(
            "sent to #{room}: {n} recipient{}",
            if n == 1 { "" } else { "s" }
        );
        let mut parts = Vec::new();
        if pushed > 0 {
            parts.push(format!("{pushed} pushed"));
        }
        if n - pushed > 0 {
            parts.push(format!("{} queued", n - pushed));
        }
        if away > 0 {
            parts.push(format!("{away} away"));
        }
        if !parts.is_empty() {
            summary.push_str(&format!(" ({})", parts.join(", ")));
        }
        out.push_str(&summary);
        out.push('\n');
        for d in response.deliveries.iter().take(MAX_DELIVERY_LINES) {
            out.push_str(&format!("  {}\n", delivery_line(d)));
        }
        if n > MAX_DELIVERY_LINES {
            out.push_str(&format!(
                "  … and {} more (--json lists all)\n",
                n - MAX_DELIVERY_LINES
            ));
        }
    }
    out.push_str(&format!("message {}\n", response.message.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::{Message, Target};

    fn view(recipient: &str, nickname: &str, state: DeliveryState, present: bool) -> DeliveryView {
        DeliveryView {
            recipient: recipient.into(),
            nickname: nickname.into(),
            state,
            present,
            woken: false,
        }
    }

    fn response(state: SendOutcome, deliveries: Vec<DeliveryView>) -> SendResponse {
        SendResponse {
            message: Message {
                id: "01J0000000000000000000TEST".into(),
                from: "op:alice".into(),
                from_nickname: "alice".into(),
                to: Target::Session("x".into()),
                reply_to: None,
                body: "hi".into(),
                sent_at: 0,
                via: Default::default(),
            },
            state,
            deliveries,
        }
    }

    #[test]
    fn send_tells_the_truth_about_delivery() {
        // Proves each delivery state reads as the contract says: pushed, queued for next turn, queued while away.
        let r = response(
            SendOutcome::Queued,
            vec![view(
                "1a2b3c4d-5e6f",
                "calm-heron",
                DeliveryState::Queued,
                true,
            )],
        );
        assert_eq!(
            render_send(&r),
            "queued for calm-heron (1a2b3c4d): will surface at its next turn\nmessage 01J0000000000000000000TEST\n"
        );
        let away = view("1a2b3c4d-5e6f", "calm-heron", DeliveryState::Queued, false);
        assert_eq!(
            delivery_line(&away),
            "queued for calm-heron (1a2b3c4d): away; waits for its return"
        );
        let pushed = view("1a2b3c4d-5e6f", "calm-heron", DeliveryState::Pushed, true);
        assert_eq!(delivery_line(&pushed), "pushed to calm-heron (1a2b3c4d)");
        let person = view("op:bob", "bob", DeliveryState::Queued, false);
        assert_eq!(
            delivery_line(&person),
            "queued for bob (op:bob): waits in their inbox (muster inbox)"
        );
    }

    #[test]
    fn broadcast_summarises_and_handles_empty_rooms() {
        // Proves a broadcast counts pushed/queued/away recipients and says when a room is empty.
        let r = response(
            SendOutcome::Queued,
            vec![
                view("aaaaaaaa1", "a-one", DeliveryState::Pushed, true),
                view("bbbbbbbb2", "b-two", DeliveryState::Queued, false),
            ],
        );
        let text = render_broadcast("everyone", &r);
        assert!(
            text.starts_with("sent to #everyone: 2 recipients (1 pushed, 1 queued, 1 away)\n"),
            "{text}"
        );
        assert!(
            render_broadcast("lonely", &response(SendOutcome::None, vec![]))
                .starts_with("sent to #lonely, but no one else is in it")
        );
    }

    #[test]
    fn body_dash_reads_stdin_with_a_bound() {
        // Proves `-` reads the body from stdin, drops one trailing newline, and refuses over 1 MiB or non-UTF-8.
        assert_eq!(read_body("plain", &b"ignored"[..]).unwrap(), "plain");
        assert_eq!(
            read_body("-", &b"line one\nline two\n"[..]).unwrap(),
            "line one\nline two"
        );
        assert_eq!(read_body("-", &b"crlf\r\n"[..]).unwrap(), "crlf");
        let big = vec![b'x'; DEFAULT_MAX_REQUEST_BYTES + 1];
        assert!(read_body("-", &big[..]).is_err());
        assert!(read_body("-", &[0xff, 0xfe][..]).is_err());
    }
}
