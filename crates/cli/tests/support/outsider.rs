//! A client of a token daemon from outside: no local key (its runtime and
//! temp directories are its own, empty), so a token is its only way in.

#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::{json, Value};

use super::common::{http, muster_cmd, payload, TestDaemon};

/// The bootstrap (admin) token the tests' daemons are started with.
pub const BOOT: &str = "bootstrap-secret-for-tests";

/// A client with no local key: its runtime and temp directories are empty.
pub struct Outsider {
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Outsider {
    pub fn new(d: &TestDaemon) -> Outsider {
        Outsider::at(&d.url)
    }

    /// One for the daemon (or comma-separated daemons) at `url`.
    pub fn at(url: &str) -> Outsider {
        Outsider {
            url: url.to_string(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cmd(&self, token: Option<&str>) -> Command {
        let mut cmd = muster_cmd(&self.url);
        cmd.env("XDG_RUNTIME_DIR", self.dir.path())
            .env("TMPDIR", self.dir.path())
            .env_remove("MUSTER_TOKEN_FILE");
        if let Some(token) = token {
            cmd.env("MUSTER_TOKEN", token);
        }
        cmd
    }

    pub fn run(&self, token: Option<&str>, args: &[&str]) -> Output {
        self.cmd(token).args(args).output().expect("run muster")
    }

    /// `muster <args> --json` that must succeed.
    pub fn ok(&self, token: &str, args: &[&str]) -> Value {
        let out = self.run(Some(token), &[args, &["--json"]].concat());
        assert!(
            out.status.success(),
            "muster {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    /// `muster <args> --json` that must fail; its error code.
    pub fn refused(&self, token: Option<&str>, args: &[&str]) -> String {
        let out = self.run(token, &[args, &["--json"]].concat());
        assert!(!out.status.success(), "muster {args:?} must be refused");
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "no JSON error from {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        body["error"]["code"].as_str().unwrap().to_string()
    }

    /// A raw request with `token` as its bearer; the status and body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = http();
        let url = format!("{}{path}", self.url);
        let mut req = match method {
            "GET" => client.get(url),
            _ => client.post(url),
        };
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn hook(&self, token: &str, event: &str, session: &str) -> (u16, Value) {
        self.hook_in_run(token, event, session, None)
    }

    /// A hook as `muster hook` sends it inside `muster run` (`X-Muster-Run`).
    pub fn hook_in_run(
        &self,
        token: &str,
        event: &str,
        session: &str,
        run: Option<&str>,
    ) -> (u16, Value) {
        let mut p = payload(session, "SessionStart");
        p["cwd"] = json!(self.dir.path());
        let mut req = http()
            .post(format!("{}/hook/{event}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(p.to_string());
        if let Some(run) = run {
            req = req.header("x-muster-run", run);
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// The secret of a `token create --json` answer.
pub fn secret_of(made: &Value) -> String {
    let secret = made["secret"].as_str().expect("a secret").to_string();
    assert!(secret.starts_with("muster_"), "{secret}");
    secret
}
