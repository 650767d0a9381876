//! The web dashboard as its person uses it, in the real headless Chromium
//! against a real `muster serve`: signed in by the link `muster dashboard`
//! prints, it sends mail as the operator that reaches a hook-only session's
//! next hook, shows an agent's message (sent with the CLI's `--as`) on the
//! open page without a reload, releases a reservation, renders every peer
//! text (bodies, statuses, reasons) as text, and pages history, expands
//! threads, searches and shows a session's page with its activity over time.
//!
//! With `MUSTER_DASHBOARD_SHOTS=<dir>` set, each test leaves a screenshot
//! of every page it visits there (to look at, not asserted).

#[path = "support/chromium.rs"]
mod chromium;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromium::{Chromium, Page};
use common::*;
use serde_json::{json, Value};

/// How long the page may take to show something.
const SHOWS: Duration = Duration::from_secs(20);
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;

/// A throwaway git checkout: a directory holding `.git/HEAD`.
fn checkout(tmp: &tempfile::TempDir) -> PathBuf {
    let root = tmp.path().canonicalize().unwrap().join("repo");
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    root
}

/// A hook payload for `event` from a session working in `cwd`.
fn hook_payload(id: &str, event: &str, cwd: &Path) -> Value {
    let mut p = payload(id, event);
    p["cwd"] = json!(cwd);
    p
}

/// A session that only has hooks (no shim), started in `cwd`: its nickname.
fn hooked_session(d: &TestDaemon, id: &str, cwd: &Path) -> String {
    d.hook("session-start", &hook_payload(id, "SessionStart", cwd));
    let (status, v) = d.get(&format!("/api/v1/sessions/{id}"));
    assert_eq!(status, 200, "{v}");
    v["session"]["nickname"].as_str().unwrap().to_string()
}

/// `muster <args>`, asserting it succeeded; its stdout.
fn muster_ok(d: &TestDaemon, args: &[&str]) -> String {
    let out = d.muster(args);
    assert!(
        out.status.success(),
        "muster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The browser, signed in with the link `muster dashboard` printed, on a
/// page showing the overview with `nickname` on the roster.
fn signed_in(d: &TestDaemon, nickname: &str) -> (Chromium, Page) {
    let link = d.muster_json(&["dashboard", "--json"]);
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{}/login?code=", d.url)), "{url}");
    let browser = Chromium::launch();
    let page = browser.open(&url, WIDTH, HEIGHT);
    let shown = browser.eventually(
        &page,
        &format!("document.getElementById('roster').textContent.includes({nickname:?})"),
        SHOWS,
    );
    assert!(
        shown.is_some(),
        "signed in, the overview shows {nickname}: {}",
        browser.text(&page)
    );
    assert_eq!(browser.eval(&page, "location.pathname"), json!("/"));
    (browser, page)
}

/// Goes to a route of the page (a hash change: no reload) and waits for `ready`.
fn go(browser: &Chromium, page: &Page, hash: &str, ready: &str) {
    browser.eval(page, &format!("location.hash = {hash:?}, true"));
    assert!(
        browser.eventually(page, ready, SHOWS).is_some(),
        "{hash}: {ready} never held: {}",
        browser.text(page)
    );
}

/// `document.getElementById(id).textContent` includes `text`.
fn has_text(id: &str, text: &str) -> String {
    format!("document.getElementById({id:?}).textContent.includes({text:?})")
}

/// A screenshot of the page as `name`.png, when MUSTER_DASHBOARD_SHOTS names a directory.
fn shot(browser: &Chromium, page: &Page, name: &str) {
    let Some(dir) = std::env::var_os("MUSTER_DASHBOARD_SHOTS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Let the last redraw land.
    std::thread::sleep(Duration::from_millis(400));
    browser.screenshot(page, &dir.join(format!("{name}.png")));
}

// Proves the page works as the operator's place to work: signed in by the
// one-time link, a message composed on a session's page reaches that
// hook-only session's next hook, a message its agent sends with the CLI
// (`--as`) appears on the open page without a reload, and a reservation
// is released from the overview.
#[test]
fn the_dashboard_sends_shows_live_and_releases_in_chromium() {
    let started = Instant::now();
    let d = TestDaemon::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let repo = checkout(&tmp);
    let id = "dash-hooked-0001";
    let nick = hooked_session(&d, id, &repo);
    let file = repo.join("src/lib.rs");
    muster_ok(
        &d,
        &[
            "reserve",
            file.to_str().unwrap(),
            "--as",
            id,
            "--reason",
            "parser rewrite",
        ],
    );

    let (browser, page) = signed_in(&d, &nick);
    assert!(
        browser
            .eventually(&page, &has_text("reservations", "parser rewrite"), SHOWS)
            .is_some(),
        "the overview lists the reservation: {}",
        browser.text(&page)
    );
    shot(&browser, &page, "overview");
    // Anything that reloads the page loses this.
    browser.eval(&page, "window.__same_page = 'kept', true");

    // A message from the compose box on the session's page.
    go(
        &browser,
        &page,
        &format!("#/session/{id}"),
        &format!(
            "{} && document.getElementById('to').value === {nick:?}",
            has_text("session-facts", id)
        ),
    );
    let body = "please rebase onto main before you push";
    browser.eval(
        &page,
        &format!(
            "document.getElementById('body').value = {body:?}, document.getElementById('send').click(), true"
        ),
    );
    let sent = browser.eventually(&page, &has_text("sent", "sent (queued)"), SHOWS);
    assert!(
        sent.is_some(),
        "the page says it was sent: {}",
        browser.text(&page)
    );
    let hook = d.hook(
        "prompt-submit",
        &hook_payload(id, "UserPromptSubmit", &repo),
    );
    let context = context_of(&hook).unwrap_or_default();
    assert!(
        context.contains(body),
        "the session's next hook carries the page's message: {hook}"
    );

    // The agent answers from its shell (the CLI with --as): the open page shows it, no reload.
    let answer = "rebased; pushing in a minute";
    let status = d.status();
    let operator = format!("op:{}", status["operator"].as_str().unwrap());
    let sent_at = Instant::now();
    muster_ok(&d, &["send", &operator, answer, "--as", id]);
    let live = browser.eventually(&page, &has_text("session-mail", answer), SHOWS);
    assert!(
        live.is_some(),
        "the agent's message shows on the session's page: {}",
        browser.text(&page)
    );
    println!(
        "an agent's message reached the open page in {:?}",
        sent_at.elapsed()
    );
    assert_eq!(
        browser.eval(&page, "window.__same_page"),
        json!("kept"),
        "not reloaded"
    );
    shot(&browser, &page, "session");

    // Released from the overview (two clicks: the first asks to be sure).
    go(
        &browser,
        &page,
        "#/",
        &has_text("reservations", "parser rewrite"),
    );
    assert!(
        browser
            .eventually(&page, &has_text("events", answer), SHOWS)
            .is_some(),
        "the live events list shows the agent's message: {}",
        browser.text(&page)
    );
    let click = "document.querySelector('#reservations button').click(), true";
    browser.eval(&page, click);
    assert_eq!(
        browser.eval(
            &page,
            "document.querySelector('#reservations button').textContent"
        ),
        json!("release: sure?")
    );
    browser.eval(&page, click);
    assert!(
        browser
            .eventually(&page, &has_text("reservations", "no reservations"), SHOWS)
            .is_some(),
        "the released claim leaves the page: {}",
        browser.text(&page)
    );
    let (status, v) = d.get("/api/v1/reservations");
    assert_eq!(status, 200);
    assert_eq!(v["reservations"], json!([]), "released in the daemon");
    assert_eq!(browser.eval(&page, "window.__same_page"), json!("kept"));
    let console = browser.console.lock().unwrap().clone();
    assert!(
        !console.iter().any(|l| l.starts_with("exception")),
        "{console:?}"
    );
    drop(browser);
    println!("took {:?}", started.elapsed());
}

/// Peer text meant to run as markup or script if a page ever parsed it.
const HOSTILE: [&str; 3] = [
    "<img src=x onerror=\"window.__pwned='img'\">",
    "</script><script>window.__pwned='script'</script>",
    "<iframe src=\"javascript:top.__pwned='iframe'\"></iframe><b>bold?</b>",
];

/// No element the hostile text would make exists under `main`, and nothing ran.
const NOTHING_RAN: &str =
    "document.querySelectorAll('main img, main script, main iframe, main b').length === 0 \
     && window.__pwned === undefined";

// Proves every peer text renders as literal text and runs nothing:
// message bodies (in history, live, in a thread), a session's status and a
// reservation's reason, on the overview, the messages page and the
// session's page.
#[test]
fn hostile_peer_text_renders_as_text_in_chromium() {
    let started = Instant::now();
    let d = TestDaemon::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let repo = checkout(&tmp);
    let id = "dash-hostile-0001";
    let nick = hooked_session(&d, id, &repo);
    let resp = d
        .http()
        .patch(format!("{}/api/v1/sessions/{id}", d.url))
        .json(&json!({"status": HOSTILE[2]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    muster_ok(
        &d,
        &[
            "reserve",
            repo.join("src/x.rs").to_str().unwrap(),
            "--as",
            id,
            "--reason",
            HOSTILE[0],
        ],
    );
    let operator = format!("op:{}", d.status()["operator"].as_str().unwrap());
    // One before the page opens (history), replied to (a thread).
    let before = d.muster_json(&["--json", "send", &operator, HOSTILE[1], "--as", id]);
    let root_id = before["message"]["id"].as_str().unwrap().to_string();
    let (status, v) = d.post_json(
        "/api/v1/messages",
        &json!({"to": id, "body": HOSTILE[0], "reply_to": root_id}),
    );
    assert_eq!(status, 200, "{v}");

    let (browser, page) = signed_in(&d, &nick);
    for text in [HOSTILE[0], HOSTILE[2]] {
        assert!(
            browser
                .eventually(
                    &page,
                    &format!("document.querySelector('main').textContent.includes({text:?})"),
                    SHOWS
                )
                .is_some(),
            "the overview shows {text:?} as text: {}",
            browser.text(&page)
        );
    }
    assert_eq!(browser.eval(&page, NOTHING_RAN), json!(true));
    shot(&browser, &page, "hostile-overview");

    // Live, on the messages page.
    go(
        &browser,
        &page,
        "#/messages",
        "!document.getElementById('view-messages').hidden",
    );
    muster_ok(&d, &["send", &operator, HOSTILE[0], "--as", id]);
    muster_ok(&d, &["send", &operator, HOSTILE[2], "--as", id]);
    for text in HOSTILE {
        assert!(
            browser
                .eventually(&page, &has_text("messages", text), SHOWS)
                .is_some(),
            "the messages page shows {text:?} as text: {}",
            browser.text(&page)
        );
    }
    assert_eq!(browser.eval(&page, NOTHING_RAN), json!(true));

    // The session's page: its status, its reservation's reason, its mail and a thread.
    go(
        &browser,
        &page,
        &format!("#/session/{id}"),
        &format!(
            "{} && {}",
            has_text("session-facts", HOSTILE[2]),
            has_text("session-reservations", HOSTILE[0])
        ),
    );
    let expand = format!(
        "[...document.querySelectorAll('#session-mail .msg')].find((m) => m.dataset.id === {root_id:?})\
         .querySelector('button').click(), true"
    );
    assert!(
        browser
            .eventually(&page, &has_text("session-mail", HOSTILE[1]), SHOWS)
            .is_some(),
        "the session's mail: {}",
        browser.text(&page)
    );
    browser.eval(&page, &expand);
    let thread =
        "document.querySelector('#session-mail .thread')?.querySelectorAll('.msg').length === 2";
    assert!(
        browser.eventually(&page, thread, SHOWS).is_some(),
        "the thread shows the message and its reply: {}",
        browser.text(&page)
    );
    assert_eq!(browser.eval(&page, NOTHING_RAN), json!(true));
    shot(&browser, &page, "hostile-session");
    let console = browser.console.lock().unwrap().clone();
    assert!(
        !console.iter().any(|l| l.starts_with("exception")),
        "{console:?}"
    );
    drop(browser);
    println!("took {:?}", started.elapsed());
}

// Proves the messages page pages history newest first (60 messages: 50,
// then the rest with "older"), a room's page lists the room's messages, a
// thread expands with its reply, the search box finds a message by a word
// of its body, and a session's page shows its activity over time from its
// hooks (busy with a tool, idle).
#[test]
fn history_threads_search_and_activity_in_chromium() {
    let started = Instant::now();
    let d = TestDaemon::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let repo = checkout(&tmp);
    let (a, b) = ("dash-history-000a", "dash-history-000b");
    let nick_a = hooked_session(&d, a, &repo);
    let nick_b = hooked_session(&d, b, &repo);
    // Activity from hooks: busy with a tool, then idle (before any mail to it, which would hold the stop).
    let mut tool = hook_payload(a, "PreToolUse", &repo);
    tool["tool_name"] = json!("Bash");
    tool["tool_input"] = json!({"command": "cargo test"});
    d.hook("pre-tool-use", &tool);
    d.hook("stop", &hook_payload(a, "Stop", &repo));
    for i in 0..60 {
        muster_ok(&d, &["send", b, &format!("note {i:02} from a"), "--as", a]);
    }
    let root = d.muster_json(&["--json", "send", b, "where is the flaky test?", "--as", a]);
    let root_id = root["message"]["id"].as_str().unwrap().to_string();
    let (status, v) = d.post_json(
        "/api/v1/messages",
        &json!({"as": b, "to": a, "body": "it is tests/retry.rs, the quokka case", "reply_to": root_id}),
    );
    assert_eq!(status, 200, "{v}");
    muster_ok(&d, &["join", "ops", "--as", a]);
    muster_ok(&d, &["broadcast", "ops", "deploy at noon", "--as", a]);

    let (browser, page) = signed_in(&d, &nick_a);
    go(
        &browser,
        &page,
        "#/messages",
        &has_text("messages", "deploy at noon"),
    );
    let count = "document.querySelectorAll('#messages > .msg').length";
    assert_eq!(browser.eval(&page, count), json!(50), "the first page");
    let first = browser.eval(
        &page,
        "document.querySelector('#messages > .msg .body').textContent",
    );
    assert_eq!(first, json!("deploy at noon"), "newest first");
    browser.eval(
        &page,
        "document.getElementById('messages-older').click(), true",
    );
    assert!(
        browser
            .eventually(&page, &format!("{count} === 63"), SHOWS)
            .is_some(),
        "older: all 63 messages: {}",
        browser.eval(&page, count)
    );
    assert_eq!(
        browser.eval(&page, "document.getElementById('messages-older').hidden"),
        json!(true),
        "nothing older"
    );
    // The reply's thread, expanded in place.
    let expand = "[...document.querySelectorAll('#messages > .msg')].find((m) => m.textContent.includes('quokka')).querySelector('button').click(), true";
    browser.eval(&page, expand);
    let thread = "document.querySelector('#messages .thread')?.querySelectorAll('.msg').length === 2 \
        && document.querySelector('#messages .thread').textContent.includes('where is the flaky test?')";
    assert!(
        browser.eventually(&page, thread, SHOWS).is_some(),
        "the thread: {}",
        browser.text(&page)
    );
    shot(&browser, &page, "messages");

    // A reply from the page: to the quokka message's sender, in its thread.
    let reply = "[...document.querySelectorAll('#messages > .msg')].find((m) => m.textContent.includes('quokka')).querySelectorAll('button')[1].click(), true";
    browser.eval(&page, reply);
    assert_eq!(
        browser.eval(
            &page,
            "[document.getElementById('to').value, document.getElementById('replying').hidden]"
        ),
        json!([nick_b, false]),
        "the compose box answers the sender"
    );
    let send = |body: &str| {
        browser.eval(
            &page,
            &format!(
                "document.getElementById('body').value = {body:?}, document.getElementById('send').click(), true"
            ),
        );
        assert!(
            browser
                .eventually(&page, &has_text("messages", body), SHOWS)
                .is_some(),
            "{body:?} shows on the page: {}",
            browser.text(&page)
        );
    };
    send("thanks, I will take it");
    let (status, v) = d.get(&format!("/api/v1/messages/{root_id}/thread?as={b}"));
    assert_eq!(status, 200, "{v}");
    let bodies: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "where is the flaky test?",
            "it is tests/retry.rs, the quokka case",
            "thanks, I will take it"
        ],
        "the reply is in the thread"
    );
    // To a room.
    browser.eval(&page, "document.getElementById('to').value = '#ops', true");
    send("noon works for me");
    let (status, v) = d.get("/api/v1/messages?to=%23ops&limit=1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["messages"][0]["body"], json!("noon works for me"));

    // A room's messages only.
    go(
        &browser,
        &page,
        &format!("#/messages?to={}", "%23ops"),
        &format!(
            "{} && !{}",
            has_text("messages", "deploy at noon"),
            has_text("messages", "note 59")
        ),
    );

    // Search from the header's box.
    browser.eval(
        &page,
        "document.getElementById('search-q').value = 'quokka', \
         document.querySelector('#search-form button').click(), true",
    );
    assert!(
        browser
            .eventually(&page, &has_text("search-results", "tests/retry.rs"), SHOWS)
            .is_some(),
        "search finds the reply: {}",
        browser.text(&page)
    );
    assert_eq!(
        browser.eval(
            &page,
            "document.querySelectorAll('#search-results > .msg').length"
        ),
        json!(1)
    );
    shot(&browser, &page, "search");

    // The session's page: activity over time, its mail.
    go(
        &browser,
        &page,
        &format!("#/session/{a}"),
        &format!(
            "{} && {}",
            has_text("activity", "Bash"),
            has_text("session-mail", "quokka")
        ),
    );
    let marks = browser.eval(
        &page,
        "[...document.querySelectorAll('#activity tr')].map((r) => r.children[1].textContent)",
    );
    assert_eq!(marks, json!(["idle", "busy", "idle"]), "newest first");
    assert_eq!(
        browser.eval(
            &page,
            "document.querySelectorAll('#activity-strip > div').length"
        ),
        json!(3)
    );
    shot(&browser, &page, "session-activity");
    drop(browser);
    println!("took {:?}", started.elapsed());
}
