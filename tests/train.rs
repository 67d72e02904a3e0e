//! `trainprov train` and `trainprov eval` end to end on the embedded tiny-llama example.

mod util;

use util::{read_json, Workspace, INPUT, OK};

/// The tiny-llama example copied into the workspace, with a short training config.
fn example() -> Workspace {
    let ws = Workspace::new();
    util::write_tiny_llama(&ws, "tl", 6);
    ws.keygen("signer", "");
    ws
}

fn train(ws: &Workspace, out: &str) -> util::Run {
    ws.run(&[
        "train",
        "tl/train.toml",
        "--key",
        "keys/signer.key",
        "--out",
        out,
        "--registry",
        "reg",
        "--json",
    ])
}

#[test]
fn train_records_signs_and_verifies() {
    let ws = example();
    let run = train(&ws, "out").expect_code(OK, "train");
    let json = run.json();
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["training"]["steps"], 6);
    let products: Vec<&str> = json["products"]
        .as_array()
        .expect("products")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        products,
        ["adapter_config.json", "adapter_model.safetensors"],
        "metrics.jsonl is a byproduct, not a product"
    );
    ws.run(&[
        "verify",
        "out/provenance.intoto.json",
        "--key",
        "keys/signer.pub",
        "--model-dir",
        "out",
        "--inputs",
        "--registry",
        "reg",
    ])
    .expect_code(OK, "verify");
    ws.run(&["verify", "out/model.sig", "--key", "keys/signer.pub"])
        .expect_code(OK, "verify model.sig");

    let statement = util::statement_of(&ws.path("out/provenance.intoto.json"));
    let predicate = &statement["predicate"];
    assert_eq!(
        predicate["buildDefinition"]["buildType"],
        "https://trainprov.dev/buildtypes/candle-lora/v1"
    );
    let internal = &predicate["buildDefinition"]["internalParameters"]["trainer"];
    for field in [
        "seed",
        "rngAlgorithm",
        "threads",
        "isa",
        "candleVersion",
        "dtype",
        "device",
        "dataOrderDigest",
    ] {
        assert!(
            !internal[field].is_null(),
            "internalParameters.trainer.{field}: {internal}"
        );
    }
    // Issue 12: the thread count is picked from the work size (one thread for a tiny model)
    // unless the environment sets it, and the record says which; the weights' dtype too.
    let env_threads = ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    if env_threads {
        assert_eq!(internal["threadsChosenBy"], "environment", "{internal}");
    } else {
        assert_eq!(internal["threadsChosenBy"], "work size", "{internal}");
        assert_eq!(internal["threads"], 1, "{internal}");
        assert_eq!(internal["elementwiseThreads"], 1, "{internal}");
    }
    assert_eq!(internal["weightsInMemory"], "f32", "{internal}");
    let params = &predicate["buildDefinition"]["externalParameters"]["params"];
    assert_eq!(params["lora.r"], "8");
    assert_eq!(params["train.seed"], "7");
    let deps: Vec<&str> = predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("deps")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(
        deps.iter().any(|d| d.starts_with("base:")) && deps.iter().any(|d| d.starts_with("data:")),
        "{deps:?}"
    );
    let byproducts = predicate["runDetails"]["byproducts"].to_string();
    assert!(
        byproducts.contains("metrics.jsonl"),
        "loss trace kept: {byproducts}"
    );

    let adapter_config = read_json(&ws.path("out/adapter_config.json"));
    assert_eq!(adapter_config["peft_type"], "LORA");
    assert_eq!(adapter_config["r"], 8);
}

#[test]
fn training_twice_gives_identical_adapters_and_eval_improves() {
    let ws = example();
    train(&ws, "a").expect_code(OK, "first");
    train(&ws, "b").expect_code(OK, "second");
    for file in ["adapter_model.safetensors", "adapter_config.json"] {
        assert_eq!(
            ws.read(&format!("a/{file}")),
            ws.read(&format!("b/{file}")),
            "{file} byte-identical"
        );
    }
    let base = ws
        .run(&[
            "eval",
            "--base",
            "tl/base",
            "--data",
            "tl/data",
            "--seq-len",
            "48",
            "--json",
        ])
        .expect_code(OK, "eval base");
    let tuned = ws
        .run(&[
            "eval",
            "--base",
            "tl/base",
            "--adapter",
            "a",
            "--data",
            "tl/data",
            "--seq-len",
            "48",
            "--json",
        ])
        .expect_code(OK, "eval adapter");
    let (before, after) = (
        base.json()["mean_loss"].as_f64().expect("loss"),
        tuned.json()["mean_loss"].as_f64().expect("loss"),
    );
    assert!(
        after < before,
        "fine-tuning lowers the loss: {before} -> {after}"
    );
}

#[test]
fn bad_configs_and_untrusted_models_are_refused_by_name() {
    let ws = example();
    ws.write(
        "tl/bad.toml",
        "[model]\nbase = \"base\"\nbogus = 1\n[data]\npath = \"data\"\n",
    );
    let run = ws
        .run(&[
            "train",
            "tl/bad.toml",
            "--key",
            "keys/signer.key",
            "--registry",
            "reg",
        ])
        .expect_code(INPUT, "unknown field");
    assert!(
        run.stderr.contains("bogus") && run.stderr.contains("bad.toml"),
        "{}",
        run.stderr
    );

    // A base model shipped as a pickle is refused, with the reason.
    ws.write("pickled/config.json", ws.read("tl/base/config.json"));
    ws.write("pickled/tokenizer.json", ws.read("tl/base/tokenizer.json"));
    ws.write(
        "pickled/pytorch_model.bin",
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.",
    );
    let run = ws
        .run(&["eval", "--base", "pickled", "--data", "tl/data"])
        .expect_code(INPUT, "pickle base");
    assert!(
        run.stderr.contains("pytorch_model.bin") && run.stderr.to_lowercase().contains("pickle"),
        "{}",
        run.stderr
    );

    // A corrupted safetensors header is refused before any tensor is read.
    let mut weights = ws.read("tl/base/model.safetensors");
    weights[0] = 0xff;
    weights[7] = 0x7f;
    ws.write("corrupt/model.safetensors", weights);
    ws.write("corrupt/config.json", ws.read("tl/base/config.json"));
    ws.write("corrupt/tokenizer.json", ws.read("tl/base/tokenizer.json"));
    let run = ws
        .run(&["eval", "--base", "corrupt", "--data", "tl/data"])
        .expect_code(INPUT, "corrupt header");
    assert!(run.stderr.contains("model.safetensors"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn print_config_is_a_valid_starting_point() {
    let ws = Workspace::new();
    let run = ws
        .run(&["train", "--print-config"])
        .expect_code(OK, "print-config");
    assert!(
        run.stdout.contains("[lora]") && run.stdout.contains("target_modules"),
        "{}",
        run.stdout
    );
}
