//! Replays every kept fuzz input through its target, so an input that once
//! found a bug (or reached new code) fails the suite if it breaks again:
//! each target's minimized corpus (`fuzz/corpus/<target>/`) and the crash
//! inputs fixed since (`fuzz/regressions/<target>/`).

use std::path::{Path, PathBuf};

use muster_fuzzing::{Target, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files directly in `dir` (none if it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` over its corpus, which must not be empty (a missing or
/// emptied directory would make this pass with nothing tested), and over
/// its regressions; a failing input is named in the panic.
fn replay(name: &str) {
    let target: Target = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no target {name}"));
    let corpus = inputs(&fuzz_dir().join("corpus").join(name));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{name}/ is missing or empty"
    );
    let regressions = inputs(&fuzz_dir().join("regressions").join(name));
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(outcome.is_ok(), "{name} fails on {}", file.display());
    }
    println!(
        "{name}: replayed {} corpus and {} regression inputs",
        corpus.len(),
        regressions.len()
    );
}

macro_rules! replays {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        /// Every target has a replay above and a cargo-fuzz target.
        #[test]
        fn every_target_is_replayed_and_fuzzed() {
            let replayed = [$(stringify!($name)),*];
            for (name, _) in TARGETS {
                assert!(replayed.contains(name), "{name} has no replay test");
                let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
                assert!(source.is_file(), "no {}", source.display());
            }
            assert_eq!(replayed.len(), TARGETS.len());
        }
    };
}

replays!(
    hook_payload,
    link_frame,
    stdin_guard,
    reservation_glob,
    apply_patch,
    json_merge,
    toml_merge,
    duration,
    address,
);
