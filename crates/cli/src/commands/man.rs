//! `muster man`: the man pages, rendered by clap_mangen from the clap
//! definitions in `cli.rs` (the same text `--help` prints).

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};

fn page(cmd: clap::Command) -> clap_mangen::Man {
    // Never an empty date: clap_mangen drops an empty argument of .TH,
    // which would shift the source and manual names into the wrong places.
    clap_mangen::Man::new(cmd)
        .date(env!("MUSTER_MAN_DATE"))
        .manual("muster manual")
}

/// The top-level page, muster(1).
pub fn render_main() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    page(Cli::command()).render(&mut out)?;
    Ok(out)
}

/// Writes muster.1 and one page per visible subcommand, nested ones
/// included (muster-guard-install.1), into `dir`; returns the paths written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub.clone(), dir, written)?;
        }
        written.push(page(cmd).generate_to(dir)?);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    walk(cmd, dir, &mut written)?;
    written.reverse();
    Ok(written)
}

pub fn run(args: &ManArgs) -> i32 {
    match &args.out_dir {
        None => match render_main() {
            Ok(roff) => super::completions::write_stdout(&roff, "the man page"),
            Err(e) => {
                eprintln!("error: cannot render the man page: {e}");
                1
            }
        },
        Some(dir) => match write_all(dir) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_page_is_roff_with_the_subcommands_and_version() {
        // Proves muster(1) is a real page: title macro, NAME, the subcommands, the version.
        let text = String::from_utf8(render_main().unwrap()).unwrap();
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
        let paths = write_all(dir.path()).unwrap();
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
