//! `trainprov scan`: judge model files by their bytes, never loading or executing them.
//!
//! The work (formats, the pickle walk, verdicts, SARIF) is `safety::scan`; its module doc is the
//! spec. This file only gathers the reports of every PATH, prints them and picks the exit code:
//! 0 when every file is clean (`safe`, or `unknown`: not a model format), 1 when one is `unsafe`,
//! `invalid` or `uninspectable` (a format the scanner does not read, such as Keras HDF5, a TF
//! SavedModel or a 7z archive: not known to be clean), 2 for a usage or input error (a missing
//! or unreadable path). Content reached by several paths (a hub cache's snapshot links and
//! blobs) is reported once, its other paths listed under it.
//!
//! Human output, one line per file, then a count:
//!
//! ```text
//! UNSAFE models/evil/pytorch_model.bin: archive/data.pkl: pickle imports posix.system, which can run commands or code when unpickled
//! ok models/llama/model.safetensors: safetensors, 12 tensors
//! unknown models/llama/config.json: not a model weight format (text)
//! 3 files: 1 ok, 1 unsafe, 0 invalid, 0 uninspectable, 1 not a model format
//! ```
//!
//! `--json` prints one object; `files` holds one `safety::scan::FileReport` per file (a full
//! sample is in that type's module doc):
//!
//! ```json
//! {
//!   "status": "failed",
//!   "counts": { "files": 3, "safe": 1, "unsafe": 1, "invalid": 0, "uninspectable": 0, "unknown": 1 },
//!   "files": [
//!     {
//!       "path": "models/evil/pytorch_model.bin",
//!       "format": { "kind": "torch_zip" },
//!       "verdict": "unsafe",
//!       "summary": "PyTorch zip checkpoint, 1 pickle, 2 storages, 3 globals",
//!       "globals": ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "posix.system"],
//!       "findings": [ { "rule": "pickle-dangerous-global", "severity": "error", "message": "…",
//!                       "global": "posix.system", "entry": "archive/data.pkl" } ]
//!     }
//!   ]
//! }
//! ```
//!
//! `status` is `ok` when the exit code is 0, else `failed`. `--sarif` prints a SARIF 2.1.0 log
//! instead (`safety::scan::sarif`), with the same exit codes.

use safety::scan::{sarif, scan_path, FileReport, Verdict};
use serde_json::json;

use crate::cli::ScanArgs;
use crate::exit::{CliError, FAILED};
use crate::Report;

/// Scans every PATH and reports each file.
pub fn run(args: &ScanArgs) -> Result<Report, CliError> {
    let mut reports: Vec<FileReport> = Vec::new();
    for path in &args.paths {
        reports.extend(scan_path(path).map_err(CliError::input)?);
    }
    let count = |v: Verdict| reports.iter().filter(|r| r.verdict == v).count();
    let (safe, unsafe_, invalid, uninspectable, unknown) = (
        count(Verdict::Safe),
        count(Verdict::Unsafe),
        count(Verdict::Invalid),
        count(Verdict::Uninspectable),
        count(Verdict::Unknown),
    );
    let exit = if reports.iter().all(FileReport::is_clean) {
        0
    } else {
        FAILED
    };
    let human = if args.sarif {
        let mut text = serde_json::to_string_pretty(&sarif(&reports)).unwrap_or_default();
        text.push('\n');
        text
    } else {
        let mut text = String::new();
        for report in &reports {
            text.push_str(&report.human_line());
            text.push('\n');
            if !report.aliases.is_empty() {
                text.push_str(&format!(
                    "  same content as: {}\n",
                    report.aliases.join(", ")
                ));
            }
        }
        let files = if reports.len() == 1 { "file" } else { "files" };
        text.push_str(&format!(
            "{} {files}: {safe} ok, {unsafe_} unsafe, {invalid} invalid, {uninspectable} \
             uninspectable, {unknown} not a model format\n",
            reports.len()
        ));
        text
    };
    let json = json!({
        "status": if exit == 0 { "ok" } else { "failed" },
        "counts": {
            "files": reports.len(),
            "safe": safe,
            "unsafe": unsafe_,
            "invalid": invalid,
            "uninspectable": uninspectable,
            "unknown": unknown,
        },
        "files": reports,
    });
    Ok(Report { human, json, exit })
}
