//! Walking and hashing a model directory into an OMS [`ModelManifest`].
//!
//! Rules (those of `model_signing` 1.x, except where noted):
//! - the root may itself be a symlink to a directory;
//! - every regular file under the root is listed by its `/`-separated relative path;
//! - ignored paths (and, by default, `.git`, `.gitattributes`, `.github`, `.gitignore`) are
//!   skipped together with everything beneath them;
//! - a symlink is signed by the **content** it resolves to, and the manifest then says
//!   `allow_symlinks: true` (`model_signing` refuses every symlink unless given
//!   `--allow_symlinks`):
//!   - a link resolving to a regular file inside the root is hashed as that file;
//!   - so is one resolving into the `blobs/` directory of a Hugging Face hub cache repository
//!     when the root lies under that repository's `snapshots/` (the hub-cache layout:
//!     `models--org--name/snapshots/<rev>/model.safetensors -> ../../blobs/<sha256>`);
//!   - a link resolving to a directory inside the root is followed: the files beneath it are
//!     listed under the link's path (`latest -> ckpt-1` lists `latest/…` beside `ckpt-1/…`).
//!     A link to the directory holding it, or to one above it (a cycle), adds no file that is
//!     not already listed and is skipped;
//!   - any other link is refused: one leaving the root (copy the file in instead), a dangling
//!     one ([`TreeError::DanglingSymlink`]), one to a FIFO, socket or device;
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
    /// A symlink whose target does not exist.
    #[error("{}: dangling symlink (its target {} does not exist); fix or remove the link", path.display(), target.display())]
    DanglingSymlink {
        /// The link.
        path: PathBuf,
        /// Its link text.
        target: PathBuf,
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
    /// Whether any entry was reached through a symlink.
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

/// What every directory of one walk shares.
struct Walker<'a> {
    /// The root, all symlinks resolved.
    canonical_root: &'a Path,
    /// The root as given, for messages.
    shown_root: &'a Path,
    ignore: &'a [String],
    /// With the hub-cache layout, the repository's `blobs/` (resolved): links may point there.
    hub_blobs: Option<PathBuf>,
    entries: Vec<Entry>,
    has_symlinks: bool,
}

fn collect_entries(
    canonical_root: &Path,
    shown_root: &Path,
    ignore: &[String],
) -> Result<(Vec<Entry>, bool), TreeError> {
    let mut walker = Walker {
        canonical_root,
        shown_root,
        ignore,
        hub_blobs: hub_cache_blobs(canonical_root),
        entries: Vec::new(),
        has_symlinks: false,
    };
    let mut ancestors = vec![canonical_root.to_path_buf()];
    walker.dir(canonical_root, "", &mut ancestors)?;
    Ok((walker.entries, walker.has_symlinks))
}

/// The `blobs/` directory of the Hugging Face hub cache repository whose `snapshots/` holds
/// `root` (at any depth below it), if `root` lies in one.
fn hub_cache_blobs(root: &Path) -> Option<PathBuf> {
    root.ancestors()
        .skip(1)
        .find(|a| a.file_name().is_some_and(|n| n == "snapshots"))
        .and_then(Path::parent)
        .map(|repo| repo.join("blobs"))
        .filter(|blobs| blobs.is_dir())
}

impl Walker<'_> {
    /// Lists `dir` (read through this path; `rel` below the root, `""` for the root) and its
    /// subdirectories. `ancestors` are the resolved directories from the root down to `dir`.
    fn dir(
        &mut self,
        dir: &Path,
        rel: &str,
        ancestors: &mut Vec<PathBuf>,
    ) -> Result<(), TreeError> {
        let mut items: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
            .map_err(io_error(dir))?
            .collect::<Result<_, _>>()
            .map_err(io_error(dir))?;
        items.sort_by_key(std::fs::DirEntry::file_name);
        for item in items {
            let path = item.path();
            let shown = self.shown_root.join(if rel.is_empty() {
                PathBuf::from(item.file_name())
            } else {
                Path::new(rel).join(item.file_name())
            });
            let Some(name) = item.file_name().to_str().map(str::to_string) else {
                return Err(TreeError::NonUtf8 { path: shown });
            };
            let relative = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if is_ignored(&relative, self.ignore) {
                continue;
            }
            let file_type = item.file_type().map_err(io_error(&shown))?;
            if file_type.is_dir() {
                ancestors.push(
                    ancestors
                        .last()
                        .map_or_else(|| path.clone(), |parent| parent.join(item.file_name())),
                );
                let result = self.dir(&path, &relative, ancestors);
                ancestors.pop();
                result?;
                continue;
            }
            if file_type.is_symlink() {
                self.has_symlinks = true;
                let target = match path.canonicalize() {
                    Ok(target) => target,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(TreeError::DanglingSymlink {
                            target: std::fs::read_link(&path).unwrap_or_default(),
                            path: shown,
                        })
                    }
                    Err(e) => return Err(io_error(&shown)(e)),
                };
                let meta = std::fs::metadata(&target).map_err(io_error(&shown))?;
                let inside = target.starts_with(self.canonical_root);
                if meta.is_dir() {
                    if !inside {
                        return Err(TreeError::SymlinkOutside {
                            path: shown,
                            target,
                        });
                    }
                    if ancestors.contains(&target) {
                        // A cycle: everything beneath it is listed already.
                        continue;
                    }
                    ancestors.push(target);
                    let result = self.dir(&path, &relative, ancestors);
                    ancestors.pop();
                    result?;
                    continue;
                }
                if !meta.is_file() {
                    return Err(TreeError::SpecialFile { path: shown });
                }
                let in_hub_blobs = self
                    .hub_blobs
                    .as_ref()
                    .is_some_and(|blobs| target.starts_with(blobs));
                if !inside && !in_hub_blobs {
                    return Err(TreeError::SymlinkOutside {
                        path: shown,
                        target,
                    });
                }
            } else if !file_type.is_file() {
                return Err(TreeError::SpecialFile { path: shown });
            }
            let relative =
                ModelPath::new(relative).map_err(|_| TreeError::NonUtf8 { path: shown })?;
            self.entries.push(Entry { path, relative });
        }
        Ok(())
    }
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

    /// The Hugging Face hub cache: `snapshots/<rev>/*` are links into `blobs/`, outside the
    /// snapshot directory given; they are signed as the content they resolve to.
    #[cfg(unix)]
    #[test]
    fn issue11_hub_cache_snapshot_is_signed_by_content() {
        use sha2::Digest as _;
        let cache = tempfile::tempdir().expect("tempdir");
        let repo = cache.path().join("models--org--tiny");
        fs::create_dir_all(repo.join("blobs")).expect("mkdir");
        fs::create_dir_all(repo.join("snapshots/abc123/sub")).expect("mkdir");
        fs::write(repo.join("blobs/1111"), b"weights").expect("write");
        fs::write(repo.join("blobs/2222"), b"{}").expect("write");
        let snap = repo.join("snapshots/abc123");
        std::os::unix::fs::symlink("../../blobs/1111", snap.join("model.safetensors"))
            .expect("symlink");
        std::os::unix::fs::symlink("../../../blobs/2222", snap.join("sub/config.json"))
            .expect("symlink");
        // The root given may itself be a link.
        let holder = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(&snap, holder.path().join("model")).expect("symlink");
        for root in [snap.clone(), holder.path().join("model")] {
            let m = hash_model_dir(&root, &TreeOptions::default()).expect("hub layout");
            let names: Vec<&str> = m.files.keys().map(ModelPath::as_str).collect();
            assert_eq!(names, ["model.safetensors", "sub/config.json"]);
            assert_eq!(
                m.files[&ModelPath::new("model.safetensors").expect("p")],
                hex::encode(sha2::Sha256::digest(b"weights"))
            );
            assert!(m.allow_symlinks);
        }
        // A link out of the cache repository is still refused.
        let elsewhere = tempfile::tempdir().expect("tempdir");
        fs::write(elsewhere.path().join("x"), b"x").expect("write");
        std::os::unix::fs::symlink(elsewhere.path().join("x"), snap.join("leak")).expect("symlink");
        let err = hash_model_dir(&snap, &TreeOptions::default()).expect_err("outside");
        assert!(matches!(err, TreeError::SymlinkOutside { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn issue11_directory_links_are_followed_cycles_skipped_dangling_refused() {
        let dir = tree();
        fs::create_dir_all(dir.path().join("ckpt-1")).expect("mkdir");
        fs::write(dir.path().join("ckpt-1/w.bin"), b"w").expect("write");
        std::os::unix::fs::symlink("ckpt-1", dir.path().join("latest")).expect("symlink");
        std::os::unix::fs::symlink("..", dir.path().join("ckpt-1/up")).expect("symlink");
        std::os::unix::fs::symlink(".", dir.path().join("self")).expect("symlink");
        let m = hash_model_dir(dir.path(), &TreeOptions::default()).expect("hash");
        let names: Vec<&str> = m.files.keys().map(ModelPath::as_str).collect();
        assert_eq!(
            names,
            [
                "ckpt-1/w.bin",
                "config.json",
                "latest/w.bin",
                "model.sig",
                "sub/deeper/w.bin"
            ]
        );
        std::os::unix::fs::symlink("gone", dir.path().join("dangling")).expect("symlink");
        let err = hash_model_dir(dir.path(), &TreeOptions::default()).expect_err("dangling");
        assert!(matches!(err, TreeError::DanglingSymlink { .. }), "{err}");
        assert!(err.to_string().contains("dangling"), "{err}");
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
