//! `trainprov run -- CMD`: wrap a training command, record it, sign what it produced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use attest::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use attest::keys::SigningKey;
use attest::oms::{ModelSignature, SIGNATURE_FILE};
use recorder::atomic::write_atomic;
use recorder::file_digest::sha256_file;
use recorder::model_tree::{hash_model_dir, TreeOptions};
use recorder::paths::registry_dir;
use recorder::process::Screen;
use recorder::record::{InputRole, ATTESTATION_FILE, RUN_BUILD_TYPE};
use recorder::registry::Registry;
use recorder::runner::{
    check_out_dir, execute, finalize, mark_failed, own_temp_files, pending_path, prepare, Finished,
    RunError, RunSpec,
};
use serde_json::json;

use crate::cli::RunArgs;
use crate::commands::shown;
use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// Records and runs the command; the report's exit code is the command's.
pub fn run(args: &RunArgs) -> Result<Report, CliError> {
    let keys = crate::commands::signing_keys(&args.keys)?;
    let params = parse_params(&args.params)?;
    check_inputs(args)?;
    let scan =
        crate::commands::inputs::scan_model_inputs(&inputs_of(args), args.allow_unsafe_inputs)?;
    let data_check =
        crate::commands::inputs::check_data_inputs(&inputs_of(args), args.skip_data_check);
    let cwd = std::env::current_dir().or_input()?;
    let registry_path = registry_dir(args.registry.as_deref(), &cwd);
    // Before anything is created: `--out .` would sign the code, `.git` and the registry.
    check_out_dir(&args.out, &cwd, &registry_path).or_input()?;
    let mut registry = Registry::open(&registry_path).or_input()?;
    let spec = RunSpec {
        argv: args.command.clone(),
        out: args.out.clone(),
        inputs: inputs_of(args),
        configs: args.configs.clone(),
        params,
        rehash: args.rehash,
        progress: !args.global.json,
        screen: if args.global.json {
            Screen::AllToStderr
        } else {
            Screen::Normal
        },
        build_type: RUN_BUILD_TYPE.into(),
        kind: "run".into(),
        versions: versions(),
        cwd: None,
        env: Vec::new(),
        related: Vec::new(),
        input_names: BTreeMap::new(),
    };
    let prepared = prepare(&spec, &mut registry).or_input()?;
    let id = prepared.id().to_string();
    eprintln!(
        "trainprov: run {id} recording into {}",
        shown(registry.dir())
    );
    let mut finished = match execute(prepared, &registry) {
        Ok(f) => f,
        Err(err) => {
            let code = matches!(err, RunError::Process(_)).then_some(127);
            let _ = mark_failed(&mut registry, &id, code);
            return Err(CliError::input(anyhow!(
                "{err} (run {id} recorded as failed)"
            )));
        }
    };
    scan.record_into(&mut finished, registry.objects())?;
    data_check.record_into(&mut finished, registry.objects())?;
    let attestation = if finished.outcome.succeeded() {
        Some(sign_products(&finished, &keys)?)
    } else {
        None
    };
    finalize(&mut registry, &finished, attestation.clone()).or_input()?;
    Ok(report(
        &finished,
        &id,
        attestation.map(|(p, _)| p),
        registry.dir(),
    ))
}

fn parse_params(raw: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut params = BTreeMap::new();
    for item in raw {
        let Some((key, value)) = item.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            return Err(CliError::input(anyhow!(
                "--param '{item}': expected KEY=VALUE, e.g. --param lr=3e-4"
            )));
        };
        let value = recorder::redact::redact_param(key, value);
        params.insert(key.trim().to_string(), value);
    }
    Ok(params)
}

fn check_inputs(args: &RunArgs) -> Result<(), CliError> {
    for (flag, paths) in [
        ("--data", &args.data),
        ("--base", &args.base),
        ("--adapter", &args.adapters),
        ("--config", &args.configs),
    ] {
        for path in paths {
            if !path.exists() {
                return Err(CliError::input(anyhow!(
                    "{}: no such file or directory (given to {flag})",
                    shown(path)
                )));
            }
        }
    }
    if args.out.exists() && !args.out.is_dir() {
        return Err(CliError::input(anyhow!(
            "{}: --out must be a directory",
            shown(&args.out)
        )));
    }
    Ok(())
}

fn inputs_of(args: &RunArgs) -> Vec<(InputRole, PathBuf)> {
    let mut inputs: Vec<(InputRole, PathBuf)> = args
        .data
        .iter()
        .map(|p| (InputRole::Data, p.clone()))
        .collect();
    inputs.extend(args.base.iter().map(|p| (InputRole::Base, p.clone())));
    inputs.extend(
        args.adapters
            .iter()
            .map(|p| (InputRole::Adapter, p.clone())),
    );
    inputs
}

/// Versions recorded in `runDetails.builder.version`.
pub fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert(
        "trainprov".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    v
}

/// Signs OUT/model.sig and OUT/provenance.intoto.json under their pending names
/// (`recorder::runner::pending_path`); `recorder::runner::finalize` publishes them after the
/// registry commit. Returns the attestation's final path and its SHA-256.
pub fn sign_products(
    finished: &Finished,
    keys: &[SigningKey],
) -> Result<(PathBuf, String), CliError> {
    let out = &finished.out;
    let statement = finished.record.to_statement();
    statement.check_subject_digests().or_input()?;
    if statement.subject.is_empty() {
        eprintln!(
            "trainprov: warning: {} is empty after the run; the attestation has no subjects",
            shown(out)
        );
    } else {
        let mut ignore = vec![SIGNATURE_FILE.to_string(), ATTESTATION_FILE.to_string()];
        ignore.extend(own_temp_files(out));
        let options = TreeOptions {
            ignore,
            ignore_git: false,
            ..TreeOptions::default()
        };
        let manifest = hash_model_dir(out, &options).or_input()?;
        let signature = ModelSignature::sign(&manifest, &keys[0]).or_input()?;
        let path = pending_path(&out.join(SIGNATURE_FILE));
        write_atomic(&path, &signature.to_json())
            .map_err(|e| CliError::input(anyhow!("{}: {e}", shown(&path))))?;
    }
    let payload = statement.to_json().or_input()?;
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let mut bytes = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, &refs).to_json();
    bytes.push(b'\n');
    let path = out.join(ATTESTATION_FILE);
    let pending = pending_path(&path);
    write_atomic(&pending, &bytes)
        .map_err(|e| CliError::input(anyhow!("{}: {e}", shown(&pending))))?;
    let sha =
        sha256_file(&pending).map_err(|e| CliError::input(anyhow!("{}: {e}", shown(&pending))))?;
    Ok((path, sha))
}

pub fn report(
    finished: &Finished,
    id: &str,
    attestation: Option<PathBuf>,
    registry: &Path,
) -> Report {
    let outcome = &finished.outcome;
    let code = outcome.pass_through_code();
    let status = if outcome.succeeded() {
        "succeeded"
    } else if outcome.interrupted() {
        "interrupted"
    } else {
        "failed"
    };
    let mut human = format!(
        "run {id} {status} (exit {code}, {:.1}s, peak RSS {})\n",
        finished.record.result.wall_seconds,
        outcome
            .peak_rss_bytes
            .map(crate::commands::human_bytes)
            .unwrap_or_else(|| "unknown".into())
    );
    match &attestation {
        Some(path) => human.push_str(&format!(
            "{} products signed: {} and {}\n",
            finished.record.products.len(),
            shown(path),
            shown(&finished.out.join(SIGNATURE_FILE))
        )),
        None => human.push_str("no attestation written: the command did not succeed\n"),
    }
    for (name, stats) in [
        ("stdout.log", &outcome.logs.stdout),
        ("stderr.log", &outcome.logs.stderr),
    ] {
        if stats.truncated {
            human.push_str(&format!(
                "{name}: the command wrote {}; the stored log keeps its first and last part ({}, see {})\n",
                crate::commands::human_bytes(stats.total_bytes),
                crate::commands::human_bytes(stats.stored_bytes),
                recorder::process::LOG_KEEP_ENV
            ));
        }
    }
    human.push_str(&format!("recorded in {}\n", shown(registry)));
    let json = json!({
        "status": status,
        "run_id": id,
        "exit_code": code,
        "attestation": attestation,
        "products": finished.record.products,
        "wall_seconds": finished.record.result.wall_seconds,
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "registry": registry,
        "logs": outcome.logs,
    });
    // The command's own output went to stdout; keep ours on stderr unless --json asked for it.
    Report {
        human,
        json,
        exit: u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    }
}
