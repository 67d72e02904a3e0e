//! A Llama-architecture decoder written only with differentiable candle operations, with the
//! per-family options of Mistral, Qwen2 and Qwen3 ([`crate::config::Family`]).
//!
//! Ported from `transformers` 4.38.2 `models/llama/modeling_llama.py` (`LlamaForCausalLM`, eager
//! attention): token embedding; per layer `x + attn(rms_norm(x))` then `x + mlp(rms_norm(x))`
//! where attention is grouped-query attention with rotary position embeddings (the
//! `rotate_half` convention, position ids `0..t`) and a causal mask, and the MLP is SwiGLU
//! `down(silu(gate(x)) * up(x))`; a final RMSNorm and `lm_head` (or the tied embedding).
//! The families differ only inside attention:
//!
//! * Mistral (`models/mistral/modeling_mistral.py`, 4.38.2): with `sliding_window = w`, the
//!   eager mask (`AttentionMaskConverter._make_causal_mask`, `diagonal = -w + 1`) lets query
//!   `i` attend to keys `i-w+1 ..= i`: `w` keys, itself included.
//! * Qwen2 (`models/qwen2/modeling_qwen2.py`): q/k/v projections add a bias (o_proj has none).
//!   `sliding_window` is not applied (`use_sliding_window` must be false; 4.38.2's eager path
//!   applies it regardless, a bug later versions fixed; real checkpoints set it at or above
//!   `max_position_embeddings`, where both agree).
//! * Qwen3 (`models/qwen3/modeling_qwen3.py`, 4.51.3): q and k are RMS-normalised per head
//!   over `head_dim` (`q_norm`, `k_norm`, weight `[head_dim]`) after the projection and before
//!   RoPE; `head_dim` may differ from `hidden_size / num_attention_heads`.
//!
//! Every operation has a backward pass in candle: softmax is `exp(x - max) / sum` with the max
//! detached (it only shifts the input), RMSNorm is `x / sqrt(mean(x²) + eps) * w`. candle's
//! fused `softmax_last_dim`, `rms_norm` and `layer_norm` have no backward pass and would drop
//! gradients silently (`shared/DESIGN.md`), so they are not used anywhere in this crate.
//!
//! Weights are loaded from a Hugging Face directory through [`crate::safe_load`], which reads
//! bytes (no mmap) and validates every header first. Tensor names are the Hugging Face ones:
//! `model.embed_tokens.weight`, `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`,
//! `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
//! `model.layers.{i}.{input,post_attention}_layernorm.weight`, `model.norm.weight`,
//! `lm_head.weight` (absent when `tie_word_embeddings`); Qwen2 adds
//! `model.layers.{i}.self_attn.{q,k,v}_proj.bias`, Qwen3 `model.layers.{i}.self_attn.{q,k}_norm.weight`.
//!
//! A checkpoint tensor the model does not use is an error naming it and its file (a Qwen2
//! checkpoint relabelled `llama` would otherwise run with its biases dropped). The one
//! exception is RoPE's `inv_freq` (`model.layers.{i}.self_attn.rotary_emb.inv_freq`,
//! `model.rotary_emb.inv_freq`), which old checkpoints carry: `transformers` ignores it too
//! (it is a non-persistent buffer, dropped from the unexpected keys by
//! `_load_pretrained_model`) and recomputes it from the config, as this model does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};

use crate::checkpoint::{self, WeightFiles};
use crate::config::{Family, LlamaConfig, RopeScaling};
use crate::error::TrainerError;
use crate::lora::{LoraLinear, LoraSpec};
use crate::rng::Rng;
use crate::safe_load;

/// File name of a single-file checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of a sharded checkpoint's index.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

/// The linear layers of one decoder layer, in the order they run.
pub const LINEAR_MODULES: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The submodule (`self_attn` or `mlp`) that holds a linear layer.
pub fn module_parent(module: &str) -> &'static str {
    match module {
        "gate_proj" | "up_proj" | "down_proj" => "mlp",
        _ => "self_attn",
    }
}

/// The Hugging Face name of a linear layer's weight.
pub fn linear_weight_name(layer: usize, module: &str) -> String {
    format!(
        "model.layers.{layer}.{}.{module}.weight",
        module_parent(module)
    )
}

/// The Hugging Face name of a linear layer's bias.
pub fn linear_bias_name(layer: usize, module: &str) -> String {
    format!(
        "model.layers.{layer}.{}.{module}.bias",
        module_parent(module)
    )
}

/// Whether `module` of a `family` model has a bias.
pub fn has_bias(family: Family, module: &str) -> bool {
    family.qkv_bias() && matches!(module, "q_proj" | "k_proj" | "v_proj")
}

/// The Hugging Face names of Qwen3's per-head q/k norm weights of `layer`.
fn qk_norm_names(layer: usize) -> [String; 2] {
    [
        format!("model.layers.{layer}.self_attn.q_norm.weight"),
        format!("model.layers.{layer}.self_attn.k_norm.weight"),
    ]
}

/// RoPE's `inv_freq` buffers that old checkpoints carry and `transformers` ignores on load.
fn is_ignored_buffer(name: &str) -> bool {
    name == "model.rotary_emb.inv_freq"
        || name
            .strip_prefix("model.layers.")
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(i, tail)| {
                i.parse::<usize>().is_ok() && tail == "self_attn.rotary_emb.inv_freq"
            })
}

/// A linear layer, with a bias where the family has one, optionally wrapped by a LoRA adapter.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    /// `[out, in]`.
    pub(crate) weight: Tensor,
    /// `[out]` (Qwen2's q/k/v).
    pub(crate) bias: Option<Tensor>,
    /// The adapter, when this module is a LoRA target.
    pub(crate) lora: Option<LoraLinear>,
}

impl Linear {
    /// `x [n, in] → [n, out]`: `x·Wᵀ (+ b) (+ scale·dropout(x)·Aᵀ·Bᵀ)`.
    fn forward(&self, x: &Tensor, rng: Option<&mut Rng>) -> candle_core::Result<Tensor> {
        let y = linear(x, &self.weight)?;
        let y = match &self.bias {
            None => y,
            Some(b) => y.broadcast_add(b)?,
        };
        match &self.lora {
            None => Ok(y),
            Some(lora) => y + lora.delta(x, rng)?,
        }
    }
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) input_norm: Tensor,
    pub(crate) post_norm: Tensor,
    /// Qwen3's per-head RMSNorm weights of q and k, `[head_dim]` each.
    pub(crate) qk_norm: Option<(Tensor, Tensor)>,
    /// In [`LINEAR_MODULES`] order.
    pub(crate) linears: Vec<Linear>,
}

/// A Llama-architecture causal language model; see the module doc.
#[derive(Debug, Clone)]
pub struct Llama {
    pub(crate) config: LlamaConfig,
    pub(crate) device: Device,
    pub(crate) embed: Tensor,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Tensor,
    /// `None` when the embedding is tied.
    pub(crate) lm_head: Option<Tensor>,
    /// Trainable tensors by name (LoRA names or, in full mode, Hugging Face names).
    pub(crate) trainable: BTreeMap<String, Var>,
    pub(crate) lora: Option<LoraSpec>,
    /// `inv_freq` of RoPE, after scaling.
    inv_freq: Vec<f64>,
    /// The family, from the config.
    family: Family,
}

/// Where a tensor came from, for error messages.
struct Source {
    tensors: BTreeMap<String, Tensor>,
    file_of: BTreeMap<String, PathBuf>,
    default_file: PathBuf,
}

impl Source {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, TrainerError> {
        let file = self
            .file_of
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.default_file.clone());
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| TrainerError::MissingTensor {
                name: name.to_string(),
                file: file.clone(),
            })?;
        if t.dims() != shape {
            return Err(TrainerError::TensorShape {
                name: name.to_string(),
                file,
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        Ok(stored(t)?)
    }

    /// Fails naming the tensors nobody took (see the module doc), grouped by file.
    fn finish(self, family: Family) -> Result<(), TrainerError> {
        let mut by_file: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for name in self.tensors.into_keys() {
            if is_ignored_buffer(&name) {
                continue;
            }
            let file = self
                .file_of
                .get(&name)
                .cloned()
                .unwrap_or_else(|| self.default_file.clone());
            by_file.entry(file).or_default().push(name);
        }
        match by_file.into_iter().next() {
            None => Ok(()),
            Some((file, names)) => Err(TrainerError::UnusedTensors {
                file,
                family: family.to_string(),
                names,
            }),
        }
    }
}

/// The dtype a base tensor is held in: a `bf16` or `f16` matrix stays in its own dtype and is
/// converted to `f32` where it is used ([`linear`], [`Llama::forward`]'s embedding lookup), one
/// layer at a time; everything else is `f32`. Both conversions are exact (every `bf16` and
/// `f16` value is an `f32` value), so the results are bit for bit those of converting at load
/// time, at half the memory. See [`weights_in_memory`].
fn stored(t: Tensor) -> candle_core::Result<Tensor> {
    match t.dtype() {
        DType::BF16 | DType::F16 if t.rank() == 2 => Ok(t),
        _ => t.to_dtype(DType::F32),
    }
}

/// The dtype the base model's matrices are held in (`"f32"`, `"bf16"` or `"f16"`; `"mixed"`
/// when they differ), for the run record. Computation is always `f32`.
pub fn weights_in_memory(model: &Llama) -> &'static str {
    let mut seen: Option<DType> = None;
    let mut mixed = false;
    let mut see = |t: &Tensor| match seen {
        None => seen = Some(t.dtype()),
        Some(d) if d != t.dtype() => mixed = true,
        Some(_) => {}
    };
    see(&model.embed);
    if let Some(h) = &model.lm_head {
        see(h);
    }
    for layer in &model.layers {
        for lin in &layer.linears {
            see(&lin.weight);
        }
    }
    match (mixed, seen) {
        (true, _) => "mixed",
        (false, Some(DType::BF16)) => "bf16",
        (false, Some(DType::F16)) => "f16",
        _ => "f32",
    }
}

/// The expected shape of every base tensor, by Hugging Face name, in name order.
pub fn expected_shapes(config: &LlamaConfig) -> BTreeMap<String, Vec<usize>> {
    let d = config.hidden_size;
    let mut m = BTreeMap::new();
    m.insert(
        "model.embed_tokens.weight".into(),
        vec![config.vocab_size, d],
    );
    m.insert("model.norm.weight".into(), vec![d]);
    if !config.tie_word_embeddings {
        m.insert("lm_head.weight".into(), vec![config.vocab_size, d]);
    }
    for i in 0..config.num_hidden_layers {
        m.insert(format!("model.layers.{i}.input_layernorm.weight"), vec![d]);
        m.insert(
            format!("model.layers.{i}.post_attention_layernorm.weight"),
            vec![d],
        );
        for module in LINEAR_MODULES {
            let [out, inp] = linear_shape(config, module);
            m.insert(linear_weight_name(i, module), vec![out, inp]);
            if has_bias(config.family(), module) {
                m.insert(linear_bias_name(i, module), vec![out]);
            }
        }
        if config.family().qk_norm() {
            for name in qk_norm_names(i) {
                m.insert(name, vec![config.head_dim()]);
            }
        }
    }
    m
}

/// `[out, in]` of a linear layer.
pub(crate) fn linear_shape(config: &LlamaConfig, module: &str) -> [usize; 2] {
    let d = config.hidden_size;
    let hd = config.head_dim();
    let q = config.num_attention_heads * hd;
    let kv = config.num_kv_heads() * hd;
    let f = config.intermediate_size;
    match module {
        "q_proj" => [q, d],
        "k_proj" | "v_proj" => [kv, d],
        "o_proj" => [d, q],
        "gate_proj" | "up_proj" => [f, d],
        _ => [d, f],
    }
}

/// Random base weights drawn from `rng` in name order: every matrix uniform in `±a` with
/// `a = initializer_range·√3` (the variance of `transformers`' `normal(0, initializer_range)`,
/// without the transcendental functions a normal draw needs), norms all ones, biases zero.
pub fn random_weights(
    config: &LlamaConfig,
    rng: &mut Rng,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>, TrainerError> {
    let a = (config.initializer_range * 3f64.sqrt()) as f32;
    let mut out = BTreeMap::new();
    for (name, shape) in expected_shapes(config) {
        let n: usize = shape.iter().product();
        let t = if name.ends_with(".bias") {
            Tensor::zeros(shape.as_slice(), DType::F32, device)?
        } else if shape.len() == 1 {
            Tensor::ones(shape.as_slice(), DType::F32, device)?
        } else {
            Tensor::from_vec(rng.uniform_vec(n, -a, a), shape.as_slice(), device)?
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// The checkpoint's tensors and, for each, the file it came from. The layout rules (single
/// file or sharded index, pickle refusal, index and shards agreeing) are those of
/// [`crate::checkpoint`].
fn read_weights(model_dir: &Path, device: &Device) -> Result<Source, TrainerError> {
    match checkpoint::weight_files(model_dir)? {
        WeightFiles::Single { file } => {
            safe_load::refuse_pickle(&file)?;
            let tensors = safe_load::load_safetensors_keep_half(&file, device)?;
            Ok(Source {
                tensors,
                file_of: BTreeMap::new(),
                default_file: file,
            })
        }
        WeightFiles::Sharded { index, shards } => {
            let mut loaded = BTreeMap::new();
            for path in shards.keys() {
                safe_load::refuse_pickle(path)?;
                loaded.insert(
                    path.clone(),
                    safe_load::load_safetensors_keep_half(path, device)?,
                );
            }
            checkpoint::check_shards(
                &index,
                &shards,
                loaded.iter().map(|(path, tensors)| {
                    (path.as_path(), tensors.keys().map(String::as_str).collect())
                }),
            )?;
            let mut tensors = BTreeMap::new();
            let mut file_of = BTreeMap::new();
            for (path, shard_tensors) in loaded {
                for (name, t) in shard_tensors {
                    file_of.insert(name.clone(), path.clone());
                    tensors.insert(name, t);
                }
            }
            Ok(Source {
                tensors,
                file_of,
                default_file: index,
            })
        }
    }
}

impl Llama {
    /// Loads `config.json` and the safetensors weights of a Hugging Face model directory.
    pub fn load(model_dir: &Path, device: &Device) -> Result<Llama, TrainerError> {
        let config = LlamaConfig::from_file(&model_dir.join("config.json"))?;
        let source = read_weights(model_dir, device)?;
        Llama::build(config, source, device)
    }

    /// Builds a model from tensors with Hugging Face names (tests, random initialisation).
    /// A missing, mis-shaped or unused tensor is an error (RoPE `inv_freq` buffers excepted;
    /// see the module doc).
    pub fn from_tensors(
        config: LlamaConfig,
        tensors: BTreeMap<String, Tensor>,
        device: &Device,
    ) -> Result<Llama, TrainerError> {
        config
            .validate()
            .map_err(|message| TrainerError::ModelConfig {
                file: PathBuf::from("<in-memory config>"),
                message,
            })?;
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(device)?)))
            .collect::<Result<BTreeMap<_, _>, TrainerError>>()?;
        let source = Source {
            tensors,
            file_of: BTreeMap::new(),
            default_file: PathBuf::from("<in-memory tensors>"),
        };
        Llama::build(config, source, device)
    }

    fn build(config: LlamaConfig, mut src: Source, device: &Device) -> Result<Llama, TrainerError> {
        let family = config.family();
        let shapes = expected_shapes(&config);
        let shape = |name: &str| -> Vec<usize> { shapes.get(name).cloned().unwrap_or_default() };
        let embed = src.take(
            "model.embed_tokens.weight",
            &shape("model.embed_tokens.weight"),
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let input_name = format!("model.layers.{i}.input_layernorm.weight");
            let post_name = format!("model.layers.{i}.post_attention_layernorm.weight");
            let input_norm = src.take(&input_name, &shape(&input_name))?;
            let post_norm = src.take(&post_name, &shape(&post_name))?;
            let mut linears = Vec::with_capacity(LINEAR_MODULES.len());
            for module in LINEAR_MODULES {
                let name = linear_weight_name(i, module);
                let weight = src.take(&name, &shape(&name))?;
                let bias = if has_bias(family, module) {
                    let name = linear_bias_name(i, module);
                    Some(src.take(&name, &shape(&name))?)
                } else {
                    None
                };
                linears.push(Linear {
                    weight,
                    bias,
                    lora: None,
                });
            }
            let qk_norm = if family.qk_norm() {
                let [q, k] = qk_norm_names(i);
                Some((src.take(&q, &shape(&q))?, src.take(&k, &shape(&k))?))
            } else {
                None
            };
            layers.push(Layer {
                input_norm,
                post_norm,
                qk_norm,
                linears,
            });
        }
        let norm = src.take("model.norm.weight", &shape("model.norm.weight"))?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(src.take("lm_head.weight", &shape("lm_head.weight"))?)
        };
        src.finish(family)?;
        let inv_freq = inv_freq(&config).map_err(|message| TrainerError::ModelConfig {
            file: PathBuf::from("config.json"),
            message,
        })?;
        Ok(Llama {
            config,
            device: device.clone(),
            embed,
            layers,
            norm,
            lm_head,
            trainable: BTreeMap::new(),
            lora: None,
            inv_freq,
            family,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The model family (from the config).
    pub fn family(&self) -> Family {
        self.family
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The trainable tensors by name, in name order (empty until LoRA is attached or
    /// [`Llama::make_all_trainable`] is called).
    pub fn trainable(&self) -> &BTreeMap<String, Var> {
        &self.trainable
    }

    /// The attached LoRA adapter's shape, if any.
    pub fn lora_spec(&self) -> Option<&LoraSpec> {
        self.lora.as_ref()
    }

    /// Makes every base tensor trainable (full training), under its Hugging Face name.
    pub fn make_all_trainable(&mut self) -> Result<(), TrainerError> {
        let mut trainable = BTreeMap::new();
        let mut promote = |name: String, t: &mut Tensor| -> Result<(), TrainerError> {
            let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
            *t = var.as_tensor().clone();
            trainable.insert(name, var);
            Ok(())
        };
        promote("model.embed_tokens.weight".into(), &mut self.embed)?;
        promote("model.norm.weight".into(), &mut self.norm)?;
        if let Some(h) = self.lm_head.as_mut() {
            promote("lm_head.weight".into(), h)?;
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            promote(
                format!("model.layers.{i}.input_layernorm.weight"),
                &mut layer.input_norm,
            )?;
            promote(
                format!("model.layers.{i}.post_attention_layernorm.weight"),
                &mut layer.post_norm,
            )?;
            for (module, lin) in LINEAR_MODULES.iter().zip(layer.linears.iter_mut()) {
                promote(linear_weight_name(i, module), &mut lin.weight)?;
                if let Some(b) = lin.bias.as_mut() {
                    promote(linear_bias_name(i, module), b)?;
                }
            }
            if let Some((q, k)) = layer.qk_norm.as_mut() {
                let [qn, kn] = qk_norm_names(i);
                promote(qn, q)?;
                promote(kn, k)?;
            }
        }
        self.trainable.extend(trainable);
        Ok(())
    }

    /// The base weights by Hugging Face name (what `model.safetensors` holds; no `lm_head`
    /// when tied).
    pub fn base_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut m = BTreeMap::new();
        m.insert("model.embed_tokens.weight".to_string(), self.embed.clone());
        m.insert("model.norm.weight".to_string(), self.norm.clone());
        if let Some(h) = &self.lm_head {
            m.insert("lm_head.weight".to_string(), h.clone());
        }
        for (i, layer) in self.layers.iter().enumerate() {
            m.insert(
                format!("model.layers.{i}.input_layernorm.weight"),
                layer.input_norm.clone(),
            );
            m.insert(
                format!("model.layers.{i}.post_attention_layernorm.weight"),
                layer.post_norm.clone(),
            );
            for (module, lin) in LINEAR_MODULES.iter().zip(layer.linears.iter()) {
                m.insert(linear_weight_name(i, module), lin.weight.clone());
                if let Some(b) = &lin.bias {
                    m.insert(linear_bias_name(i, module), b.clone());
                }
            }
            if let Some((q, k)) = &layer.qk_norm {
                let [qn, kn] = qk_norm_names(i);
                m.insert(qn, q.clone());
                m.insert(kn, k.clone());
            }
        }
        m
    }

    /// Logits `[batch, seq, vocab]` (f32) for `input_ids` `[batch, seq]` (u32), in evaluation
    /// mode (no dropout).
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor, TrainerError> {
        self.forward_train(input_ids, None)
    }

    /// Like [`Llama::forward`], with LoRA dropout masks drawn from `dropout` when given
    /// (training mode). Masks are drawn layer by layer, module by module in
    /// [`LINEAR_MODULES`] order, each `[batch·seq, in]` row-major.
    pub fn forward_train(
        &self,
        input_ids: &Tensor,
        mut dropout: Option<&mut Rng>,
    ) -> Result<Tensor, TrainerError> {
        let (b, t) = input_ids.dims2()?;
        if t > self.config.max_position_embeddings {
            return Err(TrainerError::ModelConfig {
                file: PathBuf::from("config.json"),
                message: format!(
                    "sequence length {t} exceeds max_position_embeddings {}",
                    self.config.max_position_embeddings
                ),
            });
        }
        let ids = input_ids.flatten_all()?;
        let mut x = self.embed.index_select(&ids, 0)?.to_dtype(DType::F32)?; // [b·t, d]
        let (cos, sin) = self.rope_tables(t)?;
        let window = match self.family {
            Family::Mistral => self.config.sliding_window,
            _ => None,
        };
        let mask = causal_mask(t, window, &self.device)?;
        for layer in &self.layers {
            let h = rms_norm(&x, &layer.input_norm, self.config.rms_norm_eps)?;
            let a = self.attention(layer, &h, b, t, &cos, &sin, &mask, dropout.as_deref_mut())?;
            x = (x + a)?;
            let h = rms_norm(&x, &layer.post_norm, self.config.rms_norm_eps)?;
            let gate = layer.linears[4].forward(&h, dropout.as_deref_mut())?;
            let up = layer.linears[5].forward(&h, dropout.as_deref_mut())?;
            let m = layer.linears[6].forward(&(gate.silu()? * up)?, dropout.as_deref_mut())?;
            x = (x + m)?;
        }
        let x = rms_norm(&x, &self.norm, self.config.rms_norm_eps)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let logits = linear(&x, head)?;
        Ok(logits.reshape((b, t, self.config.vocab_size))?)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        b: usize,
        t: usize,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        mut dropout: Option<&mut Rng>,
    ) -> candle_core::Result<Tensor> {
        let nh = self.config.num_attention_heads;
        let nkv = self.config.num_kv_heads();
        let hd = self.config.head_dim();
        let q = layer.linears[0].forward(h, dropout.as_deref_mut())?;
        let k = layer.linears[1].forward(h, dropout.as_deref_mut())?;
        let v = layer.linears[2].forward(h, dropout.as_deref_mut())?;
        let heads = |x: Tensor, n: usize| -> candle_core::Result<Tensor> {
            x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let (q, k) = (heads(q, nh)?, heads(k, nkv)?);
        let (q, k) = match &layer.qk_norm {
            None => (q, k),
            Some((qn, kn)) => (
                rms_norm(&q, qn, self.config.rms_norm_eps)?,
                rms_norm(&k, kn, self.config.rms_norm_eps)?,
            ),
        };
        let q = apply_rope(&q, cos, sin)?;
        let k = repeat_kv(apply_rope(&k, cos, sin)?, nh / nkv)?;
        let v = repeat_kv(heads(v, nkv)?, nh / nkv)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let probs = softmax_last_dim(&scores.broadcast_add(mask)?)?;
        let out = probs.matmul(&v)?; // [b, nh, t, hd]
        let out = out
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * t, nh * hd))?;
        layer.linears[3].forward(&out, dropout)
    }

    /// `cos` and `sin` `[1, 1, t, head_dim]` for positions `0..t` (HF's `cat(freqs, freqs)`).
    fn rope_tables(&self, t: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let hd = 2 * half;
        let mut cos = Vec::with_capacity(t * hd);
        let mut sin = Vec::with_capacity(t * hd);
        for pos in 0..t {
            for _ in 0..2 {
                for f in &self.inv_freq {
                    let angle = pos as f64 * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (1, 1, t, hd), &self.device)?,
            Tensor::from_vec(sin, (1, 1, t, hd), &self.device)?,
        ))
    }
}

/// RoPE inverse frequencies `1 / theta^(2i/d)`, with the config's scaling applied.
fn inv_freq(config: &LlamaConfig) -> Result<Vec<f64>, String> {
    let hd = config.head_dim();
    let base: Vec<f64> = (0..hd / 2)
        .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f64 / hd as f64))
        .collect();
    Ok(match config.rope_scaling()? {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            // transformers `_compute_llama3_parameters`.
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    })
}

/// `[t, t]` additive causal mask: 0 on and below the diagonal, -inf above; with a sliding
/// `window` `w`, also -inf where `j <= i - w` (query `i` sees keys `i-w+1 ..= i`, as
/// `transformers` 4.38.2 `_make_causal_mask` with `diagonal = 1 - w`).
fn causal_mask(t: usize, window: Option<usize>, device: &Device) -> candle_core::Result<Tensor> {
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for j in i + 1..t {
            m[i * t + j] = f32::NEG_INFINITY;
        }
        if let Some(w) = window {
            for j in 0..(i + 1).saturating_sub(w) {
                m[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (t, t), device)
}

/// `x [n, in] · Wᵀ` for `W [out, in]`.
///
/// candle's matmul backward computes the gradient of both operands, whether or not anything
/// needs it. For a frozen weight on the CPU (every base weight in LoRA training) that wasted
/// `xᵀ·g` costs as much as the forward matmul, plus a zero-filled `[out, in]` buffer; so a
/// frozen weight goes through [`FrozenLinear`], whose backward gives only `g·W`. The forward
/// is the same matmul call, so outputs are bit-identical either way.
///
/// A `bf16`/`f16` weight (see [`stored`]) is converted to `f32` for each use and the copy is
/// dropped after it: exact, so bit-identical to holding it in `f32`.
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if !w.is_variable() && w.device().is_cpu() && x.device().is_cpu() {
        x.contiguous()?.apply_op1(FrozenLinear { w: w.clone() })
    } else {
        x.matmul(&w.to_dtype(DType::F32)?.t()?)
    }
}

/// `x·Wᵀ` with a backward pass to `x` only (see [`linear`]).
struct FrozenLinear {
    w: Tensor,
}

impl candle_core::CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(values) = storage else {
            candle_core::bail!("frozen-linear: only f32 is supported");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-linear: the input must be contiguous");
        };
        let x = Tensor::from_slice(&values[start..end], layout.shape(), &Device::Cpu)?;
        let y = x.matmul(&self.w.to_dtype(DType::F32)?.t()?)?;
        let shape = y.shape().clone();
        let y = y.flatten_all()?.to_vec1::<f32>()?;
        Ok((candle_core::CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.w.to_dtype(DType::F32)?)?))
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * w` (HF `LlamaRMSNorm`).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}

/// Softmax over the last dimension: `exp(x - max) / sum`, the max detached.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// Log-softmax over the last dimension: `x - max - log(sum(exp(x - max)))`.
pub fn log_softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// HF `apply_rotary_pos_emb`: `x·cos + rotate_half(x)·sin`, `rotate_half(x) = [-x₂, x₁]`.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// HF `repeat_kv`: `[b, kv, t, hd] → [b, kv·n, t, hd]`, each key/value head repeated `n` times
/// consecutively.
fn repeat_kv(x: Tensor, n: usize) -> candle_core::Result<Tensor> {
    if n == 1 {
        return Ok(x);
    }
    let (b, kv, t, hd) = x.dims4()?;
    let copies = vec![&x; n];
    Tensor::cat(&copies, 2)?.reshape((b, kv * n, t, hd))
}

/// Sum over positions of `weight · -log p(target)`, a scalar; `logits` `[b, t, V]`,
/// `targets` `[b, t]` u32, `weights` `[b, t]` f32.
pub fn masked_nll_sum(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor, TrainerError> {
    let lp = log_softmax_last_dim(logits)?;
    let picked = lp
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    Ok((picked.neg()? * weights)?.sum_all()?)
}

/// `(in, out)` features of a linear layer.
pub(crate) fn linear_in_out(config: &LlamaConfig, module: &str) -> (usize, usize) {
    let [out, inp] = linear_shape(config, module);
    (inp, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frozen-weight path gives the same bits forward and the same gradient to `x` as
    /// candle's plain matmul, and no gradient to the weight.
    #[test]
    fn frozen_linear_matches_matmul() {
        let mut rng = Rng::new(1);
        let dev = Device::Cpu;
        let x = Var::from_vec(rng.uniform_vec(6 * 5, -1.0, 1.0), (6, 5), &dev).expect("x");
        let w = Tensor::from_vec(rng.uniform_vec(4 * 5, -1.0, 1.0), (4, 5), &dev).expect("w");
        let fast = linear(x.as_tensor(), &w).expect("frozen");
        let plain = x.as_tensor().matmul(&w.t().expect("t")).expect("plain");
        let a: Vec<Vec<f32>> = fast.to_vec2().expect("v");
        let b: Vec<Vec<f32>> = plain.to_vec2().expect("v");
        assert_eq!(a, b);
        let ga = fast.sqr().and_then(|t| t.sum_all()).expect("loss");
        let gb = plain.sqr().and_then(|t| t.sum_all()).expect("loss");
        let (ga, gb) = (ga.backward().expect("bwd"), gb.backward().expect("bwd"));
        let xa: Vec<Vec<f32>> = ga.get(x.as_tensor()).expect("grad").to_vec2().expect("v");
        let xb: Vec<Vec<f32>> = gb.get(x.as_tensor()).expect("grad").to_vec2().expect("v");
        assert_eq!(xa, xb);
        assert!(ga.get(&w).is_none());
    }
}
