//! `trainprov retrain` end to end, for the built-in trainer and for a wrapped script, in real git
//! repositories: unchanged replays are identical, changed data is named, exclusions produce a new
//! linked record, untrusted records and missing commits or datasets are refused clearly.

mod util;

use util::{Workspace, FAILED, INPUT, OK};

fn commit_all(ws: &Workspace, rel: &str) {
    ws.git(rel, &["init", "-q"]);
    ws.git(rel, &["add", "."]);
    ws.git(rel, &["commit", "-qm", "example"]);
}

/// A repository `repo/` with the tiny-llama base, data and a short config, trained once into
/// `repo/out` (run from `repo/`).
fn trained_repo() -> Workspace {
    let ws = Workspace::new();
    util::write_tiny_llama(&ws, "repo/tl", 6);
    let config = String::from_utf8(ws.read("repo/tl/train.toml")).expect("utf-8");
    ws.write(
        "repo/tl/train.toml",
        config.replace("digest_every = 5", "digest_every = 2"),
    );
    commit_all(&ws, "repo");
    ws.keygen("signer", "");
    ws.keygen("other", "");
    in_repo(
        &ws,
        &[
            "train",
            "tl/train.toml",
            "--key",
            "../keys/signer.key",
            "--out",
            "out",
        ],
    )
    .expect_code(OK, "train");
    ws
}

fn in_repo(ws: &Workspace, args: &[&str]) -> util::Run {
    let mut cmd = ws.command(args);
    cmd.current_dir(ws.path("repo"));
    let output = cmd.output().expect("run trainprov");
    util::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn retrain(ws: &Workspace, extra: &[&str]) -> util::Run {
    let mut args = vec![
        "retrain",
        "out/provenance.intoto.json",
        "--key",
        "../keys/signer.pub",
        "--sign-key",
        "../keys/signer.key",
        "--json",
    ];
    args.extend_from_slice(extra);
    in_repo(ws, &args)
}

#[test]
fn trainer_unchanged_retrain_is_identical() {
    let ws = trained_repo();
    let run = retrain(&ws, &[]).expect_code(OK, "unchanged retrain");
    let json = run.json();
    assert_eq!(json["verdict"], "identical", "{json}");
    assert_eq!(json["relation"], "reproduction-of");
    assert!(json["first_divergence"].is_null());
    let new = json["attestation"].as_str().expect("new attestation");
    ws.run(&["verify", new, "--key", "keys/signer.pub"])
        .expect_code(OK, "new record verifies");
}

#[test]
fn trainer_retrain_after_a_data_change_names_the_file_and_differs() {
    let ws = trained_repo();
    let mut shard = ws.read("repo/tl/data/shard-001.jsonl");
    shard.extend_from_slice(
        b"{\"prompt\": \"what colour is the cat? \", \"completion\": \"purple.\"}\n",
    );
    ws.write("repo/tl/data/shard-001.jsonl", shard);
    let run = retrain(&ws, &[]).expect_code(
        FAILED,
        "changed data: an unchanged replay must be identical",
    );
    assert!(
        run.stderr.contains("shard-001.jsonl"),
        "the changed file is named: {}",
        run.stderr
    );
    let json = run.json();
    assert_eq!(json["verdict"], "differs");
    assert!(
        json["summary"]
            .as_str()
            .expect("summary")
            .contains("adapter_model.safetensors"),
        "{json}"
    );
    assert!(
        json["first_divergence"]["step"].is_u64(),
        "first diverged step reported: {json}"
    );
}

#[test]
fn trainer_exclude_produces_a_linked_record() {
    let ws = trained_repo();
    let run = retrain(&ws, &["--exclude", "shard-002.jsonl", "--out", "../clean"])
        .expect_code(OK, "retrain without a shard");
    let json = run.json();
    assert_eq!(json["relation"], "retrained-without");
    assert_eq!(json["excluded"][0], "tl/data:shard-002.jsonl");
    let statement = util::statement_of(&ws.path("clean/provenance.intoto.json"));
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("deps")
        .clone();
    let link = deps
        .iter()
        .find(|d| d["name"] == "original-attestation")
        .expect("linked to the original");
    assert_eq!(link["annotations"]["relation"], "retrained-without");
    let original_sha = sha256_hex(&ws.read("repo/out/provenance.intoto.json"));
    assert_eq!(link["digest"]["sha256"], original_sha.as_str());
    let data = deps
        .iter()
        .find(|d| d["name"].as_str().is_some_and(|n| n.starts_with("data:")))
        .expect("data");
    assert_eq!(
        data["annotations"]["files"], 3,
        "the excluded shard is not an input"
    );
    // The rebuilt record keeps the original's input and config names, not the staged copies'.
    let original = util::statement_of(&ws.path("repo/out/provenance.intoto.json"));
    let names = |deps: &[serde_json::Value]| -> Vec<String> {
        deps.iter()
            .filter_map(|d| d["name"].as_str())
            .filter(|n| {
                ["data:", "base:", "config:"]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
            .map(str::to_string)
            .collect()
    };
    let original_deps = original["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("deps")
        .clone();
    assert_eq!(names(&deps), names(&original_deps));
    let show = in_repo(&ws, &["registry", "list", "--json"]).expect_code(OK, "list");
    assert_eq!(show.json()["runs"].as_array().map(Vec::len), Some(2));
}

#[test]
fn untrusted_record_missing_dataset_and_bad_glob_are_refused() {
    let ws = trained_repo();
    let run = in_repo(
        &ws,
        &[
            "retrain",
            "out/provenance.intoto.json",
            "--key",
            "../keys/other.pub",
            "--sign-key",
            "../keys/signer.key",
        ],
    )
    .expect_code(FAILED, "unknown key");
    assert!(run.stderr.contains("refusing"), "{}", run.stderr);
    std::fs::rename(ws.path("repo/tl/data"), ws.path("repo/tl/moved")).expect("mv");
    let run = retrain(&ws, &[]).expect_code(INPUT, "missing dataset");
    assert!(
        run.stderr.contains("--data-root") && run.stderr.contains("tl/data"),
        "{}",
        run.stderr
    );
    let old = ws.path("repo/tl/data").display().to_string();
    let new = ws.path("repo/tl/moved").display().to_string();
    let run =
        retrain(&ws, &["--data-root", &format!("{old}={new}")]).expect_code(OK, "remapped dataset");
    assert_eq!(run.json()["verdict"], "identical");
    retrain(
        &ws,
        &["--exclude", "[", "--data-root", &format!("{old}={new}")],
    )
    .expect_code(INPUT, "bad glob");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The wrap-python example in `repo/`, with an uncommitted change, run once.
fn wrapped_repo() -> Workspace {
    let ws = Workspace::new();
    util::write_wrap_python(&ws, "repo");
    commit_all(&ws, "repo");
    let mut script = ws.read("repo/train.py");
    script.extend_from_slice(b"\n# an uncommitted change the replay must re-apply\n");
    ws.write("repo/train.py", script);
    ws.keygen("signer", "");
    in_repo(
        &ws,
        &[
            "run",
            "--out",
            "out",
            "--key",
            "../keys/signer.key",
            "--data",
            "data",
            "--config",
            "train.toml",
            "--",
            "python3",
            "train.py",
            "--data",
            "data",
            "--out",
            "out",
            "--epochs",
            "30",
        ],
    )
    .expect_code(OK, "wrapped run");
    ws
}

#[test]
fn wrapped_unchanged_retrain_is_identical_and_exclusion_differs() {
    let ws = wrapped_repo();
    let run = retrain(&ws, &[]).expect_code(OK, "wrapped replay");
    assert_eq!(run.json()["verdict"], "identical", "{}", run.stderr);
    let run = retrain(&ws, &["--exclude", "part-001.csv"]).expect_code(OK, "wrapped exclusion");
    let json = run.json();
    assert_eq!(json["verdict"], "differs");
    assert_eq!(json["excluded"][0], "data:part-001.csv");
}

#[test]
fn wrapped_retrain_with_a_missing_commit_says_how_to_fetch_it() {
    let ws = wrapped_repo();
    std::fs::remove_dir_all(ws.path("repo/.git")).expect("rm .git");
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "train.py"]);
    ws.git("repo", &["commit", "-qm", "unrelated history"]);
    let run = retrain(&ws, &[]).expect_code(INPUT, "missing commit");
    assert!(
        run.stderr.contains("is not in the repository") && run.stderr.contains("git fetch"),
        "{}",
        run.stderr
    );
}
