//! `trainprov eval`: mean loss of a base model, with or without an adapter.

use anyhow::anyhow;
use serde_json::json;

use crate::cli::EvalArgs;
use crate::commands::shown;
use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// Evaluates and reports the mean loss.
pub fn run(args: &EvalArgs) -> Result<Report, CliError> {
    for path in [Some(&args.base), args.adapter.as_ref(), Some(&args.data)]
        .into_iter()
        .flatten()
    {
        if !path.exists() {
            return Err(CliError::input(anyhow!(
                "{}: no such file or directory",
                shown(path)
            )));
        }
    }
    if let Ok(model) = trainer::LlamaConfig::from_file(&args.base.join("config.json")) {
        let tokens = args.batch_size.max(1) * args.seq_len;
        let macs = trainer::platform::forward_macs(&model, tokens, args.seq_len);
        trainer::platform::apply_default_threads(macs);
    }
    let device = trainer::device::select(&args.device).or_input()?;
    let report = trainer::mean_loss(
        &args.base,
        args.adapter.as_deref(),
        &args.data,
        args.seq_len,
        args.batch_size,
        &device,
    )
    .or_input()?;
    let human = format!(
        "mean loss {:.4} over {} tokens in {} examples ({}{})\n",
        report.mean_loss,
        report.tokens,
        report.examples,
        shown(&args.base),
        args.adapter
            .as_ref()
            .map(|a| format!(" + adapter {}", shown(a)))
            .unwrap_or_default()
    );
    let json = json!({
        "status": "ok",
        "base": args.base,
        "adapter": args.adapter,
        "data": args.data,
        "mean_loss": report.mean_loss,
        "tokens": report.tokens,
        "examples": report.examples,
    });
    Ok(Report::ok(human, json))
}
