//! Names the commit `muster` is built from, for `muster --version`.
//!
//! Sets `MUSTER_VERSION` to `<crate version> (<commit> <commit date>)`, the
//! commit taken from, in order:
//! 1. `MUSTER_BUILD_COMMIT` (and `MUSTER_BUILD_DATE`, optional), for builds
//!    from a source tree that carries no git metadata of its own;
//! 2. `.cargo_vcs_info.json`, which `cargo package` writes into a packaged
//!    crate (a crates.io download has no `.git`);
//! 3. `git`, when this crate is tracked in the work tree it sits in.
//!
//! With none of these (no git on PATH, no `.git`, an untracked copy) it is the
//! crate version alone. A build never fails for want of a commit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MUSTER_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=MUSTER_BUILD_DATE");

    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let version = std::env::var("CARGO_PKG_VERSION").expect("set by cargo");

    let commit = from_env()
        .or_else(|| from_vcs_info(&manifest_dir))
        .or_else(|| from_git(&manifest_dir));
    let date = commit.as_ref().and_then(|c| c.date.clone());
    let full = match commit {
        Some(Commit {
            hash,
            date: Some(date),
        }) => format!("{version} ({hash} {date})"),
        Some(Commit { hash, date: None }) => format!("{version} ({hash})"),
        None => version,
    };
    println!("cargo:rustc-env=MUSTER_VERSION={full}");
    // The man page's date: the commit's, so a rebuild of one commit gives
    // the same page; without one, SOURCE_DATE_EPOCH's, else today's.
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let man_date = date.unwrap_or_else(|| {
        let secs = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            });
        civil_date(secs / 86_400)
    });
    println!("cargo:rustc-env=MUSTER_MAN_DATE={man_date}");
}

struct Commit {
    hash: String,
    date: Option<String>,
}

/// Twelve hex digits: short enough to read, long enough to stay unique.
fn short(hash: &str) -> Option<String> {
    let hash = hash.trim();
    (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hash.chars().take(12).collect())
}

fn from_env() -> Option<Commit> {
    let hash = short(&std::env::var("MUSTER_BUILD_COMMIT").ok()?)?;
    let date = std::env::var("MUSTER_BUILD_DATE")
        .ok()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    Some(Commit { hash, date })
}

/// `{"git": {"sha1": "…"}, "path_in_vcs": "crates/cli"}`, written by `cargo package`.
fn from_vcs_info(manifest_dir: &Path) -> Option<Commit> {
    let path = manifest_dir.join(".cargo_vcs_info.json");
    let text = std::fs::read_to_string(&path).ok()?;
    println!("cargo:rerun-if-changed={}", path.display());
    // A flat search keeps the build script free of dependencies.
    let at = text.find("\"sha1\"")?;
    let rest = &text[at + "\"sha1\"".len()..];
    let start = rest.find('"')? + 1;
    let end = start + rest[start..].find('"')?;
    let hash = short(&rest[start..end])?;
    Some(Commit { hash, date: None })
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn from_git(manifest_dir: &Path) -> Option<Commit> {
    // Only a repository that tracks this crate names its commit: a copy
    // unpacked inside some other repository must not borrow that one's.
    git(manifest_dir, &["ls-files", "--error-unmatch", "Cargo.toml"])?;
    let hash = short(&git(manifest_dir, &["rev-parse", "HEAD"])?)?;
    let date = git(manifest_dir, &["log", "-1", "--format=%cs", "HEAD"]);
    watch_head(manifest_dir);
    Some(Commit { hash, date })
}

/// Rerun when HEAD moves: a commit, a checkout, a reset. Only files that
/// exist are named (cargo reruns on every build for one that does not).
fn watch_head(manifest_dir: &Path) {
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            manifest_dir.join(p)
        }
    };
    let Some(git_dir) = git(manifest_dir, &["rev-parse", "--git-dir"]).map(absolute) else {
        return;
    };
    let common_dir = git(manifest_dir, &["rev-parse", "--git-common-dir"])
        .map(absolute)
        .unwrap_or_else(|| git_dir.clone());
    let mut watched = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
    if let Some(reference) = git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(common_dir.join(reference));
    }
    for path in watched.into_iter().filter(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (the proleptic Gregorian
/// calendar; H. Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
