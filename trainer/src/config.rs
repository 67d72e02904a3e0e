//! Configuration: the model's Hugging Face `config.json` and the trainer's TOML file.
//!
//! [`ModelConfig`] reads the keys of a `transformers` config that change the computation and
//! ignores the rest; keys that describe something this trainer does not implement (other
//! activations, MLP biases, per-layer sliding windows, unknown RoPE scaling) are refused rather
//! than ignored. [`ModelConfig::from_file`] is the check to run before anything else: it reads
//! `config.json` alone (no weights), and refuses an unsupported architecture by name with the
//! list of supported [`Family`] values.
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

/// A model family this trainer implements: one decoder ([`crate::model::Llama`]) with the
/// per-family options below, each checked against its `transformers` implementation by a
/// committed fixture (`trainer/tests/fixtures/`).
///
/// | family | `model_type` | `architectures` | differs from Llama by |
/// |---|---|---|---|
/// | [`Family::Llama`] | `llama` | `LlamaForCausalLM` | (Llama 2 and 3.x: `llama3` RoPE scaling, `head_dim`) |
/// | [`Family::Mistral`] | `mistral` | `MistralForCausalLM` | sliding-window attention (`sliding_window`, default 4096) |
/// | [`Family::Qwen2`] | `qwen2` | `Qwen2ForCausalLM` | biases on q/k/v (not o) |
/// | [`Family::Qwen3`] | `qwen3` | `Qwen3ForCausalLM` | per-head RMSNorm of q and k before RoPE |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama 2 / 3.x (`LlamaForCausalLM`).
    Llama,
    /// Mistral (`MistralForCausalLM`).
    Mistral,
    /// Qwen2 and Qwen2.5 (`Qwen2ForCausalLM`).
    Qwen2,
    /// Qwen3 dense models (`Qwen3ForCausalLM`).
    Qwen3,
}

impl Family {
    /// Every supported family.
    pub const ALL: [Family; 4] = [Family::Llama, Family::Mistral, Family::Qwen2, Family::Qwen3];

    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }

    /// The `transformers` class named in `architectures`.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// The family of a `model_type`, if supported.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.model_type() == model_type)
    }

    /// The family of an `architectures` entry, if supported.
    pub fn from_architecture(architecture: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.architecture() == architecture)
    }

    /// `llama (LlamaForCausalLM), mistral (MistralForCausalLM), ...`, for messages.
    pub fn supported_list() -> String {
        Family::ALL
            .iter()
            .map(|f| format!("{} ({})", f.model_type(), f.architecture()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether q/k/v projections carry a bias (o_proj never does here).
    pub fn qkv_bias(self) -> bool {
        self == Family::Qwen2
    }

    /// Whether q and k get a per-head RMSNorm (`q_norm`, `k_norm`) before RoPE.
    pub fn qk_norm(self) -> bool {
        self == Family::Qwen3
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.model_type())
    }
}

/// The old name of [`ModelConfig`], from when only Llama was supported.
pub type LlamaConfig = ModelConfig;

/// Mistral's `sliding_window` when `config.json` has no such key (`transformers`'
/// `MistralConfig` default).
pub const MISTRAL_DEFAULT_SLIDING_WINDOW: usize = 4096;

/// The architecture of a checkpoint of one of the supported [`Family`] values, read from its
/// `config.json`.
///
/// Field names and defaults follow `transformers`' `LlamaConfig`, `MistralConfig`,
/// `Qwen2Config` and `Qwen3Config`; unknown keys are ignored. The family comes from
/// `model_type` and `architectures` ([`ModelConfig::family`]); with neither, Llama.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
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
    /// Must be false (or absent): biases on all of q/k/v/o (Llama, Qwen3) are not implemented.
    /// Qwen2's q/k/v biases are part of the family and need no key.
    #[serde(default)]
    pub attention_bias: bool,
    /// Must be false (or absent): biases in the MLP are not implemented.
    #[serde(default)]
    pub mlp_bias: bool,
    /// One of the [`Family`] model types, or absent (then `architectures` decides, else Llama).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// `transformers` classes of the checkpoint; each must be a supported family's
    /// `*ForCausalLM`, the same family as `model_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// Mistral: each query attends to the last `sliding_window` keys (itself included);
    /// `null` turns the window off. [`ModelConfig::from_file`] fills in Mistral's default
    /// ([`MISTRAL_DEFAULT_SLIDING_WINDOW`]) when the key is absent. Qwen2/Qwen3 keep the key but
    /// use it only with `use_sliding_window`; Llama ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Qwen2/Qwen3: must be false (or absent); per-layer sliding windows are not implemented.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_sliding_window: bool,
    /// Qwen2/Qwen3: layers from this index on would use the window; informational while
    /// `use_sliding_window` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_window_layers: Option<usize>,
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

impl ModelConfig {
    /// A Llama config with the given sizes and `transformers`' defaults for everything else.
    pub fn new(
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        vocab_size: usize,
    ) -> ModelConfig {
        ModelConfig {
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
            architectures: None,
            sliding_window: None,
            use_sliding_window: false,
            max_window_layers: None,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    /// Reads and checks `config.json`, and nothing else: call it before any weight is read
    /// or anything is recorded. An architecture this trainer does not implement is refused by
    /// name, with the list of supported ones ([`Family::supported_list`]); so is any key whose
    /// value it cannot honour. The family is then [`ModelConfig::family`].
    pub fn from_file(path: &Path) -> Result<ModelConfig, TrainerError> {
        let text = fs_err::read_to_string(path)?;
        let fail = |message: String| TrainerError::ModelConfig {
            file: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| fail(format!("not a valid model config: {e}")))?;
        ModelConfig::from_value(value).map_err(fail)
    }

    /// [`ModelConfig::from_file`] on parsed JSON; the error is the message alone.
    pub fn from_value(value: serde_json::Value) -> Result<ModelConfig, String> {
        // The family first, so that e.g. a GPT-2 config (no `hidden_size`) is refused by name
        // rather than for a missing key.
        if !value.is_object() {
            return Err("not a valid model config: not a JSON object".into());
        }
        let model_type = value.get("model_type").and_then(|v| v.as_str());
        let architectures: Option<Vec<String>> = value
            .get("architectures")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or("<not a string>").to_string())
                    .collect()
            });
        let family = family_of(model_type, architectures.as_deref())?;
        let sliding_window_absent = value.get("sliding_window").is_none();
        let mut config: ModelConfig = serde_json::from_value(value)
            .map_err(|e| format!("not a valid {family} model config: {e}"))?;
        if family == Family::Mistral && sliding_window_absent {
            config.sliding_window = Some(MISTRAL_DEFAULT_SLIDING_WINDOW);
        }
        config.validate()?;
        Ok(config)
    }

    /// The model family, from `model_type` and `architectures` (Llama when both are absent).
    /// A config that passed [`ModelConfig::validate`] always has one; for one that did not,
    /// this falls back to Llama.
    pub fn family(&self) -> Family {
        family_of(self.model_type.as_deref(), self.architectures.as_deref())
            .unwrap_or(Family::Llama)
    }

    /// Checks that this trainer implements what the config describes.
    pub fn validate(&self) -> Result<(), String> {
        let family = family_of(self.model_type.as_deref(), self.architectures.as_deref())?;
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(format!(
                    "hidden_act is \"{act}\"; only \"silu\" is supported"
                ));
            }
        }
        if self.mlp_bias {
            return Err("mlp_bias is true; biases in the MLP are not supported".into());
        }
        if self.attention_bias && family != Family::Qwen2 {
            return Err(format!(
                "attention_bias is true; biases on q/k/v/o are not supported for {family} \
                 (only Qwen2's q/k/v biases are)"
            ));
        }
        match family {
            Family::Mistral => {
                if self.sliding_window == Some(0) {
                    return Err("sliding_window must be positive (or null)".into());
                }
            }
            Family::Qwen2 | Family::Qwen3 => {
                if self.use_sliding_window {
                    return Err(format!(
                        "use_sliding_window is true; sliding-window attention on {family} layers \
                         is not supported (only with use_sliding_window false)"
                    ));
                }
            }
            Family::Llama => {}
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

/// The family named by `model_type` and `architectures`; an unknown or conflicting one is an
/// error naming it and listing the supported ones.
fn family_of(model_type: Option<&str>, architectures: Option<&[String]>) -> Result<Family, String> {
    let from_type = match model_type {
        None => None,
        Some(t) => Some(Family::from_model_type(t).ok_or_else(|| {
            format!(
                "model_type \"{t}\" is not supported; supported: {}",
                Family::supported_list()
            )
        })?),
    };
    let mut from_arch: Option<Family> = None;
    for a in architectures.unwrap_or_default() {
        let f = Family::from_architecture(a).ok_or_else(|| {
            format!(
                "architectures names \"{a}\", which is not supported; supported: {}",
                Family::supported_list()
            )
        })?;
        match (from_arch, from_type) {
            (Some(prev), _) if prev != f => {
                return Err(format!(
                    "architectures names both {} and {}; a checkpoint has one architecture",
                    prev.architecture(),
                    f.architecture()
                ))
            }
            (_, Some(t)) if t != f => {
                return Err(format!(
                    "model_type \"{}\" and architectures \"{a}\" name different families; \
                     fix config.json so both say the same",
                    t.model_type()
                ))
            }
            _ => from_arch = Some(f),
        }
    }
    Ok(from_type.or(from_arch).unwrap_or(Family::Llama))
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

/// PEFT 0.10.0's shorthand for "every linear layer but the output head"
/// (`peft.utils.INCLUDE_LINEAR_LAYERS_SHORTHAND`); here, all of [`ALLOWED_TARGET_MODULES`].
/// PEFT compares it case-insensitively, and so does this trainer.
pub const ALL_LINEAR: &str = "all-linear";

/// Whether `name` is PEFT's [`ALL_LINEAR`] shorthand.
pub fn is_all_linear(name: &str) -> bool {
    name.eq_ignore_ascii_case(ALL_LINEAR)
}

/// `target_modules` as a list, or PEFT's single string `"all-linear"` (kept as a one-entry
/// list).
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

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
target_modules = ["q_proj", "v_proj"]  # any of q,k,v,o,gate,up,down _proj, or "all-linear"

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
    /// `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`, or `"all-linear"` (PEFT's
    /// shorthand for all seven; a string or a one-entry list).
    #[serde(deserialize_with = "string_or_list")]
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
                if is_all_linear(m) {
                    if l.target_modules.len() > 1 {
                        return Err(format!(
                            "lora.target_modules: \"{m}\" means every linear layer; list it \
                             alone"
                        ));
                    }
                    continue;
                }
                if !ALLOWED_TARGET_MODULES.contains(&m.as_str()) {
                    return Err(format!(
                        "lora.target_modules: unknown module \"{m}\" (allowed: {}, or \
                         \"{ALL_LINEAR}\")",
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

    #[test]
    fn all_linear_is_accepted_as_string_or_list_and_alone() {
        for t in ["\"all-linear\"", "[\"all-linear\"]", "\"ALL-LINEAR\""] {
            let text = format!(
                "[model]\nbase = \"b\"\n[data]\npath = \"d\"\n[lora]\ntarget_modules = {t}\n"
            );
            let c = TrainConfig::parse(&text, Path::new("t.toml")).expect(&text);
            let spec = crate::lora::LoraSpec::from_section(&c.lora).expect("spec");
            let mut all: Vec<&str> = ALLOWED_TARGET_MODULES.to_vec();
            all.sort();
            assert_eq!(spec.target_modules, all);
        }
        let text = "[model]\nbase = \"b\"\n[data]\npath = \"d\"\n[lora]\n\
                    target_modules = [\"all-linear\", \"q_proj\"]\n";
        let err = TrainConfig::parse(text, Path::new("t.toml"))
            .expect_err("all-linear with others")
            .to_string();
        assert!(err.contains("alone"), "{err}");
    }

    #[test]
    fn family_from_model_type_and_architectures() {
        let base = serde_json::json!({"hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100});
        let with = |extra: serde_json::Value| {
            let mut v = base.clone();
            for (k, x) in extra.as_object().expect("object") {
                v[k] = x.clone();
            }
            ModelConfig::from_value(v)
        };
        let fam = |extra| with(extra).expect("valid").family();
        assert_eq!(fam(serde_json::json!({})), Family::Llama);
        assert_eq!(
            fam(serde_json::json!({"architectures": ["Qwen2ForCausalLM"]})),
            Family::Qwen2
        );
        assert_eq!(
            fam(serde_json::json!({"model_type": "qwen3"})),
            Family::Qwen3
        );
        let m = with(serde_json::json!({"model_type": "mistral"})).expect("valid");
        assert_eq!(
            (m.family(), m.sliding_window),
            (Family::Mistral, Some(4096))
        );
        for (extra, needle) in [
            (serde_json::json!({"model_type": "gemma2"}), "\"gemma2\""),
            (
                serde_json::json!({"architectures": ["LlamaForCausalLM", "Qwen2ForCausalLM"]}),
                "both",
            ),
            (
                serde_json::json!({"model_type": "qwen3", "use_sliding_window": true}),
                "use_sliding_window",
            ),
            (
                serde_json::json!({"model_type": "qwen3", "attention_bias": true}),
                "attention_bias",
            ),
            (serde_json::json!({"mlp_bias": true}), "mlp_bias"),
        ] {
            let err = with(extra.clone()).expect_err(&extra.to_string());
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }
}
