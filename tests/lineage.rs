//! `trainprov registry lineage|affected` end to end, on real wrapped runs in a git repository:
//! run 1 trains on `data/` (holding `poisoned.csv`), run 2 uses run 1's output directory as
//! `--adapter`, run 3 uses an unrelated dataset.

mod util;

use serde_json::Value;
use sha2::Digest as _;
use util::{in_repo, record, Workspace, INPUT, OK};

/// The three runs' ids.
struct Runs {
    first: String,
    second: String,
    third: String,
}

fn scenario() -> (Workspace, Runs) {
    let ws = Workspace::new();
    ws.keygen("signer", "");
    ws.write("repo/README.md", "lineage test\n");
    ws.write("repo/.gitignore", "out*/\nreg/\n");
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "."]);
    ws.git("repo", &["commit", "-qm", "init"]);
    ws.write("repo/data/clean.csv", "x,y\n1,2\n3,4\n");
    ws.write("repo/data/poisoned.csv", "x,y\n5,666\n");
    ws.write("repo/data2/extra.csv", "x,y\n7,8\n");
    ws.write("repo/data3/other.csv", "a,b\n9,10\n");
    ws.write("unrelated.csv", "nobody,used,this\n");
    let first = record(
        &ws,
        "out1",
        &["--data", "data"],
        "mkdir -p out1 && cat data/clean.csv data/poisoned.csv > out1/adapter.bin",
    );
    let second = record(
        &ws,
        "out2",
        &["--adapter", "out1", "--data", "data2"],
        "mkdir -p out2 && cat out1/adapter.bin data2/extra.csv > out2/model.bin && echo done",
    );
    let third = record(
        &ws,
        "out3",
        &["--data", "data3"],
        "mkdir -p out3 && sort data3/other.csv > out3/model.bin",
    );
    (
        ws,
        Runs {
            first,
            second,
            third,
        },
    )
}

fn affected(ws: &Workspace, target: &str) -> Value {
    in_repo(
        ws,
        &[
            "registry",
            "affected",
            target,
            "--registry",
            "reg",
            "--json",
        ],
    )
    .expect_code(OK, &format!("affected {target}"))
    .json()
}

/// `(run id, generation)` of every affected run.
fn generations(result: &Value) -> Vec<(String, u64)> {
    result["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id").to_string(),
                r["generation"].as_u64().expect("generation"),
            )
        })
        .collect()
}

fn product_paths(result: &Value) -> Vec<String> {
    result["products"]
        .as_array()
        .expect("products")
        .iter()
        .map(|p| p["path"].as_str().expect("path").to_string())
        .collect()
}

#[test]
fn affected_finds_second_generation_runs_and_their_products() {
    let (ws, runs) = scenario();
    let result = affected(&ws, "data/poisoned.csv");
    assert_eq!(result["status"], "ok");
    assert_eq!(
        generations(&result),
        [(runs.first.clone(), 1), (runs.second.clone(), 2)],
        "run 3 ({}) is not affected: {result:#}",
        runs.third
    );
    let first = &result["runs"][0];
    assert_eq!(first["via"][0]["role"], "data");
    assert_eq!(first["via"][0]["matched"], "file");
    assert_eq!(first["via"][0]["files"][0], "poisoned.csv");
    assert!(first["attestation_path"]
        .as_str()
        .expect("attestation")
        .ends_with("out1/provenance.intoto.json"));
    let second = &result["runs"][1];
    assert_eq!(second["via"][0]["role"], "adapter");
    assert_eq!(second["via"][0]["input"], "out1");
    assert_eq!(second["via"][0]["matched"], "product");
    assert_eq!(second["via"][0]["upstream_run"], runs.first.as_str());
    assert_eq!(second["via"][0]["files"][0], "adapter.bin");
    assert_eq!(
        second["via"][0]["rule"], "exact",
        "out1 also holds provenance.intoto.json and model.sig, which do not count"
    );
    let products = product_paths(&result);
    assert_eq!(products.len(), 2, "{products:?}");
    assert!(products[0].ends_with("out1/adapter.bin"), "{products:?}");
    assert!(products[1].ends_with("out2/model.bin"), "{products:?}");
    let sha = hex_sha256(&ws.read("repo/out2/model.bin"));
    assert_eq!(result["products"][1]["sha256"], sha.as_str());

    // Human output: generations, the matching input and the products to rebuild.
    let human = in_repo(
        &ws,
        &[
            "registry",
            "affected",
            "data/poisoned.csv",
            "--registry",
            "reg",
        ],
    )
    .expect_code(OK, "affected, human")
    .stdout;
    assert!(
        human.contains("2 runs consumed data/poisoned.csv"),
        "{human}"
    );
    assert!(
        human.contains(&format!("gen 1  run {}", &runs.first[..8])),
        "{human}"
    );
    assert!(
        human.contains(&format!("gen 2  run {}", &runs.second[..8])),
        "{human}"
    );
    assert!(
        human.contains("via data data: holds poisoned.csv"),
        "{human}"
    );
    assert!(
        human.contains(&format!(
            "via adapter out1: holds adapter.bin ← products of run {} (exact)",
            &runs.first[..8]
        )),
        "{human}"
    );
    assert!(human.contains("products to rebuild (2):"), "{human}");
    assert!(human.contains("out1/adapter.bin"), "{human}");
    assert!(human.contains("out2/model.bin"), "{human}");
    assert!(!human.contains(&runs.third[..8]), "{human}");
}

#[test]
fn affected_by_digest_directory_and_unrelated_file() {
    let (ws, runs) = scenario();
    let expected = [(runs.first.clone(), 1), (runs.second.clone(), 2)];

    // The SHA-256 of the poisoned file (only its BLAKE3 is in the manifests), and its BLAKE3.
    let bytes = ws.read("repo/data/poisoned.csv");
    let by_sha = affected(&ws, &hex_sha256(&bytes));
    assert_eq!(by_sha["target"]["kind"], "file");
    assert_eq!(generations(&by_sha), expected, "{by_sha:#}");
    let by_blake3 = affected(&ws, &blake3_hex(&ws, "repo/data/poisoned.csv"));
    assert_eq!(generations(&by_blake3), expected, "{by_blake3:#}");

    // The whole dataset directory: the same snapshot as run 1's input.
    let by_dir = affected(&ws, "data");
    assert_eq!(by_dir["target"]["kind"], "directory");
    assert_eq!(generations(&by_dir), expected, "{by_dir:#}");
    assert_eq!(by_dir["runs"][0]["via"][0]["matched"], "snapshot");

    // A file nobody used: nothing, and exit 0.
    let none = affected(&ws, "../unrelated.csv");
    assert_eq!(none["runs"].as_array().map(Vec::len), Some(0), "{none:#}");
    assert_eq!(none["products"].as_array().map(Vec::len), Some(0));
    let human = in_repo(
        &ws,
        &[
            "registry",
            "affected",
            "../unrelated.csv",
            "--registry",
            "reg",
        ],
    )
    .expect_code(OK, "nothing affected");
    assert!(
        human
            .stdout
            .contains("nothing recorded consumed ../unrelated.csv"),
        "{}",
        human.stdout
    );

    // A digest found nowhere: also nothing, with a note.
    let unknown = affected(&ws, &"ab".repeat(32));
    assert_eq!(unknown["target"]["kind"], "unknown");
    assert_eq!(unknown["runs"].as_array().map(Vec::len), Some(0));

    // The unrelated dataset's file reaches run 3 only; run 1's product, run 2 only.
    assert_eq!(
        generations(&affected(&ws, "data3/other.csv")),
        [(runs.third.clone(), 1)]
    );
    assert_eq!(
        generations(&affected(&ws, "out1/adapter.bin")),
        [(runs.second.clone(), 1)]
    );
    // A run id: what consumed its products.
    assert_eq!(
        generations(&affected(&ws, &runs.first[..8])),
        [(runs.second.clone(), 1)]
    );
}

#[test]
fn lineage_of_a_product_walks_back_through_the_adapter_to_the_data() {
    let (ws, runs) = scenario();
    let result = in_repo(
        &ws,
        &[
            "registry",
            "lineage",
            "out2/model.bin",
            "--registry",
            "reg",
            "--json",
        ],
    )
    .expect_code(OK, "lineage json")
    .json();
    let root = &result["lineage"];
    assert_eq!(root["type"], "artifact");
    let producers = root["produced_by"].as_array().expect("produced_by");
    assert_eq!(producers.len(), 1, "{root:#}");
    let second = &producers[0]["run"];
    assert_eq!(second["id"], runs.second.as_str());
    assert_eq!(producers[0]["match"]["rule"], "exact");
    assert!(second["code"]["commit"].as_str().is_some(), "{second:#}");

    let inputs = second["inputs"].as_array().expect("inputs");
    let roles: Vec<&str> = inputs.iter().filter_map(|i| i["role"].as_str()).collect();
    assert_eq!(roles, ["adapter", "data"], "base, adapters, data order");
    let adapter = &inputs[0];
    assert_eq!(adapter["name"], "out1");
    assert_eq!(adapter["files"], 3, "adapter.bin, model.sig, provenance");
    let adapter_producers = adapter["produced_by"].as_array().expect("producers");
    assert_eq!(adapter_producers.len(), 1, "{adapter:#}");
    assert_eq!(
        adapter_producers[0]["match"]["rule"], "exact",
        "the signature files beside the product do not count"
    );
    let first = &adapter_producers[0]["run"];
    assert_eq!(first["id"], runs.first.as_str());
    assert_eq!(first["inputs"][0]["role"], "data");
    assert_eq!(first["inputs"][0]["name"], "data");
    assert_eq!(first["inputs"][0]["files"], 2);
    assert_eq!(
        first["inputs"][0]["produced_by"].as_array().map(Vec::len),
        Some(0)
    );
    // data2 was produced by nobody.
    assert_eq!(inputs[1]["produced_by"].as_array().map(Vec::len), Some(0));

    // Human: an indented tree, run 2 ← adapter made by run 1 ← data.
    let human = in_repo(
        &ws,
        &["registry", "lineage", "out2/model.bin", "--registry", "reg"],
    )
    .expect_code(OK, "lineage human")
    .stdout;
    let lines: Vec<&str> = human.lines().collect();
    let position = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("'{needle}' in\n{human}"))
    };
    let header = position(&format!("← run {}", &runs.second[..8]));
    let run2 = position(&format!("run {} run (succeeded)", &runs.second[..8]));
    let adapter_line = position("adapter out1");
    let run1 = position(&format!("run {} run (succeeded)", &runs.first[..8]));
    let data_line = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("data    data "))
        .expect("data line");
    assert!(header < run2 && run2 < adapter_line && adapter_line < run1 && run1 < data_line);
    let indent = |i: usize| lines[i].len() - lines[i].trim_start().len();
    assert!(indent(run2) < indent(adapter_line), "{human}");
    assert!(indent(adapter_line) < indent(run1), "{human}");
    assert!(indent(run1) < indent(data_line), "{human}");
    assert!(
        lines[adapter_line].contains(&format!("← run {} (exact", &runs.first[..8])),
        "{human}"
    );
    assert!(lines[run2].contains("→ out2/model.bin"), "{human}");
    assert!(human.contains("code    "), "{human}");
    assert!(!human.contains(&runs.third[..8]), "{human}");
}

#[test]
fn lineage_of_a_run_a_directory_and_clear_errors() {
    let (ws, runs) = scenario();
    // A run id prefix.
    let by_run = in_repo(
        &ws,
        &[
            "registry",
            "lineage",
            &runs.second[..8],
            "--registry",
            "reg",
            "--json",
        ],
    )
    .expect_code(OK, "lineage of a run")
    .json();
    assert_eq!(by_run["lineage"]["type"], "run");
    assert_eq!(by_run["lineage"]["id"], runs.second.as_str());
    assert_eq!(
        by_run["lineage"]["inputs"][0]["produced_by"][0]["run"]["id"],
        runs.first.as_str()
    );

    // A directory: run 1's output directory, with the signature files beside the product.
    let by_dir = in_repo(
        &ws,
        &["registry", "lineage", "out1", "--registry", "reg", "--json"],
    )
    .expect_code(OK, "lineage of a directory")
    .json();
    assert_eq!(by_dir["lineage"]["kind"], "directory");
    assert_eq!(
        by_dir["lineage"]["produced_by"][0]["run"]["id"],
        runs.first.as_str()
    );

    // An input file nobody produced: exit 0, says so.
    let human = in_repo(
        &ws,
        &["registry", "lineage", "data/clean.csv", "--registry", "reg"],
    )
    .expect_code(OK, "lineage of a source file")
    .stdout;
    assert!(
        human.contains("not produced by any recorded run"),
        "{human}"
    );

    // Nothing matches: one clear line, exit 2.
    let missing = in_repo(
        &ws,
        &["registry", "lineage", "no-such-thing", "--registry", "reg"],
    )
    .expect_code(INPUT, "unknown target");
    assert!(
        missing
            .stderr
            .contains("no run or artifact matches 'no-such-thing'"),
        "{}",
        missing.stderr
    );
    let unknown_digest = "cd".repeat(32);
    let missing = in_repo(
        &ws,
        &["registry", "lineage", &unknown_digest, "--registry", "reg"],
    )
    .expect_code(INPUT, "unknown digest");
    assert!(
        missing.stderr.contains("no run or artifact matches"),
        "{}",
        missing.stderr
    );
    // No registry at all.
    let no_registry = in_repo(
        &ws,
        &["registry", "affected", "data", "--registry", "nowhere"],
    )
    .expect_code(INPUT, "no registry");
    assert!(
        no_registry.stderr.contains("no registry here yet"),
        "{}",
        no_registry.stderr
    );
}

#[test]
fn a_shared_product_file_alone_links_nothing() {
    // Runs A and B both write the same adapter_config.json; a directory holding that file and
    // B's weights was made by B, not A; a run using it is affected by B's data, not A's.
    let ws = Workspace::new();
    ws.keygen("signer", "");
    ws.write("repo/README.md", "shared\n");
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "."]);
    ws.git("repo", &["commit", "-qm", "init"]);
    ws.write("repo/da/a.csv", "a\n1\n");
    ws.write("repo/db/b.csv", "b\n2\n");
    let config = "{\"r\": 8}";
    let a = record(
        &ws,
        "outa",
        &["--data", "da"],
        &format!("mkdir -p outa && echo '{config}' > outa/adapter_config.json && (cat da/a.csv; echo w) > outa/w.bin"),
    );
    let b = record(
        &ws,
        "outb",
        &["--data", "db"],
        &format!("mkdir -p outb && echo '{config}' > outb/adapter_config.json && (cat db/b.csv; echo w) > outb/w.bin && echo extra > outb/log.txt"),
    );
    // B's config and weights, without its log, plus a README: a partial overlap with B.
    ws.write(
        "repo/mix/adapter_config.json",
        ws.read("repo/outb/adapter_config.json"),
    );
    ws.write("repo/mix/w.bin", ws.read("repo/outb/w.bin"));
    ws.write("repo/mix/README", "mine\n");
    let c = record(
        &ws,
        "outc",
        &["--adapter", "mix"],
        "mkdir -p outc && cat mix/w.bin > outc/final.bin",
    );

    let from_a = affected(&ws, "da/a.csv");
    assert_eq!(generations(&from_a), [(a.clone(), 1)], "{from_a:#}");
    let from_b = affected(&ws, "db/b.csv");
    assert_eq!(generations(&from_b), [(b.clone(), 1), (c.clone(), 2)]);
    assert_eq!(from_b["runs"][1]["via"][0]["rule"], "partial");

    let lineage = in_repo(
        &ws,
        &[
            "registry",
            "lineage",
            &c[..8],
            "--registry",
            "reg",
            "--json",
        ],
    )
    .expect_code(OK, "lineage of c")
    .json();
    let producers = lineage["lineage"]["inputs"][0]["produced_by"]
        .as_array()
        .expect("producers")
        .clone();
    let ids: Vec<&str> = producers
        .iter()
        .filter_map(|p| p["run"]["id"].as_str())
        .collect();
    assert_eq!(ids, [b.as_str()], "{lineage:#}");
    assert_eq!(producers[0]["match"]["rule"], "partial");
    assert_eq!(producers[0]["match"]["matched_files"], 2);

    // The directory itself: made by B; C, which consumed it (and copied w.bin out), did not.
    let by_dir = in_repo(
        &ws,
        &["registry", "lineage", "mix", "--registry", "reg", "--json"],
    )
    .expect_code(OK, "lineage of mix")
    .json();
    let ids: Vec<&str> = by_dir["lineage"]["produced_by"]
        .as_array()
        .expect("producers")
        .iter()
        .filter_map(|p| p["run"]["id"].as_str())
        .collect();
    assert_eq!(ids, [b.as_str()], "{by_dir:#}");
}

fn hex_sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The BLAKE3 of a file, from `trainprov snapshot` of its directory's manifest.
fn blake3_hex(ws: &Workspace, rel: &str) -> String {
    let manifest = ws.path("manifest.txt");
    let dir = std::path::Path::new(rel)
        .parent()
        .expect("parent")
        .display()
        .to_string();
    let name = std::path::Path::new(rel)
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    ws.run(&[
        "snapshot",
        &dir,
        "--registry",
        "repo/reg",
        "--manifest",
        manifest.to_str().expect("utf-8"),
    ])
    .expect_code(OK, "snapshot for a digest");
    let text = String::from_utf8(ws.read("manifest.txt")).expect("utf-8");
    text.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields.len() == 4 && fields[3] == name).then(|| fields[2].to_string())
        })
        .expect("file in manifest")
}

/// Issue 11: a copy of a poisoned run's weights made by an unaffected run (`run -- cp`) excused
/// a partial overlap, so a run using those weights was not `affected`. Only small text files
/// (the shared `adapter_config.json`) are excused now.
#[test]
fn issue11_copied_weights_keep_a_partial_overlap_affected() {
    let ws = Workspace::new();
    ws.keygen("signer", "");
    ws.write("repo/README.md", "launder\n");
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "."]);
    ws.git("repo", &["commit", "-qm", "init"]);
    ws.write("repo/da/a.csv", "a\n1\n");
    let a = record(
        &ws,
        "outa",
        &["--data", "da"],
        "mkdir -p outa && (cat da/a.csv; echo w) > outa/w.bin && echo a > outa/notes.txt",
    );
    let copy = record(
        &ws,
        "outb",
        &[],
        "mkdir -p outb && cp outa/w.bin outb/w.bin",
    );
    ws.write("repo/mix/w.bin", ws.read("repo/outa/w.bin"));
    ws.write("repo/mix/README", "mine\n");
    let c = record(
        &ws,
        "outc",
        &["--adapter", "mix"],
        "mkdir -p outc && cat mix/w.bin > outc/final.bin",
    );
    let from_a = affected(&ws, "da/a.csv");
    assert_eq!(
        generations(&from_a),
        [(a.clone(), 1), (c.clone(), 2)],
        "{from_a:#}"
    );
    assert_eq!(from_a["runs"][1]["via"][0]["rule"], "partial");
    assert!(!copy.is_empty());
}
