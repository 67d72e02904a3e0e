//! Checks `run` and `train` make on their inputs before anything runs: model files are scanned
//! (never loaded) and refused when unsafe unless `--allow-unsafe-inputs`, which is recorded.

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
