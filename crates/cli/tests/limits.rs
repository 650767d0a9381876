//! The limit flags of the real `muster serve`, seen from its clients: a
//! send past `--send-rate` is a 429 with Retry-After that `muster send`
//! reports and exits 1 on; a hook past `--hook-rate` is refused but the
//! hook client fails open (exit 0, the harness carries on); a bad rate is
//! refused at the command line.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

#[test]
fn a_send_past_the_rate_is_429_with_retry_after_and_muster_send_says_so() {
    let d = TestDaemon::start(&["--send-rate", "1/s,2", "--unix-socket", "off"]);
    d.hook("session-start", &payload("limits-bb-one", "SessionStart"));
    for n in 0..2 {
        let (status, v) = d.post_json(
            "/api/v1/messages",
            &json!({"to": "limits-bb-one", "body": format!("m{n}")}),
        );
        assert_eq!(status, 200, "{v}");
    }
    let resp = d
        .http()
        .post(format!("{}/api/v1/messages", d.url))
        .header("content-type", "application/json")
        .body(json!({"to": "limits-bb-one", "body": "m2"}).to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    let retry = v["error"]["retry_after_ms"].as_u64().unwrap();
    assert!((1..=1000).contains(&retry), "{v}");
    // The CLI speaks for a sender of its own, with a budget of its own.
    for n in 0..2 {
        let out = d.muster(&["send", "limits-bb-one", &format!("cli {n}")]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let out = d.muster(&["send", "limits-bb-one", "one more"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is sending too fast (limit 1/s, bursts of 2); retry in"),
        "{stderr}"
    );
    assert_eq!(
        d.status()["unread_deliveries"],
        4,
        "nothing refused was stored"
    );
}

#[test]
fn a_hook_past_the_rate_is_refused_and_the_hook_client_carries_on() {
    let d = TestDaemon::start(&["--hook-rate", "1/s,1", "--unix-socket", "off"]);
    d.hook("session-start", &payload("limits-bb-two", "SessionStart"));
    let mut child = muster_cmd(&d.url)
        .args(["hook", "prompt-submit"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            payload("limits-bb-two", "UserPromptSubmit")
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the hook fails open");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("answered 429 Too Many Requests (session limits-bb-two is calling hooks too fast (limit 1/s, bursts of 1); retry in"),
        "{stderr}"
    );
    assert!(stderr.contains("continuing without muster"), "{stderr}");
}

#[test]
fn a_rate_that_is_not_one_is_refused_at_the_command_line() {
    let out = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--send-rate", "5"])
        .env_remove("MUSTER_STORE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "invalid value '5' for '--send-rate <RATE>': \"5\" is not a rate: write N/s or N/s,BURST (e.g. 100/s,200), or off"
        ),
        "{stderr}"
    );
}
