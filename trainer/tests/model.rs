//! The model and LoRA on tiny random checkpoints built in the test (weights from the trainer's
//! generator): finite outputs, exact no-op of a fresh adapter, gradients checked against finite
//! differences, every trainable tensor reached by backpropagation, PEFT file layout.

mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use trainer::lora::{save_adapter, LoraSpec, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use trainer::model::{masked_nll_sum, Llama, LINEAR_MODULES};
use trainer::rng::Rng;

fn tiny_model(seed: u64) -> Llama {
    let config = common::tiny_config();
    Llama::from_tensors(config.clone(), common::weights(&config, seed), &Device::Cpu)
        .expect("model")
}

/// A batch of random ids `[2, 8]`, targets shifted by one, every target but the last counted.
fn batch(seed: u64) -> (Tensor, Tensor, Tensor, usize) {
    let (b, t) = (2, 8);
    let mut rng = Rng::new(seed);
    let ids: Vec<u32> = (0..b * t)
        .map(|_| rng.below(common::VOCAB as u64) as u32)
        .collect();
    let mut targets = vec![0u32; b * t];
    let mut weights = vec![0f32; b * t];
    for r in 0..b {
        for p in 0..t - 1 {
            targets[r * t + p] = ids[r * t + p + 1];
            weights[r * t + p] = 1.0;
        }
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(ids, (b, t), &dev).expect("ids"),
        Tensor::from_vec(targets, (b, t), &dev).expect("targets"),
        Tensor::from_vec(weights, (b, t), &dev).expect("weights"),
        b * (t - 1),
    )
}

fn mean_loss(model: &Llama, seed: u64) -> Tensor {
    let (ids, targets, weights, n) = batch(seed);
    let logits = model.forward(&ids).expect("forward");
    (masked_nll_sum(&logits, &targets, &weights).expect("nll") / n as f64).expect("mean")
}

fn all_modules_spec(r: usize) -> LoraSpec {
    LoraSpec::new(r, 2.0 * r as f64, 0.1, LINEAR_MODULES).expect("spec")
}

/// Sets every LoRA B to random values (a fresh B is zero, which zeroes A's gradient).
fn randomize_b(model: &Llama, seed: u64) {
    let mut rng = Rng::new(seed);
    for (name, var) in model.trainable() {
        if name.contains("lora_B") {
            let n = var.as_tensor().elem_count();
            let v = Tensor::from_vec(
                rng.uniform_vec(n, -0.3, 0.3),
                var.as_tensor().dims(),
                &Device::Cpu,
            )
            .expect("values");
            var.set(&v).expect("set");
        }
    }
}

#[test]
fn forward_and_loss_are_finite() {
    let model = tiny_model(1);
    let (ids, ..) = batch(2);
    let logits = model.forward(&ids).expect("forward");
    assert_eq!(logits.dims(), &[2, 8, common::VOCAB]);
    let values: Vec<f32> = logits.flatten_all().expect("flat").to_vec1().expect("vec");
    assert!(values.iter().all(|v| v.is_finite()));
    let loss = mean_loss(&model, 2).to_scalar::<f32>().expect("scalar");
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    // Tied embeddings take the lm_head from the embedding matrix.
    let mut config = common::tiny_config();
    config.tie_word_embeddings = true;
    let tied = Llama::from_tensors(config.clone(), common::weights(&config, 1), &Device::Cpu)
        .expect("tied model");
    let l = tied.forward(&ids).expect("forward tied");
    assert_eq!(l.dims(), &[2, 8, common::VOCAB]);
}

#[test]
fn fresh_adapter_leaves_logits_bit_identical() {
    let base = tiny_model(3);
    let mut adapted = tiny_model(3);
    adapted
        .attach_lora(&all_modules_spec(4), &mut Rng::new(7))
        .expect("attach");
    let (ids, ..) = batch(4);
    let want: Vec<Vec<Vec<f32>>> = base.forward(&ids).expect("base").to_vec3().expect("v");
    let got: Vec<Vec<Vec<f32>>> = adapted.forward(&ids).expect("lora").to_vec3().expect("v");
    assert_eq!(want, got);
    // Dropout only touches the adapter path, so training mode is exact too.
    let mut drop_rng = Rng::new(8);
    let train: Vec<Vec<Vec<f32>>> = adapted
        .forward_train(&ids, Some(&mut drop_rng))
        .expect("train forward")
        .to_vec3()
        .expect("v");
    assert_eq!(want, train);
}

/// Central differences `(L(θ+h) − L(θ−h)) / 2h` in f32 against candle's backward, at the
/// element of largest analytic gradient of several A and B matrices.
#[test]
fn lora_gradients_match_finite_differences() {
    let mut model = tiny_model(5);
    let spec = LoraSpec::new(4, 8.0, 0.0, LINEAR_MODULES).expect("spec");
    model.attach_lora(&spec, &mut Rng::new(6)).expect("attach");
    randomize_b(&model, 9);
    let loss = mean_loss(&model, 10);
    let grads = loss.backward().expect("backward");
    let checked = [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight",
        "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight",
        "base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight",
        "base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight",
        "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight",
        "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
    ];
    let h = 1e-2f32;
    for name in checked {
        let var: &Var = model.trainable().get(name).expect(name);
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .expect("gradient")
            .flatten_all()
            .expect("flat")
            .to_vec1()
            .expect("vec");
        let (idx, &analytic) = g
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .expect("non-empty");
        assert!(
            analytic.abs() > 1e-4,
            "{name}: gradient too small to check ({analytic})"
        );
        let shape = var.as_tensor().dims().to_vec();
        let orig: Vec<f32> = var
            .as_tensor()
            .flatten_all()
            .expect("f")
            .to_vec1()
            .expect("v");
        let at = |delta: f32| -> f32 {
            let mut v = orig.clone();
            v[idx] += delta;
            var.set(&Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).expect("t"))
                .expect("set");
            mean_loss(&model, 10).to_scalar::<f32>().expect("loss")
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        var.set(&Tensor::from_vec(orig.clone(), shape.as_slice(), &Device::Cpu).expect("t"))
            .expect("restore");
        let tol = 5e-4 + 5e-3 * analytic.abs();
        eprintln!("{name}[{idx}]: finite difference {numeric:.6} backward {analytic:.6}");
        assert!(
            (numeric - analytic).abs() <= tol,
            "{name}[{idx}]: finite difference {numeric} vs backward {analytic}"
        );
    }
}

fn assert_every_trainable_has_gradient(model: &Llama) {
    let grads = mean_loss(model, 11).backward().expect("backward");
    assert!(!model.trainable().is_empty());
    for (name, var) in model.trainable() {
        let g = grads.get(var.as_tensor());
        assert!(g.is_some(), "{name} received no gradient");
    }
}

#[test]
fn every_trainable_tensor_receives_a_gradient() {
    let mut lora = tiny_model(12);
    lora.attach_lora(&all_modules_spec(2), &mut Rng::new(1))
        .expect("attach");
    assert_eq!(lora.trainable().len(), 2 * 7 * 2);
    assert_every_trainable_has_gradient(&lora);

    let mut full = tiny_model(12);
    full.make_all_trainable().expect("full");
    assert_eq!(full.trainable().len(), 3 + 2 * (2 + 7));
    assert_every_trainable_has_gradient(&full);

    let mut config = common::tiny_config();
    config.tie_word_embeddings = true;
    let mut tied = Llama::from_tensors(config.clone(), common::weights(&config, 2), &Device::Cpu)
        .expect("tied");
    tied.make_all_trainable().expect("full");
    assert!(!tied.trainable().contains_key("lm_head.weight"));
    assert_every_trainable_has_gradient(&tied);
}

#[test]
fn adapter_round_trips_with_peft_names_and_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = LoraSpec::new(4, 16.0, 0.05, &["v_proj", "q_proj", "down_proj"]).expect("spec");
    let mut model = tiny_model(20);
    model.attach_lora(&spec, &mut Rng::new(21)).expect("attach");
    randomize_b(&model, 22);
    let files = save_adapter(&model, dir.path(), "tiny-base").expect("save");
    assert_eq!(files.len(), 2);

    let weights = dir.path().join(ADAPTER_WEIGHTS_FILE);
    let header = trainer::safe_load::validate_safetensors(&weights).expect("valid header");
    let expected_meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    assert_eq!(header.metadata, Some(expected_meta));
    let names: Vec<String> = header.tensors.iter().map(|t| t.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names.len(), 2 * 3 * 2);
    assert!(names
        .contains(&"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".to_string()));
    assert!(
        names.contains(&"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight".to_string())
    );
    assert!(names
        .iter()
        .all(|n| n.starts_with("base_model.model.model.layers.")));
    assert!(header.tensors.iter().all(|t| t.dtype == "F32"));
    // Offsets ascend in name order: the tensors are stored sorted by name.
    let by_offset: Vec<String> = {
        let mut t = header.tensors.clone();
        t.sort_by_key(|t| t.offsets.0);
        t.into_iter().map(|t| t.name).collect()
    };
    assert_eq!(by_offset, sorted);

    let config: serde_json::Value = serde_json::from_str(
        &fs_err::read_to_string(dir.path().join(ADAPTER_CONFIG_FILE)).expect("config"),
    )
    .expect("json");
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["task_type"], "CAUSAL_LM");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 16);
    assert_eq!(config["lora_dropout"], 0.05);
    assert_eq!(config["bias"], "none");
    assert_eq!(config["base_model_name_or_path"], "tiny-base");
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["down_proj", "q_proj", "v_proj"])
    );

    let mut loaded = tiny_model(20);
    let got = loaded.load_adapter(dir.path()).expect("load adapter");
    assert_eq!(got, spec);
    let (ids, ..) = batch(23);
    let a: Vec<Vec<Vec<f32>>> = model.forward(&ids).expect("f").to_vec3().expect("v");
    let b: Vec<Vec<Vec<f32>>> = loaded.forward(&ids).expect("f").to_vec3().expect("v");
    assert_eq!(a, b);
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let config = common::tiny_config();
    let mut w = common::weights(&config, 1);
    w.remove("model.layers.1.mlp.up_proj.weight");
    let err = Llama::from_tensors(config.clone(), w, &Device::Cpu)
        .expect_err("missing")
        .to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");

    let mut w = common::weights(&config, 1);
    w.insert(
        "model.norm.weight".into(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).expect("t"),
    );
    let err = Llama::from_tensors(config, w, &Device::Cpu)
        .expect_err("shape")
        .to_string();
    assert!(
        err.contains("model.norm.weight") && err.contains("[3]"),
        "{err}"
    );
}

#[test]
fn loads_single_file_and_sharded_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::tiny_config();
    let single = common::write_base(&dir.path().join("single"), &config, 4);
    let a = Llama::load(&single, &Device::Cpu).expect("single");

    // Shard the same weights in two files with an index.
    let sharded = dir.path().join("sharded");
    fs_err::create_dir_all(&sharded).expect("mkdir");
    fs_err::copy(single.join("config.json"), sharded.join("config.json")).expect("copy");
    let w = common::weights(&config, 4);
    let (mut first, mut second) = (BTreeMap::new(), BTreeMap::new());
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in w.into_iter().enumerate() {
        let shard = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(k.clone(), shard.into());
        if i % 2 == 0 {
            first.insert(k, v);
        } else {
            second.insert(k, v);
        }
    }
    trainer::files::save_safetensors(&sharded.join("model-00001-of-00002.safetensors"), &first)
        .expect("shard 1");
    trainer::files::save_safetensors(&sharded.join("model-00002-of-00002.safetensors"), &second)
        .expect("shard 2");
    fs_err::write(
        sharded.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .expect("index");
    let b = Llama::load(&sharded, &Device::Cpu).expect("sharded");
    let (ids, ..) = batch(5);
    let la: Vec<Vec<Vec<f32>>> = a.forward(&ids).expect("f").to_vec3().expect("v");
    let lb: Vec<Vec<Vec<f32>>> = b.forward(&ids).expect("f").to_vec3().expect("v");
    assert_eq!(la, lb);

    // An index pointing outside the directory is refused.
    fs_err::write(
        sharded.join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.norm.weight": "../single/model.safetensors"}}"#,
    )
    .expect("index");
    let err = Llama::load(&sharded, &Device::Cpu)
        .expect_err("escape")
        .to_string();
    assert!(err.contains("plain file name"), "{err}");

    // A pickle-only directory is refused by name.
    let pickle = dir.path().join("pickle");
    fs_err::create_dir_all(&pickle).expect("mkdir");
    fs_err::copy(single.join("config.json"), pickle.join("config.json")).expect("copy");
    fs_err::write(pickle.join("pytorch_model.bin"), b"\x80\x02}q\x00.").expect("bin");
    let err = Llama::load(&pickle, &Device::Cpu)
        .expect_err("pickle")
        .to_string();
    assert!(err.contains("pytorch_model.bin"), "{err}");
}
