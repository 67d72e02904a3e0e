//! Test helpers: tiny random Llama checkpoints on disk, a word-level tokenizer, synthetic data.
#![allow(dead_code)]

pub mod families;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use trainer::config::LlamaConfig;
use trainer::model::random_weights;
use trainer::rng::Rng;

/// The words of the test tokenizer; ids 0 and 1 are `<unk>` and `</s>`.
pub const WORDS: &[&str] = &[
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z",
];

/// Vocabulary size of the test models (2 special tokens + 26 words + 4 unused).
pub const VOCAB: usize = 32;

/// A tiny config with grouped-query attention (4 query heads, 2 key/value heads).
pub fn tiny_config() -> LlamaConfig {
    let mut c = LlamaConfig::new(16, 32, 2, 4, 2, VOCAB);
    c.eos_token_id = Some(serde_json::json!(1));
    c.max_position_embeddings = 128;
    c
}

/// The DESIGN.md benchmark shape: 2 layers, width 128, 4 heads.
pub fn design_config() -> LlamaConfig {
    let mut c = LlamaConfig::new(128, 256, 2, 4, 4, VOCAB);
    c.eos_token_id = Some(serde_json::json!(1));
    c.max_position_embeddings = 128;
    c
}

/// Random weights with a larger spread than `initializer_range` so outputs are not uniform.
pub fn weights(config: &LlamaConfig, seed: u64) -> BTreeMap<String, Tensor> {
    let mut c = config.clone();
    c.initializer_range = 0.2;
    random_weights(&c, &mut Rng::new(seed), &Device::Cpu).expect("random weights")
}

/// `tokenizer.json` of a whitespace word-level tokenizer over [`WORDS`].
pub fn tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), 0.into());
    vocab.insert("</s>".into(), 1.into());
    for (i, w) in WORDS.iter().enumerate() {
        vocab.insert((*w).into(), (i + 2).into());
    }
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

/// Writes a Hugging Face model directory (config.json, model.safetensors, tokenizer.json).
pub fn write_base(dir: &Path, config: &LlamaConfig, seed: u64) -> PathBuf {
    fs_err::create_dir_all(dir).expect("mkdir");
    fs_err::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).expect("config"),
    )
    .expect("config.json");
    trainer::files::save_safetensors(&dir.join("model.safetensors"), &weights(config, seed))
        .expect("model.safetensors");
    fs_err::write(dir.join("tokenizer.json"), tokenizer_json()).expect("tokenizer.json");
    dir.to_path_buf()
}

/// `n` examples of the alphabet-successor task: runs of consecutive letters, alternating the
/// prompt/completion and text forms.
pub fn synthetic_jsonl(n: usize, len: usize) -> String {
    let mut out = String::new();
    let mut rng = Rng::new(99);
    for i in 0..n {
        let start = rng.below(26) as usize;
        let words: Vec<&str> = (0..len).map(|k| WORDS[(start + k) % 26]).collect();
        let line = if i % 2 == 0 {
            let (p, c) = words.split_at(len / 2);
            serde_json::json!({"prompt": p.join(" "), "completion": c.join(" ")})
        } else {
            serde_json::json!({"text": words.join(" ")})
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// A training TOML with the given extra `[train]` lines.
pub fn train_toml(base: &str, data: &str, out: &str, lora: &str, train: &str) -> String {
    format!(
        "[model]\nbase = \"{base}\"\n[data]\npath = \"{data}\"\n[lora]\n{lora}\n[train]\n{train}\n\
         [output]\ndir = \"{out}\"\n"
    )
}
