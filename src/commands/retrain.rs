//! `trainprov retrain ATTESTATION`: rebuild a recorded run from its record, optionally without
//! some input files, and say whether the result is identical.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use attest::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use attest::keys::SigningKey;
use attest::slsa::PROVENANCE_V1;
use attest::statement::{ResourceDescriptor, Statement};
use recorder::environment::{self, EnvDifference, Environment, Severity};
use recorder::paths::registry_dir;
use recorder::process::Screen;
use recorder::record::{InputRole, RecordedFile, RUN_BUILD_TYPE};
use recorder::registry::{Registry, RunRelation};
use recorder::replay::{
    compare_products, filtered_copy, first_divergence, recorded_inputs, remap,
    require_new_or_empty, restore_code, rewrite_argv, ArgRewrite, Divergence, Exclusions,
    InputCheck, MappedPath, Originals, ProductComparison, RecordedLayout, ReplayRoot,
};
use recorder::runner::{execute, finalize, mark_failed, prepare, snapshot_input, RunSpec};
use serde_json::{json, Value};

use crate::cli::RetrainArgs;
use crate::commands::run::{sign_products, versions};
use crate::commands::shown;
use crate::commands::train::{train_and_record, TrainJob};
use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// The verified original record.
struct Original {
    path: PathBuf,
    sha256: String,
    statement: Statement<Value>,
}

impl Original {
    fn predicate(&self) -> &Value {
        &self.statement.predicate
    }
    fn invocation_id(&self) -> String {
        self.predicate()["runDetails"]["metadata"]["invocationId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    fn build_type(&self) -> &str {
        self.predicate()["buildDefinition"]["buildType"]
            .as_str()
            .unwrap_or_default()
    }
    fn external(&self) -> &Value {
        &self.predicate()["buildDefinition"]["externalParameters"]
    }
    /// The recorded working directory and repository root.
    fn layout(&self) -> RecordedLayout {
        let repo_root = recorder::replay::dependencies(self.predicate())
            .iter()
            .find(|d| d["name"] == "code")
            .and_then(|d| d["annotations"]["root"].as_str())
            .and_then(recorder::redact::recorded_path);
        RecordedLayout {
            cwd: PathBuf::from(recorder::redact::expand_home_dir(
                self.external()["cwd"].as_str().unwrap_or("/"),
            )),
            repo_root,
        }
    }
    fn byproduct_object(&self, name: &str) -> Option<String> {
        self.predicate()["runDetails"]["byproducts"]
            .as_array()?
            .iter()
            .find(|b| b["name"] == name)
            .and_then(|b| b["annotations"]["object"].as_str().map(str::to_string))
    }
}

/// Verifies, restores, re-runs, compares and signs.
pub fn run(args: &RetrainArgs) -> Result<Report, CliError> {
    let original = verify_original(args)?;
    let signing = crate::commands::signing_keys(&args.sign_keys)?;
    let roots = parse_roots(&args.data_roots)?;
    recorder::replay::check_supplied_configs(
        &recorder::replay::recorded_configs(original.predicate()),
        &parse_config_files(&args.config_files)?,
    )
    .or_input()?;
    let exclusions = Exclusions::new(&args.exclude).or_input()?;
    let cwd = std::env::current_dir().or_input()?;
    let mut registry = Registry::open(&registry_dir(args.registry.as_deref(), &cwd)).or_input()?;
    let originals = originals_of(&original, &roots);
    let (workdir, flag) = match &args.workdir {
        Some(dir) => (std::path::absolute(dir).or_input()?, "--workdir"),
        None => (
            fresh_dir(&registry.dir().join("retrain")),
            "the default work directory (pass --workdir DIR elsewhere)",
        ),
    };
    let out = checked_out(args, &originals, &workdir)?;
    let root = ReplayRoot::create(&workdir, flag, &originals).or_input()?;

    let overrides = parse_env_overrides(&args.env)?;
    if !overrides.is_empty() && original.build_type() != RUN_BUILD_TYPE {
        return Err(CliError::input(anyhow!(
            "--env applies to wrapped commands (recorded by `trainprov run`); the built-in \
             trainer runs inside trainprov: set the variable in the environment of `trainprov \
             retrain` instead"
        )));
    }
    let checks = check_inputs(&original, &roots, &registry, args.global.json)?;
    let mut replay = match original.build_type() {
        trainer::BUILD_TYPE => {
            let overridden = Vec::new();
            let env_differences = compare_environment(
                &original,
                &registry,
                &environment::capture(),
                &overridden,
                args.strict,
            )?;
            let mut replay = replay_trainer(
                args,
                &original,
                &checks,
                &exclusions,
                &root,
                out.as_deref(),
                &signing,
                &mut registry,
            )?;
            replay.env_differences = env_differences;
            replay
        }
        RUN_BUILD_TYPE => replay_wrapped(
            args,
            &original,
            &checks,
            &exclusions,
            &root,
            out.as_deref(),
            &signing,
            &mut registry,
            &overrides,
        )?,
        other => {
            return Err(CliError::input(anyhow!(
                "{}: buildType {other} cannot be replayed",
                shown(&original.path)
            )))
        }
    };
    check_original_untouched(args, &original)?;
    replay.comparison = compare_products(&original.statement.subject, &replay.products);
    if let (Some(old), Some(new)) = (
        original.byproduct_object("metrics.jsonl"),
        replay.metrics_object.clone(),
    ) {
        let read = |o: &str| {
            registry
                .objects()
                .get(o)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        if let (Some(a), Some(b)) = (read(&old), read(&new)) {
            replay.divergence = first_divergence(&a, &b);
        }
    }
    replay.settings = settings_differences(&original, &registry, &replay);
    let relation = relation_name(&exclusions);
    let verdict = verdict(&replay);
    registry
        .add_relation(&RunRelation {
            run_id: replay.run_id.clone(),
            relation: relation.into(),
            original_run_id: registry.resolve_run(&original.invocation_id()).ok(),
            original_statement_sha256: original.sha256.clone(),
            excluded: replay.excluded.clone(),
            outcome: Some(verdict.clone()),
        })
        .or_input()?;
    Ok(report(
        &original,
        &replay,
        &checks,
        relation,
        &verdict,
        &exclusions,
    ))
}

/// `--env NAME=VALUE` values: NAME must be one trainprov records (allow-listed and not secret),
/// or the record of the replay could not show the change.
fn parse_env_overrides(raw: &[String]) -> Result<Vec<(String, String)>, CliError> {
    raw.iter()
        .map(|item| {
            let (name, value) = item
                .split_once('=')
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| CliError::input(anyhow!("--env '{item}': expected NAME=VALUE")))?;
            if !recorder::redact::is_allowed_env_name(name)
                || recorder::redact::is_secret_name(name)
            {
                return Err(CliError::input(anyhow!(
                    "--env {name}=...: {name} is not a variable trainprov records (threads, \
                     determinism switches, interpreter, locale, toolchain; see \
                     recorder::redact::ENV_ALLOW_LIST), so the replay's record could not show it"
                )));
            }
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

/// The environment a run recorded (its `environment.json` byproduct), when this registry holds it.
fn recorded_environment(byproducts: Option<String>, registry: &Registry) -> Option<Environment> {
    let bytes = registry.objects().get(&byproducts?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The recorded settings that differ between the original run and its replay (both records'
/// environments), in [`environment::compare`]'s order.
fn settings_differences(
    original: &Original,
    registry: &Registry,
    replay: &Replay,
) -> Vec<EnvDifference> {
    let recorded = recorded_environment(original.byproduct_object("environment.json"), registry);
    let replayed = recorded_environment(replay.environment_object.clone(), registry);
    match (recorded, replayed) {
        (Some(recorded), Some(replayed)) => environment::compare(&recorded, &replayed),
        _ => Vec::new(),
    }
}

/// A directory under `parent` that does not exist yet, named by time and process.
fn fresh_dir(parent: &Path) -> PathBuf {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]");
    let stamp = time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default();
    let base = format!("{stamp}-{}", std::process::id());
    (0..)
        .map(|n| match n {
            0 => parent.join(&base),
            n => parent.join(format!("{base}-{n}")),
        })
        .find(|p| fs_err::symlink_metadata(p).is_err())
        .unwrap_or_else(|| parent.join(base))
}

/// What the replay must leave untouched: the original output directory, the attestation, the
/// recorded configs and the inputs (where recorded and where read now).
fn originals_of(original: &Original, roots: &[(PathBuf, PathBuf)]) -> Originals {
    let layout = original.layout();
    let mut originals = Originals::new();
    let out =
        recorder::redact::expand_home_dir(original.external()["out"].as_str().unwrap_or("out"));
    originals.protect("output directory", &layout.cwd.join(out));
    originals.protect("attestation", &original.path);
    if let Some(configs) = original.external()["configs"].as_object() {
        for name in configs.keys() {
            let name = recorder::redact::expand_home_dir(name);
            originals.protect("config", &layout.cwd.join(name));
        }
    }
    for input in recorded_inputs(original.predicate()) {
        originals.protect("input", &input.path);
        originals.protect("input", &remap(&input.path, roots));
    }
    originals
}

/// `--out`, when given: new or empty, and not (inside) the original or the work directory.
fn checked_out(
    args: &RetrainArgs,
    originals: &Originals,
    workdir: &Path,
) -> Result<Option<PathBuf>, CliError> {
    let Some(out) = &args.out else {
        return Ok(None);
    };
    let out = std::path::absolute(out).or_input()?;
    originals.check("--out", &out).or_input()?;
    if out.starts_with(workdir) || workdir.starts_with(&out) {
        return Err(CliError::input(anyhow!(
            "{}: --out overlaps the replay's work directory {}; pass a directory outside it",
            shown(&out),
            shown(workdir)
        )));
    }
    require_new_or_empty("--out", &out).or_input()?;
    Ok(Some(out))
}

/// The replay must not have changed the original attestation (a wrapped command could write
/// anywhere): checked by digest after the replay ran.
fn check_original_untouched(args: &RetrainArgs, original: &Original) -> Result<(), CliError> {
    let now = recorder::file_digest::sha256_file(&args.attestation).ok();
    if now.as_deref() != Some(original.sha256.as_str()) {
        return Err(CliError::failed(anyhow!(
            "{}: the original attestation changed while the replay ran (sha256 was {}); the \
             replayed command writes outside its work directory: restore the attestation from a \
             copy and inspect the command",
            shown(&args.attestation),
            original.sha256
        )));
    }
    Ok(())
}

fn verify_original(args: &RetrainArgs) -> Result<Original, CliError> {
    let name = shown(&args.attestation);
    let keys = crate::commands::public_keys(&args.keys)?;
    let bytes = std::fs::read(&args.attestation)
        .map_err(|e| CliError::input(anyhow!("{name}: cannot read: {e}")))?;
    let envelope =
        Envelope::from_json(&bytes).map_err(|e| CliError::input(anyhow!("{name}: {e}")))?;
    let payload = envelope
        .verify(IN_TOTO_PAYLOAD_TYPE, &keys, 1)
        .map_err(|e| {
            CliError::failed(anyhow!(
                "{name}: refusing to replay an unverified record: {e}"
            ))
        })?;
    let statement = Statement::<Value>::from_verified(payload, Some(PROVENANCE_V1))
        .map_err(|e| CliError::failed(anyhow!("{name}: {e}")))?
        .into_inner();
    let sha256 = recorder::file_digest::sha256_file(&args.attestation).or_input()?;
    Ok(Original {
        path: std::path::absolute(&args.attestation).or_input()?,
        sha256,
        statement,
    })
}

fn parse_roots(raw: &[String]) -> Result<Vec<(PathBuf, PathBuf)>, CliError> {
    raw.iter()
        .map(|item| {
            let (old, new) = item.split_once('=').ok_or_else(|| {
                CliError::input(anyhow!("--data-root '{item}': expected OLD=NEW"))
            })?;
            Ok((PathBuf::from(old), std::path::absolute(new).or_input()?))
        })
        .collect()
}

/// `--config-file NAME=PATH` values.
fn parse_config_files(raw: &[String]) -> Result<Vec<(String, PathBuf)>, CliError> {
    raw.iter()
        .map(|item| {
            let (name, path) = item
                .rsplit_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                .ok_or_else(|| {
                    CliError::input(anyhow!(
                        "--config-file '{item}': expected NAME=PATH, NAME as the record names the config"
                    ))
                })?;
            Ok((name.to_string(), PathBuf::from(path)))
        })
        .collect()
}

/// The original bytes of a recorded config (`--config-file`, the object store, or the record
/// when nothing was redacted): see `recorder::replay::config_bytes`.
fn original_config(
    dep: &Value,
    predicate: &Value,
    registry: &Registry,
    config_files: &[String],
) -> Result<Vec<u8>, CliError> {
    let name = dep["name"].as_str().unwrap_or_default();
    let config = recorder::replay::recorded_configs(predicate)
        .into_iter()
        .find(|c| name.strip_prefix("config:") == Some(c.name.as_str()))
        .ok_or_else(|| CliError::input(anyhow!("the record has no config {name}")))?;
    recorder::replay::config_bytes(
        &config,
        registry.objects(),
        &parse_config_files(config_files)?,
    )
    .or_input()
}

/// Re-snapshots every recorded input where it is now and reports what changed since the record.
fn check_inputs(
    original: &Original,
    roots: &[(PathBuf, PathBuf)],
    registry: &Registry,
    quiet: bool,
) -> Result<Vec<InputCheck>, CliError> {
    let mut checks = Vec::new();
    for input in recorded_inputs(original.predicate()) {
        let now_at = remap(&input.path, roots);
        if !now_at.exists() {
            return Err(CliError::input(
                recorder::replay::ReplayError::MissingInput {
                    role: input.role.clone(),
                    path: input.path.clone(),
                },
            ));
        }
        let now = snapshot_input(&now_at, registry, false, !quiet).or_input()?;
        let check = recorder::replay::check_input(&input, &now_at, &now, registry.objects());
        if !check.unchanged() {
            let detail = check
                .diff
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_else(|| "digest differs".into());
            eprintln!(
                "trainprov: {} input {} changed since the record: {detail}",
                input.role,
                shown(&now_at)
            );
        }
        checks.push(check);
    }
    Ok(checks)
}

/// Compares the recorded environment with the one the replay will have (`predicted`): warns,
/// or refuses under `--strict` (variables the user set with `--env`, `overridden`, excepted).
fn compare_environment(
    original: &Original,
    registry: &Registry,
    predicted: &Environment,
    overridden: &[String],
    strict: bool,
) -> Result<Vec<Value>, CliError> {
    let Some(object) = original.byproduct_object("environment.json") else {
        return Ok(Vec::new());
    };
    let Ok(bytes) = registry.objects().get(&object) else {
        eprintln!(
            "trainprov: warning: the recorded environment is not in this registry; not compared"
        );
        return Ok(Vec::new());
    };
    let recorded: environment::Environment = serde_json::from_slice(&bytes).or_input()?;
    let differences = environment::compare(&recorded, predicted);
    for d in differences
        .iter()
        .filter(|d| d.severity == Severity::Warning)
    {
        eprintln!("trainprov: environment differs: {d}");
    }
    let warnings: Vec<String> = differences
        .iter()
        .filter(|d| d.severity == Severity::Warning && !is_overridden(d, overridden))
        .map(ToString::to_string)
        .collect();
    if strict && !warnings.is_empty() {
        return Err(CliError::failed(anyhow!(
            "--strict: the environment differs from the record in {} way(s) that can change results: {}",
            warnings.len(),
            warnings.join("; ")
        )));
    }
    Ok(differences.iter().map(|d| json!(d.to_string())).collect())
}

/// What the replay produced.
struct Replay {
    run_id: String,
    attestation: PathBuf,
    products: Vec<RecordedFile>,
    metrics_object: Option<String>,
    excluded: Vec<String>,
    comparison: ProductComparison,
    divergence: Option<Divergence>,
    /// Arguments of the recorded command redirected into the work directory.
    rewrites: Vec<ArgRewrite>,
    /// The work directory.
    workdir: PathBuf,
    /// Object holding the replay's own `environment.json`.
    environment_object: Option<String>,
    /// How the environment before the replay differed from the record (warnings printed).
    env_differences: Vec<Value>,
    /// Variables set with `--env`.
    overridden: Vec<String>,
    /// The recorded settings that differ between the original's record and the replay's.
    settings: Vec<EnvDifference>,
}

/// Whether a difference is a variable the user set with `--env`.
fn is_overridden(d: &EnvDifference, overridden: &[String]) -> bool {
    d.field
        .strip_prefix("env.")
        .is_some_and(|name| overridden.iter().any(|o| o == name))
}

/// The object id of a recorded byproduct, by name.
fn byproduct_object(byproducts: &[RecordedFile], name: &str) -> Option<String> {
    byproducts
        .iter()
        .find(|b| b.name == name)
        .and_then(|b| b.object.clone())
}

fn relation_name(exclusions: &Exclusions) -> &'static str {
    if exclusions.is_empty() {
        "reproduction-of"
    } else {
        "retrained-without"
    }
}

fn related_descriptor(
    original: &Original,
    exclusions: &Exclusions,
    excluded: &[String],
) -> ResourceDescriptor {
    let mut digest = attest::statement::DigestSet::new();
    digest.insert("sha256".into(), original.sha256.clone());
    let mut rd = ResourceDescriptor::named("original-attestation", digest);
    rd.uri = Some(format!("file://{}", original.path.display()));
    rd.media_type = Some("application/vnd.in-toto+json".into());
    rd.annotations
        .insert("relation".into(), json!(relation_name(exclusions)));
    rd.annotations
        .insert("invocationId".into(), json!(original.invocation_id()));
    if !excluded.is_empty() {
        rd.annotations.insert("excluded".into(), json!(excluded));
    }
    rd
}

/// Prepares an input for the replay: the current location, or a copy without excluded files.
fn prepare_input(
    check: &InputCheck,
    exclusions: &Exclusions,
    dst: &Path,
    registry: &Registry,
) -> Result<(PathBuf, Vec<String>), CliError> {
    if exclusions.is_empty() {
        return Ok((check.now_at.clone(), Vec::new()));
    }
    let snapshot = snapshot_input(&check.now_at, registry, false, false).or_input()?;
    if !snapshot.entries.iter().any(|e| exclusions.matches(&e.path)) {
        return Ok((check.now_at.clone(), Vec::new()));
    }
    let _ = fs_err::remove_dir_all(dst);
    fs_err::create_dir_all(dst).or_input()?;
    let excluded = filtered_copy(&snapshot, &check.now_at, dst, exclusions).or_input()?;
    let label = check.input.role.as_str();
    excluded
        .iter()
        .for_each(|f| eprintln!("trainprov: excluding {label} file {f}"));
    Ok((
        dst.to_path_buf(),
        excluded
            .iter()
            .map(|f| format!("{}:{f}", check.input.given))
            .collect(),
    ))
}

fn find_check<'a>(checks: &'a [InputCheck], role: &str) -> Option<&'a InputCheck> {
    checks.iter().find(|c| c.input.role == role)
}

#[allow(clippy::too_many_arguments)]
fn replay_trainer(
    args: &RetrainArgs,
    original: &Original,
    checks: &[InputCheck],
    exclusions: &Exclusions,
    root: &ReplayRoot,
    out: Option<&Path>,
    keys: &[SigningKey],
    registry: &mut Registry,
) -> Result<Replay, CliError> {
    let workdir = root.dir();
    let name = shown(&original.path);
    let deps = recorder::replay::dependencies(original.predicate());
    let config_dep = deps
        .iter()
        .find(|d| d["name"].as_str().is_some_and(|n| n.starts_with("config:")))
        .ok_or_else(|| CliError::input(anyhow!("{name}: the record holds no training config")))?;
    let text = original_config(
        config_dep,
        original.predicate(),
        registry,
        &args.config_files,
    )?;
    let file_name = config_dep["name"]
        .as_str()
        .and_then(|n| Path::new(n).file_name().map(|f| f.to_owned()));
    let config_dir = workdir.join("config");
    let config_path = config_dir.join(file_name.unwrap_or_else(|| "train.toml".into()));
    root.prepare_write(&config_path, "config").or_input()?;
    fs_err::create_dir_all(&config_dir).or_input()?;
    fs_err::write(&config_path, &text).or_input()?;
    let mut config = crate::commands::train::read_config(&config_path)?;

    let mut excluded = Vec::new();
    let mut input_names = BTreeMap::new();
    if let Some(recorded) = config_dep["name"]
        .as_str()
        .and_then(|n| n.strip_prefix("config:"))
    {
        input_names.insert(config_path.clone(), recorded.to_string());
    }
    let base = find_check(checks, "base")
        .ok_or_else(|| CliError::input(anyhow!("{name}: no base model recorded")))?;
    config.model.base = prepare_input(base, exclusions, &workdir.join("inputs/base"), registry)?.0;
    input_names.insert(config.model.base.clone(), base.input.given.clone());
    if let Some(adapter) = find_check(checks, "adapter") {
        let path = prepare_input(
            adapter,
            exclusions,
            &workdir.join("inputs/adapter"),
            registry,
        )?
        .0;
        input_names.insert(path.clone(), adapter.input.given.clone());
        config.model.adapter = Some(path);
    }
    let data = find_check(checks, "data")
        .ok_or_else(|| CliError::input(anyhow!("{name}: no data recorded")))?;
    let (data_path, data_excluded) =
        prepare_input(data, exclusions, &workdir.join("inputs/data"), registry)?;
    input_names.insert(data_path.clone(), data.input.given.clone());
    config.data.path = data_path;
    excluded.extend(data_excluded);
    check_exclusions_matched(exclusions, &excluded)?;
    config.output.dir = match out {
        Some(out) => out.to_path_buf(),
        None => workdir.join("out"),
    };
    crate::commands::train::default_threads(&config, &config_dir);
    let job = TrainJob {
        config: &config,
        config_dir: &config_dir,
        config_path: &config_path,
        argv: retrain_argv(args),
        related: vec![related_descriptor(original, exclusions, &excluded)],
        quiet: args.global.json,
        allow_unsafe_inputs: false,
        skip_data_check: false,
        input_names,
    };
    let trained = train_and_record(&job, keys, registry)?;
    let byproducts = &trained.finished.record.byproducts;
    Ok(Replay {
        run_id: trained.id.clone(),
        attestation: trained.attestation.0.clone(),
        products: trained.finished.record.products.clone(),
        metrics_object: byproduct_object(byproducts, "metrics.jsonl"),
        excluded,
        comparison: ProductComparison::default(),
        divergence: None,
        rewrites: Vec::new(),
        workdir: root.dir().to_path_buf(),
        environment_object: byproduct_object(byproducts, "environment.json"),
        env_differences: Vec::new(),
        overridden: Vec::new(),
        settings: Vec::new(),
    })
}

fn check_exclusions_matched(exclusions: &Exclusions, excluded: &[String]) -> Result<(), CliError> {
    if !exclusions.is_empty() && excluded.is_empty() {
        return Err(CliError::input(anyhow!(
            "--exclude matched no file of the recorded inputs; nothing would change"
        )));
    }
    Ok(())
}

fn retrain_argv(args: &RetrainArgs) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "trainprov".into(),
        "retrain".into(),
        args.attestation.clone().into_os_string(),
    ];
    for pattern in &args.exclude {
        argv.extend(["--exclude".into(), pattern.into()]);
    }
    argv
}

#[allow(clippy::too_many_arguments)]
fn replay_wrapped(
    args: &RetrainArgs,
    original: &Original,
    checks: &[InputCheck],
    exclusions: &Exclusions,
    root: &ReplayRoot,
    dest: Option<&Path>,
    keys: &[SigningKey],
    registry: &mut Registry,
    overrides: &[(String, String)],
) -> Result<Replay, CliError> {
    let predicate = original.predicate();
    let external = original.external();
    let cwd = std::env::current_dir().or_input()?;
    let worktree =
        restore_code(predicate, registry.objects(), &cwd, &root.dir().join("src")).or_input()?;
    let layout = original.layout();
    let in_repo = |path: &Path| -> Option<PathBuf> {
        let repo_root = layout.repo_root.as_deref()?;
        path.strip_prefix(repo_root).ok().map(Path::to_path_buf)
    };
    let cwd_in_repo = in_repo(&layout.cwd).unwrap_or_default();
    let run_cwd = root.join(&worktree, &cwd_in_repo, "cwd").or_input()?;

    let mut inputs = Vec::new();
    let mut excluded = Vec::new();
    let mut input_names = BTreeMap::new();
    for check in checks {
        let role = match check.input.role.as_str() {
            "base" => InputRole::Base,
            "adapter" => InputRole::Adapter,
            _ => InputRole::Data,
        };
        let place = match in_repo(&check.input.path) {
            Some(rel) => root.join(&worktree, &rel, check.input.role.as_str()).or_input()?,
            None if exclusions.is_empty() => check.now_at.clone(),
            None => {
                return Err(CliError::input(anyhow!(
                    "{}: --exclude on an input outside the repository is supported for the built-in trainer only",
                    shown(&check.input.path)
                )))
            }
        };
        if place != check.now_at {
            root.prepare_write(&place, check.input.role.as_str())
                .or_input()?;
            excluded.extend(stage_input(check, exclusions, &place, registry)?);
        }
        input_names.insert(place.clone(), check.input.given.clone());
        inputs.push((role, place));
    }
    check_exclusions_matched(exclusions, &excluded)?;
    let places = Places {
        root,
        layout: &layout,
        worktree: &worktree,
        run_cwd: &run_cwd,
    };
    let (configs, mut mapped) = restore_configs(
        predicate,
        registry,
        &places,
        &mut input_names,
        &args.config_files,
    )?;
    let out_mapped = places.out(&recorder::redact::expand_home_dir(
        external["out"].as_str().unwrap_or("out"),
    ))?;
    let out = out_mapped.path.clone();
    mapped.push(out_mapped);
    let recorded_argv: Vec<OsString> = external["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .map(|arg| OsString::from(recorder::redact::expand_home_dir(arg)))
                .collect()
        })
        .unwrap_or_default();
    let (argv, rewrites) = rewrite_argv(&recorded_argv, &mapped).or_input()?;
    for r in &rewrites {
        eprintln!(
            "trainprov: argument {} of the recorded command named the original's path; replayed \
             as {} (was {})",
            r.index, r.replayed, r.recorded
        );
    }
    let env = with_overrides(recorded_env(original, registry), overrides);
    let overridden: Vec<String> = overrides.iter().map(|(n, _)| n.clone()).collect();
    for (name, value) in overrides {
        eprintln!("trainprov: replaying with {name}={value} (--env) instead of the recorded value");
    }
    let env_differences = compare_environment(
        original,
        registry,
        &predicted_environment(&argv, &run_cwd, &env),
        &overridden,
        args.strict,
    )?;
    let params = external["params"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let spec = RunSpec {
        argv,
        out: out.clone(),
        inputs,
        configs,
        params,
        rehash: false,
        progress: !args.global.json,
        screen: if args.global.json {
            Screen::AllToStderr
        } else {
            Screen::Normal
        },
        build_type: RUN_BUILD_TYPE.into(),
        kind: "run".into(),
        versions: versions(),
        cwd: Some(run_cwd),
        env,
        related: vec![related_descriptor(original, exclusions, &excluded)],
        input_names,
    };
    let prepared = prepare(&spec, registry).or_input()?;
    let id = prepared.id().to_string();
    let finished = match execute(prepared, registry) {
        Ok(f) => f,
        Err(err) => {
            let _ = mark_failed(registry, &id, Some(127));
            return Err(CliError::input(anyhow!(
                "{err} (replay run {id} recorded as failed)"
            )));
        }
    };
    if !finished.outcome.succeeded() {
        finalize(registry, &finished, None).or_input()?;
        return Err(CliError::failed(anyhow!(
            "the replayed command exited {}; run {id} recorded as failed",
            finished.outcome.pass_through_code()
        )));
    }
    let attestation = sign_products(&finished, keys)?;
    finalize(registry, &finished, Some(attestation.clone())).or_input()?;
    if let Some(dest) = dest {
        copy_dir(&out, dest)?;
    }
    Ok(Replay {
        run_id: id,
        attestation: attestation.0,
        products: finished.record.products.clone(),
        metrics_object: None,
        excluded,
        comparison: ProductComparison::default(),
        divergence: None,
        rewrites,
        workdir: root.dir().to_path_buf(),
        environment_object: byproduct_object(&finished.record.byproducts, "environment.json"),
        env_differences,
        overridden,
        settings: Vec::new(),
    })
}

/// `changes` with each `--env` override replacing what they say about its variable.
fn with_overrides(
    changes: Vec<(String, Option<String>)>,
    overrides: &[(String, String)],
) -> Vec<(String, Option<String>)> {
    let mut changes: Vec<(String, Option<String>)> = changes
        .into_iter()
        .filter(|(name, _)| !overrides.iter().any(|(o, _)| o == name))
        .collect();
    changes.extend(
        overrides
            .iter()
            .map(|(name, value)| (name.clone(), Some(value.clone()))),
    );
    changes
}

/// The environment the replayed command will see: this machine, with the variable changes it
/// is started with, and the interpreter it will run when it is a Python program.
fn predicted_environment(
    argv: &[OsString],
    run_cwd: &Path,
    changes: &[(String, Option<String>)],
) -> Environment {
    let mut predicted = environment::capture();
    environment::apply_env_changes(&mut predicted.env, changes);
    if let Some(program) = argv.first().and_then(|a| a.to_str()) {
        if environment::looks_like_python(program) {
            predicted.python =
                environment::capture_python_as_run(program, Some(run_cwd), changes).map(|c| c.info);
        }
    }
    predicted
}

/// Where the wrapped replay's paths go: the work directory, the restored code and the recorded
/// working directory inside it.
struct Places<'a> {
    root: &'a ReplayRoot,
    layout: &'a RecordedLayout,
    worktree: &'a Path,
    run_cwd: &'a Path,
}

impl Places<'_> {
    /// The replay's place for a recorded path, made safe to write.
    fn map(&self, what: &str, recorded: &Path, elsewhere: &Path) -> Result<MappedPath, CliError> {
        let mapped = self
            .root
            .map_recorded(
                what,
                recorded,
                self.layout,
                self.worktree,
                self.run_cwd,
                elsewhere,
            )
            .or_input()?;
        if let Some(target) = self.root.prepare_write(&mapped.path, what).or_input()? {
            eprintln!(
                "trainprov: {}: the restored code has a symbolic link to {} here; the replay \
                 writes its {what} here itself, not through the link",
                shown(&mapped.path),
                shown(&target)
            );
        }
        Ok(mapped)
    }

    /// The output directory (an absolute one outside the repository becomes `WORKDIR/out`).
    fn out(&self, recorded: &str) -> Result<MappedPath, CliError> {
        self.map("out", Path::new(recorded), Path::new("out"))
    }
}

/// Puts the current content of a recorded input at `place` in the worktree, minus exclusions.
fn stage_input(
    check: &InputCheck,
    exclusions: &Exclusions,
    place: &Path,
    registry: &Registry,
) -> Result<Vec<String>, CliError> {
    let snapshot = snapshot_input(&check.now_at, registry, false, false).or_input()?;
    let _ = fs_err::remove_dir_all(place);
    if check.now_at.is_file() {
        if let Some(parent) = place.parent() {
            fs_err::create_dir_all(parent).or_input()?;
        }
        fs_err::copy(&check.now_at, place).or_input()?;
        return Ok(Vec::new());
    }
    fs_err::create_dir_all(place).or_input()?;
    let excluded = filtered_copy(&snapshot, &check.now_at, place, exclusions).or_input()?;
    Ok(excluded
        .iter()
        .map(|f| format!("{}:{f}", check.input.given))
        .collect())
}

/// Writes the recorded configs into the work directory (see [`ReplayRoot::map_recorded`]);
/// `names` learns their recorded names. Returns the paths written and their mappings.
fn restore_configs(
    predicate: &Value,
    registry: &Registry,
    places: &Places<'_>,
    names: &mut BTreeMap<PathBuf, String>,
    config_files: &[String],
) -> Result<(Vec<PathBuf>, Vec<MappedPath>), CliError> {
    let mut paths = Vec::new();
    let mut mapped = Vec::new();
    for dep in recorder::replay::dependencies(predicate) {
        let Some(name) = dep["name"].as_str().and_then(|n| n.strip_prefix("config:")) else {
            continue;
        };
        let bytes = original_config(&dep, predicate, registry, config_files)?;
        let file_name = Path::new(name)
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("config"));
        let elsewhere = Path::new("external")
            .join(format!("config-{}", mapped.len()))
            .join(file_name);
        let recorded = PathBuf::from(recorder::redact::expand_home_dir(name));
        let place = places.map("config", &recorded, &elsewhere)?;
        let path = place.path.clone();
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent).or_input()?;
        }
        fs_err::write(&path, bytes).or_input()?;
        names.insert(path.clone(), name.to_string());
        paths.push(path);
        mapped.push(place);
    }
    Ok((paths, mapped))
}

/// The recorded allow-listed environment, applied over the current one.
fn recorded_env(original: &Original, registry: &Registry) -> Vec<(String, Option<String>)> {
    let Some(object) = original.byproduct_object("environment.json") else {
        return Vec::new();
    };
    let Ok(bytes) = registry.objects().get(&object) else {
        return Vec::new();
    };
    let Ok(recorded) = serde_json::from_slice::<environment::Environment>(&bytes) else {
        return Vec::new();
    };
    let mut changes: Vec<(String, Option<String>)> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| {
            recorder::redact::is_allowed_env_name(k) && !recorded.env.contains_key(k) && k != "PATH"
        })
        .map(|k| (k, None))
        .collect();
    changes.extend(
        recorded
            .env
            .iter()
            .filter(|(k, _)| k.as_str() != "PATH")
            .map(|(k, v)| (k.clone(), Some(v.clone()))),
    );
    changes
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), CliError> {
    fs_err::create_dir_all(to).or_input()?;
    for entry in fs_err::read_dir(from).or_input()?.flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs_err::copy(entry.path(), target).or_input()?;
        }
    }
    Ok(())
}

fn verdict(replay: &Replay) -> String {
    if replay.comparison.is_identical() {
        return "identical".into();
    }
    let c = &replay.comparison;
    let mut parts = Vec::new();
    for (label, names) in [
        ("changed", &c.changed),
        ("missing", &c.missing),
        ("extra", &c.extra),
    ] {
        if !names.is_empty() {
            parts.push(format!("{label}: {}", names.join(", ")));
        }
    }
    let mut text = format!("differs ({})", parts.join("; "));
    if let Some(d) = &replay.divergence {
        text.push_str(&format!(
            "; first diverged at step {} ({})",
            d.step, d.field
        ));
    }
    let settings = result_settings(replay);
    if !settings.is_empty() {
        let names: Vec<&str> = settings.iter().map(|d| d.field.as_str()).collect();
        text.push_str(&format!(
            "; recorded settings that differ in the replay: {}",
            names.join(", ")
        ));
    }
    text
}

/// The differences between the original's and the replay's recorded settings that can change
/// results.
fn result_settings(replay: &Replay) -> Vec<&EnvDifference> {
    replay
        .settings
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .collect()
}

/// One settings difference as the report shows it: `env.OMP_NUM_THREADS: recorded 1, replay 2
/// (set by --env)`.
fn setting_line(d: &EnvDifference, replay: &Replay) -> String {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    let by = if is_overridden(d, &replay.overridden) {
        " (set by --env)"
    } else {
        ""
    };
    format!(
        "{}: recorded {}, replay {}{by}",
        d.field,
        show(&d.recorded),
        show(&d.current)
    )
}

fn report(
    original: &Original,
    replay: &Replay,
    checks: &[InputCheck],
    relation: &str,
    verdict: &str,
    exclusions: &Exclusions,
) -> Report {
    let changed_inputs: Vec<&InputCheck> = checks.iter().filter(|c| !c.unchanged()).collect();
    let mut human = String::new();
    for check in &changed_inputs {
        let detail = check
            .diff
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "digest differs".into());
        human.push_str(&format!(
            "input {} {} changed since the record: {detail}\n",
            check.input.role, check.input.given
        ));
    }
    human.push_str(if replay.comparison.is_identical() {
        "IDENTICAL\n"
    } else {
        "NOT IDENTICAL\n"
    });
    human.push_str(&format!(
        "retrain of {} ({relation}): {verdict}\nnew record: {} (run {})\n",
        shown(&original.path),
        shown(&replay.attestation),
        replay.run_id
    ));
    let settings = result_settings(replay);
    if !settings.is_empty() {
        human.push_str(if replay.comparison.is_identical() {
            "recorded settings that differ in the replay (the products did not change):\n"
        } else {
            "recorded settings that differ in the replay:\n"
        });
        for d in &settings {
            human.push_str(&format!("  {}\n", setting_line(d, replay)));
        }
    } else if !replay.comparison.is_identical() && exclusions.is_empty() {
        human.push_str(
            "no recorded setting differs in the replay: the command is not deterministic under \
             its recorded settings, or it depends on something the record does not hold\n",
        );
    }
    if !replay.excluded.is_empty() {
        human.push_str(&format!("excluded: {}\n", replay.excluded.join(", ")));
    }
    human.push_str(&format!("work directory: {}\n", shown(&replay.workdir)));
    let json = json!({
        "status": "ok",
        "verdict": verdict.split(' ').next().unwrap_or_default(),
        "summary": verdict,
        "relation": relation,
        "original": {"attestation": original.path, "sha256": original.sha256, "invocation_id": original.invocation_id()},
        "run_id": replay.run_id,
        "attestation": replay.attestation,
        "products": replay.comparison,
        "first_divergence": replay.divergence,
        "excluded": replay.excluded,
        "workdir": replay.workdir,
        "argv_rewrites": replay.rewrites,
        "inputs": checks,
        "environment_differences": replay.env_differences,
        "settings_differences": replay.settings.iter().map(|d| json!({
            "field": d.field,
            "recorded": d.recorded,
            "replay": d.current,
            "severity": d.severity,
            "set_by_env_option": is_overridden(d, &replay.overridden),
        })).collect::<Vec<_>>(),
    });
    // An unchanged replay must be identical; with exclusions a difference is the point.
    let exit = if exclusions.is_empty() && !replay.comparison.is_identical() {
        1
    } else {
        0
    };
    Report { human, json, exit }
}
