//! `trainprov approve`: verify an attestation against a policy, then sign a SLSA Verification
//! Summary approving it for one environment (see `attest::vsa` for the format).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use attest::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use attest::keyfile::load_signing_key;
use attest::slsa::PROVENANCE_V1;
use attest::statement::{DigestSet, Statement};
use attest::vsa::{
    approver_id, ResourceRef, VerificationSummary, Verifier, PASSED, VERIFICATION_SUMMARY_V1,
};
use attest::Verified;
use recorder::registry::{ApprovalRecord, Registry};
use serde_json::{json, Value};

use crate::cli::ApproveArgs;
use crate::commands::policy::{self, hex_sha256, LoadedPolicy};
use crate::commands::verify::read_document;
use crate::commands::{parent_dir, shown};
use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// Verifies, then writes and records the approval.
pub fn run(args: &ApproveArgs) -> Result<Report, CliError> {
    let loaded = LoadedPolicy::load(&args.policy)?;
    let key = load_signing_key(&args.key).or_input()?;
    let keyid = key.public_key().keyid().to_string();
    check_approver(args, &loaded, &keyid)?;
    let name = shown(&args.attestation);
    let bytes = read_document(&args.attestation)?;
    let attestation_sha256 = hex_sha256(&bytes);
    let statement = verified_statement(&loaded, &name, &bytes)?;
    let cwd = std::env::current_dir().or_input()?;
    let mut registry = Registry::open(&recorder::paths::registry_dir(
        args.registry.as_deref(),
        &cwd,
    ))
    .or_input()?;
    let violations = policy::evaluate(&loaded, &statement, Some(&registry), None)?;
    let detail = json!({"file": args.attestation, "policy": loaded.path, "environment": args.env});
    if !violations.is_empty() {
        return Err(policy::failure(&name, &violations, detail));
    }

    let now = recorder::runner::now_rfc3339();
    let summary = summary(args, &loaded, &keyid, &attestation_sha256, &now);
    let approval = Statement::new(statement.subject.clone(), VERIFICATION_SUMMARY_V1, summary);
    let payload = approval
        .to_json()
        .map_err(|e| CliError::input(anyhow!("cannot serialize the approval: {e}")))?;
    let signed = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, &[&key]).to_json();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.attestation, &args.env));
    recorder::atomic::write_atomic(&out, &signed)
        .map_err(|e| CliError::input(anyhow!("{}: cannot write: {e}", shown(&out))))?;
    let record = ApprovalRecord {
        approval_sha256: hex_sha256(&signed),
        attestation_sha256: attestation_sha256.clone(),
        environment: args.env.clone(),
        approver_keyid: keyid.clone(),
        path: Some(absolute(&out)),
        note: args.note.clone(),
        approved_at: now,
        envelope_json: String::from_utf8_lossy(&signed).into_owned(),
    };
    registry.add_approval(&record).or_input()?;
    let human = format!(
        "APPROVED {name} for {} by keyid {keyid}\n   policy {} met; approval written to {} and recorded in {}\n",
        args.env,
        shown(&args.policy),
        shown(&out),
        shown(registry.dir()),
    );
    Ok(Report::ok(
        human,
        json!({
            "status": "approved",
            "file": args.attestation,
            "sha256": attestation_sha256,
            "environment": args.env,
            "approver_keyid": keyid,
            "policy": {"file": loaded.path, "sha256": loaded.sha256},
            "approval": out,
            "approval_sha256": record.approval_sha256,
            "registry": registry.dir(),
        }),
    ))
}

/// Refuses a key the policy does not list as an approver for the environment (its approval
/// would not count), and a policy with no signer keys to check the attestation with.
fn check_approver(args: &ApproveArgs, loaded: &LoadedPolicy, keyid: &str) -> Result<(), CliError> {
    let approvers = loaded.approver_keys(&args.env)?;
    if !approvers.iter().any(|k| k.keyid() == keyid) {
        return Err(CliError::input(anyhow!(
            "{}: keyid {keyid} is not an approver for '{}' in {} (approvers: {}); an approval by it would not count",
            shown(&args.key),
            args.env,
            shown(&args.policy),
            approvers.iter().map(|k| k.keyid()).collect::<Vec<_>>().join(", ")
        )));
    }
    if loaded.signer_keys.is_empty() {
        return Err(CliError::input(anyhow!(
            "{}: lists no [signers] keys to verify the attestation with",
            shown(&args.policy)
        )));
    }
    Ok(())
}

/// The attestation's provenance Statement, once its signatures meet the policy's signers.
fn verified_statement(
    loaded: &LoadedPolicy,
    name: &str,
    bytes: &[u8],
) -> Result<Verified<Statement<Value>>, CliError> {
    let envelope =
        Envelope::from_json(bytes).map_err(|e| CliError::failed(anyhow!("{name}: {e}")))?;
    let payload = envelope
        .verify(
            IN_TOTO_PAYLOAD_TYPE,
            &loaded.signer_keys,
            loaded.policy.signers.threshold,
        )
        .map_err(|e| CliError::failed(anyhow!("{name}: {e}")))?;
    Statement::<Value>::from_verified(payload, Some(PROVENANCE_V1))
        .map_err(|e| CliError::failed(anyhow!("{name}: {e}")))
}

/// The VSA predicate: who approved what, for which environment, under which policy.
fn summary(
    args: &ApproveArgs,
    loaded: &LoadedPolicy,
    keyid: &str,
    attestation_sha256: &str,
    now: &str,
) -> VerificationSummary {
    VerificationSummary {
        verifier: Verifier {
            id: approver_id(keyid),
            version: BTreeMap::from([(
                "trainprov".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]),
        },
        time_verified: now.to_string(),
        resource_uri: file_uri(&parent_dir(&args.attestation)),
        policy: ResourceRef {
            uri: file_uri(&args.policy),
            digest: sha256_set(&loaded.sha256),
        },
        input_attestations: vec![ResourceRef {
            uri: file_uri(&args.attestation),
            digest: sha256_set(attestation_sha256),
        }],
        verification_result: PASSED.into(),
        verified_levels: vec!["SLSA_BUILD_LEVEL_1".into()],
        slsa_version: "1.0".into(),
        environment: args.env.clone(),
        approver_keyid: keyid.to_string(),
        note: args.note.clone(),
    }
}

/// Where an approval goes by default: beside the model directory when the attestation sits in
/// one (`out/provenance.intoto.json` → `out.approval-ENV.intoto.json`), so the signed directory
/// is left as it was signed (`model_signing` would report an added file); otherwise beside the
/// attestation (`release.intoto.json` → `release.approval-ENV.intoto.json`).
fn default_out(attestation: &Path, env: &str) -> PathBuf {
    let dir = parent_dir(attestation);
    let signed_dir = dir.join(attest::oms::SIGNATURE_FILE).is_file();
    if signed_dir {
        // `out` stays relative; `.` or `..` are resolved to learn the directory's name.
        let named = match dir.file_name() {
            Some(_) => dir.clone(),
            None => std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone()),
        };
        if let (Some(parent), Some(name)) = (named.parent(), named.file_name()) {
            let name = name.to_string_lossy();
            return parent.join(format!("{name}.approval-{env}.intoto.json"));
        }
        return dir.join(format!("approval-{env}.intoto.json"));
    }
    let file = attestation
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file
        .strip_suffix(".intoto.json")
        .or_else(|| file.strip_suffix(".json"))
        .unwrap_or(&file);
    dir.join(format!("{stem}.approval-{env}.intoto.json"))
}

fn sha256_set(hex: &str) -> DigestSet {
    DigestSet::from([("sha256".to_string(), hex.to_string())])
}

/// The path made absolute, with `..` resolved where it exists.
fn absolute(path: &std::path::Path) -> String {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn file_uri(path: &std::path::Path) -> String {
    format!("file://{}", absolute(path))
}
