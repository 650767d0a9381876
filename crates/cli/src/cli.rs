//! The command line: the subcommands and their help texts, as clap derives
//! them. Each command's own flags (its `Args`) live in its module.

use clap::{Parser, Subcommand};

use crate::commands::completions::CompletionsArgs;
use crate::commands::dashboard::DashboardArgs;
use crate::commands::guard::GuardArgs;
use crate::commands::inbox::InboxArgs;
use crate::commands::install::InstallArgs;
use crate::commands::man::ManArgs;
use crate::commands::reserve::{ReleaseArgs, ReserveArgs, ThreadArgs};
use crate::commands::rooms::RoomArgs;
use crate::commands::roster::RosterArgs;
use crate::commands::search::{HistoryArgs, SearchArgs};
use crate::commands::send::{BroadcastArgs, SendArgs};
use crate::commands::serve::ServeArgs;
use crate::commands::service::ServiceArgs;
use crate::commands::token::TokenArgs;
use crate::commands::top::TopArgs;
use crate::hook::HookArgs;
use crate::run::RunArgs;

const AFTER_HELP: &str = "\
Client commands find the daemon at --url, else MUSTER_URL, else `url` in
$XDG_CONFIG_HOME/muster/config.toml (~/.config/muster/config.toml), else
http://127.0.0.1:7420. An https:// daemon's certificate is checked against
Mozilla's roots, or, when MUSTER_CA_FILE names a PEM file, against the CAs
in it alone. Without --as they act as this session
(MUSTER_SESSION_ID, else CLAUDE_CODE_SESSION_ID), else as the operator
(op:<name>; MUSTER_OPERATOR, else `operator` in config.toml, else $USER).

A client (a command, `muster hook`, `muster mcp`) that finds nothing at a
loopback http:// address starts `muster serve` for it, detached, with the
data directory `muster serve` would use (MUSTER_DATA_DIR, else the default),
logging to muster.log there; MUSTER_AUTOSTART=0 turns that off. `muster
service install` keeps the daemon running as a user service instead.

Exit codes: 0 ok, 1 the daemon refused or a check failed, 2 bad usage,
3 the daemon could not be reached.";

#[derive(Debug, Parser)]
#[command(
    name = "muster",
    version = env!("MUSTER_VERSION"),
    about = "A roster and mailbox for the AI coding agents on this machine or team",
    long_about = "muster lets every AI coding-agent session see its peers and talk to them: a live \
roster, direct and room messages, delivered into each agent's context exactly once.\n\n\
Start the daemon with `muster serve`; then `muster roster` shows who is working, and \
`muster send <to> <body>` leaves a message.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    /// Daemon address for client commands; a team's several, comma-separated, are tried in order [env: MUSTER_URL] [default: http://127.0.0.1:7420]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,

    /// Print one JSON document (one per line for `tail`) instead of text
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (one port: API, hooks, events)
    #[command(
        long_about = "Run the muster daemon in the foreground until Ctrl-C or SIGTERM.\n\n\
It serves the JSON API, the hook endpoints and the event stream on one TCP port, keeps its \
data in --data-dir, and sweeps sessions that went away.\n\n\
With --tls-cert and --tls-key it serves HTTPS and WSS on that port (rustls); clients then use \
an https:// URL, and trust the certificate through Mozilla's roots or MUSTER_CA_FILE. Bound \
beyond loopback without them, it warns that tokens cross the network in clear text.\n\n\
Example:\n  muster serve --bind 127.0.0.1:7420 --stale-after 60s\n  \
muster serve --bind 0.0.0.0:7420 --token \"$T\" --tls-cert cert.pem --tls-key key.pem\n\n\
Durations are written 500ms, 90s, 60m, 24h or 30d. --json has no effect here."
    )]
    Serve(ServeArgs),

    /// Show the sessions on the roster
    #[command(
        long_about = "Show the sessions on the roster: who they are, where they work, what \
they are doing and when they were last seen.\n\n\
Example:\n  muster roster --all\n\n\
--json prints the daemon's Roster: {\"sessions\": [Session, …]}."
    )]
    Roster(RosterArgs),

    /// Send a direct message to a session or a person
    #[command(
        long_about = "Send a direct message. <to> is a session id, a nickname, a unique id \
prefix, or a person as op:<name>. The answer says what happened: pushed (the recipient got it \
live), woken (it was idle; a turn was started for it), queued (it reaches the recipient after \
its next tool call, at its stop, or at its next turn), or why it was refused. `muster thread \
<message id>` shows later how far it got: surfaced (in the agent's context), seen (found in \
the harness's own transcript), acked.\n\n\
Example:\n  muster send calm-heron \"I'm refactoring src/db.rs; please stay out of it\"\n  \
git diff | muster send calm-heron -\n\n\
--json prints the daemon's SendResponse: {\"message\", \"state\", \"deliveries\"}."
    )]
    Send(SendArgs),

    /// Send a message to a room
    #[command(
        long_about = "Send a message to a room: everyone, project:<name>, op:<name> or a \
named room. Room messages are ambient: members see them at their next turn; only sessions \
@mentioned in the body get a live push.\n\n\
Example:\n  muster broadcast everyone \"Rebasing main in 5 minutes\"\n\n\
--json prints the daemon's SendResponse: {\"message\", \"state\", \"deliveries\"}."
    )]
    Broadcast(BroadcastArgs),

    /// Read your messages
    #[command(
        long_about = "Show the messages waiting for you (or for --as). Showing them marks \
them surfaced, so an agent's hook will not repeat them; --ack also marks them dealt with.\n\n\
Example:\n  muster inbox --ack\n  muster inbox --as calm-heron --all --limit 20\n\n\
--json prints the daemon's Inbox: {\"principal\", \"messages\": [Message + \"state\", …]}, \
with \"acked\": N added when --ack is given."
    )]
    Inbox(InboxArgs),

    /// Find messages by the words in their bodies
    #[command(
        long_about = "Search the stored messages' bodies: every word given, in any order, each as \
the start of a word (case aside; punctuation separates words and is never query syntax). Newest \
first, 50 at a time; the output says when there are more and how to page on. A person sees \
everyone's messages (or, with --as, what that session or op:<name> sent or received); inside an \
agent's shell the session sees its own.\n\n\
Example:\n  muster search schema migration\n  muster search flaky test --as calm-heron --limit 10\n\n\
--json prints the daemon's MessagePage: {\"messages\": [Message, …], \"next\", \"partial\"}."
    )]
    Search(SearchArgs),

    /// List stored messages, newest first
    #[command(
        long_about = "List the stored messages, newest first, 50 at a time: everyone's, what \
--as sent or received, or those --to a session, op:<name> or room. The output says when there are \
more; --before <id> shows the next page.\n\n\
Example:\n  muster history --to '#dev'\n  muster history --as calm-heron --limit 20\n\n\
--json prints the daemon's MessagePage: {\"messages\": [Message, …], \"next\", \"partial\"}."
    )]
    History(HistoryArgs),

    /// List rooms and their members
    #[command(
        long_about = "List the rooms: the automatic ones (everyone, project:<name>, \
op:<name>) and the named ones, with their members.\n\n\
Example:\n  muster rooms\n\n\
--json prints the daemon's Rooms: {\"rooms\": [{\"name\", \"kind\", \"members\"}, …]}."
    )]
    Rooms,

    /// Join a named room (creating it if needed)
    #[command(
        long_about = "Join a named room; joining a name nobody uses yet creates it. Members \
see room messages sent after they joined.\n\n\
Example:\n  muster join frontend --as calm-heron\n\n\
--json prints the daemon's RoomView: {\"name\", \"kind\", \"members\"}."
    )]
    Join(RoomArgs),

    /// Leave a named room
    #[command(long_about = "Leave a named room.\n\n\
Example:\n  muster leave frontend --as calm-heron\n\n\
--json prints the daemon's RoomView: {\"name\", \"kind\", \"members\"}.")]
    Leave(RoomArgs),

    /// Claim files so no other agent edits them meanwhile
    #[command(
        long_about = "Reserve paths or globs (*, **, ?; a trailing / means a whole directory) for a \
session, exclusive by default. All are granted or none: a refusal names each holder, why, until when, and \
how to reach them. Relative paths are taken from the current directory and compared within the session's \
repository. While a file is held exclusively, other sessions' edits of it are refused by their hooks.\n\n\
Example:\n  muster reserve src/db/ --as calm-heron --ttl 45m --reason \"schema migration\"\n\n\
--json prints the daemon's Reservations: {\"reservations\": [Reservation + \"nickname\", …]}."
    )]
    Reserve(ReserveArgs),

    /// Release reserved paths (all of them when none are named)
    #[command(
        long_about = "Release a session's reservations: the named paths, as reserved, or all of them.\n\n\
Example:\n  muster release src/db/ --as calm-heron\n\n--json prints {\"released\": N}."
    )]
    Release(ReleaseArgs),

    /// List live file reservations
    #[command(
        long_about = "List the live reservations: path, holder, exclusive or shared, time left, reason \
and repository.\n\n--json prints the daemon's Reservations."
    )]
    Reservations,

    /// Show a conversation thread
    #[command(
        long_about = "Show the thread a message belongs to: what it replies to and every reply, oldest \
first, as far as you (or --as) sent or received them.\n\nExample:\n  muster thread 01JD… --as calm-heron\n\n\
--json prints {\"messages\": [Message, …]}."
    )]
    Thread(ThreadArgs),

    /// A git pre-commit hook refusing commits of files other sessions hold
    #[command(
        long_about = "Install (or remove) a git pre-commit hook that refuses a commit when it \
touches a file another agent session holds exclusively, naming the holder. With the daemon down the \
commit goes through (and the hook says so). The committer is MUSTER_SESSION_ID / \
CLAUDE_CODE_SESSION_ID when set: its own claims never block it.\n\n\
Example:\n  muster guard install --repo .\n  muster guard uninstall"
    )]
    Guard(GuardArgs),

    /// Follow changes live (sessions, messages, deliveries)
    #[command(
        long_about = "Follow the daemon's event stream: sessions joining and leaving, \
messages sent, deliveries moving forward. Runs until Ctrl-C (exit 0) or until the daemon goes \
away (exit 1).\n\n\
Example:\n  muster tail\n  muster tail --json | jq 'select(.kind == \"message.sent\")'\n\n\
--json prints each Event as one JSON line: {\"seq\", \"at\", \"kind\", \"data\"}."
    )]
    Tail,

    /// A live terminal dashboard: roster, reservations, events
    #[command(
        long_about = "A full-screen dashboard that keeps itself current: the roster (who, where, doing \
what, linked or not, last seen), the live file reservations with their time left, and the latest \
events as `muster tail` words them. It refreshes on every event and at least every --interval, and \
rides out daemon restarts (it says \"daemon unreachable, retrying…\" and reconnects).\n\n\
Keys: q, Esc or Ctrl-C quit.\n\n\
Example:\n  muster top --interval 5s\n\n\
It needs a terminal; in scripts use `muster tail` or `muster roster --json`. --json has no effect here."
    )]
    Top(TopArgs),

    /// Sign a browser in to the web dashboard (prints a one-time link)
    #[command(
        long_about = "Print a link that signs a browser in to the web dashboard at the daemon's \
address. The daemon serves only its own user: muster's clients prove that with the local key \
file only that user can read, and a browser, which cannot read files, signs in with this link \
instead. The link works once, within two minutes, and leaves a cookie (HttpOnly, \
SameSite=Strict) that lasts until the browser or the daemon restarts.\n\n\
Example:\n  muster dashboard --open\n\n\
--json prints {\"url\", \"expires_in_ms\"}."
    )]
    Dashboard(DashboardArgs),

    /// Make, list and revoke the tokens a team daemon lets clients in by
    #[command(
        long_about = "Make, list and revoke tokens. A daemon bound beyond loopback lets in only \
requests that carry a token (`Authorization: Bearer`); its own --token is the bootstrap admin \
token, and this command makes named ones, stored hashed (the secret is shown once):\n\n  \
agent     acts only for the sessions it registers (an agent's machine: shims, hooks, CLI)\n  \
operator  acts as its person (op:<name>) and reads everything (a teammate's CLI, the dashboard)\n  \
admin     everything, tokens included\n\n\
No token acts for a session another token registered (403). Clients send their token from \
MUSTER_TOKEN, or from the file MUSTER_TOKEN_FILE names (keep it 0600), or `token` / \
`token_file` in muster's config.toml. Managing tokens needs an admin token or the daemon's own \
user.\n\n\
Example:\n  muster token create alice --scope operator\n  \
muster token create ci-box --scope agent --out ~/ci-box.token\n  \
muster token list\n  muster token revoke alice\n\n\
--json: create prints {\"id\", \"name\", \"scope\", \"created_at\", \"created_by\", \
\"secret\" (or \"file\")}; list prints {\"tokens\": [...]}; revoke prints the revoked token."
    )]
    Token(TokenArgs),

    /// Show the daemon's status
    #[command(
        long_about = "Show what the daemon reports about itself: version, store, data \
directory, operator, session counts and liveness policy.\n\n\
Example:\n  muster status\n\n\
--json prints the daemon's Status document."
    )]
    Status,

    /// Check that this machine is set up to use muster
    #[command(
        long_about = "Check the setup and print a ✓/✗ list: the daemon is reachable, \
client and daemon versions match, which daemon URL is used and where it came from, this \
session's identity and whether it is on the roster, the operator name; and for each harness \
muster is installed for (in the project here and in your user settings): its MCP server, its \
hooks (or plugin), the binary they name, the trust the harness needs, whether the files match \
what this muster writes, and which files name a path of this machine. Each failed check says \
what to run. Exits 1 if any check fails.\n\n\
Example:\n  muster doctor\n\n\
--json prints {\"ok\": bool, \"checks\": [{\"name\", \"ok\", \"detail\", \"fix\"?}, …]}."
    )]
    Doctor,

    /// The command hook a harness runs (reads hook JSON on stdin)
    #[command(
        long_about = "The command-hook client a harness runs on each hook event. It reads \
the harness's hook JSON on stdin, posts it to the daemon and prints the daemon's answer for the \
harness. It never blocks the harness for more than about 2 s: if the daemon is down or slow it \
prints nothing on stdout, one line on stderr, and exits 0.\n\n\
Example (a Claude Code settings.json hook command):\n  muster hook prompt-submit --harness claude\n\n\
--json has no effect here: the output is whatever the harness expects."
    )]
    Hook(HookArgs),

    /// Run the per-session MCP server a harness launches (stdio)
    #[command(
        long_about = "Run muster's MCP server on stdin/stdout for one agent session. A harness \
launches it (see `muster install`); it links to the daemon, offers muster's tools (roster, \
send_message, broadcast, read_messages, wait_for_message, …) and pushes inbound mail to the agent \
as notifications/claude/channel.\n\n\
The session is MUSTER_SESSION_ID, else CLAUDE_CODE_SESSION_ID (Claude Code sets it); without \
either it refuses to start. Pushes are claimed only when the harness shows them: \
Claude Code launched with `--dangerously-load-development-channels server:muster` (or `--channels` \
naming muster; read from its command line), or MUSTER_CHANNELS=on; MUSTER_CHANNELS=off, or no \
such flag, means mail reaches the agent through its hooks instead. MUSTER_HARNESS names the harness \
(default claude). stdout carries only MCP messages; logs go to stderr.\n\n\
Example (.mcp.json):\n  {\"mcpServers\": {\"muster\": {\"command\": \"muster\", \"args\": [\"mcp\"]}}}"
    )]
    Mcp,

    /// Add muster's MCP server and hooks to a harness's settings (or remove them)
    #[command(long_about = INSTALL_HELP)]
    Install(InstallArgs),

    /// Run the daemon as a user service (systemd, launchd): install, uninstall, status
    #[command(long_about = SERVICE_HELP)]
    Service(ServiceArgs),

    /// Run a harness under a pseudo-terminal so muster can wake it when mail comes
    #[command(
        long_about = "Run a harness (claude, codex, gemini, opencode, or any program) under a \
pseudo-terminal. When the daemon says a session of this run is idle with direct mail (or an \
@mention) waiting, muster types one short line into it that makes the agent read its mail \
(Codex gets that turn through its app-server instead: see below).\n\n\
Your terminal is passed through untouched: keystrokes go to the harness as they are (Ctrl-C \
included), its output comes back byte for byte, its window is sized like yours and follows \
every resize. SIGTERM and SIGHUP sent to `muster run` go to the harness, and `muster run` exits \
with the harness's exit code (128+N if signal N killed it; 127 if the program does not \
exist). Without a terminal on stdin it still runs, at $COLUMNS x $LINES or 80x24.\n\n\
A wake is typed only when you have typed nothing for --quiet (3s): while you type it waits, \
and after 60 s of continuous typing it is dropped (the mail then reaches the agent with your \
next prompt). Wakes that pile up are typed as one line: the text, then Enter a moment later.\n\n\
Codex (a program named codex) is woken without typing. muster starts an app-server of its own \
for the run, `codex app-server --listen unix://<socket>` (the socket in a new 0700 directory \
under $TMPDIR), in the current directory and with MUSTER_RUN_ID and MUSTER_URL (Codex runs a \
remote TUI's hooks in the app-server's environment), waits until it answers, then runs the TUI \
as `codex --remote unix://<socket> -C <current directory> [args…]` (no -C if you gave one; \
--no-daemon, which Codex refuses next to --remote, is left out: this app-server is no shared \
daemon). A wake for a session \
(Codex's thread id) is sent to that app-server as `thread/queue/add`: an idle session starts a \
turn at once, a busy one gets it as its own next turn once the running one ends (never mixed \
into your turn), and the TUI shows it. When the TUI exits, muster stops the app-server and \
removes its socket (if muster run itself is killed, the kernel stops the app-server and the next \
run removes what was left). If the app-server cannot start, or the arguments are a \
non-interactive subcommand (exec, login, …), --remote or --help, codex runs like any other \
harness and wakes are typed; MUSTER_RUN_LOG says why. With --no-wake codex runs as it is, with \
no app-server.\n\n\
The harness gets MUSTER_RUN_ID (this run's id; muster's hooks pass it to the daemon, which \
ties the session to this run) and MUSTER_URL. Waking follows the daemon's stream \
GET /api/v1/wake?run=<id>&how=pty (how=codex for Codex on muster's app-server; the roster's \
wake column says the same), reopened quietly whenever the daemon is away; --no-wake or \
MUSTER_WAKE=off never opens it. muster run itself never writes to your terminal once the \
harness runs: with MUSTER_RUN_LOG=<file> it logs there (RUST_LOG filters, default info).\n\n\
Options go before the harness; everything after it is the harness's own.\n\n\
Examples:\n  muster run claude\n  muster run --no-wake codex\n  \
muster run --quiet 5s claude --dangerously-load-development-channels server:muster\n\n\
--json has no effect here."
    )]
    Run(RunArgs),

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        long_about = "Print a completion script for SHELL on stdout, generated from this very \
command line, so it always matches the installed muster.\n\n\
Examples:\n  \
muster completions bash > ~/.local/share/bash-completion/completions/muster\n  \
muster completions zsh > \"${fpath[1]}/_muster\"\n  \
muster completions fish > ~/.config/fish/completions/muster.fish\n\n\
The Debian package installs all three system-wide. --json has no effect here."
    )]
    Completions(CompletionsArgs),

    /// Print muster's man page (roff), generated from this command line
    #[command(
        long_about = "Print the man page muster(1) as roff on stdout, generated from the same \
definitions as --help. With --out-dir, write it and one page per subcommand \
(muster-serve.1, muster-send.1, …) into that directory instead, and print each path written.\n\n\
Examples:\n  muster man | man -l -\n  muster man --out-dir ~/.local/share/man/man1\n\n\
--json has no effect here."
    )]
    Man(ManArgs),
}

/// `muster service --help`.
const SERVICE_HELP: &str = "\
Run muster's daemon as a service of yours: started now and at every login, restarted if it fails. \
It serves what the clients here use: the loopback address of the daemon URL (--url, MUSTER_URL, \
config.toml) and the data directory (MUSTER_DATA_DIR, else ~/.local/state/muster), both written \
into the service's command line.

  Linux  a systemd user unit, $XDG_CONFIG_HOME/systemd/user/muster.service \
(~/.config/systemd/user/); `systemctl --user daemon-reload`, `enable --now`; logs: \
journalctl --user -u muster
  macOS  a launchd agent, ~/Library/LaunchAgents/dev.muster.plist; `launchctl bootstrap \
gui/<uid>`; logs: ~/Library/Logs/muster/muster.log

install writes the file and starts the service (a daemon a client started on first use is \
stopped first, so the service takes over); uninstall stops it and removes the file; status says \
whether it is installed, enabled and running, which daemon holds the data directory, and where the \
logs are. Only a file `muster service install` wrote is replaced or removed. Without a service \
manager to talk to (no systemctl, no user session) the file is still written, and the error says \
how to start it by hand.

Examples:
  muster service install --dry-run     print the unit and the commands, change nothing
  muster service install
  muster service status
  muster service uninstall

--json prints {\"action\", \"platform\", \"dry_run\", \"file\", \"file_status\", \"exec_start\", \
\"data_dir\", \"commands\": [{\"argv\", \"ok\"?, \"output\"?}], \"logs\", \"notes\", \"error\"}, with \
\"text\" (install --dry-run), \"started\" (install), \"installed\", \"service\": {\"enabled\", \
\"running\", \"state\", \"pid\", \"error\"} and \"daemon\": {\"pid\", \"addr\", \"autostarted\"} (status).";

/// `muster install --help`.
const INSTALL_HELP: &str = "\
Add muster to a harness's settings: its MCP server (`muster mcp`, which offers muster's tools) \
and its hooks (`muster hook <event>`, which put the session on the roster and surface its mail at \
each turn). The daemon URL is not written (MUSTER_URL or config.toml is read when the harness runs \
muster), except by `--hooks http`, which has Claude Code post its hooks to the daemon itself (see \
--hooks below: it needs MUSTER_TOKEN).

Which muster the files name: a project install writes `muster` by name into the files a team \
commits when the `muster` first on PATH is this binary (both resolved); otherwise this binary's \
absolute path goes, for claude, only into local settings that are not committed \
(DIR/.claude/settings.local.json: hooks; ~/.claude.json projects.\"DIR\".mcpServers.muster), and \
for codex, opencode and gemini (no local project settings) into the project files, with a note \
saying so. Installing again after PATH changed moves muster's entries. --user always writes the \
absolute path. `muster doctor` checks each install.

The scope is the project in the current directory unless --project DIR or --user says otherwise.

What is written where (project DIR / --user):
  claude    DIR/.mcp.json: mcpServers.muster; DIR/.claude/settings.json: hooks and
            enabledMcpjsonServers [\"muster\"]
            --user: ~/.claude.json: mcpServers.muster; ~/.claude/settings.json: hooks
  codex     DIR/.codex/ or $CODEX_HOME (~/.codex): config.toml: [mcp_servers.muster] and
            [features] hooks = true; hooks.json: the hooks; $CODEX_HOME/config.toml also gets the
            trusted_hash of muster's hooks and, for DIR, [projects.\"DIR\"] trust_level = \"trusted\"
  opencode  DIR/opencode.json or ~/.config/opencode/opencode.json: mcp.muster; the plugin
            DIR/.opencode/plugins/muster.js or ~/.config/opencode/plugins/muster.js
  gemini    DIR/.gemini/settings.json or ~/.gemini/settings.json: mcpServers.muster and hooks;
            for DIR also ~/.gemini/trustedFolders.json: \"DIR/\": \"TRUST_FOLDER\"

Only muster's entries are added: the rest of each file (other keys, their order, your own hooks, \
TOML comments) is kept. Installing again changes nothing. Before muster first changes a file it \
copies it to <file>.muster-backup; what was written is recorded in \
$XDG_STATE_HOME/muster/installs.json (~/.local/state/muster/installs.json). --uninstall puts each \
file back exactly as it was (deleting the ones install created); a file you changed since keeps \
your changes and loses only muster's entries. A file that is not valid JSON or TOML stops the run \
with its name and line, and nothing is written.

Examples:
  muster install claude --dry-run      show the diff, change nothing
  muster install claude                set up Claude Code for the project here
  muster install codex --user          set up Codex for every project
  muster install gemini --uninstall    take muster out again

--json prints {\"harness\", \"scope\", \"dir\", \"action\", \"dry_run\", \"changed\", \"files\": [{\"path\", \
\"status\": created|updated|unchanged|restored|removed, \"backup\"?, \"detail\"?, \"diff\"?}], \"notes\", \
\"next_step\"}; on error {\"error\": {\"code\", \"message\"}} and exit 1.";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    use crate::commands::serve::StoreArg;
    use crate::commands::{completions, man};
    use muster_core::protocol::{Harness, HookEvent};

    #[test]
    fn clap_definitions_are_consistent() {
        // Proves clap accepts the whole command tree (no clashing flags or bad defaults).
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_durations_parse_with_units_and_defaults() {
        // Proves serve's duration flags take 500ms/90s/60m/24h/30d and default to the contract's values.
        let cli = Cli::try_parse_from([
            "muster",
            "serve",
            "--stale-after",
            "90s",
            "--sweep-interval",
            "500ms",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.stale_after, Duration::from_secs(90));
        assert_eq!(args.sweep_interval, Duration::from_millis(500));
        assert_eq!(args.hook_backstop, Duration::from_secs(3600));
        assert_eq!(args.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(args.max_request_bytes, 1_048_576);
        assert_eq!(args.store, StoreArg::Sqlite);
    }

    #[test]
    fn serve_refuses_unitless_duration() {
        // Proves a bare number is a usage error that names the missing unit, not a panic.
        let err = Cli::try_parse_from(["muster", "serve", "--stale-after", "60"]).unwrap_err();
        assert!(err.to_string().contains("needs a unit"), "{err}");
    }

    #[test]
    fn hook_accepts_only_known_events() {
        // Proves the hook command takes the six contract events and refuses others.
        let cli =
            Cli::try_parse_from(["muster", "hook", "pre-tool-use", "--harness", "codex"]).unwrap();
        let Command::Hook(args) = cli.command else {
            panic!("not hook")
        };
        assert_eq!(args.event, HookEvent::PreToolUse);
        assert_eq!(args.harness, Harness::Codex);
        assert!(Cli::try_parse_from(["muster", "hook", "notification"]).is_err());
        for event in HookEvent::ALL {
            let name = event.as_str();
            assert!(
                Cli::try_parse_from(["muster", "hook", name]).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn each_shell_script_names_the_subcommands_and_serve_flags() {
        // Proves the scripts come from the real command tree: subcommands and a serve flag appear.
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let text = String::from_utf8(completions::script(Cli::command(), shell)).unwrap();
            for word in ["roster", "reservations", "completions", "data-dir"] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
        }
        let bash = String::from_utf8(completions::script(
            Cli::command(),
            clap_complete::Shell::Bash,
        ))
        .unwrap();
        assert!(bash.contains("complete -F _muster"), "{bash:.200}");
    }

    #[test]
    fn the_main_page_is_roff_with_the_subcommands_and_version() {
        // Proves muster(1) is a real page: title macro, NAME, the subcommands, the version.
        let text = String::from_utf8(man::render_main(Cli::command()).unwrap()).unwrap();
        let title = text.lines().find(|l| l.starts_with(".TH ")).unwrap();
        let date = env!("MUSTER_MAN_DATE");
        assert!(
            title.starts_with(&format!(
                ".TH muster 1 {date} \"muster {}",
                env!("CARGO_PKG_VERSION")
            )) && title.ends_with(" \"muster manual\""),
            "{title}"
        );
        assert!(text.contains("SUBCOMMANDS"), "{text:.300}");
        for sub in [
            "muster\\-serve(1)",
            "muster\\-completions(1)",
            "muster\\-man(1)",
        ] {
            assert!(text.contains(sub), "no {sub}");
        }
        assert!(text.contains(env!("MUSTER_VERSION")), "no version");
    }

    #[test]
    fn out_dir_gets_one_page_per_subcommand_and_no_help_page() {
        // Proves --out-dir writes muster.1 first, a page for each subcommand (nested too), and none for `help`.
        let dir = tempfile::tempdir().unwrap();
        let paths = man::write_all(Cli::command(), dir.path()).unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "muster.1");
        for name in [
            "muster-serve.1",
            "muster-guard-install.1",
            "muster-completions.1",
        ] {
            assert!(names.iter().any(|n| n == name), "no {name} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let serve = std::fs::read_to_string(dir.path().join("muster-serve.1")).unwrap();
        assert!(serve.contains("\\-\\-data\\-dir"), "{serve:.400}");
    }
}
