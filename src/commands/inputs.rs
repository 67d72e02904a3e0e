//! Checks `run` and `train` make on their inputs before anything runs: model files are scanned
//! (never loaded) and refused when unsafe unless `--allow-unsafe-inputs`, which is recorded;
//! text datasets get `trainprov data check`, whose summary the attestation carries as
//! `internalParameters.dataCheck` (full reports in the `data-check.json` byproduct):
//!
//! ```json
//! {"status": "partial", "findings": 0, "uncheckedFiles": 1,
//!  "tool": "trainprov data check 0.1.0", "report": "data-check.json",
//!  "inputs": [{"input": "data", "status": "partial", "reason": "1 file not checked",
//!              "summary": {"rows": 72, "files": 3, "unchecked_files": 1, "findings": 0, …},
//!              "unchecked": [{"file": "extra/rows.jsonl.zst", "kind": "unsupported",
//!                             "reason": "a compressed or archived file data check …"}]}]}
//! ```
//!
//! `status` is `passed` only when every input passed: each file of its snapshot was checked
//! (read with the bytes the snapshot recorded) and nothing was found; `failed` when any input
//! has findings; `skipped` when no input was checked (or `--skip-data-check`); else
//! `partial`. `uncheckedFiles` counts the files not checked (an input skipped as a whole
//! counts 1).

use std::path::PathBuf;

use anyhow::anyhow;
use recorder::record::InputRole;
use recorder::runner::{record_bytes, Finished};
use serde_json::json;

use crate::exit::{CliError, OrInput as _};
use safety::datacheck::CheckStatus;

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

/// The largest dataset `run` and `train` check on their own (64 MiB of data, gzip counted
/// inflated); a larger one is recorded as skipped with the reason.
const AUTOMATIC_CHECK_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Unchecked files named per input in the attestation (the `data-check.json` byproduct lists up
/// to 1,000, and `summary.unchecked_files` counts them all).
const UNCHECKED_IN_RECORD: usize = 20;

/// The outcome of `data check` on every `--data` input of a run.
pub struct DataCheck {
    inputs: Vec<DataCheckInput>,
    reports: Vec<safety::datacheck::DataReport>,
}

/// One `--data` input's check, as recorded.
#[derive(serde::Serialize)]
struct DataCheckInput {
    input: String,
    /// `passed` (every file checked, no warning), `failed` (findings), `partial` (no findings,
    /// some files not checked) or `skipped` (no file checked).
    status: CheckStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<safety::datacheck::Summary>,
    /// The first files not checked, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unchecked: Vec<safety::datacheck::UncheckedFile>,
    /// The input's absolute path (to find its snapshot in the record).
    #[serde(skip)]
    absolute: Option<PathBuf>,
    /// Index into `DataCheck::reports`.
    #[serde(skip)]
    report: Option<usize>,
}

/// Runs `data check` (default options) on every `--data` input; `skip` records that it was not
/// asked for. Every file of an input is checked or listed as unchecked with the reason (the
/// wrapped command may read formats `data check` does not know): an input is `passed` only when
/// every file was checked and nothing was found.
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
                let mut entry = DataCheckInput {
                    input,
                    status: report.status,
                    reason: None,
                    summary: None,
                    unchecked: Vec::new(),
                    absolute: std::path::absolute(path).ok(),
                    report: Some(check.reports.len()),
                };
                entry.update(&report);
                entry.warn(&report, path);
                check.inputs.push(entry);
                check.reports.push(report);
            }
            Err(err @ safety::datacheck::CheckError::TooLarge { .. }) => {
                eprintln!(
                    "trainprov: warning: {err}; recorded as skipped. Run `trainprov data check {}` \
                     on its own",
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
            status: CheckStatus::Skipped,
            reason: Some(reason),
            summary: None,
            unchecked: Vec::new(),
            absolute: None,
            report: None,
        }
    }

    /// Takes status, summary and unchecked files from `report`.
    fn update(&mut self, report: &safety::datacheck::DataReport) {
        self.status = report.status;
        self.summary = Some(report.summary.clone());
        self.unchecked = report
            .unchecked
            .iter()
            .take(UNCHECKED_IN_RECORD)
            .cloned()
            .collect();
        self.reason = match report.status {
            CheckStatus::Skipped if report.summary.unchecked_files == 0 => Some("no files".into()),
            CheckStatus::Skipped => Some("no file in a format data check reads".into()),
            CheckStatus::Partial => Some(format!(
                "{} not checked",
                plural(report.summary.unchecked_files, "file", "files")
            )),
            _ => None,
        };
    }

    fn warn(&self, report: &safety::datacheck::DataReport, path: &std::path::Path) {
        let shown = crate::commands::shown(path);
        if report.has_warnings() {
            eprintln!(
                "trainprov: warning: data check of {shown}: {} finding(s); run `trainprov data \
                 check {shown}` to see them (recorded in the attestation)",
                report.summary.findings,
            );
        }
        if let Some(first) = report.unchecked.first() {
            eprintln!(
                "trainprov: warning: data check of {shown}: {} NOT checked (recorded as {}), \
                 e.g. {}: {}",
                plural(report.summary.unchecked_files, "file", "files"),
                report.status.as_str(),
                first.file,
                first.reason
            );
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl DataCheck {
    /// The run's status over its inputs ([`CheckStatus::combine`]): `passed` only when every
    /// input passed.
    pub fn status(&self) -> CheckStatus {
        CheckStatus::combine(self.inputs.iter().map(|i| i.status))
    }

    /// Compares each input's check with the snapshot the record holds of it (a file the check
    /// did not read, or read with other bytes, makes the input `partial`), then adds
    /// `internalParameters.dataCheck` and, when anything was checked, the full reports as the
    /// `data-check.json` byproduct.
    pub fn record_into(
        mut self,
        finished: &mut Finished,
        objects: &recorder::objects::ObjectStore,
    ) -> Result<(), CliError> {
        for entry in &mut self.inputs {
            let Some(k) = entry.report else { continue };
            let report = &mut self.reports[k];
            let recorded = entry.absolute.as_ref().and_then(|abs| {
                finished.record.inputs.iter().find(|r| {
                    r.role == InputRole::Data && std::path::Path::new(&r.path) == abs.as_path()
                })
            });
            let snapshot = recorded
                .ok_or_else(|| "no snapshot of this input in the record".to_string())
                .and_then(|r| objects.get(&r.manifest_object).map_err(|e| e.to_string()))
                .and_then(|bytes| {
                    recorder::snapshot::DataSnapshot::from_manifest_bytes(PathBuf::new(), &bytes)
                        .map_err(|e| e.to_string())
                });
            match snapshot {
                Ok(snap) => report.reconcile(
                    snap.entries
                        .iter()
                        .map(|e| (e.path.as_str(), e.blake3.as_str())),
                ),
                Err(e) => {
                    // Fail closed: without the snapshot nothing says the check read what was
                    // recorded.
                    entry.status = CheckStatus::combine([report.status, CheckStatus::Partial]);
                    entry.reason = Some(format!("not compared with the snapshot: {e}"));
                    continue;
                }
            }
            let before = entry.status;
            entry.update(report);
            if before != entry.status {
                eprintln!(
                    "trainprov: warning: data check of {}: the snapshot holds files the check did \
                     not read as recorded (recorded as {}), e.g. {}",
                    entry.input,
                    entry.status.as_str(),
                    report
                        .unchecked
                        .first()
                        .map(|u| format!("{}: {}", u.file, u.reason))
                        .unwrap_or_default()
                );
            }
        }
        if !self.reports.is_empty() {
            let bytes = serde_json::to_vec_pretty(&self.reports).or_input()?;
            let file =
                record_bytes(objects, "data-check.json", &bytes, "application/json").or_input()?;
            finished.record.byproducts.push(file);
        }
        let summaries = || self.inputs.iter().filter_map(|i| i.summary.as_ref());
        let findings: usize = summaries().map(|s| s.findings).sum();
        // Inputs skipped as a whole count as unchecked too (their files were not read).
        let unchecked: usize = summaries().map(|s| s.unchecked_files).sum::<usize>()
            + self.inputs.iter().filter(|i| i.summary.is_none()).count();
        let summary = json!({
            "status": self.status().as_str(),
            "findings": findings,
            "uncheckedFiles": unchecked,
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
