//! muster's fuzz targets, one plain function a target. Each takes the
//! fuzzer's bytes, drives muster's own code with them (nothing here
//! re-implements a parser), and asserts what that code promises, so a
//! violation is a crash the fuzzer keeps. `fuzz/` runs them under
//! libFuzzer; `tests/corpus.rs` replays every kept input through them in
//! the ordinary test suite.

mod address;
mod duration;
mod hook;
mod install;
mod link;
mod patch;
mod runtime;
mod stdin;
mod store;

/// The shim's stdin guard, compiled in from the CLI (a binary crate).
#[allow(dead_code)]
#[path = "../../cli/src/mcp/stdio.rs"]
mod stdio_guard;

/// The CLI's config and URL handling, compiled in from the CLI.
#[allow(dead_code)]
#[path = "../../cli/src/config.rs"]
mod cli_config;

mod globs;

pub use address::address;
pub use duration::duration;
pub use globs::reservation_glob;
pub use hook::hook_payload;
pub use install::{json_merge, toml_merge};
pub use link::link_frame;
pub use patch::apply_patch;
pub use stdin::stdin_guard;

/// A fuzz target: takes any bytes, panics only on a broken property.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/<name>.rs`
/// and of its corpus directory `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("hook_payload", hook_payload),
    ("link_frame", link_frame),
    ("stdin_guard", stdin_guard),
    ("reservation_glob", reservation_glob),
    ("apply_patch", apply_patch),
    ("json_merge", json_merge),
    ("toml_merge", toml_merge),
    ("duration", duration),
    ("address", address),
];

/// Splits off the first line (without its `\n`); the rest is all after it.
fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
