//! `trainprov data check`: poisoning checks for a dataset (JSONL, CSV, JSON, gzip'd or not;
//! Parquet; chat rows).

use anyhow::anyhow;

use crate::cli::{DataArgs, DataCheckArgs, DataCommand};
use crate::commands::shown;
use crate::exit::{CliError, FAILED};
use crate::Report;
use safety::datacheck::CheckStatus;

/// Dispatches `trainprov data ...`.
pub fn run(args: &DataArgs) -> Result<Report, CliError> {
    match &args.command {
        DataCommand::Check(check) => run_check(check),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn run_check(args: &DataCheckArgs) -> Result<Report, CliError> {
    if !args.path.exists() {
        return Err(CliError::input(anyhow!(
            "{}: no such file or directory",
            shown(&args.path)
        )));
    }
    let options = safety::datacheck::CheckOptions {
        baseline: args.baseline.clone(),
        near_dup_threshold: args.near_dup_threshold,
        max_trigger_candidates: args.max_triggers,
        ..Default::default()
    };
    let report = safety::datacheck::check(&args.path, &options).map_err(CliError::input)?;
    if report.files.is_empty() {
        return Err(CliError::input(anyhow!(
            "{}: nothing to check: {}",
            shown(&args.path),
            if report.unchecked.is_empty() {
                "no files".to_string()
            } else {
                unchecked_list(&report, 5)
            }
        )));
    }

    let mut human = String::new();
    for finding in &report.findings {
        human.push_str(&format!("{finding}\n"));
    }
    if report.summary.findings_omitted > 0 {
        human.push_str(&format!(
            "{} more not listed (at most {} of each kind are; --json has the counts)\n",
            plural(report.summary.findings_omitted, "finding", "findings"),
            safety::datacheck::MAX_FINDINGS_PER_KIND
        ));
    }
    for u in &report.unchecked {
        human.push_str(&format!("not checked: {}: {}\n", u.file, u.reason));
    }
    let more = report.summary.unchecked_files - report.unchecked.len();
    if more > 0 {
        human.push_str(&format!("not checked: {more} more files\n"));
    }
    if let Some(b) = &report.baseline {
        let mut line = format!("baseline {} ({}): {} rows", shown(&b.path), b.kind, b.rows);
        if b.kind == "manifest" {
            for (what, files) in [
                ("added", &b.added_files),
                ("changed", &b.changed_files),
                ("removed", &b.removed_files),
            ] {
                if !files.is_empty() {
                    line.push_str(&format!(
                        "; {what} since the snapshot: {}",
                        files.join(", ")
                    ));
                }
            }
        }
        if let Some(tvd) = b.total_variation {
            line.push_str(&format!(
                "; output distribution of {} rows: total variation {tvd:.3}",
                b.compared_rows
            ));
        }
        if let Some(note) = &b.note {
            line.push_str(&format!("; {note}"));
        }
        human.push_str(&line);
        human.push('\n');
    }
    let t = &report.template;
    if t.shared_bigrams > 0 {
        human.push_str(&format!(
            "near-duplicates compared without what most of the {} inputs share: {} (e.g. {})\n",
            t.inputs,
            plural(t.shared_bigrams, "word pair", "word pairs"),
            t.shared
                .iter()
                .take(5)
                .map(|b| format!("\"{b}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let s = &report.summary;
    let mut kinds = Vec::new();
    for (n, one, many) in [
        (
            s.conflicting_duplicates,
            "conflicting duplicate",
            "conflicting duplicates",
        ),
        (s.near_duplicates, "near-duplicate", "near-duplicates"),
        (
            s.trigger_candidates,
            "trigger candidate",
            "trigger candidates",
        ),
        (
            s.distribution,
            "distribution finding",
            "distribution findings",
        ),
    ] {
        if n > 0 {
            kinds.push(plural(n, one, many));
        }
    }
    let verdict = if s.findings == 0 {
        "no findings".to_string()
    } else {
        format!(
            "{} ({})",
            plural(s.findings, "finding", "findings"),
            kinds.join(", ")
        )
    };
    let coverage = if s.unchecked_files > 0 {
        format!(
            "; {} NOT checked (listed above)",
            plural(s.unchecked_files, "file", "files")
        )
    } else {
        String::new()
    };
    human.push_str(&format!(
        "checked {} in {} of {}: {verdict}{coverage}\n",
        plural(s.rows, "row", "rows"),
        plural(report.files.len(), "file", "files"),
        shown(&args.path)
    ));

    // `status` is the report's: passed, failed or partial (skipped is the error above).
    let json = serde_json::to_value(&report).map_err(|e| CliError::input(anyhow!(e)))?;
    let exit = if report.status == CheckStatus::Passed {
        0
    } else {
        FAILED
    };
    Ok(Report { human, json, exit })
}

/// `a.zst (a compressed …); b.txt (…)`, at most `max` files.
fn unchecked_list(report: &safety::datacheck::DataReport, max: usize) -> String {
    let mut parts: Vec<String> = report
        .unchecked
        .iter()
        .take(max)
        .map(|u| format!("{} ({})", u.file, u.reason))
        .collect();
    let more = report.summary.unchecked_files.saturating_sub(max);
    if more > 0 {
        parts.push(format!("and {more} more files not checked"));
    }
    parts.join("; ")
}
