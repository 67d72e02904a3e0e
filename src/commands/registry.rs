//! `trainprov registry list|show`: read the run registry.

use anyhow::anyhow;
use recorder::paths::registry_dir;
use recorder::registry::{Registry, RunSummary};
use serde_json::json;

use crate::cli::{RegistryArgs, RegistryCommand};
use crate::commands::{lineage, shown};
use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// Dispatches the registry subcommands.
pub fn run(args: &RegistryArgs) -> Result<Report, CliError> {
    let cwd = std::env::current_dir().or_input()?;
    let dir = registry_dir(args.registry.as_deref(), &cwd);
    if !dir.join(recorder::registry::DATABASE_FILE).is_file() {
        return Err(CliError::input(anyhow!(
            "{}: no registry here yet; record a run with `trainprov run` or pass --registry DIR",
            shown(&dir)
        )));
    }
    let registry = Registry::open(&dir).or_input()?;
    match &args.command {
        RegistryCommand::List { limit } => list(&registry, *limit),
        RegistryCommand::Show { run } => show(&registry, run),
        RegistryCommand::Lineage { target } => lineage::lineage(&registry, target),
        RegistryCommand::Affected { target } => lineage::affected(&registry, target),
    }
}

fn list(registry: &Registry, limit: usize) -> Result<Report, CliError> {
    let runs = registry.list_runs(limit).or_input()?;
    let mut human = String::new();
    if runs.is_empty() {
        human.push_str("no runs recorded\n");
    }
    for run in &runs {
        human.push_str(&format!(
            "{}  {:<11} {:<4} {}  {}\n",
            &run.id[..8.min(run.id.len())],
            run.status,
            run.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            run.started_at,
            command_line(run)
        ));
    }
    Ok(Report::ok(
        human,
        json!({"status": "ok", "registry": registry.dir(), "runs": runs}),
    ))
}

fn command_line(run: &RunSummary) -> String {
    let text = run.argv.join(" ");
    if text.chars().count() > 70 {
        format!("{}…", text.chars().take(69).collect::<String>())
    } else {
        text
    }
}

fn show(registry: &Registry, run: &str) -> Result<Report, CliError> {
    let detail = registry.show_run(run).or_input()?;
    let s = &detail.summary;
    let mut human = format!(
        "run {}\n  status     {}{}\n  command    {}\n  cwd        {}\n  started    {}\n  finished   {}\n",
        s.id,
        s.status,
        s.exit_code.map(|c| format!(" (exit {c})")).unwrap_or_default(),
        s.argv.join(" "),
        detail.cwd,
        s.started_at,
        s.finished_at.clone().unwrap_or_else(|| "-".into()),
    );
    if let Some(commit) = &detail.git_commit {
        human.push_str(&format!(
            "  code       {commit}{}\n",
            if detail.git_dirty == Some(true) {
                " + uncommitted changes"
            } else {
                ""
            }
        ));
    }
    if let Some(path) = &s.attestation_path {
        human.push_str(&format!("  attestation {path}\n"));
    }
    for link in &detail.artifacts {
        human.push_str(&format!(
            "  {:<22} {}  {}\n",
            link.role,
            &link.sha256[..16.min(link.sha256.len())],
            link.name
        ));
    }
    let mut json = serde_json::to_value(&detail).unwrap_or_default();
    json["status"] = json!("ok");
    json["run_status"] = json!(s.status);
    Ok(Report::ok(human, json))
}
