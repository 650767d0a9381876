//! Our own terminal while the harness runs: raw mode (always undone), the
//! size the harness's pty should have, and the signals that must reach the
//! harness because they cannot travel as keystrokes.

use std::sync::{Arc, Mutex};

use portable_pty::{MasterPty, PtySize};
use ratatui::crossterm::terminal;

/// The pty master, shared so the signal task can resize it.
pub type SharedMaster = Arc<Mutex<Box<dyn MasterPty + Send>>>;

/// The size used when there is no terminal to copy, as terminals default.
const DEFAULT_COLS: u16 = 80;
const DEFAULT_ROWS: u16 = 24;

/// Raw mode on our stdin for as long as this lives. In raw mode every key,
/// Ctrl-C and Ctrl-Z included, arrives as bytes that we hand to the harness,
/// whose own pty turns them into signals for it (and not for us).
pub struct RawMode(());

impl RawMode {
    pub fn enable() -> std::io::Result<RawMode> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts our terminal back as it was before raw mode (a no-op if it is not raw).
pub fn restore() {
    let _ = terminal::disable_raw_mode();
}

/// While our terminal is raw, a panic anywhere in `muster run` ends the
/// run: the terminal is restored first so the message is readable and the
/// shell usable, then the process
/// exits, which closes the pty master and so hangs the harness up, as
/// closing a terminal window would. Carrying on with a thread gone (the
/// keyboard copier, say) would leave a session nobody can drive.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
        std::process::exit(101);
    }));
}

/// `$COLUMNS` x `$LINES` where they are positive numbers, else 80 x 24.
pub fn size_from_env(columns: Option<&str>, lines: Option<&str>) -> PtySize {
    let parse = |v: Option<&str>| {
        v.and_then(|v| v.trim().parse::<u16>().ok())
            .filter(|n| *n > 0)
    };
    PtySize {
        rows: parse(lines).unwrap_or(DEFAULT_ROWS),
        cols: parse(columns).unwrap_or(DEFAULT_COLS),
        pixel_width: 0,
        pixel_height: 0,
    }
}

/// The size of the terminal on our stdin, if it is one and says.
#[cfg(unix)]
pub fn terminal_size() -> Option<PtySize> {
    // Asked of stdin itself (not /dev/tty): the harness's keyboard is our
    // stdin, so its window is the one to copy.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize we own; fd 0 stays open for the call.
    let ok = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0 && ws.ws_row > 0).then_some(PtySize {
        rows: ws.ws_row,
        cols: ws.ws_col,
        pixel_width: ws.ws_xpixel,
        pixel_height: ws.ws_ypixel,
    })
}

#[cfg(not(unix))]
pub fn terminal_size() -> Option<PtySize> {
    let (cols, rows) = terminal::size().ok()?;
    (cols > 0 && rows > 0).then_some(PtySize {
        rows,
        cols,
        pixel_width: 0,
        pixel_height: 0,
    })
}

/// The harness's pty size: our terminal's, else from the environment.
pub fn initial_size(stdin_is_tty: bool, columns: Option<&str>, lines: Option<&str>) -> PtySize {
    let from_terminal = if stdin_is_tty { terminal_size() } else { None };
    from_terminal.unwrap_or_else(|| size_from_env(columns, lines))
}

fn resize(master: &SharedMaster) {
    let Some(size) = terminal_size() else { return };
    let master = master.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = master.resize(size) {
        tracing::warn!("cannot resize the harness's terminal: {e}");
    } else {
        tracing::debug!(cols = size.cols, rows = size.rows, "resized");
    }
}

/// For the whole run: follows our window's size (SIGWINCH) onto the pty,
/// and passes SIGTERM, SIGHUP, SIGINT and SIGQUIT sent to `muster run` on to
/// the harness (in raw mode the keys never make those, so they come from
/// `kill`, a closing terminal, or a parent; when stdin is no terminal, Ctrl-C
/// in the parent's terminal reaches us and not the harness, which runs in
/// its own session).
#[cfg(unix)]
pub async fn follow_signals(pid: Option<u32>, master: SharedMaster, follow_size: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut winch), Ok(mut term), Ok(mut hup), Ok(mut int), Ok(mut quit)) = (
        signal(SignalKind::window_change()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) else {
        tracing::warn!("cannot listen for signals; they will not be forwarded");
        return;
    };
    loop {
        let forward = tokio::select! {
            _ = winch.recv() => {
                if follow_size {
                    resize(&master);
                }
                continue;
            }
            _ = term.recv() => libc::SIGTERM,
            _ = hup.recv() => libc::SIGHUP,
            _ = int.recv() => libc::SIGINT,
            _ = quit.recv() => libc::SIGQUIT,
        };
        if let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
            tracing::info!(signal = forward, "forwarding signal to the harness");
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe {
                libc::kill(pid, forward);
            }
        }
    }
}

/// Without Unix signals: poll the window size, and leave Ctrl-C to the console.
#[cfg(not(unix))]
pub async fn follow_signals(_pid: Option<u32>, master: SharedMaster, follow_size: bool) {
    if !follow_size {
        return;
    }
    let mut last = terminal_size();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let now = terminal_size();
        if now.is_some() && now != last {
            resize(&master);
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_without_a_terminal_comes_from_columns_and_lines_or_80x24() {
        // Proves the fallback size: $COLUMNS/$LINES when they are positive numbers, 80x24 for whatever is missing or bad.
        let size = |c, l| {
            let s = size_from_env(c, l);
            (s.cols, s.rows)
        };
        assert_eq!(size(None, None), (80, 24));
        assert_eq!(size(Some("132"), Some("43")), (132, 43));
        assert_eq!(size(Some(" 100 "), None), (100, 24));
        assert_eq!(size(Some("0"), Some("x")), (80, 24));
        assert_eq!(size(Some("-5"), Some("70000")), (80, 24));
        assert_eq!(size(None, Some("50")), (80, 50));
    }
}
