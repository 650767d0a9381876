//! One daemon per data directory. `muster serve` holds an exclusive lock on
//! `<data dir>/daemon.lock` for as long as it runs, and writes into that
//! file who it is (its PID, the address it listens on, whether a client
//! started it on first use). A second `muster serve` on the same directory
//! finds the lock taken and refuses, naming the first; the clients'
//! auto-start (`autostart`) asks the same lock whether a daemon is there.
//!
//! The lock is `flock(2)`: the kernel drops it when its holder exits, even
//! by `kill -9`, so a lock file left behind never blocks the next daemon,
//! and its contents mean something only while the lock is held. The file
//! itself stays: removing it would let two daemons lock two files of one name.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The daemon's lock file in a data directory.
pub const FILE_NAME: &str = "daemon.lock";

/// How long `muster serve` retries a taken lock before it refuses: a
/// client asking whether a daemon runs holds it for an instant.
const ACQUIRE_PATIENCE: Duration = Duration::from_millis(1_000);
const RETRY_EVERY: Duration = Duration::from_millis(10);

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// An exclusive lock on one file, held until dropped.
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Takes the lock on `path` (created 0600 if missing) without waiting:
    /// `Ok(None)` when another process holds it.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        Ok(try_flock(&file)?.then_some(FileLock { file }))
    }

    /// Takes the lock on `path`, retrying until `deadline`: `Ok(None)` if it
    /// was still held then.
    pub fn exclusive_until(path: &Path, deadline: Instant) -> io::Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        loop {
            if try_flock(&file)? {
                return Ok(Some(FileLock { file }));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(RETRY_EVERY);
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// `flock(LOCK_EX | LOCK_NB)`: whether this call took the lock.
#[cfg(unix)]
fn try_flock(file: &File) -> io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock only acts on the descriptor, which `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// No `flock` here: every lock is granted (one daemon per directory is then
/// up to the person), and auto-start is off on such platforms.
#[cfg(not(unix))]
fn try_flock(_: &File) -> io::Result<bool> {
    Ok(true)
}

/// Who holds a data directory, as its daemon wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// The address it listens on (`host:port`); `None` while it is starting.
    #[serde(default)]
    pub addr: Option<String>,
    /// Started by a client on first use, not by a person or a service.
    #[serde(default)]
    pub autostarted: bool,
}

/// A daemon that holds a data directory, as another process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub data_dir: PathBuf,
    /// What the holder wrote; `None` if it has not written yet.
    pub holder: Option<Holder>,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.holder.as_ref().map(|h| h.pid)
    }

    pub fn addr(&self) -> Option<&str> {
        self.holder.as_ref().and_then(|h| h.addr.as_deref())
    }

    /// `pid 123, at http://127.0.0.1:7420`, or as much of it as is known.
    pub fn describe(&self) -> String {
        match &self.holder {
            None => "still starting".to_string(),
            Some(Holder {
                pid, addr: None, ..
            }) => format!("pid {pid}, still starting"),
            Some(Holder {
                pid,
                addr: Some(addr),
                ..
            }) => format!("pid {pid}, at http://{addr}"),
        }
    }

    /// What `muster serve` says when this daemon already holds its directory.
    pub fn refusal(&self) -> String {
        let stop = match self.pid() {
            Some(pid) => format!("stop it first (kill {pid})"),
            None => "stop it first".to_string(),
        };
        format!(
            "a muster daemon already runs on the data directory {} ({}); {stop}, or give this one \
             a data directory of its own (--data-dir or MUSTER_DATA_DIR)",
            self.data_dir.display(),
            self.describe()
        )
    }
}

/// The daemon's hold on its data directory, for as long as it runs.
pub struct DaemonLock {
    lock: FileLock,
    holder: Holder,
}

/// Why `muster serve` could not take its data directory.
#[derive(Debug)]
pub enum Refused {
    Running(Running),
    Io(io::Error),
}

impl DaemonLock {
    /// Takes `data_dir` (which must exist) for this process, or says which
    /// daemon holds it.
    pub fn acquire(data_dir: &Path, autostarted: bool) -> Result<DaemonLock, Refused> {
        let path = path_in(data_dir);
        let deadline = Instant::now() + ACQUIRE_PATIENCE;
        match FileLock::exclusive_until(&path, deadline) {
            Ok(Some(lock)) => {
                let mut taken = DaemonLock {
                    lock,
                    holder: Holder {
                        pid: std::process::id(),
                        addr: None,
                        autostarted,
                    },
                };
                taken.write().map_err(Refused::Io)?;
                Ok(taken)
            }
            Ok(None) => Err(Refused::Running(Running {
                data_dir: data_dir.to_path_buf(),
                holder: read_holder(&path),
            })),
            Err(e) => Err(Refused::Io(e)),
        }
    }

    /// Writes down the address the daemon listens on, once it does.
    pub fn listening(&mut self, addr: &std::net::SocketAddr) -> io::Result<()> {
        self.holder.addr = Some(addr.to_string());
        self.write()
    }

    fn write(&mut self) -> io::Result<()> {
        use std::io::{Seek, Write};
        let text = serde_json::to_string(&self.holder).map_err(io::Error::other)?;
        let file = &mut self.lock.file;
        file.set_len(0)?;
        file.seek(io::SeekFrom::Start(0))?;
        file.write_all(format!("{text}\n").as_bytes())?;
        file.sync_data()
    }
}

/// The daemon that holds `data_dir` now, if one does. Holds the lock for an
/// instant when none does (a starting daemon retries meanwhile).
pub fn running(data_dir: &Path) -> Option<Running> {
    let path = path_in(data_dir);
    if !path.exists() {
        return None;
    }
    match FileLock::try_exclusive(&path) {
        Ok(Some(_free)) => None,
        Ok(None) => Some(Running {
            data_dir: data_dir.to_path_buf(),
            holder: read_holder(&path),
        }),
        Err(_) => None,
    }
}

/// What the holder wrote into the lock file, if it is readable yet.
pub fn read_holder(path: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(text.trim()).ok()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_on_one_directory_is_refused_with_the_first_named() {
        // Proves the lock is exclusive and says who holds it: the first
        // holder's pid and, once written, its address; and that the
        // directory is free again once the holder lets go.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(running(dir.path()), None, "nothing runs yet");
        let mut first = DaemonLock::acquire(dir.path(), true).unwrap();
        first.listening(&"127.0.0.1:7420".parse().unwrap()).unwrap();
        let Err(Refused::Running(seen)) = DaemonLock::acquire(dir.path(), false) else {
            panic!("a second lock was granted");
        };
        let holder = Holder {
            pid: std::process::id(),
            addr: Some("127.0.0.1:7420".into()),
            autostarted: true,
        };
        assert_eq!(seen.holder.as_ref(), Some(&holder));
        assert_eq!(
            seen.refusal(),
            format!(
                "a muster daemon already runs on the data directory {} (pid {}, at \
                 http://127.0.0.1:7420); stop it first (kill {}), or give this one a data \
                 directory of its own (--data-dir or MUSTER_DATA_DIR)",
                dir.path().display(),
                std::process::id(),
                std::process::id()
            )
        );
        assert_eq!(running(dir.path()).and_then(|r| r.holder), Some(holder));
        drop(first);
        assert_eq!(running(dir.path()), None, "the lock goes with its holder");
        assert!(DaemonLock::acquire(dir.path(), false).is_ok());
    }

    #[test]
    fn a_holder_that_wrote_nothing_yet_is_still_starting() {
        // Proves an empty or torn lock file reads as "still starting", not
        // as an error or as a daemon with made-up details.
        let running = Running {
            data_dir: "/d".into(),
            holder: None,
        };
        assert_eq!(running.describe(), "still starting");
        assert!(running.refusal().contains("stop it first, or"));
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        std::fs::write(&path, "{\"pid\": 12").unwrap();
        assert_eq!(read_holder(&path), None);
    }
}
