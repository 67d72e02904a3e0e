//! End-to-end training on tiny checkpoints written by the test: repeatability (in-process and
//! across `RAYON_NUM_THREADS`), falling loss, full training, continuing from an adapter, and
//! errors that name their file, line or field.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use trainer::config::TrainConfig;
use trainer::lora::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use trainer::train::METRICS_FILE;
use trainer::{train, StepReport, TrainOutcome};

/// A workspace: `base/` (random tiny model), `train.jsonl`, and a config writer.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(config: &trainer::LlamaConfig, examples: usize, len: usize) -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        common::write_base(&dir.path().join("base"), config, 1);
        fs_err::write(
            dir.path().join("train.jsonl"),
            common::synthetic_jsonl(examples, len),
        )
        .expect("data");
        Workspace { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name.toml` and parses it.
    fn config(&self, name: &str, out: &str, lora: &str, train: &str) -> TrainConfig {
        let text = common::train_toml("base", "train.jsonl", out, lora, train);
        let path = self.path().join(format!("{name}.toml"));
        fs_err::write(&path, text).expect("toml");
        TrainConfig::from_file(&path).expect("valid config")
    }

    fn run(&self, config: &TrainConfig) -> (TrainOutcome, Vec<StepReport>) {
        let mut steps = Vec::new();
        let outcome = train(config, self.path(), &mut |s: &StepReport| {
            steps.push(s.clone())
        })
        .expect("training succeeds");
        (outcome, steps)
    }
}

fn read(p: &Path) -> Vec<u8> {
    fs_err::read(p).expect("read output")
}

const LORA: &str =
    "r = 4\nalpha = 8\ndropout = 0.1\ntarget_modules = [\"q_proj\", \"v_proj\", \"down_proj\"]";

#[test]
fn training_twice_gives_identical_files() {
    let ws = Workspace::new(&common::tiny_config(), 12, 10);
    let train = "seed = 3\nmax_steps = 6\nbatch_size = 4\nseq_len = 16\ngrad_accum = 2\nlr = 1e-2\nwarmup_steps = 2\ndigest_every = 2";
    let a = ws.config("a", "out-a", LORA, train);
    let b = ws.config("b", "out-b", LORA, train);
    let (oa, steps) = ws.run(&a);
    let (ob, _) = ws.run(&b);
    assert_eq!(steps.len(), 6);
    assert_eq!(oa.steps, 6);
    for name in [ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE, METRICS_FILE] {
        let fa = read(&ws.path().join("out-a").join(name));
        let fb = read(&ws.path().join("out-b").join(name));
        assert!(fa == fb, "{name} differs between two identical runs");
    }
    assert_eq!(oa.final_weights_blake3, ob.final_weights_blake3);
    assert_eq!(oa.data_order_digest, ob.data_order_digest);
    assert_eq!(oa.rng_algorithm, "xoshiro256**/splitmix64");

    // metrics.jsonl: digest rows at 0, 2, 4, 6 and one loss row per step, keys in order.
    let metrics = String::from_utf8(read(&oa.metrics_file)).expect("utf-8");
    let lines: Vec<&str> = metrics.lines().collect();
    assert_eq!(lines.len(), 4 + 6, "{metrics}");
    assert!(
        lines[0].starts_with("{\"step\":0,\"weights_blake3\":\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("{\"step\":1,\"loss\":"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains(",\"lr\":0.0,\"grad_norm\":"),
        "{}",
        lines[1]
    );
    assert!(lines
        .last()
        .expect("rows")
        .contains(&oa.final_weights_blake3));

    // A different seed changes the result.
    let c = ws.config("c", "out-c", LORA, &train.replace("seed = 3", "seed = 4"));
    let (oc, _) = ws.run(&c);
    assert_ne!(oc.final_weights_blake3, oa.final_weights_blake3);
    assert_ne!(oc.data_order_digest, oa.data_order_digest);
}

/// Run by [`thread_count_does_not_change_the_bytes`] in a child process; does nothing unless
/// `TRAINPROV_TEST_CHILD_DIR` is set.
#[test]
fn determinism_child() {
    let Some(dir) = std::env::var_os("TRAINPROV_TEST_CHILD_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let config = TrainConfig::from_file(&dir.join("train.toml")).expect("config");
    let outcome = train(&config, &dir, &mut |_| {}).expect("train");
    fs_err::write(dir.join("threads.txt"), outcome.threads.to_string()).expect("threads");
}

/// The DESIGN.md shape (width 128, seq 64, batch 8) is large enough for candle's matmul and
/// element-wise kernels to split work across threads.
#[test]
fn thread_count_does_not_change_the_bytes() {
    let ws = Workspace::new(&common::design_config(), 16, 40);
    let exe = std::env::current_exe().expect("test binary");
    let mut adapters = Vec::new();
    for threads in ["1", "2"] {
        let dir = ws.path().join(format!("threads-{threads}"));
        fs_err::create_dir_all(&dir).expect("mkdir");
        let toml = common::train_toml(
            "../base",
            "../train.jsonl",
            "out",
            "r = 8\nalpha = 16\ntarget_modules = [\"q_proj\", \"v_proj\"]",
            "seed = 1\nmax_steps = 3\nbatch_size = 8\nseq_len = 64\nlr = 1e-3",
        );
        fs_err::write(dir.join("train.toml"), toml).expect("toml");
        let child = Command::new(&exe)
            .args(["determinism_child", "--exact", "--test-threads=1"])
            .env("TRAINPROV_TEST_CHILD_DIR", &dir)
            .env("RAYON_NUM_THREADS", threads)
            .env_remove("CANDLE_NUM_THREADS")
            .output()
            .expect("spawn child");
        assert!(
            child.status.success(),
            "child with {threads} threads failed:\n{}{}",
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
        let seen = fs_err::read_to_string(dir.join("threads.txt")).expect("threads.txt");
        assert_eq!(seen, threads, "RAYON_NUM_THREADS did not reach candle");
        adapters.push((
            read(&dir.join("out").join(ADAPTER_WEIGHTS_FILE)),
            read(&dir.join("out").join(METRICS_FILE)),
        ));
    }
    assert!(
        adapters[0].0 == adapters[1].0,
        "adapter bytes depend on the thread count"
    );
    assert!(
        adapters[0].1 == adapters[1].1,
        "metrics depend on the thread count"
    );
}

#[test]
fn loss_falls_on_a_synthetic_task() {
    let ws = Workspace::new(&common::tiny_config(), 32, 12);
    let lora = "r = 8\nalpha = 16\ndropout = 0.0\ntarget_modules = [\"q_proj\", \"v_proj\", \"o_proj\", \"up_proj\", \"down_proj\"]";
    let train = "seed = 0\nmax_steps = 30\nbatch_size = 8\nseq_len = 16\nlr = 3e-2";
    let config = ws.config("fall", "out", lora, train);
    let (outcome, steps) = ws.run(&config);
    let mean = |s: &[StepReport]| s.iter().map(|r| r.loss).sum::<f32>() / s.len() as f32;
    let first = mean(&steps[..5]);
    let last = mean(&steps[25..]);
    eprintln!("loss: first 5 steps {first:.4}, last 5 steps {last:.4}");
    assert!(
        last < 0.8 * first,
        "loss did not fall enough: first 5 steps {first}, last 5 {last}"
    );
    assert!(outcome.final_loss.is_finite());
    // Evaluation with the same masking agrees that the adapter helps.
    let base = ws.path().join("base");
    let data = ws.path().join("train.jsonl");
    let before = trainer::mean_loss(&base, None, &data, 16, 8, &Device::Cpu).expect("eval base");
    let after = trainer::mean_loss(
        &base,
        Some(&ws.path().join("out")),
        &data,
        16,
        8,
        &Device::Cpu,
    )
    .expect("eval adapter");
    assert_eq!(before.examples, 32);
    assert_eq!(before.tokens, after.tokens);
    eprintln!("eval: base {before:?}, adapter {after:?}");
    assert!(
        after.mean_loss < 0.8 * before.mean_loss,
        "{before:?} vs {after:?}"
    );
}

#[test]
fn full_training_from_random_init_writes_a_loadable_model() {
    let ws = Workspace::new(&common::tiny_config(), 8, 10);
    let train = "mode = \"full\"\nmax_steps = 4\nbatch_size = 4\nseq_len = 12\nlr = 1e-2";
    let text = format!(
        "{}\n",
        common::train_toml("base", "train.jsonl", "pretrained", "", train).replace(
            "[model]\nbase = \"base\"",
            "[model]\nbase = \"base\"\ninit = \"random\""
        )
    );
    let path = ws.path().join("full.toml");
    fs_err::write(&path, text).expect("toml");
    let config = TrainConfig::from_file(&path).expect("config");
    let (outcome, _) = ws.run(&config);
    assert_eq!(outcome.mode, "full");
    let out = ws.path().join("pretrained");
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let header =
        trainer::safe_load::validate_safetensors(&out.join("model.safetensors")).expect("valid");
    assert!(header
        .tensors
        .iter()
        .any(|t| t.name == "model.layers.1.mlp.down_proj.weight"));
    let report = trainer::mean_loss(
        &out,
        None,
        &ws.path().join("train.jsonl"),
        12,
        4,
        &Device::Cpu,
    )
    .expect("eval trained model");
    assert!(report.mean_loss.is_finite());
}

#[test]
fn training_continues_from_an_adapter() {
    let ws = Workspace::new(&common::tiny_config(), 8, 10);
    let train = "max_steps = 2\nbatch_size = 4\nseq_len = 12\nlr = 1e-2";
    let first = ws.config("first", "first", LORA, train);
    ws.run(&first);
    let text = common::train_toml("base", "train.jsonl", "second", LORA, train).replace(
        "[model]\nbase = \"base\"",
        "[model]\nbase = \"base\"\nadapter = \"first\"",
    );
    let path = ws.path().join("second.toml");
    fs_err::write(&path, &text).expect("toml");
    let second = TrainConfig::from_file(&path).expect("config");
    let (outcome, _) = ws.run(&second);
    assert_eq!(outcome.steps, 2);
    // A rank that differs from the adapter's is refused, naming the field.
    fs_err::write(&path, text.replace("r = 4", "r = 2")).expect("toml");
    let bad = TrainConfig::from_file(&path).expect("config");
    let err = trainer::train(&bad, ws.path(), &mut |_| {})
        .expect_err("rank mismatch")
        .to_string();
    assert!(err.contains("lora.r"), "{err}");
}

#[test]
fn bad_data_line_is_named() {
    let ws = Workspace::new(&common::tiny_config(), 3, 6);
    let mut data = common::synthetic_jsonl(3, 6);
    data.push_str("{\"prompt\": \"a b\"}\n");
    fs_err::write(ws.path().join("train.jsonl"), data).expect("data");
    let config = ws.config("bad", "out", LORA, "max_steps = 1");
    let err = train(&config, ws.path(), &mut |_| {})
        .expect_err("bad line")
        .to_string();
    assert!(err.contains("train.jsonl:4"), "{err}");
}

#[test]
fn unknown_toml_field_is_named_with_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("train.toml");
    fs_err::write(
        &path,
        "[model]\nbase = \"b\"\n[data]\npath = \"d.jsonl\"\n[lora]\nrank = 8\n",
    )
    .expect("toml");
    let err = TrainConfig::from_file(&path)
        .expect_err("unknown field")
        .to_string();
    assert!(err.contains("rank"), "{err}");
    assert!(err.contains("train.toml"), "{err}");
}
