//! The file operations behind an install: reading, hashing, backups, atomic
//! writes that keep the file's permissions and write through symlinks, and diffs.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The file's bytes, or None if it does not exist.
pub fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Copies `path` to `<path>.muster-backup`, or, if that is taken, to
/// `<path>.muster-backup.<unix seconds>[-n]`; returns where the copy went.
pub fn backup(path: &Path) -> std::io::Result<PathBuf> {
    let plain = with_suffix(path, ".muster-backup");
    let target = if !plain.exists() {
        plain
    } else {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let stamped = with_suffix(&plain, &format!(".{secs}"));
        let mut candidate = stamped.clone();
        let mut n = 1;
        while candidate.exists() {
            candidate = with_suffix(&stamped, &format!("-{n}"));
            n += 1;
        }
        candidate
    };
    // Whole or not at all, as every write here: a kill mid-copy must not
    // leave a torn backup someone would restore from.
    let bytes = std::fs::read(path)?;
    write_new(&target, &bytes, std::fs::metadata(path).ok())?;
    Ok(target)
}

/// Writes `bytes` to a temporary file beside `target`, fsyncs it, gives it
/// `like`'s permissions, and renames it over `target`.
fn write_new(target: &Path, bytes: &[u8], like: Option<std::fs::Metadata>) -> std::io::Result<()> {
    remove_stale_temps(target);
    let tmp = with_suffix(target, &format!(".muster-tmp-{}", std::process::id()));
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        // Created with the old file's permissions from its first byte: a
        // 0600 settings file holding a token is never readable by others,
        // not even while it is being written.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(
                like.as_ref()
                    .map_or(0o644, |m| m.permissions().mode() & 0o7777),
            );
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if let Some(meta) = like {
            // The umask may have narrowed the mode at creation.
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporary files an install killed halfway left beside
/// `target` (`<name>.….muster-tmp-<pid>` of a process that is gone), so
/// they do not pile up. Only where a process's liveness can be read
/// (Unix); elsewhere they are left alone.
pub fn remove_stale_temps(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some((stem, pid)) = file.rsplit_once(".muster-tmp-") else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let ours = format!("{stem}.").starts_with(&prefix);
        if ours && pid != std::process::id() && gone(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether no process `pid` runs now (false where that cannot be told).
fn gone(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill(2) with signal 0 sends nothing; it only checks.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        !alive && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// The directories `create_parent` would have to create for `path`, outermost first.
pub fn missing_parents(path: &Path) -> Vec<PathBuf> {
    let mut missing: Vec<PathBuf> = path
        .ancestors()
        .skip(1)
        .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    missing
}

/// Replaces the file's contents in one step (a temporary file renamed over it),
/// keeping its permissions. A symlinked file is written where the link points.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let target = if path.is_symlink() {
        std::fs::canonicalize(path)?
    } else {
        path.to_path_buf()
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_new(&target, bytes, std::fs::metadata(&target).ok())
}

/// Removes the file (a symlink itself, not its target).
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes the directories install created (given outermost first), innermost
/// first, each only if it is empty.
pub fn remove_empty_dirs(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        // Fails harmlessly when the directory holds anything.
        let _ = std::fs::remove_dir(dir);
    }
}

/// A unified diff of one file, `old` None meaning it does not exist yet and
/// `new` None meaning it goes away.
pub fn diff(path: &Path, old: Option<&str>, new: Option<&str>) -> String {
    let shown = path.display().to_string();
    let (old_name, new_name) = match (old, new) {
        (None, _) => ("/dev/null".to_string(), format!("b{}", prefixed(&shown))),
        (_, None) => (format!("a{}", prefixed(&shown)), "/dev/null".to_string()),
        _ => (
            format!("a{}", prefixed(&shown)),
            format!("b{}", prefixed(&shown)),
        ),
    };
    similar::TextDiff::from_lines(old.unwrap_or(""), new.unwrap_or(""))
        .unified_diff()
        .context_radius(3)
        .header(&old_name, &new_name)
        .missing_newline_hint(true)
        .to_string()
}

fn prefixed(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}
