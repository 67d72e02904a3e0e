//! Our DSSE envelopes against securesystemslib 1.6.0 (`securesystemslib.dsse.Envelope.verify`
//! with `SSlibKey.from_crypto`), the DSSE implementation in-toto and TUF use.

use std::path::{Path, PathBuf};

use attest::dsse::{decode_base64, encode_base64, Envelope};
use attest::keys::{KeyAlgorithm, PublicKey, SigningKey};
use attest::oms::{ModelSignature, SIGNATURE_FILE};
use base64::Engine as _;
use recorder::model_tree::{hash_model_dir, TreeOptions};
use sha2::{Digest as _, Sha256};
use trainprov_interop_tests::{
    flip, make_model_dir, provenance_statement, run_helper, Outcome, PAYLOAD_TYPE,
};

const ALGORITHMS: [KeyAlgorithm; 2] = [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519];

/// A public key written to a PEM file for Python.
#[derive(Clone)]
struct Trusted {
    key: PublicKey,
    pem: PathBuf,
}

fn trusted(dir: &Path, key: &SigningKey) -> Trusted {
    let public = key.public_key();
    let pem = dir.join(format!("{}.pub", &public.keyid()[..16]));
    std::fs::write(&pem, public.to_pem()).expect("writing public key PEM");
    Trusted { key: public, pem }
}

/// Runs `verify_dsse.py` on `document` (an envelope, or a bundle when `bundle`).
fn sslib_verify(
    dir: &Path,
    name: &str,
    document: &[u8],
    bundle: bool,
    threshold: usize,
    keys: &[&Trusted],
) -> Outcome {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, document).expect("writing envelope for securesystemslib");
    let mut args: Vec<String> = vec![path.display().to_string()];
    if bundle {
        args.push("--bundle".into());
    }
    args.push("--threshold".into());
    args.push(threshold.to_string());
    for t in keys {
        args.push("--key".into());
        args.push(t.pem.display().to_string());
        args.push(t.key.algorithm().sslib_keytype().into());
        args.push(t.key.algorithm().sslib_scheme().into());
        args.push(t.key.keyid().into());
    }
    run_helper("verify_dsse.py", &args)
}

fn assert_sslib_verified(outcome: &Outcome, payload: &[u8], signers: &[&Trusted], case: &str) {
    assert!(
        outcome.ok(),
        "{case}: securesystemslib must verify\n{outcome}"
    );
    assert_eq!(
        outcome.field("payload-sha256"),
        Some(hex::encode(Sha256::digest(payload)).as_str()),
        "{case}: securesystemslib decoded a different payload\n{outcome}"
    );
    let mut expected: Vec<&str> = signers.iter().map(|t| t.key.keyid()).collect();
    expected.sort_unstable();
    assert_eq!(
        outcome.field("accepted-keyids"),
        Some(expected.join(" ").as_str()),
        "{case}: securesystemslib accepted other keys\n{outcome}"
    );
}

/// Case 1: securesystemslib verifies our envelope over a SLSA provenance Statement, for each key
/// type alone and for a 2-of-2 envelope signed by both.
#[test]
fn securesystemslib_verifies_our_provenance_envelopes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let statement = provenance_statement();
    let keys: Vec<SigningKey> = ALGORITHMS
        .iter()
        .map(|a| SigningKey::generate(*a))
        .collect();
    let trusted_keys: Vec<Trusted> = keys.iter().map(|k| trusted(dir.path(), k)).collect();

    std::thread::scope(|s| {
        let mut jobs = Vec::new();
        for (key, t) in keys.iter().zip(&trusted_keys) {
            let envelope = Envelope::sign(PAYLOAD_TYPE, &statement, &[key]);
            envelope
                .verify(PAYLOAD_TYPE, std::slice::from_ref(&t.key), 1)
                .expect("our own verifier accepts the envelope");
            let case = format!("case 1 ({} alone)", key.algorithm());
            let name = key.algorithm().name();
            let dir = dir.path();
            jobs.push(s.spawn(move || {
                let out = sslib_verify(dir, name, &envelope.to_json(), false, 1, &[t]);
                (case, out, vec![t])
            }));
        }

        let both = Envelope::sign(PAYLOAD_TYPE, &statement, &[&keys[0], &keys[1]]);
        let all: Vec<PublicKey> = trusted_keys.iter().map(|t| t.key.clone()).collect();
        let verified = both
            .verify(PAYLOAD_TYPE, &all, 2)
            .expect("our own verifier accepts the 2-of-2 envelope");
        assert_eq!(verified.signed_by().len(), 2);
        let refs: Vec<&Trusted> = trusted_keys.iter().collect();
        let dir_path = dir.path();
        let refs_job = refs.clone();
        jobs.push(s.spawn(move || {
            let out = sslib_verify(dir_path, "both", &both.to_json(), false, 2, &refs_job);
            (
                "case 1 (P-256 + Ed25519, threshold 2)".to_string(),
                out,
                refs_job,
            )
        }));

        // Control: one signature cannot meet threshold 2, so the check above is not vacuous.
        let one = Envelope::sign(PAYLOAD_TYPE, &statement, &[&keys[0]]);
        let control =
            s.spawn(move || sslib_verify(dir_path, "one-of-two", &one.to_json(), false, 2, &refs));

        for job in jobs {
            let (case, out, signers) = job.join().expect("securesystemslib job");
            assert_sslib_verified(&out, &statement, &signers, &case);
            assert_eq!(
                out.field("payloadType"),
                Some(PAYLOAD_TYPE),
                "{case}\n{out}"
            );
        }
        let control = control.join().expect("control job");
        assert_eq!(
            control.code, 1,
            "case 1 control: a single signature must not meet threshold 2\n{control}"
        );
    });
}

/// Envelope variants with one thing changed.
fn tampered(
    envelope: &Envelope,
    key: &SigningKey,
    statement: &[u8],
) -> Vec<(&'static str, Envelope)> {
    let mut out = Vec::new();

    let mut payload = decode_base64(&envelope.payload, "payload").expect("our payload decodes");
    let middle = payload.len() / 2;
    flip(&mut payload, middle);
    let mut e = envelope.clone();
    e.payload = encode_base64(&payload);
    out.push(("flipped payload byte", e));

    let mut e = envelope.clone();
    e.payload_type = "application/vnd.in-toto+jsom".into();
    out.push(("changed payloadType", e));

    let mut e = envelope.clone();
    let mut sig = base64::engine::general_purpose::STANDARD
        .decode(&e.signatures[0].sig)
        .expect("our signature decodes");
    let middle = sig.len() / 2;
    flip(&mut sig, middle);
    e.signatures[0].sig = encode_base64(&sig);
    out.push(("flipped signature byte", e));

    let other = SigningKey::generate(key.algorithm());
    let e = Envelope::sign(PAYLOAD_TYPE, statement, &[&other]);
    out.push(("signed with a different key (its own keyid)", e));

    // The hard variant: the other key's signature claims the trusted keyid, so the rejection must
    // come from the signature check, not from keyid matching.
    let mut e = Envelope::sign(PAYLOAD_TYPE, statement, &[&other]);
    e.signatures[0].keyid = key.public_key().keyid().to_string();
    out.push((
        "signed with a different key (claiming the trusted keyid)",
        e,
    ));
    out
}

/// Case 2: every single tamper is rejected by securesystemslib and by our own verifier, while the
/// untampered envelope (the baseline) passes both.
#[test]
fn tampered_envelopes_are_rejected_by_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let statement = provenance_statement();
    std::thread::scope(|s| {
        let mut baselines = Vec::new();
        let mut rejections = Vec::new();
        for alg in ALGORITHMS {
            let key = SigningKey::generate(alg);
            let t = trusted(dir, &key);
            let envelope = Envelope::sign(PAYLOAD_TYPE, &statement, &[&key]);
            envelope
                .verify(PAYLOAD_TYPE, std::slice::from_ref(&t.key), 1)
                .expect("baseline: our verifier accepts the untampered envelope");
            for (index, (what, bad)) in tampered(&envelope, &key, &statement)
                .into_iter()
                .enumerate()
            {
                let case = format!("case 2 ({alg}, {what})");
                // Our side with the type we expect, then with the envelope's own (possibly
                // tampered) type expected, so that the PAE signature check itself is exercised.
                let ours = bad.verify(PAYLOAD_TYPE, std::slice::from_ref(&t.key), 1);
                let ours_pae = bad.verify(&bad.payload_type, std::slice::from_ref(&t.key), 1);
                assert!(
                    ours.is_err(),
                    "{case}: our verifier accepted a tampered envelope"
                );
                assert!(
                    ours_pae.is_err(),
                    "{case}: our verifier accepted it when told to expect its payloadType"
                );
                let reason = ours.err().map(|e| e.to_string()).unwrap_or_default();
                let t = t.clone();
                rejections.push(s.spawn(move || {
                    let name = format!("tampered-{alg}-{index}");
                    let out = sslib_verify(dir, &name, &bad.to_json(), false, 1, &[&t]);
                    (case, out, reason)
                }));
            }
            baselines.push(s.spawn(move || {
                let out = sslib_verify(
                    dir,
                    &format!("baseline-{alg}"),
                    &envelope.to_json(),
                    false,
                    1,
                    &[&t],
                );
                (format!("case 2 baseline ({alg})"), out, t)
            }));
        }
        for job in baselines {
            let (case, out, t) = job.join().expect("securesystemslib job");
            assert_sslib_verified(&out, &statement, &[&t], &case);
        }
        for job in rejections {
            let (case, out, ours) = job.join().expect("securesystemslib job");
            assert_eq!(
                out.code, 1,
                "{case}: securesystemslib must reject (exit 1; 3 means the harness broke)\n{out}"
            );
            println!(
                "{case}: securesystemslib {} | ours: {ours}",
                out.stdout.trim()
            );
        }
    });
}

/// Case 3: the DSSE envelope inside an OMS `model.sig` we made verifies in securesystemslib with
/// the key under our keyid.
#[test]
fn securesystemslib_verifies_the_envelope_in_our_model_sig() {
    let work = tempfile::tempdir().expect("tempdir");
    let model = work.path().join("model");
    make_model_dir(&model);
    let options = TreeOptions {
        ignore: vec![SIGNATURE_FILE.into()],
        ..Default::default()
    };
    let manifest = hash_model_dir(&model, &options).expect("hashing the model directory");
    std::thread::scope(|s| {
        let mut jobs = Vec::new();
        for alg in ALGORITHMS {
            let key = SigningKey::generate(alg);
            let t = trusted(work.path(), &key);
            let sig = ModelSignature::sign(&manifest, &key).expect("signing the model");
            let bytes = sig.to_json();
            let bundle: serde_json::Value =
                serde_json::from_slice(&bytes).expect("model.sig is JSON");
            assert_eq!(
                bundle["verificationMaterial"]["publicKey"]["hint"],
                serde_json::json!(t.key.keyid()),
                "the bundle's key hint is our keyid"
            );
            let payload = base64::engine::general_purpose::STANDARD
                .decode(bundle["dsseEnvelope"]["payload"].as_str().expect("payload"))
                .expect("payload base64");
            let sig_path = work.path().join(format!("{alg}-{SIGNATURE_FILE}"));
            std::fs::write(&sig_path, &bytes).expect("writing model.sig");
            let dir = work.path();
            jobs.push(s.spawn(move || {
                let out = sslib_verify(dir, &format!("oms-{alg}"), &bytes, true, 1, &[&t]);
                (format!("case 3 ({alg} model.sig)"), out, payload, t)
            }));
        }
        for job in jobs {
            let (case, out, payload, t) = job.join().expect("securesystemslib job");
            assert_sslib_verified(&out, &payload, &[&t], &case);
        }
    });
}
