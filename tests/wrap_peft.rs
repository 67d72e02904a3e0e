//! Issue 12, item 6: a real PyTorch + transformers + PEFT LoRA script (`examples/wrap-peft`)
//! under `trainprov run`, replayed by `trainprov retrain`.
//!
//! - The record holds the determinism settings the script ran with (`PYTHONHASHSEED`,
//!   `OMP_NUM_THREADS`, `CUBLAS_WORKSPACE_CONFIG`), the interpreter (path, the binary it
//!   resolves to and its SHA-256) and the versions of torch, transformers and peft.
//! - An unchanged retrain prints IDENTICAL, even from a shell that lacks those variables (the
//!   script refuses to run without `PYTHONHASHSEED`: the replay must restore it).
//! - A retrain with a recorded setting changed (`--env OMP_NUM_THREADS=2`) prints NOT IDENTICAL
//!   and names the setting, in text and in `--json`.
//!
//! Needs the torch venv of `scripts/torch-venv.sh`: `$TRAINPROV_TORCH_VENV`, else `.venv-torch`
//! at the repository root, made on first use by that script. Fails (never skips) when it cannot
//! be made.

mod util;

use std::path::{Path, PathBuf};

use util::{Workspace, FAILED, OK};

/// The torch venv's interpreter, or a failure saying how to make it.
fn torch_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/torch-venv.sh");
    let venv = std::env::var_os("TRAINPROV_TORCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-torch"));
    let made = std::process::Command::new("bash")
        .arg(&script)
        .arg(&venv)
        .output()
        .expect("run scripts/torch-venv.sh");
    assert!(
        made.status.success(),
        "{}: scripts/torch-venv.sh could not make the torch venv (PyTorch + transformers + PEFT): {}",
        venv.display(),
        String::from_utf8_lossy(&made.stderr).trim()
    );
    PathBuf::from(String::from_utf8_lossy(&made.stdout).trim())
}

/// Determinism settings the run is started with.
const SETTINGS: [(&str, &str); 3] = [
    ("PYTHONHASHSEED", "0"),
    ("OMP_NUM_THREADS", "1"),
    ("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
];

/// trainprov in `repo/wrap-peft`, with `set` added to and `unset` removed from its environment.
fn in_example(ws: &Workspace, args: &[&str], set: &[(&str, &str)], unset: &[&str]) -> util::Run {
    let mut command = ws.command(args);
    command.current_dir(ws.path("repo/wrap-peft"));
    for name in unset {
        command.env_remove(name);
    }
    command.envs(set.iter().copied());
    let output = command.output().expect("run trainprov");
    util::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `repo/` with the example script and the tiny-llama base and data, committed; the script run
/// once under `trainprov run` (6 steps) into `repo/wrap-peft/out`.
fn recorded_run(python: &Path) -> Workspace {
    let ws = Workspace::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files = vec!["wrap-peft/train.py".to_string()];
    files.extend(
        ["config.json", "model.safetensors", "tokenizer.json"]
            .iter()
            .map(|f| format!("tiny-llama/base/{f}")),
    );
    files.extend((0..4).map(|n| format!("tiny-llama/data/shard-{n:03}.jsonl")));
    for name in &files {
        let bytes = std::fs::read(root.join(name)).expect("example file");
        ws.write(&format!("repo/{name}"), bytes);
    }
    ws.write("repo/.gitignore", "wrap-peft/out/\n");
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "."]);
    ws.git("repo", &["commit", "-qm", "example"]);
    ws.keygen("signer", "");
    let python = python.to_str().expect("utf-8 path");
    in_example(
        &ws,
        &[
            "run",
            "--out",
            "out",
            "--key",
            "../../keys/signer.key",
            "--base",
            "../tiny-llama/base",
            "--data",
            "../tiny-llama/data",
            "--",
            python,
            "train.py",
            "--base",
            "../tiny-llama/base",
            "--data",
            "../tiny-llama/data",
            "--out",
            "out",
            "--steps",
            "6",
        ],
        &SETTINGS,
        &[],
    )
    .expect_code(OK, "trainprov run of the PEFT example");
    ws
}

fn retrain(ws: &Workspace, extra: &[&str]) -> util::Run {
    let mut args = vec![
        "retrain",
        "out/provenance.intoto.json",
        "--key",
        "../../keys/signer.pub",
        "--sign-key",
        "../../keys/signer.key",
    ];
    args.extend_from_slice(extra);
    // The settings are not in this shell: the replay must take them from the record.
    let unset: Vec<&str> = SETTINGS.iter().map(|(name, _)| *name).collect();
    in_example(ws, &args, &[], &unset)
}

/// A byproduct of the record in `repo/wrap-peft/out`, from the registry's object store.
fn byproduct(ws: &Workspace, name: &str) -> Vec<u8> {
    let statement = util::statement_of(&ws.path("repo/wrap-peft/out/provenance.intoto.json"));
    let object = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .expect("byproducts")
        .iter()
        .find(|b| b["name"] == name)
        .and_then(|b| b["annotations"]["object"].as_str())
        .unwrap_or_else(|| panic!("no byproduct {name}: {statement}"))
        .to_string();
    ws.read(&format!(
        "repo/.trainprov/objects/{}/{}",
        &object[..2],
        &object[2..]
    ))
}

#[test]
fn issue12_wrapped_peft_run_records_its_settings_and_replays_identical() {
    let python = torch_python();
    let ws = recorded_run(&python);
    let out = ws.path("repo/wrap-peft/out");
    for product in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
        "training.json",
    ] {
        assert!(out.join(product).is_file(), "{product} missing");
    }
    // PEFT's adapter: the LoRA tensors of q_proj and v_proj, under PEFT's names.
    let adapter = std::fs::read(out.join("adapter_model.safetensors")).expect("adapter");
    let header_len = u64::from_le_bytes(adapter[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&adapter[8..8 + header_len]).expect("safetensors header");
    assert!(
        header
            .get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
            .is_some(),
        "{header}"
    );
    in_example(
        &ws,
        &[
            "verify",
            "out/provenance.intoto.json",
            "--key",
            "../../keys/signer.pub",
            "--model-dir",
            "out",
            "--inputs",
        ],
        &[],
        &[],
    )
    .expect_code(OK, "verify");

    // What the record holds: the settings, and the interpreter with its package versions.
    let statement = util::statement_of(&out.join("provenance.intoto.json"));
    let internal = &statement["predicate"]["buildDefinition"]["internalParameters"];
    for (name, value) in SETTINGS {
        assert_eq!(internal["environment"][name], value, "{internal}");
    }
    let environment: serde_json::Value =
        serde_json::from_slice(&byproduct(&ws, "environment.json")).expect("environment.json");
    let py = &environment["python"];
    let resolved = py["resolved"].as_str().expect("resolved interpreter");
    assert_eq!(
        Path::new(resolved),
        std::fs::canonicalize(&python).expect("canonical python"),
        "{py}"
    );
    let binary = std::fs::read(resolved).expect("interpreter binary");
    use sha2::Digest as _;
    let digest: String = sha2::Sha256::digest(&binary)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(py["sha256"].as_str(), Some(digest.as_str()), "{py}");
    assert!(py["packages"]["torch"]
        .as_str()
        .is_some_and(|v| v.starts_with("1.13")));
    assert_eq!(py["packages"]["transformers"], "4.38.2", "{py}");
    assert_eq!(py["packages"]["peft"], "0.10.0", "{py}");

    // An unchanged replay, from a shell without the settings: IDENTICAL.
    let run = retrain(&ws, &[]).expect_code(OK, "unchanged retrain");
    assert!(
        run.stdout.lines().any(|l| l == "IDENTICAL"),
        "{}",
        run.stdout
    );
    let run = retrain(&ws, &["--json"]).expect_code(OK, "unchanged retrain --json");
    let json = run.json();
    assert_eq!(json["verdict"], "identical", "{json}");
    assert_eq!(
        json["products"]["identical"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or_default(),
        4,
        "{json}"
    );
    assert!(
        !json["settings_differences"]
            .as_array()
            .expect("settings_differences")
            .iter()
            .any(|d| d["severity"] == "warning"),
        "{json}"
    );
}

#[test]
fn issue12_wrapped_peft_retrain_with_a_changed_setting_names_it() {
    let python = torch_python();
    let ws = recorded_run(&python);
    let run = retrain(&ws, &["--env", "OMP_NUM_THREADS=2"])
        .expect_code(FAILED, "retrain with another thread count");
    assert!(
        run.stdout.lines().any(|l| l == "NOT IDENTICAL"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("env.OMP_NUM_THREADS: recorded 1, replay 2 (set by --env)"),
        "{}",
        run.stdout
    );
    let run = retrain(&ws, &["--env", "OMP_NUM_THREADS=2", "--json"])
        .expect_code(FAILED, "retrain with another thread count, --json");
    let json = run.json();
    assert_eq!(json["verdict"], "differs", "{json}");
    // OpenBLAS splits its sums by the thread count: other bytes (and training.json records the
    // count).
    assert_eq!(
        json["products"]["changed"],
        serde_json::json!(["adapter_model.safetensors", "training.json"]),
        "{json}"
    );
    assert!(
        json["summary"].as_str().is_some_and(
            |s| s.contains("recorded settings that differ in the replay: env.OMP_NUM_THREADS")
        ),
        "{json}"
    );
    let warnings: Vec<&serde_json::Value> = json["settings_differences"]
        .as_array()
        .expect("settings_differences")
        .iter()
        .filter(|d| d["severity"] == "warning")
        .collect();
    assert_eq!(
        warnings,
        [&serde_json::json!({
            "field": "env.OMP_NUM_THREADS",
            "recorded": "1",
            "replay": "2",
            "severity": "warning",
            "set_by_env_option": true,
        })],
        "{json}"
    );
    // A variable trainprov does not record cannot be changed this way.
    retrain(&ws, &["--env", "MY_SETTING=1"]).expect_code(util::INPUT, "unrecorded variable");
}
