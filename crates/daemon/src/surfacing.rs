//! "Marked surfaced only after the response was written."
//!
//! Mail put into an answer is first *claimed* (no concurrent answer offers
//! it), then marked surfaced when the answer body has been handed to the
//! connection. If the answer is dropped unwritten (the client went away),
//! the claim is released and the mail stays unread.
//!
//! A `Surfacing` never touches the hub itself: it sends what became of its
//! mail to the hub's settler task (`Hub::settle`). So one may be dropped
//! anywhere, under the hub's lock included, and nothing it owns points
//! back at the hub.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// What became of some claimed mail of one recipient.
#[derive(Debug)]
pub enum Settle {
    /// Its answer was written: mark it surfaced.
    Surfaced { recipient: String, ids: Vec<String> },
    /// It was not delivered after all: release the claim.
    Released { recipient: String, ids: Vec<String> },
}

/// Where settlements go (one channel per hub).
pub type Settler = mpsc::UnboundedSender<Settle>;

/// A frame for a link's writer, with the mail it carries (marked surfaced
/// once the frame is written). Both are boxed: a link's writer queue is a
/// tokio channel, which allocates its slots 32 at a time, so every link,
/// idle or not, holds 32 of these (16 bytes each boxed, 384 inline).
#[derive(Debug)]
pub struct Outgoing {
    pub frame: Box<muster_core::link::ServerFrame>,
    pub surfacing: Option<Box<Surfacing>>,
}

impl From<muster_core::link::ServerFrame> for Outgoing {
    fn from(frame: muster_core::link::ServerFrame) -> Self {
        Outgoing {
            frame: Box::new(frame),
            surfacing: None,
        }
    }
}

/// Claimed mail of one recipient, waiting for its answer to be written.
pub struct Surfacing {
    settler: Settler,
    recipient: String,
    ids: Vec<String>,
    settled: bool,
}

impl Surfacing {
    pub fn new(settler: Settler, recipient: String, ids: Vec<String>) -> Self {
        Surfacing {
            settler,
            recipient,
            ids,
            settled: false,
        }
    }

    fn release(&self, ids: Vec<String>) {
        if !ids.is_empty() {
            let recipient = self.recipient.clone();
            // Fails only once the settler is gone with the hub: nothing to release.
            let _ = self.settler.send(Settle::Released { recipient, ids });
        }
    }

    /// Keeps the first `n` claimed messages and releases the rest (they did
    /// not fit in this answer and stay unread).
    pub fn keep_first(&mut self, n: usize) {
        if n < self.ids.len() {
            let rest = self.ids.split_off(n);
            self.release(rest);
        }
    }

    /// Keeps only the claimed messages in `shown` and releases the rest.
    pub fn keep_only(&mut self, shown: &std::collections::HashSet<&str>) {
        let (keep, rest): (Vec<String>, Vec<String>) = std::mem::take(&mut self.ids)
            .into_iter()
            .partition(|id| shown.contains(id.as_str()));
        self.ids = keep;
        self.release(rest);
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The answer was written: record the mail as surfaced.
    pub fn complete(mut self) {
        self.settled = true;
        let ids = std::mem::take(&mut self.ids);
        if ids.is_empty() {
            return;
        }
        let recipient = std::mem::take(&mut self.recipient);
        let _ = self.settler.send(Settle::Surfaced { recipient, ids });
    }
}

impl std::fmt::Debug for Surfacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surfacing")
            .field("recipient", &self.recipient)
            .field("ids", &self.ids)
            .finish()
    }
}

impl Drop for Surfacing {
    fn drop(&mut self) {
        if !self.settled {
            let ids = std::mem::take(&mut self.ids);
            self.release(ids);
        }
    }
}

/// A response body that completes its `Surfacing` once hyper has taken the
/// bytes: either when it asks for more, or when it drops the body after
/// taking them (with a known length hyper stops polling once it has them all).
/// Dropped before the bytes were taken, the claim is released instead.
struct SurfacingBody {
    data: Option<Bytes>,
    len: u64,
    surfacing: Option<Surfacing>,
}

impl http_body::Body for SurfacingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(s) = this.surfacing.take() {
            s.complete();
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.surfacing.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

impl Drop for SurfacingBody {
    fn drop(&mut self) {
        if self.data.is_none() {
            if let Some(s) = self.surfacing.take() {
                s.complete();
            }
        }
    }
}

/// A JSON response whose mail is marked surfaced once it is written.
pub fn json_response(status: StatusCode, json: Vec<u8>, surfacing: Surfacing) -> Response {
    let len = json.len() as u64;
    let body = SurfacingBody {
        data: Some(Bytes::from(json)),
        len,
        surfacing: Some(surfacing),
    };
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
