//! Where trainprov keeps its state.
//!
//! The registry directory holds `registry.sqlite` and the content-addressed `objects/` store
//! (the snapshot hash cache is per user, never in a registry: [`crate::hash_cache`]). It is
//! chosen, first match wins:
//! 1. an explicit `--registry DIR` (passed in as `explicit`);
//! 2. the `TRAINPROV_REGISTRY` environment variable;
//! 3. `.trainprov/` at the root of the git work tree containing the current directory;
//! 4. `.trainprov/` in the current directory.
//!
//! The registry is private: trainprov creates its directories with mode 0700 and its files with
//! mode 0600 ([`create_private_dir_all`], [`ensure_private_file`],
//! [`crate::atomic::write_atomic_private`]), and tightens an existing registry directory, its
//! databases and their WAL/SHM files to those modes when it opens them.

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

/// Mode of every directory trainprov creates inside the registry.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file trainprov creates inside the registry.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode 0700 (before the umask, which can only
/// remove bits). Existing directories are left as they are.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(PRIVATE_DIR_MODE);
    }
    builder.create(dir)
}

/// Sets `path`'s mode to `mode` when it exists with any other permission bits set; a missing
/// file is not an error.
pub fn restrict_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() && meta.permissions().mode() & 0o777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Makes sure the file at `path` exists with mode 0600: creates it empty if missing (SQLite
/// treats an empty file as a new database, and gives its WAL and SHM files the database file's
/// mode), otherwise restricts its mode and that of its `-wal` and `-shm` companions where this
/// user may (a registry owned by someone else is read as it is).
pub fn ensure_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(PRIVATE_FILE_MODE);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = restrict_mode(path, PRIVATE_FILE_MODE);
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut companion = path.as_os_str().to_owned();
                companion.push(suffix);
                let _ = restrict_mode(Path::new(&companion), PRIVATE_FILE_MODE);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
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
