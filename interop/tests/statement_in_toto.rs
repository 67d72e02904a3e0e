//! Our Statements against in-toto-attestation 0.9.3, the reference implementation of the in-toto
//! Statement v1 (and its SLSA Provenance v1 protobuf).

use attest::keys::{KeyAlgorithm, SigningKey};
use attest::oms::SIGNATURE_FILE;
use attest::slsa::PROVENANCE_V1;
use attest::statement::{DigestSet, ResourceDescriptor, Statement};
use recorder::model_tree::{hash_model_dir, TreeOptions};
use trainprov_interop_tests::{make_model_dir, provenance_statement, run_helper};

/// Case 8: in-toto-attestation parses and validates our SLSA provenance Statement (strictly, and
/// the predicate as a SLSA Provenance v1 message) and our OMS Statement; a Statement whose subject
/// has no digest is refused, so the check is not vacuous.
#[test]
fn in_toto_attestation_validates_our_statements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provenance = dir.path().join("provenance.json");
    std::fs::write(&provenance, provenance_statement()).expect("writing statement");

    let model = dir.path().join("model");
    make_model_dir(&model);
    let options = TreeOptions {
        ignore: vec![SIGNATURE_FILE.into()],
        ..Default::default()
    };
    let manifest = hash_model_dir(&model, &options).expect("hashing the model directory");
    // The OMS payload exactly as it is signed.
    let oms = dir.path().join("oms.json");
    let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
    let sig = attest::oms::ModelSignature::sign(&manifest, &key).expect("signing");
    let payload = sig
        .verify(&[key.public_key()])
        .map(|_| attest::dsse::decode_base64(&sig.dsse_envelope.payload, "payload"))
        .expect("verifying our own signature")
        .expect("payload base64");
    std::fs::write(&oms, payload).expect("writing OMS statement");

    let bad = dir.path().join("no-digest.json");
    let statement = Statement::new(
        vec![ResourceDescriptor::named("weights.bin", DigestSet::new())],
        PROVENANCE_V1,
        serde_json::json!({"buildDefinition": {"buildType": "x"}}),
    );
    std::fs::write(&bad, statement.to_json().expect("json")).expect("writing statement");

    std::thread::scope(|s| {
        let provenance_job = s.spawn(|| {
            run_helper(
                "check_statement.py",
                &[provenance.as_os_str(), "--provenance".as_ref()],
            )
        });
        let oms_job = s.spawn(|| run_helper("check_statement.py", &[oms.as_os_str()]));
        let bad_job = s.spawn(|| run_helper("check_statement.py", &[bad.as_os_str()]));

        let out = provenance_job.join().expect("job");
        assert!(
            out.ok() && out.stdout.contains("valid"),
            "case 8 (SLSA provenance Statement): in-toto-attestation must validate it\n{out}"
        );
        let out = oms_job.join().expect("job");
        assert!(
            out.ok() && out.stdout.contains("valid"),
            "case 8 (OMS Statement): in-toto-attestation must validate it\n{out}"
        );
        let out = bad_job.join().expect("job");
        assert!(
            out.code == 1 && out.stdout.contains("At least one digest required"),
            "case 8 control (subject without digest): in-toto-attestation must refuse it\n{out}"
        );
    });
}
