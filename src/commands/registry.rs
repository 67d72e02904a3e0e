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
        RegistryCommand::Revoke { target, reason } => revoke(registry, target, reason),
        RegistryCommand::Revocations => revocations(&registry),
    }
}

fn revoke(mut registry: Registry, target: &str, reason: &str) -> Result<Report, CliError> {
    if reason.trim().is_empty() {
        return Err(CliError::input(anyhow!("--reason must say why")));
    }
    let now = recorder::runner::now_rfc3339();
    let revocation = recorder::revocation::revoke_target(target, reason, &registry, &now)
        .map_err(|e| match e {
            recorder::lineage::LineageError::NoMatch(_) => CliError::input(anyhow!(
                "'{target}': not a file, a directory or a digest (sha256:<hex>, blake3:<hex> or 64 hex digits)"
            )),
            other => CliError::input(other),
        })?;
    registry.add_revocation(&revocation).or_input()?;
    let downstream = revocation_reach(&registry, &revocation)?;
    let mut human = format!(
        "revoked {} ({}, {}): {}\n",
        revocation.given, revocation.kind, revocation.digest, revocation.reason
    );
    if revocation.kind == "unknown" {
        human.push_str("   not in this registry yet: runs recorded later are checked too\n");
    }
    human.push_str(&format!(
        "   {} recorded run(s) downstream (that used it, or a product made from it) now fail \
         `trainprov verify`, as does any attestation naming it as a product\n",
        downstream
    ));
    Ok(Report::ok(
        human,
        json!({"status": "revoked", "revocation": revocation, "downstream_runs": downstream}),
    ))
}

/// How many recorded runs descend from the revoked content.
fn revocation_reach(
    registry: &Registry,
    revocation: &recorder::registry::Revocation,
) -> Result<usize, CliError> {
    let lookup = revocation.blake3.clone().unwrap_or_else(|| {
        revocation
            .digest
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string()
    });
    let target = recorder::lineage::resolve_target(&lookup, registry).or_input()?;
    let affected = recorder::lineage::affected(registry.connection(), &target).or_input()?;
    Ok(affected.runs.len())
}

fn revocations(registry: &Registry) -> Result<Report, CliError> {
    let list = registry.revocations().or_input()?;
    let mut human = String::new();
    if list.is_empty() {
        human.push_str("nothing revoked\n");
    }
    for r in &list {
        human.push_str(&format!(
            "{}  {:<8} {}  {}\n   reason: {}\n",
            r.revoked_at, r.kind, r.digest, r.given, r.reason
        ));
    }
    Ok(Report::ok(
        human,
        json!({"status": "ok", "registry": registry.dir(), "revocations": list}),
    ))
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
