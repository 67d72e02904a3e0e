//! Logits of our Llama match Hugging Face `transformers`' `LlamaForCausalLM`.
//!
//! The fixture in `tests/fixtures/` (a tiny random Llama with grouped-query attention, its input
//! ids and the logits `transformers` 4.38.2 computed for them in float32) is made by
//! `tests/fixtures/make_tiny_llama.py`; its README names the versions and how to regenerate it.
//! This test needs no Python. `tests/fixtures/check_tiny_llama.py` shows that each usual port
//! mistake (RoPE layout, GQA head mapping, RMSNorm eps or weight, causal mask, attention scale,
//! SwiGLU order, tied head) moves these logits by more than 1, far above the tolerance.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use candle_core::{Device, Tensor, D};
use trainer::model::Llama;
use trainer::safe_load::load_safetensors;

/// Max absolute difference allowed, from the trainer issue: float32 on both sides, so only the
/// order of additions differs (observed differences are around 1e-6).
const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn input_ids(device: &Device) -> Tensor {
    let text = fs_err::read_to_string(fixtures().join("input_ids.json")).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_str(&text).unwrap();
    let (batch, seq) = (ids.len(), ids[0].len());
    let flat: Vec<u32> = ids.into_iter().flatten().collect();
    Tensor::from_vec(flat, (batch, seq), device).unwrap()
}

fn expected_logits(device: &Device) -> Tensor {
    let path = fixtures().join("expected_logits.safetensors");
    let mut tensors = load_safetensors(&path, device).unwrap();
    tensors.remove("logits").unwrap()
}

/// Max |a - b| per (sequence, position): where a mismatch starts tells what differs (position 0
/// only sees itself, so a difference there is not RoPE or the mask).
fn diff_table(a: &Tensor, b: &Tensor) -> Vec<Vec<f32>> {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

#[test]
fn tiny_llama_logits_match_transformers() {
    let device = Device::Cpu;
    let model = Llama::load(&fixtures().join("tiny-llama-hf"), &device).unwrap();
    let ids = input_ids(&device);
    let expected = expected_logits(&device);
    assert_eq!(expected.dims(), [2, 12, 128]);

    let logits = model.forward(&ids).unwrap();
    assert_eq!(logits.dims(), expected.dims());
    let table = diff_table(&logits, &expected);
    let max = table.iter().flatten().fold(0f32, |m, &d| m.max(d));
    println!("max |ours - transformers| = {max:e}");
    assert!(
        max < TOLERANCE,
        "logits differ from transformers by up to {max:e} (tolerance {TOLERANCE:e}); max per \
         position, one row per sequence:\n{}",
        table
            .iter()
            .map(|row| row
                .iter()
                .map(|d| format!("{d:.1e}"))
                .collect::<Vec<_>>()
                .join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn each_sequence_alone_gives_the_batched_logits() {
    let device = Device::Cpu;
    let model = Llama::load(&fixtures().join("tiny-llama-hf"), &device).unwrap();
    let ids = input_ids(&device);
    let batched = model.forward(&ids).unwrap();
    for row in 0..2 {
        let alone = model.forward(&ids.narrow(0, row, 1).unwrap()).unwrap();
        let from_batch = batched.narrow(0, row, 1).unwrap();
        let max = diff_table(&alone, &from_batch)
            .into_iter()
            .flatten()
            .fold(0f32, f32::max);
        assert!(max < TOLERANCE, "sequence {row}: {max:e}");
    }
}

#[test]
fn a_prefix_gives_the_same_logits() {
    // Causality: the first 5 positions cannot see the 7 after them.
    let device = Device::Cpu;
    let model = Llama::load(&fixtures().join("tiny-llama-hf"), &device).unwrap();
    let ids = input_ids(&device);
    let full = model.forward(&ids).unwrap().narrow(1, 0, 5).unwrap();
    let prefix = model.forward(&ids.narrow(1, 0, 5).unwrap()).unwrap();
    let max = diff_table(&full, &prefix)
        .into_iter()
        .flatten()
        .fold(0f32, f32::max);
    assert!(max < TOLERANCE, "{max:e}");
}
