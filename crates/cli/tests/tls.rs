//! TLS end to end: a real `muster serve --tls-cert --tls-key` on an
//! ephemeral loopback port, with a throwaway CA and a server certificate
//! for 127.0.0.1 and localhost made here (rcgen), and the real clients over
//! https:// and wss://: the CLI, the hook client and a `muster mcp` shim.
//! Also: what a client is told when it cannot trust the daemon or speaks
//! the wrong protocol to it, the warning a daemon beyond loopback gives
//! without TLS, the connection cap and header timeout over TLS, and a bad
//! certificate or key stopping the start.

mod common;
#[path = "support/pki.rs"]
mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use pki::{ca, Pki};
use rcgen::KeyPair;
use serde_json::{json, Value};

/// A `muster serve` child, its stdout's first line (the listening line) read.
struct Serve {
    child: Child,
    url: String,
    stderr: mpsc::Receiver<String>,
    _data: tempfile::TempDir,
}

impl Serve {
    /// Starts `muster serve --bind <bind> <args>` on a fresh data directory
    /// and waits for the line that says where it listens.
    fn start(bind: &str, args: &[String]) -> Serve {
        let data = tempfile::tempdir().unwrap();
        let mut child = serve_command(bind, data.path(), args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn muster serve");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let line = stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("muster serve printed no listening line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Serve {
            child,
            url,
            stderr,
            _data: data,
        }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `muster <args>` against this daemon, trusting `ca` when given.
    fn muster(&self, ca: Option<&Path>, args: &[&str]) -> Output {
        client(&self.url, ca).args(args).output().unwrap()
    }

    /// `muster hook <event>` fed `payload`, as a harness runs it.
    fn hook(&self, ca: Option<&Path>, event: &str, payload: &Value) -> Output {
        let mut child = client(&self.url, ca)
            .args(["hook", event])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(payload.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Stops the daemon and returns everything it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `muster serve` with a clean environment: no URL, token, store or TLS
/// setting of the developer's leaks in; stderr piped.
fn serve_command(bind: &str, data: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--bind", bind, "--data-dir"])
        .arg(data)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("MUSTER_URL")
        .env_remove("MUSTER_TOKEN")
        .env_remove("MUSTER_STORE")
        .env_remove("MUSTER_UNIX_SOCKET")
        .env_remove("MUSTER_TLS_CERT")
        .env_remove("MUSTER_TLS_KEY")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Every line `from` gives, on a channel, read on a thread of its own.
fn lines_of(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// `muster` for `url`, with MUSTER_CA_FILE set to `ca` or unset.
fn client(url: &str, ca: Option<&Path>) -> Command {
    let mut cmd = muster_cmd(url);
    cmd.env_remove("MUSTER_CA_FILE");
    if let Some(ca) = ca {
        cmd.env("MUSTER_CA_FILE", ca);
    }
    cmd
}

/// An HTTPS client trusting `ca` alone, showing the local key of the
/// daemon at `url` as muster's own clients do.
fn https(url: &str, ca: &Path) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        muster_daemon::local_key::HEADER,
        key_for(url).parse().unwrap(),
    );
    reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "muster failed: {}", stderr_of(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

// Proves the CLI and the hook client work over https:// when MUSTER_CA_FILE
// names the CA: a session registered by its session-start hook is on
// `muster roster`, `muster send` to it is queued, and its next prompt-submit
// hook answers with that mail in its context.
#[test]
fn the_cli_and_hooks_work_over_https_with_the_ca_file() {
    let pki = Pki::new();
    let d = Serve::start("127.0.0.1:0", &pki.serve_args());
    assert!(d.url.starts_with("https://127.0.0.1:"), "{}", d.url);
    let id = "7a500000-0000-4000-8000-000000000001";
    let ca = Some(pki.ca.as_path());

    let started = d.hook(ca, "session-start", &payload(id, "SessionStart"));
    assert_eq!(stderr_of(&started), "");
    let ctx = context_of(&String::from_utf8_lossy(&started.stdout));
    assert!(ctx.is_some_and(|c| c.contains(id)), "the hook answered");

    let roster = json_of(&d.muster(ca, &["roster", "--json"]));
    let ids: Vec<&str> = roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id]);

    let sent = json_of(&d.muster(ca, &["send", id, "over TLS", "--json"]));
    assert_eq!(sent["state"], "queued", "{sent}");

    let turn = d.hook(ca, "prompt-submit", &payload(id, "UserPromptSubmit"));
    assert_eq!(stderr_of(&turn), "");
    let ctx = context_of(&String::from_utf8_lossy(&turn.stdout)).expect("mail in context");
    assert!(ctx.contains("over TLS"), "{ctx}");
}

// Proves a certificate no trusted CA signed is refused, and the person is
// told so and what to do: without MUSTER_CA_FILE (Mozilla's roots do not
// know the test CA) and with one naming another CA, for the CLI (exit 3)
// and the hook client (fails open: exit 0, one line on stderr).
#[test]
fn a_certificate_no_trusted_ca_signed_is_refused_with_what_to_do() {
    let pki = Pki::new();
    let d = Serve::start("127.0.0.1:0", &pki.serve_args());

    let out = d.muster(None, &["roster"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: cannot reach the muster daemon at {} securely: the daemon's TLS certificate \
             is not trusted (invalid peer certificate: UnknownIssuer); if your team's CA signed \
             it, set MUSTER_CA_FILE to that CA's PEM file\n",
            d.url
        )
    );

    let (other_params, other_key) = ca("another CA");
    let other = pki.file(
        "other-ca.pem",
        &other_params.self_signed(&other_key).unwrap().pem(),
    );
    let out = d.muster(Some(&other), &["roster"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: cannot reach the muster daemon at {} securely: the daemon's TLS certificate \
             is not trusted (invalid peer certificate: UnknownIssuer); no CA in MUSTER_CA_FILE \
             ({}) signed it\n",
            d.url,
            other.display()
        )
    );

    let hook = d.hook(
        None,
        "session-start",
        &payload("7a500000-0000-4000-8000-000000000002", "SessionStart"),
    );
    assert_eq!(hook.status.code(), Some(0));
    assert_eq!(hook.stdout, b"");
    assert_eq!(
        stderr_of(&hook),
        format!(
            "muster hook: no secure connection to the daemon at {}: the daemon's TLS certificate \
             is not trusted (invalid peer certificate: UnknownIssuer); if your team's CA signed \
             it, set MUSTER_CA_FILE to that CA's PEM file; continuing without muster\n",
            d.url
        )
    );

    let missing = pki.dir.path().join("missing.pem");
    let out = d.muster(Some(&missing), &["roster"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: cannot read MUSTER_CA_FILE {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
}

/// Starts `muster mcp` for `session` against `url`, trusting `ca`, and
/// opens its MCP session; its stdout lines arrive on the receiver.
fn shim(url: &str, ca: &Path, session: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = client(url, Some(ca))
        .arg("mcp")
        .env("MUSTER_SESSION_ID", session)
        .env_remove("MUSTER_HARNESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    for line in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ] {
        writeln!(stdin, "{line}").unwrap();
    }
    let lines = lines_of(child.stdout.take().unwrap());
    (child, lines)
}

// Proves the shim's link goes over wss:// and carries pushes: with the
// daemon's Unix socket off, a real `muster mcp` trusting the CA links over
// TLS, a send to its session is pushed at once, and the channel line
// reaches its client. A shim that cannot trust the daemon says why.
#[test]
fn a_shim_links_over_wss_and_receives_a_push() {
    let pki = Pki::new();
    let mut args = pki.serve_args();
    args.extend(["--unix-socket".into(), "off".into()]);
    let d = Serve::start("127.0.0.1:0", &args);
    let http = https(&d.url, &pki.ca);
    let id = "7a500000-0000-4000-8000-000000000003";
    let (mut child, lines) = shim(&d.url, &pki.ca, id);

    let linked = wait_until(Duration::from_secs(10), || {
        let roster: Value = http
            .get(format!("{}/api/v1/roster", d.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        roster["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id && s["link_up"] == true && s["can_push"] == true)
    });
    assert!(linked.is_some(), "the shim linked over wss://");

    let answer: Value = http
        .post(format!("{}/api/v1/messages", d.url))
        .json(&json!({"to": id, "body": "pushed over wss"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["state"], "pushed", "{answer}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let channel = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a channel line within 5 s");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["method"] == "notifications/claude/channel" {
            break v;
        }
    };
    assert_eq!(
        channel["params"]["meta"]["message_id"],
        answer["message"]["id"]
    );
    assert!(channel["params"]["content"]
        .as_str()
        .unwrap()
        .contains("pushed over wss"));
    let _ = child.kill();
    let _ = child.wait();

    let mut untrusted = client(&d.url, None);
    untrusted
        .arg("mcp")
        .env("MUSTER_SESSION_ID", "7a500000-0000-4000-8000-000000000004")
        .stderr(Stdio::null());
    let (text, is_error) = shim_whoami(untrusted);
    assert!(is_error);
    assert_eq!(
        text,
        "cannot link to the muster daemon securely: the daemon's TLS certificate is not \
         trusted (invalid peer certificate: UnknownIssuer); if your team's CA signed it, set \
         MUSTER_CA_FILE to that CA's PEM file"
    );
}

// Proves the other routes answer over TLS too: /healthz, the dashboard
// page, and /mcp (an MCP initialize over Streamable HTTP).
#[test]
fn health_the_dashboard_and_mcp_answer_over_https() {
    let pki = Pki::new();
    let d = Serve::start("127.0.0.1:0", &pki.serve_args());
    let http = https(&d.url, &pki.ca);
    let health = http.get(format!("{}/healthz", d.url)).send().unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().unwrap(), "ok\n");

    let page = http.get(format!("{}/", d.url)).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("<html"));

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
        "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let mcp = http
        .post(format!("{}/mcp", d.url))
        .header("accept", "application/json, text/event-stream")
        .header("x-muster-session", "7a500000-0000-4000-8000-000000000005")
        .json(&init)
        .send()
        .unwrap();
    assert_eq!(mcp.status(), 200);
    let text = mcp.text().unwrap();
    assert!(text.contains("\"serverInfo\""), "{text}");
}

/// Writes `request` on a plain TCP connection to `port` and reads until the
/// daemon closes it.
fn plain_exchange(port: u16, request: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

// Proves plain HTTP to the TLS port fails cleanly: the daemon answers in
// plain HTTP that it speaks HTTPS only, and closes; `muster` with an
// http:// URL says so (exit 1). And the other way round: an https:// URL
// for a plain daemon is told the daemon does not speak TLS.
#[test]
fn the_wrong_protocol_is_told_which_to_use() {
    let pki = Pki::new();
    let d = Serve::start("127.0.0.1:0", &pki.serve_args());
    let body = r#"{"error":{"code":"tls_required","message":"this muster daemon speaks HTTPS only: use an https:// URL","matches":[]}}"#;
    assert_eq!(
        plain_exchange(d.port(), "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"),
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    );
    let plain_url = d.url.replace("https://", "http://");
    let out = client(&plain_url, None).arg("roster").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out),
        "error: this muster daemon speaks HTTPS only: use an https:// URL\n"
    );

    let plain = TestDaemon::start(&[]);
    let tls_url = plain.url.replace("http://", "https://");
    let out = client(&tls_url, Some(&pki.ca))
        .arg("roster")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: cannot reach the muster daemon at {tls_url} securely: the daemon does not \
             speak TLS on this port (received corrupt message of type InvalidContentType); use \
             an http:// URL, or serve it with --tls-cert and --tls-key\n"
        )
    );
}

// Proves the connection bounds hold over TLS: with one connection allowed
// and it held by a client that sends nothing, an HTTPS request is refused
// with the 503 in the daemon's error shape, encrypted; and a client that
// opens a connection and sends nothing is closed at the header timeout,
// its TLS handshake never started.
#[test]
fn the_connection_cap_and_header_timeout_hold_over_tls() {
    let pki = Pki::new();
    let mut args = pki.serve_args();
    args.extend(
        [
            "--max-connections",
            "1",
            "--header-timeout",
            "2s",
            "--unix-socket",
            "off",
        ]
        .map(String::from),
    );
    let d = Serve::start("127.0.0.1:0", &args);
    let http = https(&d.url, &pki.ca);

    let mut silent = TcpStream::connect(("127.0.0.1", d.port())).unwrap();
    let opened = Instant::now();
    // Give the daemon a moment to accept it and count it (microseconds
    // usually; the window below allows far more).
    std::thread::sleep(Duration::from_millis(500));
    let refused = http.get(format!("{}/healthz", d.url)).send().unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");

    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = silent.read(&mut buf).unwrap();
    let closed_after = opened.elapsed();
    assert_eq!(read, 0, "closed with nothing written");
    assert!(
        closed_after >= Duration::from_millis(1_800) && closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}, not at the 2 s header timeout"
    );
    let health = http.get(format!("{}/healthz", d.url)).send().unwrap();
    assert_eq!(health.status(), 200, "its place was given back");
}

/// The exact warning a daemon on `addr` gives without TLS.
fn clear_text_warning(addr: &str) -> String {
    format!(
        "WARNING: muster is listening on {addr} beyond loopback WITHOUT TLS: tokens, messages \
         and dashboard sign-ins cross the network in clear text, readable by anyone on the \
         path. Pass --tls-cert and --tls-key (or MUSTER_TLS_CERT and MUSTER_TLS_KEY) to serve \
         HTTPS."
    )
}

// Proves the warning beyond loopback: `muster serve --bind 0.0.0.0 --token T`
// without TLS writes it on stderr (unfiltered, and in the log), with TLS it
// does not, and on loopback it does not. (0.0.0.0 on an ephemeral port; no
// traffic leaves the machine: nothing connects to it.)
#[test]
fn beyond_loopback_the_daemon_warns_without_tls_only() {
    let token = ["--token".to_string(), "t0ken-for-the-warning-test".into()];
    let d = Serve::start("0.0.0.0:0", &token);
    let addr = d.url.trim_start_matches("http://").to_string();
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    let stderr = d.stop();
    let warning = clear_text_warning(&addr);
    let printed: Vec<&str> = stderr.lines().filter(|l| l.contains(&warning)).collect();
    assert_eq!(printed.len(), 2, "on stderr and in the log: {stderr}");
    assert!(printed.contains(&warning.as_str()), "{stderr}");
    assert!(
        printed.iter().any(|l| l.contains(" WARN ")),
        "a log line: {stderr}"
    );

    let pki = Pki::new();
    let mut args = pki.serve_args();
    args.extend(token);
    let d = Serve::start("0.0.0.0:0", &args);
    assert!(d.url.starts_with("https://0.0.0.0:"), "{}", d.url);
    let stderr = d.stop();
    assert!(!stderr.contains("WITHOUT TLS"), "{stderr}");

    let d = Serve::start("127.0.0.1:0", &[]);
    let stderr = d.stop();
    assert!(!stderr.contains("WITHOUT TLS"), "{stderr}");
}

/// Runs `muster serve` with these TLS files; it must exit by itself,
/// having made no data directory.
fn serve_refused(cert: &Path, key: &Path) -> Output {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let args = [
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ];
    let child = serve_command("127.0.0.1:0", &data, &args)
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!data.exists(), "nothing was made: {}", data.display());
    out
}

// Proves a certificate or key that cannot be used stops the start with an
// error naming the file (exit 1, no listening line, no data directory
// made): a missing file, a file with no certificate, a key file with no
// key, a key of another certificate; and one flag without the other is a
// usage error (exit 2).
#[test]
fn a_bad_certificate_or_key_stops_the_start_naming_the_file() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("missing.pem");
    let not_pem = pki.file("not-pem.txt", "hello\n");
    let other_key = pki.file(
        "other-key.pem",
        &KeyPair::generate().unwrap().serialize_pem(),
    );
    let cases = [
        (
            missing.clone(),
            pki.key.clone(),
            format!(
                "error: cannot read the TLS certificate {}: No such file or directory (os error 2)\n",
                missing.display()
            ),
        ),
        (
            not_pem.clone(),
            pki.key.clone(),
            format!(
                "error: the TLS certificate {} holds no certificate (a PEM `-----BEGIN CERTIFICATE-----` block is expected)\n",
                not_pem.display()
            ),
        ),
        (
            pki.cert.clone(),
            pki.cert.clone(),
            format!(
                "error: the TLS key {} holds no private key (a PEM `-----BEGIN PRIVATE KEY-----` block, PKCS#8, RSA or EC, is expected)\n",
                pki.cert.display()
            ),
        ),
        (
            pki.cert.clone(),
            other_key.clone(),
            format!(
                "error: the TLS key {} is not the key of the certificate {} (the server's own \
                 certificate comes first in its file)\n",
                other_key.display(),
                pki.cert.display()
            ),
        ),
    ];
    for (cert, key, expected) in cases {
        let out = serve_refused(&cert, &key);
        assert_eq!(out.status.code(), Some(1), "{expected}");
        assert_eq!(out.stdout, b"", "nothing listened");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
    }

    let data = tempfile::tempdir().unwrap();
    let out = serve_command(
        "127.0.0.1:0",
        data.path(),
        &["--tls-cert".into(), pki.cert.display().to_string()],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("--tls-key <FILE>"),
        "{}",
        stderr_of(&out)
    );
}
