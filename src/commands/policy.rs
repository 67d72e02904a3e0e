//! Deploy gates shared by `verify --policy` and `approve`: loading a policy and its keys,
//! gathering what it is evaluated over (input manifests, approvals, revocations) from the
//! registry, and reporting every violation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use attest::dsse::Envelope;
use attest::keyfile::load_public_key;
use attest::keys::PublicKey;
use attest::policy::{input_dependencies, ApprovalTally, Facts, ManifestFile, Policy, Violation};
use attest::statement::Statement;
use attest::vsa::{check_approval, ApprovalContext};
use attest::Verified;
use recorder::paths::{locate_registry, RegistrySource, REGISTRY_ENV};
use recorder::registry::Registry;
use recorder::revocation::{revoked_ancestry, RevokedAncestry};
use recorder::snapshot::{DataSnapshot, EntryKind};
use serde_json::{json, Value};

use crate::commands::{parent_dir, shown};
use crate::exit::{CliError, OrInput as _};

/// A policy file, parsed, with its signer keys loaded.
pub struct LoadedPolicy {
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub policy: Policy,
    /// SHA-256 of the file.
    pub sha256: String,
    /// `[signers] keys`.
    pub signer_keys: Vec<PublicKey>,
}

impl LoadedPolicy {
    /// Reads and validates `path`; key paths are relative to its directory.
    pub fn load(path: &Path) -> Result<LoadedPolicy, CliError> {
        let name = shown(path);
        let bytes = fs_err::read(path).or_input()?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| CliError::input(anyhow!("{name}: not UTF-8 text")))?;
        let policy =
            Policy::from_toml(text).map_err(|e| CliError::input(anyhow!("{name}: {e}")))?;
        let signer_keys = load_keys(path, &policy.signers.keys)?;
        Ok(LoadedPolicy {
            path: path.to_path_buf(),
            sha256: hex_sha256(&bytes),
            policy,
            signer_keys,
        })
    }

    /// The approver keys of `env`; an environment the policy does not define is an input error.
    pub fn approver_keys(&self, env: &str) -> Result<Vec<PublicKey>, CliError> {
        let Some(rules) = self.policy.environments.get(env) else {
            let defined: Vec<&str> = self
                .policy
                .environments
                .keys()
                .map(String::as_str)
                .collect();
            return Err(CliError::input(anyhow!(
                "{}: defines no environment '{env}' (defined: {})",
                shown(&self.path),
                if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                }
            )));
        };
        load_keys(&self.path, &rules.approvers)
    }
}

fn load_keys(policy: &Path, paths: &[PathBuf]) -> Result<Vec<PublicKey>, CliError> {
    let base = parent_dir(policy);
    paths
        .iter()
        .map(|p| {
            let path = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            load_public_key(&path).map_err(|e| {
                CliError::input(anyhow!("{}: key {}: {e}", shown(policy), shown(&path)))
            })
        })
        .collect()
}

/// Lowercase hex SHA-256.
pub fn hex_sha256(bytes: &[u8]) -> String {
    attest::statement::digest_set_of(bytes)
        .remove("sha256")
        .unwrap_or_default()
}

/// The registry a verification reads revocations and approvals from, and how it was chosen.
pub struct RegistryUse {
    /// The directory looked at (`None` with `--no-registry`).
    pub dir: Option<PathBuf>,
    /// Which rule chose it.
    pub source: Option<RegistrySource>,
    /// The registry, when one exists there (none is created just to verify).
    pub registry: Option<Registry>,
}

impl RegistryUse {
    /// Finds the registry (see `recorder::paths`); `skip` is `--no-registry`. With `gate`
    /// (`--policy`) a missing registry is an input error: revocations fail closed.
    pub fn find(explicit: Option<&Path>, skip: bool, gate: bool) -> Result<RegistryUse, CliError> {
        if skip {
            return Ok(RegistryUse {
                dir: None,
                source: None,
                registry: None,
            });
        }
        let cwd = std::env::current_dir().or_input()?;
        let (dir, source) = locate_registry(explicit, &cwd);
        if !dir.join(recorder::registry::DATABASE_FILE).is_file() {
            if gate {
                return Err(CliError::input(anyhow!(
                    "{}: no registry (found by {}), so revocations and recorded approvals cannot be                      checked; pass --registry DIR or set {REGISTRY_ENV} to the team's registry, or                      --no-registry to verify without them",
                    shown(&dir),
                    source.name()
                )));
            }
            return Ok(RegistryUse {
                dir: Some(dir),
                source: Some(source),
                registry: None,
            });
        }
        let registry = Registry::open(&dir).or_input()?;
        Ok(RegistryUse {
            dir: Some(dir),
            source: Some(source),
            registry: Some(registry),
        })
    }

    /// The registry, if one is read.
    pub fn get(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// `"registry"` and `"revocations"` of `--json`: where, found how, and whether checked.
    pub fn to_json(&self) -> Value {
        json!({
            "path": self.dir,
            "found_by": self.source.map(RegistrySource::name),
            "exists": self.registry.is_some(),
            "revocations": self.revocations_status(),
        })
    }

    /// `checked`, `not-checked: --no-registry` or `not-checked: no registry`.
    pub fn revocations_status(&self) -> &'static str {
        match (&self.dir, &self.registry) {
            (None, _) => "not-checked: --no-registry",
            (Some(_), None) => "not-checked: no registry",
            (Some(_), Some(_)) => "checked",
        }
    }

    /// One line of human output saying which registry was read, or that none was.
    pub fn line(&self) -> String {
        match (&self.dir, self.source) {
            (Some(dir), Some(source)) if self.registry.is_some() => format!(
                "   revocations checked in registry {} (found by {})\n",
                shown(dir),
                source.name()
            ),
            (Some(dir), Some(source)) => format!(
                "   revocations NOT checked: no registry at {} (found by {}; pass --registry DIR)\n",
                shown(dir),
                source.name()
            ),
            _ => "   revocations NOT checked (--no-registry)\n".to_string(),
        }
    }
}

/// The files of every input snapshot whose manifest the registry's object store holds.
fn manifests(
    statement: &Statement<Value>,
    registry: Option<&Registry>,
) -> BTreeMap<String, Vec<ManifestFile>> {
    let mut out = BTreeMap::new();
    let Some(registry) = registry else {
        return out;
    };
    for input in input_dependencies(&statement.predicate) {
        let Some(object) = &input.manifest_object else {
            continue;
        };
        let Ok(bytes) = registry.objects().get(object) else {
            continue;
        };
        let Ok(snapshot) = DataSnapshot::from_manifest_bytes(PathBuf::new(), &bytes) else {
            continue;
        };
        let files = snapshot
            .entries
            .into_iter()
            .filter(|e| matches!(e.kind, EntryKind::File))
            .map(|e| ManifestFile {
                path: e.path,
                blake3: e.blake3,
            })
            .collect();
        out.insert(input.name, files);
    }
    out
}

/// Revocations the attestation descends from, as violations of the rule `revocation`.
pub fn revocations(
    statement: &Statement<Value>,
    registry: Option<&Registry>,
) -> Result<(Vec<Violation>, Vec<RevokedAncestry>), CliError> {
    let Some(registry) = registry else {
        return Ok((Vec::new(), Vec::new()));
    };
    let found = revoked_ancestry(registry, &statement.subject, &statement.predicate).or_input()?;
    let violations = found
        .iter()
        .map(|a| Violation::new("revocation", "no revoked artifact upstream", a.line()))
        .collect();
    Ok((violations, found))
}

/// Every policy violation, revocations included.
pub fn evaluate(
    loaded: &LoadedPolicy,
    statement: &Verified<Statement<Value>>,
    registry: Option<&Registry>,
    approvals: Option<&ApprovalTally>,
) -> Result<Vec<Violation>, CliError> {
    let manifests = manifests(statement, registry);
    let facts = Facts {
        statement,
        manifests: &manifests,
        now: time::OffsetDateTime::now_utc(),
        approvals,
    };
    let mut violations = loaded.policy.evaluate(&facts);
    violations.extend(revocations(statement, registry)?.0);
    Ok(violations)
}

/// Checks every approval for `env` in the registry and in `files`.
pub fn tally_approvals(
    loaded: &LoadedPolicy,
    env: &str,
    statement: &Statement<Value>,
    attestation_sha256: &str,
    registry: Option<&Registry>,
    files: &[PathBuf],
) -> Result<ApprovalTally, CliError> {
    let approvers = loaded.approver_keys(env)?;
    let mut sources: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(registry) = registry {
        for record in registry.approvals_for(attestation_sha256, env).or_input()? {
            let label = format!(
                "registry approval {}",
                record
                    .path
                    .clone()
                    .unwrap_or_else(|| record.approval_sha256.clone())
            );
            sources.push((label, record.envelope_json.into_bytes()));
        }
    }
    for file in files {
        sources.push((shown(file), crate::commands::verify::read_document(file)?));
    }
    let same_policy = loaded
        .policy
        .environments
        .get(env)
        .is_some_and(|rules| rules.same_policy);
    let context = ApprovalContext {
        environment: env,
        attestation_sha256,
        subjects: &statement.subject,
        policy_sha256: same_policy.then_some(loaded.sha256.as_str()),
    };
    let mut tally = ApprovalTally {
        environment: env.to_string(),
        ..ApprovalTally::default()
    };
    for (label, bytes) in sources {
        let checked = Envelope::from_json(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|envelope| {
                check_approval(&envelope, &approvers, &context).map_err(|e| e.to_string())
            });
        match checked {
            Ok(approval) => tally
                .accepted
                .push(approval.predicate.approver_keyid.clone()),
            Err(why) => tally.ignored.push(format!("{label}: {why}")),
        }
    }
    tally.accepted.sort();
    tally.accepted.dedup();
    Ok(tally)
}

/// The failure for a non-empty list of violations: one line per rule, all of them.
pub fn failure(name: &str, violations: &[Violation], detail: Value) -> CliError {
    let lines: Vec<String> = violations.iter().map(|v| format!("  - {v}")).collect();
    let mut detail = detail;
    detail["violations"] = json!(violations);
    CliError::failed(anyhow!(
        "{name}: {} rule(s) failed:\n{}",
        violations.len(),
        lines.join("\n")
    ))
    .with_detail(detail)
}
