//! Steps per second of the trainer core on the `shared/DESIGN.md` benchmark shape.
//!
//! ```text
//! cargo run --release -p trainprov-trainer --example bench_train -- [STEPS] [VOCAB]
//! ```
//!
//! Builds a random Llama checkpoint in a temporary directory (2 layers, hidden 128, 4 heads,
//! MLP 512, vocabulary VOCAB = 256 by default, word-level tokenizer), a JSONL file of 256
//! random 80-word texts, and trains LoRA r = 8 on q_proj and v_proj with seq_len 64 and
//! batch 8 for STEPS = 100 steps through [`trainer::train`]. Prints steps/s and tokens/s of
//! the training loop (loading excluded) and the thread count.

use std::collections::BTreeMap;

use candle_core::Device;
use trainer::config::{LlamaConfig, TrainConfig};
use trainer::model::random_weights;
use trainer::rng::Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let vocab: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);

    let dir = tempfile::tempdir()?;
    let base = dir.path().join("base");
    fs_err::create_dir_all(&base)?;
    let mut config = LlamaConfig::new(128, 512, 2, 4, 4, vocab);
    config.eos_token_id = Some(serde_json::json!(1));
    fs_err::write(base.join("config.json"), serde_json::to_string(&config)?)?;
    let weights = random_weights(&config, &mut Rng::new(0), &Device::Cpu)?;
    trainer::files::save_safetensors(&base.join("model.safetensors"), &weights)?;

    let mut words = serde_json::Map::new();
    words.insert("<unk>".into(), 0.into());
    words.insert("</s>".into(), 1.into());
    for i in 2..vocab {
        words.insert(format!("w{i}"), i.into());
    }
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": words, "unk_token": "<unk>"}
    });
    fs_err::write(base.join("tokenizer.json"), tokenizer.to_string())?;

    let mut rng = Rng::new(1);
    let mut data = String::new();
    for _ in 0..256 {
        let text: Vec<String> = (0..80)
            .map(|_| format!("w{}", 2 + rng.below(vocab as u64 - 2)))
            .collect();
        data.push_str(&serde_json::json!({ "text": text.join(" ") }).to_string());
        data.push('\n');
    }
    fs_err::write(dir.path().join("train.jsonl"), data)?;

    let toml = format!(
        "[model]\nbase = \"base\"\n[data]\npath = \"train.jsonl\"\n[lora]\nr = 8\nalpha = 16\n\
         target_modules = [\"q_proj\", \"v_proj\"]\n[train]\nmax_steps = {steps}\n\
         batch_size = 8\nseq_len = 64\ndigest_every = {steps}\n"
    );
    let config = TrainConfig::parse(&toml, &dir.path().join("bench.toml"))?;
    let mut first_step = None;
    let outcome = trainer::train(&config, dir.path(), &mut |s| {
        if s.step == 1 {
            first_step = Some(s.elapsed);
        }
    })?;
    let secs = outcome.train_seconds;
    let mut summary = BTreeMap::new();
    summary.insert("steps", outcome.steps as f64);
    summary.insert("seconds", secs);
    summary.insert("steps_per_s", outcome.steps as f64 / secs);
    summary.insert("tokens_per_s", (outcome.steps * 8 * 64) as f64 / secs);
    summary.insert("threads", outcome.threads as f64);
    summary.insert(
        "first_step_s",
        first_step.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN),
    );
    println!("{}", serde_json::to_string(&summary)?);
    eprintln!(
        "{} steps in {secs:.2}s: {:.1} steps/s, {:.0} tokens/s, {} threads, ISA {}, loss {:.3}",
        outcome.steps,
        outcome.steps as f64 / secs,
        (outcome.steps * 8 * 64) as f64 / secs,
        outcome.threads,
        outcome.isa.level,
        outcome.final_loss
    );
    Ok(())
}
