//! `trainprov sign-model`: write an OpenSSF model signature (`model.sig`) for a directory.

use std::path::Path;
use std::time::Instant;

use anyhow::anyhow;
use attest::keyfile::load_signing_key;
use attest::keys::KeyAlgorithm;
use attest::oms::{ModelSignature, SIGNATURE_FILE};
use recorder::atomic::write_atomic;
use recorder::model_tree::{hash_model_dir, TreeOptions};
use serde_json::json;

use crate::cli::SignModelArgs;
use crate::commands::{human_bytes, relative_to_root, shown};
use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// Hashes the directory, signs the manifest and writes the bundle atomically.
pub fn run(args: &SignModelArgs) -> Result<Report, CliError> {
    let started = Instant::now();
    if !args.dir.is_dir() {
        return Err(CliError::input(anyhow!(
            "{}: not a directory (expected the model directory to sign)",
            shown(&args.dir)
        )));
    }
    let key = load_signing_key(&args.key).or_input()?;
    if key.algorithm() == KeyAlgorithm::Ed25519 {
        eprintln!(
            "trainprov: note: Ed25519 signature; `model_signing verify key` accepts EC keys only"
        );
    }
    let signature_path = args
        .signature
        .clone()
        .unwrap_or_else(|| args.dir.join(SIGNATURE_FILE));
    let options = tree_options(&args.dir, &signature_path, &args.ignore, !args.include_git);
    let manifest = hash_model_dir(&args.dir, &options).or_input()?;
    if manifest.files.is_empty() {
        return Err(CliError::input(anyhow!(
            "{}: no files to sign",
            shown(&args.dir)
        )));
    }
    let total: u64 = manifest_size(&args.dir, &manifest);
    let signature = ModelSignature::sign(&manifest, &key).or_input()?;
    write_atomic(&signature_path, &signature.to_json()).map_err(|e| {
        CliError::input(anyhow!(
            "{}: cannot write signature: {e}",
            shown(&signature_path)
        ))
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let root = manifest.root_digest();
    let keyid = key.public_key().keyid().to_string();
    let human = format!(
        "signed {} files ({}) in {} -> {}\nroot sha256 {root}\nkeyid {keyid} ({:.2}s)\n",
        manifest.files.len(),
        human_bytes(total),
        shown(&args.dir),
        shown(&signature_path),
        elapsed
    );
    let json = json!({
        "status": "ok",
        "model_dir": args.dir,
        "signature": signature_path,
        "files": manifest.files.len(),
        "bytes": total,
        "root_digest": {"sha256": root},
        "keyid": keyid,
        "ignore_paths": manifest.ignore_paths,
        "seconds": elapsed,
    });
    Ok(Report::ok(human, json))
}

/// The walk options for a model directory: the signature file and `--ignore` paths left out.
pub fn tree_options(
    dir: &Path,
    signature: &Path,
    ignore: &[std::path::PathBuf],
    ignore_git: bool,
) -> TreeOptions {
    let mut paths: Vec<String> = ignore
        .iter()
        .filter_map(|p| relative_to_root(dir, p))
        .collect();
    if let Some(rel) = relative_to_root(dir, signature) {
        paths.push(rel);
    }
    TreeOptions {
        ignore: paths,
        ignore_git,
        ..TreeOptions::default()
    }
}

fn manifest_size(dir: &Path, manifest: &attest::oms::ModelManifest) -> u64 {
    manifest
        .files
        .keys()
        .filter_map(|p| std::fs::metadata(dir.join(p.as_str())).ok())
        .map(|m| m.len())
        .sum()
}
