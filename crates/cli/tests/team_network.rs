//! Team mode over a real network (issue 10): a real `muster serve` with a
//! bootstrap token and TLS in one network namespace, its clients (the CLI,
//! a `muster mcp` shim, and raw HTTPS requests) in another, with nothing
//! but a veth pair between them (see support/netns.rs; needs root and
//! iproute2). The clients have no local key to show (a fresh runtime and
//! temp directory, and the key is never sent beyond loopback anyway), so
//! their token is the only way in: without one a request is 401; an agent
//! token registers its sessions and no other token may act for them (403
//! `forbidden_session`, nothing stored); a revoked token is 401; a shim
//! with its token links over wss:// and takes pushes.

#![cfg(target_os = "linux")]

mod common;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/pki.rs"]
mod pki;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use netns::NetPair;
use pki::Pki;
use serde_json::{json, Value};

/// The daemon's `--token`: an admin token.
const BOOTSTRAP: &str = "b00tstrap-admin-token-of-the-veth-test";

/// How long any one thing may take to happen.
const WAIT: Duration = Duration::from_secs(10);

/// A daemon in its namespace, reachable from the clients' over the veth.
struct Team {
    daemon: Child,
    /// `https://<daemon side's address>:<port>`.
    url: String,
    pki: Pki,
    /// The daemon's data and runtime directories.
    _daemon_dirs: tempfile::TempDir,
    /// The clients' runtime and temp directory: holds no daemon's key.
    client_dir: tempfile::TempDir,
    /// Dropped last (fields drop in order, after `Drop::drop` killed the daemon).
    net: NetPair,
}

impl Team {
    /// Makes the namespaces and a certificate for the daemon side's
    /// address, starts `muster serve` there on an ephemeral port with
    /// TLS and the bootstrap token, and waits until it answers
    /// `GET /healthz` from the clients' side.
    fn start() -> Team {
        let net = NetPair::new();
        let pki = Pki::for_names(&[&net.daemon_ip]);
        let daemon_dirs = tempfile::tempdir().unwrap();
        let runtime = daemon_dirs.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        let mut cmd = net.in_daemon_ns(BIN);
        clean_muster_env(&mut cmd);
        cmd.args(["serve", "--bind", &format!("{}:0", net.daemon_ip)])
            .args(["--token", BOOTSTRAP, "--data-dir"])
            .arg(daemon_dirs.path().join("data"))
            .args(pki.serve_args())
            .env("RUST_LOG", "warn")
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("TMPDIR", &runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let daemon = cmd.spawn().expect("spawn ip netns exec … muster serve");
        let mut team = Team {
            daemon,
            url: String::new(),
            pki,
            _daemon_dirs: daemon_dirs,
            client_dir: tempfile::tempdir().unwrap(),
            net,
        };
        let stdout = lines_of(team.daemon.stdout.take().unwrap());
        let line = stdout.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "muster serve in namespace {} printed no listening line within 10 s",
                team.net.daemon_ns
            )
        });
        team.url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no https:// URL in {line:?}"))
            .to_string();
        assert!(
            team.url
                .starts_with(&format!("https://{}:", team.net.daemon_ip)),
            "{}",
            team.url
        );
        let health = format!("{}/healthz", team.url);
        let answered = team.net.on_client_side(|| {
            let http = https(&team.pki.ca);
            wait_until(WAIT, || {
                http.get(&health).send().is_ok_and(|r| r.status() == 200)
            })
        });
        assert!(
            answered.is_some(),
            "the daemon at {} did not answer GET /healthz from namespace {} within 10 s",
            team.url,
            team.net.client_ns
        );
        team
    }

    /// `muster <args>` in the clients' namespace: the test environment of
    /// `common::muster_cmd` (no session, channels on, no config file), the
    /// CA trusted, no MUSTER_* of the host's, a runtime and temp directory
    /// with no key in them, and MUSTER_TOKEN set to `token` or unset.
    fn muster(&self, token: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = self.net.in_client_ns(BIN);
        clean_muster_env(&mut cmd);
        for (name, value) in muster_cmd(&self.url).get_envs() {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        cmd.env("MUSTER_CA_FILE", &self.pki.ca)
            .env("XDG_RUNTIME_DIR", self.client_dir.path())
            .env("TMPDIR", self.client_dir.path())
            .stdin(Stdio::null())
            .args(args);
        if let Some(token) = token {
            cmd.env("MUSTER_TOKEN", token);
        }
        cmd
    }

    fn run(&self, token: Option<&str>, args: &[&str]) -> Output {
        self.muster(token, args).output().expect("run muster")
    }

    /// `muster <args>` (with `--json` among them), which must succeed; its JSON.
    fn ok(&self, token: Option<&str>, args: &[&str]) -> Value {
        let out = self.run(token, args);
        assert!(
            out.status.success(),
            "muster {args:?} failed ({}): {}",
            out.status,
            stderr_of(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "muster {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `muster <args>` (with `--json`), which the daemon must refuse: exit
    /// 1, the daemon's error on stdout and `error: <its message>` on
    /// stderr. The error (`{code, message, …}`).
    fn refused(&self, token: Option<&str>, args: &[&str]) -> Value {
        let out = self.run(token, args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "muster {args:?} was not refused by the daemon: {} {}",
            String::from_utf8_lossy(&out.stdout),
            stderr_of(&out)
        );
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "muster {args:?} printed no error JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let error = body["error"].clone();
        let message = error["message"].as_str().expect("an error message");
        assert_eq!(stderr_of(&out), format!("error: {message}\n"));
        error
    }

    /// A raw HTTPS request from the clients' namespace, with `token` as
    /// its bearer token if given: the status and the JSON answer.
    fn raw(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        self.net.on_client_side(|| {
            let http = https(&self.pki.ca);
            let mut request = http.request(method.parse().unwrap(), &url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = request
                .send()
                .unwrap_or_else(|e| panic!("{method} {url} from the clients' namespace: {e}"));
            let status = answer.status().as_u16();
            let text = answer.text().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    /// The session `id` on the roster, asked with the admin token.
    fn on_roster(&self, id: &str) -> Option<Value> {
        let roster = self.ok(Some(BOOTSTRAP), &["roster", "--json"]);
        roster["sessions"]
            .as_array()
            .expect("a roster lists sessions")
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
    }

    /// Starts `muster mcp` in the clients' namespace as session `id` with
    /// `token`, opens its MCP session, and waits until the roster (asked
    /// with the admin token) shows it linked and taking pushes.
    fn shim(&self, token: &str, id: &str) -> Shim {
        let mut child = self
            .muster(Some(token), &["mcp"])
            .env("MUSTER_SESSION_ID", id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ip netns exec … muster mcp");
        let lines = lines_of(child.stdout.take().unwrap());
        let mut shim = Shim {
            stdin: child.stdin.take().unwrap(),
            child,
            lines,
        };
        for line in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
                "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        ] {
            writeln!(shim.stdin, "{line}").unwrap();
        }
        let linked = wait_until(WAIT, || {
            self.on_roster(id).is_some_and(|s| {
                s["link"] == "link" && s["link_up"] == true && s["can_push"] == true
            })
        });
        assert!(
            linked.is_some(),
            "the shim of {id} in namespace {} did not link to {} within 10 s",
            self.net.client_ns,
            self.url
        );
        shim
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A `muster mcp` child and the lines it writes to its client; killed when dropped.
struct Shim {
    child: Child,
    /// Kept open: closing it ends the shim.
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Shim {
    /// The first channel notification (a push) whose content holds
    /// `needle`, written within 10 s.
    fn push_with(&self, needle: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!("the shim wrote no push holding {needle:?} within 10 s")
                });
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the shim wrote non-JSON {line:?}: {e}"));
            if v["method"] == "notifications/claude/channel"
                && v["params"]["content"]
                    .as_str()
                    .is_some_and(|c| c.contains(needle))
            {
                return v;
            }
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes every MUSTER_* variable the test process has from `cmd`'s environment.
fn clean_muster_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MUSTER_") {
            cmd.env_remove(name);
        }
    }
}

/// An HTTPS client trusting `ca` alone, showing no key and no token.
fn https(ca: &Path) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// Every line `from` gives, on a channel, read on a thread of its own.
fn lines_of(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The sessions of the test (UUIDs, as harnesses make them).
const ALICE: &str = "7e700000-0000-4000-8000-0000000a11ce";
const ADMINS: &str = "7e700000-0000-4000-8000-00000000ad31";

// Proves, across the veth with TLS: the daemon answers /healthz to anyone,
// but a request with no token is 401 `unauthorized` (the CLI exits 1 and
// says the daemon's message; a raw request gets the status), and so is
// one with a wrong token, and a shim with no token is told it is refused;
// a shim with the bootstrap token links over wss:// (the roster, asked
// with that token, shows it linked) and a person's `muster send` to it is
// `pushed`, reaching the shim's client as a channel notification.
#[test]
fn over_veth_no_token_is_401_and_a_shim_with_the_bootstrap_token_takes_pushes() {
    let team = Team::start();

    let error = team.refused(None, &["roster", "--json"]);
    assert_eq!(error["code"], "unauthorized", "{error}");
    let error = team.refused(Some("not-the-token"), &["roster", "--json"]);
    assert_eq!(error["code"], "unauthorized", "{error}");
    let (status, body) = team.raw(None, "GET", "/api/v1/roster", None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let (status, body) = team.raw(
        None,
        "POST",
        "/api/v1/messages",
        Some(&json!({"to": "op:tester", "body": "no token"})),
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = team.raw(Some(BOOTSTRAP), "GET", "/api/v1/roster", None);
    assert_eq!(status, 200, "{body}");

    let mut tokenless = team.muster(None, &["mcp"]);
    tokenless
        .env("MUSTER_SESSION_ID", ADMINS)
        .stderr(Stdio::null());
    let (text, is_error) = shim_whoami(tokenless);
    assert!(is_error, "{text}");
    assert!(
        text.starts_with("the muster daemon refused this shim (") && text.contains("MUSTER_TOKEN"),
        "{text}"
    );
    assert!(
        team.on_roster(ADMINS).is_none(),
        "a refused shim registered nothing"
    );

    let shim = team.shim(BOOTSTRAP, ADMINS);
    let sent = team.ok(
        Some(BOOTSTRAP),
        &["send", ADMINS, "hello over veth", "--json"],
    );
    assert_eq!(sent["state"], "pushed", "{sent}");
    let push = shim.push_with("hello over veth");
    assert_eq!(push["params"]["meta"]["message_id"], sent["message"]["id"]);
    assert_eq!(sent["message"]["from"], "op:tester", "{sent}");
}

// Proves agent tokens across the veth with TLS: the admin (the bootstrap
// token) makes agent tokens for alice and bob, each shown once with its
// secret; alice's shim, with alice's token, links and takes a person's
// push; alice's token speaks for alice; bob's token acting for alice's
// session (sending as it, reading its inbox) is 403 `forbidden_session`
// and stores nothing, and its shim cannot link as her; once bob's token is revoked it is 401, and alice's
// still works.
#[test]
fn over_veth_an_agent_token_acts_only_for_its_own_sessions() {
    let team = Team::start();
    let admin = Some(BOOTSTRAP);

    let mut secrets = Vec::new();
    for name in ["alice", "bob"] {
        let made = team.ok(
            admin,
            &["token", "create", name, "--scope", "agent", "--json"],
        );
        assert_eq!(made["name"], name, "{made}");
        assert_eq!(made["scope"], "agent", "{made}");
        let secret = made["secret"]
            .as_str()
            .expect("the secret, once")
            .to_string();
        assert!(secret.len() >= 32, "a secret worth the name: {made}");
        assert_ne!(secret, BOOTSTRAP);
        secrets.push(secret);
    }
    let (alice, bob) = (secrets[0].as_str(), secrets[1].as_str());
    assert_ne!(alice, bob);
    let listed = team.ok(admin, &["token", "list", "--json"]);
    let names: Vec<&str> = listed["tokens"]
        .as_array()
        .expect("a list of tokens")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"alice") && names.contains(&"bob"),
        "{listed}"
    );
    assert!(
        !listed.to_string().contains(alice),
        "a list shows no secret: {listed}"
    );

    // Alice's shim links with her token; a person's send to her is pushed.
    let shim = team.shim(alice, ALICE);
    let sent = team.ok(admin, &["send", ALICE, "hello over veth", "--json"]);
    assert_eq!(sent["state"], "pushed", "{sent}");
    let push = shim.push_with("hello over veth");
    assert_eq!(push["params"]["meta"]["message_id"], sent["message"]["id"]);

    // Her own token speaks for her.
    let own = team.ok(
        Some(alice),
        &[
            "send",
            "--as",
            ALICE,
            "op:tester",
            "from alice herself",
            "--json",
        ],
    );
    assert_eq!(own["message"]["from"], ALICE, "{own}");

    // Bob's does not: 403, by the CLI and raw, and nothing is stored.
    let error = team.refused(
        Some(bob),
        &["send", "--as", ALICE, "op:tester", "x from bob", "--json"],
    );
    assert_eq!(error["code"], "forbidden_session", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("token \"bob\" may act only for the sessions it registered"),
        "{error}"
    );
    let (status, body) = team.raw(
        Some(bob),
        "POST",
        "/api/v1/messages",
        Some(&json!({"as": ALICE, "to": "op:tester", "body": "raw x from bob"})),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden_session", "{body}");
    let error = team.refused(Some(bob), &["inbox", "--as", ALICE, "--all", "--json"]);
    assert_eq!(error["code"], "forbidden_session", "{error}");
    let mut bobs_shim = team.muster(Some(bob), &["mcp"]);
    bobs_shim
        .env("MUSTER_SESSION_ID", ALICE)
        .stderr(Stdio::null());
    let (text, is_error) = shim_whoami(bobs_shim);
    assert!(is_error, "bob's shim linked as alice: {text}");
    assert!(
        text.contains("may act only for the sessions it registered"),
        "{text}"
    );
    let alices = team.on_roster(ALICE).expect("alice is on the roster");
    assert_eq!(
        alices["link_up"], true,
        "alice's own link is still up: {alices}"
    );
    let inbox = team.ok(admin, &["inbox", "--as", "op:tester", "--all", "--json"]);
    let from_alice: Vec<&str> = inbox["messages"]
        .as_array()
        .expect("an inbox lists messages")
        .iter()
        .filter(|m| m["from"] == ALICE)
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(from_alice, ["from alice herself"], "{inbox}");

    // Revoked, bob's token is 401; alice's still works.
    team.ok(Some(bob), &["roster", "--json"]);
    team.ok(admin, &["token", "revoke", "bob", "--json"]);
    let error = team.refused(Some(bob), &["roster", "--json"]);
    assert_eq!(error["code"], "unauthorized", "{error}");
    let (status, body) = team.raw(Some(bob), "GET", "/api/v1/roster", None);
    assert_eq!(status, 401, "{body}");
    let listed = team.ok(admin, &["token", "list", "--json"]);
    let revoked = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bob")
        .cloned()
        .unwrap_or_else(|| panic!("bob is still listed: {listed}"));
    assert!(revoked["revoked_at"].is_u64(), "{revoked}");
    let again = team.ok(
        Some(alice),
        &[
            "send",
            "--as",
            ALICE,
            "op:tester",
            "alice after the revoke",
            "--json",
        ],
    );
    assert_eq!(again["message"]["from"], ALICE, "{again}");
    drop(shim);
}
