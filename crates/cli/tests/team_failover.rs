//! Failover: clients given several daemon addresses (`MUSTER_URL=a,b,c`).
//! The CLI and the hook client pass over an address that takes no
//! connection (refused, or one whose connects hang) and never over one
//! that took the request; shims of a daemon killed with kill -9 re-link to
//! the next daemon of their list within the grace window while 16 senders
//! send through all three daemons of a team on one real PostgreSQL, and
//! every acknowledged send is stored exactly once.

mod common;
#[path = "support/peer_shim.rs"]
mod peer_shim;
#[path = "support/postgres_db.rs"]
mod postgres_db;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use peer_shim::PeerShim;
use postgres_db::FreshDatabase;
use serde_json::{json, Value};

/// An address nothing listens on: connecting is refused at once.
fn refused_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// An address whose connects hang: a listener that accepts nothing, its
/// accept queue (backlog 0) filled, so the kernel drops every new SYN, as
/// for a host that is down or a firewall that drops.
struct Blackhole {
    url: String,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

fn blackhole() -> Blackhole {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) on a socket this process owns, already listening:
    // it only lowers the backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    let full = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => queued.push(stream),
            Err(_) => break true,
        }
        if queued.len() > 8 {
            break false;
        }
    };
    assert!(
        full,
        "the accept queue never filled ({} queued)",
        queued.len()
    );
    Blackhole {
        url: format!("http://{addr}"),
        _listener: listener,
        _queued: queued,
    }
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

/// `muster hook <event>` with MUSTER_URL `list`: its stdout, stderr and
/// how long it took.
fn hook_through(list: &str, event: &str, payload: &Value) -> (String, String, Duration) {
    let started = Instant::now();
    let mut child = muster_cmd(list)
        .args(["hook", event])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muster hook");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "a hook always exits 0");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (text(out.stdout), text(out.stderr), took)
}

/// `muster <args>` with MUSTER_URL `list`.
fn muster_through(list: &str, args: &[&str]) -> Output {
    muster_cmd(list).args(args).output().expect("run muster")
}

/// How many messages in `who`'s mail on `d` have `body`.
fn stored_with_body(d: &TestDaemon, who: &str, body: &str) -> usize {
    let (status, inbox) = d.get(&format!("/api/v1/inbox?as={who}&all=true"));
    assert_eq!(status, 200, "{inbox}");
    inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["body"] == body)
        .count()
}

/// Registers `id` on `d` as a session without a link (kept by its hooks).
fn register(d: &TestDaemon, id: &str) {
    let (status, v) = d.post_json(
        "/api/v1/sessions",
        &json!({"id": id, "harness": "claude-code", "cwd": "/tmp"}),
    );
    assert_eq!(status, 200, "{v}");
}

// Proves the CLI and the hook client pass over a dead first address to the
// live daemon after it: one that refuses, and one whose connects hang (the
// hook still answers within its 2 s bound, as each connect is bounded);
// the hook hands over mail and the send through the list is stored once;
// `muster status` and `muster doctor` name the address that answered.
#[test]
fn the_cli_and_hook_pass_over_a_dead_first_address() {
    let d = TestDaemon::start(&[]);
    register(&d, "reader");
    let hole = blackhole();
    for (n, dead) in [refused_address(), hole.url.clone()].iter().enumerate() {
        let list = format!("{dead},{}", d.url);
        let hooky = format!("hooky-{n}");
        let turn = payload(&hooky, "UserPromptSubmit");
        let (out, err, took) = hook_through(&list, "session-start", &turn);
        assert_eq!(err, "", "stdout {out:?}");
        assert!(took < Duration::from_secs(2), "session-start took {took:?}");
        let body = format!("mail for the hook {n}");
        let sent = d.muster_json(&["send", &hooky, &body, "--as", "reader", "--json"]);
        assert_eq!(sent["state"], "queued", "{sent}");
        let (out, err, took) = hook_through(&list, "prompt-submit", &turn);
        assert_eq!(err, "");
        assert!(took < Duration::from_secs(2), "prompt-submit took {took:?}");
        assert!(
            context_of(&out).is_some_and(|c| c.contains(&body)),
            "the live daemon's answer came back: {out:?}"
        );

        let body = format!("sent through a list {n}");
        let out = muster_through(&list, &["send", "reader", &body, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(sent["message"]["body"], body.as_str());
        assert_eq!(stored_with_body(&d, "reader", &body), 1);

        if dead == &hole.url {
            continue; // each of the CLI's tries below would wait out a 3 s connect again
        }
        let out = muster_through(&list, &["status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines()
                .next()
                .unwrap_or("")
                .ends_with(&format!(" at {}", d.url)),
            "{text}"
        );
        let out = muster_through(&list, &["doctor", "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["url"], list.as_str());
        let reachable = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "daemon reachable")
            .cloned();
        assert_eq!(
            reachable.map(|c| (c["ok"].clone(), c["detail"].clone())),
            Some((json!(true), json!(format!("{} answers /healthz", d.url))))
        );
    }
    let out = muster_through(&format!("{},{}", refused_address(), hole.url), &["roster"]);
    assert_eq!(out.status.code(), Some(3), "no daemon reachable");
}

// Proves only a failed connection moves a client on: a daemon that
// answered with an error, or took the request and closed without an
// answer, is the end of it — the next daemon of the list (which would
// have taken it) never gets the send, from the CLI or the hook.
#[test]
fn a_request_a_daemon_took_never_goes_to_the_next() {
    let first = TestDaemon::start(&[]);
    let second = TestDaemon::start(&[]);
    register(&second, "only-on-second");
    let list = format!("{},{}", first.url, second.url);
    let out = muster_through(&list, &["send", "only-on-second", "refused by the first"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only-on-second"), "the first's refusal: {err}");
    assert_eq!(
        stored_with_body(&second, "only-on-second", "refused by the first"),
        0
    );

    let hangup = hangup_address();
    let list = format!("{hangup},{}", second.url);
    let out = muster_through(&list, &["send", "only-on-second", "lost at the first"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the muster daemon at {hangup} (")),
        "{err}"
    );
    assert_eq!(
        stored_with_body(&second, "only-on-second", "lost at the first"),
        0
    );
    let (out, err, _) = hook_through(
        &list,
        "session-start",
        &payload("hook-lost", "SessionStart"),
    );
    assert_eq!(out, "");
    assert!(
        err.starts_with(&format!("muster hook: daemon unreachable at {hangup} (")),
        "{err}"
    );
    assert!(!second.roster_ids().contains(&"hook-lost".to_string()));
}

/// The grace window the team's daemons give a session whose link dropped.
const STALE_AFTER: Duration = Duration::from_secs(15);

/// A shim's `ws://` address for the daemon at `d`.
fn ws(d: &TestDaemon) -> String {
    format!("{}/ws", d.url.replacen("http://", "ws://", 1))
}

/// What the senders got: each acknowledged send's body and id, and the
/// bodies of the sends to the killed daemon that got no answer.
#[derive(Default)]
struct Sent {
    acked: HashMap<String, String>,
    unanswered: HashSet<String>,
}

/// 16 senders, each sending `per_sender` messages in turn through daemons
/// 0, 1, 2 of `urls` (from a different one each), to `to` in turn. Only a
/// send to daemon 0 once `killed` is set may fail, and only in transport;
/// any other failure, or an answer other than 200, fails the test.
fn send_through_all(
    urls: &[String; 3],
    senders: &[String],
    to: &[String],
    per_sender: usize,
    killed: &Arc<AtomicBool>,
    answered: &Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<Sent>> {
    let keys: Vec<String> = urls.iter().map(|u| key_for(u)).collect();
    senders
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let (urls, keys, to, from) = (urls.clone(), keys.clone(), to.to_vec(), from.clone());
            let (killed, answered) = (killed.clone(), answered.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut sent = Sent::default();
                for k in 0..per_sender {
                    let d = (i + k) % 3;
                    let body = format!("{from} m{k:03}");
                    let request = json!({"as": from, "to": to[(i + k) % to.len()], "body": body});
                    let answer = client
                        .post(format!("{}/api/v1/messages", urls[d]))
                        .header(muster_daemon::local_key::HEADER, &keys[d])
                        .json(&request)
                        .send();
                    match answer {
                        Ok(resp) => {
                            let status = resp.status();
                            let v: Value = resp.json().unwrap_or(Value::Null);
                            assert_eq!(status, 200, "send {body:?} through daemon {d}: {v}");
                            let id = v["message"]["id"].as_str().unwrap().to_string();
                            sent.acked.insert(body, id);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        // Refused, or cut off with the request in hand.
                        Err(_) if d == 0 && killed.load(Ordering::SeqCst) => {
                            sent.unanswered.insert(body);
                        }
                        Err(e) => panic!("send {body:?} through daemon {d} failed: {e}"),
                    }
                }
                sent
            })
        })
        .collect()
}

/// Whether daemon `d` shows every one of `ids`, and every one of `linked`
/// with its link up; what is missing, if not.
fn missing_on(d: &TestDaemon, ids: &[String], linked: &[String]) -> Vec<String> {
    let roster = d.get("/api/v1/roster").1;
    let sessions = roster["sessions"].as_array().cloned().unwrap_or_default();
    let up = |id: &str| {
        sessions
            .iter()
            .any(|s| s["id"] == id && s["link_up"] == true)
    };
    let present = |id: &str| sessions.iter().any(|s| s["id"] == id);
    let mut missing: Vec<String> = ids.iter().filter(|id| !present(id)).cloned().collect();
    missing.extend(
        linked
            .iter()
            .filter(|id| !up(id))
            .map(|id| format!("{id} (link)")),
    );
    missing
}

// Proves issue 10's failover: three daemons on one fresh database, two
// shims on each, each shim's MUSTER_URL listing all three from its own
// daemon; 16 senders send through all three while daemon A is killed with
// kill -9 a third of the way in. Every acknowledged send is stored exactly
// once (no id twice, no body twice; the only stored sends not acknowledged
// are ones A took and died before answering); A's shims re-link to the next
// daemon of their lists (B for one, C for the other) well within the grace
// window, the others stay linked where they were; through the grace
// window and past it, B and C show every session, and every shim linked;
// and mail sent through C to the shim that moved from A to B is pushed live.
#[test]
fn a_killed_daemons_shims_relink_elsewhere_and_no_send_is_stored_twice() {
    let db = FreshDatabase::new("failover");
    let stale = format!("{}s", STALE_AFTER.as_secs());
    let flags = [
        "--store",
        &db.url(),
        "--stale-after",
        &stale,
        "--sweep-interval",
        "1s",
    ];
    let mut ds: Vec<TestDaemon> = (0..3).map(|_| TestDaemon::start(&flags)).collect();
    let urls: [String; 3] = [ds[0].url.clone(), ds[1].url.clone(), ds[2].url.clone()];
    let list = |order: [usize; 3]| order.map(|i| urls[i].as_str()).join(",");

    // Each shim's own daemon first, then the others, in both orders.
    let plan: [(&str, [usize; 3]); 6] = [
        ("fo-a-0", [0, 1, 2]),
        ("fo-a-1", [0, 2, 1]),
        ("fo-b-0", [1, 2, 0]),
        ("fo-b-1", [1, 0, 2]),
        ("fo-c-0", [2, 0, 1]),
        ("fo-c-1", [2, 1, 0]),
    ];
    let shims: Vec<PeerShim> = plan
        .iter()
        .map(|(id, order)| {
            let shim = PeerShim::start_listed(&ds[order[0]], &list(*order), id);
            let (_, daemon) = shim.next_link(Duration::from_secs(5)).expect("linked");
            assert_eq!(
                daemon,
                ws(&ds[order[0]]),
                "{id} linked to its own daemon first"
            );
            shim
        })
        .collect();
    let senders: Vec<String> = (0..16).map(|i| format!("fo-s-{i:02}")).collect();
    for (i, id) in senders.iter().enumerate() {
        register(&ds[i % 3], id);
    }
    let shim_ids: Vec<String> = plan.iter().map(|(id, _)| id.to_string()).collect();
    let everyone: Vec<String> = senders.iter().chain(&shim_ids).cloned().collect();
    let seen = wait_until(Duration::from_secs(10), || {
        ds.iter()
            .all(|d| missing_on(d, &everyone, &shim_ids).is_empty())
    });
    assert!(
        seen.is_some(),
        "every daemon shows every session before the kill"
    );

    // Sends through all three; A killed a third of the way in.
    let per_sender = 45;
    let (killed, answered) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let workers = send_through_all(&urls, &senders, &shim_ids, per_sender, &killed, &answered);
    let third = senders.len() * per_sender / 3;
    let reached = wait_until(Duration::from_secs(30), || {
        answered.load(Ordering::Relaxed) >= third
    });
    assert!(
        reached.is_some(),
        "a third of the sends answered within 30 s"
    );
    killed.store(true, Ordering::SeqCst);
    let kill_started = Instant::now();
    ds[0].kill9();

    // A's shims move on, each to the next daemon of its list.
    let mut relinked = Vec::new();
    for (shim, next) in [(&shims[0], &ds[1]), (&shims[1], &ds[2])] {
        let (at, daemon) = shim
            .next_link(STALE_AFTER)
            .unwrap_or_else(|| panic!("{} did not re-link within {STALE_AFTER:?}", shim.id));
        assert_eq!(
            daemon,
            ws(next),
            "{} re-linked to the next of its list",
            shim.id
        );
        let took = at.saturating_duration_since(kill_started);
        assert!(took < STALE_AFTER, "{} re-linked after {took:?}", shim.id);
        relinked.push(took);
    }
    eprintln!("A's shims re-linked {relinked:?} after the kill began");

    let results: Vec<Sent> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let mut sent = Sent::default();
    for r in results {
        sent.acked.extend(r.acked);
        sent.unanswered.extend(r.unanswered);
    }
    assert_eq!(
        sent.acked.len() + sent.unanswered.len(),
        senders.len() * per_sender
    );
    assert!(
        !sent.unanswered.is_empty(),
        "sends to A failed after the kill"
    );
    assert!(sent.acked.len() > third, "sends went on through B and C");

    // Stored exactly once: no id or body twice, every acknowledged send
    // under the id it was acknowledged with.
    let rows = db.sql("SELECT id || ' ' || body FROM messages WHERE body LIKE 'fo-s-%'");
    let stored: Vec<(String, String)> = rows
        .lines()
        .map(|l| {
            let (id, body) = l.split_once(' ').unwrap();
            (id.to_string(), body.to_string())
        })
        .collect();
    let ids: HashSet<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    let bodies: HashMap<&str, &str> = stored
        .iter()
        .map(|(i, b)| (b.as_str(), i.as_str()))
        .collect();
    assert_eq!(ids.len(), stored.len(), "an id stored twice");
    assert_eq!(bodies.len(), stored.len(), "a send stored twice");
    for (body, id) in &sent.acked {
        assert_eq!(bodies.get(body.as_str()), Some(&id.as_str()), "{body}");
    }
    // Sends A took and died before answering: stored, never acknowledged.
    let in_doubt: Vec<&str> = bodies
        .keys()
        .filter(|b| !sent.acked.contains_key(**b))
        .copied()
        .collect();
    for body in &in_doubt {
        assert!(sent.unanswered.contains(*body), "{body} stored, never sent");
    }
    assert_eq!(stored.len(), sent.acked.len() + in_doubt.len());
    eprintln!(
        "{} sends acknowledged and stored once; {} to A unanswered, {} of them stored by A before it died",
        sent.acked.len(),
        sent.unanswered.len(),
        in_doubt.len()
    );

    // Through the grace window and past it: nobody swept, every shim linked,
    // and only A's shims re-linked.
    let until = kill_started + STALE_AFTER + Duration::from_secs(3);
    while Instant::now() < until {
        for d in &ds[1..] {
            let missing = missing_on(d, &everyone, &shim_ids);
            assert!(missing.is_empty(), "{} lost {missing:?}", d.url);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for shim in &shims[2..] {
        assert_eq!(
            shim.next_link(Duration::ZERO),
            None,
            "{} stayed linked",
            shim.id
        );
    }

    // Mail through C to the shim that moved from A to B is pushed live.
    let sent = ds[2].muster_json(&[
        "send",
        "fo-a-0",
        "pushed after failover",
        "--as",
        "fo-s-00",
        "--json",
    ]);
    assert_eq!(sent["state"], "pushed", "{sent}");
    let pushed = shims[0].channel_with("pushed after failover", Duration::from_secs(5));
    assert!(pushed.is_some(), "the push reached fo-a-0 on B");
}
