//! `muster man`: the man pages, rendered by clap_mangen from the clap
//! definitions in `cli.rs` (handed in by `main`; the same text `--help` prints).

use std::path::{Path, PathBuf};

use clap::Args;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write muster.1 and a page per subcommand into DIR (created if missing) instead of printing muster.1
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

fn page(cmd: clap::Command) -> clap_mangen::Man {
    // Never an empty date: clap_mangen drops an empty argument of .TH,
    // which would shift the source and manual names into the wrong places.
    clap_mangen::Man::new(cmd)
        .date(env!("MUSTER_MAN_DATE"))
        .manual("muster manual")
}

/// The top-level page of the command line `cmd`, muster(1).
pub fn render_main(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    page(cmd).render(&mut out)?;
    Ok(out)
}

/// Writes muster.1 and one page per visible subcommand, nested ones
/// included (muster-guard-install.1), into `dir`; returns the paths written.
pub fn write_all(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub.clone(), dir, written)?;
        }
        written.push(page(cmd).generate_to(dir)?);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    walk(cmd, dir, &mut written)?;
    written.reverse();
    Ok(written)
}

pub fn run(args: &ManArgs, cmd: clap::Command) -> i32 {
    match &args.out_dir {
        None => match render_main(cmd) {
            Ok(roff) => super::completions::write_stdout(&roff, "the man page"),
            Err(e) => {
                eprintln!("error: cannot render the man page: {e}");
                1
            }
        },
        Some(dir) => match write_all(cmd, dir) {
            Ok(paths) => {
                for path in paths {
                    println!("{}", path.display());
                }
                0
            }
            Err(e) => {
                eprintln!(
                    "error: cannot write the man pages to {}: {e}",
                    dir.display()
                );
                1
            }
        },
    }
}
