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

// ---- issue 11, item 3: a replay writes only inside its work directory and its --out ----

/// Every file, directory and link under `paths` (links not followed below a root) with its
/// content digest or link target, size and modification time: equal before and after a replay
/// means the replay neither wrote, created nor removed anything there.
fn fingerprint(paths: &[std::path::PathBuf]) -> std::collections::BTreeMap<String, String> {
    fn walk(path: &std::path::Path, out: &mut std::collections::BTreeMap<String, String>) {
        let key = path.display().to_string();
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            out.insert(key, "missing".into());
            return;
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(path).expect("readlink");
            out.insert(key, format!("link {} @{mtime}", target.display()));
        } else if meta.is_dir() {
            out.insert(key, format!("dir @{mtime}"));
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .expect("ls")
                .map(|e| e.expect("entry").path())
                .collect();
            entries.sort();
            for entry in entries {
                walk(&entry, out);
            }
        } else {
            let bytes = std::fs::read(path).expect("read");
            out.insert(
                key,
                format!("{} {} @{mtime}", sha256_hex(&bytes), bytes.len()),
            );
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for path in paths {
        walk(path, &mut out);
    }
    out
}

/// A wrapped job that reads its config and data and writes `OUT/model.bin` (their digest).
const FIT_PY: &str = r#"import argparse, hashlib, os, pathlib
p = argparse.ArgumentParser()
for flag in ("--config", "--data", "--out"):
    p.add_argument(flag, required=True)
a = p.parse_args()
h = hashlib.sha256(pathlib.Path(a.config).read_bytes())
for f in sorted(pathlib.Path(a.data).glob("*.csv")):
    h.update(f.read_bytes())
os.makedirs(a.out, exist_ok=True)
pathlib.Path(a.out, "model.bin").write_text(h.hexdigest() + "\n")
"#;

/// `repo/` (fit.py, data/, train.toml, committed, plus `links` committed as symbolic links),
/// `shared/cfg.toml` and `release/` beside it, and keys.
fn fit_repo(links: &[(&str, &std::path::Path)]) -> Workspace {
    let ws = Workspace::new();
    util::write_wrap_python(&ws, "repo");
    ws.write("repo/fit.py", FIT_PY);
    ws.write("shared/cfg.toml", "lr = 0.5\n");
    std::fs::create_dir_all(ws.path("release")).expect("mkdir");
    std::fs::create_dir_all(ws.path("pubroot")).expect("mkdir");
    for (name, target) in links {
        std::os::unix::fs::symlink(target, ws.path(&format!("repo/{name}"))).expect("link");
    }
    commit_all(&ws, "repo");
    ws.keygen("signer", "");
    ws
}

/// `trainprov run --out OUT --config CONFIG -- python3 fit.py ...` in `repo/`, `job` replacing
/// the command when given.
fn fit_run(ws: &Workspace, out: &str, config: &str, job: Option<&[&str]>) -> util::Run {
    let fit = [
        "python3", "fit.py", "--config", config, "--data", "data", "--out", out,
    ];
    let mut args = vec![
        "run",
        "--out",
        out,
        "--key",
        "../keys/signer.key",
        "--data",
        "data",
        "--config",
        config,
        "--",
    ];
    args.extend_from_slice(job.unwrap_or(&fit));
    in_repo(ws, &args)
}

/// Retrains `attestation` and asserts that the original out dir, attestation, the user's
/// config and the data are exactly as before (digests and mtimes), and that the original
/// repository gained no worktree.
fn retrain_leaves_originals(
    ws: &Workspace,
    attestation: &std::path::Path,
    protected: &[std::path::PathBuf],
    extra: &[&str],
    code: i32,
    case: &str,
) -> util::Run {
    let mut paths = protected.to_vec();
    paths.extend([ws.path("repo/data"), attestation.to_path_buf()]);
    let before = fingerprint(&paths);
    let attestation = attestation.display().to_string();
    let mut args = vec![
        "retrain",
        attestation.as_str(),
        "--key",
        "../keys/signer.pub",
        "--sign-key",
        "../keys/signer.key",
        "--json",
    ];
    args.extend_from_slice(extra);
    let run = in_repo(ws, &args).expect_code(code, case);
    assert_eq!(
        fingerprint(&paths),
        before,
        "{case}: the replay changed the original\n{}",
        run.stderr
    );
    assert!(
        !ws.path("repo/.git/worktrees").exists(),
        "{case}: the replay registered a worktree in the original repository"
    );
    run
}

#[test]
fn issue11_wrapped_retrain_with_absolute_out_and_config_is_confined() {
    let ws = fit_repo(&[]);
    let release = ws.path("release").display().to_string();
    let config = ws.path("shared/cfg.toml").display().to_string();
    fit_run(&ws, &release, &config, None).expect_code(OK, "run with absolute paths");
    // The user edits the config afterwards: the replay must use the recorded bytes and must
    // not write them back.
    ws.write("shared/cfg.toml", "lr = 0.9 # edited after the run\n");
    let run = retrain_leaves_originals(
        &ws,
        &ws.path("release/provenance.intoto.json"),
        &[ws.path("release"), ws.path("shared")],
        &[],
        OK,
        "absolute --out and --config",
    );
    let json = run.json();
    assert_eq!(json["verdict"], "identical", "{json}\n{}", run.stderr);
    let workdir = json["workdir"].as_str().expect("workdir");
    let rewrites = json["argv_rewrites"].as_array().expect("rewrites");
    assert_eq!(rewrites.len(), 2, "--config and --out of fit.py: {json}");
    for r in rewrites {
        assert!(
            r["replayed"]
                .as_str()
                .is_some_and(|p| p.starts_with(workdir)),
            "{r}"
        );
    }
    assert!(
        run.stderr.contains("replayed as"),
        "said so: {}",
        run.stderr
    );
    let new = json["attestation"].as_str().expect("new attestation");
    assert!(new.starts_with(workdir), "{new} in {workdir}");
}

#[test]
fn issue11_wrapped_retrain_with_dotdot_paths_is_confined() {
    let ws = fit_repo(&[]);
    fit_run(&ws, "../release", "../shared/cfg.toml", None).expect_code(OK, "run with ../");
    ws.write("shared/cfg.toml", "lr = 0.9 # edited after the run\n");
    let run = retrain_leaves_originals(
        &ws,
        &ws.path("release/provenance.intoto.json"),
        &[ws.path("release"), ws.path("shared")],
        &[],
        OK,
        "relative ../ --out and --config",
    );
    let json = run.json();
    assert_eq!(json["verdict"], "identical", "{json}\n{}", run.stderr);
    assert!(json["argv_rewrites"].as_array().is_some_and(Vec::is_empty));
    // An explicit --out receives a copy of the products; the original still untouched.
    let run = retrain_leaves_originals(
        &ws,
        &ws.path("release/provenance.intoto.json"),
        &[ws.path("release"), ws.path("shared")],
        &["--out", "../copy"],
        OK,
        "--out elsewhere",
    );
    assert_eq!(run.json()["verdict"], "identical");
    assert!(ws.path("copy/model.bin").is_file());
}

#[test]
fn issue11_wrapped_retrain_through_symlinked_out_is_confined() {
    // The recorded --out is a link to the release directory.
    let ws = fit_repo(&[]);
    std::os::unix::fs::symlink(ws.path("release"), ws.path("latest")).expect("link");
    let latest = ws.path("latest").display().to_string();
    let config = "train.toml";
    fit_run(&ws, &latest, config, None).expect_code(OK, "run into a link");
    let run = retrain_leaves_originals(
        &ws,
        &ws.path("release/provenance.intoto.json"),
        &[ws.path("release"), ws.path("latest")],
        &[],
        OK,
        "absolute --out that is a link",
    );
    assert_eq!(run.json()["verdict"], "identical", "{}", run.stderr);
    // Passing the original (or a link to it) as --out is refused.
    for out in [
        ws.path("release"),
        ws.path("latest"),
        ws.path("release/sub"),
    ] {
        let out = out.display().to_string();
        let run = retrain_leaves_originals(
            &ws,
            &ws.path("release/provenance.intoto.json"),
            &[ws.path("release")],
            &["--out", &out],
            INPUT,
            "--out is the original",
        );
        assert!(
            run.stderr.contains("original run's output directory"),
            "{}",
            run.stderr
        );
    }
    // A non-empty --out elsewhere is refused too.
    ws.write("busy/keep.txt", "mine");
    let busy = ws.path("busy").display().to_string();
    let run = retrain_leaves_originals(
        &ws,
        &ws.path("release/provenance.intoto.json"),
        &[ws.path("release"), ws.path("busy")],
        &["--out", &busy],
        INPUT,
        "non-empty --out",
    );
    assert!(
        run.stderr.contains("not an empty directory"),
        "{}",
        run.stderr
    );
}

#[test]
fn issue11_wrapped_retrain_of_a_committed_out_link_writes_a_directory_of_its_own() {
    // `out` in the repository is a committed link to the release directory.
    let ws = fit_repo(&[]);
    std::os::unix::fs::symlink(ws.path("release"), ws.path("repo/out")).expect("link");
    ws.git("repo", &["add", "out"]);
    ws.git("repo", &["commit", "-qm", "out link"]);
    fit_run(&ws, "out", "train.toml", None).expect_code(OK, "run into a committed link");
    let run = retrain_leaves_originals(
        &ws,
        &ws.path("release/provenance.intoto.json"),
        &[ws.path("release"), ws.path("repo/out")],
        &[],
        OK,
        "committed out link",
    );
    assert!(
        run.stderr.contains("symbolic link"),
        "said so: {}",
        run.stderr
    );
    assert_eq!(run.json()["verdict"], "identical", "{}", run.stderr);
}

#[test]
fn issue11_wrapped_retrain_refuses_what_it_cannot_confine() {
    // `pub` is a committed link out of the repository; the out dir lies behind it.
    let ws = fit_repo(&[]);
    std::os::unix::fs::symlink(ws.path("pubroot"), ws.path("repo/pub")).expect("link");
    ws.git("repo", &["add", "pub"]);
    ws.git("repo", &["commit", "-qm", "pub link"]);
    fit_run(&ws, "pub/out", "train.toml", None).expect_code(OK, "run through a link");
    let run = retrain_leaves_originals(
        &ws,
        &ws.path("pubroot/out/provenance.intoto.json"),
        &[ws.path("pubroot")],
        &[],
        INPUT,
        "out behind a committed link",
    );
    assert!(
        run.stderr.contains("symbolic link") && run.stderr.contains("pub"),
        "{}",
        run.stderr
    );
    // The original out dir named inside a shell script: cannot be redirected.
    let release = ws.path("release").display().to_string();
    let script =
        format!("python3 fit.py --config train.toml --data data --out {release}/ && echo done");
    fit_run(&ws, &release, "train.toml", Some(&["sh", "-c", &script]))
        .expect_code(OK, "run via sh -c");
    let run = retrain_leaves_originals(
        &ws,
        &ws.path("release/provenance.intoto.json"),
        &[ws.path("release")],
        &[],
        INPUT,
        "out inside a shell script",
    );
    assert!(
        run.stderr.contains("inside a longer argument") && run.stderr.contains("--out"),
        "{}",
        run.stderr
    );
}

#[test]
fn issue11_trainer_retrain_never_writes_to_the_original() {
    let ws = Workspace::new();
    util::write_tiny_llama(&ws, "repo/tl", 2);
    commit_all(&ws, "repo");
    ws.keygen("signer", "");
    let config = ws.path("repo/tl/train.toml").display().to_string();
    let release = ws.path("release").display().to_string();
    in_repo(
        &ws,
        &[
            "train",
            &config,
            "--key",
            "../keys/signer.key",
            "--out",
            &release,
        ],
    )
    .expect_code(OK, "train with absolute config and --out");
    // A second run with ../ paths: a config outside the repository.
    let text = String::from_utf8(ws.read("repo/tl/train.toml")).expect("utf-8");
    ws.write(
        "cfg/train.toml",
        text.replace("base = \"base\"", "base = \"../repo/tl/base\"")
            .replace("path = \"data\"", "path = \"../repo/tl/data\""),
    );
    in_repo(
        &ws,
        &[
            "train",
            "../cfg/train.toml",
            "--key",
            "../keys/signer.key",
            "--out",
            "../release2",
        ],
    )
    .expect_code(OK, "train with ../ config and --out");
    ws.write("repo/tl/train.toml", format!("{text}# edited\n"));
    ws.write("cfg/train.toml", "# edited\n");
    std::os::unix::fs::symlink(ws.path("release"), ws.path("latest")).expect("link");
    let protected = [
        ws.path("release"),
        ws.path("release2"),
        ws.path("repo/tl"),
        ws.path("cfg"),
    ];
    for (release, extra, code, case) in [
        ("release", vec![], OK, "default workdir and out"),
        ("release2", vec![], OK, "../ paths"),
        (
            "release",
            vec!["--out", "../release"],
            INPUT,
            "--out = the original",
        ),
        (
            "release",
            vec!["--out", "../latest"],
            INPUT,
            "--out = a link to it",
        ),
        (
            "release",
            vec!["--out", "../release/again"],
            INPUT,
            "--out inside it",
        ),
        (
            "release",
            vec!["--workdir", "../release/w"],
            INPUT,
            "--workdir inside it",
        ),
        ("release", vec!["--out", "../cfg"], INPUT, "--out not empty"),
    ] {
        let attestation = ws.path(&format!("{release}/provenance.intoto.json"));
        let run = retrain_leaves_originals(&ws, &attestation, &protected, &extra, code, case);
        if code == OK {
            assert_eq!(run.json()["verdict"], "identical", "{case}: {}", run.stderr);
        }
    }
}

#[test]
fn issue11_retrain_detects_a_command_that_changed_the_original_attestation() {
    // The command finds the original by a way no confinement can see (a path read at run
    // time); the replay must not report success.
    let ws = fit_repo(&[]);
    let hook = ws.path("hook").display().to_string();
    let script = format!(
        "mkdir -p out && echo 1 > out/m && if [ -s {hook} ]; then echo x >> \"$(cat {hook})\"; fi"
    );
    fit_run(&ws, "out", "train.toml", Some(&["sh", "-c", &script])).expect_code(OK, "run");
    let attestation = ws.path("repo/out/provenance.intoto.json");
    ws.write("hook", attestation.display().to_string());
    let run = in_repo(
        &ws,
        &[
            "retrain",
            "out/provenance.intoto.json",
            "--key",
            "../keys/signer.pub",
            "--sign-key",
            "../keys/signer.key",
        ],
    )
    .expect_code(FAILED, "the original changed during the replay");
    assert!(
        run.stderr.contains("original attestation changed"),
        "{}",
        run.stderr
    );
}
