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
//!
//! # Taint is by content
//!
//! A file whose digest equals a product of an affected run is tainted, whichever run produced
//! it now: `trainprov run -- cp out1/adapter.safetensors x/` makes a second producer of the
//! same bytes, and that run being unaffected changes nothing. The only exemption is a
//! *shareable* file (`crate::lineage`, "Shareable files": under 64 KiB, every recorded name a
//! text extension such as `.json` or `.txt`, and text content where the bytes are at hand) that
//! some unaffected run produced too, such as the `adapter_config.json` a poisoned and a clean
//! training write byte for byte. Consequence: a large non-weight file copied unchanged into
//! both a poisoned and a clean output (a 2 MB `tokenizer.json`) taints the clean model too;
//! verification fails closed and names the path.

use std::collections::BTreeMap;

use attest::policy::{input_dependencies, DigestRef};
use attest::statement::{DigestSet, ResourceDescriptor};
use serde::Serialize;
use serde_json::Value;

use rusqlite::OptionalExtension as _;

use crate::lineage::{
    affected, is_shareable, manifest_of, product_names, resolve_target, Affected, AffectedRun,
    LineageError, Matched, Target, TargetKind, Via,
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
    if on_disk && is_signed_statement(std::path::Path::new(arg)) {
        return Err(LineageError::SignedStatement(arg.to_string()));
    }
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

/// Whether `path` is a DSSE envelope (`*.intoto.json`) or a Sigstore bundle (`model.sig`):
/// a JSON object with `payloadType` and `signatures`, or with `dsseEnvelope`. Revoking such a
/// file by its own digest would match nothing, since no run lists it as a product.
fn is_signed_statement(path: &std::path::Path) -> bool {
    let small = std::fs::metadata(path)
        .is_ok_and(|m| m.is_file() && m.len() <= attest::dsse::MAX_ENVELOPE_BYTES);
    if !small {
        return false;
    }
    let Ok(Value::Object(map)) = std::fs::read(path)
        .map_err(|_| ())
        .and_then(|b| serde_json::from_slice(&b).map_err(|_| ()))
    else {
        return false;
    };
    (map.contains_key("payloadType") && map.contains_key("signatures"))
        || map.contains_key("dsseEnvelope")
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
    /// The file, when it can be read (its bytes decide whether it is shareable).
    pub on_disk: Option<std::path::PathBuf>,
}

/// Which revocations the files of a signed model directory descend from: a file itself
/// revoked, or a file with the bytes of a product of a run downstream of a revoked artifact (any
/// generation; see [`tainting_producer`]). Empty when none.
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
        let content = file.on_disk.as_deref().and_then(read_small);
        let seen = Seen {
            name: file.name,
            size: content.as_ref().map(|c| c.len() as u64),
            content: content.as_deref(),
        };
        if let Some(run) = tainting_producer(registry, file.algorithm, file.digest, &seen, &runs)? {
            let mut path = chain(run, &runs, &revoked);
            path.extend([file.name.to_string(), "this model".into()]);
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// A file as met by a check: its name there, and its size and bytes where known.
struct Seen<'a> {
    name: &'a str,
    size: Option<u64>,
    content: Option<&'a [u8]>,
}

/// Reads a file only if it could be shareable (under 64 KiB).
fn read_small(path: &std::path::Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() >= crate::lineage::SHAREABLE_MAX_BYTES {
        return None;
    }
    std::fs::read(path).ok()
}

/// An affected run that produced these bytes, if any, unless the file is shareable and some
/// unaffected run produced it too (see the module docs, "Taint is by content").
fn tainting_producer<'r>(
    registry: &Registry,
    algorithm: &str,
    digest: &str,
    seen: &Seen<'_>,
    runs: &BTreeMap<&str, &'r AffectedRun>,
) -> Result<Option<&'r AffectedRun>, LineageError> {
    let producers = producing_runs(registry, algorithm, digest)?;
    let Some(first) = producers.iter().find_map(|r| runs.get(r.as_str()).copied()) else {
        return Ok(None);
    };
    let (names, size) = match product_blake3(registry, algorithm, digest)? {
        Some(blake3) => product_names(registry.connection(), &blake3)?,
        None => (Vec::new(), None),
    };
    let size = seen.size.or(size);
    if size == Some(0) {
        // No content: an empty file says nothing (as in `crate::lineage`'s matching).
        return Ok(None);
    }
    if producers.iter().all(|r| runs.contains_key(r.as_str())) {
        return Ok(Some(first));
    }
    let names = names.iter().map(String::as_str).chain([seen.name]);
    let shareable = is_shareable(names, size, seen.content);
    Ok((!shareable).then_some(first))
}

/// The BLAKE3 of a recorded product with this digest.
fn product_blake3(
    registry: &Registry,
    algorithm: &str,
    digest: &str,
) -> Result<Option<String>, LineageError> {
    if algorithm == "blake3" {
        return Ok(Some(digest.to_ascii_lowercase()));
    }
    Ok(registry
        .connection()
        .query_row(
            "SELECT blake3 FROM artifacts WHERE kind = 'file' AND sha256 = ?1 LIMIT 1",
            [digest.to_ascii_lowercase()],
            |r| r.get(0),
        )
        .optional()?)
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
    // A subject with the bytes of an affected run's product is tainted, whoever made it now.
    for subject in subjects {
        let name = subject.name.as_deref().unwrap_or_default();
        let seen = Seen {
            name,
            size: None,
            content: None,
        };
        let known = subject
            .digest
            .iter()
            .filter(|(a, _)| matches!(a.as_str(), "sha256" | "blake3"));
        for (algorithm, digest) in known {
            if let Some(run) = tainting_producer(registry, algorithm, digest, &seen, &runs)? {
                let mut path = chain(run, &runs, &revoked);
                path.extend([name.to_string(), format!("a subject of {THIS}")]);
                return Ok(Some(path));
            }
        }
    }
    let revoked_files: Vec<&str> = target.files.iter().map(|f| f.blake3.as_str()).collect();
    for input in &inputs {
        let Some(snapshot) = input.digest.get("blake3") else {
            continue;
        };
        for (file, size, blake3) in manifest_of(registry.connection(), snapshot)? {
            let shown = format!("{}/{file}", input.name);
            if target.kind == TargetKind::File && revoked_files.contains(&blake3.as_str()) {
                return Ok(Some(vec![revoked(&shown), THIS.into()]));
            }
            let seen = Seen {
                name: &file,
                size: Some(size),
                content: None,
            };
            if let Some(run) = tainting_producer(registry, "blake3", &blake3, &seen, &runs)? {
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
