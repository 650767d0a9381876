//! `muster search` (messages whose body has the words) and `muster
//! history` (messages newest first): pages of stored mail, everyone's or
//! as one reader sees it.

use clap::Args;
use muster_core::api::{MessagePage, PAGE_MAX};
use muster_core::{Message, Millis, Target};

use crate::client::{decode, ClientError};
use crate::context::Context;
use crate::output::{self, ago, clean, short_id};

/// Whose mail, to whom, and which page: what both commands take.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Only what this session (id, nickname or prefix) or op:<name> sent or received [default: the
    /// session of $MUSTER_SESSION_ID or $CLAUDE_CODE_SESSION_ID, else everyone's]
    #[arg(long = "as", value_name = "SESSION")]
    pub as_: Option<String>,
    /// Only messages to this session, op:<name> or room (#name, or a room's name)
    #[arg(long, value_name = "TO")]
    pub to: Option<String>,
    /// Show at most N messages (1 to 500) [default: 50]; the output says when more exist
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Only messages older than this id (the page before's last, as the output names it)
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to find in message bodies: all of them, in any order, each as the start of a word
    #[arg(required = true, num_args = 1..)]
    pub words: Vec<String>,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub page: PageArgs,
}

/// The query a page asks for. Inside an agent's shell the session reads as
/// itself (an agent token may read no other way); a person reads
/// everyone's mail unless `--as` names a reader.
fn query(ctx: &Context, page: &PageArgs) -> Vec<(&'static str, String)> {
    let (who, from_env) = ctx.acting_as_from_env(page.as_.as_deref());
    let mut query = Vec::new();
    if page.as_.is_some() || from_env {
        query.push(("as", who));
    }
    if let Some(to) = &page.to {
        query.push(("to", to.clone()));
    }
    if let Some(limit) = page.limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(before) = &page.before {
        query.push(("before", before.clone()));
    }
    query
}

pub async fn run_search(ctx: &Context, args: &SearchArgs) -> Result<i32, ClientError> {
    let text = args.words.join(" ");
    let mut q = query(ctx, &args.page);
    q.push(("q", text.clone()));
    show(ctx, "/api/v1/search", &q, &Listing::Search(&text)).await
}

pub async fn run_history(ctx: &Context, args: &HistoryArgs) -> Result<i32, ClientError> {
    let q = query(ctx, &args.page);
    show(ctx, "/api/v1/messages", &q, &Listing::History).await
}

async fn show(
    ctx: &Context,
    path: &str,
    query: &[(&'static str, String)],
    listing: &Listing<'_>,
) -> Result<i32, ClientError> {
    let value = ctx.client()?.get(path, query).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let page: MessagePage = decode(value, "page of messages")?;
    let reader = query
        .iter()
        .find(|(k, _)| *k == "as")
        .map(|(_, v)| v.as_str());
    output::emit(&render(&page, listing, reader, output::now_millis()));
    Ok(0)
}

/// What was listed, for the words around it.
pub enum Listing<'a> {
    Search(&'a str),
    History,
}

/// Where a message went, as a person reads it.
fn destination(to: &Target) -> String {
    match to {
        Target::Session(id) => short_id(id),
        Target::Operator(name) => format!("op:{name}"),
        Target::Room(room) => format!("#{room}"),
    }
}

fn render_message(m: &Message, now: Millis) -> String {
    let mut out = format!(
        "{} ({}) → {} · {} · {}\n",
        clean(&m.from_nickname, false),
        clean(&short_id(&m.from), false),
        clean(&destination(&m.to), false),
        ago(m.sent_at, now),
        clean(&m.id, false),
    );
    if let Some(reply_to) = &m.reply_to {
        out.push_str(&format!("  in reply to {}\n", clean(reply_to, false)));
    }
    for line in clean(&m.body, true).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub fn render(page: &MessagePage, listing: &Listing, reader: Option<&str>, now: Millis) -> String {
    // As the reader was named (a nickname is shown whole).
    let whose = reader.map_or_else(String::new, |r| format!(" for {}", clean(r, false)));
    let what = match listing {
        Listing::Search(text) => format!("matching {:?}", clean(text, false)),
        Listing::History => String::new(),
    };
    let n = page.messages.len();
    if n == 0 {
        let none = match listing {
            Listing::Search(_) => format!("no messages {what}{whose}\n"),
            Listing::History => format!("no messages{whose}\n"),
        };
        return none;
    }
    let blocks: Vec<String> = page
        .messages
        .iter()
        .map(|m| render_message(m, now))
        .collect();
    let mut out = blocks.join("\n");
    let plural = if n == 1 { "" } else { "s" };
    let what = if what.is_empty() {
        what
    } else {
        format!(" {what}")
    };
    out.push('\n');
    out.push_str(&match &page.next {
        Some(next) if page.partial => format!(
            "showing the newest {n} message{plural}{what}{whose}; older ones exist: --before {} for the next page, or --limit N for more (at most {PAGE_MAX})\n",
            clean(next, false)
        ),
        _ => format!("{n} message{plural}{what}{whose}\n"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, to: Target, body: &str, sent_at: Millis) -> Message {
        Message {
            id: id.into(),
            from: "1a2b3c4d-5e6f".into(),
            from_nickname: "calm-heron".into(),
            to,
            reply_to: None,
            body: body.into(),
            sent_at,
            via: Default::default(),
        }
    }

    fn page(messages: Vec<Message>, next: Option<&str>) -> MessagePage {
        MessagePage {
            partial: next.is_some(),
            next: next.map(str::to_string),
            messages,
        }
    }

    #[test]
    fn each_message_shows_sender_destination_age_id_and_body() {
        // Proves a listed message names its sender, where it went, its age and id, and its body indented.
        let now = 1_000_000;
        let p = page(
            vec![
                message(
                    "01B",
                    Target::Room("dev".into()),
                    "deploying\nnow",
                    now - 5_000,
                ),
                message("01A", Target::Operator("dana".into()), "hi", now - 120_000),
            ],
            None,
        );
        let text = render(&p, &Listing::Search("deploy"), None, now);
        assert!(
            text.starts_with("calm-heron (1a2b3c4d) → #dev · 5s ago · 01B\n  deploying\n  now\n\n"),
            "{text}"
        );
        assert!(
            text.contains("calm-heron (1a2b3c4d) → op:dana · 2m ago · 01A\n  hi\n"),
            "{text}"
        );
        assert!(text.ends_with("2 messages matching \"deploy\"\n"), "{text}");
    }

    #[test]
    fn a_cut_listing_says_so_and_how_to_see_more() {
        // Proves a partial page says it shows the newest N, names the next page's --before, and --limit.
        let p = page(
            vec![message("01B", Target::Session("s-2".into()), "x", 0)],
            Some("01B"),
        );
        let footer = |text: String| text.lines().last().unwrap().to_string();
        assert_eq!(
            footer(render(&p, &Listing::History, Some("swift-otter"), 0)),
            "showing the newest 1 message for swift-otter; older ones exist: --before 01B for the next page, \
or --limit N for more (at most 500)"
        );
        assert_eq!(
            footer(render(&p, &Listing::Search("x y"), None, 0)),
            "showing the newest 1 message matching \"x y\"; older ones exist: --before 01B for the next page, \
or --limit N for more (at most 500)"
        );
    }

    #[test]
    fn nothing_found_says_so() {
        // Proves an empty page is one sentence naming what was looked for.
        let empty = page(vec![], None);
        assert_eq!(
            render(&empty, &Listing::Search("lunch"), Some("op:dana"), 0),
            "no messages matching \"lunch\" for op:dana\n"
        );
        assert_eq!(render(&empty, &Listing::History, None, 0), "no messages\n");
    }
}
