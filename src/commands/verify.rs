//! `trainprov verify`: check a DSSE attestation or an OpenSSF model signature.
//!
//! Order of checks (never parse what is not yet authenticated): read and size-check the file,
//! detect its kind, check the signature against the trusted keys, only then read the Statement,
//! and finally compare real files with what it says.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use attest::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use attest::keys::PublicKey;
use attest::oms::{ModelPath, ModelSignature, GIT_PATHS};
use attest::statement::{DigestMismatch, ResourceDescriptor, Statement};
use attest::Verified;
use recorder::file_digest::digest_file;
use recorder::model_tree::{hash_model_dir, walk, TreeOptions};
use serde_json::{json, Value};

use crate::cli::VerifyArgs;
use crate::commands::policy::{self, hex_sha256, LoadedPolicy};
use crate::commands::{relative_to_root, shown};
use crate::exit::{CliError, OrFailed as _, OrInput as _};
use crate::Report;

/// Largest attestation or bundle we read (16 MiB, `attest::dsse::MAX_ENVELOPE_BYTES`): a
/// signature over 20,000 files is about 3 MiB. Nothing bigger is parsed.
const MAX_DOCUMENT: u64 = attest::dsse::MAX_ENVELOPE_BYTES;

/// Verifies `args.file` and reports what was checked.
pub fn run(args: &VerifyArgs) -> Result<Report, CliError> {
    let policy = args.policy.as_deref().map(LoadedPolicy::load).transpose()?;
    let mut keys = crate::commands::public_keys(&args.keys)?;
    let mut threshold = args.threshold;
    if let Some(loaded) = &policy {
        keys.extend(loaded.signer_keys.iter().cloned());
        threshold = threshold.max(loaded.policy.signers.threshold);
    }
    let mut seen = std::collections::BTreeSet::new();
    keys.retain(|k| seen.insert(k.keyid().to_string()));
    if keys.is_empty() {
        return Err(CliError::input(anyhow!(
            "no trusted keys: pass --key or list [signers] keys in the policy"
        )));
    }
    if threshold == 0 || threshold > keys.len() {
        return Err(CliError::input(anyhow!(
            "threshold {threshold} cannot be met with {} trusted key(s)",
            keys.len()
        )));
    }
    let bytes = read_document(&args.file)?;
    let name = shown(&args.file);
    let registry =
        policy::RegistryUse::find(args.registry.as_deref(), args.no_registry, policy.is_some())?;
    let document: Value = serde_json::from_slice(&bytes)
        .map_err(|e| CliError::input(anyhow!("{name}: not JSON ({e})")))?;
    if !document.is_object() {
        return Err(CliError::input(anyhow!("{name}: expected a JSON object")));
    }
    if document.get("dsseEnvelope").is_some() || document.get("mediaType").is_some() {
        if policy.is_some() {
            return Err(CliError::input(anyhow!(
                "--policy applies to attestations (*.intoto.json); {name} is a model signature"
            )));
        }
        if threshold > 1 {
            return Err(CliError::input(anyhow!(
                "{name}: an OpenSSF model signature carries exactly one signature, so --threshold \
                 {threshold} cannot be met; require co-signers on the attestation instead \
                 (trainprov verify provenance.intoto.json --threshold {threshold})"
            )));
        }
        verify_model_signature(args, &keys, document, &registry)
    } else if document.get("payloadType").is_some() || document.get("signatures").is_some() {
        let gate = Gate {
            threshold,
            policy: policy.as_ref(),
            sha256: hex_sha256(&bytes),
            registry: &registry,
        };
        verify_attestation(args, &keys, document, &gate)
    } else {
        Err(CliError::input(anyhow!(
            "{}: neither a DSSE envelope (no payloadType) nor a Sigstore bundle (no mediaType)",
            shown(&args.file)
        )))
    }
}

/// What an attestation is checked against beyond its files.
struct Gate<'a> {
    threshold: usize,
    policy: Option<&'a LoadedPolicy>,
    /// SHA-256 of the attestation file (approvals name it).
    sha256: String,
    /// Where revocations and recorded approvals come from.
    registry: &'a policy::RegistryUse,
}

/// Reads a document after checking its size (shared with `approve`).
pub fn read_document(path: &Path) -> Result<Vec<u8>, CliError> {
    let name = shown(path);
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::input(anyhow!("{name}: cannot read: {e}")))?;
    if meta.is_dir() {
        return Err(CliError::input(anyhow!(
            "{name}: is a directory; pass the model.sig or *.intoto.json file"
        )));
    }
    if meta.len() == 0 {
        return Err(CliError::input(anyhow!("{name}: file is empty")));
    }
    if meta.len() > MAX_DOCUMENT {
        return Err(CliError::input(anyhow!(
            "{name}: {} bytes is more than the {MAX_DOCUMENT} bytes (16 MiB) an attestation or \
             model signature may have; is this the right file?",
            meta.len()
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|e| CliError::input(anyhow!("{name}: cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(CliError::input(anyhow!(
            "{name}: grew past {MAX_DOCUMENT} bytes while being read"
        )));
    }
    Ok(bytes)
}

fn verify_model_signature(
    args: &VerifyArgs,
    keys: &[PublicKey],
    document: Value,
    registry: &policy::RegistryUse,
) -> Result<Report, CliError> {
    let name = shown(&args.file);
    if !args.artifacts.is_empty() {
        return Err(CliError::input(anyhow!(
            "--artifact applies to attestations; a model signature is checked against the whole --model-dir"
        )));
    }
    let signature: ModelSignature = serde_json::from_value(document).map_err(|e| {
        CliError::failed(anyhow!(
            "{name}: not an OpenSSF model signature bundle ({e})"
        ))
    })?;
    let verified = signature
        .verify(keys)
        .map_err(|e| CliError::failed(anyhow!("{name}: {e}")))?;
    let model_dir = args
        .model_dir
        .clone()
        .unwrap_or_else(|| crate::commands::parent_dir(&args.file));
    if !model_dir.is_dir() {
        return Err(CliError::input(anyhow!(
            "{}: not a directory (the model to check)",
            shown(&model_dir)
        )));
    }
    let mut ignore: Vec<String> = verified.ignore_paths.clone();
    ignore.extend(relative_to_root(&model_dir, &args.file));
    ignore.extend(
        args.ignore
            .iter()
            .filter_map(|p| relative_to_root(&model_dir, p)),
    );
    let options = TreeOptions {
        ignore,
        ignore_git: true,
        hash: verified.hash_type,
    };
    let actual = hash_model_dir(&model_dir, &options).or_input()?;
    let diff = verified.diff(&actual);
    let summary = json!({
        "kind": "model-signature",
        "file": args.file,
        "model_dir": model_dir,
        "signed_by": verified.signed_by(),
        "files": verified.files.len(),
        "root_digest": {"sha256": verified.root_digest()},
        "registry": registry.to_json(),
    });
    if !diff.is_empty() {
        let mut detail = summary;
        detail["diff"] = json!(diff);
        return Err(CliError::failed(anyhow!(
            "{}: does not match {name}: {diff}",
            shown(&model_dir)
        ))
        .with_detail(detail));
    }
    let revoked = model_revocations(registry, &verified, &model_dir)?;
    if !revoked.is_empty() {
        return Err(policy::failure(&name, &revoked, summary));
    }
    let mut human = format!(
        "OK {name}: model signature by keyid {}\n   {} files in {} match (root sha256 {})\n",
        verified.signed_by().join(", "),
        verified.files.len(),
        shown(&model_dir),
        verified.root_digest()
    );
    human.push_str(&registry.line());
    let mut json = summary;
    json["status"] = json!("verified");
    Ok(Report::ok(human, json))
}

fn verify_attestation(
    args: &VerifyArgs,
    keys: &[PublicKey],
    document: Value,
    gate: &Gate<'_>,
) -> Result<Report, CliError> {
    let name = shown(&args.file);
    let envelope: Envelope = serde_json::from_value(document)
        .map_err(|e| CliError::failed(anyhow!("{name}: not a DSSE envelope ({e})")))?;
    let payload = envelope
        .verify(IN_TOTO_PAYLOAD_TYPE, keys, gate.threshold)
        .map_err(|e| CliError::failed(anyhow!("{name}: {e}")))?;
    let expected = match (&args.predicate_type, args.any_predicate) {
        (_, true) => None,
        (Some(uri), false) => Some(uri.as_str()),
        (None, false) => Some(attest::slsa::PROVENANCE_V1),
    };
    let statement = Statement::<Value>::from_verified(payload, expected).map_err(|e| {
        CliError::failed(anyhow!(
            "{name}: {e}{}",
            if matches!(e, attest::StatementError::PredicateType { .. }) {
                " (not a provenance attestation; pass --predicate-type URI or --any-predicate to accept it)"
            } else {
                ""
            }
        ))
    })?;
    let mut approval_keys = keys.to_vec();
    if let Some(loaded) = gate.policy {
        for env in loaded.policy.environments.keys() {
            match loaded.approver_keys(env) {
                Ok(found) => approval_keys.extend(found),
                // Only recognises approval files beside the attestation: an unreadable approver
                // key of another environment does not concern this gate (the selected
                // environment's keys are required).
                Err(_) if args.env.as_deref() != Some(env.as_str()) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let checked = check_files(args, &approval_keys, &statement, &gate.sha256)?;
    let failures: Vec<&ArtifactCheck> = checked.iter().filter(|c| c.problem.is_some()).collect();
    let (mut violations, tally) = gate_violations(args, gate, &statement)?;
    let mut summary = json!({
        "kind": "dsse",
        "file": args.file,
        "sha256": gate.sha256,
        "signed_by": statement.signed_by(),
        "threshold": gate.threshold,
        "predicate_type": statement.predicate_type,
        "subjects": statement.subject,
        "artifacts": checked.iter().map(ArtifactCheck::to_json).collect::<Vec<_>>(),
        "registry": gate.registry.to_json(),
    });
    if args.inputs {
        summary["inputs_hashing"] = json!(InputsHashing::of(args).name());
    }
    if let Some(loaded) = gate.policy {
        summary["policy"] = json!({
            "file": loaded.path,
            "sha256": loaded.sha256,
            "environment": args.env,
            "approvals": tally.as_ref().map(|t| json!({"accepted": t.accepted, "ignored": t.ignored})),
        });
    }
    if !violations.is_empty() {
        violations.extend(failures.iter().map(|c| {
            attest::policy::Violation::new(
                "artifact",
                format!("{} matches the statement", c.path),
                c.problem.clone().unwrap_or_default(),
            )
        }));
        return Err(policy::failure(&name, &violations, summary));
    }
    if !failures.is_empty() {
        let lines: Vec<String> = failures
            .iter()
            .map(|c| format!("{}: {}", c.path, c.problem.clone().unwrap_or_default()))
            .collect();
        return Err(CliError::failed(anyhow!("{name}: {}", lines.join("; "))).with_detail(summary));
    }
    let mut human = verified_text(
        &name,
        keys.len(),
        &statement,
        &checked,
        gate,
        tally.as_ref(),
    );
    if args.inputs {
        human.push_str(&format!(
            "   inputs: {}\n",
            InputsHashing::of(args).describe()
        ));
    }
    summary["status"] = json!("verified");
    Ok(Report::ok(human, summary))
}

/// `--artifact`, `--model-dir` and `--inputs`: real files against the statement, each once.
fn check_files(
    args: &VerifyArgs,
    keys: &[PublicKey],
    statement: &Verified<Statement<Value>>,
    attestation_sha256: &str,
) -> Result<Vec<ArtifactCheck>, CliError> {
    let base = crate::commands::parent_dir(&args.file);
    let mut checked = Vec::new();
    for artifact in &args.artifacts {
        checked.push(check_artifact(&statement.subject, &base, artifact)?);
    }
    if let Some(dir) = &args.model_dir {
        checked.extend(
            check_directory(
                &statement.subject,
                dir,
                &args.file,
                attestation_sha256,
                keys,
                &args.ignore,
            )
            .or_failed()?,
        );
    }
    if args.inputs {
        checked.extend(check_inputs(
            &statement.predicate,
            args.registry.as_deref(),
            InputsHashing::of(args),
        )?);
    }
    let mut seen = std::collections::BTreeSet::new();
    checked.retain(|c| seen.insert((c.path.clone(), c.subject.clone())));
    Ok(checked)
}

/// The policy's failed rules (with `--env`, the approvals too), or without a policy the
/// revocations the registry knows of upstream of this statement.
fn gate_violations(
    args: &VerifyArgs,
    gate: &Gate<'_>,
    statement: &Verified<Statement<Value>>,
) -> Result<
    (
        Vec<attest::policy::Violation>,
        Option<attest::policy::ApprovalTally>,
    ),
    CliError,
> {
    let registry = gate.registry.get();
    let Some(loaded) = gate.policy else {
        return Ok((policy::revocations(statement, registry)?.0, None));
    };
    let tally = match &args.env {
        Some(env) => Some(policy::tally_approvals(
            loaded,
            env,
            statement,
            &gate.sha256,
            registry,
            &args.approvals,
        )?),
        None => None,
    };
    let violations = policy::evaluate(loaded, statement, registry, tally.as_ref())?;
    Ok((violations, tally))
}

/// The human report of a verified attestation.
fn verified_text(
    name: &str,
    trusted: usize,
    statement: &Verified<Statement<Value>>,
    checked: &[ArtifactCheck],
    gate: &Gate<'_>,
    tally: Option<&attest::policy::ApprovalTally>,
) -> String {
    let mut human = format!(
        "OK {name}: signed by {} of {trusted} trusted key(s) ({})\n   {} subject(s), predicate {}\n",
        statement.signed_by().len(),
        statement.signed_by().join(", "),
        statement.subject.len(),
        statement.predicate_type
    );
    for check in checked {
        human.push_str(&format!(
            "   {} matches subject {}\n",
            check.path,
            check.subject.clone().unwrap_or_default()
        ));
    }
    if let Some(loaded) = gate.policy {
        human.push_str(&format!(
            "   policy {}: every rule met\n",
            shown(&loaded.path)
        ));
    }
    human.push_str(&gate.registry.line());
    if let Some(tally) = tally {
        human.push_str(&format!(
            "   approvals for {}: keyid {}\n",
            tally.environment,
            if tally.accepted.is_empty() {
                "none needed".to_string()
            } else {
                tally.accepted.join(", ")
            }
        ));
        for ignored in &tally.ignored {
            human.push_str(&format!("   ignored {ignored}\n"));
        }
    }
    human
}

/// Revocations the registry (when there is one) knows upstream of the signed files: a file
/// itself revoked, or one a recorded run produced from revoked content.
fn model_revocations(
    registry: &policy::RegistryUse,
    verified: &attest::oms::ModelManifest,
    model_dir: &Path,
) -> Result<Vec<attest::policy::Violation>, CliError> {
    let Some(registry) = registry.get() else {
        return Ok(Vec::new());
    };
    let files: Vec<recorder::revocation::SignedFile<'_>> = verified
        .files
        .iter()
        .map(|(path, digest)| recorder::revocation::SignedFile {
            name: path.as_str(),
            algorithm: verified.hash_type.name(),
            digest,
            on_disk: Some(model_dir.join(path.as_str())),
        })
        .collect();
    let found = recorder::revocation::revoked_ancestry_of_files(registry, &files).or_input()?;
    Ok(found
        .iter()
        .map(|a| {
            attest::policy::Violation::new("revocation", "no revoked artifact upstream", a.line())
        })
        .collect())
}

/// The outcome of comparing one file with the statement.
struct ArtifactCheck {
    path: String,
    subject: Option<String>,
    problem: Option<String>,
}

impl ArtifactCheck {
    fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "subject": self.subject,
            "status": if self.problem.is_some() { "failed" } else { "match" },
            "problem": self.problem,
        })
    }
}

/// Names under which `artifact` may appear among the subjects, most specific first: its path
/// relative to the attestation's directory, the path as given, then its file name.
fn candidate_names(base: &Path, artifact: &Path) -> Vec<String> {
    let mut names = Vec::new();
    names.extend(relative_to_root(base, artifact).filter(|r| !r.starts_with("..")));
    names.extend(
        artifact
            .to_str()
            .map(|s| s.trim_start_matches("./").to_string()),
    );
    names.extend(
        artifact
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string),
    );
    names.dedup();
    names
}

fn check_artifact(
    subjects: &[ResourceDescriptor],
    base: &Path,
    artifact: &Path,
) -> Result<ArtifactCheck, CliError> {
    let shown_path = shown(artifact);
    if !artifact.is_file() {
        return Err(CliError::input(anyhow!(
            "{shown_path}: not a file (--artifact takes product files)"
        )));
    }
    let digests = digest_file(artifact)
        .map_err(|e| CliError::input(anyhow!("{shown_path}: cannot read: {e}")))?;
    let names = candidate_names(base, artifact);
    let subject = names.iter().find_map(|n| {
        subjects
            .iter()
            .find(|s| s.name.as_deref() == Some(n.as_str()))
    });
    let Some(subject) = subject else {
        let by_digest = subjects
            .iter()
            .find(|s| s.digest_mismatches(&digests.to_digest_set()).is_ok());
        let problem = match by_digest.and_then(|s| s.name.clone()) {
            Some(other) => format!(
                "not a subject under this name (its content is subject '{other}': renamed?)"
            ),
            None => "not a subject of this statement".to_string(),
        };
        return Ok(ArtifactCheck {
            path: shown_path,
            subject: None,
            problem: Some(problem),
        });
    };
    let problem = describe_mismatch(subject.digest_mismatches(&digests.to_digest_set()));
    Ok(ArtifactCheck {
        path: shown_path,
        subject: subject.name.clone(),
        problem,
    })
}

fn describe_mismatch(result: Result<(), DigestMismatch>) -> Option<String> {
    match result {
        Ok(()) => None,
        Err(DigestMismatch::NoSharedAlgorithm { recorded }) => Some(format!(
            "recorded digests use {} only; trainprov computes sha256 and blake3",
            recorded.join(", ")
        )),
        Err(DigestMismatch::Differs(list)) => Some(format!(
            "content changed ({})",
            list.iter()
                .map(|d| format!("{} recorded {} got {}", d.algorithm, d.expected, d.actual))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Compares every subject with `dir/name`, and flags files in `dir` that no subject names.
///
/// A subject name is confined to `dir` by its text: an absolute name, one with `..`, `.` or
/// empty components, or a backslash is reported and never opened (so a signed
/// `/etc/hostname` cannot make verification read outside the directory). Symlinks inside the
/// directory are followed like any model file.
fn check_directory(
    subjects: &[ResourceDescriptor],
    dir: &Path,
    attestation: &Path,
    attestation_sha256: &str,
    approvers: &[PublicKey],
    ignored: &[PathBuf],
) -> anyhow::Result<Vec<ArtifactCheck>> {
    let mut ignore: Vec<String> = vec![attest::oms::SIGNATURE_FILE.to_string()];
    ignore.extend(relative_to_root(dir, attestation));
    ignore.extend(ignored.iter().filter_map(|p| relative_to_root(dir, p)));
    let options = TreeOptions {
        ignore,
        ignore_git: true,
        ..TreeOptions::default()
    };
    // Only the names: each subject's file is hashed once, below.
    let mut on_disk: Vec<ModelPath> = walk(dir, &options)?
        .entries
        .into_iter()
        .map(|e| e.relative)
        .collect();
    on_disk.sort();
    let mut checks = Vec::new();
    for subject in subjects {
        let Some(name) = subject.name.clone() else {
            continue;
        };
        if let Err(why) = ModelPath::new(name.as_str()) {
            checks.push(ArtifactCheck {
                path: name.clone(),
                subject: Some(name),
                problem: Some(format!(
                    "subject name escapes --model-dir ({why}); not read"
                )),
            });
            continue;
        }
        let path = dir.join(&name);
        let problem = if !path.is_file() {
            Some("missing".to_string())
        } else {
            let digests =
                digest_file(&path).map_err(|e| anyhow!("{}: cannot read: {e}", shown(&path)))?;
            describe_mismatch(subject.digest_mismatches(&digests.to_digest_set()))
        };
        checks.push(ArtifactCheck {
            path: shown(&path),
            subject: Some(name),
            problem,
        });
    }
    let named: Vec<&str> = subjects.iter().filter_map(|s| s.name.as_deref()).collect();
    let extras: Vec<&ModelPath> = on_disk
        .iter()
        .filter(|p| !named.contains(&p.as_str()) && !GIT_PATHS.contains(&p.as_str()))
        .collect();
    for extra in extras
        .into_iter()
        .filter(|p| !is_approval_of(dir, p.as_str(), attestation, attestation_sha256, approvers))
    {
        checks.push(ArtifactCheck {
            path: shown(&dir.join(extra.as_str())),
            subject: None,
            problem: Some("extra file: not a subject of this statement".into()),
        });
    }
    Ok(checks)
}

/// Whether `dir/relative` is an approval of this attestation that may sit in the directory
/// without being a product: it must be where `trainprov approve` writes one (beside the
/// attestation, `STEM.approval-ENV.intoto.json` for `STEM.intoto.json`), at most 1 MiB, a DSSE
/// envelope signed by one of `keys` (the trusted keys, and with --policy every approver key)
/// whose SLSA Verification Summary names this attestation's SHA-256. Anything else, an
/// unsigned or foreign "approval" included, is an extra file.
fn is_approval_of(
    dir: &Path,
    relative: &str,
    attestation: &Path,
    attestation_sha256: &str,
    keys: &[PublicKey],
) -> bool {
    let Some(beside) = relative_to_root(dir, attestation) else {
        return false;
    };
    let expected_dir = beside.rsplit_once('/').map(|(d, _)| d);
    let (in_dir, file) = match relative.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, relative),
    };
    let stem = beside.rsplit('/').next().unwrap_or_default();
    let stem = stem
        .strip_suffix(".intoto.json")
        .or_else(|| stem.strip_suffix(".json"))
        .unwrap_or(stem);
    let named_like_one = in_dir == expected_dir
        && file
            .strip_prefix(&format!("{stem}.approval-"))
            .is_some_and(|rest| {
                rest.len() > ".intoto.json".len() && rest.ends_with(".intoto.json")
            });
    let path = dir.join(relative);
    if !named_like_one || std::fs::metadata(&path).map_or(true, |m| m.len() > 1 << 20) {
        return false;
    }
    let Some(envelope) = std::fs::read(&path)
        .ok()
        .and_then(|bytes| Envelope::from_json(&bytes).ok())
    else {
        return false;
    };
    let Ok(payload) = envelope.verify(IN_TOTO_PAYLOAD_TYPE, keys, 1) else {
        return false;
    };
    Statement::<Value>::from_verified(payload, Some(attest::vsa::VERIFICATION_SUMMARY_V1))
        .is_ok_and(|s| {
            s.predicate["inputAttestations"]
                .as_array()
                .is_some_and(|inputs| {
                    inputs
                        .iter()
                        .any(|i| i["digest"]["sha256"] == attestation_sha256)
                })
        })
}

/// How `--inputs` gets the digests of the files it compares: the hash cache is writable by
/// whoever owns it, so verification hashes every file unless `--trust-cache` says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputsHashing {
    /// Every file hashed again (the default).
    Rehashed,
    /// Unchanged files' digests taken from the per-user hash cache (`--trust-cache`).
    TrustedCache,
}

impl InputsHashing {
    fn of(args: &VerifyArgs) -> InputsHashing {
        if args.trust_cache {
            InputsHashing::TrustedCache
        } else {
            InputsHashing::Rehashed
        }
    }

    /// The `inputs_hashing` value of `--json`.
    fn name(self) -> &'static str {
        match self {
            InputsHashing::Rehashed => "rehashed",
            InputsHashing::TrustedCache => "trusted-cache",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            InputsHashing::Rehashed => "every file hashed again (hash cache not trusted)",
            InputsHashing::TrustedCache => {
                "unchanged files taken from the hash cache (--trust-cache), not hashed again"
            }
        }
    }
}

/// Re-snapshots each recorded input and compares it with the record; with the registry's stored
/// manifest the changed files are named.
fn check_inputs(
    predicate: &Value,
    registry: Option<&Path>,
    hashing: InputsHashing,
) -> Result<Vec<ArtifactCheck>, CliError> {
    let deps = predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let cwd = std::env::current_dir().or_input()?;
    let registry =
        recorder::registry::Registry::open(&recorder::paths::registry_dir(registry, &cwd))
            .or_input()?;
    let mut checks = Vec::new();
    for dep in deps.iter().filter(|d| d["annotations"]["role"].is_string()) {
        let name = dep["name"].as_str().unwrap_or_default().to_string();
        let Some(path) = dep["uri"]
            .as_str()
            .and_then(recorder::redact::recorded_path)
        else {
            continue;
        };
        let recorded = dep["digest"]["blake3"].as_str().unwrap_or_default();
        let problem = if !path.exists() {
            Some(format!("input {} is gone", shown(&path)))
        } else {
            let rehash = hashing == InputsHashing::Rehashed;
            let now =
                recorder::runner::snapshot_input(&path, &registry, rehash, false).or_input()?;
            let content: Option<attest::statement::DigestSet> =
                serde_json::from_value(dep["annotations"]["contentDigest"].clone()).ok();
            if now.digest() == recorded {
                // The content digest a policy may match is a function of the manifest: it must
                // be the one this snapshot gives.
                match content {
                    Some(c) if Some(&c) != now.content_digest_set().as_ref() => Some(
                        "the recorded contentDigest is not that of the recorded snapshot".into(),
                    ),
                    _ => None,
                }
            } else {
                Some(describe_input_change(&registry, dep, &path, &now))
            }
        };
        checks.push(ArtifactCheck {
            path: shown(&path),
            subject: Some(name),
            problem,
        });
    }
    Ok(checks)
}

fn describe_input_change(
    registry: &recorder::registry::Registry,
    dep: &Value,
    path: &Path,
    now: &recorder::snapshot::DataSnapshot,
) -> String {
    let object = dep["annotations"]["manifestObject"]
        .as_str()
        .unwrap_or_default();
    let stored = registry.objects().get(object).ok().and_then(|bytes| {
        recorder::snapshot::DataSnapshot::from_manifest_bytes(path.to_path_buf(), &bytes).ok()
    });
    match stored {
        Some(then) => format!("input changed since the run: {}", then.diff(now)),
        None => "input changed since the run (its manifest is not in this registry, so files cannot be named)".into(),
    }
}
