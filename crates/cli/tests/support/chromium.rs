//! The real headless Chromium (Debian's `chromium`; `.ci/run` installs it,
//! `MUSTER_CHROMIUM` may name another binary), driven over the DevTools
//! protocol from a blocking test: a browser with a fresh profile, pages,
//! script evaluated in them, waits bounded, screenshots. Killed (its whole
//! process group, by the id of the process this started) when dropped.
//! (`crates/daemon/tests/chromium.rs` drives it the same way from async tests.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long any one DevTools call may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);

fn chromium_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MUSTER_CHROMIUM") {
        return bin.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let bin = dir.join(name);
            if bin.is_file() {
                return bin;
            }
        }
    }
    panic!(
        "no Chromium found: install Debian's `chromium` (apt-get install -y chromium; .ci/run does) or set MUSTER_CHROMIUM"
    );
}

/// A headless Chromium and a DevTools connection to it.
pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    out: mpsc::UnboundedSender<String>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    next: AtomicU64,
    /// Messages the pages logged and exceptions they threw, as text.
    pub console: Arc<Mutex<Vec<String>>>,
}

/// One page (a DevTools target session).
pub struct Page(String);

impl Chromium {
    pub fn launch() -> Chromium {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium_binary())
            .args([
                "--headless=new",
                // Tests run as root in CI; Chromium's sandbox refuses root.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        let file = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chromium exited at start: {status}");
            }
            if start.elapsed() > Duration::from_secs(60) {
                kill_group(&mut child);
                panic!("chromium wrote no DevToolsActivePort within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let console: Arc<Mutex<Vec<String>>> = Arc::default();
        let (out, mut to_send) = mpsc::unbounded_channel::<String>();
        let (answers, log) = (pending.clone(), console.clone());
        rt.block_on(async move {
            let (socket, _) =
                tokio::time::timeout(CALL_LIMIT, tokio_tungstenite::connect_async(url.as_str()))
                    .await
                    .expect("DevTools answers within 30 s")
                    .expect("DevTools connects");
            let (mut sink, mut stream) = socket.split();
            tokio::spawn(async move {
                while let Some(text) = to_send.recv().await {
                    if sink.send(WsMessage::Text(text.into())).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let WsMessage::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = v["id"].as_u64() {
                        if let Some(tx) = answers.lock().unwrap().remove(&id) {
                            let _ = tx.send(v);
                        }
                        continue;
                    }
                    let p = &v["params"];
                    match v["method"].as_str() {
                        Some("Runtime.consoleAPICalled") => {
                            let args: Vec<String> = p["args"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|a| a["value"].to_string())
                                .collect();
                            log.lock().unwrap().push(format!(
                                "console.{}: {}",
                                p["type"].as_str().unwrap_or(""),
                                args.join(" ")
                            ));
                        }
                        Some("Runtime.exceptionThrown") => log
                            .lock()
                            .unwrap()
                            .push(format!("exception: {}", p["exceptionDetails"])),
                        _ => {}
                    }
                }
            });
        });
        Chromium {
            child,
            _profile: profile,
            rt,
            out,
            pending,
            next: AtomicU64::new(1),
            console,
        }
    }

    /// A DevTools call (to a page when `session` is given); its result.
    pub fn call(&self, session: Option<&Page>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(Page(s)) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.out
            .send(msg.to_string())
            .expect("DevTools is connected");
        let v = self
            .rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, rx).await })
            .unwrap_or_else(|_| panic!("{method}: no answer within {CALL_LIMIT:?}"))
            .expect("DevTools answered");
        assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
        v["result"].clone()
    }

    /// A new page of `width`×`height` at `url`, its console and exceptions logged.
    pub fn open(&self, url: &str, width: u32, height: u32) -> Page {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        let page = Page(attached["sessionId"].as_str().unwrap().to_string());
        self.call(Some(&page), "Runtime.enable", json!({}));
        self.call(Some(&page), "Page.enable", json!({}));
        self.call(
            Some(&page),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        self.navigate(&page, url);
        page
    }

    pub fn navigate(&self, page: &Page, url: &str) {
        self.call(Some(page), "Page.navigate", json!({"url": url}));
    }

    /// Evaluates `expr` in the page (awaiting a promise); its JSON value.
    pub fn eval(&self, page: &Page, expr: &str) -> Value {
        let v = self.call(
            Some(page),
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(v.get("exceptionDetails").is_none(), "{expr}: {v}");
        v["result"]["value"].clone()
    }

    /// Polls `expr` until it is `true`, within `limit`; how long it took.
    pub fn eventually(&self, page: &Page, expr: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            // Null-safe by catching: a page navigating may lack what `expr` reads.
            let guarded =
                format!("(() => {{ try {{ return !!({expr}); }} catch {{ return false; }} }})()");
            if self.eval(page, &guarded) == json!(true) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The page's visible text (for failure messages).
    pub fn text(&self, page: &Page) -> String {
        self.eval(page, "document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// A PNG of what the page's window shows into `path`.
    pub fn screenshot(&self, page: &Page, path: &Path) {
        let shot = self.call(
            Some(page),
            "Page.captureScreenshot",
            json!({"format": "png"}),
        );
        let data = shot["data"].as_str().expect("a screenshot");
        std::fs::write(path, base64_decode(data)).unwrap();
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills the browser's own process group (it was started as its leader):
/// its renderers go with it.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Standard base64 (what DevTools sends screenshots in).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let take = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}
