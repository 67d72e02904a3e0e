//! Helpers shared by the CLI tests: a temp workspace and a way to run the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;

/// Exit codes the CLI promises.
pub const OK: i32 = 0;
pub const FAILED: i32 = 1;
pub const INPUT: i32 = 2;

/// A temporary directory to run trainprov in, and a separate one for its per-user hash cache.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// Holds the hash cache (`TRAINPROV_HASH_CACHE`), outside `dir` so that no snapshot or
    /// product walk of the workspace sees it.
    pub cache: tempfile::TempDir,
}

/// The result of one CLI invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts the exit code and that nothing panicked; returns self for more checks.
    #[track_caller]
    pub fn expect_code(self, code: i32, case: &str) -> Run {
        assert!(
            !self.stderr.contains("panicked"),
            "{case}: panicked\n{}",
            self.stderr
        );
        assert_eq!(
            self.code, code,
            "{case}: exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs trainprov with `args` in the workspace directory.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run trainprov"))
    }

    /// Runs trainprov with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        Run::from(command.output().expect("run trainprov"))
    }

    /// The hash cache file every command of this workspace uses.
    pub fn hash_cache(&self) -> PathBuf {
        self.cache.path().join("hash-cache.sqlite")
    }

    /// A trainprov command in the workspace directory, not yet started. `TRAINPROV_REGISTRY`
    /// is cleared so tests never touch a registry outside their temp dir, and
    /// `TRAINPROV_HASH_CACHE` set so they never touch the user's hash cache.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_trainprov"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_BACKTRACE")
            .env_remove("TRAINPROV_REGISTRY")
            .env("TRAINPROV_HASH_CACHE", self.hash_cache());
        command
    }

    /// Runs `git` in `rel` (relative to the workspace) and asserts success.
    pub fn git(&self, rel: &str, args: &[&str]) {
        let status = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(self.path(rel))
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?} in {rel}");
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, bytes).expect("write");
        path
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).expect("read")
    }

    /// `keygen --out keys/NAME` with the given algorithm flag ("" or "--ed25519").
    pub fn keygen(&self, name: &str, algorithm_flag: &str) {
        let out = format!("keys/{name}");
        let mut args = vec!["keygen", "--out", out.as_str()];
        if !algorithm_flag.is_empty() {
            args.push(algorithm_flag);
        }
        self.run(&args).expect_code(OK, "keygen");
    }

    /// A small model directory with nested files.
    pub fn make_model(&self, rel: &str) {
        self.write(
            &format!("{rel}/config.json"),
            br#"{"model_type":"llama","hidden_size":64}"#,
        );
        self.write(
            &format!("{rel}/model.safetensors"),
            pseudo_random(200_000, 7),
        );
        self.write(
            &format!("{rel}/tokenizer/tokenizer.json"),
            br#"{"version":"1.0"}"#,
        );
        self.write(&format!("{rel}/.gitignore"), b"*.tmp\n");
    }
}

/// trainprov in `WORKSPACE/repo/`, the working directory of the recorded runs of the lineage,
/// policy and revocation tests.
pub fn in_repo(ws: &Workspace, args: &[&str]) -> Run {
    Run::from(
        ws.command(args)
            .current_dir(ws.path("repo"))
            .output()
            .expect("run trainprov"),
    )
}

/// One recorded `trainprov run -- sh -c SCRIPT` in `repo/`, signed with `keys/signer.key` into
/// the registry `repo/reg`; returns its run id.
pub fn record(ws: &Workspace, out: &str, inputs: &[&str], script: &str) -> String {
    let mut args = vec![
        "run",
        "--json",
        "--out",
        out,
        "--key",
        "../keys/signer.key",
        "--registry",
        "reg",
    ];
    args.extend_from_slice(inputs);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let run = in_repo(ws, &args).expect_code(OK, &format!("run writing {out}"));
    run.json()["run_id"].as_str().expect("run_id").to_string()
}

/// Deterministic incompressible bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

/// Writes a JSON file.
pub fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec(value).expect("serialize")).expect("write");
}

/// Both key types, so every test body runs for each.
pub const KEY_TYPES: [(&str, &str); 2] = [("ecdsa-p256", ""), ("ed25519", "--ed25519")];

/// The embedded tiny-llama example (`examples/tiny-llama`).
pub fn tiny_llama() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-llama")
}

/// Copies the tiny-llama base model (`DIR/base`), its four data shards (`DIR/data`) and its
/// `train.toml` with the `epochs` line replaced by `max_steps = MAX_STEPS` into the workspace.
pub fn write_tiny_llama(ws: &Workspace, dir: &str, max_steps: usize) {
    let example = tiny_llama();
    let mut files: Vec<String> = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|f| format!("base/{f}"))
        .collect();
    files.extend((0..4).map(|n| format!("data/shard-{n:03}.jsonl")));
    for name in &files {
        let bytes = std::fs::read(example.join(name)).expect("example file");
        ws.write(&format!("{dir}/{name}"), bytes);
    }
    let config = std::fs::read_to_string(example.join("train.toml")).expect("train.toml");
    let short: Vec<String> = config
        .lines()
        .map(|l| {
            if l.starts_with("epochs") {
                format!("max_steps = {max_steps}")
            } else {
                l.to_string()
            }
        })
        .collect();
    ws.write(&format!("{dir}/train.toml"), short.join("\n") + "\n");
}

/// Copies the wrap-python example (`train.py`, `train.toml`, two CSV shards) into `DIR`.
pub fn write_wrap_python(ws: &Workspace, dir: &str) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wrap-python");
    for name in [
        "train.py",
        "train.toml",
        "data/part-000.csv",
        "data/part-001.csv",
    ] {
        let bytes = std::fs::read(example.join(name)).expect("example file");
        ws.write(&format!("{dir}/{name}"), bytes);
    }
}

/// The in-toto Statement inside a DSSE envelope file, decoded without checking the signature
/// (the tests that need it verified run `trainprov verify`).
pub fn statement_of(path: &Path) -> serde_json::Value {
    let envelope = read_json(path);
    serde_json::from_slice(&unb64(envelope["payload"].as_str().expect("payload")))
        .expect("statement")
}
