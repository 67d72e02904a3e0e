//! Chat rows and Parquet files as training data, against the Python reference.
//!
//! `fixtures/chat/make_chat_fixtures.py` (transformers 4.38.2, TRL 0.8.6, `datasets`) wrote the
//! expected token ids and assistant-only loss masks (TRL's `DataCollatorForCompletionOnlyLM` on
//! Qwen2.5's published ChatML template), jinja2's renderings of five published templates, and
//! the same rows as JSONL and as Parquet.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use trainer::chat::{parse_messages, ChatTemplate};
use trainer::config::{LlamaConfig, TrainConfig};
use trainer::data::{load_jsonl, Dataset, TextTokenizer};
use trainer::lora::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use trainer::train;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&fs_err::read_to_string(p).expect("read")).expect("json")
}

/// The fixture tokenizer's vocabulary size and the id of `<|im_end|>`.
fn vocab_and_eos() -> (usize, u32) {
    let tok = read_json(&fixtures().join("tokenizer.json"));
    let vocab = tok["model"]["vocab"].as_object().expect("vocab").len();
    let eos = tok["added_tokens"]
        .as_array()
        .expect("added")
        .iter()
        .find(|t| t["content"] == "<|im_end|>")
        .expect("<|im_end|>")["id"]
        .as_u64()
        .expect("id") as u32;
    (vocab, eos)
}

fn model_config() -> LlamaConfig {
    let (vocab, eos) = vocab_and_eos();
    let mut c = LlamaConfig::new(16, 32, 1, 2, 1, vocab.next_multiple_of(32));
    c.eos_token_id = Some(serde_json::json!(eos));
    c.max_position_embeddings = 256;
    c
}

/// A model directory with the fixture tokenizer (and its chat template unless `template` is
/// false) and random weights.
fn write_model(dir: &Path, template: bool) -> PathBuf {
    let config = model_config();
    common::write_base(dir, &config, 5);
    fs_err::copy(
        fixtures().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .expect("copy");
    let mut tc = read_json(&fixtures().join("tokenizer_config.json"));
    if !template {
        tc.as_object_mut().expect("object").remove("chat_template");
    }
    fs_err::write(dir.join("tokenizer_config.json"), tc.to_string()).expect("write");
    dir.to_path_buf()
}

fn load(model: &Path, data: &Path, seq_len: usize) -> Result<Dataset, trainer::TrainerError> {
    let config = model_config();
    let tok = TextTokenizer::load(model, &config)?;
    load_jsonl(data, &tok, seq_len, config.vocab_size)
}

#[test]
fn assistant_only_tokens_and_labels_match_trl_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = write_model(&dir.path().join("base"), true);
    let expected = read_json(&fixtures().join("expected_tokens.json"));
    let rows: Vec<String> = fs_err::read_to_string(fixtures().join("conversations.jsonl"))
        .expect("rows")
        .lines()
        .map(str::to_string)
        .collect();
    let template = ChatTemplate::load(&model)
        .expect("loads")
        .expect("has a template");
    let cases = expected["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), rows.len());
    let mut truncated = 0;
    for (case, row) in cases.iter().zip(&rows) {
        let line = case["line"].as_u64().expect("line") as usize;
        let messages =
            parse_messages(&serde_json::from_str::<Value>(row).expect("row")["messages"])
                .expect("messages");
        assert_eq!(
            template.render(&messages, false).expect("renders"),
            case["text"].as_str().expect("text"),
            "rendered text of conversation {line}"
        );
        let data = dir.path().join(format!("c{line}.jsonl"));
        fs_err::write(&data, format!("{row}\n")).expect("write");
        let seq_len = case["max_length"].as_u64().map_or(4096, |n| n as usize);
        let ds = load(&model, &data, seq_len).expect("loads");
        let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).expect("ids");
        let mask: Vec<bool> = serde_json::from_value(case["loss_mask"].clone()).expect("mask");
        assert_eq!(
            ds.examples[0].tokens, ids,
            "token ids of conversation {line}"
        );
        assert_eq!(
            ds.examples[0].loss_mask, mask,
            "loss mask of conversation {line} ({:?})",
            case["loss_text"]
        );
        truncated += ds.truncated;
    }
    assert_eq!(truncated, 2, "two conversations are cut by max_length");
}

#[test]
fn published_templates_render_as_jinja2_does() {
    let renders = read_json(&fixtures().join("renders.json"));
    let mut templates = BTreeMap::new();
    for (name, t) in renders["templates"].as_object().expect("templates") {
        let mut specials = BTreeMap::new();
        for (k, v) in t["special_tokens"].as_object().expect("specials") {
            let value = match v {
                Value::String(s) => minijinja_value(s),
                Value::Array(list) => minijinja::Value::from(
                    list.iter()
                        .map(|s| minijinja_value(s.as_str().expect("string")))
                        .collect::<Vec<_>>(),
                ),
                other => panic!("unexpected special token {other}"),
            };
            specials.insert(k.clone(), value);
        }
        let source = t["chat_template"].as_str().expect("source").to_string();
        let compiled = ChatTemplate::new(source, specials, PathBuf::from(name)).expect("compiles");
        templates.insert(name.clone(), compiled);
    }
    let mut errors = 0;
    for r in renders["renders"].as_array().expect("renders") {
        let t = &templates[r["template"].as_str().expect("name")];
        let messages = parse_messages(&r["messages"]).expect("messages");
        let gen = r["add_generation_prompt"].as_bool().expect("bool");
        let got = t.render(&messages, gen);
        match (&r["text"], &r["error"]) {
            (Value::String(text), _) => {
                assert_eq!(got.as_deref(), Ok(text.as_str()), "{r}")
            }
            (_, Value::String(error)) => {
                errors += 1;
                assert_eq!(got, Err(format!("chat template failed: {error}")), "{r}");
            }
            _ => panic!("fixture entry without text or error: {r}"),
        }
    }
    assert!(errors > 0, "raise_exception is exercised");
}

fn minijinja_value(s: &str) -> minijinja::Value {
    minijinja::Value::from(s.to_string())
}

/// The examples of a dataset without line numbers (a directory of shards renumbers them).
fn token_rows(ds: &Dataset) -> Vec<(Vec<u32>, Vec<bool>)> {
    ds.examples
        .iter()
        .map(|e| (e.tokens.clone(), e.loss_mask.clone()))
        .collect()
}

#[test]
fn parquet_and_jsonl_give_identical_examples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = write_model(&dir.path().join("base"), true);
    let data = fixtures().join("data");
    for name in ["text", "prompt_completion", "messages"] {
        let jsonl = load(&model, &data.join(format!("{name}.jsonl")), 128).expect("jsonl");
        let parquet = load(&model, &data.join(format!("{name}.parquet")), 128).expect("parquet");
        assert!(jsonl.examples.len() >= 10, "{name}");
        assert_eq!(
            jsonl.examples, parquet.examples,
            "{name}: tokens, masks and rows"
        );
    }
    let jsonl = load(&model, &data.join("prompt_completion.jsonl"), 128).expect("jsonl");
    let large = load(&model, &data.join("prompt_completion_large.parquet"), 128)
        .expect("large_string columns in three row groups, with an extra id column");
    assert_eq!(jsonl.examples, large.examples);
    let jsonl = load(&model, &data.join("messages.jsonl"), 128).expect("jsonl");
    let shards = load(&model, &data.join("messages-shards"), 128).expect("shards");
    assert_eq!(
        token_rows(&jsonl),
        token_rows(&shards),
        "a directory of shards"
    );
}

#[test]
fn parquet_and_jsonl_train_identical_adapters() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_model(&dir.path().join("base"), true);
    let data = fixtures().join("data");
    let lora = "r = 4\nalpha = 8\ndropout = 0.1\ntarget_modules = [\"q_proj\", \"v_proj\"]";
    let steps = "seed = 3\nepochs = 2\nbatch_size = 4\nseq_len = 96\nlr = 0.01";
    let mut adapters = Vec::new();
    for (i, file) in ["messages.jsonl", "messages.parquet"].iter().enumerate() {
        let toml = common::train_toml(
            "base",
            &data.join(file).display().to_string(),
            &format!("out{i}"),
            lora,
            steps,
        );
        let path = dir.path().join(format!("t{i}.toml"));
        fs_err::write(&path, toml).expect("toml");
        let config = TrainConfig::from_file(&path).expect("config");
        train(&config, dir.path(), &mut |_| {}).expect("trains");
        let out = dir.path().join(format!("out{i}"));
        adapters.push((
            fs_err::read(out.join(ADAPTER_WEIGHTS_FILE)).expect("weights"),
            fs_err::read(out.join(ADAPTER_CONFIG_FILE)).expect("config"),
        ));
    }
    assert!(adapters[0].0.len() > 1000);
    assert_eq!(
        adapters[0], adapters[1],
        "the same rows as JSONL and as Parquet train the same adapter bytes"
    );
}

#[test]
fn chat_row_errors_name_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = write_model(&dir.path().join("base"), true);
    let data = dir.path().join("bad.jsonl");
    let good = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}"#;
    for (row, why) in [
        (
            r#"{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "ok"}]}"#,
            "message 0 has role \"tool\"; expected system, user or assistant",
        ),
        (
            r#"{"messages": [{"role": "user", "content": ["parts"]}]}"#,
            "message 0 has no \"content\" string",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "no answer"}]}"#,
            "no token to compute a loss on",
        ),
        (
            r#"{"messages": [], "text": "x"}"#,
            "expected either \"prompt\" and \"completion\", or \"text\"",
        ),
    ] {
        fs_err::write(&data, format!("{good}\n{row}\n")).expect("write");
        let e = load(&model, &data, 128).expect_err("refused").to_string();
        assert!(e.starts_with(&format!("{}:2: ", data.display())), "{e}");
        assert!(e.contains(why), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    // A template that raises on the row names the row and gives the template's message.
    let strict = dir.path().join("strict");
    write_model(&strict, true);
    let mut tc = read_json(&strict.join("tokenizer_config.json"));
    tc["chat_template"] = Value::String(
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role \
         not supported') }}{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
         {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
            .into(),
    );
    fs_err::write(strict.join("tokenizer_config.json"), tc.to_string()).expect("write");
    let sys = r#"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}"#;
    fs_err::write(&data, format!("{good}\n\n{sys}\n")).expect("write");
    let e = load(&strict, &data, 128).expect_err("raises").to_string();
    assert_eq!(
        e,
        format!(
            "{}:3: chat template failed: System role not supported",
            data.display()
        )
    );

    // The list-of-named-templates form uses "default".
    tc["chat_template"] = serde_json::json!([
        {"name": "tool_use", "template": "{{ raise_exception('wrong template') }}"},
        {"name": "default", "template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"}
    ]);
    fs_err::write(strict.join("tokenizer_config.json"), tc.to_string()).expect("write");
    let ds = load(&strict, &data, 128).expect("the default template");
    assert_eq!(ds.examples.len(), 2);

    // No chat template: said plainly, naming the data line and the tokenizer config.
    let plain = write_model(&dir.path().join("plain"), false);
    fs_err::write(&data, format!("{good}\n")).expect("write");
    let e = load(&plain, &data, 128)
        .expect_err("no template")
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}:1: a chat row (\"messages\") needs the model's chat template, but {} has no \
             \"chat_template\"",
            data.display(),
            plain.join("tokenizer_config.json").display()
        )
    );
}

#[test]
fn malformed_parquet_is_one_line_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = write_model(&dir.path().join("base"), true);
    let good = fs_err::read(fixtures().join("data/messages.parquet")).expect("read");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.parquet", good[..good.len() / 2].to_vec()),
        ("text.parquet", b"{\"text\": \"not parquet\"}\n".to_vec()),
        ("empty.parquet", Vec::new()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        fs_err::write(&path, bytes).expect("write");
        let e = load(&model, &path, 128).expect_err("refused").to_string();
        assert!(e.starts_with(&path.display().to_string()), "{name}: {e}");
        assert!(!e.contains('\n'), "{name}: one line: {e}");
    }
    // zstd pages (Polars' default) are read too, and give the rows of the snappy file.
    let snappy = load(
        &model,
        &fixtures().join("data/prompt_completion_large.parquet"),
        128,
    )
    .expect("snappy");
    let zstd = load(&model, &fixtures().join("data/zstd.parquet"), 128).expect("zstd");
    assert_eq!(zstd.examples.len(), snappy.examples.len());
    for (a, b) in zstd.examples.iter().zip(&snappy.examples) {
        assert_eq!((&a.tokens, &a.loss_mask), (&b.tokens, &b.loss_mask));
    }
}
