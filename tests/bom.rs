//! `trainprov bom` end to end (issue 7, item 4): real `train` and `run` records turned into
//! CycloneDX 1.6 and SPDX 3.0.1 documents, validated by cyclonedx-python-lib's
//! `JsonStrictValidator(V1_6)` and spdx-python-model's `JSONLDDeserializer` (v3_0_1) through
//! `interop/python/validate_bom.py`, with every internal reference checked here as well.

mod util;

use std::collections::BTreeSet;

use serde_json::Value;
use util::{b64, read_json, unb64, write_json, Workspace, FAILED, INPUT, OK};

/// The tiny-llama example (base model, four data shards, a short config) in a git repository.
fn example() -> Workspace {
    let ws = Workspace::new();
    // A short run: whatever the example's epoch count, stop after 4 steps.
    util::write_tiny_llama(&ws, "tl", 4);
    ws.write(".gitignore", "keys/\nreg/\n");
    ws.git("", &["init", "-q"]);
    ws.git("", &["add", "."]);
    ws.git("", &["commit", "-qm", "example"]);
    ws.keygen("signer", "");
    ws.keygen("other", "");
    ws
}

fn train(ws: &Workspace) {
    let args = "train tl/train.toml --key keys/signer.key --out tl/adapter --registry reg";
    ws.run(&args.split(' ').collect::<Vec<_>>())
        .expect_code(OK, "train");
}

/// `trainprov bom` with `--registry reg`, the given target and extra arguments.
fn bom(ws: &Workspace, target: &str, extra: &[&str]) -> util::Run {
    let mut args = vec!["bom", target, "--registry", "reg"];
    args.extend_from_slice(extra);
    ws.run(&args)
}

/// Writes both formats for `target` (signed by keys/signer.pub) and validates them with the
/// Python reference libraries; returns (CycloneDX, SPDX, validator summaries).
fn both_formats(ws: &Workspace, target: &str) -> (Value, Value, Value, Value) {
    let mut results = Vec::new();
    for format in ["cyclonedx", "spdx"] {
        let out = format!("bom.{format}.json");
        bom(
            ws,
            target,
            &[
                "--key",
                "keys/signer.pub",
                "--format",
                format,
                "--out",
                &out,
            ],
        )
        .expect_code(OK, format);
        let path = ws.path(&out);
        let outcome = trainprov_interop_tests::run_helper(
            "validate_bom.py",
            &[std::ffi::OsStr::new(format), path.as_os_str()],
        );
        assert!(outcome.ok(), "{format} BOM does not validate:\n{outcome}");
        let summary: Value = serde_json::from_str(outcome.stdout.trim())
            .unwrap_or_else(|e| panic!("validator summary is not JSON ({e}):\n{outcome}"));
        results.push((read_json(&path), summary));
    }
    let (spdx, spdx_summary) = results.pop().expect("spdx");
    let (cdx, cdx_summary) = results.pop().expect("cyclonedx");
    check_cyclonedx_refs(&cdx);
    check_spdx_refs(&spdx);
    (cdx, spdx, cdx_summary, spdx_summary)
}

/// Every bom-ref is unique and every dependency and model-card dataset names one.
fn check_cyclonedx_refs(doc: &Value) {
    fn collect(component: &Value, refs: &mut Vec<String>) {
        refs.extend(component["bom-ref"].as_str().map(str::to_string));
        let nested = component["components"].as_array().into_iter().flatten();
        let ancestors = component["pedigree"]["ancestors"]
            .as_array()
            .into_iter()
            .flatten();
        for child in nested.chain(ancestors) {
            collect(child, refs);
        }
    }
    let mut refs = Vec::new();
    collect(&doc["metadata"]["component"], &mut refs);
    for component in doc["components"].as_array().expect("components") {
        collect(component, &mut refs);
    }
    let unique: BTreeSet<&String> = refs.iter().collect();
    assert_eq!(unique.len(), refs.len(), "duplicate bom-refs: {refs:?}");
    let mut cited: Vec<&str> = Vec::new();
    for dependency in doc["dependencies"].as_array().expect("dependencies") {
        cited.extend(dependency["ref"].as_str());
        cited.extend(
            dependency["dependsOn"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        );
    }
    let datasets = &doc["metadata"]["component"]["modelCard"]["modelParameters"]["datasets"];
    cited.extend(
        datasets
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["ref"].as_str()),
    );
    for reference in cited {
        assert!(
            unique.contains(&reference.to_string()),
            "bom-ref {reference} is not defined"
        );
    }
}

/// Every spdxId or blank node id used as a reference is defined in the graph.
fn check_spdx_refs(doc: &Value) {
    let graph = doc["@graph"].as_array().expect("@graph");
    let defined: BTreeSet<&str> = graph
        .iter()
        .filter_map(|e| e["spdxId"].as_str().or(e["@id"].as_str()))
        .collect();
    for element in graph {
        for key in [
            "creationInfo",
            "from",
            "to",
            "rootElement",
            "element",
            "createdBy",
            "createdUsing",
        ] {
            let value = &element[key];
            let refs: Vec<&str> = match value {
                Value::String(s) => vec![s.as_str()],
                Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for reference in refs {
                assert!(
                    defined.contains(reference),
                    "{key} {reference} is not defined"
                );
            }
        }
    }
    let document = graph
        .iter()
        .find(|e| e["type"] == "SpdxDocument")
        .expect("SpdxDocument");
    let listed: BTreeSet<&str> = document["element"]
        .as_array()
        .expect("element")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for element in graph.iter().filter_map(|e| e["spdxId"].as_str()) {
        if element != document["spdxId"] {
            assert!(
                listed.contains(element),
                "{element} is not in the document's element list"
            );
        }
    }
}

fn property<'a>(component: &'a Value, name: &str) -> Option<&'a str> {
    component["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["value"]
        .as_str()
}

/// Asserts that the command's stderr contains `text`.
#[track_caller]
fn stderr_says(run: &util::Run, text: &str) {
    assert!(
        run.stderr.contains(text),
        "stderr lacks {text:?}:\n{}",
        run.stderr
    );
}

/// The run id recorded in an attestation.
fn run_id(ws: &Workspace, attestation: &str) -> String {
    let envelope = read_json(&ws.path(attestation));
    let payload = unb64(envelope["payload"].as_str().expect("payload"));
    let statement: Value = serde_json::from_slice(&payload).expect("statement");
    statement["predicate"]["runDetails"]["metadata"]["invocationId"]
        .as_str()
        .expect("invocationId")
        .to_string()
}

#[test]
fn train_bom_validates_in_both_formats() {
    let ws = example();
    train(&ws);
    let (cdx, spdx, cdx_summary, spdx_summary) =
        both_formats(&ws, "tl/adapter/provenance.intoto.json");

    // CycloneDX: the adapter with its two files, the base model as its ancestor, one dataset
    // with its four shards, three base files; the model card cites the dataset.
    assert_eq!(cdx_summary["models"], 2, "{cdx_summary}");
    assert_eq!(cdx_summary["datasets"], 1, "{cdx_summary}");
    assert_eq!(cdx_summary["files"], 2 + 4 + 3, "{cdx_summary}");
    assert_eq!(cdx_summary["ancestors"], 1, "{cdx_summary}");
    let model = &cdx["metadata"]["component"];
    assert_eq!(model["type"], "machine-learning-model");
    let parameters = &model["modelCard"]["modelParameters"];
    assert_eq!(parameters["modelArchitecture"], "LlamaForCausalLM");
    assert_eq!(parameters["task"], "text-generation");
    assert_eq!(
        parameters["datasets"][0]["ref"],
        cdx["components"][0]["bom-ref"]
    );
    assert_eq!(property(model, "trainprov:param:train.lr"), Some("0.003"));
    assert_eq!(property(model, "trainprov:param:lora.r"), Some("8"));
    assert_eq!(
        model["pedigree"]["ancestors"][0]["name"],
        "trainprov/tiny-llama"
    );
    assert!(
        model["pedigree"]["commits"][0]["uid"].is_string(),
        "{model}"
    );
    let algorithms: Vec<&Value> = model["components"][0]["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(|h| &h["alg"])
        .collect();
    assert_eq!(algorithms, ["SHA-256", "BLAKE3"]);
    assert_eq!(
        property(&cdx["metadata"], "trainprov:signature:verified"),
        Some("true")
    );
    let serial = cdx["serialNumber"].as_str().expect("serialNumber");
    assert!(serial.starts_with("urn:uuid:"), "{serial}");

    // SPDX: the model is trainedOn exactly the dataset and carries the hyperparameters.
    assert_eq!(spdx_summary["datasets"], 1, "{spdx_summary}");
    assert_eq!(
        spdx_summary["trained_on"], spdx_summary["dataset_ids"],
        "{spdx_summary}"
    );
    assert_eq!(spdx_summary["ai_packages"], 2, "{spdx_summary}");
    assert_eq!(spdx_summary["files"], 2 + 4 + 3, "{spdx_summary}");
    assert_eq!(
        spdx_summary["profiles"],
        serde_json::json!(["ai", "core", "dataset", "software"])
    );
    assert!(
        spdx_summary["hyperparameters"].as_u64() > Some(10),
        "{spdx_summary}"
    );
    assert_eq!(
        spdx["@context"],
        "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
    );

    // Deterministic, and the run id in the registry gives the same document as the file.
    let id = run_id(&ws, "tl/adapter/provenance.intoto.json");
    for format in ["cyclonedx", "spdx"] {
        let first = bom(
            &ws,
            "tl/adapter/provenance.intoto.json",
            &["--key", "keys/signer.pub", "--format", format],
        )
        .expect_code(OK, format);
        let by_id = bom(
            &ws,
            &id[..8],
            &["--key", "keys/signer.pub", "--format", format],
        )
        .expect_code(OK, format);
        assert_eq!(first.stdout, by_id.stdout, "{format}: by run id");
        assert_eq!(
            first.stdout.as_bytes(),
            ws.read(&format!("bom.{format}.json")),
            "{format}: twice"
        );
    }
}

#[test]
fn wrapped_run_bom_validates_in_both_formats() {
    let ws = example();
    let mut args: Vec<&str> =
        "run --out tl/out --key keys/signer.key --data tl/data --base tl/base \
         --param lr=0.1 --param epochs=2 --registry reg -- sh -c"
            .split_whitespace()
            .collect();
    args.push("mkdir -p tl/out && cat tl/data/*.jsonl > tl/out/model.bin");
    ws.run(&args).expect_code(OK, "run");
    let id = run_id(&ws, "tl/out/provenance.intoto.json");
    let (cdx, _, cdx_summary, spdx_summary) = both_formats(&ws, &id);
    assert_eq!(cdx_summary["datasets"], 1, "{cdx_summary}");
    assert_eq!(cdx_summary["files"], 1 + 4 + 3, "{cdx_summary}");
    assert_eq!(
        spdx_summary["trained_on"], spdx_summary["dataset_ids"],
        "{spdx_summary}"
    );
    assert_eq!(spdx_summary["hyperparameters"], 2, "{spdx_summary}");
    let model = &cdx["metadata"]["component"];
    assert_eq!(property(model, "trainprov:param:lr"), Some("0.1"));
    assert_eq!(
        property(&cdx["metadata"], "trainprov:buildType"),
        Some("https://trainprov.dev/buildtypes/run/v1")
    );
}

#[test]
fn tampered_or_unsigned_attestations_are_refused() {
    let ws = example();
    train(&ws);
    let attestation = "tl/adapter/provenance.intoto.json";

    // A statement changed after signing: the hyperparameter lr is rewritten.
    let mut envelope = read_json(&ws.path(attestation));
    let payload = unb64(envelope["payload"].as_str().expect("payload"));
    let text = String::from_utf8(payload).expect("utf-8");
    assert!(text.contains("\"train.lr\":\"0.003\""), "{text}");
    envelope["payload"] = Value::String(b64(text
        .replace("\"train.lr\":\"0.003\"", "\"train.lr\":\"0.3\"")
        .as_bytes()));
    write_json(&ws.path("tampered.intoto.json"), &envelope);
    for format in ["cyclonedx", "spdx"] {
        let run = bom(
            &ws,
            "tampered.intoto.json",
            &[
                "--key",
                "keys/signer.pub",
                "--format",
                format,
                "--out",
                "t.json",
            ],
        )
        .expect_code(FAILED, format);
        stderr_says(&run, "tampered.intoto.json");
        assert!(
            !ws.path("t.json").exists(),
            "{format}: nothing is written for a bad signature"
        );
    }
    // Signed, but not by the trusted key.
    bom(
        &ws,
        attestation,
        &["--key", "keys/other.pub", "--format", "spdx"],
    )
    .expect_code(FAILED, "other key");
    // No key: refused unless --unverified, which marks the document.
    let run = bom(&ws, attestation, &["--format", "cyclonedx"]).expect_code(INPUT, "no key");
    stderr_says(&run, "--unverified");
    let run = bom(
        &ws,
        "tampered.intoto.json",
        &["--unverified", "--format", "cyclonedx"],
    )
    .expect_code(OK, "unverified");
    stderr_says(&run, "NOT verified");
    let doc: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(
        property(&doc["metadata"], "trainprov:signature:verified"),
        Some("false")
    );

    // The registry's copy: an attestation edited after the run no longer matches its record.
    let id = run_id(&ws, attestation);
    let mut bytes = ws.read(attestation);
    bytes.push(b'\n');
    ws.write(attestation, bytes);
    let run = bom(&ws, &id, &["--key", "keys/signer.pub", "--format", "spdx"])
        .expect_code(FAILED, "changed file");
    stderr_says(&run, "changed since the run was recorded");
    bom(
        &ws,
        "no-such-run",
        &["--key", "keys/signer.pub", "--format", "spdx"],
    )
    .expect_code(INPUT, "unknown run");
}

/// The validator is not a rubber stamp: a dangling reference or a schema violation fails it.
#[test]
fn validator_rejects_broken_documents() {
    let ws = example();
    train(&ws);
    let (mut cdx, mut spdx, _, _) = both_formats(&ws, "tl/adapter/provenance.intoto.json");
    cdx["dependencies"][0]["dependsOn"] = serde_json::json!(["data:nowhere"]);
    cdx["metadata"]["component"]["components"][0]["hashes"][1]["alg"] =
        Value::String("BLAKE4".into());
    let graph = spdx["@graph"].as_array_mut().expect("@graph");
    for element in graph
        .iter_mut()
        .filter(|e| e["relationshipType"] == "trainedOn")
    {
        element["to"] = serde_json::json!(["https://example.invalid/missing"]);
    }
    for (format, doc, expected) in [
        ("cyclonedx", &cdx, vec!["data:nowhere", "BLAKE4"]),
        ("spdx", &spdx, vec!["https://example.invalid/missing"]),
    ] {
        let path = ws.path(&format!("broken.{format}.json"));
        write_json(&path, doc);
        let outcome = trainprov_interop_tests::run_helper(
            "validate_bom.py",
            &[std::ffi::OsStr::new(format), path.as_os_str()],
        );
        assert_eq!(outcome.code, 1, "{format}: {outcome}");
        for text in expected {
            assert!(
                outcome.stderr.contains(text),
                "{format}: {text} not reported\n{outcome}"
            );
        }
    }
}
