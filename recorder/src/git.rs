//! The code a run used: repository, HEAD commit, branch, remotes (credentials stripped) and the
//! full uncommitted change, including untracked files, as a patch that `git apply --binary`
//! re-applies on top of the recorded commit.
//!
//! Paths under the run's inputs and outputs (`--data`, `--out`, ...) and the registry are left out
//! of the patch (they are recorded by digest instead), as are untracked files larger than
//! [`MAX_UNTRACKED_BYTES`]: those are listed in [`CodeState::skipped`] with their digests so a
//! replay can at least detect that they differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::{DiffOptions, Patch, Repository};
use serde::{Deserialize, Serialize};

use crate::redact::redact_url;

/// Untracked files above this size are not embedded in the patch.
pub const MAX_UNTRACKED_BYTES: u64 = 8 * 1024 * 1024;

/// Errors reading the repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// libgit2 failed.
    #[error("{}: git: {source}", path.display())]
    Git {
        /// The repository.
        path: PathBuf,
        /// The libgit2 error.
        source: git2::Error,
    },
}

/// A file left out of the patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    /// Path relative to the repository root.
    pub path: String,
    /// Why it was left out.
    pub reason: String,
    /// Its BLAKE3 digest, when it could be read.
    pub blake3: Option<String>,
}

/// The state of the code at the start of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeState {
    /// Work tree root.
    pub root: PathBuf,
    /// HEAD commit; `None` in a repository without commits.
    pub commit: Option<String>,
    /// Current branch, if HEAD is on one.
    pub branch: Option<String>,
    /// Remote name → URL with credentials redacted.
    pub remotes: BTreeMap<String, String>,
    /// Whether there are uncommitted changes (tracked or untracked, outside excluded paths).
    pub dirty: bool,
    /// Paths in the uncommitted change, relative to the root.
    pub changed_paths: Vec<String>,
    /// Files left out of the patch.
    pub skipped: Vec<SkippedFile>,
    /// The uncommitted change as a binary git patch (empty when clean).
    #[serde(skip)]
    pub patch: Vec<u8>,
}

/// Reads the repository containing `cwd`; `Ok(None)` outside any git work tree. `exclude` lists
/// paths (inputs, outputs, the registry) to leave out of the patch.
pub fn capture_code(cwd: &Path, exclude: &[PathBuf]) -> Result<Option<CodeState>, GitError> {
    let repo = match Repository::discover(cwd) {
        Ok(repo) => repo,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(source) => {
            return Err(GitError::Git {
                path: cwd.to_path_buf(),
                source,
            })
        }
    };
    let Some(workdir) = repo.workdir().map(Path::to_path_buf) else {
        return Ok(None);
    };
    let err = |source| GitError::Git {
        path: workdir.clone(),
        source,
    };
    let head = repo.head().ok();
    let commit = head
        .as_ref()
        .and_then(|h| h.peel_to_commit().ok())
        .map(|c| c.id().to_string());
    let branch = head
        .as_ref()
        .filter(|h| h.is_branch())
        .and_then(|h| h.shorthand().ok().map(str::to_string));
    let mut remotes = BTreeMap::new();
    for name in repo
        .remotes()
        .map_err(err)?
        .iter()
        .filter_map(|n| n.ok().flatten())
    {
        if let Ok(remote) = repo.find_remote(name) {
            remotes.insert(
                name.to_string(),
                redact_url(remote.url().unwrap_or_default()),
            );
        }
    }
    let root = workdir.canonicalize().unwrap_or(workdir.clone());
    let excluded: Vec<String> = exclude
        .iter()
        .filter_map(|p| relative_in(&root, p))
        .collect();
    let (patch, changed_paths, skipped) =
        uncommitted_change(&repo, &root, &excluded).map_err(err)?;
    Ok(Some(CodeState {
        root,
        commit,
        branch,
        remotes,
        dirty: !changed_paths.is_empty() || !skipped.is_empty(),
        changed_paths,
        skipped,
        patch,
    }))
}

/// `path` relative to `root` with `/` separators, if it lies inside.
fn relative_in(root: &Path, path: &Path) -> Option<String> {
    let absolute = std::path::absolute(path).ok()?;
    let resolved = absolute.canonicalize().unwrap_or(absolute);
    let rel = resolved
        .strip_prefix(root)
        .ok()?
        .to_str()?
        .replace(std::path::MAIN_SEPARATOR, "/");
    (!rel.is_empty()).then_some(rel)
}

fn is_under(path: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        path == p || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
    })
}

type Change = (Vec<u8>, Vec<String>, Vec<SkippedFile>);

fn uncommitted_change(
    repo: &Repository,
    root: &Path,
    excluded: &[String],
) -> Result<Change, git2::Error> {
    let head_tree = repo.head().ok().and_then(|h| h.peel_to_tree().ok());
    let mut options = DiffOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true)
        .show_binary(true)
        .include_typechange(true);
    let diff = repo.diff_tree_to_workdir_with_index(head_tree.as_ref(), Some(&mut options))?;
    let mut patch_bytes = Vec::new();
    let mut changed = Vec::new();
    let mut skipped = Vec::new();
    for index in 0..diff.deltas().len() {
        let Some(delta) = diff.get_delta(index) else {
            continue;
        };
        let file = if delta.new_file().path().is_some() {
            delta.new_file()
        } else {
            delta.old_file()
        };
        let Some(path) = file
            .path()
            .and_then(Path::to_str)
            .map(|p| p.replace('\\', "/"))
        else {
            continue;
        };
        if is_under(&path, excluded) {
            continue;
        }
        if delta.status() == git2::Delta::Untracked {
            let size = std::fs::symlink_metadata(root.join(&path))
                .map(|m| m.len())
                .unwrap_or(0);
            if size > MAX_UNTRACKED_BYTES {
                let blake3 = crate::file_digest::blake3_file(&root.join(&path)).ok();
                skipped.push(SkippedFile {
                    reason: format!("untracked and {size} bytes (over {MAX_UNTRACKED_BYTES}); commit it, ignore it, or pass it as --data"),
                    path,
                    blake3,
                });
                continue;
            }
        }
        if let Some(mut patch) = Patch::from_diff(&diff, index)? {
            patch_bytes.extend_from_slice(&patch.to_buf()?);
        }
        changed.push(path);
    }
    Ok((patch_bytes, changed, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn outside_a_repository_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(capture_code(dir.path(), &[]).expect("capture").is_none());
    }

    #[test]
    fn captures_commit_remote_and_a_patch_that_reapplies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir");
        git(&repo, &["init", "-q"]);
        std::fs::write(repo.join("train.py"), "print('v1')\n").expect("write");
        std::fs::write(repo.join("blob.bin"), [0u8, 1, 2, 255]).expect("write");
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-qm", "init"]);
        git(
            &repo,
            &[
                "remote",
                "add",
                "origin",
                "https://user:sekrit-token@example.invalid/org/repo.git",
            ],
        );
        std::fs::write(repo.join("train.py"), "print('v2')\n").expect("write");
        std::fs::write(repo.join("blob.bin"), [9u8, 0, 0, 1, 2]).expect("write");
        std::fs::create_dir_all(repo.join("new")).expect("mkdir");
        std::fs::write(repo.join("new/helper.py"), "x = 1\n").expect("write");
        std::fs::create_dir_all(repo.join("out")).expect("mkdir");
        std::fs::write(repo.join("out/model.bin"), "product").expect("write");

        let state = capture_code(&repo, &[repo.join("out")])
            .expect("capture")
            .expect("in a repo");
        assert!(state.dirty);
        assert_eq!(state.branch.as_deref(), Some("main"));
        assert!(
            !state.remotes["origin"].contains("sekrit-token"),
            "{:?}",
            state.remotes
        );
        assert_eq!(
            state.changed_paths,
            ["blob.bin", "new/helper.py", "train.py"]
        );

        // Re-apply on a clean clone at the recorded commit: the trees must be identical.
        let clone = dir.path().join("clone");
        git(
            dir.path(),
            &["clone", "-q", repo.to_str().expect("utf8"), "clone"],
        );
        git(
            &clone,
            &["checkout", "-q", state.commit.as_deref().expect("commit")],
        );
        std::fs::write(dir.path().join("change.patch"), &state.patch).expect("write patch");
        git(&clone, &["apply", "--binary", "../change.patch"]);
        for file in ["train.py", "blob.bin", "new/helper.py"] {
            assert_eq!(
                std::fs::read(clone.join(file)).expect("read"),
                std::fs::read(repo.join(file)).expect("read"),
                "{file}"
            );
        }
        assert!(
            !clone.join("out/model.bin").exists(),
            "excluded paths stay out of the patch"
        );
    }
}
