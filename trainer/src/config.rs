//! Configuration: the model's Hugging Face `config.json` and the trainer's TOML file.
//!
//! [`LlamaConfig`] reads the keys of a `transformers` `LlamaConfig` that change the
//! computation and ignores the rest; keys that describe something this trainer does not
//! implement (biases, other activations, unknown RoPE scaling) are refused rather than ignored.
//!
//! [`TrainConfig`] is the training config (`trainprov train CONFIG.toml`). Unknown keys are
//! errors, and relative paths are relative to the directory of the TOML file. [`DEFAULT_TOML`]
//! is a complete example with every default written out.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainerError;

// ---------------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------------

/// The architecture of a Llama-family checkpoint, read from its `config.json`.
///
/// Field names and defaults follow `transformers.LlamaConfig` (4.38); unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); default: `num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Vocabulary size (rows of the embedding and of `lm_head`).
    pub vocab_size: usize,
    /// Longest sequence the model supports; default 2048.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon; default 1e-6.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base frequency; default 10000.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Whether `lm_head` shares the embedding matrix; default false.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Width of one attention head; default `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Standard deviation of random initialisation; default 0.02.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// `null`, `{"type" or "rope_type": "linear", "factor": F}` or the Llama 3.1 `"llama3"`
    /// scaling; anything else is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Must be `silu` (or absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Must be false (or absent): biases on q/k/v/o are not implemented.
    #[serde(default)]
    pub attention_bias: bool,
    /// Must be false (or absent): biases in the MLP are not implemented.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Must be `llama` (or absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Beginning-of-sequence token id(s), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<serde_json::Value>,
    /// End-of-sequence token id or list of ids; the first one is appended to every example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_max_position_embeddings() -> usize {
    2048
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_initializer_range() -> f64 {
    0.02
}

impl LlamaConfig {
    /// A config with the given sizes and `transformers`' defaults for everything else.
    pub fn new(
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        vocab_size: usize,
    ) -> LlamaConfig {
        LlamaConfig {
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: Some(num_key_value_heads),
            vocab_size,
            max_position_embeddings: default_max_position_embeddings(),
            rms_norm_eps: default_rms_norm_eps(),
            rope_theta: default_rope_theta(),
            tie_word_embeddings: false,
            head_dim: None,
            initializer_range: default_initializer_range(),
            rope_scaling: None,
            hidden_act: Some("silu".into()),
            attention_bias: false,
            mlp_bias: false,
            model_type: Some("llama".into()),
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<LlamaConfig, TrainerError> {
        let text = fs_err::read_to_string(path)?;
        let config: LlamaConfig =
            serde_json::from_str(&text).map_err(|e| TrainerError::ModelConfig {
                file: path.to_path_buf(),
                message: format!("not a valid model config: {e}"),
            })?;
        config
            .validate()
            .map_err(|message| TrainerError::ModelConfig {
                file: path.to_path_buf(),
                message,
            })?;
        Ok(config)
    }

    /// Checks that this trainer implements what the config describes.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "llama" {
                return Err(format!(
                    "model_type is \"{t}\"; only Llama-architecture checkpoints \
                     (model_type \"llama\") are supported"
                ));
            }
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(format!(
                    "hidden_act is \"{act}\"; only \"silu\" is supported"
                ));
            }
        }
        if self.attention_bias || self.mlp_bias {
            return Err("attention_bias / mlp_bias are true; biases are not supported".into());
        }
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        let kv = self.num_kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({kv})",
                self.num_attention_heads
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size ({}) is not a multiple of num_attention_heads ({}) and head_dim \
                 is not given",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim()
            ));
        }
        self.rope_scaling()?;
        Ok(())
    }

    /// Number of key/value heads.
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The first end-of-sequence id, if the config names one.
    pub fn eos_token_id(&self) -> Option<u32> {
        match self.eos_token_id.as_ref()? {
            serde_json::Value::Number(n) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
            serde_json::Value::Array(a) => a
                .first()
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok()),
            _ => None,
        }
    }

    /// The parsed RoPE scaling.
    pub fn rope_scaling(&self) -> Result<RopeScaling, String> {
        let Some(v) = self.rope_scaling.as_ref().filter(|v| !v.is_null()) else {
            return Ok(RopeScaling::None);
        };
        let kind = v
            .get("rope_type")
            .or_else(|| v.get("type"))
            .and_then(|t| t.as_str())
            .unwrap_or("");
        let num = |key: &str| -> Result<f64, String> {
            v.get(key)
                .and_then(|x| x.as_f64())
                .ok_or_else(|| format!("rope_scaling.{key} is missing or not a number"))
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear {
                factor: num("factor")?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            }),
            other => Err(format!(
                "rope_scaling type \"{other}\" is not supported (supported: linear, llama3)"
            )),
        }
    }
}

/// RoPE frequency scaling, as in `transformers`' `ROPE_INIT_FUNCTIONS`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's piecewise frequency scaling.
    Llama3 {
        /// Scale for low frequencies.
        factor: f64,
        /// Wavelength boundary (low).
        low_freq_factor: f64,
        /// Wavelength boundary (high).
        high_freq_factor: f64,
        /// The context length the base was trained with.
        original_max_position_embeddings: f64,
    },
}

// ---------------------------------------------------------------------------------------------
// train.toml
// ---------------------------------------------------------------------------------------------

/// The LoRA target modules this trainer can wrap, in the order they run inside a layer.
pub const ALLOWED_TARGET_MODULES: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// A complete training config with every default written out (only `model.base` and
/// `data.path` have no default). It parses to the same [`TrainConfig`] as the two required
/// keys alone.
pub const DEFAULT_TOML: &str = r#"# trainprov train config. Relative paths are relative to this file's directory.

[model]
base = "base"            # required: Hugging Face model directory (config.json, model.safetensors
                         # or model.safetensors.index.json, tokenizer.json)
# adapter = "adapter"    # optional: a PEFT LoRA adapter directory to continue training from
# name = "my-org/base"   # optional: base_model_name_or_path in adapter_config.json
                         # (default: the `base` value exactly as written here)
init = "pretrained"      # "pretrained" (load weights) or "random" (train.mode = "full" only)

[data]
path = "train.jsonl"     # required: JSONL, {"prompt","completion"}, {"text"} or {"messages"}
                         # (chat, the model's template) per line; a Parquet file with such
                         # columns; or a directory of *.jsonl / *.parquet shards (name order)

[lora]
r = 8
alpha = 16.0             # scaling = alpha / r
dropout = 0.05
target_modules = ["q_proj", "v_proj"]  # any of q,k,v,o,gate,up,down _proj

[train]
mode = "lora"            # "lora", or "full" (every base weight is trained; no adapter)
seed = 0
# max_steps = 100        # optimizer steps; when absent, `epochs` decides
epochs = 1
batch_size = 8           # examples per micro-batch
seq_len = 64             # tokens per example (truncated, then padded)
grad_accum = 1           # micro-batches per optimizer step
lr = 2e-4
weight_decay = 0.0       # AdamW, decoupled
warmup_steps = 0         # linear warm-up, then cosine decay
min_lr_ratio = 0.0       # the cosine ends at lr * min_lr_ratio
max_grad_norm = 1.0      # global-norm clipping; 0 disables it
log_every = 1            # a loss row in metrics.jsonl every N steps (and the last step)
digest_every = 10        # a weights digest row in metrics.jsonl every N steps (and at 0 and the end)

[output]
dir = "out"
device = "cpu"           # "cpu", "cuda" or "cuda:N" (needs a build with --features cuda)
dtype = "f32"            # only "f32" is supported
"#;

/// The training config (`train.toml`); see [`DEFAULT_TOML`] for a full example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `[model]`: the base model.
    pub model: ModelSection,
    /// `[data]`: the training data.
    pub data: DataSection,
    /// `[lora]`: adapter shape (ignored in full mode).
    #[serde(default)]
    pub lora: LoraSection,
    /// `[train]`: optimisation.
    #[serde(default)]
    pub train: TrainSection,
    /// `[output]`: where and how.
    #[serde(default)]
    pub output: OutputSection,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Required. The Hugging Face model directory.
    pub base: PathBuf,
    /// Optional. A PEFT LoRA adapter to continue training from; its `r`, `lora_alpha` and
    /// `target_modules` must equal `[lora]`'s. Default: none (fresh adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
    /// Optional. `base_model_name_or_path` written into `adapter_config.json`.
    /// Default: `base` exactly as written in the TOML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `"pretrained"` (default) loads the weights; `"random"` initialises them from the seed
    /// (only with `train.mode = "full"`; the base directory then needs only `config.json` and
    /// `tokenizer.json`).
    #[serde(default)]
    pub init: Init,
}

/// How the base weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Loaded from the checkpoint.
    #[default]
    Pretrained,
    /// Drawn from the trainer's generator (uniform with the variance of `transformers`'
    /// `normal(0, initializer_range)`; RMSNorm weights are ones).
    Random,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Required. A JSONL file: one `{"prompt": .., "completion": ..}` or `{"text": ..}` per line;
    /// or a directory, whose `*.jsonl` files (shards) are read in name order as one dataset.
    pub path: PathBuf,
}

/// `[lora]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    /// Rank. Default 8.
    pub r: usize,
    /// Scaling numerator: the update is multiplied by `alpha / r`. Default 16.
    pub alpha: f64,
    /// Dropout on the adapter's input during training. Default 0.05.
    pub dropout: f64,
    /// Linear layers to adapt. Default `["q_proj", "v_proj"]`; allowed: `q_proj`, `k_proj`,
    /// `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`.
    pub target_modules: Vec<String>,
}

impl Default for LoraSection {
    fn default() -> Self {
        LoraSection {
            r: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
        }
    }
}

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A LoRA adapter; the base stays frozen.
    #[default]
    Lora,
    /// Every base weight (used to pretrain the embedded tiny base model).
    Full,
}

impl Mode {
    /// `"lora"` or `"full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Lora => "lora",
            Mode::Full => "full",
        }
    }
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// `"lora"` (default) or `"full"`.
    pub mode: Mode,
    /// Seed of every random draw. Default 0.
    pub seed: u64,
    /// Number of optimizer steps; when absent (default), `epochs` decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Passes over the data when `max_steps` is absent. Default 1.
    pub epochs: usize,
    /// Examples per micro-batch. Default 8.
    pub batch_size: usize,
    /// Tokens per example: longer ones are truncated, shorter ones padded. Default 64.
    pub seq_len: usize,
    /// Micro-batches per optimizer step. Default 1.
    pub grad_accum: usize,
    /// Peak learning rate. Default 2e-4.
    pub lr: f64,
    /// AdamW decoupled weight decay. Default 0.
    pub weight_decay: f64,
    /// Steps of linear warm-up (`transformers`' cosine schedule). Default 0.
    pub warmup_steps: usize,
    /// The cosine decays to `lr * min_lr_ratio`. Default 0.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip; 0 disables clipping. Default 1.0.
    pub max_grad_norm: f64,
    /// A loss row in `metrics.jsonl` every this many steps (the last step always). Default 1.
    pub log_every: usize,
    /// A weights-digest row every this many steps (step 0 and the last always). Default 10.
    pub digest_every: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            mode: Mode::Lora,
            seed: 0,
            max_steps: None,
            epochs: 1,
            batch_size: 8,
            seq_len: 64,
            grad_accum: 1,
            lr: 2e-4,
            weight_decay: 0.0,
            warmup_steps: 0,
            min_lr_ratio: 0.0,
            max_grad_norm: 1.0,
            log_every: 1,
            digest_every: 10,
        }
    }
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// Output directory. Default `"out"`.
    pub dir: PathBuf,
    /// `"cpu"` (default), `"cuda"` or `"cuda:N"`.
    pub device: String,
    /// Only `"f32"` (default) is supported: candle's CPU kernels have no fast half-precision
    /// matmul, and the determinism findings were measured in f32.
    pub dtype: String,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            dir: PathBuf::from("out"),
            device: "cpu".into(),
            dtype: "f32".into(),
        }
    }
}

impl TrainConfig {
    /// Reads, parses and validates a TOML config file.
    pub fn from_file(path: &Path) -> Result<TrainConfig, TrainerError> {
        let text = fs_err::read_to_string(path)?;
        TrainConfig::parse(&text, path)
    }

    /// Parses and validates TOML text; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<TrainConfig, TrainerError> {
        let config: TrainConfig = toml::from_str(text)
            .map_err(|e| TrainerError::config(file, format!("invalid config: {e}")))?;
        config
            .validate()
            .map_err(|m| TrainerError::config(file, m))?;
        Ok(config)
    }

    /// Checks every value; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.lora;
        let t = &self.train;
        if t.mode == Mode::Lora {
            if l.r == 0 {
                return Err("lora.r must be at least 1".into());
            }
            if !(l.alpha.is_finite() && l.alpha > 0.0) {
                return Err(format!("lora.alpha must be positive (got {})", l.alpha));
            }
            if !(0.0..1.0).contains(&l.dropout) {
                return Err(format!(
                    "lora.dropout must be in [0, 1) (got {})",
                    l.dropout
                ));
            }
            if l.target_modules.is_empty() {
                return Err("lora.target_modules is empty; name at least one module".into());
            }
            let mut seen = Vec::new();
            for m in &l.target_modules {
                if !ALLOWED_TARGET_MODULES.contains(&m.as_str()) {
                    return Err(format!(
                        "lora.target_modules: unknown module \"{m}\" (allowed: {})",
                        ALLOWED_TARGET_MODULES.join(", ")
                    ));
                }
                if seen.contains(&m) {
                    return Err(format!("lora.target_modules: \"{m}\" is listed twice"));
                }
                seen.push(m);
            }
        }
        if t.mode == Mode::Full && self.model.adapter.is_some() {
            return Err(
                "model.adapter is set but train.mode = \"full\" trains no adapter; \
                        remove one of them"
                    .into(),
            );
        }
        if t.mode == Mode::Lora && self.model.init == Init::Random {
            return Err(
                "model.init = \"random\" needs train.mode = \"full\" (a LoRA adapter on \
                 random weights learns nothing useful)"
                    .into(),
            );
        }
        let positive = [
            ("train.epochs", t.epochs),
            ("train.batch_size", t.batch_size),
            ("train.grad_accum", t.grad_accum),
            ("train.log_every", t.log_every),
            ("train.digest_every", t.digest_every),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if t.max_steps == Some(0) {
            return Err("train.max_steps must be at least 1 (or absent)".into());
        }
        if t.seq_len < 2 {
            return Err(format!(
                "train.seq_len must be at least 2 (got {})",
                t.seq_len
            ));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(format!("train.lr must be positive (got {})", t.lr));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return Err(format!(
                "train.weight_decay must be >= 0 (got {})",
                t.weight_decay
            ));
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return Err(format!(
                "train.min_lr_ratio must be in [0, 1] (got {})",
                t.min_lr_ratio
            ));
        }
        if !(t.max_grad_norm.is_finite() && t.max_grad_norm >= 0.0) {
            return Err(format!(
                "train.max_grad_norm must be >= 0 (got {})",
                t.max_grad_norm
            ));
        }
        if self.output.dtype != "f32" {
            return Err(format!(
                "output.dtype = \"{}\" is not supported; only \"f32\" is",
                self.output.dtype
            ));
        }
        let d = self.output.device.as_str();
        let cuda_ok = d == "cuda"
            || d.strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok());
        if d != "cpu" && !cuda_ok {
            return Err(format!(
                "output.device = \"{d}\" is not one of \"cpu\", \"cuda\", \"cuda:N\""
            ));
        }
        Ok(())
    }

    /// The `base_model_name_or_path` recorded in `adapter_config.json`.
    pub fn base_model_name(&self) -> String {
        self.model
            .name
            .clone()
            .unwrap_or_else(|| self.model.base.to_string_lossy().into_owned())
    }
}

/// `path` resolved against the directory of the config file (absolute paths stay as they are).
pub fn resolve_path(config_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        config_dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_equals_defaults() {
        let full = TrainConfig::parse(DEFAULT_TOML, Path::new("default.toml")).expect("parses");
        let minimal = TrainConfig::parse(
            "[model]\nbase = \"base\"\n[data]\npath = \"train.jsonl\"\n",
            Path::new("min.toml"),
        )
        .expect("parses");
        assert_eq!(full, minimal);
        assert_eq!(full.lora, LoraSection::default());
        assert_eq!(full.train, TrainSection::default());
        assert_eq!(full.output, OutputSection::default());
    }

    #[test]
    fn unknown_field_is_named() {
        let text = "[model]\nbase = \"b\"\n[data]\npath = \"d\"\n[train]\nlearning_rate = 1e-3\n";
        let err = TrainConfig::parse(text, Path::new("conf/train.toml"))
            .expect_err("unknown field must fail")
            .to_string();
        assert!(err.contains("learning_rate"), "{err}");
        assert!(err.contains("conf/train.toml"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let text =
            "[model]\nbase = \"b\"\n[data]\npath = \"d\"\n[lora]\ntarget_modules = [\"x_proj\"]\n";
        let err = TrainConfig::parse(text, Path::new("t.toml"))
            .expect_err("bad module")
            .to_string();
        assert!(
            err.contains("lora.target_modules") && err.contains("x_proj"),
            "{err}"
        );
        let text = "[model]\nbase = \"b\"\n[data]\npath = \"d\"\n[output]\ndtype = \"bf16\"\n";
        let err = TrainConfig::parse(text, Path::new("t.toml"))
            .expect_err("bad dtype")
            .to_string();
        assert!(err.contains("output.dtype"), "{err}");
    }

    #[test]
    fn llama_config_defaults_and_refusals() {
        let c: LlamaConfig = serde_json::from_str(
            r#"{"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                "num_attention_heads":4,"vocab_size":100,"architectures":["LlamaForCausalLM"],
                "eos_token_id":[2,3]}"#,
        )
        .expect("parses");
        assert_eq!(c.num_kv_heads(), 4);
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.rope_theta, 10_000.0);
        assert_eq!(c.eos_token_id(), Some(2));
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.model_type = Some("gpt2".into());
        assert!(bad.validate().expect_err("gpt2").contains("model_type"));
    }
}
