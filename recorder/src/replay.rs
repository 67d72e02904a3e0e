//! Replaying a run from its record: restoring the code, preparing inputs (with exclusions),
//! comparing the replay with the original, and finding the first step that diverged.
//!
//! The record is the signed Statement (`provenance.intoto.json`, already verified by the caller)
//! plus the objects its `object` / `manifestObject` annotations name in the registry's store.
//!
//! # Confinement
//!
//! A replay writes only inside its work directory ([`ReplayRoot`]) and the output directory the
//! user names; it never writes to the original run's output directory, attestation, configs,
//! inputs or repository ([`Originals`]). Every path the record names that the replay writes is
//! mapped into the work directory by [`ReplayRoot::map_recorded`]:
//!
//! | recorded path | replayed at |
//! |---|---|
//! | relative (`out`, `../x/train.toml`), from the recorded working directory | the same place relative to the working directory inside the restored code, if that stays inside the work directory; otherwise [`ConfineError::Escape`] |
//! | absolute, inside the recorded repository | the same place inside the restored code |
//! | absolute, elsewhere | a fixed place inside the work directory (`out/`, `external/config-N/NAME`) |
//!
//! Arguments of the recorded command that spell an original absolutely are rewritten to the
//! replayed place ([`rewrite_argv`]); an output directory named inside a longer argument is
//! refused ([`ConfineError::Embedded`]). A symbolic link on the way that leads out of the work
//! directory is refused ([`ConfineError::Symlink`]); a link at the written path itself (a
//! committed `out -> /release` link, say) is replaced by a real directory or file
//! ([`ReplayRoot::prepare_write`]). The code is restored with `git clone --shared`, which only
//! reads the original repository (a `git worktree` would register itself in it).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use attest::statement::ResourceDescriptor;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use serde_json::Value;

use crate::objects::ObjectStore;
use crate::record::RecordedFile;
use crate::snapshot::{DataSnapshot, SnapshotDiff};

/// Errors while preparing a replay; each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The recorded commit is not in the repository.
    #[error(
        "commit {commit} is not in the repository at {}; fetch it first (`git fetch origin {commit}` \
         or `git fetch --all`) and retry",
        repo.display()
    )]
    MissingCommit {
        /// The commit.
        commit: String,
        /// The repository searched.
        repo: PathBuf,
    },
    /// A git command failed.
    #[error("git {args} failed in {}: {stderr}", dir.display())]
    Git {
        /// The arguments.
        args: String,
        /// Where.
        dir: PathBuf,
        /// git's message.
        stderr: String,
    },
    /// A recorded input is gone.
    #[error(
        "{}: recorded {role} input is missing; restore it, or point to its new location with \
         --data-root {}=NEW_DIR",
        path.display(), path.display()
    )]
    MissingInput {
        /// Role (`data`, `base`, `adapter`).
        role: String,
        /// Where it was recorded.
        path: PathBuf,
    },
    /// An object the record names is not in this registry.
    #[error(transparent)]
    Object(#[from] crate::objects::ObjectError),
    /// A bad `--exclude` pattern.
    #[error("--exclude '{pattern}': {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// globset's message.
        message: String,
    },
    /// An OS error.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The record lacks something the replay needs.
    #[error("the record has no {0}; it was not made by `trainprov run` or `trainprov train`")]
    Incomplete(&'static str),
    /// A config's original bytes are neither in this registry nor given with `--config-file`.
    #[error(
        "config {name} (sha256 {sha256}) is not in this registry's object store{}; pass the \
         original file with --config-file {name}=PATH (its SHA-256 must be {sha256})",
        redacted_note(redacted)
    )]
    MissingConfig {
        /// The config's recorded name.
        name: String,
        /// SHA-256 of its original bytes.
        sha256: String,
        /// What the record's shown content hides.
        redacted: Vec<String>,
    },
    /// A `--config-file` does not hold the recorded bytes.
    #[error(
        "{}: SHA-256 {actual} does not match the recorded config {name} ({expected}); pass the \
         file the run used",
        path.display()
    )]
    ConfigMismatch {
        /// The config's recorded name.
        name: String,
        /// The file given.
        path: PathBuf,
        /// The recorded SHA-256.
        expected: String,
        /// The file's SHA-256.
        actual: String,
    },
    /// A `--config-file NAME=…` names no recorded config.
    #[error(
        "--config-file {name}=...: the record has no config named {name} (recorded: {recorded})"
    )]
    UnknownConfig {
        /// The name given.
        name: String,
        /// The recorded names, comma-separated.
        recorded: String,
    },
    /// The replay would write outside its work directory or over the original.
    #[error(transparent)]
    Confine(#[from] ConfineError),
}

fn redacted_note(redacted: &[String]) -> String {
    if redacted.is_empty() {
        String::new()
    } else {
        format!(
            " and the record shows it with {} redacted",
            redacted.join(", ")
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A recorded input (`--data`, `--base`, `--adapter`) as the Statement describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedInputRef {
    /// `data`, `base` or `adapter`.
    pub role: String,
    /// Name as given at record time.
    pub given: String,
    /// Absolute path at record time.
    pub path: PathBuf,
    /// Snapshot BLAKE3 digest.
    pub blake3: String,
    /// Object holding the manifest.
    pub manifest_object: Option<String>,
}

/// The inputs a Statement's `resolvedDependencies` record.
pub fn recorded_inputs(predicate: &Value) -> Vec<RecordedInputRef> {
    dependencies(predicate)
        .iter()
        .filter_map(|dep| {
            let role = dep["annotations"]["role"].as_str()?.to_string();
            let path = crate::redact::recorded_path(dep["uri"].as_str()?)?;
            let name = dep["name"].as_str().unwrap_or_default();
            Some(RecordedInputRef {
                given: name
                    .split_once(':')
                    .map(|(_, g)| g.to_string())
                    .unwrap_or_default(),
                role,
                path,
                blake3: dep["digest"]["blake3"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                manifest_object: dep["annotations"]["manifestObject"]
                    .as_str()
                    .map(str::to_string),
            })
        })
        .collect()
}

/// A config the record names (`config:NAME` in `resolvedDependencies`, shown under
/// `externalParameters.configs.NAME`; see `crate::record`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedConfigRef {
    /// Recorded name (the path as given, `~/…` under the home directory).
    pub name: String,
    /// SHA-256 of the original bytes.
    pub sha256: String,
    /// BLAKE3 object holding the original bytes.
    pub object: Option<String>,
    /// Keys (or lines) the shown content hides.
    pub redacted: Vec<String>,
    /// The shown content, when the record has one.
    #[serde(skip)]
    pub shown: Option<String>,
}

/// The configs a Statement records, in `resolvedDependencies` order.
pub fn recorded_configs(predicate: &Value) -> Vec<RecordedConfigRef> {
    let shown = &predicate["buildDefinition"]["externalParameters"]["configs"];
    dependencies(predicate)
        .iter()
        .filter_map(|dep| {
            let name = dep["name"].as_str()?.strip_prefix("config:")?.to_string();
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            Some(RecordedConfigRef {
                sha256: dep["digest"]["sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object: dep["annotations"]["object"].as_str().map(str::to_string),
                redacted: strings(&dep["annotations"]["redacted"]),
                shown: shown[&name]["content"].as_str().map(str::to_string),
                name,
            })
        })
        .collect()
}

/// Checks that every `--config-file NAME=PATH` names a recorded config.
pub fn check_supplied_configs(
    configs: &[RecordedConfigRef],
    supplied: &[(String, PathBuf)],
) -> Result<(), ReplayError> {
    for (name, _) in supplied {
        if !configs.iter().any(|c| supplied_for(c, name)) {
            return Err(ReplayError::UnknownConfig {
                name: name.clone(),
                recorded: configs
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

/// Whether `--config-file NAME=…` means this config: the recorded name, or the recorded name
/// with `~` expanded (a shell expands `~/x.yaml=PATH`).
fn supplied_for(config: &RecordedConfigRef, name: &str) -> bool {
    config.name == name || crate::redact::expand_home_dir(&config.name) == name
}

fn sha256_hex(bytes: &[u8]) -> String {
    attest::statement::digest_set_of(bytes)
        .get("sha256")
        .cloned()
        .unwrap_or_default()
}

/// The original bytes of a recorded config, from the first source that has them:
/// 1. a `--config-file NAME=PATH` the user gave (its SHA-256 must match the record);
/// 2. the registry's object store (the `object` annotation; content-addressed, so checked);
/// 3. the record's own shown `content`, when its SHA-256 is the recorded one (nothing was
///    redacted), so a record copied to another host without its registry still replays.
///
/// Otherwise [`ReplayError::MissingConfig`] names the config, its SHA-256, what was redacted
/// and the `--config-file` option to pass.
pub fn config_bytes(
    config: &RecordedConfigRef,
    objects: &ObjectStore,
    supplied: &[(String, PathBuf)],
) -> Result<Vec<u8>, ReplayError> {
    if let Some((_, path)) = supplied.iter().find(|(n, _)| supplied_for(config, n)) {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let actual = sha256_hex(&bytes);
        if actual != config.sha256 {
            return Err(ReplayError::ConfigMismatch {
                name: config.name.clone(),
                path: path.clone(),
                expected: config.sha256.clone(),
                actual,
            });
        }
        return Ok(bytes);
    }
    if let Some(bytes) = config.object.as_deref().and_then(|o| objects.get(o).ok()) {
        if sha256_hex(&bytes) == config.sha256 {
            return Ok(bytes);
        }
    }
    if let Some(shown) = &config.shown {
        if sha256_hex(shown.as_bytes()) == config.sha256 {
            return Ok(shown.clone().into_bytes());
        }
    }
    Err(ReplayError::MissingConfig {
        name: config.name.clone(),
        sha256: config.sha256.clone(),
        redacted: config.redacted.clone(),
    })
}

/// `resolvedDependencies` of a provenance predicate.
pub fn dependencies(predicate: &Value) -> Vec<Value> {
    predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Applies `--data-root OLD=NEW` remappings (longest matching prefix wins).
pub fn remap(path: &Path, roots: &[(PathBuf, PathBuf)]) -> PathBuf {
    roots
        .iter()
        .filter(|(old, _)| path.starts_with(old))
        .max_by_key(|(old, _)| old.as_os_str().len())
        .and_then(|(old, new)| path.strip_prefix(old).ok().map(|rest| new.join(rest)))
        .unwrap_or_else(|| path.to_path_buf())
}

/// The recorded manifest of an input, when the registry has it.
pub fn recorded_snapshot(input: &RecordedInputRef, objects: &ObjectStore) -> Option<DataSnapshot> {
    let bytes = objects.get(input.manifest_object.as_deref()?).ok()?;
    DataSnapshot::from_manifest_bytes(input.path.clone(), &bytes).ok()
}

/// How an input looks now compared with the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputCheck {
    /// The input.
    pub input: RecordedInputRef,
    /// Where it was read now.
    pub now_at: PathBuf,
    /// Digest now.
    pub blake3_now: String,
    /// Files added/removed/changed since the record (empty when identical; `None` when the
    /// recorded manifest is not in this registry and only the digests can be compared).
    pub diff: Option<SnapshotDiff>,
}

impl InputCheck {
    /// Same digest as recorded.
    pub fn unchanged(&self) -> bool {
        self.blake3_now == self.input.blake3
    }
}

/// Compares an input's current snapshot with the record.
pub fn check_input(
    input: &RecordedInputRef,
    now_at: &Path,
    now: &DataSnapshot,
    objects: &ObjectStore,
) -> InputCheck {
    let diff = recorded_snapshot(input, objects).map(|then| then.diff(now));
    InputCheck {
        input: input.clone(),
        now_at: now_at.to_path_buf(),
        blake3_now: now.digest(),
        diff,
    }
}

/// Compiled `--exclude` patterns, matched against paths relative to an input's root and
/// against file names.
#[derive(Debug, Clone)]
pub struct Exclusions {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Exclusions {
    /// Compiles the patterns.
    pub fn new(patterns: &[String]) -> Result<Exclusions, ReplayError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = Glob::new(pattern).map_err(|e| ReplayError::Pattern {
                pattern: pattern.clone(),
                message: e.to_string(),
            })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| ReplayError::Pattern {
            pattern: patterns.join(" "),
            message: e.to_string(),
        })?;
        Ok(Exclusions {
            patterns: patterns.to_vec(),
            set,
        })
    }

    /// No patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `relative` (a path inside an input) is excluded.
    pub fn matches(&self, relative: &str) -> bool {
        let name = relative.rsplit('/').next().unwrap_or(relative);
        self.set.is_match(relative) || self.set.is_match(name)
    }
}

/// Copies the files of `snapshot` (rooted at `src`) to `dst`, leaving out excluded files.
/// Returns the excluded paths (relative).
pub fn filtered_copy(
    snapshot: &DataSnapshot,
    src: &Path,
    dst: &Path,
    exclusions: &Exclusions,
) -> Result<Vec<String>, ReplayError> {
    let mut excluded = Vec::new();
    let single_file = src.is_file();
    for entry in &snapshot.entries {
        if exclusions.matches(&entry.path) {
            excluded.push(entry.path.clone());
            continue;
        }
        let from = if single_file {
            src.to_path_buf()
        } else {
            src.join(&entry.path)
        };
        let to = dst.join(&entry.path);
        if let Some(parent) = to.parent() {
            fs_err::create_dir_all(parent).map_err(io(parent))?;
        }
        fs_err::copy(&from, &to).map_err(io(&from))?;
    }
    Ok(excluded)
}

/// Restores the recorded code into `workdir` (a new directory inside the replay's work
/// directory): a `git clone --shared` of the repository checked out at the recorded commit, with
/// the stored uncommitted change re-applied and the original's remotes. The original repository
/// is only read. Returns `workdir`.
pub fn restore_code(
    predicate: &Value,
    objects: &ObjectStore,
    repo_hint: &Path,
    workdir: &Path,
) -> Result<PathBuf, ReplayError> {
    let deps = dependencies(predicate);
    let code = deps
        .iter()
        .find(|d| d["name"] == "code")
        .ok_or(ReplayError::Incomplete("code dependency"))?;
    let commit = code["digest"]["gitCommit"]
        .as_str()
        .ok_or(ReplayError::Incomplete("git commit"))?;
    let recorded_root = code["annotations"]["root"]
        .as_str()
        .and_then(crate::redact::recorded_path);
    let repo = recorded_root
        .filter(|r| r.join(".git").exists())
        .unwrap_or_else(|| repo_hint.to_path_buf());
    let exists = git(&repo, &["cat-file", "-e", &format!("{commit}^{{commit}}")]).is_ok();
    if !exists {
        return Err(ReplayError::MissingCommit {
            commit: commit.to_string(),
            repo,
        });
    }
    if let Some(parent) = workdir.parent() {
        fs_err::create_dir_all(parent).map_err(io(parent))?;
    }
    let source = repo.to_string_lossy().into_owned();
    let target = workdir.to_string_lossy().into_owned();
    git(
        &repo,
        &[
            "clone",
            "--quiet",
            "--shared",
            "--no-checkout",
            "--",
            &source,
            &target,
        ],
    )?;
    git(workdir, &["checkout", "--quiet", "--detach", commit])?;
    copy_remotes(&repo, workdir)?;
    if let Some(patch) = deps.iter().find(|d| d["name"] == "code:uncommitted.patch") {
        let object = patch["annotations"]["object"]
            .as_str()
            .ok_or(ReplayError::Incomplete("patch object"))?;
        let bytes = objects.get(object)?;
        let patch_file = workdir.join(".trainprov-uncommitted.patch");
        fs_err::write(&patch_file, &bytes).map_err(io(&patch_file))?;
        let applied = git(
            workdir,
            &[
                "apply",
                "--binary",
                "--whitespace=nowarn",
                ".trainprov-uncommitted.patch",
            ],
        );
        let _ = fs_err::remove_file(&patch_file);
        applied?;
    }
    Ok(workdir.to_path_buf())
}

/// Gives the clone the original's remotes (the clone's own `origin` would name the local path).
fn copy_remotes(repo: &Path, clone: &Path) -> Result<(), ReplayError> {
    git(clone, &["remote", "remove", "origin"])?;
    for name in git(repo, &["remote"])?.lines().map(str::trim) {
        if name.is_empty() {
            continue;
        }
        let url = git(repo, &["remote", "get-url", name])?;
        git(clone, &["remote", "add", name, url.trim()])?;
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<String, ReplayError> {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|source| ReplayError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        return Err(ReplayError::Git {
            args: args.join(" "),
            dir: dir.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A replay that would write outside its work directory, or over the original run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// A recorded relative path climbs out of the work directory with `..`.
    #[error(
        "{}: the recorded {what} path leaves the replay's work directory {} (too many `..`); \
         retrain writes only inside its work directory, so this run cannot be replayed as recorded",
        recorded.display(), root.display()
    )]
    Escape {
        /// `out`, `config`, `data`, ...
        what: String,
        /// The path as recorded.
        recorded: PathBuf,
        /// The work directory.
        root: PathBuf,
    },
    /// A path inside the work directory goes through a symbolic link that leads out of it.
    #[error(
        "{}: the replay's {what} would be written through the symbolic link {} -> {}, outside \
         its work directory {}; remove the link from the recorded code, or record the run with a \
         plain directory",
        path.display(), link.display(), target.display(), root.display()
    )]
    Symlink {
        /// `out`, `config`, `data`, ...
        what: String,
        /// The path to be written.
        path: PathBuf,
        /// The link on the way.
        link: PathBuf,
        /// Where it leads.
        target: PathBuf,
        /// The work directory.
        root: PathBuf,
    },
    /// A directory the replay writes to is (inside) something of the original run.
    #[error(
        "{}: {flag} overlaps the original run's {what} {} (is, lies inside or contains it); a \
         replay never writes there: pass a new or empty directory elsewhere",
        path.display(), original.display()
    )]
    Overlap {
        /// `--out`, `--workdir`.
        flag: String,
        /// The directory asked for.
        path: PathBuf,
        /// `output directory`, `attestation`, `config`, `input`, ...
        what: String,
        /// The original's path.
        original: PathBuf,
    },
    /// A directory the replay writes to already holds files.
    #[error(
        "{}: {flag} exists and is not an empty directory; a replay writes only into a new or \
         empty directory: pass another path, or empty this one",
        path.display()
    )]
    NotEmpty {
        /// `--out`, `--workdir`.
        flag: String,
        /// The directory.
        path: PathBuf,
    },
    /// The recorded command names the original output directory inside a longer argument, where
    /// it cannot be redirected.
    #[error(
        "argument {index} of the recorded command ({argument:?}) names the original {what} {} \
         inside a longer argument; the replay would write there, so it is refused. Record the run \
         with a relative --out, or pass the directory to the command as an argument of its own \
         (`--out DIR` or `--out=DIR`), which retrain redirects into its work directory",
        original.display()
    )]
    Embedded {
        /// Position in argv.
        index: usize,
        /// The argument.
        argument: String,
        /// `output directory`.
        what: String,
        /// The original path.
        original: PathBuf,
    },
}

/// Lexically resolves `.` and `..` in an absolute path; `None` when `..` climbs above `/`.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => out.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::Normal(name) => out.push(name),
        }
    }
    Some(out)
}

/// `path` with symbolic links resolved as far as it exists (the missing rest appended).
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut head = path.to_path_buf();
    loop {
        if let Ok(real) = fs_err::canonicalize(&head) {
            return rest.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (head.file_name().map(|n| n.to_owned()), head.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                head = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The places of the original run a replay must leave untouched: its output directory, its
/// attestation, configs and inputs. Each is kept as written and with links
/// resolved, so a link to it (or a path through one) is recognised too.
#[derive(Debug, Clone, Default)]
pub struct Originals {
    places: Vec<(String, PathBuf)>,
}

impl Originals {
    /// Nothing protected yet.
    pub fn new() -> Originals {
        Originals::default()
    }

    /// Protects `path` (absolute), described as `what` in messages.
    pub fn protect(&mut self, what: &str, path: &Path) {
        let Some(lexical) = normalize(path) else {
            return;
        };
        let resolved = resolve_existing(&lexical);
        for p in [lexical, resolved] {
            if !self.places.iter().any(|(_, q)| *q == p) {
                self.places.push((what.to_string(), p));
            }
        }
    }

    /// Refuses a directory (`flag` = `--out`, `--workdir`) that equals, lies inside or contains
    /// a protected place holding something (an empty or missing directory has nothing to lose).
    pub fn check(&self, flag: &str, dir: &Path) -> Result<(), ConfineError> {
        let lexical = normalize(dir).unwrap_or_else(|| dir.to_path_buf());
        let resolved = resolve_existing(&lexical);
        for (what, original) in &self.places {
            if !holds_something(original) {
                continue;
            }
            if overlaps(&lexical, original) || overlaps(&resolved, original) {
                return Err(ConfineError::Overlap {
                    flag: flag.to_string(),
                    path: dir.to_path_buf(),
                    what: what.clone(),
                    original: original.clone(),
                });
            }
        }
        Ok(())
    }
}

fn holds_something(path: &Path) -> bool {
    match fs_err::symlink_metadata(path) {
        Err(_) => false,
        Ok(meta) if meta.is_dir() => !is_empty_dir(path),
        Ok(_) => true,
    }
}

/// Refuses an existing `dir` that is not an empty directory (`flag` names it in the message).
pub fn require_new_or_empty(flag: &str, dir: &Path) -> Result<(), ConfineError> {
    let not_empty = || ConfineError::NotEmpty {
        flag: flag.to_string(),
        path: dir.to_path_buf(),
    };
    match fs_err::symlink_metadata(dir) {
        Err(_) => Ok(()),
        // A link to a directory is judged by the directory it leads to.
        Ok(meta) if meta.is_dir() || (meta.file_type().is_symlink() && dir.is_dir()) => {
            if is_empty_dir(dir) {
                Ok(())
            } else {
                Err(not_empty())
            }
        }
        Ok(_) => Err(not_empty()),
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    fs_err::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// Where the original run's paths were: its working directory and repository root, as recorded.
#[derive(Debug, Clone)]
pub struct RecordedLayout {
    /// The recorded working directory (`externalParameters.cwd`).
    pub cwd: PathBuf,
    /// The recorded repository root, when the code was in git.
    pub repo_root: Option<PathBuf>,
}

/// A recorded path mapped into the replay's work directory.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedPath {
    /// `out` or `config`.
    pub what: String,
    /// Where the replay uses it (inside the work directory).
    pub path: PathBuf,
    /// Absolute spellings of the original (as written, and with links resolved) that the
    /// recorded command line may use and that the replay rewrites to `path`.
    pub originals: Vec<PathBuf>,
}

/// The replay's work directory. Every path a replay writes (the restored code, staged inputs,
/// restored configs, the output directory) is mapped into it by this type, which refuses a
/// recorded path that would leave it: an absolute path is placed inside it explicitly, a `..`
/// that climbs out is an [`ConfineError::Escape`], a symbolic link leading out is an
/// [`ConfineError::Symlink`].
#[derive(Debug, Clone)]
pub struct ReplayRoot {
    root: PathBuf,
}

impl ReplayRoot {
    /// Creates the work directory `dir` (absolute): it must be new or empty, and must not be,
    /// lie inside or contain any of `originals`. `flag` names it in messages (`--workdir`).
    pub fn create(
        dir: &Path,
        flag: &str,
        originals: &Originals,
    ) -> Result<ReplayRoot, ReplayError> {
        originals.check(flag, dir)?;
        require_new_or_empty(flag, dir)?;
        fs_err::create_dir_all(dir).map_err(io(dir))?;
        let root = fs_err::canonicalize(dir).map_err(io(dir))?;
        originals.check(flag, &root)?;
        Ok(ReplayRoot { root })
    }

    /// The work directory (links resolved).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `base` (inside the work directory) joined with a relative `recorded` path; refuses an
    /// absolute path or a `..` that climbs out.
    pub fn join(&self, base: &Path, recorded: &Path, what: &str) -> Result<PathBuf, ConfineError> {
        let escape = || ConfineError::Escape {
            what: what.to_string(),
            recorded: recorded.to_path_buf(),
            root: self.root.clone(),
        };
        if recorded.is_absolute() {
            return Err(escape());
        }
        let joined = normalize(&base.join(recorded)).ok_or_else(escape)?;
        if !joined.starts_with(&self.root) {
            return Err(escape());
        }
        Ok(joined)
    }

    /// Maps a path of the original run into the work directory. A relative path keeps its place
    /// relative to `run_cwd` (the recorded working directory inside the restored code) when that
    /// stays inside; an absolute path inside the recorded repository goes to the same place in
    /// `worktree`; any other absolute path goes to `elsewhere`.
    pub fn map_recorded(
        &self,
        what: &str,
        recorded: &Path,
        layout: &RecordedLayout,
        worktree: &Path,
        run_cwd: &Path,
        elsewhere: &Path,
    ) -> Result<MappedPath, ConfineError> {
        let original = normalize(&layout.cwd.join(recorded));
        let path = if recorded.is_absolute() {
            let inside_repo = layout
                .repo_root
                .as_deref()
                .zip(original.as_deref())
                .and_then(|(root, orig)| orig.strip_prefix(root).ok().map(Path::to_path_buf));
            match inside_repo {
                Some(rel) => self.join(worktree, &rel, what)?,
                None => self.join(&self.root, elsewhere, what)?,
            }
        } else {
            self.join(run_cwd, recorded, what)?
        };
        let mut originals = Vec::new();
        if let Some(original) = original {
            let resolved = resolve_existing(&original);
            originals.push(original);
            if !originals.contains(&resolved) {
                originals.push(resolved);
            }
        }
        // Spellings that already mean the replay's place need no rewriting.
        originals.retain(|o| *o != path && o.parent().is_some());
        Ok(MappedPath {
            what: what.to_string(),
            path,
            originals,
        })
    }

    /// Makes `path` (inside the work directory) safe to write: every directory on the way that
    /// exists must be a real directory or a link that stays inside; a link at `path` itself is
    /// removed (the replay writes a real file or directory there) and its target returned.
    pub fn prepare_write(&self, path: &Path, what: &str) -> Result<Option<PathBuf>, ReplayError> {
        let relative = path
            .strip_prefix(&self.root)
            .map_err(|_| ConfineError::Escape {
                what: what.to_string(),
                recorded: path.to_path_buf(),
                root: self.root.clone(),
            })?
            .to_path_buf();
        let mut current = self.root.clone();
        let count = relative.components().count();
        for (i, component) in relative.components().enumerate() {
            current.push(component);
            let Ok(meta) = fs_err::symlink_metadata(&current) else {
                break;
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            let target = fs_err::read_link(&current).map_err(io(&current))?;
            if i + 1 == count {
                fs_err::remove_file(&current).map_err(io(&current))?;
                return Ok(Some(target));
            }
            let resolved = resolve_existing(&current);
            if !resolved.starts_with(&self.root) {
                return Err(ConfineError::Symlink {
                    what: what.to_string(),
                    path: path.to_path_buf(),
                    link: current,
                    target,
                    root: self.root.clone(),
                }
                .into());
            }
        }
        Ok(None)
    }
}

/// One argument of the recorded command changed by [`rewrite_argv`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArgRewrite {
    /// Position in argv.
    pub index: usize,
    /// As recorded.
    pub recorded: String,
    /// As replayed.
    pub replayed: String,
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '~' | '@')
}

/// Rewrites the arguments of a recorded command that name an original path by an absolute
/// spelling (`/abs/out`, `/abs/out/sub`, `--out=/abs/out`) to the replay's place. An output
/// directory named inside a longer argument (a shell script, say) cannot be redirected safely
/// and is an [`ConfineError::Embedded`]; configs named that way are read from where they are.
pub fn rewrite_argv(
    argv: &[OsString],
    mapped: &[MappedPath],
) -> Result<(Vec<OsString>, Vec<ArgRewrite>), ConfineError> {
    let mut spellings: Vec<(&Path, &MappedPath)> = mapped
        .iter()
        .flat_map(|m| m.originals.iter().map(move |o| (o.as_path(), m)))
        .collect();
    // The longest spelling first, so `/a/out/sub` wins over `/a/out`.
    spellings.sort_by_key(|(o, _)| std::cmp::Reverse(o.as_os_str().len()));
    let mut out = Vec::with_capacity(argv.len());
    let mut rewrites = Vec::new();
    for (index, arg) in argv.iter().enumerate() {
        let Some(text) = arg.to_str() else {
            out.push(arg.clone());
            continue;
        };
        let (prefix, value) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with('-') => (&text[..=flag.len()], value),
            _ => ("", text),
        };
        let replaced = spellings.iter().find_map(|(original, m)| {
            let original = original.to_str()?;
            let rest = value.strip_prefix(original)?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            let rest = rest.trim_start_matches('/');
            let new = if rest.is_empty() {
                m.path.clone()
            } else {
                m.path.join(rest)
            };
            Some(format!("{prefix}{}", new.display()))
        });
        if let Some(new) = replaced {
            rewrites.push(ArgRewrite {
                index,
                recorded: text.to_string(),
                replayed: new.clone(),
            });
            out.push(OsString::from(new));
            continue;
        }
        for (original, m) in &spellings {
            if m.what != "out" {
                continue;
            }
            let Some(original) = original.to_str() else {
                continue;
            };
            let embedded = text.match_indices(original).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                let after = text[at + original.len()..].chars().next();
                !before.is_some_and(is_path_char) && !after.is_some_and(is_path_char)
            });
            if embedded {
                return Err(ConfineError::Embedded {
                    index,
                    argument: text.to_string(),
                    what: "output directory".into(),
                    original: PathBuf::from(original),
                });
            }
        }
        out.push(arg.clone());
    }
    Ok((out, rewrites))
}

/// How the replay's products compare with the original subjects.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProductComparison {
    /// Same name, same digests.
    pub identical: Vec<String>,
    /// Same name, different digests.
    pub changed: Vec<String>,
    /// In the original only.
    pub missing: Vec<String>,
    /// In the replay only.
    pub extra: Vec<String>,
}

impl ProductComparison {
    /// Every subject reproduced byte for byte and nothing else produced.
    pub fn is_identical(&self) -> bool {
        self.changed.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

/// Compares the original Statement's subjects with the replay's products.
pub fn compare_products(
    original: &[ResourceDescriptor],
    replay: &[RecordedFile],
) -> ProductComparison {
    let new: BTreeMap<&str, &RecordedFile> = replay.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut result = ProductComparison::default();
    for subject in original {
        let name = subject.name.clone().unwrap_or_default();
        match new.get(name.as_str()) {
            None => result.missing.push(name),
            Some(p) if subject.digest_mismatches(&p.digest).is_ok() => result.identical.push(name),
            Some(_) => result.changed.push(name),
        }
    }
    let names: Vec<String> = original.iter().filter_map(|s| s.name.clone()).collect();
    result.extra = replay
        .iter()
        .filter(|p| !names.contains(&p.name))
        .map(|p| p.name.clone())
        .collect();
    result
}

/// The first point where two loss traces (`metrics.jsonl`) disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// Training step.
    pub step: u64,
    /// `loss` or `weights_blake3`.
    pub field: String,
    /// Recorded value.
    pub recorded: String,
    /// Replayed value.
    pub replayed: String,
}

/// Walks both traces in order and returns the first row whose loss or weights digest differs,
/// or `None` when one trace is a prefix of the other with equal rows.
pub fn first_divergence(recorded: &str, replayed: &str) -> Option<Divergence> {
    let parse = |text: &str| -> Vec<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let (a, b) = (parse(recorded), parse(replayed));
    for (x, y) in a.iter().zip(b.iter()) {
        for field in ["loss", "weights_blake3"] {
            if x.get(field).is_some() || y.get(field).is_some() {
                let (rx, ry) = (x[field].to_string(), y[field].to_string());
                if rx != ry {
                    return Some(Divergence {
                        step: x["step"]
                            .as_u64()
                            .or_else(|| y["step"].as_u64())
                            .unwrap_or(0),
                        field: field.to_string(),
                        recorded: rx,
                        replayed: ry,
                    });
                }
            }
        }
    }
    if a.len() != b.len() {
        let step = a.len().min(b.len()) as u64;
        return Some(Divergence {
            step,
            field: "length".into(),
            recorded: format!("{} rows", a.len()),
            replayed: format!("{} rows", b.len()),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_is_found_at_the_first_differing_row() {
        let a = "{\"step\":0,\"weights_blake3\":\"aa\"}\n{\"step\":1,\"loss\":2.5}\n{\"step\":2,\"loss\":2.0}\n";
        let b = "{\"step\":0,\"weights_blake3\":\"aa\"}\n{\"step\":1,\"loss\":2.5}\n{\"step\":2,\"loss\":2.1}\n";
        let d = first_divergence(a, b).expect("diverges");
        assert_eq!((d.step, d.field.as_str()), (2, "loss"));
        assert_eq!(first_divergence(a, a), None);
    }

    #[test]
    fn exclusions_match_paths_and_names() {
        let ex = Exclusions::new(&["shard-002.jsonl".into(), "poison/**".into()]).expect("globs");
        assert!(ex.matches("shard-002.jsonl"));
        assert!(ex.matches("sub/shard-002.jsonl"));
        assert!(ex.matches("poison/a.csv"));
        assert!(!ex.matches("shard-001.jsonl"));
        assert!(Exclusions::new(&["[".into()]).is_err());
    }

    fn layout(cwd: &str, repo: &str) -> RecordedLayout {
        RecordedLayout {
            cwd: PathBuf::from(cwd),
            repo_root: Some(PathBuf::from(repo)),
        }
    }

    #[test]
    fn issue11_replay_root_maps_recorded_paths_inside_and_refuses_escapes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = ReplayRoot::create(&tmp.path().join("w"), "--workdir", &Originals::new())
            .expect("root");
        let w = root.dir().to_path_buf();
        let tree = w.join("src");
        let run_cwd = w.join("src/sub");
        let l = layout("/rec/repo/sub", "/rec/repo");
        let map = |what: &str, p: &str, elsewhere: &str| {
            root.map_recorded(
                what,
                Path::new(p),
                &l,
                &tree,
                &run_cwd,
                Path::new(elsewhere),
            )
        };
        // Relative: the same place below the replayed working directory.
        assert_eq!(
            map("out", "out", "out").expect("out").path,
            run_cwd.join("out")
        );
        assert_eq!(
            map("out", "../../x", "out").expect("../x").path,
            w.join("x")
        );
        // Absolute inside the recorded repository: the same place in the restored code, and the
        // absolute spelling is rewritten.
        let m = map("out", "/rec/repo/rel", "out").expect("in repo");
        assert_eq!(m.path, tree.join("rel"));
        assert!(m.originals.contains(&PathBuf::from("/rec/repo/rel")));
        // Absolute elsewhere: the fixed place.
        let m = map("config", "/etc/cfg.toml", "external/config-0/cfg.toml").expect("abs");
        assert_eq!(m.path, w.join("external/config-0/cfg.toml"));
        assert_eq!(m.originals, vec![PathBuf::from("/etc/cfg.toml")]);
        // `..` that climbs out of the work directory.
        let escape = map("out", "../../../x", "out").expect_err("escape");
        assert_eq!(
            escape,
            ConfineError::Escape {
                what: "out".into(),
                recorded: PathBuf::from("../../../x"),
                root: w.clone(),
            }
        );
        assert!(root.join(&w, Path::new("/abs"), "out").is_err());
        assert!(map("out", "/rec/repo/../../../../x", "out").is_ok_and(|m| m.path.starts_with(&w)));
    }

    #[test]
    fn issue11_prepare_write_refuses_links_out_and_replaces_a_final_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("release");
        fs_err::create_dir_all(&outside).expect("mkdir");
        fs_err::write(outside.join("provenance.intoto.json"), "original").expect("write");
        let root = ReplayRoot::create(&tmp.path().join("w"), "--workdir", &Originals::new())
            .expect("root");
        let w = root.dir().to_path_buf();
        fs_err::create_dir_all(w.join("src")).expect("mkdir");
        std::os::unix::fs::symlink(&outside, w.join("src/out")).expect("link");
        std::os::unix::fs::symlink(&outside, w.join("src/pub")).expect("link");
        std::os::unix::fs::symlink(w.join("src"), w.join("inner")).expect("link");
        // Through a link leading out: refused.
        let err = root
            .prepare_write(&w.join("src/pub/out"), "out")
            .expect_err("through a link");
        assert!(
            matches!(err, ReplayError::Confine(ConfineError::Symlink { .. })),
            "{err}"
        );
        // A link that stays inside is fine.
        root.prepare_write(&w.join("inner/x"), "out")
            .expect("inner link");
        // The link itself: replaced, the target untouched.
        let replaced = root
            .prepare_write(&w.join("src/out"), "out")
            .expect("final");
        assert_eq!(replaced, Some(outside.clone()));
        assert!(!w.join("src/out").exists());
        assert!(outside.join("provenance.intoto.json").is_file());
    }

    #[test]
    fn issue11_work_and_out_dirs_never_overlap_the_original() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let release = tmp.path().join("release");
        fs_err::create_dir_all(&release).expect("mkdir");
        fs_err::write(release.join("provenance.intoto.json"), "original").expect("write");
        std::os::unix::fs::symlink(&release, tmp.path().join("latest")).expect("link");
        let mut originals = Originals::new();
        originals.protect("output directory", &tmp.path().join("latest"));
        for dir in [
            release.clone(),
            release.join("sub"),
            tmp.path().join("latest/sub"),
            tmp.path().join("x/../release"),
            tmp.path().to_path_buf(),
        ] {
            assert!(
                matches!(
                    originals.check("--out", &dir),
                    Err(ConfineError::Overlap { .. })
                ),
                "{}",
                dir.display()
            );
            assert!(ReplayRoot::create(&dir, "--workdir", &originals).is_err());
        }
        originals
            .check("--out", &tmp.path().join("clean"))
            .expect("elsewhere");
        // New or empty only.
        let full = tmp.path().join("full");
        fs_err::create_dir_all(&full).expect("mkdir");
        fs_err::write(full.join("f"), "x").expect("write");
        assert_eq!(
            require_new_or_empty("--out", &full),
            Err(ConfineError::NotEmpty {
                flag: "--out".into(),
                path: full.clone()
            })
        );
        require_new_or_empty("--out", &tmp.path().join("new")).expect("new");
        assert_eq!(
            fs_err::read_to_string(release.join("provenance.intoto.json"))
                .ok()
                .as_deref(),
            Some("original")
        );
    }

    #[test]
    fn issue11_argv_naming_the_original_out_is_redirected_or_refused() {
        let mapped = vec![
            MappedPath {
                what: "out".into(),
                path: PathBuf::from("/w/out"),
                originals: vec![PathBuf::from("/rel/out"), PathBuf::from("/real/out")],
            },
            MappedPath {
                what: "config".into(),
                path: PathBuf::from("/w/external/config-0/c.toml"),
                originals: vec![PathBuf::from("/etc/c.toml")],
            },
        ];
        let argv: Vec<OsString> = [
            "python3",
            "fit.py",
            "--out",
            "/rel/out",
            "--ckpt=/real/out/ckpt",
            "--config",
            "/etc/c.toml",
            "/rel/output",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let (new, rewrites) = rewrite_argv(&argv, &mapped).expect("rewritten");
        let new: Vec<&str> = new.iter().filter_map(|a| a.to_str()).collect();
        assert_eq!(
            new,
            [
                "python3",
                "fit.py",
                "--out",
                "/w/out",
                "--ckpt=/w/out/ckpt",
                "--config",
                "/w/external/config-0/c.toml",
                "/rel/output"
            ]
        );
        assert_eq!(
            rewrites.iter().map(|r| r.index).collect::<Vec<_>>(),
            [3, 4, 6]
        );
        let shell: Vec<OsString> = ["sh", "-c", "cp m.bin /real/out/ && echo done"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(matches!(
            rewrite_argv(&shell, &mapped),
            Err(ConfineError::Embedded { index: 2, .. })
        ));
        let fine: Vec<OsString> = ["sh", "-c", "cat /etc/c.toml /real/outer"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(rewrite_argv(&fine, &mapped).is_ok());
    }

    #[test]
    fn remap_uses_the_longest_prefix() {
        let roots = vec![
            (PathBuf::from("/a"), PathBuf::from("/x")),
            (PathBuf::from("/a/b"), PathBuf::from("/y")),
        ];
        assert_eq!(remap(Path::new("/a/b/c"), &roots), PathBuf::from("/y/c"));
        assert_eq!(remap(Path::new("/a/c"), &roots), PathBuf::from("/x/c"));
        assert_eq!(remap(Path::new("/z"), &roots), PathBuf::from("/z"));
    }
}
