//! `trainprov scan` end to end: exit codes (0 clean, 1 unsafe or invalid, 2 usage), the human
//! lines, and the shapes of `--json` and `--sarif`. The formats themselves are tested in
//! `safety/tests/scan.rs`.

mod util;

use util::{Workspace, FAILED, INPUT, OK};

/// Protocol 0 pickle: `os.system('echo pwned')` (GLOBAL, MARK, STRING, TUPLE, REDUCE, STOP).
const EVIL_PICKLE: &[u8] = b"cos\nsystem\n(S'echo pwned'\ntR.";
/// Protocol 2 pickle of `{'a': 1}`: nothing imported.
const BENIGN_PICKLE: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.";

/// A one-tensor safetensors file (F32 [2]).
fn safetensors() -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(&[0u8; 8]);
    out
}

fn clean_model(ws: &Workspace) {
    ws.write("model/model.safetensors", safetensors());
    ws.write("model/config.json", br#"{"model_type":"llama"}"#);
}

#[test]
fn clean_directory_exits_0_with_one_line_per_file() {
    let ws = Workspace::new();
    clean_model(&ws);
    let run = ws.run(&["scan", "model"]).expect_code(OK, "clean model");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "unknown model/config.json: not a model weight format (text)",
            "ok model/model.safetensors: safetensors, 1 tensor",
            "2 files: 1 ok, 0 unsafe, 0 invalid, 0 uninspectable, 1 not a model format",
        ],
        "{}",
        run.stdout
    );
}

#[test]
fn benign_pickle_is_ok_with_a_warning() {
    let ws = Workspace::new();
    ws.write("state.pkl", BENIGN_PICKLE);
    let run = ws
        .run(&["scan", "state.pkl"])
        .expect_code(OK, "benign pickle");
    assert!(
        run.stdout
            .starts_with("ok state.pkl: pickle protocol 2, 0 globals; warning: pickle format"),
        "{}",
        run.stdout
    );
}

#[test]
fn unsafe_or_invalid_files_exit_1() {
    let ws = Workspace::new();
    clean_model(&ws);
    ws.write("evil/model.bin", EVIL_PICKLE);
    let run = ws
        .run(&["scan", "model", "evil/model.bin"])
        .expect_code(FAILED, "evil pickle");
    assert!(
        run.stdout
            .contains("UNSAFE evil/model.bin: pickle imports os.system"),
        "{}",
        run.stdout
    );

    let mut cut = safetensors();
    cut.truncate(cut.len() - 3);
    ws.write("cut.safetensors", cut);
    let run = ws
        .run(&["scan", "cut.safetensors"])
        .expect_code(FAILED, "truncated safetensors");
    assert!(
        run.stdout.starts_with("INVALID cut.safetensors: truncated"),
        "{}",
        run.stdout
    );
}

#[test]
fn usage_errors_exit_2() {
    let ws = Workspace::new();
    let run = ws
        .run(&["scan", "no-such-model"])
        .expect_code(INPUT, "missing path");
    assert!(run.stderr.contains("no-such-model"), "{}", run.stderr);
    ws.run(&["scan"]).expect_code(INPUT, "no path");
    ws.write("a.pkl", BENIGN_PICKLE);
    ws.run(&["scan", "a.pkl", "--json", "--sarif"])
        .expect_code(INPUT, "--json with --sarif");
    let run = ws
        .run(&["scan", "a.pkl", "missing", "--json"])
        .expect_code(INPUT, "missing path, json");
    assert_eq!(run.json()["status"], "error");
}

#[test]
fn json_lists_every_file_report() {
    let ws = Workspace::new();
    clean_model(&ws);
    ws.write("evil.pkl", EVIL_PICKLE);
    let run = ws
        .run(&["scan", "evil.pkl", "model", "--json"])
        .expect_code(FAILED, "json");
    let json = run.json();
    assert_eq!(json["status"], "failed");
    assert_eq!(json["counts"]["files"], 3);
    assert_eq!(json["counts"]["unsafe"], 1);
    let files = json["files"].as_array().expect("files");
    assert_eq!(files.len(), 3);
    let evil = &files[0];
    assert_eq!(evil["path"], "evil.pkl");
    assert_eq!(evil["format"]["kind"], "pickle");
    assert_eq!(evil["format"]["protocol"], 0);
    assert_eq!(evil["verdict"], "unsafe");
    assert_eq!(evil["globals"][0], "os.system");
    assert_eq!(evil["findings"][0]["rule"], "pickle-dangerous-global");
    assert_eq!(evil["findings"][0]["severity"], "error");
    assert_eq!(evil["findings"][0]["global"], "os.system");
    assert_eq!(files[2]["verdict"], "safe");
    assert_eq!(files[2]["format"]["kind"], "safetensors");

    let run = ws
        .run(&["scan", "model", "--json"])
        .expect_code(OK, "clean json");
    assert_eq!(run.json()["status"], "ok");
}

#[test]
fn sarif_is_a_2_1_0_log_with_located_results() {
    let ws = Workspace::new();
    clean_model(&ws);
    ws.write("evil.pkl", EVIL_PICKLE);
    let run = ws
        .run(&["scan", "evil.pkl", "model", "--sarif"])
        .expect_code(FAILED, "sarif");
    let log = run.json();
    assert_eq!(log["version"], "2.1.0");
    let run0 = &log["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "trainprov");
    let rule_ids: Vec<&str> = run0["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    let results = run0["results"].as_array().expect("results");
    assert!(!results.is_empty());
    for result in results {
        let rule = result["ruleId"].as_str().expect("ruleId");
        assert!(rule_ids.contains(&rule), "{rule} not among the rules");
        assert!(
            matches!(result["level"].as_str(), Some("error" | "warning" | "note")),
            "{result}"
        );
        assert!(result["message"]["text"].is_string());
        assert!(result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].is_string());
    }
    let uris: Vec<&str> = results
        .iter()
        .filter_map(|r| r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].as_str())
        .collect();
    assert!(uris.contains(&"evil.pkl"), "{uris:?}");
    assert!(uris.contains(&"model/config.json"), "{uris:?}");
    let evil = results
        .iter()
        .find(|r| r["ruleId"] == "pickle-dangerous-global")
        .expect("the dangerous global");
    assert_eq!(evil["level"], "error");
}

#[test]
fn issue11_uninspectable_files_are_not_counted_clean() {
    let ws = Workspace::new();
    clean_model(&ws);
    ws.write("model/tf_model.h5", b"\x89HDF\r\n\x1a\n\0\0\0\0");
    let run = ws
        .run(&["scan", "model"])
        .expect_code(FAILED, "uninspectable file");
    assert!(
        run.stdout.contains("UNINSPECTABLE model/tf_model.h5: HDF5"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(
            "3 files: 1 ok, 0 unsafe, 0 invalid, 1 uninspectable, 1 not a model format\n"
        ),
        "{}",
        run.stdout
    );
    let run = ws
        .run(&["scan", "model", "--json"])
        .expect_code(FAILED, "uninspectable json");
    let json = run.json();
    assert_eq!(json["status"], "failed");
    assert_eq!(json["counts"]["uninspectable"], 1);
}

#[test]
fn issue11_chat_template_injection_in_tokenizer_config_fails_the_scan() {
    let ws = Workspace::new();
    clean_model(&ws);
    ws.write(
        "model/tokenizer_config.json",
        br#"{"chat_template": "{{ cycler.__init__.__globals__.os.popen('id').read() }}"}"#,
    );
    let run = ws.run(&["scan", "model"]).expect_code(FAILED, "template");
    assert!(
        run.stdout
            .contains("UNSAFE model/tokenizer_config.json: chat_template uses `__globals__`"),
        "{}",
        run.stdout
    );
}

#[cfg(unix)]
#[test]
fn issue11_hub_cache_blobs_are_reported_once() {
    let ws = Workspace::new();
    ws.write("hub/models--org--m/blobs/abc123", safetensors());
    ws.write("hub/models--org--m/snapshots/r1/.keep", b"");
    std::os::unix::fs::symlink(
        "../../blobs/abc123",
        ws.path("hub/models--org--m/snapshots/r1/model.safetensors"),
    )
    .expect("symlink");
    let run = ws
        .run(&["scan", "hub", "--json"])
        .expect_code(OK, "hub cache");
    let json = run.json();
    let files = json["files"].as_array().expect("files");
    let weights: Vec<&serde_json::Value> = files
        .iter()
        .filter(|f| f["format"]["kind"] == "safetensors")
        .collect();
    assert_eq!(weights.len(), 1, "{json}");
    assert_eq!(
        weights[0]["path"],
        "hub/models--org--m/snapshots/r1/model.safetensors"
    );
    assert_eq!(weights[0]["aliases"][0], "hub/models--org--m/blobs/abc123");
}
