//! `trainprov run` end to end, in a real temporary git repository: the wrapped example script and
//! `sh -c` commands, verification by trainprov and by securesystemslib, data changed after the
//! run, secrets kept out, failures passed through, concurrent runs, and a killed wrapper.

mod util;

use std::path::Path;
use std::time::{Duration, Instant};

use util::{read_json, statement_of, Workspace, FAILED, OK};

/// A git repository at `repo/` holding the wrap-python example (committed), a key pair, and a
/// registry at `repo/.trainprov`.
fn example_repo() -> Workspace {
    let ws = Workspace::new();
    util::write_wrap_python(&ws, "repo");
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "."]);
    ws.git("repo", &["commit", "-qm", "example"]);
    ws.keygen("signer", "");
    ws
}

fn run_in_repo(ws: &Workspace, extra: &[&str], command: &[&str]) -> util::Run {
    run_in_repo_env(ws, extra, command, &[])
}

fn run_in_repo_env(
    ws: &Workspace,
    extra: &[&str],
    command: &[&str],
    env: &[(&str, &str)],
) -> util::Run {
    let mut args = vec!["run", "--out", "out", "--key", "../keys/signer.key"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    let mut cmd = ws.command(&args);
    cmd.current_dir(ws.path("repo")).envs(env.iter().copied());
    let output = cmd.output().expect("run trainprov");
    util::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn train_command() -> Vec<&'static str> {
    vec![
        "python3", "train.py", "--data", "data", "--out", "out", "--epochs", "40",
    ]
}

#[test]
fn wrapped_python_training_is_recorded_signed_and_verifies() {
    let ws = example_repo();
    let run = run_in_repo(
        &ws,
        &[
            "--data",
            "data",
            "--config",
            "train.toml",
            "--param",
            "epochs=40",
        ],
        &train_command(),
    )
    .expect_code(OK, "wrapped training");
    assert!(
        run.stdout.contains("trained on 600 rows"),
        "child output passes through: {}",
        run.stdout
    );
    let attestation = ws.path("repo/out/provenance.intoto.json");
    assert!(attestation.is_file() && ws.path("repo/out/model.sig").is_file());

    // trainprov verify: signature, every product, and the inputs as they are now.
    ws.run(&[
        "verify",
        "repo/out/provenance.intoto.json",
        "--key",
        "keys/signer.pub",
        "--model-dir",
        "repo/out",
        "--inputs",
        "--registry",
        "repo/.trainprov",
    ])
    .expect_code(OK, "verify run attestation");
    ws.run(&["verify", "repo/out/model.sig", "--key", "keys/signer.pub"])
        .expect_code(OK, "verify model.sig");

    let statement = statement_of(&attestation);
    let names: Vec<&str> = statement["subject"]
        .as_array()
        .expect("subjects")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["metrics.json", "model.json"]);
    let predicate = &statement["predicate"];
    assert_eq!(
        predicate["buildDefinition"]["externalParameters"]["argv"][1],
        "train.py"
    );
    assert_eq!(
        predicate["buildDefinition"]["externalParameters"]["params"]["epochs"],
        "40"
    );
    assert!(
        predicate["buildDefinition"]["externalParameters"]["configs"]["train.toml"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("lr = 0.5"))
    );
    let deps = predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("deps");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(ws.path("repo"))
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let code = deps
        .iter()
        .find(|d| d["name"] == "code")
        .expect("code dependency");
    assert_eq!(code["digest"]["gitCommit"], head.as_str());
    assert_eq!(code["annotations"]["dirty"], false);
    let data = deps
        .iter()
        .find(|d| d["name"] == "data:data")
        .expect("data dependency");
    assert_eq!(data["annotations"]["files"], 2);
    assert!(data["digest"]["blake3"].is_string() && data["digest"]["sha256"].is_string());
    let byproducts: Vec<&str> = predicate["runDetails"]["byproducts"]
        .as_array()
        .expect("byproducts")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    for expected in [
        "environment.json",
        "stdout.log",
        "stderr.log",
        "run-result.json",
    ] {
        assert!(
            byproducts.contains(&expected),
            "{expected} in {byproducts:?}"
        );
    }

    // The registry knows the run.
    let list = ws
        .run(&[
            "registry",
            "list",
            "--registry",
            "repo/.trainprov",
            "--json",
        ])
        .expect_code(OK, "list");
    let runs = list.json()["runs"].as_array().expect("runs").clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "succeeded");
    let id = runs[0]["id"].as_str().expect("id");
    assert_eq!(predicate["runDetails"]["metadata"]["invocationId"], id);
    let show = ws
        .run(&[
            "registry",
            "show",
            &id[..8],
            "--registry",
            "repo/.trainprov",
            "--json",
        ])
        .expect_code(OK, "show");
    let roles: Vec<String> = show.json()["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .map(|a| a["role"].as_str().unwrap_or("").to_string())
        .collect();
    for role in ["input:data", "input:config", "output", "attestation"] {
        assert!(roles.iter().any(|r| r == role), "{role} in {roles:?}");
    }
}

#[test]
fn securesystemslib_verifies_a_run_attestation() {
    let ws = example_repo();
    run_in_repo(
        &ws,
        &["--data", "data"],
        &["sh", "-c", "mkdir -p out && echo weights > out/w.bin"],
    )
    .expect_code(OK, "run");
    let public = ws.path("keys/signer.pub");
    let keyid = read_json(&ws.path("repo/out/provenance.intoto.json"))["signatures"][0]["keyid"]
        .as_str()
        .expect("keyid")
        .to_string();
    let public = public.display().to_string();
    let envelope = ws
        .path("repo/out/provenance.intoto.json")
        .display()
        .to_string();
    let outcome = trainprov_interop_tests::run_helper(
        "verify_dsse.py",
        &[
            envelope.as_str(),
            "--key",
            public.as_str(),
            "ecdsa",
            "ecdsa-sha2-nistp256",
            keyid.as_str(),
        ],
    );
    assert!(
        outcome.ok(),
        "securesystemslib verifies the run attestation: {outcome:?}"
    );
}

#[test]
fn data_changed_after_the_run_is_named() {
    let ws = example_repo();
    run_in_repo(&ws, &["--data", "data"], &train_command()).expect_code(OK, "run");
    let mut csv = ws.read("repo/data/part-001.csv");
    csv.extend_from_slice(b"9.9,9.9,9.9,9.9,1\n");
    ws.write("repo/data/part-001.csv", csv);
    let run = ws
        .run(&[
            "verify",
            "repo/out/provenance.intoto.json",
            "--key",
            "keys/signer.pub",
            "--inputs",
            "--registry",
            "repo/.trainprov",
        ])
        .expect_code(FAILED, "changed data");
    assert!(
        run.stderr.contains("changed: part-001.csv"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("part-000.csv"),
        "unchanged shard not named: {}",
        run.stderr
    );
}

#[test]
fn secrets_never_reach_a_record() {
    let ws = example_repo();
    let secret_env = "s3cr3t-env-value-91842";
    let secret_url = "url-t0ken-55217";
    let secret_arg = "argv-passw0rd-7731";
    ws.git(
        "repo",
        &[
            "remote",
            "add",
            "origin",
            &format!("https://builder:{secret_url}@git.example.invalid/team/model.git"),
        ],
    );
    run_in_repo_env(
        &ws,
        &[
            "--data",
            "data",
            "--param",
            &format!("api_token={secret_arg}"),
        ],
        &[
            "sh",
            "-c",
            "mkdir -p out && echo ok > out/result.txt",
            "--",
            &format!("--password={secret_arg}"),
        ],
        &[
            ("HF_TOKEN", secret_env),
            ("WANDB_API_KEY", secret_env),
            ("OMP_NUM_THREADS", "2"),
            ("MY_SECRET", secret_env),
        ],
    )
    .expect_code(OK, "run with planted secrets");
    let mut scanned = 0;
    for root in [ws.path("repo/out"), ws.path("repo/.trainprov")] {
        for entry in walkdir_files(&root) {
            let bytes = std::fs::read(&entry).expect("read");
            for secret in [secret_env, secret_url, secret_arg] {
                assert!(
                    !contains(&bytes, secret.as_bytes()),
                    "{secret} leaked into {}",
                    entry.display()
                );
            }
            scanned += 1;
        }
    }
    assert!(
        scanned > 5,
        "scanned the attestation, registry and objects ({scanned} files)"
    );
    let statement = statement_of(&ws.path("repo/out/provenance.intoto.json"));
    let settings = &statement["predicate"]["buildDefinition"]["internalParameters"]["environment"];
    assert_eq!(
        settings["OMP_NUM_THREADS"], "2",
        "thread settings are recorded: {settings}"
    );
}

fn walkdir_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn failing_command_passes_its_exit_code_and_is_not_attested() {
    let ws = example_repo();
    let run = run_in_repo(
        &ws,
        &[],
        &[
            "sh",
            "-c",
            "mkdir -p out && echo partial > out/w.bin && echo boom >&2 && exit 3",
        ],
    )
    .expect_code(3, "exit code passes through");
    assert!(
        run.stderr.contains("boom"),
        "child stderr passes through: {}",
        run.stderr
    );
    assert!(
        !ws.path("repo/out/provenance.intoto.json").exists(),
        "no attestation for a failed run"
    );
    assert!(!ws.path("repo/out/model.sig").exists());
    let list = ws
        .run(&[
            "registry",
            "list",
            "--registry",
            "repo/.trainprov",
            "--json",
        ])
        .expect_code(OK, "list");
    assert_eq!(list.json()["runs"][0]["status"], "failed");
    assert_eq!(list.json()["runs"][0]["exit_code"], 3);

    let run = run_in_repo(&ws, &[], &["no-such-program-trainprov-test"])
        .expect_code(util::INPUT, "missing program");
    assert!(
        run.stderr.contains("no-such-program-trainprov-test"),
        "{}",
        run.stderr
    );
    let list = ws
        .run(&[
            "registry",
            "list",
            "--registry",
            "repo/.trainprov",
            "--json",
        ])
        .expect_code(OK, "list");
    assert_eq!(list.json()["runs"][0]["status"], "failed");
}

#[test]
fn four_concurrent_runs_share_one_registry() {
    let ws = example_repo();
    let children: Vec<_> = (0..4)
        .map(|i| {
            let out = format!("out{i}");
            let script = format!("mkdir -p {out} && sleep 0.3 && echo {i} > {out}/w.bin");
            let mut cmd = ws.command(&[
                "run",
                "--out",
                &out,
                "--key",
                "../keys/signer.key",
                "--data",
                "data",
                "--",
                "sh",
                "-c",
                &script,
            ]);
            cmd.current_dir(ws.path("repo"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("spawn")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("wait");
        assert!(
            output.status.success(),
            "concurrent run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let list = ws
        .run(&[
            "registry",
            "list",
            "--registry",
            "repo/.trainprov",
            "--json",
        ])
        .expect_code(OK, "list");
    let runs = list.json()["runs"].as_array().expect("runs").clone();
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    for i in 0..4 {
        ws.run(&[
            "verify",
            &format!("repo/out{i}/provenance.intoto.json"),
            "--key",
            "keys/signer.pub",
            "--model-dir",
            &format!("repo/out{i}"),
        ])
        .expect_code(OK, "each concurrent run verifies");
    }
}

#[cfg(unix)]
#[test]
fn killed_wrapper_leaves_a_consistent_registry_and_no_attestation() {
    let ws = example_repo();
    let mut cmd = ws.command(&[
        "run",
        "--out",
        "out",
        "--key",
        "../keys/signer.key",
        "--data",
        "data",
        "--",
        "sh",
        "-c",
        "mkdir -p out; echo started; sleep 30",
    ]);
    cmd.current_dir(ws.path("repo"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    wait_for_running_row(&ws);
    child.kill().expect("SIGKILL the wrapper");
    child.wait().expect("reap");
    let db = rusqlite_integrity(&ws.path("repo/.trainprov/registry.sqlite"));
    assert_eq!(db, "ok");
    assert!(
        !ws.path("repo/out/provenance.intoto.json").exists(),
        "no partial attestation"
    );
    let leftovers: Vec<_> = std::fs::read_dir(ws.path("repo/out"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|n| !n.contains("provenance")),
        "{leftovers:?}"
    );
    // The command's group is stopped by the watchdog (tests/run_lifecycle.rs checks that).
    let list = ws
        .run(&[
            "registry",
            "list",
            "--registry",
            "repo/.trainprov",
            "--json",
        ])
        .expect_code(OK, "list after kill");
    assert_eq!(list.json()["runs"][0]["status"], "abandoned");
}

#[cfg(unix)]
#[test]
fn sigint_is_forwarded_and_the_run_is_interrupted() {
    let ws = example_repo();
    let script = "mkdir -p out; trap 'echo got-int > out/signal.txt; exit 130' INT; echo started; while true; do sleep 0.1; done";
    let mut cmd = ws.command(&[
        "run",
        "--out",
        "out",
        "--key",
        "../keys/signer.key",
        "--",
        "sh",
        "-c",
        script,
    ]);
    cmd.current_dir(ws.path("repo"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    wait_for_running_row(&ws);
    std::thread::sleep(Duration::from_millis(300));
    let pid = nix_pid(child.id());
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(ws.path("repo/out/signal.txt"))
            .expect("child saw SIGINT")
            .trim(),
        "got-int"
    );
    assert!(!ws.path("repo/out/provenance.intoto.json").exists());
    let list = ws
        .run(&[
            "registry",
            "list",
            "--registry",
            "repo/.trainprov",
            "--json",
        ])
        .expect_code(OK, "list");
    assert_eq!(list.json()["runs"][0]["status"], "interrupted");
}

fn nix_pid(id: u32) -> String {
    id.to_string()
}

fn wait_for_running_row(ws: &Workspace) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let list = ws.run(&[
            "registry",
            "list",
            "--registry",
            "repo/.trainprov",
            "--json",
        ]);
        if list.code == OK && list.json()["runs"][0]["status"] == "running" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the run never showed up as running");
}

fn rusqlite_integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open registry");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

#[test]
fn json_report_keeps_stdout_machine_readable() {
    let ws = example_repo();
    let run = run_in_repo(
        &ws,
        &["--json"],
        &[
            "sh",
            "-c",
            "echo chatter; mkdir -p out && echo w > out/w.bin",
        ],
    )
    .expect_code(OK, "run --json");
    let json = run.json();
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["products"][0]["name"], "w.bin");
    assert!(
        run.stderr.contains("chatter"),
        "the command's stdout moves to stderr: {}",
        run.stderr
    );
}

#[test]
fn unsafe_model_inputs_are_refused_unless_allowed_and_then_recorded() {
    let ws = example_repo();
    // A pickle whose GLOBAL opcode imports os.system: loading it would run a shell command.
    ws.write(
        "repo/evil-base/pytorch_model.bin",
        b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.",
    );
    let command = ["sh", "-c", "mkdir -p out && echo w > out/w.bin"];
    let run = run_in_repo(&ws, &["--base", "evil-base"], &command)
        .expect_code(FAILED, "unsafe base refused");
    assert!(
        run.stderr.contains("os.system") && run.stderr.contains("--allow-unsafe-inputs"),
        "{}",
        run.stderr
    );
    assert!(!ws.path("repo/out/w.bin").exists(), "nothing ran");
    run_in_repo(
        &ws,
        &["--base", "evil-base", "--allow-unsafe-inputs"],
        &command,
    )
    .expect_code(OK, "allowed");
    let statement = statement_of(&ws.path("repo/out/provenance.intoto.json"));
    let internal = &statement["predicate"]["buildDefinition"]["internalParameters"];
    assert_eq!(internal["allowUnsafeInputs"], true, "{internal}");
    let byproducts = statement["predicate"]["runDetails"]["byproducts"].to_string();
    assert!(byproducts.contains("model-scan.json"), "{byproducts}");
}
