//! Tamper matrix: every single change to a signed attestation, signature bundle or model
//! directory must make `trainprov verify` exit 1, for both key types.

mod util;

use serde_json::Value;
use util::{b64, read_json, unb64, write_json, Workspace, FAILED, KEY_TYPES, OK};

/// A workspace with keys `signer` and `other` of one type, a product directory `out/` and its
/// signed attestation `out/provenance.intoto.json`.
fn attested(flag: &str) -> Workspace {
    let ws = Workspace::new();
    ws.keygen("signer", flag);
    ws.keygen("other", flag);
    ws.write(
        "out/adapter_model.safetensors",
        util::pseudo_random(50_000, 1),
    );
    ws.write("out/adapter_config.json", br#"{"r":8}"#);
    ws.run(&["attest", "out", "--key", "keys/signer.key"])
        .expect_code(OK, "attest");
    ws
}

fn verify_attestation(ws: &Workspace, extra: &[&str]) -> util::Run {
    let mut args = vec![
        "verify",
        "out/provenance.intoto.json",
        "--key",
        "keys/signer.pub",
    ];
    args.extend_from_slice(extra);
    ws.run(&args)
}

/// Applies `edit` to the envelope JSON and expects verification to fail.
fn tampered_envelope_fails(flag: &str, case: &str, edit: impl Fn(&mut Value)) {
    let ws = attested(flag);
    let path = ws.path("out/provenance.intoto.json");
    verify_attestation(&ws, &[]).expect_code(OK, &format!("{case}: untouched"));
    let mut envelope = read_json(&path);
    edit(&mut envelope);
    write_json(&path, &envelope);
    let run = verify_attestation(&ws, &[]).expect_code(FAILED, case);
    assert!(
        run.stderr.contains("provenance.intoto.json"),
        "{case}: error names the file: {}",
        run.stderr
    );
}

fn flip_base64_byte(text: &str, index: usize) -> String {
    let mut bytes = unb64(text);
    let at = index.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    b64(&bytes)
}

#[test]
fn attestation_untouched_verifies_with_artifacts() {
    for (name, flag) in KEY_TYPES {
        let ws = attested(flag);
        let run = verify_attestation(
            &ws,
            &["--artifact", "out/adapter_model.safetensors", "--json"],
        )
        .expect_code(OK, name);
        let json = run.json();
        assert_eq!(json["status"], "verified", "{name}");
        assert_eq!(json["artifacts"][0]["status"], "match", "{name}");
        assert_eq!(json["subjects"].as_array().map(Vec::len), Some(2), "{name}");
        for subject in json["subjects"].as_array().expect("subjects") {
            assert!(
                subject["digest"]["sha256"].is_string() && subject["digest"]["blake3"].is_string()
            );
        }
    }
}

#[test]
fn flipped_payload_byte_is_caught() {
    for (name, flag) in KEY_TYPES {
        tampered_envelope_fails(flag, &format!("{name}: flipped payload byte"), |e| {
            e["payload"] = Value::String(flip_base64_byte(
                e["payload"].as_str().expect("payload"),
                40,
            ));
        });
    }
}

#[test]
fn changed_payload_type_is_caught() {
    for (name, flag) in KEY_TYPES {
        tampered_envelope_fails(flag, &format!("{name}: payloadType"), |e| {
            e["payloadType"] = Value::String("application/vnd.in-toto+jsonx".into());
        });
    }
}

#[test]
fn flipped_signature_byte_is_caught() {
    for (name, flag) in KEY_TYPES {
        tampered_envelope_fails(flag, &format!("{name}: flipped signature byte"), |e| {
            let sig = e["signatures"][0]["sig"].as_str().expect("sig").to_string();
            e["signatures"][0]["sig"] = Value::String(flip_base64_byte(&sig, 20));
        });
    }
}

#[test]
fn removed_signature_is_caught() {
    for (name, flag) in KEY_TYPES {
        tampered_envelope_fails(flag, &format!("{name}: signature removed"), |e| {
            e["signatures"] = Value::Array(vec![]);
        });
    }
}

#[test]
fn changed_keyid_is_caught() {
    for (name, flag) in KEY_TYPES {
        tampered_envelope_fails(flag, &format!("{name}: keyid changed"), |e| {
            e["signatures"][0]["keyid"] = Value::String("0".repeat(64));
        });
    }
}

#[test]
fn changed_subject_digest_is_caught() {
    for (name, flag) in KEY_TYPES {
        tampered_envelope_fails(flag, &format!("{name}: subject digest"), |e| {
            let mut statement: Value =
                serde_json::from_slice(&unb64(e["payload"].as_str().expect("payload")))
                    .expect("json");
            let digest = statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .expect("sha256")
                .to_string();
            let changed = format!(
                "{}{}",
                if digest.starts_with('0') { "1" } else { "0" },
                &digest[1..]
            );
            statement["subject"][0]["digest"]["sha256"] = Value::String(changed);
            e["payload"] = Value::String(b64(&serde_json::to_vec(&statement).expect("json")));
        });
    }
}

#[test]
fn wrong_key_is_caught() {
    for (name, flag) in KEY_TYPES {
        let ws = attested(flag);
        let run = ws.run(&[
            "verify",
            "out/provenance.intoto.json",
            "--key",
            "keys/other.pub",
        ]);
        run.expect_code(FAILED, &format!("{name}: wrong key"));
    }
}

#[test]
fn resigned_by_untrusted_key_is_caught() {
    for (name, flag) in KEY_TYPES {
        let ws = attested(flag);
        ws.run(&["attest", "out", "--key", "keys/other.key"])
            .expect_code(OK, "attest with other key");
        verify_attestation(&ws, &[]).expect_code(FAILED, &format!("{name}: signed by another key"));
    }
}

#[test]
fn changed_product_file_is_caught() {
    for (name, flag) in KEY_TYPES {
        let ws = attested(flag);
        let mut bytes = ws.read("out/adapter_model.safetensors");
        bytes[100] ^= 0x80;
        ws.write("out/adapter_model.safetensors", bytes);
        let run = verify_attestation(&ws, &["--artifact", "out/adapter_model.safetensors"])
            .expect_code(FAILED, &format!("{name}: product file changed"));
        assert!(
            run.stderr.contains("adapter_model.safetensors") && run.stderr.contains("changed"),
            "{}",
            run.stderr
        );
        verify_attestation(&ws, &["--model-dir", "out"])
            .expect_code(FAILED, &format!("{name}: product dir changed"));
    }
}

#[test]
fn unknown_artifact_and_extra_product_are_caught() {
    let ws = attested("");
    ws.write("out/backdoor.bin", b"x");
    let run = verify_attestation(&ws, &["--artifact", "out/backdoor.bin"])
        .expect_code(FAILED, "unknown artifact");
    assert!(run.stderr.contains("not a subject"), "{}", run.stderr);
    let run = verify_attestation(&ws, &["--model-dir", "out"]).expect_code(FAILED, "extra product");
    assert!(run.stderr.contains("backdoor.bin"), "{}", run.stderr);
}

#[test]
fn threshold_needs_distinct_trusted_signers() {
    let ws = attested("");
    ws.keygen("ed", "--ed25519");
    ws.run(&[
        "attest",
        "out",
        "--key",
        "keys/signer.key",
        "--key",
        "keys/ed.key",
    ])
    .expect_code(OK, "co-sign");
    let both = [
        "verify",
        "out/provenance.intoto.json",
        "--key",
        "keys/signer.pub",
        "--key",
        "keys/ed.pub",
        "--threshold",
        "2",
    ];
    ws.run(&both).expect_code(OK, "2 of 2");
    let wrong = [
        "verify",
        "out/provenance.intoto.json",
        "--key",
        "keys/signer.pub",
        "--key",
        "keys/other.pub",
        "--threshold",
        "2",
    ];
    ws.run(&wrong)
        .expect_code(FAILED, "only 1 of 2 trusted keys signed");
}

// ---- model directories (OpenSSF model signatures) ----

fn signed_model(flag: &str) -> Workspace {
    let ws = Workspace::new();
    ws.keygen("signer", flag);
    ws.keygen("other", flag);
    ws.make_model("model");
    ws.run(&["sign-model", "model", "--key", "keys/signer.key"])
        .expect_code(OK, "sign-model");
    ws.run(&["verify", "model/model.sig", "--key", "keys/signer.pub"])
        .expect_code(OK, "untouched model");
    ws
}

fn model_fails(ws: &Workspace, case: &str, expect_in_message: &[&str]) {
    let run = ws
        .run(&[
            "verify",
            "model/model.sig",
            "--key",
            "keys/signer.pub",
            "--json",
        ])
        .expect_code(FAILED, case);
    for needle in expect_in_message {
        assert!(
            run.stderr.contains(needle),
            "{case}: '{needle}' not in: {}",
            run.stderr
        );
    }
    assert_eq!(run.json()["status"], "failed", "{case}");
}

#[test]
fn model_extra_file_is_caught() {
    for (name, flag) in KEY_TYPES {
        let ws = signed_model(flag);
        ws.write("model/tokenizer/added.py", b"import os");
        model_fails(
            &ws,
            &format!("{name}: extra file"),
            &["extra: tokenizer/added.py"],
        );
    }
}

#[test]
fn model_missing_file_is_caught() {
    for (name, flag) in KEY_TYPES {
        let ws = signed_model(flag);
        std::fs::remove_file(ws.path("model/config.json")).expect("rm");
        model_fails(
            &ws,
            &format!("{name}: missing file"),
            &["missing: config.json"],
        );
    }
}

#[test]
fn model_renamed_file_is_caught() {
    for (name, flag) in KEY_TYPES {
        let ws = signed_model(flag);
        std::fs::rename(
            ws.path("model/model.safetensors"),
            ws.path("model/model-00001.safetensors"),
        )
        .expect("mv");
        model_fails(
            &ws,
            &format!("{name}: renamed file"),
            &[
                "missing: model.safetensors",
                "extra: model-00001.safetensors",
            ],
        );
    }
}

#[test]
fn model_changed_file_is_caught() {
    for (name, flag) in KEY_TYPES {
        let ws = signed_model(flag);
        let mut bytes = ws.read("model/model.safetensors");
        bytes[123_456] ^= 0x01;
        ws.write("model/model.safetensors", bytes);
        model_fails(
            &ws,
            &format!("{name}: changed file"),
            &["changed: model.safetensors"],
        );
    }
}

#[test]
fn model_signature_wrong_key_is_caught() {
    for (name, flag) in KEY_TYPES {
        let ws = signed_model(flag);
        let run = ws.run(&["verify", "model/model.sig", "--key", "keys/other.pub"]);
        run.expect_code(FAILED, &format!("{name}: model wrong key"));
    }
}

#[test]
fn model_signature_payload_flip_is_caught() {
    for (name, flag) in KEY_TYPES {
        let ws = signed_model(flag);
        let path = ws.path("model/model.sig");
        let mut bundle = read_json(&path);
        let payload = bundle["dsseEnvelope"]["payload"]
            .as_str()
            .expect("payload")
            .to_string();
        bundle["dsseEnvelope"]["payload"] = Value::String(flip_base64_byte(&payload, 60));
        write_json(&path, &bundle);
        ws.run(&["verify", "model/model.sig", "--key", "keys/signer.pub"])
            .expect_code(FAILED, &format!("{name}: model.sig payload flipped"));
    }
}

#[test]
fn model_signature_resource_digest_edit_is_caught() {
    // Rewriting a resource digest *and* the root digest consistently still breaks the signature.
    let ws = signed_model("");
    let path = ws.path("model/model.sig");
    let mut bundle = read_json(&path);
    let mut statement: Value = serde_json::from_slice(&unb64(
        bundle["dsseEnvelope"]["payload"].as_str().expect("payload"),
    ))
    .expect("json");
    statement["predicate"]["resources"][0]["digest"] = Value::String("00".repeat(32));
    bundle["dsseEnvelope"]["payload"] =
        Value::String(b64(&serde_json::to_vec(&statement).expect("json")));
    write_json(&path, &bundle);
    ws.run(&["verify", "model/model.sig", "--key", "keys/signer.pub"])
        .expect_code(FAILED, "resource digest edited");
}

#[test]
fn git_metadata_and_signature_are_not_signed() {
    let ws = signed_model("");
    ws.write("model/.git/HEAD", b"ref: refs/heads/main");
    ws.write("model/.gitignore", b"changed");
    ws.run(&["verify", "model/model.sig", "--key", "keys/signer.pub"])
        .expect_code(OK, "git paths ignored");
}

#[cfg(unix)]
#[test]
fn symlink_out_of_model_is_refused() {
    let ws = Workspace::new();
    ws.keygen("signer", "");
    ws.make_model("model");
    ws.write("secret.txt", b"s3cret");
    std::os::unix::fs::symlink(ws.path("secret.txt"), ws.path("model/leak.txt")).expect("symlink");
    let run = ws
        .run(&["sign-model", "model", "--key", "keys/signer.key"])
        .expect_code(util::INPUT, "symlink outside");
    assert!(
        run.stderr.contains("leak.txt") && run.stderr.contains("outside"),
        "{}",
        run.stderr
    );
    assert!(
        !ws.path("model/model.sig").exists(),
        "no signature left behind"
    );
}
