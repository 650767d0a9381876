//! What one hook costs Claude Code, command vs http (`muster install claude
//! --hooks http`): against a `muster serve` child, the time from starting a
//! command hook (`sh -c "muster hook post-tool-use --harness claude"`, as
//! Claude Code runs one, with the payload on stdin) until it exits, beside
//! the time of one POST of the same payload to `/hook/post-tool-use`, as a
//! Claude Code http hook makes it (with a token, over a new connection, and
//! over a kept-alive one). The calls take turns, so the machine's noise
//! falls on all alike. Each tool call runs two hooks (PreToolUse and
//! PostToolUse).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde_json::json;

use crate::daemon::ServeChild;
use crate::http::{snippet, Conn};
use crate::report::{fmt_us, r1, thousands, Row, Section, Verdict};
use crate::Opts;

/// Calls of each kind made first and not recorded.
const WARMUP_CALLS: usize = 10;
/// How long one call may take before it counts as failed.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// The tool output carried in the payload (Claude Code sends the tool's
/// whole result to PostToolUse; a few KB is a small file read).
const TOOL_OUTPUT_BYTES: usize = 4_096;
/// Transcript bytes Claude Code appends per tool call (the command hook
/// reads what its transcript gained since its last call).
const TRANSCRIPT_LINE_BYTES: usize = 2_048;

/// The ways a hook reaches the daemon, in the order each round runs them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `sh -c "<muster> hook post-tool-use --harness claude"`, as Claude Code runs a command hook.
    Shell,
    /// `<muster> hook post-tool-use --harness claude` started directly (no shell).
    Direct,
    /// One POST over a new TCP connection.
    HttpNew,
    /// One POST over a connection kept alive between calls.
    HttpKept,
}

const KINDS: [Kind; 4] = [Kind::Shell, Kind::Direct, Kind::HttpNew, Kind::HttpKept];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Shell => "command hook (sh -c muster hook, as Claude Code runs it)",
            Kind::Direct => "command hook, muster hook started directly",
            Kind::HttpNew => "http hook, new connection per call",
            Kind::HttpKept => "http hook, kept-alive connection",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::Shell => "command_sh",
            Kind::Direct => "command_direct",
            Kind::HttpNew => "http_new_connection",
            Kind::HttpKept => "http_keep_alive",
        }
    }
}

/// One kind's timings.
struct Timings {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Timings {
    fn new() -> anyhow::Result<Timings> {
        Ok(Timings {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
            first_error: None,
        })
    }

    fn record(&mut self, took: anyhow::Result<Duration>) {
        match took {
            Ok(d) => {
                let _ = self.hist.record((d.as_micros() as u64).max(1));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn q(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }
}

/// A PostToolUse payload for `session`, with a tool result of a few KB.
fn payload(session: &str, cwd: &Path, transcript: &Path) -> Bytes {
    let output: String = "lorem ipsum dolor sit amet\n"
        .chars()
        .cycle()
        .take(TOOL_OUTPUT_BYTES)
        .collect();
    Bytes::from(
        json!({
            "session_id": session,
            "transcript_path": transcript,
            "cwd": cwd,
            "permission_mode": "default",
            "hook_event_name": "PostToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": "cat notes.txt", "description": "read the notes"},
            "tool_response": {"stdout": output, "stderr": "", "interrupted": false, "isImage": false},
            "tool_use_id": "toolu_01hookcost",
        })
        .to_string(),
    )
}

/// The environment of a command hook: the daemon's address, a data
/// directory of its own (transcript offsets), no token, no session
/// variables, never starting a daemon.
fn hook_command(program: &str, args: &[&str], url: &str, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("MUSTER_URL", url)
        .env("MUSTER_AUTOSTART", "0")
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("MUSTER_TOKEN")
        .env_remove("MUSTER_TOKEN_FILE")
        .env_remove("MUSTER_SESSION_ID")
        .env_remove("CLAUDE_CODE_SESSION_ID")
        .env_remove("MUSTER_RUN_ID")
        .env_remove("MUSTER_WAKE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts `cmd`, writes `input`, waits for it to exit: the time it took,
/// or why it failed (a non-zero exit, or anything on stderr: the hook
/// failed open).
fn run_hook(mut cmd: Command, input: &[u8]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = cmd.spawn().context("cannot start the hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .context("cannot write the hook's input")?;
    }
    let out = child.wait_with_output().context("waiting for the hook")?;
    let took = start.elapsed();
    if !out.status.success() || !out.stderr.is_empty() {
        bail!(
            "the hook exited {} saying {}",
            out.status,
            snippet(&out.stderr)
        );
    }
    if took > CALL_LIMIT {
        bail!("the hook took {took:?}");
    }
    Ok(took)
}

/// One POST of `body` to `path`, over `conn` (kept alive) or a new
/// connection showing `token`.
async fn post(
    addr: SocketAddr,
    token: &str,
    kept: Option<&mut Conn>,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let exchange = async {
        match kept {
            Some(conn) => conn.post(path, body).await,
            None => {
                Conn::connect_bearer(addr, token)
                    .await?
                    .post(path, body)
                    .await
            }
        }
    };
    let (status, answer) = tokio::time::timeout(CALL_LIMIT, exchange)
        .await
        .context("the POST took over 10 s")??;
    let took = start.elapsed();
    if status != StatusCode::OK {
        bail!("{path} answered {status}: {}", snippet(&answer));
    }
    Ok(took)
}

/// `muster token create hookcost --scope admin`: the secret.
fn make_token(muster: &Path, url: &str, home: &Path) -> anyhow::Result<String> {
    let out = hook_command(
        muster.to_str().context("the muster path is not UTF-8")?,
        &["token", "create", "hookcost", "--scope", "admin", "--json"],
        url,
        home,
    )
    .stdin(Stdio::null())
    .output()
    .context("cannot run muster token create")?;
    if !out.status.success() {
        bail!("muster token create failed: {}", snippet(&out.stderr));
    }
    let made: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("muster token create printed no JSON")?;
    made["secret"]
        .as_str()
        .map(str::to_string)
        .context("muster token create printed no secret")
}

/// A session registered by a `session-start` hook: by `muster hook` for
/// the command hooks (the local key), by a POST with the token for the
/// http ones (a token acts only for the sessions it registered).
fn session_start(session: &str, cwd: &Path, transcript: &Path) -> Bytes {
    Bytes::from(
        json!({
            "session_id": session,
            "transcript_path": transcript,
            "cwd": cwd,
            "hook_event_name": "SessionStart",
            "source": "startup",
        })
        .to_string(),
    )
}

fn append_transcript(path: &Path, n: usize) -> anyhow::Result<()> {
    let text: String = "x".repeat(TRANSCRIPT_LINE_BYTES);
    let line = json!({"type": "user", "n": n, "message": {"role": "user", "content": [{"type": "tool_result", "content": text}]}});
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{line}")?;
    Ok(())
}

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    let calls = opts.hookcost_calls;
    let muster: PathBuf = opts.muster_binary.clone();
    let serve = ServeChild::start(&muster).await?;
    let addr = serve.addr;
    let url = format!("http://{addr}");
    let home = tempfile::Builder::new()
        .prefix("muster-bench-hookcost-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let home_path = home.path().to_path_buf();
    let muster_str = muster
        .to_str()
        .context("the muster path is not UTF-8")?
        .to_string();
    eprintln!(
        "hookcost: {calls} calls of each of 2 command and 2 http kinds, taking turns, against muster serve on {addr}…"
    );
    let token = {
        let (m, u, h) = (muster.clone(), url.clone(), home_path.clone());
        tokio::task::spawn_blocking(move || make_token(&m, &u, &h)).await??
    };
    let cwd = home_path.clone();
    let command_session = "bench-hookcost-command";
    let http_session = "bench-hookcost-http";
    let command_transcript = home_path.join("command.jsonl");
    let http_transcript = home_path.join("http.jsonl");
    for t in [&command_transcript, &http_transcript] {
        append_transcript(t, 0)?;
    }
    // Register both sessions the way their hooks would.
    {
        let body = session_start(command_session, &cwd, &command_transcript);
        let cmd = hook_command(
            &muster_str,
            &["hook", "session-start", "--harness", "claude"],
            &url,
            &home_path,
        );
        tokio::task::spawn_blocking(move || run_hook(cmd, &body))
            .await?
            .context("the command session-start hook failed")?;
        let body = session_start(http_session, &cwd, &http_transcript);
        post(
            addr,
            &token,
            None,
            "/hook/session-start?harness=claude",
            body,
        )
        .await
        .context("the http session-start hook failed")?;
    }
    let command_body = payload(command_session, &cwd, &command_transcript);
    let http_body = payload(http_session, &cwd, &http_transcript);
    let path = "/hook/post-tool-use?harness=claude";
    let mut kept = Conn::connect_bearer(addr, &token).await?;
    let shell_line = format!("{muster_str} hook post-tool-use --harness claude");

    let mut timings: Vec<Timings> = Vec::new();
    for _ in KINDS {
        timings.push(Timings::new()?);
    }
    // CPU of each kind's processes (the command hooks'), and how many ran.
    let mut cpu = [Duration::ZERO; 4];
    let mut cpu_calls = [0u64; 4];
    for round in 0..WARMUP_CALLS + calls {
        let recorded = round >= WARMUP_CALLS;
        for (i, kind) in KINDS.into_iter().enumerate() {
            let took = match kind {
                Kind::Shell | Kind::Direct => {
                    append_transcript(&command_transcript, round + 1)?;
                    let cmd = if kind == Kind::Shell {
                        hook_command("sh", &["-c", &shell_line], &url, &home_path)
                    } else {
                        hook_command(
                            &muster_str,
                            &["hook", "post-tool-use", "--harness", "claude"],
                            &url,
                            &home_path,
                        )
                    };
                    let body = command_body.clone();
                    let (took, used) = tokio::task::spawn_blocking(move || {
                        let before = children_cpu();
                        let took = run_hook(cmd, &body);
                        (took, children_cpu().saturating_sub(before))
                    })
                    .await?;
                    if recorded && took.is_ok() {
                        cpu[i] += used;
                        cpu_calls[i] += 1;
                    }
                    took
                }
                Kind::HttpNew => post(addr, &token, None, path, http_body.clone()).await,
                Kind::HttpKept => {
                    post(addr, &token, Some(&mut kept), path, http_body.clone()).await
                }
            };
            if recorded {
                timings[i].record(took);
            } else if let Err(e) = took {
                bail!("a warm-up call ({}) failed: {e:#}", kind.label());
            }
        }
    }
    serve.stop().await?;
    drop(home);

    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut by_kind = serde_json::Map::new();
    for (kind, t) in KINDS.into_iter().zip(&timings) {
        rows.push(Row::info(
            format!("hookcost: {}: p50 / p99", kind.label()),
            format!("{} / {}", fmt_us(t.q(0.50)), fmt_us(t.q(0.99))),
        ));
        if t.errors > 0 {
            errors.push(format!(
                "{} {} calls failed; first: {}",
                t.errors,
                kind.label(),
                t.first_error.clone().unwrap_or_default()
            ));
        }
        by_kind.insert(
            kind.key().into(),
            json!({
                "calls": t.hist.len(),
                "p50_us": r1(t.q(0.50)),
                "p99_us": r1(t.q(0.99)),
                "max_us": t.hist.max(),
                "errors": t.errors,
            }),
        );
    }
    let (shell, http_new) = (&timings[0], &timings[2]);
    let per_tool_call = |t: &Timings| 2.0 * t.q(0.50);
    rows.push(Row::info(
        "hookcost: per tool call (PreToolUse + PostToolUse), p50: command / http",
        format!(
            "{} / {}",
            fmt_us(per_tool_call(shell)),
            fmt_us(per_tool_call(http_new))
        ),
    ));
    rows.push(Row::info(
        "hookcost: saved per tool call by http hooks (p50)",
        fmt_us(per_tool_call(shell) - per_tool_call(http_new)),
    ));
    let cpu_per_call = |i: usize| {
        if cpu_calls[i] > 0 {
            cpu[i].as_secs_f64() * 1e6 / cpu_calls[i] as f64
        } else {
            0.0
        }
    };
    rows.push(Row::info(
        "hookcost: CPU per command hook (its processes, user + system): sh -c / direct",
        format!("{} / {}", fmt_us(cpu_per_call(0)), fmt_us(cpu_per_call(1))),
    ));
    let failed: u64 = timings.iter().map(|t| t.errors).sum();
    rows.push(Row::new(
        "hookcost: failed calls",
        thousands(failed),
        "0",
        Verdict::check(failed == 0),
    ));
    let json = json!({
        "calls_per_kind": calls,
        "payload_bytes": command_body.len(),
        "by_kind": by_kind,
        "per_tool_call_p50_us": {
            "command": r1(per_tool_call(shell)),
            "http": r1(per_tool_call(http_new)),
        },
        "command_cpu_us_per_call": {
            "sh": r1(cpu_per_call(0)),
            "direct": r1(cpu_per_call(1)),
        },
        "errors": failed,
    });
    Ok(Section {
        name: "hookcost",
        json,
        rows,
        errors,
    })
}

/// CPU time (user + system) of this process's children that have exited
/// and been waited for.
fn children_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
