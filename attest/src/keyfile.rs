//! Reading and writing key files: the only file I/O in this crate.
//!
//! `trainprov keygen --out PREFIX` writes `PREFIX.key` (PKCS#8 PEM, mode 0600) and `PREFIX.pub`
//! (SPKI PEM, mode 0644). Both are written to a temporary file in the same directory, fsynced and
//! renamed into place, so an interrupted keygen never leaves half a key behind.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::KeyError;
use crate::keys::{PublicKey, SigningKey};

/// Largest key file we read; real PEM keys are well under 1 KiB.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The two files a key pair lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairPaths {
    /// `PREFIX.key`.
    pub private: PathBuf,
    /// `PREFIX.pub`.
    pub public: PathBuf,
}

impl KeyPairPaths {
    /// The paths for `PREFIX`. A prefix that already ends in `.key` or `.pub` has it stripped,
    /// so `--out keys/signer.key` does not produce `signer.key.key`.
    pub fn for_prefix(prefix: &Path) -> Self {
        let text = prefix.as_os_str().to_string_lossy();
        let base = text
            .strip_suffix(".key")
            .or_else(|| text.strip_suffix(".pub"))
            .unwrap_or(&text);
        KeyPairPaths {
            private: PathBuf::from(format!("{base}.key")),
            public: PathBuf::from(format!("{base}.pub")),
        }
    }
}

fn read_key_text(path: &Path) -> Result<String, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_dir() {
        return Err(read_err(std::io::Error::other(
            "is a directory, expected a PEM key file",
        )));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(read_err(std::io::Error::other(format!(
            "{} bytes is far too large for a key file",
            meta.len()
        ))));
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    String::from_utf8(bytes).map_err(|_| KeyError::Parse {
        path: path.to_path_buf(),
        source: crate::error::KeyParseError::NotPem,
    })
}

/// Loads a private key. If a `.pub` file sits beside a `.key` file it must be its pair: a
/// stale public key would otherwise be handed to verifiers that then reject every signature.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = zeroize::Zeroizing::new(read_key_text(path)?);
    let key = SigningKey::from_pem(&text).map_err(|source| KeyError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if path.extension().is_some_and(|e| e == "key") {
        let public_path = path.with_extension("pub");
        if public_path.is_file() {
            let public = load_public_key(&public_path)?;
            let derived = key.public_key();
            if public != derived {
                return Err(KeyError::Mismatch {
                    private: path.to_path_buf(),
                    public: public_path,
                    private_keyid: derived.keyid().to_string(),
                    public_keyid: public.keyid().to_string(),
                });
            }
        }
    }
    Ok(key)
}

/// Loads a public key (SPKI PEM).
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read_key_text(path)?;
    PublicKey::from_pem(&text).map_err(|source| KeyError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `key` as `PREFIX.key` (0600) and `PREFIX.pub` (0644). Refuses to replace existing
/// files unless `force` is set.
pub fn write_key_pair(
    prefix: &Path,
    key: &SigningKey,
    force: bool,
) -> Result<KeyPairPaths, KeyError> {
    let paths = KeyPairPaths::for_prefix(prefix);
    if !force {
        for path in [&paths.private, &paths.public] {
            if path.exists() {
                return Err(KeyError::Exists { path: path.clone() });
            }
        }
    }
    if let Some(dir) = paths.private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let private_pem = key.to_pkcs8_pem();
    write_atomic(&paths.private, private_pem.as_bytes(), 0o600).map_err(|source| {
        KeyError::Write {
            path: paths.private.clone(),
            source,
        }
    })?;
    write_atomic(&paths.public, key.public_key().to_pem().as_bytes(), 0o644).map_err(|source| {
        KeyError::Write {
            path: paths.public.clone(),
            source,
        }
    })?;
    Ok(paths)
}

/// Writes `bytes` to `path` via a temporary file created in the same directory with `mode`:
/// write, fsync, rename over `path` (tempfile's `persist`), fsync the directory. The temporary
/// file is removed on any error.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".trainprov-key-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = builder.tempfile_in(&dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(&dir) {
        d.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;

    #[test]
    fn keygen_files_load_back_with_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let paths = write_key_pair(&dir.path().join("signer"), &key, false).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&paths.private)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = load_signing_key(&paths.private).expect("load private");
        assert_eq!(loaded.public_key(), key.public_key());
        assert_eq!(
            load_public_key(&paths.public).expect("load public"),
            key.public_key()
        );
        assert!(matches!(
            write_key_pair(&dir.path().join("signer"), &key, false),
            Err(KeyError::Exists { .. })
        ));
    }

    #[test]
    fn mismatched_pub_beside_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write_key_pair(
            &dir.path().join("a"),
            &SigningKey::generate(KeyAlgorithm::Ed25519),
            false,
        )
        .expect("write a");
        let b = write_key_pair(
            &dir.path().join("b"),
            &SigningKey::generate(KeyAlgorithm::Ed25519),
            false,
        )
        .expect("write b");
        std::fs::copy(&b.public, &a.public).expect("copy");
        let err = load_signing_key(&a.private).err().expect("must fail");
        assert!(matches!(err, KeyError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("a.pub"), "{err}");
    }

    #[test]
    fn prefix_with_extension_is_stripped() {
        let p = KeyPairPaths::for_prefix(Path::new("keys/signer.key"));
        assert_eq!(p.private, PathBuf::from("keys/signer.key"));
        assert_eq!(p.public, PathBuf::from("keys/signer.pub"));
    }
}
