//! Malformed input never panics: it gives a one-line error naming the file and a non-zero exit
//! (2 for input that is not an attestation at all, 1 for an attestation that does not verify).

mod util;

use serde_json::json;
use util::{b64, write_json, Workspace, FAILED, INPUT, OK};

fn with_key() -> Workspace {
    let ws = Workspace::new();
    ws.keygen("signer", "");
    ws
}

fn verify(ws: &Workspace, file: &str) -> util::Run {
    ws.run(&["verify", file, "--key", "keys/signer.pub"])
}

fn one_line_naming(run: &util::Run, file: &str, case: &str) {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{case}: one line expected, got: {}",
        run.stderr
    );
    assert!(
        lines[0].contains(file),
        "{case}: error should name {file}: {}",
        run.stderr
    );
}

#[test]
fn bad_json_is_an_input_error() {
    let ws = with_key();
    ws.write("a.intoto.json", b"{\"payload\": ");
    let run = verify(&ws, "a.intoto.json").expect_code(INPUT, "bad JSON");
    one_line_naming(&run, "a.intoto.json", "bad JSON");
}

#[test]
fn empty_file_is_an_input_error() {
    let ws = with_key();
    ws.write("empty.json", b"");
    let run = verify(&ws, "empty.json").expect_code(INPUT, "empty file");
    one_line_naming(&run, "empty.json", "empty");
    assert!(run.stderr.contains("empty"), "{}", run.stderr);
}

#[test]
fn fifty_megabytes_of_garbage_is_an_input_error() {
    let ws = with_key();
    ws.write(
        "garbage.intoto.json",
        util::pseudo_random(50 * 1024 * 1024, 3),
    );
    let run = verify(&ws, "garbage.intoto.json").expect_code(INPUT, "50 MB garbage");
    one_line_naming(&run, "garbage.intoto.json", "garbage");
}

#[test]
fn bad_base64_fails_verification() {
    let ws = with_key();
    let envelope = json!({"payload": "!!!not base64!!!", "payloadType": "application/vnd.in-toto+json",
                          "signatures": [{"keyid": "", "sig": "AAAA"}]});
    write_json(&ws.path("p.intoto.json"), &envelope);
    let run = verify(&ws, "p.intoto.json").expect_code(FAILED, "bad base64 payload");
    assert!(run.stderr.contains("base64"), "{}", run.stderr);
    let envelope = json!({"payload": b64(b"{}"), "payloadType": "application/vnd.in-toto+json",
                          "signatures": [{"keyid": "", "sig": "%%%"}]});
    write_json(&ws.path("s.intoto.json"), &envelope);
    verify(&ws, "s.intoto.json").expect_code(FAILED, "bad base64 signature");
}

#[test]
fn bad_der_signature_fails_verification() {
    let ws = with_key();
    let envelope = json!({"payload": b64(b"{}"), "payloadType": "application/vnd.in-toto+json",
                          "signatures": [{"keyid": "", "sig": b64(&[0x30, 0x99, 0x02, 0x01])}]});
    write_json(&ws.path("d.intoto.json"), &envelope);
    verify(&ws, "d.intoto.json").expect_code(FAILED, "bad DER");
}

#[test]
fn wrong_shapes_fail_cleanly() {
    let ws = with_key();
    for (i, doc) in [
        json!([1, 2, 3]),
        json!({"hello": "world"}),
        json!({"payloadType": 7, "payload": [], "signatures": "x"}),
        json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}),
        json!({"mediaType": "x", "verificationMaterial": {}, "dsseEnvelope": {"payload": "", "payloadType": "", "signatures": []}}),
    ]
    .iter()
    .enumerate()
    {
        let name = format!("shape{i}.json");
        write_json(&ws.path(&name), doc);
        let run = verify(&ws, &name);
        assert!(run.code == FAILED || run.code == INPUT, "shape {i}: exit {} {}", run.code, run.stderr);
        assert!(!run.stderr.contains("panicked"), "shape {i}: {}", run.stderr);
        one_line_naming(&run, &name, &format!("shape {i}"));
    }
}

#[test]
fn verified_payload_that_is_not_a_statement_fails() {
    // A correctly signed envelope whose payload is not an in-toto Statement.
    let ws = with_key();
    ws.make_model("m");
    ws.run(&["sign-model", "m", "--key", "keys/signer.key"])
        .expect_code(OK, "sign");
    let mut bundle = util::read_json(&ws.path("m/model.sig"));
    bundle["dsseEnvelope"]["payloadType"] = json!("text/plain");
    write_json(&ws.path("m/model.sig"), &bundle);
    verify(&ws, "m/model.sig").expect_code(FAILED, "payload type of bundle");
}

#[test]
fn missing_files_are_input_errors() {
    let ws = with_key();
    let run = verify(&ws, "nope.intoto.json").expect_code(INPUT, "missing attestation");
    one_line_naming(&run, "nope.intoto.json", "missing attestation");
    let run = ws
        .run(&["verify", "x.json", "--key", "keys/missing.pub"])
        .expect_code(INPUT, "missing key");
    one_line_naming(&run, "keys/missing.pub", "missing key");
    let run = ws
        .run(&["sign-model", "no-such-dir", "--key", "keys/signer.key"])
        .expect_code(INPUT, "missing model dir");
    one_line_naming(&run, "no-such-dir", "missing dir");
}

#[test]
fn usage_errors_exit_2() {
    let ws = with_key();
    ws.run(&["verify"]).expect_code(INPUT, "no args");
    ws.run(&["frobnicate"])
        .expect_code(INPUT, "unknown command");
    ws.write("f.json", b"{}");
    ws.run(&[
        "verify",
        "f.json",
        "--key",
        "keys/signer.pub",
        "--threshold",
        "2",
    ])
    .expect_code(INPUT, "threshold > keys");
}

#[test]
fn json_errors_are_json() {
    let ws = with_key();
    ws.write("bad.json", b"nope");
    let run = ws
        .run(&["verify", "bad.json", "--key", "keys/signer.pub", "--json"])
        .expect_code(INPUT, "json error");
    let json = run.json();
    assert_eq!(json["status"], "error");
    assert!(json["error"].as_str().expect("error").contains("bad.json"));
}
