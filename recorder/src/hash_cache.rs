//! SQLite cache of file digests keyed by (device, inode, size, mtime_ns, ctime_ns).
//!
//! [`crate::snapshot`] asks this cache for the BLAKE3 digest of every regular file it walks and
//! hashes only the files it misses; an unchanged tree therefore re-snapshots from `stat` alone.
//!
//! # Key and correctness
//!
//! A row is used only when all five of device, inode, size, mtime (ns) and ctime (ns) match
//! the file's `lstat`. Writing to a file moves its mtime and ctime; `touch -d`/`utimes` can
//! put mtime back but not ctime, which only the kernel sets (to "now") on every content or
//! metadata change. Renaming a file over another gives a different inode. So a changed file
//! misses, except in one case, the one git calls "racy": file systems stamp times from a
//! coarse clock (a kernel tick, 1 to 10 ms, or worse on some network file systems), so a file
//! written again within the same tick, to the same size, right after it was hashed keeps its
//! stamps. The mitigation, as in git: [`crate::snapshot`] never *stores* a digest for a file
//! whose mtime or ctime is within [`RACY_WINDOW`] of the moment of its `stat` (or in the
//! future). Such a file is hashed again on the next snapshot, until it has been quiet for two
//! seconds. A stored entry can then only be wrong if the file system's clock moves backwards or
//! the file is changed by something that rewrites both times (a raw block device edit).
//! `--rehash` (`SnapshotOptions::rehash`) ignores the cache altogether.
//!
//! # File format
//!
//! One table; `PRAGMA user_version` is the schema version ([`SCHEMA_VERSION`]). A cache file
//! with an older version is emptied and rebuilt; one with a newer version is left alone and
//! reported as unusable (a newer trainprov wrote it).
//!
//! ```sql
//! CREATE TABLE files (
//!     dev      INTEGER NOT NULL,  -- st_dev, u64 stored as its i64 bit pattern
//!     ino      INTEGER NOT NULL,  -- st_ino, likewise
//!     size     INTEGER NOT NULL,  -- bytes
//!     mtime_ns INTEGER NOT NULL,  -- nanoseconds since the Unix epoch
//!     ctime_ns INTEGER NOT NULL,
//!     blake3   BLOB    NOT NULL,  -- 32 bytes
//!     path     TEXT    NOT NULL,  -- where the file was last seen; for debugging only
//!     PRIMARY KEY (dev, ino)
//! ) WITHOUT ROWID;
//! ```
//!
//! One row per (device, inode): a new digest for the same inode replaces the old row, so the
//! table grows with the number of distinct files ever seen, not with the number of snapshots.
//! The database runs in WAL mode with a 5 s busy timeout, so concurrent snapshots (and readers)
//! do not fail on each other's locks. Lookups for a whole tree run in one read transaction on
//! one prepared statement; new digests are stored in one write transaction.
//!
//! A cache is only an accelerator: [`crate::snapshot`] turns every error from this module into
//! one warning on stderr and hashes the files instead.
//!
//! # Where it lives, and who trusts it
//!
//! Whoever can write the cache file can make a snapshot record any digest for a file whose
//! stamp they know, so the cache is **kept per user**, never inside a registry that others
//! share: [`default_path`] is `$TRAINPROV_HASH_CACHE` when set, else
//! `$XDG_CACHE_HOME/trainprov/hash-cache.sqlite`, else `~/.cache/trainprov/hash-cache.sqlite`
//! (directories created `0700`, the file `0600`). It speeds up recording (`run`, `train`,
//! `snapshot`, `registry affected DIR`); verification (`verify --inputs`) hashes every file
//! again unless asked to trust the cache (`--trust-cache`), and then says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

/// Environment variable naming the hash cache file (overrides [`default_path`]'s search).
pub const HASH_CACHE_ENV: &str = "TRAINPROV_HASH_CACHE";

/// File name of the hash cache inside the per-user cache directory.
pub const HASH_CACHE_FILE: &str = "hash-cache.sqlite";

/// The per-user hash cache (see the module docs): `$TRAINPROV_HASH_CACHE`, else
/// `$XDG_CACHE_HOME/trainprov/hash-cache.sqlite` (an absolute `XDG_CACHE_HOME` only, as the
/// XDG spec says), else `$HOME/.cache/trainprov/hash-cache.sqlite`; `None` when none of these
/// is set (then snapshots hash every file).
pub fn default_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var(HASH_CACHE_ENV) {
        return Some(PathBuf::from(path));
    }
    let base = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("trainprov").join(HASH_CACHE_FILE))
}

/// Creates `dir` and its missing parents, private to the user (`0700`) on Unix.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The schema version kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// Files whose mtime or ctime is this close to the time of their `stat` are not cached (see
/// the module docs).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// How long a writer waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What identifies one version of one file: its `lstat` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Device id (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
}

/// A cache that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// SQLite refused (corrupt file, read-only file system, locked for longer than the timeout).
    #[error("{}: {source}; delete the file to start a fresh cache", path.display())]
    Sqlite {
        /// The cache file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The directory for the cache could not be created.
    #[error("{}: cannot create the cache directory: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was written by a newer trainprov.
    #[error("{}: hash cache schema version {found} is newer than this trainprov's ({SCHEMA_VERSION}); upgrade trainprov or delete the file", path.display())]
    NewerSchema {
        /// The cache file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
    },
}

/// An open hash cache file.
#[derive(Debug)]
pub struct HashCache {
    conn: Connection,
    path: PathBuf,
}

impl HashCache {
    /// Opens (creating it, its parent directories `0700` and its table if needed) the cache at
    /// `path`; a file it creates is `0600`.
    pub fn open(path: &Path) -> Result<HashCache, CacheError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent).map_err(|source| CacheError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        #[cfg(unix)]
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt as _;
            // Created empty and private first; SQLite then makes it a database.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
        }
        let sqlite = |source| CacheError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        // WAL: readers never block the one writer. NORMAL sync is safe in WAL mode (a crash may
        // lose the last transaction, never corrupt the file), which suits a cache.
        // In a directory where the -wal file cannot be made SQLite keeps its old journal mode;
        // that is fine for a cache, so the mode it reports is not checked.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sqlite)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(sqlite)?;
        let mut cache = HashCache {
            conn,
            path: path.to_path_buf(),
        };
        cache.migrate()?;
        Ok(cache)
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> CacheError + '_ {
        move |source| CacheError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn migrate(&mut self) -> Result<(), CacheError> {
        let path = self.path.clone();
        let err = |source| CacheError::Sqlite {
            path: path.clone(),
            source,
        };
        let read_version = |conn: &Connection| -> rusqlite::Result<i64> {
            conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        };
        if read_version(&self.conn).map_err(err)? == SCHEMA_VERSION {
            return Ok(());
        }
        // Check again under the write lock: another process may be creating the table now.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let version = read_version(&tx).map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(CacheError::NewerSchema {
                path: self.path.clone(),
                found: version,
            });
        }
        if version < SCHEMA_VERSION {
            // Version 0 is a new file; anything older than ours is rebuilt: it is only a cache.
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS files;
                 CREATE TABLE files (
                     dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
                     mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
                     blake3 BLOB NOT NULL, path TEXT NOT NULL,
                     PRIMARY KEY (dev, ino)
                 ) WITHOUT ROWID;
                 PRAGMA user_version = {SCHEMA_VERSION};"
            ))
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Looks up every key in one read transaction; `None` where the cache has no row for the
    /// inode or the row's size or times differ.
    ///
    /// Files of one tree were mostly created together and so have neighbouring inode numbers.
    /// Per device, when the rows between the smallest and the largest inode asked for are not
    /// many more than the keys (a `count(*)` over that range of the primary key tells), they
    /// are read in one range scan and merged with the sorted keys; otherwise each key is one
    /// primary-key lookup. The scan costs about a third of the lookups per row.
    pub fn lookup_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<[u8; 32]>>, CacheError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let mut found = vec![None; keys.len()];
        // Key indices grouped by device, each group sorted by inode.
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_unstable_by_key(|&i| (keys[i].dev, keys[i].ino));
        for group in order.chunk_by(|&a, &b| keys[a].dev == keys[b].dev) {
            let dev = keys[group[0]].dev as i64;
            let (low, high) = (keys[group[0]].ino, keys[group[group.len() - 1]].ino);
            // Inodes are stored as i64 bit patterns: a range is only a range below 2^63.
            let rangeable = i64::try_from(high).is_ok();
            let rows_in_range = if rangeable {
                tx.prepare_cached(
                    "SELECT count(*) FROM files WHERE dev = ?1 AND ino BETWEEN ?2 AND ?3",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![dev, low as i64, high as i64], |row| {
                        row.get::<_, i64>(0)
                    })
                })
                .map_err(self.err())?
            } else {
                i64::MAX
            };
            if rows_in_range <= 2 * group.len() as i64 + 256 {
                self.scan_range(&tx, dev, (low, high), group, keys, &mut found)?;
            } else {
                self.point_lookups(&tx, group, keys, &mut found)?;
            }
        }
        tx.commit().map_err(self.err())?;
        Ok(found)
    }

    /// Reads the rows of one device between two inodes and merges them with `group` (indices
    /// into `keys`, sorted by inode).
    fn scan_range(
        &self,
        tx: &Connection,
        dev: i64,
        (low, high): (u64, u64),
        group: &[usize],
        keys: &[CacheKey],
        found: &mut [Option<[u8; 32]>],
    ) -> Result<(), CacheError> {
        let mut stmt = tx
            .prepare_cached(
                "SELECT ino, size, mtime_ns, ctime_ns, blake3 FROM files
                 WHERE dev = ?1 AND ino BETWEEN ?2 AND ?3 ORDER BY ino",
            )
            .map_err(self.err())?;
        let mut rows = stmt
            .query(params![dev, low as i64, high as i64])
            .map_err(self.err())?;
        let mut next = 0;
        while let Some(row) = rows.next().map_err(self.err())? {
            let ino = row.get::<_, i64>(0).map_err(self.err())? as u64;
            while next < group.len() && keys[group[next]].ino < ino {
                next += 1;
            }
            // Several keys may share an inode (hard links inside the tree).
            let mut at = next;
            while at < group.len() && keys[group[at]].ino == ino {
                let key = &keys[group[at]];
                found[group[at]] = matching_digest(row, key).map_err(self.err())?;
                at += 1;
            }
            if next >= group.len() {
                break;
            }
        }
        Ok(())
    }

    /// One primary-key lookup per key.
    fn point_lookups(
        &self,
        tx: &Connection,
        group: &[usize],
        keys: &[CacheKey],
        found: &mut [Option<[u8; 32]>],
    ) -> Result<(), CacheError> {
        let mut stmt = tx
            .prepare_cached(
                "SELECT ino, size, mtime_ns, ctime_ns, blake3 FROM files WHERE dev = ?1 AND ino = ?2",
            )
            .map_err(self.err())?;
        for &index in group {
            let key = &keys[index];
            let mut rows = stmt
                .query(params![key.dev as i64, key.ino as i64])
                .map_err(self.err())?;
            if let Some(row) = rows.next().map_err(self.err())? {
                found[index] = matching_digest(row, key).map_err(self.err())?;
            }
        }
        Ok(())
    }

    /// Stores digests in one write transaction, replacing older rows for the same inodes.
    pub fn insert_many<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a CacheKey, &'a str, &'a [u8; 32])>,
    ) -> Result<usize, CacheError> {
        let path = self.path.clone();
        let err = |source| CacheError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut count = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO files (dev, ino, size, mtime_ns, ctime_ns, blake3, path)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(err)?;
            for (key, file, digest) in entries {
                stmt.execute(params![
                    key.dev as i64,
                    key.ino as i64,
                    key.size as i64,
                    key.mtime_ns,
                    key.ctime_ns,
                    &digest[..],
                    file
                ])
                .map_err(err)?;
                count += 1;
            }
        }
        tx.commit().map_err(err)?;
        Ok(count)
    }

    /// Number of rows (for tests and diagnostics; scans the table).
    pub fn len(&self) -> Result<u64, CacheError> {
        self.conn
            .query_row("SELECT count(*) FROM files", [], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.err())
    }

    /// Whether the cache holds no rows.
    pub fn is_empty(&self) -> Result<bool, CacheError> {
        Ok(self.len()? == 0)
    }
}

/// The digest of a `(ino, size, mtime_ns, ctime_ns, blake3)` row when size and times match.
fn matching_digest(row: &rusqlite::Row<'_>, key: &CacheKey) -> rusqlite::Result<Option<[u8; 32]>> {
    let same = row.get::<_, i64>(1)? as u64 == key.size
        && row.get::<_, i64>(2)? == key.mtime_ns
        && row.get::<_, i64>(3)? == key.ctime_ns;
    if !same {
        return Ok(None);
    }
    Ok(row
        .get_ref(4)?
        .as_blob()
        .ok()
        .and_then(|blob| <[u8; 32]>::try_from(blob).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> CacheKey {
        CacheKey {
            dev: u64::MAX - 1,
            ino,
            size: 10,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_000_223_456_789,
        }
    }

    #[test]
    fn stores_and_finds_only_exact_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dir/cache.sqlite");
        let mut cache = HashCache::open(&path).expect("open creates parents");
        assert!(cache.is_empty().expect("len"));
        let digest = [7u8; 32];
        cache
            .insert_many([(&key(1), "a.bin", &digest)])
            .expect("insert");
        let mut moved = key(1);
        moved.ctime_ns += 1;
        let mut bigger = key(1);
        bigger.size += 1;
        let found = cache
            .lookup_many(&[key(1), key(2), moved, bigger])
            .expect("lookup");
        assert_eq!(found, vec![Some(digest), None, None, None]);

        // Same inode, new stamps: replaces the row.
        cache
            .insert_many([(&moved, "a.bin", &[9u8; 32])])
            .expect("insert");
        assert_eq!(cache.len().expect("len"), 1);
        drop(cache);
        let cache = HashCache::open(&path).expect("reopen");
        assert_eq!(
            cache.lookup_many(&[moved, key(1)]).expect("lookup"),
            vec![Some([9u8; 32]), None]
        );
    }

    /// Both lookup strategies (range scan, point lookups) give the same answers, including
    /// for hard links (two keys, one inode), several devices and inodes at or above 2^63.
    #[test]
    fn range_scan_and_point_lookups_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = HashCache::open(&dir.path().join("c.sqlite")).expect("open");
        let stored: Vec<CacheKey> = (0..2_000u64)
            .map(|i| CacheKey {
                dev: 1 + i % 2,
                ino: 1_000 + i,
                ..key(0)
            })
            .chain([u64::MAX - 5, 1 << 63].map(|ino| CacheKey { ino, ..key(0) }))
            .collect();
        let digest_of = |k: &CacheKey| {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&k.ino.to_le_bytes());
            d[8..16].copy_from_slice(&k.dev.to_le_bytes());
            d
        };
        let digests: Vec<[u8; 32]> = stored.iter().map(digest_of).collect();
        cache
            .insert_many(stored.iter().zip(&digests).map(|(k, d)| (k, "p", d)))
            .expect("insert");
        let mut stale = stored[7];
        stale.mtime_ns += 1;
        let absent = CacheKey {
            ino: 999,
            ..stored[0]
        };
        // Dense: most of the range asked for (scan). Sparse: 3 keys over 2,000 rows (lookups).
        let dense: Vec<CacheKey> = stored[..1_500]
            .iter()
            .copied()
            .chain([stored[10], stale, absent, stored[2_000], stored[2_001]])
            .collect();
        let sparse = vec![stored[0], stored[1_998], stale, stored[2_001]];
        for keys in [dense, sparse] {
            let found = cache.lookup_many(&keys).expect("lookup");
            for (k, got) in keys.iter().zip(&found) {
                let want = (*k != stale && *k != absent).then(|| digest_of(k));
                assert_eq!(*got, want, "{k:?}");
            }
        }
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).expect("write");
        let err = HashCache::open(&path)
            .and_then(|c| c.lookup_many(&[key(1)]).map(|_| c))
            .expect_err("garbage is not a database");
        assert!(err.to_string().contains("cache.sqlite"), "{err}");
    }

    #[test]
    fn newer_schema_is_refused_older_is_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.sqlite");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch("CREATE TABLE files (x); PRAGMA user_version = 99;")
                .expect("setup");
        }
        assert!(matches!(
            HashCache::open(&path),
            Err(CacheError::NewerSchema { found: 99, .. })
        ));
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch("PRAGMA user_version = 0;")
                .expect("setup");
        }
        let mut cache = HashCache::open(&path).expect("rebuilt");
        cache
            .insert_many([(&key(3), "c", &[1u8; 32])])
            .expect("insert into rebuilt table");
    }
}
