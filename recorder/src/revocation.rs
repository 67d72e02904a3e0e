//! Revocations: artifacts declared bad (`trainprov registry revoke`), and the check that nothing
//! being verified descends from one.
//!
//! A revocation names content by digest: a file (its BLAKE3 or SHA-256; a path given on the
//! command line is hashed), or an input snapshot (a directory given on the command line is
//! snapshotted; its snapshot digest or its manifest's SHA-256). [`revoke_target`] resolves the
//! argument with [`crate::lineage::resolve_target`] and records what it found; a digest the
//! registry does not know yet is recorded as `unknown` and resolved again at every check, so a
//! run recorded after the revocation is caught too.
//!
//! [`revoked_ancestry`] checks one attestation. For each revocation it reuses
//! [`crate::lineage::affected`] (the runs downstream of the revoked content, every generation)
//! and reports a path through the lineage:
//!
//! ```text
//! data/shard-002.jsonl (revoked: poisoned) → run 1a2b3c4d → out1/adapter.bin → run 3c4d5e6f → this attestation
//! ```
//!
//! The attestation's own run (its `invocationId`) is looked up among the affected runs first.
//! An attestation recorded elsewhere is checked through its content instead: a subject or an
//! input snapshot that is the revoked content, an input snapshot holding the revoked file (by
//! the registry's copy of its manifest), or one holding a product of an affected run.

use std::collections::BTreeMap;

use attest::policy::{input_dependencies, DigestRef};
use attest::statement::{DigestSet, ResourceDescriptor};
use serde::Serialize;
use serde_json::Value;

use crate::lineage::{
    affected, manifest_of, resolve_target, Affected, AffectedRun, LineageError, Matched, Target,
    TargetKind, Via,
};
use crate::registry::{Registry, Revocation};

/// Resolves what `registry revoke ARG` names: an existing file or directory, or a digest
/// (`sha256:<hex>`, `blake3:<hex>` or bare hex).
pub fn revoke_target(
    arg: &str,
    reason: &str,
    registry: &Registry,
    now: &str,
) -> Result<Revocation, LineageError> {
    let on_disk = std::path::Path::new(arg).exists();
    let parsed = if on_disk {
        None
    } else {
        Some(DigestRef::parse(arg).map_err(|_| LineageError::NoMatch(arg.to_string()))?)
    };
    let lookup = parsed.as_ref().map_or(arg.to_string(), |d| d.hex.clone());
    let target = resolve_target(&lookup, registry)?;
    let kind = match target.kind {
        TargetKind::File => "file",
        TargetKind::Directory | TargetKind::Snapshot => "snapshot",
        TargetKind::Unknown => "unknown",
        TargetKind::Run => return Err(LineageError::NoMatch(arg.to_string())),
    };
    let (mut blake3, mut sha256) = (target.blake3.clone(), target.sha256.clone());
    if let Some(d) = &parsed {
        match d.algorithm.as_deref() {
            Some("blake3") => blake3 = blake3.or(Some(d.hex.clone())),
            Some(_) => sha256 = sha256.or(Some(d.hex.clone())),
            None => {}
        }
    }
    let digest = match (&parsed, &blake3) {
        (Some(d), _) => d.to_string(),
        (None, Some(b)) => format!("blake3:{b}"),
        (None, None) => return Err(LineageError::NoMatch(arg.to_string())),
    };
    Ok(Revocation {
        digest,
        blake3,
        sha256,
        kind: kind.to_string(),
        given: arg.to_string(),
        reason: reason.to_string(),
        revoked_at: now.to_string(),
    })
}

/// How an attestation descends from a revoked artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedAncestry {
    /// The revocation.
    pub revocation: Revocation,
    /// The steps, from the revoked artifact to `this attestation`.
    pub path: Vec<String>,
}

impl RevokedAncestry {
    /// The path as one line, steps joined by ` → `.
    pub fn line(&self) -> String {
        self.path.join(" → ")
    }
}

/// Which revocations the attestation with these subjects and SLSA Provenance predicate descends
/// from, each with one path (see the module docs). Empty when none.
pub fn revoked_ancestry(
    registry: &Registry,
    subjects: &[ResourceDescriptor],
    predicate: &Value,
) -> Result<Vec<RevokedAncestry>, LineageError> {
    let mut found = Vec::new();
    for revocation in registry.revocations()? {
        if let Some(path) = ancestry_of(registry, &revocation, subjects, predicate)? {
            found.push(RevokedAncestry { revocation, path });
        }
    }
    Ok(found)
}

const THIS: &str = "this attestation";

/// A file of a signed model directory (`model.sig`): its name, and its digest under the
/// signature's hash algorithm (`sha256` or `blake3`).
pub struct SignedFile<'a> {
    /// Path inside the model directory.
    pub name: &'a str,
    /// `sha256` or `blake3`.
    pub algorithm: &'a str,
    /// Lowercase hex.
    pub digest: &'a str,
}

/// Which revocations the files of a signed model directory descend from: a file itself
/// revoked, or a file only runs downstream of a revoked artifact (any generation) produced
/// (see [`distinctive_producer`]). Empty when none.
pub fn revoked_ancestry_of_files(
    registry: &Registry,
    files: &[SignedFile<'_>],
) -> Result<Vec<RevokedAncestry>, LineageError> {
    let mut found = Vec::new();
    for revocation in registry.revocations()? {
        if let Some(path) = file_ancestry(registry, &revocation, files)? {
            found.push(RevokedAncestry { revocation, path });
        }
    }
    Ok(found)
}

fn file_ancestry(
    registry: &Registry,
    revocation: &Revocation,
    files: &[SignedFile<'_>],
) -> Result<Option<Vec<String>>, LineageError> {
    let revoked = |what: &str| format!("{what} (revoked: {})", revocation.reason);
    for file in files {
        let set = DigestSet::from([(file.algorithm.to_string(), file.digest.to_string())]);
        if matches(revocation, &set) {
            return Ok(Some(vec![
                revoked(file.name),
                "a file of this model".into(),
            ]));
        }
    }
    let (_, downstream) = downstream_of(registry, revocation)?;
    let runs = by_id(&downstream);
    for file in files {
        if let Some(run) = distinctive_producer(registry, file.algorithm, file.digest, &runs)? {
            let mut path = chain(run, &runs, &revoked);
            path.extend([file.name.to_string(), "this model".into()]);
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The affected run that produced these bytes, when every recorded run that produced them is
/// affected (the rule `registry affected` applies to a partial match). A file some unaffected
/// run produced too says nothing: an `adapter_config.json` is byte-identical across adapters
/// trained with the same settings, poisoned or not.
fn distinctive_producer<'r>(
    registry: &Registry,
    algorithm: &str,
    digest: &str,
    runs: &BTreeMap<&str, &'r AffectedRun>,
) -> Result<Option<&'r AffectedRun>, LineageError> {
    let producers = producing_runs(registry, algorithm, digest)?;
    if producers.is_empty() || !producers.iter().all(|r| runs.contains_key(r.as_str())) {
        return Ok(None);
    }
    Ok(runs.get(producers[0].as_str()).copied())
}

/// The recorded runs that produced a file with this digest.
fn producing_runs(
    registry: &Registry,
    algorithm: &str,
    digest: &str,
) -> Result<Vec<String>, LineageError> {
    let column = if algorithm == "blake3" {
        "blake3"
    } else {
        "sha256"
    };
    let sql = format!(
        "SELECT DISTINCT ra.run_id FROM run_artifacts ra JOIN artifacts a ON a.id = ra.artifact_id \
         WHERE a.{column} = ?1 AND ra.role = 'output' ORDER BY ra.run_id"
    );
    let mut statement = registry.connection().prepare(&sql)?;
    let ids = statement
        .query_map([digest.to_ascii_lowercase()], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

/// The affected runs by id.
fn by_id(downstream: &Affected) -> BTreeMap<&str, &AffectedRun> {
    downstream
        .runs
        .iter()
        .map(|r| (r.run.id.as_str(), r))
        .collect()
}

/// The revoked artifact as a lineage target, and everything recorded downstream of it.
fn downstream_of(
    registry: &Registry,
    revocation: &Revocation,
) -> Result<(Target, Affected), LineageError> {
    let lookup = revocation
        .blake3
        .clone()
        .or_else(|| DigestRef::parse(&revocation.digest).ok().map(|d| d.hex))
        .unwrap_or_default();
    let target = resolve_target(&lookup, registry)?;
    let downstream = affected(registry.connection(), &target)?;
    Ok((target, downstream))
}

fn ancestry_of(
    registry: &Registry,
    revocation: &Revocation,
    subjects: &[ResourceDescriptor],
    predicate: &Value,
) -> Result<Option<Vec<String>>, LineageError> {
    let revoked = |what: &str| format!("{what} (revoked: {})", revocation.reason);
    if let Some(subject) = subjects.iter().find(|s| matches(revocation, &s.digest)) {
        let name = subject.name.clone().unwrap_or_default();
        return Ok(Some(vec![revoked(&name), format!("a subject of {THIS}")]));
    }
    let inputs = input_dependencies(predicate);
    if let Some(input) = inputs.iter().find(|i| matches(revocation, &i.digest)) {
        return Ok(Some(vec![revoked(&input.name), THIS.into()]));
    }
    let (target, downstream) = downstream_of(registry, revocation)?;
    let runs = by_id(&downstream);
    let own_run = predicate["runDetails"]["metadata"]["invocationId"].as_str();
    if let Some(run) = own_run.and_then(|id| runs.get(id)) {
        let mut path = chain(run, &runs, &revoked);
        path.push(THIS.into());
        return Ok(Some(path));
    }
    let revoked_files: Vec<&str> = target.files.iter().map(|f| f.blake3.as_str()).collect();
    for input in &inputs {
        let Some(snapshot) = input.digest.get("blake3") else {
            continue;
        };
        for (file, _, blake3) in manifest_of(registry.connection(), snapshot)? {
            let shown = format!("{}/{file}", input.name);
            if target.kind == TargetKind::File && revoked_files.contains(&blake3.as_str()) {
                return Ok(Some(vec![revoked(&shown), THIS.into()]));
            }
            if let Some(run) = distinctive_producer(registry, "blake3", &blake3, &runs)? {
                let mut path = chain(run, &runs, &revoked);
                path.extend([shown, THIS.into()]);
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

/// The steps from the revoked artifact down to `run` (inclusive), following each run's first
/// matching input (generations strictly decrease upstream, so this ends).
fn chain(
    run: &AffectedRun,
    runs: &BTreeMap<&str, &AffectedRun>,
    revoked: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let step = format!("run {}", short(&run.run.id));
    let Some(via) = run.via.first() else {
        return vec![step];
    };
    let upstream = via.upstream_run.as_deref().and_then(|id| runs.get(id));
    let mut path = match (via.matched, upstream) {
        (Matched::Product, Some(up)) => {
            let mut path = chain(up, runs, revoked);
            path.push(input_shown(via));
            path
        }
        _ => vec![revoked(&input_shown(via))],
    };
    path.push(step);
    path
}

/// `data/shard-002.jsonl`: the input as given, and the matching file inside it.
fn input_shown(via: &Via) -> String {
    let input = via.input.trim_end_matches('/');
    match via.files.first() {
        Some(file) if via.matched != Matched::Snapshot && file != &via.input => {
            format!("{input}/{file}")
        }
        _ => input.to_string(),
    }
}

fn short(id: &str) -> String {
    format!("{}…", &id[..8.min(id.len())])
}

/// Whether a digest set (of a subject or an input snapshot) is the revoked content.
fn matches(revocation: &Revocation, set: &DigestSet) -> bool {
    let same = |algorithm: &str, value: &Option<String>| {
        value.as_deref().is_some_and(|v| {
            set.get(algorithm)
                .is_some_and(|s| s.eq_ignore_ascii_case(v))
        })
    };
    same("blake3", &revocation.blake3)
        || same("sha256", &revocation.sha256)
        || DigestRef::parse(&revocation.digest).is_ok_and(|d| d.matches(set))
}
