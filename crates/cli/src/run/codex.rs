//! `muster run codex`: Codex's TUI on an app-server of muster's own, so a
//! wake starts a turn through the app-server's API instead of typing.
//!
//! - [`AppServer`]: `codex app-server --listen unix://<socket>` in a 0700
//!   directory of its own, started in the project with MUSTER_RUN_ID and
//!   MUSTER_URL (a `--remote` TUI's hooks and MCP servers run in the
//!   app-server's environment, not the TUI's), in a process group of its
//!   own, stopped with that group and its socket removed when the run ends
//!   (and, on Linux, sent SIGTERM by the kernel if `muster run` itself dies).
//! - [`tui_args`]: the TUI then runs as `codex --remote unix://<socket> -C
//!   <cwd> [args…]` (without `-C` a remote thread works in the app-server's
//!   directory, not the person's).
//! - [`waker`]: each wake for session S (Codex's thread id) opens a
//!   connection (a websocket over the unix socket), `initialize`s with
//!   `capabilities.experimentalApi` and sends `thread/queue/add`: an idle
//!   thread starts a turn at once, a busy one runs it as its own next turn
//!   when the running one ends (never steered into a person's turn), and
//!   the TUI shows it either way. Nothing is typed.
//!
//! Facts measured with Codex 0.171.0: `unix://PATH` speaks the same
//! websocket protocol as `ws://` (HTTP upgrade over the socket), one JSON
//! object per text frame, no `"jsonrpc"` field needed; `params` is required
//! on every request; any request before `initialize` is refused; the path
//! given is made a symlink to a socket under `/tmp/codex-daemon-<uid>/`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::typing::sanitize_prompt;
use super::wake::Wake;

/// How long the app-server may take to answer `initialize` at start (it
/// takes about 0.2 s).
pub const READY_LIMIT: Duration = Duration::from_secs(15);
/// One connect + handshake + request to the app-server.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// After SIGTERM, how long the app-server's group gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Lines of the app-server's stderr kept for a failure message.
const STDERR_TAIL: usize = 20;
/// The socket's file name in the run's directory.
const SOCKET_NAME: &str = "app-server.sock";
/// The file in the run's directory naming the `muster run` that owns it.
const OWNER_FILE: &str = "owner.pid";

/// Whether `program` is Codex: its file name is `codex`.
pub fn is_codex(program: &Path) -> bool {
    program.file_name() == Some(OsStr::new("codex"))
}

/// Codex's subcommands that are not the interactive TUI, so no app-server
/// for them (`resume`, `fork` and `agents` are the TUI and take `--remote`).
const OTHER_SUBCOMMANDS: [&str; 26] = [
    "exec",
    "e",
    "review",
    "login",
    "logout",
    "mcp",
    "mcp-server",
    "plugin",
    "app-server",
    "remote-control",
    "completion",
    "update",
    "doctor",
    "sandbox",
    "debug",
    "apply",
    "a",
    "queue",
    "archive",
    "delete",
    "migrate-rollouts",
    "migrate-nfs-db",
    "unarchive",
    "cloud",
    "exec-server",
    "features",
];

/// Codex's top-level options that take a value in the next argument
/// (`--opt=value` and `-Xvalue` forms carry it themselves).
const VALUE_OPTIONS: [&str; 20] = [
    "-c",
    "--config",
    "--enable",
    "--disable",
    "--remote",
    "--remote-auth-token-env",
    "-i",
    "--image",
    "-m",
    "--model",
    "--local-provider",
    "-p",
    "--profile",
    "-s",
    "--sandbox",
    "-C",
    "--cd",
    "--add-dir",
    "-a",
    "--ask-for-approval",
];

/// What the person's arguments to `codex` are, as far as the app-server cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodexArgs {
    /// The first word that is not an option: a subcommand or the prompt
    /// (`None` after `--`, which makes it the prompt).
    pub first_word: Option<String>,
    /// Where it is in the arguments (their length if there is none).
    pub first_word_at: usize,
    /// `--remote` given: they chose their own app-server.
    pub remote: bool,
    /// `-C`/`--cd` given: their directory wins (Codex refuses two).
    pub cd: bool,
    /// `--help`/`--version`: nothing runs.
    pub info: bool,
}

/// Reads the person's `codex` arguments (only up to the first word; what
/// follows belongs to a subcommand or is the prompt).
pub fn read_args(args: &[OsString]) -> CodexArgs {
    let mut out = CodexArgs {
        first_word: None,
        first_word_at: args.len(),
        remote: false,
        cd: false,
        info: false,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        i += 1;
        if arg == "--" {
            // The prompt follows, whatever it says: that is the TUI.
            out.first_word_at = i - 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            out.first_word = Some(arg.into_owned());
            out.first_word_at = i - 1;
            break;
        }
        let (name, inline_value) = match arg.split_once('=') {
            Some((name, _)) if name.starts_with("--") => (name.to_string(), true),
            _ => (arg.to_string(), false),
        };
        match name.as_str() {
            "--remote" => out.remote = true,
            "-C" | "--cd" => out.cd = true,
            "-h" | "--help" | "-V" | "--version" => out.info = true,
            _ if name.starts_with("-C") && !name.starts_with("--") => out.cd = true,
            _ => {}
        }
        if !inline_value && VALUE_OPTIONS.contains(&name.as_str()) {
            i += 1;
        }
    }
    out
}

/// Why these arguments keep the TUI off muster's app-server (then the run is
/// a plain pty one), or `None` when it can join it.
pub fn why_not_remote(args: &CodexArgs) -> Option<String> {
    if args.remote {
        return Some("the arguments name their own --remote app-server".into());
    }
    if args.info {
        return Some("--help/--version runs no session".into());
    }
    match args.first_word.as_deref() {
        Some(word) if OTHER_SUBCOMMANDS.contains(&word) || word == "help" => {
            Some(format!("`codex {word}` is not the interactive TUI"))
        }
        _ => None,
    }
}

/// The TUI's arguments: `--remote unix://<socket>`, `-C <cwd>` unless the
/// person gave their own, then theirs (without `--no-daemon`, which Codex
/// refuses next to `--remote` and which muster's own app-server honours
/// anyway: it is no shared daemon).
pub fn tui_args(socket: &Path, cwd: &Path, args: &[OsString], parsed: &CodexArgs) -> Vec<OsString> {
    let mut remote = OsString::from("unix://");
    remote.push(socket.as_os_str());
    let mut out = vec![OsString::from("--remote"), remote];
    if !parsed.cd {
        out.push("-C".into());
        out.push(cwd.as_os_str().to_owned());
    }
    for (i, arg) in args.iter().enumerate() {
        // Only Codex's own option, before any subcommand or prompt.
        if i < parsed.first_word_at && arg == "--no-daemon" {
            continue;
        }
        out.push(arg.clone());
    }
    out
}

/// A UUID v4 (for `clientUserMessageId`).
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (nanos ^ (u128::from(std::process::id()) << 96)).to_be_bytes();
    }
    uuid_from(b)
}

fn uuid_from(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

// ---------------------------------------------------------------- the app-server process

/// Muster's own `codex app-server` for one run. Dropping it stops it.
pub struct AppServer {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// The app-server's process group, for the panic hook (a panic ends the
/// process without running destructors).
static RUNNING: Mutex<Option<(i32, PathBuf)>> = Mutex::new(None);

impl AppServer {
    /// Starts `program app-server --listen unix://<dir>/app-server.sock` in
    /// `cwd` with our environment plus `env`; `dir` is a new 0700 directory
    /// named after `run_id`. Does not wait for it (see [`Self::wait_ready`]).
    pub fn start(
        program: &Path,
        cwd: &Path,
        env: &[(&str, String)],
        run_id: &str,
    ) -> Result<AppServer, String> {
        let tmp = std::env::temp_dir();
        sweep_stale_dirs(&tmp);
        let dir = private_dir(&tmp, run_id)?;
        let socket = dir.join(SOCKET_NAME);
        let mut listen = OsString::from("unix://");
        listen.push(socket.as_os_str());
        let mut cmd = Command::new(program);
        cmd.arg("app-server")
            .arg("--listen")
            .arg(&listen)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own group: the terminal's signals are not its, and the
            // whole group (hooks, MCP servers) is stopped together.
            cmd.process_group(0);
            #[cfg(target_os = "linux")]
            {
                let parent = std::process::id() as libc::pid_t;
                // SAFETY: only async-signal-safe calls between fork and exec.
                unsafe {
                    cmd.pre_exec(move || {
                        // If muster run dies without stopping it (SIGKILL), the kernel does.
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                        if libc::getppid() != parent {
                            libc::_exit(1);
                        }
                        Ok(())
                    });
                }
            }
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!(
                    "cannot start {} app-server: {e}",
                    program.display()
                ));
            }
        };
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let tail = stderr.clone();
            std::thread::spawn(move || follow_stderr(pipe, tail));
        }
        let pid = child.id() as i32;
        *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = Some((pid, dir.clone()));
        install_panic_cleanup();
        tracing::info!(pid, socket = %socket.display(), "codex app-server started");
        Ok(AppServer {
            child,
            dir,
            socket,
            stderr,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits until the app-server answers `initialize` on its socket;
    /// returns how long that took, or why it never did (it exited, or
    /// `limit` passed).
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Duration, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("no async runtime: {e}"))?;
        let start = Instant::now();
        let mut last_error = String::from("no answer");
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "codex app-server exited ({status}) before it was ready: {}",
                    self.stderr_tail()
                ));
            }
            if std::fs::symlink_metadata(&self.socket).is_ok() {
                let socket = self.socket.clone();
                let left = limit.saturating_sub(start.elapsed()).min(CALL_LIMIT);
                let probe = async { tokio::time::timeout(left, Connection::open(&socket)).await };
                match runtime.block_on(probe) {
                    Ok(Ok(conn)) => {
                        let took = start.elapsed();
                        runtime.block_on(conn.close());
                        return Ok(took);
                    }
                    Ok(Err(e)) => last_error = e,
                    Err(_) => last_error = "initialize not answered".into(),
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "codex app-server not ready within {limit:?} ({last_error}): {}",
            self.stderr_tail()
        ))
    }

    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        if lines.is_empty() {
            "nothing on its stderr".into()
        } else {
            lines.iter().cloned().collect::<Vec<_>>().join(" | ")
        }
    }

    /// SIGTERM to its process group, SIGKILL after a grace period, then the
    /// socket (and the one it points to) and the directory are removed.
    fn stop(&mut self) {
        let pid = self.child.id() as i32;
        signal_group(pid, libc::SIGTERM);
        let start = Instant::now();
        let exited = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if start.elapsed() < STOP_GRACE => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break None,
            }
        };
        // Whatever else is left in its group (a hook, an MCP server) goes too.
        signal_group(pid, libc::SIGKILL);
        let status = match exited {
            Some(status) => Some(status),
            None => self.child.wait().ok(),
        };
        remove_socket(&self.socket);
        let _ = std::fs::remove_dir_all(&self.dir);
        *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::info!(?status, "codex app-server stopped");
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(pgid: i32, signal: libc::c_int) {
    if pgid > 0 {
        // SAFETY: kill(2) on a process group we created; no memory involved.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Removes the socket; where Codex made it a symlink to a socket of its
/// own, that one too (an app-server that was killed leaves both).
fn remove_socket(socket: &Path) {
    if let Ok(target) = std::fs::read_link(socket) {
        let target = socket
            .parent()
            .map_or(target.clone(), |dir| dir.join(&target));
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(&target);
            }
        }
    }
    let _ = std::fs::remove_file(socket);
}

/// A new directory only we can enter: `<tmp>/muster-<run id>` (mode 0700),
/// holding the pid of this `muster run` in [`OWNER_FILE`].
fn private_dir(tmp: &Path, run_id: &str) -> Result<PathBuf, String> {
    let dir = tmp.join(format!("muster-{run_id}"));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _ = std::fs::write(dir.join(OWNER_FILE), format!("{}\n", std::process::id()));
    Ok(dir)
}

/// Removes what earlier runs left in `tmp` when they were killed outright
/// (SIGKILL: no code of theirs ran, only the kernel stopped their
/// app-server): each `muster-run-*` directory of ours whose owner (its
/// [`OWNER_FILE`]) is no longer running, with its socket and the one that
/// points to. Returns how many went.
fn sweep_stale_dirs(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_ours = entry
            .file_name()
            .to_string_lossy()
            .starts_with("muster-run-")
            && std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && owned_by_us(&m));
        if !is_ours {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok());
        let Some(owner) = owner else { continue };
        if owner == std::process::id() as i32 || process_alive(owner) {
            continue;
        }
        remove_socket(&dir.join(SOCKET_NAME));
        if std::fs::remove_dir_all(&dir).is_ok() {
            tracing::info!(dir = %dir.display(), owner, "removed what a killed run left");
            removed += 1;
        }
    }
    removed
}

#[cfg(unix)]
fn owned_by_us(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid(2) cannot fail and touches no memory.
    meta.uid() == unsafe { libc::getuid() }
}

#[cfg(not(unix))]
fn owned_by_us(_: &std::fs::Metadata) -> bool {
    false
}

/// Whether process `pid` exists (signal 0 probes without sending anything).
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks the process.
    let ok = unsafe { libc::kill(pid, 0) } == 0;
    ok || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Reads the app-server's stderr to its end: each line to the log (debug),
/// the last few kept for a failure message.
fn follow_stderr(pipe: impl std::io::Read, tail: Arc<Mutex<VecDeque<String>>>) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        let line = strip_ansi(&line);
        tracing::debug!(target: "codex_stderr", "{line}");
        let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// `s` without terminal colour sequences (Codex colours its log lines).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Chains a panic hook that stops the app-server's group and removes its
/// directory (a panic while the terminal is raw exits the process, so no
/// destructor would).
fn install_panic_cleanup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some((pid, dir)) = RUNNING
                .try_lock()
                .ok()
                .and_then(|mut running| running.take())
            {
                signal_group(pid, libc::SIGKILL);
                remove_socket(&dir.join(SOCKET_NAME));
                let _ = std::fs::remove_dir_all(&dir);
            }
            previous(info);
        }));
    });
}

// ---------------------------------------------------------------- the app-server protocol

/// One initialized connection to the app-server.
pub struct Connection {
    ws: WebSocketStream<UnixStream>,
    next_id: u64,
}

impl Connection {
    /// Connects to `socket` (a websocket over the unix socket), then
    /// `initialize` (experimental API on: `thread/queue/add` needs it) and
    /// `initialized`.
    pub async fn open(socket: &Path) -> Result<Connection, String> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        let (ws, _) = tokio_tungstenite::client_async("ws://localhost/", stream)
            .await
            .map_err(|e| format!("websocket handshake: {e}"))?;
        let mut conn = Connection { ws, next_id: 1 };
        conn.call(
            "initialize",
            json!({
                "clientInfo": {"name": "muster", "version": env!("CARGO_PKG_VERSION")},
                "capabilities": {"experimentalApi": true},
            }),
        )
        .await?;
        conn.send(&json!({"method": "initialized"})).await?;
        Ok(conn)
    }

    async fn send(&mut self, message: &Value) -> Result<(), String> {
        self.ws
            .send(WsMessage::Text(message.to_string().into()))
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// Sends request `method` and waits for its answer (notifications on
    /// the way are skipped); an error answer is `Err`.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"id": id, "method": method, "params": params}))
            .await?;
        loop {
            let frame = match self.ws.next().await {
                Some(Ok(WsMessage::Text(text))) => text,
                Some(Ok(WsMessage::Close(_))) | None => {
                    return Err(format!("{method}: the app-server closed the connection"))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("{method}: {e}")),
            };
            let Ok(message) = serde_json::from_str::<Value>(&frame) else {
                continue;
            };
            if message.get("id") != Some(&json!(id)) || message.get("method").is_some() {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(format!("{method}: {error}"));
            }
            return Ok(message.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The `thread/queue/add` request for a wake: `text` as the user's message
/// to thread `thread`.
pub fn queue_params(thread: &str, text: &str, client_id: &str) -> Value {
    json!({
        "threadId": thread,
        "clientUserMessageId": client_id,
        "input": [{"type": "text", "text": text}],
    })
}

/// Queues `text` as a user message of thread `thread`: a turn at once if it
/// is idle, its own next turn if it is busy.
pub async fn queue_prompt(socket: &Path, thread: &str, text: &str) -> Result<Value, String> {
    let mut conn = Connection::open(socket).await?;
    let answer = conn
        .call("thread/queue/add", queue_params(thread, text, &new_uuid()))
        .await;
    conn.close().await;
    answer
}

/// Takes wakes from the stream and queues each as a turn of its thread.
pub async fn waker(mut wakes: mpsc::UnboundedReceiver<Wake>, socket: PathBuf) {
    while let Some(wake) = wakes.recv().await {
        let prompt = sanitize_prompt(&wake.prompt);
        let started = Instant::now();
        match tokio::time::timeout(CALL_LIMIT, queue_prompt(&socket, &wake.session, &prompt)).await
        {
            Ok(Ok(answer)) => tracing::info!(
                session = %wake.session,
                messages = ?wake.message_ids,
                took_ms = started.elapsed().as_millis() as u64,
                %answer,
                "wake queued on the app-server"
            ),
            Ok(Err(e)) => {
                tracing::warn!(session = %wake.session, "wake not queued: {e}")
            }
            Err(_) => tracing::warn!(
                session = %wake.session,
                "wake not queued: no answer within {CALL_LIMIT:?}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn codex_is_known_by_its_file_name() {
        // Proves which programs get muster's app-server: a file named `codex`, wherever it is.
        assert!(is_codex(Path::new("/usr/local/bin/codex")));
        assert!(is_codex(Path::new("codex")));
        assert!(!is_codex(Path::new("/usr/bin/claude")));
        assert!(!is_codex(Path::new("/opt/codex/bin/codex-cli")));
    }

    #[test]
    fn arguments_decide_whether_the_tui_joins_the_app_server() {
        // Proves the TUI (no subcommand, a prompt, resume/fork) joins; other subcommands, --remote and --help run plain; option values are not taken for subcommands.
        let why = |args: &[&str]| why_not_remote(&read_args(&os(args)));
        assert_eq!(why(&[]), None);
        assert_eq!(why(&["fix the tests"]), None);
        assert_eq!(why(&["resume", "--last"]), None);
        assert_eq!(why(&["-m", "exec", "fork"]), None);
        assert_eq!(why(&["-c", "model=\"o3\"", "--search", "hello"]), None);
        assert_eq!(why(&["--", "exec"]), None);
        assert_eq!(
            why(&["exec", "hi"]),
            Some("`codex exec` is not the interactive TUI".into())
        );
        assert_eq!(
            why(&["--model=o3", "login", "status"]),
            Some("`codex login` is not the interactive TUI".into())
        );
        assert_eq!(
            why(&["--remote", "ws://127.0.0.1:9"]),
            Some("the arguments name their own --remote app-server".into())
        );
        assert_eq!(
            why(&["--remote=unix://"]),
            Some("the arguments name their own --remote app-server".into())
        );
        assert_eq!(
            why(&["--help"]),
            Some("--help/--version runs no session".into())
        );
        assert!(read_args(&os(&["-C", "/x"])).cd);
        assert!(read_args(&os(&["--cd=/x"])).cd);
        assert!(read_args(&os(&["-C/x"])).cd);
        assert!(
            !read_args(&os(&["hello", "-C", "/x"])).cd,
            "after the prompt it is not Codex's"
        );
    }

    #[test]
    fn the_tui_gets_remote_and_the_directory_before_the_persons_arguments() {
        // Proves the TUI's command line: --remote unix://<socket>, -C <cwd> unless given, the person's arguments after, --no-daemon dropped (Codex refuses it with --remote).
        let socket = Path::new("/tmp/muster-run-1/app-server.sock");
        let cwd = Path::new("/home/p/project");
        let build = |args: &[&str]| {
            let args = os(args);
            tui_args(socket, cwd, &args, &read_args(&args))
        };
        assert_eq!(
            build(&["--search", "fix it"]),
            os(&[
                "--remote",
                "unix:///tmp/muster-run-1/app-server.sock",
                "-C",
                "/home/p/project",
                "--search",
                "fix it"
            ])
        );
        assert_eq!(
            build(&["-C", "/elsewhere", "resume", "--last"]),
            os(&[
                "--remote",
                "unix:///tmp/muster-run-1/app-server.sock",
                "-C",
                "/elsewhere",
                "resume",
                "--last"
            ])
        );
        assert_eq!(
            build(&[
                "--no-daemon",
                "-m",
                "o3",
                "--no-daemon",
                "hi",
                "--no-daemon"
            ]),
            os(&[
                "--remote",
                "unix:///tmp/muster-run-1/app-server.sock",
                "-C",
                "/home/p/project",
                "-m",
                "o3",
                "hi",
                "--no-daemon"
            ])
        );
    }

    #[test]
    fn queue_requests_carry_the_thread_a_fresh_uuid_and_the_text() {
        // Proves the exact thread/queue/add params the app-server is sent, and that message ids are v4 UUIDs that differ.
        assert_eq!(
            queue_params("019a-thread", "read your mail", "u-1"),
            json!({"threadId": "019a-thread", "clientUserMessageId": "u-1",
                   "input": [{"type": "text", "text": "read your mail"}]})
        );
        assert_eq!(
            uuid_from([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(uuid_from([0; 16]), "00000000-0000-4000-8000-000000000000");
        let (a, b) = (new_uuid(), new_uuid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn directories_of_killed_runs_are_swept_and_live_ones_kept() {
        // Proves the sweep: a run directory whose owner pid is gone is removed (its dangling socket link and the socket it names too); ours, a live owner's, one without an owner file and other names stay.
        let tmp = tempfile::tempdir().unwrap();
        let gone = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        let make = |name: &str, owner: Option<u32>| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            if let Some(pid) = owner {
                std::fs::write(dir.join(OWNER_FILE), format!("{pid}\n")).unwrap();
            }
            dir
        };
        let stale = make("muster-run-00000000000000aa", Some(gone));
        let target = tmp.path().join("codex-daemon-sock");
        let listener = std::os::unix::net::UnixListener::bind(&target).unwrap();
        drop(listener);
        std::os::unix::fs::symlink(&target, stale.join(SOCKET_NAME)).unwrap();
        let live = make(
            "muster-run-00000000000000bb",
            Some(std::os::unix::process::parent_id()),
        );
        let mine = make("muster-run-00000000000000cc", Some(std::process::id()));
        let unowned = make("muster-run-00000000000000dd", None);
        let other = make("something-else", Some(gone));
        assert_eq!(sweep_stale_dirs(tmp.path()), 1);
        assert!(!stale.exists());
        assert!(!target.exists(), "the socket the link named is gone too");
        for kept in [&live, &mine, &unowned, &other] {
            assert!(kept.exists(), "{}", kept.display());
        }
        assert_eq!(sweep_stale_dirs(tmp.path()), 0);
    }

    #[test]
    fn run_directories_are_private_and_name_their_owner() {
        // Proves the socket's directory is 0700 and records this process as its owner.
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = private_dir(tmp.path(), "run-0123456789abcdef").unwrap();
        assert_eq!(dir, tmp.path().join("muster-run-0123456789abcdef"));
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(OWNER_FILE)).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert!(
            private_dir(tmp.path(), "run-0123456789abcdef").is_err(),
            "never reused"
        );
    }

    #[test]
    fn colour_codes_are_stripped_from_log_lines() {
        // Proves the app-server's coloured stderr reaches the log as plain text.
        assert_eq!(
            strip_ansi("\u{1b}[2m2026-12-01\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m codex"),
            "2026-12-01 ERROR codex"
        );
    }
}
