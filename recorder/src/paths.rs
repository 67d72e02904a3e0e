//! Where trainprov keeps its state.
//!
//! The registry directory holds `registry.sqlite` and the content-addressed `objects/` store
//! (the snapshot hash cache is per user, never in a registry: [`crate::hash_cache`]). It is
//! chosen, first match wins:
//! 1. an explicit `--registry DIR` (passed in as `explicit`);
//! 2. the `TRAINPROV_REGISTRY` environment variable;
//! 3. `.trainprov/` at the root of the git work tree containing the current directory;
//! 4. `.trainprov/` in the current directory.

use std::path::{Path, PathBuf};

/// Name of the registry directory created at a git root.
pub const REGISTRY_DIR: &str = ".trainprov";
/// Environment variable that overrides the registry location.
pub const REGISTRY_ENV: &str = "TRAINPROV_REGISTRY";

/// Resolves the registry directory as described in the module docs.
pub fn registry_dir(explicit: Option<&Path>, cwd: &Path) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os(REGISTRY_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    match git_root(cwd) {
        Some(root) => root.join(REGISTRY_DIR),
        None => cwd.join(REGISTRY_DIR),
    }
}

/// The nearest ancestor of `start` (inclusive) that holds a `.git` entry.
pub fn git_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_wins_then_git_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("repo/.git")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("repo/a/b")).expect("mkdir");
        let cwd = dir.path().join("repo/a/b");
        assert_eq!(
            registry_dir(Some(Path::new("/x")), &cwd),
            PathBuf::from("/x")
        );
        if std::env::var_os(REGISTRY_ENV).is_none() {
            assert_eq!(registry_dir(None, &cwd), dir.path().join("repo/.trainprov"));
            assert_eq!(
                registry_dir(None, dir.path()),
                dir.path().join(".trainprov")
            );
        }
    }
}
