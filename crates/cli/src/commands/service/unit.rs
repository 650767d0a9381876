//! What the service is, for each service manager: the unit's or the
//! agent's file and its text, the command line it runs, and the commands
//! that enable and start it. Pure: nothing here reads the system or runs a
//! program, so every platform's text is tested on any OS.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{self, Env};

/// The systemd unit's name.
pub const UNIT_NAME: &str = "muster.service";
/// The launchd agent's label (and its file's name, with `.plist`).
pub const LAUNCHD_LABEL: &str = "dev.muster";
/// In the first lines of every file this command writes: only such a file
/// is replaced or removed.
pub(super) const MARKER: &str = "written by `muster service install`";

/// Which service manager runs the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    /// The one this OS has: systemd on Linux, launchd on macOS.
    pub fn for_this_os() -> Option<Manager> {
        if cfg!(target_os = "linux") {
            Some(Manager::Systemd)
        } else if cfg!(target_os = "macos") {
            Some(Manager::Launchd)
        } else {
            None
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Manager::Systemd => "systemd",
            Manager::Launchd => "launchd",
        }
    }

    pub(super) fn what(self) -> &'static str {
        match self {
            Manager::Systemd => "systemd user unit",
            Manager::Launchd => "launchd agent",
        }
    }

    pub(super) fn tool(self) -> &'static str {
        match self {
            Manager::Systemd => "systemctl",
            Manager::Launchd => "launchctl",
        }
    }
}

/// The service for this user: its file, what it runs, where it logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub manager: Manager,
    /// The unit or the agent's plist.
    pub file: PathBuf,
    /// This muster.
    pub exe: PathBuf,
    /// The arguments after `exe`: `serve …`.
    pub args: Vec<String>,
    pub data_dir: PathBuf,
    /// launchd's log file (systemd logs to the journal).
    pub log_file: Option<PathBuf>,
    /// Environment the agent gets (launchd's is bare).
    pub environment: Vec<(String, String)>,
    pub uid: u32,
}

/// What a service is made from, read from the process by `run`.
pub struct Inputs<'a> {
    pub env: &'a Env,
    /// The clients' daemon URL (one address or a list).
    pub url: &'a str,
    pub exe: PathBuf,
    /// MUSTER_DATA_DIR.
    pub data_dir: Option<PathBuf>,
    /// TMPDIR, passed on to a launchd agent: the local key lives under it.
    pub tmpdir: Option<String>,
    pub uid: u32,
}

impl Service {
    /// The service `manager` would run for these inputs.
    pub fn resolve(manager: Manager, inputs: &Inputs<'_>) -> Result<Service, String> {
        let env = inputs.env;
        let data_dir = inputs
            .data_dir
            .clone()
            .or_else(|| config::default_data_dir(env))
            .ok_or("cannot choose a data directory: set HOME (or MUSTER_DATA_DIR)")?;
        let mut args = vec!["serve".to_string()];
        if let Some(bind) = config::split_urls(inputs.url).find_map(crate::autostart::bind_for) {
            args.extend(["--bind".to_string(), bind.to_string()]);
        }
        args.extend(["--data-dir".to_string(), data_dir.display().to_string()]);
        let home = env.home.as_deref().map(PathBuf::from);
        let (file, log_file, environment) = match manager {
            Manager::Systemd => {
                let config_dir = env
                    .xdg_config_home
                    .as_deref()
                    .map(PathBuf::from)
                    .filter(|d| d.is_absolute())
                    .or_else(|| home.as_ref().map(|h| h.join(".config")))
                    .ok_or("cannot find your systemd user directory: set HOME")?;
                (
                    config_dir.join("systemd/user").join(UNIT_NAME),
                    None,
                    vec![],
                )
            }
            Manager::Launchd => {
                let home = home.ok_or("cannot find ~/Library: set HOME")?;
                let file = home
                    .join("Library/LaunchAgents")
                    .join(format!("{LAUNCHD_LABEL}.plist"));
                let log = home.join("Library/Logs/muster/muster.log");
                let environment = inputs
                    .tmpdir
                    .iter()
                    .map(|t| ("TMPDIR".to_string(), t.clone()))
                    .collect();
                (file, Some(log), environment)
            }
        };
        Ok(Service {
            manager,
            file,
            exe: inputs.exe.clone(),
            args,
            data_dir,
            log_file,
            environment,
            uid: inputs.uid,
        })
    }

    /// The file's text.
    pub fn text(&self) -> String {
        match self.manager {
            Manager::Systemd => systemd_unit(&self.exe, &self.args),
            Manager::Launchd => launchd_plist(
                &self.exe,
                &self.args,
                self.log_file.as_deref().unwrap_or(Path::new("/dev/null")),
                &self.environment,
            ),
        }
    }

    /// Where its log is read.
    pub fn logs(&self) -> String {
        match (self.manager, &self.log_file) {
            (Manager::Launchd, Some(file)) => file.display().to_string(),
            _ => "journalctl --user -u muster".to_string(),
        }
    }

    /// `muster serve …` as the service runs it.
    pub fn command_line(&self) -> String {
        let mut words = vec![self.exe.display().to_string()];
        words.extend(self.args.iter().cloned());
        words.join(" ")
    }

    pub(super) fn launchd_target(&self) -> String {
        format!("gui/{}/{LAUNCHD_LABEL}", self.uid)
    }

    /// The commands that enable and start the service (after its file is
    /// written); `updated`: the file changed, so a running one restarts.
    pub fn install_steps(&self, updated: bool) -> Vec<Step> {
        match self.manager {
            Manager::Systemd => {
                let mut steps = vec![Step::must(&["systemctl", "--user", "daemon-reload"])];
                if updated {
                    steps.push(Step::must(&[
                        "systemctl",
                        "--user",
                        "try-restart",
                        UNIT_NAME,
                    ]));
                }
                steps.push(Step::starts(&[
                    "systemctl",
                    "--user",
                    "enable",
                    "--now",
                    UNIT_NAME,
                ]));
                steps
            }
            Manager::Launchd => {
                let target = self.launchd_target();
                let domain = format!("gui/{}", self.uid);
                let plist = self.file.display().to_string();
                vec![
                    // Not loaded yet is fine: this only unloads an older copy.
                    Step::may_fail(&["launchctl", "bootout", &target]),
                    Step::must(&["launchctl", "enable", &target]),
                    Step::starts(&["launchctl", "bootstrap", &domain, &plist]),
                ]
            }
        }
    }

    /// The commands that stop and disable the service, before its file
    /// goes, and those after.
    pub fn uninstall_steps(&self) -> (Vec<Step>, Vec<Step>) {
        match self.manager {
            Manager::Systemd => (
                vec![Step::may_fail(&[
                    "systemctl",
                    "--user",
                    "disable",
                    "--now",
                    UNIT_NAME,
                ])],
                vec![Step::may_fail(&["systemctl", "--user", "daemon-reload"])],
            ),
            Manager::Launchd => (
                vec![Step::may_fail(&[
                    "launchctl",
                    "bootout",
                    &self.launchd_target(),
                ])],
                vec![],
            ),
        }
    }

    /// What to run by hand when the service manager could not be reached.
    pub(super) fn by_hand(&self) -> String {
        match self.manager {
            Manager::Systemd => format!(
                "in a login session of yours run `systemctl --user daemon-reload && systemctl --user \
                 enable --now {UNIT_NAME}`"
            ),
            Manager::Launchd => format!(
                "run `launchctl bootstrap gui/{} {}`",
                self.uid,
                self.file.display()
            ),
        }
    }
}

/// A command the service manager runs, and what its failure means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub argv: Vec<String>,
    /// Its failure does not stop the run.
    #[serde(skip)]
    pub may_fail: bool,
    /// It starts the daemon (a daemon started on first use is stopped first).
    #[serde(skip)]
    pub starts: bool,
}

impl Step {
    fn new(argv: &[&str], may_fail: bool, starts: bool) -> Step {
        Step {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            may_fail,
            starts,
        }
    }
    fn must(argv: &[&str]) -> Step {
        Step::new(argv, false, false)
    }
    pub(super) fn may_fail(argv: &[&str]) -> Step {
        Step::new(argv, true, false)
    }
    fn starts(argv: &[&str]) -> Step {
        Step::new(argv, false, true)
    }
    #[cfg(test)]
    fn shown(&self) -> String {
        self.argv.join(" ")
    }
}

/// One word of a systemd command line: `%` and `$` doubled (systemd
/// expands them), quoted when it holds anything but plain characters.
fn systemd_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+=,@[]%$".contains(c));
    if plain {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The systemd user unit that runs `exe args…`.
pub fn systemd_unit(exe: &Path, args: &[String]) -> String {
    let mut exec = vec![systemd_word(&exe.display().to_string())];
    exec.extend(args.iter().map(|a| systemd_word(a)));
    format!(
        "# muster's daemon as a systemd user service, {MARKER}\n\
         # (`muster service uninstall` removes it). Its log: journalctl --user -u muster\n\
         [Unit]\n\
         Description=muster coordination daemon for AI coding agents\n\
         Documentation=man:muster-serve(1) man:muster(1)\n\
         \n\
         [Service]\n\
         Type=exec\n\
         ExecStart={}\n\
         # serve shuts down cleanly on SIGTERM; a crash is restarted.\n\
         Restart=on-failure\n\
         RestartSec=2s\n\
         # Another daemon holds the data directory: restarting would not help.\n\
         RestartPreventExitStatus={}\n\
         NoNewPrivileges=yes\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exec.join(" "),
        crate::commands::serve::EXIT_ALREADY_RUNNING
    )
}

/// Text for a plist `<string>`.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The launchd agent that runs `exe args…`, logging to `log`, with
/// `environment` set.
pub fn launchd_plist(
    exe: &Path,
    args: &[String],
    log: &Path,
    environment: &[(String, String)],
) -> String {
    let string = |s: &str| format!("<string>{}</string>", xml_text(s));
    let mut program = format!("\t\t{}\n", string(&exe.display().to_string()));
    for arg in args {
        program.push_str(&format!("\t\t{}\n", string(arg)));
    }
    let log = string(&log.display().to_string());
    let mut env = String::new();
    if !environment.is_empty() {
        env.push_str("\t<key>EnvironmentVariables</key>\n\t<dict>\n");
        for (key, value) in environment {
            env.push_str(&format!(
                "\t\t<key>{}</key>\n\t\t{}\n",
                xml_text(key),
                string(value)
            ));
        }
        env.push_str("\t</dict>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <!-- muster's daemon as a launchd agent, {MARKER}\n     (`muster service uninstall` removes it). -->\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \t<key>Label</key>\n\
         \t{label}\n\
         \t<key>ProgramArguments</key>\n\
         \t<array>\n\
         {program}\
         \t</array>\n\
         \t<key>RunAtLoad</key>\n\
         \t<true/>\n\
         \t<key>KeepAlive</key>\n\
         \t<dict>\n\
         \t\t<key>SuccessfulExit</key>\n\
         \t\t<false/>\n\
         \t</dict>\n\
         \t<key>ProcessType</key>\n\
         \t<string>Background</string>\n\
         \t<key>StandardOutPath</key>\n\
         \t{log}\n\
         \t<key>StandardErrorPath</key>\n\
         \t{log}\n\
         {env}\
         </dict>\n\
         </plist>\n",
        label = string(LAUNCHD_LABEL),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(env: &'a Env, url: &'a str) -> Inputs<'a> {
        Inputs {
            env,
            url,
            exe: PathBuf::from("/opt/muster/bin/muster"),
            data_dir: None,
            tmpdir: Some("/var/folders/x/T/".into()),
            uid: 501,
        }
    }

    fn home(path: &str) -> Env {
        Env {
            home: Some(path.into()),
            ..Env::default()
        }
    }

    #[test]
    fn the_unit_runs_serve_for_the_clients_address_and_data_directory() {
        // Proves the unit serves the loopback address the clients use and
        // the data directory they would start a daemon with, lives in the
        // user's systemd directory, restarts on failure but not when
        // another daemon holds the directory, and starts at login.
        let env = home("/home/alice");
        let service = Service::resolve(
            Manager::Systemd,
            &inputs(&env, "http://127.0.0.1:7421,https://team:7420"),
        )
        .unwrap();
        assert_eq!(
            service.file,
            PathBuf::from("/home/alice/.config/systemd/user/muster.service")
        );
        let unit = service.text();
        let exec: Vec<&str> = unit
            .lines()
            .filter(|l| l.starts_with("ExecStart="))
            .collect();
        assert_eq!(
            exec,
            ["ExecStart=/opt/muster/bin/muster serve --bind 127.0.0.1:7421 --data-dir /home/alice/.local/state/muster"]
        );
        for line in [
            "Restart=on-failure",
            "RestartPreventExitStatus=4",
            "WantedBy=default.target",
            "Type=exec",
        ] {
            assert!(unit.lines().any(|l| l == line), "no {line}:\n{unit}");
        }
        assert!(unit.lines().next().unwrap().contains(MARKER));
        assert_eq!(service.logs(), "journalctl --user -u muster");
        let env = Env {
            xdg_config_home: Some("/cfg".into()),
            ..home("/home/alice")
        };
        let team_only = Service::resolve(Manager::Systemd, &inputs(&env, "https://team:7420"));
        let team_only = team_only.unwrap();
        assert_eq!(
            team_only.file,
            PathBuf::from("/cfg/systemd/user/muster.service")
        );
        assert_eq!(
            team_only.args,
            ["serve", "--data-dir", "/home/alice/.local/state/muster"],
            "no loopback address: serve's default"
        );
    }

    #[test]
    fn unit_words_are_quoted_and_escaped_for_systemd() {
        // Proves a path with spaces, quotes, % or $ reaches serve as it is:
        // quoted, and systemd's specifiers and variables doubled.
        assert_eq!(systemd_word("/usr/bin/muster"), "/usr/bin/muster");
        assert_eq!(systemd_word("127.0.0.1:7420"), "127.0.0.1:7420");
        assert_eq!(systemd_word("/a b/m"), "\"/a b/m\"");
        assert_eq!(systemd_word("/x/%h$HOME"), "/x/%%h$$HOME");
        assert_eq!(systemd_word("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(systemd_word(""), "\"\"");
    }

    #[test]
    fn the_agent_runs_serve_at_load_keeps_it_alive_and_logs_in_library_logs() {
        // Proves the launchd plist's key parts: its label, the program and
        // each argument as its own string (escaped), started at load and
        // restarted after a failed exit, both logs in ~/Library/Logs/muster,
        // TMPDIR passed on (the local key lives under it), and a well-formed
        // document (every tag closed, in order).
        let env = home("/Users/bob");
        let mut given = inputs(&env, "http://127.0.0.1:7420");
        given.data_dir = Some("/Users/bob/data & more".into());
        let service = Service::resolve(Manager::Launchd, &given).unwrap();
        assert_eq!(
            service.file,
            PathBuf::from("/Users/bob/Library/LaunchAgents/dev.muster.plist")
        );
        assert_eq!(service.logs(), "/Users/bob/Library/Logs/muster/muster.log");
        let plist = service.text();
        let squeezed: String = plist.split_whitespace().collect();
        for part in [
            "<key>Label</key><string>dev.muster</string>",
            "<key>ProgramArguments</key><array><string>/opt/muster/bin/muster</string><string>serve</string><string>--bind</string><string>127.0.0.1:7420</string><string>--data-dir</string><string>/Users/bob/data&amp;more</string></array>",
            "<key>RunAtLoad</key><true/>",
            "<key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>",
            "<key>StandardOutPath</key><string>/Users/bob/Library/Logs/muster/muster.log</string>",
            "<key>StandardErrorPath</key><string>/Users/bob/Library/Logs/muster/muster.log</string>",
            "<key>EnvironmentVariables</key><dict><key>TMPDIR</key><string>/var/folders/x/T/</string></dict>",
        ] {
            assert!(squeezed.contains(part), "no {part} in\n{plist}");
        }
        assert!(plist.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist"));
        assert!(plist.lines().take(4).any(|l| l.contains(MARKER)));
        // Every element opened is closed, innermost first.
        let mut open: Vec<String> = Vec::new();
        for tag in plist
            .split('<')
            .skip(1)
            .map(|t| t.split('>').next().unwrap())
        {
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            let name = tag.split_whitespace().next().unwrap();
            match name.strip_prefix('/') {
                Some(closed) => assert_eq!(open.pop().as_deref(), Some(closed), "{plist}"),
                None => open.push(name.to_string()),
            }
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
    }

    #[test]
    fn launchd_steps_unload_an_old_copy_enable_and_bootstrap() {
        // Proves the launchctl commands: an old copy unloaded (allowed to
        // fail), the label enabled, then bootstrapped into the user's GUI
        // domain; bootout on uninstall.
        let env = home("/Users/bob");
        let service =
            Service::resolve(Manager::Launchd, &inputs(&env, "http://127.0.0.1:7420")).unwrap();
        let steps: Vec<String> = service
            .install_steps(false)
            .iter()
            .map(Step::shown)
            .collect();
        assert_eq!(
            steps,
            [
                "launchctl bootout gui/501/dev.muster",
                "launchctl enable gui/501/dev.muster",
                "launchctl bootstrap gui/501 /Users/bob/Library/LaunchAgents/dev.muster.plist"
            ]
        );
        let (before, after) = service.uninstall_steps();
        assert_eq!(before[0].shown(), "launchctl bootout gui/501/dev.muster");
        assert!(after.is_empty());
    }

    #[test]
    fn systemd_steps_reload_restart_when_changed_and_enable_now() {
        // Proves install reloads systemd, restarts a running daemon only
        // when the unit changed, and enables and starts it.
        let env = home("/home/alice");
        let service =
            Service::resolve(Manager::Systemd, &inputs(&env, "http://127.0.0.1:7420")).unwrap();
        let shown = |updated| -> Vec<String> {
            service
                .install_steps(updated)
                .iter()
                .map(Step::shown)
                .collect()
        };
        assert_eq!(
            shown(false),
            [
                "systemctl --user daemon-reload",
                "systemctl --user enable --now muster.service"
            ]
        );
        assert_eq!(
            shown(true)[1],
            "systemctl --user try-restart muster.service"
        );
    }
}
