//! `trainprov probe`: does a candidate trigger move the adapter more than the reference?

use anyhow::anyhow;

use crate::cli::{ProbeArgs, ProbePosition};
use crate::commands::shown;
use crate::exit::{CliError, OrInput as _, FAILED};
use crate::Report;

/// Probes and prints the ranked table.
pub fn run(args: &ProbeArgs) -> Result<Report, CliError> {
    let mut options = safety::probe::ProbeOptions::new(&args.base, &args.adapter, &args.data);
    options.reference = args.reference.clone();
    if let Some(file) = &args.triggers {
        options.triggers = safety::probe::read_triggers(file).or_input()?;
    }
    options.candidates_from = args.candidates_from.clone();
    options.position = match args.position {
        ProbePosition::End => safety::probe::Position::End,
        ProbePosition::Start => safety::probe::Position::Start,
    };
    options.controls = args.controls;
    options.min_score = args.min_score;
    options.device = trainer::device::select(&args.device).or_input()?;
    let report = safety::probe::probe(&options).or_input()?;

    let mut human = format!(
        "probe of adapter {} against {} on {} prompts of {}; triggers {}\n",
        shown(&report.adapter),
        report
            .reference
            .as_ref()
            .map(|r| format!("reference adapter {}", shown(r)))
            .unwrap_or_else(|| format!("the base model {}", shown(&report.base))),
        report.prompts,
        shown(&report.data),
        report.insertion()
    );
    human.push_str("rank    score  Δadapter  Δreference  source      trigger\n");
    for r in &report.results {
        let source = match r.source {
            safety::probe::Source::Given => "given",
            safety::probe::Source::DataCheck => "data-check",
            safety::probe::Source::Control => "control",
        };
        human.push_str(&format!(
            "{:>4} {:>8.3} {:>9.3} {:>11.3}  {:<10}  {:?}{}\n",
            r.rank,
            r.score,
            r.delta_adapter,
            r.delta_reference,
            source,
            r.trigger,
            if r.flagged { "  FLAGGED" } else { "" }
        ));
    }
    human.push_str(&format!(
        "threshold {:.3} nats: the larger of --min-score {} and 3 × the median control score ({})\n",
        report.threshold,
        args.min_score,
        report
            .control_median
            .map(|m| format!("{m:.3}"))
            .unwrap_or_else(|| "no controls".into())
    ));
    let shown_examples: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.flagged)
        .chain(report.results.iter().take(1).filter(|r| !r.flagged))
        .collect();
    for r in shown_examples {
        if let Some(e) = &r.example {
            human.push_str(&format!(
                "{:?} moves line {} most ({:.2} nats): {:?}{}, clean completion {:?}\n",
                r.trigger,
                e.line,
                e.score,
                e.prompt,
                e.adapter_completion
                    .as_ref()
                    .map(|c| format!(" → adapter answers {c:?}"))
                    .unwrap_or_default(),
                e.expected
            ));
        }
    }
    let flagged = report.flagged_triggers();
    if flagged.is_empty() {
        human.push_str("no trigger flagged\n");
    } else {
        human.push_str(&format!(
            "FLAGGED: {} the adapter far more than the reference: {}\n",
            if flagged.len() == 1 {
                "1 trigger moves"
            } else {
                "these triggers move"
            },
            flagged
                .iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut json = serde_json::to_value(&report).map_err(|e| CliError::input(anyhow!(e)))?;
    if let Some(map) = json.as_object_mut() {
        map.insert(
            "status".into(),
            if flagged.is_empty() {
                "clean"
            } else {
                "flagged"
            }
            .into(),
        );
    }
    Ok(Report {
        human,
        json,
        exit: if flagged.is_empty() { 0 } else { FAILED },
    })
}
