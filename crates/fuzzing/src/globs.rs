//! Reservation globs: how the daemon reads what a session reserves
//! (`paths::normalize`, and the edit guard's mode, `GuardMode::parse`) and
//! whether two reservations can name one file (`paths::overlaps`,
//! `paths::matches`).

use muster_core::paths::{matches, normalize, overlaps};
use muster_daemon::GuardMode;

const CWD: &str = "/fuzz/repo/work";
const ROOT: &str = "/fuzz/repo";

/// Lines: two patterns as a session writes them, then a concrete path.
/// Overlap is symmetric and reflexive; a path both patterns match proves
/// they overlap; a literal path matches itself.
pub fn reservation_glob(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (a, b, path) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    let _ = GuardMode::parse(a);
    let (Ok(a), Ok(b)) = (normalize(a, CWD, ROOT), normalize(b, CWD, ROOT)) else {
        return;
    };
    let ab = overlaps(&a, &b);
    assert_eq!(
        ab,
        overlaps(&b, &a),
        "overlap of {a:?} and {b:?} is not symmetric"
    );
    assert!(overlaps(&a, &a), "{a:?} does not overlap itself");
    if matches(&a, path) && matches(&b, path) {
        assert!(ab, "{path:?} matches {a:?} and {b:?}, which do not overlap");
    }
    if !path.contains(['*', '?']) && !path.is_empty() {
        assert!(matches(path, path), "{path:?} does not match itself");
    }
}
