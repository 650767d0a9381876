//! When a wake may type into the harness, and the typing itself.
//!
//! The one rule: never type while the person is typing. Every byte that
//! arrives on our stdin is stamped on an [`InputClock`]; a wake is typed only
//! once that stamp is at least the quiet window old, checked again under the
//! writer's lock so a keystroke can never land in the middle of our line.
//! The decisions are pure functions of instants ([`quiet_long_enough`],
//! [`decide`]) so tests give them explicit times instead of sleeping.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::wake::Wake;

/// A wake still not typed after this long of continuous typing is dropped:
/// the person is busy, and the mail reaches the agent at their next prompt anyway.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Between the text and its `\r`. Terminal UIs read text and CR arriving in
/// one burst as a paste (a newline in the draft, not a submit), so the CR
/// goes separately after a pause.
pub const CR_PAUSE: Duration = Duration::from_millis(50);

/// Longest line typed; a longer prompt is cut (it is one short line by contract).
const MAX_PROMPT_CHARS: usize = 300;

/// Typed when a wake names no prompt of its own.
pub const DEFAULT_PROMPT: &str =
    "New muster mail for you (shown with this prompt). Answer with muster's send_message tool.";

/// The pty master's writer, shared by the stdin copier and the typer.
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// Locks the writer; a panicked holder leaves the bytes usable, so poisoning is ignored.
pub fn lock(writer: &SharedWriter) -> MutexGuard<'_, Box<dyn Write + Send>> {
    writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// When the person last typed (any byte on our stdin).
#[derive(Debug, Default)]
pub struct InputClock {
    last: Mutex<Option<Instant>>,
}

impl InputClock {
    pub fn mark(&self, at: Instant) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    pub fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether the person has typed nothing for at least `window` before `now`.
/// Never having typed is quiet; input stamped after `now` (a clock read
/// that raced a keystroke) is not.
pub fn quiet_long_enough(last_input: Option<Instant>, now: Instant, window: Duration) -> bool {
    match last_input {
        None => true,
        Some(last) => match now.checked_duration_since(last) {
            Some(since) => since >= window,
            None => false,
        },
    }
}

/// What to do with a pending wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Quiet long enough: type it.
    TypeNow,
    /// Not quiet yet; look again at this instant (when the window would end).
    WaitUntil(Instant),
    /// Waited `max_wait` through continuous typing: give up on this wake.
    Drop,
}

/// The decision for a wake pending since `pending_since`.
pub fn decide(
    pending_since: Instant,
    last_input: Option<Instant>,
    now: Instant,
    window: Duration,
    max_wait: Duration,
) -> Decision {
    if quiet_long_enough(last_input, now, window) {
        return Decision::TypeNow;
    }
    if now.saturating_duration_since(pending_since) >= max_wait {
        return Decision::Drop;
    }
    // Not quiet means there was input; the window ends `window` after it.
    let last = last_input.unwrap_or(now);
    Decision::WaitUntil((last + window).max(now))
}

/// Makes the daemon's prompt safe to type: one line of printable text (no
/// escape sequences, no CR/LF that would submit early), bounded, and never
/// empty.
pub fn sanitize_prompt(raw: &str) -> String {
    let mut line = String::new();
    for c in raw.chars() {
        if line.chars().count() >= MAX_PROMPT_CHARS {
            break;
        }
        if c.is_control() || is_invisible(c) {
            // Line breaks and tabs become spaces so words stay apart.
            if c.is_whitespace() && !line.ends_with(' ') {
                line.push(' ');
            }
            continue;
        }
        line.push(c);
    }
    let line = line.trim().to_string();
    if line.is_empty() {
        DEFAULT_PROMPT.to_string()
    } else {
        line
    }
}

/// Format characters that would hide or reorder text (zero-width, bidi controls).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Wakes waiting to be typed, coalesced: however many arrive, one line is typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// When the first of them arrived (the 60 s bound counts from here).
    pub since: Instant,
    /// The latest prompt: the daemon's freshest wording wins.
    pub prompt: String,
    pub sessions: Vec<String>,
    pub message_ids: Vec<String>,
}

impl Pending {
    pub fn new(wake: Wake, now: Instant) -> Self {
        let mut pending = Pending {
            since: now,
            prompt: String::new(),
            sessions: Vec::new(),
            message_ids: Vec::new(),
        };
        pending.merge(wake);
        pending
    }

    pub fn merge(&mut self, wake: Wake) {
        self.prompt = sanitize_prompt(&wake.prompt);
        if !self.sessions.contains(&wake.session) {
            self.sessions.push(wake.session);
        }
        for id in wake.message_ids {
            if !self.message_ids.contains(&id) {
                self.message_ids.push(id);
            }
        }
    }
}

/// After typing, the harness's output must be quiet this long before the
/// Enter goes: TUIs read an Enter right behind a burst of keys as part of a
/// paste (Gemini CLI: within 30 ms of the last key it processed), and a
/// freshly started TUI took up to 280 ms to draw a 90-character line.
pub const SETTLE: Duration = Duration::from_millis(100);
/// The most the Enter waits for the output to settle.
pub const MAX_SETTLE: Duration = Duration::from_millis(1500);

/// Types `line` into the pty if the person is still quiet, holding the
/// writer's lock throughout so no keystroke interleaves: the text, a pause
/// until the harness's `output` has settled, then `\r` on its own. Returns
/// whether it typed.
pub fn type_line(
    writer: &SharedWriter,
    clock: &InputClock,
    output: &InputClock,
    window: Duration,
    line: &str,
) -> std::io::Result<bool> {
    let mut pty = lock(writer);
    // The stdin copier stamps the clock before it takes this lock, so a
    // keystroke that came in while we decided is seen here.
    if !quiet_long_enough(clock.last(), Instant::now(), window) {
        return Ok(false);
    }
    pty.write_all(line.as_bytes())?;
    pty.flush()?;
    let wrote = Instant::now();
    std::thread::sleep(CR_PAUSE);
    // The harness has taken the text in once it has drawn it and gone quiet.
    loop {
        let now = Instant::now();
        let last = output.last().map_or(wrote, |l| l.max(wrote));
        if now.saturating_duration_since(last) >= SETTLE || now - wrote >= MAX_SETTLE {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::info!(
        waited_ms = wrote.elapsed().as_millis() as u64,
        "cr after output settled"
    );
    pty.write_all(b"\r")?;
    pty.flush()?;
    Ok(true)
}

/// Takes wakes from the stream and types each batch once the person is quiet.
pub async fn typer(
    mut wakes: mpsc::UnboundedReceiver<Wake>,
    clock: Arc<InputClock>,
    output: Arc<InputClock>,
    writer: SharedWriter,
    window: Duration,
) {
    let mut pending: Option<Pending> = None;
    loop {
        let Some(current) = pending.as_mut() else {
            match wakes.recv().await {
                Some(wake) => pending = Some(Pending::new(wake, Instant::now())),
                None => return,
            }
            continue;
        };
        match decide(
            current.since,
            clock.last(),
            Instant::now(),
            window,
            MAX_WAIT,
        ) {
            Decision::Drop => {
                tracing::info!(sessions = ?current.sessions, "wake dropped: the person kept typing");
                pending = None;
            }
            Decision::TypeNow => {
                let (w, c, o, line) = (
                    writer.clone(),
                    clock.clone(),
                    output.clone(),
                    current.prompt.clone(),
                );
                let typed =
                    tokio::task::spawn_blocking(move || type_line(&w, &c, &o, window, &line)).await;
                match typed {
                    Ok(Ok(true)) => {
                        tracing::info!(sessions = ?current.sessions, messages = ?current.message_ids, "wake typed");
                        pending = None;
                    }
                    // Input arrived at the last moment: decide again.
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!("wake not typed: {e}");
                        pending = None;
                    }
                    Err(e) => {
                        tracing::warn!("wake typing task failed: {e}");
                        pending = None;
                    }
                }
            }
            Decision::WaitUntil(at) => {
                tokio::select! {
                    wake = wakes.recv() => match wake {
                        Some(wake) => current.merge(wake),
                        None => return,
                    },
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn quiet_means_no_input_within_the_window() {
        // Proves the quiet test on explicit instants: never typed is quiet, input younger than the window is not, exactly the window old is.
        let t0 = Instant::now();
        let window = 3 * S;
        assert!(quiet_long_enough(None, t0, window));
        assert!(!quiet_long_enough(Some(t0), t0, window));
        assert!(!quiet_long_enough(Some(t0), t0 + 2 * S, window));
        assert!(!quiet_long_enough(
            Some(t0),
            t0 + 3 * S - Duration::from_millis(1),
            window
        ));
        assert!(quiet_long_enough(Some(t0), t0 + 3 * S, window));
        assert!(quiet_long_enough(Some(t0), t0 + 10 * S, window));
        // A keystroke stamped after "now" (a racing read) is never quiet.
        assert!(!quiet_long_enough(Some(t0 + S), t0, window));
        // A zero window types as soon as the keystroke is in the past.
        assert!(quiet_long_enough(Some(t0), t0, Duration::ZERO));
    }

    #[test]
    fn decide_types_waits_for_the_window_end_or_drops_after_max_wait() {
        // Proves a pending wake is typed when quiet, otherwise waits until the window after the last keystroke, and is dropped after 60 s of continuous typing.
        let t0 = Instant::now();
        let window = 2 * S;
        assert_eq!(decide(t0, None, t0, window, MAX_WAIT), Decision::TypeNow);
        assert_eq!(
            decide(t0, Some(t0 - 5 * S), t0, window, MAX_WAIT),
            Decision::TypeNow
        );
        assert_eq!(
            decide(
                t0,
                Some(t0 + S),
                t0 + S + Duration::from_millis(500),
                window,
                MAX_WAIT
            ),
            Decision::WaitUntil(t0 + 3 * S)
        );
        // Typing every 500 ms keeps pushing the wake back...
        for k in 1..=100u32 {
            let key = t0 + Duration::from_millis(500) * k;
            let now = key + Duration::from_millis(100);
            let expected = if now - t0 >= MAX_WAIT {
                Decision::Drop
            } else {
                Decision::WaitUntil(key + window)
            };
            assert_eq!(
                decide(t0, Some(key), now, window, MAX_WAIT),
                expected,
                "k={k}"
            );
        }
        // ...and quiet wins even past max wait: a wake is typed the moment typing stops in time.
        assert_eq!(
            decide(t0, Some(t0 + 50 * S), t0 + 52 * S, window, MAX_WAIT),
            Decision::TypeNow
        );
        assert_eq!(
            decide(t0, Some(t0 + 59 * S), t0 + 60 * S, window, MAX_WAIT),
            Decision::Drop
        );
    }

    #[test]
    fn prompts_are_one_printable_bounded_line() {
        // Proves the daemon's prompt cannot smuggle escape sequences or an early Enter into the terminal, and an empty one falls back to the default.
        assert_eq!(sanitize_prompt("read your mail"), "read your mail");
        assert_eq!(
            sanitize_prompt("line one\r\nline\ttwo\x1b[31m red\x07"),
            "line one line two[31m red"
        );
        assert_eq!(sanitize_prompt("a\u{200b}b\u{202e}c"), "abc");
        assert_eq!(sanitize_prompt(" \r\n\x1b "), DEFAULT_PROMPT);
        assert_eq!(sanitize_prompt(&"é".repeat(1000)).chars().count(), 300);
    }

    #[test]
    fn pending_wakes_coalesce_into_one_line() {
        // Proves several wakes make one pending line: first arrival time kept, latest prompt, sessions and message ids gathered once each.
        let t0 = Instant::now();
        let wake = |session: &str, ids: &[&str], prompt: &str| Wake {
            session: session.into(),
            message_ids: ids.iter().map(|s| s.to_string()).collect(),
            prompt: prompt.into(),
        };
        let mut p = Pending::new(wake("s1", &["m1"], "first"), t0);
        p.merge(wake("s1", &["m1", "m2"], "second"));
        p.merge(wake("s2", &["m3"], "third"));
        assert_eq!(
            p,
            Pending {
                since: t0,
                prompt: "third".into(),
                sessions: vec!["s1".into(), "s2".into()],
                message_ids: vec!["m1".into(), "m2".into(), "m3".into()],
            }
        );
    }

    #[test]
    fn type_line_writes_text_pause_cr_and_refuses_after_input() {
        // Proves the typed bytes are the text then a separate \r, and that input inside the window means nothing is written.
        type Writes = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;
        #[derive(Clone, Default)]
        struct Recorder(Writes);
        impl Write for Recorder {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().push((Instant::now(), buf.to_vec()));
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let rec = Recorder::default();
        let writer: SharedWriter = Arc::new(Mutex::new(Box::new(rec.clone())));
        let clock = InputClock::default();
        clock.mark(Instant::now());
        assert!(!type_line(&writer, &clock, &InputClock::default(), 10 * S, "hello").unwrap());
        assert!(rec.0.lock().unwrap().is_empty());

        assert!(type_line(
            &writer,
            &clock,
            &InputClock::default(),
            Duration::ZERO,
            "hello"
        )
        .unwrap());
        let writes = rec.0.lock().unwrap().clone();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[0].1, b"hello");
        assert_eq!(writes[1].1, b"\r");
        assert!(writes[1].0 - writes[0].0 >= CR_PAUSE);
    }
}
