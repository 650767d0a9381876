//! When mail may start a turn in an idle session (a *wake*), as pure
//! functions of the clock: which mail is urgent enough, and whether the
//! session's cooldown allows a wake now or only later.

use crate::{Message, Millis, Target};

/// The line a waker puts into an idle session. The turn it starts carries
/// the mail itself (the prompt-submit hook surfaces it), so the line only
/// says why the turn started and how to answer.
pub const WAKE_PROMPT: &str =
    "New muster mail for you (shown with this prompt). Answer with muster's send_message tool.";

/// Default: at most one wake per session per this many milliseconds.
pub const DEFAULT_COOLDOWN_MS: Millis = 10_000;

/// How a waker reaches a session, as shown on the roster.
pub const HOW: [&str; 3] = ["pty", "opencode", "codex"];

/// Words of `body` that @mention someone: `@name` up to the next space or
/// punctuation, with trailing sentence marks trimmed.
pub fn mentions(body: &str) -> impl Iterator<Item = &str> {
    body.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '!' | '?' | '(' | ')'))
        .filter_map(|word| word.strip_prefix('@'))
        .map(|name| name.trim_end_matches(['.', '\'', '"']))
        .filter(|name| !name.is_empty())
}

/// Whether `message` is urgent for `recipient` (`id`, `nickname`): direct
/// mail (to the session, or relayed from a person) and room mail that
/// @mentions it. Urgent mail is delivered mid-turn, holds a turn at its stop
/// and wakes an idle session; other room mail is ambient and waits for the
/// next turn.
pub fn is_urgent(message: &Message, id: &str, nickname: &str) -> bool {
    match &message.to {
        Target::Session(_) | Target::Operator(_) => true,
        Target::Room(_) => mentions(&message.body).any(|name| name == id || name == nickname),
    }
}

/// What the cooldown allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Wake now.
    Now,
    /// Not before this many milliseconds from now.
    In(Millis),
}

/// Whether a session last woken at `last` (monotonic) may be woken at `now`.
pub fn due(last: Option<Millis>, now: Millis, cooldown: Millis) -> Due {
    match last {
        Some(t) if now - t < cooldown => Due::In(cooldown - (now - t)),
        _ => Due::Now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: Target, body: &str) -> Message {
        Message {
            id: "01A".into(),
            from: "s-1".into(),
            from_nickname: "swift-otter".into(),
            to,
            reply_to: None,
            body: body.into(),
            sent_at: 0,
            via: Default::default(),
        }
    }

    #[test]
    fn direct_mail_and_mentions_are_urgent_room_mail_is_not() {
        // Proves which mail may interrupt: direct and operator mail always, room mail only where it names the recipient.
        assert!(is_urgent(
            &msg(Target::Session("s-2".into()), "hi"),
            "s-2",
            "calm-heron"
        ));
        assert!(is_urgent(
            &msg(Target::Operator("ann".into()), "hi"),
            "s-2",
            "calm-heron"
        ));
        let room = |body: &str| msg(Target::Room("everyone".into()), body);
        assert!(!is_urgent(&room("lunch at noon"), "s-2", "calm-heron"));
        assert!(is_urgent(
            &room("@calm-heron, take the tests."),
            "s-2",
            "calm-heron"
        ));
        assert!(is_urgent(&room("(@s-2) please"), "s-2", "calm-heron"));
        assert!(!is_urgent(&room("@calm-heronry"), "s-2", "calm-heron"));
        assert!(!is_urgent(
            &room("mail calm-heron@example.com"),
            "s-2",
            "calm-heron"
        ));
    }

    #[test]
    fn the_cooldown_spaces_wakes() {
        // Proves one wake per cooldown: never woken or woken long ago is now; within the window says how long is left.
        assert_eq!(due(None, 5, 10_000), Due::Now);
        assert_eq!(due(Some(0), 10_000, 10_000), Due::Now);
        assert_eq!(due(Some(0), 9_999, 10_000), Due::In(1));
        assert_eq!(due(Some(1_000), 4_000, 10_000), Due::In(7_000));
    }
}
