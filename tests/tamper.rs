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

// ---- issue 11 ----

/// Issue 11: one signature passed `--threshold 2` on a model.sig. An OMS bundle carries one
/// signature, so a threshold above one is refused as a usage error naming the alternative.
#[test]
fn issue11_model_sig_threshold_above_one_is_refused() {
    let ws = signed_model("");
    let run = ws
        .run(&[
            "verify",
            "model/model.sig",
            "--key",
            "keys/signer.pub",
            "--key",
            "keys/other.pub",
            "--threshold",
            "2",
        ])
        .expect_code(util::INPUT, "threshold 2 on a model.sig");
    assert!(
        run.stderr.contains("exactly one signature") && run.stderr.contains("attestation"),
        "{}",
        run.stderr
    );
    ws.run(&[
        "verify",
        "model/model.sig",
        "--key",
        "keys/signer.pub",
        "--key",
        "keys/other.pub",
    ])
    .expect_code(OK, "threshold 1, two trusted keys");
}

/// The P-256 group order n.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// DER `SEQUENCE { INTEGER r, INTEGER s }` → the same with `n - s` (the high-S twin).
fn high_s_twin(der: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> (Vec<u8>, &[u8]) {
        assert_eq!(bytes[0], 0x02, "INTEGER");
        let len = bytes[1] as usize;
        (bytes[2..2 + len].to_vec(), &bytes[2 + len..])
    }
    fn encode(value: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = value.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_some_and(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    assert_eq!(der[0], 0x30, "SEQUENCE");
    let (r, rest) = integer(&der[2..]);
    let (s, _) = integer(rest);
    let mut s32 = [0u8; 32];
    let s = &s[s.len().saturating_sub(32)..];
    s32[32 - s.len()..].copy_from_slice(s);
    let mut twin = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = P256_N[i] as i16 - s32[i] as i16 - borrow;
        borrow = i16::from(d < 0);
        twin[i] = d.rem_euclid(256) as u8;
    }
    let body: Vec<u8> = [encode(&r), encode(&twin)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// Issue 11: the high-S twin of an ECDSA signature verified, giving a second attestation file
/// (another SHA-256) for the same signed statement.
#[test]
fn issue11_high_s_twin_of_an_attestation_is_rejected() {
    tampered_envelope_fails("", "high-S twin", |e| {
        let sig = unb64(e["signatures"][0]["sig"].as_str().expect("sig"));
        e["signatures"][0]["sig"] = Value::String(b64(&high_s_twin(&sig)));
    });
}

/// Issue 11: a signed Statement of another predicate type (here the OMS Statement inside a
/// model.sig) passed as "OK signed by"; only SLSA Provenance does unless asked otherwise.
#[test]
fn issue11_verify_requires_the_provenance_predicate() {
    let ws = signed_model("");
    let bundle = read_json(&ws.path("model/model.sig"));
    write_json(&ws.path("inner.intoto.json"), &bundle["dsseEnvelope"]);
    let base = ["verify", "inner.intoto.json", "--key", "keys/signer.pub"];
    let run = ws
        .run(&base)
        .expect_code(FAILED, "OMS statement as provenance");
    assert!(
        run.stderr.contains("predicateType") && run.stderr.contains("--any-predicate"),
        "{}",
        run.stderr
    );
    ws.run(&[&base[..], &["--any-predicate"]].concat())
        .expect_code(OK, "--any-predicate");
    ws.run(
        &[
            &base[..],
            &["--predicate-type", "https://model_signing/signature/v1.0"],
        ]
        .concat(),
    )
    .expect_code(OK, "--predicate-type of OMS");
    ws.run(
        &[
            &base[..],
            &["--predicate-type", "https://slsa.dev/provenance/v1"],
        ]
        .concat(),
    )
    .expect_code(FAILED, "--predicate-type provenance");
}

/// Issue 11: an attestation over 16 MiB is refused (exit 2) before anything is parsed.
#[test]
fn issue11_oversized_attestation_is_refused_unparsed() {
    let ws = attested("");
    let path = ws.path("out/provenance.intoto.json");
    let mut envelope = read_json(&path);
    envelope["padding"] = Value::String("x".repeat(17 * 1024 * 1024));
    write_json(&path, &envelope);
    let run = verify_attestation(&ws, &[]).expect_code(util::INPUT, "17 MiB envelope");
    assert!(run.stderr.contains("16 MiB"), "{}", run.stderr);
}

/// A signed provenance Statement with these subject names and `adapter.bin` beside it.
fn signed_with_subjects(ws: &Workspace, names: &[&str]) {
    use attest::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
    use attest::statement::{digest_set_of, ResourceDescriptor, Statement};
    let key = attest::keyfile::load_signing_key(&ws.path("keys/signer.key")).expect("key");
    let subjects = names
        .iter()
        .map(|n| ResourceDescriptor::named(*n, digest_set_of(b"weights")))
        .collect();
    let statement = Statement::new(subjects, attest::slsa::PROVENANCE_V1, serde_json::json!({}));
    let envelope = Envelope::sign(
        IN_TOTO_PAYLOAD_TYPE,
        &statement.to_json().expect("json"),
        &[&key],
    );
    ws.write("out/adapter.bin", b"weights");
    ws.write("out/provenance.intoto.json", envelope.to_json());
}

/// Issue 11: subject names such as `/etc/hostname` or `../x` were hashed outside --model-dir.
/// They are reported and never opened, even when a file of that content exists there.
#[test]
fn issue11_subject_names_are_confined_to_the_model_dir() {
    let ws = Workspace::new();
    ws.keygen("signer", "");
    ws.write("x", b"weights");
    let outside = ws.path("x").display().to_string();
    for name in ["../x", outside.as_str(), "sub/../../x", "./adapter.bin"] {
        signed_with_subjects(&ws, &["adapter.bin", name]);
        let run =
            verify_attestation(&ws, &["--model-dir", "out", "--json"]).expect_code(FAILED, name);
        assert!(
            run.stderr.contains("escapes --model-dir"),
            "{name}: {}",
            run.stderr
        );
    }
    signed_with_subjects(&ws, &["adapter.bin"]);
    verify_attestation(&ws, &["--model-dir", "out"]).expect_code(OK, "confined names");
}

/// Issue 11: any `*approval-*.intoto.json` in a model directory passed the extra-file check.
/// Only an approval beside the attestation, signed by a trusted key and naming it, is ignored.
#[test]
fn issue11_unsigned_approval_files_are_extra_files() {
    let ws = attested("");
    // A forged "approval" of the right shape, signed by an untrusted key, deep in the directory.
    let statement = util::statement_of(&ws.path("out/provenance.intoto.json"));
    let sha = {
        use sha2::Digest as _;
        hex(&sha2::Sha256::digest(ws.read("out/provenance.intoto.json")))
    };
    let vsa = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": statement["subject"],
        "predicateType": "https://slsa.dev/verification_summary/v1",
        "predicate": {"inputAttestations": [{"uri": "x", "digest": {"sha256": sha}}]},
    });
    let key = attest::keyfile::load_signing_key(&ws.path("keys/other.key")).expect("key");
    let forged = attest::dsse::Envelope::sign(
        attest::dsse::IN_TOTO_PAYLOAD_TYPE,
        &serde_json::to_vec(&vsa).expect("json"),
        &[&key],
    );
    for place in [
        "out/sub/x.approval-prod.intoto.json",
        "out/provenance.approval-prod.intoto.json",
    ] {
        ws.write(place, forged.to_json());
        let run = verify_attestation(&ws, &["--model-dir", "out"]).expect_code(FAILED, place);
        assert!(run.stderr.contains("extra file"), "{place}: {}", run.stderr);
        std::fs::remove_file(ws.path(place)).expect("rm");
    }
    // Signed by a trusted key and beside the attestation: ignored, not a product.
    let key = attest::keyfile::load_signing_key(&ws.path("keys/signer.key")).expect("key");
    let genuine = attest::dsse::Envelope::sign(
        attest::dsse::IN_TOTO_PAYLOAD_TYPE,
        &serde_json::to_vec(&vsa).expect("json"),
        &[&key],
    );
    ws.write(
        "out/provenance.approval-prod.intoto.json",
        genuine.to_json(),
    );
    verify_attestation(&ws, &["--model-dir", "out"]).expect_code(OK, "genuine approval");
    ws.write(
        "out/sub/provenance.approval-prod.intoto.json",
        genuine.to_json(),
    );
    verify_attestation(&ws, &["--model-dir", "out"]).expect_code(FAILED, "not beside it");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
