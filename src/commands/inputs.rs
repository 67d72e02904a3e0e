//! Checks `run` and `train` make on their inputs before anything runs: model files are scanned
//! (never loaded) and refused when unsafe unless `--allow-unsafe-inputs`, which is recorded;
//! text datasets get `trainprov data check`, whose summary the attestation carries as
//! `internalParameters.dataCheck` (full reports in the `data-check.json` byproduct).

use std::path::PathBuf;

use anyhow::anyhow;
use recorder::record::InputRole;
use recorder::runner::{record_bytes, Finished};
use serde_json::json;

use crate::exit::{CliError, OrInput as _};

/// The outcome of scanning a run's model inputs.
pub struct InputScan {
    reports: Vec<safety::scan::FileReport>,
    allowed_unsafe: bool,
}

/// Scans every `--base` and `--adapter` input; refuses unsafe or invalid files unless allowed.
pub fn scan_model_inputs(
    inputs: &[(InputRole, PathBuf)],
    allow_unsafe: bool,
) -> Result<InputScan, CliError> {
    let mut reports = Vec::new();
    for (_, path) in inputs
        .iter()
        .filter(|(role, _)| matches!(role, InputRole::Base | InputRole::Adapter))
    {
        reports.extend(safety::scan::scan_path(path).or_input()?);
    }
    let unsafe_files: Vec<String> = reports
        .iter()
        .filter(|r| !r.is_clean())
        .map(|r| r.human_line())
        .collect();
    if !unsafe_files.is_empty() {
        if !allow_unsafe {
            return Err(CliError::failed(anyhow!(
                "refusing unsafe model input: {}; inspect it with `trainprov scan`, or pass \
                 --allow-unsafe-inputs to run anyway (the attestation records that you did)",
                unsafe_files.join("; ")
            )));
        }
        for line in &unsafe_files {
            eprintln!("trainprov: warning: --allow-unsafe-inputs: {line}");
        }
    }
    Ok(InputScan {
        reports,
        allowed_unsafe: allow_unsafe && !unsafe_files.is_empty(),
    })
}

impl InputScan {
    /// Adds the scan to the record: `model-scan.json` as a byproduct and, when unsafe inputs
    /// were allowed, `internalParameters.allowUnsafeInputs`.
    pub fn record_into(
        &self,
        finished: &mut Finished,
        objects: &recorder::objects::ObjectStore,
    ) -> Result<(), CliError> {
        if self.reports.is_empty() {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&self.reports).or_input()?;
        let file =
            record_bytes(objects, "model-scan.json", &bytes, "application/json").or_input()?;
        finished.record.byproducts.push(file);
        if let Some(map) = finished.record.internal.as_object_mut() {
            map.insert("allowUnsafeInputs".into(), json!(self.allowed_unsafe));
            let unsafe_paths: Vec<&str> = self
                .reports
                .iter()
                .filter(|r| !r.is_clean())
                .map(|r| r.path.as_str())
                .collect();
            if !unsafe_paths.is_empty() {
                map.insert("unsafeInputs".into(), json!(unsafe_paths));
            }
        }
        Ok(())
    }
}

/// The largest dataset `run` and `train` check on their own (64 MiB of JSONL/CSV: about 20 s
/// and 1.6 GiB of memory on one core); a larger one is recorded as skipped with the reason.
const AUTOMATIC_CHECK_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The outcome of `data check` on every `--data` input of a run.
pub struct DataCheck {
    inputs: Vec<DataCheckInput>,
    reports: Vec<safety::datacheck::DataReport>,
}

/// One `--data` input's check, as recorded.
#[derive(serde::Serialize)]
struct DataCheckInput {
    input: String,
    /// `passed` (no warning), `failed` (findings) or `skipped` (no text dataset, or not asked).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<safety::datacheck::Summary>,
}

/// Runs `data check` (default options) on every `--data` input; `skip` records that it was not
/// asked for. A directory with no JSONL/CSV file, or a file that does not parse as one, is
/// skipped with the reason: the wrapped command may read formats `data check` does not know.
pub fn check_data_inputs(inputs: &[(InputRole, PathBuf)], skip: bool) -> DataCheck {
    let mut check = DataCheck {
        inputs: Vec::new(),
        reports: Vec::new(),
    };
    let options = safety::datacheck::CheckOptions {
        max_bytes: Some(AUTOMATIC_CHECK_MAX_BYTES),
        ..Default::default()
    };
    for (_, path) in inputs.iter().filter(|(role, _)| *role == InputRole::Data) {
        let input = crate::commands::shown(path);
        if skip {
            check
                .inputs
                .push(DataCheckInput::skipped(input, "--skip-data-check".into()));
            continue;
        }
        match safety::datacheck::check(path, &options) {
            Ok(report) => {
                let failed = report.has_warnings();
                if failed {
                    eprintln!(
                        "trainprov: warning: data check of {}: {} finding(s); run `trainprov data \
                         check {}` to see them (recorded in the attestation)",
                        crate::commands::shown(path),
                        report.summary.findings,
                        crate::commands::shown(path)
                    );
                }
                check.inputs.push(DataCheckInput {
                    input,
                    status: if failed { "failed" } else { "passed" },
                    reason: None,
                    summary: Some(report.summary.clone()),
                });
                check.reports.push(report);
            }
            Err(err @ safety::datacheck::CheckError::TooLarge { .. }) => {
                eprintln!(
                    "trainprov: warning: {err}; recorded as skipped. Run `trainprov data check {}` \
                     on its own (it needs about 25 times the data size in memory)",
                    crate::commands::shown(path)
                );
                check
                    .inputs
                    .push(DataCheckInput::skipped(input, err.to_string()));
            }
            Err(err) => check
                .inputs
                .push(DataCheckInput::skipped(input, err.to_string())),
        }
    }
    check
}

impl DataCheckInput {
    fn skipped(input: String, reason: String) -> Self {
        DataCheckInput {
            input,
            status: "skipped",
            reason: Some(reason),
            summary: None,
        }
    }
}

impl DataCheck {
    /// `failed` when any input has findings, `passed` when at least one was checked and none
    /// failed, else `skipped`.
    pub fn status(&self) -> &'static str {
        let has = |s: &str| self.inputs.iter().any(|i| i.status == s);
        if has("failed") {
            "failed"
        } else if has("passed") {
            "passed"
        } else {
            "skipped"
        }
    }

    /// Adds `internalParameters.dataCheck` and, when anything was checked, the full reports as
    /// the `data-check.json` byproduct.
    pub fn record_into(
        &self,
        finished: &mut Finished,
        objects: &recorder::objects::ObjectStore,
    ) -> Result<(), CliError> {
        if !self.reports.is_empty() {
            let bytes = serde_json::to_vec_pretty(&self.reports).or_input()?;
            let file =
                record_bytes(objects, "data-check.json", &bytes, "application/json").or_input()?;
            finished.record.byproducts.push(file);
        }
        let findings: usize = self
            .inputs
            .iter()
            .filter_map(|i| i.summary.as_ref())
            .map(|s| s.findings)
            .sum();
        let summary = json!({
            "status": self.status(),
            "findings": findings,
            "tool": format!("trainprov data check {}", env!("CARGO_PKG_VERSION")),
            "report": if self.reports.is_empty() { None } else { Some("data-check.json") },
            "inputs": self.inputs,
        });
        if let Some(map) = finished.record.internal.as_object_mut() {
            map.insert("dataCheck".into(), summary);
        }
        Ok(())
    }
}
