"""Validate an AI bill of materials written by `trainprov bom` with the reference libraries.

Usage: validate_bom.py cyclonedx FILE
       validate_bom.py spdx FILE

cyclonedx: cyclonedx-python-lib's JsonStrictValidator(SchemaVersion.V1_6) checks the document
against the CycloneDX 1.6 JSON schema (formats included, no additional properties). Then every
bom-ref must be unique and every reference (dependencies, modelCard datasets) must name one, and
each dataset a model card cites must be a `data` component.

spdx: spdx-python-model's JSONLDDeserializer (v3_0_1) loads the JSON-LD into a SHACLObjectSet
(types, enumerations and property names are checked as it decodes); link() must find every
referenced spdxId; serializing the set again must succeed (required properties present, counts
within bounds) and give back the same graph, so nothing was dropped. Every `trainedOn`
relationship must lead from an ai_AIPackage to dataset_DatasetPackage elements.

On success prints one JSON object summarising what was found (models, datasets, files,
trainedOn targets, ...) and exits 0; otherwise prints every problem on stderr and exits 1.
"""

import io
import json
import sys


def walk_components(component, found):
    """Every component below (and including) `component`, pedigree ancestors included."""
    found.append(component)
    for child in component.get("components", []):
        walk_components(child, found)
    for key in ("ancestors", "descendants", "variants"):
        for child in component.get("pedigree", {}).get(key, []):
            walk_components(child, found)


def check_cyclonedx(text):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    problems = []
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    for error in errors or []:
        problems.append(f"schema: {error}")
    doc = json.loads(text)
    components = []
    if "component" in doc.get("metadata", {}):
        walk_components(doc["metadata"]["component"], components)
    for component in doc.get("components", []):
        walk_components(component, components)
    refs = {}
    for component in components:
        ref = component.get("bom-ref")
        if ref is None:
            continue
        if ref in refs:
            problems.append(f"bom-ref {ref!r} is used twice")
        refs[ref] = component
    for dependency in doc.get("dependencies", []):
        for ref in [dependency["ref"], *dependency.get("dependsOn", [])]:
            if ref not in refs:
                problems.append(f"dependencies: {ref!r} names no component")
    models = [c for c in components if c.get("type") == "machine-learning-model"]
    cited = []
    for model in models:
        for dataset in model.get("modelCard", {}).get("modelParameters", {}).get("datasets", []):
            ref = dataset.get("ref")
            if ref is None:
                continue
            cited.append(ref)
            if ref not in refs:
                problems.append(f"modelCard of {model.get('bom-ref')!r}: dataset {ref!r} names no component")
            elif refs[ref].get("type") != "data":
                problems.append(f"modelCard dataset {ref!r} is a {refs[ref].get('type')}, not data")
    summary = {
        "format": "cyclonedx",
        "models": len(models),
        "model_cards": sum(1 for m in models if "modelCard" in m),
        "datasets": sum(1 for c in components if c.get("type") == "data"),
        "files": sum(1 for c in components if c.get("type") == "file"),
        "ancestors": sum(len(m.get("pedigree", {}).get("ancestors", [])) for m in models),
        "datasets_cited": sorted(cited),
        "bom_refs": len(refs),
    }
    return problems, summary


def without_blank_ids(value):
    """`value` with every blank node id (`_:name`, which a serializer may rename) made `_:`."""
    if isinstance(value, dict):
        return {k: without_blank_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_blank_ids(v) for v in value]
    if isinstance(value, str) and value.startswith("_:"):
        return "_:"
    return value


def graph_of(data):
    """{id: object} of a JSON-LD document, blank node ids made `_:`."""
    return {o.get("spdxId") or "_:" + o.get("type", ""): without_blank_ids(o) for o in data["@graph"]}


def check_spdx(text):
    from spdx_python_model import v3_0_1 as spdx

    problems = []
    data = json.loads(text)
    objset = spdx.SHACLObjectSet()
    try:
        spdx.JSONLDDeserializer().deserialize_data(data, objset)
    except Exception as e:  # the library raises TypeError, ValueError, KeyError...
        return [f"deserialize: {type(e).__name__}: {e}"], {}
    missing = objset.link()
    for spdx_id in sorted(missing):
        problems.append(f"reference to {spdx_id!r} names no element in the document")
    try:
        again = spdx.JSONLDSerializer().serialize_data(objset, force_at_graph=True)
    except Exception as e:
        problems.append(f"serialize: {type(e).__name__}: {e}")
        again = None
    if again is not None:
        before, after = graph_of(data), graph_of(again)
        if before.keys() != after.keys():
            problems.append(f"round trip changed the element ids: {sorted(before.keys() ^ after.keys())}")
        for key in sorted(before.keys() & after.keys()):
            if before[key] != after[key]:
                problems.append(f"round trip changed {key}: {before[key]} -> {after[key]}")

    def ids(objects):
        return [o._id for o in objects]

    packages = list(objset.foreach_type(spdx.ai_AIPackage))
    datasets = list(objset.foreach_type(spdx.dataset_DatasetPackage))
    trained_on = []
    for rel in objset.foreach_type(spdx.Relationship):
        if rel.relationshipType != spdx.RelationshipType.trainedOn:
            continue
        if not isinstance(rel.from_, spdx.ai_AIPackage):
            problems.append(f"trainedOn {rel._id} does not start at an ai_AIPackage")
        for target in rel.to:
            if not isinstance(target, spdx.dataset_DatasetPackage):
                problems.append(f"trainedOn {rel._id} leads to {target!r}, not a dataset_DatasetPackage")
            else:
                trained_on.append(target._id)
    documents = list(objset.foreach_type(spdx.SpdxDocument))
    if len(documents) != 1:
        problems.append(f"{len(documents)} SpdxDocument elements, expected 1")
    conformance = []
    for document in documents:
        conformance = sorted(str(p).rsplit("/", 1)[-1] for p in document.profileConformance)
        if not document.rootElement:
            problems.append("the SpdxDocument has no rootElement")
    summary = {
        "format": "spdx",
        "ai_packages": len(packages),
        "datasets": len(datasets),
        "files": len(list(objset.foreach_type(spdx.software_File))),
        "trained_on": sorted(trained_on),
        "dataset_ids": sorted(ids(datasets)),
        "profiles": conformance,
        "hyperparameters": sum(len(p.ai_hyperparameter) for p in packages),
    }
    return problems, summary


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("cyclonedx", "spdx"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[2], encoding="utf-8") as f:
        text = f.read()
    check = check_cyclonedx if sys.argv[1] == "cyclonedx" else check_spdx
    problems, summary = check(text)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
