//! Project and branch of a working directory, read from the files git keeps
//! (no `git` process: this runs on the hook path).

use std::path::{Path, PathBuf};

/// The checkout root above `cwd`, if any: the nearest directory holding `.git`.
fn checkout_root(cwd: &Path) -> Option<PathBuf> {
    cwd.ancestors()
        .take(64)
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

/// The checkout root of a working directory, as a string (for reservations:
/// two sessions in one checkout compare the same files).
pub fn repo_root(cwd: &str) -> Option<String> {
    checkout_root(Path::new(cwd)).map(|p| p.to_string_lossy().into_owned())
}

/// The git directory of a root: `.git` itself, or where a worktree's `.git` file points.
fn git_dir(root: &Path) -> Option<PathBuf> {
    let dot_git = root.join(".git");
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    let text = std::fs::read_to_string(&dot_git).ok()?;
    let target = text.trim().strip_prefix("gitdir:")?.trim();
    Some(root.join(target))
}

/// `(project, branch)` for a working directory; empty strings where unknown.
/// The project is the repository root's folder name (for a worktree, the
/// main repository's, so every worktree of one repository shares a room).
pub fn detect(cwd: &str) -> (String, String) {
    if cwd.is_empty() {
        return (String::new(), String::new());
    }
    let Some(root) = checkout_root(Path::new(cwd)) else {
        return (String::new(), String::new());
    };
    let gdir = git_dir(&root);
    let main_root = gdir
        .as_ref()
        .and_then(|g| {
            // A worktree's git dir is <main>/.git/worktrees/<name>.
            let parent = g.parent()?;
            (parent.file_name()? == "worktrees")
                .then(|| parent.parent()?.parent().map(Path::to_path_buf))?
        })
        .unwrap_or_else(|| root.clone());
    let project = main_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let branch = gdir
        .and_then(|g| std::fs::read_to_string(g.join("HEAD")).ok())
        .map(|head| {
            let head = head.trim();
            match head.strip_prefix("ref: refs/heads/") {
                Some(branch) => branch.to_string(),
                None => head.chars().take(12).collect(), // detached: short commit
            }
        })
        .unwrap_or_default();
    (project, branch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_project_and_branch_from_git_files() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("myrepo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("src/deep")).unwrap();
        std::fs::write(repo.join(".git/HEAD"), "ref: refs/heads/feature/x\n").unwrap();
        let (p, b) = detect(repo.join("src/deep").to_str().unwrap());
        assert_eq!((p.as_str(), b.as_str()), ("myrepo", "feature/x"));
        assert_eq!(
            detect(tmp.path().to_str().unwrap()),
            (String::new(), String::new())
        );
        assert_eq!(detect(""), (String::new(), String::new()));
    }
}
