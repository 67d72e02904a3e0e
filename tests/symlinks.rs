//! Issue 11, items 1 and 7: inputs, products and model directories are pinned by the content
//! their symlinks resolve to (DVC's symlink cache, git-annex, shared mounts, the Hugging Face
//! hub cache), and verification does not trust the hash cache unless asked.

#![cfg(unix)]

mod util;

use std::os::unix::fs::symlink;

use serde_json::Value;
use util::{in_repo, record, statement_of, Workspace, FAILED, INPUT, OK};

/// A git repository `repo/` with a registry `repo/reg` and a signing key.
fn repo() -> Workspace {
    let ws = Workspace::new();
    ws.keygen("signer", "");
    ws.write("repo/README.md", "symlink test\n");
    ws.write("repo/.gitignore", "out*/\nreg/\ndata/\nstore/\nhub/\n");
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "."]);
    ws.git("repo", &["commit", "-qm", "init"]);
    ws
}

fn verify_inputs(ws: &Workspace, out: &str, extra: &[&str]) -> util::Run {
    let attestation = format!("repo/{out}/provenance.intoto.json");
    let mut args = vec![
        "verify",
        attestation.as_str(),
        "--key",
        "keys/signer.pub",
        "--inputs",
        "--registry",
        "repo/reg",
        "--json",
    ];
    args.extend_from_slice(extra);
    ws.run(&args)
}

fn affected_runs(ws: &Workspace, target: &str) -> Vec<String> {
    let run = in_repo(
        ws,
        &[
            "registry",
            "affected",
            target,
            "--registry",
            "reg",
            "--json",
        ],
    )
    .expect_code(OK, &format!("affected {target}"));
    run.json()["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

/// The `--data` files are links into a store outside the input (DVC's symlink cache): the run
/// pins the store's content, so `registry affected STORE_FILE` finds it and poisoning a link
/// TARGET makes `verify --inputs` fail, naming the link.
#[test]
fn issue11_symlinked_data_pinned_by_content() {
    let ws = repo();
    ws.write("repo/store/aa11", "x,y\n1,2\n");
    ws.write("repo/store/bb22", "x,y\n3,4\n");
    std::fs::create_dir_all(ws.path("repo/data")).expect("mkdir");
    symlink("../store/aa11", ws.path("repo/data/train.csv")).expect("symlink");
    symlink("../store/bb22", ws.path("repo/data/test.csv")).expect("symlink");
    let id = record(
        &ws,
        "out",
        &["--data", "data"],
        "mkdir -p out && cat data/train.csv data/test.csv > out/model.bin",
    );
    let statement = statement_of(&ws.path("repo/out/provenance.intoto.json"));
    let data = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("deps")
        .iter()
        .find(|d| d["annotations"]["role"] == "data")
        .cloned()
        .expect("data dependency");
    assert_eq!(data["annotations"]["bytes"], 16, "content, not link text");

    assert!(
        affected_runs(&ws, "store/aa11").contains(&id),
        "the link target's content is an input of the run"
    );
    let clean = verify_inputs(&ws, "out", &[]).expect_code(OK, "clean inputs");
    assert_eq!(clean.json()["inputs_hashing"], "rehashed");

    ws.write("repo/store/aa11", "x,y\n1,666\n");
    let poisoned = verify_inputs(&ws, "out", &[]).expect_code(FAILED, "poisoned target");
    assert!(
        poisoned.stderr.contains("changed: train.csv"),
        "{}",
        poisoned.stderr
    );
    assert!(!poisoned.stderr.contains("test.csv"), "{}", poisoned.stderr);
}

/// A dangling link under `--data` is an input error naming the link, before anything runs.
#[test]
fn issue11_dangling_data_link_is_refused() {
    let ws = repo();
    std::fs::create_dir_all(ws.path("repo/data")).expect("mkdir");
    symlink("../store/missing", ws.path("repo/data/train.csv")).expect("symlink");
    let run = in_repo(
        &ws,
        &[
            "run",
            "--out",
            "out",
            "--key",
            "../keys/signer.key",
            "--registry",
            "reg",
            "--data",
            "data",
            "--",
            "sh",
            "-c",
            "touch ran",
        ],
    )
    .expect_code(INPUT, "dangling link");
    assert!(
        run.stderr.contains("data/train.csv: dangling symlink"),
        "{}",
        run.stderr
    );
    assert!(!ws.path("repo/ran").exists(), "nothing ran");
}

/// Builds `repo/hub/models--org--tiny` in the hub-cache layout and returns its snapshot dir
/// (relative to `repo/`).
fn hub_cache(ws: &Workspace) -> &'static str {
    let repo = "repo/hub/models--org--tiny";
    ws.write(&format!("{repo}/blobs/c0ffee"), r#"{"model_type":"llama"}"#);
    ws.write(&format!("{repo}/blobs/beef01"), "pretend weights\n");
    std::fs::create_dir_all(ws.path(&format!("{repo}/snapshots/rev1"))).expect("mkdir");
    symlink(
        "../../blobs/c0ffee",
        ws.path(&format!("{repo}/snapshots/rev1/config.json")),
    )
    .expect("symlink");
    symlink(
        "../../blobs/beef01",
        ws.path(&format!("{repo}/snapshots/rev1/weights.txt")),
    )
    .expect("symlink");
    "hub/models--org--tiny/snapshots/rev1"
}

/// `--base` at a hub-cache snapshot records the weights' bytes (not `0 B`), and `sign-model` /
/// `verify` accept that directory, signing the content: a poisoned blob fails verification.
#[test]
fn issue11_hub_cache_base_recorded_and_signed_by_content() {
    let ws = repo();
    let snapshot = hub_cache(&ws);
    record(
        &ws,
        "out",
        &["--base", snapshot],
        "mkdir -p out && cat hub/models--org--tiny/snapshots/rev1/weights.txt > out/model.bin",
    );
    let statement = statement_of(&ws.path("repo/out/provenance.intoto.json"));
    let base = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("deps")
        .iter()
        .find(|d| d["annotations"]["role"] == "base")
        .cloned()
        .expect("base dependency");
    assert_eq!(base["annotations"]["bytes"], 22 + 16);

    let dir = format!("repo/{snapshot}");
    let signed = ws
        .run(&[
            "sign-model",
            &dir,
            "--key",
            "keys/signer.key",
            "--signature",
            "tiny.sig",
            "--json",
        ])
        .expect_code(OK, "sign-model of a hub-cache snapshot");
    assert_eq!(signed.json()["files"], 2);
    assert_eq!(signed.json()["bytes"], 22 + 16);
    // The root given may itself be a symlink.
    symlink(ws.path(&dir), ws.path("tiny")).expect("symlink");
    for model_dir in [dir.as_str(), "tiny"] {
        ws.run(&[
            "verify",
            "tiny.sig",
            "--key",
            "keys/signer.pub",
            "--model-dir",
            model_dir,
        ])
        .expect_code(OK, model_dir);
    }
    ws.write(
        "repo/hub/models--org--tiny/blobs/beef01",
        "poisoned weights\n",
    );
    let run = ws
        .run(&[
            "verify",
            "tiny.sig",
            "--key",
            "keys/signer.pub",
            "--model-dir",
            &dir,
        ])
        .expect_code(FAILED, "poisoned blob");
    assert!(
        run.stderr.contains("changed: weights.txt"),
        "{}",
        run.stderr
    );
}

/// A `latest -> ckpt-1` link inside `--out` no longer turns a successful run into `failed`:
/// the files are recorded (and signed) by content under both names, and verify agrees.
#[test]
fn issue11_directory_link_in_out_is_recorded_by_content() {
    let ws = repo();
    let run = in_repo(
        &ws,
        &[
            "run",
            "--json",
            "--out",
            "out",
            "--key",
            "../keys/signer.key",
            "--registry",
            "reg",
            "--",
            "sh",
            "-c",
            "mkdir -p out/ckpt-1 && echo w > out/ckpt-1/w.bin && ln -s ckpt-1 out/latest \
             && ln -s ckpt-1/w.bin out/final.bin",
        ],
    )
    .expect_code(OK, "run with links in out");
    assert_eq!(run.json()["status"], "succeeded", "{}", run.stdout);
    let statement = statement_of(&ws.path("repo/out/provenance.intoto.json"));
    let subjects: Vec<(&str, &Value)> = statement["subject"]
        .as_array()
        .expect("subjects")
        .iter()
        .map(|s| (s["name"].as_str().expect("name"), &s["digest"]["sha256"]))
        .collect();
    let names: Vec<&str> = subjects.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["ckpt-1/w.bin", "final.bin", "latest/w.bin"]);
    assert!(
        subjects.iter().all(|(_, d)| *d == subjects[0].1),
        "same content"
    );
    ws.run(&[
        "verify",
        "repo/out/provenance.intoto.json",
        "--key",
        "keys/signer.pub",
        "--model-dir",
        "repo/out",
    ])
    .expect_code(OK, "verify the attestation");
    ws.run(&["verify", "repo/out/model.sig", "--key", "keys/signer.pub"])
        .expect_code(OK, "verify model.sig");
}

/// Whoever can write the hash cache can give a poisoned file the digest of the clean one (the
/// row's stamp is the poisoned file's own). `verify --inputs` hashes again by default and is
/// not fooled; with `--trust-cache` it is (and says so), which proves the flag does something.
#[test]
fn issue11_tampered_hash_cache_does_not_fool_verify_inputs() {
    let ws = repo();
    ws.write("repo/data/train.csv", "x,y\n1,2\n");
    // Files younger than the cache's 2 s racy window are never cached: let them age.
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    record(
        &ws,
        "out",
        &["--data", "data"],
        "mkdir -p out && cat data/train.csv > out/model.bin",
    );
    let clean: Vec<u8> = {
        let db = rusqlite::Connection::open(ws.hash_cache()).expect("open cache");
        db.query_row("SELECT blake3 FROM files", [], |r| r.get(0))
            .expect("the clean row")
    };
    // Same size: only the digest tells the bytes apart.
    ws.write("repo/data/train.csv", "x,y\n9,9\n");
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    // A snapshot stores the poisoned file's row; the attacker then rewrites its digest.
    ws.run(&["snapshot", "repo/data"])
        .expect_code(OK, "cache the poisoned file");
    {
        let db = rusqlite::Connection::open(ws.hash_cache()).expect("open cache");
        let changed = db
            .execute("UPDATE files SET blake3 = ?1", [&clean])
            .expect("tamper");
        assert_eq!(changed, 1);
    }

    let fooled = verify_inputs(&ws, "out", &["--trust-cache"])
        .expect_code(OK, "--trust-cache believes the cache");
    assert_eq!(fooled.json()["inputs_hashing"], "trusted-cache");
    let human = ws
        .run(&[
            "verify",
            "repo/out/provenance.intoto.json",
            "--key",
            "keys/signer.pub",
            "--inputs",
            "--trust-cache",
            "--registry",
            "repo/reg",
        ])
        .expect_code(OK, "human, trusted");
    assert!(
        human
            .stdout
            .contains("inputs: unchanged files taken from the hash cache"),
        "{}",
        human.stdout
    );

    let run = verify_inputs(&ws, "out", &[]).expect_code(FAILED, "default rehashes");
    assert!(run.stderr.contains("changed: train.csv"), "{}", run.stderr);
    let detail: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(detail["detail"]["inputs_hashing"], "rehashed", "{detail:#}");
}
