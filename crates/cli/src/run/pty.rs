//! The harness under a pseudo-terminal: finding the program, spawning it on
//! a pty (portable-pty does the setsid / controlling-tty work), copying bytes
//! both ways untouched, and reading its exit status.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

use super::typing::{lock, InputClock, SharedWriter};

/// Exit codes a shell would give for a program it cannot run.
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// Why the program cannot be started, worded for the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramError {
    NotFound(String),
    NotExecutable(PathBuf),
}

impl ProgramError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ProgramError::NotFound(_) => EXIT_NOT_FOUND,
            ProgramError::NotExecutable(_) => EXIT_NOT_EXECUTABLE,
        }
    }
}

impl std::fmt::Display for ProgramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgramError::NotFound(name) if name.contains('/') => {
                write!(f, "{name}: no such file")
            }
            ProgramError::NotFound(name) => write!(
                f,
                "{name}: command not found on PATH (is the harness installed?)"
            ),
            ProgramError::NotExecutable(path) => {
                write!(f, "{}: not an executable file", path.display())
            }
        }
    }
}

/// Finds `name` as a shell would: a name with a `/` is a path (relative to
/// `cwd`), anything else is looked up in `path` (the PATH value). Checked
/// here, before the terminal is touched, so a typo gets a clear message and
/// exit 127 instead of a pty that flashes and dies.
pub fn find_program(name: &str, path: Option<&OsStr>, cwd: &Path) -> Result<PathBuf, ProgramError> {
    if name.is_empty() {
        return Err(ProgramError::NotFound(name.to_string()));
    }
    if name.contains('/') {
        let candidate = cwd.join(name);
        return match classify(&candidate) {
            Some(true) => Ok(candidate),
            Some(false) => Err(ProgramError::NotExecutable(candidate)),
            None => Err(ProgramError::NotFound(name.to_string())),
        };
    }
    let mut not_executable = None;
    for dir in std::env::split_paths(path.unwrap_or_default()) {
        // An empty PATH entry means the current directory.
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(name);
        match classify(&candidate) {
            Some(true) => return Ok(candidate),
            Some(false) => not_executable = not_executable.or(Some(candidate)),
            None => {}
        }
    }
    Err(match not_executable {
        Some(path) => ProgramError::NotExecutable(path),
        None => ProgramError::NotFound(name.to_string()),
    })
}

/// `Some(true)`: an executable file; `Some(false)`: exists but cannot be run; `None`: absent.
fn classify(path: &Path) -> Option<bool> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return Some(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(meta.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        Some(true)
    }
}

/// The running harness.
pub struct Harness {
    /// Kept open for the whole run: closing the master hangs the child up.
    pub master: Box<dyn MasterPty + Send>,
    pub child: Box<dyn Child + Send + Sync>,
    pub reader: Box<dyn Read + Send>,
    pub writer: SharedWriter,
    pub pid: Option<u32>,
}

/// Spawns `program args` (`program` as [`find_program`] resolved it) on a
/// new pty of `size`, in `cwd`, with our environment plus `extra_env`.
pub fn spawn(
    program: &Path,
    args: &[OsString],
    cwd: &Path,
    extra_env: &[(&str, String)],
    size: PtySize,
) -> anyhow::Result<Harness> {
    let pair = native_pty_system().openpty(size)?;
    let mut cmd = CommandBuilder::new(program);
    cmd.args(args);
    // portable-pty starts in $HOME unless told otherwise; a harness works in
    // the directory it was started from.
    cmd.cwd(cwd);
    for (key, value) in extra_env {
        cmd.env(key, value);
    }
    let child = pair.slave.spawn_command(cmd)?;
    // Our copy of the slave must go, or the master never sees the child's end.
    drop(pair.slave);
    let reader = pair.master.try_clone_reader()?;
    let writer: SharedWriter = Arc::new(std::sync::Mutex::new(pair.master.take_writer()?));
    let pid = child.process_id();
    Ok(Harness {
        master: pair.master,
        child,
        reader,
        writer,
        pid,
    })
}

/// The code `muster run` exits with: the child's, or 128 + the signal that killed it.
#[cfg(unix)]
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

/// Waits for the child and returns its exit code.
pub fn wait(mut child: Box<dyn Child + Send + Sync>) -> i32 {
    // portable-pty's own status keeps only the signal's name; the std
    // status underneath has its number, which 128+N needs.
    #[cfg(unix)]
    {
        let any: &mut dyn Child = &mut *child;
        if let Some(std_child) = any.downcast_mut::<std::process::Child>() {
            return match std_child.wait() {
                Ok(status) => exit_code(status),
                Err(e) => {
                    tracing::warn!("cannot wait for the harness: {e}");
                    1
                }
            };
        }
    }
    match child.wait() {
        Ok(status) => status.exit_code() as i32,
        Err(e) => {
            tracing::warn!("cannot wait for the harness: {e}");
            1
        }
    }
}

/// Copies our stdin to the pty, stamping the input clock before each write
/// (so a wake under way sees it), on a thread of its own (reads block).
/// When stdin is not a terminal and ends, the child is sent end-of-file.
pub fn copy_stdin(writer: SharedWriter, clock: Arc<InputClock>, stdin_is_tty: bool) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        // As large as std's buffer, so reads go straight through it.
        let mut buf = vec![0u8; 16 * 1024];
        let mut last_byte = b'\n';
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            clock.mark(Instant::now());
            let mut pty = lock(&writer);
            if pty.write_all(&buf[..n]).and_then(|_| pty.flush()).is_err() {
                return;
            }
            last_byte = buf[n - 1];
        }
        if !stdin_is_tty {
            send_eof(&writer, last_byte);
        }
    });
}

/// Ends the child's input the way a terminal does: Ctrl-D at the start of a
/// line (a second one if the last line was not finished, since the first
/// only hands over that partial line).
fn send_eof(writer: &SharedWriter, last_byte: u8) {
    const EOT: u8 = 0x04;
    let mut pty = lock(writer);
    let eof: &[u8] = if last_byte == b'\n' {
        &[EOT]
    } else {
        &[EOT, EOT]
    };
    let _ = pty.write_all(eof).and_then(|_| pty.flush());
}

/// Copies the pty's output to our stdout byte for byte; says on `done` when
/// the child's side is closed.
pub fn copy_output(
    mut reader: Box<dyn Read + Send>,
    done: std_mpsc::Sender<()>,
    output: Arc<InputClock>,
) {
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    output.mark(std::time::Instant::now());
                    if stdout
                        .write_all(&buf[..n])
                        .and_then(|_| stdout.flush())
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_like_a_shell_finds_them() {
        // Proves PATH lookup, paths with a slash, and the 127/126 distinction for missing and non-executable files.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let plain = bin.join("plain");
        std::fs::write(&plain, "data").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let path = std::env::join_paths(["/nonexistent-dir", bin.to_str().unwrap()]).unwrap();
        let cwd = dir.path();
        assert_eq!(find_program("tool", Some(&path), cwd), Ok(tool.clone()));
        assert_eq!(
            find_program("bin/tool", None, cwd),
            Ok(cwd.join("bin/tool"))
        );
        let missing = find_program("no-such-harness", Some(&path), cwd).unwrap_err();
        assert_eq!(missing, ProgramError::NotFound("no-such-harness".into()));
        assert_eq!(missing.exit_code(), 127);
        assert_eq!(
            missing.to_string(),
            "no-such-harness: command not found on PATH (is the harness installed?)"
        );
        assert_eq!(
            find_program("", Some(&path), cwd).unwrap_err().exit_code(),
            127
        );
        #[cfg(unix)]
        {
            let err = find_program("plain", Some(&path), cwd).unwrap_err();
            assert_eq!(err, ProgramError::NotExecutable(plain));
            assert_eq!(err.exit_code(), 126);
        }
        assert_eq!(
            find_program("./missing", Some(&path), cwd)
                .unwrap_err()
                .to_string(),
            "./missing: no such file"
        );
        // A directory is not a program.
        assert_eq!(
            find_program("bin", Some(&std::env::join_paths([cwd]).unwrap()), cwd)
                .unwrap_err()
                .exit_code(),
            126
        );
    }

    #[cfg(unix)]
    #[test]
    fn exit_codes_are_the_childs_or_128_plus_the_signal() {
        // Proves the exit code rule on real statuses: a plain exit passes through, death by SIGTERM (15) becomes 143.
        let status = |script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .status()
                .unwrap()
        };
        assert_eq!(exit_code(status("exit 0")), 0);
        assert_eq!(exit_code(status("exit 7")), 7);
        assert_eq!(exit_code(status("kill -TERM $$")), 143);
        assert_eq!(exit_code(status("kill -KILL $$")), 137);
    }
}
