//! The trainer's error type.
//!
//! Every message names the file, tensor, field or line at fault and, where there is one, what
//! to do about it. Loading errors from [`crate::safe_load`] pass through unchanged.

use std::path::PathBuf;

use crate::safe_load::LoadError;

/// Everything that can go wrong while loading, training or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainerError {
    /// A weights file was refused or could not be read (header validation, pickle refusal).
    #[error(transparent)]
    Load(#[from] LoadError),

    /// A file could not be read or written (the message of `fs_err` names the file).
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// The training config (TOML) is malformed or has an invalid value.
    #[error("{}: {message}", file.display())]
    Config {
        /// The TOML file.
        file: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },

    /// A model's `config.json` is malformed or describes something this trainer cannot run.
    #[error("{}: {message}", file.display())]
    ModelConfig {
        /// The `config.json`.
        file: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },

    /// A tensor the model needs is absent.
    #[error("tensor `{name}` is missing from {}; the checkpoint does not match its config.json", file.display())]
    MissingTensor {
        /// The Hugging Face tensor name.
        name: String,
        /// The weights file (or directory) that lacks it.
        file: PathBuf,
    },

    /// A tensor has the wrong shape for the config.
    #[error("tensor `{name}` in {} has shape {got:?}, config.json implies {expected:?}", file.display())]
    TensorShape {
        /// The tensor name.
        name: String,
        /// The weights file.
        file: PathBuf,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },

    /// A checkpoint holds tensors the model does not use (its config.json describes another
    /// architecture than its weights, e.g. a Qwen2 checkpoint labelled `llama` whose q/k/v
    /// biases would be dropped).
    #[error(
        "{} holds {} tensor(s) a {family} model does not use: {}; config.json's model_type / \
         architectures do not match the weights",
        file.display(),
        names.len(),
        names.iter().take(4).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            + if names.len() > 4 { ", ..." } else { "" }
    )]
    UnusedTensors {
        /// The weights file.
        file: PathBuf,
        /// The family the config names.
        family: String,
        /// The unused tensor names, sorted.
        names: Vec<String>,
    },

    /// A line of a JSONL data file is unusable.
    #[error("{}:{line}: {message}", file.display())]
    Data {
        /// The data file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer {}: {message}", file.display())]
    Tokenizer {
        /// The `tokenizer.json`.
        file: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },

    /// A LoRA adapter directory is unusable or does not fit the model.
    #[error("adapter {}: {message}", dir.display())]
    Adapter {
        /// The adapter directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A trainable tensor was not reached by backpropagation at step 0: some operation on its
    /// path has no backward pass (for example candle's fused `softmax_last_dim` or `rms_norm`).
    #[error(
        "trainable tensor `{name}` received no gradient at step 0; an operation on its path \
         has no backward pass, so training would silently leave it unchanged"
    )]
    NoGradient {
        /// The tensor name.
        name: String,
    },

    /// The loss or the gradient norm stopped being finite.
    #[error(
        "the loss became non-finite ({loss}) at step {step}; lower train.lr or set \
         train.max_grad_norm"
    )]
    NonFinite {
        /// 1-based optimizer step.
        step: usize,
        /// The loss value.
        loss: f32,
    },

    /// A device could not be selected.
    #[error("device `{spec}`: {message}")]
    Device {
        /// What was asked for.
        spec: String,
        /// Why it is unavailable and what to do.
        message: String,
    },

    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl TrainerError {
    /// A [`TrainerError::Config`] for `file`.
    pub(crate) fn config(file: impl Into<PathBuf>, message: impl Into<String>) -> TrainerError {
        TrainerError::Config {
            file: file.into(),
            message: message.into(),
        }
    }

    /// A [`TrainerError::Adapter`] for `dir`.
    pub(crate) fn adapter(dir: impl Into<PathBuf>, message: impl Into<String>) -> TrainerError {
        TrainerError::Adapter {
            dir: dir.into(),
            message: message.into(),
        }
    }
}
