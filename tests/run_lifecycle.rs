//! The life of a `trainprov run` under attack (issue 11): stored logs redacted and capped, a
//! private registry, an `--out` that would sign the repository, a wrapper killed between
//! signing and finalizing, and a wrapper killed while its command runs.

mod util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use util::{Workspace, INPUT, OK};

/// `repo/` as a git repository with one committed file, and a key pair in `keys/`.
fn repo() -> Workspace {
    let ws = Workspace::new();
    ws.write("repo/train.sh", "echo training\n");
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "."]);
    ws.git("repo", &["commit", "-qm", "init"]);
    ws.keygen("signer", "");
    ws
}

/// `trainprov run --out out --key ... EXTRA -- sh -c SCRIPT` in `repo/`, not yet started.
fn run_command(ws: &Workspace, extra: &[&str], script: &str) -> std::process::Command {
    let mut args = vec!["run", "--out", "out", "--key", "../keys/signer.key"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let mut command = ws.command(&args);
    command.current_dir(ws.path("repo"));
    command
}

fn output_of(mut command: std::process::Command) -> util::Run {
    let output = command.output().expect("run trainprov");
    util::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                stack.push(path.clone());
            }
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The stored object (under `registry/objects`) whose bytes contain `marker`.
fn object_containing(registry: &Path, marker: &str) -> Vec<u8> {
    files_under(&registry.join("objects"))
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(p).expect("read object"))
        .find(|bytes| contains(bytes, marker.as_bytes()))
        .unwrap_or_else(|| panic!("no stored object contains {marker:?}"))
}

#[test]
fn issue11_stored_logs_are_redacted_but_shown_live() {
    let ws = repo();
    let env_secret = "s3cr3t-env-value-48213";
    let argv_secret = "argv-s3cr3t-99120";
    let github = format!("ghp_{}", "Ab3dE6gH9j".repeat(4));
    // A token echoed in one write, a URL credential on stderr, the env value (which has no
    // known shape) and the command line's --api-key value echoed back.
    let script = format!(
        "echo \"start token=$HF_TOKEN\"; echo {github}; echo https://bob:{argv_secret}x@example.invalid/r >&2; \
         echo \"key was $2\"; mkdir -p out && echo ok > out/result.txt"
    );
    let mut command = run_command(&ws, &[], &script);
    command.args(["sh", "--api-key", argv_secret]);
    command.env("HF_TOKEN", env_secret);
    let run = output_of(command).expect_code(OK, "run echoing secrets");
    // Live output is the command's own, unredacted.
    assert!(run.stdout.contains(env_secret), "{}", run.stdout);
    assert!(run.stdout.contains(&github), "{}", run.stdout);
    // Nothing stored keeps any of them.
    let registry = ws.path("repo/.trainprov");
    for file in files_under(&registry).into_iter().filter(|p| p.is_file()) {
        let bytes = std::fs::read(&file).expect("read");
        for secret in [env_secret, argv_secret, github.as_str()] {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{secret} stored in {}",
                file.display()
            );
        }
    }
    let stdout_log = object_containing(&registry, "start token=");
    let text = String::from_utf8_lossy(&stdout_log);
    assert!(text.contains("start token=***\n***\n"), "{text}");
    assert!(text.contains("key was ***\n"), "{text}");
    let stderr_log = object_containing(&registry, "example.invalid");
    assert_eq!(
        String::from_utf8_lossy(&stderr_log),
        "https://***@example.invalid/r\n"
    );
}

#[test]
fn issue11_stored_logs_keep_first_and_last_bytes_and_count_the_rest() {
    let ws = repo();
    let mut command = run_command(
        &ws,
        &["--json"],
        "seq 1 20000; mkdir -p out && echo ok > out/result.txt",
    );
    command.env("TRAINPROV_LOG_KEEP_BYTES", "1000");
    let run = output_of(command).expect_code(OK, "run with a small log cap");
    let report = run.json();
    let total: u64 = (1..=20000u64).map(|n| n.to_string().len() as u64 + 1).sum();
    let stats = &report["logs"]["stdout"];
    assert_eq!(stats["total_bytes"], total, "{report}");
    assert_eq!(stats["truncated"], true, "{report}");
    assert_eq!(report["logs"]["stderr"]["truncated"], false, "{report}");
    let log = object_containing(&ws.path("repo/.trainprov"), "bytes omitted here");
    let text = String::from_utf8_lossy(&log);
    assert!(text.starts_with("1\n2\n3\n"), "{}", &text[..50]);
    assert!(text.ends_with("19999\n20000\n"), "{text}");
    assert!(
        text.contains(&format!("the command wrote {total} bytes to stdout")),
        "{text}"
    );
    assert_eq!(stats["stored_bytes"], log.len() as u64);
    assert!(log.len() < 2200, "first and last 1000 bytes plus one line");

    // A bad setting is an input error, not a silent default.
    let mut command = run_command(&ws, &[], "true");
    command.env("TRAINPROV_LOG_KEEP_BYTES", "4MB");
    let run = output_of(command).expect_code(INPUT, "bad log cap");
    assert!(
        run.stderr.contains("TRAINPROV_LOG_KEEP_BYTES=4MB"),
        "{}",
        run.stderr
    );
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[test]
fn issue11_registry_is_private() {
    let ws = repo();
    ws.write("repo/data/a.jsonl", "{\"text\":\"hi\"}\n");
    output_of(run_command(
        &ws,
        &["--data", "data"],
        "echo hello; mkdir -p out && echo ok > out/result.txt",
    ))
    .expect_code(OK, "run");
    let registry = ws.path("repo/.trainprov");
    assert_eq!(mode(&registry), 0o700);
    let everything = files_under(&registry);
    assert!(
        everything
            .iter()
            .any(|p| p.ends_with("registry.sqlite-wal"))
            || everything.iter().any(|p| p.ends_with("registry.sqlite"))
    );
    // The hash cache is per user (issue 11 item 7), never inside a registry.
    assert!(!everything.iter().any(|p| p.ends_with("hash-cache.sqlite")));
    assert!(everything.len() > 8, "{everything:?}");
    for path in everything {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), expected, "{}", path.display());
    }

    // A registry written by an older trainprov (0755 / 0644) is tightened when opened.
    use std::os::unix::fs::PermissionsExt as _;
    let set = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    set(&registry, 0o755);
    set(&registry.join("registry.sqlite"), 0o644);
    ws.run(&["registry", "list", "--registry", "repo/.trainprov"])
        .expect_code(OK, "list");
    assert_eq!(mode(&registry), 0o700);
    assert_eq!(mode(&registry.join("registry.sqlite")), 0o600);
}

#[test]
fn issue11_out_that_would_sign_the_repository_is_refused() {
    let ws = repo();
    ws.write("other/.git/HEAD", "ref: refs/heads/main\n");
    ws.write("repo/sub/x.txt", "x");
    for (cwd, out, extra, expect) in [
        ("repo", ".", vec![], "working directory"),
        ("repo/sub", "..", vec![], "working directory"),
        ("repo", "./", vec![], "working directory"),
        ("repo", "out", vec!["--registry", "out/reg"], "registry"),
        ("repo", "../other", vec![], "git repository"),
        ("repo", "../other/.git/x", vec![], ".git directory"),
    ] {
        let key = if cwd == "repo" {
            "../keys/signer.key"
        } else {
            "../../keys/signer.key"
        };
        let mut args = vec!["run", "--out", out, "--key", key];
        args.extend_from_slice(&extra);
        args.extend_from_slice(&["--", "sh", "-c", "echo signed > product.txt"]);
        let mut command = ws.command(&args);
        command.current_dir(ws.path(cwd));
        let run = output_of(command).expect_code(INPUT, &format!("--out {out} in {cwd}"));
        assert!(
            run.stderr.contains(expect) && run.stderr.contains("--out"),
            "--out {out}: {}",
            run.stderr
        );
    }
    assert!(
        !ws.path("repo/product.txt").exists(),
        "the command never ran"
    );
    assert!(
        !ws.path("repo/.trainprov").exists(),
        "no registry was created"
    );
    assert!(!ws.path("repo/provenance.intoto.json").exists());
}

/// The latest run's status; empty before the registry exists.
fn run_status(ws: &Workspace) -> String {
    let list = ws.run(&[
        "registry",
        "list",
        "--registry",
        "repo/.trainprov",
        "--json",
    ]);
    if list.code != OK {
        return String::new();
    }
    list.json()["runs"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[cfg(unix)]
#[test]
fn issue11_kill_between_signing_and_finalizing_leaves_no_valid_signature() {
    let ws = repo();
    let mut command = run_command(
        &ws,
        &[],
        "mkdir -p out && echo weights > out/w.bin; i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
    );
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut wrapper = command.spawn().expect("spawn");
    wait_for("the running row", || run_status(&ws) == "running");
    // Hold the registry's write lock, so that the wrapper signs and then waits to finalize.
    let db = rusqlite::Connection::open(ws.path("repo/.trainprov/registry.sqlite")).expect("db");
    db.execute_batch("BEGIN IMMEDIATE")
        .expect("lock the registry");
    ws.write("repo/go", "");
    let out = ws.path("repo/out");
    wait_for("the signatures", || {
        out.join(".trainprov-pending-provenance.intoto.json")
            .exists()
            || out.join("provenance.intoto.json").exists()
    });
    std::thread::sleep(Duration::from_millis(200));
    wrapper.kill().expect("SIGKILL the wrapper");
    wrapper.wait().expect("reap");
    db.execute_batch("ROLLBACK").expect("unlock");
    drop(db);
    assert!(
        !out.join("provenance.intoto.json").exists() && !out.join("model.sig").exists(),
        "a signature of an unfinished run is published: {:?}",
        std::fs::read_dir(&out).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert_eq!(run_status(&ws), "abandoned");

    // The next run into the same directory neither signs nor keeps what the killed one left,
    // nor the temporary file of an interrupted atomic write.
    ws.write("repo/out/.trainprov-Xa81Zq", "half-written");
    let run = output_of(run_command(&ws, &["--json"], "echo weights2 > out/w.bin"))
        .expect_code(OK, "next run");
    let products: Vec<String> = run.json()["products"]
        .as_array()
        .expect("products")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(products, ["w.bin"]);
    let left: Vec<String> = std::fs::read_dir(&out)
        .expect("ls out")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".trainprov-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    ws.run(&[
        "verify",
        "repo/out/provenance.intoto.json",
        "--key",
        "keys/signer.pub",
        "--model-dir",
        "repo/out",
    ])
    .expect_code(OK, "the next run verifies");
}

#[cfg(unix)]
fn alive(pid: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", "kill -s 0 \"$1\" 2>/dev/null", "sh", pid])
        .status()
        .expect("kill -0")
        .success()
}

#[cfg(unix)]
#[test]
fn issue11_killed_wrapper_takes_the_command_group_with_it() {
    let ws = repo();
    // `sh` and its `sleep` (a grandchild of trainprov) both run in the command's group.
    let mut command = run_command(
        &ws,
        &[],
        "sleep 30 & echo \"$$ $!\" > pids.tmp && mv pids.tmp pids.txt; wait; echo late > late.txt",
    );
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut wrapper = command.spawn().expect("spawn");
    let pids_file = ws.path("repo/pids.txt");
    wait_for("the command to start", || pids_file.exists());
    let text = std::fs::read_to_string(&pids_file).expect("pids");
    let pids: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{text}");
    assert!(pids.iter().all(|p| alive(p)));
    wrapper.kill().expect("SIGKILL the wrapper");
    wrapper.wait().expect("reap");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<&&str> = pids.iter().filter(|p| alive(p)).collect();
    for pid in &survivors {
        let _ = std::process::Command::new("kill")
            .args(["-s", "KILL", pid])
            .status();
    }
    assert!(
        survivors.is_empty(),
        "the command's processes {survivors:?} outlived the wrapper"
    );
    assert!(!ws.path("repo/late.txt").exists());
}
