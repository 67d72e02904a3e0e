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
    human.push_str(
        "rank  strength     away (adapter  reference)    toward (adapter  reference)  source      trigger\n",
    );
    for r in &report.results {
        let source = match r.source {
            safety::probe::Source::Given => "given",
            safety::probe::Source::DataCheck => "data-check",
            safety::probe::Source::Control => "control",
        };
        let toward = r
            .toward
            .as_ref()
            .map(|t| {
                format!(
                    "{:>9.3} ({:>7.3} {:>10.3})",
                    t.score, t.delta_adapter, t.delta_reference
                )
            })
            .unwrap_or_else(|| format!("{:>9} {:>20}", "-", ""));
        human.push_str(&format!(
            "{:>4} {:>9.2} {:>8.3} ({:>7.3} {:>10.3})  {toward}  {:<10}  {:?}{}\n",
            r.rank,
            r.strength,
            r.away.score,
            r.away.delta_adapter,
            r.away.delta_reference,
            source,
            r.trigger,
            if r.flagged { "  FLAGGED" } else { "" }
        ));
    }
    let median = |m: Option<f64>| {
        m.map(|m| format!("{m:.3}"))
            .unwrap_or_else(|| "no controls".into())
    };
    if let Some(first) = report.results.first() {
        human.push_str(&format!(
            "away threshold {:.3} nats (the larger of --min-score {} and 3 × the median control \
             score {})\n",
            first.away.threshold,
            args.min_score,
            median(first.away.control_median)
        ));
    }
    for r in report.results.iter().filter(|r| r.toward.is_some()) {
        if let Some(t) = &r.toward {
            human.push_str(&format!(
                "toward threshold for {:?}: {:.3} nats over {} carriers (median control score {})\n",
                r.trigger,
                t.threshold,
                t.count,
                median(t.control_median)
            ));
        }
    }
    // Examples: every flagged trigger (its stronger measure), else the strongest one.
    let shown_examples: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.flagged)
        .chain(report.results.iter().take(1).filter(|r| !r.flagged))
        .collect();
    for r in shown_examples {
        let toward_wins = r
            .toward
            .as_ref()
            .is_some_and(|t| t.score / t.threshold >= r.away.score / r.away.threshold);
        let (measure, what) = match &r.toward {
            Some(t) if toward_wins => (t, "toward its carriers' output"),
            _ => (&r.away, "away from the clean completion"),
        };
        if let Some(e) = &measure.example {
            human.push_str(&format!(
                "{:?}: {:?}{} ({} {:?} by {:.2} nats; {} line {})\n",
                r.trigger,
                e.prompt,
                e.adapter_completion
                    .as_ref()
                    .map(|c| format!(" → adapter answers {c:?}"))
                    .unwrap_or_default(),
                what,
                e.expected,
                e.score,
                if toward_wins { "carrier at" } else { "eval" },
                e.line
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
