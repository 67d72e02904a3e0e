//! Our OMS `model.sig` against the reference implementation, the `model_signing` 1.1.1 CLI
//! (`model_signing sign key` / `model_signing verify key`), in both directions.

use std::path::{Path, PathBuf};

use attest::keyfile::{load_public_key, write_key_pair, KeyPairPaths};
use attest::keys::{KeyAlgorithm, PublicKey, SigningKey};
use attest::oms::{ModelDiff, ModelManifest, ModelSignature, SIGNATURE_FILE};
use base64::Engine as _;
use recorder::model_tree::{hash_model_dir, TreeOptions};
use trainprov_interop_tests::{copy_dir, flip, make_model_dir, model_signing, Outcome, BIG_FILE};

fn our_tree_options() -> TreeOptions {
    TreeOptions {
        ignore: vec![SIGNATURE_FILE.into()],
        ..Default::default()
    }
}

/// `trainprov sign-model DIR --key K`: hash the directory, sign, write `DIR/model.sig`.
fn trainprov_sign(dir: &Path, key: &SigningKey) -> ModelManifest {
    let manifest = hash_model_dir(dir, &our_tree_options()).expect("hashing the model directory");
    let sig = ModelSignature::sign(&manifest, key).expect("signing the model");
    std::fs::write(dir.join(SIGNATURE_FILE), sig.to_json()).expect("writing model.sig");
    manifest
}

/// `trainprov verify DIR/model.sig --key PUB`: check the signature, re-hash the directory the
/// way the signature says it was hashed, and diff. `Err` when the signature itself is refused.
fn trainprov_verify(dir: &Path, public: &PublicKey) -> Result<(ModelManifest, ModelDiff), String> {
    let bytes = std::fs::read(dir.join(SIGNATURE_FILE)).map_err(|e| e.to_string())?;
    let sig = ModelSignature::from_json(&bytes).map_err(|e| e.to_string())?;
    let verified = sig
        .verify(std::slice::from_ref(public))
        .map_err(|e| e.to_string())?;
    let mut ignore = verified.ignore_paths.clone();
    ignore.push(SIGNATURE_FILE.into());
    let options = TreeOptions {
        ignore,
        hash: verified.hash_type,
        ..Default::default()
    };
    let actual = hash_model_dir(dir, &options).map_err(|e| e.to_string())?;
    let diff = verified.diff(&actual);
    Ok((verified.into_inner(), diff))
}

fn ms_verify(dir: &Path, public_pem: &Path) -> Outcome {
    let sig = dir.join(SIGNATURE_FILE);
    model_signing(&[
        "verify".as_ref(),
        "key".as_ref(),
        dir.as_os_str(),
        "--signature".as_ref(),
        sig.as_os_str(),
        "--public_key".as_ref(),
        public_pem.as_os_str(),
    ])
}

fn ms_sign(dir: &Path, private_pem: &Path) -> Outcome {
    let sig = dir.join(SIGNATURE_FILE);
    model_signing(&[
        "sign".as_ref(),
        "key".as_ref(),
        dir.as_os_str(),
        "--signature".as_ref(),
        sig.as_os_str(),
        "--private_key".as_ref(),
        private_pem.as_os_str(),
    ])
}

fn assert_ms_accepts(out: &Outcome, case: &str) {
    assert!(
        out.ok() && out.stdout.contains("Verification succeeded"),
        "{case}: model_signing verify must accept\n{out}"
    );
}

/// The Statement inside a `model.sig`, decoded without our library.
fn statement_of(sig_bytes: &[u8]) -> serde_json::Value {
    let bundle: serde_json::Value = serde_json::from_slice(sig_bytes).expect("model.sig is JSON");
    let payload = bundle["dsseEnvelope"]["payload"]
        .as_str()
        .expect("dsseEnvelope.payload");
    let payload = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .expect("payload is base64");
    serde_json::from_slice(&payload).expect("payload is a JSON Statement")
}

fn p256_keys(dir: &Path) -> (SigningKey, KeyPairPaths) {
    let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
    let paths = write_key_pair(&dir.join("keys/signer"), &key, false).expect("writing key pair");
    (key, paths)
}

/// Case 4: `model_signing verify key` accepts a `model.sig` we made; git metadata is ignored by
/// both sides (changing `.gitignore` afterwards still verifies).
#[test]
fn model_signing_verifies_our_model_sig() {
    let work = tempfile::tempdir().expect("tempdir");
    let model = work.path().join("model");
    make_model_dir(&model);
    let (key, paths) = p256_keys(work.path());
    let manifest = trainprov_sign(&model, &key);
    let names: Vec<&str> = manifest.files.keys().map(|p| p.as_str()).collect();
    assert_eq!(names.len(), 15, "15 model files are signed: {names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with(".git")),
        "root git metadata must not be signed: {names:?}"
    );
    assert!(
        names.contains(&"sub/.gitignore") && names.contains(&"sub/model.sig"),
        "nested .gitignore and model.sig are ordinary files: {names:?}"
    );

    let out = ms_verify(&model, &paths.public);
    assert_ms_accepts(&out, "case 4 (our P-256 model.sig)");
    println!("case 4: model_signing: {}", out.stdout.trim());

    std::fs::write(model.join(".gitignore"), "changed after signing\n").expect("edit .gitignore");
    std::fs::write(model.join(".git/HEAD"), "ref: refs/heads/other\n").expect("edit .git/HEAD");
    let out = ms_verify(&model, &paths.public);
    assert_ms_accepts(&out, "case 4 (.gitignore changed after signing)");
    let public = load_public_key(&paths.public).expect("loading our public key");
    let (_, diff) = trainprov_verify(&model, &public).expect("case 4: we verify our own sig");
    assert!(
        diff.is_empty(),
        "case 4: .gitignore must be ignored by us too: {diff}"
    );
}

/// Case 5: we verify a `model.sig` made by `model_signing sign key` with a key we wrote, and the
/// root digest we compute for the directory equals the subject digest model_signing wrote.
#[test]
fn we_verify_a_model_sig_made_by_model_signing() {
    let work = tempfile::tempdir().expect("tempdir");
    let model = work.path().join("model");
    make_model_dir(&model);
    let (_key, paths) = p256_keys(work.path());
    let out = ms_sign(&model, &paths.private);
    assert!(
        out.ok(),
        "case 5: model_signing sign must accept our PKCS#8 key\n{out}"
    );

    let public = load_public_key(&paths.public).expect("loading our public key");
    let (signed, diff) = trainprov_verify(&model, &public)
        .unwrap_or_else(|e| panic!("case 5: we must accept model_signing's model.sig: {e}"));
    assert!(
        diff.is_empty(),
        "case 5: the directory matches model_signing's manifest: {diff}"
    );

    let sig_bytes = std::fs::read(model.join(SIGNATURE_FILE)).expect("reading model.sig");
    let theirs = statement_of(&sig_bytes);
    let their_root = theirs["subject"][0]["digest"]["sha256"]
        .as_str()
        .expect("subject sha256");
    let ours = hash_model_dir(&model, &our_tree_options()).expect("hashing the model directory");
    assert_eq!(
        ours.root_digest(),
        their_root,
        "case 5: our root digest differs from model_signing's subject digest"
    );
    assert_eq!(ours.files, signed.files, "case 5: same files and digests");
    let our_names: Vec<&str> = ours.files.keys().map(|p| p.as_str()).collect();
    let their_names: Vec<&str> = theirs["predicate"]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r["name"].as_str().expect("resource name"))
        .collect();
    assert_eq!(our_names, their_names, "case 5: same resource order");
    // Our serialization block should say what model_signing's says. model_signing writes
    // ignore_paths in Python set order (varies from run to run), so compare them as sets.
    let our_statement = statement_of(
        &ModelSignature::sign(
            &ours,
            &attest::keyfile::load_signing_key(&paths.private).expect("loading our key"),
        )
        .expect("signing")
        .to_json(),
    );
    let normalise = |serialization: &serde_json::Value| {
        let mut s = serialization.clone();
        if let Some(list) = s["ignore_paths"].as_array_mut() {
            list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
        s
    };
    assert_eq!(
        normalise(&our_statement["predicate"]["serialization"]),
        normalise(&theirs["predicate"]["serialization"]),
        "case 5: serialization blocks differ"
    );
    assert_eq!(our_statement["predicateType"], theirs["predicateType"]);
    println!(
        "case 5: root {their_root} identical; model_signing subject {}",
        theirs["subject"]
    );
}

/// The three directory tampers of case 6.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    Changed,
    Extra,
    Missing,
}

impl Tamper {
    fn apply(self, dir: &Path) {
        match self {
            Tamper::Changed => {
                let path = dir.join(BIG_FILE);
                let mut bytes = std::fs::read(&path).expect("reading model file");
                let middle = bytes.len() / 2;
                flip(&mut bytes, middle);
                std::fs::write(&path, bytes).expect("writing tampered file");
            }
            Tamper::Extra => std::fs::write(dir.join("sub/extra.bin"), b"not signed")
                .expect("writing extra file"),
            Tamper::Missing => {
                std::fs::remove_file(dir.join("config.json")).expect("removing file")
            }
        }
    }

    /// What model_signing must say, and the name our diff must report.
    fn expectations(self) -> (&'static str, &'static str) {
        match self {
            Tamper::Changed => (
                "Hash mismatch for 'weights/adapter_model.safetensors'",
                BIG_FILE,
            ),
            Tamper::Extra => ("Extra files found in model", "sub/extra.bin"),
            Tamper::Missing => ("Missing files in model", "config.json"),
        }
    }

    fn check_diff(self, diff: &ModelDiff) -> bool {
        let (_, name) = self.expectations();
        let only = |list: &Vec<String>| list.len() == 1 && list[0] == name;
        match self {
            Tamper::Changed => {
                only(&diff.changed) && diff.missing.is_empty() && diff.extra.is_empty()
            }
            Tamper::Extra => {
                only(&diff.extra) && diff.missing.is_empty() && diff.changed.is_empty()
            }
            Tamper::Missing => {
                only(&diff.missing) && diff.extra.is_empty() && diff.changed.is_empty()
            }
        }
    }
}

/// Case 6: a changed, an extra and a missing file are each rejected by model_signing and by us,
/// for a `model.sig` made by us and one made by model_signing. Untampered copies pass both.
#[test]
fn tampered_models_are_rejected_by_both_sides() {
    let work = tempfile::tempdir().expect("tempdir");
    let pristine = work.path().join("pristine");
    make_model_dir(&pristine);
    let (key, paths) = p256_keys(work.path());
    let public = key.public_key();

    // One signature from each signer over the same pristine content.
    let ours_dir = work.path().join("signed-by-trainprov");
    copy_dir(&pristine, &ours_dir);
    trainprov_sign(&ours_dir, &key);
    let theirs_dir = work.path().join("signed-by-model_signing");
    copy_dir(&pristine, &theirs_dir);
    let out = ms_sign(&theirs_dir, &paths.private);
    assert!(out.ok(), "case 6: model_signing sign\n{out}");

    let mut copies: Vec<(String, PathBuf, Option<Tamper>)> = Vec::new();
    for (signer, signed_dir) in [("trainprov", &ours_dir), ("model_signing", &theirs_dir)] {
        for tamper in [
            None,
            Some(Tamper::Changed),
            Some(Tamper::Extra),
            Some(Tamper::Missing),
        ] {
            let label = match tamper {
                None => "untampered".to_string(),
                Some(t) => format!("{t:?} file").to_lowercase(),
            };
            let dir = work
                .path()
                .join(format!("{signer}-{label}").replace(' ', "-"));
            copy_dir(signed_dir, &dir);
            if let Some(t) = tamper {
                t.apply(&dir);
            }
            copies.push((format!("case 6 ({signer}'s sig, {label})"), dir, tamper));
        }
    }

    let public_pem = paths.public.clone();
    std::thread::scope(|s| {
        let jobs: Vec<_> = copies
            .iter()
            .map(|(case, dir, tamper)| {
                let public_pem = &public_pem;
                let out = s.spawn(move || ms_verify(dir, public_pem));
                (case, dir, *tamper, out)
            })
            .collect();
        for (case, dir, tamper, job) in jobs {
            let out = job.join().expect("model_signing job");
            let ours = trainprov_verify(dir, &public)
                .unwrap_or_else(|e| panic!("{case}: the signature itself must still verify: {e}"));
            let diff = ours.1;
            match tamper {
                None => {
                    assert_ms_accepts(&out, case);
                    assert!(diff.is_empty(), "{case}: we must accept: {diff}");
                }
                Some(t) => {
                    let (message, name) = t.expectations();
                    assert_eq!(out.code, 1, "{case}: model_signing must reject\n{out}");
                    assert!(
                        out.stderr.contains("Verification failed") && out.stderr.contains(message),
                        "{case}: model_signing rejected for another reason (expected '{message}')\n{out}"
                    );
                    assert!(
                        out.stderr.contains(name),
                        "{case}: model_signing must name {name}\n{out}"
                    );
                    assert!(
                        t.check_diff(&diff),
                        "{case}: our diff must name exactly {name}: {diff:?}"
                    );
                    println!(
                        "{case}: model_signing: {} | ours: {diff}",
                        out.stderr.trim()
                    );
                }
            }
        }
    });
}

/// Symlinks: we hash a symlink inside the model as its target and record `allow_symlinks: true`;
/// model_signing refuses symlinks unless `--allow_symlinks` is given. With the flag, each side
/// accepts the other's signature.
#[cfg(unix)]
#[test]
fn symlinked_models_interoperate_with_allow_symlinks() {
    let work = tempfile::tempdir().expect("tempdir");
    let (key, paths) = p256_keys(work.path());
    let ours_dir = work.path().join("ours");
    make_model_dir(&ours_dir);
    let theirs_dir = work.path().join("theirs");
    copy_dir(&ours_dir, &theirs_dir);
    std::os::unix::fs::symlink("../config.json", ours_dir.join("sub/config-link.json"))
        .expect("symlink");
    std::os::unix::fs::symlink("../config.json", theirs_dir.join("sub/config-link.json"))
        .expect("symlink");

    let manifest = trainprov_sign(&ours_dir, &key);
    assert!(manifest.allow_symlinks, "our manifest records the symlink");
    let sig = ours_dir.join(SIGNATURE_FILE);
    let args = |dir: &Path,
                sig: &Path,
                mode: &str,
                key_flag: &str,
                key: &Path|
     -> Vec<std::ffi::OsString> {
        vec![
            mode.into(),
            "key".into(),
            dir.into(),
            "--signature".into(),
            sig.into(),
            key_flag.into(),
            key.into(),
            "--allow_symlinks".into(),
        ]
    };
    let (verify_ours, sign_theirs, verify_plain) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            model_signing(&args(
                &ours_dir,
                &sig,
                "verify",
                "--public_key",
                &paths.public,
            ))
        });
        let b = s.spawn(|| {
            let sig = theirs_dir.join(SIGNATURE_FILE);
            model_signing(&args(
                &theirs_dir,
                &sig,
                "sign",
                "--private_key",
                &paths.private,
            ))
        });
        let c = s.spawn(|| ms_verify(&ours_dir, &paths.public));
        (
            a.join().expect("job"),
            b.join().expect("job"),
            c.join().expect("job"),
        )
    });
    assert_ms_accepts(&verify_ours, "symlinks (our sig, --allow_symlinks)");
    assert!(
        verify_plain.code == 1 && verify_plain.stderr.contains("symlink"),
        "symlinks: without --allow_symlinks model_signing refuses the symlink\n{verify_plain}"
    );
    assert!(
        sign_theirs.ok(),
        "symlinks: model_signing sign --allow_symlinks\n{sign_theirs}"
    );
    let (signed, diff) = trainprov_verify(&theirs_dir, &key.public_key())
        .unwrap_or_else(|e| panic!("symlinks: we must accept model_signing's sig: {e}"));
    assert!(diff.is_empty(), "symlinks: {diff}");
    assert_eq!(
        signed.files, manifest.files,
        "symlinks: same manifest on both sides"
    );
}
