//! Key files: what keygen writes, and clear errors for wrong, encrypted, truncated or
//! mismatched keys.

mod util;

use util::{Workspace, INPUT, KEY_TYPES, OK};

#[test]
fn keygen_writes_pkcs8_and_spki_with_private_mode_0600() {
    for (name, flag) in KEY_TYPES {
        let ws = Workspace::new();
        let mut args = vec!["keygen", "--out", "keys/signer", "--json"];
        if !flag.is_empty() {
            args.push(flag);
        }
        let run = ws.run(&args).expect_code(OK, name);
        let json = run.json();
        assert_eq!(json["algorithm"], name);
        let private = String::from_utf8(ws.read("keys/signer.key")).expect("utf8");
        let public = String::from_utf8(ws.read("keys/signer.pub")).expect("utf8");
        assert!(
            private.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{name}: PKCS#8"
        );
        assert!(
            public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{name}: SPKI"
        );
        assert_eq!(
            json["keyid"],
            hex_sha256(public.as_bytes()),
            "{name}: keyid is sha256 of the PEM"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(ws.path("keys/signer.key"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: private key mode");
        }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn keygen_refuses_to_overwrite() {
    let ws = Workspace::new();
    ws.keygen("signer", "");
    let before = ws.read("keys/signer.key");
    let run = ws
        .run(&["keygen", "--out", "keys/signer"])
        .expect_code(INPUT, "overwrite");
    assert!(
        run.stderr.contains("already exists") && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    assert_eq!(ws.read("keys/signer.key"), before, "key untouched");
    ws.run(&["keygen", "--out", "keys/signer", "--force"])
        .expect_code(OK, "force");
    assert_ne!(ws.read("keys/signer.key"), before);
}

fn sign_with(ws: &Workspace, key: &str) -> util::Run {
    ws.run(&["sign-model", "model", "--key", key])
}

#[test]
fn bad_keys_give_one_line_errors_naming_the_file() {
    let ws = Workspace::new();
    ws.keygen("signer", "");
    ws.keygen("other", "");
    ws.make_model("model");
    let private = String::from_utf8(ws.read("keys/signer.key")).expect("utf8");
    ws.write("bad/truncated.key", &private[..private.len() / 2]);
    ws.write("bad/encrypted.key", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhY\n-----END ENCRYPTED PRIVATE KEY-----\n");
    ws.write("bad/empty.key", "");
    ws.write("bad/text.key", "hello");
    ws.write(
        "bad/cert.key",
        "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
    );
    let cases = [
        ("keys/signer.pub", "is a public key"),
        ("bad/truncated.key", "truncated"),
        ("bad/encrypted.key", "encrypted"),
        ("bad/empty.key", "empty"),
        ("bad/text.key", "not a PEM key"),
        ("bad/cert.key", "not a key"),
        ("keys/none.key", "cannot read"),
    ];
    for (key, needle) in cases {
        let run = sign_with(&ws, key).expect_code(INPUT, key);
        assert_eq!(run.stderr.lines().count(), 1, "{key}: {}", run.stderr);
        assert!(
            run.stderr.contains(key),
            "{key}: file named: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(needle),
            "{key}: '{needle}' in: {}",
            run.stderr
        );
        assert!(
            !ws.path("model/model.sig").exists(),
            "{key}: nothing written"
        );
    }
    // A private key where a public key is expected.
    ws.write("x.json", b"{}");
    let run = ws
        .run(&["verify", "x.json", "--key", "keys/signer.key"])
        .expect_code(INPUT, "private as public");
    assert!(run.stderr.contains("private key"), "{}", run.stderr);
}

#[test]
fn mismatched_public_key_beside_private_is_refused() {
    let ws = Workspace::new();
    ws.keygen("signer", "");
    ws.keygen("other", "");
    ws.make_model("model");
    std::fs::copy(ws.path("keys/other.pub"), ws.path("keys/signer.pub")).expect("copy");
    let run = sign_with(&ws, "keys/signer.key").expect_code(INPUT, "mismatch");
    assert!(
        run.stderr.contains("keys/signer.pub") && run.stderr.contains("does not match"),
        "{}",
        run.stderr
    );
}

#[test]
fn openssl_style_keys_load() {
    // SEC1 "EC PRIVATE KEY" (what `openssl ecparam -genkey` writes) is accepted for signing.
    // Fixture: `openssl ecparam -name prime256v1 -genkey -noout` (OpenSSL 3.0), a throwaway test key.
    let ws = Workspace::new();
    ws.make_model("model");
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBrRRnqlCKnZNv1WNPGuSngOC/z9rNecz7q+iZwIw6WYoAoGCCqGSM49\nAwEHoUQDQgAEU/SxCAq1lBQW7g9vsKoN9HhUS0x8q82zZURRtdQcDXnOBYgbuPst\nWKO7W9A8yL7L9Zf9CrB7i9w6LfJ2dGT0gA==\n-----END EC PRIVATE KEY-----\n";
    ws.write("k/sec1.pem", sec1);
    sign_with(&ws, "k/sec1.pem").expect_code(OK, "SEC1 key");
}
