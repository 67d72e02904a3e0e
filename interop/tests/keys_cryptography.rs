//! Our key files against pyca/cryptography 50.0.2 (what securesystemslib and model_signing load
//! keys with): PKCS#8 private keys, SPKI public keys, keyids, and signatures both ways.

use attest::keyfile::{load_public_key, load_signing_key, write_key_pair};
use attest::keys::{KeyAlgorithm, SigningKey};
use trainprov_interop_tests::run_helper;

/// Case 7: cryptography loads our P-256 and Ed25519 PKCS#8/SPKI files, writes the same public
/// PEM, computes the same keyid, verifies our signature, and we verify its signature.
#[test]
fn cryptography_loads_our_keys_and_agrees_on_keyids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let message = b"trainprov interop: keys\n".to_vec();
    let message_path = dir.path().join("message");
    std::fs::write(&message_path, &message).expect("writing message");
    std::thread::scope(|s| {
        let jobs: Vec<_> = [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519]
            .into_iter()
            .map(|alg| {
                let key = SigningKey::generate(alg);
                let paths = write_key_pair(&dir.path().join(alg.name()), &key, false)
                    .expect("writing key pair");
                assert!(
                    key.to_pkcs8_pem()
                        .starts_with("-----BEGIN PRIVATE KEY-----\n"),
                    "{alg}: PKCS#8 PEM"
                );
                let sig_path = dir.path().join(format!("{alg}.sig"));
                std::fs::write(&sig_path, key.sign(&message)).expect("writing signature");
                let message_path = &message_path;
                let (private, public) = (paths.private.clone(), paths.public.clone());
                let job = s.spawn(move || {
                    run_helper(
                        "check_keys.py",
                        &[
                            private.as_os_str(),
                            public.as_os_str(),
                            alg.name().as_ref(),
                            message_path.as_os_str(),
                            sig_path.as_os_str(),
                        ],
                    )
                });
                (alg, key, paths, job)
            })
            .collect();
        for (alg, key, paths, job) in jobs {
            let case = format!("case 7 ({alg})");
            let out = job.join().expect("cryptography job");
            assert!(out.ok(), "{case}: cryptography must load our keys\n{out}");
            let public = key.public_key();
            assert_eq!(
                out.field("keyid"),
                Some(public.keyid()),
                "{case}: keyid differs from sha256(public_bytes(PEM, SPKI)) in Python\n{out}"
            );
            let python_sig = hex::decode(out.field("python-sig").expect("python-sig line"))
                .expect("python-sig is hex");
            // OpenSSL (under cryptography) writes the high-S form of an ECDSA signature about
            // half the time. Attestations refuse that form (issue 11: one attestation, two
            // files); the key itself must still check OpenSSL's signature either way.
            assert!(
                public.verify_allowing_high_s(&message, &python_sig),
                "{case}: we must verify cryptography's signature made with our private key"
            );
            // Our own loaders agree with what we wrote.
            assert_eq!(load_public_key(&paths.public).expect("load .pub"), public);
            assert_eq!(
                load_signing_key(&paths.private)
                    .expect("load .key")
                    .public_key(),
                public
            );
            println!(
                "{case}: cryptography loaded both files; keyid {}",
                public.keyid()
            );
        }
    });
}

/// Case 7, other direction: we load P-256 (PKCS#8 and SEC1) and Ed25519 keys that cryptography
/// made, derive the public key it wrote, and compute the keyid it computes.
#[test]
fn we_load_keys_made_by_cryptography() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_helper("make_keys.py", &[dir.path().as_os_str()]);
    assert!(out.ok(), "case 7: make_keys.py\n{out}");
    for (name, alg) in [
        ("ec-pkcs8", KeyAlgorithm::EcdsaP256),
        ("ec-sec1", KeyAlgorithm::EcdsaP256),
        ("ed25519", KeyAlgorithm::Ed25519),
    ] {
        let case = format!("case 7 (cryptography's {name} key)");
        let key = load_signing_key(&dir.path().join(format!("{name}.key")))
            .unwrap_or_else(|e| panic!("{case}: we must load it: {e}"));
        assert_eq!(key.algorithm(), alg, "{case}");
        let public = load_public_key(&dir.path().join(format!("{name}.pub")))
            .unwrap_or_else(|e| panic!("{case}: we must load its public key: {e}"));
        assert_eq!(key.public_key(), public, "{case}: public halves differ");
        let written = std::fs::read_to_string(dir.path().join(format!("{name}.pub")))
            .expect("reading public key");
        assert_eq!(
            public.to_pem(),
            written,
            "{case}: our canonical PEM differs from cryptography's"
        );
        assert_eq!(
            out.field(name),
            Some(public.keyid()),
            "{case}: keyids differ\n{out}"
        );
    }
}
