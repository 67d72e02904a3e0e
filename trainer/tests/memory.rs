//! Issue 12, "Memory": what the model holds and what a forward pass keeps alive.
//!
//! * `eval` and `probe` with an adapter must not record a graph for a backward pass (the LoRA
//!   matrices are candle `Var`s, so without care every tensor after the first adapted layer
//!   would carry its inputs until the loss is read: 4x the memory of the base alone).
//! * A `bf16` (or `f16`) checkpoint stays in its dtype in memory and is converted to `f32` per
//!   use, with bit-identical results (the conversion is exact).

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use trainer::lora::LoraSpec;
use trainer::model::{masked_nll_sum, weights_in_memory, Llama, LINEAR_MODULES, WEIGHTS_FILE};
use trainer::rng::Rng;

fn ids() -> Tensor {
    let mut rng = Rng::new(5);
    let v: Vec<u32> = (0..2 * 8)
        .map(|_| rng.below(common::VOCAB as u64) as u32)
        .collect();
    Tensor::from_vec(v, (2, 8), &Device::Cpu).expect("ids")
}

fn adapted(seed: u64) -> Llama {
    let config = common::tiny_config();
    let mut model =
        Llama::from_tensors(config.clone(), common::weights(&config, seed), &Device::Cpu)
            .expect("model");
    let spec = LoraSpec::new(4, 8.0, 0.0, LINEAR_MODULES).expect("spec");
    model
        .attach_lora(&spec, &mut Rng::new(seed + 1))
        .expect("lora");
    // A fresh B is zero; give it values so the adapter changes the output.
    let mut rng = Rng::new(seed + 2);
    for (name, var) in model.trainable() {
        if name.contains("lora_B") {
            let n = var.as_tensor().elem_count();
            let t = Tensor::from_vec(rng.uniform_vec(n, -0.5, 0.5), var.shape(), &Device::Cpu)
                .expect("b");
            var.set(&t).expect("set");
        }
    }
    model
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values")
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Before the fix `trainer::eval` ran the forward pass with the adapter's `Var`s, so the logits
/// carried the whole graph (`track_op`). A frozen adapter gives the same bits without one.
#[test]
fn issue12_frozen_adapter_records_no_graph() {
    let mut model = adapted(1);
    let trainable = model.forward(&ids()).expect("forward");
    assert!(
        trainable.track_op(),
        "a trainable adapter must still record the graph (training needs it)"
    );
    model.freeze_adapter();
    assert!(
        model.trainable().is_empty(),
        "a frozen adapter has nothing trainable"
    );
    let frozen = model.forward(&ids()).expect("forward");
    assert!(
        !frozen.track_op(),
        "the inference forward pass recorded operations for a backward pass"
    );
    assert_eq!(bits(&trainable), bits(&frozen));
}

/// `trainer::eval::mean_loss` (what `trainprov eval --adapter` runs) freezes the adapter: its
/// loss is bit for bit the loss of the same adapter evaluated with the graph.
#[test]
fn issue12_eval_with_adapter_matches_trainable_forward() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = dir.path().join("base");
    common::write_base(&base, &common::tiny_config(), 3);
    let data = dir.path().join("data.jsonl");
    fs_err::write(&data, common::synthetic_jsonl(6, 7)).expect("data");
    let mut model = Llama::load(&base, &Device::Cpu).expect("load");
    let spec = LoraSpec::new(4, 8.0, 0.0, &["q_proj", "v_proj"]).expect("spec");
    model.attach_lora(&spec, &mut Rng::new(9)).expect("lora");
    let mut rng = Rng::new(10);
    for (name, var) in model.trainable() {
        if name.contains("lora_B") {
            let n = var.as_tensor().elem_count();
            let t = Tensor::from_vec(rng.uniform_vec(n, -0.5, 0.5), var.shape(), &Device::Cpu)
                .expect("b");
            var.set(&t).expect("set");
        }
    }
    let adapter = dir.path().join("adapter");
    trainer::lora::save_adapter(&model, &adapter, "base").expect("save");
    let tok = trainer::data::TextTokenizer::load(&base, model.config()).expect("tok");
    let dataset = trainer::data::load_jsonl(&data, &tok, 16, common::VOCAB).expect("dataset");
    let want = trainer::eval::evaluate(&model, &dataset, 2).expect("evaluate with graph");
    let got = trainer::eval::mean_loss(&base, Some(&adapter), &data, 16, 2, &Device::Cpu)
        .expect("eval adapter");
    let base_only =
        trainer::eval::mean_loss(&base, None, &data, 16, 2, &Device::Cpu).expect("eval base");
    assert_eq!(got.mean_loss.to_bits(), want.mean_loss.to_bits());
    assert_ne!(
        got.mean_loss, base_only.mean_loss,
        "the adapter changes the loss"
    );
}

/// `share_base` (the reference model of `probe`) shares the base's storage and drops the
/// adapter.
#[test]
fn issue12_share_base_has_no_adapter() {
    let config = common::tiny_config();
    let base =
        Llama::from_tensors(config.clone(), common::weights(&config, 1), &Device::Cpu).expect("b");
    let model = adapted(1);
    let shared = model.share_base();
    assert!(shared.lora_spec().is_none());
    assert!(shared.trainable().is_empty());
    assert!(
        model.lora_spec().is_some(),
        "the original keeps its adapter"
    );
    let a = bits(&base.forward(&ids()).expect("f"));
    let b = bits(&shared.forward(&ids()).expect("f"));
    assert_eq!(a, b);
}

/// Writes the tiny model's weights in `dtype` and returns the directory.
fn half_checkpoint(dir: &std::path::Path, dtype: DType) -> BTreeMap<String, Tensor> {
    let config = common::tiny_config();
    common::write_base(dir, &config, 4);
    let f32s = common::weights(&config, 4);
    let half: BTreeMap<String, Tensor> = f32s
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(dtype).expect("half")))
        .collect();
    let map: std::collections::HashMap<String, Tensor> = half.clone().into_iter().collect();
    candle_core::safetensors::save(&map, dir.join(WEIGHTS_FILE)).expect("save half");
    // The f32 values a load-time conversion would have produced.
    half.into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F32).expect("f32")))
        .collect()
}

/// A bf16 or f16 checkpoint keeps its matrices in that dtype (half the memory of `f32`), and
/// the logits, loss and LoRA gradients are bit for bit those of the upcast `f32` weights.
/// Before the fix every tensor was converted to `f32` at load.
#[test]
fn issue12_half_checkpoint_stays_half_with_identical_results() {
    for dtype in [DType::BF16, DType::F16] {
        let dir = tempfile::tempdir().expect("tmp");
        let upcast = half_checkpoint(dir.path(), dtype);
        let mut half = Llama::load(dir.path(), &Device::Cpu).expect("load half");
        let want = if dtype == DType::BF16 { "bf16" } else { "f16" };
        assert_eq!(weights_in_memory(&half), want);
        for (name, t) in half.base_tensors() {
            let expected = if t.rank() == 2 { dtype } else { DType::F32 };
            assert_eq!(t.dtype(), expected, "{name}");
        }
        let config = common::tiny_config();
        let mut full = Llama::from_tensors(config, upcast, &Device::Cpu).expect("f32 model");
        assert_eq!(weights_in_memory(&full), "f32");

        let spec = LoraSpec::new(4, 8.0, 0.0, LINEAR_MODULES).expect("spec");
        half.attach_lora(&spec, &mut Rng::new(2)).expect("lora");
        full.attach_lora(&spec, &mut Rng::new(2)).expect("lora");
        let (ids, targets) = (ids(), ids());
        let weights = Tensor::ones((2, 8), DType::F32, &Device::Cpu).expect("w");
        let lh = half.forward(&ids).expect("forward half");
        let lf = full.forward(&ids).expect("forward f32");
        assert_eq!(bits(&lh), bits(&lf), "{want}: logits differ");
        let gh = masked_nll_sum(&lh, &targets, &weights)
            .expect("nll")
            .backward()
            .expect("bwd");
        let gf = masked_nll_sum(&lf, &targets, &weights)
            .expect("nll")
            .backward()
            .expect("bwd");
        for ((name, vh), vf) in half.trainable().iter().zip(full.trainable().values()) {
            let a = gh.get(vh.as_tensor()).expect("grad half");
            let b = gf.get(vf.as_tensor()).expect("grad f32");
            assert_eq!(bits(a), bits(b), "{want}: gradient of {name} differs");
        }
    }
}

/// Full training needs `f32` variables: a half checkpoint's tensors are upcast when they
/// become trainable.
#[test]
fn issue12_full_mode_upcasts_half_weights() {
    let dir = tempfile::tempdir().expect("tmp");
    half_checkpoint(dir.path(), DType::BF16);
    let mut model = Llama::load(dir.path(), &Device::Cpu).expect("load");
    model.make_all_trainable().expect("trainable");
    assert_eq!(weights_in_memory(&model), "f32");
    for (name, var) in model.trainable() {
        assert_eq!(var.dtype(), DType::F32, "{name}");
    }
}
