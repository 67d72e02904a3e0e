//! Mean loss of a base model, with or without a LoRA adapter, on a JSONL file.
//!
//! Tokenization, truncation and masking are exactly those of training ([`crate::data`]);
//! examples are taken in file order, and the mean is over loss tokens (each batch's summed
//! token loss is added in `f64`, then divided by the token count).

use std::path::Path;

use candle_core::Device;
use serde::Serialize;

use crate::data::{load_jsonl, Dataset, TextTokenizer};
use crate::error::TrainerError;
use crate::model::{masked_nll_sum, Llama};

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Mean negative log-likelihood per loss token (nats).
    pub mean_loss: f64,
    /// Loss tokens.
    pub tokens: usize,
    /// Examples.
    pub examples: usize,
}

/// Loads the base model (and adapter) and evaluates it on `data`.
pub fn mean_loss(
    base_dir: &Path,
    adapter_dir: Option<&Path>,
    data: &Path,
    seq_len: usize,
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport, TrainerError> {
    let mut model = Llama::load(base_dir, device)?;
    if let Some(dir) = adapter_dir {
        model.load_adapter(dir)?;
        // No backward pass follows: without this the graph of every layer after the first
        // adapted one would stay alive until the loss is read (4x the memory of the base).
        model.freeze_adapter();
    }
    let tok = TextTokenizer::load(base_dir, model.config())?;
    let dataset = load_jsonl(data, &tok, seq_len, model.config().vocab_size)?;
    evaluate(&model, &dataset, batch_size)
}

/// Evaluates a loaded model on a tokenized dataset, in file order.
pub fn evaluate(
    model: &Llama,
    dataset: &Dataset,
    batch_size: usize,
) -> Result<EvalReport, TrainerError> {
    let batch_size = batch_size.max(1);
    let mut sum = 0f64;
    let mut tokens = 0usize;
    let indices: Vec<usize> = (0..dataset.examples.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let batch = dataset.batch(chunk, model.device())?;
        let logits = model.forward(&batch.input_ids)?;
        let nll = masked_nll_sum(&logits, &batch.targets, &batch.weights)?;
        sum += f64::from(nll.to_scalar::<f32>()?);
        tokens += batch.loss_tokens;
    }
    Ok(EvalReport {
        mean_loss: sum / tokens.max(1) as f64,
        tokens,
        examples: dataset.examples.len(),
    })
}
