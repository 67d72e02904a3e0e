//! Fuzz entry points: one function per trainprov parser that reads untrusted bytes.
//!
//! Each function feeds arbitrary bytes to one parser through the public API of the library that
//! owns it and asserts what must hold whatever the bytes are: no panic, and where the library
//! also writes the format, a round trip (`parse(write(parse(x))) == parse(x)`). The logic stays in
//! the libraries; these functions only call them, as rustls' fuzzers do.
//!
//! Two harnesses run them:
//! - the cargo-fuzz targets in `fuzz/fuzz_targets/`, one line each (nightly Rust, libFuzzer);
//! - the root package's test `tests/fuzz_parsers.rs`, on stable Rust, which includes this file
//!   with `#[path]` and runs every function on random bytes and on mutated valid inputs written
//!   by the project's own writers, for a bounded number of cases (CI runs it).
//!
//! | function | parser |
//! |---|---|
//! | [`dsse_envelope`] | `attest::dsse::Envelope::from_json`, `Envelope::verify` |
//! | [`statement`] | `attest::statement::Statement::from_verified` (SLSA Provenance, VSA, any), `policy::input_dependencies`, `Policy::evaluate`, `vsa::check_approval` |
//! | [`oms_bundle`] | `attest::oms::ModelSignature::from_json`, `ModelSignature::verify`, `ModelManifest::from_statement` |
//! | [`snapshot_manifest`] | `recorder::snapshot::DataSnapshot::from_manifest_bytes` |
//! | [`safetensors_header`] | `trainer::safe_load::validate_safetensors_bytes` |
//! | [`pickle`], [`zip_directory`], [`npy_header`], [`gguf`] | `safety::scan::scan_bytes` |
//! | [`policy_toml`] | `attest::policy::Policy::from_toml`, `Policy::evaluate` |
//! | [`datacheck_jsonl`], [`datacheck_csv`], [`datacheck_parquet`] | `safety::datacheck::check` (through a temporary file: it reads paths) |
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use attest::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use attest::keys::{KeyAlgorithm, PublicKey, SigningKey};
use attest::oms::{ModelSignature, PublicKeyIdentifier, VerificationMaterial, BUNDLE_MEDIA_TYPE};
use attest::policy::{Facts, Policy};
use attest::slsa::{Provenance, PROVENANCE_V1};
use attest::statement::{digest_set_of, ResourceDescriptor, Statement};
use attest::vsa::{ApprovalContext, VerificationSummary, VERIFICATION_SUMMARY_V1};
use attest::Verified;
use serde_json::{json, Value};

/// The key this process signs fuzzed payloads with. It is generated at start and never leaves
/// the process, so no input can carry a valid signature by it unless this process made one.
fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate(KeyAlgorithm::Ed25519))
}

fn public_key() -> &'static PublicKey {
    static PUBLIC: OnceLock<PublicKey> = OnceLock::new();
    PUBLIC.get_or_init(|| key().public_key())
}

/// Whether a JSON value holds a floating-point number: `serde_json` (without its
/// `float_roundtrip` feature) may parse the text it wrote for one into a neighbouring float, so
/// round trips are compared only on float-free values.
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

/// A DSSE envelope as read by `verify` from `provenance.intoto.json`: parsing must round-trip,
/// and verifying against a key nobody else holds must fail without panicking.
pub fn dsse_envelope(data: &[u8]) {
    let Ok(envelope) = Envelope::from_json(data) else {
        return;
    };
    let again = Envelope::from_json(&envelope.to_json()).expect("a written envelope parses");
    assert_eq!(again, envelope, "envelope round trip");
    let verdict = envelope.verify(IN_TOTO_PAYLOAD_TYPE, std::slice::from_ref(public_key()), 1);
    assert!(
        verdict.is_err(),
        "an envelope this process never signed verified"
    );
}

/// A Statement and its predicate, as parsed after a signature checked: the bytes are signed by
/// this process (so any payload reaches the Statement parser), then parsed as SLSA Provenance, as
/// an approval (VSA), as any Statement, and evaluated by a policy with every rule set.
pub fn statement(data: &[u8]) {
    let payload = signed_payload(data);
    let _ = Statement::<Provenance>::from_verified(payload.clone(), Some(PROVENANCE_V1));
    let _ = Statement::<VerificationSummary>::from_verified(
        payload.clone(),
        Some(VERIFICATION_SUMMARY_V1),
    );
    let Ok(statement) = Statement::<Value>::from_verified(payload, None) else {
        return;
    };
    let written = statement.to_json().expect("a parsed Statement serialises");
    let again: Statement<Value> =
        serde_json::from_slice(&written).expect("a written Statement parses");
    if !has_float(&statement.predicate) {
        assert_eq!(&again, &*statement, "Statement round trip");
    }
    let _ = statement.check_subject_digests();
    let _ = attest::policy::input_dependencies(&statement.predicate);
    let _ = attest::oms::ModelManifest::from_statement(&statement);
    evaluate(strict_policy(), &statement);
    approval_accepted(data);
}

/// SHA-256 of the attestation that approvals checked by [`approval_accepted`] must name.
pub const APPROVED_ATTESTATION: &str =
    "c0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0de";

/// The keyid of this process's signing key (for approvals that name their signer).
pub fn signer_keyid() -> &'static str {
    public_key().keyid()
}

/// Whether `data`, signed by this process as an approval for environment `prod`, counts for an
/// attestation with SHA-256 [`APPROVED_ATTESTATION`] whose one subject is
/// `adapter_model.safetensors` = `weights` (`attest::vsa::check_approval`).
pub fn approval_accepted(data: &[u8]) -> bool {
    let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, data, &[key()]);
    let subjects = [ResourceDescriptor::named(
        "adapter_model.safetensors",
        digest_set_of(b"weights"),
    )];
    let context = ApprovalContext {
        environment: "prod",
        attestation_sha256: APPROVED_ATTESTATION,
        subjects: &subjects,
        policy_sha256: None,
    };
    attest::vsa::check_approval(&envelope, std::slice::from_ref(public_key()), &context).is_ok()
}

/// Signs `data` as a DSSE payload with this process's key and verifies it back; a signed payload
/// always verifies and comes back unchanged.
fn signed_payload(data: &[u8]) -> attest::dsse::VerifiedPayload {
    let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, data, &[key()]);
    let envelope = Envelope::from_json(&envelope.to_json()).expect("a signed envelope parses");
    let payload = envelope
        .verify(IN_TOTO_PAYLOAD_TYPE, std::slice::from_ref(public_key()), 1)
        .expect("an envelope signed by a trusted key verifies");
    assert_eq!(payload.payload(), data, "DSSE payload round trip");
    payload
}

/// An OMS `model.sig` bundle: parsing must round-trip and a foreign bundle must not verify; then
/// the bytes as the Statement of a bundle signed by this process: a manifest read from it must
/// survive signing and verifying again unchanged.
pub fn oms_bundle(data: &[u8]) {
    if let Ok(bundle) = ModelSignature::from_json(data) {
        let again = ModelSignature::from_json(&bundle.to_json()).expect("a written bundle parses");
        let floats = bundle
            .verification_material
            .tlog_entries
            .iter()
            .any(has_float);
        if !floats {
            assert_eq!(again, bundle, "bundle round trip");
        }
        assert!(
            bundle.verify(std::slice::from_ref(public_key())).is_err(),
            "a bundle this process never signed verified"
        );
    }
    let bundle = ModelSignature {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        verification_material: VerificationMaterial {
            public_key: Some(PublicKeyIdentifier {
                hint: Some(public_key().keyid().to_string()),
            }),
            tlog_entries: Vec::new(),
        },
        dsse_envelope: Envelope::sign(IN_TOTO_PAYLOAD_TYPE, data, &[key()]),
    };
    let Ok(manifest) = bundle.verify(std::slice::from_ref(public_key())) else {
        return;
    };
    let resigned = ModelSignature::sign(&manifest, key()).expect("a verified manifest signs");
    let back = ModelSignature::from_json(&resigned.to_json())
        .expect("a written bundle parses")
        .verify(std::slice::from_ref(public_key()))
        .expect("a bundle signed by a trusted key verifies");
    assert_eq!(*back, *manifest, "model manifest round trip");
}

/// A data snapshot manifest, as read back from a registry or `--baseline`: what parses, written
/// again, parses to the same entries.
pub fn snapshot_manifest(data: &[u8]) {
    use recorder::snapshot::DataSnapshot;
    let Ok(snapshot) = DataSnapshot::from_manifest_bytes(PathBuf::from("fuzz"), data) else {
        return;
    };
    let written = snapshot.manifest_bytes();
    let again = DataSnapshot::from_manifest_bytes(PathBuf::from("fuzz"), &written)
        .expect("a written manifest parses");
    assert_eq!(again.entries, snapshot.entries, "manifest round trip");
    assert!(
        snapshot.diff(&again).is_empty(),
        "a snapshot differs from itself"
    );
}

/// A safetensors file: an accepted header's tensors tile the data up to the end of the file,
/// and the reference `safetensors` crate reads every file trainprov accepts, with the same
/// tensors (the promise of `trainer::safe_load`'s module doc).
pub fn safetensors_header(data: &[u8]) {
    let Ok(header) = trainer::safe_load::validate_safetensors_bytes(data) else {
        return;
    };
    assert_eq!(
        header.data_start() + header.data_len() as u64,
        data.len() as u64,
        "accepted tensors do not end at the end of the file"
    );
    let reference = safetensors::SafeTensors::deserialize(data)
        .expect("the safetensors crate reads a file trainprov accepts");
    assert_eq!(reference.len(), header.tensors.len(), "tensor count");
    for tensor in &header.tensors {
        let view = reference
            .tensor(&tensor.name)
            .expect("the safetensors crate has every accepted tensor");
        assert_eq!(
            view.shape(),
            tensor.shape.as_slice(),
            "{} shape",
            tensor.name
        );
        assert_eq!(
            serde_json::to_value(view.dtype()).expect("a dtype serialises"),
            Value::String(tensor.dtype.clone()),
            "{} dtype",
            tensor.name
        );
        assert_eq!(
            view.data().len(),
            tensor.offsets.1 - tensor.offsets.0,
            "{} length",
            tensor.name
        );
    }
}

/// `scan` on a file named like a pickle checkpoint.
pub fn pickle(data: &[u8]) {
    scan("fuzz.pkl", data);
}

/// `scan` on a file named like a zip archive (PyTorch checkpoint, `.npz`).
pub fn zip_directory(data: &[u8]) {
    scan("fuzz.zip", data);
}

/// `scan` on a file named like a NumPy array.
pub fn npy_header(data: &[u8]) {
    scan("fuzz.npy", data);
}

/// `scan` on a file named like a GGUF model.
pub fn gguf(data: &[u8]) {
    scan("fuzz.gguf", data);
}

/// The scanner judges by content, so the name only picks the `misnamed` rule; every format is
/// reachable from every target. A report is deterministic and renders as JSON and SARIF.
fn scan(name: &str, data: &[u8]) {
    let report = safety::scan::scan_bytes(name, data);
    serde_json::to_string(&report).expect("a scan report serialises");
    let _ = safety::scan::sarif(std::slice::from_ref(&report));
}

/// A deploy policy (`verify --policy`): what parses parses the same again and evaluates over a
/// signed SLSA Provenance Statement without panicking.
pub fn policy_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::from_toml(text) else {
        return;
    };
    assert_eq!(
        Policy::from_toml(text).expect("a policy parses twice"),
        policy,
        "policy parsing is deterministic"
    );
    let _ = policy.needs_manifests();
    evaluate(&policy, reference_statement());
}

/// `data check` on a JSONL file.
pub fn datacheck_jsonl(data: &[u8]) {
    datacheck("rows.jsonl", data);
}

/// `data check` on a CSV file.
pub fn datacheck_csv(data: &[u8]) {
    datacheck("rows.csv", data);
}

/// `data check` on a Parquet file.
pub fn datacheck_parquet(data: &[u8]) {
    datacheck("rows.parquet", data);
}

fn datacheck(name: &str, data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    fs_err::write(&path, data).expect("writing the input");
    let _ = safety::datacheck::check(&path, &Default::default());
}

fn evaluate(policy: &Policy, statement: &Verified<Statement<Value>>) {
    let manifests = BTreeMap::new();
    let facts = Facts {
        statement,
        manifests: &manifests,
        now: time::OffsetDateTime::now_utc(),
        approvals: None,
    };
    let _ = policy.evaluate(&facts);
}

/// A policy with every rule that looks at the Statement.
fn strict_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let digest = "0".repeat(64);
        Policy::from_toml(&format!(
            "version = 1\n\
             [build]\n\
             builder_ids = [\"https://trainprov.dev/builder/trainprov\"]\n\
             build_types = [\"https://trainprov.dev/buildtypes/candle-lora/v1\"]\n\
             require_clean_tree = true\n\
             max_age = \"30d\"\n\
             [inputs]\n\
             allowed_base_models = [\"blake3:{digest}\"]\n\
             forbidden_datasets = [\"sha256:{digest}\"]\n\
             forbidden_files = [\"blake3:{digest}\"]\n\
             require_data_check = true\n"
        ))
        .expect("the strict policy parses")
    })
}

/// A small SLSA Provenance Statement shaped like one `trainprov run` writes (JSON bytes): every
/// field a policy rule reads is present.
pub fn sample_provenance() -> Vec<u8> {
    let blake3 = blake3_hex(b"data");
    let predicate = json!({
        "buildDefinition": {
            "buildType": "https://trainprov.dev/buildtypes/candle-lora/v1",
            "externalParameters": {"argv": ["trainprov", "train", "train.toml"], "seed": 7},
            "internalParameters": {"dataCheck": {"status": "passed"}, "threads": 2},
            "resolvedDependencies": [
                {"name": "code", "uri": "git+https://example.invalid/repo",
                 "digest": {"gitCommit": "0123456789abcdef0123456789abcdef01234567"},
                 "annotations": {"dirty": false}},
                {"name": "data:./data", "digest": {"blake3": blake3, "sha256": "1".repeat(64)},
                 "annotations": {"role": "data", "manifestObject": "2".repeat(64)}},
                {"name": "base:./base", "digest": {"blake3": "3".repeat(64), "sha256": "4".repeat(64)},
                 "annotations": {"role": "base"}}
            ]
        },
        "runDetails": {
            "builder": {"id": "https://trainprov.dev/builder/trainprov", "version": {"trainprov": "0.1.0"}},
            "metadata": {"invocationId": "run-1", "startedOn": "2026-01-01T00:00:00Z",
                         "finishedOn": "2026-01-01T00:01:00Z"}
        }
    });
    let subject = ResourceDescriptor::named("adapter_model.safetensors", digest_set_of(b"weights"));
    Statement::new(vec![subject], PROVENANCE_V1, predicate)
        .to_json()
        .expect("the sample Statement serialises")
}

fn blake3_hex(bytes: &[u8]) -> String {
    digest_set_of(bytes)
        .get("blake3")
        .cloned()
        .unwrap_or_default()
}

/// [`sample_provenance`], signed by this process and verified.
fn reference_statement() -> &'static Verified<Statement<Value>> {
    static STATEMENT: OnceLock<Verified<Statement<Value>>> = OnceLock::new();
    STATEMENT.get_or_init(|| {
        let payload = signed_payload(&sample_provenance());
        Statement::from_verified(payload, Some(PROVENANCE_V1)).expect("the sample is a Statement")
    })
}
