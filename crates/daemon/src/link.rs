//! `/ws`: the shim link. A shim says `Hello` for its session; from then on
//! the session is *linked* (the sweeper's linked rule), its requests are
//! answered, and its direct mail is pushed to it. A push counts as delivered
//! only when the shim reports (`Delivered`) that it wrote it out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use muster_core::api::{ErrorDetail, RegisterRequest};
use muster_core::link::{ClientFrame, ServerFrame, HEARTBEAT_MS, LINK_PROTOCOL};
use muster_core::token::Grant;
use muster_core::{DeliveryState, LinkKind, Message, Session};
use muster_store::Change;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::hub::{Hub, Observed};
use crate::scopes::grant_of;
use crate::scopes::Credential;
use crate::surfacing::Outgoing;

/// Requests one link may have running at once; one more is refused.
const MAX_LINK_REQUESTS: usize = 64;
/// How long a sender waits for a push to be confirmed before answering `queued`.
/// A ready shim confirms in about a millisecond; this bounds a stuck one.
pub const PUSH_CONFIRM: Duration = Duration::from_millis(500);

/// Each link's WebSocket read buffer: allocated when the link opens and
/// kept while it lasts, so ten thousand idle links hold ten thousand of
/// them. A shim's frames are small (a ping, a `delivered`, a request whose
/// body is at most 6,000 characters); a larger one is still read whole (the
/// buffer grows to the frame, in reads of this size); and tungstenite
/// zero-fills this much before every read.
const LINK_READ_BUFFER: usize = 2 * 1024;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub async fn upgrade(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ws: WebSocketUpgrade,
) -> Response {
    let max = hub.config.max_link_frame_bytes;
    let grant = grant_of(&credential).cloned();
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(LINK_READ_BUFFER)
        .on_upgrade(move |socket| serve(hub, socket, grant))
}

fn fatal(code: &str, message: String) -> WsMessage {
    let frame = ServerFrame::Fatal {
        error: ErrorDetail {
            code: code.into(),
            message,
            matches: Vec::new(),
        },
    };
    WsMessage::Text(serde_json::to_string(&frame).unwrap_or_default().into())
}

fn decode(msg: &WsMessage) -> Option<Result<ClientFrame, String>> {
    match msg {
        WsMessage::Text(text) => {
            Some(serde_json::from_str(text).map_err(|e| format!("bad frame: {e}")))
        }
        WsMessage::Binary(_) => Some(Err("binary frames are not part of the protocol".into())),
        _ => None,
    }
}

type Sink = futures_util::stream::SplitSink<WebSocket, WsMessage>;
type Stream = futures_util::stream::SplitStream<WebSocket>;

/// One link, from its hello to its end. Its writer's queue is bounded
/// (`link_queue`); a frame the shim does not take within `link_stall` ends
/// the link, and what it never confirmed goes back to the mailbox, pushed
/// again when the shim re-links (or surfaced by its hooks).
async fn serve(hub: Arc<Hub>, socket: WebSocket, grant: Option<Grant>) {
    let (mut sink, mut stream) = socket.split();
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Outgoing>(hub.config.link_queue.max(1));
    // Boxed, here and for the heavier frames: an async fn's future is as
    // large as its largest await, and this one lives as long as the link.
    let greeted = Box::pin(greet(&hub, &mut sink, &mut stream, conn, &tx, grant)).await;
    let Some((speaker, welcome)) = greeted else {
        return;
    };
    let speaker = Arc::new(speaker);
    let stalled = CancellationToken::new();
    let mut writer = tokio::spawn(write_frames(
        rx,
        sink,
        hub.config.link_stall,
        stalled.clone(),
    ));
    let _ = tx
        .send(
            ServerFrame::Welcome {
                protocol: LINK_PROTOCOL,
                session: welcome,
            }
            .into(),
        )
        .await;
    let mut requests = JoinSet::new();
    if let Speaker::Session(id) = &*speaker {
        let (hub, id) = (hub.clone(), id.clone());
        requests.spawn(async move { hub.push_queued(&id).await });
    }
    let link = Link {
        hub: &hub,
        speaker: &speaker,
        conn,
        tx: &tx,
    };
    let ended = read_frames(&link, &mut stream, &mut requests, &stalled).await;
    match ended {
        Ended::Stalled => {
            hub.metrics.links_stalled.inc();
            tracing::warn!(
                link = speaker.describe(),
                "the shim took no frame within {:?}; dropping its link (it re-links and gets its mail again)",
                hub.config.link_stall
            );
        }
        Ended::Oversized(why) => {
            hub.metrics.links_oversized.inc();
            tracing::warn!(link = speaker.describe(), "dropping the link: {why}");
            let _ = tx.try_send(fatal_frame("frame_too_large", why));
        }
        Ended::Closed => {}
    }
    // The caller went away: cancel what it was waiting for.
    requests.abort_all();
    if let Speaker::Session(id) = &*speaker {
        hub.detach_link(id, conn);
    }
    drop(tx);
    // The writer sends what is left, each frame within the stall bound.
    if tokio::time::timeout(hub.config.link_stall, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// The link's parts every frame's handling needs.
struct Link<'a> {
    hub: &'a Arc<Hub>,
    speaker: &'a Arc<Speaker>,
    conn: u64,
    tx: &'a mpsc::Sender<Outgoing>,
}

/// Why a link ended.
enum Ended {
    /// The shim closed it, went silent, or the daemon stops.
    Closed,
    /// The shim stopped taking frames.
    Stalled,
    /// The shim sent a frame over the size limit.
    Oversized(String),
}

/// The first frame, within 10 s.
async fn read_hello(stream: &mut Stream) -> Result<ClientFrame, String> {
    let first = async {
        loop {
            match stream.next().await {
                Some(Ok(msg)) => match decode(&msg) {
                    Some(frame) => return frame,
                    None => continue,
                },
                _ => return Err("closed before hello".to_string()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .unwrap_or_else(|_| Err("no hello within 10 s".into()))
}

/// Takes the hello and attaches the link: whom it speaks for, and the
/// session as registered (none on a per-call link). None if the link was
/// refused (the shim was told why).
async fn greet(
    hub: &Arc<Hub>,
    sink: &mut Sink,
    stream: &mut Stream,
    conn: u64,
    tx: &mpsc::Sender<Outgoing>,
    grant: Option<Grant>,
) -> Option<(Speaker, Option<Session>)> {
    let refusal = match read_hello(stream).await {
        Ok(ClientFrame::Hello {
            protocol,
            session,
            can_push,
            per_call,
        }) if protocol == LINK_PROTOCOL => {
            if per_call {
                return Some((Speaker::PerCall(Box::new((session, grant))), None));
            }
            let observed = Observed {
                by: grant,
                ..session.into()
            };
            match hub.attach_link(observed, can_push, conn, tx.clone()).await {
                Ok(s) => return Some((Speaker::Session(s.id.clone()), Some(s))),
                Err(e) => fatal(e.code, e.message),
            }
        }
        Ok(ClientFrame::Hello { protocol, .. }) => fatal(
            "protocol_mismatch",
            format!(
                "link protocol {protocol} is not supported; this daemon speaks {LINK_PROTOCOL}"
            ),
        ),
        Ok(_) => fatal("hello_expected", "the first frame must be hello".into()),
        Err(why) => fatal("bad_hello", why),
    };
    let _ = sink.send(refusal).await;
    None
}

/// The link's writer: one frame per WebSocket message, in order; mail a
/// frame carries is surfaced once the frame is written. A frame the shim
/// does not take within `stall` (it stopped reading, the socket's buffers
/// are full) ends the link: `stalled` is cancelled.
async fn write_frames(
    mut rx: mpsc::Receiver<Outgoing>,
    mut sink: Sink,
    stall: Duration,
    stalled: CancellationToken,
) {
    while let Some(out) = rx.recv().await {
        let Ok(text) = serde_json::to_string(&out.frame) else {
            continue;
        };
        match tokio::time::timeout(stall, sink.send(WsMessage::Text(text.into()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break, // dropping `out` releases its claimed mail
            Err(_) => {
                stalled.cancel();
                return;
            }
        }
        if let Some(s) = out.surfacing {
            s.complete();
        }
    }
    let _ = tokio::time::timeout(stall, sink.close()).await;
}

/// Reads and handles the shim's frames until the link ends: it closes, goes
/// silent past three heartbeats, sends a frame over the size limit, stops
/// taking frames, or the daemon stops.
async fn read_frames(
    link: &Link<'_>,
    stream: &mut Stream,
    requests: &mut JoinSet<()>,
    stalled: &CancellationToken,
) -> Ended {
    let silence = Duration::from_millis(3 * HEARTBEAT_MS as u64);
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(silence, stream.next()) => next,
            _ = link.hub.shutdown.cancelled() => return Ended::Closed,
            _ = stalled.cancelled() => return Ended::Stalled,
        };
        let msg = match next {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => {
                let why = e.to_string();
                if why.contains("too long") || why.contains("too big") {
                    return Ended::Oversized(format!(
                        "a frame over the link's limit of {} bytes ({why})",
                        link.hub.config.max_link_frame_bytes
                    ));
                }
                return Ended::Closed;
            }
            Ok(None) => return Ended::Closed,
            Err(_) => {
                tracing::info!(
                    link = link.speaker.describe(),
                    "link silent past three heartbeats; dropping it"
                );
                return Ended::Closed;
            }
        };
        match decode(&msg) {
            None => {}
            Some(Ok(frame)) => on_frame(link, requests, frame).await,
            Some(Err(why)) => {
                let _ = link.tx.send(fatal_frame("bad_frame", why)).await;
            }
        }
        while requests.try_join_next().is_some() {}
    }
}

async fn on_frame(link: &Link<'_>, requests: &mut JoinSet<()>, frame: ClientFrame) {
    let Link {
        hub,
        speaker,
        conn,
        tx,
    } = *link;
    if let Speaker::Session(id) = &**speaker {
        hub.seen(id);
    }
    let session = match &**speaker {
        Speaker::Session(id) => Some(id.as_str()),
        Speaker::PerCall(_) => None,
    };
    match frame {
        ClientFrame::Request {
            id,
            op,
            session: named,
        } => {
            if requests.len() >= MAX_LINK_REQUESTS {
                let busy = ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    format!(
                        "this link has {MAX_LINK_REQUESTS} requests running; wait for one to finish"
                    ),
                );
                let reply = ServerFrame::Reply {
                    id,
                    result: None,
                    error: Some(busy.detail()),
                };
                let _ = tx.send(reply.into()).await;
                return;
            }
            let (hub, tx, speaker) = (hub.clone(), tx.clone(), speaker.clone());
            requests.spawn(async move {
                let out = run_request(&hub, &speaker, id, op, named).await;
                let _ = tx.send(out).await;
            });
        }
        ClientFrame::Delivered { message_ids } => {
            // The reader goes on while the write is made durable, so a shim
            // confirming a run of pushes has them written in a few batches,
            // not one commit (and fsync) after another. Each message is
            // awaiting its push at most once, so these tasks are as many as
            // the pushes in flight, whatever the shim sends.
            if let Some(recorded) = session.and_then(|id| hub.on_delivered(id, message_ids)) {
                tokio::spawn(recorded);
            }
        }
        ClientFrame::Ready { can_push } => {
            if let Some(id) = session {
                if Box::pin(hub.set_can_push(id, conn, can_push)).await {
                    // Pushed beside the reading, so the reader never waits on the queue.
                    let (hub, id) = (hub.clone(), id.to_string());
                    requests.spawn(async move { hub.push_queued(&id).await });
                }
            }
        }
        ClientFrame::Ping { at } => {
            let _ = tx.send(ServerFrame::Pong { at }.into()).await;
        }
        ClientFrame::Hello { .. } => {
            let again = fatal_frame("duplicate_hello", "this link already said hello".into());
            let _ = tx.send(again).await;
        }
    }
}

/// Runs one request for whoever it acts as; the reply to send.
async fn run_request(
    hub: &Arc<Hub>,
    speaker: &Speaker,
    id: u64,
    op: muster_core::link::Op,
    named: Option<String>,
) -> Outgoing {
    let result = match hub.who_acts(speaker, named).await {
        Ok(session) => hub.execute(&session, muster_core::SentVia::Link, op).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((result, surfacing)) => Outgoing {
            frame: Box::new(ServerFrame::Reply {
                id,
                result: Some(result),
                error: None,
            }),
            surfacing: surfacing.map(Box::new),
        },
        Err(e) => ServerFrame::Reply {
            id,
            result: None,
            error: Some(e.detail()),
        }
        .into(),
    }
}

/// Whom a link speaks for.
enum Speaker {
    /// One session, fixed at hello (a Claude Code shim).
    Session(String),
    /// Whichever session each request names; the hello's fields describe
    /// them, and the token the link came with binds which it may name.
    PerCall(Box<(RegisterRequest, Option<Grant>)>),
}

impl Speaker {
    fn describe(&self) -> String {
        match self {
            Speaker::Session(id) => id.clone(),
            Speaker::PerCall(per_call) => {
                let harness = per_call.0.harness.as_deref();
                format!("per-call {}", harness.unwrap_or("link"))
            }
        }
    }
}

fn fatal_frame(code: &str, message: String) -> Outgoing {
    ServerFrame::Fatal {
        error: ErrorDetail {
            code: code.into(),
            message,
            matches: Vec::new(),
        },
    }
    .into()
}

impl Hub {
    /// The session a request acts as. A session link acts only as its own
    /// session; a per-call link acts as the session the harness named,
    /// registering it (hook-only: its hooks keep it live) if it is new.
    async fn who_acts(&self, speaker: &Speaker, named: Option<String>) -> Result<String, ApiError> {
        match (speaker, named) {
            (Speaker::Session(id), None) => Ok(id.clone()),
            (Speaker::Session(id), Some(named)) if named == *id => Ok(named),
            (Speaker::Session(id), Some(named)) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "wrong_session",
                format!("this link speaks for session {id}, not {named}"),
            )),
            (Speaker::PerCall(_), None) => Err(ApiError::bad_request(
                "this call names no session: Codex sends _meta.sessionId, and muster's opencode plugin and \
                 Gemini hook add _session_id; check that muster's hooks are installed (muster install)",
            )),
            (Speaker::PerCall(per_call), Some(named)) => {
                let (template, grant) = &**per_call;
                let registration = RegisterRequest { id: named.clone(), ..template.clone() };
                let observed = Observed { by: grant.clone(), ..registration.into() };
                self.observe(observed).await?;
                Ok(named)
            }
        }
    }

    /// Registers the hello's session as linked and attaches the link.
    pub(crate) async fn attach_link(
        &self,
        observed: Observed,
        can_push: bool,
        conn: u64,
        tx: mpsc::Sender<Outgoing>,
    ) -> Result<Session, ApiError> {
        let (session, _) = self.observe(observed).await?;
        let id = session.id;
        let (session, commit) = {
            let mut st = self.lock();
            if st.entry(&id).is_none() {
                return Err(ApiError::internal("session vanished"));
            }
            let unconfirmed = st.links.attach(&id, conn, tx);
            st.mail.unclaim(&id, &unconfirmed);
            let entry = st
                .entry_mut(&id)
                .ok_or_else(|| ApiError::internal("session vanished"))?;
            // Live state, never stored.
            entry.set_link_up(true);
            let mut session = entry.session().clone();
            let changed = session.link != LinkKind::Link || session.can_push != can_push;
            session.link = LinkKind::Link;
            session.can_push = can_push;
            let commit = changed.then(|| self.commit(&mut st, vec![Change::PutSession(session)]));
            let session = st
                .session(&id)
                .cloned()
                .ok_or_else(|| ApiError::internal("session vanished"))?;
            (session, commit)
        };
        if let Some(commit) = commit {
            commit.await?;
        }
        self.events.publish("session.linked", || json!(session));
        Ok(session)
    }

    /// The shim's MCP client finished its handshake (or, false, cannot take
    /// pushes): record it; true if what waited should be pushed now.
    async fn set_can_push(&self, id: &str, conn: u64, can_push: bool) -> bool {
        let (session, commit) = {
            let mut st = self.lock();
            let Some(entry) = st.entry(id) else {
                return false;
            };
            if !st.links.is_current(id, conn) || entry.session().can_push == can_push {
                return false;
            }
            let mut session = entry.session().clone();
            session.can_push = can_push;
            let commit = self.commit(&mut st, vec![Change::PutSession(session.clone())]);
            (session, commit)
        };
        if let Err(e) = commit.await {
            tracing::warn!("could not record that {id} takes pushes: {e}");
        }
        self.events.publish("session.updated", || json!(session));
        can_push
    }

    /// Detaches a link if it is still the session's current one: the grace
    /// window starts, and pushes it never confirmed go back to the hooks.
    fn detach_link(&self, id: &str, conn: u64) {
        let mut st = self.lock();
        let mono = self.clock.mono();
        let Some(unconfirmed) = st.links.detach(id, conn) else {
            return;
        };
        st.mail.unclaim(id, &unconfirmed);
        if let Some(entry) = st.entry_mut(id) {
            entry.link_down_since = mono;
            entry.set_link_up(false);
        }
        drop(st);
        self.events
            .publish("session.unlinked", || json!({"id": id}));
    }

    /// Link activity counts as being seen (wall clock, for the record).
    fn seen(&self, id: &str) {
        let now = self.clock.wall();
        self.lock().roster.heard(id, now);
    }

    /// Writes one message to a recipient's link if it can take pushes, and
    /// (with `confirmation`) waits for the shim to confirm it. None if no
    /// push went out.
    pub(crate) fn try_push(
        &self,
        recipient: &str,
        message: &Arc<Message>,
        confirmation: bool,
    ) -> Option<Option<oneshot::Receiver<()>>> {
        let mut st = self.lock();
        let can_push = st
            .entry(recipient)
            .is_some_and(|e| e.session().can_push && st.links.is_up(recipient));
        if !can_push || !st.mail.claim_one(recipient, &message.id) {
            return None;
        }
        let frame = ServerFrame::Push {
            message: (**message).clone(),
        };
        // Waiting before the frame goes out: a quick confirmation finds us.
        let confirmed = confirmation.then(|| st.links.await_confirmation(&message.id));
        if !st.links.push(recipient, &message.id, frame.into()) {
            st.links.stop_waiting(&message.id);
            st.mail
                .unclaim(recipient, std::slice::from_ref(&message.id));
            return None;
        }
        Some(confirmed)
    }

    /// Pushes a direct message to its recipient and waits (bounded) for the
    /// shim to confirm; returns the delivery state to report to the sender.
    pub(crate) async fn push_and_confirm(
        &self,
        recipient: &str,
        message: &Arc<Message>,
    ) -> DeliveryState {
        let Some(Some(confirmed)) = self.try_push(recipient, message, true) else {
            return DeliveryState::Queued;
        };
        match tokio::time::timeout(PUSH_CONFIRM, confirmed).await {
            Ok(Ok(())) => DeliveryState::Pushed,
            _ => {
                self.lock().links.stop_waiting(&message.id);
                DeliveryState::Queued
            }
        }
    }

    /// Pushes mail that queued while the session had no link (on re-link),
    /// in order, each once there is room in the link's queue: a shim that
    /// reads gets it all; one that stopped reading is dropped by its writer
    /// (`link_stall`) and what was not confirmed stays queued.
    async fn push_queued(&self, id: &str) {
        let Some((conn, tx)) = self.lock().links.sender(id) else {
            return;
        };
        let queued: Vec<Arc<Message>> = {
            let st = self.lock();
            st.mail
                .queued_ids(id)
                .iter()
                .filter_map(|m| st.mail.unread_message(id, m))
                .collect()
        };
        for message in queued {
            let Ok(Ok(permit)) = tokio::time::timeout(self.config.link_stall, tx.reserve()).await
            else {
                return;
            };
            let mut st = self.lock();
            let can_push = st.entry(id).is_some_and(|e| e.session().can_push);
            if !can_push || !st.links.is_current(id, conn) {
                return;
            }
            // Claimed already: a live send or a hook has it.
            if !st.mail.claim_one(id, &message.id) {
                continue;
            }
            st.links.note_push(id, conn, &message.id);
            permit.send(
                ServerFrame::Push {
                    message: (*message).clone(),
                }
                .into(),
            );
        }
    }

    /// The shim wrote these pushes out: record them as pushed, in memory,
    /// and tell any waiting sender, now; the returned task waits for the
    /// durable write, then says so to the event stream. `None` when none of
    /// them was awaiting its push.
    ///
    /// The sender is told before the mark is on disk because its answer
    /// says what happened (the recipient's harness has the message), and
    /// waiting cost every send a second commit in a row. The mark's
    /// durability is for exactly-once across a restart, which telling
    /// sooner does not change; a thread read meanwhile shows the pushed
    /// state from memory (`Hub::thread`).
    pub(crate) fn on_delivered(
        self: &Arc<Self>,
        recipient: &str,
        mut ids: Vec<String>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        ids.truncate(10_000);
        let now = self.clock.wall();
        let (pushed, commit) = {
            let mut st = self.lock();
            let mut changes = Vec::new();
            for id in &ids {
                st.links.confirmed(recipient, id);
                if st.mail.awaiting_push(recipient, id) {
                    changes.push(Change::AdvanceDelivery {
                        message_id: id.clone(),
                        recipient: recipient.to_string(),
                        state: DeliveryState::Pushed,
                        at: now,
                    });
                }
            }
            if changes.is_empty() {
                return None;
            }
            let changes_len = changes.len() as u64;
            // The sender has its answer already; the mark can share the
            // commit of whatever write comes next.
            let commit = self.commit_unhurried(&mut st, changes);
            st.links.tell_confirmed(&ids);
            (changes_len, commit)
        };
        let (hub, recipient) = (self.clone(), recipient.to_string());
        Some(async move {
            if let Err(e) = commit.await {
                tracing::warn!("could not record pushed mail for {recipient}: {e}");
            }
            hub.metrics.deliveries_pushed.add(pushed);
            hub.events.publish(
                "delivery.updated",
                || json!({"recipient": recipient, "message_ids": ids, "state": "pushed"}),
            );
        })
    }
}
