//! The local key: how a client on this machine proves it runs as the
//! daemon's user, with no setup. Any Unix user can reach a loopback port,
//! so the port alone proves nothing; a file only the daemon's user can read
//! does.
//!
//! Where: beside the daemon's Unix socket, `<runtime dir>/muster-<uid>/<port>.key`
//! (see [`unix_socket`](crate::unix_socket)): a directory only its owner can
//! enter, named by port, so a client that knows only the daemon's URL finds
//! the key with no discovery step. The file is 0600 and holds 64 hex digits
//! (256 random bits), new at every start and removed at the stop. Clients
//! read it at every connection, so they follow a restart, and send it as the `x-muster-key` header, and only to a loopback
//! address: the key never leaves the machine.

use std::path::{Path, PathBuf};

/// The request header that carries the key.
pub const HEADER: &str = "x-muster-key";

/// Hex digits in a key.
const KEY_HEX_LEN: usize = 64;

/// The key file of the daemon listening on `port`, in `dir`.
pub fn path_for(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("{port}.key"))
}

/// The daemon's side: a new key for `port` in `dir` (made 0700 if
/// missing), replacing any a killed daemon left there. A new key at every
/// start, and none on disk while no daemon runs: clients send the key to
/// whatever listens on the port, and another user who took the port while
/// the daemon was down would learn only a key that no daemon takes.
#[cfg(unix)]
pub fn create(dir: &Path, port: u16) -> Result<KeyFile, String> {
    crate::unix_socket::ensure_private_dir(dir)?;
    let path = path_for(dir, port);
    let secret = fresh_key()?;
    write_private(&path, &secret)
        .map_err(|e| format!("cannot write the local key {}: {e}", path.display()))?;
    Ok(KeyFile { path, secret })
}

/// The daemon's key and its file; the file is removed when the daemon stops.
pub struct KeyFile {
    pub path: PathBuf,
    pub secret: String,
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        // Only our own: a file another daemon wrote since is left alone.
        #[cfg(unix)]
        if read_private(&self.path).is_some_and(|k| k == self.secret) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A client's side: the key to show the daemon at `url`, if that daemon is
/// on this machine and its key is readable here (as it is for its user).
pub fn for_url(url: &str) -> Option<String> {
    #[cfg(unix)]
    {
        let port = loopback_port(url)?;
        let dir = crate::unix_socket::default_dir();
        if !crate::unix_socket::is_private_dir(&dir) {
            return None;
        }
        read_private(&path_for(&dir, port))
    }
    #[cfg(not(unix))]
    {
        let _ = url;
        None
    }
}

/// The port of a URL whose host is a loopback address, `None` for any
/// other host (the key is never sent off the machine).
fn loopback_port(url: &str) -> Option<u16> {
    let uri: axum::http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    uri.port_u16().or(match uri.scheme_str() {
        Some("http" | "ws") => Some(80),
        Some("https" | "wss") => Some(443),
        _ => None,
    })
}

/// The key in `path` if the file is a regular file of this user's that no
/// one else may read, holding a well-formed key.
#[cfg(unix)]
fn read_private(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    let private =
        meta.is_file() && meta.uid() == crate::unix_socket::uid() && meta.mode() & 0o077 == 0;
    if !private {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let key = text.trim();
    let well_formed = key.len() == KEY_HEX_LEN && key.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| key.to_string())
}

/// 256 bits from the operating system's generator, as hex.
fn fresh_key() -> Result<String, String> {
    let mut bytes = [0u8; KEY_HEX_LEN / 2];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot draw a random key: {e}"))?;
    Ok(hex(&bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `key` to `path` as 0600 from its first byte: into a new file
/// beside it, then renamed over it, so a reader never sees half a key and
/// a file someone else made is never written through.
#[cfg(unix)]
fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("key.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{key}\n").as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Whether `given` is `secret`, in time that does not depend on where they
/// first differ (a remote guesser learns nothing from how fast a wrong key
/// is refused).
pub fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn each_start_makes_a_new_private_key_and_the_stop_removes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("muster-keys");
        let first = create(&dir, 4242).unwrap();
        assert_eq!(first.secret.len(), 64);
        let path = dir.join("4242.key");
        assert_eq!(first.path, path);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(read_private(&path).as_deref(), Some(first.secret.as_str()));
        // A killed daemon's key (never dropped) is replaced by the next one's.
        let killed = first.secret.clone();
        std::mem::forget(first);
        let second = create(&dir, 4242).unwrap();
        assert_ne!(second.secret, killed);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["4242.key"], "no temporary files are left");
        drop(second);
        assert!(!path.exists(), "the key goes with the daemon");
    }

    #[test]
    fn a_key_file_others_could_read_or_a_malformed_one_is_not_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("1.key");
        std::fs::write(&path, format!("{}\n", "a".repeat(64))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&path), Some("a".repeat(64)));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_private(&path), None, "readable by others: no secret");
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&path), None);
    }

    #[test]
    fn only_loopback_urls_get_a_port_to_look_up() {
        assert_eq!(loopback_port("http://127.0.0.1:7420"), Some(7420));
        assert_eq!(loopback_port("ws://localhost:9/ws"), Some(9));
        assert_eq!(loopback_port("http://[::1]:5"), Some(5));
        assert_eq!(loopback_port("http://127.8.9.1"), Some(80));
        assert_eq!(loopback_port("http://10.0.0.2:7420"), None);
        assert_eq!(loopback_port("https://team.example:443"), None);
        assert_eq!(loopback_port("not a url"), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }
}
