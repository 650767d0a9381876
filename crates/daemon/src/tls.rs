//! TLS on the daemon's TCP port (`--tls-cert`, `--tls-key`): every route,
//! the `/ws` link and `/mcp` included, over rustls with ring, the one
//! crypto provider in the tree (no OpenSSL). The Unix socket beside the
//! port stays plain: it never leaves the machine and only the daemon's user
//! can enter its directory.
//!
//! The handshake runs in each connection's own task, under the connection
//! cap and within the header timeout, so a slow or silent client holds up
//! no other and cannot keep a place for longer than one sending no headers.
//! A client that speaks plain HTTP to the TLS port is answered in plain
//! HTTP that it must use https:// (it could read nothing else), then closed.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The PEM files `--tls-cert` (the certificate chain, the server's own
/// first) and `--tls-key` (its private key) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate and key loaded and checked, ready to accept connections.
#[derive(Clone)]
pub(crate) struct Tls {
    config: Arc<ServerConfig>,
}

impl Tls {
    /// Reads both files and checks that the key is the certificate's. Every
    /// error names the file it is about; nothing is served with a bad pair.
    pub(crate) fn load(files: &TlsFiles) -> anyhow::Result<Tls> {
        let certs = read_certs(&files.cert)?;
        let key = read_key(&files.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow!("cannot set up TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| unusable_pair(files, e))?;
        // HTTP/1.1 only: the daemon serves no HTTP/2, and a WebSocket
        // upgrade needs 1.1. A client offering both gets 1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
        })
    }
}

/// Why rustls refused the certificate and key together, naming both.
fn unusable_pair(files: &TlsFiles, err: rustls::Error) -> anyhow::Error {
    let (cert, key) = (files.cert.display(), files.key.display());
    match err {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => anyhow!(
            "the TLS key {key} is not the key of the certificate {cert} (the server's own certificate comes first in its file)"
        ),
        other => anyhow!("cannot use the TLS key {key} with the certificate {cert}: {other}"),
    }
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the TLS {what} {}", path.display()))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let text = read_file(path, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "the TLS certificate {} is not valid PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "the TLS certificate {} holds no certificate (a PEM `-----BEGIN CERTIFICATE-----` block is expected)",
            path.display()
        );
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let text = read_file(path, "key")?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "the TLS key {} holds no private key (a PEM `-----BEGIN PRIVATE KEY-----` block, PKCS#8, RSA or EC, is expected)",
            path.display()
        ),
        other => anyhow!("the TLS key {} is not valid PEM: {other}", path.display()),
    })
}

/// The warning for a daemon reachable beyond loopback without TLS, or
/// `None` when there is nothing to warn of.
pub(crate) fn clear_text_warning(addr: &SocketAddr, tls: bool) -> Option<String> {
    (!addr.ip().is_loopback() && !tls).then(|| {
        format!(
            "WARNING: muster is listening on {addr} beyond loopback WITHOUT TLS: tokens, \
             messages and dashboard sign-ins cross the network in clear text, readable by \
             anyone on the path. Pass --tls-cert and --tls-key (or MUSTER_TLS_CERT and \
             MUSTER_TLS_KEY) to serve HTTPS."
        )
    })
}

/// A connection on a port: plain, or TLS once its handshake is done.
pub(crate) enum Stream<Io> {
    Plain(Io),
    Tls(Box<tokio_rustls::server::TlsStream<Rewound<Io>>>),
}

/// The first byte of a TLS record of a handshake (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// Returns the connection ready for HTTP: as it is without `tls`, else once
/// its TLS handshake is done, all within `limit`. `None`: the client went
/// away, was too slow, or did not speak TLS (see the module doc); it has
/// been answered or dropped.
pub(crate) async fn accept<Io>(tls: Option<&Tls>, io: Io, limit: Duration) -> Option<Stream<Io>>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let Some(tls) = tls else {
        return Some(Stream::Plain(io));
    };
    let handshake = async {
        let mut io = io;
        let mut first = [0u8; 1];
        if io.read(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != TLS_HANDSHAKE {
            if first[0].is_ascii_uppercase() {
                answer_plain_http(io).await;
            }
            return None;
        }
        let io = Rewound {
            first: Some(first[0]),
            io,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        match acceptor.accept(io).await {
            Ok(stream) => Some(Stream::Tls(Box::new(stream))),
            Err(e) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
        }
    };
    tokio::time::timeout(limit, handshake).await.ok().flatten()
}

/// What a plain-HTTP client of the TLS port reads (a request line starts
/// with an upper-case method): a 400 in the daemon's error shape.
async fn answer_plain_http<Io: AsyncWrite + Unpin>(mut io: Io) {
    let body = "{\"error\":{\"code\":\"tls_required\",\"message\":\"this muster daemon speaks HTTPS only: use an https:// URL\",\"matches\":[]}}";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = io.write_all(answer.as_bytes()).await;
    let _ = io.shutdown().await;
}

/// A socket with the byte read to tell TLS from plain HTTP put back in
/// front of what it reads next.
pub(crate) struct Rewound<Io> {
    first: Option<u8>,
    io: Io,
}

impl<Io: AsyncRead + Unpin> AsyncRead for Rewound<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() > 0 {
            if let Some(byte) = self.first.take() {
                buf.put_slice(&[byte]);
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Rewound<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(io) => io.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_daemon_beyond_loopback_without_tls_is_warned_of() {
        // Proves the warning's rule: beyond loopback and no TLS, and nothing else.
        let wide: SocketAddr = "0.0.0.0:7420".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:7420".parse().unwrap();
        let v6_loopback: SocketAddr = "[::1]:7420".parse().unwrap();
        assert!(clear_text_warning(&wide, false).is_some_and(|w| w.contains("0.0.0.0:7420")));
        assert_eq!(clear_text_warning(&wide, true), None);
        assert_eq!(clear_text_warning(&loopback, false), None);
        assert_eq!(clear_text_warning(&v6_loopback, false), None);
    }

    #[tokio::test]
    async fn the_sniffed_byte_is_read_again_first() {
        // Proves what rustls reads after the sniff is the client's bytes whole:
        // the byte read to tell TLS from HTTP, then the rest, in order.
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"\x16rest").await.unwrap();
        drop(client);
        let mut rewound = Rewound {
            first: Some(0x16),
            io: server,
        };
        let mut skipped = [0u8; 1];
        rewound.io.read_exact(&mut skipped).await.unwrap();
        let mut all = Vec::new();
        rewound.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"\x16rest");
    }

    #[test]
    fn a_missing_or_empty_file_is_named() {
        // Proves load errors name the file and say what was expected.
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = TlsFiles {
            cert: empty.clone(),
            key: dir.path().join("missing.pem"),
        };
        let err = Tls::load(&files).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "the TLS certificate {} holds no certificate (a PEM `-----BEGIN CERTIFICATE-----` block is expected)",
                empty.display()
            )
        );
    }
}
