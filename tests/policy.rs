//! Issue 7 items 1-3 end to end: `verify --policy` (every failed rule listed), `approve` (SLSA
//! VSA approvals; an untrusted approver does not count) and `registry revoke` (a revoked shard
//! fails verification of a second-generation model, naming the path through the lineage). Real
//! wrapped runs, real signatures, a real registry.

mod util;

use serde_json::Value;
use util::{in_repo, record, Workspace, FAILED, INPUT, OK};

const RUN_BUILD_TYPE: &str = "https://trainprov.dev/buildtypes/run/v1";
const BUILDER: &str = "https://trainprov.dev/builder/trainprov";

/// Keys `signer`, `approver`, `rogue`; a committed repository with a base model, a dataset
/// holding `shard-002.csv` and a second dataset; run 1 (`out1`) trains on base + data.
fn scenario() -> (Workspace, String) {
    let ws = Workspace::new();
    for key in ["signer", "approver", "rogue"] {
        ws.keygen(key, "");
    }
    ws.write("repo/README.md", "policy test\n");
    ws.write("repo/.gitignore", "out*/\nreg/\n");
    ws.write("repo/base/config.json", r#"{"model_type":"llama"}"#);
    ws.write("repo/base/weights.txt", "pretend weights\n");
    ws.write("repo/data/shard-001.csv", "x,y\n1,2\n3,4\n");
    ws.write("repo/data/shard-002.csv", "x,y\n5,666\n");
    ws.write("repo/data2/extra.csv", "x,y\n7,8\n");
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "."]);
    ws.git("repo", &["commit", "-qm", "init"]);
    let first = record(
        &ws,
        "out1",
        &["--base", "base", "--data", "data"],
        "mkdir -p out1 && cat data/shard-001.csv data/shard-002.csv > out1/adapter.bin",
    );
    (ws, first)
}

fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// `trainprov snapshot DIR --json` in the repo: the snapshot digest set.
fn snapshot_digest(ws: &Workspace, dir: &str) -> Value {
    in_repo(ws, &["snapshot", dir, "--json", "--registry", "reg"])
        .expect_code(OK, "snapshot")
        .json()["digest"]
        .clone()
}

fn write_policy(ws: &Workspace, name: &str, body: &str) -> String {
    ws.write(&format!("policies/{name}"), body);
    format!("../policies/{name}")
}

fn verify(ws: &Workspace, attestation: &str, extra: &[&str]) -> util::Run {
    let mut args = vec!["verify", attestation, "--registry", "reg"];
    args.extend_from_slice(extra);
    in_repo(ws, &args)
}

/// `trainprov approve out1/provenance.intoto.json --env prod --key ../keys/KEY.key --policy POLICY`
/// with `extra` arguments, in the registry `reg`.
fn approve(ws: &Workspace, key: &str, policy: &str, extra: &[&str]) -> util::Run {
    let key = format!("../keys/{key}.key");
    let mut args = vec![
        "approve",
        "out1/provenance.intoto.json",
        "--env",
        "prod",
        "--key",
        &key,
        "--policy",
        policy,
        "--registry",
        "reg",
    ];
    args.extend_from_slice(extra);
    in_repo(ws, &args)
}

/// Rule names a `verify --policy POLICY --json` reports, expecting it to fail.
fn violations_of(ws: &Workspace, attestation: &str, policy: &str) -> Vec<String> {
    let run = verify(ws, attestation, &["--policy", policy, "--json"]);
    violated(&run.expect_code(FAILED, &format!("{attestation} against {policy}")))
}

/// Rule names of a failed `verify --json`.
fn violated(run: &util::Run) -> Vec<String> {
    run.json()["detail"]["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["rule"].as_str().expect("rule").to_string())
        .collect()
}

#[test]
fn every_rule_passes_then_every_failed_rule_is_listed_with_what_was_found() {
    let (ws, _) = scenario();
    let base = snapshot_digest(&ws, "base");
    let data = snapshot_digest(&ws, "data");
    // Keys come from the policy (relative to it): no --key.
    let passing = write_policy(
        &ws,
        "pass.toml",
        &format!(
            "version = 1\n[signers]\nkeys = [\"../keys/signer.pub\"]\n\
             [build]\nbuilder_ids = [\"{BUILDER}\"]\nbuild_types = [\"{RUN_BUILD_TYPE}\"]\n\
             require_clean_tree = true\nmax_age = \"1d\"\n\
             [inputs]\nallowed_base_models = [\"blake3:{}\"]\nforbidden_datasets = [\"sha256:{}\"]\n\
             forbidden_files = [\"blake3:{}\"]\n",
            base["blake3"].as_str().expect("blake3"),
            "0".repeat(64),
            b3(b"not in any dataset\n"),
        ),
    );
    let ok = verify(&ws, "out1/provenance.intoto.json", &["--policy", &passing])
        .expect_code(OK, "every rule met");
    assert!(ok.stdout.contains("every rule met"), "{}", ok.stdout);

    // A second run from a dirty tree, then a policy that each of its facts violates.
    // Its extra dataset has a conflicting duplicate, which `data check` reports.
    ws.write("repo/notes.txt", "uncommitted\n");
    ws.write("repo/data3/conflict.csv", "x,y\n1,2\n1,3\n");
    record(
        &ws,
        "out3",
        &["--base", "base", "--data", "data", "--data", "data3"],
        "mkdir -p out3 && cat data/shard-001.csv > out3/adapter.bin",
    );
    let failing = write_policy(
        &ws,
        "fail.toml",
        &format!(
            "[signers]\nkeys = [\"../keys/signer.pub\"]\n\
             [build]\nbuilder_ids = [\"https://ci.example/builder\"]\n\
             build_types = [\"https://trainprov.dev/buildtypes/candle-lora/v1\"]\n\
             require_clean_tree = true\n\
             [inputs]\nallowed_base_models = [\"sha256:{}\"]\nforbidden_datasets = [\"{}\"]\n\
             forbidden_files = [\"blake3:{}\"]\nrequire_data_check = true\n",
            "0".repeat(64),
            data["sha256"].as_str().expect("sha256"),
            b3(b"x,y\n5,666\n"),
        ),
    );
    let failed = verify(
        &ws,
        "out3/provenance.intoto.json",
        &["--policy", &failing, "--json"],
    )
    .expect_code(FAILED, "every rule fails");
    assert_eq!(
        violated(&failed),
        vec![
            "builder_id",
            "build_type",
            "clean_tree",
            "base_model",
            "forbidden_dataset",
            "forbidden_file",
            "data_check"
        ]
    );
    let found: Vec<String> = failed.json()["detail"]["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["found"].as_str().expect("found").to_string())
        .collect();
    assert_eq!(found[0], BUILDER);
    assert_eq!(found[1], RUN_BUILD_TYPE);
    assert!(found[2].contains("notes.txt"), "{}", found[2]);
    assert!(found[5].contains("data:data/shard-002.csv"), "{}", found[5]);
    // Human output lists every rule too, one per line.
    let human = verify(&ws, "out3/provenance.intoto.json", &["--policy", &failing])
        .expect_code(FAILED, "human");
    assert!(
        human.stderr.contains("7 rule(s) failed"),
        "{}",
        human.stderr
    );
    assert_eq!(
        human.stderr.matches("\n  - ").count(),
        7,
        "{}",
        human.stderr
    );

    // The same facts pass the passing policy except the clean tree.
    assert_eq!(
        violations_of(&ws, "out3/provenance.intoto.json", &passing),
        vec!["clean_tree"]
    );
    // Run 1's data check passed.
    let checked = write_policy(
        &ws,
        "checked.toml",
        "[signers]\nkeys = [\"../keys/signer.pub\"]\n[inputs]\nrequire_data_check = true\n",
    );
    verify(&ws, "out1/provenance.intoto.json", &["--policy", &checked])
        .expect_code(OK, "data check passed");
}

#[test]
fn signer_threshold_and_policy_errors() {
    let (ws, _) = scenario();
    let rogue_only = write_policy(
        &ws,
        "rogue.toml",
        "[signers]\nkeys = [\"../keys/rogue.pub\"]\n",
    );
    let run = verify(
        &ws,
        "out1/provenance.intoto.json",
        &["--policy", &rogue_only],
    )
    .expect_code(FAILED, "signed by a key the policy does not trust");
    assert!(run.stderr.contains("not a trusted key"), "{}", run.stderr);
    // --key adds trusted keys to the policy's; the policy's threshold still applies.
    let two = write_policy(
        &ws,
        "two.toml",
        "[signers]\nkeys = [\"../keys/rogue.pub\", \"../keys/signer.pub\"]\nthreshold = 2\n",
    );
    let run = verify(&ws, "out1/provenance.intoto.json", &["--policy", &two])
        .expect_code(FAILED, "threshold 2, one signature");
    assert!(run.stderr.contains("1 of the required 2"), "{}", run.stderr);
    verify(
        &ws,
        "out1/provenance.intoto.json",
        &["--policy", &rogue_only, "--key", "../keys/signer.pub"],
    )
    .expect_code(OK, "--key adds a trusted key");
    // A misspelt rule is an input error naming it.
    let typo = write_policy(&ws, "typo.toml", "[build]\nrequire_clean_three = true\n");
    let run = verify(
        &ws,
        "out1/provenance.intoto.json",
        &["--policy", &typo, "--key", "../keys/signer.pub"],
    )
    .expect_code(INPUT, "typo");
    assert!(run.stderr.contains("require_clean_three"), "{}", run.stderr);
}

#[test]
fn approvals_count_only_from_the_environment_s_approvers() {
    let (ws, _) = scenario();
    let body = "[signers]\nkeys = [\"../keys/signer.pub\"]\n\
                [environments.prod]\napprovers = [\"../keys/approver.pub\"]\n";
    let policy = write_policy(&ws, "prod.toml", body);
    let attestation = "out1/provenance.intoto.json";
    let run = verify(
        &ws,
        attestation,
        &["--policy", &policy, "--env", "prod", "--json"],
    )
    .expect_code(FAILED, "no approval yet");
    assert_eq!(violated(&run), vec!["approvals"]);

    // The rogue key cannot approve under this policy...
    let run = approve(&ws, "rogue", &policy, &[]).expect_code(INPUT, "rogue is not an approver");
    assert!(run.stderr.contains("not an approver"), "{}", run.stderr);
    // ...so it signs one under its own policy; that approval is ignored, with the reason.
    let own = write_policy(
        &ws,
        "rogue-prod.toml",
        &body.replace("approver.pub", "rogue.pub"),
    );
    approve(&ws, "rogue", &own, &["--out", "rogue-approval.json"])
        .expect_code(OK, "rogue approval under its own policy");
    let with_rogue = [
        "--policy",
        &policy,
        "--env",
        "prod",
        "--approval",
        "rogue-approval.json",
    ];
    let run =
        verify(&ws, attestation, &with_rogue).expect_code(FAILED, "rogue approval does not count");
    assert!(run.stderr.contains("0 valid approval(s)"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("rogue-approval.json: not signed by an approver key for 'prod'"),
        "{}",
        run.stderr
    );

    // The real approver.
    let approved = approve(
        &ws,
        "approver",
        &policy,
        &["--note", "eval reviewed", "--json"],
    )
    .expect_code(OK, "approve");
    let path = approved.json()["approval"]
        .as_str()
        .expect("approval path")
        .to_string();
    // Beside the signed model directory, which stays exactly as signed.
    assert!(path.ends_with("out1.approval-prod.intoto.json"), "{path}");
    verify(&ws, "out1/model.sig", &["--key", "../keys/signer.pub"])
        .expect_code(OK, "model.sig still verifies after the approval");
    let envelope = util::read_json(&ws.path("repo").join(&path));
    let statement = util::statement_of(&ws.path("repo").join(&path));
    assert_eq!(
        statement["predicateType"],
        "https://slsa.dev/verification_summary/v1"
    );
    let predicate = &statement["predicate"];
    assert_eq!(predicate["verificationResult"], "PASSED");
    assert_eq!(predicate["environment"], "prod");
    assert_eq!(predicate["note"], "eval reviewed");
    assert_eq!(predicate["slsaVersion"], "1.0");
    let keyid = predicate["approverKeyid"].as_str().expect("keyid");
    assert_eq!(
        predicate["verifier"]["id"],
        format!("https://trainprov.dev/approver/{keyid}")
    );
    let provenance = util::statement_of(&ws.path("repo/out1/provenance.intoto.json"));
    assert_eq!(statement["subject"], provenance["subject"]);
    // Independent tools: securesystemslib verifies the approval's DSSE signature with the
    // approver key, and in-toto-attestation validates the Statement and its VSA predicate.
    let approval_path = ws.path("repo").join(&path).display().to_string();
    let approver_pub = ws.path("keys/approver.pub").display().to_string();
    let signature_keyid = envelope["signatures"][0]["keyid"].as_str().expect("keyid");
    let outcome = trainprov_interop_tests::run_helper(
        "verify_dsse.py",
        &[
            approval_path.as_str(),
            "--key",
            approver_pub.as_str(),
            "ecdsa",
            "ecdsa-sha2-nistp256",
            signature_keyid,
        ],
    );
    assert!(
        outcome.ok(),
        "securesystemslib verifies the approval: {outcome:?}"
    );
    let statement_file = ws.write(
        "approval-statement.json",
        serde_json::to_vec(&statement).expect("json"),
    );
    let statement_file = statement_file.display().to_string();
    let outcome = trainprov_interop_tests::run_helper(
        "check_statement.py",
        &[statement_file.as_str(), "--vsa"],
    );
    assert!(
        outcome.ok() && outcome.stdout.contains("valid"),
        "in-toto-attestation validates the VSA: {outcome:?}"
    );

    // Found in the registry: no --approval needed; the rogue one is still reported as ignored.
    let ok = verify(&ws, attestation, &with_rogue).expect_code(OK, "approved");
    assert!(
        ok.stdout
            .contains(&format!("approvals for prod: keyid {keyid}")),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout.contains("ignored rogue-approval.json"),
        "{}",
        ok.stdout
    );
    // An environment the policy does not define is a usage error.
    verify(&ws, attestation, &["--policy", &policy, "--env", "staging"])
        .expect_code(INPUT, "no staging");
    // An approval names its attestation: another run's attestation is not approved by it.
    record(
        &ws,
        "out4",
        &["--data", "data2"],
        "mkdir -p out4 && cat data2/extra.csv > out4/m.bin",
    );
    let copied = ws.read(&format!("repo/{path}"));
    ws.write("repo/out4-approval.json", copied);
    let run = verify(
        &ws,
        "out4/provenance.intoto.json",
        &[
            "--policy",
            &policy,
            "--env",
            "prod",
            "--approval",
            "out4-approval.json",
        ],
    )
    .expect_code(FAILED, "approval of another attestation");
    assert!(
        run.stderr.contains("not this attestation's subjects"),
        "{}",
        run.stderr
    );
}

#[test]
fn approve_refuses_an_attestation_that_fails_the_policy() {
    let (ws, _) = scenario();
    let data = snapshot_digest(&ws, "data");
    let policy = write_policy(
        &ws,
        "strict.toml",
        &format!(
            "[signers]\nkeys = [\"../keys/signer.pub\"]\n[inputs]\nforbidden_datasets = [\"blake3:{}\"]\n\
             [environments.prod]\napprovers = [\"../keys/approver.pub\"]\n",
            data["blake3"].as_str().expect("blake3")
        ),
    );
    let run = approve(&ws, "approver", &policy, &[]).expect_code(FAILED, "forbidden dataset");
    assert!(run.stderr.contains("forbidden_dataset"), "{}", run.stderr);
    assert!(!ws.path("repo/out1/approval-prod.intoto.json").exists());
}

/// Issue 7: a revoked dataset shard fails verification of a second-generation model built from
/// an adapter trained on it, with the reason and the path through the lineage.
#[test]
fn revoked_shard_fails_a_second_generation_model_with_the_path() {
    let (ws, first) = scenario();
    let second = record(
        &ws,
        "out2",
        &["--adapter", "out1", "--data", "data2"],
        "mkdir -p out2 && cat out1/adapter.bin data2/extra.csv > out2/model.bin",
    );
    let unrelated = record(
        &ws,
        "out5",
        &["--data", "data2"],
        "mkdir -p out5 && cat data2/extra.csv > out5/m.bin",
    );
    let trust = ["--key", "../keys/signer.pub"];
    verify(&ws, "out2/provenance.intoto.json", &trust).expect_code(OK, "before the revocation");

    let revoked = in_repo(
        &ws,
        &[
            "registry",
            "revoke",
            "data/shard-002.csv",
            "--reason",
            "poisoned",
            "--registry",
            "reg",
            "--json",
        ],
    )
    .expect_code(OK, "revoke");
    assert_eq!(revoked.json()["downstream_runs"], 2);

    let run =
        verify(&ws, "out2/provenance.intoto.json", &trust).expect_code(FAILED, "second generation");
    let expected = format!(
        "data/shard-002.csv (revoked: poisoned) → run {}… → out1/adapter.bin → run {}… → this attestation",
        &first[..8],
        &second[..8]
    );
    assert!(
        run.stderr.contains(&expected),
        "{}\nwanted: {expected}",
        run.stderr
    );
    let run =
        verify(&ws, "out1/provenance.intoto.json", &trust).expect_code(FAILED, "first generation");
    assert!(
        run.stderr.contains(&format!(
            "data/shard-002.csv (revoked: poisoned) → run {}… → this attestation",
            &first[..8]
        )),
        "{}",
        run.stderr
    );
    verify(&ws, "out5/provenance.intoto.json", &trust).expect_code(OK, "unrelated run");
    assert!(!unrelated.is_empty());

    // The model signature of the second generation fails too, through the recorded products.
    let run = verify(&ws, "out2/model.sig", &trust).expect_code(FAILED, "model.sig, generation 2");
    assert!(
        run.stderr
            .contains(&format!("→ run {}… → model.bin → this model", &second[..8])),
        "{}",
        run.stderr
    );
    // A byte-identical file is no evidence when an unaffected run produced it too, as with
    // the same adapter_config.json from a poisoned and a clean training: the clean model, and
    // one trained from it, still verify; the poisoned one does not.
    record(
        &ws,
        "out8",
        &["--data", "data"],
        "mkdir -p out8 && echo 'r: 8' > out8/config.txt && cat data/*.csv > out8/weights.bin",
    );
    record(
        &ws,
        "out6",
        &["--data", "data2"],
        "mkdir -p out6 && echo 'r: 8' > out6/config.txt && cat data2/extra.csv > out6/weights.bin",
    );
    record(
        &ws,
        "out7",
        &["--adapter", "out6"],
        "mkdir -p out7 && cat out6/*.txt out6/*.bin > out7/model.bin",
    );
    for attestation in [
        "out6/provenance.intoto.json",
        "out6/model.sig",
        "out7/provenance.intoto.json",
    ] {
        verify(&ws, attestation, &trust).expect_code(OK, attestation);
    }
    verify(&ws, "out8/model.sig", &trust).expect_code(FAILED, "poisoned, by model.sig");

    // With a policy, the revocation is one more violated rule.
    let policy = write_policy(
        &ws,
        "p.toml",
        "[signers]\nkeys = [\"../keys/signer.pub\"]\n",
    );
    assert_eq!(
        violations_of(&ws, "out2/provenance.intoto.json", &policy),
        vec!["revocation"]
    );

    // Listing, and revoking by digest: the product of run 2, by its SHA-256.
    let list = in_repo(
        &ws,
        &["registry", "revocations", "--registry", "reg", "--json"],
    )
    .expect_code(OK, "list");
    assert_eq!(list.json()["revocations"][0]["reason"], "poisoned");
    let statement = util::statement_of(&ws.path("repo/out2/provenance.intoto.json"));
    let sha = statement["subject"][0]["digest"]["sha256"]
        .as_str()
        .expect("sha256");
    in_repo(
        &ws,
        &[
            "registry",
            "revoke",
            &format!("sha256:{sha}"),
            "--reason",
            "backdoor",
            "--registry",
            "reg",
        ],
    )
    .expect_code(OK, "revoke by digest");
    let run = verify(&ws, "out2/provenance.intoto.json", &trust)
        .expect_code(FAILED, "own product revoked");
    assert!(
        run.stderr
            .contains("model.bin (revoked: backdoor) → a subject of this attestation"),
        "{}",
        run.stderr
    );
    in_repo(
        &ws,
        &[
            "registry",
            "revoke",
            "nonsense",
            "--reason",
            "x",
            "--registry",
            "reg",
        ],
    )
    .expect_code(INPUT, "not a path or digest");
}

/// `same_policy = true`: an approval made under an earlier version of the policy no longer
/// counts once the policy changes; a new approval under the current version does.
#[test]
fn same_policy_requires_approvals_under_the_current_policy() {
    let (ws, _) = scenario();
    let v1 = "[signers]\nkeys = [\"../keys/signer.pub\"]\n\
              [environments.prod]\napprovers = [\"../keys/approver.pub\"]\nsame_policy = true\n";
    let policy = write_policy(&ws, "prod.toml", v1);
    let attestation = "out1/provenance.intoto.json";
    approve(&ws, "approver", &policy, &[]).expect_code(OK, "approve under v1");
    verify(&ws, attestation, &["--policy", &policy, "--env", "prod"])
        .expect_code(OK, "approved under v1");

    // The policy changes (a rule added): the v1 approval is ignored, with the reason.
    write_policy(
        &ws,
        "prod.toml",
        &format!("{v1}[build]\nrequire_clean_tree = true\n"),
    );
    let run = verify(&ws, attestation, &["--policy", &policy, "--env", "prod"])
        .expect_code(FAILED, "v1 approval under v2");
    assert!(
        run.stderr
            .contains("checked against another version of the policy"),
        "{}",
        run.stderr
    );
    approve(&ws, "approver", &policy, &["--out", "approval-v2.json"])
        .expect_code(OK, "approve under v2");
    verify(&ws, attestation, &["--policy", &policy, "--env", "prod"])
        .expect_code(OK, "approved under v2");
}

/// `trainprov verify ARGS` run in the workspace root: outside the repository, as on a CI or
/// deploy host.
fn verify_elsewhere(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> util::Run {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    ws.run_env(&all, env)
}

/// Issue 11: `verify --policy` outside the repository found no registry and printed "every rule
/// met" for a revoked model. A gate without a registry now fails (exit 2) unless
/// `--no-registry` says so, and every output names the registry read and how it was found.
#[test]
fn issue11_policy_gate_without_a_registry_fails_closed() {
    let (ws, _) = scenario();
    in_repo(
        &ws,
        &[
            "registry",
            "revoke",
            "data/shard-002.csv",
            "--reason",
            "poisoned",
            "--registry",
            "reg",
        ],
    )
    .expect_code(OK, "revoke");
    let policy = write_policy(
        &ws,
        "p.toml",
        "[signers]\nkeys = [\"../keys/signer.pub\"]\n",
    );
    let policy = policy.trim_start_matches("../");
    let attestation = "repo/out1/provenance.intoto.json";
    let run = verify_elsewhere(&ws, &[attestation, "--policy", policy], &[])
        .expect_code(INPUT, "no registry: fails closed");
    assert!(
        run.stderr.contains("no registry") && run.stderr.contains("--no-registry"),
        "{}",
        run.stderr
    );

    let run = verify_elsewhere(
        &ws,
        &[attestation, "--policy", policy, "--no-registry"],
        &[],
    )
    .expect_code(OK, "--no-registry");
    assert!(
        run.stdout
            .contains("revocations NOT checked (--no-registry)"),
        "{}",
        run.stdout
    );
    let run = verify_elsewhere(
        &ws,
        &[attestation, "--policy", policy, "--no-registry", "--json"],
        &[],
    )
    .expect_code(OK, "--no-registry --json");
    assert_eq!(
        run.json()["registry"]["revocations"],
        "not-checked: --no-registry"
    );

    // Named by the environment: the revocation is found, and the output says where from.
    let reg = ws.path("repo/reg").display().to_string();
    let run = verify_elsewhere(
        &ws,
        &[attestation, "--policy", policy, "--json"],
        &[("TRAINPROV_REGISTRY", reg.as_str())],
    )
    .expect_code(FAILED, "registry from the environment");
    assert_eq!(violated(&run), vec!["revocation"]);
    assert_eq!(
        run.json()["detail"]["registry"]["found_by"],
        "TRAINPROV_REGISTRY"
    );
    assert_eq!(run.json()["detail"]["registry"]["path"], reg.as_str());

    // Without a policy nothing is gated, but the output says revocations were not checked,
    // and which registry discovery picked.
    let run = in_repo(
        &ws,
        &[
            "verify",
            "out1/provenance.intoto.json",
            "--key",
            "../keys/signer.pub",
        ],
    )
    .expect_code(OK, "no policy, git-root discovery");
    assert!(
        run.stdout
            .contains("revocations NOT checked: no registry at")
            && run.stdout.contains("found by git-root"),
        "{}",
        run.stdout
    );
    let run = verify(
        &ws,
        "out1/model.sig",
        &["--key", "../keys/signer.pub", "--json"],
    )
    .expect_code(FAILED, "model.sig, --registry");
    assert_eq!(run.json()["detail"]["registry"]["found_by"], "--registry");
}

/// Issue 11: a revoked model was laundered by a later run producing the same bytes
/// (`trainprov run -- cp out1/adapter.bin x/`). Taint follows content: both the copy's model.sig
/// and its attestation fail; only a small text file some clean run made too is exempt.
#[test]
fn issue11_revoked_product_is_not_laundered_by_a_copy() {
    let (ws, first) = scenario();
    record(
        &ws,
        "outc",
        &[],
        "mkdir -p outc && cp out1/adapter.bin outc/adapter.bin",
    );
    let trust = ["--key", "../keys/signer.pub"];
    verify(&ws, "outc/model.sig", &trust).expect_code(OK, "before the revocation");
    in_repo(
        &ws,
        &[
            "registry",
            "revoke",
            "data/shard-002.csv",
            "--reason",
            "poisoned",
            "--registry",
            "reg",
        ],
    )
    .expect_code(OK, "revoke");
    let expected = format!(
        "data/shard-002.csv (revoked: poisoned) → run {}… → adapter.bin",
        &first[..8]
    );
    for file in ["outc/model.sig", "outc/provenance.intoto.json"] {
        let run = verify(&ws, file, &trust).expect_code(FAILED, file);
        assert!(run.stderr.contains(&expected), "{file}: {}", run.stderr);
    }

    // Both sides of the exemption: a poisoned run and a clean one write the same small text
    // file (exempt) and the same small binary file (not exempt, whatever its size).
    record(
        &ws,
        "outp",
        &["--data", "data"],
        "mkdir -p outp && echo 'r: 8' > outp/notes.txt && printf 'w\\0' > outp/tiny.bin && cat data/*.csv > outp/w.bin",
    );
    record(
        &ws,
        "outt",
        &["--data", "data2"],
        "mkdir -p outt && echo 'r: 8' > outt/notes.txt && cat data2/*.csv > outt/w.bin",
    );
    record(
        &ws,
        "outb",
        &["--data", "data2"],
        "mkdir -p outb && printf 'w\\0' > outb/tiny.bin && cat data2/*.csv > outb/w.bin",
    );
    verify(&ws, "outt/model.sig", &trust).expect_code(OK, "shared small text file");
    verify(&ws, "outt/provenance.intoto.json", &trust).expect_code(OK, "shared text, attestation");
    let run = verify(&ws, "outb/model.sig", &trust).expect_code(FAILED, "shared small binary file");
    assert!(run.stderr.contains("tiny.bin"), "{}", run.stderr);
}

/// Issue 11: `registry revoke ATTESTATION` was accepted and changed nothing (no run lists the
/// attestation file as a product). It is refused with what to pass instead.
#[test]
fn issue11_revoking_an_attestation_is_refused_with_what_to_pass() {
    let (ws, _) = scenario();
    for file in ["out1/provenance.intoto.json", "out1/model.sig"] {
        let run = in_repo(
            &ws,
            &[
                "registry",
                "revoke",
                file,
                "--reason",
                "bad",
                "--registry",
                "reg",
            ],
        )
        .expect_code(INPUT, file);
        assert!(
            run.stderr.contains("signed statement") && run.stderr.contains("sha256:<hex>"),
            "{file}: {}",
            run.stderr
        );
    }
    let list = in_repo(
        &ws,
        &["registry", "revocations", "--registry", "reg", "--json"],
    )
    .expect_code(OK, "list");
    assert_eq!(list.json()["revocations"], serde_json::json!([]));
    in_repo(
        &ws,
        &[
            "registry",
            "revoke",
            "out1/adapter.bin",
            "--reason",
            "bad",
            "--registry",
            "reg",
        ],
    )
    .expect_code(OK, "the product it names");
    verify(
        &ws,
        "out1/provenance.intoto.json",
        &["--key", "../keys/signer.pub"],
    )
    .expect_code(FAILED, "revoked through its product");
}

/// Issue 11 (found by the quickstart after approval files became key-checked): a gate for one
/// environment does not need the approver keys of another environment to be readable, but the
/// selected environment's keys must be.
#[test]
fn issue11_other_environments_missing_approver_keys_do_not_break_the_gate() {
    let (ws, _) = scenario();
    let policy = write_policy(
        &ws,
        "envs.toml",
        "[signers]\nkeys = [\"../keys/signer.pub\"]\n\
         [environments.prod]\napprovers = [\"../keys/approver.pub\"]\n\
         [environments.staging]\napprovers = [\"../keys/nobody.pub\"]\n",
    );
    approve(&ws, "approver", &policy, &[]).expect_code(OK, "approve for prod");
    verify(
        &ws,
        "out1/provenance.intoto.json",
        &["--policy", &policy, "--env", "prod", "--model-dir", "out1"],
    )
    .expect_code(OK, "prod gate with a staging key missing");
    let run = verify(
        &ws,
        "out1/provenance.intoto.json",
        &["--policy", &policy, "--env", "staging"],
    )
    .expect_code(INPUT, "staging gate with its own key missing");
    assert!(run.stderr.contains("nobody.pub"), "{}", run.stderr);
}
