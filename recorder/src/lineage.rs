//! Lineage queries over the registry: what went into an artifact or a run ([`lineage`]), and
//! everything a file, dataset or model reached ([`affected`]).
//!
//! # The graph
//!
//! The registry is read as a bipartite graph of **runs** and **content**, where content is
//! identified by digest only (never by path, which moves):
//!
//! - a run **consumed** each of its inputs (`run_artifacts` roles `input:*`): a `--data`,
//!   `--base` or `--adapter` snapshot (artifact kinds `dataset`, `model`, `adapter`, identified by
//!   the snapshot digest, with every regular file of it in `manifest_entries`), a config, a lock
//!   file, the uncommitted code change;
//! - a run **produced** each of its products (role `output`, kind `file`, one row per file under
//!   `--out`, identified by the file's BLAKE3).
//!
//! The two halves meet at the file level: a product of run R "is" an input of run S when a file
//! of one of S's input snapshots has the product's BLAKE3 (`manifest_entries.file_blake3`), or
//! when a config of S has it. That is how an adapter written by one run and passed as
//! `--adapter out1` to the next links the two runs, without either knowing of the other.
//!
//! [`lineage`] walks this graph upwards (inputs, then the runs that produced them, then their
//! inputs, ...), [`affected`] walks it downwards (the runs that consumed the target, then the
//! runs that consumed their products, ...). Both visit each run once, so cycles (a run whose
//! input holds bytes identical to a later run's product) end the walk instead of looping.
//!
//! # Matching rules
//!
//! Files taking part in matching are a snapshot's non-empty regular files, less
//! `provenance.intoto.json` and `model.sig` (which `trainprov run` writes into `--out` but does
//! not list as products): an empty file carries no content and matches everywhere, and the two
//! signature files would make every re-used output directory differ from its run's products. So
//! `--adapter out1`, holding `adapter.bin` plus the two signature files, is an `exact` match
//! for the run whose only product was `adapter.bin`.
//!
//! **Produced by** (lineage of an input snapshot, a directory or a file). Let S be the set of the
//! snapshot's file digests and P the set of a run's product digests, with M = S ∩ P non-empty:
//!
//! | rule | when | example |
//! |---|---|---|
//! | `exact` | S = P | the run's output directory, or a copy of it |
//! | `contains` | P ⊂ S | the output directory with a README or a tokenizer added |
//! | `within` | S ⊂ P | a sub-directory of the output, or one product file |
//! | `partial` | otherwise | some products kept, some files added |
//!
//! `exact`, `contains` and `within` always count. A `partial` overlap counts only when at least
//! one shared file was produced by no other eligible run, or is not a
//! [shareable file](#shareable-files): the `adapter_config.json` that every LoRA run with the
//! same settings writes byte for byte says nothing about which run made a directory, but
//! identical weights do. A run is **eligible** as the producer of a snapshot unless it consumed that very
//! snapshot (same digest: it existed before that run, which at most copied files out of it), or
//! it is the run whose input is being explained, or it started after that run (a later run
//! cannot have made its input, even if it reproduced the same bytes; times have one-second
//! resolution, so runs started in the same second remain eligible).
//!
//! **Affected** ([`affected`]): generation 1 is every run with an input that *is* the target (the
//! same snapshot digest, or a config or lock file with the file's digest) or *contains* one of
//! its files (by BLAKE3, inside any input snapshot's manifest; for a directory or snapshot
//! target its empty and signature files are skipped, a file given explicitly always counts).
//! Generation n + 1 is every not yet affected run one of whose inputs was produced, under the
//! rules above, by an affected run of generation n, where for `partial` overlaps "no other
//! eligible run" reads "no eligible run outside the affected set". A run is listed once, at its
//! lowest generation, with every input that matched at that generation (`via`); its products
//! are listed after the runs. For a run target, generation 1 is what consumed its products.
//!
//! # Shareable files
//!
//! The exemption above (and the one revocation checks apply, `crate::revocation`) covers only
//! small non-weight files, so that byte-identical weights are never excused by an unaffected
//! run that produced (or copied) them too. A file is **shareable** when all of these hold:
//!
//! - its size is known and below [`SHAREABLE_MAX_BYTES`] (64 KiB);
//! - every name it was recorded under (as a product of any run, and the name at hand) ends in
//!   one of [`SHAREABLE_EXTENSIONS`] (`.json`, `.txt`, `.md`, `.yaml`, `.yml`, `.toml`, `.cfg`,
//!   `.ini`, `.jinja`; case-insensitive), so no weight or tensor format
//!   (`.safetensors`, `.bin`, `.pt`, `.gguf`, `.npy`, `.onnx`, `.h5`, `.pkl`, ...) qualifies;
//! - where its bytes are at hand (a model directory being verified), they are text: valid UTF-8
//!   with no control character other than tab, LF and CR, which no weight format's magic
//!   passes (safetensors' little-endian length has NUL bytes, pickle starts `\x80`, zip
//!   `PK\x03\x04`, GGUF and NumPy headers carry NULs or `\x93`, HDF5 `\x89HDF`).
//!
//! See [`is_shareable`].
//!
//! # Targets
//!
//! [`resolve_target`] accepts, first match wins: an existing file (its BLAKE3 and SHA-256), an
//! existing directory (snapshotted with the registry's hash cache: its snapshot digest and every
//! file's digest), a 64-hex digest (looked up as a snapshot digest, as a file's BLAKE3, then as
//! any artifact's SHA-256; files inside input snapshots have only their BLAKE3 recorded, so a
//! SHA-256 found nowhere else is looked up by re-hashing, up to [`SHA256_SCAN_LIMIT`] bytes, the
//! input files still present at their recorded paths whose content still has the recorded
//! BLAKE3), or a run id or unique prefix. A digest found nowhere resolves to
//! [`TargetKind::Unknown`]: [`affected`] then finds nothing, [`lineage`] reports no match.
//!
//! # JSON
//!
//! `trainprov registry lineage out2/model.bin --json` (digests and run ids shortened, keys
//! sorted as printed):
//!
//! ```json
//! {
//!   "lineage": {
//!     "type": "artifact", "kind": "file", "given": "out2/model.bin",
//!     "path": "/w/repo/out2/model.bin", "blake3": "9ad8…", "sha256": "1719…", "files": 1,
//!     "produced_by": [{
//!       "match": {"matched_files": 1, "rule": "exact", "run_products": 1, "snapshot_files": 1},
//!       "run": {
//!         "id": "5e3f4158-…", "kind": "run", "status": "succeeded",
//!         "argv": ["sh", "-c", "mkdir -p out2 && cat out1/adapter.bin data2/extra.csv > out2/model.bin"],
//!         "cwd": "/w/repo", "out_dir": "/w/repo/out2",
//!         "started_at": "2026-11-21T22:51:24Z", "finished_at": "2026-11-21T22:51:24Z",
//!         "exit_code": 0, "attestation_path": "/w/repo/out2/provenance.intoto.json",
//!         "attestation_sha256": "1120…",
//!         "code": {"commit": "925d6ab2…", "dirty": true, "patch_sha256": "ea60…"},
//!         "products": [{"name": "model.bin", "path": "/w/repo/out2/model.bin",
//!                       "sha256": "1719…", "blake3": "9ad8…", "size": 30}],
//!         "relations": [],
//!         "repeated": false,
//!         "inputs": [
//!           {"role": "adapter", "kind": "adapter", "name": "out1", "path": "/w/repo/out1",
//!            "sha256": "2a7c…", "blake3": "c174…", "size": 5844, "files": 3,
//!            "produced_by": [{
//!              "match": {"matched_files": 1, "rule": "exact", "run_products": 1, "snapshot_files": 1},
//!              "run": {"id": "acf6eff6-…", "argv": ["sh", "-c", "… > out1/adapter.bin"], "…": "…",
//!                      "products": [{"name": "adapter.bin", "…": "…"}],
//!                      "inputs": [
//!                {"role": "data", "kind": "dataset", "name": "data", "path": "/w/repo/data",
//!                 "sha256": "35fe…", "blake3": "95c6…", "size": 22, "files": 2, "produced_by": []}
//!              ]}
//!            }]},
//!           {"role": "data", "kind": "dataset", "name": "data2", "files": 1, "…": "…", "produced_by": []}
//!         ]
//!       }
//!     }]
//!   },
//!   "status": "ok",
//!   "target": {"given": "out2/model.bin", "kind": "file", "run_id": null,
//!              "path": "/w/repo/out2/model.bin", "blake3": "9ad8…", "sha256": "1719…", "file_count": 1}
//! }
//! ```
//!
//! A run target gives `"lineage": {"type": "run", "id": …}` with the fields of `run` above. A run
//! met a second time in one tree has `"repeated": true` and empty `code`, `products`, `inputs`.
//!
//! `trainprov registry affected data/poisoned.csv --json`:
//!
//! ```json
//! {
//!   "status": "ok",
//!   "target": {"given": "data/poisoned.csv", "kind": "file", "run_id": null,
//!              "path": "/w/repo/data/poisoned.csv", "blake3": "1ae8…", "sha256": "d173…", "file_count": 1},
//!   "runs": [
//!     {"id": "acf6eff6-…", "kind": "run", "status": "succeeded", "argv": ["…"], "cwd": "/w/repo",
//!      "out_dir": "/w/repo/out1", "started_at": "…", "finished_at": "…", "exit_code": 0,
//!      "attestation_path": "/w/repo/out1/provenance.intoto.json", "attestation_sha256": "cac9…",
//!      "generation": 1,
//!      "via": [{"role": "data", "input": "data", "input_path": "/w/repo/data", "input_blake3": "95c6…",
//!               "matched": "file", "matched_files": 1, "files": ["poisoned.csv"],
//!               "upstream_run": null, "rule": null}],
//!      "rebuilt_by": []},
//!     {"id": "5e3f4158-…", "…": "…", "generation": 2,
//!      "via": [{"role": "adapter", "input": "out1", "input_path": "/w/repo/out1", "input_blake3": "c174…",
//!               "matched": "product", "matched_files": 1, "files": ["adapter.bin"],
//!               "upstream_run": "acf6eff6-…", "rule": "exact"}],
//!      "rebuilt_by": []}
//!   ],
//!   "products": [
//!     {"run_id": "acf6eff6-…", "generation": 1, "name": "adapter.bin", "path": "/w/repo/out1/adapter.bin",
//!      "sha256": "8eeb…", "blake3": "0f09…", "size": 22},
//!     {"run_id": "5e3f4158-…", "generation": 2, "name": "model.bin", "path": "/w/repo/out2/model.bin",
//!      "sha256": "1719…", "blake3": "9ad8…", "size": 30}
//!   ]
//! }
//! ```
//!
//! `matched` is `snapshot` (the input is the target snapshot itself), `file` (it is or holds a
//! file of the target) or `product` (it holds products of `upstream_run`, by `rule`);
//! `rebuilt_by` lists later runs recorded (by `trainprov retrain`) as `reproduction-of` or
//! `retrained-without` this one. Nothing affected: `"runs": [], "products": []`, exit 0.
//!
//! ```no_run
//! use recorder::lineage::{affected, resolve_target};
//! use recorder::registry::Registry;
//! let registry = Registry::open(std::path::Path::new(".trainprov"))?;
//! let target = resolve_target("data/poisoned.csv", &registry)?;
//! for run in affected(registry.connection(), &target)?.runs {
//!     println!("generation {}: run {}", run.generation, run.run.id);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::file_digest::digest_file;
use crate::record::ATTESTATION_FILE;
use crate::registry::{Registry, RegistryError, RunRelation};
use crate::snapshot::{snapshot, EntryKind, SnapshotOptions};

/// Artifact kinds of input snapshots (their `blake3` is a snapshot digest).
pub const SNAPSHOT_KINDS: [&str; 3] = ["dataset", "model", "adapter"];
/// Artifact kinds of single-file inputs (their `blake3` is the file's).
pub const FILE_INPUT_KINDS: [&str; 4] = ["config", "lockfile", "code-diff", "file"];
/// How many bytes of recorded input files a SHA-256 lookup re-hashes at most.
pub const SHA256_SCAN_LIMIT: u64 = 4 << 30;
/// Matched file paths kept per input in [`Via::files`] (the count is always complete).
pub const MAX_VIA_FILES: usize = 20;
/// A [shareable file](self#shareable-files) is smaller than this: 64 KiB.
pub const SHAREABLE_MAX_BYTES: u64 = 64 * 1024;
/// File name extensions a [shareable file](self#shareable-files) may have (lowercase).
pub const SHAREABLE_EXTENSIONS: [&str; 9] = [
    "json", "txt", "md", "yaml", "yml", "toml", "cfg", "ini", "jinja",
];

/// Whether a file is [shareable](self#shareable-files): `size` below 64 KiB, every name in
/// `names` (at least one) with a text extension, and `content` (when given) text.
pub fn is_shareable<'n>(
    names: impl IntoIterator<Item = &'n str>,
    size: Option<u64>,
    content: Option<&[u8]>,
) -> bool {
    let small = size.is_some_and(|s| s < SHAREABLE_MAX_BYTES);
    let mut any = false;
    let text_names = names.into_iter().all(|name| {
        any = true;
        let file = name.rsplit('/').next().unwrap_or(name);
        file.rsplit_once('.').is_some_and(|(_, ext)| {
            SHAREABLE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
        })
    });
    let text = content.is_none_or(|bytes| {
        std::str::from_utf8(bytes).is_ok_and(|t| {
            !t.chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        })
    });
    small && any && text_names && text
}

/// Every name under which a run recorded a product with this BLAKE3, and its size.
pub(crate) fn product_names(
    conn: &Connection,
    blake3: &str,
) -> Result<(Vec<String>, Option<u64>), LineageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT l.name, a.size FROM artifacts a JOIN run_artifacts l ON l.artifact_id = a.id
         WHERE a.kind = 'file' AND a.blake3 = ?1 AND l.role = 'output'",
    )?;
    let mut names = Vec::new();
    let mut size = None;
    for row in stmt.query_map([blake3], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
    })? {
        let (name, s) = row?;
        names.push(name);
        size = size.or(s.map(|s| s as u64));
    }
    Ok((names, size))
}

/// Errors of lineage queries; one line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineageError {
    /// The database could not be read.
    #[error("registry query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A target file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A target directory could not be snapshotted.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// Nothing matches the argument.
    #[error("no run or artifact matches '{0}'")]
    NoMatch(String),
    /// A run id prefix matches several runs.
    #[error("'{0}' matches several runs; give more characters of the id")]
    AmbiguousRun(String),
    /// The argument names something that is neither a file nor a directory.
    #[error("{0}: not a regular file or directory")]
    NotAFileOrDirectory(String),
    /// An attestation or model signature was given where the artifact it names is meant.
    #[error(
        "{0}: is a signed statement (DSSE attestation or model.sig), not an artifact; revoking its \
         bytes would change nothing. Revoke what it names instead: its product files or their \
         directory (`trainprov registry revoke out/adapter_model.safetensors`), or a subject's \
         digest (sha256:<hex>, listed by `trainprov verify {0} --json`)"
    )]
    SignedStatement(String),
}

// ---------------------------------------------------------------------------------------------
// Targets

/// What a query argument turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A recorded run.
    Run,
    /// One file (an existing path, or a digest of a recorded file).
    File,
    /// An existing directory, snapshotted now.
    Directory,
    /// A digest of an input snapshot recorded in the registry.
    Snapshot,
    /// A 64-hex digest found nowhere in the registry.
    Unknown,
}

/// One file of a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetFile {
    /// Path relative to the target directory, or the path / digest as given for a file.
    pub path: String,
    /// Bytes, where known.
    pub size: Option<u64>,
    /// Lowercase hex BLAKE3.
    pub blake3: String,
}

/// A resolved query argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The argument as given.
    pub given: String,
    /// What it is.
    pub kind: TargetKind,
    /// The run, for [`TargetKind::Run`].
    pub run_id: Option<String>,
    /// Absolute path, for targets found on disk.
    pub path: Option<String>,
    /// The file's BLAKE3, or the snapshot digest of a directory or snapshot.
    pub blake3: Option<String>,
    /// The file's SHA-256, or the SHA-256 of a snapshot's manifest, where known.
    pub sha256: Option<String>,
    /// Regular files: the file itself, or every file of a directory or snapshot.
    #[serde(skip)]
    pub files: Vec<TargetFile>,
    /// `files.len()`.
    pub file_count: usize,
    /// How a digest was found, or why it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Target {
    fn new(given: &str, kind: TargetKind) -> Target {
        Target {
            given: given.to_string(),
            kind,
            run_id: None,
            path: None,
            blake3: None,
            sha256: None,
            files: Vec::new(),
            file_count: 0,
            note: None,
        }
    }

    fn with_files(mut self, files: Vec<TargetFile>) -> Target {
        self.file_count = files.len();
        self.files = files;
        self
    }
}

/// Resolves a query argument: an existing file or directory, a 64-hex digest (BLAKE3 or
/// SHA-256), or a run id or unique prefix, first match wins (see the module docs).
pub fn resolve_target(arg: &str, registry: &Registry) -> Result<Target, LineageError> {
    if arg.is_empty() {
        return Err(LineageError::NoMatch(arg.to_string()));
    }
    let path = Path::new(arg);
    if let Ok(meta) = std::fs::metadata(path) {
        let absolute = std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        if meta.is_dir() {
            let options = SnapshotOptions {
                rehash: false,
                cache: crate::hash_cache::default_path(),
                progress: false,
            };
            let snap = snapshot(path, &options)?;
            let files = snap
                .entries
                .iter()
                .filter(|e| matches!(e.kind, EntryKind::File))
                .map(|e| TargetFile {
                    path: e.path.clone(),
                    size: Some(e.size),
                    blake3: e.blake3.clone(),
                })
                .collect();
            let mut target = Target::new(arg, TargetKind::Directory).with_files(files);
            target.path = Some(absolute);
            target.blake3 = Some(snap.digest());
            target.sha256 = Some(snap.manifest_sha256());
            return Ok(target);
        }
        if meta.is_file() {
            let digests = digest_file(path).map_err(|source| LineageError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let mut target = Target::new(arg, TargetKind::File).with_files(vec![TargetFile {
                path: arg.to_string(),
                size: Some(digests.size),
                blake3: digests.blake3.clone(),
            }]);
            target.path = Some(absolute);
            target.blake3 = Some(digests.blake3);
            target.sha256 = Some(digests.sha256);
            return Ok(target);
        }
        return Err(LineageError::NotAFileOrDirectory(arg.to_string()));
    }
    if arg.len() == 64 && arg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return digest_target(arg, &arg.to_ascii_lowercase(), registry.connection());
    }
    match registry.resolve_run(arg) {
        Ok(id) => {
            let mut target = Target::new(arg, TargetKind::Run);
            target.run_id = Some(id);
            Ok(target)
        }
        Err(RegistryError::NoSuchRun(_)) => Err(LineageError::NoMatch(arg.to_string())),
        Err(RegistryError::AmbiguousRun(_)) => Err(LineageError::AmbiguousRun(arg.to_string())),
        Err(other) => Err(other.into()),
    }
}

fn digest_target(given: &str, hex: &str, conn: &Connection) -> Result<Target, LineageError> {
    // A snapshot digest?
    let snapshot_sha: Option<String> = conn
        .query_row(
            "SELECT sha256 FROM artifacts WHERE kind IN ('dataset', 'model', 'adapter') AND blake3 = ?1 LIMIT 1",
            [hex],
            |r| r.get(0),
        )
        .optional()?;
    let in_manifests: bool = conn
        .query_row(
            "SELECT 1 FROM manifest_entries WHERE snapshot_blake3 = ?1 LIMIT 1",
            [hex],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if snapshot_sha.is_some() || in_manifests {
        return snapshot_target(given, hex, snapshot_sha, conn);
    }
    // A file's BLAKE3?
    let artifact: Option<(String, Option<i64>)> = conn
        .query_row(
            "SELECT sha256, size FROM artifacts WHERE blake3 = ?1 LIMIT 1",
            [hex],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let manifest_size: Option<i64> = conn
        .query_row(
            "SELECT size FROM manifest_entries WHERE file_blake3 = ?1 LIMIT 1",
            [hex],
            |r| r.get(0),
        )
        .optional()?;
    if artifact.is_some() || manifest_size.is_some() {
        let size = artifact
            .as_ref()
            .and_then(|(_, s)| *s)
            .or(manifest_size)
            .map(|s| s as u64);
        let mut target = file_digest_target(given, hex, size);
        target.sha256 = artifact.map(|(sha, _)| sha);
        return Ok(target);
    }
    // Any artifact's SHA-256?
    let by_sha: Option<(String, String, Option<i64>)> = conn
        .query_row(
            "SELECT kind, blake3, size FROM artifacts WHERE sha256 = ?1 LIMIT 1",
            [hex],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((kind, blake3, size)) = by_sha {
        if SNAPSHOT_KINDS.contains(&kind.as_str()) {
            return snapshot_target(given, &blake3, Some(hex.to_string()), conn);
        }
        let mut target = file_digest_target(given, &blake3, size.map(|s| s as u64));
        target.sha256 = Some(hex.to_string());
        return Ok(target);
    }
    // The SHA-256 of a file inside an input snapshot: only its BLAKE3 is recorded.
    let scan = sha256_on_disk(conn, hex)?;
    if let Some(found) = scan.found {
        let mut target = file_digest_target(given, &found.blake3, Some(found.size));
        target.sha256 = Some(hex.to_string());
        target.path = Some(found.path.clone());
        target.note = Some(format!(
            "SHA-256 matched {} (still holding the recorded content, BLAKE3 {})",
            found.path, found.blake3
        ));
        return Ok(target);
    }
    let mut target = Target::new(given, TargetKind::Unknown);
    target.note = Some(if scan.truncated {
        format!(
            "no recorded file, snapshot or product has this digest; input files are indexed by \
             BLAKE3, and the SHA-256 search re-hashed only the first {} GiB of recorded inputs: \
             pass the file's path or its BLAKE3 digest",
            SHA256_SCAN_LIMIT >> 30
        )
    } else {
        "no recorded file, snapshot or product has this digest (input files are indexed by \
         BLAKE3; a SHA-256 is known for products, configs and input files still on disk)"
            .to_string()
    });
    Ok(target)
}

fn file_digest_target(given: &str, blake3: &str, size: Option<u64>) -> Target {
    let mut target = Target::new(given, TargetKind::File).with_files(vec![TargetFile {
        path: given.to_string(),
        size,
        blake3: blake3.to_string(),
    }]);
    target.blake3 = Some(blake3.to_string());
    target
}

fn snapshot_target(
    given: &str,
    digest: &str,
    sha256: Option<String>,
    conn: &Connection,
) -> Result<Target, LineageError> {
    let files = manifest_of(conn, digest)?
        .into_iter()
        .map(|(path, size, blake3)| TargetFile {
            path,
            size: Some(size),
            blake3,
        })
        .collect();
    let mut target = Target::new(given, TargetKind::Snapshot).with_files(files);
    target.blake3 = Some(digest.to_string());
    target.sha256 = sha256;
    target.path = conn
        .query_row(
            "SELECT l.path FROM artifacts a JOIN run_artifacts l ON l.artifact_id = a.id
             WHERE a.kind IN ('dataset', 'model', 'adapter') AND a.blake3 = ?1 AND l.path IS NOT NULL
             LIMIT 1",
            [digest],
            |r| r.get(0),
        )
        .optional()?;
    Ok(target)
}

struct FoundOnDisk {
    path: String,
    size: u64,
    blake3: String,
}

struct Scan {
    found: Option<FoundOnDisk>,
    truncated: bool,
}

/// Re-hashes input files still at their recorded paths (content unchanged) to find a SHA-256.
fn sha256_on_disk(conn: &Connection, sha256: &str) -> Result<Scan, LineageError> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT l.path, a.blake3 FROM run_artifacts l JOIN artifacts a ON a.id = l.artifact_id
         WHERE a.kind IN ('dataset', 'model', 'adapter') AND l.role LIKE 'input:%' AND l.path IS NOT NULL",
    )?;
    let inputs: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut checked: HashSet<String> = HashSet::new();
    let mut budget = SHA256_SCAN_LIMIT;
    for (root, snapshot) in inputs {
        let root = PathBuf::from(root);
        let root_is_dir = root.is_dir();
        for (rel, size, blake3) in manifest_of(conn, &snapshot)? {
            if size == 0 || checked.contains(&blake3) {
                continue;
            }
            let file = if root_is_dir {
                root.join(&rel)
            } else if root.file_name().and_then(|n| n.to_str()) == Some(rel.as_str()) {
                root.clone()
            } else {
                continue;
            };
            let Ok(meta) = std::fs::symlink_metadata(&file) else {
                continue;
            };
            if !meta.is_file() || meta.len() != size {
                continue;
            }
            if size > budget {
                return Ok(Scan {
                    found: None,
                    truncated: true,
                });
            }
            budget -= size;
            let Ok(digests) = digest_file(&file) else {
                continue;
            };
            if digests.blake3 != blake3 {
                continue;
            }
            checked.insert(blake3.clone());
            if digests.sha256 == sha256 {
                return Ok(Scan {
                    found: Some(FoundOnDisk {
                        path: file.display().to_string(),
                        size,
                        blake3,
                    }),
                    truncated: false,
                });
            }
        }
    }
    Ok(Scan {
        found: None,
        truncated: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Result types

/// A run as the lineage queries show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// Run id.
    pub id: String,
    /// `run` or `train`.
    pub kind: String,
    /// `running`, `succeeded`, `failed`, `interrupted`; `abandoned` when `running` but its
    /// wrapper process is gone.
    pub status: String,
    /// The command line.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Output directory.
    pub out_dir: Option<String>,
    /// Start time (RFC 3339 UTC).
    pub started_at: String,
    /// End time.
    pub finished_at: Option<String>,
    /// Child exit code.
    pub exit_code: Option<i32>,
    /// The attestation written.
    pub attestation_path: Option<String>,
    /// Its SHA-256.
    pub attestation_sha256: Option<String>,
    #[serde(skip)]
    git_commit: Option<String>,
    #[serde(skip)]
    git_dirty: Option<bool>,
}

/// A product file of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    /// Path relative to the run's `--out`.
    pub name: String,
    /// Absolute path at record time.
    pub path: Option<String>,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Lowercase hex BLAKE3.
    pub blake3: String,
    /// Bytes.
    pub size: Option<u64>,
}

/// The code a run ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeInfo {
    /// HEAD commit.
    pub commit: Option<String>,
    /// Uncommitted changes were present.
    pub dirty: Option<bool>,
    /// SHA-256 of the stored uncommitted change, when there was one.
    pub patch_sha256: Option<String>,
}

/// Which rule matched a snapshot (or file) to a run's products (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchRule {
    /// The snapshot's files are exactly the run's products.
    Exact,
    /// The snapshot holds every product, and other files.
    Contains,
    /// Every file of the snapshot is a product; the run produced more.
    Within,
    /// Some files in common, including one no other (unaffected) run produced.
    Partial,
}

impl MatchRule {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchRule::Exact => "exact",
            MatchRule::Contains => "contains",
            MatchRule::Within => "within",
            MatchRule::Partial => "partial",
        }
    }
}

/// How a producing run matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MatchInfo {
    /// The rule.
    pub rule: MatchRule,
    /// Distinct file digests in common.
    pub matched_files: usize,
    /// Distinct file digests of the snapshot that take part in matching.
    pub snapshot_files: usize,
    /// Distinct digests of the run's non-empty products.
    pub run_products: usize,
}

/// A run that produced an input or artifact, with its own lineage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Producer {
    /// How it matched.
    #[serde(rename = "match")]
    pub matched: MatchInfo,
    /// The run and what went into it.
    pub run: RunLineage,
}

/// One input of a run and the runs that produced it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputLineage {
    /// `data`, `base`, `adapter`, `config`, `lockfile`.
    pub role: String,
    /// Artifact kind: `dataset`, `model`, `adapter`, `config`, `lockfile`.
    pub kind: String,
    /// The name as given.
    pub name: String,
    /// Absolute path at record time.
    pub path: Option<String>,
    /// SHA-256 (of the file, or of a snapshot's manifest).
    pub sha256: String,
    /// BLAKE3 (of the file, or the snapshot digest).
    pub blake3: String,
    /// Bytes.
    pub size: Option<u64>,
    /// Regular files of a snapshot input.
    pub files: Option<usize>,
    /// Runs that produced it.
    pub produced_by: Vec<Producer>,
}

/// A run and, transitively, what went into it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunLineage {
    /// The run.
    #[serde(flatten)]
    pub run: RunInfo,
    /// Its code.
    pub code: Option<CodeInfo>,
    /// Its products.
    pub products: Vec<Product>,
    /// How it relates to earlier runs (`reproduction-of`, `retrained-without`).
    pub relations: Vec<RunRelation>,
    /// Already shown earlier in this tree (also how cycles end): `code`, `products` and
    /// `inputs` are left empty here.
    pub repeated: bool,
    /// Inputs (base, adapters, data, configs, lock files) with their producers.
    pub inputs: Vec<InputLineage>,
}

/// A file or directory and the runs that produced it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactLineage {
    /// The argument as given.
    pub given: String,
    /// `file`, `directory` or `snapshot`.
    pub kind: TargetKind,
    /// Absolute path, for targets on disk.
    pub path: Option<String>,
    /// BLAKE3 of the file, or the snapshot digest.
    pub blake3: Option<String>,
    /// SHA-256, where known.
    pub sha256: Option<String>,
    /// Regular files.
    pub files: usize,
    /// The runs that produced it.
    pub produced_by: Vec<Producer>,
}

/// The root of a lineage tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LineageNode {
    /// A run target.
    Run(Box<RunLineage>),
    /// A file, directory or snapshot target.
    Artifact(ArtifactLineage),
}

/// How an input of an affected run matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Matched {
    /// The input is the target snapshot itself.
    Snapshot,
    /// The input is, or contains, a file of the target.
    File,
    /// The input was produced by an affected run of the previous generation.
    Product,
}

/// One input through which a run is affected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Via {
    /// `data`, `base`, `adapter`, `config`, `lockfile`, `code`.
    pub role: String,
    /// The input's name as given.
    pub input: String,
    /// Its absolute path at record time.
    pub input_path: Option<String>,
    /// Its BLAKE3 (snapshot digest, or the file's).
    pub input_blake3: String,
    /// How it matched.
    pub matched: Matched,
    /// Distinct matching files.
    pub matched_files: usize,
    /// Matching paths inside the input (the first [`MAX_VIA_FILES`]).
    pub files: Vec<String>,
    /// The affected run whose products it holds (`matched: product`).
    pub upstream_run: Option<String>,
    /// The producer rule that matched (`matched: product`).
    pub rule: Option<MatchRule>,
}

/// A run that consumed the target, directly or through earlier products.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AffectedRun {
    /// The run.
    #[serde(flatten)]
    pub run: RunInfo,
    /// 1: consumed the target; n + 1: consumed a product of a generation-n run.
    pub generation: u32,
    /// The inputs that matched.
    pub via: Vec<Via>,
    /// Later runs recorded as a reproduction or retrain of this one.
    pub rebuilt_by: Vec<RunRelation>,
}

/// A product of an affected run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffectedProduct {
    /// The run that produced it.
    pub run_id: String,
    /// That run's generation.
    pub generation: u32,
    /// Path relative to the run's `--out`.
    pub name: String,
    /// Absolute path at record time.
    pub path: Option<String>,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Lowercase hex BLAKE3.
    pub blake3: String,
    /// Bytes.
    pub size: Option<u64>,
}

/// Everything a target reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Affected {
    /// The target.
    pub target: Target,
    /// Affected runs by generation, then start time.
    pub runs: Vec<AffectedRun>,
    /// Their products, in the same order.
    pub products: Vec<AffectedProduct>,
}

// ---------------------------------------------------------------------------------------------
// Queries

/// An input link of a run.
#[derive(Debug, Clone)]
struct InputLink {
    run_id: String,
    role: String,
    kind: String,
    name: String,
    path: Option<String>,
    sha256: String,
    blake3: String,
    size: Option<u64>,
}

/// Cached registry reads.
struct Db<'c> {
    conn: &'c Connection,
    runs: HashMap<String, RunInfo>,
    products: HashMap<String, Vec<Product>>,
    manifests: HashMap<String, Vec<(String, u64, String)>>,
    producers_of: HashMap<String, Vec<String>>,
}

impl<'c> Db<'c> {
    fn new(conn: &'c Connection) -> Db<'c> {
        Db {
            conn,
            runs: HashMap::new(),
            products: HashMap::new(),
            manifests: HashMap::new(),
            producers_of: HashMap::new(),
        }
    }

    fn run(&mut self, id: &str) -> Result<RunInfo, LineageError> {
        if let Some(info) = self.runs.get(id) {
            return Ok(info.clone());
        }
        let info = self
            .conn
            .query_row(
                "SELECT id, kind, status, argv_json, cwd, out_dir, started_at, finished_at, exit_code,
                        attestation_path, attestation_sha256, git_commit, git_dirty, wrapper_pid
                 FROM runs WHERE id = ?1",
                [id],
                |r| {
                    let argv: String = r.get(3)?;
                    let status = crate::registry::shown_status(r.get(2)?, r.get(13)?);
                    Ok(RunInfo {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        status,
                        argv: serde_json::from_str(&argv).unwrap_or_default(),
                        cwd: r.get(4)?,
                        out_dir: r.get(5)?,
                        started_at: r.get(6)?,
                        finished_at: r.get(7)?,
                        exit_code: r.get(8)?,
                        attestation_path: r.get(9)?,
                        attestation_sha256: r.get(10)?,
                        git_commit: r.get(11)?,
                        git_dirty: r.get(12)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| LineageError::NoMatch(id.to_string()))?;
        self.runs.insert(id.to_string(), info.clone());
        Ok(info)
    }

    /// Every product of a run (empty files included).
    fn products(&mut self, run_id: &str) -> Result<Vec<Product>, LineageError> {
        if let Some(p) = self.products.get(run_id) {
            return Ok(p.clone());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.name, l.path, a.sha256, a.blake3, a.size
             FROM run_artifacts l JOIN artifacts a ON a.id = l.artifact_id
             WHERE l.run_id = ?1 AND l.role = 'output' ORDER BY l.name",
        )?;
        let products: Vec<Product> = stmt
            .query_map([run_id], |r| {
                Ok(Product {
                    name: r.get(0)?,
                    path: r.get(1)?,
                    sha256: r.get(2)?,
                    blake3: r.get(3)?,
                    size: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
                })
            })?
            .collect::<Result<_, _>>()?;
        self.products.insert(run_id.to_string(), products.clone());
        Ok(products)
    }

    /// The digests of a run's products that take part in matching.
    fn product_set(&mut self, run_id: &str) -> Result<BTreeSet<String>, LineageError> {
        Ok(self
            .products(run_id)?
            .into_iter()
            .filter(|p| p.size != Some(0) && !is_signature_file(&p.name))
            .map(|p| p.blake3)
            .collect())
    }

    fn manifest(&mut self, snapshot: &str) -> Result<Vec<(String, u64, String)>, LineageError> {
        if let Some(m) = self.manifests.get(snapshot) {
            return Ok(m.clone());
        }
        let rows = manifest_of(self.conn, snapshot)?;
        self.manifests.insert(snapshot.to_string(), rows.clone());
        Ok(rows)
    }

    /// The files of an input that take part in matching: `path -> blake3`.
    fn input_files(&mut self, input: &InputLink) -> Result<Vec<(String, String)>, LineageError> {
        let rows = if SNAPSHOT_KINDS.contains(&input.kind.as_str()) {
            self.manifest(&input.blake3)?
        } else {
            vec![(
                input.name.clone(),
                input.size.unwrap_or(1),
                input.blake3.clone(),
            )]
        };
        Ok(matchable(rows))
    }

    /// Runs with a product of this BLAKE3.
    fn producers_of(&mut self, blake3: &str) -> Result<Vec<String>, LineageError> {
        if let Some(p) = self.producers_of.get(blake3) {
            return Ok(p.clone());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT l.run_id FROM artifacts a JOIN run_artifacts l ON l.artifact_id = a.id
             WHERE a.kind = 'file' AND a.blake3 = ?1 AND l.role = 'output'",
        )?;
        let runs: Vec<String> = stmt
            .query_map([blake3], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        self.producers_of.insert(blake3.to_string(), runs.clone());
        Ok(runs)
    }

    fn inputs_of(&mut self, run_id: &str) -> Result<Vec<InputLink>, LineageError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.run_id, l.role, a.kind, l.name, l.path, a.sha256, a.blake3, a.size
             FROM run_artifacts l JOIN artifacts a ON a.id = l.artifact_id
             WHERE l.run_id = ?1 AND l.role LIKE 'input:%' ORDER BY l.role, l.name",
        )?;
        let rows = stmt
            .query_map([run_id], input_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Input links, of any run, whose artifact is of one of `kinds` with this BLAKE3.
    fn inputs_with(
        &mut self,
        blake3: &str,
        kinds: &[&str],
    ) -> Result<Vec<InputLink>, LineageError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.run_id, l.role, a.kind, l.name, l.path, a.sha256, a.blake3, a.size
             FROM artifacts a JOIN run_artifacts l ON l.artifact_id = a.id
             WHERE a.kind = ?1 AND a.blake3 = ?2 AND l.role LIKE 'input:%'",
        )?;
        let mut out = Vec::new();
        for kind in kinds {
            for row in stmt.query_map(params![kind, blake3], input_from_row)? {
                out.push(row?);
            }
        }
        Ok(out)
    }

    /// Runs that consumed the snapshot with this digest.
    fn snapshot_consumers(
        &mut self,
        digest: Option<&str>,
    ) -> Result<HashSet<String>, LineageError> {
        let Some(digest) = digest else {
            return Ok(HashSet::new());
        };
        Ok(self
            .inputs_with(digest, &SNAPSHOT_KINDS)?
            .into_iter()
            .map(|i| i.run_id)
            .collect())
    }

    /// Whether `run` can have produced a snapshot (see [`Eligibility`]).
    fn eligible(&mut self, run: &str, rules: &Eligibility) -> Result<bool, LineageError> {
        if rules.consumer_id.as_deref() == Some(run) || rules.snapshot_consumers.contains(run) {
            return Ok(false);
        }
        Ok(match &rules.consumer_started {
            Some(consumer) => not_later(&self.run(run)?.started_at, consumer),
            None => true,
        })
    }

    /// The runs that can have produced these bytes for a snapshot.
    fn eligible_producers_of(
        &mut self,
        blake3: &str,
        rules: &Eligibility,
    ) -> Result<Vec<String>, LineageError> {
        let mut out = Vec::new();
        for run in self.producers_of(blake3)? {
            if self.eligible(&run, rules)? {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// Input snapshots holding a file of this BLAKE3: `(snapshot digest, path inside it)`.
    fn snapshots_containing(
        &mut self,
        blake3: &str,
    ) -> Result<Vec<(String, String)>, LineageError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT snapshot_blake3, path FROM manifest_entries WHERE file_blake3 = ?1",
        )?;
        let rows = stmt
            .query_map([blake3], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Inputs of any run that hold a file of this BLAKE3, with the path inside each.
    fn consumers_of_file(
        &mut self,
        blake3: &str,
    ) -> Result<Vec<(InputLink, String)>, LineageError> {
        let mut out = Vec::new();
        for (snapshot, path) in self.snapshots_containing(blake3)? {
            for input in self.inputs_with(&snapshot, &SNAPSHOT_KINDS)? {
                out.push((input, path.clone()));
            }
        }
        for input in self.inputs_with(blake3, &FILE_INPUT_KINDS)? {
            let name = input.name.clone();
            out.push((input, name));
        }
        Ok(out)
    }

    fn relations_of(&mut self, run_id: &str) -> Result<Vec<RunRelation>, LineageError> {
        self.relations("run_id", run_id)
    }

    fn rebuilt_by(&mut self, run_id: &str) -> Result<Vec<RunRelation>, LineageError> {
        self.relations("original_run_id", run_id)
    }

    fn relations(&mut self, column: &str, run_id: &str) -> Result<Vec<RunRelation>, LineageError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT run_id, relation, original_run_id, original_statement_sha256, excluded_json, outcome
             FROM run_relations WHERE {column} = ?1 ORDER BY run_id, relation"
        ))?;
        let rows = stmt
            .query_map([run_id], |r| {
                let excluded: Option<String> = r.get(4)?;
                Ok(RunRelation {
                    run_id: r.get(0)?,
                    relation: r.get(1)?,
                    original_run_id: r.get(2)?,
                    original_statement_sha256: r.get(3)?,
                    excluded: excluded
                        .and_then(|e| serde_json::from_str(&e).ok())
                        .unwrap_or_default(),
                    outcome: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// Which runs may count as the producer of a snapshot: not the run that consumed it (nor any
/// other run that consumed the same snapshot: it existed before them), and none that started
/// after the consuming run.
#[derive(Debug, Default)]
struct Eligibility {
    consumer_id: Option<String>,
    consumer_started: Option<String>,
    snapshot_consumers: HashSet<String>,
}

impl Eligibility {
    fn new(
        db: &mut Db<'_>,
        consumer: Option<&RunInfo>,
        snapshot: Option<&str>,
    ) -> Result<Eligibility, LineageError> {
        Ok(Eligibility {
            consumer_id: consumer.map(|c| c.id.clone()),
            consumer_started: consumer.map(|c| c.started_at.clone()),
            snapshot_consumers: db.snapshot_consumers(snapshot)?,
        })
    }
}

fn input_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InputLink> {
    Ok(InputLink {
        run_id: r.get(0)?,
        role: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        path: r.get(4)?,
        sha256: r.get(5)?,
        blake3: r.get(6)?,
        size: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
    })
}

pub(crate) fn manifest_of(
    conn: &Connection,
    snapshot: &str,
) -> Result<Vec<(String, u64, String)>, LineageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT path, size, file_blake3 FROM manifest_entries WHERE snapshot_blake3 = ?1 ORDER BY path",
    )?;
    let rows = stmt
        .query_map([snapshot], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// `provenance.intoto.json` or `model.sig`, at any depth.
fn is_signature_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == ATTESTATION_FILE || name == attest::oms::SIGNATURE_FILE
}

/// Non-empty files other than the signature files: `(path, blake3)`.
fn matchable(rows: Vec<(String, u64, String)>) -> Vec<(String, String)> {
    rows.into_iter()
        .filter(|(path, size, _)| *size > 0 && !is_signature_file(path))
        .map(|(path, _, blake3)| (path, blake3))
        .collect()
}

/// The rule relating a snapshot's digests `s` to a run's products `p`, given `matched` = S ∩ P
/// (non-empty).
fn classify(s: &BTreeSet<String>, p: &BTreeSet<String>, matched: usize) -> MatchRule {
    match (matched == s.len(), matched == p.len()) {
        (true, true) => MatchRule::Exact,
        (true, false) => MatchRule::Within,
        (false, true) => MatchRule::Contains,
        (false, false) => MatchRule::Partial,
    }
}

/// `started` is no later than `than` (RFC 3339 UTC of one format compares as text); unknown
/// times do not exclude.
fn not_later(started: &str, than: &str) -> bool {
    started.is_empty() || than.is_empty() || started <= than
}

// ---------------------------------------------------------------------------------------------
// lineage

/// The tree of what went into a run or an artifact (see the module docs).
pub fn lineage(conn: &Connection, target: &Target) -> Result<LineageNode, LineageError> {
    let mut walk = Walk {
        db: Db::new(conn),
        shown: HashSet::new(),
    };
    match target.kind {
        TargetKind::Run => {
            let id = target
                .run_id
                .as_deref()
                .ok_or_else(|| LineageError::NoMatch(target.given.clone()))?;
            Ok(LineageNode::Run(Box::new(walk.run(id)?)))
        }
        TargetKind::Unknown => Err(LineageError::NoMatch(target.given.clone())),
        TargetKind::File | TargetKind::Directory | TargetKind::Snapshot => {
            let files = matchable(
                target
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), f.size.unwrap_or(1), f.blake3.clone()))
                    .collect(),
            );
            let snapshot = match target.kind {
                TargetKind::File => None,
                _ => target.blake3.as_deref(),
            };
            let rules = Eligibility::new(&mut walk.db, None, snapshot)?;
            let produced_by = walk.producers(&files, &rules)?;
            Ok(LineageNode::Artifact(ArtifactLineage {
                given: target.given.clone(),
                kind: target.kind,
                path: target.path.clone(),
                blake3: target.blake3.clone(),
                sha256: target.sha256.clone(),
                files: target.file_count,
                produced_by,
            }))
        }
    }
}

struct Walk<'c> {
    db: Db<'c>,
    shown: HashSet<String>,
}

impl Walk<'_> {
    fn run(&mut self, id: &str) -> Result<RunLineage, LineageError> {
        let info = self.db.run(id)?;
        if !self.shown.insert(id.to_string()) {
            return Ok(RunLineage {
                run: info,
                code: None,
                products: Vec::new(),
                relations: Vec::new(),
                repeated: true,
                inputs: Vec::new(),
            });
        }
        let links = self.db.inputs_of(id)?;
        let patch_sha256 = links
            .iter()
            .find(|l| l.role == "input:code")
            .map(|l| l.sha256.clone());
        let code = (info.git_commit.is_some() || patch_sha256.is_some()).then(|| CodeInfo {
            commit: info.git_commit.clone(),
            dirty: info.git_dirty,
            patch_sha256,
        });
        let mut inputs = Vec::new();
        for link in links.iter().filter(|l| l.role != "input:code") {
            let files = self.db.input_files(link)?;
            let is_snapshot = SNAPSHOT_KINDS.contains(&link.kind.as_str());
            let snapshot = is_snapshot.then_some(link.blake3.as_str());
            let rules = Eligibility::new(&mut self.db, Some(&info), snapshot)?;
            let produced_by = self.producers(&files, &rules)?;
            let file_count = if is_snapshot {
                Some(self.db.manifest(&link.blake3)?.len())
            } else {
                None
            };
            inputs.push(InputLineage {
                role: link.role.trim_start_matches("input:").to_string(),
                kind: link.kind.clone(),
                name: link.name.clone(),
                path: link.path.clone(),
                sha256: link.sha256.clone(),
                blake3: link.blake3.clone(),
                size: link.size,
                files: file_count,
                produced_by,
            });
        }
        inputs.sort_by_key(|i| (role_rank(&i.role), i.name.clone()));
        Ok(RunLineage {
            products: self.db.products(id)?,
            relations: self.db.relations_of(id)?,
            run: info,
            code,
            repeated: false,
            inputs,
        })
    }

    /// Runs, among the eligible ones, that produced the files `files` (`(path, blake3)`, already
    /// [`matchable`]), each with its lineage.
    fn producers(
        &mut self,
        files: &[(String, String)],
        rules: &Eligibility,
    ) -> Result<Vec<Producer>, LineageError> {
        let wanted: BTreeSet<String> = files.iter().map(|(_, b)| b.clone()).collect();
        let mut candidates: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut producer_count: HashMap<String, usize> = HashMap::new();
        for blake3 in &wanted {
            let runs = self.db.eligible_producers_of(blake3, rules)?;
            producer_count.insert(blake3.clone(), runs.len());
            for run in runs {
                candidates.entry(run).or_default().insert(blake3.clone());
            }
        }
        let mut found = Vec::new();
        for (run, matched) in candidates {
            let info = self.db.run(&run)?;
            let products = self.db.product_set(&run)?;
            let rule = classify(&wanted, &products, matched.len());
            if rule == MatchRule::Partial
                && !matched
                    .iter()
                    .any(|b| producer_count.get(b).copied() == Some(1))
            {
                continue;
            }
            let matched = MatchInfo {
                rule,
                matched_files: matched.len(),
                snapshot_files: wanted.len(),
                run_products: products.len(),
            };
            found.push((info.started_at.clone(), run, matched));
        }
        found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut producers = Vec::new();
        for (_, run, matched) in found {
            producers.push(Producer {
                matched,
                run: self.run(&run)?,
            });
        }
        Ok(producers)
    }
}

fn role_rank(role: &str) -> u8 {
    match role {
        "base" => 0,
        "adapter" => 1,
        "data" => 2,
        "config" => 3,
        "lockfile" => 4,
        _ => 5,
    }
}

// ---------------------------------------------------------------------------------------------
// affected

/// Every run and product that consumed the target, transitively (see the module docs).
pub fn affected(conn: &Connection, target: &Target) -> Result<Affected, LineageError> {
    let mut db = Db::new(conn);
    // run id -> generation (0: the target run itself, never listed)
    let mut generation_of: BTreeMap<String, u32> = BTreeMap::new();
    let mut vias: BTreeMap<String, ViaSet> = BTreeMap::new();

    let mut frontier: Vec<String> = Vec::new();
    match target.kind {
        TargetKind::Unknown => {}
        TargetKind::Run => {
            let id = target
                .run_id
                .clone()
                .ok_or_else(|| LineageError::NoMatch(target.given.clone()))?;
            generation_of.insert(id.clone(), 0);
            frontier.push(id);
        }
        TargetKind::File | TargetKind::Directory | TargetKind::Snapshot => {
            let explicit_file = target.kind == TargetKind::File;
            let mut direct = ViaMap::new();
            for file in &target.files {
                if !explicit_file && (file.size == Some(0) || is_signature_file(&file.path)) {
                    continue;
                }
                for (input, path) in db.consumers_of_file(&file.blake3)? {
                    direct.add(&input, Matched::File, &path, &file.blake3, None, None);
                }
            }
            if target.kind != TargetKind::File {
                if let Some(digest) = &target.blake3 {
                    for input in db.inputs_with(digest, &SNAPSHOT_KINDS)? {
                        direct.mark(&input, Matched::Snapshot);
                    }
                }
            }
            for (run, set) in direct.0 {
                generation_of.insert(run.clone(), 1);
                vias.insert(run.clone(), set);
                frontier.push(run);
            }
        }
    }

    let mut generation = generation_of.values().copied().max().unwrap_or(0);
    while !frontier.is_empty() {
        let mut next = ViaMap::new();
        for upstream in &frontier {
            let products = db.product_set(upstream)?;
            let mut groups: ConsumerGroups = BTreeMap::new();
            for blake3 in &products {
                for (input, path) in db.consumers_of_file(blake3)? {
                    let key = (input.run_id.clone(), input.role.clone(), input.name.clone());
                    groups
                        .entry(key)
                        .or_insert_with(|| (input.clone(), Vec::new()))
                        .1
                        .push((path, blake3.clone()));
                }
            }
            for (input, matched) in groups.into_values() {
                let consumer = input.run_id.clone();
                if generation_of.contains_key(&consumer) {
                    continue;
                }
                let consumer_info = db.run(&consumer)?;
                let snapshot = SNAPSHOT_KINDS
                    .contains(&input.kind.as_str())
                    .then_some(input.blake3.as_str());
                let rules = Eligibility::new(&mut db, Some(&consumer_info), snapshot)?;
                if !db.eligible(upstream, &rules)? {
                    continue;
                }
                let snapshot: BTreeSet<String> = db
                    .input_files(&input)?
                    .into_iter()
                    .map(|(_, b)| b)
                    .collect();
                let matched_digests: BTreeSet<String> = matched
                    .iter()
                    .map(|(_, b)| b.clone())
                    .filter(|b| snapshot.contains(b))
                    .collect();
                if matched_digests.is_empty() {
                    continue;
                }
                let rule = classify(&snapshot, &products, matched_digests.len());
                if rule == MatchRule::Partial {
                    let mut distinctive = false;
                    for digest in &matched_digests {
                        let producers = db.eligible_producers_of(digest, &rules)?;
                        if producers.iter().all(|r| generation_of.contains_key(r)) {
                            distinctive = true;
                            break;
                        }
                        let (names, size) = product_names(conn, digest)?;
                        let here = matched.iter().filter(|(_, b)| b == digest);
                        let names = names
                            .iter()
                            .map(String::as_str)
                            .chain(here.map(|(p, _)| p.as_str()));
                        if !is_shareable(names, size, None) {
                            distinctive = true;
                            break;
                        }
                    }
                    if !distinctive {
                        continue;
                    }
                }
                for (path, digest) in &matched {
                    if matched_digests.contains(digest) {
                        next.add(
                            &input,
                            Matched::Product,
                            path,
                            digest,
                            Some(upstream),
                            Some(rule),
                        );
                    }
                }
            }
        }
        generation += 1;
        frontier = Vec::new();
        for (run, set) in next.0 {
            generation_of.insert(run.clone(), generation);
            vias.insert(run.clone(), set);
            frontier.push(run);
        }
    }

    let mut runs = Vec::new();
    for (id, generation) in &generation_of {
        if *generation == 0 {
            continue;
        }
        let via = vias.remove(id).map(ViaSet::finish).unwrap_or_default();
        runs.push(AffectedRun {
            run: db.run(id)?,
            generation: *generation,
            via,
            rebuilt_by: db.rebuilt_by(id)?,
        });
    }
    runs.sort_by(|a, b| {
        (a.generation, &a.run.started_at, &a.run.id).cmp(&(
            b.generation,
            &b.run.started_at,
            &b.run.id,
        ))
    });
    let mut products = Vec::new();
    for run in &runs {
        for p in db.products(&run.run.id)? {
            products.push(AffectedProduct {
                run_id: run.run.id.clone(),
                generation: run.generation,
                name: p.name,
                path: p.path,
                sha256: p.sha256,
                blake3: p.blake3,
                size: p.size,
            });
        }
    }
    Ok(Affected {
        target: target.clone(),
        runs,
        products,
    })
}

/// Inputs holding products of one run, keyed by (consumer run, role, name), with the matching
/// `(path inside the input, product digest)` pairs.
type ConsumerGroups = BTreeMap<(String, String, String), (InputLink, Vec<(String, String)>)>;

/// The matching inputs of one run, keyed by (role, name, upstream run).
#[derive(Default)]
struct ViaSet(BTreeMap<(String, String, Option<String>), ViaBuilder>);

struct ViaBuilder {
    via: Via,
    digests: BTreeSet<String>,
    paths: BTreeSet<String>,
}

impl ViaSet {
    fn finish(self) -> Vec<Via> {
        let mut out: Vec<Via> = self
            .0
            .into_values()
            .map(|b| {
                let mut via = b.via;
                via.matched_files = b.digests.len();
                via.files = b.paths.into_iter().take(MAX_VIA_FILES).collect();
                via
            })
            .collect();
        out.sort_by_key(|v| (role_rank(&v.role), v.input.clone(), v.upstream_run.clone()));
        out
    }
}

struct ViaMap(BTreeMap<String, ViaSet>);

impl ViaMap {
    fn new() -> ViaMap {
        ViaMap(BTreeMap::new())
    }

    fn entry(
        &mut self,
        input: &InputLink,
        matched: Matched,
        upstream: Option<&str>,
    ) -> &mut ViaBuilder {
        let key = (
            input.role.clone(),
            input.name.clone(),
            upstream.map(str::to_string),
        );
        self.0
            .entry(input.run_id.clone())
            .or_default()
            .0
            .entry(key)
            .or_insert_with(|| ViaBuilder {
                via: Via {
                    role: input.role.trim_start_matches("input:").to_string(),
                    input: input.name.clone(),
                    input_path: input.path.clone(),
                    input_blake3: input.blake3.clone(),
                    matched,
                    matched_files: 0,
                    files: Vec::new(),
                    upstream_run: upstream.map(str::to_string),
                    rule: None,
                },
                digests: BTreeSet::new(),
                paths: BTreeSet::new(),
            })
    }

    fn add(
        &mut self,
        input: &InputLink,
        matched: Matched,
        path: &str,
        digest: &str,
        upstream: Option<&str>,
        rule: Option<MatchRule>,
    ) {
        let builder = self.entry(input, matched, upstream);
        builder.digests.insert(digest.to_string());
        if builder.paths.len() < MAX_VIA_FILES {
            builder.paths.insert(path.to_string());
        }
        if rule.is_some() {
            builder.via.rule = rule;
        }
    }

    /// The whole input is the target snapshot.
    fn mark(&mut self, input: &InputLink, matched: Matched) {
        let builder = self.entry(input, matched, None);
        builder.via.matched = builder.via.matched.min(matched);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classification_covers_the_four_rules() {
        let p = set(&["a", "b"]);
        assert_eq!(classify(&set(&["a", "b"]), &p, 2), MatchRule::Exact);
        assert_eq!(classify(&set(&["a", "b", "c"]), &p, 2), MatchRule::Contains);
        assert_eq!(classify(&set(&["a"]), &p, 1), MatchRule::Within);
        assert_eq!(classify(&set(&["a", "c"]), &p, 1), MatchRule::Partial);
    }

    /// Issue 11: the shared-file exemption covers small text files only; both sides of each
    /// bound (size, name, content).
    #[test]
    fn issue11_shareable_means_small_text_by_name_and_content() {
        let json = br#"{"r":8}"#.as_slice();
        assert!(is_shareable(["adapter_config.json"], Some(7), Some(json)));
        assert!(is_shareable(["a/README.MD", "notes.txt"], Some(7), None));
        assert!(is_shareable(
            ["c.json"],
            Some(SHAREABLE_MAX_BYTES - 1),
            None
        ));
        assert!(!is_shareable(["c.json"], Some(SHAREABLE_MAX_BYTES), None));
        assert!(!is_shareable(["c.json"], None, None), "size unknown");
        assert!(!is_shareable(Vec::<&str>::new(), Some(7), None), "no name");
        for weight in [
            "adapter.safetensors",
            "pytorch_model.bin",
            "m.pt",
            "m.gguf",
            "x.npy",
            "m.onnx",
            "LICENSE",
        ] {
            assert!(!is_shareable([weight], Some(7), None), "{weight}");
        }
        assert!(
            !is_shareable(["copy.json", "adapter.safetensors"], Some(7), None),
            "one weight name among the recorded names"
        );
        for magic in [
            b"\x08\x00\x00\x00\x00\x00\x00\x00{}".as_slice(),
            b"\x80\x04\x95".as_slice(),
            b"PK\x03\x04".as_slice(),
            b"GGUF\x03\x00\x00\x00".as_slice(),
            b"\x93NUMPY".as_slice(),
            b"\x89HDF\r\n".as_slice(),
        ] {
            assert!(
                !is_shareable(["config.json"], Some(magic.len() as u64), Some(magic)),
                "{magic:?}"
            );
        }
    }

    #[test]
    fn signature_files_and_empty_files_do_not_match() {
        let rows = vec![
            ("provenance.intoto.json".to_string(), 10, "x".to_string()),
            ("sub/model.sig".to_string(), 10, "y".to_string()),
            ("empty".to_string(), 0, "z".to_string()),
            ("adapter.bin".to_string(), 3, "w".to_string()),
        ];
        assert_eq!(
            matchable(rows),
            vec![("adapter.bin".to_string(), "w".to_string())]
        );
        assert!(not_later("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"));
        assert!(!not_later("2026-01-01T00:00:01Z", "2026-01-01T00:00:00Z"));
    }
}
