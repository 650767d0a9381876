//! muster's opencode plugin (crates/install/assets/opencode-plugin.js) run by
//! node, without opencode: a small driver imports it, calls its hooks as
//! opencode would, and logs every fetch the plugin makes, so a test can see
//! which daemon of a `MUSTER_URL` list each call went to. opencode itself
//! runs the plugin in opencode.rs.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

const PLUGIN: &str = include_str!("../../install/assets/opencode-plugin.js");

/// Logs each fetch (its URL) as a JSON line, then plays a session's start
/// and one tool's end through the plugin's hooks, says `done`, and stays
/// (the wake stream, if any, held open) until killed.
const DRIVER: &str = r#"
// Alive as opencode is: Node's fetch of a connection closed under it may
// settle only at the plugin's timeout, whose timer alone keeps nothing alive.
setInterval(() => {}, 60000);
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) => {
  console.log(JSON.stringify({ fetch: String(url) }));
  return realFetch(url, init);
};
const { MusterPlugin } = await import(process.env.PLUGIN_PATH);
const client = { session: { prompt: async () => ({}), status: async () => ({ data: {} }) } };
const hooks = await MusterPlugin({ client, directory: process.env.PROJECT_DIR });
const id = process.env.SESSION;
await hooks.event({ event: { type: "session.created", properties: { info: { id } } } });
await hooks["tool.execute.after"]({ sessionID: id, tool: "bash" }, { output: "ok" });
console.log(JSON.stringify({ done: true }));
"#;

/// The driver running the plugin with `MUSTER_URL` = `list`; its log lines.
struct Driven {
    child: Child,
    lines: mpsc::Receiver<Value>,
    project: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Driven {
    fn start(list: &str, session: &str, env: &[(&str, &str)]) -> Driven {
        let dir = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("muster.mjs");
        std::fs::write(&plugin, PLUGIN).unwrap();
        let driver = dir.path().join("driver.mjs");
        std::fs::write(&driver, DRIVER).unwrap();
        let mut child = Command::new("node")
            .arg(&driver)
            .env("PLUGIN_PATH", &plugin)
            .env("PROJECT_DIR", project.path())
            .env("SESSION", session)
            .env("MUSTER_URL", list)
            .env_remove("MUSTER_TOKEN")
            .env_remove("MUSTER_WAKE")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is needed to run the opencode plugin");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap_or(Value::String(line)));
            }
        });
        Driven {
            child,
            lines,
            project,
            _dir: dir,
        }
    }

    /// The URLs the plugin fetched until the driver said `done` (within 10 s).
    fn fetches_until_done(&self) -> Vec<String> {
        let mut fetched = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .expect("the driver said done within 10 s");
            if line["done"] == true {
                return fetched;
            }
            fetched.push(
                line["fetch"]
                    .as_str()
                    .unwrap_or_else(|| panic!("driver said {line}"))
                    .to_string(),
            );
        }
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address nothing listens on: connecting is refused at once.
fn refused_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// An address that takes every connection and closes it unanswered, as a
/// daemon that dies with the request in hand does.
fn hangup_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    url
}

/// The session `id` on `d`'s roster (Null if absent).
fn on_roster(d: &TestDaemon, id: &str) -> Value {
    let (status, roster) = d.get("/api/v1/roster");
    assert_eq!(status, 200, "{roster}");
    roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The hook calls among `fetched` (the wake stream's run beside them).
fn hook_calls(fetched: &[String]) -> Vec<String> {
    fetched
        .iter()
        .filter(|u| u.contains("/hook/"))
        .cloned()
        .collect()
}

// Proves the plugin reads MUSTER_URL as a list: with a refused first
// address (and spaces around the comma), its first hook goes there, then to
// the live daemon, which takes it (with that daemon's local key: it takes
// loopback requests only with it) and puts the session on its roster; the
// next hook goes straight to the daemon that answered; and the wake stream
// passes over the dead address too, so the live daemon can wake the session.
#[test]
fn the_plugin_passes_over_a_refused_address_and_keeps_to_the_one_that_answered() {
    let d = TestDaemon::start(&[]);
    let dead = refused_address();
    let id = "plugin-list-1";
    let driven = Driven::start(&format!("{dead} , {}/", d.url), id, &[]);
    let fetched = driven.fetches_until_done();
    assert_eq!(
        hook_calls(&fetched),
        [
            format!("{dead}/hook/session-start?harness=opencode"),
            format!("{}/hook/session-start?harness=opencode", d.url),
            format!("{}/hook/post-tool-use?harness=opencode", d.url),
        ]
    );
    let me = on_roster(&d, id);
    assert_eq!(
        me["cwd"],
        driven.project.path().to_str().unwrap(),
        "the live daemon has the session: {me}"
    );
    let woken = wait_until(Duration::from_secs(10), || {
        on_roster(&d, id)["wake"] == "opencode"
    });
    assert!(
        woken.is_some(),
        "the wake stream reached the live daemon: {}",
        on_roster(&d, id)
    );
}

// Proves a request a daemon took never goes to the next address: the first
// address takes each connection and closes it unanswered, so both hooks go
// there only (each failing open at its 2 s bound), and the live daemon after
// it never hears of the session.
#[test]
fn the_plugin_never_sends_a_taken_request_to_the_next_address() {
    let d = TestDaemon::start(&[]);
    let hangup = hangup_address();
    let id = "plugin-list-2";
    let driven = Driven::start(
        &format!("{hangup},{}", d.url),
        id,
        &[("MUSTER_WAKE", "off")],
    );
    assert_eq!(
        driven.fetches_until_done(),
        [
            format!("{hangup}/hook/session-start?harness=opencode"),
            format!("{hangup}/hook/post-tool-use?harness=opencode"),
        ]
    );
    assert_eq!(on_roster(&d, id), Value::Null);
}

// Proves the plugin sends a team daemon's token from MUSTER_TOKEN_FILE
// (with no local key to fall back on): its session is registered, and
// belongs to that token.
#[test]
fn the_plugin_sends_the_token_from_its_file() {
    let boot = "bootstrap-for-the-plugin";
    let d = TestDaemon::start(&["--token", boot]);
    let nokey = tempfile::tempdir().unwrap();
    let made = muster_cmd(&d.url)
        .env("MUSTER_TOKEN", boot)
        .args(["token", "create", "oc-box", "--scope", "agent", "--json"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: Value = serde_json::from_slice(&made.stdout).unwrap();
    let file = nokey.path().join("oc.token");
    std::fs::write(&file, format!("{}\n", made["secret"].as_str().unwrap())).unwrap();
    let driven = Driven::start(
        &d.url,
        "oc-token-1",
        &[
            ("MUSTER_TOKEN_FILE", file.to_str().unwrap()),
            ("XDG_RUNTIME_DIR", nokey.path().to_str().unwrap()),
            ("TMPDIR", nokey.path().to_str().unwrap()),
        ],
    );
    driven.fetches_until_done();
    let session = on_roster(&d, "oc-token-1");
    assert_eq!(session["owner"], made["id"], "{session}");
}
