//! Deploy policies: which signed training runs may go where.
//!
//! A policy is a TOML file; this module parses it ([`Policy::from_toml`]) and evaluates it over
//! an authenticated Statement ([`Policy::evaluate`]), returning **every** rule that failed, each
//! with what it expected and what it found ([`Violation`]). It does no I/O: the caller loads the
//! keys the policy names (paths are relative to the policy file), reads the snapshot manifests
//! of the inputs from its registry and checks approvals (see [`crate::vsa`]).
//!
//! # Format, version 1
//!
//! Every table and field is optional; a rule without a value is not checked. Unknown fields
//! are errors, so a misspelt rule cannot be silently ignored.
//!
//! ```toml
//! version = 1
//!
//! [signers]
//! keys = ["keys/signer.pub"]          # trusted signer keys, relative to this file
//! threshold = 1                       # distinct keys that must have signed [default 1]
//!
//! [build]
//! builder_ids = ["https://trainprov.dev/builder/trainprov"]        # any of these
//! build_types = ["https://trainprov.dev/buildtypes/candle-lora/v1"] # any of these
//! require_clean_tree = true           # the `code` dependency must not be dirty
//! max_age = "30d"                     # since runDetails.metadata.finishedOn; s, m, h, d, w
//!
//! [inputs]
//! allowed_base_models = ["blake3:…"]  # every `base` input must be one of these snapshots
//! forbidden_datasets = ["sha256:…"]   # no input snapshot may be one of these
//! forbidden_files = ["blake3:…"]      # no file inside an input (nor subject, config) may be
//! require_data_check = true           # internalParameters.dataCheck.status must be "passed"
//!                                     # (every file of every --data input checked, no findings)
//!
//! [environments.prod]
//! approvers = ["keys/release-manager.pub"]
//! required_approvals = 1              # distinct approver keys [default 1]
//! ```
//!
//! Digests are `sha256:<64 hex>`, `blake3:<64 hex>` or bare 64 hex digits (compared with
//! either algorithm). A snapshot digest is what `trainprov snapshot DIR` prints (`blake3`, the
//! snapshot digest, and `sha256`, of its manifest); the same pair is the `digest` of the input's
//! entry in `resolvedDependencies`. An input recorded through symlinks (a Hugging Face hub cache)
//! also matches by its `contentDigest` annotation, the digest of a flat copy of the same files,
//! so a base model pinned from `trainprov snapshot` of a saved copy still matches its hub-cache
//! snapshot. Snapshot manifests record one BLAKE3 per file, so
//! `forbidden_files` takes `blake3:` or bare digests (`b3sum FILE`), never `sha256:`.
//!
//! ```
//! use attest::policy::Policy;
//! let policy = Policy::from_toml("[build]\nrequire_clean_tree = true\nmax_age = \"7d\"\n")?;
//! assert!(policy.build.require_clean_tree);
//! let typo = Policy::from_toml("[build]\nrequire_clean_three = true\n").unwrap_err();
//! assert!(typo.to_string().contains("require_clean_three"), "{typo}");
//! # Ok::<(), attest::policy::PolicyError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::statement::{DigestSet, Statement};
use crate::Verified;

/// The only policy format version.
pub const POLICY_VERSION: u32 = 1;

/// Why a policy file is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not TOML of the policy's shape (the parser's message names the line and the field).
    #[error("{0}")]
    Syntax(String),
    /// A field has a value the policy cannot use.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as `table.field`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// A parsed policy (see the module docs for the format).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Format version; only [`POLICY_VERSION`].
    #[serde(default = "default_version")]
    pub version: u32,
    /// Trusted signer keys.
    #[serde(default)]
    pub signers: Signers,
    /// Rules on how the artifact was built.
    #[serde(default)]
    pub build: BuildRules,
    /// Rules on what went into it.
    #[serde(default)]
    pub inputs: InputRules,
    /// Approvals required per deploy environment.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentRules>,
}

/// `[signers]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signers {
    /// Public key files (SPKI PEM), relative to the policy file.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    /// Distinct trusted keys that must have signed [default 1].
    #[serde(default = "one")]
    pub threshold: usize,
}

impl Default for Signers {
    fn default() -> Signers {
        Signers {
            keys: Vec::new(),
            threshold: 1,
        }
    }
}

/// `[build]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRules {
    /// `runDetails.builder.id` must be one of these (when non-empty).
    #[serde(default)]
    pub builder_ids: Vec<String>,
    /// `buildDefinition.buildType` must be one of these (when non-empty).
    #[serde(default)]
    pub build_types: Vec<String>,
    /// The recorded git tree must have had no uncommitted changes.
    #[serde(default)]
    pub require_clean_tree: bool,
    /// Largest age of the run, from `runDetails.metadata.finishedOn`.
    #[serde(default)]
    pub max_age: Option<MaxAge>,
}

/// `[inputs]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRules {
    /// Every `base` input must be one of these snapshots (when non-empty).
    #[serde(default)]
    pub allowed_base_models: Vec<DigestRef>,
    /// No input snapshot may be one of these.
    #[serde(default)]
    pub forbidden_datasets: Vec<DigestRef>,
    /// No file inside an input snapshot, subject or other dependency may have these digests.
    #[serde(default)]
    pub forbidden_files: Vec<DigestRef>,
    /// `internalParameters.dataCheck.status` must be `passed` (with `uncheckedFiles` 0):
    /// `partial` (files not checked), `skipped` and `failed` do not pass.
    #[serde(default)]
    pub require_data_check: bool,
}

/// `[environments.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRules {
    /// Approver public keys, relative to the policy file.
    pub approvers: Vec<PathBuf>,
    /// Distinct approver keys whose approval is needed [default 1].
    #[serde(default = "one")]
    pub required_approvals: usize,
    /// Count only approvals made under this exact policy file (same SHA-256), so that changing
    /// the policy calls for new approvals [default: false].
    #[serde(default)]
    pub same_policy: bool,
}

fn default_version() -> u32 {
    POLICY_VERSION
}

fn one() -> usize {
    1
}

/// A digest as a policy or a user writes it: `sha256:<hex>`, `blake3:<hex>` or bare hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DigestRef {
    /// `sha256` or `blake3`; `None` for bare hex (either algorithm).
    pub algorithm: Option<String>,
    /// 64 lowercase hex digits.
    pub hex: String,
}

impl DigestRef {
    /// Parses `sha256:<hex>`, `blake3:<hex>` or 64 bare hex digits (any case).
    pub fn parse(text: &str) -> Result<DigestRef, String> {
        let (algorithm, hex) = match text.split_once(':') {
            Some((algorithm, hex)) => (Some(algorithm.to_ascii_lowercase()), hex),
            None => (None, text),
        };
        if let Some(a) = &algorithm {
            if a != "sha256" && a != "blake3" {
                return Err(format!(
                    "'{text}': unknown digest algorithm '{a}' (use sha256:, blake3: or bare hex)"
                ));
            }
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("'{text}': expected 64 hex digits"));
        }
        Ok(DigestRef {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// Whether a digest set has this digest (under its algorithm, or either for bare hex).
    pub fn matches(&self, set: &DigestSet) -> bool {
        match &self.algorithm {
            Some(a) => set
                .get(a)
                .is_some_and(|v| v.eq_ignore_ascii_case(&self.hex)),
            None => ["sha256", "blake3"].iter().any(|a| {
                set.get(*a)
                    .is_some_and(|v| v.eq_ignore_ascii_case(&self.hex))
            }),
        }
    }

    /// Whether a file recorded only by its BLAKE3 (in a snapshot manifest) has this digest.
    pub fn matches_blake3(&self, blake3: &str) -> bool {
        self.algorithm.as_deref() != Some("sha256") && blake3.eq_ignore_ascii_case(&self.hex)
    }
}

impl TryFrom<String> for DigestRef {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        DigestRef::parse(&text)
    }
}

impl From<DigestRef> for String {
    fn from(d: DigestRef) -> String {
        d.to_string()
    }
}

impl fmt::Display for DigestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.algorithm {
            Some(a) => write!(f, "{a}:{}", self.hex),
            None => f.write_str(&self.hex),
        }
    }
}

/// A maximum age such as `"90m"`, `"12h"`, `"30d"` or `"2w"` (also `"3600s"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MaxAge {
    /// As written.
    pub text: String,
    /// As a duration.
    pub duration: Duration,
}

impl TryFrom<String> for MaxAge {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad =
            || format!("'{text}': expected a number and a unit (s, m, h, d, w), e.g. \"30d\"");
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let number: i64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        let duration = number
            .checked_mul(seconds)
            .map(Duration::seconds)
            .ok_or_else(bad)?;
        Ok(MaxAge { text, duration })
    }
}

/// `line N: message` from a TOML error (its multi-line rendering does not fit one line).
fn syntax_error(text: &str, error: &toml::de::Error) -> PolicyError {
    let message = error.message().trim_end().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            PolicyError::Syntax(format!("line {line}: {message}"))
        }
        None => PolicyError::Syntax(message),
    }
}

impl Policy {
    /// Parses and validates a policy.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let invalid = |field: &str, reason: String| PolicyError::Invalid {
            field: field.to_string(),
            reason,
        };
        if self.version != POLICY_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "{} is not supported (this trainprov reads version {POLICY_VERSION})",
                    self.version
                ),
            ));
        }
        if self.signers.threshold == 0 {
            return Err(invalid("signers.threshold", "must be at least 1".into()));
        }
        if !self.signers.keys.is_empty() && self.signers.threshold > self.signers.keys.len() {
            return Err(invalid(
                "signers.threshold",
                format!(
                    "{} cannot be met with {} key(s)",
                    self.signers.threshold,
                    self.signers.keys.len()
                ),
            ));
        }
        if let Some(d) = self
            .inputs
            .forbidden_files
            .iter()
            .find(|d| d.algorithm.as_deref() == Some("sha256"))
        {
            return Err(invalid(
                "inputs.forbidden_files",
                format!(
                    "'{d}': snapshot manifests record each file's BLAKE3 only; give blake3:<hex> \
                     (`b3sum FILE`)"
                ),
            ));
        }
        for (name, env) in &self.environments {
            let field = format!("environments.{name}");
            if env.approvers.is_empty() {
                return Err(invalid(
                    &format!("{field}.approvers"),
                    "lists no keys".into(),
                ));
            }
            if env.required_approvals == 0 || env.required_approvals > env.approvers.len() {
                return Err(invalid(
                    &format!("{field}.required_approvals"),
                    format!(
                        "{} cannot be met with {} approver key(s)",
                        env.required_approvals,
                        env.approvers.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether evaluating needs the files of each input snapshot ([`Facts::manifests`]).
    pub fn needs_manifests(&self) -> bool {
        !self.inputs.forbidden_files.is_empty()
    }

    /// Evaluates every rule; an empty list means the policy is met. The approval rule is
    /// evaluated only when `facts.approvals` is given.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Vec<Violation> {
        let statement: &Statement<Value> = facts.statement;
        let predicate = &statement.predicate;
        let mut out = Vec::new();
        let signed = facts.statement.signed_by().len();
        if signed < self.signers.threshold {
            out.push(Violation::new(
                "signers",
                format!("{} distinct trusted signer(s)", self.signers.threshold),
                signed.to_string(),
            ));
        }
        self.check_build(predicate, facts.now, &mut out);
        self.check_inputs(statement, facts.manifests, &mut out);
        self.check_data(predicate, &mut out);
        if let Some(tally) = facts.approvals {
            self.check_approvals(tally, &mut out);
        }
        out
    }

    fn check_build(&self, predicate: &Value, now: OffsetDateTime, out: &mut Vec<Violation>) {
        let rules = &self.build;
        let builder = predicate["runDetails"]["builder"]["id"].as_str();
        if !rules.builder_ids.is_empty()
            && !builder.is_some_and(|b| rules.builder_ids.iter().any(|x| x == b))
        {
            out.push(Violation::new(
                "builder_id",
                one_of(&rules.builder_ids),
                builder.unwrap_or("no builder.id recorded").to_string(),
            ));
        }
        let build_type = predicate["buildDefinition"]["buildType"].as_str();
        if !rules.build_types.is_empty()
            && !build_type.is_some_and(|b| rules.build_types.iter().any(|x| x == b))
        {
            out.push(Violation::new(
                "build_type",
                one_of(&rules.build_types),
                build_type.unwrap_or("no buildType recorded").to_string(),
            ));
        }
        if rules.require_clean_tree {
            let code = dependencies(predicate).find(|d| d["name"] == "code");
            let found = match code.map(|c| &c["annotations"]) {
                None => Some("no code dependency recorded".to_string()),
                Some(a) if a["dirty"] == Value::Bool(false) => None,
                Some(a) if a["dirty"] == Value::Bool(true) => {
                    let paths: Vec<&str> = a["changedPaths"]
                        .as_array()
                        .map(|p| p.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    Some(format!(
                        "uncommitted changes in {} path(s){}",
                        paths.len(),
                        preview(&paths)
                    ))
                }
                Some(_) => Some("the code dependency does not say whether it was dirty".into()),
            };
            if let Some(found) = found {
                out.push(Violation::new(
                    "clean_tree",
                    "no uncommitted changes",
                    found,
                ));
            }
        }
        if let Some(max) = &rules.max_age {
            let metadata = &predicate["runDetails"]["metadata"];
            let finished = metadata["finishedOn"]
                .as_str()
                .or(metadata["startedOn"].as_str());
            let found = match finished.map(|t| (t, OffsetDateTime::parse(t, &Rfc3339))) {
                None => Some("no finishedOn recorded".to_string()),
                Some((t, Err(_))) => Some(format!("finishedOn '{t}' is not RFC 3339")),
                Some((t, Ok(at))) if now - at > max.duration => {
                    Some(format!("finished {t}, {} ago", human_duration(now - at)))
                }
                Some(_) => None,
            };
            if let Some(found) = found {
                out.push(Violation::new(
                    "max_age",
                    format!("at most {} old", max.text),
                    found,
                ));
            }
        }
    }

    fn check_inputs(
        &self,
        statement: &Statement<Value>,
        manifests: &BTreeMap<String, Vec<ManifestFile>>,
        out: &mut Vec<Violation>,
    ) {
        let inputs = input_dependencies(&statement.predicate);
        self.check_base_models(&inputs, out);
        for input in &inputs {
            if let Some(d) = self.inputs.forbidden_datasets.iter().find(|d| input.is(d)) {
                out.push(Violation::new(
                    "forbidden_dataset",
                    format!("no input {d}"),
                    format!("{} {}", input.name, digests(&input.digest)),
                ));
            }
        }
        if !self.inputs.forbidden_files.is_empty() {
            self.check_input_files(&inputs, manifests, out);
            self.check_other_files(statement, out);
        }
    }

    /// Every `role: base` input is an allowed base model (and there is one).
    fn check_base_models(&self, inputs: &[InputDependency], out: &mut Vec<Violation>) {
        let allowed = &self.inputs.allowed_base_models;
        if allowed.is_empty() {
            return;
        }
        let bases: Vec<&InputDependency> = inputs.iter().filter(|d| d.role == "base").collect();
        if bases.is_empty() {
            out.push(Violation::new(
                "base_model",
                one_of(allowed),
                "no base model recorded",
            ));
        }
        for base in bases {
            if !allowed.iter().any(|d| base.is(d)) {
                out.push(Violation::new(
                    "base_model",
                    one_of(allowed),
                    format!("{} {}", base.name, digests(&base.digest)),
                ));
            }
        }
    }

    /// No file inside an input snapshot is forbidden; an input whose manifest is not
    /// available fails the rule (closed, not open).
    fn check_input_files(
        &self,
        inputs: &[InputDependency],
        manifests: &BTreeMap<String, Vec<ManifestFile>>,
        out: &mut Vec<Violation>,
    ) {
        let forbidden = &self.inputs.forbidden_files;
        for input in inputs {
            let Some(files) = manifests.get(&input.name) else {
                out.push(Violation::new(
                    "forbidden_file",
                    format!("no file {}", one_of(forbidden)),
                    format!(
                        "cannot check {}: its snapshot manifest (object {}) is not available; \
                         verify against the registry that recorded the run",
                        input.name,
                        input
                            .manifest_object
                            .as_deref()
                            .unwrap_or("not named in the record")
                    ),
                ));
                continue;
            };
            for file in files {
                if let Some(d) = forbidden.iter().find(|d| d.matches_blake3(&file.blake3)) {
                    out.push(Violation::new(
                        "forbidden_file",
                        format!("no file {d}"),
                        format!("{}/{} (blake3 {})", input.name, file.path, file.blake3),
                    ));
                }
            }
        }
    }

    /// No subject, and no config, lock file or patch dependency, is a forbidden file.
    fn check_other_files(&self, statement: &Statement<Value>, out: &mut Vec<Violation>) {
        let subjects = statement
            .subject
            .iter()
            .map(|s| ("subject", s.name.clone(), &s.digest));
        let deps: Vec<(String, DigestSet)> = dependencies(&statement.predicate)
            .filter(|d| d["annotations"]["role"].is_null())
            .filter_map(|d| {
                let set: DigestSet = serde_json::from_value(d["digest"].clone()).ok()?;
                Some((d["name"].as_str().unwrap_or_default().to_string(), set))
            })
            .collect();
        let all = subjects.chain(deps.iter().map(|(n, s)| ("dependency", Some(n.clone()), s)));
        for (what, name, set) in all {
            if let Some(d) = self.inputs.forbidden_files.iter().find(|d| d.matches(set)) {
                out.push(Violation::new(
                    "forbidden_file",
                    format!("no file {d}"),
                    format!("{what} {}", name.unwrap_or_default()),
                ));
            }
        }
    }

    fn check_approvals(&self, tally: &ApprovalTally, out: &mut Vec<Violation>) {
        let Some(rules) = self.environments.get(&tally.environment) else {
            return;
        };
        let accepted: BTreeSet<&String> = tally.accepted.iter().collect();
        if accepted.len() >= rules.required_approvals {
            return;
        }
        let mut found = format!("{} valid approval(s)", accepted.len());
        if !accepted.is_empty() {
            let keys: Vec<&str> = accepted.iter().map(|k| k.as_str()).collect();
            found.push_str(&format!(" (keyid {})", keys.join(", ")));
        }
        for ignored in &tally.ignored {
            found.push_str(&format!("; ignored {ignored}"));
        }
        out.push(Violation::new(
            "approvals",
            format!(
                "{} approval(s) for '{}' by distinct approver keys",
                rules.required_approvals, tally.environment
            ),
            found,
        ));
    }

    fn check_data(&self, predicate: &Value, out: &mut Vec<Violation>) {
        if !self.inputs.require_data_check {
            return;
        }
        let check = &predicate["buildDefinition"]["internalParameters"]["dataCheck"];
        let unchecked = check["uncheckedFiles"].as_u64();
        let found = match check["status"].as_str() {
            // `partial` and `skipped` (files not checked) fail like `failed`; a `passed` without
            // `uncheckedFiles` was recorded before the check covered every file.
            Some("passed") if unchecked == Some(0) => return,
            Some("passed") => "data check passed without counting unchecked files (recorded \
                               before trainprov checked every file of an input); record the \
                               run again"
                .to_string(),
            Some(status) => {
                let mut parts = Vec::new();
                if let Some(n) = check["findings"].as_u64() {
                    parts.push(format!("{n} finding(s)"));
                }
                if let Some(n) = unchecked.filter(|n| *n > 0) {
                    let names: Vec<&str> = check["inputs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|i| i["unchecked"].as_array().into_iter().flatten())
                        .filter_map(|u| u["file"].as_str())
                        .take(5)
                        .collect();
                    parts.push(match names.is_empty() {
                        true => format!("{n} file(s) not checked"),
                        false => format!("{n} file(s) not checked: {}", names.join(", ")),
                    });
                }
                match parts.is_empty() {
                    true => format!("data check {status}"),
                    false => format!("data check {status} ({})", parts.join("; ")),
                }
            }
            None if check.is_null() => "no data check recorded".to_string(),
            None => "data check without a status".to_string(),
        };
        out.push(Violation::new("data_check", "data check passed", found));
    }
}

/// One failed rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// `signers`, `builder_id`, `build_type`, `clean_tree`, `max_age`, `base_model`,
    /// `forbidden_dataset`, `forbidden_file`, `data_check`, `approvals` (callers add their own,
    /// such as `revocation`).
    pub rule: String,
    /// What the policy asks for.
    pub expected: String,
    /// What the attestation has.
    pub found: String,
}

impl Violation {
    /// A violation of `rule`.
    pub fn new(rule: &str, expected: impl Into<String>, found: impl Into<String>) -> Violation {
        Violation {
            rule: rule.to_string(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.rule, self.expected, self.found
        )
    }
}

/// One file of an input snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path inside the snapshot.
    pub path: String,
    /// Its BLAKE3 (lowercase hex).
    pub blake3: String,
}

/// Approvals found for one environment, already checked ([`crate::vsa::check_approval`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalTally {
    /// The environment (`--env`).
    pub environment: String,
    /// keyids of approver keys with a valid approval.
    pub accepted: Vec<String>,
    /// Approvals that do not count, each with its source and why.
    pub ignored: Vec<String>,
}

/// What a policy is evaluated over.
pub struct Facts<'a> {
    /// The authenticated attestation.
    pub statement: &'a Verified<Statement<Value>>,
    /// Files of each input snapshot, by dependency name (`data:./data`); a missing entry fails
    /// `forbidden_files` closed.
    pub manifests: &'a BTreeMap<String, Vec<ManifestFile>>,
    /// The current time (for `max_age`).
    pub now: OffsetDateTime,
    /// The approvals for the environment being deployed to, if one is.
    pub approvals: Option<&'a ApprovalTally>,
}

/// A `--data`, `--base` or `--adapter` snapshot among `resolvedDependencies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDependency {
    /// `data:./data`, `base:./base`, ...
    pub name: String,
    /// `data`, `base` or `adapter`.
    pub role: String,
    /// The snapshot digest (`blake3`) and its manifest's `sha256`.
    pub digest: DigestSet,
    /// BLAKE3 of the manifest in the recording registry's object store.
    pub manifest_object: Option<String>,
    /// The `contentDigest` annotation: the snapshot digest of the same files without symlinks
    /// (a hub-cache snapshot is then the same model as a flat copy).
    pub content_digest: Option<DigestSet>,
}

impl InputDependency {
    /// Whether `d` names this snapshot: its digest or its content digest.
    fn is(&self, d: &DigestRef) -> bool {
        d.matches(&self.digest) || self.content_digest.as_ref().is_some_and(|c| d.matches(c))
    }
}

/// The input snapshots of a SLSA Provenance predicate (dependencies with a `role` annotation).
pub fn input_dependencies(predicate: &Value) -> Vec<InputDependency> {
    dependencies(predicate)
        .filter_map(|d| {
            let role = d["annotations"]["role"].as_str()?;
            Some(InputDependency {
                name: d["name"].as_str().unwrap_or_default().to_string(),
                role: role.to_string(),
                digest: serde_json::from_value(d["digest"].clone()).unwrap_or_default(),
                manifest_object: d["annotations"]["manifestObject"]
                    .as_str()
                    .map(str::to_string),
                content_digest: serde_json::from_value(d["annotations"]["contentDigest"].clone())
                    .ok(),
            })
        })
        .collect()
}

fn dependencies(predicate: &Value) -> impl Iterator<Item = &Value> {
    predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .into_iter()
        .flatten()
}

fn one_of<T: fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(T::to_string).collect();
    match items.as_slice() {
        [one] => one.clone(),
        _ => format!("one of [{}]", items.join(", ")),
    }
}

fn digests(set: &DigestSet) -> String {
    let parts: Vec<String> = set.iter().map(|(a, v)| format!("{a}:{v}")).collect();
    format!("({})", parts.join(", "))
}

fn preview(paths: &[&str]) -> String {
    match paths {
        [] => String::new(),
        _ if paths.len() <= 3 => format!(": {}", paths.join(", ")),
        _ => format!(": {}, …", paths[..3].join(", ")),
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.whole_seconds();
    if s >= 86_400 {
        format!("{}d {}h", s / 86_400, (s % 86_400) / 3600)
    } else if s >= 3600 {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::{digest_set_of, ResourceDescriptor};
    use serde_json::json;

    const NOW: &str = "2026-03-01T00:00:00Z";

    fn statement(predicate: Value, signers: usize) -> Verified<Statement<Value>> {
        let subject = vec![ResourceDescriptor::named(
            "adapter.safetensors",
            digest_set_of(b"w"),
        )];
        let signed_by = (0..signers).map(|i| format!("key{i}")).collect();
        Verified::new(
            Statement::new(subject, "https://slsa.dev/provenance/v1", predicate),
            signed_by,
        )
    }

    /// A train-like predicate: clean code, a base model, one dataset, a passed data check.
    fn predicate(dirty: bool, data_check: Value) -> Value {
        json!({
            "buildDefinition": {
                "buildType": "https://trainprov.dev/buildtypes/candle-lora/v1",
                "internalParameters": {"dataCheck": data_check},
                "resolvedDependencies": [
                    {"name": "code", "digest": {"gitCommit": "abc"},
                     "annotations": {"dirty": dirty, "changedPaths": if dirty { json!(["train.py"]) } else { json!([]) }}},
                    {"name": "base:./base", "digest": digest_set_of(b"base-manifest"),
                     "annotations": {"role": "base", "manifestObject": "m-base"}},
                    {"name": "data:./data", "digest": digest_set_of(b"data-manifest"),
                     "annotations": {"role": "data", "manifestObject": "m-data"}}
                ]
            },
            "runDetails": {
                "builder": {"id": "https://trainprov.dev/builder/trainprov"},
                "metadata": {"startedOn": "2026-02-27T00:00:00Z", "finishedOn": "2026-02-28T00:00:00Z"}
            }
        })
    }

    fn manifests(poisoned: bool) -> BTreeMap<String, Vec<ManifestFile>> {
        let file = |path: &str, bytes: &[u8]| ManifestFile {
            path: path.into(),
            blake3: blake3::hash(bytes).to_hex().to_string(),
        };
        let mut data = vec![file("shard-001.jsonl", b"clean")];
        if poisoned {
            data.push(file("shard-002.jsonl", b"poison"));
        }
        BTreeMap::from([
            (
                "base:./base".to_string(),
                vec![file("model.safetensors", b"m")],
            ),
            ("data:./data".to_string(), data),
        ])
    }

    fn evaluate(
        policy: &str,
        statement: &Verified<Statement<Value>>,
        manifests: &BTreeMap<String, Vec<ManifestFile>>,
        approvals: Option<&ApprovalTally>,
    ) -> Vec<String> {
        let policy = Policy::from_toml(policy).expect("policy parses");
        let facts = Facts {
            statement,
            manifests,
            now: OffsetDateTime::parse(NOW, &Rfc3339).expect("now"),
            approvals,
        };
        policy
            .evaluate(&facts)
            .into_iter()
            .map(|v| v.rule)
            .collect()
    }

    fn b3(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    /// Issue 11: a data check that did not read every file (`partial`, `skipped`), or a
    /// `passed` recorded without counting unchecked files, fails `require_data_check`, and the
    /// violation names the unchecked files.
    #[test]
    fn issue11_data_check_partial_skipped_or_uncounted_fails() {
        let policy = Policy::from_toml("[inputs]\nrequire_data_check = true\n").expect("parses");
        let found = |check: Value| -> Vec<String> {
            let st = statement(predicate(false, check), 1);
            let facts = Facts {
                statement: &st,
                manifests: &manifests(false),
                now: OffsetDateTime::parse(NOW, &Rfc3339).expect("now"),
                approvals: None,
            };
            policy
                .evaluate(&facts)
                .into_iter()
                .map(|v| format!("{}: {}", v.rule, v.found))
                .collect()
        };
        assert_eq!(
            found(json!({"status": "passed", "findings": 0, "uncheckedFiles": 0})),
            Vec::<String>::new()
        );
        let partial = json!({"status": "partial", "findings": 0, "uncheckedFiles": 2,
            "inputs": [{"input": "data", "status": "partial",
                        "unchecked": [{"file": "sub/x.parquet"}, {"file": "y.txt"}]}]});
        assert_eq!(
            found(partial),
            vec![
                "data_check: data check partial (0 finding(s); 2 file(s) not checked: \
                  sub/x.parquet, y.txt)"
            ]
        );
        assert_eq!(
            found(json!({"status": "skipped", "findings": 0, "uncheckedFiles": 1})),
            vec!["data_check: data check skipped (0 finding(s); 1 file(s) not checked)"]
        );
        let old = found(json!({"status": "passed", "findings": 0}));
        assert!(
            old.len() == 1 && old[0].contains("without counting unchecked files"),
            "{old:?}"
        );
    }

    /// Each rule: a policy, then whether it holds for the good statement and for the bad one.
    #[test]
    fn each_rule_passes_and_fails() {
        let good = statement(
            predicate(
                false,
                json!({"status": "passed", "findings": 0, "uncheckedFiles": 0}),
            ),
            2,
        );
        let bad = statement(
            predicate(true, json!({"status": "failed", "findings": 3})),
            1,
        );
        let clean = manifests(false);
        let poisoned = manifests(true);
        let base_sha = digest_set_of(b"base-manifest")["sha256"].clone();
        let data_b3 = digest_set_of(b"data-manifest")["blake3"].clone();
        let cases: Vec<(&str, String)> = vec![
            ("signers", "[signers]\nthreshold = 2\n".into()),
            ("clean_tree", "[build]\nrequire_clean_tree = true\n".into()),
            ("data_check", "[inputs]\nrequire_data_check = true\n".into()),
        ];
        for (rule, policy) in &cases {
            assert_eq!(
                evaluate(policy, &good, &clean, None),
                Vec::<String>::new(),
                "{rule} passes"
            );
            assert_eq!(
                evaluate(policy, &bad, &clean, None),
                vec![rule.to_string()],
                "{rule} fails"
            );
        }
        // Rules whose failing case is a different policy over the same statement.
        let pairs: Vec<(&str, String, String)> = vec![
            (
                "builder_id",
                "[build]\nbuilder_ids = [\"https://trainprov.dev/builder/trainprov\"]\n".into(),
                "[build]\nbuilder_ids = [\"https://ci.example/builder\"]\n".into(),
            ),
            (
                "build_type",
                "[build]\nbuild_types = [\"https://trainprov.dev/buildtypes/candle-lora/v1\"]\n"
                    .into(),
                "[build]\nbuild_types = [\"https://trainprov.dev/buildtypes/run/v1\"]\n".into(),
            ),
            (
                "max_age",
                "[build]\nmax_age = \"2d\"\n".into(),
                "[build]\nmax_age = \"12h\"\n".into(),
            ),
            (
                "base_model",
                format!("[inputs]\nallowed_base_models = [\"sha256:{base_sha}\"]\n"),
                format!(
                    "[inputs]\nallowed_base_models = [\"sha256:{}\"]\n",
                    "0".repeat(64)
                ),
            ),
            (
                "forbidden_dataset",
                format!("[inputs]\nforbidden_datasets = [\"{}\"]\n", "1".repeat(64)),
                format!("[inputs]\nforbidden_datasets = [\"blake3:{data_b3}\"]\n"),
            ),
        ];
        for (rule, pass, fail) in &pairs {
            assert_eq!(
                evaluate(pass, &good, &clean, None),
                Vec::<String>::new(),
                "{rule} passes"
            );
            assert_eq!(
                evaluate(fail, &good, &clean, None),
                vec![rule.to_string()],
                "{rule} fails"
            );
        }
        let files = format!(
            "[inputs]\nforbidden_files = [\"blake3:{}\"]\n",
            b3(b"poison")
        );
        assert!(evaluate(&files, &good, &clean, None).is_empty());
        assert_eq!(
            evaluate(&files, &good, &poisoned, None),
            vec!["forbidden_file"]
        );
    }

    #[test]
    fn every_failed_rule_is_listed_with_what_was_found() {
        let bad = statement(predicate(true, Value::Null), 1);
        let policy = Policy::from_toml(&format!(
            "[signers]\nthreshold = 1\n[build]\nbuild_types = [\"x:y\"]\nrequire_clean_tree = true\nmax_age = \"1h\"\n\
             [inputs]\nrequire_data_check = true\nforbidden_files = [\"{}\"]\n",
            b3(b"poison")
        ))
        .expect("parses");
        let manifests = manifests(true);
        let facts = Facts {
            statement: &bad,
            manifests: &manifests,
            now: OffsetDateTime::parse(NOW, &Rfc3339).expect("now"),
            approvals: None,
        };
        let found: Vec<(String, String)> = policy
            .evaluate(&facts)
            .into_iter()
            .map(|v| (v.rule, v.found))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "build_type".into(),
                    "https://trainprov.dev/buildtypes/candle-lora/v1".into()
                ),
                (
                    "clean_tree".into(),
                    "uncommitted changes in 1 path(s): train.py".into()
                ),
                (
                    "max_age".into(),
                    "finished 2026-02-28T00:00:00Z, 1d 0h ago".into()
                ),
                (
                    "forbidden_file".into(),
                    format!("data:./data/shard-002.jsonl (blake3 {})", b3(b"poison"))
                ),
                ("data_check".into(), "no data check recorded".into()),
            ]
        );
    }

    #[test]
    fn missing_manifest_fails_closed() {
        let good = statement(predicate(false, json!({"status": "passed"})), 1);
        let policy = format!("[inputs]\nforbidden_files = [\"{}\"]\n", b3(b"poison"));
        let only_base = BTreeMap::from([("base:./base".to_string(), Vec::new())]);
        let policy = Policy::from_toml(&policy).expect("parses");
        let facts = Facts {
            statement: &good,
            manifests: &only_base,
            now: OffsetDateTime::parse(NOW, &Rfc3339).expect("now"),
            approvals: None,
        };
        let violations = policy.evaluate(&facts);
        assert_eq!(violations.len(), 1);
        assert!(
            violations[0].found.contains("data:./data") && violations[0].found.contains("m-data"),
            "{}",
            violations[0]
        );
    }

    #[test]
    fn approvals_count_distinct_accepted_keys() {
        let good = statement(predicate(false, json!({"status": "passed"})), 1);
        let policy =
            "[environments.prod]\napprovers = [\"a.pub\", \"b.pub\"]\nrequired_approvals = 2\n";
        let mut tally = ApprovalTally {
            environment: "prod".into(),
            accepted: vec!["ka".into(), "ka".into()],
            ignored: vec!["rogue.json: not signed by an approver key".into()],
        };
        assert_eq!(
            evaluate(policy, &good, &manifests(false), Some(&tally)),
            vec!["approvals"]
        );
        tally.accepted.push("kb".into());
        assert!(evaluate(policy, &good, &manifests(false), Some(&tally)).is_empty());
        assert!(
            evaluate(policy, &good, &manifests(false), None).is_empty(),
            "no --env: not checked"
        );
    }

    #[test]
    fn bad_policies_are_refused_with_the_field() {
        let cases = [
            (
                "[signers]\nkeys = [\"a.pub\"]\nthreshold = 2\n",
                "signers.threshold",
            ),
            ("[inputs]\nforbidden_files = [\"sha256:", "forbidden_files"),
            ("[inputs]\nforbidden_datasets = [\"md5:00\"]\n", "md5"),
            ("[build]\nmax_age = \"30 days\"\n", "30 days"),
            (
                "[environments.prod]\napprovers = []\n",
                "environments.prod.approvers",
            ),
            (
                "[environment.prod]\napprovers = [\"a.pub\"]\n",
                "environment",
            ),
            ("version = 2\n", "version"),
        ];
        for (text, needle) in cases {
            let text = if text.ends_with("\"sha256:") {
                format!("{text}{}\"]\n", "a".repeat(64))
            } else {
                text.to_string()
            };
            let err = Policy::from_toml(&text).expect_err(&text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let policy = Policy::from_toml(include_str!("../../examples/policy.toml")).expect("parses");
        assert_eq!(policy.environments["prod"].required_approvals, 1);
        assert!(policy.build.require_clean_tree && policy.inputs.require_data_check);
    }

    #[test]
    fn digest_refs_parse_and_match() {
        let hex = "AB".repeat(32);
        let bare = DigestRef::parse(&hex).expect("bare");
        assert_eq!(bare.to_string(), hex.to_ascii_lowercase());
        let mut set = DigestSet::new();
        set.insert("blake3".into(), hex.to_ascii_lowercase());
        assert!(bare.matches(&set));
        assert!(!DigestRef::parse(&format!("sha256:{hex}"))
            .expect("sha")
            .matches(&set));
        assert!(DigestRef::parse("sha256:abc").is_err());
    }
}
