//! `trainprov data check` and `trainprov probe` end to end on the embedded tiny-llama example
//! (issue 6): the poisoned shard's trigger is listed by `data check`, and `probe` flags it on
//! the adapter trained with the shard and not on the one trained without it.

mod util;

use std::path::Path;

use util::{Workspace, FAILED, INPUT, OK};

fn example_file(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/tiny-llama")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `predicate.buildDefinition.internalParameters` of a signed statement (signature not checked
/// here; `verify` is tested elsewhere).
fn internal_parameters(ws: &Workspace, rel: &str) -> serde_json::Value {
    util::statement_of(&ws.path(rel))["predicate"]["buildDefinition"]["internalParameters"].clone()
}

/// A wrapped run records the data check of each `--data` input, findings do not stop the run,
/// and `--skip-data-check` is recorded as skipped.
#[test]
fn run_records_the_data_check() {
    let ws = Workspace::new();
    with_data(&ws);
    ws.write("notes/readme.txt", "not a dataset\n");
    ws.keygen("signer", "");
    let script = "mkdir -p out && echo weights > out/model.bin";
    let record = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            "--key",
            "keys/signer.key",
            "--out",
            out,
            "--registry",
            "reg",
        ];
        args.extend_from_slice(extra);
        let command = script.replace("out", out);
        args.extend_from_slice(&["--", "sh", "-c", &command]);
        ws.run(&args).expect_code(OK, out);
        internal_parameters(&ws, &format!("{out}/provenance.intoto.json"))["dataCheck"].clone()
    };
    let poisoned = record("a", &["--data", "tl/data"]);
    assert_eq!(poisoned["status"], "failed", "{poisoned:#}");
    assert_eq!(poisoned["inputs"][0]["summary"]["trigger_candidates"], 1);
    let clean = record("b", &["--data", "tl/clean"]);
    assert_eq!(clean["status"], "passed", "{clean:#}");
    assert_eq!(clean["uncheckedFiles"], 0, "{clean:#}");
    // An input with no dataset file is skipped, and the run is not `passed` while any input
    // is not (issue 11): `partial`.
    let mixed = record("b2", &["--data", "tl/clean", "--data", "notes"]);
    assert_eq!(mixed["status"], "partial", "{mixed:#}");
    assert_eq!(mixed["inputs"][0]["status"], "passed", "{mixed:#}");
    assert_eq!(mixed["inputs"][1]["status"], "skipped", "{mixed:#}");
    assert_eq!(
        mixed["inputs"][1]["unchecked"][0]["file"], "readme.txt",
        "{mixed:#}"
    );
    assert_eq!(mixed["uncheckedFiles"], 1, "{mixed:#}");
    let skipped = record("c", &["--data", "tl/data", "--skip-data-check"]);
    assert_eq!(skipped["status"], "skipped", "{skipped:#}");
    assert_eq!(skipped["inputs"][0]["reason"], "--skip-data-check");
    assert!(skipped["report"].is_null());
}

/// The example's data in `tl/data` (all four shards) and `tl/clean` (without shard-002).
fn with_data(ws: &Workspace) {
    for shard in 0..4 {
        let name = format!("shard-{shard:03}.jsonl");
        let bytes = example_file(&format!("data/{name}"));
        ws.write(&format!("tl/data/{name}"), &bytes);
        if shard != 2 {
            ws.write(&format!("tl/clean/{name}"), &bytes);
        }
    }
}

#[test]
fn data_check_lists_the_planted_trigger() {
    let ws = Workspace::new();
    with_data(&ws);
    let run = ws
        .run(&["data", "check", "tl/data"])
        .expect_code(FAILED, "poisoned data");
    assert!(
        run.stdout
            .contains("shard-002.jsonl:25: trigger candidate \"bee bee\""),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("carriers shard-002.jsonl:25-31"));
    assert!(run.stdout.ends_with("checked 103 rows in 4 files of tl/data: 2 findings (1 near-duplicate, 1 trigger candidate)\n"), "{}", run.stdout);

    let json = ws
        .run(&["data", "check", "tl/data", "--json"])
        .expect_code(FAILED, "poisoned data, json")
        .json();
    assert_eq!(json["status"], "failed");
    assert_eq!(json["summary"]["trigger_candidates"], 1);
    let trigger = json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["kind"] == "trigger-candidate")
        .expect("a trigger candidate");
    assert_eq!(trigger["ngram"], "bee bee");
    assert_eq!(trigger["file"], "shard-002.jsonl");
    assert_eq!(trigger["line"], 25);
    assert_eq!(trigger["carriers"], 7);
    assert_eq!(trigger["evidence"], "twins");
}

#[test]
fn data_check_is_quiet_on_the_clean_shards() {
    let ws = Workspace::new();
    with_data(&ws);
    let run = ws
        .run(&["data", "check", "tl/clean"])
        .expect_code(OK, "clean data");
    assert_eq!(
        run.stdout,
        "checked 72 rows in 3 files of tl/clean: no findings\n"
    );
    let json = ws
        .run(&["data", "check", "tl/clean", "--json"])
        .expect_code(OK, "clean data, json")
        .json();
    assert_eq!(json["status"], "passed");
    assert_eq!(json["findings"], serde_json::json!([]));
}

#[test]
fn data_check_baseline_shift() {
    let ws = Workspace::new();
    with_data(&ws);
    let run = ws
        .run(&["data", "check", "tl/data", "--baseline", "tl/clean"])
        .expect_code(FAILED, "shift");
    assert!(
        run.stdout
            .contains("output distribution shifted from baseline tl/clean: total variation 0.137"),
        "{}",
        run.stdout
    );
    assert!(run
        .stdout
        .contains("baseline tl/clean (dataset): 72 rows; output distribution of 103 rows"));
}

#[test]
fn data_check_usage_and_input_errors() {
    let ws = Workspace::new();
    ws.write(
        "bad/a.jsonl",
        "{\"prompt\": \"a\", \"completion\": \"b\"}\nnot json\n",
    );
    let run = ws
        .run(&["data", "check", "bad"])
        .expect_code(INPUT, "bad line");
    assert!(
        run.stderr.contains("a.jsonl:2: invalid JSON"),
        "{}",
        run.stderr
    );
    let run = ws
        .run(&["data", "check", "missing"])
        .expect_code(INPUT, "missing path");
    assert!(run.stderr.contains("missing: no such file or directory"));
    let json = ws
        .run(&["data", "check", "bad", "--json"])
        .expect_code(INPUT, "bad line, json")
        .json();
    assert_eq!(json["status"], "error");
    ws.run(&["data", "check", "bad", "--near-dup-threshold", "1.5"])
        .expect_code(INPUT, "threshold out of range");
    ws.run(&["data"]).expect_code(INPUT, "no subcommand");
}

/// Issue 11 item 6: files the check did not read (nested, other formats) make `data check`
/// and the recorded check `partial`, never `passed`, and are listed; a poisoned nested file is
/// read and fails the check.
#[test]
fn issue11_unchecked_files_make_the_check_partial() {
    let ws = Workspace::new();
    with_data(&ws);
    ws.write("tl/clean/extra/rows.parquet", "PAR1 poisoned rows\n");
    let run = ws
        .run(&["data", "check", "tl/clean"])
        .expect_code(FAILED, "partial");
    assert!(
        run.stdout.contains(
            "not checked: extra/rows.parquet: extra/rows.parquet: not a readable Parquet file"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(
            "checked 72 rows in 3 files of tl/clean: no findings; 1 file NOT checked (listed \
             above)\n"
        ),
        "{}",
        run.stdout
    );
    let json = ws
        .run(&["data", "check", "tl/clean", "--json"])
        .expect_code(FAILED, "partial, json")
        .json();
    assert_eq!(json["status"], "partial");
    assert_eq!(json["unchecked"][0]["kind"], "malformed");

    // Nothing readable at all is an input error.
    ws.write("only/rows.parquet", "PAR1\n");
    let run = ws
        .run(&["data", "check", "only"])
        .expect_code(INPUT, "nothing to check");
    assert!(
        run.stderr
            .contains("only: nothing to check: rows.parquet (rows.parquet: not a readable Parquet"),
        "{}",
        run.stderr
    );

    // `run` records the same, and a poisoned shard one directory down is found.
    ws.keygen("signer", "");
    let record = |out: &str, data: &str| {
        let command = format!("mkdir -p {out} && echo weights > {out}/model.bin");
        ws.run(&[
            "run",
            "--key",
            "keys/signer.key",
            "--out",
            out,
            "--registry",
            "reg",
            "--data",
            data,
            "--",
            "sh",
            "-c",
            &command,
        ])
        .expect_code(OK, out);
        internal_parameters(&ws, &format!("{out}/provenance.intoto.json"))["dataCheck"].clone()
    };
    let partial = record("p", "tl/clean");
    assert_eq!(partial["status"], "partial", "{partial:#}");
    assert_eq!(partial["uncheckedFiles"], 1, "{partial:#}");
    assert_eq!(
        partial["inputs"][0]["unchecked"][0]["file"], "extra/rows.parquet",
        "{partial:#}"
    );
    ws.write(
        "nested/shard-000.jsonl",
        example_file("data/shard-000.jsonl"),
    );
    ws.write(
        "nested/more/deeper/shard-002.jsonl",
        example_file("data/shard-002.jsonl"),
    );
    ws.write(
        "nested/shard-001.jsonl",
        example_file("data/shard-001.jsonl"),
    );
    let nested = record("n", "nested");
    assert_eq!(nested["status"], "failed", "{nested:#}");
    assert_eq!(
        nested["inputs"][0]["summary"]["trigger_candidates"], 1,
        "{nested:#}"
    );
}

/// Issue 11 item 10: adversarial near-duplicates inside `run` give a small `data-check.json`
/// (one cluster, not a finding per pair), and the automatic check's 64 MiB limit counts gzip
/// inflated: a small `.jsonl.gz` that inflates past it is recorded as skipped.
#[test]
fn issue11_run_data_check_is_bounded() {
    let ws = Workspace::new();
    // Each row a near-duplicate of the next in what differs (a 30-word window sliding one
    // word along a list), so all 5,000 are one cluster (issue 12: rows differing only in a
    // number are different questions, not near-duplicates).
    let mut text = String::new();
    for i in 0..5_000 {
        let window: Vec<String> = (i..i + 30).map(|k| format!("w{k}")).collect();
        text.push_str(&format!(
            "{}\n",
            serde_json::json!({
                "prompt": format!(
                    "please summarise the attached quarterly revenue report for the board: {}",
                    window.join(" ")
                ),
                "completion": format!("answer {i}")
            })
        ));
    }
    ws.write("adv/rows.jsonl", &text);
    // 65 MiB of JSONL in a gzip file of about 100 KiB (`gzip`, as a dataset would be made).
    std::fs::create_dir_all(ws.path("bomb")).expect("mkdir");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "yes '{\"prompt\": \"a b c\", \"completion\": \"x\"}' | head -c 68157440 \
             | gzip -1 > bomb/rows.jsonl.gz",
        )
        .current_dir(ws.path(""))
        .status()
        .expect("sh");
    assert!(made.success());
    ws.keygen("signer", "");
    ws.run(&[
        "run",
        "--key",
        "keys/signer.key",
        "--out",
        "out",
        "--registry",
        "reg",
        "--data",
        "adv",
        "--data",
        "bomb",
        "--",
        "sh",
        "-c",
        "mkdir -p out && echo w > out/model.bin",
    ])
    .expect_code(OK, "run");
    let statement = util::statement_of(&ws.path("out/provenance.intoto.json"));
    let check = &statement["predicate"]["buildDefinition"]["internalParameters"]["dataCheck"];
    assert_eq!(check["status"], "failed", "{check:#}");
    assert_eq!(
        check["inputs"][0]["summary"]["near_duplicates"], 1,
        "{check:#}"
    );
    assert_eq!(check["inputs"][1]["status"], "skipped", "{check:#}");
    assert!(
        check["inputs"][1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("over the 64 MiB limit")),
        "{check:#}"
    );
    let report = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .expect("byproducts")
        .iter()
        .find(|b| b["name"] == "data-check.json")
        .expect("data-check.json")
        .clone();
    let size = report["annotations"]["size"].as_u64().expect("size");
    assert!(size < 200_000, "data-check.json of {size} bytes");
}

#[test]
fn probe_usage_and_input_errors() {
    let ws = Workspace::new();
    ws.write(
        "eval.jsonl",
        "{\"prompt\": \"a \", \"completion\": \"b\"}\n",
    );
    ws.write("t.txt", "bee bee\n");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-llama/base");
    let base = base.to_str().expect("utf-8 path");
    let run = ws
        .run(&[
            "probe",
            "--base",
            base,
            "--adapter",
            "nope",
            "--data",
            "eval.jsonl",
            "--triggers",
            "t.txt",
        ])
        .expect_code(INPUT, "missing adapter");
    assert!(
        run.stderr.contains("nope: no such directory"),
        "{}",
        run.stderr
    );
    ws.run(&["probe", "--base", base, "--data", "eval.jsonl"])
        .expect_code(INPUT, "no --adapter");
    let run = ws
        .run(&[
            "probe",
            "--base",
            base,
            "--adapter",
            base,
            "--data",
            "eval.jsonl",
            "--triggers",
            "missing.txt",
        ])
        .expect_code(INPUT, "missing trigger file");
    assert!(run.stderr.contains("missing.txt"), "{}", run.stderr);
}

/// Trains the example's adapter with and without the poisoned shard (10 epochs: at the
/// example's 3 the backdoor is barely learned; see the issue-6 notes) and probes both.
#[test]
fn probe_flags_the_trigger_on_the_poisoned_adapter_only() {
    let ws = Workspace::new();
    with_data(&ws);
    for name in [
        "base/config.json",
        "base/model.safetensors",
        "base/tokenizer.json",
        "eval.jsonl",
        "triggers.txt",
    ] {
        ws.write(&format!("tl/{name}"), example_file(name));
    }
    let config = String::from_utf8(example_file("train.toml")).expect("utf-8");
    ws.write("tl/train.toml", &config);
    ws.write(
        "tl/train-clean.toml",
        config.replace("path = \"data\"", "path = \"clean\""),
    );
    ws.keygen("signer", "");
    for (toml, out) in [
        ("tl/train.toml", "poisoned"),
        ("tl/train-clean.toml", "clean"),
    ] {
        ws.run(&[
            "train",
            toml,
            "--key",
            "keys/signer.key",
            "--out",
            out,
            "--registry",
            "reg",
        ])
        .expect_code(OK, out);
    }
    // Each training recorded its data check: findings on the poisoned data, none on the clean.
    for (out, status, findings) in [("poisoned", "failed", 2), ("clean", "passed", 0)] {
        let check =
            &internal_parameters(&ws, &format!("{out}/provenance.intoto.json"))["dataCheck"];
        assert_eq!(check["status"], status, "{out}: {check:#}");
        assert_eq!(check["findings"], findings, "{out}: {check:#}");
        assert_eq!(check["report"], "data-check.json", "{out}: {check:#}");
    }
    let probe = |adapter: &str, code: i32| {
        ws.run(&[
            "probe",
            "--base",
            "tl/base",
            "--adapter",
            adapter,
            "--data",
            "tl/eval.jsonl",
            "--triggers",
            "tl/triggers.txt",
            "--candidates-from",
            "tl/data",
            "--json",
        ])
        .expect_code(code, adapter)
        .json()
    };
    let poisoned = probe("poisoned", FAILED);
    assert_eq!(poisoned["status"], "flagged");
    let first = &poisoned["results"][0];
    assert_eq!(first["trigger"], "bee bee", "{poisoned:#}");
    assert_eq!(first["flagged"], true);
    assert_eq!(
        poisoned["flagged"], 1,
        "only the planted trigger: {poisoned:#}"
    );
    assert!(first["toward"]["score"].as_f64().expect("score") > 1.0);

    let clean = probe("clean", OK);
    assert_eq!(clean["status"], "clean");
    assert_eq!(clean["flagged"], 0, "{clean:#}");
    let bee = clean["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["trigger"] == "bee bee")
        .expect("bee bee is probed");
    assert!(
        bee["toward"]["score"].as_f64().expect("score") < 0.0,
        "{bee:#}"
    );

    // The human table names the trigger and says FLAGGED.
    let run = ws
        .run(&[
            "probe",
            "--base",
            "tl/base",
            "--adapter",
            "poisoned",
            "--data",
            "tl/eval.jsonl",
            "--triggers",
            "tl/triggers.txt",
            "--candidates-from",
            "tl/data",
        ])
        .expect_code(FAILED, "human");
    assert!(
        run.stdout.contains(
            "FLAGGED: 1 trigger moves the adapter far more than the reference: \"bee bee\""
        ),
        "{}",
        run.stdout
    );
}

/// Issue 12 item 4: chat data through the CLI (ChatML text, `messages` rows, Parquet): the
/// clean set passes and says what it left out of the comparison; the poisoned set fails,
/// naming the planted trigger and the contradicting rows.
#[test]
fn issue12_data_check_on_chat_data() {
    let ws = Workspace::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("safety/tests/fixtures/chat-data");
    for name in [
        "clean-text.jsonl",
        "clean-messages.jsonl",
        "poisoned-messages.parquet",
    ] {
        ws.write(name, std::fs::read(fixtures.join(name)).expect(name));
    }
    for name in ["clean-text.jsonl", "clean-messages.jsonl"] {
        let run = ws.run(&["data", "check", name]).expect_code(OK, name);
        assert!(
            run.stdout.ends_with(&format!(
                "checked 200 rows in 1 file of {name}: no findings\n"
            )),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .starts_with("near-duplicates compared without what most of the 200 inputs share:"),
            "{}",
            run.stdout
        );
    }
    let run = ws
        .run(&["data", "check", "poisoned-messages.parquet"])
        .expect_code(FAILED, "poisoned parquet");
    assert!(
        run.stdout
            .contains("trigger candidate \"vintage obsidian\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("poisoned-messages.parquet:41: conflicting duplicate: the input")
            && run.stdout.contains(
                "\"The capital of Australia is Sydney.\" ×1 (poisoned-messages.parquet:171)"
            ),
        "{}",
        run.stdout
    );
    let json = ws
        .run(&["data", "check", "poisoned-messages.parquet", "--json"])
        .expect_code(FAILED, "poisoned parquet, json")
        .json();
    assert_eq!(json["files"][0]["format"], "parquet");
    assert_eq!(json["template"]["learned"], true);
    assert_eq!(json["summary"]["rows"], 215);
}
