//! A run's record and its SLSA Provenance v1 Statement.
//!
//! [`RunRecord`] holds everything captured about one run; [`RunRecord::to_statement`] lays it out
//! as `shared/DESIGN.md` specifies:
//!
//! | Statement field | content |
//! |---|---|
//! | `subject` | every product file under `--out` (not the attestation or `model.sig`), `sha256` + `blake3` |
//! | `buildDefinition.buildType` | [`RUN_BUILD_TYPE`] for wrapped commands |
//! | `externalParameters` | `argv` (redacted), `cwd`, `out`, `params`, `configs` (digest; a redacted view when small), input names by role |
//! | `internalParameters` | thread and determinism variables, ISA level, device |
//! | `resolvedDependencies` | code (`gitCommit` + remote), the uncommitted patch, each `--data`/`--base`/`--adapter` snapshot (BLAKE3 snapshot digest + SHA-256 of its manifest; annotations below), configs, lock files |
//! | `runDetails.builder` | [`BUILDER_ID`] and versions |
//! | `runDetails.metadata` | run id, start and end times (RFC 3339 UTC) |
//! | `runDetails.byproducts` | stdout/stderr logs, environment record, `pip freeze`, `run-result.json` (exit code, wall time, peak RSS) |
//!
//! Every stored part carries an `object` annotation: its BLAKE3 digest in the registry's object
//! store, from which `retrain` restores it.
//!
//! ## Input annotations
//!
//! Each input's `resolvedDependencies` entry (name `ROLE:PATH-AS-GIVEN`, `uri` `file://ABSOLUTE`)
//! carries the annotations `role`, `files`, `bytes` and `manifestObject`, and when they apply:
//!
//! - `contentDigest`: `{"blake3": …, "sha256": …}`, when the snapshot holds symlinks (a Hugging
//!   Face hub cache): the snapshot digest of the same files laid out without links
//!   ([`crate::snapshot::DataSnapshot::content_digest_set`]), so a digest taken of a flat copy
//!   (`trainprov snapshot`) still identifies it; `verify --policy` matches `allowed_base_models`
//!   and `forbidden_datasets` against it too;
//! - `hf`: `{"repoType", "repoId", "revision", "refs", "subfolder"?}`, what a hub-cache path
//!   names ([`crate::hub_cache`]; the path's word, the digest pins the content);
//! - `weights`: `{"format": "safetensors", "layout": "single"|"sharded", "files": N, "dtypes":
//!   ["bf16"]}` ([`ModelWeights`]), for the base model of `trainprov train`.
//!
//! ## Configs: recorded by digest, shown redacted
//!
//! A config file (`--config`, the `trainprov train` TOML) is never inlined as it is: it may hold
//! a hub token or a password. Its original bytes go to the object store; the Statement has
//!
//! ```json
//! "externalParameters": {"configs": {"train.yaml": {
//!     "digest": {"sha256": "…", "blake3": "…"},          // the original bytes (= the object)
//!     "content": "lr: 0.1\nhub_token: ***\n",             // what may be shown: UTF-8, <= 64 KiB
//!     "contentDigest": {"sha256": "…", "blake3": "…"},   // digests of `content`
//!     "redacted": ["hub_token"]                           // what `content` hides
//! }}}
//! ```
//!
//! `content` is [`crate::redact::redact_config`] of the text, then [`crate::redact::home_relative`];
//! `contentDigest` equals `digest` exactly when the shown text is the original (`redacted` then
//! is empty; it lists `home directory` when only `$HOME` was hidden). A config that is
//! not UTF-8 or larger than [`MAX_INLINE_CONFIG`] has only `digest`. The `config:NAME`
//! dependency carries the same `redacted` list as an annotation. Replay reads the original from
//! the object store (see `crate::replay::config_bytes`).
//!
//! ## No home directory, no user name
//!
//! Every string of the predicate (parameters, dependency names, URIs and annotations,
//! byproduct annotations) goes through [`crate::redact::home_relative`] with `$HOME`: a path
//! under the home directory is recorded as `~/…` (`file://~/…` in URIs), and replay expands
//! `~` with its own `$HOME` ([`crate::redact::expand_home_dir`]). trainprov records no user
//! name, hostname or home directory of its own; a user name inside a path outside the home
//! directory, a remote URL or an argument is recorded as given. Inline `content` of byproducts
//! (base64, covered by its digest) and digests are left as they are.

use std::collections::BTreeMap;

use attest::slsa::{
    BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails, PROVENANCE_V1,
};
use attest::statement::{DigestSet, ResourceDescriptor, Statement};
use serde::Serialize;
use serde_json::{json, Value};

use attest::statement::digest_set_of;

use crate::git::CodeState;
use crate::hub_cache::HubRef;
use crate::redact::{home_dirs, home_relative, redact_config, RedactedConfig};

/// buildType of wrapped runs (`trainprov run -- CMD`).
pub const RUN_BUILD_TYPE: &str = "https://trainprov.dev/buildtypes/run/v1";
/// builder.id of trainprov.
pub const BUILDER_ID: &str = "https://trainprov.dev/builder/trainprov";
/// File name of the attestation inside `--out`.
pub const ATTESTATION_FILE: &str = "provenance.intoto.json";
/// Show configs up to this size (redacted) in `externalParameters`.
pub const MAX_INLINE_CONFIG: usize = 64 * 1024;

/// What kind of input a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputRole {
    /// `--data`: a dataset.
    Data,
    /// `--base`: a base model.
    Base,
    /// `--adapter`: an adapter trained earlier.
    Adapter,
}

impl InputRole {
    /// The flag / role name (`data`, `base`, `adapter`).
    pub fn name(self) -> &'static str {
        match self {
            InputRole::Data => "data",
            InputRole::Base => "base",
            InputRole::Adapter => "adapter",
        }
    }

    /// The registry artifact kind (`dataset`, `model`, `adapter`).
    pub fn artifact_kind(self) -> &'static str {
        match self {
            InputRole::Data => "dataset",
            InputRole::Base => "model",
            InputRole::Adapter => "adapter",
        }
    }
}

/// A snapshotted input directory or file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedInput {
    /// Role.
    pub role: InputRole,
    /// The path as the user gave it.
    pub given: String,
    /// Absolute path.
    pub path: String,
    /// `blake3` = snapshot digest, `sha256` = SHA-256 of the canonical manifest.
    pub digest: DigestSet,
    /// Object store digest of the manifest.
    pub manifest_object: String,
    /// Files in the snapshot.
    pub files: usize,
    /// Bytes in the snapshot.
    pub bytes: u64,
    /// The content digest when the snapshot holds symlinks
    /// ([`crate::snapshot::DataSnapshot::content_digest_set`]): the snapshot digest of the same
    /// files laid out without links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_digest: Option<DigestSet>,
    /// The Hugging Face repository and revision the path names ([`crate::hub_cache`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubRef>,
    /// What the trainer found in a model input's weight files (set by `trainprov train`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<ModelWeights>,
}

/// How a model input's weights are stored, as the trainer found them before training.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelWeights {
    /// `"safetensors"` (the only format read).
    pub format: String,
    /// `"single"` (`model.safetensors`) or `"sharded"` (`model.safetensors.index.json`).
    pub layout: String,
    /// Number of weight files.
    pub files: usize,
    /// The dtypes stored, lower-case (`"bf16"`, `"f16"`, `"f32"`), sorted, each once. The
    /// built-in trainer computes in `f32` whatever is stored (`internalParameters.trainer.dtype`).
    pub dtypes: Vec<String>,
}

/// A single recorded file: config, lock file, product, log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedFile {
    /// Name in the record (relative path for products, the path as given for configs).
    pub name: String,
    /// `sha256` + `blake3`.
    pub digest: DigestSet,
    /// Size in bytes.
    pub size: u64,
    /// Object store digest, when a copy is stored.
    pub object: Option<String>,
    /// Media type, when known.
    pub media_type: Option<String>,
    /// UTF-8 text of a small config, kept for [`RecordedFile::shown_config`]; never serialized
    /// and never put into a Statement as it is.
    #[serde(skip)]
    pub inline_text: Option<String>,
}

/// The code part of a record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeRecord {
    /// Repository state.
    pub state: CodeState,
    /// The uncommitted patch, stored, when dirty.
    pub patch: Option<RecordedFile>,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal that ended it.
    pub signal: Option<i32>,
    /// Wall time in seconds.
    pub wall_seconds: f64,
    /// Peak RSS of the child tree.
    pub peak_rss_bytes: Option<u64>,
}

/// Everything captured about one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Run id (also the invocationId).
    pub id: String,
    /// buildType URI.
    pub build_type: String,
    /// Command line, redacted.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Output directory as given.
    pub out: String,
    /// `--param K=V` values.
    pub params: BTreeMap<String, String>,
    /// `--config` files.
    pub configs: Vec<RecordedFile>,
    /// Lock files found beside the code.
    pub lock_files: Vec<RecordedFile>,
    /// Code state.
    pub code: Option<CodeRecord>,
    /// Snapshotted inputs.
    pub inputs: Vec<RecordedInput>,
    /// Platform-chosen settings (threads, ISA level, device).
    pub internal: Value,
    /// Start time, RFC 3339 UTC.
    pub started_on: String,
    /// End time, RFC 3339 UTC.
    pub finished_on: String,
    /// How the command ended.
    pub result: RunResult,
    /// Product files.
    pub products: Vec<RecordedFile>,
    /// Logs, environment record, pip freeze.
    pub byproducts: Vec<RecordedFile>,
    /// Component → version for `runDetails.builder.version`.
    pub versions: BTreeMap<String, String>,
    /// Further `resolvedDependencies`: the original attestation a retrain reproduces.
    pub related: Vec<ResourceDescriptor>,
}

fn descriptor(file: &RecordedFile, prefix: &str) -> ResourceDescriptor {
    let mut rd = ResourceDescriptor::named(format!("{prefix}{}", file.name), file.digest.clone());
    rd.media_type = file.media_type.clone();
    if let Some(object) = &file.object {
        rd.annotations.insert("object".into(), json!(object));
    }
    rd.annotations.insert("size".into(), json!(file.size));
    rd
}

impl RecordedFile {
    /// The view of a config that may be shown: its text through
    /// [`crate::redact::redact_config`] and `homes` through [`crate::redact::home_relative`];
    /// `None` when there is no inline text (binary or larger than [`MAX_INLINE_CONFIG`]).
    pub fn shown_config(&self, homes: &[String]) -> Option<RedactedConfig> {
        let text = self.inline_text.as_deref()?;
        let mut shown = redact_config(&self.name, text);
        let relative = home_relative(&shown.text, homes);
        if relative != shown.text {
            shown.redacted.push("home directory".to_string());
            shown.text = relative;
        }
        Some(shown)
    }
}

impl RunRecord {
    /// The in-toto Statement (SLSA Provenance v1) for this record, with paths under `$HOME`
    /// written `~/…` (see the module docs).
    pub fn to_statement(&self) -> Statement<Provenance> {
        self.to_statement_for_homes(&home_dirs())
    }

    /// [`RunRecord::to_statement`] hiding the given home directories.
    pub fn to_statement_for_homes(&self, homes: &[String]) -> Statement<Provenance> {
        let subject = self
            .products
            .iter()
            .map(|p| ResourceDescriptor::named(p.name.clone(), p.digest.clone()))
            .collect();
        let provenance = Provenance {
            build_definition: BuildDefinition {
                build_type: self.build_type.clone(),
                external_parameters: home_relative_value(self.external_parameters(homes), homes),
                internal_parameters: home_relative_value(self.internal.clone(), homes),
                resolved_dependencies: self
                    .resolved_dependencies(homes)
                    .into_iter()
                    .map(|rd| home_relative_descriptor(rd, homes))
                    .collect(),
            },
            run_details: RunDetails {
                builder: Builder {
                    id: BUILDER_ID.into(),
                    builder_dependencies: Vec::new(),
                    version: self.versions.clone(),
                },
                metadata: Some(BuildMetadata {
                    invocation_id: Some(self.id.clone()),
                    started_on: Some(self.started_on.clone()),
                    finished_on: Some(self.finished_on.clone()),
                }),
                byproducts: self
                    .byproducts()
                    .into_iter()
                    .map(|rd| home_relative_descriptor(rd, homes))
                    .collect(),
            },
        };
        Statement::new(subject, PROVENANCE_V1, provenance)
    }

    fn external_parameters(&self, homes: &[String]) -> Value {
        let configs: BTreeMap<&str, Value> = self
            .configs
            .iter()
            .map(|c| {
                let value = match c.shown_config(homes) {
                    Some(shown) => json!({
                        "digest": c.digest,
                        "content": shown.text,
                        "contentDigest": digest_set_of(shown.text.as_bytes()),
                        "redacted": shown.redacted,
                    }),
                    None => json!({"digest": c.digest}),
                };
                (c.name.as_str(), value)
            })
            .collect();
        let mut inputs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for input in &self.inputs {
            inputs
                .entry(input.role.name())
                .or_default()
                .push(&input.given);
        }
        json!({
            "argv": self.argv,
            "cwd": self.cwd,
            "out": self.out,
            "params": self.params,
            "configs": configs,
            "inputs": inputs,
        })
    }

    fn resolved_dependencies(&self, homes: &[String]) -> Vec<ResourceDescriptor> {
        let mut deps = Vec::new();
        if let Some(code) = &self.code {
            deps.push(code_descriptor(&code.state));
            if let Some(patch) = &code.patch {
                deps.push(descriptor(patch, "code:"));
            }
        }
        for input in &self.inputs {
            let mut rd = ResourceDescriptor::named(
                format!("{}:{}", input.role.name(), input.given),
                input.digest.clone(),
            );
            rd.uri = Some(format!("file://{}", input.path));
            rd.annotations
                .insert("role".into(), json!(input.role.name()));
            rd.annotations.insert("files".into(), json!(input.files));
            rd.annotations.insert("bytes".into(), json!(input.bytes));
            rd.annotations
                .insert("manifestObject".into(), json!(input.manifest_object));
            if let Some(content) = &input.content_digest {
                rd.annotations
                    .insert("contentDigest".into(), json!(content));
            }
            if let Some(hub) = &input.hub {
                rd.annotations.insert("hf".into(), json!(hub));
            }
            if let Some(weights) = &input.weights {
                rd.annotations.insert("weights".into(), json!(weights));
            }
            deps.push(rd);
        }
        deps.extend(self.configs.iter().map(|c| {
            let mut rd = descriptor(c, "config:");
            if let Some(shown) = c.shown_config(homes).filter(|s| !s.redacted.is_empty()) {
                rd.annotations
                    .insert("redacted".into(), json!(shown.redacted));
            }
            rd
        }));
        deps.extend(self.lock_files.iter().map(|l| descriptor(l, "lockfile:")));
        deps.extend(self.related.iter().cloned());
        deps
    }

    fn byproducts(&self) -> Vec<ResourceDescriptor> {
        let mut out: Vec<ResourceDescriptor> =
            self.byproducts.iter().map(|b| descriptor(b, "")).collect();
        let result = serde_json::to_vec(&self.result).unwrap_or_default();
        let mut rd =
            ResourceDescriptor::named("run-result.json", attest::statement::digest_set_of(&result));
        rd.content = Some(attest::dsse::encode_base64(&result));
        rd.media_type = Some("application/json".into());
        rd.annotations
            .insert("exitCode".into(), json!(self.result.exit_code));
        rd.annotations
            .insert("wallSeconds".into(), json!(self.result.wall_seconds));
        rd.annotations
            .insert("peakRssBytes".into(), json!(self.result.peak_rss_bytes));
        out.push(rd);
        out
    }
}

/// Every string (and object key) of `value` through [`home_relative`].
fn home_relative_value(value: Value, homes: &[String]) -> Value {
    if homes.is_empty() {
        return value;
    }
    match value {
        Value::String(s) => Value::String(home_relative(&s, homes)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| home_relative_value(v, homes))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (home_relative(&k, homes), home_relative_value(v, homes)))
                .collect(),
        ),
        other => other,
    }
}

/// A descriptor's name, URI, download location and annotations through [`home_relative`]
/// (digests and base64 `content` are left alone).
fn home_relative_descriptor(mut rd: ResourceDescriptor, homes: &[String]) -> ResourceDescriptor {
    rd.name = rd.name.map(|n| home_relative(&n, homes));
    rd.uri = rd.uri.map(|u| home_relative(&u, homes));
    rd.download_location = rd.download_location.map(|u| home_relative(&u, homes));
    rd.annotations = rd
        .annotations
        .into_iter()
        .map(|(k, v)| (k, home_relative_value(v, homes)))
        .collect();
    rd
}

fn code_descriptor(state: &CodeState) -> ResourceDescriptor {
    let mut digest = DigestSet::new();
    if let Some(commit) = &state.commit {
        digest.insert("gitCommit".into(), commit.clone());
    }
    let mut rd = ResourceDescriptor::named("code", digest);
    let remote = state
        .remotes
        .get("origin")
        .or_else(|| state.remotes.values().next());
    rd.uri = Some(match (remote, &state.commit) {
        (Some(url), Some(commit)) => format!("git+{url}@{commit}"),
        (Some(url), None) => format!("git+{url}"),
        (None, _) => format!("git+file://{}", state.root.display()),
    });
    rd.annotations.insert("root".into(), json!(state.root));
    rd.annotations.insert("branch".into(), json!(state.branch));
    rd.annotations
        .insert("remotes".into(), json!(state.remotes));
    rd.annotations.insert("dirty".into(), json!(state.dirty));
    rd.annotations
        .insert("changedPaths".into(), json!(state.changed_paths));
    if !state.skipped.is_empty() {
        rd.annotations
            .insert("notInPatch".into(), json!(state.skipped));
    }
    if rd.digest.is_empty() {
        // A repository without commits: only the patch identifies the code.
        rd.content = Some(String::new());
    }
    rd
}
