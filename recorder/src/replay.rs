//! Replaying a run from its record: restoring the code, preparing inputs (with exclusions),
//! comparing the replay with the original, and finding the first step that diverged.
//!
//! The record is the signed Statement (`provenance.intoto.json`, already verified by the caller)
//! plus the objects its `object` / `manifestObject` annotations name in the registry's store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attest::statement::ResourceDescriptor;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use serde_json::Value;

use crate::objects::ObjectStore;
use crate::record::RecordedFile;
use crate::snapshot::{DataSnapshot, SnapshotDiff};

/// Errors while preparing a replay; each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The recorded commit is not in the repository.
    #[error(
        "commit {commit} is not in the repository at {}; fetch it first (`git fetch origin {commit}` \
         or `git fetch --all`) and retry",
        repo.display()
    )]
    MissingCommit {
        /// The commit.
        commit: String,
        /// The repository searched.
        repo: PathBuf,
    },
    /// A git command failed.
    #[error("git {args} failed in {}: {stderr}", dir.display())]
    Git {
        /// The arguments.
        args: String,
        /// Where.
        dir: PathBuf,
        /// git's message.
        stderr: String,
    },
    /// A recorded input is gone.
    #[error(
        "{}: recorded {role} input is missing; restore it, or point to its new location with \
         --data-root {}=NEW_DIR",
        path.display(), path.display()
    )]
    MissingInput {
        /// Role (`data`, `base`, `adapter`).
        role: String,
        /// Where it was recorded.
        path: PathBuf,
    },
    /// An object the record names is not in this registry.
    #[error(transparent)]
    Object(#[from] crate::objects::ObjectError),
    /// A bad `--exclude` pattern.
    #[error("--exclude '{pattern}': {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// globset's message.
        message: String,
    },
    /// An OS error.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The record lacks something the replay needs.
    #[error("the record has no {0}; it was not made by `trainprov run` or `trainprov train`")]
    Incomplete(&'static str),
    /// A config's original bytes are neither in this registry nor given with `--config-file`.
    #[error(
        "config {name} (sha256 {sha256}) is not in this registry's object store{}; pass the \
         original file with --config-file {name}=PATH (its SHA-256 must be {sha256})",
        redacted_note(redacted)
    )]
    MissingConfig {
        /// The config's recorded name.
        name: String,
        /// SHA-256 of its original bytes.
        sha256: String,
        /// What the record's shown content hides.
        redacted: Vec<String>,
    },
    /// A `--config-file` does not hold the recorded bytes.
    #[error(
        "{}: SHA-256 {actual} does not match the recorded config {name} ({expected}); pass the \
         file the run used",
        path.display()
    )]
    ConfigMismatch {
        /// The config's recorded name.
        name: String,
        /// The file given.
        path: PathBuf,
        /// The recorded SHA-256.
        expected: String,
        /// The file's SHA-256.
        actual: String,
    },
    /// A `--config-file NAME=…` names no recorded config.
    #[error(
        "--config-file {name}=...: the record has no config named {name} (recorded: {recorded})"
    )]
    UnknownConfig {
        /// The name given.
        name: String,
        /// The recorded names, comma-separated.
        recorded: String,
    },
}

fn redacted_note(redacted: &[String]) -> String {
    if redacted.is_empty() {
        String::new()
    } else {
        format!(
            " and the record shows it with {} redacted",
            redacted.join(", ")
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A recorded input (`--data`, `--base`, `--adapter`) as the Statement describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedInputRef {
    /// `data`, `base` or `adapter`.
    pub role: String,
    /// Name as given at record time.
    pub given: String,
    /// Absolute path at record time.
    pub path: PathBuf,
    /// Snapshot BLAKE3 digest.
    pub blake3: String,
    /// Object holding the manifest.
    pub manifest_object: Option<String>,
}

/// The inputs a Statement's `resolvedDependencies` record.
pub fn recorded_inputs(predicate: &Value) -> Vec<RecordedInputRef> {
    dependencies(predicate)
        .iter()
        .filter_map(|dep| {
            let role = dep["annotations"]["role"].as_str()?.to_string();
            let path = crate::redact::recorded_path(dep["uri"].as_str()?)?;
            let name = dep["name"].as_str().unwrap_or_default();
            Some(RecordedInputRef {
                given: name
                    .split_once(':')
                    .map(|(_, g)| g.to_string())
                    .unwrap_or_default(),
                role,
                path,
                blake3: dep["digest"]["blake3"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                manifest_object: dep["annotations"]["manifestObject"]
                    .as_str()
                    .map(str::to_string),
            })
        })
        .collect()
}

/// A config the record names (`config:NAME` in `resolvedDependencies`, shown under
/// `externalParameters.configs.NAME`; see `crate::record`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedConfigRef {
    /// Recorded name (the path as given, `~/…` under the home directory).
    pub name: String,
    /// SHA-256 of the original bytes.
    pub sha256: String,
    /// BLAKE3 object holding the original bytes.
    pub object: Option<String>,
    /// Keys (or lines) the shown content hides.
    pub redacted: Vec<String>,
    /// The shown content, when the record has one.
    #[serde(skip)]
    pub shown: Option<String>,
}

/// The configs a Statement records, in `resolvedDependencies` order.
pub fn recorded_configs(predicate: &Value) -> Vec<RecordedConfigRef> {
    let shown = &predicate["buildDefinition"]["externalParameters"]["configs"];
    dependencies(predicate)
        .iter()
        .filter_map(|dep| {
            let name = dep["name"].as_str()?.strip_prefix("config:")?.to_string();
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            Some(RecordedConfigRef {
                sha256: dep["digest"]["sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object: dep["annotations"]["object"].as_str().map(str::to_string),
                redacted: strings(&dep["annotations"]["redacted"]),
                shown: shown[&name]["content"].as_str().map(str::to_string),
                name,
            })
        })
        .collect()
}

/// Checks that every `--config-file NAME=PATH` names a recorded config.
pub fn check_supplied_configs(
    configs: &[RecordedConfigRef],
    supplied: &[(String, PathBuf)],
) -> Result<(), ReplayError> {
    for (name, _) in supplied {
        if !configs.iter().any(|c| supplied_for(c, name)) {
            return Err(ReplayError::UnknownConfig {
                name: name.clone(),
                recorded: configs
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

/// Whether `--config-file NAME=…` means this config: the recorded name, or the recorded name
/// with `~` expanded (a shell expands `~/x.yaml=PATH`).
fn supplied_for(config: &RecordedConfigRef, name: &str) -> bool {
    config.name == name || crate::redact::expand_home_dir(&config.name) == name
}

fn sha256_hex(bytes: &[u8]) -> String {
    attest::statement::digest_set_of(bytes)
        .get("sha256")
        .cloned()
        .unwrap_or_default()
}

/// The original bytes of a recorded config, from the first source that has them:
/// 1. a `--config-file NAME=PATH` the user gave (its SHA-256 must match the record);
/// 2. the registry's object store (the `object` annotation; content-addressed, so checked);
/// 3. the record's own shown `content`, when its SHA-256 is the recorded one (nothing was
///    redacted), so a record copied to another host without its registry still replays.
///
/// Otherwise [`ReplayError::MissingConfig`] names the config, its SHA-256, what was redacted
/// and the `--config-file` option to pass.
pub fn config_bytes(
    config: &RecordedConfigRef,
    objects: &ObjectStore,
    supplied: &[(String, PathBuf)],
) -> Result<Vec<u8>, ReplayError> {
    if let Some((_, path)) = supplied.iter().find(|(n, _)| supplied_for(config, n)) {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let actual = sha256_hex(&bytes);
        if actual != config.sha256 {
            return Err(ReplayError::ConfigMismatch {
                name: config.name.clone(),
                path: path.clone(),
                expected: config.sha256.clone(),
                actual,
            });
        }
        return Ok(bytes);
    }
    if let Some(bytes) = config.object.as_deref().and_then(|o| objects.get(o).ok()) {
        if sha256_hex(&bytes) == config.sha256 {
            return Ok(bytes);
        }
    }
    if let Some(shown) = &config.shown {
        if sha256_hex(shown.as_bytes()) == config.sha256 {
            return Ok(shown.clone().into_bytes());
        }
    }
    Err(ReplayError::MissingConfig {
        name: config.name.clone(),
        sha256: config.sha256.clone(),
        redacted: config.redacted.clone(),
    })
}

/// `resolvedDependencies` of a provenance predicate.
pub fn dependencies(predicate: &Value) -> Vec<Value> {
    predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Applies `--data-root OLD=NEW` remappings (longest matching prefix wins).
pub fn remap(path: &Path, roots: &[(PathBuf, PathBuf)]) -> PathBuf {
    roots
        .iter()
        .filter(|(old, _)| path.starts_with(old))
        .max_by_key(|(old, _)| old.as_os_str().len())
        .and_then(|(old, new)| path.strip_prefix(old).ok().map(|rest| new.join(rest)))
        .unwrap_or_else(|| path.to_path_buf())
}

/// The recorded manifest of an input, when the registry has it.
pub fn recorded_snapshot(input: &RecordedInputRef, objects: &ObjectStore) -> Option<DataSnapshot> {
    let bytes = objects.get(input.manifest_object.as_deref()?).ok()?;
    DataSnapshot::from_manifest_bytes(input.path.clone(), &bytes).ok()
}

/// How an input looks now compared with the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputCheck {
    /// The input.
    pub input: RecordedInputRef,
    /// Where it was read now.
    pub now_at: PathBuf,
    /// Digest now.
    pub blake3_now: String,
    /// Files added/removed/changed since the record (empty when identical; `None` when the
    /// recorded manifest is not in this registry and only the digests can be compared).
    pub diff: Option<SnapshotDiff>,
}

impl InputCheck {
    /// Same digest as recorded.
    pub fn unchanged(&self) -> bool {
        self.blake3_now == self.input.blake3
    }
}

/// Compares an input's current snapshot with the record.
pub fn check_input(
    input: &RecordedInputRef,
    now_at: &Path,
    now: &DataSnapshot,
    objects: &ObjectStore,
) -> InputCheck {
    let diff = recorded_snapshot(input, objects).map(|then| then.diff(now));
    InputCheck {
        input: input.clone(),
        now_at: now_at.to_path_buf(),
        blake3_now: now.digest(),
        diff,
    }
}

/// Compiled `--exclude` patterns, matched against paths relative to an input's root and
/// against file names.
#[derive(Debug, Clone)]
pub struct Exclusions {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Exclusions {
    /// Compiles the patterns.
    pub fn new(patterns: &[String]) -> Result<Exclusions, ReplayError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = Glob::new(pattern).map_err(|e| ReplayError::Pattern {
                pattern: pattern.clone(),
                message: e.to_string(),
            })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| ReplayError::Pattern {
            pattern: patterns.join(" "),
            message: e.to_string(),
        })?;
        Ok(Exclusions {
            patterns: patterns.to_vec(),
            set,
        })
    }

    /// No patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `relative` (a path inside an input) is excluded.
    pub fn matches(&self, relative: &str) -> bool {
        let name = relative.rsplit('/').next().unwrap_or(relative);
        self.set.is_match(relative) || self.set.is_match(name)
    }
}

/// Copies the files of `snapshot` (rooted at `src`) to `dst`, leaving out excluded files.
/// Returns the excluded paths (relative).
pub fn filtered_copy(
    snapshot: &DataSnapshot,
    src: &Path,
    dst: &Path,
    exclusions: &Exclusions,
) -> Result<Vec<String>, ReplayError> {
    let mut excluded = Vec::new();
    let single_file = src.is_file();
    for entry in &snapshot.entries {
        if exclusions.matches(&entry.path) {
            excluded.push(entry.path.clone());
            continue;
        }
        let from = if single_file {
            src.to_path_buf()
        } else {
            src.join(&entry.path)
        };
        let to = dst.join(&entry.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::copy(&from, &to).map_err(io(&from))?;
    }
    Ok(excluded)
}

/// Restores the recorded code into `workdir`: a detached `git worktree` of the repository at
/// the recorded commit, with the stored uncommitted change re-applied. Returns the worktree.
pub fn restore_code(
    predicate: &Value,
    objects: &ObjectStore,
    repo_hint: &Path,
    workdir: &Path,
) -> Result<PathBuf, ReplayError> {
    let deps = dependencies(predicate);
    let code = deps
        .iter()
        .find(|d| d["name"] == "code")
        .ok_or(ReplayError::Incomplete("code dependency"))?;
    let commit = code["digest"]["gitCommit"]
        .as_str()
        .ok_or(ReplayError::Incomplete("git commit"))?;
    let recorded_root = code["annotations"]["root"]
        .as_str()
        .and_then(crate::redact::recorded_path);
    let repo = recorded_root
        .filter(|r| r.join(".git").exists())
        .unwrap_or_else(|| repo_hint.to_path_buf());
    let exists = git(&repo, &["cat-file", "-e", &format!("{commit}^{{commit}}")]).is_ok();
    if !exists {
        return Err(ReplayError::MissingCommit {
            commit: commit.to_string(),
            repo,
        });
    }
    if let Some(parent) = workdir.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let target = workdir.to_string_lossy().into_owned();
    git(
        &repo,
        &["worktree", "add", "--detach", "--force", &target, commit],
    )?;
    if let Some(patch) = deps.iter().find(|d| d["name"] == "code:uncommitted.patch") {
        let object = patch["annotations"]["object"]
            .as_str()
            .ok_or(ReplayError::Incomplete("patch object"))?;
        let bytes = objects.get(object)?;
        let patch_file = workdir.join(".trainprov-uncommitted.patch");
        std::fs::write(&patch_file, &bytes).map_err(io(&patch_file))?;
        let applied = git(
            workdir,
            &[
                "apply",
                "--binary",
                "--whitespace=nowarn",
                ".trainprov-uncommitted.patch",
            ],
        );
        let _ = std::fs::remove_file(&patch_file);
        applied?;
    }
    Ok(workdir.to_path_buf())
}

fn git(dir: &Path, args: &[&str]) -> Result<String, ReplayError> {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|source| ReplayError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        return Err(ReplayError::Git {
            args: args.join(" "),
            dir: dir.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// How the replay's products compare with the original subjects.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProductComparison {
    /// Same name, same digests.
    pub identical: Vec<String>,
    /// Same name, different digests.
    pub changed: Vec<String>,
    /// In the original only.
    pub missing: Vec<String>,
    /// In the replay only.
    pub extra: Vec<String>,
}

impl ProductComparison {
    /// Every subject reproduced byte for byte and nothing else produced.
    pub fn is_identical(&self) -> bool {
        self.changed.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

/// Compares the original Statement's subjects with the replay's products.
pub fn compare_products(
    original: &[ResourceDescriptor],
    replay: &[RecordedFile],
) -> ProductComparison {
    let new: BTreeMap<&str, &RecordedFile> = replay.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut result = ProductComparison::default();
    for subject in original {
        let name = subject.name.clone().unwrap_or_default();
        match new.get(name.as_str()) {
            None => result.missing.push(name),
            Some(p) if subject.digest_mismatches(&p.digest).is_ok() => result.identical.push(name),
            Some(_) => result.changed.push(name),
        }
    }
    let names: Vec<String> = original.iter().filter_map(|s| s.name.clone()).collect();
    result.extra = replay
        .iter()
        .filter(|p| !names.contains(&p.name))
        .map(|p| p.name.clone())
        .collect();
    result
}

/// The first point where two loss traces (`metrics.jsonl`) disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// Training step.
    pub step: u64,
    /// `loss` or `weights_blake3`.
    pub field: String,
    /// Recorded value.
    pub recorded: String,
    /// Replayed value.
    pub replayed: String,
}

/// Walks both traces in order and returns the first row whose loss or weights digest differs,
/// or `None` when one trace is a prefix of the other with equal rows.
pub fn first_divergence(recorded: &str, replayed: &str) -> Option<Divergence> {
    let parse = |text: &str| -> Vec<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let (a, b) = (parse(recorded), parse(replayed));
    for (x, y) in a.iter().zip(b.iter()) {
        for field in ["loss", "weights_blake3"] {
            if x.get(field).is_some() || y.get(field).is_some() {
                let (rx, ry) = (x[field].to_string(), y[field].to_string());
                if rx != ry {
                    return Some(Divergence {
                        step: x["step"]
                            .as_u64()
                            .or_else(|| y["step"].as_u64())
                            .unwrap_or(0),
                        field: field.to_string(),
                        recorded: rx,
                        replayed: ry,
                    });
                }
            }
        }
    }
    if a.len() != b.len() {
        let step = a.len().min(b.len()) as u64;
        return Some(Divergence {
            step,
            field: "length".into(),
            recorded: format!("{} rows", a.len()),
            replayed: format!("{} rows", b.len()),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_is_found_at_the_first_differing_row() {
        let a = "{\"step\":0,\"weights_blake3\":\"aa\"}\n{\"step\":1,\"loss\":2.5}\n{\"step\":2,\"loss\":2.0}\n";
        let b = "{\"step\":0,\"weights_blake3\":\"aa\"}\n{\"step\":1,\"loss\":2.5}\n{\"step\":2,\"loss\":2.1}\n";
        let d = first_divergence(a, b).expect("diverges");
        assert_eq!((d.step, d.field.as_str()), (2, "loss"));
        assert_eq!(first_divergence(a, a), None);
    }

    #[test]
    fn exclusions_match_paths_and_names() {
        let ex = Exclusions::new(&["shard-002.jsonl".into(), "poison/**".into()]).expect("globs");
        assert!(ex.matches("shard-002.jsonl"));
        assert!(ex.matches("sub/shard-002.jsonl"));
        assert!(ex.matches("poison/a.csv"));
        assert!(!ex.matches("shard-001.jsonl"));
        assert!(Exclusions::new(&["[".into()]).is_err());
    }

    #[test]
    fn remap_uses_the_longest_prefix() {
        let roots = vec![
            (PathBuf::from("/a"), PathBuf::from("/x")),
            (PathBuf::from("/a/b"), PathBuf::from("/y")),
        ];
        assert_eq!(remap(Path::new("/a/b/c"), &roots), PathBuf::from("/y/c"));
        assert_eq!(remap(Path::new("/a/c"), &roots), PathBuf::from("/x/c"));
        assert_eq!(remap(Path::new("/z"), &roots), PathBuf::from("/z"));
    }
}
