//! What the model has seen: the hook client reads the harness's own
//! transcript (`transcript_path` in the hook payload) for muster message ids
//! written since its last call, and reports them to the daemon, which
//! advances those deliveries to `seen`. Mail framed by muster always carries
//! its id (`<message id="…">` in hook context, `message_id="…"` in a
//! channel push, `"id":"…"` in a tool answer), so finding the id in the
//! transcript means the text reached the model's context.
//!
//! Each transcript is read from where the previous call stopped (an offset
//! kept in the client's state directory), so a long session costs only its
//! new bytes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Most bytes read from one transcript in one call (the newest are kept).
const MAX_SCAN_BYTES: u64 = 16 << 20;
/// Bytes before the saved offset read again: a harness that rewrites its
/// transcript as one JSON document (Gemini CLI) moves its closing brackets.
const OVERLAP_BYTES: u64 = 4_096;
/// Most ids reported by one call.
pub const MAX_IDS: usize = 500;
const ULID_LEN: usize = 26;

/// Transcript entries that hold muster text the model did not (yet) get:
/// Claude Code records a channel push as `queue-operation` when it arrives,
/// before it is given to the model, and a hook's raw stdout as `hook_success`
/// even when its context is dropped.
const NOT_IN_CONTEXT: [&str; 2] = ["\"type\":\"queue-operation\"", "\"type\":\"hook_success\""];

fn is_ulid_char(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'A'..=b'H' | b'J' | b'K' | b'M' | b'N' | b'P'..=b'T' | b'V'..=b'Z')
}

/// Message ids in `text`: a ULID right after `id` and up to four of `="\:`
/// (which covers `id="X"`, `id=\"X\"`, `"id":"X"` and `message_id=\"X\"`).
pub fn ids_in(text: &[u8], out: &mut Vec<String>) {
    let mut at = 0;
    while let Some(pos) = find(&text[at..], b"id") {
        let mut i = at + pos + 2;
        at = i;
        let mut punct = 0;
        while i < text.len() && punct < 4 && matches!(text[i], b'=' | b'"' | b'\\' | b':') {
            i += 1;
            punct += 1;
        }
        if punct == 0 || i + ULID_LEN > text.len() {
            continue;
        }
        let candidate = &text[i..i + ULID_LEN];
        let ends = text
            .get(i + ULID_LEN)
            .is_none_or(|b| !b.is_ascii_alphanumeric());
        if ends && candidate.iter().all(|b| is_ulid_char(*b)) {
            let id = String::from_utf8_lossy(candidate).into_owned();
            if !out.contains(&id) && out.len() < MAX_IDS {
                out.push(id);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Ids in the complete lines of `chunk`, skipping entries that are not in
/// the model's context. Returns how many bytes were complete lines.
pub fn scan_lines(chunk: &[u8], out: &mut Vec<String>) -> usize {
    let complete = chunk.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for line in chunk[..complete].split(|b| *b == b'\n') {
        if NOT_IN_CONTEXT
            .iter()
            .any(|marker| find(line, marker.as_bytes()).is_some())
        {
            continue;
        }
        ids_in(line, out);
    }
    complete
}

/// Where the offset for one transcript is kept.
fn offset_file(state_dir: &Path, transcript: &Path) -> PathBuf {
    let digest = Sha256::digest(transcript.as_os_str().as_encoded_bytes());
    let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    state_dir.join(format!("{name}.offset"))
}

/// What the previous call for a transcript left: where it stopped, and the
/// ids it reported (the overlap read again must not report them twice).
struct Record {
    offset: u64,
    reported: Vec<String>,
}

impl Record {
    fn load(path: &Path) -> Record {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines();
        let offset = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        let reported = lines
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Record { offset, reported }
    }

    fn save(&self, path: &Path) {
        if let Some(dir) = path.parent() {
            // Under the data directory, which is only its owner's (0700), as the daemon makes it.
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            if builder.create(dir).is_ok() {
                let _ = std::fs::write(
                    path,
                    format!("{}\n{}\n", self.offset, self.reported.join(" ")),
                );
            }
        }
    }
}

/// The ids written to `transcript` since the last call for it, or `None`
/// when the transcript cannot be read: then nothing can be said about what
/// the model saw. A transcript the harness names but has not written yet
/// (Claude Code creates it after a session's first prompt) is empty.
/// `seen` is a report, never a reason to fail a hook.
pub fn seen_since_last(transcript: &Path, state_dir: &Path) -> Option<Vec<String>> {
    let mut found = Vec::new();
    let mut file = match File::open(transcript) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(found),
        Err(_) => return None,
    };
    let len = file.metadata().ok()?.len();
    let record_path = offset_file(state_dir, transcript);
    let previous = Record::load(&record_path);
    // A shorter file was replaced: read it from the start.
    let from = if previous.offset > len {
        0
    } else {
        previous.offset.saturating_sub(OVERLAP_BYTES)
    };
    let from = from.max(len.saturating_sub(MAX_SCAN_BYTES));
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut chunk = Vec::with_capacity((len - from) as usize);
    file.take(len - from).read_to_end(&mut chunk).ok()?;
    let complete = scan_lines(&chunk, &mut found);
    // A document that is not line-based (or a last line still being written)
    // is scanned whole; only complete lines move the offset.
    if complete < chunk.len() && !chunk[complete..].contains(&b'\n') {
        ids_in(&chunk[complete..], &mut found);
    }
    let new: Vec<String> = found
        .iter()
        .filter(|id| !previous.reported.contains(id))
        .cloned()
        .collect();
    let offset = (from + complete as u64).max(if previous.offset > len {
        0
    } else {
        previous.offset
    });
    Record {
        offset,
        reported: found,
    }
    .save(&record_path);
    Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "01KBQ7Z9V2M3N4P5Q6R7S8T9VW";
    const B: &str = "01KBQ7Z9V2M3N4P5Q6R7S8T9VX";

    #[test]
    fn finds_ids_in_every_form_muster_writes() {
        // Proves the forms muster's text takes in transcripts are all found: hook context (escaped JSON), channel meta, tool answers.
        let mut out = Vec::new();
        ids_in(
            format!(r#"{{"content":"<message id=\"{A}\" from=\"x\">"}}"#).as_bytes(),
            &mut out,
        );
        ids_in(
            format!(r#"<channel source="muster" message_id="{B}">"#).as_bytes(),
            &mut out,
        );
        ids_in(format!(r#"{{"id":"{A}"}}"#).as_bytes(), &mut out);
        assert_eq!(out, vec![A.to_string(), B.to_string()]);
    }

    #[test]
    fn ignores_what_is_not_an_id() {
        // Proves near misses are not taken for ids: too short, too long, letters ULIDs never use, no `id` before it.
        let mut out = Vec::new();
        ids_in(b"id=\"01KBQ7Z9V2M3N4P5Q6R7S8T9V\"", &mut out);
        ids_in(format!("id=\"{A}Z\"").as_bytes(), &mut out);
        ids_in(b"id=\"01KBQ7Z9V2M3N4P5Q6R7S8T9VU\"", &mut out);
        ids_in(format!("ref {A}").as_bytes(), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn entries_outside_the_context_are_skipped() {
        // Proves a queued (not yet shown) channel push and a hook's raw stdout do not count as seen, while a shown one does.
        let lines = format!(
            "{{\"type\":\"queue-operation\",\"operation\":\"enqueue\",\"content\":\"<channel message_id=\\\"{A}\\\">\"}}\n\
             {{\"type\":\"attachment\",\"attachment\":{{\"type\":\"hook_success\",\"stdout\":\"id=\\\"{A}\\\"\"}}}}\n\
             {{\"type\":\"attachment\",\"attachment\":{{\"type\":\"queued_command\",\"prompt\":\"<channel message_id=\\\"{B}\\\">\"}}}}\n"
        );
        let mut out = Vec::new();
        assert_eq!(scan_lines(lines.as_bytes(), &mut out), lines.len());
        assert_eq!(out, vec![B.to_string()]);
    }

    #[test]
    fn each_call_reads_only_what_is_new() {
        // Proves the offset: a second call reports only ids written after the first, and a partial last line waits for its end.
        let dir = tempfile::tempdir().unwrap();
        let transcript = dir.path().join("t.jsonl");
        let state = dir.path().join("state");
        std::fs::write(&transcript, format!("{{\"id\":\"{A}\"}}\n")).unwrap();
        assert_eq!(
            seen_since_last(&transcript, &state).unwrap(),
            vec![A.to_string()]
        );
        let padding = "x".repeat(2 * OVERLAP_BYTES as usize);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&transcript)
            .unwrap();
        std::io::Write::write_all(&mut f, format!("{{\"pad\":\"{padding}\"}}\n").as_bytes())
            .unwrap();
        assert!(seen_since_last(&transcript, &state).unwrap().is_empty());
        std::io::Write::write_all(&mut f, format!("{{\"id\":\"{B}\"}}").as_bytes()).unwrap();
        assert_eq!(
            seen_since_last(&transcript, &state).unwrap(),
            vec![B.to_string()],
            "a partial line is still scanned"
        );
        std::io::Write::write_all(&mut f, b"\n").unwrap();
        assert!(
            seen_since_last(&transcript, &state).unwrap().is_empty(),
            "completed, it is not reported twice"
        );
        std::io::Write::write_all(&mut f, format!("{{\"id\":\"{A}\"}}\n").as_bytes()).unwrap();
        assert_eq!(
            seen_since_last(&transcript, &state).unwrap(),
            vec![A.to_string()],
            "written again later, it counts again"
        );
    }

    #[test]
    fn a_transcript_not_written_yet_is_empty_and_an_unreadable_one_cannot_tell() {
        // Proves a transcript the harness has not created yet counts as empty (nothing shown yet), while one that exists but cannot be read says nothing.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            seen_since_last(&dir.path().join("none.jsonl"), dir.path()),
            Some(Vec::new())
        );
        assert_eq!(
            seen_since_last(dir.path(), dir.path()),
            None,
            "a directory is not a transcript"
        );
    }
}
