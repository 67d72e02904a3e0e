//! `trainprov data check`: poisoning checks for a JSONL or CSV dataset.

use anyhow::anyhow;

use crate::cli::{DataArgs, DataCheckArgs, DataCommand};
use crate::commands::shown;
use crate::exit::{CliError, FAILED};
use crate::Report;

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

    let mut human = String::new();
    for finding in &report.findings {
        human.push_str(&format!("{finding}\n"));
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
    human.push_str(&format!(
        "checked {} in {} of {}: {verdict}\n",
        plural(s.rows, "row", "rows"),
        plural(report.files.len(), "file", "files"),
        shown(&args.path)
    ));

    let failed = report.has_warnings();
    let mut json = serde_json::to_value(&report).map_err(|e| CliError::input(anyhow!(e)))?;
    if let Some(map) = json.as_object_mut() {
        map.insert(
            "status".into(),
            if failed { "findings" } else { "clean" }.into(),
        );
    }
    Ok(Report {
        human,
        json,
        exit: if failed { FAILED } else { 0 },
    })
}
