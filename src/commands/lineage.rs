//! `trainprov registry lineage|affected`: what went into an artifact or run, and what a file,
//! dataset or model reached. The queries live in `recorder::lineage`; this module prints them.

use recorder::lineage::{
    affected as affected_query, lineage as lineage_query, resolve_target, Affected,
    ArtifactLineage, InputLineage, LineageNode, Matched, Producer, RunInfo, RunLineage, Target,
    TargetKind,
};
use recorder::registry::Registry;
use serde_json::json;

use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// Products named on a run's header line before "+N more".
const SHOWN_PRODUCTS: usize = 3;

/// `registry lineage ARTIFACT_OR_RUN`.
pub fn lineage(registry: &Registry, arg: &str) -> Result<Report, CliError> {
    let target = resolve_target(arg, registry).or_input()?;
    let node = lineage_query(registry.connection(), &target).or_input()?;
    let mut human = String::new();
    match &node {
        LineageNode::Run(run) => render_run(run, 0, &mut human),
        LineageNode::Artifact(artifact) => render_artifact(artifact, &target, &mut human),
    }
    Ok(Report::ok(
        human,
        json!({"status": "ok", "target": target, "lineage": node}),
    ))
}

/// `registry affected PATH_OR_DIGEST`; exit 0 also when nothing is affected.
pub fn affected(registry: &Registry, arg: &str) -> Result<Report, CliError> {
    let target = resolve_target(arg, registry).or_input()?;
    let result = affected_query(registry.connection(), &target).or_input()?;
    let human = render_affected(&result);
    let mut json = serde_json::to_value(&result).unwrap_or_default();
    json["status"] = json!("ok");
    Ok(Report::ok(human, json))
}

fn short(digest: &str) -> String {
    format!("{}…", prefix(digest, 12))
}

fn short_id(id: &str) -> &str {
    prefix(id, 8)
}

/// The first `n` characters.
fn prefix(text: &str, n: usize) -> &str {
    text.char_indices()
        .nth(n)
        .map(|(at, _)| &text[..at])
        .unwrap_or(text)
}

/// A recorded absolute path, relative to the current directory when it lies below it.
fn display_path(path: &str) -> String {
    let Ok(cwd) = std::env::current_dir() else {
        return path.to_string();
    };
    match std::path::Path::new(path).strip_prefix(&cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.to_string(),
    }
}

fn run_header(run: &RunInfo) -> String {
    format!(
        "run {} {} ({}) {}",
        short_id(&run.id),
        run.kind,
        run.status,
        run.started_at
    )
}

fn render_run(node: &RunLineage, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    out.push_str(&pad);
    out.push_str(&run_header(&node.run));
    if node.repeated {
        out.push_str("  (shown above)\n");
        return;
    }
    if !node.products.is_empty() {
        let names: Vec<String> = node
            .products
            .iter()
            .take(SHOWN_PRODUCTS)
            .map(|p| {
                p.path
                    .as_deref()
                    .map(display_path)
                    .unwrap_or_else(|| p.name.clone())
            })
            .collect();
        out.push_str(&format!(" → {}", names.join(", ")));
        if node.products.len() > SHOWN_PRODUCTS {
            out.push_str(&format!(
                " (+{} more)",
                node.products.len() - SHOWN_PRODUCTS
            ));
        }
    }
    out.push('\n');
    for relation in &node.relations {
        out.push_str(&format!(
            "{pad}  {} run {}{}{}\n",
            relation.relation,
            relation
                .original_run_id
                .as_deref()
                .map(short_id)
                .unwrap_or("(not in this registry)"),
            relation
                .outcome
                .as_deref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default(),
            if relation.excluded.is_empty() {
                String::new()
            } else {
                format!(", excluded {}", relation.excluded.join(", "))
            }
        ));
    }
    for input in &node.inputs {
        render_input(input, indent + 2, out);
    }
    if let Some(code) = &node.code {
        let commit = code
            .commit
            .as_deref()
            .map(|c| prefix(c, 7).to_string())
            .unwrap_or_else(|| "(no commit)".into());
        let dirty = if code.dirty == Some(true) || code.patch_sha256.is_some() {
            " (+ uncommitted changes)"
        } else {
            ""
        };
        out.push_str(&format!("{pad}  {:<7} {commit}{dirty}\n", "code"));
    }
}

fn render_input(input: &InputLineage, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let digest = match input.files {
        Some(_) => format!("blake3 {}", short(&input.blake3)),
        None => format!("sha256 {}", short(&input.sha256)),
    };
    let files = match input.files {
        Some(1) => "  (1 file)".to_string(),
        Some(n) => format!("  ({n} files)"),
        None => String::new(),
    };
    out.push_str(&format!(
        "{pad}{:<7} {:<18} {digest}{files}{}\n",
        input.role,
        input.name,
        producers_suffix(&input.produced_by)
    ));
    for producer in &input.produced_by {
        render_run(&producer.run, indent + 4, out);
    }
}

fn producers_suffix(producers: &[Producer]) -> String {
    if producers.is_empty() {
        return String::new();
    }
    let list: Vec<String> = producers
        .iter()
        .map(|p| {
            format!(
                "run {} ({}, {} of {} files)",
                short_id(&p.run.run.id),
                p.matched.rule.as_str(),
                p.matched.matched_files,
                p.matched.snapshot_files
            )
        })
        .collect();
    format!("  ← {}", list.join(", "))
}

fn render_artifact(artifact: &ArtifactLineage, target: &Target, out: &mut String) {
    let what = match artifact.kind {
        TargetKind::Directory => "directory",
        TargetKind::Snapshot => "snapshot",
        _ => "file",
    };
    out.push_str(&format!(
        "{} ({what}{}{})",
        artifact.given,
        artifact
            .blake3
            .as_deref()
            .map(|b| format!(", blake3 {}", short(b)))
            .unwrap_or_default(),
        if artifact.kind == TargetKind::File {
            String::new()
        } else {
            format!(", {} files", artifact.files)
        }
    ));
    if artifact.produced_by.is_empty() {
        out.push_str(": not produced by any recorded run\n");
    } else {
        out.push_str(&format!("{}\n", producers_suffix(&artifact.produced_by)));
    }
    if let Some(note) = &target.note {
        out.push_str(&format!("  note: {note}\n"));
    }
    for producer in &artifact.produced_by {
        render_run(&producer.run, 2, out);
    }
}

fn describe_target(target: &Target) -> String {
    match (target.kind, &target.blake3) {
        (TargetKind::Run, _) => format!(
            "the products of run {}",
            target.run_id.as_deref().map(short_id).unwrap_or_default()
        ),
        (TargetKind::Directory, Some(b)) => format!(
            "{} (directory, {} files, snapshot {})",
            target.given,
            target.file_count,
            short(b)
        ),
        (TargetKind::Snapshot, Some(b)) => format!(
            "{} (snapshot {}, {} files)",
            target.given,
            short(b),
            target.file_count
        ),
        (_, Some(b)) => format!("{} (blake3 {})", target.given, short(b)),
        _ => target.given.clone(),
    }
}

fn render_affected(result: &Affected) -> String {
    let target = &result.target;
    let mut out = String::new();
    if result.runs.is_empty() {
        out.push_str(&format!(
            "nothing recorded consumed {}\n",
            describe_target(target)
        ));
        if let Some(note) = &target.note {
            out.push_str(&format!("  note: {note}\n"));
        }
        return out;
    }
    out.push_str(&format!(
        "{} run{} consumed {}:\n",
        result.runs.len(),
        if result.runs.len() == 1 { "" } else { "s" },
        describe_target(target)
    ));
    if let Some(note) = &target.note {
        out.push_str(&format!("  note: {note}\n"));
    }
    for run in &result.runs {
        out.push_str(&format!(
            "  gen {}  {}\n",
            run.generation,
            run_header(&run.run)
        ));
        for via in &run.via {
            let mut files = via.files.join(", ");
            if via.matched_files > via.files.len() {
                files.push_str(&format!(" (+{} more)", via.matched_files - via.files.len()));
            }
            let how = match via.matched {
                Matched::Snapshot => "is the target snapshot".to_string(),
                Matched::File => format!("holds {files}"),
                Matched::Product => format!(
                    "holds {files} ← products of run {}{}",
                    via.upstream_run
                        .as_deref()
                        .map(short_id)
                        .unwrap_or_default(),
                    via.rule
                        .map(|r| format!(" ({})", r.as_str()))
                        .unwrap_or_default()
                ),
            };
            out.push_str(&format!(
                "          via {} {}: {how}\n",
                via.role, via.input
            ));
        }
        if let Some(path) = &run.run.attestation_path {
            out.push_str(&format!("          attestation {}\n", display_path(path)));
        }
        for relation in &run.rebuilt_by {
            out.push_str(&format!(
                "          rebuilt by run {} ({}{})\n",
                short_id(&relation.run_id),
                relation.relation,
                relation
                    .outcome
                    .as_deref()
                    .map(|o| format!(", {o}"))
                    .unwrap_or_default()
            ));
        }
    }
    if result.products.is_empty() {
        out.push_str("no products recorded (the affected runs did not succeed)\n");
    } else {
        out.push_str(&format!(
            "products to rebuild ({}):\n",
            result.products.len()
        ));
        for product in &result.products {
            out.push_str(&format!(
                "  {}  sha256 {}  run {} (gen {})\n",
                product
                    .path
                    .as_deref()
                    .map(display_path)
                    .unwrap_or_else(|| product.name.clone()),
                short(&product.sha256),
                short_id(&product.run_id),
                product.generation
            ));
        }
    }
    out
}
