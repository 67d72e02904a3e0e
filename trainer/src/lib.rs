//! The built-in LoRA trainer of trainprov: deterministic, PEFT-compatible, on candle.
//!
//! `trainprov train CONFIG.toml` checks the base model directory with [`checkpoint::inspect`]
//! (architecture, weight layout and dtypes, tokenizer) before it records anything, then runs
//! [`train::train`] in-process under the recorder. The crate loads a Hugging Face checkpoint of
//! a supported [`config::Family`] (Llama 2/3.x, Mistral, Qwen2/2.5, Qwen3;
//! [`config::ModelConfig::from_file`] refuses others from `config.json` alone) ([`model`],
//! through the validating [`safe_load`]), attaches LoRA adapters with PEFT's semantics and file
//! format ([`lora`]),
//! trains them with AdamW ([`optim`]) on JSONL or Parquet data ([`data`], [`parquet_rows`]), plain
//! or chat rows rendered with the model's chat template ([`chat`]), and writes
//! `adapter_model.safetensors`, `adapter_config.json` and `metrics.jsonl`. [`eval`] reports the
//! mean loss of a base model with or without an adapter.
//!
//! Everything that decides the output bytes is owned here and recorded: the random generator
//! ([`rng`], seeded, never candle's), the order of variables (always by name), the operations
//! (differentiable compositions only), the CPU features and library versions ([`platform`]).
//! Training twice, or with a different thread count, gives byte-identical files; see
//! `shared/DESIGN.md`, "The trainer's determinism contract".
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use trainer::{config::LlamaConfig, model::random_weights, rng::Rng, Llama};
//!
//! // hidden 16, MLP 32, 1 layer, 2 query heads sharing 1 key/value head, vocabulary of 10.
//! let config = LlamaConfig::new(16, 32, 1, 2, 1, 10);
//! let device = Device::Cpu;
//! let weights = random_weights(&config, &mut Rng::new(0), &device)?;
//! let model = Llama::from_tensors(config, weights, &device)?;
//! let logits = model.forward(&Tensor::new(&[[1u32, 2, 3]], &device)?)?;
//! assert_eq!(logits.dims(), &[1, 3, 10]);
//! # Ok::<(), trainer::TrainerError>(())
//! ```
#![forbid(unsafe_code)]

pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod files;
pub mod lora;
pub mod model;
pub mod optim;
pub mod parquet_rows;
pub mod platform;
pub mod rng;
pub mod safe_load;
pub mod train;

pub use config::{Family, LlamaConfig, ModelConfig, TrainConfig};
pub use error::TrainerError;
pub use eval::{mean_loss, EvalReport};
pub use lora::LoraSpec;
pub use model::Llama;
pub use train::{train, StepReport, TrainOutcome};

/// The build type URI that records made by the built-in trainer will carry.
pub const BUILD_TYPE: &str = "https://trainprov.dev/buildtypes/candle-lora/v1";
