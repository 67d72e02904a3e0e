//! AI bills of materials for trainprov runs: what a trained model is made of, as CycloneDX 1.6
//! (ML-BOM) and SPDX 3.0.1 (AI and Dataset profiles) JSON.
//!
//! The input is the SLSA Provenance v1 statement that `trainprov train` or `trainprov run`
//! signed, read into a [`Training`] by [`Training::from_statement`]: the products (the model or
//! adapter files), the inputs by role (`base` models, `data` sets, `adapter`s, each a snapshot
//! with its manifest digest), the hyperparameters (`externalParameters.params`), the code commit
//! and the run's times. [`cyclonedx`] and [`spdx`] map it into the two documents:
//!
//! | provenance | CycloneDX 1.6 | SPDX 3.0.1 |
//! |---|---|---|
//! | products | `metadata.component`, type `machine-learning-model`, with a `modelCard`; each file a nested `file` component (SHA-256, BLAKE3) | `ai_AIPackage` that `contains` each `software_File` (`Hash` sha256, blake3) |
//! | `data` inputs | `data` components (manifest digests as hashes, files nested) | `dataset_DatasetPackage`, model `trainedOn` it |
//! | `base`, `adapter` inputs | `pedigree.ancestors` of the model | `ai_AIPackage`, model `descendantOf` it |
//! | `params` | properties `trainprov:param:KEY` | `ai_hyperparameter` entries |
//! | code commit | `pedigree.commits` | a comment on the model |
//!
//! Output is deterministic: the same statement gives the same bytes. The CycloneDX
//! `serialNumber` and the SPDX id namespace are a UUID made from the statement's SHA-256
//! ([`document_uuid`]), timestamps come from the run (`finishedOn`), and every list is in a fixed
//! order. A snapshot's hashes are those of its `trainprov-snapshot` manifest (the digest
//! trainprov records for a directory), which a property or comment says beside them.
//!
//! This crate does no I/O and no cryptography: checking the statement's signature first, and
//! finding snapshot manifests and model configs, is the caller's job (`trainprov bom` does
//! both).
//!
//! ```
//! use attest::slsa::{BuildDefinition, Builder, BuildMetadata, Provenance, RunDetails, PROVENANCE_V1};
//! use attest::statement::{digest_set_of, ResourceDescriptor, Statement};
//! use serde_json::json;
//!
//! let mut data = ResourceDescriptor::named("data:./data", digest_set_of(b"manifest"));
//! data.annotations.insert("role".into(), json!("data"));
//! let predicate = Provenance {
//!     build_definition: BuildDefinition {
//!         build_type: "https://trainprov.dev/buildtypes/run/v1".into(),
//!         external_parameters: json!({"out": "out", "params": {"lr": "3e-4"}}),
//!         internal_parameters: json!({}),
//!         resolved_dependencies: vec![data],
//!     },
//!     run_details: RunDetails {
//!         builder: Builder {
//!             id: "https://trainprov.dev/builder/trainprov".into(),
//!             builder_dependencies: vec![],
//!             version: Default::default(),
//!         },
//!         metadata: Some(BuildMetadata { finished_on: Some("2026-01-02T03:04:05Z".into()), ..Default::default() }),
//!         byproducts: vec![],
//!     },
//! };
//! let subject = ResourceDescriptor::named("model.safetensors", digest_set_of(b"weights"));
//! let statement = Statement::new(vec![subject], PROVENANCE_V1, predicate);
//! let training = bom::Training::from_statement(&statement)?;
//! let source = bom::Source::new(training, &"ab".repeat(32));
//!
//! let cdx = bom::cyclonedx(&source);
//! assert_eq!(cdx["specVersion"], "1.6");
//! assert_eq!(cdx["metadata"]["component"]["type"], "machine-learning-model");
//! assert_eq!(cdx["components"][0]["type"], "data");
//!
//! let spdx = bom::spdx(&source);
//! let graph = spdx["@graph"].as_array().expect("a graph");
//! let find = |key: &str, value: &str| graph.iter().find(|e| e[key] == value).expect(value);
//! let dataset = find("type", "dataset_DatasetPackage");
//! assert_eq!(find("relationshipType", "trainedOn")["to"][0], dataset["spdxId"]);
//! # Ok::<(), bom::BomError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cyclonedx;
mod spdx;

use std::collections::BTreeMap;

use attest::slsa::{Provenance, PROVENANCE_V1};
use attest::statement::{ResourceDescriptor, Statement};
use serde_json::Value;

pub use cyclonedx::cyclonedx;
pub use spdx::spdx;

/// `buildType` of `trainprov train` (the built-in LoRA trainer).
pub const TRAIN_BUILD_TYPE: &str = "https://trainprov.dev/buildtypes/candle-lora/v1";

/// Why a statement cannot be described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BomError {
    /// Not SLSA Provenance v1.
    #[error("predicateType is '{got}', expected '{PROVENANCE_V1}'")]
    PredicateType {
        /// What the statement says.
        got: String,
    },
    /// A digest is not 64 lowercase hex digits.
    #[error("{field}: digest {algorithm} '{value}' is not 64 lowercase hex digits")]
    BadDigest {
        /// Where it was found (`subject adapter_model.safetensors`, `dependency data:./data`).
        field: String,
        /// `sha256` or `blake3`.
        algorithm: String,
        /// The value found.
        value: String,
    },
    /// A subject or input lacks a digest trainprov always records.
    #[error("{field}: no {algorithm} digest")]
    MissingDigest {
        /// Where.
        field: String,
        /// `sha256` or `blake3`.
        algorithm: &'static str,
    },
    /// The statement names no time the run finished or started.
    #[error("runDetails.metadata has neither finishedOn nor startedOn")]
    NoTime,
}

/// A file with trainprov's two digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    /// Path relative to the directory it belongs to.
    pub name: String,
    /// SHA-256, lowercase hex (absent for manifest entries, which carry BLAKE3 only).
    pub sha256: Option<String>,
    /// BLAKE3, lowercase hex.
    pub blake3: String,
    /// Size in bytes when known.
    pub size: Option<u64>,
}

/// What an input was to the run (`annotations.role` of its dependency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A base model (`--base`, or `model.base` of `trainprov train`).
    Base,
    /// An adapter the run started from (`--adapter`).
    Adapter,
    /// A dataset (`--data`).
    Data,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        match text {
            "base" => Some(Role::Base),
            "adapter" => Some(Role::Adapter),
            "data" => Some(Role::Data),
            _ => None,
        }
    }

    /// The role's name in the statement.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Base => "base",
            Role::Adapter => "adapter",
            Role::Data => "data",
        }
    }
}

/// One recorded input: a snapshot of a directory or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Its role.
    pub role: Role,
    /// The dependency's name, unique in the statement (`data:./data`).
    pub dependency: String,
    /// The path as given to the run (`./data`).
    pub path: String,
    /// Where it was read from (`file:///…`), when recorded.
    pub uri: Option<String>,
    /// BLAKE3 of the snapshot manifest: the snapshot digest.
    pub blake3: String,
    /// SHA-256 of the snapshot manifest.
    pub sha256: String,
    /// Number of files, when recorded.
    pub files: Option<u64>,
    /// Total bytes, when recorded.
    pub bytes: Option<u64>,
}

/// The git commit the run's code was at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// `git+…` URI of the repository.
    pub uri: Option<String>,
    /// Commit id.
    pub commit: String,
    /// Whether uncommitted changes were present (recorded as a patch).
    pub dirty: bool,
}

/// A training run as read from its provenance statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    /// `buildType`.
    pub build_type: String,
    /// `runDetails.builder.id`.
    pub builder_id: String,
    /// Builder versions (`trainprov`, `candle`, ...).
    pub builder_version: BTreeMap<String, String>,
    /// Run id (`invocationId`).
    pub run_id: Option<String>,
    /// When the run finished (else started), RFC 3339 UTC to the second.
    pub time: String,
    /// Name of the trained model: the output directory's last component.
    pub name: String,
    /// The product files.
    pub products: Vec<FileDigests>,
    /// Inputs in statement order.
    pub inputs: Vec<Input>,
    /// Hyperparameters (`externalParameters.params`).
    pub params: BTreeMap<String, String>,
    /// Scalar trainer internals (`internalParameters.trainer`: seed, steps, dtype, ...).
    pub trainer: BTreeMap<String, String>,
    /// The code.
    pub code: Option<Code>,
}

/// Everything a document is built from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The run.
    pub training: Training,
    /// SHA-256 (hex) of the statement bytes, the DSSE payload; names the document.
    pub statement_sha256: String,
    /// keyids whose signatures were checked; empty when the statement was not verified.
    pub signed_by: Vec<String>,
    /// Snapshot manifests by snapshot digest (BLAKE3): the files of an input.
    pub manifests: BTreeMap<String, Vec<FileDigests>>,
    /// Model configs by input dependency name (`base:./base`).
    pub model_configs: BTreeMap<String, ModelConfig>,
}

impl Source {
    /// A source with no signature, manifests or configs.
    pub fn new(training: Training, statement_sha256: &str) -> Source {
        Source {
            training,
            statement_sha256: statement_sha256.to_string(),
            signed_by: Vec::new(),
            manifests: BTreeMap::new(),
            model_configs: BTreeMap::new(),
        }
    }

    /// The architecture of the trained model: that of its (first) base model with a config.
    fn architecture(&self) -> Option<&ModelConfig> {
        self.training
            .inputs
            .iter()
            .filter(|i| i.role == Role::Base)
            .find_map(|i| self.model_configs.get(&i.dependency))
    }

    /// Name shown for an input: `model.name` of `trainprov train` for its single base model,
    /// else the path as given.
    fn input_name(&self, input: &Input) -> String {
        let bases = self
            .training
            .inputs
            .iter()
            .filter(|i| i.role == Role::Base)
            .count();
        match self.training.params.get("model.name") {
            Some(name) if input.role == Role::Base && bases == 1 && self.is_builtin() => {
                name.clone()
            }
            _ => input.path.clone(),
        }
    }

    fn is_builtin(&self) -> bool {
        self.training.build_type == TRAIN_BUILD_TYPE
    }

    /// The run in one sentence, for descriptions.
    fn summary(&self) -> String {
        let t = &self.training;
        let what = if self.is_builtin() {
            let mode = t.params.get("train.mode").map_or("lora", String::as_str);
            match mode {
                "lora" => "LoRA adapter trained by trainprov's built-in trainer",
                _ => "model trained by trainprov's built-in trainer",
            }
        } else {
            "model produced by a training command recorded with trainprov run"
        };
        let from = self
            .training
            .inputs
            .iter()
            .filter(|i| i.role == Role::Base)
            .map(|i| self.input_name(i))
            .collect::<Vec<_>>();
        let mut text = what.to_string();
        if !from.is_empty() {
            text.push_str(&format!(" from {}", from.join(", ")));
        }
        if let Some(id) = &t.run_id {
            text.push_str(&format!(" (run {id})"));
        }
        text
    }
}

/// What a model's `config.json` says about its architecture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelConfig {
    /// `architectures[0]` (`LlamaForCausalLM`).
    pub architecture: Option<String>,
    /// `model_type` (`llama`).
    pub family: Option<String>,
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json` value; `None` when it names neither field.
    pub fn from_config_json(config: &Value) -> Option<ModelConfig> {
        let architecture = config["architectures"][0].as_str().map(str::to_string);
        let family = config["model_type"].as_str().map(str::to_string);
        (architecture.is_some() || family.is_some()).then_some(ModelConfig {
            architecture,
            family,
        })
    }

    /// The task a `…ForCausalLM` model performs.
    fn task(&self) -> Option<&'static str> {
        let arch = self.architecture.as_deref()?;
        if arch.ends_with("ForCausalLM") {
            Some("text-generation")
        } else if arch.ends_with("ForSequenceClassification") {
            Some("text-classification")
        } else {
            None
        }
    }
}

impl Training {
    /// Reads the parts of a trainprov provenance statement a BOM describes. Both build types
    /// (`trainprov train` and `trainprov run -- CMD`) are read the same way; a dependency without a
    /// `base`, `data` or `adapter` role (code, configs, patches, lock files) is not an input here.
    pub fn from_statement(statement: &Statement<Provenance>) -> Result<Training, BomError> {
        if statement.predicate_type != PROVENANCE_V1 {
            return Err(BomError::PredicateType {
                got: statement.predicate_type.clone(),
            });
        }
        let build = &statement.predicate.build_definition;
        let details = &statement.predicate.run_details;
        let metadata = details.metadata.clone().unwrap_or_default();
        let time = metadata
            .finished_on
            .or(metadata.started_on)
            .map(|t| to_seconds(&t))
            .ok_or(BomError::NoTime)?;
        let products = statement
            .subject
            .iter()
            .map(product)
            .collect::<Result<Vec<_>, _>>()?;
        let (inputs, code) = inputs_and_code(&build.resolved_dependencies)?;
        let external = &build.external_parameters;
        let params = scalars(&external["params"]);
        let trainer = scalars(&build.internal_parameters["trainer"]);
        let name = external["out"]
            .as_str()
            .and_then(|o| o.trim_end_matches('/').rsplit('/').next())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .unwrap_or("model")
            .to_string();
        Ok(Training {
            build_type: build.build_type.clone(),
            builder_id: details.builder.id.clone(),
            builder_version: details.builder.version.clone(),
            run_id: metadata.invocation_id,
            time,
            name,
            products,
            inputs,
            params,
            trainer,
            code,
        })
    }
}

/// A subject as a product file (both digests required).
fn product(subject: &ResourceDescriptor) -> Result<FileDigests, BomError> {
    let name = subject.name.clone().unwrap_or_default();
    let field = format!("subject {name}");
    Ok(FileDigests {
        sha256: Some(digest(subject, "sha256", &field)?),
        blake3: digest(subject, "blake3", &field)?,
        size: None,
        name,
    })
}

/// The inputs (dependencies with a `base`, `data` or `adapter` role) and the git commit.
fn inputs_and_code(
    dependencies: &[ResourceDescriptor],
) -> Result<(Vec<Input>, Option<Code>), BomError> {
    let mut inputs = Vec::new();
    let mut code = None;
    for dep in dependencies {
        let name = dep.name.clone().unwrap_or_default();
        if name == "code" {
            if let Some(commit) = dep.digest.get("gitCommit") {
                code = Some(Code {
                    uri: dep.uri.clone(),
                    commit: commit.clone(),
                    dirty: dep.annotations.get("dirty") == Some(&Value::Bool(true)),
                });
            }
            continue;
        }
        let Some(role) = dep
            .annotations
            .get("role")
            .and_then(Value::as_str)
            .and_then(Role::parse)
        else {
            continue;
        };
        let field = format!("dependency {name}");
        let path = name
            .split_once(':')
            .map_or(name.as_str(), |(_, p)| p)
            .to_string();
        inputs.push(Input {
            role,
            blake3: digest(dep, "blake3", &field)?,
            sha256: digest(dep, "sha256", &field)?,
            files: dep.annotations.get("files").and_then(Value::as_u64),
            bytes: dep.annotations.get("bytes").and_then(Value::as_u64),
            uri: dep.uri.clone(),
            dependency: name,
            path,
        });
    }
    Ok((inputs, code))
}

/// Scalar members of a JSON object as strings (strings as they are, others as JSON text).
fn scalars(value: &Value) -> BTreeMap<String, String> {
    let Some(map) = value.as_object() else {
        return BTreeMap::new();
    };
    map.iter()
        .filter(|(_, v)| !v.is_object() && !v.is_array() && !v.is_null())
        .map(|(k, v)| {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            (k.clone(), text)
        })
        .collect()
}

fn digest(
    rd: &ResourceDescriptor,
    algorithm: &'static str,
    field: &str,
) -> Result<String, BomError> {
    let value = rd
        .digest
        .get(algorithm)
        .ok_or_else(|| BomError::MissingDigest {
            field: field.to_string(),
            algorithm,
        })?;
    if !is_hex64(value) {
        return Err(BomError::BadDigest {
            field: field.to_string(),
            algorithm: algorithm.to_string(),
            value: value.clone(),
        });
    }
    Ok(value.clone())
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `2026-01-02T03:04:05.123Z` → `2026-01-02T03:04:05Z` (SPDX 3 allows no fraction).
fn to_seconds(time: &str) -> String {
    match (time.find('.'), time.strip_suffix('Z')) {
        (Some(dot), Some(_)) => format!("{}Z", &time[..dot]),
        _ => time.to_string(),
    }
}

/// A UUID (RFC 9562 version 8, "custom") made from the first 16 bytes of a SHA-256 given in
/// hex: the same statement always names its documents the same way. Falls back to the nil
/// UUID's shape with zeros if `sha256_hex` is too short or not hex.
pub fn document_uuid(sha256_hex: &str) -> String {
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = sha256_hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_version_8_and_stable() {
        let id = document_uuid(&"f".repeat(64));
        assert_eq!(id, "ffffffff-ffff-8fff-bfff-ffffffffffff");
        assert_eq!(
            document_uuid(&"0".repeat(64)),
            "00000000-0000-8000-8000-000000000000"
        );
    }

    #[test]
    fn fractions_of_seconds_are_dropped() {
        assert_eq!(
            to_seconds("2026-01-02T03:04:05.123Z"),
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(to_seconds("2026-01-02T03:04:05Z"), "2026-01-02T03:04:05Z");
    }

    #[test]
    fn params_become_strings() {
        let params = scalars(&serde_json::json!({"lr": "3e-4", "r": 8, "x": {"a": 1}}));
        assert_eq!(params.get("lr").map(String::as_str), Some("3e-4"));
        assert_eq!(params.get("r").map(String::as_str), Some("8"));
        assert!(!params.contains_key("x"));
    }
}
