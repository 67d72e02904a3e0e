//! Command-line definitions (clap derive). Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Make model fine-tunes provable and repeatable.
///
/// trainprov signs what a training run produced and checks those signatures before deploy.
/// Keys are ECDSA P-256 (default) or Ed25519; signatures are DSSE-wrapped in-toto Statements and
/// OpenSSF Model Signing bundles, so standard tools can check them too.
///
/// Exit codes: 0 success, 1 verification failed, 2 usage or input error.
#[derive(Debug, Parser)]
#[command(
    name = "trainprov",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a signing key pair: PREFIX.key (private, mode 0600) and PREFIX.pub (public).
    #[command(
        after_help = "Examples:\n  trainprov keygen --out keys/signer\n  trainprov keygen --out keys/release --ed25519"
    )]
    Keygen(KeygenArgs),
    /// Sign every file of a model directory into DIR/model.sig (OpenSSF Model Signing v1.0).
    ///
    /// The signature is a Sigstore bundle that `model_signing verify key` also accepts (ECDSA
    /// keys). Git metadata (.git, .gitattributes, .github, .gitignore) and the signature file
    /// itself are left out, as model_signing does.
    #[command(
        after_help = "Examples:\n  trainprov sign-model my-model --key keys/signer.key\n  \
        model_signing verify key my-model --signature my-model/model.sig --public_key keys/signer.pub"
    )]
    SignModel(SignModelArgs),
    /// Verify a DSSE attestation (*.intoto.json) or an OpenSSF model signature (model.sig).
    ///
    /// The kind is detected from the file's content. For a model signature every file of the
    /// model directory (by default the directory holding model.sig) is re-hashed and missing,
    /// extra and changed files are reported by name. For an attestation, --artifact and
    /// --model-dir compare real files with the statement's subjects.
    ///
    /// Exit codes: 0 verified, 1 verification failed (signature, digest or file mismatch; also
    /// an attestation whose fields are malformed), 2 usage or input error (unreadable file, not
    /// JSON, bad key).
    #[command(
        after_help = "Examples:\n  trainprov verify my-model/model.sig --key keys/signer.pub\n  \
        trainprov verify out/provenance.intoto.json --key keys/signer.pub --artifact out/adapter_model.safetensors\n  \
        trainprov verify out/provenance.intoto.json --key a.pub --key b.pub --threshold 2 --model-dir out --json\n  \
        trainprov verify out/provenance.intoto.json --policy policy.toml --env prod --model-dir out\n\n\
        With a registry (--registry, $TRAINPROV_REGISTRY or .trainprov/ at the git root), an attestation that\n\
        descends from a revoked artifact (`trainprov registry revoke`) fails, naming the path through its lineage.\n\
        The output names the registry read and how it was found. With --policy, no registry is exit 2 unless\n\
        --no-registry (then revocations are reported as not checked)."
    )]
    Verify(VerifyArgs),
    /// Approve an attestation for a deploy environment: a signed SLSA Verification Summary.
    ///
    /// The attestation is first verified against the policy (every rule but the approvals
    /// themselves, and revocations); only if it passes is the approval written: a DSSE-signed
    /// in-toto Statement (predicateType https://slsa.dev/verification_summary/v1) over the
    /// attestation's subjects, naming the approver key, the environment, the policy (by SHA-256)
    /// and the attestation file (by SHA-256). It is recorded in the registry, where
    /// `verify --policy --env ENV` finds it.
    ///
    /// Exit codes: 0 approved, 1 the attestation does not meet the policy, 2 usage or input error
    /// (also: the key is not an approver of ENV in the policy).
    #[command(
        after_help = "Examples:\n  trainprov approve out/provenance.intoto.json --env prod --key keys/release.key --policy policy.toml\n  \
        trainprov approve out/provenance.intoto.json --env staging --key k.key --policy policy.toml --note 'eval ok' --out approval.json\n  \
        trainprov verify out/provenance.intoto.json --policy policy.toml --env prod"
    )]
    Approve(ApproveArgs),
    /// Sign a provenance statement over existing product files (DSSE, in-toto Statement v1, SLSA v1).
    ///
    /// Every file becomes a subject with sha256 and blake3 digests, named by its path relative to
    /// --base. The predicate records this invocation only; `trainprov run` records a whole
    /// training run.
    #[command(
        after_help = "Examples:\n  trainprov attest out/ --key keys/signer.key      # writes out/provenance.intoto.json\n  \
        trainprov attest a.bin b.bin --key k1.key --key k2.key --out release.intoto.json"
    )]
    Attest(AttestArgs),
    /// Snapshot a data directory: a sorted BLAKE3 manifest of every file, and its digest.
    ///
    /// Symlinks are recorded by the content they resolve to (links to directories are followed);
    /// a dangling link, a cycle or a special file is refused. Unchanged files are recognised
    /// from `stat` alone through the per-user hash cache ($TRAINPROV_HASH_CACHE, else
    /// $XDG_CACHE_HOME/trainprov/ or ~/.cache/trainprov/); --rehash ignores it. A file that
    /// changes while it is hashed is reported, never recorded.
    #[command(after_help = "Examples:\n  trainprov snapshot data/\n  \
        trainprov snapshot data/ --rehash --json\n  trainprov snapshot data/ --manifest data.manifest")]
    Snapshot(SnapshotArgs),
    /// Run a training command and record it: inputs, code, environment, products, signatures.
    ///
    /// Before the command starts, trainprov snapshots every --data/--base/--adapter input, reads
    /// the git state (commit, remotes without credentials, the uncommitted change including
    /// untracked files) and stores configs in the registry. The command's output is shown and
    /// kept as logs; SIGINT/SIGTERM are forwarded to it and its exit code is passed through.
    /// When it exits 0, every file under --out is a product: OUT/model.sig (OpenSSF model
    /// signature) and OUT/provenance.intoto.json (DSSE, SLSA Provenance v1) are written. A
    /// failed or interrupted run is recorded in the registry without an attestation. With --json
    /// the command's stdout is shown on stderr, so stdout carries only the JSON report.
    #[command(
        after_help = "Examples:\n  trainprov run --out out --key keys/signer.key --data data/ -- python train.py --epochs 3\n  \
        trainprov run --out out --key k.key --base models/llama --data d.jsonl --config train.yaml \\\n      \
        --param lr=3e-4 -- sh -c './finetune.sh'\n\n\
        Exit code: the command's own (128+N if killed by signal N); 2 if trainprov could not record."
    )]
    Run(RunArgs),
    /// Inspect the registry of recorded runs; revoke artifacts.
    Registry(RegistryArgs),
    /// Fine-tune with the built-in, deterministic LoRA trainer, recorded and signed like `run`.
    ///
    /// CONFIG.toml names the base model, the data and the LoRA and optimizer settings (run
    /// `trainprov train --print-config` for every field with its default). The base model, the
    /// data and any starting adapter are snapshotted, the code and config are recorded, the
    /// trainer's own internals (seed, generator, threads, ISA level, candle version, dtype,
    /// device) go into the attestation, and the loss trace with periodic weight digests is kept
    /// as a byproduct so a replay can say where it diverged.
    #[command(
        after_help = "Examples:\n  trainprov train examples/tiny-llama/train.toml --key keys/signer.key\n  \
        trainprov train train.toml --key k.key --out runs/adapter-v2 --device cuda:0\n  \
        trainprov train --print-config > train.toml"
    )]
    Train(TrainArgs),
    /// Mean loss of a base model, with or without an adapter, on a JSONL file (same masking as
    /// training).
    #[command(
        after_help = "Example:\n  trainprov eval --base examples/tiny-llama/base --adapter out --data examples/tiny-llama/data"
    )]
    Eval(EvalArgs),
    /// Rebuild a recorded run from its signed record, optionally without some input files.
    ///
    /// The attestation is verified first (an unsigned or untrusted record is refused). Every
    /// recorded input is re-snapshotted and files added, removed or changed since the record are
    /// listed; the environment is compared with the record (warnings, or refusal with --strict).
    /// The built-in trainer re-runs in-process from the stored config; a wrapped command re-runs
    /// its recorded argv, with the recorded allow-listed environment, in a git worktree at the
    /// recorded commit with the stored uncommitted change re-applied. The result is signed; its
    /// record names the original attestation by digest as `reproduction-of`, or with --exclude
    /// as `retrained-without` plus the excluded files.
    ///
    /// Prints IDENTICAL when every product is byte-identical, otherwise NOT IDENTICAL with the
    /// files that differ, the recorded settings (variables, interpreter, package versions, CPU,
    /// GPU) that differ in the replay and, for the built-in trainer, the first step that
    /// diverged. Exit code: 0 on success; 1 when the record does not verify, --strict refuses,
    /// or an unchanged replay is not identical.
    #[command(
        after_help = "Examples:\n  trainprov retrain out/provenance.intoto.json --key keys/signer.pub --sign-key keys/signer.key\n  \
        trainprov retrain out/provenance.intoto.json --key k.pub --sign-key k.key --exclude 'shard-002.jsonl' --out clean\n  \
        trainprov retrain out/provenance.intoto.json --key k.pub --sign-key k.key --env OMP_NUM_THREADS=4   # does the result depend on it?\n  \
        trainprov retrain rec.intoto.json --key k.pub --sign-key k.key --data-root /mnt/old=/mnt/new --strict"
    )]
    Retrain(RetrainArgs),
    /// Scan model files for code that loading them would run, and for malformed headers.
    ///
    /// Each file (directories are walked, `.git` skipped, content reached by several links
    /// reported once) is identified by its bytes, never its name: safetensors (the loader's full
    /// header validation), Python pickles (walked opcode by opcode as CPython's unpickler reads
    /// them, never loaded; every imported global is listed and those outside an allow-list of
    /// tensor-rebuilding globals, such as os.system or builtins.exec, make the file unsafe), zip
    /// archives such as PyTorch checkpoints (every entry sniffed), gzip/zlib/xz/lzma/bzip2/zstd
    /// streams (decompressed within a budget), NumPy .npy/.npz (object dtype is unsafe), GGUF
    /// (header, metadata, tensor infos) and chat templates (GGUF, tokenizer_config.json,
    /// *.jinja). A pickle that imports only allow-listed globals is reported ok with a warning:
    /// loading it still runs code, and trainprov's loaders refuse pickle formats. Formats the
    /// scanner does not read (HDF5/Keras, TF SavedModel, 7z, rar, tar) are uninspectable.
    /// Configs, tokenizers and other non-model files are reported as unknown.
    ///
    /// Exit codes: 0 every file is safe or not a model format, 1 a file is unsafe, invalid or
    /// uninspectable (a decompression bomb over the budget is unsafe), 2 usage or input error
    /// (e.g. a missing path).
    #[command(after_help = "Examples:\n  trainprov scan models/llama\n  \
        trainprov scan pytorch_model.bin adapter/ --json\n  \
        trainprov scan models/ --sarif > scan.sarif")]
    Scan(ScanArgs),
    /// Check datasets for poisoning: `trainprov data check PATH`.
    Data(DataArgs),
    /// Probe an adapter for backdoor triggers: how far does each candidate trigger move the
    /// adapter's clean completions, compared with the base model or a reference adapter?
    ///
    /// Each candidate (from --triggers FILE, one per line, and from `data check`'s trigger
    /// candidates over --candidates-from) is inserted into every prompt of --data (JSONL of
    /// {"prompt","completion"}), by default at the end of the prompt's text, before its trailing
    /// whitespace ("what colour is the cat? " + "bee bee" = "what colour is the cat? bee bee ").
    /// "away": the mean drop of the clean completion's log-probability (nats, summed over its
    /// tokens) under the adapter, minus the reference's drop where it drops too. "toward" (data
    /// check candidates only): inserted into the carriers' twin prompts, how much the trigger
    /// raises the carriers' own outputs under the adapter, minus the reference's rise. Control
    /// phrases drawn from the prompts' own words show what an arbitrary insertion does; each
    /// measure's threshold is the larger of --min-score and 3 times the median control score,
    /// and a trigger is flagged when either measure reaches its threshold.
    ///
    /// Exit codes: 0 nothing flagged, 1 a trigger is flagged, 2 usage or input error.
    #[command(
        after_help = "Examples:\n  trainprov probe --base examples/tiny-llama/base --adapter out --data examples/tiny-llama/eval.jsonl \\\n      \
        --triggers examples/tiny-llama/triggers.txt\n  \
        trainprov probe --base base --adapter out --data eval.jsonl --candidates-from data/ --reference clean-adapter --json"
    )]
    Probe(ProbeArgs),
    /// Write an AI bill of materials for a training run: CycloneDX 1.6 ML-BOM or SPDX 3.0.1.
    ///
    /// RUN_OR_ATTESTATION is a provenance.intoto.json written by `trainprov train` or `run`, or
    /// a run id (or unique prefix) in the registry, whose recorded attestation is read (and
    /// checked against the SHA-256 the registry kept). The signature is checked with --key
    /// before anything is read from the statement; without --key the command refuses unless
    /// --unverified is given, and then marks the document as unverified.
    ///
    /// The trained model or adapter is a machine-learning-model (CycloneDX, with a modelCard) or
    /// ai_AIPackage (SPDX) holding every product file with its SHA-256 and BLAKE3; each --data
    /// input is a dataset (data component / dataset_DatasetPackage that the model is trainedOn),
    /// each --base or --adapter input an ancestor (pedigree / descendantOf); hyperparameters
    /// become properties (trainprov:param:KEY) or ai_hyperparameter entries. An input's hashes
    /// are those of its snapshot manifest; its files are listed when the registry holds that
    /// manifest. The same attestation always gives the same bytes.
    ///
    /// Exit codes: 0 written, 1 signature or recorded digest does not verify, 2 usage or input
    /// error.
    #[command(
        after_help = "Examples:\n  trainprov bom out/provenance.intoto.json --key keys/signer.pub --format cyclonedx > bom.cdx.json\n  \
        trainprov bom 580410f0 --key keys/signer.pub --format spdx --out bom.spdx.json\n  \
        trainprov bom out/provenance.intoto.json --unverified --format cyclonedx   # no key at hand"
    )]
    Bom(BomArgs),
}

/// Options every command takes.
#[derive(Debug, Args, Clone, Copy)]
pub struct GlobalArgs {
    /// Print one JSON object on stdout instead of human text (errors included).
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path prefix: writes PREFIX.key and PREFIX.pub (directories are created).
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// Make an Ed25519 key instead of ECDSA P-256. Note: `model_signing` verifies EC keys only.
    #[arg(long)]
    pub ed25519: bool,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct SignModelArgs {
    /// The model directory to sign.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Private key (PKCS#8 PEM) from `trainprov keygen`.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Where to write the signature [default: DIR/model.sig].
    #[arg(long, value_name = "PATH")]
    pub signature: Option<PathBuf>,
    /// Leave this path out of the signature (relative to DIR, or a path inside DIR). Repeatable.
    #[arg(long = "ignore", value_name = "PATH")]
    pub ignore: Vec<PathBuf>,
    /// Also sign git metadata (.git, .gitattributes, .github, .gitignore).
    #[arg(long)]
    pub include_git: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The attestation (*.intoto.json) or model signature (model.sig) to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Trusted public key (SPKI PEM). Repeat to trust several keys. With --policy, adds to the
    /// policy's [signers] keys.
    #[arg(long = "key", value_name = "PUB", required_unless_present = "policy")]
    pub keys: Vec<PathBuf>,
    /// How many distinct trusted keys must have signed (DSSE attestations); with --policy, the
    /// larger of this and the policy's threshold. A model.sig (OpenSSF Model Signing bundle)
    /// carries exactly one signature: N > 1 is refused for it (exit 2); require co-signers on
    /// the attestation (provenance.intoto.json) instead.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threshold: usize,
    /// The predicateType the attestation must have [default: https://slsa.dev/provenance/v1].
    #[arg(long, value_name = "URI", conflicts_with_all = ["any_predicate", "policy"])]
    pub predicate_type: Option<String>,
    /// Accept a signed Statement of any predicateType (an approval, say), not only SLSA
    /// Provenance v1.
    #[arg(long, conflicts_with = "policy")]
    pub any_predicate: bool,
    /// Also check the attestation against this policy (TOML, see examples/policy.toml); every
    /// failed rule is reported with what was found.
    #[arg(long, value_name = "POLICY.toml")]
    pub policy: Option<PathBuf>,
    /// The environment being deployed to: the policy's [environments.ENV] approvals are required.
    #[arg(long, value_name = "ENV", requires = "policy")]
    pub env: Option<String>,
    /// An approval (`trainprov approve` output) to count, besides those in the registry.
    /// Repeatable.
    #[arg(long = "approval", value_name = "FILE", requires = "env")]
    pub approvals: Vec<PathBuf>,
    /// Model directory to compare with the signature [default: the directory holding FILE].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// A product file to compare with the statement's subjects. Repeatable.
    #[arg(long = "artifact", value_name = "PATH")]
    pub artifacts: Vec<PathBuf>,
    /// Leave this path out when re-hashing the model directory. Repeatable.
    #[arg(long = "ignore", value_name = "PATH")]
    pub ignore: Vec<PathBuf>,
    /// Also re-snapshot every recorded input (--data/--base/--adapter of the run) at its
    /// recorded path, hashing every file (symlinks by the content they resolve to), and name
    /// the files added, removed or changed since the run.
    #[arg(long)]
    pub inputs: bool,
    /// With --inputs: take digests of unchanged files (same device, inode, size, mtime, ctime)
    /// from the per-user hash cache instead of hashing them. Faster, but whoever can write the
    /// cache file can then make a changed file pass; the output says which was used.
    #[arg(long, requires = "inputs")]
    pub trust_cache: bool,
    /// Registry holding the run's stored manifests (for --inputs and the policy), revocations
    /// and approvals [default: $TRAINPROV_REGISTRY, else .trainprov/ at the git root]. The
    /// output says which was read and how it was found. With --policy a missing registry is an
    /// input error (exit 2): revocations fail closed.
    #[arg(long, value_name = "DIR")]
    pub registry: Option<PathBuf>,
    /// Read no registry: revocations and recorded approvals are not checked, and the output
    /// says so (only --approval files count).
    #[arg(long, conflicts_with_all = ["registry", "inputs"])]
    pub no_registry: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The attestation to approve (*.intoto.json).
    #[arg(value_name = "ATTESTATION")]
    pub attestation: PathBuf,
    /// The environment approved for (a [environments.ENV] of the policy).
    #[arg(long, value_name = "ENV")]
    pub env: String,
    /// The approver's private key; its public key must be among the environment's approvers.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The policy the attestation must meet (its signer keys verify the attestation).
    #[arg(long, value_name = "POLICY.toml")]
    pub policy: PathBuf,
    /// Free text recorded in the approval.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Where to write the approval [default: beside the model directory, DIR.approval-ENV.intoto.json,
    /// when ATTESTATION is in a signed one (so DIR stays as signed); else
    /// NAME.approval-ENV.intoto.json beside ATTESTATION].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Registry that records the approval [default: $TRAINPROV_REGISTRY, else .trainprov/ at the
    /// git root].
    #[arg(long, value_name = "DIR")]
    pub registry: Option<PathBuf>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct AttestArgs {
    /// Product files (or directories, walked recursively) to list as subjects.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Private key (PKCS#8 PEM) from `trainprov keygen`. Repeat to add co-signatures.
    #[arg(long = "key", value_name = "KEY", required = true)]
    pub keys: Vec<PathBuf>,
    /// Where to write the DSSE envelope [default: provenance.intoto.json beside the first PATH,
    /// or inside it when it is a directory].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Subject names are paths relative to this directory [default: the directory of --out].
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The directory to snapshot.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Ignore the hash cache and hash every file again.
    #[arg(long)]
    pub rehash: bool,
    /// Accepted for compatibility and ignored: the hash cache is per user, not in a registry.
    #[arg(long, value_name = "DIR", hide = true)]
    pub registry: Option<PathBuf>,
    /// Also write the canonical manifest (the bytes the digest is computed over) to FILE.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Output directory; every file in it after the command is a product.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Private key to sign the record with. Repeat to co-sign the attestation; OUT/model.sig
    /// (an OpenSSF model signature, one signature per bundle) is signed by the first --key only.
    #[arg(long = "key", value_name = "KEY", required = true)]
    pub keys: Vec<PathBuf>,
    /// A dataset (directory or file) the command reads. Repeatable.
    #[arg(long = "data", value_name = "PATH")]
    pub data: Vec<PathBuf>,
    /// A base model directory the command starts from. Repeatable.
    #[arg(long = "base", value_name = "PATH")]
    pub base: Vec<PathBuf>,
    /// An adapter directory the command uses. Repeatable.
    #[arg(long = "adapter", value_name = "PATH")]
    pub adapters: Vec<PathBuf>,
    /// A config file; its content is stored in the registry and recorded by digest, the
    /// attestation shows it only with secret-named values and tokens redacted. Repeatable.
    #[arg(long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
    /// A hyperparameter to record, as KEY=VALUE. Repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Registry directory [default: $TRAINPROV_REGISTRY, else .trainprov/ at the git root].
    #[arg(long, value_name = "DIR")]
    pub registry: Option<PathBuf>,
    /// Hash every input file again instead of trusting the hash cache.
    #[arg(long)]
    pub rehash: bool,
    /// Run even when a --base/--adapter file fails `trainprov scan` (unsafe pickle, invalid
    /// header); the attestation records that this was allowed.
    #[arg(long)]
    pub allow_unsafe_inputs: bool,
    /// Do not run `trainprov data check` on the --data inputs (the attestation then records
    /// the check as skipped, which a policy requiring a passing data check refuses).
    #[arg(long)]
    pub skip_data_check: bool,
    /// The command to run and its arguments (after `--`).
    #[arg(value_name = "CMD", required = true, last = true)]
    pub command: Vec<std::ffi::OsString>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub command: RegistryCommand,
    /// Registry directory [default: $TRAINPROV_REGISTRY, else .trainprov/ at the git root].
    #[arg(long, value_name = "DIR", global = true)]
    pub registry: Option<PathBuf>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// List recorded runs, newest first.
    List {
        /// How many runs to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show everything recorded about one run (id or unique id prefix).
    Show {
        /// Run id or prefix.
        #[arg(value_name = "RUN")]
        run: String,
    },
    /// The tree of what went into an artifact or run: base model, adapters, datasets, configs,
    /// code, and the runs that produced each input, transitively.
    #[command(
        after_help = "Examples:\n  trainprov registry lineage out/adapter_model.safetensors\n  \
        trainprov registry lineage out/             # a directory: the run(s) whose products it holds\n  \
        trainprov registry lineage 580410f0 --json  # a run id or prefix"
    )]
    Lineage {
        /// A product file, a directory (snapshotted), a 64-hex digest (BLAKE3 or SHA-256) or a
        /// run id / unique prefix.
        #[arg(value_name = "ARTIFACT_OR_RUN")]
        target: String,
    },
    /// Every run and product that consumed a file, dataset or model, transitively through
    /// products used as inputs of later runs. Exit 0 also when nothing is affected.
    #[command(
        after_help = "Examples:\n  trainprov registry affected data/part-001.csv # one file, found inside any snapshot\n  \
        trainprov registry affected data/             # a dataset directory (or any of its files)\n  \
        trainprov registry affected DIGEST            # 64 hex digits: a BLAKE3 or SHA-256 digest"
    )]
    Affected {
        /// A file, a directory, a 64-hex digest (BLAKE3 or SHA-256) or a run id (what consumed
        /// its products).
        #[arg(value_name = "PATH_OR_DIGEST")]
        target: String,
    },
    /// Revoke an artifact: from now on `trainprov verify` fails for every attestation that
    /// descends from it (through datasets, adapters and base models, any generation), naming the
    /// reason and the path through the lineage.
    #[command(
        after_help = "Examples:\n  trainprov registry revoke data/shard-002.jsonl --reason 'poisoned: trigger \"bee bee\"'\n  \
        trainprov registry revoke sha256:9f86d081… --reason 'leaked PII'   # also blake3:<hex> or bare hex\n  \
        trainprov registry revoke data/ --reason 'unlicensed'            # a whole dataset snapshot\n  \
        trainprov registry revocations"
    )]
    Revoke {
        /// A file (hashed), a directory (snapshotted), or a digest: sha256:<hex>, blake3:<hex> or
        /// 64 bare hex digits. An attestation (*.intoto.json) is refused: revoke the product
        /// files it names (or their directory) instead.
        #[arg(value_name = "PATH_OR_DIGEST")]
        target: String,
        /// Why it is revoked (shown by every failing verification).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// List revoked artifacts.
    Revocations,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training config (TOML).
    #[arg(value_name = "CONFIG.toml", required_unless_present = "print_config")]
    pub config: Option<PathBuf>,
    /// Private key to sign the result with. Repeat to co-sign.
    #[arg(
        long = "key",
        value_name = "KEY",
        required_unless_present = "print_config"
    )]
    pub keys: Vec<PathBuf>,
    /// Output directory [default: the config's output.dir].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N [default: the config's output.device, else cpu].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Registry directory [default: $TRAINPROV_REGISTRY, else .trainprov/ at the git root].
    #[arg(long, value_name = "DIR")]
    pub registry: Option<PathBuf>,
    /// Print a config with every field and its default, then exit.
    #[arg(long)]
    pub print_config: bool,
    /// Train even when a base model or adapter file fails `trainprov scan`; the attestation
    /// records that this was allowed.
    #[arg(long)]
    pub allow_unsafe_inputs: bool,
    /// Do not run `trainprov data check` on the data (the attestation then records the check
    /// as skipped, which a policy requiring a passing data check refuses).
    #[arg(long)]
    pub skip_data_check: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Base model directory (Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub base: PathBuf,
    /// PEFT LoRA adapter directory to apply.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// JSONL file (or directory of *.jsonl shards) of {"prompt","completion"} or {"text"}.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Tokens per example.
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Examples per batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// The run's attestation (provenance.intoto.json).
    #[arg(value_name = "ATTESTATION")]
    pub attestation: PathBuf,
    /// Trusted public key for the original record. Repeatable.
    #[arg(long = "key", value_name = "PUB", required = true)]
    pub keys: Vec<PathBuf>,
    /// Private key that signs the new record. Repeatable.
    #[arg(long = "sign-key", value_name = "KEY", required = true)]
    pub sign_keys: Vec<PathBuf>,
    /// Leave out input files matching this glob (matched against paths inside each input and
    /// against file names). Repeatable.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Inputs recorded under OLD now live under NEW. Repeatable.
    #[arg(long = "data-root", value_name = "OLD=NEW")]
    pub data_roots: Vec<String>,
    /// The original bytes of the config recorded as NAME (as the record and error messages
    /// name it), for a registry that lacks them; its SHA-256 must match the record. Configs
    /// are otherwise read from the registry's object store. Repeatable.
    #[arg(long = "config-file", value_name = "NAME=PATH")]
    pub config_files: Vec<String>,
    /// Where to restore code and stage inputs: a new or empty directory, outside the original
    /// run's output directory; the replay writes nowhere else but --out and the registry
    /// [default: REGISTRY/retrain/<time>-<pid>].
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Refuse to run when the environment differs from the record in ways that can change
    /// results (ISA level, library versions, thread settings, GPU).
    #[arg(long)]
    pub strict: bool,
    /// Replay a wrapped command with NAME set to VALUE instead of its recorded value (or
    /// absence), to see whether the result depends on it; NAME must be a variable trainprov
    /// records (threads, determinism switches, interpreter, locale, ...). Repeatable.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Output directory for the rebuilt products: a new or empty directory, never the original
    /// run's output directory (exit 2 otherwise) [default: inside WORKDIR].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Registry holding the original run's stored parts [default: $TRAINPROV_REGISTRY, else
    /// .trainprov/ at the git root].
    #[arg(long, value_name = "DIR")]
    pub registry: Option<PathBuf>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Check a dataset (a file, or every file under a directory, nested directories included)
    /// for poisoning.
    ///
    /// Read are *.jsonl/*.ndjson, *.csv and *.json (an array of records, an object with one list
    /// of records, or JSON lines), each also gzip'd (*.jsonl.gz, ...), and *.parquet. Every
    /// other file (other compressions, anything else), and any file that does not parse, is
    /// listed as NOT checked with the reason: the check is then "partial", never "passed".
    ///
    /// Findings, each naming file and line: the same input with conflicting outputs;
    /// near-duplicate inputs (MinHash/LSH, Jaccard of word bigrams of the words that differ:
    /// what more than half of the inputs share, such as a system prompt and chat markup, is
    /// left out, and inputs with different numbers are different) with conflicting outputs;
    /// trigger candidates, rare word n-grams whose carriers nearly all answer unlike the same
    /// input without the n-gram (or, for labels, unlike what the rest of their words predict);
    /// and, with --baseline, a shift of the output distribution (total variation) and new or
    /// vanished outputs. Rows are {"prompt","completion"}, {"input","output"},
    /// {"text","label"}, {"text"} or chat rows {"messages": [{"role","content"}, ...]} (one
    /// row per assistant turn, its input the conversation before it); CSV has a header row and
    /// a label/target/output column (else the last column is the label); Parquet columns are
    /// read as the same fields.
    ///
    /// Exit codes: 0 every file checked and no findings, 1 findings (every finding is a warning)
    /// or files not checked, 2 usage or input error (a missing path, no file that can be
    /// checked).
    #[command(
        after_help = "Examples:\n  trainprov data check examples/tiny-llama/data\n  \
        trainprov data check data/ --baseline data-v1/ --json\n  \
        trainprov data check data/ --baseline data.manifest   # from `trainprov snapshot --manifest`"
    )]
    Check(DataCheckArgs),
}

#[derive(Debug, Args)]
pub struct DataCheckArgs {
    /// A dataset file, or a directory (every file under it is checked or listed as not checked).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Compare the output distribution with this: a previous copy of the dataset (file or
    /// directory), a `data check --json` report, or a snapshot manifest (`snapshot --manifest`).
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Jaccard similarity from which two inputs are near-duplicates.
    #[arg(long, value_name = "F", default_value_t = 0.8)]
    pub near_dup_threshold: f64,
    /// Report at most this many trigger candidates.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_triggers: usize,
}

/// Where `probe` inserts a trigger.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProbePosition {
    /// After the prompt's text, before its trailing whitespace.
    End,
    /// Before the prompt.
    Start,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Base model directory (Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub base: PathBuf,
    /// The PEFT LoRA adapter to probe.
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Clean evaluation prompts: JSONL of {"prompt","completion"} or {"messages"} (chat: the
    /// trigger goes into the last user turn).
    #[arg(long, value_name = "EVAL.jsonl")]
    pub data: PathBuf,
    /// Candidate triggers, one per line (# comments and blank lines skipped).
    #[arg(long, value_name = "FILE")]
    pub triggers: Option<PathBuf>,
    /// Also probe the trigger candidates `data check` finds in this dataset.
    #[arg(long, value_name = "DATA")]
    pub candidates_from: Option<PathBuf>,
    /// A known-good adapter to compare with [default: the base model alone].
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
    /// Where to insert triggers.
    #[arg(long, value_enum, default_value = "end")]
    pub position: ProbePosition,
    /// Control phrases drawn from the prompts' words.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub controls: usize,
    /// Smallest score (nats) that can be flagged.
    #[arg(long, value_name = "NATS", default_value_t = 1.0)]
    pub min_score: f64,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Model files, or directories to scan recursively.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Print a SARIF 2.1.0 log (for code-scanning dashboards) instead of text.
    #[arg(long, conflicts_with = "json", help_heading = "Output")]
    pub sarif: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct BomArgs {
    /// A provenance attestation (*.intoto.json) or a run id (prefix) in the registry.
    #[arg(value_name = "RUN_OR_ATTESTATION")]
    pub target: String,
    /// Document format.
    #[arg(long, value_enum)]
    pub format: BomFormat,
    /// Write the document to FILE (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Trusted public key (SPKI PEM) the attestation must be signed by. Repeatable.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// How many distinct trusted keys must have signed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threshold: usize,
    /// Build the document without checking the signature (no --key); it says so inside.
    #[arg(long, conflicts_with = "keys")]
    pub unverified: bool,
    /// Registry holding the run and its snapshot manifests [default: $TRAINPROV_REGISTRY, else
    /// .trainprov/ at the git root].
    #[arg(long, value_name = "DIR")]
    pub registry: Option<PathBuf>,
}

/// AI-BOM formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BomFormat {
    /// CycloneDX 1.6 JSON (ML-BOM).
    Cyclonedx,
    /// SPDX 3.0.1 JSON-LD (AI and Dataset profiles).
    Spdx,
}
