//! Where trainprov keeps its state.
//!
//! The registry directory holds `registry.sqlite`, the content-addressed `objects/` store and
//! the snapshot hash cache `hash-cache.sqlite`. It is chosen, first match wins:
//! 1. an explicit `--registry DIR` (passed in as `explicit`);
//! 2. the `TRAINPROV_REGISTRY` environment variable;
//! 3. `.trainprov/` at the root of the git work tree containing the current directory;
//! 4. `.trainprov/` in the current directory.

use std::path::{Path, PathBuf};

/// Name of the registry directory created at a git root.
pub const REGISTRY_DIR: &str = ".trainprov";
/// Environment variable that overrides the registry location.
pub const REGISTRY_ENV: &str = "TRAINPROV_REGISTRY";
/// File name of the snapshot hash cache inside the registry directory.
pub const HASH_CACHE_FILE: &str = "hash-cache.sqlite";

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

/// The hash cache that belongs to a registry directory.
pub fn hash_cache_path(registry_dir: &Path) -> PathBuf {
    registry_dir.join(HASH_CACHE_FILE)
}

/// The nearest ancestor of `start` (inclusive) that holds a `.git` entry.
pub fn git_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

/// How a registry directory was chosen (the rule of the module docs that matched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrySource {
    /// `--registry DIR`.
    Flag,
    /// `$TRAINPROV_REGISTRY`.
    Environment,
    /// `.trainprov/` at the git root above the current directory.
    GitRoot,
    /// `.trainprov/` in the current directory (no git work tree).
    CurrentDirectory,
}

impl RegistrySource {
    /// A short name for output: `--registry`, `TRAINPROV_REGISTRY`, `git-root`, `current-dir`.
    pub fn name(self) -> &'static str {
        match self {
            RegistrySource::Flag => "--registry",
            RegistrySource::Environment => REGISTRY_ENV,
            RegistrySource::GitRoot => "git-root",
            RegistrySource::CurrentDirectory => "current-dir",
        }
    }

    /// Whether the location was found by looking around the current directory rather than
    /// named by the user (a gate may then be reading an untrusted checkout's registry).
    pub fn discovered(self) -> bool {
        matches!(
            self,
            RegistrySource::GitRoot | RegistrySource::CurrentDirectory
        )
    }
}

/// [`registry_dir`], and which rule chose it.
pub fn locate_registry(explicit: Option<&Path>, cwd: &Path) -> (PathBuf, RegistrySource) {
    if let Some(dir) = explicit {
        return (dir.to_path_buf(), RegistrySource::Flag);
    }
    if let Some(dir) = std::env::var_os(REGISTRY_ENV).filter(|v| !v.is_empty()) {
        return (PathBuf::from(dir), RegistrySource::Environment);
    }
    match git_root(cwd) {
        Some(root) => (root.join(REGISTRY_DIR), RegistrySource::GitRoot),
        None => (cwd.join(REGISTRY_DIR), RegistrySource::CurrentDirectory),
    }
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
