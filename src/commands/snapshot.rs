//! `trainprov snapshot`: print a data snapshot's digest and manifest summary.
//!
//! Human output:
//!
//! ```text
//! snapshot of data/: 20004 files, 1.0 GiB
//! blake3 5c1c…e9a0
//! sha256 0f7d…51c2
//! hashed 3 files, 20001 from cache, in 0.041s (24.51 GB/s)
//! ```
//!
//! `--json` prints one object (here with `--manifest data.manifest`):
//!
//! ```json
//! {
//!   "status": "ok",
//!   "root": "data/",
//!   "kind": "directory",
//!   "digest": { "blake3": "5c1c…e9a0", "sha256": "0f7d…51c2" },
//!   "files": 20004,
//!   "bytes": 1073741824,
//!   "hashed": 3,
//!   "from_cache": 20001,
//!   "seconds": 0.041,
//!   "cache": "/home/me/.cache/trainprov/hash-cache.sqlite",
//!   "manifest": "data.manifest"
//! }
//! ```
//!
//! `kind` is `file` when the path is a single file: then the snapshot holds that one file,
//! named by its file name. `manifest` is `null` without `--manifest`. `cache` is the per-user
//! hash cache ([`recorder::hash_cache::default_path`]; `null` when there is none). Symlinks are
//! recorded by the content they resolve to (manifest version 2, see [`recorder::snapshot`]).

use anyhow::anyhow;
use recorder::atomic::write_atomic;
use recorder::hash_cache::default_path;
use recorder::snapshot::{snapshot, snapshot_file, SnapshotOptions};
use serde_json::json;

use crate::cli::SnapshotArgs;
use crate::commands::{human_bytes, shown};
use crate::exit::CliError;
use crate::Report;

/// Snapshots `args.dir` (a directory, or a single file), optionally writing the manifest.
pub fn run(args: &SnapshotArgs) -> Result<Report, CliError> {
    let meta = std::fs::metadata(&args.dir).map_err(|e| {
        CliError::input(anyhow!(
            "{}: {} (expected a data directory or file)",
            shown(&args.dir),
            io_reason(&e)
        ))
    })?;
    let cache = default_path();
    let options = SnapshotOptions {
        rehash: args.rehash,
        cache: cache.clone(),
        progress: true,
    };
    let is_dir = meta.is_dir();
    let snap = if is_dir {
        snapshot(&args.dir, &options)
    } else {
        snapshot_file(&args.dir, &options)
    }
    .map_err(CliError::input)?;
    let manifest = snap.manifest_bytes();
    if let Some(path) = &args.manifest {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        parent
            .map_or(Ok(()), fs_err::create_dir_all)
            .and_then(|()| write_atomic(path, &manifest))
            .map_err(|e| {
                CliError::input(anyhow!("{}: cannot write the manifest: {e}", shown(path)))
            })?;
    }
    let digests = snap.digest_set();
    let blake3 = digests.get("blake3").cloned().unwrap_or_default();
    let sha256 = digests.get("sha256").cloned().unwrap_or_default();
    let stats = &snap.stats;
    let rate = if stats.seconds > 0.0 {
        stats.bytes as f64 / stats.seconds / 1e9
    } else {
        0.0
    };
    let mut human = format!(
        "snapshot of {}: {} {}, {}\nblake3 {blake3}\nsha256 {sha256}\n\
         hashed {} {}, {} from cache, in {:.3}s ({rate:.2} GB/s)\n",
        shown(&args.dir),
        stats.files,
        if stats.files == 1 { "file" } else { "files" },
        human_bytes(stats.bytes),
        stats.hashed,
        if stats.hashed == 1 { "file" } else { "files" },
        stats.from_cache,
        stats.seconds,
    );
    if let Some(path) = &args.manifest {
        human.push_str(&format!("manifest written to {}\n", shown(path)));
    }
    let json = json!({
        "status": "ok",
        "root": args.dir,
        "kind": if is_dir { "directory" } else { "file" },
        "digest": {"blake3": blake3, "sha256": sha256},
        "files": stats.files,
        "bytes": stats.bytes,
        "hashed": stats.hashed,
        "from_cache": stats.from_cache,
        "seconds": stats.seconds,
        "cache": cache,
        "manifest": args.manifest,
    });
    Ok(Report::ok(human, json))
}

/// The OS reason without the `(os error N)` suffix.
fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => error.to_string(),
    }
}
