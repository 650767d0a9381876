//! What a linked or HTTP-MCP session can do: the operations behind the MCP
//! tools, executed for one session. Answers are JSON for the tool result.
//! `health` says whether the daemon can store what it is asked to.

pub(crate) mod health;
#[cfg(test)]
mod refused;

use std::sync::Arc;

use muster_core::api::{
    AckRequest, BroadcastRequest, ReleaseRequest, ReserveRequest, RoomRequest, SendRequest,
    UpdateSessionRequest,
};
use muster_core::link::{JsonText, Op};
use muster_core::{CoreError, SentVia};
use serde_json::json;

use crate::error::ApiError;
use crate::hub::Hub;
use crate::surfacing::Surfacing;

/// Default number of messages a read shows.
const READ_LIMIT: usize = 50;

/// An answer's JSON text, serialized once, straight to text.
fn to_json<T: serde::Serialize>(v: T) -> Result<JsonText, ApiError> {
    JsonText::of(&v).map_err(|e| ApiError::internal(e.to_string()))
}

/// The roster tool's answer: `{"sessions": [...]}`.
#[derive(serde::Serialize)]
struct Sessions<T> {
    sessions: T,
}

/// The rooms tool's answer: `{"rooms": [...]}`.
#[derive(serde::Serialize)]
struct Rooms<T> {
    rooms: T,
}

impl Hub {
    /// Runs one operation as `session`, which authenticated `via` its own
    /// link or MCP session. Mail a read returns comes with its
    /// `Surfacing`, to complete once the answer is written.
    pub async fn execute(
        self: &Arc<Self>,
        session: &str,
        via: SentVia,
        op: Op,
    ) -> Result<(JsonText, Option<Surfacing>), ApiError> {
        let me = Some(session.to_string());
        let value = match op {
            Op::Whoami => {
                let s = self
                    .lock()
                    .session(session)
                    .cloned()
                    .ok_or_else(|| CoreError::UnknownSession(session.into()))?;
                to_json(s)?
            }
            Op::Roster { all } => to_json(Sessions {
                sessions: self.roster(all),
            })?,
            // The sender is told everything but the body it just wrote.
            Op::Send { to, body, reply_to } => to_json(
                self.send(SendRequest {
                    as_: me,
                    to,
                    body,
                    reply_to,
                    as_from_env: false,
                    via,
                })
                .await?
                .for_sender(),
            )?,
            Op::Broadcast { room, body } => to_json(
                self.broadcast(BroadcastRequest {
                    as_: me,
                    room,
                    body,
                    as_from_env: false,
                    via,
                })
                .await?
                .for_sender(),
            )?,
            Op::Read { all, limit } => {
                let (inbox, surfacing) = self
                    .inbox(Some(session), all, limit.unwrap_or(READ_LIMIT))
                    .await?;
                return Ok((to_json(inbox)?, Some(surfacing)));
            }
            Op::Ack { ids, all } => to_json(self.ack(AckRequest { as_: me, ids, all }).await?)?,
            Op::Wait { timeout_s } => return self.wait_for_mail(session, timeout_s).await,
            Op::Join { room } => to_json(self.join(RoomRequest { as_: me, room }).await?)?,
            Op::Leave { room } => to_json(self.leave(RoomRequest { as_: me, room }).await?)?,
            Op::Rooms => to_json(Rooms {
                rooms: self.rooms(),
            })?,
            Op::SetStatus { text } => to_json(
                self.update_session(
                    session,
                    UpdateSessionRequest {
                        status: Some(text),
                        wake: None,
                    },
                )
                .await?,
            )?,
            Op::Thread { message_id } => to_json(self.thread(Some(session), &message_id).await?)?,
            Op::Search { query, limit } => to_json(self.search_as(session, &query, limit).await?)?,
            Op::Reserve {
                paths,
                exclusive,
                ttl_s,
                reason,
            } => to_json(
                self.reserve(ReserveRequest {
                    as_: me,
                    paths,
                    exclusive,
                    ttl_s,
                    reason,
                })
                .await?,
            )?,
            Op::Release { paths } => {
                to_json(self.release(ReleaseRequest { as_: me, paths }).await?)?
            }
            Op::Reservations => to_json(self.reservations())?,
        };
        Ok((value, None))
    }

    /// Returns unread mail at once if there is some, else waits until mail
    /// arrives or `timeout_s` (at most 600) passes. Dropping the future (the
    /// caller went away) cancels the wait and claims nothing.
    async fn wait_for_mail(
        self: &Arc<Self>,
        session: &str,
        timeout_s: u64,
    ) -> Result<(JsonText, Option<Surfacing>), ApiError> {
        if timeout_s > 600 {
            return Err(CoreError::invalid("timeout_s", "at most 600 seconds").into());
        }
        // Counted while it waits (a test waits on the gauge, not for time).
        let _waiting = self.metrics.mail_waits.start();
        // On the daemon's clock, so a test moves time instead of waiting.
        let deadline = self.clock.mono() + (timeout_s * 1_000) as muster_core::Millis;
        loop {
            let notify = {
                let mut st = self.lock();
                if st.entry(session).is_none() {
                    return Err(CoreError::UnknownSession(session.into()).into());
                }
                let notify = st.mail.waiter(session);
                if st.mail.has_unread(session) {
                    None
                } else {
                    Some(notify)
                }
            };
            let Some(notify) = notify else {
                let (inbox, surfacing) = self.inbox(Some(session), false, READ_LIMIT).await?;
                if inbox.messages.is_empty() {
                    continue; // another reader took it first
                }
                return Ok((to_json(inbox)?, Some(surfacing)));
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            // Register before re-checking, so mail arriving in between is not missed.
            notified.as_mut().enable();
            if self.lock().mail.has_unread(session) {
                continue;
            }
            let timed_out = tokio::select! {
                _ = notified => false,
                _ = self.clock.sleep_until(deadline) => true,
            };
            if timed_out {
                // One last look: mail may have become readable without a wake.
                if self.lock().mail.has_unread(session) {
                    let (inbox, surfacing) = self.inbox(Some(session), false, READ_LIMIT).await?;
                    if !inbox.messages.is_empty() {
                        return Ok((to_json(inbox)?, Some(surfacing)));
                    }
                }
                return Ok((to_json(json!({"messages": [], "timed_out": true}))?, None));
            }
        }
    }
}
