//! Crash-safe file writes: a reader sees the old file or the new one, never half of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same directory: create, write,
/// fsync, rename over `path` (tempfile's `persist`), fsync the directory. On error the temporary
/// file is removed and `path` is untouched.
///
/// The file gets mode 0644: records and signatures are meant to be shared. Files inside the
/// registry use [`write_atomic_private`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with mode 0600, for files inside the (private) registry.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, crate::paths::PRIVATE_FILE_MODE)
}

/// Prefix of the temporary files [`write_atomic`] creates beside their target. A file with this
/// prefix at the top of a run's output directory is trainprov's own (left by a killed writer),
/// never a product.
pub const TEMP_PREFIX: &str = ".trainprov-";

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = builder.prefix(TEMP_PREFIX).tempfile_in(&dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.json");
        write_atomic(&path, b"one").expect("first");
        write_atomic(&path, b"two").expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn failure_leaves_target_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing_dir = dir.path().join("nope/out.json");
        assert!(write_atomic(&missing_dir, b"x").is_err());
        assert!(!missing_dir.exists());
    }
}
