//! The content-addressed object store: small inputs needed to replay a run (configs, the
//! uncommitted diff, data manifests, the environment record, logs, pip freeze), each stored once
//! under its BLAKE3 digest.
//!
//! Layout: `REGISTRY/objects/<first two hex digits>/<remaining 62 hex digits>`, directories mode
//! 0700 and files mode 0600 (the registry is private). Objects are written atomically and never
//! modified; reading re-hashes and refuses an object whose bytes no
//! longer match its name.

use std::path::{Path, PathBuf};

use crate::atomic::write_atomic_private;
use crate::paths::create_private_dir_all;

/// Errors of the object store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// OS error on an object file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The object file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The object is not in the store.
    #[error("object {digest} is not in the store at {}; was the registry copied without objects/?", dir.display())]
    Missing {
        /// Its digest.
        digest: String,
        /// The store directory.
        dir: PathBuf,
    },
    /// The object's bytes do not hash to its name.
    #[error("{}: corrupt object (content hashes to {actual})", path.display())]
    Corrupt {
        /// The object file.
        path: PathBuf,
        /// What the bytes hash to.
        actual: String,
    },
    /// Not a 64-digit lowercase hex digest.
    #[error("'{0}' is not a BLAKE3 hex digest")]
    BadDigest(String),
}

/// A content-addressed store rooted at a directory.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    dir: PathBuf,
}

impl ObjectStore {
    /// The store at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ObjectStore { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the object with `digest` lives.
    pub fn path_of(&self, digest: &str) -> Result<PathBuf, ObjectError> {
        let valid = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(ObjectError::BadDigest(digest.to_string()));
        }
        Ok(self.dir.join(&digest[..2]).join(&digest[2..]))
    }

    /// Stores `bytes`, returning their BLAKE3 hex digest. Storing the same bytes twice is a no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<String, ObjectError> {
        let digest = blake3::hash(bytes).to_hex().to_string();
        let path = self.path_of(&digest)?;
        if path.is_file() {
            return Ok(digest);
        }
        let io = |source| ObjectError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            create_private_dir_all(parent).map_err(io)?;
        }
        write_atomic_private(&path, bytes).map_err(io)?;
        Ok(digest)
    }

    /// Reads an object back, checking its digest.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>, ObjectError> {
        let path = self.path_of(digest)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ObjectError::Missing {
                    digest: digest.to_string(),
                    dir: self.dir.clone(),
                })
            }
            Err(source) => return Err(ObjectError::Io { path, source }),
        };
        let actual = blake3::hash(&bytes).to_hex().to_string();
        if actual != digest {
            return Err(ObjectError::Corrupt { path, actual });
        }
        Ok(bytes)
    }

    /// Whether the object is present (without checking its content).
    pub fn contains(&self, digest: &str) -> bool {
        self.path_of(digest).map(|p| p.is_file()).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_round_trip_and_corruption_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStore::new(dir.path().join("objects"));
        let digest = store.put(b"config = 1\n").expect("put");
        assert_eq!(store.put(b"config = 1\n").expect("put again"), digest);
        assert_eq!(store.get(&digest).expect("get"), b"config = 1\n");
        std::fs::write(store.path_of(&digest).expect("path"), b"tampered").expect("write");
        assert!(matches!(
            store.get(&digest),
            Err(ObjectError::Corrupt { .. })
        ));
        assert!(matches!(
            store.get(&"0".repeat(64)),
            Err(ObjectError::Missing { .. })
        ));
        assert!(matches!(
            store.get("../../etc/passwd"),
            Err(ObjectError::BadDigest(_))
        ));
    }
}
