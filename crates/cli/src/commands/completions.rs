//! `muster completions <shell>`: a completion script generated from the clap
//! definitions in `cli.rs`, so it never drifts from the real command line.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

/// Renders the script for `shell` (the binary is completed as `muster`).
pub fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "muster", &mut out);
    out
}

pub fn run(args: &CompletionsArgs) -> i32 {
    write_stdout(&script(args.shell), "the completion script")
}

/// Writes everything to stdout; a closed pipe (`| head`) is not an error
/// worth more than exit 1 and one line.
pub fn write_stdout(bytes: &[u8], what: &str) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 1,
        Err(e) => {
            eprintln!("error: cannot write {what} to stdout: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shell_script_names_the_subcommands_and_serve_flags() {
        // Proves the scripts come from the real command tree: subcommands and a serve flag appear.
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let text = String::from_utf8(script(shell)).unwrap();
            for word in ["roster", "reservations", "completions", "data-dir"] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
        }
        let bash = String::from_utf8(script(clap_complete::Shell::Bash)).unwrap();
        assert!(bash.contains("complete -F _muster"), "{bash:.200}");
    }
}
