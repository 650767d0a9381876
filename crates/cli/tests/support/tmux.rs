//! A tmux server of the test's own (own socket, no user config) holding one
//! session: how the TUI tests drive a real terminal program. Killed on drop
//! whatever the test did.

#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A tmux server of our own (own socket, no user config) holding one
/// session; killed on drop whatever the test did.
pub struct Tmux {
    socket: String,
    name: String,
}

impl Tmux {
    pub fn start(command: &str, cols: u16, rows: u16) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let unique = format!("muster-tui-{}-{nanos}", std::process::id());
        let tmux = Tmux {
            socket: unique.clone(),
            name: unique,
        };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        // No status line, so the pane is the whole window; remain-on-exit
        // keeps the pane readable after the command ends.
        let out = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            &tmux.name,
            "-x",
            &cols,
            "-y",
            &rows,
            command,
            ";",
            "set-option",
            "-t",
            &tmux.name,
            "status",
            "off",
            ";",
            "set-option",
            "-t",
            &tmux.name,
            "remain-on-exit",
            "on",
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-u")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env("LANG", "C.UTF-8")
            .output()
            .expect("run tmux")
    }

    /// Types `text` literally (no key names), as a person would.
    pub fn type_text(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", &self.name, "-l", text]);
        assert!(out.status.success());
    }

    /// Presses one named key: Enter, C-c, …
    pub fn press(&self, key: &str) {
        let out = self.run(&["send-keys", "-t", &self.name, key]);
        assert!(out.status.success());
    }

    pub fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", &self.name]).stdout)
            .into_owned()
    }

    /// Polls the pane until it shows `text`; the last capture either way.
    pub fn wait_for(&self, text: &str, limit: Duration) -> Result<String, String> {
        self.wait_for_all(&[text], limit)
    }

    /// Polls the pane until it shows every one of `parts`; the last capture either way.
    pub fn wait_for_all(&self, parts: &[&str], limit: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let pane = self.capture();
            if parts.iter().all(|p| pane.contains(p)) {
                return Ok(pane);
            }
            if start.elapsed() > limit {
                return Err(pane);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn display(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", &self.name, format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        let out = self.run(&[
            "resize-window",
            "-t",
            &self.name,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
