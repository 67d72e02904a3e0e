//! CycloneDX 1.6 ML-BOM (<https://cyclonedx.org/docs/1.6/json/>).
//!
//! `metadata.component` is the trained model (`machine-learning-model`): its product files are
//! nested `file` components, its base models and input adapters are `pedigree.ancestors`, the
//! code commit is `pedigree.commits`, hyperparameters are properties named
//! `trainprov:param:KEY`, and its `modelCard.modelParameters` names the datasets by `ref`.
//! Each dataset is a top-level `data` component whose files, when the manifest is known, are
//! nested `file` components with their BLAKE3 hash. `dependencies` lead from the model to every
//! input. bom-refs are the statement's own names (`data:./data`, `data:./data#shard-000.jsonl`).

use serde_json::{json, Value};

use crate::{document_uuid, FileDigests, Input, Role, Source};

/// bom-ref of the trained model.
const MODEL_REF: &str = "model";

/// The CycloneDX 1.6 JSON document for `source`.
pub fn cyclonedx(source: &Source) -> Value {
    let t = &source.training;
    let data: Vec<&Input> = t.inputs.iter().filter(|i| i.role == Role::Data).collect();
    let mut model = json!({
        "type": "machine-learning-model",
        "bom-ref": MODEL_REF,
        "name": t.name,
        "description": source.summary(),
        "modelCard": model_card(source, &data),
        "properties": model_properties(source),
        "components": t.products.iter().map(|f| file_component(MODEL_REF, f)).collect::<Vec<_>>(),
    });
    if let Some(pedigree) = pedigree(source) {
        model["pedigree"] = pedigree;
    }
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", document_uuid(&source.statement_sha256)),
        "version": 1,
        "metadata": {
            "timestamp": t.time,
            "lifecycles": [{"phase": "build"}],
            "tools": {"components": [{
                "type": "application",
                "name": "trainprov",
                "version": t.builder_version.get("trainprov").map_or("unknown", String::as_str),
            }]},
            "component": model,
            "properties": metadata_properties(source),
        },
        "components": data.iter().map(|i| input_component(source, i)).collect::<Vec<_>>(),
        "dependencies": dependencies(source),
    })
}

/// The model's pedigree: base models and input adapters as ancestors, the git commit, and a
/// note when the tree was dirty; `None` when there is none of these.
fn pedigree(source: &Source) -> Option<Value> {
    let t = &source.training;
    let ancestors: Vec<Value> = t
        .inputs
        .iter()
        .filter(|i| i.role != Role::Data)
        .map(|i| input_component(source, i))
        .collect();
    let mut pedigree = serde_json::Map::new();
    if !ancestors.is_empty() {
        pedigree.insert("ancestors".into(), json!(ancestors));
    }
    if let Some(code) = &t.code {
        let mut commit = json!({"uid": code.commit});
        if let Some(uri) = &code.uri {
            commit["url"] = json!(uri);
        }
        pedigree.insert("commits".into(), json!([commit]));
        if code.dirty {
            pedigree.insert(
                "notes".into(),
                json!("built from this commit plus uncommitted changes recorded in the provenance as code:uncommitted.patch"),
            );
        }
    }
    (!pedigree.is_empty()).then_some(Value::Object(pedigree))
}

/// The model depends on every input; each input is listed with no dependencies of its own.
fn dependencies(source: &Source) -> Vec<Value> {
    let mut depends_on: Vec<&str> = source
        .training
        .inputs
        .iter()
        .map(|i| i.dependency.as_str())
        .collect();
    depends_on.sort_unstable();
    depends_on.dedup();
    let mut dependencies = vec![json!({"ref": MODEL_REF, "dependsOn": depends_on})];
    dependencies.extend(
        depends_on
            .iter()
            .map(|r| json!({"ref": r, "dependsOn": []})),
    );
    dependencies
}

/// Where the BOM came from: the statement's digest, build type, builder, run and signers.
fn metadata_properties(source: &Source) -> Vec<Value> {
    let t = &source.training;
    let mut properties = vec![
        property("trainprov:statement:sha256", &source.statement_sha256),
        property("trainprov:buildType", &t.build_type),
        property("trainprov:builder", &t.builder_id),
        property(
            "trainprov:signature:verified",
            if source.signed_by.is_empty() {
                "false"
            } else {
                "true"
            },
        ),
    ];
    if let Some(id) = &t.run_id {
        properties.push(property("trainprov:run:id", id));
    }
    properties.extend(
        source
            .signed_by
            .iter()
            .map(|k| property("trainprov:signature:keyid", k)),
    );
    properties
}

fn model_card(source: &Source, data: &[&Input]) -> Value {
    let mut parameters = serde_json::Map::new();
    if source.is_builtin() {
        // The built-in trainer learns completions from prompts (or text) with a next-token loss:
        // supervised fine-tuning.
        parameters.insert("approach".into(), json!({"type": "supervised"}));
    }
    if let Some(config) = source.architecture() {
        if let Some(task) = config.task() {
            parameters.insert("task".into(), json!(task));
        }
        if let Some(family) = &config.family {
            parameters.insert("architectureFamily".into(), json!(family));
        }
        if let Some(arch) = &config.architecture {
            parameters.insert("modelArchitecture".into(), json!(arch));
        }
    }
    parameters.insert(
        "datasets".into(),
        json!(data
            .iter()
            .map(|i| json!({"ref": i.dependency}))
            .collect::<Vec<_>>()),
    );
    json!({"modelParameters": parameters})
}

fn model_properties(source: &Source) -> Vec<Value> {
    let t = &source.training;
    let mut properties: Vec<Value> = t
        .params
        .iter()
        .map(|(k, v)| property(&format!("trainprov:param:{k}"), v))
        .collect();
    properties.extend(
        t.trainer
            .iter()
            .map(|(k, v)| property(&format!("trainprov:trainer:{k}"), v)),
    );
    properties
}

/// A dataset (`data`) or an ancestor model (`machine-learning-model`).
fn input_component(source: &Source, input: &Input) -> Value {
    let files = source.manifests.get(&input.blake3);
    let mut description = format!(
        "{} input {} recorded by trainprov as a snapshot; its hashes are those of the \
         trainprov-snapshot manifest (v2, v1 for older records) listing every file",
        input.role.as_str(),
        input.path
    );
    if files.is_none() {
        description.push_str(" (the manifest was not available, so files are not listed)");
    }
    let mut properties = vec![
        property("trainprov:role", input.role.as_str()),
        property("trainprov:path", &input.path),
        property("trainprov:snapshot:digest", &input.blake3),
    ];
    if let Some(n) = input.files {
        properties.push(property("trainprov:snapshot:files", &n.to_string()));
    }
    if let Some(n) = input.bytes {
        properties.push(property("trainprov:snapshot:bytes", &n.to_string()));
    }
    let kind = match input.role {
        Role::Data => "data",
        Role::Base | Role::Adapter => "machine-learning-model",
    };
    let mut component = json!({
        "type": kind,
        "bom-ref": input.dependency,
        "name": source.input_name(input),
        "description": description,
        "hashes": [
            {"alg": "SHA-256", "content": input.sha256},
            {"alg": "BLAKE3", "content": input.blake3},
        ],
        "properties": properties,
    });
    if input.role == Role::Data {
        component["data"] = json!([{"type": "dataset", "name": input.path}]);
    } else if let Some(config) = source.model_configs.get(&input.dependency) {
        let mut parameters = serde_json::Map::new();
        if let Some(family) = &config.family {
            parameters.insert("architectureFamily".into(), json!(family));
        }
        if let Some(arch) = &config.architecture {
            parameters.insert("modelArchitecture".into(), json!(arch));
        }
        component["modelCard"] = json!({"modelParameters": parameters});
    }
    if let Some(files) = files {
        component["components"] = json!(files
            .iter()
            .map(|f| file_component(&input.dependency, f))
            .collect::<Vec<_>>());
    }
    component
}

fn file_component(parent: &str, file: &FileDigests) -> Value {
    let mut hashes = Vec::new();
    if let Some(sha256) = &file.sha256 {
        hashes.push(json!({"alg": "SHA-256", "content": sha256}));
    }
    hashes.push(json!({"alg": "BLAKE3", "content": file.blake3}));
    let mut component = json!({
        "type": "file",
        "bom-ref": format!("{parent}#{}", file.name),
        "name": file.name,
        "hashes": hashes,
    });
    if let Some(size) = file.size {
        component["properties"] = json!([property("trainprov:size", &size.to_string())]);
    }
    component
}

fn property(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}
