//! Data snapshots: a sorted BLAKE3 manifest of every file under a directory and its digest.
//!
//! A snapshot names exactly which bytes a training run read. It is the canonical **manifest**
//! below; the **snapshot digest** is the BLAKE3 hash of the manifest bytes (lowercase hex), and
//! the SHA-256 of the same bytes is given beside it for tools that know no BLAKE3 (in-toto
//! digest sets carry both).
//!
//! # What is recorded
//!
//! Inputs are pinned by **content**: what a training job reads through a path is what is
//! recorded for it, whether the path is a regular file or a symlink (the Hugging Face hub cache,
//! where `snapshots/<rev>/*` point into `blobs/`, DVC's symlink cache, git-annex, datasets on a
//! shared mount). Walking the root directory (the root itself may be a symlink to a directory):
//! - every **regular file**, as its path relative to the root, its size and the BLAKE3 of its
//!   content;
//! - every **symlink that resolves to a regular file**, as its path, the size and BLAKE3 of the
//!   content it resolves to (following every link of the chain), and beside them its link text
//!   exactly as `readlink` returns it. The target may lie anywhere, inside the root or outside
//!   it (a shared mount): its content is recorded either way, and its path is not;
//! - every **symlink that resolves to a directory** is followed: the files beneath it are
//!   recorded under the link's path, as if the link were that directory (the directory link's
//!   own text is not recorded). A link that resolves to the root or to a directory above it on
//!   the way down (a cycle) is refused ([`SnapshotError::SymlinkCycle`]);
//! - a **dangling** symlink (its target does not exist) is refused
//!   ([`SnapshotError::DanglingSymlink`]), as is a symlink to a FIFO, socket or device;
//! - **directories** are not recorded themselves, so empty directories leave no trace;
//! - a FIFO, socket or device under the root is refused ([`SnapshotError::SpecialFile`]);
//! - when the hash cache file ([`SnapshotOptions::cache`]) lies inside the root, it and its
//!   SQLite companions (`-wal`, `-shm`, `-journal`) are left out: they change as the snapshot
//!   runs.
//!
//! Paths are the names below the root joined with `/`. A name that is not UTF-8, or holds a
//! tab (U+0009) or newline (U+000A), is refused rather than escaped
//! ([`SnapshotError::NotUtf8`], [`SnapshotError::UnsupportedName`]); so is such a symlink
//! target. No other byte is special.
//!
//! # Manifest format, version 2
//!
//! UTF-8 text, lines ending in a single `\n` (0x0A, no `\r`), nothing before the first or
//! after the last line:
//!
//! ```text
//! trainprov-snapshot v2\n
//! f\t<size>\t<blake3>\t<path>\n               one line per regular file
//! l\t<size>\t<blake3>\t<path>\t<target>\n     one line per symlink to a regular file
//! ```
//!
//! - the first line is exactly `trainprov-snapshot v2` (a tree without symlinks is written as
//!   version 1, see below);
//! - `\t` is one tab (0x09); `f` and `l` are the lowercase letters;
//! - `<size>` is the size in bytes in ASCII decimal, no sign, no leading zeros (`0` for empty);
//! - `<blake3>` is the 32-byte BLAKE3 digest as 64 lowercase hex digits of the content: the
//!   file's for `f`, the file the link resolves to for `l` (`<size>` likewise);
//! - `<target>` (for `l` only) is the link text, non-empty; it is informative: two manifests
//!   that differ only in a link text name the same bytes but are different manifests;
//! - `<path>` is non-empty, has no leading or trailing `/`, no empty, `.` or `..` component;
//! - one line per path, lines sorted by the bytes of `<path>` in ascending order (`memcmp`,
//!   so `a.txt` < `a/b`, as `.` is 0x2E and `/` 0x2F), and no path is the directory of another;
//! - an empty tree is the header line alone.
//!
//! Every tree has exactly one manifest, and [`DataSnapshot::from_manifest_bytes`] accepts only
//! that form (it re-serialises what it parsed and compares). Example, a tree holding
//! `data/a.txt` = `hello\n` and a link `latest -> data/a.txt`:
//!
//! ```text
//! trainprov-snapshot v2\n
//! f\t6\t8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99\tdata/a.txt\n
//! l\t6\t8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99\tlatest\tdata/a.txt\n
//! ```
//!
//! Its snapshot digest is
//! `58bba6314383fee5e1b616bc4461d213c2beb813538f3121537fcc3e1c37c0da` and its SHA-256
//! `7a7afa1e260175303bd236bb23aafa3192a6a82322007bd1eb168ae7db09013c`; `b3sum` and `sha256sum`
//! of the file `trainprov snapshot --manifest FILE` writes give the same (test `known_answer`).
//!
//! # Version 1
//!
//! A tree without symlinks is written as version 1: its lines are the same in both versions,
//! so its snapshot digest is the one older trainprov releases recorded and policies pinned
//! (an `allowed_base_models` or `forbidden_datasets` digest taken before version 2 still
//! matches). Version 2 is written exactly when an entry is a symlink.
//!
//! Manifests written before the change (header `trainprov-snapshot v1`) are still read, and
//! re-serialise to the same bytes, so the digests recorded in old attestations still match
//! their stored manifests. Version 1 has the same lines, except that an `l` line records the
//! link **text**, not content: its `<size>` is the byte length of `<target>` and its `<blake3>`
//! the BLAKE3 of those bytes, and links to directories were not followed. Such an entry reads
//! as [`EntryKind::Symlink`]; it says nothing about the bytes behind the link, so `verify
//! --inputs` of a v1 run over a symlinked input reports the input changed (a fresh snapshot is
//! version 2 where it has links): record the run again to pin its content.
//!
//! # Consistency
//!
//! Each regular file is `lstat`ed when the tree is walked and again after its bytes were read
//! (an `fstat` of the descriptor it was read through; for files of 16 MiB and more a `stat` of
//! the path). If device, inode, size, mtime or ctime (nanoseconds) moved, or the number of
//! bytes read is not the size, the snapshot fails with [`SnapshotError::ChangedWhileHashing`] instead of
//! recording bytes that may be neither the old nor the new file. (Times come from a coarse
//! clock, so a same-size rewrite within one clock tick can escape this check; nothing short of
//! the file system's own snapshots can see that.) Files of 16 MiB and more are hashed through a
//! memory map ([`blake3::Hasher::update_mmap_rayon`]); truncating such a file while it is
//! mapped kills the process with `SIGBUS` on Linux: stop writers before snapshotting.
//!
//! # Speed
//!
//! Regular files hit in the [`crate::hash_cache`] are not read at all: an unchanged tree is
//! snapshotted from one walk and one `lstat` per file. The walk lists directories in parallel
//! on the rayon pool and `lstat`s each file relative to its open directory (one name to
//! resolve, not the whole path). Files missing from the cache are hashed: those of 16 MiB or
//! more one at a time with all threads of the pool (BLAKE3's tree mode), the smaller ones in
//! parallel, one file per thread, through a per-thread read buffer. Measured on 2 cores in
//! `BENCHMARKS.md` (`bench/bench-snapshot.sh`).
//!
//! ```no_run
//! use recorder::snapshot::{snapshot, SnapshotOptions};
//! let options = SnapshotOptions { rehash: false, cache: None, progress: true };
//! let snap = snapshot(std::path::Path::new("data"), &options)?;
//! println!("{} files, snapshot digest {}", snap.entries.len(), snap.digest());
//! # Ok::<(), recorder::snapshot::SnapshotError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use attest::statement::DigestSet;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::hash_cache::{CacheKey, HashCache, RACY_WINDOW};

/// The first line of the manifests written now (version 2), without its newline.
pub const MANIFEST_HEADER: &str = "trainprov-snapshot v2";

/// The first line of a version 1 manifest (read, never written).
pub const MANIFEST_HEADER_V1: &str = "trainprov-snapshot v1";

/// A manifest format version (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestVersion {
    /// Symlinks recorded by their link text.
    V1,
    /// Symlinks recorded by the content they resolve to (written now).
    #[default]
    V2,
}

impl ManifestVersion {
    /// The version a snapshot of `entries` is written in: version 2 only when some entry is a
    /// symlink (recorded by content, with its link text), otherwise version 1, whose lines are
    /// byte for byte those of version 2 for such a tree. So a tree without symlinks keeps the
    /// snapshot digest it had before version 2 existed, and digests pinned in policies or
    /// recorded in older attestations still match it.
    pub fn written_for(entries: &[SnapshotEntry]) -> ManifestVersion {
        if entries.iter().any(|e| e.link.is_some()) {
            ManifestVersion::V2
        } else {
            ManifestVersion::V1
        }
    }

    /// The manifest's first line, without its newline.
    pub fn header(self) -> &'static str {
        match self {
            ManifestVersion::V1 => MANIFEST_HEADER_V1,
            ManifestVersion::V2 => MANIFEST_HEADER,
        }
    }
}

/// Files at least this large are hashed through a memory map with every thread.
pub const LARGE_FILE: u64 = 16 << 20;

/// How a snapshot is taken.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Ignore the cache's digests and hash every file (fresh digests are still stored).
    pub rehash: bool,
    /// The hash cache file (SQLite); `None`: no cache.
    pub cache: Option<PathBuf>,
    /// Show a progress bar on stderr when the snapshot takes more than a second and stderr
    /// is a terminal.
    pub progress: bool,
}

/// What a manifest entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    /// Content: a regular file, or (version 2) a symlink's resolved content, whose link text
    /// is then [`SnapshotEntry::link`].
    File,
    /// Version 1 manifests only: a symlink recorded by its link text, not its content.
    Symlink {
        /// The link's target text.
        target: String,
    },
}

/// One line of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotEntry {
    /// Relative to the root, `/`-separated.
    pub path: String,
    /// Bytes of the content (for a version 1 [`EntryKind::Symlink`]: of its target text).
    pub size: u64,
    /// Lowercase hex BLAKE3 of the content (for a version 1 [`EntryKind::Symlink`]: of its
    /// target text).
    pub blake3: String,
    /// Content, or a version 1 link text.
    pub kind: EntryKind,
    /// For a [`EntryKind::File`] reached through a symlink at `path`: the link text (the
    /// content recorded is that of the file it resolves to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl SnapshotEntry {
    /// Whether `size` and `blake3` are those of content a job reads (every entry but a
    /// version 1 link text).
    pub fn is_content(&self) -> bool {
        self.kind == EntryKind::File
    }
}

/// How a snapshot went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SnapshotStats {
    /// Entries recorded (regular files and symlinks).
    pub files: usize,
    /// Total size of the regular files.
    pub bytes: u64,
    /// Entries whose digest was computed in this run (symlinks always are).
    pub hashed: usize,
    /// Entries whose digest came from the hash cache; `hashed + from_cache == files`.
    pub from_cache: usize,
    /// Wall-clock seconds of the whole snapshot.
    pub seconds: f64,
}

/// A snapshot of a tree: its sorted entries, from which the manifest and digest follow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataSnapshot {
    /// The manifest format: for a snapshot taken now, [`ManifestVersion::V2`] when an entry is a
    /// symlink and `V1` otherwise ([`ManifestVersion::written_for`]); for a manifest read back,
    /// what it says.
    pub version: ManifestVersion,
    /// The directory the entries are relative to (for [`snapshot_file`]: the file's directory).
    pub root: PathBuf,
    /// Sorted by the bytes of `path`, one per path ([`Self::manifest_bytes`] relies on it).
    pub entries: Vec<SnapshotEntry>,
    /// Counts and time (for a snapshot parsed from a manifest only `files` and `bytes`).
    pub stats: SnapshotStats,
}

/// What differs between two snapshots, by path (each list sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotDiff {
    /// Paths only in the newer snapshot.
    pub added: Vec<String>,
    /// Paths only in the older snapshot.
    pub removed: Vec<String>,
    /// Paths in both whose size, digest or kind differ.
    pub changed: Vec<String>,
}

/// Why a snapshot could not be taken or a manifest not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// An OS error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// [`snapshot`] was given something other than a directory.
    #[error("{}: not a directory (snapshot a single file with `snapshot_file`)", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// [`snapshot_file`] was given something other than a regular file.
    #[error("{}: not a regular file (snapshot a directory with `snapshot`)", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The file's `lstat` moved between the walk and the end of reading it.
    #[error("{}: changed while it was being hashed (size or mtime moved); stop writers and snapshot again", path.display())]
    ChangedWhileHashing {
        /// The file.
        path: PathBuf,
    },
    /// A FIFO, socket or device.
    #[error("{}: special file (FIFO, socket or device) cannot be part of a data snapshot; move it out of the directory", path.display())]
    SpecialFile {
        /// The file.
        path: PathBuf,
    },
    /// A symlink whose target does not exist.
    #[error("{}: dangling symlink (its target {target} does not exist); fix or remove the link", path.display())]
    DanglingSymlink {
        /// The link.
        path: PathBuf,
        /// Its link text.
        target: String,
    },
    /// A symlink to a directory that contains the link (the walk would never end).
    #[error("{}: symlink to {target} loops back to a directory that contains it; remove the link or snapshot a directory without it", path.display())]
    SymlinkCycle {
        /// The link.
        path: PathBuf,
        /// Its link text.
        target: String,
    },
    /// A name the manifest cannot carry.
    #[error("{}: name is not valid UTF-8; rename it", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A name (or symlink target) holding a tab or newline.
    #[error("{}: {what} contains a tab or newline, which the manifest cannot carry; rename it", path.display())]
    UnsupportedName {
        /// The file or link.
        path: PathBuf,
        /// `"name"` or `"symlink target"`.
        what: &'static str,
    },
    /// A manifest that is not in the canonical form.
    #[error("manifest line {line}: {reason}")]
    Manifest {
        /// 1-based; the header is line 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl PartialEq for SnapshotError {
    /// Equal variants with equal fields; I/O errors compare by path and error kind.
    fn eq(&self, other: &Self) -> bool {
        use SnapshotError::*;
        match (self, other) {
            (Io { path: a, source: x }, Io { path: b, source: y }) => {
                a == b && x.kind() == y.kind()
            }
            (NotADirectory { path: a }, NotADirectory { path: b })
            | (NotAFile { path: a }, NotAFile { path: b })
            | (ChangedWhileHashing { path: a }, ChangedWhileHashing { path: b })
            | (SpecialFile { path: a }, SpecialFile { path: b })
            | (NotUtf8 { path: a }, NotUtf8 { path: b }) => a == b,
            (UnsupportedName { path: a, what: x }, UnsupportedName { path: b, what: y }) => {
                a == b && x == y
            }
            (DanglingSymlink { path: a, target: x }, DanglingSymlink { path: b, target: y })
            | (SymlinkCycle { path: a, target: x }, SymlinkCycle { path: b, target: y }) => {
                a == b && x == y
            }
            (Manifest { line: a, reason: x }, Manifest { line: b, reason: y }) => a == b && x == y,
            _ => false,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest

impl DataSnapshot {
    /// The canonical manifest (see the module docs).
    pub fn manifest_bytes(&self) -> Vec<u8> {
        let header = self.version.header();
        let mut out = Vec::with_capacity(header.len() + 1 + self.entries.len() * 120);
        out.extend_from_slice(header.as_bytes());
        out.push(b'\n');
        for entry in &self.entries {
            let target = match &entry.kind {
                EntryKind::File => entry.link.as_deref(),
                EntryKind::Symlink { target } => Some(target.as_str()),
            };
            let kind = if target.is_some() { b'l' } else { b'f' };
            out.push(kind);
            out.push(b'\t');
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{}", entry.size);
            out.push(b'\t');
            out.extend_from_slice(entry.blake3.as_bytes());
            out.push(b'\t');
            out.extend_from_slice(entry.path.as_bytes());
            if let Some(target) = target {
                out.push(b'\t');
                out.extend_from_slice(target.as_bytes());
            }
            out.push(b'\n');
        }
        out
    }

    /// The snapshot digest: lowercase hex BLAKE3 of [`Self::manifest_bytes`].
    pub fn digest(&self) -> String {
        blake3::hash(&self.manifest_bytes()).to_hex().to_string()
    }

    /// Lowercase hex SHA-256 of [`Self::manifest_bytes`] (the interoperable digest).
    pub fn manifest_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.manifest_bytes()))
    }

    /// `{"blake3": digest(), "sha256": manifest_sha256()}`, for in-toto descriptors.
    pub fn digest_set(&self) -> DigestSet {
        let bytes = self.manifest_bytes();
        let mut set = DigestSet::new();
        set.insert("blake3".into(), blake3::hash(&bytes).to_hex().to_string());
        set.insert("sha256".into(), hex::encode(Sha256::digest(&bytes)));
        set
    }

    /// The manifest a copy of this tree without symlinks would have: every symlink to a file
    /// written as the regular file it resolves to (`f` line, no link text), in version 1.
    /// `None` when the tree has no symlink to a file (the manifest is already that one) or when
    /// it holds a version 1 link entry (whose content is unknown).
    pub fn content_manifest_bytes(&self) -> Option<Vec<u8>> {
        if !self.entries.iter().any(|e| e.link.is_some())
            || self
                .entries
                .iter()
                .any(|e| matches!(e.kind, EntryKind::Symlink { .. }))
        {
            return None;
        }
        let flat = DataSnapshot {
            entries: self
                .entries
                .iter()
                .map(|e| SnapshotEntry {
                    link: None,
                    ..e.clone()
                })
                .collect(),
            version: ManifestVersion::V1,
            ..self.clone()
        };
        Some(flat.manifest_bytes())
    }

    /// The content digest: [`Self::digest_set`] of [`Self::content_manifest_bytes`], equal to
    /// the snapshot digest of a copy of the tree with its links replaced by their files (a hub
    /// cache snapshot and the same model saved flat). `None` as for
    /// [`Self::content_manifest_bytes`].
    pub fn content_digest_set(&self) -> Option<DigestSet> {
        let bytes = self.content_manifest_bytes()?;
        let mut set = DigestSet::new();
        set.insert("blake3".into(), blake3::hash(&bytes).to_hex().to_string());
        set.insert("sha256".into(), hex::encode(Sha256::digest(&bytes)));
        Some(set)
    }

    /// Parses a manifest (version 2, or version 1), accepting only its canonical form; `stats`
    /// are zero except `files` and `bytes`.
    pub fn from_manifest_bytes(root: PathBuf, bytes: &[u8]) -> Result<DataSnapshot, SnapshotError> {
        let bad = |line: usize, reason: String| SnapshotError::Manifest { line, reason };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            bad(line, "not valid UTF-8".into())
        })?;
        let Some(body) = text.strip_suffix('\n') else {
            let line = 1 + text.matches('\n').count();
            return Err(bad(line, "missing the final newline".into()));
        };
        let mut lines = body.split('\n');
        let version = match lines.next() {
            Some(MANIFEST_HEADER) => ManifestVersion::V2,
            Some(MANIFEST_HEADER_V1) => ManifestVersion::V1,
            _ => {
                return Err(bad(
                    1,
                    format!("expected the header `{MANIFEST_HEADER}` (or `{MANIFEST_HEADER_V1}`)"),
                ))
            }
        };
        let mut entries: Vec<SnapshotEntry> = Vec::new();
        let mut directories: BTreeSet<&str> = BTreeSet::new();
        for (index, line) in lines.enumerate() {
            let number = index + 2;
            if line.is_empty() {
                return Err(bad(number, "empty line".into()));
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let (kind, link, size, digest, path) = match fields.as_slice() {
                ["f", size, digest, path] => (EntryKind::File, None, *size, *digest, *path),
                ["l", size, digest, path, target] if version == ManifestVersion::V1 => (
                    EntryKind::Symlink {
                        target: (*target).to_string(),
                    },
                    None,
                    *size,
                    *digest,
                    *path,
                ),
                ["l", size, digest, path, target] => (
                    EntryKind::File,
                    Some((*target).to_string()),
                    *size,
                    *digest,
                    *path,
                ),
                [kind, ..] if *kind != "f" && *kind != "l" => {
                    return Err(bad(
                        number,
                        format!("unknown entry kind `{kind}` (expected `f` or `l`)"),
                    ))
                }
                _ => {
                    return Err(bad(
                        number,
                        "wrong number of tab-separated fields (4 for `f`, 5 for `l`)".into(),
                    ))
                }
            };
            let size_ok = !size.is_empty()
                && size.bytes().all(|b| b.is_ascii_digit())
                && (size == "0" || !size.starts_with('0'));
            let size: u64 =
                size.parse().ok().filter(|_| size_ok).ok_or_else(|| {
                    bad(number, format!("size `{size}` is not a canonical decimal"))
                })?;
            if digest.len() != 64
                || !digest
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err(bad(number, "digest is not 64 lowercase hex digits".into()));
            }
            if let Some(reason) = path_problem(path) {
                return Err(bad(number, format!("path `{path}` {reason}")));
            }
            if link.as_deref().is_some_and(str::is_empty) {
                return Err(bad(number, "empty symlink target".into()));
            }
            if let EntryKind::Symlink { target } = &kind {
                if target.is_empty() {
                    return Err(bad(number, "empty symlink target".into()));
                }
                if size != target.len() as u64
                    || blake3::hash(target.as_bytes()).to_hex().as_str() != digest
                {
                    return Err(bad(
                        number,
                        "symlink size or digest does not match its target text".into(),
                    ));
                }
            }
            if let Some(previous) = entries.last() {
                if previous.path.as_bytes() >= path.as_bytes() {
                    return Err(bad(
                        number,
                        format!(
                            "path `{path}` is out of order or repeated (after `{}`)",
                            previous.path
                        ),
                    ));
                }
            }
            let mut end = 0;
            while let Some(slash) = path[end..].find('/') {
                directories.insert(&path[..end + slash]);
                end += slash + 1;
            }
            entries.push(SnapshotEntry {
                path: path.to_string(),
                size,
                blake3: digest.to_string(),
                kind,
                link,
            });
        }
        if let Some(position) = entries
            .iter()
            .position(|e| directories.contains(e.path.as_str()))
        {
            return Err(bad(
                position + 2,
                format!(
                    "`{}` is listed as an entry and also as a directory of others",
                    entries[position].path
                ),
            ));
        }
        // Sizes come from untrusted bytes: a sum past u64::MAX is a malformed manifest, not a
        // wrapped total (found by the fuzz target `snapshot_manifest`).
        let total = entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .try_fold(0u64, |sum, e| sum.checked_add(e.size))
            .ok_or_else(|| bad(1, "file sizes add up to more than 2^64 - 1 bytes".into()))?;
        let stats = SnapshotStats {
            files: entries.len(),
            bytes: total,
            ..SnapshotStats::default()
        };
        let snapshot = DataSnapshot {
            version,
            root,
            entries,
            stats,
        };
        if snapshot.manifest_bytes() != bytes {
            return Err(bad(1, "not in canonical form".into()));
        }
        Ok(snapshot)
    }

    /// What changed from `self` (older) to `newer`, by path.
    pub fn diff(&self, newer: &DataSnapshot) -> SnapshotDiff {
        let old: BTreeMap<&str, &SnapshotEntry> =
            self.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let new: BTreeMap<&str, &SnapshotEntry> =
            newer.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut diff = SnapshotDiff::default();
        for (path, entry) in &new {
            match old.get(path) {
                None => diff.added.push((*path).to_string()),
                Some(before) if before != entry => diff.changed.push((*path).to_string()),
                Some(_) => {}
            }
        }
        diff.removed = old
            .keys()
            .filter(|p| !new.contains_key(*p))
            .map(|p| (*p).to_string())
            .collect();
        diff
    }
}

/// Why a relative path may not appear in a manifest, if it may not.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("is empty");
    }
    if path.contains(['\t', '\n']) {
        return Some("contains a tab or newline");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Some("has an empty, `.` or `..` component (or a leading or trailing `/`)");
    }
    None
}

fn file_bytes(entries: &[SnapshotEntry]) -> u64 {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| e.size)
        .sum()
}

impl SnapshotDiff {
    /// Whether the two snapshots hold the same entries.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for SnapshotDiff {
    /// `added: a, b; removed: c; changed: d` (empty groups left out, at most 10 paths a group),
    /// or `no changes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 10;
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut first = true;
        for (label, paths) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            if paths.is_empty() {
                continue;
            }
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{label}: {}", paths[..paths.len().min(SHOWN)].join(", "))?;
            if paths.len() > SHOWN {
                write!(f, " and {} more", paths.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Taking a snapshot

/// Snapshots the directory `root` (see the module docs for what is recorded).
pub fn snapshot(root: &Path, options: &SnapshotOptions) -> Result<DataSnapshot, SnapshotError> {
    snapshot_with(root, options, RACY_WINDOW)
}

/// A single regular file as a one-entry snapshot named by its file name, with
/// [`DataSnapshot::root`] its directory. A symlink given here is followed (it was named
/// explicitly, as a snapshot's root directory may be).
pub fn snapshot_file(
    path: &Path,
    options: &SnapshotOptions,
) -> Result<DataSnapshot, SnapshotError> {
    snapshot_file_with(path, options, RACY_WINDOW)
}

/// When a snapshot began, and how recent a change keeps a file out of the cache.
struct Began {
    /// For the elapsed time.
    started: Instant,
    /// For the racy-file check.
    now: SystemTime,
    /// See [`crate::hash_cache::RACY_WINDOW`].
    racy_window: Duration,
}

impl Began {
    fn now(racy_window: Duration) -> Began {
        Began {
            started: Instant::now(),
            now: SystemTime::now(),
            racy_window,
        }
    }
}

/// A regular file to record, found by the walk.
struct Item {
    /// Relative path, `/`-separated.
    rel: String,
    /// Its stat at walk time.
    key: CacheKey,
    /// Whether `key` was taken through symlinks.
    follow: bool,
    /// The text of the symlink at `rel`, when the file was reached through one.
    link: Option<String>,
}

pub(crate) fn snapshot_with(
    root: &Path,
    options: &SnapshotOptions,
    racy_window: Duration,
) -> Result<DataSnapshot, SnapshotError> {
    let began = Began::now(racy_window);
    let meta = std::fs::metadata(root).map_err(io_error(root))?;
    if !meta.is_dir() {
        return Err(SnapshotError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let progress = Progress::start(options.progress);
    let excluded = cache_files_inside(root, options.cache.as_deref());
    let walker = Walker {
        excluded: &excluded,
        progress: progress.as_ref(),
    };
    let mut items = walker.dir(root, "", &[dir_id(&meta)])?;
    items.par_sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    build(root.to_path_buf(), None, items, options, began, progress)
}

pub(crate) fn snapshot_file_with(
    path: &Path,
    options: &SnapshotOptions,
    racy_window: Duration,
) -> Result<DataSnapshot, SnapshotError> {
    let began = Began::now(racy_window);
    let meta = std::fs::metadata(path).map_err(io_error(path))?;
    if meta.is_dir() {
        return Err(SnapshotError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if !meta.is_file() {
        return Err(SnapshotError::SpecialFile {
            path: path.to_path_buf(),
        });
    }
    let name = path.file_name().ok_or_else(|| SnapshotError::NotAFile {
        path: path.to_path_buf(),
    })?;
    let rel = name
        .to_str()
        .ok_or_else(|| SnapshotError::NotUtf8 {
            path: path.to_path_buf(),
        })?
        .to_string();
    if rel.contains(['\t', '\n']) {
        return Err(SnapshotError::UnsupportedName {
            path: path.to_path_buf(),
            what: "name",
        });
    }
    let root = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let item = Item {
        rel,
        key: cache_key(&meta),
        follow: true,
        link: None,
    };
    build(
        root,
        Some(path.to_path_buf()),
        vec![item],
        options,
        began,
        Progress::start(options.progress),
    )
}

/// The relative paths of the cache file and its companions when they lie under `root`.
fn cache_files_inside(root: &Path, cache: Option<&Path>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(cache) = cache else { return out };
    let (Some(parent), Some(name)) = (cache.parent(), cache.file_name().and_then(|n| n.to_str()))
    else {
        return out;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let (Ok(parent), Ok(root)) = (parent.canonicalize(), root.canonicalize()) else {
        return out;
    };
    let Some(dir) = parent.strip_prefix(&root).ok().and_then(|d| d.to_str()) else {
        return out;
    };
    let dir = to_slashes(dir);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        out.insert(if dir.is_empty() {
            format!("{name}{suffix}")
        } else {
            format!("{dir}/{name}{suffix}")
        });
    }
    out
}

fn to_slashes(path: &str) -> String {
    if std::path::MAIN_SEPARATOR == '/' {
        path.to_string()
    } else {
        path.replace(std::path::MAIN_SEPARATOR, "/")
    }
}

/// What every directory of a walk shares.
struct Walker<'a> {
    /// Relative paths to leave out (the hash cache's files).
    excluded: &'a BTreeSet<String>,
    progress: Option<&'a Progress>,
}

impl Walker<'_> {
    /// Lists the directory `dir` (at `rel` below the root, `""` for the root itself), `lstat`s
    /// its regular files and resolves its symlinks, then does the same for its subdirectories
    /// (and the directories its symlinks resolve to) in parallel. `ancestors` are the
    /// (device, inode) of `dir` and every directory above it on the way down, for cycle
    /// detection. Returns the items unsorted.
    ///
    /// Files are `stat`ed through the open directory (`fstatat`/`statx` on the directory's
    /// descriptor, which [`std::fs::DirEntry::metadata`] does on Linux), so the kernel resolves
    /// one name per file, not the whole path.
    fn dir(
        &self,
        dir: &Path,
        rel: &str,
        ancestors: &[(u64, u64)],
    ) -> Result<Vec<Item>, SnapshotError> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            entries.push((entry.file_name(), entry));
        }
        // Name order, so that which problem is reported first does not depend on the
        // directory's own order.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut items = Vec::with_capacity(entries.len());
        let mut subdirs: Vec<(PathBuf, String, (u64, u64))> = Vec::new();
        for (name, entry) in entries {
            let Some(name) = name.to_str() else {
                return Err(SnapshotError::NotUtf8 { path: entry.path() });
            };
            if name.contains(['\t', '\n']) {
                return Err(SnapshotError::UnsupportedName {
                    path: entry.path(),
                    what: "name",
                });
            }
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| io_error(&path)(e))?;
            if file_type.is_dir() {
                let meta = entry.metadata().map_err(|e| io_error(&path)(e))?;
                subdirs.push((path, child, dir_id(&meta)));
                continue;
            }
            if !file_type.is_file() && !file_type.is_symlink() {
                return Err(SnapshotError::SpecialFile { path });
            }
            if !self.excluded.is_empty() && self.excluded.contains(&child) {
                continue;
            }
            let item = if file_type.is_symlink() {
                let target = read_link_text(&path)?;
                let meta = match std::fs::metadata(&path) {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(SnapshotError::DanglingSymlink { path, target })
                    }
                    Err(e) => return Err(io_error(&path)(e)),
                };
                if meta.is_dir() {
                    let id = dir_id(&meta);
                    if ancestors.contains(&id) {
                        return Err(SnapshotError::SymlinkCycle { path, target });
                    }
                    subdirs.push((path, child, id));
                    continue;
                }
                if !meta.is_file() {
                    return Err(SnapshotError::SpecialFile { path });
                }
                Item {
                    rel: child,
                    key: cache_key(&meta),
                    follow: true,
                    link: Some(target),
                }
            } else {
                let meta = entry.metadata().map_err(|e| io_error(&path)(e))?;
                if !meta.is_file() {
                    // Its directory entry said "regular file" a moment ago.
                    return Err(SnapshotError::ChangedWhileHashing { path });
                }
                Item {
                    rel: child,
                    key: cache_key(&meta),
                    follow: false,
                    link: None,
                }
            };
            items.push(item);
        }
        if let Some(progress) = self.progress {
            progress.bar.inc(items.len() as u64);
        }
        let nested: Vec<Result<Vec<Item>, SnapshotError>> = subdirs
            .into_par_iter()
            .map(|(path, rel, id)| {
                let mut below = ancestors.to_vec();
                below.push(id);
                self.dir(&path, &rel, &below)
            })
            .collect();
        for list in nested {
            items.extend(list?);
        }
        Ok(items)
    }
}

/// A directory's (device, inode), for cycle detection.
#[cfg(unix)]
fn dir_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

/// Without inodes a cycle cannot be told apart: every symlink to a directory is refused as one.
#[cfg(not(unix))]
fn dir_id(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

fn read_link_text(path: &Path) -> Result<String, SnapshotError> {
    let target = std::fs::read_link(path).map_err(io_error(path))?;
    let target = target
        .into_os_string()
        .into_string()
        .map_err(|_| SnapshotError::NotUtf8 {
            path: path.to_path_buf(),
        })?;
    if target.contains(['\t', '\n']) || target.is_empty() {
        return Err(SnapshotError::UnsupportedName {
            path: path.to_path_buf(),
            what: "symlink target",
        });
    }
    Ok(target)
}

/// The cache key (and change-detection stamp) of a file's metadata.
#[cfg(unix)]
fn cache_key(meta: &std::fs::Metadata) -> CacheKey {
    use std::os::unix::fs::MetadataExt as _;
    let ns = |secs: i64, nanos: i64| secs.saturating_mul(1_000_000_000).saturating_add(nanos);
    CacheKey {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
    }
}

/// Without inodes and ctime, the stamp is size and mtime; the cache is then weaker.
#[cfg(not(unix))]
fn cache_key(meta: &std::fs::Metadata) -> CacheKey {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    CacheKey {
        dev: 0,
        ino: 0,
        size: meta.len(),
        mtime_ns,
        ctime_ns: mtime_ns,
    }
}

/// Whether a file stamped `key` at `now` may go into the cache (see [`crate::hash_cache`]).
fn cacheable(key: &CacheKey, now: SystemTime, racy_window: Duration) -> bool {
    let Ok(since_epoch) = now.duration_since(SystemTime::UNIX_EPOCH) else {
        return false;
    };
    let Ok(limit) = i64::try_from(since_epoch.saturating_sub(racy_window).as_nanos()) else {
        return false;
    };
    key.mtime_ns < limit && key.ctime_ns < limit
}

/// Size of the per-thread read buffer for files below [`LARGE_FILE`].
const READ_BUFFER: usize = 256 << 10;

/// Hashes one regular file and checks that its stamp did not move: a file below
/// [`LARGE_FILE`] is read into `buffer` (reused across files, so nothing is allocated or zeroed
/// per file) and then `fstat`ed through the same descriptor; a large one is hashed through a
/// memory map on every thread and `stat`ed again by path.
///
/// Reading stops after `before.size` bytes: a file that grew shows in its new size, one that
/// shrank in the byte count, one rewritten in place in its mtime and ctime, and one replaced
/// (renamed over) in its inode.
fn hash_regular(
    path: &Path,
    before: &CacheKey,
    follow: bool,
    buffer: &mut [u8],
) -> Result<[u8; 32], SnapshotError> {
    let mut hasher = blake3::Hasher::new();
    let after = if before.size >= LARGE_FILE {
        hasher.update_mmap_rayon(path).map_err(io_error(path))?;
        if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        }
    } else {
        let mut file = std::fs::File::open(path).map_err(io_error(path))?;
        while hasher.count() < before.size {
            match file.read(buffer) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buffer[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(path)(e)),
            }
        }
        file.metadata()
    }
    .map_err(io_error(path))?;
    if cache_key(&after) != *before || hasher.count() != before.size {
        return Err(SnapshotError::ChangedWhileHashing {
            path: path.to_path_buf(),
        });
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Looks items up in the cache, hashes the rest, stores new digests and assembles the snapshot.
fn build(
    root: PathBuf,
    single: Option<PathBuf>,
    items: Vec<Item>,
    options: &SnapshotOptions,
    began: Began,
    progress: Option<Progress>,
) -> Result<DataSnapshot, SnapshotError> {
    let mut warned = false;
    let mut warn = |error: &dyn fmt::Display| {
        if !warned {
            warned = true;
            let message =
                format!("trainprov: warning: hash cache unusable, hashing without it: {error}");
            match &progress {
                Some(p) => p.bar.suspend(|| eprintln!("{message}")),
                None => eprintln!("{message}"),
            }
        }
    };
    let mut cache = match &options.cache {
        Some(path) => HashCache::open(path).map_err(|e| warn(&e)).ok(),
        None => None,
    };

    // Digests known from the cache, by item index. With `rehash` they are not used, only
    // compared, so that rows the cache already holds are not written again.
    let mut cached: Vec<Option<[u8; 32]>> = vec![None; items.len()];
    if let Some(c) = &cache {
        let (indices, keys): (Vec<usize>, Vec<CacheKey>) = items
            .iter()
            .enumerate()
            .map(|(i, item)| (i, item.key))
            .unzip();
        match c.lookup_many(&keys) {
            Ok(found) => {
                for (index, digest) in indices.into_iter().zip(found) {
                    cached[index] = digest;
                }
            }
            Err(e) => {
                warn(&e);
                cache = None;
            }
        }
    }
    let mut digests = if options.rehash {
        vec![None; items.len()]
    } else {
        cached.clone()
    };
    let from_cache = digests.iter().filter(|d| d.is_some()).count();

    // What to hash: large files one at a time with every thread, then the rest in parallel.
    let pending: Vec<(usize, PathBuf, CacheKey, bool)> = items
        .iter()
        .enumerate()
        .filter(|(i, _)| digests[*i].is_none())
        .map(|(i, item)| {
            let path = single.clone().unwrap_or_else(|| root.join(&item.rel));
            (i, path, item.key, item.follow)
        })
        .collect();
    if let Some(p) = &progress {
        p.hashing(pending.iter().map(|(_, _, key, _)| key.size).sum());
    }
    let (large, small): (Vec<_>, Vec<_>) = pending
        .into_iter()
        .partition(|(_, _, key, _)| key.size >= LARGE_FILE);
    let mut fresh: Vec<(usize, Result<[u8; 32], SnapshotError>)> = Vec::new();
    for (index, path, key, follow) in large {
        let result = hash_regular(&path, &key, follow, &mut []);
        if let Some(p) = &progress {
            p.bar.inc(key.size);
        }
        let failed = result.is_err();
        fresh.push((index, result));
        if failed {
            break;
        }
    }
    if fresh.iter().all(|(_, r)| r.is_ok()) {
        let buffer = || vec![0u8; READ_BUFFER];
        fresh.par_extend(small.into_par_iter().map_init(
            buffer,
            |buffer, (index, path, key, follow)| {
                let result = hash_regular(&path, &key, follow, buffer);
                if let Some(p) = &progress {
                    p.bar.inc(key.size);
                }
                (index, result)
            },
        ));
    }
    // Report the first failure in path order, whatever order the threads finished in.
    fresh.sort_unstable_by_key(|(index, _)| *index);
    let mut newly_hashed: Vec<usize> = Vec::with_capacity(fresh.len());
    for (index, result) in fresh {
        digests[index] = Some(result?);
        newly_hashed.push(index);
    }

    if let Some(c) = cache.as_mut() {
        // The cache keeps each file's absolute path, for whoever debugs it.
        let base = single
            .as_deref()
            .unwrap_or(&root)
            .canonicalize()
            .unwrap_or_else(|_| root.clone());
        let rows: Vec<(&CacheKey, String, &[u8; 32])> = newly_hashed
            .iter()
            .filter_map(|&i| match (&items[i].key, &digests[i]) {
                (key, Some(digest))
                    if cached[i].as_ref() != Some(digest)
                        && cacheable(key, began.now, began.racy_window) =>
                {
                    let path = match &single {
                        Some(_) => base.clone(),
                        None => base.join(&items[i].rel),
                    };
                    Some((key, path.to_string_lossy().into_owned(), digest))
                }
                _ => None,
            })
            .collect();
        if !rows.is_empty() {
            if let Err(e) = c.insert_many(rows.iter().map(|(k, p, d)| (*k, p.as_str(), *d))) {
                warn(&e);
            }
        }
    }

    let entries: Vec<SnapshotEntry> = items
        .into_iter()
        .zip(digests)
        .map(|(item, digest)| SnapshotEntry {
            path: item.rel,
            size: item.key.size,
            // blake3's own hex encoder: a table lookup, several times faster than `hex`.
            blake3: blake3::Hash::from_bytes(digest.unwrap_or_default())
                .to_hex()
                .to_string(),
            kind: EntryKind::File,
            link: item.link,
        })
        .collect();
    drop(progress);
    let files = entries.len();
    let stats = SnapshotStats {
        files,
        bytes: file_bytes(&entries),
        hashed: files - from_cache,
        from_cache,
        seconds: began.started.elapsed().as_secs_f64(),
    };
    Ok(DataSnapshot {
        version: ManifestVersion::written_for(&entries),
        root,
        entries,
        stats,
    })
}

// ---------------------------------------------------------------------------------------------
// Progress

/// A progress bar that stays hidden for the first second, then draws on stderr (indicatif
/// draws nothing when stderr is not a terminal). Cleared when dropped.
struct Progress {
    bar: indicatif::ProgressBar,
    done: Option<mpsc::Sender<()>>,
    reveal: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(enabled: bool) -> Option<Progress> {
        if !enabled {
            return None;
        }
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} snapshot: found {pos} files")
                .expect("static progress template"),
        );
        let (done, wait) = mpsc::channel::<()>();
        let shown = bar.clone();
        let reveal = std::thread::Builder::new()
            .name("snapshot-progress".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) =
                    wait.recv_timeout(Duration::from_secs(1))
                {
                    shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    shown.enable_steady_tick(Duration::from_millis(100));
                }
            })
            .ok();
        Some(Progress {
            bar,
            done: Some(done),
            reveal,
        })
    }

    /// Switches from counting files to counting the bytes to hash.
    fn hashing(&self, bytes: u64) {
        self.bar.set_style(
            indicatif::ProgressStyle::with_template(
                "snapshot: hashing [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("static progress template")
            .progress_chars("=> "),
        );
        self.bar.set_length(bytes);
        self.bar.set_position(0);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(reveal) = self.reveal.take() {
            let _ = reveal.join();
        }
        self.bar.finish_and_clear();
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Creates `files` (relative path, content) under a new temporary directory, in order.
    fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, content) in files {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, content).expect("write");
        }
        dir
    }

    fn no_cache() -> SnapshotOptions {
        SnapshotOptions::default()
    }

    fn with_cache(path: &Path) -> SnapshotOptions {
        SnapshotOptions {
            cache: Some(path.to_path_buf()),
            ..SnapshotOptions::default()
        }
    }

    const FILES: &[(&str, &[u8])] = &[
        ("b.bin", b"bee"),
        ("a/x.txt", b"hello\n"),
        ("a.txt", b""),
        ("a/deeper/y", b"why"),
    ];

    #[test]
    fn digest_is_independent_of_creation_order() {
        let forward = tree(FILES);
        let mut reversed_files = FILES.to_vec();
        reversed_files.reverse();
        let reversed = tree(&reversed_files);
        let one = snapshot(forward.path(), &no_cache()).expect("snapshot");
        let two = snapshot(reversed.path(), &no_cache()).expect("snapshot");
        assert_eq!(one.digest(), two.digest());
        assert_eq!(one.entries, two.entries);
        let paths: Vec<&str> = one.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["a.txt", "a/deeper/y", "a/x.txt", "b.bin"],
            "memcmp order"
        );
        assert_eq!(one.stats.files, 4);
        assert_eq!(one.stats.bytes, 12);
        assert_eq!((one.stats.hashed, one.stats.from_cache), (4, 0));
    }

    #[test]
    fn empty_directories_leave_no_trace() {
        let one = tree(FILES);
        let two = tree(FILES);
        fs::create_dir_all(two.path().join("empty/nested")).expect("mkdir");
        assert_eq!(
            snapshot(one.path(), &no_cache()).expect("a").digest(),
            snapshot(two.path(), &no_cache()).expect("b").digest()
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let snap = snapshot(empty.path(), &no_cache()).expect("empty");
        assert_eq!(snap.manifest_bytes(), b"trainprov-snapshot v1\n");
    }

    /// The manifest of a fixed tree, byte for byte. Independent checks of the digests:
    /// `printf 'hello\n' | b3sum` gives the digest of both lines (the link records the content
    /// it resolves to), and `b3sum`/`sha256sum` of the manifest text below give the snapshot
    /// digests.
    #[cfg(unix)]
    #[test]
    fn known_answer() {
        let dir = tree(&[("data/a.txt", b"hello\n")]);
        std::os::unix::fs::symlink("data/a.txt", dir.path().join("latest")).expect("symlink");
        let snap = snapshot(dir.path(), &no_cache()).expect("snapshot");
        let expected = format!(
            "trainprov-snapshot v2\nf\t6\t{KNOWN_HELLO}\tdata/a.txt\nl\t6\t{KNOWN_HELLO}\tlatest\tdata/a.txt\n",
        );
        assert_eq!(
            String::from_utf8(snap.manifest_bytes()).expect("utf8"),
            expected
        );
        assert_eq!(snap.digest(), KNOWN_DIGEST);
        assert_eq!(snap.manifest_sha256(), KNOWN_SHA256);
        let set = snap.digest_set();
        assert_eq!(set.get("blake3").map(String::as_str), Some(KNOWN_DIGEST));
        assert_eq!(set.get("sha256").map(String::as_str), Some(KNOWN_SHA256));
    }

    // `printf 'hello\n' | b3sum`, and b3sum / sha256sum of the manifest in `known_answer`.
    const KNOWN_HELLO: &str = "8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99";
    const KNOWN_DIGEST: &str = "58bba6314383fee5e1b616bc4461d213c2beb813538f3121537fcc3e1c37c0da";
    const KNOWN_SHA256: &str = "7a7afa1e260175303bd236bb23aafa3192a6a82322007bd1eb168ae7db09013c";

    /// A tree without symlinks is written as version 1, byte for byte what trainprov wrote
    /// before version 2, so digests pinned or recorded then still match it.
    #[test]
    fn issue11_link_free_trees_keep_their_version_1_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("data")).expect("mkdir");
        fs::write(dir.path().join("data/a.txt"), "hello\n").expect("write");
        let snap = snapshot(dir.path(), &no_cache()).expect("snapshot");
        let expected = format!("trainprov-snapshot v1\nf\t6\t{KNOWN_HELLO}\tdata/a.txt\n");
        assert_eq!(snap.version, ManifestVersion::V1);
        assert_eq!(
            String::from_utf8(snap.manifest_bytes()).expect("utf8"),
            expected
        );
        assert_eq!(
            snap.digest(),
            blake3::hash(expected.as_bytes()).to_hex().as_str()
        );
        let parsed =
            DataSnapshot::from_manifest_bytes(dir.path().to_path_buf(), expected.as_bytes())
                .expect("parse");
        assert_eq!(parsed.entries, snap.entries);
        // One link makes it version 2.
        std::os::unix::fs::symlink("data/a.txt", dir.path().join("latest")).expect("symlink");
        let linked = snapshot(dir.path(), &no_cache()).expect("snapshot");
        assert_eq!(linked.version, ManifestVersion::V2);
    }

    /// A version 1 manifest (written before symlinks were pinned by content) still parses and
    /// re-serialises to its own bytes, so its recorded digest still matches: the v1 example of
    /// the old module docs, with its digests.
    #[test]
    fn version_1_manifests_are_still_read() {
        let v1 = format!(
            "trainprov-snapshot v1\nf\t6\t{KNOWN_HELLO}\tdata/a.txt\nl\t10\t{}\tlatest\tdata/a.txt\n",
            "0632bacd163300b109295661e1282e945abc5343b879be67f630d13707095fe2"
        );
        let parsed =
            DataSnapshot::from_manifest_bytes(PathBuf::new(), v1.as_bytes()).expect("v1 parses");
        assert_eq!(parsed.version, ManifestVersion::V1);
        assert_eq!(parsed.manifest_bytes(), v1.as_bytes());
        assert_eq!(
            parsed.digest(),
            "778de0a77a81ffd2f80af61cf67b7b60f028a5529631b5c1927a845ad0065611"
        );
        assert_eq!(
            parsed.entries[1].kind,
            EntryKind::Symlink {
                target: "data/a.txt".into()
            }
        );
        assert!(!parsed.entries[1].is_content());
        assert_eq!(parsed.stats.bytes, 6, "a v1 link text is not content");
        // In v1 a link's digest must be that of its text; in v2 it is content.
        let v1_content =
            format!("trainprov-snapshot v1\nl\t6\t{KNOWN_HELLO}\tlatest\tdata/a.txt\n");
        assert!(DataSnapshot::from_manifest_bytes(PathBuf::new(), v1_content.as_bytes()).is_err());
        let v2 = v1_content.replace(" v1", " v2");
        let parsed = DataSnapshot::from_manifest_bytes(PathBuf::new(), v2.as_bytes()).expect("v2");
        assert_eq!(parsed.entries[0].link.as_deref(), Some("data/a.txt"));
        assert!(parsed.entries[0].is_content());
        assert_eq!(parsed.manifest_bytes(), v2.as_bytes());
    }

    #[cfg(unix)]
    #[test]
    fn manifest_round_trips() {
        let dir = tree(FILES);
        std::os::unix::fs::symlink("x.txt", dir.path().join("a/link")).expect("symlink");
        let snap = snapshot(dir.path(), &no_cache()).expect("snapshot");
        let bytes = snap.manifest_bytes();
        let parsed =
            DataSnapshot::from_manifest_bytes(dir.path().to_path_buf(), &bytes).expect("parse");
        assert_eq!(parsed.entries, snap.entries);
        assert_eq!(parsed.digest(), snap.digest());
        assert_eq!(parsed.stats.files, 5);
        assert_eq!(parsed.stats.hashed, 0);
    }

    #[test]
    fn manifest_parser_is_strict() {
        let h = "trainprov-snapshot v1\n";
        let d = blake3::hash(b"x").to_hex().to_string();
        let t = blake3::hash(b"t").to_hex().to_string();
        let cases: Vec<(String, usize, &str)> = vec![
            (String::new(), 1, "missing the final newline"),
            ("trainprov-snapshot v3\n".into(), 1, "header"),
            (
                format!("trainprov-snapshot v2\nl\t1\t{d}\tx\t\n"),
                2,
                "empty symlink target",
            ),
            (format!("{h}f\t1\t{d}\tx"), 2, "final newline"),
            (format!("{h}f\t01\t{d}\tx\n"), 2, "canonical decimal"),
            (format!("{h}f\t+1\t{d}\tx\n"), 2, "canonical decimal"),
            (
                format!("{h}f\t1\t{}\tx\n", d.to_uppercase()),
                2,
                "lowercase hex",
            ),
            (format!("{h}f\t1\t{d}\t/x\n"), 2, "component"),
            (format!("{h}f\t1\t{d}\ta//x\n"), 2, "component"),
            (format!("{h}f\t1\t{d}\t../x\n"), 2, "component"),
            (format!("{h}f\t1\t{d}\t\n"), 2, "is empty"),
            (format!("{h}d\t1\t{d}\tx\n"), 2, "unknown entry kind"),
            (format!("{h}f\t1\t{d}\tx\textra\n"), 2, "fields"),
            (format!("{h}l\t1\t{d}\tx\tt\n"), 2, "does not match"),
            (format!("{h}l\t1\t{t}\tx\t\n"), 2, "empty symlink target"),
            (
                format!("{h}f\t1\t{d}\tb\nf\t1\t{d}\ta\n"),
                3,
                "out of order",
            ),
            (
                format!("{h}f\t1\t{d}\ta\nf\t1\t{d}\ta\n"),
                3,
                "out of order",
            ),
            (
                format!("{h}f\t1\t{d}\ta\nf\t1\t{d}\ta/b\n"),
                2,
                "also as a directory",
            ),
            (format!("{h}\n"), 2, "empty line"),
        ];
        for (text, line, needle) in cases {
            let err = DataSnapshot::from_manifest_bytes(PathBuf::new(), text.as_bytes())
                .expect_err(&format!("{text:?} must be refused"));
            let SnapshotError::Manifest { line: got, reason } = &err else {
                panic!("{text:?}: {err}");
            };
            assert_eq!(*got, line, "{text:?}: {err}");
            assert!(
                reason.contains(needle) || err.to_string().contains(needle),
                "{text:?}: {err}"
            );
        }
        // A carriage return or space is an ordinary byte of a name.
        let good =
            format!("{h}f\t1\t{d}\ta.txt\nf\t1\t{d}\ta/b\nf\t1\t{d}\tx \r\nl\t1\t{t}\tz\tt\n");
        let parsed =
            DataSnapshot::from_manifest_bytes(PathBuf::new(), good.as_bytes()).expect("good");
        assert_eq!(parsed.entries.len(), 4);
        let err = DataSnapshot::from_manifest_bytes(
            PathBuf::new(),
            b"trainprov-snapshot v1\nf\t1\t\xff\n",
        )
        .expect_err("not utf8");
        assert_eq!(
            err,
            SnapshotError::Manifest {
                line: 2,
                reason: "not valid UTF-8".into()
            }
        );
    }

    #[test]
    fn diff_names_added_removed_changed() {
        let old = tree(&[
            ("same", b"1"),
            ("gone", b"2"),
            ("edit", b"3"),
            ("grow", b"4"),
        ]);
        let new = tree(&[
            ("same", b"1"),
            ("edit", b"X"),
            ("grow", b"44"),
            ("new", b"5"),
        ]);
        let a = snapshot(old.path(), &no_cache()).expect("old");
        let b = snapshot(new.path(), &no_cache()).expect("new");
        let diff = a.diff(&b);
        assert_eq!(diff.added, ["new"]);
        assert_eq!(diff.removed, ["gone"]);
        assert_eq!(diff.changed, ["edit", "grow"]);
        assert!(!diff.is_empty());
        assert_eq!(
            diff.to_string(),
            "added: new; removed: gone; changed: edit, grow"
        );
        assert!(a.diff(&a).is_empty());
        assert_eq!(a.diff(&a).to_string(), "no changes");
        let json = serde_json::to_value(&diff).expect("json");
        assert_eq!(json["changed"][1], "grow");
    }

    #[cfg(unix)]
    #[test]
    fn issue11_symlinks_are_pinned_by_content() {
        let outside = tree(&[("secret.bin", b"outside bytes"), ("sub/deep.txt", b"deep")]);
        let dir = tree(&[("real.txt", b"inside")]);
        let target = outside.path().join("secret.bin");
        let target_text = target.to_str().expect("utf8").to_string();
        std::os::unix::fs::symlink(&target, dir.path().join("out-link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("dir-link")).expect("symlink");
        std::os::unix::fs::symlink("real.txt", dir.path().join("chain-1")).expect("symlink");
        std::os::unix::fs::symlink("chain-1", dir.path().join("chain-2")).expect("symlink");
        let snap = snapshot(dir.path(), &no_cache()).expect("snapshot");
        let paths: Vec<&str> = snap.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "chain-1",
                "chain-2",
                "dir-link/secret.bin",
                "dir-link/sub/deep.txt",
                "out-link",
                "real.txt"
            ],
            "links to directories are followed"
        );
        let hash = |b: &[u8]| blake3::hash(b).to_hex().to_string();
        let link = &snap.entries[4];
        assert_eq!(link.kind, EntryKind::File);
        assert_eq!(link.link.as_deref(), Some(target_text.as_str()));
        assert_eq!(link.size, 13);
        assert_eq!(link.blake3, hash(b"outside bytes"));
        assert_eq!(snap.entries[1].blake3, hash(b"inside"), "a chain resolves");
        assert_eq!(snap.entries[1].link.as_deref(), Some("chain-1"));
        assert_eq!(snap.entries[2].link, None, "beneath a directory link");
        assert_eq!(snap.stats.bytes, 6 + 6 + 13 + 4 + 13 + 6);
        // Changing the file behind the link changes the snapshot, and the diff names the link.
        fs::write(&target, b"poisoned bytes").expect("write");
        let again = snapshot(dir.path(), &no_cache()).expect("again");
        assert_ne!(again.digest(), snap.digest());
        assert_eq!(
            snap.diff(&again).changed,
            ["dir-link/secret.bin", "out-link"]
        );
        // Through a cache too: the target's own stamp is the key.
        let cache = tempfile::tempdir().expect("tempdir");
        let cached = with_cache(&cache.path().join("c.sqlite"));
        let first = snapshot_with(dir.path(), &cached, Duration::ZERO).expect("fill");
        fs::write(&target, b"poisoned again").expect("write");
        let second = snapshot_with(dir.path(), &cached, Duration::ZERO).expect("after");
        assert_ne!(first.digest(), second.digest());
    }

    #[cfg(unix)]
    #[test]
    fn issue11_dangling_links_and_cycles_are_refused() {
        let dir = tree(&[("a/x.txt", b"x")]);
        std::os::unix::fs::symlink("nowhere", dir.path().join("a/dangling")).expect("symlink");
        assert_eq!(
            snapshot(dir.path(), &no_cache()).expect_err("dangling"),
            SnapshotError::DanglingSymlink {
                path: dir.path().join("a/dangling"),
                target: "nowhere".into()
            }
        );
        fs::remove_file(dir.path().join("a/dangling")).expect("rm");
        std::os::unix::fs::symlink("..", dir.path().join("a/up")).expect("symlink");
        let err = snapshot(dir.path(), &no_cache()).expect_err("cycle");
        assert_eq!(
            err,
            SnapshotError::SymlinkCycle {
                path: dir.path().join("a/up"),
                target: "..".into()
            }
        );
        assert!(err.to_string().contains("a/up"), "{err}");
        // A link to a sibling directory is no cycle: it is followed.
        fs::remove_file(dir.path().join("a/up")).expect("rm");
        std::os::unix::fs::symlink("a", dir.path().join("b")).expect("symlink");
        let snap = snapshot(dir.path(), &no_cache()).expect("sibling");
        let paths: Vec<&str> = snap.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a/x.txt", "b/x.txt"]);
        // A link to a FIFO is refused like the FIFO.
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let holder = tempfile::tempdir().expect("tempdir");
            std::os::unix::fs::symlink(&fifo, holder.path().join("p")).expect("symlink");
            assert_eq!(
                snapshot(holder.path(), &no_cache()).expect_err("fifo link"),
                SnapshotError::SpecialFile {
                    path: holder.path().join("p")
                }
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn root_may_be_a_symlink_to_a_directory() {
        let dir = tree(FILES);
        let holder = tempfile::tempdir().expect("tempdir");
        let link = holder.path().join("data");
        std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");
        assert_eq!(
            snapshot(&link, &no_cache()).expect("via link").digest(),
            snapshot(dir.path(), &no_cache()).expect("direct").digest()
        );
    }

    #[cfg(unix)]
    #[test]
    fn fifo_is_refused() {
        let dir = tree(FILES);
        let fifo = dir.path().join("a/pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success(), "mkfifo");
        let err = snapshot(dir.path(), &no_cache()).expect_err("fifo");
        assert_eq!(err, SnapshotError::SpecialFile { path: fifo.clone() });
        assert!(err.to_string().contains("a/pipe: special file"), "{err}");
        assert_eq!(
            snapshot_file(&fifo, &no_cache()).expect_err("fifo as file"),
            SnapshotError::SpecialFile { path: fifo }
        );
    }

    #[cfg(unix)]
    #[test]
    fn unsupported_names_are_refused() {
        let dir = tree(&[("tab\there", b"x")]);
        let err = snapshot(dir.path(), &no_cache()).expect_err("tab");
        assert!(
            matches!(err, SnapshotError::UnsupportedName { what: "name", .. }),
            "{err}"
        );
        let dir = tree(&[("ok", b"x")]);
        std::os::unix::fs::symlink("line\nbreak", dir.path().join("link")).expect("symlink");
        let err = snapshot(dir.path(), &no_cache()).expect_err("newline target");
        assert!(
            matches!(
                err,
                SnapshotError::UnsupportedName {
                    what: "symlink target",
                    ..
                }
            ),
            "{err}"
        );
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tree(&[]);
        let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
        fs::write(&bad, b"x").expect("write");
        assert_eq!(
            snapshot(dir.path(), &no_cache()).expect_err("not utf8"),
            SnapshotError::NotUtf8 { path: bad }
        );
    }

    #[test]
    fn missing_root_and_wrong_kinds() {
        let dir = tree(FILES);
        let missing = dir.path().join("missing");
        let err = snapshot(&missing, &no_cache()).expect_err("missing");
        assert!(
            matches!(&err, SnapshotError::Io { path, .. } if *path == missing),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );
        let file = dir.path().join("b.bin");
        assert_eq!(
            snapshot(&file, &no_cache()).expect_err("file"),
            SnapshotError::NotADirectory { path: file.clone() }
        );
        assert_eq!(
            snapshot_file(dir.path(), &no_cache()).expect_err("dir"),
            SnapshotError::NotAFile {
                path: dir.path().to_path_buf()
            }
        );
    }

    #[test]
    fn single_file_snapshot() {
        let dir = tree(FILES);
        let file = dir.path().join("a/x.txt");
        let snap = snapshot_file(&file, &no_cache()).expect("file");
        assert_eq!(snap.root, dir.path().join("a"));
        assert_eq!(snap.entries.len(), 1);
        assert_eq!(snap.entries[0].path, "x.txt");
        assert_eq!(
            snap.entries[0].blake3,
            blake3::hash(b"hello\n").to_hex().to_string()
        );
        assert_eq!(snap.root.join(&snap.entries[0].path), file);
        // A file in a directory of its own gives the same digest as that directory.
        let alone = tree(&[("x.txt", b"hello\n")]);
        assert_eq!(
            snap.digest(),
            snapshot(alone.path(), &no_cache()).expect("dir").digest()
        );
    }

    #[test]
    fn change_while_hashing_is_detected() {
        let dir = tree(&[("f.bin", b"0123456789")]);
        let path = dir.path().join("f.bin");
        let before = cache_key(&fs::metadata(&path).expect("stat"));
        assert!(hash_regular(&path, &before, false, &mut [0u8; 4]).is_ok());
        // Same size, new mtime: what a writer between the walk's stat and the read leaves.
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
            .expect("set mtime");
        assert_eq!(
            hash_regular(&path, &before, false, &mut [0u8; 4]),
            Err(SnapshotError::ChangedWhileHashing { path: path.clone() })
        );
        // Grown: the size moves and more bytes than expected are read.
        let before = cache_key(&fs::metadata(&path).expect("stat"));
        fs::write(&path, b"0123456789 and more").expect("append");
        assert_eq!(
            hash_regular(&path, &before, false, &mut [0u8; 4]),
            Err(SnapshotError::ChangedWhileHashing { path: path.clone() })
        );
        // A large file goes through the mmap path and is checked the same way.
        let big = dir.path().join("big.bin");
        fs::write(&big, vec![7u8; LARGE_FILE as usize]).expect("write");
        let before = cache_key(&fs::metadata(&big).expect("stat"));
        assert_eq!(
            hash_regular(&big, &before, false, &mut []).map(hex::encode),
            Ok(blake3::hash(&vec![7u8; LARGE_FILE as usize])
                .to_hex()
                .to_string())
        );
        let file = fs::OpenOptions::new().write(true).open(&big).expect("open");
        file.set_len(LARGE_FILE + 1).expect("grow");
        assert_eq!(
            hash_regular(&big, &before, false, &mut []),
            Err(SnapshotError::ChangedWhileHashing { path: big })
        );
    }

    #[test]
    fn cache_hits_after_unchanged_resnapshot_and_misses_after_a_change() {
        let dir = tree(FILES);
        let state = tempfile::tempdir().expect("tempdir");
        let options = with_cache(&state.path().join("reg/hash-cache.sqlite"));
        let first = snapshot_with(dir.path(), &options, Duration::ZERO).expect("first");
        assert_eq!((first.stats.hashed, first.stats.from_cache), (4, 0));
        let second = snapshot_with(dir.path(), &options, Duration::ZERO).expect("second");
        assert_eq!(second.stats.from_cache, second.stats.files, "all from stat");
        assert_eq!(second.digest(), first.digest());

        // Touch one file (new size, so that no coarse clock can hide the change).
        fs::write(dir.path().join("a/x.txt"), b"hello again\n").expect("write");
        let third = snapshot_with(dir.path(), &options, Duration::ZERO).expect("third");
        assert_eq!((third.stats.hashed, third.stats.from_cache), (1, 3));
        assert_eq!(first.diff(&third).changed, ["a/x.txt"]);
        let fresh = snapshot(dir.path(), &no_cache()).expect("uncached");
        assert_eq!(
            third.digest(),
            fresh.digest(),
            "cached digests are the real ones"
        );

        // --rehash reads everything and agrees.
        let rehash = SnapshotOptions {
            rehash: true,
            ..options.clone()
        };
        let fourth = snapshot_with(dir.path(), &rehash, Duration::ZERO).expect("rehash");
        assert_eq!((fourth.stats.hashed, fourth.stats.from_cache), (4, 0));
        assert_eq!(fourth.digest(), fresh.digest());
    }

    #[test]
    fn rehash_repairs_a_wrong_cache_entry() {
        let dir = tree(FILES);
        let state = tempfile::tempdir().expect("tempdir");
        let cache_path = state.path().join("hash-cache.sqlite");
        let options = with_cache(&cache_path);
        let truth = snapshot_with(dir.path(), &options, Duration::ZERO).expect("first");
        // Poison the row of b.bin, as a racy write or a bug might.
        let meta = fs::symlink_metadata(dir.path().join("b.bin")).expect("stat");
        let mut cache = HashCache::open(&cache_path).expect("open");
        cache
            .insert_many([(&cache_key(&meta), "b.bin", &[0u8; 32])])
            .expect("poison");
        drop(cache);
        let poisoned = snapshot_with(dir.path(), &options, Duration::ZERO).expect("poisoned");
        assert_eq!(
            truth.diff(&poisoned).changed,
            ["b.bin"],
            "the cache is trusted"
        );
        let rehash = SnapshotOptions {
            rehash: true,
            ..options.clone()
        };
        let repaired = snapshot_with(dir.path(), &rehash, Duration::ZERO).expect("rehash");
        assert_eq!(repaired.digest(), truth.digest());
        let after = snapshot_with(dir.path(), &options, Duration::ZERO).expect("after");
        assert_eq!(after.digest(), truth.digest(), "--rehash rewrote the row");
        assert_eq!(after.stats.from_cache, 4);
    }

    #[test]
    fn recently_modified_files_are_not_cached() {
        let dir = tree(FILES);
        let state = tempfile::tempdir().expect("tempdir");
        let options = with_cache(&state.path().join("hash-cache.sqlite"));
        snapshot(dir.path(), &options).expect("first");
        let second = snapshot(dir.path(), &options).expect("second");
        assert_eq!(
            second.stats.from_cache, 0,
            "files written just now are racy"
        );
        assert!(cacheable(
            &CacheKey {
                dev: 1,
                ino: 1,
                size: 1,
                mtime_ns: 0,
                ctime_ns: 0
            },
            SystemTime::now(),
            RACY_WINDOW
        ));
    }

    #[test]
    fn corrupt_cache_is_survived() {
        let dir = tree(FILES);
        let state = tempfile::tempdir().expect("tempdir");
        let cache = state.path().join("hash-cache.sqlite");
        fs::write(&cache, vec![0xa5u8; 16384]).expect("garbage");
        let options = with_cache(&cache);
        let snap = snapshot_with(dir.path(), &options, Duration::ZERO).expect("snapshot anyway");
        assert_eq!(snap.stats.hashed, 4);
        assert_eq!(
            snap.digest(),
            snapshot(dir.path(), &no_cache()).expect("plain").digest()
        );
        assert_eq!(
            fs::read(&cache).expect("read"),
            vec![0xa5u8; 16384],
            "left alone"
        );
    }

    #[test]
    fn cache_inside_the_root_is_left_out() {
        let dir = tree(FILES);
        let options = with_cache(&dir.path().join(".trainprov/hash-cache.sqlite"));
        let first = snapshot_with(dir.path(), &options, Duration::ZERO).expect("first");
        let second = snapshot_with(dir.path(), &options, Duration::ZERO).expect("second");
        assert_eq!(first.stats.files, 4);
        assert_eq!(second.digest(), first.digest());
        let without = tree(FILES);
        assert_eq!(
            second.digest(),
            snapshot(without.path(), &no_cache())
                .expect("plain")
                .digest()
        );
        assert_eq!(second.stats.from_cache, 4);
    }

    #[test]
    fn progress_bar_is_quiet_and_harmless() {
        let dir = tree(FILES);
        let options = SnapshotOptions {
            progress: true,
            ..SnapshotOptions::default()
        };
        let snap = snapshot(dir.path(), &options).expect("snapshot");
        assert_eq!(snap.stats.files, 4);
    }
}
