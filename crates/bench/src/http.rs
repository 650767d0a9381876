//! A minimal keep-alive HTTP/1.1 client: one TCP connection, one request at
//! a time, nothing between the bench and hyper. Loopback only.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Body = http_body_util::Either<Full<Bytes>, Empty<Bytes>>;

pub struct Conn {
    sender: SendRequest<Body>,
    host: HeaderValue,
    /// The daemon's local key, as muster's own clients show it (none for an
    /// in-process daemon that asks for none).
    key: Option<HeaderValue>,
    /// `Authorization: Bearer …` instead of the key (as Claude Code's http
    /// hooks send a token).
    bearer: Option<HeaderValue>,
}

impl Conn {
    /// Opens one keep-alive connection to a loopback address.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        if !addr.ip().is_loopback() {
            bail!("the bench only talks to loopback, not {addr}");
        }
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake failed")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let key = muster_daemon::local_key::for_url(&format!("http://{addr}"))
            .map(|k| HeaderValue::from_str(&k))
            .transpose()?;
        Ok(Conn {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
            key,
            bearer: None,
        })
    }

    /// One keep-alive connection that shows `token` as a bearer token and
    /// no local key, as a Claude Code http hook does.
    pub async fn connect_bearer(addr: SocketAddr, token: &str) -> anyhow::Result<Conn> {
        let mut conn = Conn::connect(addr).await?;
        conn.key = None;
        conn.bearer = Some(HeaderValue::from_str(&format!("Bearer {token}"))?);
        Ok(conn)
    }

    /// POSTs a JSON body; answers the status and the whole response body.
    pub async fn post(&mut self, path: &str, json: Bytes) -> anyhow::Result<(StatusCode, Bytes)> {
        let len = json.len();
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, len)
            .body(Body::Left(Full::new(json)))?;
        self.send(request).await
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, self.host.clone())
            .body(Body::Right(Empty::new()))?;
        self.send(request).await
    }

    async fn send(&mut self, mut request: Request<Body>) -> anyhow::Result<(StatusCode, Bytes)> {
        if let Some(key) = &self.key {
            request
                .headers_mut()
                .insert(muster_daemon::local_key::HEADER, key.clone());
        }
        if let Some(bearer) = &self.bearer {
            request
                .headers_mut()
                .insert(hyper::header::AUTHORIZATION, bearer.clone());
        }
        self.sender.ready().await.context("the connection closed")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .context("the request failed")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the response failed")?
            .to_bytes();
        Ok((status, body))
    }
}

/// A body as text for an error message, cut short.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}
