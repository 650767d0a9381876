//! Unread mail, per recipient, with the claims answers hold on it.
//!
//! What is unread and in which delivery state is durable: it changes only
//! through `State::apply` (the `pub(super)` methods). Claims are live: an
//! answer claims mail so no concurrent answer offers it too, then settles
//! the claim (see `surfacing`).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use muster_core::{DeliveryState, Message, Millis};
use tokio::sync::Notify;

use super::Claim;

#[derive(Debug, Clone)]
struct Unread {
    message: Arc<Message>,
    state: DeliveryState,
    /// Taken by a response being written; not offered to another.
    claimed: bool,
    /// Direct mail or an @mention of the recipient (see `wake::is_urgent`).
    urgent: bool,
    /// Monotonic time the recipient's shim confirmed the push.
    pushed_at: Option<Millis>,
    /// Applied but not yet durable: no reader is offered it until the store
    /// has it (see [`Mailboxes::settle`]), so nothing that might still be
    /// lost reaches a model.
    pending: bool,
}

impl Unread {
    /// Offered to readers: not held by another answer, and durable.
    fn free(&self) -> bool {
        !self.claimed && !self.pending
    }
}

/// Pushes a recipient keeps in memory once written to its link, newest
/// first. They are kept so a hook that finds one missing from the
/// harness's transcript can surface it again; a session whose harness runs
/// no hooks would otherwise keep every push it ever got in memory. Older
/// ones stay `pushed` in the store (a read with `all` shows them). A
/// mailbox may hold [`PUSH_TRIM_SLACK`] more before it is trimmed back.
pub const MAX_PUSHED_KEPT: usize = 64;

/// How many messages past [`MAX_PUSHED_KEPT`] a mailbox takes before its
/// pushes are trimmed: trimming walks the whole mailbox, so it runs once
/// per so many pushes, not at each one (the walk cost ~1.4k instructions
/// per push, by `scripts/callgrind-delivery.py`).
const PUSH_TRIM_SLACK: usize = 16;

#[derive(Default)]
pub struct Mailboxes {
    /// Recipient → message id → its unread delivery, oldest id first.
    by_recipient: HashMap<String, BTreeMap<String, Unread>>,
    /// Woken whenever a recipient's mail becomes readable (for
    /// `wait_for_message`).
    readable: HashMap<String, Arc<Notify>>,
}

impl Mailboxes {
    /// What to wait on for `recipient`'s next readable mail.
    pub fn waiter(&mut self, recipient: &str) -> Arc<Notify> {
        self.readable
            .entry(recipient.to_string())
            .or_default()
            .clone()
    }

    /// A session is forgotten: nobody waits on its mail any more. (Its
    /// deliveries stay until retention prunes them, as in the store.)
    pub(super) fn forget_waiter(&mut self, recipient: &str) {
        self.readable.remove(recipient);
    }

    fn notify(&self, recipient: &str) {
        if let Some(n) = self.readable.get(recipient) {
            n.notify_waiters();
        }
    }

    pub(super) fn add(
        &mut self,
        message: Arc<Message>,
        recipient: &str,
        state: DeliveryState,
        urgent: bool,
        pushed_at: Option<Millis>,
        pending: bool,
    ) {
        let unread = Unread {
            message,
            state,
            claimed: false,
            urgent,
            pushed_at,
            pending,
        };
        let pushed = unread.state == DeliveryState::Pushed;
        self.by_recipient
            .entry(recipient.to_string())
            .or_default()
            .insert(unread.message.id.clone(), unread);
        if pushed {
            self.keep_newest_pushes(recipient);
        }
        if !pending {
            self.notify(recipient);
        }
    }

    /// Once the recipient's mailbox holds more than [`MAX_PUSHED_KEPT`]
    /// and [`PUSH_TRIM_SLACK`] messages, forgets its oldest pushes beyond
    /// `MAX_PUSHED_KEPT` (only those no answer holds).
    fn keep_newest_pushes(&mut self, recipient: &str) {
        let Some(mail) = self.by_recipient.get_mut(recipient) else {
            return;
        };
        if mail.len() <= MAX_PUSHED_KEPT + PUSH_TRIM_SLACK {
            return;
        }
        // One pass, newest first: each forgettable push past the newest
        // MAX_PUSHED_KEPT of them goes.
        let forgettable = |u: &Unread| u.state == DeliveryState::Pushed && u.free();
        let oldest: Vec<String> = mail
            .iter()
            .rev()
            .filter(|(_, u)| forgettable(u))
            .skip(MAX_PUSHED_KEPT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in oldest {
            mail.remove(&id);
        }
    }

    /// A message applied pending is durable (`stored`): readers may take it
    /// now. Not stored: the store refused it, so it leaves memory too;
    /// nobody can have seen it, since nothing offers a pending message.
    pub(super) fn settle(&mut self, message_id: &str, recipients: &[String], stored: bool) {
        for recipient in recipients {
            let Some(mail) = self.by_recipient.get_mut(recipient) else {
                continue;
            };
            if stored {
                if let Some(u) = mail.get_mut(message_id) {
                    u.pending = false;
                }
                self.notify(recipient);
            } else {
                mail.remove(message_id);
                if mail.is_empty() {
                    self.by_recipient.remove(recipient);
                }
            }
        }
    }

    /// Deliveries still queued: neither pushed live nor surfaced.
    pub fn unread_total(&self) -> usize {
        self.by_recipient
            .values()
            .flat_map(BTreeMap::values)
            .filter(|u| !u.pending && u.state == DeliveryState::Queued)
            .count()
    }

    /// Claims the recipient's unread mail (oldest first) for one response,
    /// so no concurrent response offers it too. `claim` says which; mail
    /// pushed live is taken by a hook only if it was pushed before
    /// `pushed_before` and is still not seen (the harness dropped the push).
    pub fn claim(
        &mut self,
        recipient: &str,
        claim: Claim,
        pushed_before: Option<Millis>,
    ) -> Vec<(Arc<Message>, DeliveryState)> {
        let Some(mail) = self.by_recipient.get_mut(recipient) else {
            return Vec::new();
        };
        let wanted = |u: &Unread| match u.state {
            DeliveryState::Queued => claim != Claim::Urgent || u.urgent,
            DeliveryState::Pushed => {
                claim == Claim::All
                    || pushed_before.is_some_and(|t| u.pushed_at.is_some_and(|p| p < t))
            }
            _ => false,
        };
        mail.values_mut()
            .filter(|u| u.free() && wanted(u))
            .map(|u| {
                u.claimed = true;
                (u.message.clone(), u.state)
            })
            .collect()
    }

    /// Claims one message for a push; false if it is not unread or already claimed.
    pub fn claim_one(&mut self, recipient: &str, id: &str) -> bool {
        match self
            .by_recipient
            .get_mut(recipient)
            .and_then(|m| m.get_mut(id))
        {
            Some(u) if u.free() && u.state == DeliveryState::Queued => {
                u.claimed = true;
                true
            }
            _ => false,
        }
    }

    /// Returns claimed mail that was not delivered after all.
    pub fn unclaim(&mut self, recipient: &str, ids: &[String]) {
        if let Some(mail) = self.by_recipient.get_mut(recipient) {
            for id in ids {
                if let Some(u) = mail.get_mut(id) {
                    u.claimed = false;
                }
            }
        }
        if !ids.is_empty() {
            self.notify(recipient);
        }
    }

    /// Whether a message is unread and still queued for the recipient: a
    /// push of it can be recorded.
    pub fn awaiting_push(&self, recipient: &str, id: &str) -> bool {
        self.by_recipient
            .get(recipient)
            .and_then(|m| m.get(id))
            .is_some_and(|u| u.state == DeliveryState::Queued)
    }

    /// Whether a message is unread and recorded as pushed to the recipient.
    pub fn is_pushed(&self, recipient: &str, id: &str) -> bool {
        self.by_recipient
            .get(recipient)
            .and_then(|m| m.get(id))
            .is_some_and(|u| u.state == DeliveryState::Pushed)
    }

    /// Records a message as pushed at `mono_now`: turn hooks no longer
    /// offer it (unless the transcript shows the push never reached the
    /// model), a read still shows it.
    pub(super) fn mark_pushed(&mut self, recipient: &str, id: &str, mono_now: Millis) {
        let pushed = match self
            .by_recipient
            .get_mut(recipient)
            .and_then(|m| m.get_mut(id))
        {
            Some(u) if u.state == DeliveryState::Queued => {
                u.state = DeliveryState::Pushed;
                u.claimed = false;
                u.pushed_at = Some(mono_now);
                true
            }
            _ => false,
        };
        if pushed {
            self.keep_newest_pushes(recipient);
            self.notify(recipient);
        }
    }

    /// Ids of the recipient's urgent mail that no model has had yet,
    /// oldest first: neither claimed nor pushed, or pushed before
    /// `pushed_before` and still not seen (the harness dropped the push).
    pub fn urgent_undelivered(&self, recipient: &str, pushed_before: Millis) -> Vec<String> {
        self.by_recipient.get(recipient).map_or_else(Vec::new, |m| {
            m.iter()
                .filter(|(_, u)| {
                    let undelivered = match u.state {
                        DeliveryState::Queued => true,
                        DeliveryState::Pushed => u.pushed_at.is_some_and(|p| p < pushed_before),
                        _ => false,
                    };
                    u.free() && u.urgent && undelivered
                })
                .map(|(id, _)| id.clone())
                .collect()
        })
    }

    /// Whether the recipient has mail no answer has claimed.
    pub fn has_unread(&self, recipient: &str) -> bool {
        self.by_recipient
            .get(recipient)
            .is_some_and(|m| m.values().any(Unread::free))
    }

    /// Queued, unclaimed mail ids of a recipient, oldest first.
    pub fn queued_ids(&self, recipient: &str) -> Vec<String> {
        self.by_recipient.get(recipient).map_or_else(Vec::new, |m| {
            m.iter()
                .filter(|(_, u)| u.free() && u.state == DeliveryState::Queued)
                .map(|(id, _)| id.clone())
                .collect()
        })
    }

    pub fn unread_message(&self, recipient: &str, id: &str) -> Option<Arc<Message>> {
        self.by_recipient
            .get(recipient)
            .and_then(|m| m.get(id))
            .map(|u| u.message.clone())
    }

    /// Drops mail the transcript shows the model has seen from the unread
    /// set, unless an answer has it claimed right now (that answer marks it).
    pub(super) fn remove_seen(&mut self, recipient: &str, id: &str) {
        let Some(mail) = self.by_recipient.get_mut(recipient) else {
            return;
        };
        if mail.get(id).is_some_and(|u| !u.claimed) {
            mail.remove(id);
        }
        if mail.is_empty() {
            self.by_recipient.remove(recipient);
        }
    }

    /// Drops delivered (surfaced or acked) mail from the unread set.
    pub(super) fn remove(&mut self, recipient: &str, id: &str) {
        let Some(mail) = self.by_recipient.get_mut(recipient) else {
            return;
        };
        mail.remove(id);
        if mail.is_empty() {
            self.by_recipient.remove(recipient);
        }
    }

    /// Drops a recipient's mail up to and including the id `upto`.
    pub(super) fn remove_up_to(&mut self, recipient: &str, upto: &str) {
        let Some(mail) = self.by_recipient.get_mut(recipient) else {
            return;
        };
        let upto = (Bound::Unbounded, Bound::Included(upto));
        let ids: Vec<String> = mail
            .range::<str, _>(upto)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            mail.remove(&id);
        }
        if mail.is_empty() {
            self.by_recipient.remove(recipient);
        }
    }

    /// Drops unread mail sent before `cutoff` (retention pruned it from the store).
    pub fn prune(&mut self, cutoff: Millis) {
        for mail in self.by_recipient.values_mut() {
            mail.retain(|_, u| u.message.sent_at >= cutoff);
        }
        self.by_recipient.retain(|_, mail| !mail.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::Target;

    fn message(n: usize) -> Arc<Message> {
        Arc::new(Message {
            id: format!("01M{n:08}"),
            from: "a".into(),
            from_nickname: "a".into(),
            to: Target::Session("b".into()),
            reply_to: None,
            body: format!("m{n}"),
            sent_at: 0,
            via: Default::default(),
        })
    }

    fn ids(m: &Mailboxes, state: DeliveryState) -> Vec<String> {
        m.by_recipient["b"]
            .iter()
            .filter(|(_, u)| u.state == state)
            .map(|(id, _)| id.clone())
            .collect()
    }

    // Proves a session that gets pushes and runs no hooks keeps only its
    // newest pushes in memory: pushed as they arrive (mark_pushed) or loaded
    // pushed at start (add), the oldest beyond MAX_PUSHED_KEPT are dropped
    // once PUSH_TRIM_SLACK more have come; queued mail, and a push an answer
    // holds, are never dropped.
    #[test]
    fn only_the_newest_pushes_are_kept_in_memory() {
        let mut m = Mailboxes::default();
        let push = |m: &mut Mailboxes, n: usize| {
            m.add(message(n), "b", DeliveryState::Queued, true, None, false);
            m.mark_pushed("b", &message(n).id, n as Millis);
        };
        for n in 0..MAX_PUSHED_KEPT + PUSH_TRIM_SLACK {
            push(&mut m, n);
        }
        let slack = ids(&m, DeliveryState::Pushed);
        assert_eq!(
            slack.len(),
            MAX_PUSHED_KEPT + PUSH_TRIM_SLACK,
            "within the slack"
        );
        let extra = PUSH_TRIM_SLACK + 1;
        push(&mut m, MAX_PUSHED_KEPT + PUSH_TRIM_SLACK);
        let kept = ids(&m, DeliveryState::Pushed);
        assert_eq!(kept.len(), MAX_PUSHED_KEPT);
        assert_eq!(kept[0], message(extra).id, "the oldest went first");
        // Queued mail stays whatever its number; a claimed push is not dropped.
        m.add(
            message(1_000),
            "b",
            DeliveryState::Queued,
            true,
            None,
            false,
        );
        // An answer being written holds the oldest kept push.
        m.by_recipient
            .get_mut("b")
            .unwrap()
            .get_mut(&message(extra).id)
            .unwrap()
            .claimed = true;
        // 64 pushes and the queued one: 16 more loaded pushed pass the slack.
        for n in 0..PUSH_TRIM_SLACK {
            m.add(
                message(2_000 + n),
                "b",
                DeliveryState::Pushed,
                true,
                Some(0),
                false,
            );
        }
        let kept = ids(&m, DeliveryState::Pushed);
        assert_eq!(
            kept.len(),
            MAX_PUSHED_KEPT + 1,
            "the held one is not counted"
        );
        assert_eq!(kept[0], message(extra).id, "held by an answer: kept");
        assert_eq!(
            kept[1],
            message(extra + PUSH_TRIM_SLACK).id,
            "the oldest free ones went"
        );
        assert_eq!(ids(&m, DeliveryState::Queued), [message(1_000).id.clone()]);
    }
}
