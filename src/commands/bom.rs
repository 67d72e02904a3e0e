//! `trainprov bom`: an AI bill of materials (CycloneDX 1.6 or SPDX 3.0.1) for a recorded run.
//!
//! Order, as in `verify`: find the attestation (a file, or the one a registry run recorded,
//! checked against the SHA-256 kept in the registry), check its signature with the trusted keys,
//! only then read the Statement. Then the registry's object store lends each input's snapshot
//! manifest (its files), and a base model's `config.json` on disk, when its BLAKE3 is the one in
//! that manifest, lends the architecture. The `bom` crate turns all that into the document.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use attest::dsse::{decode_base64, Envelope, IN_TOTO_PAYLOAD_TYPE};
use attest::slsa::{Provenance, PROVENANCE_V1};
use attest::statement::{digest_set_of, Statement};
use bom::{FileDigests, ModelConfig, Role, Source, Training};
use recorder::objects::ObjectStore;
use recorder::registry::{Registry, DATABASE_FILE};
use recorder::snapshot::DataSnapshot;
use serde_json::json;

use crate::cli::{BomArgs, BomFormat};
use crate::commands::shown;
use crate::exit::{CliError, OrFailed as _, OrInput as _};
use crate::Report;

/// Largest attestation read (as `verify`).
const MAX_ATTESTATION: u64 = 256 * 1024 * 1024;

/// Largest `config.json` read for the architecture.
const MAX_CONFIG: u64 = 4 * 1024 * 1024;

/// Builds the document and prints or writes it.
pub fn run(args: &BomArgs) -> Result<Report, CliError> {
    if args.keys.is_empty() && !args.unverified {
        return Err(CliError::input(anyhow!(
            "--key PUB is required: a bill of materials is built from a verified attestation \
             (pass --unverified to build one from an unchecked statement anyway)"
        )));
    }
    let cwd = std::env::current_dir().or_input()?;
    let registry_dir = recorder::paths::registry_dir(args.registry.as_deref(), &cwd);
    let (path, bytes) = read_attestation(&args.target, &registry_dir)?;
    let name = shown(&path);
    let (statement, statement_sha256, signed_by) = open_statement(args, &name, &bytes)?;
    let training = Training::from_statement(&statement)
        .map_err(|e| CliError::failed(anyhow!("{name}: {e}")))?;
    let objects = ObjectStore::new(registry_dir.join("objects"));
    let manifests = manifests(&training, &objects);
    let model_configs = model_configs(&training, &manifests);
    let source = Source {
        training,
        statement_sha256,
        signed_by,
        manifests,
        model_configs,
    };
    let (document, label) = match args.format {
        BomFormat::Cyclonedx => (bom::cyclonedx(&source), "CycloneDX 1.6"),
        BomFormat::Spdx => (bom::spdx(&source), "SPDX 3.0.1"),
    };
    let mut text = serde_json::to_string_pretty(&document).or_input()?;
    text.push('\n');
    let Some(out) = &args.out else {
        return Ok(Report::ok(text, document));
    };
    recorder::atomic::write_atomic(out, text.as_bytes())
        .map_err(|e| CliError::input(anyhow!("{}: cannot write: {e}", shown(out))))?;
    let count = |role: Role| {
        source
            .training
            .inputs
            .iter()
            .filter(|i| i.role == role)
            .count()
    };
    let human = format!(
        "wrote {}: {label} bill of materials of {} ({} product file(s), {} dataset(s), {} base model(s), {} adapter(s))\n",
        shown(out),
        source.training.name,
        source.training.products.len(),
        count(Role::Data),
        count(Role::Base),
        count(Role::Adapter),
    );
    Ok(Report::ok(human, json!({"status": "written", "out": out})))
}

/// The attestation's path and bytes: `target` as a file, else as a run id in the registry.
fn read_attestation(target: &str, registry_dir: &Path) -> Result<(PathBuf, Vec<u8>), CliError> {
    let as_path = PathBuf::from(target);
    if as_path.is_file() {
        return Ok((as_path.clone(), read_bounded(&as_path)?));
    }
    if as_path.exists() {
        return Err(CliError::input(anyhow!(
            "{target}: is a directory; pass its provenance.intoto.json or a run id"
        )));
    }
    if !registry_dir.join(DATABASE_FILE).is_file() {
        return Err(CliError::input(anyhow!(
            "{target}: no such file, and no registry at {} to look it up as a run id",
            shown(registry_dir)
        )));
    }
    let registry = Registry::open(registry_dir).or_input()?;
    let run = registry.show_run(target).or_input()?;
    let id = &run.summary.id;
    let (Some(path), Some(recorded)) = (&run.summary.attestation_path, &run.attestation_sha256)
    else {
        return Err(CliError::input(anyhow!(
            "run {id} has no attestation (status {})",
            run.summary.status
        )));
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(CliError::input(anyhow!(
            "run {id}: its attestation {} is gone",
            shown(&path)
        )));
    }
    let bytes = read_bounded(&path)?;
    let actual = digest_set_of(&bytes).remove("sha256").unwrap_or_default();
    if &actual != recorded {
        return Err(CliError::failed(anyhow!(
            "run {id}: {} changed since the run was recorded (sha256 recorded {recorded}, now {actual})",
            shown(&path)
        )));
    }
    Ok((path, bytes))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, CliError> {
    let size = fs_err::metadata(path).or_input()?.len();
    if size > MAX_ATTESTATION {
        return Err(CliError::input(anyhow!(
            "{}: {size} bytes is too large for an attestation",
            shown(path)
        )));
    }
    fs_err::read(path).or_input()
}

/// The Statement, the SHA-256 of its bytes, and the keyids that signed it (none when
/// `--unverified`).
fn open_statement(
    args: &BomArgs,
    name: &str,
    bytes: &[u8],
) -> Result<(Statement<Provenance>, String, Vec<String>), CliError> {
    let envelope = Envelope::from_json(bytes)
        .map_err(|e| CliError::failed(anyhow!("{name}: not a DSSE envelope ({e})")))?;
    if args.keys.is_empty() {
        eprintln!(
            "trainprov: warning: {name}: signature NOT verified (--unverified); the bill of \
             materials says so, and describes whatever the file claims"
        );
        if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(CliError::failed(anyhow!(
                "{name}: payloadType is '{}', expected '{IN_TOTO_PAYLOAD_TYPE}'",
                envelope.payload_type
            )));
        }
        let payload = decode_base64(&envelope.payload, "payload").or_failed()?;
        let statement: Statement<Provenance> = serde_json::from_slice(&payload)
            .map_err(|e| CliError::failed(anyhow!("{name}: not a provenance statement ({e})")))?;
        return Ok((statement, sha256_hex(&payload), Vec::new()));
    }
    let keys = crate::commands::trusted_keys(&args.keys, args.threshold)?;
    let payload = envelope
        .verify(IN_TOTO_PAYLOAD_TYPE, &keys, args.threshold)
        .map_err(|e| CliError::failed(anyhow!("{name}: {e}")))?;
    let sha256 = sha256_hex(payload.payload());
    let verified = Statement::<Provenance>::from_verified(payload, Some(PROVENANCE_V1))
        .map_err(|e| CliError::failed(anyhow!("{name}: {e}")))?;
    let signed_by = verified.signed_by().to_vec();
    Ok((verified.into_inner(), sha256, signed_by))
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest_set_of(bytes).remove("sha256").unwrap_or_default()
}

/// Each input's manifest from the object store (keyed by the snapshot digest, the BLAKE3 of the
/// manifest); inputs whose manifest is absent or unreadable are named on stderr.
fn manifests(training: &Training, objects: &ObjectStore) -> BTreeMap<String, Vec<FileDigests>> {
    let mut found = BTreeMap::new();
    for input in &training.inputs {
        let parsed = objects
            .get(&input.blake3)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                DataSnapshot::from_manifest_bytes(PathBuf::from(&input.path), &bytes)
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(snapshot) => {
                let files = snapshot
                    .entries
                    .into_iter()
                    .map(|e| FileDigests {
                        name: e.path,
                        sha256: None,
                        blake3: e.blake3,
                        size: Some(e.size),
                    })
                    .collect();
                found.insert(input.blake3.clone(), files);
            }
            Err(e) => eprintln!(
                "trainprov: note: {}: files not listed, its manifest is not in the registry ({e})",
                input.dependency
            ),
        }
    }
    found
}

/// The architecture of each base model or adapter whose `config.json` is still on disk at the
/// recorded path with the BLAKE3 its manifest recorded.
fn model_configs(
    training: &Training,
    manifests: &BTreeMap<String, Vec<FileDigests>>,
) -> BTreeMap<String, ModelConfig> {
    let mut configs = BTreeMap::new();
    for input in training.inputs.iter().filter(|i| i.role != Role::Data) {
        let recorded = manifests
            .get(&input.blake3)
            .and_then(|files| files.iter().find(|f| f.name == "config.json"));
        let root = input
            .uri
            .as_deref()
            .and_then(recorder::redact::recorded_path);
        let (Some(recorded), Some(root)) = (recorded, root) else {
            continue;
        };
        let path = root.join("config.json");
        let same = recorded.size.is_some_and(|s| s <= MAX_CONFIG)
            && recorder::file_digest::blake3_file(&path).ok().as_ref() == Some(&recorded.blake3);
        let config = same
            .then(|| fs_err::read(&path).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .and_then(|v| ModelConfig::from_config_json(&v));
        if let Some(config) = config {
            configs.insert(input.dependency.clone(), config);
        }
    }
    configs
}
