//! A fake shim for in-process tests: a link client that speaks the real
//! link protocol (`muster_core::link`, JSON text frames) over WebSocket to
//! the daemon's `/ws`, as `muster mcp` does, with no MCP client behind it.
//! It says hello for one session, answers every `Push` with `Delivered` (as
//! a shim that wrote the push to its harness), hands the pushed messages to
//! the test, and sends requests whose replies the test awaits.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use muster_core::api::RegisterRequest;
use muster_core::link::{ClientFrame, Op, ServerFrame, LINK_PROTOCOL};
use muster_core::{Message, Session};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::TestDaemon;

/// How long a test waits for a frame that should come.
const FRAME_LIMIT: Duration = Duration::from_secs(10);

/// One linked fake shim. Dropping it drops the link (the connection closes).
pub struct FakeShim {
    pub id: String,
    /// The session as the daemon's `Welcome` named it.
    pub session: Session,
    out: Option<mpsc::UnboundedSender<ClientFrame>>,
    pushes: mpsc::UnboundedReceiver<Message>,
    replies: mpsc::UnboundedReceiver<ServerFrame>,
    next_request: u64,
    task: Option<JoinHandle<()>>,
}

impl FakeShim {
    /// Links as session `id` (harness claude, cwd /tmp), able to show pushes
    /// from its hello on; returns once the daemon welcomed it.
    pub async fn link(daemon: &TestDaemon, id: &str) -> Self {
        let url = format!("ws://{}/ws", daemon.daemon.addr);
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the link connects");
        let (mut sink, mut stream) = socket.split();
        let hello = ClientFrame::Hello {
            protocol: LINK_PROTOCOL,
            session: RegisterRequest {
                id: id.to_string(),
                harness: Some("claude".into()),
                cwd: Some("/tmp".into()),
                ..RegisterRequest::default()
            },
            can_push: true,
            per_call: false,
        };
        sink.send(text(&hello)).await.expect("hello sent");
        let session = match next_frame(&mut stream).await {
            Some(ServerFrame::Welcome {
                protocol,
                session: Some(session),
            }) => {
                assert_eq!(protocol, LINK_PROTOCOL);
                session
            }
            other => panic!("the daemon answered the hello with {other:?}"),
        };
        let (out, mut to_send) = mpsc::unbounded_channel::<ClientFrame>();
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let (reply_tx, replies) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = to_send.recv() => {
                        let Some(frame) = frame else { break };
                        if sink.send(text(&frame)).await.is_err() {
                            break;
                        }
                    }
                    frame = next_frame(&mut stream) => match frame {
                        Some(ServerFrame::Push { message }) => {
                            let delivered = ClientFrame::Delivered {
                                message_ids: vec![message.id.clone()],
                            };
                            let _ = push_tx.send(message);
                            if sink.send(text(&delivered)).await.is_err() {
                                break;
                            }
                        }
                        Some(reply @ ServerFrame::Reply { .. }) => {
                            let _ = reply_tx.send(reply);
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
            let _ = sink.close().await;
        });
        FakeShim {
            id: id.to_string(),
            session,
            out: Some(out),
            pushes,
            replies,
            next_request: 0,
            task: Some(task),
        }
    }

    /// The next message pushed to this shim (already confirmed `Delivered`).
    pub async fn next_push(&mut self) -> Message {
        tokio::time::timeout(FRAME_LIMIT, self.pushes.recv())
            .await
            .expect("a push within the limit")
            .expect("the link is up")
    }

    /// Sends `op` and returns its request id without waiting for the reply.
    pub fn start_request(&mut self, op: Op) -> u64 {
        self.next_request += 1;
        let id = self.next_request;
        self.out
            .as_ref()
            .expect("the link is open")
            .send(ClientFrame::Request {
                id,
                op,
                session: None,
            })
            .expect("the link task runs");
        id
    }

    /// The reply to request `id`: its result, or its error as `Err`.
    pub async fn reply(&mut self, id: u64) -> Result<serde_json::Value, String> {
        loop {
            let frame = tokio::time::timeout(FRAME_LIMIT, self.replies.recv())
                .await
                .expect("a reply within the limit")
                .expect("the link is up");
            if let ServerFrame::Reply {
                id: got,
                result,
                error,
            } = frame
            {
                if got != id {
                    continue;
                }
                return match (result, error) {
                    (_, Some(e)) => Err(e.message),
                    (Some(r), None) => Ok(r.to_value()),
                    (None, None) => Ok(serde_json::Value::Null),
                };
            }
        }
    }

    /// Sends `op` and waits for its reply.
    pub async fn request(&mut self, op: Op) -> Result<serde_json::Value, String> {
        let id = self.start_request(op);
        self.reply(id).await
    }

    /// Closes the link as a shim that exits does, and waits until it closed.
    pub async fn close(mut self) {
        self.out = None;
        if let Some(task) = self.task.take() {
            tokio::time::timeout(FRAME_LIMIT, task)
                .await
                .expect("the link closes")
                .expect("the link task ends cleanly");
        }
    }
}

impl Drop for FakeShim {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn text(frame: &ClientFrame) -> WsMessage {
    WsMessage::text(serde_json::to_string(frame).expect("a frame serializes"))
}

/// The next server frame, skipping pings and the like; `None` once the link is gone.
async fn next_frame<S>(stream: &mut S) -> Option<ServerFrame>
where
    S: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    loop {
        match stream.next().await? {
            Ok(WsMessage::Text(t)) => {
                return Some(
                    serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("the daemon sent a bad frame ({e}): {t}")),
                )
            }
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
