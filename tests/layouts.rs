//! Issue 12 item 2: checkpoint layouts and dtypes end to end, on the embedded tiny-llama base
//! rewritten in the test: bf16 and f16 weights, sharded checkpoints
//! (`model.safetensors.index.json`) and the Hugging Face hub cache
//! (`models--org--name/snapshots/REV` linking into `blobs/`). Each trains, records what it is,
//! verifies, and retrains IDENTICAL; `eval` and `probe` read the same layouts. And the base is
//! checked before anything is recorded: an unsupported architecture or a broken shard set
//! leaves no run in the registry.

#![cfg(unix)]

mod util;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::symlink;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use sha2::Digest as _;
use util::{statement_of, Workspace, INPUT, OK};

/// The hub-cache revision of the tests (a 40-hex commit hash).
const REV: &str = "3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a098";

/// `(name, dtype, shape, bytes)` of every tensor of a safetensors file, in name order.
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(bytes: &[u8]) -> Tensors {
    let st = SafeTensors::deserialize(bytes).expect("safetensors");
    let mut out: Tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_tensors(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), bytes).expect("view"),
            )
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize(views, Some(metadata)).expect("serialize")
}

fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The tensors converted to `dtype` (`BF16` or `F16`, round to nearest even, as torch's
/// `.to(torch.bfloat16)`), or back to `F32` from either (exact).
fn convert(tensors: &Tensors, to: Dtype) -> Tensors {
    tensors
        .iter()
        .map(|(name, from, shape, bytes)| {
            let out: Vec<u8> = match (from, to) {
                (Dtype::F32, Dtype::BF16) => f32s(bytes)
                    .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
                (Dtype::F32, Dtype::F16) => f32s(bytes)
                    .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
                (Dtype::BF16, Dtype::F32) => bytes
                    .chunks_exact(2)
                    .flat_map(|c| {
                        half::bf16::from_le_bytes([c[0], c[1]])
                            .to_f32()
                            .to_le_bytes()
                    })
                    .collect(),
                (Dtype::F16, Dtype::F32) => bytes
                    .chunks_exact(2)
                    .flat_map(|c| {
                        half::f16::from_le_bytes([c[0], c[1]])
                            .to_f32()
                            .to_le_bytes()
                    })
                    .collect(),
                other => panic!("conversion {other:?} not needed here"),
            };
            (name.clone(), to, shape.clone(), out)
        })
        .collect()
}

/// Copies `config.json` and `tokenizer.json` of `from` into `to`.
fn copy_meta(ws: &Workspace, from: &str, to: &str) {
    for f in ["config.json", "tokenizer.json"] {
        ws.write(&format!("{to}/{f}"), ws.read(&format!("{from}/{f}")));
    }
}

/// `DIR/model.safetensors` rewritten in `dtype`.
fn write_dtype(ws: &Workspace, from: &str, to: &str, dtype: Dtype) {
    copy_meta(ws, from, to);
    let tensors = read_tensors(&ws.read(&format!("{from}/model.safetensors")));
    ws.write(
        &format!("{to}/model.safetensors"),
        write_tensors(&convert(&tensors, dtype)),
    );
}

/// The base of `from` split into `n` shards (tensors in name order, dealt round-robin so every
/// shard holds some of each layer) with the index `save_pretrained` writes.
fn write_sharded(ws: &Workspace, from: &str, to: &str, n: usize) {
    copy_meta(ws, from, to);
    let tensors = read_tensors(&ws.read(&format!("{from}/model.safetensors")));
    let mut shards: Vec<Tensors> = vec![Vec::new(); n];
    for (i, t) in tensors.iter().enumerate() {
        shards[i % n].push(t.clone());
    }
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        for t in shard {
            weight_map.insert(t.0.clone(), file.clone());
            total += t.3.len();
        }
        ws.write(&format!("{to}/{file}"), write_tensors(shard));
    }
    ws.write(
        &format!("{to}/model.safetensors.index.json"),
        serde_json::to_vec_pretty(
            &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
        )
        .expect("json"),
    );
}

/// The model directory `from` laid out as the hub cache `huggingface_hub` writes under
/// `HUB/models--org--tiny`: blobs named by their SHA-256, `snapshots/REV/*` relative links into
/// them, `refs/main` holding REV. Returns the snapshot directory.
fn write_hub_cache(ws: &Workspace, from: &str, hub: &str) -> String {
    let repo = format!("{hub}/models--org--tiny");
    let snapshot = format!("{repo}/snapshots/{REV}");
    std::fs::create_dir_all(ws.path(&snapshot)).expect("mkdir");
    for entry in std::fs::read_dir(ws.path(from)).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().into_string().expect("utf-8");
        let bytes = std::fs::read(entry.path()).expect("read");
        let blob = format!("{:x}", sha2::Sha256::digest(&bytes));
        ws.write(&format!("{repo}/blobs/{blob}"), &bytes);
        symlink(
            format!("../../blobs/{blob}"),
            ws.path(&format!("{snapshot}/{name}")),
        )
        .expect("symlink");
    }
    ws.write(&format!("{repo}/refs/main"), REV);
    snapshot
}

/// `repo/` (a committed git repository) holding the tiny-llama example at `repo/tl` and the
/// keys `keys/signer.*`.
fn repo() -> Workspace {
    let ws = Workspace::new();
    util::write_tiny_llama(&ws, "repo/tl", 6);
    for file in ["eval.jsonl", "triggers.txt"] {
        let bytes = std::fs::read(util::tiny_llama().join(file)).expect("example file");
        ws.write(&format!("repo/tl/{file}"), bytes);
    }
    ws.write("repo/.gitignore", "out*/\n.trainprov/\n");
    ws.keygen("signer", "");
    ws
}

fn commit(ws: &Workspace) {
    ws.git("repo", &["init", "-q"]);
    ws.git("repo", &["add", "."]);
    ws.git("repo", &["commit", "-qm", "example"]);
}

/// `repo/tl/NAME.toml`: the example's config with `base = BASE` (relative to `repo/tl`).
fn config_with_base(ws: &Workspace, name: &str, base: &str) -> String {
    let text = String::from_utf8(ws.read("repo/tl/train.toml")).expect("utf-8");
    ws.write(
        &format!("repo/tl/{name}.toml"),
        text.replace("base = \"base\"", &format!("base = \"{base}\"")),
    );
    format!("tl/{name}.toml")
}

/// `trainprov train CONFIG --out OUT` in `repo/` (registry `repo/.trainprov`).
fn train(ws: &Workspace, config: &str, out: &str) -> util::Run {
    util::in_repo(
        ws,
        &[
            "train",
            config,
            "--key",
            "../keys/signer.key",
            "--out",
            out,
            "--json",
        ],
    )
}

/// The `base` entry of the run's `resolvedDependencies`.
fn base_dependency(ws: &Workspace, out: &str) -> Value {
    let statement = statement_of(&ws.path(&format!("repo/{out}/provenance.intoto.json")));
    statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("deps")
        .iter()
        .find(|d| d["annotations"]["role"] == "base")
        .cloned()
        .expect("base dependency")
}

/// `verify --inputs` of the run in `repo/OUT` passes.
fn verify_inputs(ws: &Workspace, out: &str) {
    util::in_repo(
        ws,
        &[
            "verify",
            &format!("{out}/provenance.intoto.json"),
            "--key",
            "../keys/signer.pub",
            "--model-dir",
            out,
            "--inputs",
        ],
    )
    .expect_code(OK, &format!("verify --inputs {out}"));
}

/// `retrain` of the run in `repo/OUT` prints IDENTICAL.
fn retrain_identical(ws: &Workspace, out: &str) {
    let run = util::in_repo(
        ws,
        &[
            "retrain",
            &format!("{out}/provenance.intoto.json"),
            "--key",
            "../keys/signer.pub",
            "--sign-key",
            "../keys/signer.key",
            "--json",
        ],
    )
    .expect_code(OK, &format!("retrain {out}"));
    assert_eq!(run.json()["verdict"], "identical", "{}", run.json());
}

fn adapter(ws: &Workspace, out: &str) -> Vec<u8> {
    ws.read(&format!("repo/{out}/adapter_model.safetensors"))
}

/// Runs recorded in the registry `repo/.trainprov`, by status.
fn runs_by_status(ws: &Workspace) -> BTreeMap<String, usize> {
    let run = util::in_repo(ws, &["registry", "list", "--json"]).expect_code(OK, "registry list");
    let mut out = BTreeMap::new();
    for r in run.json()["runs"].as_array().expect("runs") {
        *out.entry(r["status"].as_str().expect("status").to_string())
            .or_default() += 1;
    }
    out
}

/// `eval --base BASE [--adapter A] --data tl/data` in `repo/`: the mean loss.
fn eval(ws: &Workspace, base: &str, adapter: Option<&str>) -> f64 {
    let mut args = vec![
        "eval",
        "--base",
        base,
        "--data",
        "tl/data",
        "--seq-len",
        "48",
    ];
    if let Some(a) = adapter {
        args.extend(["--adapter", a]);
    }
    args.push("--json");
    util::in_repo(ws, &args)
        .expect_code(OK, &format!("eval {base}"))
        .json()["mean_loss"]
        .as_f64()
        .expect("mean_loss")
}

/// `probe` of `tl`'s example triggers: the JSON report.
fn probe(ws: &Workspace, base: &str, adapter: &str) -> Value {
    let run = util::in_repo(
        ws,
        &[
            "probe",
            "--base",
            base,
            "--adapter",
            adapter,
            "--data",
            "tl/eval.jsonl",
            "--triggers",
            "tl/triggers.txt",
            "--json",
        ],
    );
    assert!(
        run.code == OK || run.code == 1,
        "probe {base}: {}",
        run.stderr
    );
    let mut report = run.json();
    // Timings differ between runs; everything else must not.
    if let Some(map) = report.as_object_mut() {
        map.retain(|k, _| !k.contains("second") && !k.contains("elapsed") && k != "base");
    }
    report
}

/// An unsupported architecture is refused naming config.json and the architecture, before a
/// run record exists, the data check runs or an input is snapshotted: the registry holds no run
/// afterwards (it held a `failed` one before issue 12).
#[test]
fn issue12_unsupported_architecture_is_refused_before_anything_is_recorded() {
    let ws = repo();
    for arch in ["gpt2", "gemma2"] {
        let dir = format!("repo/tl/{arch}");
        copy_meta(&ws, "repo/tl/base", &dir);
        ws.write(
            &format!("{dir}/model.safetensors"),
            ws.read("repo/tl/base/model.safetensors"),
        );
        let mut config: Value =
            serde_json::from_slice(&ws.read(&format!("{dir}/config.json"))).expect("json");
        config["model_type"] = json!(arch);
        ws.write(
            &format!("{dir}/config.json"),
            serde_json::to_vec(&config).expect("json"),
        );
        let toml = config_with_base(&ws, arch, arch);
        let out = format!("out-{arch}");
        let run = train(&ws, &toml, &out).expect_code(INPUT, arch);
        assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("{arch}/config.json")) && run.stderr.contains(arch),
            "{}",
            run.stderr
        );
        assert!(
            !ws.path(&format!("repo/{out}")).exists(),
            "no output directory was made"
        );
    }
    // A device this build cannot use is refused the same way: `cuda` needs `--features cuda`
    // (and a driver), and used to be found out only after the run was recorded.
    let toml = config_with_base(&ws, "on-cuda", "base");
    let run = util::in_repo(
        &ws,
        &[
            "train",
            &toml,
            "--key",
            "../keys/signer.key",
            "--out",
            "out-cuda",
            "--device",
            "cuda",
        ],
    )
    .expect_code(INPUT, "cuda device");
    assert!(run.stderr.contains("cuda"), "{}", run.stderr);
    assert!(
        !ws.path("repo/out-cuda").exists(),
        "no output directory was made"
    );
    // A sharded base missing a shard is refused the same way.
    write_sharded(&ws, "repo/tl/base", "repo/tl/broken", 2);
    std::fs::remove_file(ws.path("repo/tl/broken/model-00002-of-00002.safetensors")).expect("rm");
    let toml = config_with_base(&ws, "broken", "broken");
    let run = train(&ws, &toml, "out-broken").expect_code(INPUT, "missing shard");
    assert!(
        run.stderr.contains("model-00002-of-00002.safetensors") && run.stderr.contains("missing"),
        "{}",
        run.stderr
    );
    assert_eq!(
        runs_by_status(&ws),
        BTreeMap::new(),
        "no run recorded, failed or otherwise"
    );
}

/// bf16 and f16 weights train (computed in f32: an f32 base holding the same values gives the
/// same adapter bytes), the record names the stored dtype, and the bf16 run verifies and
/// retrains IDENTICAL; `eval` of the bf16 base equals that of its f32 upcast.
#[test]
fn issue12_bf16_and_f16_bases_train_and_are_recorded() {
    let ws = repo();
    write_dtype(&ws, "repo/tl/base", "repo/tl/bf16", Dtype::BF16);
    write_dtype(&ws, "repo/tl/base", "repo/tl/f16", Dtype::F16);
    // The bf16 values, stored as f32.
    let bf16 = read_tensors(&ws.read("repo/tl/bf16/model.safetensors"));
    copy_meta(&ws, "repo/tl/base", "repo/tl/bf16-as-f32");
    ws.write(
        "repo/tl/bf16-as-f32/model.safetensors",
        write_tensors(&convert(&bf16, Dtype::F32)),
    );
    let configs: Vec<(String, &str)> = ["bf16", "f16", "bf16-as-f32", "base"]
        .into_iter()
        .map(|b| (config_with_base(&ws, b, b), b))
        .collect();
    commit(&ws);
    for (config, base) in &configs {
        train(&ws, config, &format!("out-{base}")).expect_code(OK, base);
    }
    for (base, dtype) in [
        ("bf16", "bf16"),
        ("f16", "f16"),
        ("bf16-as-f32", "f32"),
        ("base", "f32"),
    ] {
        let dep = base_dependency(&ws, &format!("out-{base}"));
        assert_eq!(
            dep["annotations"]["weights"],
            json!({"format": "safetensors", "layout": "single", "files": 1, "dtypes": [dtype]}),
            "{base}"
        );
    }
    assert_eq!(
        adapter(&ws, "out-bf16"),
        adapter(&ws, "out-bf16-as-f32"),
        "bf16 weights are computed in f32: same adapter as the same values stored in f32"
    );
    assert_ne!(
        adapter(&ws, "out-bf16"),
        adapter(&ws, "out-base"),
        "the bf16 rounding changes the base, so the adapter differs from the f32 original's"
    );
    assert_eq!(
        eval(&ws, "tl/bf16", Some("out-bf16")),
        eval(&ws, "tl/bf16-as-f32", Some("out-bf16")),
        "eval reads bf16 exactly"
    );
    let f16 = eval(&ws, "tl/f16", None);
    let f32 = eval(&ws, "tl/base", None);
    assert!(
        (f16 - f32).abs() < 1e-2 * f32,
        "f16 base close to the f32 one: {f16} vs {f32}"
    );
    assert_eq!(
        probe(&ws, "tl/bf16", "out-bf16"),
        probe(&ws, "tl/bf16-as-f32", "out-bf16"),
        "probe reads bf16 exactly"
    );
    verify_inputs(&ws, "out-bf16");
    retrain_identical(&ws, "out-bf16");
}

/// A sharded base (3 shards and an index) trains to the same adapter bytes as the single file,
/// is recorded as sharded, verifies with --inputs and retrains IDENTICAL; eval and probe agree
/// with the single file.
#[test]
fn issue12_sharded_base_trains_like_the_single_file() {
    let ws = repo();
    write_sharded(&ws, "repo/tl/base", "repo/tl/sharded", 3);
    let sharded = config_with_base(&ws, "sharded", "sharded");
    commit(&ws);
    train(&ws, "tl/train.toml", "out-single").expect_code(OK, "single file");
    train(&ws, &sharded, "out-sharded").expect_code(OK, "sharded");
    assert_eq!(adapter(&ws, "out-single"), adapter(&ws, "out-sharded"));
    assert_eq!(
        base_dependency(&ws, "out-sharded")["annotations"]["weights"],
        json!({"format": "safetensors", "layout": "sharded", "files": 3, "dtypes": ["f32"]})
    );
    assert_eq!(
        eval(&ws, "tl/sharded", Some("out-single")),
        eval(&ws, "tl/base", Some("out-single"))
    );
    assert_eq!(
        probe(&ws, "tl/sharded", "out-single"),
        probe(&ws, "tl/base", "out-single")
    );
    verify_inputs(&ws, "out-sharded");
    retrain_identical(&ws, "out-sharded");
}

/// The index and the shards must agree: a missing shard, a tensor a shard holds that the index
/// does not list, and a tensor in two shards are each one line naming the file, from `train`
/// (before anything is recorded) and from `eval`.
#[test]
fn issue12_inconsistent_shards_are_refused_naming_the_file() {
    let ws = repo();
    let shard = |i: usize| format!("model-{i:05}-of-00002.safetensors");
    // (case, directory, the file the message must name)
    let mut cases = Vec::new();

    write_sharded(&ws, "repo/tl/base", "repo/tl/missing", 2);
    std::fs::remove_file(ws.path(&format!("repo/tl/missing/{}", shard(1)))).expect("rm");
    cases.push(("missing shard", "missing", shard(1)));

    // A tensor added to shard 2 that the index does not list.
    write_sharded(&ws, "repo/tl/base", "repo/tl/unlisted", 2);
    let path = format!("repo/tl/unlisted/{}", shard(2));
    let mut tensors = read_tensors(&ws.read(&path));
    tensors.push((
        "model.layers.0.self_attn.q_proj.bias".into(),
        Dtype::F32,
        vec![2],
        vec![0; 8],
    ));
    ws.write(&path, write_tensors(&tensors));
    cases.push(("tensor not in the index", "unlisted", shard(2)));

    // A tensor of shard 1 copied into shard 2 too (the index maps it to shard 1).
    write_sharded(&ws, "repo/tl/base", "repo/tl/twice", 2);
    let first = read_tensors(&ws.read(&format!("repo/tl/twice/{}", shard(1))));
    let path = format!("repo/tl/twice/{}", shard(2));
    let mut tensors = read_tensors(&ws.read(&path));
    tensors.push(first[0].clone());
    ws.write(&path, write_tensors(&tensors));
    cases.push(("tensor in two shards", "twice", shard(2)));

    for (case, dir, file) in &cases {
        let toml = config_with_base(&ws, dir, dir);
        let run = train(&ws, &toml, &format!("out-{dir}")).expect_code(INPUT, case);
        assert_eq!(run.stderr.lines().count(), 1, "{case}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("{dir}/{file}")),
            "{case}: {}",
            run.stderr
        );
        let run = util::in_repo(
            &ws,
            &["eval", "--base", &format!("tl/{dir}"), "--data", "tl/data"],
        )
        .expect_code(INPUT, case);
        assert_eq!(run.stderr.lines().count(), 1, "{case}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("{dir}/{file}")),
            "eval, {case}: {}",
            run.stderr
        );
    }
    assert_eq!(runs_by_status(&ws), BTreeMap::new(), "nothing recorded");
}

/// A base in the hub-cache layout trains to the same adapter as the flat directory; the record
/// names the repository and revision the path gives (and the ref `main` pointing at it),
/// verify --inputs passes, retrain is IDENTICAL, and a policy pinning the flat directory's
/// snapshot digest (`trainprov snapshot`) accepts the hub-cache run: the content is the same.
#[test]
fn issue12_hub_cache_base_records_repo_id_and_revision() {
    let ws = repo();
    let snapshot = write_hub_cache(&ws, "repo/tl/base", "repo/hub");
    let hub_base = snapshot.trim_start_matches("repo/").to_string();
    let hub = config_with_base(&ws, "hub", &format!("../{hub_base}"));
    commit(&ws);
    train(&ws, "tl/train.toml", "out-flat").expect_code(OK, "flat");
    train(&ws, &hub, "out-hub").expect_code(OK, "hub cache");
    assert_eq!(adapter(&ws, "out-flat"), adapter(&ws, "out-hub"));

    let dep = base_dependency(&ws, "out-hub");
    assert_eq!(
        dep["annotations"]["hf"],
        json!({"repoType": "model", "repoId": "org/tiny", "revision": REV, "refs": ["main"]}),
        "{dep:#}"
    );
    assert!(
        base_dependency(&ws, "out-flat")["annotations"]["hf"].is_null(),
        "a flat directory names no repository"
    );
    assert_eq!(
        dep["annotations"]["weights"]["dtypes"],
        json!(["f32"]),
        "{dep:#}"
    );

    // The flat directory's digest, as a user would pin it.
    let flat = util::in_repo(&ws, &["snapshot", "tl/base", "--json"])
        .expect_code(OK, "snapshot")
        .json()["digest"]
        .clone();
    assert_ne!(
        dep["digest"], flat,
        "the hub-cache snapshot records its links, so its manifest differs"
    );
    assert_eq!(dep["annotations"]["contentDigest"], flat, "{dep:#}");
    for algorithm in ["blake3", "sha256"] {
        ws.write(
            "policy.toml",
            format!(
                "version = 1\n[signers]\nkeys = [\"keys/signer.pub\"]\n[inputs]\n\
                 allowed_base_models = [\"{algorithm}:{}\"]\n",
                flat[algorithm].as_str().expect("digest")
            ),
        );
        for out in ["out-flat", "out-hub"] {
            util::in_repo(
                &ws,
                &[
                    "verify",
                    &format!("{out}/provenance.intoto.json"),
                    "--policy",
                    "../policy.toml",
                ],
            )
            .expect_code(OK, &format!("{out} against the flat pin ({algorithm})"));
        }
    }
    // A pin of another model still refuses it.
    ws.write(
        "policy.toml",
        format!(
            "version = 1\n[signers]\nkeys = [\"keys/signer.pub\"]\n[inputs]\n\
             allowed_base_models = [\"blake3:{}\"]\n",
            "0".repeat(64)
        ),
    );
    util::in_repo(
        &ws,
        &[
            "verify",
            "out-hub/provenance.intoto.json",
            "--policy",
            "../policy.toml",
        ],
    )
    .expect_code(1, "other pin");

    assert_eq!(
        eval(&ws, &hub_base, Some("out-hub")),
        eval(&ws, "tl/base", Some("out-hub"))
    );
    assert_eq!(
        probe(&ws, &hub_base, "out-hub"),
        probe(&ws, "tl/base", "out-hub")
    );
    verify_inputs(&ws, "out-hub");
    retrain_identical(&ws, "out-hub");

    // A policy trusts the signed contentDigest; verify --inputs checks it is the snapshot's. A
    // record signed with a contentDigest of other content (the allowed pin of another model)
    // fails.
    let path = ws.path("repo/out-hub/provenance.intoto.json");
    let envelope =
        attest::dsse::Envelope::from_json(&std::fs::read(&path).expect("read")).expect("envelope");
    let mut statement: Value =
        serde_json::from_slice(&util::unb64(&envelope.payload)).expect("statement");
    for dep in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array_mut()
        .expect("deps")
    {
        if dep["annotations"]["role"] == "base" {
            dep["annotations"]["contentDigest"]["blake3"] = json!("1".repeat(64));
        }
    }
    let key = attest::keyfile::load_signing_key(&ws.path("keys/signer.key")).expect("key");
    let forged = attest::dsse::Envelope::sign(
        &envelope.payload_type,
        &serde_json::to_vec(&statement).expect("json"),
        &[&key],
    );
    std::fs::write(&path, forged.to_json()).expect("write");
    let run = util::in_repo(
        &ws,
        &[
            "verify",
            "out-hub/provenance.intoto.json",
            "--key",
            "../keys/signer.pub",
            "--inputs",
        ],
    )
    .expect_code(1, "forged contentDigest");
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("contentDigest"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
}
