//! The daemon starts on first use. When a client (a command, `muster hook`,
//! `muster mcp`) finds nothing listening at a loopback `http://` daemon
//! address, it starts `muster serve` for that address and its data
//! directory, detached from the client (a session of its own, stdin from
//! /dev/null, stdout and stderr appended to `<data dir>/muster.log`), waits
//! for it to answer (bounded), and goes on.
//!
//! Never two: starting is done under `<data dir>/autostart.lock`, and under
//! it the address is asked again (another client may have started it
//! meanwhile) and the daemon's own lock (`daemon_lock`) is asked whether a
//! daemon holds the directory already, perhaps still starting, perhaps at
//! another address. A racing caller waits on the lock, then finds the
//! daemon answering.
//!
//! Only for a plain `http://` address whose host is loopback, and only when
//! it refused the connection: a TLS daemon, a 401, a timeout or another
//! machine's address are never "nothing there". `MUSTER_AUTOSTART=0` (or
//! off, false, no) turns it off.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{self, Env};
use crate::daemon_lock::{self, FileLock};

/// The environment variable that turns auto-start off.
pub const ENV: &str = "MUSTER_AUTOSTART";
/// The daemon's log, in its data directory, when a client started it.
pub const LOG_FILE: &str = "muster.log";
/// Held while a client decides whether to start a daemon, and starts it.
const START_LOCK: &str = "autostart.lock";
/// How long a client command waits for a daemon it started to answer.
pub const CLIENT_WAIT: Duration = Duration::from_secs(10);
/// A log over this size is moved to `muster.log.1` before the next start.
const LOG_ROTATE_BYTES: u64 = 8 * 1024 * 1024;
const POLL: Duration = Duration::from_millis(25);

/// Whether the value of `MUSTER_AUTOSTART` allows auto-start: yes unless
/// it says 0, off, false or no.
pub fn allowed(value: Option<&str>) -> bool {
    !value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        )
    })
}

/// The address to listen on for the daemon at `url`, when auto-start may
/// serve it: `http://` (no TLS to set up) with a loopback host. `localhost`
/// is served on 127.0.0.1.
pub fn bind_for(url: &str) -> Option<SocketAddr> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if parsed.scheme() != "http" || !parsed.path().trim_matches('/').is_empty() {
        return None;
    }
    let host = parsed.host_str()?;
    let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?
    };
    ip.is_loopback()
        .then(|| SocketAddr::new(ip, parsed.port_or_known_default().unwrap_or(80)))
}

/// How a client would start the daemon it needs: for which address, with
/// which data directory, by which program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The daemon URL, as the client's list has it.
    pub url: String,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// This muster.
    pub exe: PathBuf,
}

/// What came of asking for a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This call started it, and it answers.
    Started { pid: u32 },
    /// One answers that this call did not start (another caller did).
    Running,
    /// None answers; why, in a phrase that follows "connection refused; ".
    Failed(String),
}

impl Plan {
    /// The plan for a client of `urls` (one address or a team's list),
    /// from this process's environment: `None` when auto-start is off, no
    /// address qualifies, or there is no data directory.
    pub fn for_client(urls: &str, env: &Env) -> Option<Plan> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Plan::choose(
            urls,
            var(ENV).as_deref(),
            var("MUSTER_DATA_DIR").map(PathBuf::from),
            env,
            std::env::current_exe().ok()?,
        )
    }

    /// [`Plan::for_client`] with its inputs given: the first address of the
    /// list that auto-start may serve, the data directory `muster serve`
    /// would use (`MUSTER_DATA_DIR`, else the default).
    pub fn choose(
        urls: &str,
        autostart: Option<&str>,
        data_dir: Option<PathBuf>,
        env: &Env,
        exe: PathBuf,
    ) -> Option<Plan> {
        if !cfg!(unix) || !allowed(autostart) {
            return None;
        }
        let (url, bind) = config::split_urls(urls).find_map(|u| Some((u, bind_for(u)?)))?;
        let data_dir = data_dir.or_else(|| config::default_data_dir(env))?;
        Some(Plan {
            url: url.to_string(),
            bind,
            data_dir,
            exe,
        })
    }

    /// The `muster serve` arguments for this plan.
    pub fn serve_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "serve".into(),
            "--bind".into(),
            self.bind.to_string().into(),
            "--data-dir".into(),
            self.data_dir.clone().into(),
            "--autostarted".into(),
        ]
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// Makes sure a daemon answers at the address by `deadline`, starting
    /// one if nothing listens there and no daemon holds the data directory.
    /// Blocking: async callers run it on a blocking thread.
    pub fn ensure(&self, deadline: Instant) -> Outcome {
        if let Err(e) = create_private_dir(&self.data_dir) {
            return Outcome::Failed(format!(
                "cannot create the data directory {} to start a daemon: {e}",
                self.data_dir.display()
            ));
        }
        let lock_path = self.data_dir.join(START_LOCK);
        let _starting = match FileLock::exclusive_until(&lock_path, deadline) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                return Outcome::Failed(
                    "another muster is starting the daemon, and it was not up in time".into(),
                )
            }
            Err(e) => return Outcome::Failed(format!("cannot lock {}: {e}", lock_path.display())),
        };
        match probe(self.bind, deadline) {
            Probe::Answers => return Outcome::Running,
            Probe::Refused => {}
            Probe::Other(why) => {
                return Outcome::Failed(format!(
                "{} takes connections but is no muster daemon answering ({why}); nothing started",
                self.bind
            ))
            }
        }
        if let Some(running) = daemon_lock::running(&self.data_dir) {
            return self.wait_for_other(&running, deadline);
        }
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Outcome::Failed(format!("cannot start `{} serve`: {e}", self.exe.display()))
            }
        };
        let pid = child.id();
        let up = self.wait_until_up(deadline, Some(&mut child));
        // Reap it if it ever exits while this process lives (a shim lives long).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        match up {
            Ok(()) => Outcome::Started { pid },
            Err(why) => Outcome::Failed(format!(
                "a daemon was started (pid {pid}, log {}) but {why}",
                self.log_path().display()
            )),
        }
    }

    /// A daemon holds the data directory but does not answer here yet: wait
    /// for it, unless it listens elsewhere.
    fn wait_for_other(&self, running: &daemon_lock::Running, deadline: Instant) -> Outcome {
        let elsewhere = running
            .addr()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .filter(|addr| *addr != self.bind);
        if let Some(addr) = elsewhere {
            return Outcome::Failed(format!(
                "the muster daemon on its data directory {} listens at http://{addr}, not here \
                 ({}); point MUSTER_URL at it, or give a daemon for {} a data directory of its own \
                 (MUSTER_DATA_DIR)",
                self.data_dir.display(),
                running.describe(),
                self.url
            ));
        }
        match self.wait_until_up(deadline, None) {
            Ok(()) => Outcome::Running,
            Err(why) => Outcome::Failed(format!(
                "the daemon on {} ({}) is starting, but {why}",
                self.data_dir.display(),
                running.describe()
            )),
        }
    }

    /// Polls the address until it answers, `child` exits, or `deadline`.
    fn wait_until_up(
        &self,
        deadline: Instant,
        mut child: Option<&mut Child>,
    ) -> Result<(), String> {
        loop {
            if let Probe::Answers = probe(self.bind, deadline) {
                return Ok(());
            }
            if let Some(child) = child.as_deref_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let said = last_line(&self.log_path())
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default();
                    return Err(format!("it exited ({status}){said}"));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("it did not answer in time".to_string());
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    /// `muster serve` for this plan, detached, its output appended to the log.
    fn spawn(&self) -> std::io::Result<Child> {
        use std::io::Write;
        let mut log = open_log(&self.log_path())?;
        writeln!(
            log,
            "muster: started on first use by pid {} for {}",
            std::process::id(),
            self.url
        )?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(self.serve_args())
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        detach(&mut cmd);
        cmd.spawn()
    }
}

/// A session of its own: no terminal's hangup, no harness's kill of its
/// process group, reaches the daemon.
#[cfg(unix)]
fn detach(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn detach(_: &mut Command) {}

/// What is at a daemon address.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// An HTTP answer to `GET /healthz`: a daemon serving.
    Answers,
    /// Nothing listens there.
    Refused,
    /// Something else: a connect that timed out, no HTTP answer.
    Other(String),
}

/// Asks `GET /healthz` at `addr`, waiting at most a second and never past
/// `deadline`. A daemon that has bound its port but is still loading its
/// state answers once it has: the request waits in the port's backlog.
fn probe(addr: SocketAddr, deadline: Instant) -> Probe {
    use std::io::{Read, Write};
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut stream = match TcpStream::connect_timeout(&addr, wait) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Probe::Refused,
        Err(e) => return Probe::Other(e.to_string()),
    };
    let _ = stream.set_read_timeout(Some(wait));
    let _ = stream.set_write_timeout(Some(wait));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Probe::Other(e.to_string());
    }
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Probe::Other(e.to_string()),
        }
    }
    if head[..got].starts_with(b"HTTP/1.") {
        Probe::Answers
    } else {
        Probe::Other("no HTTP answer".to_string())
    }
}

/// The data directory, only its owner's (as the daemon makes it).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The log, opened to append (0600), moved aside first when it grew large.
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The log's last non-empty line (what a daemon that exited said last).
fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(crate::output::clean(line.trim(), false))
}

/// The stderr note a client command prints after starting a daemon.
pub fn started_note(plan: &Plan, pid: u32) -> String {
    format!(
        "muster: no daemon was running at {}, so one was started (pid {pid}, data in {}, log {}; \
         {ENV}=0 turns this off, `muster service install` runs it as a service)",
        plan.url,
        plan.data_dir.display(),
        plan.log_path().display()
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn only_plain_loopback_addresses_are_started() {
        // Proves auto-start serves http:// on a loopback host (localhost on
        // 127.0.0.1, IPv6 ::1, the default port 80), and never https://, a
        // host name, or another machine's address.
        let addr = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(bind_for("http://127.0.0.1:7420"), addr("127.0.0.1:7420"));
        assert_eq!(bind_for("http://localhost:7421"), addr("127.0.0.1:7421"));
        assert_eq!(bind_for("http://[::1]:7422"), addr("[::1]:7422"));
        assert_eq!(bind_for("http://127.0.0.2"), addr("127.0.0.2:80"));
        assert_eq!(bind_for("https://127.0.0.1:7420"), None);
        assert_eq!(bind_for("http://10.0.0.2:7420"), None);
        assert_eq!(bind_for("http://team.example:7420"), None);
        assert_eq!(bind_for("not a url"), None);
    }

    #[test]
    fn the_switch_is_on_unless_it_says_off() {
        // Proves MUSTER_AUTOSTART unset or anything else leaves it on, and
        // 0/off/false/no (any case) turn it off.
        for on in [None, Some("1"), Some("on"), Some("yes")] {
            assert!(allowed(on), "{on:?}");
        }
        for off in ["0", "off", "OFF", "false", "no", " 0 "] {
            assert!(!allowed(Some(off)), "{off:?}");
        }
    }

    #[test]
    fn the_plan_is_the_first_loopback_address_and_the_daemons_data_dir() {
        // Proves the plan takes the first address of a list that may be
        // started, MUSTER_DATA_DIR over the default data directory, and
        // that turning it off, or a list of none, makes no plan.
        let env = Env {
            home: Some("/home/a".into()),
            ..Env::default()
        };
        let exe = PathBuf::from("/bin/muster");
        let plan = Plan::choose(
            "https://team:7420,http://127.0.0.1:7421,http://[::1]:7422",
            None,
            None,
            &env,
            exe.clone(),
        )
        .unwrap();
        assert_eq!(plan.url, "http://127.0.0.1:7421");
        assert_eq!(plan.bind, "127.0.0.1:7421".parse().unwrap());
        assert_eq!(plan.data_dir, PathBuf::from("/home/a/.local/state/muster"));
        assert_eq!(
            plan.serve_args(),
            [
                "serve",
                "--bind",
                "127.0.0.1:7421",
                "--data-dir",
                "/home/a/.local/state/muster",
                "--autostarted"
            ]
        );
        let given = Plan::choose(
            "http://127.0.0.1:1",
            None,
            Some("/d".into()),
            &env,
            exe.clone(),
        );
        assert_eq!(given.unwrap().data_dir, PathBuf::from("/d"));
        assert_eq!(
            Plan::choose("http://127.0.0.1:1", Some("0"), None, &env, exe.clone()),
            None
        );
        assert_eq!(
            Plan::choose("https://127.0.0.1:1,http://team:2", None, None, &env, exe),
            None
        );
    }

    #[test]
    fn a_closed_port_is_refused_and_an_open_non_http_one_is_not() {
        // Proves the probe tells "nothing listens" from "something that is
        // not an HTTP server listens", so only the first starts a daemon.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let soon = Instant::now() + Duration::from_millis(500);
        assert_eq!(probe(port, soon), Probe::Refused);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(b"SSH-2.0-x\r\n");
        });
        assert!(matches!(probe(addr, soon), Probe::Other(_)));
    }
}
