//! `muster completions <shell>`: a completion script generated from the clap
//! definitions in `cli.rs` (handed in by `main`), so it never drifts from the
//! real command line.

use std::io::Write;

use clap::Args;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Renders the script of the command line `cmd` for `shell` (the binary is completed as `muster`).
pub fn script(mut cmd: clap::Command, shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "muster", &mut out);
    out
}

pub fn run(args: &CompletionsArgs, cmd: clap::Command) -> i32 {
    write_stdout(&script(cmd, args.shell), "the completion script")
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
