//! A waker as `muster run` or the opencode plugin opens one: the daemon's
//! wake stream for a run, read on a thread; and a hook call made inside
//! such a run. Needs `common` in the test crate.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::common::{muster_cmd, payload, TestDaemon};

/// A waker: the wake stream for `run`, read on a thread; events arrive on the channel.
pub struct Waker {
    events: mpsc::Receiver<(String, Value)>,
}

impl Waker {
    pub fn open(d: &TestDaemon, run: &str, how: &str) -> Waker {
        let resp = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap()
            .get(format!("{}/api/v1/wake?run={run}&how={how}", d.url))
            .header(muster_daemon::local_key::HEADER, d.key())
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut kind = String::new();
            for line in BufReader::new(resp).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let _ = tx.send((
                        kind.clone(),
                        serde_json::from_str(data.trim()).unwrap_or(Value::Null),
                    ));
                }
            }
        });
        let waker = Waker { events };
        assert_eq!(
            waker.next(Duration::from_secs(5)).map(|e| e.0),
            Some("ready".to_string())
        );
        waker
    }

    pub fn next(&self, limit: Duration) -> Option<(String, Value)> {
        self.events.recv_timeout(limit).ok()
    }
}

/// A hook call as `muster hook` makes it inside `muster run` (MUSTER_RUN_ID set).
pub fn hook_in_run(
    d: &TestDaemon,
    run: &str,
    event: &str,
    id: &str,
    name: &str,
    wake: Option<&str>,
) -> String {
    let mut cmd = muster_cmd(&d.url);
    cmd.args(["hook", event])
        .env("MUSTER_RUN_ID", run)
        .stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped());
    if let Some(w) = wake {
        cmd.env("MUSTER_WAKE", w);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload(id, name).to_string().as_bytes())
        .unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}
