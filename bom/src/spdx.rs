//! SPDX 3.0.1 JSON-LD with the Core, Software, AI and Dataset profiles
//! (<https://spdx.github.io/spdx-spec/v3.0.1/>).
//!
//! The graph holds one `CreationInfo` (blank node `_:creationinfo`, created by the
//! `SoftwareAgent` trainprov using the `Tool` trainprov), the `SpdxDocument` whose root element
//! is the trained model, an `ai_AIPackage` for the model that `contains` a `software_File` per
//! product, a `dataset_DatasetPackage` per dataset (the model is `trainedOn` them), an
//! `ai_AIPackage` per base model or input adapter (the model is a `descendantOf` them), and for
//! each input whose manifest is known, its files. Hashes are `Hash` integrity methods
//! (`sha256`, `blake3`); hyperparameters are `ai_hyperparameter` dictionary entries.
//!
//! spdxIds are `https://trainprov.dev/spdx/UUID#NAME`, with the UUID of
//! [`crate::document_uuid`] and names numbered in statement order (`input-1`,
//! `input-1-file-3`), so that they are valid IRIs whatever the file names are.

use serde_json::{json, Value};

use crate::{document_uuid, FileDigests, Input, Role, Source};

/// The JSON-LD context of SPDX 3.0.1.
pub const CONTEXT: &str = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld";

const CREATION_INFO: &str = "_:creationinfo";

/// The SPDX 3.0.1 JSON-LD document for `source`.
pub fn spdx(source: &Source) -> Value {
    let t = &source.training;
    let ns = format!(
        "https://trainprov.dev/spdx/{}",
        document_uuid(&source.statement_sha256)
    );
    let id = |name: &str| format!("{ns}#{name}");
    let model_id = id("model");
    let mut elements: Vec<Value> = Vec::new();

    let agent = id("trainprov");
    let tool = id("trainprov-tool");
    let version = t
        .builder_version
        .get("trainprov")
        .map_or("unknown", String::as_str);
    elements.push(element(
        "SoftwareAgent",
        &agent,
        json!({"name": "trainprov"}),
    ));
    elements.push(element(
        "Tool",
        &tool,
        json!({"name": format!("trainprov {version}")}),
    ));
    elements.push(element("ai_AIPackage", &model_id, model_fields(source)));
    let product_ids = files(&mut elements, &id("model-file"), &t.products);
    relationship(
        &mut elements,
        &id("model-contains"),
        &model_id,
        "contains",
        product_ids,
    );
    let (datasets, ancestors) = inputs(source, &id, &mut elements);
    relationship(
        &mut elements,
        &id("model-trainedOn"),
        &model_id,
        "trainedOn",
        datasets,
    );
    relationship(
        &mut elements,
        &id("model-descendantOf"),
        &model_id,
        "descendantOf",
        ancestors,
    );

    let document = document(source, &id("document"), &model_id, &elements);
    let creation_info = json!({
        "type": "CreationInfo",
        "@id": CREATION_INFO,
        "specVersion": "3.0.1",
        "created": t.time,
        "createdBy": [agent],
        "createdUsing": [tool],
    });
    let mut graph = vec![creation_info, document];
    graph.extend(elements);
    json!({"@context": CONTEXT, "@graph": graph})
}

/// The trained model's `ai_AIPackage` fields: name, purpose, architecture, hyperparameters.
fn model_fields(source: &Source) -> Value {
    let t = &source.training;
    let mut model = json!({
        "name": t.name,
        "description": source.summary(),
        "comment": model_comment(source),
        "software_primaryPurpose": "model",
        "builtTime": t.time,
        "ai_informationAboutTraining": training_info(source),
    });
    if let Some(arch) = source.architecture().and_then(|c| c.architecture.clone()) {
        model["ai_typeOfModel"] = json!([arch]);
    }
    if !t.params.is_empty() {
        model["ai_hyperparameter"] = json!(t
            .params
            .iter()
            .map(|(k, v)| json!({"type": "DictionaryEntry", "key": k, "value": v}))
            .collect::<Vec<_>>());
    }
    model
}

/// An element per input (and its files, when its manifest is known); returns the spdxIds of
/// the datasets and of the ancestors (base models, input adapters).
fn inputs(
    source: &Source,
    id: &dyn Fn(&str) -> String,
    elements: &mut Vec<Value>,
) -> (Vec<String>, Vec<String>) {
    let mut datasets = Vec::new();
    let mut ancestors = Vec::new();
    for (n, input) in source.training.inputs.iter().enumerate() {
        let input_id = id(&format!("input-{}", n + 1));
        elements.push(input_element(source, input, &input_id));
        if let Some(manifest) = source.manifests.get(&input.blake3) {
            let ids = files(elements, &format!("{input_id}-file"), manifest);
            relationship(
                elements,
                &format!("{input_id}-contains"),
                &input_id,
                "contains",
                ids,
            );
        }
        match input.role {
            Role::Data => datasets.push(input_id),
            Role::Base | Role::Adapter => ancestors.push(input_id),
        }
    }
    (datasets, ancestors)
}

/// The `SpdxDocument`: every element, the model as root, and where it was built from.
fn document(source: &Source, spdx_id: &str, model_id: &str, elements: &[Value]) -> Value {
    let all: Vec<Value> = elements.iter().map(|e| e["spdxId"].clone()).collect();
    element(
        "SpdxDocument",
        spdx_id,
        json!({
            "name": format!("AI bill of materials of {}", source.training.name),
            "comment": format!(
                "Built by trainprov from the provenance statement with SHA-256 {} ({})",
                source.statement_sha256,
                if source.signed_by.is_empty() {
                    "signature NOT verified".to_string()
                } else {
                    format!("signed by keyid {}", source.signed_by.join(", "))
                }
            ),
            "profileConformance": ["core", "software", "ai", "dataset"],
            "rootElement": [model_id],
            "element": all,
        }),
    )
}

/// An Element of `kind` with `fields` added.
fn element(kind: &str, spdx_id: &str, fields: Value) -> Value {
    let mut value = json!({"type": kind, "spdxId": spdx_id, "creationInfo": CREATION_INFO});
    if let (Some(map), Value::Object(extra)) = (value.as_object_mut(), fields) {
        map.extend(extra);
    }
    value
}

/// Adds a relationship when `to` is not empty.
fn relationship(elements: &mut Vec<Value>, spdx_id: &str, from: &str, kind: &str, to: Vec<String>) {
    if !to.is_empty() {
        elements.push(element(
            "Relationship",
            spdx_id,
            json!({"from": from, "relationshipType": kind, "to": to}),
        ));
    }
}

/// Adds a `software_File` per file, ids `PREFIX-1`, `PREFIX-2`, ...; returns the ids.
fn files(elements: &mut Vec<Value>, prefix: &str, list: &[FileDigests]) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, file) in list.iter().enumerate() {
        let file_id = format!("{prefix}-{}", n + 1);
        let mut hashes = Vec::new();
        if let Some(sha256) = &file.sha256 {
            hashes.push(hash("sha256", sha256));
        }
        hashes.push(hash("blake3", &file.blake3));
        elements.push(element(
            "software_File",
            &file_id,
            json!({"name": file.name, "software_fileKind": "file", "verifiedUsing": hashes}),
        ));
        ids.push(file_id);
    }
    ids
}

fn hash(algorithm: &str, value: &str) -> Value {
    json!({"type": "Hash", "algorithm": algorithm, "hashValue": value})
}

fn input_element(source: &Source, input: &Input, spdx_id: &str) -> Value {
    let mut fields = json!({
        "name": source.input_name(input),
        "comment": format!(
            "{} input {} recorded by trainprov as a snapshot; its hashes are those of the \
             trainprov-snapshot manifest (v2, v1 for older records) listing every file (snapshot digest {})",
            input.role.as_str(),
            input.path,
            input.blake3
        ),
        "verifiedUsing": [hash("sha256", &input.sha256), hash("blake3", &input.blake3)],
    });
    match input.role {
        Role::Data => {
            fields["software_primaryPurpose"] = json!("data");
            // The built-in trainer reads JSONL text; a wrapped command's data could be anything.
            let kind = if source.is_builtin() {
                "text"
            } else {
                "noAssertion"
            };
            fields["dataset_datasetType"] = json!([kind]);
            if let Some(bytes) = input.bytes {
                fields["dataset_datasetSize"] = json!(bytes);
            }
            element("dataset_DatasetPackage", spdx_id, fields)
        }
        Role::Base | Role::Adapter => {
            fields["software_primaryPurpose"] = json!("model");
            if let Some(arch) = source
                .model_configs
                .get(&input.dependency)
                .and_then(|c| c.architecture.clone())
            {
                fields["ai_typeOfModel"] = json!([arch]);
            }
            element("ai_AIPackage", spdx_id, fields)
        }
    }
}

fn model_comment(source: &Source) -> String {
    let t = &source.training;
    let mut text = format!("buildType {}; builder {}", t.build_type, t.builder_id);
    if let Some(code) = &t.code {
        text.push_str(&format!("; code at git commit {}", code.commit));
        if let Some(uri) = &code.uri {
            text.push_str(&format!(" of {uri}"));
        }
        if code.dirty {
            text.push_str(" plus recorded uncommitted changes");
        }
    }
    text
}

fn training_info(source: &Source) -> String {
    let t = &source.training;
    let mut text = source.summary();
    if !t.trainer.is_empty() {
        let internals: Vec<String> = t.trainer.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!("; trainer: {}", internals.join(", ")));
    }
    text
}
