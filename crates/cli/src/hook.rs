//! `muster hook <event>`: the command hook a harness runs. It forwards the
//! hook JSON to the daemon and prints the answer. It fails open: whatever goes
//! wrong, the harness gets nothing on stdout, one line on stderr, exit 0, and
//! never waits more than `DEADLINE`.

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use clap::Args;
use muster_core::limits::DEFAULT_MAX_REQUEST_BYTES;
use muster_core::protocol::{Harness, HookEvent};
use tokio::time::{timeout_at, Instant};

use crate::autostart::{Outcome, Plan};
use crate::client::transport_reason;
use crate::config::{self, Env};
use crate::transcript;

#[derive(Debug, Args)]
pub struct HookArgs {
    /// Which hook fired
    #[arg(value_parser = crate::names::hook_events())]
    pub event: HookEvent,
    /// Which harness runs the hook (decides the answer's JSON form)
    #[arg(long, value_parser = crate::names::harnesses(), default_value = "claude")]
    pub harness: Harness,
}

/// The most a hook may hold up the harness: stdin, connect and answer together.
pub const DEADLINE: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Of the deadline, what is kept for the hook itself after starting the
/// daemon on first use: waiting for the daemon ends this much earlier.
const AFTER_START: Duration = Duration::from_millis(300);
/// Largest hook input forwarded; the daemon would refuse more anyway.
pub const MAX_INPUT_BYTES: usize = DEFAULT_MAX_REQUEST_BYTES;

/// Why the hook gave up; printed as one line, then the harness carries on.
#[derive(Debug)]
pub enum HookFailure {
    BadUrl(String),
    Runtime(String),
    Internal,
    Input(String),
    InputTooLarge,
    InputTimeout,
    Unreachable {
        url: String,
        reason: String,
    },
    /// A `MUSTER_CA_FILE` that cannot be used, and why.
    TlsSetup(String),
    /// An https:// daemon whose certificate was refused, or that speaks no TLS.
    Tls {
        url: String,
        reason: String,
    },
    Timeout {
        url: String,
    },
    Refused {
        url: String,
        status: reqwest::StatusCode,
        detail: String,
    },
    /// No address of a list took the hook: each one's failure, in order.
    Everywhere(Vec<HookFailure>),
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookFailure::BadUrl(why) => write!(f, "{why}"),
            HookFailure::Runtime(why) => write!(f, "cannot start: {why}"),
            HookFailure::Internal => write!(f, "internal error"),
            HookFailure::Input(why) => write!(f, "cannot read the hook input ({why})"),
            HookFailure::InputTooLarge => {
                write!(f, "hook input is over {} bytes, not sent", MAX_INPUT_BYTES)
            }
            HookFailure::InputTimeout => {
                write!(f, "hook input did not end within {}s", DEADLINE.as_secs())
            }
            HookFailure::Unreachable { url, reason } => {
                write!(f, "daemon unreachable at {url} ({reason})")
            }
            HookFailure::TlsSetup(why) => write!(f, "{why}"),
            HookFailure::Tls { url, reason } => {
                write!(f, "no secure connection to the daemon at {url}: {reason}")
            }
            HookFailure::Timeout { url } => write!(
                f,
                "daemon at {url} did not answer within {}s",
                DEADLINE.as_secs()
            ),
            HookFailure::Refused {
                url,
                status,
                detail,
            } if detail.is_empty() => write!(f, "daemon at {url} answered {status}"),
            HookFailure::Refused {
                url,
                status,
                detail,
            } => write!(f, "daemon at {url} answered {status} ({detail})"),
            HookFailure::Everywhere(failures) => {
                let each: Vec<String> = failures.iter().map(ToString::to_string).collect();
                write!(f, "{}", each.join("; "))
            }
        }
    }
}

/// The one stderr line for a failure.
pub fn failure_line(failure: &HookFailure) -> String {
    let text: String = failure
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("muster hook: {text}; continuing without muster")
}

/// Runs the hook and always returns exit code 0.
pub fn run(args: &HookArgs, url_flag: Option<&str>, env: &Env) -> i32 {
    // Even a bug here must not break the harness: a panic becomes one more failure line.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| forward(args, url_flag, env))
        .unwrap_or(Err(HookFailure::Internal));
    match outcome {
        Ok(body) => {
            if !body.is_empty() {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&body).and_then(|_| out.flush());
            }
        }
        Err(failure) => {
            let _ = writeln!(std::io::stderr(), "{}", failure_line(&failure));
        }
    }
    0
}

fn forward(args: &HookArgs, url_flag: Option<&str>, env: &Env) -> Result<Vec<u8>, HookFailure> {
    // Config problems are for `muster doctor` to report; a hook stays quiet and uses defaults.
    let file = config::load_config(config::config_path(env));
    let (url, _) = config::resolve_url(url_flag, env, &file).map_err(HookFailure::BadUrl)?;
    let (operator, _) = config::resolve_operator(env, &file);
    let token = config::resolve_token(env, &file);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HookFailure::Runtime(e.to_string()))?;
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let request = HookRequest {
        // Set by `muster run` for the harness it runs: binds the session to
        // that run, whose waker can start its turns.
        run: var("MUSTER_RUN_ID"),
        wake: var("MUSTER_WAKE"),
        seen_dir: config::default_data_dir(env).map(|d| d.join("seen")),
        path: format!(
            "/hook/{}?harness={}",
            args.event.as_str(),
            args.harness.as_str()
        ),
        urls: config::split_urls(&url).map(str::to_string).collect(),
        pid: std::os::unix::process::parent_id(),
        host: config::hostname(env),
        operator,
        token,
        autostart: Plan::for_client(&url, env),
    };
    let result = runtime.block_on(async {
        let deadline = Instant::now() + DEADLINE;
        let input = read_stdin(deadline).await?;
        let input = with_seen(input, request.seen_dir.as_deref());
        post(&request, input, deadline).await
    });
    // A stdin reader still blocked must not hold the process; main exits right after.
    runtime.shutdown_background();
    result
}

/// The hook input with what the model has seen added: `muster_seen`, the
/// muster message ids the transcript (`transcript_path`) gained since the
/// last hook plus any in the prompt itself (a channel push that started
/// this turn), and `muster_transcript_read`, whether the transcript could be
/// read — only then does a push missing from it count as dropped. Input
/// that is not a JSON object goes as it is; the daemon says what is wrong.
fn with_seen(input: Vec<u8>, seen_dir: Option<&std::path::Path>) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut payload)) =
        serde_json::from_slice::<serde_json::Value>(&input)
    else {
        return input;
    };
    let transcript = payload
        .get("transcript_path")
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty());
    let from_transcript = transcript
        .zip(seen_dir)
        .and_then(|(path, dir)| transcript::seen_since_last(path.as_ref(), dir));
    let read = from_transcript.is_some();
    let mut seen = from_transcript.unwrap_or_default();
    if let Some(prompt) = payload.get("prompt").and_then(|p| p.as_str()) {
        transcript::ids_in(prompt.as_bytes(), &mut seen);
    }
    if seen.is_empty() && !read {
        return input;
    }
    payload.insert("muster_seen".into(), serde_json::json!(seen));
    payload.insert("muster_transcript_read".into(), serde_json::json!(read));
    serde_json::to_vec(&payload).unwrap_or(input)
}

/// Reads stdin on its own thread, bounded in size and by the deadline.
async fn read_stdin(deadline: Instant) -> Result<Vec<u8>, HookFailure> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read_bounded(std::io::stdin().lock()));
    });
    match timeout_at(deadline, rx).await {
        Err(_) => Err(HookFailure::InputTimeout),
        Ok(Err(_)) => Err(HookFailure::Input("reader stopped".into())),
        Ok(Ok(result)) => result,
    }
}

/// Reads at most `MAX_INPUT_BYTES + 1` bytes; more than the limit is refused, not truncated.
pub fn read_bounded(input: impl Read) -> Result<Vec<u8>, HookFailure> {
    let mut bytes = Vec::new();
    input
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| HookFailure::Input(e.to_string()))?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(HookFailure::InputTooLarge);
    }
    Ok(bytes)
}

pub struct HookRequest {
    pub run: Option<String>,
    pub wake: Option<String>,
    /// Where transcript offsets are kept (see `transcript`).
    pub seen_dir: Option<std::path::PathBuf>,
    /// The daemon's addresses, tried in order (one, or a team's several).
    pub urls: Vec<String>,
    /// The hook's path and query, after an address.
    pub path: String,
    pub pid: u32,
    pub host: String,
    pub operator: String,
    pub token: Option<String>,
    /// How to start the daemon if its loopback address refuses (see `autostart`).
    pub autostart: Option<Plan>,
}

/// Why one address did not answer the hook, and whether the next may be
/// tried.
enum Missed {
    /// No connection was made (refused, no route, connect timed out, TLS
    /// refused): the hook was never sent, so the next address may take it.
    /// `true`: refused, nothing listens there.
    Unconnected(HookFailure, bool),
    /// The daemon took the hook (it may have handed out mail), or the
    /// deadline passed: the hook ends here.
    Final(HookFailure),
}

/// Posts the hook to each address in turn until one takes the connection,
/// all within `deadline`. Each connect is bounded (`CONNECT_TIMEOUT`), so a
/// dead address early in the list leaves the rest most of the budget.
async fn post(req: &HookRequest, body: Vec<u8>, deadline: Instant) -> Result<Vec<u8>, HookFailure> {
    let client = hook_client(&req.urls)?;
    let mut failures = Vec::new();
    let mut refused_at = Vec::new();
    for url in &req.urls {
        let exchange = attempt(&client, req, url, body.clone(), deadline);
        let missed = match timeout_at(deadline, exchange).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(missed)) => missed,
            Err(_) => Missed::Final(HookFailure::Timeout { url: url.clone() }),
        };
        match missed {
            Missed::Unconnected(failure, refused) => {
                if refused {
                    refused_at.push(url.as_str());
                }
                failures.push(failure)
            }
            Missed::Final(failure) => return Err(failure),
        }
    }
    if let Some(plan) = req
        .autostart
        .as_ref()
        .filter(|p| refused_at.contains(&p.url.as_str()))
    {
        match start_and_retry(&client, req, plan, body, deadline).await {
            Ok(answer) => return Ok(answer),
            Err(Started::Failed(failure)) => return Err(failure),
            Err(Started::Not(why)) => {
                if let Some(HookFailure::Unreachable { reason, .. }) = failures
                    .iter_mut()
                    .find(|f| matches!(f, HookFailure::Unreachable { url, .. } if *url == plan.url))
                {
                    reason.push_str("; ");
                    reason.push_str(&why);
                }
            }
        }
    }
    Err(match failures.len() {
        1 => failures.remove(0),
        _ => HookFailure::Everywhere(failures),
    })
}

/// Why the hook did not get its answer from a daemon it started.
enum Started {
    /// No daemon answered in time; why, added to the "refused" failure.
    Not(String),
    /// One did, and the hook failed there.
    Failed(HookFailure),
}

/// Starts the daemon by `plan` (first use), waiting for it no later than
/// `AFTER_START` before the deadline, and posts the hook to it. The daemon
/// keeps starting after the hook has given up, so the next hook finds it.
async fn start_and_retry(
    client: &reqwest::Client,
    req: &HookRequest,
    plan: &Plan,
    body: Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, Started> {
    let wait_until = deadline.checked_sub(AFTER_START).unwrap_or(deadline);
    let asked = plan.clone();
    let until = wait_until.into_std();
    let starting = tokio::task::spawn_blocking(move || asked.ensure(until));
    match timeout_at(deadline, starting).await {
        Ok(Ok(Outcome::Started { .. } | Outcome::Running)) => {}
        Ok(Ok(Outcome::Failed(why))) => return Err(Started::Not(why)),
        Ok(Err(_)) | Err(_) => {
            return Err(Started::Not(
                "a daemon is being started, not up in time".into(),
            ))
        }
    }
    let exchange = attempt(client, req, &plan.url, body, deadline);
    match timeout_at(deadline, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(Missed::Unconnected(failure, _) | Missed::Final(failure))) => {
            Err(Started::Failed(failure))
        }
        Err(_) => Err(Started::Failed(HookFailure::Timeout {
            url: plan.url.clone(),
        })),
    }
}

/// One client for every address: bounded connects, no proxy, TLS set up
/// when any address is `https://`.
fn hook_client(urls: &[String]) -> Result<reqwest::Client, HookFailure> {
    let mut client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .no_proxy()
        .user_agent(concat!("muster-hook/", env!("CARGO_PKG_VERSION")));
    if urls.iter().any(|u| crate::tls::is_tls_url(u)) {
        let tls = crate::tls::client_config().map_err(HookFailure::TlsSetup)?;
        client = client.use_preconfigured_tls(tls);
    }
    client
        .build()
        .map_err(|e| HookFailure::Runtime(e.to_string()))
}

/// The hook posted to the daemon at `url`: its token, and this address's
/// local key.
async fn attempt(
    client: &reqwest::Client,
    req: &HookRequest,
    url: &str,
    body: Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, Missed> {
    let failed = |e: reqwest::Error| {
        let failure = transport_failure(url, &e);
        if e.is_connect() {
            Missed::Unconnected(failure, crate::client::is_refused(&e))
        } else {
            Missed::Final(failure)
        }
    };
    let mut builder = client
        .post(format!("{url}{}", req.path))
        .timeout(deadline.saturating_duration_since(Instant::now()))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-muster-pid", req.pid.to_string())
        .header("x-muster-host", header_safe(&req.host))
        .header("x-muster-operator", header_safe(&req.operator))
        .body(body);
    if let Some(token) = &req.token {
        builder = builder.bearer_auth(token);
    }
    if let Some(key) = muster_daemon::local_key::for_url(url) {
        builder = builder.header(muster_daemon::local_key::HEADER, key);
    }
    if let Some(run) = &req.run {
        builder = builder.header("x-muster-run", header_safe(run));
    }
    if let Some(wake) = &req.wake {
        builder = builder.header("x-muster-wake", header_safe(wake));
    }
    let resp = builder.send().await.map_err(failed)?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(failed)?;
    if !status.is_success() {
        return Err(Missed::Final(HookFailure::Refused {
            url: url.to_string(),
            status,
            detail: error_detail(&bytes),
        }));
    }
    Ok(bytes.to_vec())
}

/// A transport failure at `url`, said as the hook says it.
fn transport_failure(url: &str, e: &reqwest::Error) -> HookFailure {
    let url = url.to_string();
    if let Some(reason) = crate::tls::failure(e) {
        HookFailure::Tls { url, reason }
    } else if e.is_timeout() && !e.is_connect() {
        HookFailure::Timeout { url }
    } else {
        HookFailure::Unreachable {
            url,
            reason: transport_reason(e),
        }
    }
}

/// A header value with anything that is not visible ASCII replaced, so a
/// strange host or operator name cannot make the request invalid.
fn header_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The message of an `ErrorBody`, else the start of the body text.
fn error_detail(bytes: &[u8]) -> String {
    if let Ok(body) = serde_json::from_slice::<muster_core::api::ErrorBody>(bytes) {
        return body.error.message.chars().take(200).collect();
    }
    String::from_utf8_lossy(bytes)
        .trim()
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_over_the_limit_is_refused_whole() {
        // Proves hook input of exactly 1 MiB passes and one byte more is refused rather than truncated.
        assert_eq!(
            read_bounded(&vec![b'x'; MAX_INPUT_BYTES][..])
                .unwrap()
                .len(),
            MAX_INPUT_BYTES
        );
        assert!(matches!(
            read_bounded(&vec![b'x'; MAX_INPUT_BYTES + 1][..]),
            Err(HookFailure::InputTooLarge)
        ));
    }

    #[test]
    fn failure_is_one_line_naming_the_daemon() {
        // Proves the fail-open message is a single line that names the URL, the reason and that work continues.
        let line = failure_line(&HookFailure::Unreachable {
            url: "http://127.0.0.1:9".into(),
            reason: "connection\nrefused".into(),
        });
        assert_eq!(line, "muster hook: daemon unreachable at http://127.0.0.1:9 (connection refused); continuing without muster");
    }

    #[test]
    fn failures_at_every_address_are_one_line() {
        // Proves a list that no daemon took is reported in the one fail-open
        // line, every address with its own reason, in the order tried.
        let line = failure_line(&HookFailure::Everywhere(vec![
            HookFailure::Unreachable {
                url: "http://127.0.0.1:9".into(),
                reason: "connection refused".into(),
            },
            HookFailure::Unreachable {
                url: "http://127.0.0.1:10".into(),
                reason: "timed out".into(),
            },
        ]));
        assert_eq!(line, "muster hook: daemon unreachable at http://127.0.0.1:9 (connection refused); daemon unreachable at http://127.0.0.1:10 (timed out); continuing without muster");
    }

    #[test]
    fn header_values_are_made_safe() {
        // Proves non-ASCII or control characters in host/operator names cannot break the request.
        assert_eq!(header_safe("héllo\nx"), "h?llo?x");
    }
}
