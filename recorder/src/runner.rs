//! Recording a wrapped command from start to end, in three steps the CLI drives:
//!
//! 1. [`prepare`]: capture code, configs, lock files and input snapshots, store the small parts
//!    in the object store, and write the run row as `running` (one transaction).
//! 2. [`execute`]: run the command (teed, signals forwarded), then capture the environment and
//!    digest the products, giving a [`Finished`] run with its [`RunRecord`].
//! 3. [`finalize`]: after the caller has (or has not) signed the record, finalise the registry row
//!    with status, outputs and the attestation, in one transaction, and only then publish the
//!    signatures.
//!
//! **Interruption.** The caller signs into pending files ([`pending_path`]:
//! `OUT/.trainprov-pending-provenance.intoto.json` and `OUT/.trainprov-pending-model.sig`);
//! [`finalize`] renames them to their real names only after the registry row says `succeeded`.
//! A wrapper killed at any point before that leaves no signature under a name `verify` or
//! `model_signing` looks at, and a run shown as `abandoned`. [`prepare`] removes what such a
//! run left in `OUT` (an old attestation and model signature, pending files, and the temporary
//! files of [`crate::atomic`], all named `.trainprov-*`), and [`digest_products`] never counts
//! `.trainprov-*` files at the top of `OUT` as products.
//!
//! **The output directory** must not be, or contain, the working directory, the registry or a
//! git repository (`--out .` would sign `.git` and the registry): [`check_out_dir`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use attest::oms::SIGNATURE_FILE;
use serde_json::json;

use crate::environment;
use crate::file_digest::{digest_file, digest_files};
use crate::git::{capture_code, CodeState};
use crate::model_tree::{walk, TreeOptions};
use crate::objects::ObjectStore;
use crate::process::{run_teed_with_env, ChildOutcome, Screen};
use crate::record::{
    CodeRecord, InputRole, ModelWeights, RecordedFile, RecordedInput, RunRecord, RunResult,
    ATTESTATION_FILE, MAX_INLINE_CONFIG,
};
use crate::redact::redact_argv;
use crate::registry::{
    ArtifactLink, InputManifest, ManifestRow, NewRun, Registry, RunEnd, RunStatus,
};
use crate::snapshot::{snapshot, snapshot_file, DataSnapshot, EntryKind, SnapshotOptions};

/// Lock files recorded when found in the working directory or at the git root.
pub const LOCK_FILES: &[&str] = &[
    "Cargo.lock",
    "requirements.txt",
    "requirements.lock",
    "poetry.lock",
    "Pipfile.lock",
    "uv.lock",
    "pdm.lock",
    "environment.yml",
    "conda-lock.yml",
    "package-lock.json",
];

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// Output directory.
    pub out: PathBuf,
    /// Inputs by role, as given.
    pub inputs: Vec<(InputRole, PathBuf)>,
    /// Config files.
    pub configs: Vec<PathBuf>,
    /// `K=V` parameters.
    pub params: BTreeMap<String, String>,
    /// Ignore the hash cache.
    pub rehash: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Where the command's output is shown.
    pub screen: Screen,
    /// buildType to record.
    pub build_type: String,
    /// Registry `kind` column (`run`, `train`).
    pub kind: String,
    /// Component versions for the builder.
    pub versions: BTreeMap<String, String>,
    /// Working directory [default: the current directory].
    pub cwd: Option<PathBuf>,
    /// Environment changes for the command: `Some` sets, `None` removes.
    pub env: Vec<(String, Option<String>)>,
    /// Extra `resolvedDependencies` (e.g. the attestation a retrain reproduces).
    pub related: Vec<attest::statement::ResourceDescriptor>,
    /// Names to record for inputs and configs known by another name than their path (a
    /// retrain's inputs keep the names of the run it rebuilds, not those of its staged copies):
    /// path → name.
    pub input_names: BTreeMap<PathBuf, String>,
}

/// Errors while recording; each says which file or step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An input could not be snapshotted.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// The repository could not be read.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The object store failed.
    #[error(transparent)]
    Objects(#[from] crate::objects::ObjectError),
    /// The command could not be run.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// Walking the output directory failed.
    #[error(transparent)]
    Tree(#[from] crate::model_tree::TreeError),
    /// The output directory would sign what is not a product.
    #[error("{}: --out {reason}; choose a separate directory for the products, e.g. --out out", out.display())]
    OutDir {
        /// The output directory as given.
        out: PathBuf,
        /// What it contains.
        reason: String,
    },
}

/// Prefix of the names signatures are written under until [`finalize`] publishes them.
pub const PENDING_PREFIX: &str = ".trainprov-pending-";

/// Where a signature file (`OUT/provenance.intoto.json`, `OUT/model.sig`) is written before the
/// registry commit: `OUT/.trainprov-pending-<name>`.
pub fn pending_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{PENDING_PREFIX}{name}"))
}

/// trainprov's own files at the top of `out` (pending signatures, temporary files of an
/// interrupted atomic write): names starting with `.trainprov-`. Never products.
pub fn own_temp_files(out: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(crate::atomic::TEMP_PREFIX))
        .collect();
    names.sort();
    names
}

/// `path` made absolute, `.` and `..` removed, and its longest existing ancestor resolved
/// through symlinks.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normal = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    let mut existing = normal.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut real) = existing.canonicalize() {
            real.extend(rest.iter().rev());
            return real;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return normal,
        }
    }
}

/// Refuses an output directory whose signing would cover more than the products: one that is
/// or contains the working directory `cwd` (`--out .`, `--out ..`), contains the registry,
/// is or contains a git repository, or lies inside a `.git` directory.
pub fn check_out_dir(out: &Path, cwd: &Path, registry: &Path) -> Result<(), RunError> {
    let o = resolved(out);
    let refuse = |reason: &str| {
        Err(RunError::OutDir {
            out: out.to_path_buf(),
            reason: reason.to_string(),
        })
    };
    if resolved(cwd).starts_with(&o) {
        return refuse(
            "is or contains the working directory, so its code would be signed as products",
        );
    }
    if resolved(registry).starts_with(&o) {
        return refuse("contains the trainprov registry");
    }
    if o.components().any(|c| c.as_os_str() == ".git") {
        return refuse("is inside a .git directory");
    }
    if o.join(".git").exists() {
        return refuse("is the root of a git repository, so .git would be signed as a product");
    }
    Ok(())
}

/// A run whose inputs are captured and whose row says `running`.
#[derive(Debug)]
pub struct Prepared {
    record: RunRecord,
    argv: Vec<OsString>,
    cwd: PathBuf,
    out: PathBuf,
    screen: Screen,
    env: Vec<(String, Option<String>)>,
    started: std::time::Instant,
}

impl Prepared {
    /// The run id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Records how the weights of the (first) input of `role` are stored.
    pub fn set_weights(&mut self, role: InputRole, weights: ModelWeights) {
        if let Some(input) = self.record.inputs.iter_mut().find(|i| i.role == role) {
            input.weights = Some(weights);
        }
    }
}

/// A run whose command has ended.
#[derive(Debug)]
pub struct Finished {
    /// The full record (products only when the command succeeded).
    pub record: RunRecord,
    /// How the command ended.
    pub outcome: ChildOutcome,
    /// Absolute output directory.
    pub out: PathBuf,
}

/// The current time as RFC 3339 UTC (seconds).
pub fn now_rfc3339() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Stores a file in the object store and describes it (`inline`: keep small UTF-8 text for
/// `externalParameters`).
pub fn record_file(
    objects: &ObjectStore,
    name: &str,
    path: &Path,
    inline: bool,
) -> Result<RecordedFile, RunError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let object = objects.put(&bytes)?;
    let inline_text = if inline && bytes.len() <= MAX_INLINE_CONFIG {
        String::from_utf8(bytes.clone()).ok()
    } else {
        None
    };
    Ok(RecordedFile {
        name: name.to_string(),
        digest: attest::statement::digest_set_of(&bytes),
        size: bytes.len() as u64,
        object: Some(object),
        media_type: None,
        inline_text,
    })
}

/// Stores bytes in the object store and describes them as a recorded file.
pub fn record_bytes(
    objects: &ObjectStore,
    name: &str,
    bytes: &[u8],
    media_type: &str,
) -> Result<RecordedFile, RunError> {
    Ok(RecordedFile {
        name: name.to_string(),
        digest: attest::statement::digest_set_of(bytes),
        size: bytes.len() as u64,
        object: Some(objects.put(bytes)?),
        media_type: Some(media_type.to_string()),
        inline_text: None,
    })
}

fn link(kind: &str, role: &str, file: &RecordedFile, path: Option<&Path>) -> ArtifactLink {
    ArtifactLink {
        kind: kind.into(),
        role: role.into(),
        name: file.name.clone(),
        path: path.map(|p| p.display().to_string()),
        sha256: file.digest.get("sha256").cloned().unwrap_or_default(),
        blake3: file.digest.get("blake3").cloned().unwrap_or_default(),
        size: Some(file.size),
        object: file.object.clone(),
    }
}

/// Snapshots one input (directory or single file) through the per-user hash cache
/// ([`crate::hash_cache::default_path`]; with `rehash` its digests are not used). A cache file
/// inside `registry` is not used at all: a registry may be shared, the cache must not be.
pub fn snapshot_input(
    path: &Path,
    registry: &Registry,
    rehash: bool,
    progress: bool,
) -> Result<DataSnapshot, RunError> {
    let options = SnapshotOptions {
        rehash,
        cache: crate::hash_cache::default_path().filter(|cache| !cache.starts_with(registry.dir())),
        progress,
    };
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    Ok(if meta.is_dir() {
        snapshot(path, &options)?
    } else {
        snapshot_file(path, &options)?
    })
}

/// Manifest rows for the registry: regular files only, `(path, size, blake3)`.
pub fn manifest_rows(snapshot: &DataSnapshot) -> Vec<ManifestRow> {
    snapshot
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File))
        .map(|e| (e.path.clone(), e.size, e.blake3.clone()))
        .collect()
}

/// Step 1: capture everything known before the command runs and record the run as `running`.
pub fn prepare(spec: &RunSpec, registry: &mut Registry) -> Result<Prepared, RunError> {
    let started_on = now_rfc3339();
    let id = uuid::Uuid::new_v4().to_string();
    let cwd = match &spec.cwd {
        Some(dir) => std::path::absolute(dir).map_err(io_err(dir))?,
        None => std::env::current_dir().map_err(io_err(Path::new(".")))?,
    };
    let out = std::path::absolute(&spec.out).map_err(io_err(&spec.out))?;
    check_out_dir(&spec.out, &cwd, registry.dir())?;
    std::fs::create_dir_all(&out).map_err(io_err(&out))?;
    remove_stale_attestation(&out)?;
    let objects = registry.objects().clone();

    let mut exclude: Vec<PathBuf> = vec![out.clone(), registry.dir().to_path_buf()];
    exclude.extend(spec.inputs.iter().map(|(_, p)| p.clone()));
    let code = capture_code(&cwd, &exclude)?
        .map(|state| code_record(state, &objects))
        .transpose()?;

    let mut links = Vec::new();
    let mut configs = Vec::new();
    for config in &spec.configs {
        let name = spec
            .input_names
            .get(config)
            .cloned()
            .unwrap_or_else(|| config.display().to_string());
        let file = record_file(&objects, &name, config, true)?;
        links.push(link("config", "input:config", &file, Some(config)));
        configs.push(file);
    }
    let lock_files = find_lock_files(
        &cwd,
        code.as_ref().map(|c| c.state.root.as_path()),
        &objects,
    )?;
    links.extend(
        lock_files
            .iter()
            .map(|f| link("lockfile", "input:lockfile", f, None)),
    );
    if let Some(patch) = code.as_ref().and_then(|c| c.patch.as_ref()) {
        links.push(link("code-diff", "input:code", patch, None));
    }

    let mut inputs = Vec::new();
    let mut manifests = Vec::new();
    for (role, path) in &spec.inputs {
        let snap = snapshot_input(path, registry, spec.rehash, spec.progress)?;
        let manifest_object = objects.put(&snap.manifest_bytes())?;
        let absolute = std::path::absolute(path).map_err(io_err(path))?;
        let input = RecordedInput {
            role: *role,
            given: spec
                .input_names
                .get(path)
                .cloned()
                .unwrap_or_else(|| path.display().to_string()),
            path: absolute.display().to_string(),
            digest: snap.digest_set(),
            manifest_object: manifest_object.clone(),
            files: snap.entries.len(),
            bytes: snap.entries.iter().map(|e| e.size).sum(),
            content_digest: snap.content_digest_set(),
            hub: crate::hub_cache::HubRef::from_path(path),
            weights: None,
        };
        links.push(ArtifactLink {
            kind: role.artifact_kind().into(),
            role: format!("input:{}", role.name()),
            name: input.given.clone(),
            path: Some(input.path.clone()),
            sha256: snap.manifest_sha256(),
            blake3: snap.digest(),
            size: Some(input.bytes),
            object: Some(manifest_object),
        });
        manifests.push(InputManifest {
            snapshot: snap.digest(),
            files: manifest_rows(&snap),
        });
        inputs.push(input);
    }

    let argv_text: Vec<String> = spec
        .argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let record = RunRecord {
        id: id.clone(),
        build_type: spec.build_type.clone(),
        argv: redact_argv(&argv_text),
        cwd: cwd.display().to_string(),
        out: spec.out.display().to_string(),
        params: spec.params.clone(),
        configs,
        lock_files,
        code,
        inputs,
        internal: serde_json::Value::Null,
        started_on: started_on.clone(),
        finished_on: String::new(),
        result: RunResult {
            exit_code: None,
            signal: None,
            wall_seconds: 0.0,
            peak_rss_bytes: None,
        },
        products: Vec::new(),
        byproducts: Vec::new(),
        versions: spec.versions.clone(),
        related: spec.related.clone(),
    };
    registry.begin_run(&NewRun {
        id,
        kind: spec.kind.clone(),
        argv: record.argv.clone(),
        cwd: record.cwd.clone(),
        out_dir: Some(out.display().to_string()),
        started_at: started_on,
        git_commit: record.code.as_ref().and_then(|c| c.state.commit.clone()),
        git_dirty: record.code.as_ref().map(|c| c.state.dirty),
        inputs: links,
        manifests,
    })?;
    Ok(Prepared {
        record,
        argv: spec.argv.clone(),
        cwd,
        out,
        screen: spec.screen,
        env: spec.env.clone(),
        started: std::time::Instant::now(),
    })
}

/// A previous run's attestation in `out` would describe other products, and files an
/// interrupted run left (pending signatures, temporary files) would become products: remove them
/// before the command runs (the old run stays in the registry).
fn remove_stale_attestation(out: &Path) -> Result<(), RunError> {
    let mut names = vec![ATTESTATION_FILE.to_string(), SIGNATURE_FILE.to_string()];
    names.extend(own_temp_files(out));
    for name in names {
        let path = out.join(name);
        if path.is_file() {
            eprintln!(
                "trainprov: removing {} left by an earlier run",
                path.display()
            );
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

fn code_record(state: CodeState, objects: &ObjectStore) -> Result<CodeRecord, RunError> {
    let patch = if state.patch.is_empty() {
        None
    } else {
        Some(record_bytes(
            objects,
            "uncommitted.patch",
            &state.patch,
            "text/x-diff",
        )?)
    };
    Ok(CodeRecord { state, patch })
}

fn find_lock_files(
    cwd: &Path,
    git_root: Option<&Path>,
    objects: &ObjectStore,
) -> Result<Vec<RecordedFile>, RunError> {
    let mut dirs = vec![cwd.to_path_buf()];
    if let Some(root) = git_root.filter(|r| *r != cwd) {
        dirs.push(root.to_path_buf());
    }
    let mut found = Vec::new();
    for dir in dirs {
        for name in LOCK_FILES {
            let path = dir.join(name);
            if path.is_file() {
                let shown = path
                    .strip_prefix(cwd)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                found.push(record_file(objects, &shown, &path, false)?);
            }
        }
    }
    Ok(found)
}

/// Step 2: run the command, then capture the environment, logs and (on success) the products.
pub fn execute(prepared: Prepared, registry: &Registry) -> Result<Finished, RunError> {
    let log_dir = registry.run_dir(prepared.id());
    let outcome = run_teed_with_env(
        &prepared.argv,
        &prepared.cwd,
        &log_dir,
        prepared.screen,
        &prepared.env,
    )?;
    complete(prepared, registry, outcome)
}

/// Step 2 for work that ran some other way (the built-in trainer runs in-process): record the
/// environment, the logs named in `outcome` and, on success, the products.
pub fn complete(
    prepared: Prepared,
    registry: &Registry,
    outcome: ChildOutcome,
) -> Result<Finished, RunError> {
    let Prepared {
        mut record,
        argv,
        cwd,
        out,
        env: env_changes,
        started,
        ..
    } = prepared;
    let log_dir = registry.run_dir(&record.id);
    record.finished_on = now_rfc3339();
    let wall_seconds = started
        .elapsed()
        .as_secs_f64()
        .max(outcome.wall.as_secs_f64());
    record.result = RunResult {
        exit_code: outcome.exit_code,
        signal: outcome.signal.or(outcome.forwarded_signal),
        wall_seconds,
        peak_rss_bytes: outcome.peak_rss_bytes,
    };
    let objects = registry.objects();
    // Probes run only now, so that they do not count towards the child's peak RSS. The
    // variables recorded are the ones the command saw: this process's with the changes it
    // was started with (a replay's restored settings).
    let mut env = environment::capture();
    environment::apply_env_changes(&mut env.env, &env_changes);
    let mut freeze = None;
    if let Some(program) = argv.first().map(|a| a.to_string_lossy().into_owned()) {
        if environment::looks_like_python(&program) {
            if let Some(python) =
                environment::capture_python_as_run(&program, Some(&cwd), &env_changes)
            {
                env.python = Some(python.info.clone());
                freeze = python.pip_freeze;
            }
        }
    }
    record.internal = internal_parameters(&env);
    let env_json = serde_json::to_vec_pretty(&env).unwrap_or_default();
    record.byproducts.push(record_bytes(
        objects,
        "environment.json",
        &env_json,
        "application/json",
    )?);
    if let Some(freeze) = freeze {
        record.byproducts.push(record_bytes(
            objects,
            "pip-freeze.txt",
            freeze.as_bytes(),
            "text/plain",
        )?);
    }
    for (name, path) in [
        ("stdout.log", &outcome.stdout_log),
        ("stderr.log", &outcome.stderr_log),
    ] {
        let mut file = record_file(objects, name, path, false)?;
        file.media_type = Some("text/plain".into());
        record.byproducts.push(file);
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    if outcome.succeeded() {
        record.products = digest_products(&out)?;
    }
    Ok(Finished {
        record,
        outcome,
        out,
    })
}

/// Digests every file under `out` except the attestation and model signature, and trainprov's own
/// temporary files ([`own_temp_files`]),by the rules of
/// [`crate::model_tree`] that `model.sig` is signed by, so the two always list the same files: a
/// symlink is recorded by the content it resolves to, a link to a directory inside `out` (say
/// `latest -> ckpt-1`) is followed and its files listed under the link's path, and a link back
/// to a directory above it is skipped.
pub fn digest_products(out: &Path) -> Result<Vec<RecordedFile>, RunError> {
    let mut ignore = vec![ATTESTATION_FILE.to_string(), SIGNATURE_FILE.to_string()];
    ignore.extend(own_temp_files(out));
    let options = TreeOptions {
        ignore,
        ignore_git: false,
        ..TreeOptions::default()
    };
    let walked = walk(out, &options)?;
    let paths: Vec<PathBuf> = walked.entries.iter().map(|e| e.path.clone()).collect();
    let mut products = Vec::with_capacity(paths.len());
    for (entry, digests) in walked.entries.iter().zip(digest_files(&paths)) {
        let digests = digests.map_err(io_err(&entry.path))?;
        products.push(RecordedFile {
            name: entry.relative.as_str().to_string(),
            digest: digests.to_digest_set(),
            size: digests.size,
            object: None,
            media_type: None,
            inline_text: None,
        });
    }
    products.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(products)
}

/// What the platform decided: thread and determinism settings (the result-affecting subset of
/// the allow-listed environment), CPU ISA level and core count, and the device.
fn internal_parameters(env: &environment::Environment) -> serde_json::Value {
    let settings: BTreeMap<&String, &String> = env
        .env
        .iter()
        .filter(|(name, _)| {
            environment::RESULT_AFFECTING_ENV
                .iter()
                .any(|entry| match entry.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name.as_str() == *entry,
                })
        })
        .collect();
    let device = if env.gpu.devices.is_empty() {
        json!("cpu")
    } else {
        json!(env.gpu.devices)
    };
    json!({
        "environment": settings,
        "logicalCores": env.cpu.logical_cores,
        "isaLevel": env.cpu.isa_level,
        "device": device,
    })
}

/// Step 3: finalise the registry row, then publish the signatures. `attestation` is the
/// attestation's path and SHA-256 when the run succeeded and was signed; the caller has written
/// it, and `OUT/model.sig` if any, at their [`pending_path`]s, which are renamed to the real
/// names only after the registry transaction has committed.
pub fn finalize(
    registry: &mut Registry,
    finished: &Finished,
    attestation: Option<(PathBuf, String)>,
) -> Result<(), RunError> {
    let status = if finished.outcome.succeeded() && attestation.is_some() {
        RunStatus::Succeeded
    } else if finished.outcome.interrupted() {
        RunStatus::Interrupted
    } else {
        RunStatus::Failed
    };
    let mut outputs: Vec<ArtifactLink> = finished
        .record
        .products
        .iter()
        .map(|p| link("file", "output", p, Some(&finished.out.join(&p.name))))
        .collect();
    outputs.extend(
        finished
            .record
            .byproducts
            .iter()
            .map(|b| link("byproduct", "byproduct", b, None)),
    );
    if let Some((path, _)) = &attestation {
        if let Ok(d) = digest_file(&pending_path(path)).or_else(|_| digest_file(path)) {
            let file = RecordedFile {
                name: ATTESTATION_FILE.into(),
                digest: d.to_digest_set(),
                size: d.size,
                object: None,
                media_type: None,
                inline_text: None,
            };
            outputs.push(link("attestation", "attestation", &file, Some(path)));
        }
    }
    let end = RunEnd {
        status: Some(status),
        finished_at: finished.record.finished_on.clone(),
        exit_code: finished.outcome.exit_code,
        signal: finished
            .outcome
            .signal
            .or(finished.outcome.forwarded_signal),
        wall_seconds: finished.record.result.wall_seconds,
        peak_rss_bytes: finished.outcome.peak_rss_bytes,
        outputs,
        attestation_path: attestation.as_ref().map(|(p, _)| p.display().to_string()),
        attestation_sha256: attestation.as_ref().map(|(_, d)| d.clone()),
        record_json: serde_json::to_string(&finished.record).ok(),
    };
    registry.finish_run(&finished.record.id, &end)?;
    if let Some((path, _)) = &attestation {
        publish(&[finished.out.join(SIGNATURE_FILE), path.clone()])?;
    }
    Ok(())
}

/// Renames each file's [`pending_path`] (where present) to the file, in order, then syncs the
/// directories.
fn publish(paths: &[PathBuf]) -> Result<(), RunError> {
    for path in paths {
        let pending = pending_path(path);
        if pending.is_file() {
            std::fs::rename(&pending, path).map_err(io_err(path))?;
            if let Some(dir) = path.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
        }
    }
    Ok(())
}

/// Marks a run that could not be executed (e.g. the command was not found) as failed.
pub fn mark_failed(
    registry: &mut Registry,
    id: &str,
    exit_code: Option<i32>,
) -> Result<(), RunError> {
    let end = RunEnd {
        status: Some(RunStatus::Failed),
        finished_at: now_rfc3339(),
        exit_code,
        ..RunEnd::default()
    };
    registry.finish_run(id, &end)?;
    Ok(())
}
