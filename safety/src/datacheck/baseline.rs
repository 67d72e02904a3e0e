//! The comparison with a baseline (see the module doc of [`super`], finding 4).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::index::Index;
use super::read::{self, read_error, strip_fs_err};
use super::{
    quote, BaselineReport, CheckError, CheckOptions, Finding, FindingDetail, Location, Severity,
    ShareChange,
};

const MANIFEST_HEADER: &str = "trainprov-snapshot v";

/// A saved `data check --json` report: a `.json` file too, told apart by its keys.
fn is_report(path: &Path) -> bool {
    fs_err::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| {
            v.get("outputs").is_some_and(Value::is_array) && v.get("summary").is_some()
        })
}

fn is_data_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| read::classify(n).is_some())
}

fn baseline_error(path: &Path, message: impl Into<String>) -> CheckError {
    CheckError::Baseline {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

pub(super) fn compare_baseline(
    path: &Path,
    index: &Index,
    options: &CheckOptions,
) -> Result<(BaselineReport, Vec<Finding>), CheckError> {
    let mut report = BaselineReport {
        path: path.to_path_buf(),
        kind: "dataset",
        rows: 0,
        compared_rows: index.len(),
        total_variation: None,
        note: None,
        added_files: Vec::new(),
        changed_files: Vec::new(),
        removed_files: Vec::new(),
    };
    let all: Vec<usize> = (0..index.len()).collect();
    let (baseline, current): (BTreeMap<String, usize>, Vec<usize>) = if path.is_dir()
        || (is_data_file(path) && !is_report(path))
    {
        let mut loaded = Index::default();
        read::load(path, options.max_bytes, &mut loaded)
            .map_err(|e| baseline_error(path, e.to_string()))?;
        let mut counts = BTreeMap::new();
        for i in 0..loaded.len() {
            *counts.entry(loaded.out(i).to_string()).or_default() += 1;
        }
        (counts, all)
    } else {
        let bytes = fs_err::read(path).map_err(|e| baseline_error(path, strip_fs_err(&e)))?;
        let text = String::from_utf8(bytes).map_err(|_| baseline_error(path, "not UTF-8 text"))?;
        if text.starts_with(MANIFEST_HEADER) {
            report.kind = "manifest";
            manifest_baseline(&text, path, index, &mut report)?
        } else if let Ok(json) = serde_json::from_str::<Value>(&text) {
            report.kind = "report";
            let outputs = json
                .get("outputs")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    baseline_error(
                        path,
                        "JSON without an \"outputs\" list; expected a `trainprov data check \
                         --json` report",
                    )
                })?;
            if json
                .get("outputs_omitted")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                > 0
            {
                report.note = Some(
                    "the baseline report lists only its most common outputs (it has too many \
                     to list); their distribution is not compared"
                        .into(),
                );
                return Ok((report, Vec::new()));
            }
            let mut counts = BTreeMap::new();
            for o in outputs {
                let (Some(name), Some(count)) = (
                    o.get("output").and_then(Value::as_str),
                    o.get("count").and_then(Value::as_u64),
                ) else {
                    return Err(baseline_error(
                        path,
                        "an \"outputs\" entry lacks \"output\" (string) or \"count\" (integer)",
                    ));
                };
                counts.insert(name.to_string(), count as usize);
            }
            (counts, all)
        } else {
            return Err(baseline_error(
                path,
                "not a dataset (.jsonl, .csv or a directory), a `trainprov data check --json` \
                 report or a snapshot manifest (`trainprov snapshot --manifest`)",
            ));
        }
    };
    report.rows = baseline.values().sum();
    report.compared_rows = current.len();
    let mut findings = Vec::new();
    if report.rows == 0 || current.is_empty() {
        report.note.get_or_insert_with(|| {
            "nothing to compare: one side has no rows with an output".into()
        });
        return Ok((report, findings));
    }
    let mut now: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_row: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &current {
        *now.entry(index.out(i).to_string()).or_default() += 1;
        first_row.entry(index.out(i).to_string()).or_insert(i);
    }
    let label_like = |counts: &BTreeMap<String, usize>| {
        let rows: usize = counts.values().sum();
        2 * counts.len() <= rows
    };
    if !label_like(&baseline) || !label_like(&now) {
        report.note = Some(
            "outputs are mostly unique (free text, not labels); their distribution is not \
             compared"
                .into(),
        );
        return Ok((report, findings));
    }
    let (nb, nc) = (report.rows as f64, current.len() as f64);
    let keys: BTreeSet<&String> = baseline.keys().chain(now.keys()).collect();
    let mut changes: Vec<ShareChange> = keys
        .iter()
        .map(|k| ShareChange {
            output: (*k).clone(),
            baseline: baseline.get(*k).copied().unwrap_or(0) as f64 / nb,
            current: now.get(*k).copied().unwrap_or(0) as f64 / nc,
        })
        .collect();
    let tvd = 0.5
        * changes
            .iter()
            .map(|c| (c.current - c.baseline).abs())
            .sum::<f64>();
    report.total_variation = Some(tvd);
    let baseline_name = path.display().to_string();
    let first_at = index.at(current[0]);
    if tvd >= options.shift_threshold {
        changes.sort_by(|a, b| {
            (b.current - b.baseline)
                .abs()
                .total_cmp(&(a.current - a.baseline).abs())
                .then_with(|| a.output.cmp(&b.output))
        });
        changes.truncate(5);
        let described: Vec<String> = changes
            .iter()
            .map(|c| {
                format!(
                    "{} {:.0}% → {:.0}%",
                    quote(&c.output, 30),
                    100.0 * c.baseline,
                    100.0 * c.current
                )
            })
            .collect();
        findings.push(Finding {
            severity: Severity::Warning,
            at: Location {
                file: first_at.file.clone(),
                line: 0,
            },
            message: format!(
                "output distribution shifted from baseline {baseline_name}: total variation \
                 {tvd:.3} (threshold {}) over {} vs {} rows; largest changes {}",
                options.shift_threshold,
                report.rows,
                current.len(),
                described.join(", ")
            ),
            detail: FindingDetail::DistributionShift {
                total_variation: tvd,
                baseline_rows: report.rows,
                rows: current.len(),
                largest_changes: changes,
            },
        });
    }
    for (output, count) in &now {
        if !baseline.contains_key(output) {
            let at = index.at(first_row[output]);
            findings.push(Finding {
                severity: Severity::Warning,
                at,
                message: format!(
                    "new output {} ({count} rows) is not in baseline {baseline_name}",
                    quote(output, 40)
                ),
                detail: FindingDetail::NewOutput {
                    output: output.clone(),
                    count: *count,
                },
            });
        }
    }
    for (output, count) in &baseline {
        if !now.contains_key(output) {
            findings.push(Finding {
                severity: Severity::Warning,
                at: Location {
                    file: baseline_name.clone(),
                    line: 0,
                },
                message: format!(
                    "output {} ({count} rows in the baseline) has vanished",
                    quote(output, 40)
                ),
                detail: FindingDetail::VanishedOutput {
                    output: output.clone(),
                    baseline_count: *count,
                },
            });
        }
    }
    Ok((report, findings))
}

/// Splits the dataset by the manifest: rows of unchanged files are the baseline.
fn manifest_baseline(
    text: &str,
    path: &Path,
    index: &Index,
    report: &mut BaselineReport,
) -> Result<(BTreeMap<String, usize>, Vec<usize>), CheckError> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            // `f` (v1, v2) and `l` (v2: a symlink recorded by the content it resolves to, the
            // link text last) both carry the content's BLAKE3; a v1 `l` line is link text only.
            ["f", _size, digest, p] | ["l", _size, digest, p, _] => {
                entries.push(((*p).to_string(), (*digest).to_string()))
            }
            ["l", ..] => {}
            _ => {
                return Err(baseline_error(
                    path,
                    format!("line {}: not a manifest line", n + 1),
                ))
            }
        }
    }
    let find = |name: &str| -> Option<&(String, String)> {
        entries
            .iter()
            .find(|(p, _)| p == name || p.ends_with(&format!("/{name}")))
    };
    let mut unchanged = vec![false; index.files.len()];
    for (f, summary) in index.files.iter().enumerate() {
        match find(&summary.file) {
            None => report.added_files.push(summary.file.clone()),
            Some((_, digest)) => {
                let full = &index.paths[f];
                let bytes = fs_err::read(full).map_err(|e| read_error(full, strip_fs_err(&e)))?;
                if blake3::hash(&bytes).to_hex().as_str() == digest.as_str() {
                    unchanged[f] = true;
                } else {
                    report.changed_files.push(summary.file.clone());
                }
            }
        }
    }
    for (p, _) in &entries {
        let known = index
            .files
            .iter()
            .any(|s| *p == s.file || p.ends_with(&format!("/{}", s.file)));
        if !known && is_data_file(Path::new(p)) {
            report.removed_files.push(p.clone());
        }
    }
    let mut counts = BTreeMap::new();
    let mut current = Vec::new();
    for i in 0..index.len() {
        if unchanged[index.file_of(i)] {
            *counts.entry(index.out(i).to_string()).or_default() += 1;
        } else {
            current.push(i);
        }
    }
    if counts.is_empty() {
        report.note = Some(
            "no data file is unchanged since the snapshot: no baseline rows to compare with".into(),
        );
    } else if current.is_empty() {
        report.note = Some("every data file is unchanged since the snapshot".into());
    }
    Ok((counts, current))
}
