//! Issue 11, item 2 and the privacy claim: a config is recorded by digest and stored, shown only
//! redacted (Statement, `registry show`, BOM, error messages), replayed from the original bytes;
//! no home directory or user name in an attestation.

mod util;

use util::{Workspace, INPUT, OK};

/// A secret planted in configs; never allowed in anything shown.
const PLANTED: &str = "s3cr3tPlantedPw";

fn hf_token() -> String {
    format!("hf_{}", "QwErTyUiOp".repeat(4))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn in_repo(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> util::Run {
    let mut cmd = ws.command(args);
    cmd.current_dir(ws.path("repo")).envs(env.iter().copied());
    let output = cmd.output().expect("run trainprov");
    util::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn commit_all(ws: &Workspace, rel: &str) {
    ws.git(rel, &["init", "-q"]);
    ws.git(rel, &["add", "."]);
    ws.git(rel, &["commit", "-qm", "example"]);
}

fn retrain(ws: &Workspace, extra: &[&str], env: &[(&str, &str)]) -> util::Run {
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
    in_repo(ws, &args, env)
}

/// The envelope's raw text and its decoded payload (the Statement).
fn envelope_texts(path: &std::path::Path) -> (String, String) {
    let raw = String::from_utf8(std::fs::read(path).expect("read")).expect("utf-8");
    let envelope: serde_json::Value = serde_json::from_str(&raw).expect("json");
    let payload = util::unb64(envelope["payload"].as_str().expect("payload"));
    (raw, String::from_utf8(payload).expect("utf-8 payload"))
}

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(PLANTED), "{what} holds the password: {text}");
    assert!(
        !text.contains(&hf_token()),
        "{what} holds the token: {text}"
    );
}

fn config_text() -> String {
    format!(
        "lr: 0.1\nhub_token: {}\ndb_password: \"{PLANTED}\"\nuse_auth_token: true\n",
        hf_token()
    )
}

/// `repo/` (git, config ignored so only the registry holds it) with one wrapped run whose
/// product is a copy of the config: a replay from the redacted text would differ.
fn run_with_secret_config() -> (Workspace, String) {
    let ws = Workspace::new();
    ws.write("repo/.gitignore", "train.yaml\nout/\n");
    ws.write("repo/README", "x\n");
    commit_all(&ws, "repo");
    ws.write("repo/train.yaml", config_text());
    ws.keygen("signer", "");
    let token_param = format!("note={}", hf_token());
    let run = in_repo(
        &ws,
        &[
            "run",
            "--json",
            "--out",
            "out",
            "--key",
            "../keys/signer.key",
            "--config",
            "train.yaml",
            "--param",
            &token_param,
            "--",
            "sh",
            "-c",
            "mkdir -p out && cp train.yaml out/used.yaml",
        ],
        &[],
    )
    .expect_code(OK, "run with a secret config");
    let id = run.json()["run_id"].as_str().expect("run id").to_string();
    (ws, id)
}

#[test]
fn issue11_config_secrets_never_enter_the_attestation() {
    let (ws, id) = run_with_secret_config();
    let attestation = ws.path("repo/out/provenance.intoto.json");
    let (raw, payload) = envelope_texts(&attestation);
    assert_no_secret("the envelope", &raw);
    assert_no_secret("the Statement", &payload);

    let statement: serde_json::Value = serde_json::from_str(&payload).expect("statement");
    let predicate = &statement["predicate"];
    let shown = &predicate["buildDefinition"]["externalParameters"]["configs"]["train.yaml"];
    let content = shown["content"].as_str().expect("a redacted view is shown");
    assert_eq!(
        content,
        "lr: 0.1\nhub_token: ***\ndb_password: \"***\"\nuse_auth_token: true\n"
    );
    assert_eq!(
        shown["redacted"],
        serde_json::json!(["hub_token", "db_password"])
    );
    assert_eq!(
        shown["contentDigest"]["sha256"],
        sha256_hex(content.as_bytes())
    );
    let original = config_text();
    assert_eq!(shown["digest"]["sha256"], sha256_hex(original.as_bytes()));
    assert_eq!(
        predicate["buildDefinition"]["externalParameters"]["params"]["note"], "***",
        "a token-shaped --param value is redacted"
    );
    let dep = predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("deps")
        .iter()
        .find(|d| d["name"] == "config:train.yaml")
        .expect("config dependency")
        .clone();
    assert_eq!(dep["annotations"]["redacted"], shown["redacted"]);
    let object = dep["annotations"]["object"].as_str().expect("stored");
    let stored = ws.path(&format!(
        "repo/.trainprov/objects/{}/{}",
        &object[..2],
        &object[2..]
    ));
    assert_eq!(
        std::fs::read(&stored).expect("the registry holds the original"),
        original.as_bytes()
    );

    let show =
        in_repo(&ws, &["registry", "show", &id, "--json"], &[]).expect_code(OK, "registry show");
    assert_no_secret("registry show --json", &show.stdout);
    let show = in_repo(&ws, &["registry", "show", &id], &[]).expect_code(OK, "registry show");
    assert_no_secret("registry show", &show.stdout);
    for format in ["cyclonedx", "spdx"] {
        let bom = in_repo(
            &ws,
            &[
                "bom",
                "out/provenance.intoto.json",
                "--key",
                "../keys/signer.pub",
                "--format",
                format,
            ],
            &[],
        )
        .expect_code(OK, "bom");
        assert_no_secret(format, &bom.stdout);
    }
}

#[test]
fn issue11_retrain_of_a_redacted_config_uses_the_original_or_says_what_it_needs() {
    let (ws, _) = run_with_secret_config();
    // The registry has the original: the replay copies it, so the product is identical.
    let run = retrain(&ws, &[], &[]).expect_code(OK, "replay with the stored config");
    assert_eq!(run.json()["verdict"], "identical", "{}", run.stderr);

    // Another host: the object is gone.
    let objects = ws.path("repo/.trainprov/objects");
    let original = config_text();
    let blake3 = blake3::hash(original.as_bytes()).to_hex().to_string();
    std::fs::remove_file(objects.join(&blake3[..2]).join(&blake3[2..])).expect("rm object");
    let run = retrain(&ws, &[], &[]).expect_code(INPUT, "config object missing");
    let sha = sha256_hex(original.as_bytes());
    let message = run
        .stderr
        .lines()
        .find(|l| l.contains("--config-file"))
        .unwrap_or_else(|| panic!("no --config-file advice: {}", run.stderr));
    for needed in [
        "train.yaml",
        sha.as_str(),
        "hub_token, db_password",
        "--config-file train.yaml=PATH",
    ] {
        assert!(message.contains(needed), "names {needed}: {message}");
    }
    assert_no_secret("the error", &run.stderr);

    // A file with other bytes is refused; an unknown name is refused.
    ws.write("wrong.yaml", "lr: 0.1\n");
    let run = retrain(&ws, &["--config-file", "train.yaml=../wrong.yaml"], &[])
        .expect_code(INPUT, "wrong config bytes");
    assert!(
        run.stderr
            .contains("does not match the recorded config train.yaml"),
        "{}",
        run.stderr
    );
    let run = retrain(&ws, &["--config-file", "other.yaml=../wrong.yaml"], &[])
        .expect_code(INPUT, "unknown config name");
    assert!(
        run.stderr
            .contains("no config named other.yaml (recorded: train.yaml)"),
        "{}",
        run.stderr
    );

    // The original, supplied by the user, reproduces.
    ws.write("kept/train.yaml", original);
    let run = retrain(
        &ws,
        &["--config-file", "train.yaml=../kept/train.yaml"],
        &[],
    )
    .expect_code(OK, "replay with --config-file");
    assert_eq!(run.json()["verdict"], "identical", "{}", run.stderr);
}

#[test]
fn issue11_trainer_config_is_recorded_redacted_and_replayed_from_the_original() {
    let ws = Workspace::new();
    util::write_tiny_llama(&ws, "repo/tl", 2);
    let config = String::from_utf8(ws.read("repo/tl/train.toml")).expect("utf-8");
    // The trainer refuses unknown keys, so a token can only sit in a comment...
    let commented = format!("# push with {}\n{config}", hf_token());
    ws.write("repo/tl/train.toml", &commented);
    ws.write("repo/.gitignore", "tl/train.toml\nout/\nbad.toml\n");
    commit_all(&ws, "repo");
    ws.keygen("signer", "");
    // ...and a refused key must not be echoed by the error message.
    ws.write(
        "repo/bad.toml",
        format!("hub_token = \"{PLANTED}\"\n{config}"),
    );
    let run = in_repo(
        &ws,
        &["train", "bad.toml", "--key", "../keys/signer.key"],
        &[],
    )
    .expect_code(INPUT, "unknown key");
    assert!(run.stderr.contains("hub_token"), "{}", run.stderr);
    assert_no_secret("the config error", &run.stderr);

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
        &[],
    )
    .expect_code(OK, "train");
    let (raw, payload) = envelope_texts(&ws.path("repo/out/provenance.intoto.json"));
    assert_no_secret("the trainer's envelope", &raw);
    assert_no_secret("the trainer's Statement", &payload);
    let statement: serde_json::Value = serde_json::from_str(&payload).expect("statement");
    let shown = &statement["predicate"]["buildDefinition"]["externalParameters"]["configs"]
        ["tl/train.toml"];
    assert_eq!(shown["redacted"], serde_json::json!(["line 1"]));
    assert!(shown["content"]
        .as_str()
        .expect("content")
        .starts_with("# push with ***\n"));

    let blake3 = blake3::hash(commented.as_bytes()).to_hex().to_string();
    let object = ws.path(&format!(
        "repo/.trainprov/objects/{}/{}",
        &blake3[..2],
        &blake3[2..]
    ));
    std::fs::rename(&object, ws.path("kept.toml")).expect("move the object away");
    let run = retrain(&ws, &[], &[]).expect_code(INPUT, "trainer config missing");
    assert!(
        run.stderr
            .contains("--config-file tl/train.toml=PATH (its SHA-256 must be"),
        "{}",
        run.stderr
    );
    let run = retrain(&ws, &["--config-file", "tl/train.toml=../kept.toml"], &[])
        .expect_code(OK, "trainer replay with --config-file");
    assert_eq!(run.json()["verdict"], "identical", "{}", run.stderr);
}

#[test]
fn issue11_no_home_directory_or_user_name_in_the_attestation() {
    let ws = Workspace::new();
    let home = ws.dir.path().to_str().expect("utf-8 temp dir").to_string();
    let user = "zqhomeuser";
    let env = [("HOME", home.as_str()), ("USER", user), ("LOGNAME", user)];
    ws.write("repo/.gitignore", "out/\n");
    ws.write("repo/data/a.csv", "x,label\n1,0\n");
    ws.write("repo/train.yaml", format!("output_dir: {home}/repo/out\n"));
    commit_all(&ws, "repo");
    ws.keygen("signer", "");
    let data = format!("{home}/repo/data");
    let script = "mkdir -p out && cat \"$1\"/*.csv > out/all.csv";
    in_repo(
        &ws,
        &[
            "run",
            "--out",
            "out",
            "--key",
            "../keys/signer.key",
            "--data",
            &data,
            "--config",
            "train.yaml",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &data,
        ],
        &env,
    )
    .expect_code(OK, "run under HOME");
    let (raw, payload) = envelope_texts(&ws.path("repo/out/provenance.intoto.json"));
    for text in [&raw, &payload] {
        assert!(!text.contains(&home), "home directory recorded: {payload}");
        assert!(!text.contains(user), "user name recorded: {payload}");
    }
    let statement: serde_json::Value = serde_json::from_str(&payload).expect("statement");
    let build = &statement["predicate"]["buildDefinition"];
    assert_eq!(build["externalParameters"]["cwd"], "~/repo");
    assert_eq!(build["externalParameters"]["argv"][4], "~/repo/data");
    let data_dep = build["resolvedDependencies"]
        .as_array()
        .expect("deps")
        .iter()
        .find(|d| d["annotations"]["role"] == "data")
        .expect("data input")
        .clone();
    assert_eq!(data_dep["uri"], "file://~/repo/data");
    assert_eq!(
        build["externalParameters"]["configs"]["train.yaml"]["redacted"],
        serde_json::json!(["home directory"])
    );

    // Replay expands `~` again: the inputs resolve, the argv reads the same data.
    let run = retrain(&ws, &[], &env).expect_code(OK, "replay under HOME");
    assert_eq!(run.json()["verdict"], "identical", "{}", run.stderr);
    in_repo(
        &ws,
        &[
            "verify",
            "out/provenance.intoto.json",
            "--key",
            "../keys/signer.pub",
            "--inputs",
        ],
        &env,
    )
    .expect_code(OK, "verify --inputs resolves ~");
}
