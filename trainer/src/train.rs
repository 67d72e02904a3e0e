//! The training loop: config in, product files and a record of everything that decided them
//! out.
//!
//! # What a run writes into `output.dir`
//!
//! * LoRA mode: `adapter_model.safetensors` and `adapter_config.json` ([`crate::lora`]).
//! * Full mode: `model.safetensors` (Hugging Face names, metadata `{"format":"pt"}`, no
//!   `lm_head.weight` when tied) and copies of the base's `config.json`, `tokenizer.json` and,
//!   when present, `tokenizer_config.json`.
//! * `metrics.jsonl`, rewritten from scratch each run, one JSON object per line with keys in
//!   this order and no timings (so a replay can compare it byte for byte):
//!   - `{"step":S,"weights_blake3":HEX}` at step 0 (before any update), every `digest_every`
//!     steps and after the last step;
//!   - `{"step":S,"loss":L,"lr":R,"grad_norm":G,"tokens":N}` every `log_every` steps and
//!     after the last, where `S` is 1-based, `L` the step's mean token loss, `R` the learning
//!     rate used, `G` the global gradient norm before clipping, `N` the loss tokens of the step.
//!
//!   The weights digest is BLAKE3 over the little-endian `f32` bytes of every trainable tensor,
//!   concatenated in name order.
//!
//! # Order of random draws
//!
//! Three independent streams of [`crate::rng`] from `train.seed`: `Init` (random base weights
//! in full mode with `init = "random"`, or the LoRA `A` matrices), `Data` (one shuffle per
//! epoch) and `Dropout` (masks, micro-batch by micro-batch in forward order).
//!
//! # Steps
//!
//! With `max_steps`, exactly that many optimizer steps of `grad_accum` micro-batches each, the
//! data wrapping into new epochs as needed. Otherwise `epochs × ⌈examples / batch_size⌉`
//! micro-batches, grouped `grad_accum` at a time (the last step may have fewer).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use serde::Serialize;

use crate::config::{resolve_path, Init, LlamaConfig, Mode, TrainConfig};
use crate::data::{load_jsonl, DataOrder, TextTokenizer};
use crate::error::TrainerError;
use crate::files;
use crate::lora::{save_adapter, LoraSpec};
use crate::model::{masked_nll_sum, random_weights, Llama, WEIGHTS_FILE};
use crate::optim::{accumulate, clip_grad_norm, lr_at, AdamW};
use crate::platform::{self, IsaSummary};
use crate::rng::{Rng, Stream, ALGORITHM};

/// File name of the metrics log.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Progress after one optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// 1-based step.
    pub step: usize,
    /// Steps this run will make.
    pub total_steps: usize,
    /// Mean token loss of the step.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Loss tokens in the step.
    pub tokens: usize,
    /// Input tokens processed in the step (`examples × seq_len`).
    pub input_tokens: usize,
    /// Time since training started (after loading).
    pub elapsed: Duration,
}

/// What a finished run produced and what it depended on.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    /// `"lora"` or `"full"`.
    pub mode: &'static str,
    /// Optimizer steps made.
    pub steps: usize,
    /// Mean token loss of the last step.
    pub final_loss: f32,
    /// Product files, in the order written.
    pub files: Vec<PathBuf>,
    /// The metrics log (a byproduct, not a product).
    pub metrics_file: PathBuf,
    /// BLAKE3 of the trainable weights after the last step.
    pub final_weights_blake3: String,
    /// BLAKE3 of the data order ([`DataOrder::digest`]).
    pub data_order_digest: String,
    /// Epochs begun.
    pub epochs_started: usize,
    /// Examples in the data file.
    pub examples: usize,
    /// Examples truncated to `seq_len`.
    pub truncated_examples: usize,
    /// Loss tokens seen over the run.
    pub tokens_seen: usize,
    /// Trainable parameters.
    pub trainable_parameters: usize,
    /// `train.seed`.
    pub seed: u64,
    /// [`crate::rng::ALGORITHM`].
    pub rng_algorithm: &'static str,
    /// [`platform::thread_count`].
    pub threads: usize,
    /// [`platform::elementwise_thread_count`].
    pub elementwise_threads: usize,
    /// [`platform::thread_source`]: `"work size"` when [`platform::apply_default_threads`]
    /// picked the count, `"environment"` otherwise.
    pub threads_chosen_by: &'static str,
    /// The dtype the base model's matrices were held in ([`crate::model::weights_in_memory`]):
    /// `"bf16"` or `"f16"` for a half-precision checkpoint (converted to `f32` per use, exactly),
    /// else `"f32"`.
    pub weights_in_memory: &'static str,
    /// The CPU's SIMD features.
    pub isa: IsaSummary,
    /// [`platform::CANDLE_VERSION`].
    pub candle_version: &'static str,
    /// [`platform::GEMM`].
    pub gemm: &'static str,
    /// The compute dtype: always `"f32"`.
    pub dtype: &'static str,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Wall time of the training loop.
    pub train_seconds: f64,
}

#[derive(Serialize)]
struct LossRow {
    step: usize,
    loss: f32,
    lr: f64,
    grad_norm: f64,
    tokens: usize,
}

#[derive(Serialize)]
struct DigestRow<'a> {
    step: usize,
    weights_blake3: &'a str,
}

/// BLAKE3 (hex) of the trainable weights: little-endian `f32` bytes, tensors in name order.
pub fn weights_digest(model: &Llama) -> Result<String, TrainerError> {
    let mut h = blake3::Hasher::new();
    for var in model.trainable().values() {
        h.update(&files::tensor_le_bytes(var.as_tensor())?);
    }
    Ok(h.finalize().to_hex().to_string())
}

struct Metrics {
    out: std::io::BufWriter<fs_err::File>,
}

impl Metrics {
    fn row(&mut self, row: &impl Serialize) -> Result<(), TrainerError> {
        let line = serde_json::to_string(row).expect("metrics rows serialize");
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}

/// Runs training as configured; `config_dir` is the directory relative paths are resolved
/// against (the TOML file's directory). `observer` sees every step.
pub fn train(
    config: &TrainConfig,
    config_dir: &Path,
    observer: &mut dyn FnMut(&StepReport),
) -> Result<TrainOutcome, TrainerError> {
    config
        .validate()
        .map_err(|m| TrainerError::config(config_dir.join("<config>"), m))?;
    let t = &config.train;
    let device = crate::device::select(&config.output.device)?;
    let base = resolve_path(config_dir, &config.model.base);
    let data_path = resolve_path(config_dir, &config.data.path);
    let out_dir = resolve_path(config_dir, &config.output.dir);

    let mut init_rng = Rng::stream(t.seed, Stream::Init);
    let mut model = match config.model.init {
        Init::Pretrained => Llama::load(&base, &device)?,
        Init::Random => {
            let cfg = LlamaConfig::from_file(&base.join("config.json"))?;
            let weights = random_weights(&cfg, &mut init_rng, &device)?;
            Llama::from_tensors(cfg, weights, &device)?
        }
    };
    let max_pos = model.config().max_position_embeddings;
    if t.seq_len > max_pos {
        return Err(TrainerError::config(
            config_dir.join("<config>"),
            format!(
                "train.seq_len = {} exceeds the model's max_position_embeddings = {max_pos}",
                t.seq_len
            ),
        ));
    }
    let tok = TextTokenizer::load(&base, model.config())?;
    let dataset = load_jsonl(&data_path, &tok, t.seq_len, model.config().vocab_size)?;

    match t.mode {
        Mode::Lora => {
            let spec = LoraSpec::from_section(&config.lora).map_err(|m| {
                TrainerError::config(config_dir.join("<config>"), format!("lora: {m}"))
            })?;
            match &config.model.adapter {
                None => model.attach_lora(&spec, &mut init_rng)?,
                Some(dir) => {
                    let dir = resolve_path(config_dir, dir);
                    let got = model.load_adapter(&dir)?;
                    check_adapter_matches(&dir, &spec, &got)?;
                    // Training dropout is the config's, whatever the adapter was trained with.
                    set_dropout(&mut model, spec.dropout);
                }
            }
        }
        Mode::Full => model.make_all_trainable()?,
    }
    let trainable_parameters = model
        .trainable()
        .values()
        .map(|v| v.as_tensor().elem_count())
        .sum();

    let mut opt = AdamW::new(model.trainable(), t.weight_decay)?;
    let mut order = DataOrder::new(t.seed, dataset.examples.len(), t.batch_size);
    let mut dropout_rng = Rng::stream(t.seed, Stream::Dropout);
    let per_epoch = dataset.micro_batches_per_epoch(t.batch_size);
    let total_micro = match t.max_steps {
        Some(s) => s * t.grad_accum,
        None => t.epochs * per_epoch,
    };
    let total_steps = total_micro.div_ceil(t.grad_accum);

    fs_err::create_dir_all(&out_dir)?;
    let metrics_file = out_dir.join(METRICS_FILE);
    let mut metrics = Metrics {
        out: std::io::BufWriter::new(fs_err::File::create(&metrics_file)?),
    };
    let mut digest = weights_digest(&model)?;
    metrics.row(&DigestRow {
        step: 0,
        weights_blake3: &digest,
    })?;

    let start = Instant::now();
    let mut micro_done = 0usize;
    let mut final_loss = f32::NAN;
    let mut tokens_seen = 0usize;
    for step in 0..total_steps {
        let n_micro = t.grad_accum.min(total_micro - micro_done);
        let mut batches = Vec::with_capacity(n_micro);
        for _ in 0..n_micro {
            batches.push(dataset.batch(&order.next_micro_batch(), &device)?);
        }
        micro_done += n_micro;
        let step_tokens: usize = batches.iter().map(|b| b.loss_tokens).sum();
        let input_tokens: usize = batches.iter().map(|b| b.examples * t.seq_len).sum();
        let denom = step_tokens.max(1) as f64;
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut loss_sum = 0f64;
        for (k, batch) in batches.iter().enumerate() {
            let logits = model.forward_train(&batch.input_ids, Some(&mut dropout_rng))?;
            let loss = (masked_nll_sum(&logits, &batch.targets, &batch.weights)? / denom)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            let store = loss.backward()?;
            for (name, var) in model.trainable() {
                match store.get(var.as_tensor()) {
                    Some(g) => accumulate(&mut grads, name, g)?,
                    None if step == 0 && k == 0 => {
                        return Err(TrainerError::NoGradient { name: name.clone() })
                    }
                    None => {}
                }
            }
        }
        let loss = loss_sum as f32;
        let grad_norm = clip_grad_norm(&mut grads, t.max_grad_norm)?;
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(TrainerError::NonFinite {
                step: step + 1,
                loss,
            });
        }
        let lr = lr_at(step, total_steps, t.warmup_steps, t.lr, t.min_lr_ratio);
        opt.step(&grads, lr)?;
        final_loss = loss;
        tokens_seen += step_tokens;

        let s = step + 1;
        let last = s == total_steps;
        if s % t.log_every == 0 || last {
            metrics.row(&LossRow {
                step: s,
                loss,
                lr,
                grad_norm,
                tokens: step_tokens,
            })?;
        }
        if s % t.digest_every == 0 || last {
            digest = weights_digest(&model)?;
            metrics.row(&DigestRow {
                step: s,
                weights_blake3: &digest,
            })?;
        }
        observer(&StepReport {
            step: s,
            total_steps,
            loss,
            lr,
            grad_norm,
            tokens: step_tokens,
            input_tokens,
            elapsed: start.elapsed(),
        });
    }
    let train_seconds = start.elapsed().as_secs_f64();
    drop(metrics);

    let files = match t.mode {
        Mode::Lora => save_adapter(&model, &out_dir, &config.base_model_name())?,
        Mode::Full => save_full(&model, &base, &out_dir)?,
    };

    Ok(TrainOutcome {
        mode: t.mode.as_str(),
        steps: total_steps,
        final_loss,
        files,
        metrics_file,
        final_weights_blake3: digest,
        data_order_digest: order.digest(),
        epochs_started: order.epochs().len(),
        examples: dataset.examples.len(),
        truncated_examples: dataset.truncated,
        tokens_seen,
        trainable_parameters,
        seed: t.seed,
        rng_algorithm: ALGORITHM,
        threads: platform::thread_count(),
        elementwise_threads: platform::elementwise_thread_count(),
        threads_chosen_by: platform::thread_source().as_str(),
        weights_in_memory: crate::model::weights_in_memory(&model),
        isa: platform::isa_summary(),
        candle_version: platform::CANDLE_VERSION,
        gemm: platform::GEMM,
        dtype: "f32",
        device: crate::device::describe(&device),
        train_seconds,
    })
}

fn check_adapter_matches(dir: &Path, want: &LoraSpec, got: &LoraSpec) -> Result<(), TrainerError> {
    let mismatch = |field: &str, w: String, g: String| {
        Err(TrainerError::adapter(
            dir,
            format!(
                "the adapter has {field} = {g} but the config's lora.{field} = {w}; set \
                 lora.{field} = {g} to continue training this adapter"
            ),
        ))
    };
    if want.r != got.r {
        return mismatch("r", want.r.to_string(), got.r.to_string());
    }
    if want.alpha != got.alpha {
        return mismatch("alpha", want.alpha.to_string(), got.alpha.to_string());
    }
    if want.target_modules != got.target_modules {
        return mismatch(
            "target_modules",
            format!("{:?}", want.target_modules),
            format!("{:?}", got.target_modules),
        );
    }
    Ok(())
}

fn set_dropout(model: &mut Llama, dropout: f64) {
    for layer in &mut model.layers {
        for lin in &mut layer.linears {
            if let Some(l) = lin.lora.as_mut() {
                l.dropout = dropout;
            }
        }
    }
    if let Some(spec) = model.lora.as_mut() {
        spec.dropout = dropout;
    }
}

/// Writes a full-training result as a Hugging Face model directory.
fn save_full(model: &Llama, base: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, TrainerError> {
    let weights = out_dir.join(WEIGHTS_FILE);
    files::save_safetensors(&weights, &model.base_tensors())?;
    let mut written = vec![weights];
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        let src = base.join(name);
        if !src.is_file() {
            if name == "tokenizer_config.json" {
                continue;
            }
            return Err(TrainerError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is missing; it is copied into the output", src.display()),
            )));
        }
        let dst = out_dir.join(name);
        files::write_atomic(&dst, &fs_err::read(&src)?)?;
        written.push(dst);
    }
    Ok(written)
}
