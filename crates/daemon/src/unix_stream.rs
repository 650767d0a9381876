//! A Unix stream socket whose task is woken to read, not each time its peer
//! reads.
//!
//! Linux tells a Unix socket's writer that there is room again every time
//! the peer takes data out (`unix_write_space`: an EPOLLOUT edge), whether
//! or not the writer ever ran out of room. Tokio's `UnixStream` waits for
//! readable and writable edges alike, so each frame a link wrote woke its
//! thread once more when the other end read it, to find nothing to do: on a
//! link that is one futile wake per frame on each side, in every shim and in
//! the daemon (two of the five a shim's thread took per delivered message,
//! seen with `strace` in `muster-bench delivery`). TCP wakes a writer only
//! after a write found the buffer full, which is what this stream does too:
//! it waits for writable edges only while a write is waiting for room.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix stream socket, readable and writable as tokio's is.
pub struct QuietUnixStream {
    /// The socket, registered for readable edges only.
    socket: AsyncFd<UnixStream>,
    /// A second descriptor of the same socket, registered for writable
    /// edges, while a write is waiting for room (dropped once it has it).
    room: Option<AsyncFd<OwnedFd>>,
}

impl QuietUnixStream {
    /// Takes over a connected socket (set non-blocking here).
    pub fn new(socket: UnixStream) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        // SAFETY: the `UnixStream` owns its descriptor, and nothing closes
        // or replaces it while the `AsyncFd` holds it.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE)? };
        Ok(QuietUnixStream { socket, room: None })
    }

    /// Connects to the socket at `path`.
    pub async fn connect(path: &std::path::Path) -> io::Result<Self> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        Self::new(stream.into_std()?)
    }

    /// Waits, on the second registration, until the socket has room.
    fn poll_room(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.room.is_none() {
            let second = OwnedFd::from(self.socket.get_ref().try_clone()?);
            // SAFETY: the `OwnedFd` owns its descriptor (a duplicate of the
            // socket's), and nothing closes or replaces it while registered.
            let room = unsafe { AsyncFd::register_with_interest(second, Interest::WRITABLE)? };
            self.room = Some(room);
        }
        let Some(room) = &self.room else {
            unreachable!("set just above")
        };
        loop {
            let mut guard = ready!(room.poll_write_ready(cx))?;
            // `try_io` clears the readiness it saw when the write would
            // still block, so the next poll waits for a new edge.
            if let Ok(written) = guard.try_io(|_| self.socket.get_ref().write(buf)) {
                return Poll::Ready(written);
            }
        }
    }
}

impl AsyncRead for QuietUnixStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.socket.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            match guard.try_io(|socket| socket.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // A read that took less than it had room for emptied the
                    // socket: the next read would only say "would block" (one
                    // futile syscall per frame, on every link). The selector is
                    // edge-triggered (epoll, kqueue), so data that comes later
                    // makes a new edge; tokio's own sockets do the same.
                    if 0 < n && n < room {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for QuietUnixStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Almost always there is room: write at once, with no wait set up.
        if this.room.is_none() {
            match this.socket.get_ref().write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
        let written = ready!(this.poll_room(cx, buf));
        // Room again: writable edges would only wake us for nothing now.
        this.room = None;
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

/// The daemon's Unix listener, handing out [`QuietUnixStream`]s.
pub struct QuietUnixListener(pub tokio::net::UnixListener);

impl axum::serve::Listener for QuietUnixListener {
    type Io = QuietUnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // axum's own accept loop: it waits out errors such as too many
            // open files rather than returning them.
            let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
            match stream.into_std().and_then(QuietUnixStream::new) {
                Ok(quiet) => return (quiet, addr),
                Err(e) => tracing::warn!("dropped a Unix socket connection: {e}"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (QuietUnixStream, QuietUnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            QuietUnixStream::new(a).unwrap(),
            QuietUnixStream::new(b).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_write_far_larger_than_the_socket_buffer_waits_for_room_and_arrives_whole() {
        // 8 MB: many times a Unix socket's buffer, so the writer must wait
        // for room (the second registration) over and over.
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (mut writer, mut reader) = pair();
        let sent = data.clone();
        let writing = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            writer.shutdown().await.unwrap();
            writer
        });
        let mut got = Vec::new();
        // Slowly at first, so the writer really finds the buffer full.
        let mut chunk = vec![0u8; 1024];
        for _ in 0..64 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let n = reader.read(&mut chunk).await.unwrap();
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(
            !writing.is_finished(),
            "8 MB fitted in the socket: the test proves nothing here"
        );
        reader.read_to_end(&mut got).await.unwrap();
        let writer = writing.await.unwrap();
        assert!(got == data, "the bytes arrived changed or incomplete");
        assert!(writer.room.is_none(), "the writable registration was kept");
    }

    /// Whether the stream still takes its socket to be readable (it would
    /// read at its next poll rather than wait), asked once with a waker that
    /// does nothing.
    fn believes_readable(stream: &QuietUnixStream) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        stream.socket.poll_read_ready(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn a_short_read_empties_the_socket_without_a_read_that_would_block() {
        let (mut a, mut b) = pair();
        let mut buf = [0u8; 64];
        for round in 0..3u8 {
            a.write_all(&[round; 10]).await.unwrap();
            let n = b.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[round; 10], "round {round}");
            // Nothing more has come: the next read must wait for an edge,
            // not make a read(2) that can only say "would block".
            assert!(
                !believes_readable(&b),
                "round {round}: still readable after a read that emptied the socket"
            );
        }
        // A read that fills its buffer may have left more behind: it must
        // not stop believing the socket readable.
        a.write_all(&[7u8; 100]).await.unwrap();
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(n, buf.len());
        assert!(believes_readable(&b), "a full read gave up on the rest");
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(n, 100 - buf.len());
        // Data that comes after a short read still wakes the reader.
        let late = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            a.write_all(b"late").await.unwrap();
            a
        });
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), b.read(&mut buf))
            .await
            .expect("data written after a short read never woke the reader")
            .unwrap();
        assert_eq!(&buf[..n], b"late");
        drop(late.await.unwrap());
        assert_eq!(b.read(&mut buf).await.unwrap(), 0, "end of stream");
    }

    #[tokio::test]
    async fn frames_go_both_ways_and_the_end_is_seen() {
        let (mut a, mut b) = pair();
        a.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        b.write_all(b"pong").await.unwrap();
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        drop(b);
        assert_eq!(a.read(&mut buf).await.unwrap(), 0, "end of stream");
    }
}
