//! LoRA adapters with PEFT's semantics and file format.
//!
//! # Semantics (PEFT 0.10.0 `peft/tuners/lora/layer.py`, `Linear.forward`)
//!
//! A targeted linear layer computes `y = x·Wᵀ + (dropout(x)·Aᵀ·Bᵀ)·scaling` with
//! `A: [r, in]`, `B: [out, r]` and `scaling = alpha / r` (`alpha / √r` with `use_rslora`).
//! At creation `A` is Kaiming-uniform as PEFT's `nn.init.kaiming_uniform_(A, a=√5)`, which is
//! uniform in `±1/√in` (gain `√(2/(1+a²)) = √(1/3)`, bound `√3·gain/√fan_in`), drawn from the
//! trainer's generator row-major, layer by layer, module by module in
//! [`crate::model::LINEAR_MODULES`] order; `B` is zero, so a fresh adapter leaves the model
//! unchanged. Dropout is inverted dropout (`torch.nn.Dropout`) with masks from the trainer's
//! generator.
//!
//! # Files (what `PeftModel.save_pretrained` writes, and `PeftModel.from_pretrained` reads)
//!
//! * `adapter_model.safetensors`: `f32` tensors named
//!   `base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight` and
//!   `base_model.model.model.layers.{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight`
//!   (PEFT 0.10 naming: no adapter name in saved keys), sorted by name, metadata exactly
//!   `{"format":"pt"}` (what PEFT writes; more than one key would serialize in varying order).
//! * `adapter_config.json`: PEFT's `LoraConfig` keys, sorted, two-space indent (what PEFT's
//!   `json.dumps(..., indent=2, sort_keys=True)` produces), `target_modules` sorted. An adapter
//!   trained with `target_modules = "all-linear"` lists the seven module names, which is what
//!   PEFT 0.10.0 itself saves (`_maybe_include_all_linear_layers` replaces the string by the set
//!   of names before saving); reading accepts the string `"all-linear"` too.
//!
//! Tensor names do not depend on the family: Llama, Mistral, Qwen2 and Qwen3 all name their
//! layers `model.layers.{i}.self_attn.*` / `model.layers.{i}.mlp.*`. Qwen2's q/k/v biases stay
//! in the base (PEFT's `bias = "none"`): the adapter adds to the biased output.
//!
//! Both are written atomically (temporary file, fsync, rename, directory fsync).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use serde_json::Value;

use crate::config::{is_all_linear, LoraSection, ALLOWED_TARGET_MODULES, ALL_LINEAR};
use crate::error::TrainerError;
use crate::files;
use crate::model::{linear_in_out, module_parent, Llama, LINEAR_MODULES};
use crate::rng::Rng;
use crate::safe_load;

/// File name of the adapter weights.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter config.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";

/// The shape of a LoRA adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// Rank.
    pub r: usize,
    /// Scaling numerator (`lora_alpha`).
    pub alpha: f64,
    /// Dropout probability on the adapter input during training (`lora_dropout`).
    pub dropout: f64,
    /// Adapted modules, sorted by name, each one of [`ALLOWED_TARGET_MODULES`].
    pub target_modules: Vec<String>,
    /// PEFT's rank-stabilised scaling `alpha / √r` (only from a loaded adapter).
    pub use_rslora: bool,
}

impl LoraSpec {
    /// Checks and sorts; the message names the offending value. `"all-linear"` (PEFT's
    /// shorthand, any case) stands for all of [`ALLOWED_TARGET_MODULES`], as PEFT 0.10.0 expands
    /// it on a model of a supported family (every `nn.Linear` but `lm_head`).
    pub fn new(
        r: usize,
        alpha: f64,
        dropout: f64,
        target_modules: &[impl AsRef<str>],
    ) -> Result<LoraSpec, String> {
        if r == 0 {
            return Err("r must be at least 1".into());
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(format!("alpha must be positive (got {alpha})"));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(format!("dropout must be in [0, 1) (got {dropout})"));
        }
        let mut targets: Vec<String> = Vec::new();
        let expanded: Vec<&str> = if target_modules.iter().any(|m| is_all_linear(m.as_ref())) {
            // PEFT's `_maybe_include_all_linear_layers`: every nn.Linear but the output head.
            ALLOWED_TARGET_MODULES.to_vec()
        } else {
            target_modules.iter().map(AsRef::as_ref).collect()
        };
        for m in expanded {
            if !ALLOWED_TARGET_MODULES.contains(&m) {
                return Err(format!(
                    "target module \"{m}\" is not supported (supported: {}, or \"{ALL_LINEAR}\")",
                    ALLOWED_TARGET_MODULES.join(", ")
                ));
            }
            if !targets.iter().any(|t| t == m) {
                targets.push(m.to_string());
            }
        }
        if targets.is_empty() {
            return Err("no target modules".into());
        }
        targets.sort();
        Ok(LoraSpec {
            r,
            alpha,
            dropout,
            target_modules: targets,
            use_rslora: false,
        })
    }

    /// The spec of a TOML `[lora]` section.
    pub fn from_section(section: &LoraSection) -> Result<LoraSpec, String> {
        LoraSpec::new(
            section.r,
            section.alpha,
            section.dropout,
            &section.target_modules,
        )
    }

    /// `alpha / r`, or `alpha / √r` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Whether `module` is adapted.
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|m| m == module)
    }
}

/// PEFT's saved name of a LoRA matrix; `which` is `'A'` or `'B'`.
pub fn peft_tensor_name(layer: usize, module: &str, which: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{module}.lora_{which}.weight",
        module_parent(module)
    )
}

/// The adapter of one linear layer.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// `[r, in]`.
    pub(crate) a: Var,
    /// `[out, r]`.
    pub(crate) b: Var,
    pub(crate) scaling: f64,
    pub(crate) dropout: f64,
    /// Set by [`Llama::freeze_adapter`]: the matrices enter the forward pass as constants, so
    /// candle records no graph for a backward pass that will never run.
    pub(crate) frozen: bool,
}

impl LoraLinear {
    /// `(dropout(x)·Aᵀ·Bᵀ)·scaling` for `x: [n, in]`; dropout only when `rng` is given.
    pub(crate) fn delta(&self, x: &Tensor, rng: Option<&mut Rng>) -> candle_core::Result<Tensor> {
        let x = match rng {
            Some(rng) if self.dropout > 0.0 => {
                let (n, k) = x.dims2()?;
                let mask = rng.dropout_mask(n * k, self.dropout as f32);
                (x * Tensor::from_vec(mask, (n, k), x.device())?)?
            }
            _ => x.clone(),
        };
        // A detached tensor shares the variable's storage: the same values, so the same bits.
        let (a, b) = if self.frozen {
            (self.a.as_detached_tensor(), self.b.as_detached_tensor())
        } else {
            (self.a.as_tensor().clone(), self.b.as_tensor().clone())
        };
        x.matmul(&a.t()?)?
            .matmul(&b.t()?)?
            .affine(self.scaling, 0.0)
    }
}

impl Llama {
    /// Attaches a fresh adapter (A Kaiming-uniform from `rng`, B zero) and makes its matrices
    /// the trainable tensors.
    pub fn attach_lora(&mut self, spec: &LoraSpec, rng: &mut Rng) -> Result<(), TrainerError> {
        let adapters = self.build_adapters(spec, |_layer, _module, (inp, out)| {
            let bound = (1.0 / (inp as f64).sqrt()) as f32;
            let a = rng.uniform_vec(spec.r * inp, -bound, bound);
            Ok((
                Tensor::from_vec(a, (spec.r, inp), &candle_core::Device::Cpu)?,
                Tensor::zeros((out, spec.r), DType::F32, &candle_core::Device::Cpu)?,
            ))
        })?;
        self.install_adapters(spec, adapters);
        Ok(())
    }

    /// Loads a PEFT LoRA adapter directory onto this model; its matrices become the trainable
    /// tensors (so training can continue from it). Returns the adapter's spec.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<LoraSpec, TrainerError> {
        let spec = read_adapter_config(dir)?;
        let weights = dir.join(ADAPTER_WEIGHTS_FILE);
        if !weights.is_file() {
            for pickle in ["adapter_model.bin", "adapter_model.pt"] {
                let p = dir.join(pickle);
                if p.is_file() {
                    safe_load::refuse_pickle(&p)?;
                }
            }
            return Err(TrainerError::adapter(
                dir,
                format!("no {ADAPTER_WEIGHTS_FILE} in this directory"),
            ));
        }
        safe_load::refuse_pickle(&weights)?;
        let loaded = safe_load::load_safetensors(&weights, &candle_core::Device::Cpu)?;
        // PEFT's in-memory names carry the adapter name (`lora_A.default.weight`); saved ones
        // do not. Accept both.
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        for (name, t) in loaded {
            let plain = name
                .replace(".lora_A.default.weight", ".lora_A.weight")
                .replace(".lora_B.default.weight", ".lora_B.weight");
            tensors.insert(plain, t);
        }
        let r = spec.r;
        let adapters = self.build_adapters(&spec, |layer, module, (inp, out)| {
            let mut take = |which: char, shape: [usize; 2]| -> Result<Tensor, TrainerError> {
                let name = peft_tensor_name(layer, module, which);
                let t = tensors
                    .remove(&name)
                    .ok_or_else(|| TrainerError::MissingTensor {
                        name: name.clone(),
                        file: weights.clone(),
                    })?;
                if t.dims() != shape {
                    return Err(TrainerError::TensorShape {
                        name,
                        file: weights.clone(),
                        expected: shape.to_vec(),
                        got: t.dims().to_vec(),
                    });
                }
                Ok(t)
            };
            Ok((take('A', [r, inp])?, take('B', [out, r])?))
        })?;
        if let Some(extra) = tensors.keys().next() {
            return Err(TrainerError::adapter(
                dir,
                format!(
                    "{ADAPTER_WEIGHTS_FILE} holds `{extra}`, which is not a LoRA matrix of the \
                     adapter_config.json target_modules; this trainer supports LoRA on {} only",
                    ALLOWED_TARGET_MODULES.join(", ")
                ),
            ));
        }
        self.install_adapters(&spec, adapters);
        Ok(spec)
    }

    /// Builds the adapter of every targeted module from the matrices `make` returns, without
    /// changing the model (so a failure leaves it as it was).
    fn build_adapters(
        &self,
        spec: &LoraSpec,
        mut make: impl FnMut(usize, &str, (usize, usize)) -> Result<(Tensor, Tensor), TrainerError>,
    ) -> Result<Vec<(usize, usize, LoraLinear)>, TrainerError> {
        if self.lora.is_some() {
            return Err(TrainerError::adapter(
                PathBuf::from("<model>"),
                "the model already has a LoRA adapter attached",
            ));
        }
        let mut adapters = Vec::new();
        for i in 0..self.layers.len() {
            for (j, module) in LINEAR_MODULES.iter().enumerate() {
                if !spec.targets(module) {
                    continue;
                }
                let (a, b) = make(i, module, linear_in_out(&self.config, module))?;
                let a = Var::from_tensor(&a.to_dtype(DType::F32)?.to_device(&self.device)?)?;
                let b = Var::from_tensor(&b.to_dtype(DType::F32)?.to_device(&self.device)?)?;
                let lora = LoraLinear {
                    a,
                    b,
                    scaling: spec.scaling(),
                    dropout: spec.dropout,
                    frozen: false,
                };
                adapters.push((i, j, lora));
            }
        }
        Ok(adapters)
    }

    /// Installs built adapters and registers their matrices as trainable.
    fn install_adapters(&mut self, spec: &LoraSpec, adapters: Vec<(usize, usize, LoraLinear)>) {
        for (i, j, lora) in adapters {
            let module = LINEAR_MODULES[j];
            self.trainable
                .insert(peft_tensor_name(i, module, 'A'), lora.a.clone());
            self.trainable
                .insert(peft_tensor_name(i, module, 'B'), lora.b.clone());
            self.layers[i].linears[j].lora = Some(lora);
        }
        self.lora = Some(spec.clone());
    }

    /// Makes the attached adapter a constant for inference (`eval`, `probe`): its matrices
    /// leave the trainable tensors and enter the forward pass detached, so no operation is
    /// recorded for a backward pass and every intermediate tensor is freed as soon as the next
    /// one is computed, as for the base model alone. The outputs are bit for bit those of the
    /// trainable adapter (the same storage goes through the same operations).
    pub fn freeze_adapter(&mut self) {
        for layer in &mut self.layers {
            for lin in &mut layer.linears {
                if let Some(l) = lin.lora.as_mut() {
                    l.frozen = true;
                }
            }
        }
        self.trainable.retain(|name, _| !name.contains(".lora_"));
    }

    /// A model with this one's base weights, shared rather than copied (candle tensors are
    /// reference-counted), and no adapter: what `probe` compares an adapted model against.
    pub fn share_base(&self) -> Llama {
        let mut base = self.clone();
        base.detach_lora();
        base
    }

    /// Removes the adapter (and its trainable tensors).
    pub fn detach_lora(&mut self) {
        for layer in &mut self.layers {
            for lin in &mut layer.linears {
                lin.lora = None;
            }
        }
        self.trainable.retain(|name, _| !name.contains(".lora_"));
        self.lora = None;
    }

    /// The adapter's matrices by PEFT name, sorted (empty without an adapter).
    pub fn lora_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut m = BTreeMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (module, lin) in LINEAR_MODULES.iter().zip(&layer.linears) {
                if let Some(l) = &lin.lora {
                    m.insert(peft_tensor_name(i, module, 'A'), l.a.as_tensor().clone());
                    m.insert(peft_tensor_name(i, module, 'B'), l.b.as_tensor().clone());
                }
            }
        }
        m
    }
}

/// The `adapter_config.json` text for `spec` (deterministic: sorted keys, fixed formatting,
/// trailing newline).
pub fn adapter_config_json(spec: &LoraSpec, base_model_name_or_path: &str) -> String {
    let alpha = if spec.alpha.fract() == 0.0 && spec.alpha.abs() < 1e15 {
        Value::from(spec.alpha as i64)
    } else {
        Value::from(spec.alpha)
    };
    let mut m: BTreeMap<&str, Value> = BTreeMap::new();
    m.insert("alpha_pattern", Value::Object(Default::default()));
    m.insert("auto_mapping", Value::Null);
    m.insert("base_model_name_or_path", base_model_name_or_path.into());
    m.insert("bias", "none".into());
    m.insert("fan_in_fan_out", false.into());
    m.insert("inference_mode", true.into());
    m.insert("init_lora_weights", true.into());
    m.insert("layer_replication", Value::Null);
    m.insert("layers_pattern", Value::Null);
    m.insert("layers_to_transform", Value::Null);
    m.insert("loftq_config", Value::Object(Default::default()));
    m.insert("lora_alpha", alpha);
    m.insert("lora_dropout", spec.dropout.into());
    m.insert("megatron_config", Value::Null);
    m.insert("megatron_core", "megatron.core".into());
    m.insert("modules_to_save", Value::Null);
    m.insert("peft_type", "LORA".into());
    m.insert("r", spec.r.into());
    m.insert("rank_pattern", Value::Object(Default::default()));
    m.insert("revision", Value::Null);
    m.insert("target_modules", spec.target_modules.clone().into());
    m.insert("task_type", "CAUSAL_LM".into());
    m.insert("use_dora", false.into());
    m.insert("use_rslora", spec.use_rslora.into());
    let mut s = serde_json::to_string_pretty(&m).expect("a map of JSON values serializes");
    s.push('\n');
    s
}

/// Reads and checks a PEFT `adapter_config.json`; anything this trainer would not apply
/// faithfully (DoRA, biases, per-layer patterns, regex targets, `modules_to_save`) is refused.
pub fn read_adapter_config(dir: &Path) -> Result<LoraSpec, TrainerError> {
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let text = fs_err::read_to_string(&path)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| TrainerError::adapter(dir, format!("{ADAPTER_CONFIG_FILE}: {e}")))?;
    let bad = |key: &str, what: &str| {
        TrainerError::adapter(dir, format!("{ADAPTER_CONFIG_FILE}: `{key}` {what}"))
    };
    let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("");
    if peft_type != "LORA" {
        return Err(bad(
            "peft_type",
            &format!("is \"{peft_type}\"; only LORA adapters are supported"),
        ));
    }
    let r = v
        .get("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("r", "is missing or not a positive integer"))?;
    let alpha = v
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| bad("lora_alpha", "is missing or not a number"))?;
    let dropout = match v.get("lora_dropout") {
        None | Some(Value::Null) => 0.0,
        Some(d) => d
            .as_f64()
            .ok_or_else(|| bad("lora_dropout", "is not a number"))?,
    };
    let targets: Vec<String> = match v.get("target_modules") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("target_modules", "has a non-string entry"))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) if is_all_linear(s) => vec![s.clone()],
        Some(Value::String(s)) => {
            return Err(bad(
                "target_modules",
                &format!("is the pattern \"{s}\"; list module names instead (or \"{ALL_LINEAR}\")"),
            ))
        }
        _ => return Err(bad("target_modules", "is missing")),
    };
    let is_false = |key: &str| matches!(v.get(key), None | Some(Value::Null | Value::Bool(false)));
    let is_empty = |key: &str| match v.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if !is_false("use_dora") {
        return Err(bad("use_dora", "is true; DoRA is not supported"));
    }
    if !is_false("fan_in_fan_out") {
        return Err(bad(
            "fan_in_fan_out",
            "is true; only Llama-style linears are supported",
        ));
    }
    match v.get("bias").and_then(Value::as_str) {
        None | Some("none") => {}
        Some(b) => {
            return Err(bad(
                "bias",
                &format!("is \"{b}\"; only \"none\" is supported"),
            ))
        }
    }
    for key in [
        "rank_pattern",
        "alpha_pattern",
        "layers_to_transform",
        "layers_pattern",
        "modules_to_save",
        "layer_replication",
    ] {
        if !is_empty(key) {
            return Err(bad(
                key,
                "is set; per-layer patterns and extra modules are not supported",
            ));
        }
    }
    let use_rslora = !is_false("use_rslora");
    let mut spec = LoraSpec::new(r as usize, alpha, dropout, &targets)
        .map_err(|m| TrainerError::adapter(dir, format!("{ADAPTER_CONFIG_FILE}: {m}")))?;
    spec.use_rslora = use_rslora;
    Ok(spec)
}

/// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir` (created if needed)
/// and returns their paths.
pub fn save_adapter(
    model: &Llama,
    dir: &Path,
    base_model_name_or_path: &str,
) -> Result<Vec<PathBuf>, TrainerError> {
    let spec = model
        .lora_spec()
        .ok_or_else(|| TrainerError::adapter(dir, "the model has no LoRA adapter to save"))?;
    fs_err::create_dir_all(dir)?;
    let weights = dir.join(ADAPTER_WEIGHTS_FILE);
    files::save_safetensors(&weights, &model.lora_tensors())?;
    let config = dir.join(ADAPTER_CONFIG_FILE);
    files::write_atomic(
        &config,
        adapter_config_json(spec, base_model_name_or_path).as_bytes(),
    )?;
    Ok(vec![weights, config])
}
