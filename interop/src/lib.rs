//! Harness for the interoperability tests in `tests/`: runs the independent verifiers
//! (securesystemslib, model_signing, in-toto-attestation, pyca/cryptography) from the Python venv
//! that `scripts/python-venv.sh` builds, and makes the fixtures they check.
//!
//! There is no skipping: if the venv cannot be created (no Python, no network on first use), every
//! test that needs it fails with the script's message.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use attest::dsse::IN_TOTO_PAYLOAD_TYPE;
use attest::slsa::PROVENANCE_V1;
use attest::slsa::{BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails};
use attest::statement::{digest_set_of, ResourceDescriptor, Statement};

/// `scripts/python-venv.sh` of this repository.
pub fn venv_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/python-venv.sh")
}

/// The venv's python, created on first use (once per test process). Panics, failing the test,
/// when the venv cannot be made.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PYTHON.get_or_init(|| {
        let script = venv_script();
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "{} failed ({}); the interop tests need Python 3.10+ and, the first time, PyPI \
                 access.\nstdout:\n{stdout}\nstderr:\n{stderr}",
                script.display(),
                output.status
            ));
        }
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        if !path.is_file() {
            return Err(format!(
                "{} printed '{}', which is not a file\nstderr:\n{stderr}",
                script.display(),
                path.display()
            ));
        }
        Ok(path)
    });
    match result {
        Ok(path) => path,
        Err(message) => panic!("Python venv for the interop tests is unavailable: {message}"),
    }
}

/// A program installed in the venv's `bin/` (e.g. `model_signing`).
pub fn venv_bin(name: &str) -> PathBuf {
    let bin = python()
        .parent()
        .expect("the venv python lives in a bin/ directory");
    bin.join(name)
}

/// A helper script under `interop/python/`.
pub fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Exit status and output of a finished command.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What was run, for messages.
    pub command: String,
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// `true` when the exit code is 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// The value after `key ` on the first stdout line starting with it.
    pub fn field(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key} ");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(str::trim)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

fn run(program: &Path, args: &[&std::ffi::OsStr]) -> Outcome {
    // Run from a scratch directory so nothing lands in the repository; bytecode of the venv's
    // own packages goes to the venv.
    let cwd = tempfile::tempdir().expect("scratch directory for a Python run");
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .env_remove("PYTHONPATH")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let command = std::iter::once(program.as_os_str())
        .chain(args.iter().copied())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Outcome {
        command,
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `interop/python/<script>` with the venv's python.
pub fn run_helper<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> Outcome {
    let path = helper(script);
    let mut all: Vec<&std::ffi::OsStr> = vec![path.as_os_str()];
    all.extend(args.iter().map(AsRef::as_ref));
    run(python(), &all)
}

/// Runs the venv's `model_signing` CLI.
pub fn model_signing<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    let program = venv_bin("model_signing");
    let all: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
    run(&program, &all)
}

/// A SLSA Provenance v1 Statement shaped like the ones `trainprov attest` writes: two subjects
/// with sha256 + blake3, a resolved dependency, builder version and RFC 3339 timestamps.
pub fn provenance_statement() -> Vec<u8> {
    let provenance = Provenance {
        build_definition: BuildDefinition {
            build_type: "https://trainprov.dev/buildtypes/attest/v1".into(),
            external_parameters: serde_json::json!({
                "paths": ["out/adapter_model.safetensors", "out/adapter_config.json"],
                "base": "out",
                "hyperparameters": {"lr": 0.0002, "epochs": 3, "lora_rank": 8},
            }),
            internal_parameters: serde_json::json!({"threads": 2, "deterministic": true}),
            resolved_dependencies: vec![ResourceDescriptor {
                uri: Some("git+https://example.invalid/trainprov@refs/heads/main".into()),
                ..ResourceDescriptor::named("source", digest_set_of(b"source tree"))
            }],
        },
        run_details: RunDetails {
            builder: Builder {
                id: "https://trainprov.dev/builder/cli".into(),
                builder_dependencies: Vec::new(),
                version: [("trainprov".to_string(), "0.1.0".to_string())].into(),
            },
            metadata: Some(BuildMetadata {
                invocation_id: Some("7f1c7a4e-2b9e-4d0a-9a55-3f1d2c3b4a5e".into()),
                started_on: Some("2025-01-02T03:04:05Z".into()),
                finished_on: Some("2025-01-02T03:14:15Z".into()),
            }),
            byproducts: vec![ResourceDescriptor::named(
                "train.log",
                digest_set_of(b"step 1 loss 2.3\n"),
            )],
        },
    };
    let subjects = vec![
        ResourceDescriptor::named(
            "adapter_model.safetensors",
            digest_set_of(b"adapter weights"),
        ),
        ResourceDescriptor::named("adapter_config.json", digest_set_of(b"{\"r\":8}")),
    ];
    let statement = Statement::new(subjects, PROVENANCE_V1, provenance);
    statement
        .check_subject_digests()
        .expect("fixture subjects carry sha256 and blake3");
    statement
        .to_json()
        .expect("serializing the provenance Statement")
}

/// The payload type every envelope here carries.
pub const PAYLOAD_TYPE: &str = IN_TOTO_PAYLOAD_TYPE;

/// Name of the large file in [`make_model_dir`] (about 3 MiB).
pub const BIG_FILE: &str = "weights/adapter_model.safetensors";

/// Writes a model directory exercising the OMS path rules: nested directories, a ~3 MiB file, an
/// empty file, names whose Python `PurePosixPath` order differs from plain string order (`a/b`,
/// `a-b`, `a.txt`), upper case, a space, a non-ASCII name, a dotfile, a nested `.gitignore` and
/// `model.sig` (which are signed), plus root git metadata (`.gitignore`, `.git/HEAD`) that both
/// implementations must leave out.
pub fn make_model_dir(root: &Path) {
    let mut big = Vec::with_capacity(3 * 1024 * 1024 + 17);
    // xorshift: deterministic, incompressible-looking content.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while big.len() < 3 * 1024 * 1024 + 17 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        big.extend_from_slice(&state.to_le_bytes());
    }
    big.truncate(3 * 1024 * 1024 + 17);
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "config.json",
            br#"{"model_type":"llama","hidden_size":64}"#.to_vec(),
        ),
        (
            "tokenizer.json",
            br#"{"version":"1.0","added_tokens":[]}"#.to_vec(),
        ),
        (BIG_FILE, big),
        (
            "weights/adapter_config.json",
            br#"{"r":8,"lora_alpha":16}"#.to_vec(),
        ),
        ("sub/deeper/notes.txt", b"nested file\n".to_vec()),
        ("sub/empty.bin", Vec::new()),
        ("a/b", b"a/b\n".to_vec()),
        ("a-b", b"a-b\n".to_vec()),
        ("a.txt", b"a.txt\n".to_vec()),
        ("Z_upper.txt", b"upper\n".to_vec()),
        ("read me.md", b"# model\n".to_vec()),
        ("donn\u{e9}es.txt", "donn\u{e9}es\n".as_bytes().to_vec()),
        (".hidden", b"dotfile, signed\n".to_vec()),
        // Only git metadata at the root is left out; these are ordinary files.
        ("sub/.gitignore", b"nested, signed\n".to_vec()),
        ("sub/model.sig", b"not the signature, signed\n".to_vec()),
        (".gitignore", b"*.tmp\n".to_vec()),
        (".git/HEAD", b"ref: refs/heads/main\n".to_vec()),
    ];
    for (name, content) in files {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating model subdirectory");
        }
        std::fs::write(&path, content).expect("writing model file");
    }
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating copy target");
    for entry in std::fs::read_dir(from).expect("reading directory to copy") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copying file");
        }
    }
}

/// Flips one bit of byte `index` of `bytes`.
pub fn flip(bytes: &mut [u8], index: usize) {
    bytes[index] ^= 0x01;
}
