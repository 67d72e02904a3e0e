//! Model families (issue 12): Llama 3.x, Qwen2, Mistral and Qwen3 checkpoints give the logits
//! `transformers` gives, train a LoRA adapter, and the model refuses what it cannot run
//! faithfully: an unsupported architecture by name before any weight is read, and tensors it
//! would not use.
//!
//! The fixtures in `tests/fixtures/families/<family>/` are made by
//! `tests/fixtures/families/make_tiny_families.py` (its README gives the versions and sha256).
//! `family_features_matter_in_the_fixtures` shows that undoing each family-specific feature
//! (q/k/v biases, q/k norm, the sliding window or one key more or less, llama3 RoPE scaling)
//! moves these logits by far more than the tolerance. This test needs no Python.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use trainer::config::{Family, ModelConfig};
use trainer::data::{load_jsonl, TextTokenizer};
use trainer::lora::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use trainer::model::Llama;
use trainer::safe_load::load_safetensors;
use trainer::TrainerError;

use common::families::{expected_logits, fixture, input_ids, max_diff, train_adapter, TOLERANCE};

/// Each fixture and the family its config.json names.
const FIXTURES: &[(&str, Family)] = &[
    ("llama3", Family::Llama),
    ("qwen2", Family::Qwen2),
    ("mistral", Family::Mistral),
    ("qwen3", Family::Qwen3),
];

/// The fixture's config (as `from_file` reads it) and weights.
fn parts(name: &str) -> (ModelConfig, std::collections::BTreeMap<String, Tensor>) {
    let dir = fixture(name).join("model");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let weights = load_safetensors(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    (config, weights)
}

/// Logits of the fixture's weights under an edited config.
fn logits_with(name: &str, edit: impl FnOnce(&mut ModelConfig)) -> Result<Tensor, TrainerError> {
    let (mut config, weights) = parts(name);
    edit(&mut config);
    Llama::from_tensors(config, weights, &Device::Cpu)?.forward(&input_ids(name))
}

#[test]
fn each_family_matches_transformers_logits() {
    for (name, family) in FIXTURES {
        let model = Llama::load(&fixture(name).join("model"), &Device::Cpu).unwrap();
        assert_eq!(model.family(), *family, "{name}");
        let logits = model.forward(&input_ids(name)).unwrap();
        let expected = expected_logits(name);
        assert_eq!(logits.dims(), expected.dims(), "{name}");
        let d = max_diff(&logits, &expected);
        println!("{name}: max |ours - transformers| = {d:e}");
        assert!(d < TOLERANCE, "{name}: logits differ by {d:e}");
    }
}

/// The fixtures pin what makes each family differ: undoing it moves the logits far beyond the
/// tolerance, so the parity test above would catch a model that ignored it.
#[test]
fn family_features_matter_in_the_fixtures() {
    let far = |name: &str, what: &str, logits: Tensor| {
        let d = max_diff(&logits, &expected_logits(name));
        println!("{name} {what}: {d:e}");
        assert!(d > 100.0 * TOLERANCE, "{name} {what}: only {d:e}");
    };
    // Mistral: the exact window (5 keys), neither one more or less, nor none.
    for w in [Some(4), Some(6), None] {
        let l = logits_with("mistral", |c| c.sliding_window = w).unwrap();
        far("mistral", &format!("sliding_window {w:?}"), l);
    }
    // Llama 3: the llama3 RoPE scaling.
    let l = logits_with("llama3", |c| c.rope_scaling = None).unwrap();
    far("llama3", "without rope_scaling", l);
    // Qwen2: zeroed q/k/v biases.
    let (config, mut weights) = parts("qwen2");
    for (name, t) in weights.iter_mut() {
        if name.ends_with(".bias") {
            *t = t.zeros_like().unwrap();
        }
    }
    let l = Llama::from_tensors(config, weights, &Device::Cpu)
        .unwrap()
        .forward(&input_ids("qwen2"))
        .unwrap();
    far("qwen2", "biases zeroed", l);
    // Qwen3: q/k norm weights set to one (a norm without its weight).
    let (config, mut weights) = parts("qwen3");
    for (name, t) in weights.iter_mut() {
        if name.ends_with("q_norm.weight") || name.ends_with("k_norm.weight") {
            *t = t.ones_like().unwrap();
        }
    }
    let l = Llama::from_tensors(config, weights, &Device::Cpu)
        .unwrap()
        .forward(&input_ids("qwen3"))
        .unwrap();
    far("qwen3", "q/k norm weights ignored", l);
}

/// Qwen2 keeps `sliding_window` in its config but does not use it unless `use_sliding_window`
/// is true, which this trainer refuses rather than ignores.
#[test]
fn qwen2_sliding_window_is_off_unless_enabled_and_enabling_is_refused() {
    let l = logits_with("qwen2", |c| c.sliding_window = Some(3)).unwrap();
    assert!(max_diff(&l, &expected_logits("qwen2")) < TOLERANCE);
    let err = logits_with("qwen2", |c| c.use_sliding_window = true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("use_sliding_window"), "{err}");
}

/// Mistral without a `sliding_window` key gets transformers' default 4096; `null` means none.
#[test]
fn mistral_sliding_window_default_and_null() {
    let dir = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(
        &fs_err::read_to_string(fixture("mistral").join("model/config.json")).unwrap(),
    )
    .unwrap();
    v.as_object_mut().unwrap().remove("sliding_window");
    let p = dir.path().join("config.json");
    fs_err::write(&p, v.to_string()).unwrap();
    let c = ModelConfig::from_file(&p).unwrap();
    assert_eq!(c.family(), Family::Mistral);
    assert_eq!(c.sliding_window, Some(4096));
    v["sliding_window"] = serde_json::Value::Null;
    fs_err::write(&p, v.to_string()).unwrap();
    assert_eq!(ModelConfig::from_file(&p).unwrap().sliding_window, None);
}

/// Writes `config.json` and a `model.safetensors` that is not a safetensors file at all, so an
/// error about the architecture proves no weight was read.
fn base_with_config(dir: &Path, config: serde_json::Value) {
    fs_err::create_dir_all(dir).unwrap();
    fs_err::write(dir.join("config.json"), config.to_string()).unwrap();
    fs_err::write(dir.join("model.safetensors"), b"not safetensors").unwrap();
}

#[test]
fn issue12_unsupported_architectures_are_refused_by_name_before_any_weight_is_read() {
    let supported = "llama (LlamaForCausalLM), mistral (MistralForCausalLM), qwen2 \
                     (Qwen2ForCausalLM), qwen3 (Qwen3ForCausalLM)";
    let cases = [
        (
            serde_json::json!({"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"],
                "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "vocab_size": 100}),
            "\"gemma2\"",
        ),
        (
            serde_json::json!({"model_type": "phi3", "architectures": ["Phi3ForCausalLM"]}),
            "\"phi3\"",
        ),
        // GPT-2's config has none of the Llama keys: still refused by name, not for a key.
        (
            serde_json::json!({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100}),
            "\"gpt2\"",
        ),
        // No model_type: the architecture decides.
        (
            serde_json::json!({"architectures": ["Phi3ForCausalLM"], "hidden_size": 64}),
            "\"Phi3ForCausalLM\"",
        ),
        // A supported model_type with another head.
        (
            serde_json::json!({"model_type": "llama",
                "architectures": ["LlamaForSequenceClassification"]}),
            "\"LlamaForSequenceClassification\"",
        ),
    ];
    for (i, (config, name)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join(format!("base{i}"));
        base_with_config(&base, config);
        let via_config = ModelConfig::from_file(&base.join("config.json"))
            .unwrap_err()
            .to_string();
        let via_load = Llama::load(&base, &Device::Cpu).unwrap_err().to_string();
        for err in [via_config, via_load] {
            assert!(err.contains(name), "{err}");
            assert!(err.contains(supported), "{err}");
            assert!(err.contains("config.json"), "{err}");
            assert!(!err.contains("safetensors"), "weights were read: {err}");
        }
    }
}

#[test]
fn model_type_and_architectures_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(
        &fs_err::read_to_string(fixture("qwen2").join("model/config.json")).unwrap(),
    )
    .unwrap();
    v["model_type"] = "llama".into();
    base_with_config(dir.path(), v);
    let err = ModelConfig::from_file(&dir.path().join("config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"llama\"") && err.contains("Qwen2ForCausalLM"),
        "{err}"
    );
}

/// Issue 12, found on the way: a Qwen2 checkpoint relabelled `llama` trained silently with its
/// q/k/v biases dropped.
#[test]
fn issue12_qwen2_relabelled_llama_fails_naming_the_unused_biases_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("relabelled");
    fs_err::create_dir_all(&base).unwrap();
    let src = fixture("qwen2").join("model");
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        fs_err::copy(src.join(f), base.join(f)).unwrap();
    }
    let mut v: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(src.join("config.json")).unwrap()).unwrap();
    v["model_type"] = "llama".into();
    v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    fs_err::write(base.join("config.json"), v.to_string()).unwrap();
    let err = Llama::load(&base, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, TrainerError::UnusedTensors { names, .. } if names.len() == 6),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("`model.layers.0.self_attn.k_proj.bias`")
            && msg.contains(&base.join("model.safetensors").display().to_string())
            && msg.contains("llama"),
        "{msg}"
    );
}

#[test]
fn from_tensors_refuses_unused_tensors_but_tolerates_rope_inv_freq() {
    let config = common::tiny_config();
    let ids = Tensor::new(&[[2u32, 3, 4, 5]], &Device::Cpu).unwrap();
    let reference = Llama::from_tensors(config.clone(), common::weights(&config, 1), &Device::Cpu)
        .unwrap()
        .forward(&ids)
        .unwrap();
    let mut w = common::weights(&config, 1);
    w.insert(
        "model.layers.1.self_attn.q_proj.bias".into(),
        Tensor::zeros(16, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let err = Llama::from_tensors(config.clone(), w, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`model.layers.1.self_attn.q_proj.bias`") && err.contains("<in-memory"),
        "{err}"
    );
    // transformers drops RoPE's inv_freq buffers on load (they are recomputed); so do we,
    // whatever their values.
    let mut w = common::weights(&config, 1);
    for name in [
        "model.layers.0.self_attn.rotary_emb.inv_freq",
        "model.rotary_emb.inv_freq",
    ] {
        w.insert(name.into(), Tensor::full(7f32, 2, &Device::Cpu).unwrap());
    }
    let tolerated = Llama::from_tensors(config, w, &Device::Cpu)
        .unwrap()
        .forward(&ids)
        .unwrap();
    assert_eq!(max_diff(&tolerated, &reference), 0.0);
}

/// Llama 3's tokenizer adds BOS in its post-processor; the data path must put it exactly where
/// `transformers`' tokenizer does (`tokens.json`, written by the generator with AutoTokenizer),
/// once, at the start of the prompt, and end with the config's first eos id.
#[test]
fn llama3_bos_from_the_post_processor_matches_transformers() {
    let dir = fixture("llama3").join("model");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let tok = TextTokenizer::load(&dir, &config).unwrap();
    assert_eq!(tok.eos, Some(269), "first of eos_token_id [269, 270]");
    let rows: Vec<serde_json::Value> = serde_json::from_str(
        &fs_err::read_to_string(fixture("llama3").join("tokens.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> { serde_json::from_value(v.clone()).unwrap() };
    for row in &rows {
        let text = row["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&row["ids"]),
            "{text:?}"
        );
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&row["ids_no_special"]),
            "{text:?}"
        );
    }
    // A prompt/completion row: BOS + prompt + completion (no second BOS) + eos.
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("d.jsonl");
    fs_err::write(
        &data,
        "{\"prompt\": \"the cat sat on the mat\", \"completion\": \" the mat\"}\n",
    )
    .unwrap();
    let ds = load_jsonl(&data, &tok, 32, config.vocab_size).unwrap();
    let mut want = ids(&rows[0]["ids"]);
    want.extend(ids(&rows[1]["ids_no_special"]));
    want.push(269);
    assert_eq!(ds.examples[0].tokens, want);
    assert_eq!(want.iter().filter(|&&t| t == 268).count(), 1);
}

#[test]
fn lora_trains_on_each_family() {
    for (family, targets, n_modules) in [
        ("llama3", "\"all-linear\"", 7),
        ("qwen2", "[\"q_proj\", \"k_proj\", \"v_proj\"]", 3),
        (
            "mistral",
            "[\"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"]",
            4,
        ),
        ("qwen3", "[\"all-linear\"]", 7),
    ] {
        let work = tempfile::tempdir().unwrap();
        let (out, losses) = train_adapter(family, targets, work.path());
        let first = losses[0];
        let last = *losses.last().unwrap();
        assert!(last < first, "{family}: loss {first} -> {last}");
        let tensors = load_safetensors(&out.join(ADAPTER_WEIGHTS_FILE), &Device::Cpu).unwrap();
        assert_eq!(tensors.len(), 2 * 2 * n_modules, "{family}");
        let cfg: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(out.join(ADAPTER_CONFIG_FILE)).unwrap())
                .unwrap();
        assert_eq!(
            cfg["target_modules"].as_array().unwrap().len(),
            n_modules,
            "{family}: {cfg}"
        );
        // The adapter reloads onto its base and changes the logits.
        let mut model = Llama::load(&fixture(family).join("model"), &Device::Cpu).unwrap();
        let base_logits = model.forward(&input_ids(family)).unwrap();
        model.load_adapter(&out).unwrap();
        let adapted = model.forward(&input_ids(family)).unwrap();
        assert!(max_diff(&adapted, &base_logits) > 1e-2, "{family}");
    }
}

/// A shard tensor the index does not list is unused too, reported with the shard's path.
#[test]
fn sharded_checkpoint_with_an_unindexed_tensor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("sharded");
    fs_err::create_dir_all(&base).unwrap();
    let src = fixture("qwen2").join("model");
    fs_err::copy(src.join("config.json"), base.join("config.json")).unwrap();
    let mut w = load_safetensors(&src.join("model.safetensors"), &Device::Cpu).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = w
        .keys()
        .map(|k| (k.clone(), "model-00001-of-00001.safetensors".into()))
        .collect();
    w.insert(
        "model.layers.0.self_attn.o_proj.bias".into(),
        Tensor::zeros(64, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let shard = base.join("model-00001-of-00001.safetensors");
    trainer::files::save_safetensors(&shard, &w).unwrap();
    fs_err::write(
        base.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let err = Llama::load(&base, &Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("`model.layers.0.self_attn.o_proj.bias`")
            && err.contains(&shard.display().to_string()),
        "{err}"
    );
}
