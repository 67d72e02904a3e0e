//! `trainprov train CONFIG.toml`: the built-in LoRA trainer, in-process, recorded like `run`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::anyhow;
use recorder::paths::registry_dir;
use recorder::process::{ChildOutcome, Screen};
use recorder::record::{InputRole, ModelWeights};
use recorder::registry::Registry;
use recorder::runner::{complete, finalize, mark_failed, prepare, record_file, Finished, RunSpec};
use serde_json::json;
use trainer::config::{resolve_path, Init, TrainConfig, DEFAULT_TOML};
use trainer::{StepReport, TrainOutcome};

use crate::cli::TrainArgs;
use crate::commands::run::{report, sign_products, versions};
use crate::commands::shown;
use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// Trains, records and signs.
pub fn run(args: &TrainArgs) -> Result<Report, CliError> {
    if args.print_config {
        return Ok(Report::ok(
            DEFAULT_TOML.to_string(),
            json!({"status": "ok", "config": DEFAULT_TOML}),
        ));
    }
    let config_path = args
        .config
        .clone()
        .ok_or_else(|| CliError::input(anyhow!("CONFIG.toml is required")))?;
    let keys = crate::commands::signing_keys(&args.keys)?;
    let mut config = read_config(&config_path)?;
    let config_dir = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    apply_overrides(&mut config, args, &config_dir)?;
    config
        .validate()
        .map_err(|m| CliError::input(anyhow!("{}: {m}", shown(&config_path))))?;
    default_threads(&config, &config_dir);

    let cwd = std::env::current_dir().or_input()?;
    let mut registry = Registry::open(&registry_dir(args.registry.as_deref(), &cwd)).or_input()?;
    let job = TrainJob {
        config: &config,
        config_dir: &config_dir,
        config_path: &config_path,
        argv: argv_of(args),
        related: Vec::new(),
        quiet: args.global.json,
        allow_unsafe_inputs: args.allow_unsafe_inputs,
        skip_data_check: args.skip_data_check,
        input_names: BTreeMap::new(),
    };
    let trained = train_and_record(&job, &keys, &mut registry)?;
    Ok(trained.report(registry.dir()))
}

/// Picks candle's thread count from the work size (unless the user set it), before anything
/// starts a thread; see `trainer::platform::apply_default_threads`. A base whose
/// `config.json` cannot be read is left to the trainer, which reports it.
pub fn default_threads(config: &TrainConfig, config_dir: &Path) {
    let base = resolve_path(config_dir, &config.model.base).join("config.json");
    if let Ok(model) = trainer::LlamaConfig::from_file(&base) {
        let t = &config.train;
        let macs = trainer::platform::forward_macs(&model, t.batch_size * t.seq_len, t.seq_len);
        trainer::platform::apply_default_threads(macs);
    }
}

/// Reads a training config. A parse error quotes the offending line, which may hold a secret
/// (an unknown `hub_token = "…"` key): the message is redacted like a shown config.
pub fn read_config(path: &Path) -> Result<TrainConfig, CliError> {
    TrainConfig::from_file(path).map_err(|e| {
        let shown = recorder::redact::redact_config("", &e.to_string());
        CliError::input(anyhow!("{}", shown.text))
    })
}

/// A training run to record.
pub struct TrainJob<'a> {
    /// The resolved config.
    pub config: &'a TrainConfig,
    /// Directory its relative paths resolve against.
    pub config_dir: &'a Path,
    /// The config file (stored as a config input).
    pub config_path: &'a Path,
    /// The command line to record.
    pub argv: Vec<OsString>,
    /// Extra resolvedDependencies.
    pub related: Vec<attest::statement::ResourceDescriptor>,
    /// No progress bar.
    pub quiet: bool,
    /// Train even when a model input fails the scan.
    pub allow_unsafe_inputs: bool,
    /// Record the data check as skipped instead of running it.
    pub skip_data_check: bool,
    /// Names to record for inputs (path → name), see `RunSpec::input_names`.
    pub input_names: BTreeMap<PathBuf, String>,
}

/// A recorded, signed training run.
pub struct Trained {
    /// Run id.
    pub id: String,
    /// The record.
    pub finished: Finished,
    /// What the trainer reported.
    pub outcome: TrainOutcome,
    /// The attestation written and its SHA-256.
    pub attestation: (PathBuf, String),
}

impl Trained {
    /// The command's report.
    pub fn report(&self, registry: &Path) -> Report {
        let mut report = report(
            &self.finished,
            &self.id,
            Some(self.attestation.0.clone()),
            registry,
        );
        report.human = format!(
            "trained {} steps ({} mode), final loss {:.4}\n{}",
            self.outcome.steps, self.outcome.mode, self.outcome.final_loss, report.human
        );
        report.json["training"] = json!(self.outcome);
        report
    }
}

/// Records, trains in-process, signs and finalises: `trainprov train` and the trainer branch of
/// `trainprov retrain`.
pub fn train_and_record(
    job: &TrainJob<'_>,
    keys: &[attest::keys::SigningKey],
    registry: &mut Registry,
) -> Result<Trained, CliError> {
    let config = job.config;
    // Before anything is recorded, scanned or checked: a base this trainer cannot train must
    // leave no run behind.
    let base = check_base(config, job.config_dir)?;
    let out = resolve_path(job.config_dir, &config.output.dir);
    let spec = RunSpec {
        argv: job.argv.clone(),
        out: out.clone(),
        inputs: inputs_of(config, job.config_dir),
        configs: vec![job.config_path.to_path_buf()],
        params: params_of(config),
        rehash: false,
        progress: !job.quiet,
        screen: Screen::Normal,
        build_type: trainer::BUILD_TYPE.into(),
        kind: "train".into(),
        versions: trainer_versions(),
        cwd: None,
        env: Vec::new(),
        related: job.related.clone(),
        input_names: job.input_names.clone(),
    };
    let scan = crate::commands::inputs::scan_model_inputs(&spec.inputs, job.allow_unsafe_inputs)?;
    let data_check = crate::commands::inputs::check_data_inputs(&spec.inputs, job.skip_data_check);
    let mut prepared = prepare(&spec, registry).or_input()?;
    if let Some(weights) = &base.weights {
        prepared.set_weights(
            InputRole::Base,
            ModelWeights {
                format: "safetensors".into(),
                layout: weights.layout().into(),
                files: weights.files().len(),
                dtypes: base.dtypes.iter().map(|d| d.as_str().to_string()).collect(),
            },
        );
    }
    let id = prepared.id().to_string();
    eprintln!(
        "trainprov: run {id} training into {} (recorded in {})",
        shown(&out),
        shown(registry.dir())
    );
    let log_dir = registry.run_dir(&id);
    let (outcome, trained) = match train_in_process(config, job.config_dir, &log_dir, job.quiet) {
        Ok(pair) => pair,
        Err(err) => {
            let _ = mark_failed(registry, &id, Some(1));
            return Err(CliError::input(anyhow!(
                "{err} (run {id} recorded as failed)"
            )));
        }
    };
    let mut finished = complete(prepared, registry, outcome).or_input()?;
    add_trainer_record(&mut finished, &trained, registry)?;
    scan.record_into(&mut finished, registry.objects())?;
    data_check.record_into(&mut finished, registry.objects())?;
    let attestation = sign_products(&finished, keys)?;
    finalize(registry, &finished, Some(attestation.clone())).or_input()?;
    Ok(Trained {
        id,
        finished,
        outcome: trained,
        attestation,
    })
}

/// Checks the base model directory (config, architecture, weights, tokenizer; see
/// `trainer::checkpoint`), the device, and that `train.seq_len` fits the base.
fn check_base(
    config: &TrainConfig,
    config_dir: &Path,
) -> Result<trainer::checkpoint::Checkpoint, CliError> {
    // A device this build or machine cannot use (`cuda` without the feature or a driver) is
    // refused here too, not after the run is recorded.
    trainer::device::select(&config.output.device).map_err(|e| CliError::input(anyhow!("{e}")))?;
    let dir = resolve_path(config_dir, &config.model.base);
    let with_weights = config.model.init == Init::Pretrained;
    let base = trainer::checkpoint::inspect(&dir, with_weights)
        .map_err(|e| CliError::input(anyhow!("{e}")))?;
    let max_pos = base.config.max_position_embeddings;
    if config.train.seq_len > max_pos {
        return Err(CliError::input(anyhow!(
            "train.seq_len = {} exceeds max_position_embeddings = {max_pos} in {}",
            config.train.seq_len,
            shown(&dir.join("config.json"))
        )));
    }
    Ok(base)
}

fn apply_overrides(
    config: &mut TrainConfig,
    args: &TrainArgs,
    config_dir: &Path,
) -> Result<(), CliError> {
    if let Some(out) = &args.out {
        // --out is relative to the current directory, config paths to the config's directory.
        let absolute = std::path::absolute(out).or_input()?;
        config.output.dir = absolute;
    }
    if let Some(device) = &args.device {
        config.output.device = device.clone();
    }
    for (name, path) in [
        ("model.base", &config.model.base),
        ("data.path", &config.data.path),
    ] {
        let resolved = resolve_path(config_dir, path);
        if !resolved.exists() {
            return Err(CliError::input(anyhow!(
                "{}: {name} = {} does not exist",
                shown(&resolved),
                shown(path)
            )));
        }
    }
    Ok(())
}

fn argv_of(args: &TrainArgs) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec!["trainprov".into(), "train".into()];
    if let Some(config) = &args.config {
        argv.push(config.clone().into_os_string());
    }
    if let Some(out) = &args.out {
        argv.extend(["--out".into(), out.clone().into_os_string()]);
    }
    if let Some(device) = &args.device {
        argv.extend(["--device".into(), device.into()]);
    }
    argv
}

fn inputs_of(config: &TrainConfig, config_dir: &Path) -> Vec<(InputRole, PathBuf)> {
    let mut inputs = vec![(
        InputRole::Base,
        resolve_path(config_dir, &config.model.base),
    )];
    if let Some(adapter) = &config.model.adapter {
        inputs.push((InputRole::Adapter, resolve_path(config_dir, adapter)));
    }
    inputs.push((InputRole::Data, resolve_path(config_dir, &config.data.path)));
    inputs
}

/// The resolved config, flattened to `section.key = value` hyperparameters.
fn params_of(config: &TrainConfig) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    if let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(config) {
        for (section, fields) in sections {
            if let serde_json::Value::Object(fields) = fields {
                for (key, value) in fields {
                    let text = match value {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let name = format!("{section}.{key}");
                    let text = recorder::redact::redact_param(&name, &text);
                    params.insert(name, text);
                }
            }
        }
    }
    params
}

fn trainer_versions() -> BTreeMap<String, String> {
    let mut v = versions();
    v.insert("candle".into(), trainer::platform::CANDLE_VERSION.into());
    v
}

/// Runs the trainer with a progress bar, logging every step to `log_dir/stdout.log`.
fn train_in_process(
    config: &TrainConfig,
    config_dir: &Path,
    log_dir: &Path,
    quiet: bool,
) -> anyhow::Result<(ChildOutcome, TrainOutcome)> {
    use std::io::Write as _;
    std::fs::create_dir_all(log_dir)?;
    let stdout_log = log_dir.join("stdout.log");
    let stderr_log = log_dir.join("stderr.log");
    let mut log = std::fs::File::create(&stdout_log)?;
    std::fs::File::create(&stderr_log)?;
    let bar = progress_bar(quiet);
    let started = Instant::now();
    let mut observer = |step: &StepReport| {
        if bar.length() != Some(step.total_steps as u64) {
            bar.set_length(step.total_steps as u64);
        }
        let rate = step.step as f64 / step.elapsed.as_secs_f64().max(1e-9);
        bar.set_position(step.step as u64);
        bar.set_message(format!("loss {:.4}  {rate:.1} steps/s", step.loss));
        let _ = writeln!(
            log,
            "step {} loss {:.6} lr {:.3e} grad_norm {:.4}",
            step.step, step.loss, step.lr, step.grad_norm
        );
    };
    let result = trainer::train(config, config_dir, &mut observer);
    bar.finish_and_clear();
    let trained = result?;
    let _ = writeln!(
        log,
        "final loss {:.6} after {} steps",
        trained.final_loss, trained.steps
    );
    log.sync_all()?;
    let peak = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .ok()
        .map(|u| u.max_rss().max(0) as u64 * 1024);
    let outcome = ChildOutcome {
        exit_code: Some(0),
        signal: None,
        forwarded_signal: None,
        wall: started.elapsed(),
        peak_rss_bytes: peak,
        stdout_log,
        stderr_log,
        logs: Default::default(),
    };
    Ok((outcome, trained))
}

fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}]",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Adds the trainer's internals to `internalParameters` and the loss trace to the byproducts;
/// a metrics file inside the output directory is moved out so it is not a product.
fn add_trainer_record(
    finished: &mut Finished,
    trained: &TrainOutcome,
    registry: &Registry,
) -> Result<(), CliError> {
    let metrics = &std::path::absolute(&trained.metrics_file).or_input()?;
    if metrics.is_file() {
        let file = record_file(registry.objects(), "metrics.jsonl", metrics, false).or_input()?;
        finished.record.byproducts.push(file);
        let out = std::path::absolute(&finished.out).or_input()?;
        if metrics.starts_with(&out) {
            std::fs::remove_file(metrics).or_input()?;
            finished
                .record
                .products
                .retain(|p| out.join(&p.name) != *metrics);
        }
    }
    let internal = finished.record.internal.as_object_mut();
    if let Some(map) = internal {
        map.insert(
            "trainer".into(),
            json!({
                "mode": trained.mode,
                "seed": trained.seed,
                "rngAlgorithm": trained.rng_algorithm,
                "threads": trained.threads,
                "elementwiseThreads": trained.elementwise_threads,
                "threadsChosenBy": trained.threads_chosen_by,
                "weightsInMemory": trained.weights_in_memory,
                "isa": trained.isa,
                "candleVersion": trained.candle_version,
                "gemm": trained.gemm,
                "dtype": trained.dtype,
                "device": trained.device,
                "dataOrderDigest": trained.data_order_digest,
                "finalWeightsBlake3": trained.final_weights_blake3,
                "steps": trained.steps,
            }),
        );
    }
    Ok(())
}
