//! Talking to the service manager: running `systemctl --user` or
//! `launchctl`, saying why a command failed (no such program, no user
//! session), and asking whether the service is enabled and running.

use std::process::{Command, Stdio};

use serde::Serialize;

use super::unit::{Manager, Service, Step, UNIT_NAME};
use crate::output;

/// A step as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct Ran {
    pub argv: Vec<String>,
    pub ok: bool,
    /// What it printed (stdout, then stderr), trimmed.
    pub output: String,
    /// The program was not found.
    #[serde(skip)]
    pub missing: bool,
}

pub(super) fn run_step(step: &Step) -> Ran {
    let (program, rest) = step.argv.split_first().expect("a step has a program");
    match Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.trim().is_empty() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(err.trim());
            }
            Ran {
                argv: step.argv.clone(),
                ok: out.status.success(),
                output: output::clean(&text, true),
                missing: false,
            }
        }
        Err(e) => Ran {
            argv: step.argv.clone(),
            ok: false,
            missing: e.kind() == std::io::ErrorKind::NotFound,
            output: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not on PATH")
            } else {
                format!("cannot run {program}: {e}")
            },
        },
    }
}

/// Why a step failed, said for a person.
pub fn diagnose(manager: Manager, ran: &Ran) -> String {
    if ran.missing {
        return format!(
            "{} is not on PATH (is {} running this system?)",
            manager.tool(),
            manager.name()
        );
    }
    if let Some(said) = no_session(manager, ran) {
        return format!(
            "there is no systemd user session here (`{}` said: {said})",
            ran.argv.join(" ")
        );
    }
    let said = ran.output.lines().next().unwrap_or("").trim();
    format!("`{}` failed: {said}", ran.argv.join(" "))
}

/// The line in which `systemctl --user` said it has no user manager to
/// talk to (no session bus: a container, ssh without lingering), if it did.
fn no_session(manager: Manager, ran: &Ran) -> Option<&str> {
    const SIGNS: [&str; 4] = [
        "Failed to connect to bus",
        "DBUS_SESSION_BUS_ADDRESS",
        "XDG_RUNTIME_DIR",
        "No medium found",
    ];
    if manager != Manager::Systemd || ran.ok {
        return None;
    }
    ran.output
        .lines()
        .map(str::trim)
        .find(|line| SIGNS.iter().any(|s| line.contains(s)))
}

/// What the service manager says of the service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// Enabled (systemd) or loaded (launchd); `None`: could not ask.
    pub enabled: Option<bool>,
    pub running: Option<bool>,
    /// The manager's word for it: active, inactive, failed, running, …
    pub state: Option<String>,
    /// The daemon's PID, as the manager knows it.
    pub pid: Option<u32>,
    /// Why the manager could not be asked.
    pub error: Option<String>,
}

/// `launchctl print`'s `state = running` and `pid = 123`.
pub fn parse_launchctl_print(text: &str) -> (Option<String>, Option<u32>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (key, value) = l.trim().split_once(" = ")?;
            (key == name).then(|| value.trim().to_string())
        })
    };
    (field("state"), field("pid").and_then(|p| p.parse().ok()))
}

pub(super) fn ask_state(service: &Service) -> State {
    match service.manager {
        Manager::Systemd => {
            let ask = |what: &[&str]| {
                let mut argv = vec!["systemctl", "--user"];
                argv.extend_from_slice(what);
                run_step(&Step::may_fail(&argv))
            };
            // is-enabled reads unit files and may answer without a user
            // manager; is-active needs one.
            let enabled = ask(&["is-enabled", UNIT_NAME]);
            if enabled.missing {
                return State {
                    error: Some(diagnose(Manager::Systemd, &enabled)),
                    ..State::default()
                };
            }
            let enabled_word = enabled.output.lines().next().unwrap_or("").trim();
            let enabled_known = no_session(Manager::Systemd, &enabled).is_none();
            let is_enabled = enabled_known.then_some(enabled.ok && enabled_word == "enabled");
            let active = ask(&["is-active", UNIT_NAME]);
            if no_session(Manager::Systemd, &active).is_some() {
                return State {
                    enabled: is_enabled,
                    error: Some(diagnose(Manager::Systemd, &active)),
                    ..State::default()
                };
            }
            let word = active
                .output
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let pid = ask(&["show", "--property=MainPID", "--value", UNIT_NAME])
                .output
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|p| *p != 0);
            State {
                enabled: is_enabled,
                running: Some(active.ok && word == "active"),
                state: (!word.is_empty()).then_some(word),
                pid,
                error: None,
            }
        }
        Manager::Launchd => {
            let printed = run_step(&Step::may_fail(&[
                "launchctl",
                "print",
                &service.launchd_target(),
            ]));
            if printed.missing {
                return State {
                    error: Some(diagnose(Manager::Launchd, &printed)),
                    ..State::default()
                };
            }
            if !printed.ok {
                return State {
                    enabled: Some(false),
                    running: Some(false),
                    ..State::default()
                };
            }
            let (state, pid) = parse_launchctl_print(&printed.output);
            State {
                enabled: Some(true),
                running: Some(state.as_deref() == Some("running")),
                state,
                pid,
                error: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launchctl_print_gives_the_state_and_the_pid() {
        // Proves status reads launchd's `state = running` and `pid = N`.
        let (state, pid) = parse_launchctl_print(
            "gui/501/dev.muster = {\n\tactive count = 1\n\tstate = running\n\n\tprogram = /opt/muster\n\tpid = 4242\n}",
        );
        assert_eq!((state.as_deref(), pid), (Some("running"), Some(4242)));
    }

    #[test]
    fn a_missing_systemctl_or_user_session_is_said_as_such() {
        // Proves a missing systemctl, a missing user session (no bus) and
        // any other failure are each said for what they are.
        let failed = |output: &str, missing| Ran {
            argv: vec!["systemctl".into(), "--user".into(), "daemon-reload".into()],
            ok: false,
            output: output.into(),
            missing,
        };
        assert_eq!(
            diagnose(Manager::Systemd, &failed("", true)),
            "systemctl is not on PATH (is systemd running this system?)"
        );
        assert_eq!(
            diagnose(Manager::Systemd, &failed("Failed to connect to bus: No medium found", false)),
            "there is no systemd user session here (`systemctl --user daemon-reload` said: Failed to connect to bus: No medium found)"
        );
        assert_eq!(
            diagnose(
                Manager::Systemd,
                &failed("Unit muster.service has a bad setting.", false)
            ),
            "`systemctl --user daemon-reload` failed: Unit muster.service has a bad setting."
        );
    }
}
