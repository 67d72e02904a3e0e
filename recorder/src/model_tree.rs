//! Walking and hashing a model directory into an OMS [`ModelManifest`].
//!
//! Rules (those of `model_signing` 1.x, except where noted):
//! - every regular file under the root is listed by its `/`-separated relative path;
//! - ignored paths (and, by default, `.git`, `.gitattributes`, `.github`, `.gitignore`) are
//!   skipped together with everything beneath them;
//! - a symlink whose target stays inside the root is hashed as the file it points to, and the
//!   manifest then says `allow_symlinks: true`; a symlink that leaves the root, a dangling one,
//!   or one to a directory is refused (`model_signing` refuses every symlink by default);
//! - sockets, FIFOs and devices are refused;
//! - names that are not UTF-8 are refused, since the manifest is JSON.
//!
//! Files are hashed in parallel on the rayon pool.

use std::path::{Path, PathBuf};

use attest::oms::{HashAlgorithm, ModelManifest, ModelPath, GIT_PATHS};
use rayon::prelude::*;

use crate::file_digest::{blake3_file, sha256_file};

/// How to walk a model directory.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// Paths to leave out, relative to the root (`model.sig`, `provenance.intoto.json`).
    pub ignore: Vec<String>,
    /// Also leave out git metadata (the default, as `model_signing` does).
    pub ignore_git: bool,
    /// Per-file hash.
    pub hash: HashAlgorithm,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            ignore: Vec::new(),
            ignore_git: true,
            hash: HashAlgorithm::Sha256,
        }
    }
}

/// Why a directory could not be hashed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// An OS error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The root is not a directory.
    #[error("{}: not a directory (expected a model directory)", path.display())]
    NotADirectory {
        /// The root.
        path: PathBuf,
    },
    /// A symlink that resolves outside the root or nowhere.
    #[error("{}: symlink points outside the model directory (to {}); copy the file in instead", path.display(), target.display())]
    SymlinkOutside {
        /// The link.
        path: PathBuf,
        /// Where it resolves.
        target: PathBuf,
    },
    /// A symlink to a directory.
    #[error("{}: symlink to a directory is not supported; copy the files in instead", path.display())]
    SymlinkToDirectory {
        /// The link.
        path: PathBuf,
    },
    /// Socket, FIFO or device.
    #[error("{}: special file (socket, FIFO or device) cannot be part of a model", path.display())]
    SpecialFile {
        /// The file.
        path: PathBuf,
    },
    /// A name the JSON manifest cannot carry.
    #[error("{}: file name is not valid UTF-8; rename it", path.display())]
    NonUtf8 {
        /// The file.
        path: PathBuf,
    },
}

/// Normalises an ignore entry: strips `./` prefixes and trailing `/`.
fn normalise_ignore(entry: &str) -> String {
    let mut s = entry.trim();
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    s.trim_end_matches('/').to_string()
}

fn is_ignored(relative: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|i| {
        relative == i
            || (relative.len() > i.len()
                && relative.starts_with(i.as_str())
                && relative.as_bytes()[i.len()] == b'/')
    })
}

/// One file found by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path to read.
    pub path: PathBuf,
    /// Path relative to the root, `/`-separated.
    pub relative: ModelPath,
}

/// The files of a tree, in no particular order, and what the walk decided.
#[derive(Debug, Clone)]
pub struct Walk {
    /// Every file to hash.
    pub entries: Vec<Entry>,
    /// Whether any entry is a symlink (inside the root).
    pub has_symlinks: bool,
    /// The normalised, sorted ignore list that was applied.
    pub ignore_paths: Vec<String>,
    /// The root's own name.
    pub root_name: String,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TreeError {
    let path = path.to_path_buf();
    move |source| TreeError::Io { path, source }
}

/// Lists the files under `root` by the rules in the module docs, without hashing them.
pub fn walk(root: &Path, options: &TreeOptions) -> Result<Walk, TreeError> {
    let canonical_root = root.canonicalize().map_err(io_error(root))?;
    if !canonical_root.is_dir() {
        return Err(TreeError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut ignore: Vec<String> = options
        .ignore
        .iter()
        .map(|i| normalise_ignore(i))
        .filter(|i| !i.is_empty())
        .collect();
    if options.ignore_git {
        ignore.extend(GIT_PATHS.iter().map(|p| p.to_string()));
    }
    ignore.sort();
    ignore.dedup();
    let (entries, has_symlinks) = collect_entries(&canonical_root, root, &ignore)?;
    let root_name = canonical_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Walk {
        entries,
        has_symlinks,
        ignore_paths: ignore,
        root_name,
    })
}

/// Walks `root` and hashes every file into a manifest (see the module docs for the rules).
pub fn hash_model_dir(root: &Path, options: &TreeOptions) -> Result<ModelManifest, TreeError> {
    let Walk {
        entries,
        has_symlinks,
        ignore_paths,
        root_name,
    } = walk(root, options)?;
    let hashed: Result<Vec<(ModelPath, String)>, TreeError> = entries
        .into_par_iter()
        .map(|entry| {
            let digest = match options.hash {
                HashAlgorithm::Sha256 => sha256_file(&entry.path),
                HashAlgorithm::Blake3 => blake3_file(&entry.path),
            }
            .map_err(io_error(&entry.path))?;
            Ok((entry.relative, digest))
        })
        .collect();
    Ok(ModelManifest {
        model_name: root_name,
        hash_type: options.hash,
        allow_symlinks: has_symlinks,
        ignore_paths,
        files: hashed?.into_iter().collect(),
    })
}

fn collect_entries(
    canonical_root: &Path,
    shown_root: &Path,
    ignore: &[String],
) -> Result<(Vec<Entry>, bool), TreeError> {
    let mut entries = Vec::new();
    let mut has_symlinks = false;
    let walker = walkdir::WalkDir::new(canonical_root)
        .follow_links(false)
        .min_depth(1)
        .into_iter();
    let relative_of = |path: &Path| -> Option<String> {
        path.strip_prefix(canonical_root)
            .ok()
            .and_then(|r| r.to_str())
            .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
    };
    let walker =
        walker.filter_entry(|e| relative_of(e.path()).is_none_or(|r| !is_ignored(&r, ignore)));
    for item in walker {
        let item = item.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| shown_root.to_path_buf());
            TreeError::Io {
                path,
                source: e.into(),
            }
        })?;
        let shown = shown_root.join(
            item.path()
                .strip_prefix(canonical_root)
                .unwrap_or(item.path()),
        );
        let relative = relative_of(item.path()).ok_or_else(|| TreeError::NonUtf8 {
            path: shown.clone(),
        })?;
        let file_type = item.file_type();
        if file_type.is_dir() {
            continue;
        }
        if file_type.is_symlink() {
            check_symlink(item.path(), canonical_root, &shown)?;
            has_symlinks = true;
        } else if !file_type.is_file() {
            return Err(TreeError::SpecialFile { path: shown });
        }
        let relative = ModelPath::new(relative).map_err(|_| TreeError::NonUtf8 {
            path: shown.clone(),
        })?;
        entries.push(Entry {
            path: item.path().to_path_buf(),
            relative,
        });
    }
    Ok((entries, has_symlinks))
}

fn check_symlink(link: &Path, canonical_root: &Path, shown: &Path) -> Result<(), TreeError> {
    let target = link.canonicalize().map_err(|_| TreeError::SymlinkOutside {
        path: shown.to_path_buf(),
        target: std::fs::read_link(link).unwrap_or_default(),
    })?;
    if !target.starts_with(canonical_root) {
        return Err(TreeError::SymlinkOutside {
            path: shown.to_path_buf(),
            target,
        });
    }
    let meta = std::fs::metadata(&target).map_err(|source| TreeError::Io {
        path: shown.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(TreeError::SymlinkToDirectory {
            path: shown.to_path_buf(),
        });
    }
    if !meta.is_file() {
        return Err(TreeError::SpecialFile {
            path: shown.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("sub/deeper")).expect("mkdir");
        fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
        fs::write(dir.path().join("config.json"), "{}").expect("write");
        fs::write(dir.path().join("sub/deeper/w.bin"), [1u8; 10]).expect("write");
        fs::write(dir.path().join(".git/HEAD"), "ref").expect("write");
        fs::write(dir.path().join("model.sig"), "old").expect("write");
        dir
    }

    #[test]
    fn lists_files_skips_ignored_and_git() {
        let dir = tree();
        let options = TreeOptions {
            ignore: vec!["model.sig".into()],
            ..Default::default()
        };
        let m = hash_model_dir(dir.path(), &options).expect("hash");
        let names: Vec<&str> = m.files.keys().map(ModelPath::as_str).collect();
        assert_eq!(names, ["config.json", "sub/deeper/w.bin"]);
        assert!(m.ignore_paths.contains(&"model.sig".to_string()));
        assert!(m.ignore_paths.contains(&".git".to_string()));
        assert!(!m.allow_symlinks);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_inside_are_hashed_outside_refused() {
        let dir = tree();
        std::os::unix::fs::symlink("config.json", dir.path().join("alias.json")).expect("symlink");
        let m = hash_model_dir(dir.path(), &TreeOptions::default()).expect("hash");
        assert!(m.allow_symlinks);
        let alias = m
            .files
            .get(&ModelPath::new("alias.json").expect("p"))
            .expect("alias listed");
        assert_eq!(
            alias,
            m.files
                .get(&ModelPath::new("config.json").expect("p"))
                .expect("config")
        );

        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), "x").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("leak"))
            .expect("symlink");
        let err = hash_model_dir(dir.path(), &TreeOptions::default()).expect_err("must refuse");
        assert!(matches!(err, TreeError::SymlinkOutside { .. }), "{err}");
        assert!(err.to_string().contains("leak"), "{err}");
    }

    #[test]
    fn ignore_matching_is_by_component() {
        let ignore = vec!["a".to_string(), "b/c".to_string()];
        assert!(is_ignored("a", &ignore));
        assert!(is_ignored("a/x", &ignore));
        assert!(!is_ignored("ab", &ignore));
        assert!(is_ignored("b/c/d", &ignore));
        assert!(!is_ignored("b/cd", &ignore));
    }
}
