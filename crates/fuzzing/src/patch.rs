//! The paths an edit writes (`written_paths` in the daemon's reservations,
//! reached as `Hub::written_paths`), Codex's apply_patch included.

use muster_core::paths::{normalize, MAX_PATTERN_LEN};
use muster_daemon::Hub;
use serde_json::{json, Value};

/// The tools whose input names the file they write, and others.
const TOOLS: &[&str] = &[
    "apply_patch",
    "Bash",
    "Edit",
    "Write",
    "MultiEdit",
    "NotebookEdit",
    "write_file",
    "replace",
    "edit",
    "write",
    "shell",
];

/// First byte: the tool; the rest: its input if a JSON value, else a patch
/// as Codex sends it. Each path is named once; a patch's paths are
/// non-empty, trimmed, within the pattern limit and in the patch; and each
/// path normalizes (or is refused) without a panic, as the edit guard
/// does with it.
pub fn apply_patch(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let tool = TOOLS[pick as usize % TOOLS.len()];
    let text = String::from_utf8_lossy(rest);
    let parsed = serde_json::from_str::<Value>(&text).ok();
    let is_patch = parsed.is_none();
    let input = parsed.unwrap_or_else(|| json!({"command": ["apply_patch", text]}));
    let paths = Hub::written_paths(tool, &input);
    for (i, p) in paths.iter().enumerate() {
        assert!(!paths[..i].contains(p), "{p:?} named twice");
        let _ = normalize(p, "/fuzz/repo/work", "/fuzz/repo");
    }
    // A tool no edit tool is named: only the patch's own paths.
    let patched = Hub::written_paths("", &input);
    for p in &patched {
        assert!(paths.contains(p), "{p:?} lost for {tool}");
        assert!(
            !p.is_empty() && p.len() <= MAX_PATTERN_LEN,
            "bad path {p:?}"
        );
        assert_eq!(p.trim(), p, "untrimmed path {p:?}");
        assert!(
            !is_patch || text.contains(p.as_str()),
            "{p:?} not in the patch"
        );
    }
}
