//! The daemon's Unix socket beside its loopback port: the same routes,
//! reached without TCP. The shims' links use it when they find it; a frame
//! over a Unix socket costs the kernel a fraction of one over loopback TCP
//! (no TCP/IP stack, no ACKs, no softirq on the writer's time), and the
//! link carries four frames per delivered message.
//!
//! Where: `<runtime dir>/muster-<uid>/<port>.sock`, the runtime dir being
//! `$XDG_RUNTIME_DIR` or else the system's temp directory. Named by port, so
//! a client that knows only the daemon's URL finds it with no discovery
//! step; in a directory only its owner can enter (0700, owned by the user,
//! checked by both ends), so another local user can neither reach the
//! daemon through it nor put a socket of their own in its place.

use std::path::{Path, PathBuf};

/// The directory a user's daemons put their sockets in (not created here).
#[cfg(unix)]
pub fn default_dir() -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .unwrap_or_else(std::env::temp_dir);
    runtime.join(format!("muster-{}", uid()))
}

/// The socket of the daemon listening on `port`, in `dir`.
pub fn path_for(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("{port}.sock"))
}

#[cfg(unix)]
pub(crate) fn uid() -> u32 {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

/// Whether `dir` is a real directory (not a symlink) owned by this user
/// that nobody else may enter: the only kind a socket is trusted in.
#[cfg(unix)]
pub fn is_private_dir(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid() && m.mode() & 0o077 == 0)
}

/// Makes `dir` (0700) if it is missing, and checks it is one only this
/// user can enter: the socket and the local key are trusted nowhere else.
#[cfg(unix)]
pub fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    if let Err(e) = made {
        return Err(format!("cannot create {}: {e}", dir.display()));
    }
    if !is_private_dir(dir) {
        return Err(format!(
            "{} is not a directory only this user can enter (mode 0700, owned by uid {}); \
             remove it to let muster make its own",
            dir.display(),
            uid()
        ));
    }
    Ok(())
}

/// The socket file the daemon serves on; removed when the daemon stops.
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket for `port` in `dir` (made 0700 if missing). A stale
/// file from a daemon that was killed is replaced; a socket some live
/// process still answers on is left alone, and the daemon serves TCP only.
#[cfg(unix)]
pub fn bind(dir: &Path, port: u16) -> Result<(tokio::net::UnixListener, SocketFile), String> {
    use std::os::unix::fs::PermissionsExt;
    ensure_private_dir(dir)?;
    remove_stale(dir);
    let path = path_for(dir, port);
    if std::fs::symlink_metadata(&path).is_ok() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!("{} is in use by another process", path.display()));
        }
        std::fs::remove_file(&path)
            .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let file = SocketFile { path };
    // The directory already keeps others out; the file says so as well.
    let _ = std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600));
    Ok((listener, file))
}

/// Removes the sockets of daemons that were killed (nobody answers on
/// them), so the directory does not fill up with them.
#[cfg(unix)]
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        let is_socket = path.extension().is_some_and(|x| x == "sock");
        if is_socket && std::os::unix::net::UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn binds_in_a_private_dir_replaces_a_stale_socket_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("muster-sockets");
        let (listener, file) = bind(&dir, 4242).unwrap();
        assert_eq!(file.path(), dir.join("4242.sock"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(file.path()), 0o600);
        // A live socket is not taken over.
        let err = bind(&dir, 4242).err().unwrap();
        assert!(err.contains("in use"), "{err}");
        // A killed daemon's file (nobody listening) is replaced, and any
        // other killed daemon's is swept away.
        drop(listener);
        std::mem::forget(file);
        let (other, other_file) = bind(&dir, 4343).unwrap();
        drop(other);
        std::mem::forget(other_file);
        let (_listener, file) = bind(&dir, 4242).unwrap();
        assert!(
            !dir.join("4343.sock").exists(),
            "a dead daemon's socket is swept"
        );
        let path = file.path().to_path_buf();
        drop(file);
        assert!(!path.exists(), "the socket file goes with the daemon");
    }

    #[test]
    fn a_directory_others_can_enter_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!is_private_dir(&dir));
        let err = bind(&dir, 1).err().unwrap();
        assert!(err.contains("only this user"), "{err}");
        assert!(!dir.join("1.sock").exists());
    }
}
