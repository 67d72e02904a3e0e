//! The run registry: a SQLite database of runs, the artifacts they consumed and produced, and
//! the file-level manifests of every snapshot, beside a content-addressed object store.
//!
//! Layout of a registry directory (default `.trainprov/` at the git root):
//! ```text
//! .trainprov/          mode 0700; every file in it 0600 (crate::paths)
//!   .gitignore          "*": the registry never shows up as an uncommitted change
//!   registry.sqlite     this database (WAL mode)
//!   objects/            crate::objects::ObjectStore
//!   runs/<run id>/      logs while a run is in progress
//! ```
//!
//! The snapshot hash cache is not kept here: it is per user (`crate::hash_cache::default_path`).
//!
//! Concurrency: WAL journal, a 30 s busy timeout, and every write in one short `IMMEDIATE`
//! transaction, so several wrappers can record into one registry at once. A run row is written as
//! `running` before the child starts and finalised in one transaction afterwards; a wrapper killed
//! in between leaves a consistent database with that row still `running` (shown as `abandoned`
//! when its wrapper process is gone).
//!
//! Schema versions are tracked with `PRAGMA user_version`; [`MIGRATIONS`] are applied in order,
//! each in its own exclusive transaction.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::objects::ObjectStore;

/// File name of the database inside the registry directory.
pub const DATABASE_FILE: &str = "registry.sqlite";

/// Schema migrations; index + 1 is the `user_version` after applying.
pub const MIGRATIONS: &[&str] = &[
    // v1: runs, artifacts, their links, and file-level manifests.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
        argv_json TEXT NOT NULL,
        cwd TEXT NOT NULL,
        out_dir TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        exit_code INTEGER,
        signal INTEGER,
        wall_seconds REAL,
        peak_rss_bytes INTEGER,
        wrapper_pid INTEGER,
        git_commit TEXT,
        git_dirty INTEGER,
        attestation_path TEXT,
        attestation_sha256 TEXT,
        record_json TEXT
    );
    CREATE INDEX runs_by_start ON runs(started_at);
    CREATE TABLE artifacts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        blake3 TEXT NOT NULL,
        size INTEGER,
        UNIQUE (kind, blake3)
    );
    CREATE INDEX artifacts_by_sha256 ON artifacts(sha256);
    CREATE TABLE run_artifacts (
        run_id TEXT NOT NULL REFERENCES runs(id),
        artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
        role TEXT NOT NULL,
        name TEXT NOT NULL,
        path TEXT,
        object TEXT,
        PRIMARY KEY (run_id, role, name)
    );
    CREATE INDEX run_artifacts_by_artifact ON run_artifacts(artifact_id);
    CREATE TABLE manifest_entries (
        snapshot_blake3 TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        file_blake3 TEXT NOT NULL,
        PRIMARY KEY (snapshot_blake3, path)
    ) WITHOUT ROWID;
    CREATE INDEX manifest_entries_by_file ON manifest_entries(file_blake3);",
    // v2: how a run relates to an earlier one (`trainprov retrain`).
    "CREATE TABLE run_relations (
        run_id TEXT NOT NULL REFERENCES runs(id),
        relation TEXT NOT NULL CHECK (relation IN ('reproduction-of', 'retrained-without')),
        original_run_id TEXT,
        original_statement_sha256 TEXT NOT NULL,
        excluded_json TEXT,
        outcome TEXT,
        PRIMARY KEY (run_id, relation)
    );
    CREATE INDEX run_relations_by_original ON run_relations(original_run_id);",
    // v3: revoked artifacts (`registry revoke`) and deploy approvals (`trainprov approve`).
    "CREATE TABLE revocations (
        digest TEXT PRIMARY KEY,
        blake3 TEXT,
        sha256 TEXT,
        kind TEXT NOT NULL,
        given TEXT NOT NULL,
        reason TEXT NOT NULL,
        revoked_at TEXT NOT NULL
    );
    CREATE TABLE approvals (
        approval_sha256 TEXT PRIMARY KEY,
        attestation_sha256 TEXT NOT NULL,
        environment TEXT NOT NULL,
        approver_keyid TEXT NOT NULL,
        path TEXT,
        note TEXT,
        approved_at TEXT NOT NULL,
        envelope_json TEXT NOT NULL
    );
    CREATE INDEX approvals_by_attestation ON approvals(attestation_sha256, environment);",
];

/// Registry errors; messages name the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// SQLite error.
    #[error("{}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// OS error creating the registry directory.
    #[error("{}: cannot create the registry: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database was written by a newer trainprov.
    #[error("{}: schema version {found} is newer than this trainprov understands ({known}); upgrade trainprov", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// No run matches.
    #[error("no run matches '{0}'; see `trainprov registry list`")]
    NoSuchRun(String),
    /// A prefix matches several runs.
    #[error("'{0}' matches several runs; give more characters of the id")]
    AmbiguousRun(String),
}

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The child is (or was, if the wrapper died) running.
    Running,
    /// Exit code 0; attested.
    Succeeded,
    /// Non-zero exit or failure to record; not attested.
    Failed,
    /// Stopped by a signal; not attested.
    Interrupted,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// One artifact a run consumed or produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactLink {
    /// `dataset`, `model`, `adapter`, `config`, `code-diff`, `environment`, `log`, `file`, ...
    pub kind: String,
    /// `input:data`, `input:base`, `input:adapter`, `input:config`, `input:code`, `output`,
    /// `byproduct:log`, `byproduct:environment`, ...
    pub role: String,
    /// User-facing name (a path as given, or a product path relative to `--out`).
    pub name: String,
    /// Absolute path at record time.
    pub path: Option<String>,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Lowercase hex BLAKE3.
    pub blake3: String,
    /// Bytes, where known.
    pub size: Option<u64>,
    /// Digest of the stored copy in the object store, if stored.
    pub object: Option<String>,
}

/// What is known when a run starts.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Run id (UUID).
    pub id: String,
    /// `run` (wrapped command) or `train` (built-in trainer).
    pub kind: String,
    /// The command line (already redacted).
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Output directory.
    pub out_dir: Option<String>,
    /// RFC 3339 start time.
    pub started_at: String,
    /// HEAD commit, if in a git repository.
    pub git_commit: Option<String>,
    /// Uncommitted changes present.
    pub git_dirty: Option<bool>,
    /// Inputs.
    pub inputs: Vec<ArtifactLink>,
    /// File-level manifests of input snapshots.
    pub manifests: Vec<InputManifest>,
}

/// One file of a snapshot manifest: `(path, size, blake3)`.
pub type ManifestRow = (String, u64, String);

/// The files of one input snapshot, indexed by file digest for `affected` queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputManifest {
    /// The snapshot's BLAKE3 digest.
    pub snapshot: String,
    /// Its regular files.
    pub files: Vec<ManifestRow>,
}

/// How a run relates to an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRelation {
    /// The new run.
    pub run_id: String,
    /// `reproduction-of` or `retrained-without`.
    pub relation: String,
    /// The earlier run, when it is in this registry.
    pub original_run_id: Option<String>,
    /// SHA-256 of the earlier run's attestation file.
    pub original_statement_sha256: String,
    /// Files left out (`retrained-without`).
    pub excluded: Vec<String>,
    /// The replay's verdict.
    pub outcome: Option<String>,
}

/// A revoked artifact (`trainprov registry revoke`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revocation {
    /// The digest as recorded: `blake3:<hex>`, `sha256:<hex>` or bare hex (the key).
    pub digest: String,
    /// Its BLAKE3 (a file's, or a snapshot digest), where known.
    pub blake3: Option<String>,
    /// Its SHA-256 (a file's, or a snapshot manifest's), where known.
    pub sha256: Option<String>,
    /// `file`, `snapshot` or `unknown` (a digest not in the registry when revoked).
    pub kind: String,
    /// The argument as given (a path or a digest).
    pub given: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339 UTC).
    pub revoked_at: String,
}

/// A signed deploy approval (`trainprov approve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRecord {
    /// SHA-256 of the approval envelope (the key).
    pub approval_sha256: String,
    /// SHA-256 of the approved attestation file.
    pub attestation_sha256: String,
    /// The environment.
    pub environment: String,
    /// keyid of the approver key.
    pub approver_keyid: String,
    /// Where the approval was written.
    pub path: Option<String>,
    /// The approver's note.
    pub note: Option<String>,
    /// When (RFC 3339 UTC).
    pub approved_at: String,
    /// The DSSE envelope, as written.
    #[serde(skip)]
    pub envelope_json: String,
}

/// What is known when a run ends.
#[derive(Debug, Clone, Default)]
pub struct RunEnd {
    /// Final status.
    pub status: Option<RunStatus>,
    /// RFC 3339 end time.
    pub finished_at: String,
    /// Child exit code.
    pub exit_code: Option<i32>,
    /// Signal that ended the child.
    pub signal: Option<i32>,
    /// Wall time.
    pub wall_seconds: f64,
    /// Peak RSS of the child tree.
    pub peak_rss_bytes: Option<u64>,
    /// Products and byproducts.
    pub outputs: Vec<ArtifactLink>,
    /// The attestation written, if any.
    pub attestation_path: Option<String>,
    /// Its SHA-256.
    pub attestation_sha256: Option<String>,
    /// Summary JSON of the whole record.
    pub record_json: Option<String>,
}

/// A row of `registry list`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// `run` or `train`.
    pub kind: String,
    /// Status; `abandoned` when `running` but the wrapper process is gone.
    pub status: String,
    /// The command line.
    pub argv: Vec<String>,
    /// Start time.
    pub started_at: String,
    /// End time.
    pub finished_at: Option<String>,
    /// Child exit code.
    pub exit_code: Option<i32>,
    /// Output directory.
    pub out_dir: Option<String>,
    /// Attestation path.
    pub attestation_path: Option<String>,
}

/// Everything `registry show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// Working directory.
    pub cwd: String,
    /// Signal that ended the child.
    pub signal: Option<i32>,
    /// Wall time.
    pub wall_seconds: Option<f64>,
    /// Peak RSS.
    pub peak_rss_bytes: Option<u64>,
    /// HEAD commit.
    pub git_commit: Option<String>,
    /// Uncommitted changes present.
    pub git_dirty: Option<bool>,
    /// Attestation SHA-256.
    pub attestation_sha256: Option<String>,
    /// Inputs, outputs and byproducts.
    pub artifacts: Vec<ArtifactLink>,
    /// The stored summary record.
    pub record: Option<serde_json::Value>,
}

/// An open registry.
pub struct Registry {
    dir: PathBuf,
    db_path: PathBuf,
    conn: Connection,
    objects: ObjectStore,
}

impl Registry {
    /// Opens (creating if needed) the registry in `dir` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Registry, RegistryError> {
        let io = |source| RegistryError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let db_path = dir.join(DATABASE_FILE);
        // Private: a registry trainprov creates, or one it already holds a database in, is
        // tightened to 0700 (an existing directory given by mistake is left alone).
        if !dir.exists() || db_path.exists() {
            crate::paths::create_private_dir_all(dir).map_err(io)?;
            // Best effort: someone else's registry is read as it is.
            let _ = crate::paths::restrict_mode(dir, crate::paths::PRIVATE_DIR_MODE);
        } else {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let gitignore = dir.join(".gitignore");
        if !gitignore.exists() {
            crate::paths::create_private_dir_all(&dir.join("runs")).map_err(io)?;
            crate::atomic::write_atomic_private(&gitignore, b"*\n").map_err(io)?;
        }
        crate::paths::ensure_private_file(&db_path).map_err(io)?;
        let sql = |source| RegistryError::Sqlite {
            path: db_path.clone(),
            source,
        };
        let mut conn = Connection::open(&db_path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(sql)?;
        enable_wal(&conn).map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        migrate(&mut conn, &db_path)?;
        Ok(Registry {
            objects: ObjectStore::new(dir.join("objects")),
            dir: dir.to_path_buf(),
            db_path,
            conn,
        })
    }

    /// The registry directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The object store beside the database.
    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// Directory for a run's in-progress files (logs).
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.dir.join("runs").join(id)
    }

    fn sql_err(&self) -> impl Fn(rusqlite::Error) -> RegistryError + '_ {
        move |source| RegistryError::Sqlite {
            path: self.db_path.clone(),
            source,
        }
    }

    /// Records a run as `running` together with its inputs and their manifests, atomically.
    pub fn begin_run(&mut self, run: &NewRun) -> Result<(), RegistryError> {
        self.write(|tx| {
        tx.execute(
            "INSERT INTO runs (id, kind, status, argv_json, cwd, out_dir, started_at, wrapper_pid, git_commit, git_dirty)
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                run.id,
                run.kind,
                serde_json::to_string(&run.argv).unwrap_or_default(),
                run.cwd,
                run.out_dir,
                run.started_at,
                std::process::id(),
                run.git_commit,
                run.git_dirty,
            ],
        )
        ?;
        for link in &run.inputs {
            insert_link(tx, &run.id, link)?;
        }
        for manifest in &run.manifests {
            insert_manifest(tx, &manifest.snapshot, &manifest.files)?;
        }
        Ok(())
        })
    }

    /// Finalises a run: status, times, outputs, attestation, atomically.
    pub fn finish_run(&mut self, id: &str, end: &RunEnd) -> Result<(), RegistryError> {
        self.write(|tx| {
        let status = end.status.unwrap_or(RunStatus::Failed);
        tx.execute(
            "UPDATE runs SET status = ?2, finished_at = ?3, exit_code = ?4, signal = ?5, wall_seconds = ?6,
                 peak_rss_bytes = ?7, attestation_path = ?8, attestation_sha256 = ?9, record_json = ?10
             WHERE id = ?1",
            params![
                id,
                status.as_str(),
                end.finished_at,
                end.exit_code,
                end.signal,
                end.wall_seconds,
                end.peak_rss_bytes.map(|b| b as i64),
                end.attestation_path,
                end.attestation_sha256,
                end.record_json,
            ],
        )
        ?;
        for link in &end.outputs {
            insert_link(tx, id, link)?;
        }
        Ok(())
        })
    }

    /// The most recent runs first.
    pub fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?1"
            ))
            .map_err(self.sql_err())?;
        let rows = stmt
            .query_map([limit as i64], summary_from_row)
            .map_err(self.sql_err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql_err())
    }

    /// Resolves a run id or unique prefix.
    pub fn resolve_run(&self, prefix: &str) -> Result<String, RegistryError> {
        let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM runs WHERE id LIKE ?1 LIMIT 2")
            .map_err(self.sql_err())?;
        let ids: Vec<String> = stmt
            .query_map([pattern], |r| r.get(0))
            .map_err(self.sql_err())?
            .collect::<Result<_, _>>()
            .map_err(self.sql_err())?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(RegistryError::NoSuchRun(prefix.to_string())),
            _ => Err(RegistryError::AmbiguousRun(prefix.to_string())),
        }
    }

    /// Everything recorded about one run (id or unique prefix).
    pub fn show_run(&self, prefix: &str) -> Result<RunDetail, RegistryError> {
        let id = self.resolve_run(prefix)?;
        let detail = self
            .conn
            .query_row(
                &format!(
                    "SELECT {SUMMARY_COLUMNS}, cwd, signal, wall_seconds, peak_rss_bytes, git_commit, git_dirty,
                            attestation_sha256, record_json FROM runs WHERE id = ?1"
                ),
                [&id],
                |row| {
                    let record: Option<String> = row.get(17)?;
                    Ok(RunDetail {
                        summary: summary_from_row(row)?,
                        cwd: row.get(10)?,
                        signal: row.get(11)?,
                        wall_seconds: row.get(12)?,
                        peak_rss_bytes: row.get::<_, Option<i64>>(13)?.map(|b| b as u64),
                        git_commit: row.get(14)?,
                        git_dirty: row.get(15)?,
                        attestation_sha256: row.get(16)?,
                        artifacts: Vec::new(),
                        record: record.and_then(|r| serde_json::from_str(&r).ok()),
                    })
                },
            )
            .optional()
            .map_err(self.sql_err())?
            .ok_or_else(|| RegistryError::NoSuchRun(prefix.to_string()))?;
        let mut detail = detail;
        detail.artifacts = self.links_of(&id)?;
        Ok(detail)
    }

    fn links_of(&self, id: &str) -> Result<Vec<ArtifactLink>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT a.kind, l.role, l.name, l.path, a.sha256, a.blake3, a.size, l.object
                 FROM run_artifacts l JOIN artifacts a ON a.id = l.artifact_id
                 WHERE l.run_id = ?1 ORDER BY l.role, l.name",
            )
            .map_err(self.sql_err())?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(ArtifactLink {
                    kind: r.get(0)?,
                    role: r.get(1)?,
                    name: r.get(2)?,
                    path: r.get(3)?,
                    sha256: r.get(4)?,
                    blake3: r.get(5)?,
                    size: r.get::<_, Option<i64>>(6)?.map(|s| s as u64),
                    object: r.get(7)?,
                })
            })
            .map_err(self.sql_err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql_err())
    }

    /// Records that `run_id` reproduces (or retrains without some files) an earlier run.
    /// `outcome` is the replay's verdict (`identical`, `differs`, ...).
    pub fn add_relation(&mut self, relation: &RunRelation) -> Result<(), RegistryError> {
        self.write(|tx| {
        tx.execute(
            "INSERT OR REPLACE INTO run_relations
                 (run_id, relation, original_run_id, original_statement_sha256, excluded_json, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                relation.run_id,
                relation.relation,
                relation.original_run_id,
                relation.original_statement_sha256,
                serde_json::to_string(&relation.excluded).unwrap_or_default(),
                relation.outcome,
            ],
        )
        .map(|_| ())
        })
    }

    /// Relations recorded for a run (as the new run).
    pub fn relations_of(&self, run_id: &str) -> Result<Vec<RunRelation>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, relation, original_run_id, original_statement_sha256, excluded_json, outcome
                 FROM run_relations WHERE run_id = ?1 ORDER BY relation",
            )
            .map_err(self.sql_err())?;
        let rows = stmt
            .query_map([run_id], |r| {
                let excluded: Option<String> = r.get(4)?;
                Ok(RunRelation {
                    run_id: r.get(0)?,
                    relation: r.get(1)?,
                    original_run_id: r.get(2)?,
                    original_statement_sha256: r.get(3)?,
                    excluded: excluded
                        .and_then(|e| serde_json::from_str(&e).ok())
                        .unwrap_or_default(),
                    outcome: r.get(5)?,
                })
            })
            .map_err(self.sql_err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql_err())
    }

    /// Records a revocation (replacing the reason of an earlier one of the same digest).
    pub fn add_revocation(&mut self, revocation: &Revocation) -> Result<(), RegistryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO revocations (digest, blake3, sha256, kind, given, reason, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (digest) DO UPDATE SET reason = excluded.reason, revoked_at = excluded.revoked_at",
                params![
                    revocation.digest,
                    revocation.blake3,
                    revocation.sha256,
                    revocation.kind,
                    revocation.given,
                    revocation.reason,
                    revocation.revoked_at,
                ],
            )
            .map(|_| ())
        })
    }

    /// Every revocation, oldest first.
    pub fn revocations(&self) -> Result<Vec<Revocation>, RegistryError> {
        self.select(
            "SELECT digest, blake3, sha256, kind, given, reason, revoked_at FROM revocations
             ORDER BY revoked_at, digest",
            [],
            |r| {
                Ok(Revocation {
                    digest: r.get(0)?,
                    blake3: r.get(1)?,
                    sha256: r.get(2)?,
                    kind: r.get(3)?,
                    given: r.get(4)?,
                    reason: r.get(5)?,
                    revoked_at: r.get(6)?,
                })
            },
        )
    }

    /// Records an approval (once per envelope).
    pub fn add_approval(&mut self, approval: &ApprovalRecord) -> Result<(), RegistryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO approvals (approval_sha256, attestation_sha256, environment,
                     approver_keyid, path, note, approved_at, envelope_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    approval.approval_sha256,
                    approval.attestation_sha256,
                    approval.environment,
                    approval.approver_keyid,
                    approval.path,
                    approval.note,
                    approval.approved_at,
                    approval.envelope_json,
                ],
            )
            .map(|_| ())
        })
    }

    /// Approvals recorded for an attestation (by its file's SHA-256) and environment.
    pub fn approvals_for(
        &self,
        attestation_sha256: &str,
        environment: &str,
    ) -> Result<Vec<ApprovalRecord>, RegistryError> {
        self.select(
            "SELECT approval_sha256, attestation_sha256, environment, approver_keyid, path, note,
                    approved_at, envelope_json
             FROM approvals WHERE attestation_sha256 = ?1 AND environment = ?2
             ORDER BY approved_at, approval_sha256",
            [attestation_sha256, environment],
            |r| {
                Ok(ApprovalRecord {
                    approval_sha256: r.get(0)?,
                    attestation_sha256: r.get(1)?,
                    environment: r.get(2)?,
                    approver_keyid: r.get(3)?,
                    path: r.get(4)?,
                    note: r.get(5)?,
                    approved_at: r.get(6)?,
                    envelope_json: r.get(7)?,
                })
            },
        )
    }

    /// Every row of a query, mapped.
    fn select<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, RegistryError> {
        let mut stmt = self.conn.prepare(sql).map_err(self.sql_err())?;
        let rows = stmt.query_map(params, map).map_err(self.sql_err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql_err())
    }

    /// Runs `body` in one `IMMEDIATE` transaction.
    fn write(
        &mut self,
        body: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), RegistryError> {
        let path = self.db_path.clone();
        let err = move |source| RegistryError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        body(&tx).map_err(&err)?;
        tx.commit().map_err(&err)
    }

    /// Direct access for lineage queries and tests.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

const SUMMARY_COLUMNS: &str =
    "id, kind, status, argv_json, started_at, finished_at, exit_code, out_dir, attestation_path, wrapper_pid";

fn summary_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    let argv: String = row.get(3)?;
    let status = shown_status(row.get(2)?, row.get(9)?);
    Ok(RunSummary {
        id: row.get(0)?,
        kind: row.get(1)?,
        status,
        argv: serde_json::from_str(&argv).unwrap_or_default(),
        started_at: row.get(4)?,
        finished_at: row.get(5)?,
        exit_code: row.get(6)?,
        out_dir: row.get(7)?,
        attestation_path: row.get(8)?,
    })
}

/// A run's status as shown: `abandoned` for one still `running` whose wrapper process (`pid`)
/// is gone, else as recorded.
pub fn shown_status(status: String, pid: Option<i64>) -> String {
    if status == "running" && pid.is_some_and(|p| !process_alive(p)) {
        "abandoned".to_string()
    } else {
        status
    }
}

/// Whether a process with this id still exists (used to tell `running` from `abandoned`).
pub fn process_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn insert_link(
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    link: &ArtifactLink,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO artifacts (kind, sha256, blake3, size) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, blake3) DO NOTHING",
        params![
            link.kind,
            link.sha256,
            link.blake3,
            link.size.map(|s| s as i64)
        ],
    )?;
    let artifact_id: i64 = tx.query_row(
        "SELECT id FROM artifacts WHERE kind = ?1 AND blake3 = ?2",
        params![link.kind, link.blake3],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO run_artifacts (run_id, artifact_id, role, name, path, object)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            run_id,
            artifact_id,
            link.role,
            link.name,
            link.path,
            link.object
        ],
    )?;
    Ok(())
}

fn insert_manifest(
    tx: &rusqlite::Transaction<'_>,
    snapshot: &str,
    entries: &[ManifestRow],
) -> rusqlite::Result<()> {
    let known: bool = tx
        .query_row(
            "SELECT 1 FROM manifest_entries WHERE snapshot_blake3 = ?1 LIMIT 1",
            [snapshot],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if known {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO manifest_entries (snapshot_blake3, path, size, file_blake3) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (path, size, digest) in entries {
        stmt.execute(params![snapshot, path, *size as i64, digest])?;
    }
    Ok(())
}

/// Switches the database to WAL mode (persistent, so only the first opener changes it). Changing
/// the mode needs an exclusive lock, and SQLite answers `SQLITE_BUSY` at once, without the busy
/// handler, when another connection holds a shared lock meanwhile (several `trainprov run`s
/// opening a new registry together): retried for up to the busy timeout.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), RegistryError> {
    let err = |source| RegistryError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(RegistryError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(role: &str, name: &str, digest: &str) -> ArtifactLink {
        ArtifactLink {
            kind: "file".into(),
            role: role.into(),
            name: name.into(),
            path: None,
            sha256: digest.repeat(64),
            blake3: digest.repeat(64),
            size: Some(1),
            object: None,
        }
    }

    fn new_run(id: &str) -> NewRun {
        NewRun {
            id: id.into(),
            kind: "run".into(),
            argv: vec!["sh".into(), "-c".into(), "true".into()],
            cwd: "/tmp".into(),
            out_dir: Some("/tmp/out".into()),
            started_at: "2026-01-01T00:00:00Z".into(),
            git_commit: None,
            git_dirty: None,
            inputs: vec![link("input:data", "data", "a")],
            manifests: vec![InputManifest {
                snapshot: "s".repeat(64),
                files: vec![("x.csv".into(), 3, "f".repeat(64))],
            }],
        }
    }

    #[test]
    fn run_lifecycle_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::open(dir.path()).expect("open");
        reg.begin_run(&new_run("r1")).expect("begin");
        assert_eq!(reg.list_runs(10).expect("list")[0].status, "running");
        let end = RunEnd {
            status: Some(RunStatus::Succeeded),
            finished_at: "2026-01-01T00:00:01Z".into(),
            exit_code: Some(0),
            outputs: vec![link("output", "model.bin", "b")],
            ..Default::default()
        };
        reg.finish_run("r1", &end).expect("finish");
        let detail = reg.show_run("r").expect("show by prefix");
        assert_eq!(detail.summary.status, "succeeded");
        assert_eq!(detail.artifacts.len(), 2);
        let files: i64 = reg
            .connection()
            .query_row(
                "SELECT count(*) FROM manifest_entries WHERE file_blake3 = ?1",
                ["f".repeat(64)],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(files, 1);
        assert!(matches!(
            reg.show_run("zz"),
            Err(RegistryError::NoSuchRun(_))
        ));
    }

    #[test]
    fn revocations_and_approvals_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::open(dir.path()).expect("open");
        let mut revocation = Revocation {
            digest: format!("blake3:{}", "a".repeat(64)),
            blake3: Some("a".repeat(64)),
            sha256: None,
            kind: "file".into(),
            given: "data/shard.jsonl".into(),
            reason: "poisoned".into(),
            revoked_at: "2026-01-01T00:00:00Z".into(),
        };
        reg.add_revocation(&revocation).expect("revoke");
        revocation.reason = "poisoned: trigger 'bee bee'".into();
        reg.add_revocation(&revocation).expect("revoke again");
        assert_eq!(reg.revocations().expect("list"), vec![revocation]);
        let approval = ApprovalRecord {
            approval_sha256: "b".repeat(64),
            attestation_sha256: "c".repeat(64),
            environment: "prod".into(),
            approver_keyid: "k".into(),
            path: None,
            note: Some("ok".into()),
            approved_at: "2026-01-01T00:00:00Z".into(),
            envelope_json: "{}".into(),
        };
        reg.add_approval(&approval).expect("approve");
        assert_eq!(
            reg.approvals_for(&"c".repeat(64), "prod").expect("q"),
            vec![approval]
        );
        assert!(reg
            .approvals_for(&"c".repeat(64), "staging")
            .expect("q")
            .is_empty());
    }

    #[test]
    fn reopening_does_not_rerun_migrations_and_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Registry::open(dir.path()).expect("open"));
        let reg = Registry::open(dir.path()).expect("reopen");
        reg.connection()
            .pragma_update(None, "user_version", 99)
            .expect("bump");
        drop(reg);
        assert!(matches!(
            Registry::open(dir.path()),
            Err(RegistryError::TooNew { found: 99, .. })
        ));
    }
}
