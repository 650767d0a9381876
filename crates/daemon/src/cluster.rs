//! Team mode: several daemons on one database (see `muster_store::shared`).
//!
//! Each daemon keeps its memory as before and commits its own changes as
//! before; the store logs every commit in sequence. Three tasks keep the
//! daemons in step:
//! - the **follower** applies the other daemons' logged changes in
//!   sequence order, as soon as a notification says there are some and
//!   every [`FOLLOW_EVERY`] besides (a missed notification loses nothing);
//!   new mail it applies goes out here as it would have been sent here:
//!   pushed to links, offered to hooks, waking idle sessions;
//! - the **heartbeat** writes this daemon's linked sessions every
//!   [`HEARTBEAT_EVERY`] and reads everyone else's: a session linked to a
//!   live daemon counts as linked here, and when that daemon stops beating
//!   its sessions get the grace window from its last heartbeat;
//! - the sweeper (`tasks`) sweeps only on the daemon that leads
//!   (`Shared::lead`), so a decision is made once.
//!
//! What the database decides: nicknames (a unique index) and reservations
//! (a guard in the same transaction, `Change::ReservationsUnchangedSince`);
//! a daemon that loses such a race catches up and decides again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use muster_core::{DeliveryState, Message, Millis, Target};
use muster_store::shared::{Logged, PeerLink, Shared};
use muster_store::{Change, StoreError};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::hub::Hub;
use crate::link::PUSH_CONFIRM;
use crate::state::State;

/// The follower reads the log at least this often, notified or not.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Entries read from the log at a time.
const FOLLOW_BATCH: usize = 1_000;

/// This daemon writes its links and reads the others' this often.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A daemon whose last heartbeat is older than this is taken for gone: its
/// sessions are no longer linked, and their grace window runs from that
/// heartbeat.
pub const HEARTBEAT_LOST_MS: Millis = 5_000;

/// Starts the follower and the heartbeat; none without a shared store.
pub fn spawn(hub: Arc<Hub>, stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let shared = hub.shared.clone()?;
    let follower = follow(hub.clone(), shared.clone(), stop.clone());
    let heartbeat = beat(hub, shared, stop);
    Some(tokio::spawn(async move {
        tokio::join!(follower, heartbeat);
    }))
}

async fn follow(hub: Arc<Hub>, shared: Arc<dyn Shared>, mut stop: watch::Receiver<bool>) {
    let mut notified = shared.notifications();
    loop {
        if let Err(e) = hub.catch_up().await {
            tracing::warn!("cannot read the other daemons' changes: {e}");
        }
        tokio::select! {
            _ = notified.changed() => {}
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn beat(hub: Arc<Hub>, shared: Arc<dyn Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let linked: Vec<String> = {
            let st = hub.lock();
            let here = st.roster.all().filter(|s| st.links.is_up(&s.id));
            here.map(|s| s.id.clone()).collect()
        };
        match shared.heartbeat(linked).await {
            Ok(peers) => hub.note_peers(peers),
            Err(e) => tracing::warn!("cannot write this daemon's heartbeat: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Another daemon heard from session `id` at wall time `seen_at`: the
/// sweeper here measures its silence from then too (on this daemon's
/// monotonic clock), so a hook-only session busy on another daemon is never
/// swept as silent by the leader.
fn heard_elsewhere(st: &mut State, id: &str, seen_at: Millis, wall: Millis, mono: Millis) {
    if let Some(entry) = st.entry_mut(id) {
        let heard = mono - (wall - seen_at).max(0);
        entry.heard_mono = entry.heard_mono.max(heard);
    }
}

/// New mail another daemon stored, to go out here.
struct Arrived {
    message: Arc<Message>,
    recipients: Vec<String>,
}

impl Hub {
    /// Applies every entry the log holds beyond what memory has, in order.
    /// One catch-up at a time: the follower and a decision made again after
    /// a conflict may both ask.
    pub(crate) async fn catch_up(&self) -> Result<(), StoreError> {
        let Some(shared) = self.shared.clone() else {
            return Ok(());
        };
        let _one = self.following.lock().await;
        loop {
            let after = self.lock().applied_seq;
            let entries = shared.changes_after(after, FOLLOW_BATCH).await?;
            let Some(first) = entries.first() else {
                return Ok(());
            };
            if first.seq != after + 1 {
                return Err(self.lost_track(after, first.seq));
            }
            let full = entries.len() == FOLLOW_BATCH;
            for entry in &entries {
                let arrived = self.apply_logged(shared.daemon_id(), entry);
                self.send_out(arrived);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The log no longer holds the entries after `after` (pruned while
    /// this daemon was not reading it): memory cannot be brought up to date
    /// entry by entry, so the daemon stops and its supervisor starts it
    /// afresh from the database; its shims re-link meanwhile.
    fn lost_track(&self, after: u64, first: u64) -> StoreError {
        let why = format!(
            "the change log holds entries from {first} on, but this daemon applied only up to {after}: stopping so it can start afresh from the database (start it again)"
        );
        tracing::error!("{why}");
        let _ = self.stopped_because.set(why);
        self.shutdown.cancel();
        StoreError::Corrupt(format!(
            "change-log entries {} to {} are gone",
            after + 1,
            first - 1
        ))
    }

    /// Applies one entry to memory (only another daemon's: this daemon's
    /// own are in memory already) and says what new mail it brought.
    fn apply_logged(&self, me: &str, entry: &Logged) -> Vec<Arrived> {
        let mut st = self.lock();
        if entry.seq <= st.applied_seq {
            return Vec::new();
        }
        st.applied_seq = entry.seq;
        if entry.origin == me {
            return Vec::new();
        }
        let (mono, wall) = (self.clock.mono(), self.clock.wall());
        let mut arrived = Vec::new();
        for change in &entry.changes {
            st.apply(change, mono);
            match change {
                Change::PutMessage {
                    message,
                    deliveries,
                } => {
                    let recipients: Vec<String> =
                        deliveries.iter().map(|d| d.recipient.clone()).collect();
                    st.settle_message(&message.id, &recipients, true);
                    st.note_id_elsewhere(&message.id);
                    arrived.push(Arrived {
                        message: Arc::new(message.clone()),
                        recipients,
                    });
                }
                Change::PutReservation(r) => st.note_id_elsewhere(&r.id),
                // A sender here may wait for a push another daemon made.
                Change::AdvanceDelivery {
                    message_id,
                    state: DeliveryState::Pushed,
                    ..
                } => st.links.tell_confirmed(std::slice::from_ref(message_id)),
                Change::PutSession(session) => {
                    heard_elsewhere(&mut st, &session.id, session.last_seen_at, wall, mono);
                    self.events.publish("session.updated", || json!(session));
                }
                Change::TouchSession { id, last_seen_at } => {
                    heard_elsewhere(&mut st, id, *last_seen_at, wall, mono);
                }
                Change::PutToken(_) | Change::RevokeToken { .. } => self.tokens.apply(change),
                _ => {}
            }
        }
        arrived
    }

    /// Mail another daemon stored goes out here as if sent here: pushed to
    /// the links here it goes live on, in log order (the sending daemon
    /// waits for the confirmation, through the log), waking idle
    /// recipients it could not be pushed to.
    fn send_out(&self, arrived: Vec<Arrived>) {
        let Some(hub) = self.me.upgrade() else {
            return;
        };
        for Arrived {
            message,
            recipients,
        } in arrived
        {
            for recipient in self.live_recipients(&message, &recipients) {
                match hub.try_push(&recipient, &message, false) {
                    Some(_) => hub.wake_if_push_not_shown(&recipient),
                    None => {
                        hub.consider_wake(&recipient);
                    }
                }
            }
            hub.events.publish(
                "message.sent",
                || json!({"message": &*message, "recipients": &recipients}),
            );
        }
    }

    /// Who a message goes out to live: its direct recipient, or the room's
    /// members it @mentions; a person's mail stays in their inbox.
    pub(crate) fn live_recipients(&self, message: &Message, recipients: &[String]) -> Vec<String> {
        match &message.to {
            Target::Session(recipient) => vec![recipient.clone()],
            Target::Room(_) => {
                let st = self.lock();
                crate::hub::mentioned(&message.body, &st)
                    .into_iter()
                    .filter(|id| recipients.contains(id))
                    .collect()
            }
            Target::Operator(_) => Vec::new(),
        }
    }

    /// A direct message for a session linked to another daemon: that
    /// daemon pushes it when it applies the message; wait (bounded) for its
    /// record of the push to come back through the log.
    pub(crate) async fn pushed_elsewhere(
        &self,
        recipient: &str,
        message_id: &str,
    ) -> DeliveryState {
        let confirmed = {
            let mut st = self.lock();
            let elsewhere = st
                .entry(recipient)
                .is_some_and(|e| e.linked_elsewhere.is_some() && e.session().can_push);
            if !elsewhere || st.links.is_up(recipient) {
                return DeliveryState::Queued;
            }
            // The push may be back through the log already.
            if st.mail.is_pushed(recipient, message_id) {
                return DeliveryState::Pushed;
            }
            st.links.await_confirmation(message_id)
        };
        match tokio::time::timeout(PUSH_CONFIRM, confirmed).await {
            Ok(Ok(())) => DeliveryState::Pushed,
            _ => {
                self.lock().links.stop_waiting(message_id);
                DeliveryState::Queued
            }
        }
    }

    /// Takes in the other daemons' links from a heartbeat: a session linked
    /// to a live daemon counts as linked; one whose daemon stopped beating
    /// (or left) is unlinked, its grace window running from that daemon's
    /// last heartbeat.
    pub(crate) fn note_peers(&self, peers: Vec<PeerLink>) {
        let mut freshest: HashMap<String, (String, Millis)> = HashMap::new();
        for p in peers {
            let slot = freshest
                .entry(p.session_id)
                .or_insert((p.daemon.clone(), p.heartbeat_age_ms));
            if p.heartbeat_age_ms < slot.1 {
                *slot = (p.daemon, p.heartbeat_age_ms);
            }
        }
        let mono = self.clock.mono();
        let mut st = self.lock();
        let ids: Vec<String> = st
            .roster
            .all()
            .filter(|s| s.present())
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            let here = st.links.is_up(&id);
            let peer = freshest.get(&id);
            let Some(entry) = st.entry_mut(&id) else {
                continue;
            };
            let elsewhere = peer
                .filter(|(_, age)| *age < HEARTBEAT_LOST_MS)
                .map(|(daemon, _)| daemon.clone());
            let was_up = entry.session().link_up;
            if elsewhere.is_none() && entry.linked_elsewhere.is_some() && !here {
                // Gone since the daemon's last heartbeat, if it still shows one.
                let age = peer.map_or(0, |(_, age)| *age);
                entry.link_down_since = mono - age;
            }
            entry.linked_elsewhere = elsewhere;
            let up = here || entry.linked_elsewhere.is_some();
            if up != was_up {
                entry.set_link_up(up);
            }
        }
    }

    /// A clean stop: the other daemons stop counting this one's sessions
    /// as linked at once, and the sweep's lead is free.
    pub(crate) async fn leave_team(&self) {
        if let Some(shared) = &self.shared {
            shared.leave().await;
        }
    }

    /// Whether this daemon may sweep now: always alone, only the leader in
    /// a team.
    pub(crate) async fn leads_sweep(&self) -> bool {
        match &self.shared {
            Some(shared) => shared.lead().await,
            None => true,
        }
    }
}
