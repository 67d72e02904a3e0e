//! `trainprov attest`: sign a provenance Statement over product files that already exist.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use attest::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use attest::slsa::{
    BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails, PROVENANCE_V1,
};
use attest::statement::{ResourceDescriptor, Statement};
use recorder::atomic::write_atomic;
use recorder::file_digest::digest_files;
use recorder::model_tree::{walk, TreeOptions};
use serde_json::json;

use crate::cli::AttestArgs;
use crate::commands::{relative_to_root, shown};
use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// Default attestation file name.
pub const ATTESTATION_FILE: &str = "provenance.intoto.json";
/// buildType of statements made by `trainprov attest`.
pub const BUILD_TYPE: &str = "https://trainprov.dev/buildtypes/attest/v1";
/// builder.id of the trainprov CLI.
pub const BUILDER_ID: &str = "https://trainprov.dev/builder/cli";

/// Collects the subjects, builds the Statement and writes the signed envelope.
pub fn run(args: &AttestArgs) -> Result<Report, CliError> {
    let started = recorder::runner::now_rfc3339();
    let keys = crate::commands::signing_keys(&args.keys)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.paths[0]));
    let base = args
        .base
        .clone()
        .unwrap_or_else(|| crate::commands::parent_dir(&out));
    let files = collect_files(&args.paths, &base, &out)?;
    let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
    let mut subject = Vec::with_capacity(files.len());
    for ((name, path), digests) in files.iter().zip(digest_files(&paths)) {
        let digests =
            digests.map_err(|e| CliError::input(anyhow!("{}: cannot read: {e}", shown(path))))?;
        subject.push(ResourceDescriptor::named(
            name.clone(),
            digests.to_digest_set(),
        ));
    }
    subject.sort_by(|a, b| a.name.cmp(&b.name));
    let provenance = Provenance {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE.into(),
            external_parameters: json!({
                "paths": args.paths.iter().map(|p| shown(p)).collect::<Vec<_>>(),
                "base": shown(&base),
            }),
            internal_parameters: serde_json::Value::Null,
            resolved_dependencies: Vec::new(),
        },
        run_details: RunDetails {
            builder: Builder {
                id: BUILDER_ID.into(),
                builder_dependencies: Vec::new(),
                version: [(
                    "trainprov".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                )]
                .into(),
            },
            metadata: Some(BuildMetadata {
                invocation_id: Some(uuid::Uuid::new_v4().to_string()),
                started_on: Some(started),
                finished_on: Some(recorder::runner::now_rfc3339()),
            }),
            byproducts: Vec::new(),
        },
    };
    let statement = Statement::new(subject, PROVENANCE_V1, provenance);
    statement.check_subject_digests().or_input()?;
    let payload = statement.to_json().or_input()?;
    let key_refs: Vec<&attest::keys::SigningKey> = keys.iter().collect();
    let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, &key_refs);
    let mut bytes = envelope.to_json();
    bytes.push(b'\n');
    write_atomic(&out, &bytes)
        .map_err(|e| CliError::input(anyhow!("{}: cannot write attestation: {e}", shown(&out))))?;
    let keyids: Vec<String> = keys
        .iter()
        .map(|k| k.public_key().keyid().to_string())
        .collect();
    let human = format!(
        "attested {} file(s) -> {}\nkeyid {}\n",
        statement.subject.len(),
        shown(&out),
        keyids.join(", ")
    );
    let json = json!({"status": "ok", "attestation": out, "subjects": statement.subject, "keyids": keyids});
    Ok(Report::ok(human, json))
}

fn default_out(first: &Path) -> PathBuf {
    if first.is_dir() {
        first.join(ATTESTATION_FILE)
    } else {
        crate::commands::parent_dir(first).join(ATTESTATION_FILE)
    }
}

/// (subject name, path) for every file under `paths`, leaving out the attestation itself and
/// any `model.sig`.
fn collect_files(
    paths: &[PathBuf],
    base: &Path,
    out: &Path,
) -> Result<Vec<(String, PathBuf)>, CliError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut ignore = vec![attest::oms::SIGNATURE_FILE.to_string()];
            ignore.extend(relative_to_root(path, out));
            let walked = walk(
                path,
                &TreeOptions {
                    ignore,
                    ..TreeOptions::default()
                },
            )
            .or_input()?;
            for entry in walked.entries {
                files.push((
                    subject_name(base, &path.join(entry.relative.as_str()))?,
                    entry.path,
                ));
            }
        } else if path.is_file() {
            files.push((subject_name(base, path)?, path.clone()));
        } else {
            return Err(CliError::input(anyhow!(
                "{}: no such file or directory",
                shown(path)
            )));
        }
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    if files.is_empty() {
        return Err(CliError::input(anyhow!(
            "no files to attest under {}",
            paths
                .iter()
                .map(|p| shown(p))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(files)
}

fn subject_name(base: &Path, path: &Path) -> Result<String, CliError> {
    let absolute = std::path::absolute(path).or_input()?;
    let base_abs = std::path::absolute(base).or_input()?;
    let canonical_base = base_abs.canonicalize().unwrap_or(base_abs);
    let canonical = absolute
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .map(|p| p.join(absolute.file_name().unwrap_or_default()))
        .unwrap_or(absolute);
    canonical
        .strip_prefix(&canonical_base)
        .ok()
        .and_then(|r| r.to_str())
        .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
        .ok_or_else(|| {
            CliError::input(anyhow!(
                "{}: outside the --base directory {}",
                shown(path),
                shown(base)
            ))
        })
}
