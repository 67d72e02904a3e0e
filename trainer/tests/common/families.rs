//! The model-family fixtures of `tests/fixtures/families/` and LoRA training on them.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, D};
use trainer::config::TrainConfig;
use trainer::safe_load::load_safetensors;
use trainer::{train, StepReport};

/// float32 on both sides; only the order of additions differs.
pub const TOLERANCE: f32 = 1e-4;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name)
}

pub fn input_ids(name: &str) -> Tensor {
    let text = fs_err::read_to_string(fixture(name).join("input_ids.json")).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_str(&text).unwrap();
    let (batch, seq) = (ids.len(), ids[0].len());
    let flat: Vec<u32> = ids.into_iter().flatten().collect();
    Tensor::from_vec(flat, (batch, seq), &Device::Cpu).unwrap()
}

pub fn expected_logits(name: &str) -> Tensor {
    let path = fixture(name).join("expected_logits.safetensors");
    load_safetensors(&path, &Device::Cpu)
        .unwrap()
        .remove("logits")
        .unwrap()
}

pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The text the family tests train on (any byte-level tokenizer encodes it).
fn write_data(path: &Path) {
    let words = ["the", "cat", "sat", "on", "mat", "a", "hat", "at"];
    let mut rng = trainer::rng::Rng::new(5);
    let mut out = String::new();
    for i in 0..16 {
        let n = 4 + (i % 5);
        let s: Vec<&str> = (0..n)
            .map(|_| words[rng.below(words.len() as u64) as usize])
            .collect();
        let line = if i % 2 == 0 {
            serde_json::json!({"text": s.join(" ")})
        } else {
            let (p, c) = s.split_at(n / 2);
            serde_json::json!({"prompt": p.join(" "), "completion": format!(" {}", c.join(" "))})
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    fs_err::write(path, out).unwrap();
}

/// Trains a LoRA adapter on a fixture base; returns the output directory and the step losses.
pub fn train_adapter(family: &str, targets: &str, work: &Path) -> (PathBuf, Vec<f32>) {
    write_data(&work.join("train.jsonl"));
    let base = fixture(family).join("model");
    let toml = format!(
        "[model]\nbase = \"{}\"\nname = \"tiny-{family}\"\n[data]\npath = \"train.jsonl\"\n\
         [lora]\nr = 4\nalpha = 8\ndropout = 0.05\ntarget_modules = {targets}\n\
         [train]\nseed = 1\nmax_steps = 12\nbatch_size = 4\nseq_len = 24\nlr = 2e-2\n\
         [output]\ndir = \"out-{family}\"\n",
        base.display()
    );
    let cfg_path = work.join(format!("{family}.toml"));
    fs_err::write(&cfg_path, toml).unwrap();
    let config = TrainConfig::from_file(&cfg_path).unwrap();
    let mut losses = Vec::new();
    train(&config, work, &mut |s: &StepReport| losses.push(s.loss)).unwrap();
    (work.join(format!("out-{family}")), losses)
}
