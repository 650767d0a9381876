//! `muster inbox`: read the mail waiting for a session or a person, and optionally ack it.

use clap::Args;
use muster_core::api::{AckRequest, AckResponse, Inbox, InboxMessage};
use muster_core::{DeliveryState, Millis, Target};

use crate::client::{decode, ClientError};
use crate::context::Context;
use crate::output::{self, ago, clean, short_id};

/// The most messages one read shows (the daemon clamps `limit` to it).
const MAX_LIMIT: u32 = 1_000;

#[derive(Debug, Args)]
pub struct InboxArgs {
    /// Whose inbox: a session (id, nickname or prefix) or op:<name> [default: $MUSTER_SESSION_ID,
    /// else $CLAUDE_CODE_SESSION_ID, else op:<operator>]
    #[arg(long = "as", value_name = "SESSION")]
    pub as_: Option<String>,
    /// Also show messages already read
    #[arg(long)]
    pub all: bool,
    /// Mark the messages shown as dealt with (acked)
    #[arg(long)]
    pub ack: bool,
    /// Show at most N messages (1 to 1000) [default: 100]; the output says when more exist
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub limit: Option<u32>,
}

pub async fn run(ctx: &Context, args: &InboxArgs) -> Result<i32, ClientError> {
    let as_ = ctx.acting_as(args.as_.as_deref());
    let mut query = vec![("as", as_.clone())];
    if args.all {
        query.push(("all", "true".to_string()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let client = ctx.client()?;
    let mut value = client.get("/api/v1/inbox", &query).await?;

    let mut acked = None;
    if args.ack {
        let inbox: Inbox = decode(value.clone(), "inbox")?;
        let ids: Vec<String> = inbox
            .messages
            .iter()
            .map(|m| m.message.id.clone())
            .collect();
        acked = Some(if ids.is_empty() {
            0
        } else {
            let request = AckRequest {
                as_: Some(as_),
                ids,
                all: false,
            };
            let answer: AckResponse = decode(
                client.post("/api/v1/inbox/ack", &request).await?,
                "ack answer",
            )?;
            answer.acked
        });
    }

    if ctx.json {
        if let (Some(n), Some(object)) = (acked, value.as_object_mut()) {
            object.insert("acked".to_string(), n.into());
        }
        output::print_json(&value);
        return Ok(0);
    }
    let inbox: Inbox = decode(value, "inbox")?;
    output::emit(&render(&inbox, args.all, acked, output::now_millis()));
    Ok(0)
}

/// `direct` or `room #name`.
fn kind(target: &Target) -> String {
    match target {
        Target::Room(room) => format!("room #{room}"),
        _ => "direct".to_string(),
    }
}

/// Whether the message was new to its reader before this read.
fn freshness(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Queued | DeliveryState::Pushed => "new",
        DeliveryState::Surfaced | DeliveryState::Seen => "read",
        DeliveryState::Acked => "acked",
    }
}

pub fn render_message(m: &InboxMessage, now: Millis) -> String {
    let msg = &m.message;
    let mut out = format!(
        "{} ({}) · {} · {} · {} · {}\n",
        clean(&msg.from_nickname, false),
        clean(&short_id(&msg.from), false),
        clean(&kind(&msg.to), false),
        ago(msg.sent_at, now),
        freshness(m.state),
        msg.id,
    );
    if let Some(reply_to) = &msg.reply_to {
        out.push_str(&format!("  in reply to {}\n", clean(reply_to, false)));
    }
    for line in clean(&msg.body, true).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub fn render(inbox: &Inbox, all: bool, acked: Option<usize>, now: Millis) -> String {
    let whose = clean(&short_id(&inbox.principal), false);
    if inbox.messages.is_empty() {
        let what = if all {
            "no messages"
        } else {
            "no new messages"
        };
        return format!("{what} for {whose}\n");
    }
    let blocks: Vec<String> = inbox
        .messages
        .iter()
        .map(|m| render_message(m, now))
        .collect();
    let mut out = blocks.join("\n");
    let n = inbox.messages.len();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    out.push('\n');
    out.push_str(&match (inbox.truncated, all, inbox.total) {
        (false, _, _) => format!("{n} message{} for {whose}", plural(n)),
        (true, true, Some(total)) => format!(
            "showing the newest {n} of {total} messages for {whose}; --limit N for more (at most {MAX_LIMIT})"
        ),
        (true, true, None) => format!(
            "showing the newest {n} message{} for {whose}; older ones exist: --limit N for more (at most {MAX_LIMIT})",
            plural(n)
        ),
        (true, false, Some(total)) => format!(
            "showing the oldest {n} of {total} new messages for {whose}; the rest come with the next read, or --limit N for more"
        ),
        (true, false, None) => format!(
            "showing the oldest {n} new message{} for {whose}; more are waiting: the next read shows them, or --limit N for more",
            plural(n)
        ),
    });
    match acked {
        Some(acked) => out.push_str(&format!("; acked {acked}\n")),
        None => out.push_str(" (muster inbox --ack marks them dealt with)\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::Message;

    fn message(
        id: &str,
        to: Target,
        body: &str,
        reply_to: Option<&str>,
        sent_at: Millis,
    ) -> InboxMessage {
        InboxMessage {
            message: Message {
                id: id.into(),
                from: "1a2b3c4d-5e6f".into(),
                from_nickname: "calm-heron".into(),
                to,
                reply_to: reply_to.map(Into::into),
                body: body.into(),
                sent_at,
                via: Default::default(),
            },
            state: DeliveryState::Queued,
        }
    }

    #[test]
    fn inbox_shows_sender_time_kind_reply_and_body() {
        // Proves each message shows sender nickname and short id, age, kind, reply_to and the indented body.
        let now = 1_000_000;
        let inbox = Inbox {
            principal: "op:alice".into(),
            messages: vec![
                message(
                    "01A",
                    Target::Operator("alice".into()),
                    "hello\nsecond line",
                    Some("01Z"),
                    now - 120_000,
                ),
                message(
                    "01B",
                    Target::Room("everyone".into()),
                    "rebasing",
                    None,
                    now - 5_000,
                ),
            ],
            truncated: false,
            total: Some(2),
        };
        let text = render(&inbox, false, Some(2), now);
        assert!(text.starts_with("calm-heron (1a2b3c4d) · direct · 2m ago · new · 01A\n  in reply to 01Z\n  hello\n  second line\n"), "{text}");
        assert!(
            text.contains(
                "calm-heron (1a2b3c4d) · room #everyone · 5s ago · new · 01B\n  rebasing\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("2 messages for op:alice; acked 2\n"),
            "{text}"
        );
    }

    #[test]
    fn empty_inbox_says_so() {
        // Proves an empty inbox prints one sentence naming whose inbox it is.
        let inbox = Inbox {
            principal: "op:alice".into(),
            messages: vec![],
            truncated: false,
            total: Some(0),
        };
        assert_eq!(
            render(&inbox, false, None, 0),
            "no new messages for op:alice\n"
        );
        assert_eq!(render(&inbox, true, None, 0), "no messages for op:alice\n");
    }

    #[test]
    fn a_cut_listing_says_how_much_it_shows_and_how_to_see_more() {
        // Proves a truncated inbox names what it shows (newest of history, oldest of unread), the total when known, and --limit.
        let now = 1_000_000;
        let one = vec![message(
            "01A",
            Target::Operator("alice".into()),
            "hi",
            None,
            now,
        )];
        let inbox = |truncated, total| Inbox {
            principal: "op:alice".into(),
            messages: one.clone(),
            truncated,
            total,
        };
        let footer = |text: String| text.lines().last().unwrap().to_string();
        assert_eq!(
            footer(render(&inbox(true, None), true, None, now)),
            "showing the newest 1 message for op:alice; older ones exist: --limit N for more (at most 1000) \
(muster inbox --ack marks them dealt with)"
        );
        assert_eq!(
            footer(render(&inbox(true, Some(300)), true, Some(1), now)),
            "showing the newest 1 of 300 messages for op:alice; --limit N for more (at most 1000); acked 1"
        );
        assert_eq!(
            footer(render(&inbox(true, Some(3)), false, None, now)),
            "showing the oldest 1 of 3 new messages for op:alice; the rest come with the next read, or --limit N \
for more (muster inbox --ack marks them dealt with)"
        );
        assert_eq!(
            footer(render(&inbox(false, Some(1)), true, None, now)),
            "1 message for op:alice (muster inbox --ack marks them dealt with)"
        );
    }
}
