//! Streaming digests of single files.

use std::io::Read as _;
use std::path::Path;

use attest::statement::DigestSet;
use sha2::{Digest as _, Sha256};

const BUFFER: usize = 1 << 20;

thread_local! {
    /// One read buffer per thread, reused across files: allocating (and zeroing) 1 MiB per file
    /// costs more than hashing a 20,000-file model directory.
    static BUFFER_POOL: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; BUFFER]);
}

/// Feeds every byte of `path` to `sink`, returning the byte count.
fn read_chunks(path: &Path, mut sink: impl FnMut(&[u8])) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    BUFFER_POOL.with(|cell| {
        let mut buffer = cell.borrow_mut();
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut buffer) {
                Ok(0) => return Ok(size),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            sink(&buffer[..n]);
            size += n as u64;
        }
    })
}

/// SHA-256 and BLAKE3 of one file, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Lowercase hex BLAKE3.
    pub blake3: String,
    /// Bytes read.
    pub size: u64,
}

impl FileDigests {
    /// As an in-toto digest set.
    pub fn to_digest_set(&self) -> DigestSet {
        let mut set = DigestSet::new();
        set.insert("sha256".into(), self.sha256.clone());
        set.insert("blake3".into(), self.blake3.clone());
        set
    }
}

/// Reads `path` once and computes SHA-256 and BLAKE3.
pub fn digest_file(path: &Path) -> std::io::Result<FileDigests> {
    let mut sha = Sha256::new();
    let mut b3 = blake3::Hasher::new();
    let size = read_chunks(path, |chunk| {
        sha.update(chunk);
        b3.update(chunk);
    })?;
    Ok(FileDigests {
        sha256: hex::encode(sha.finalize()),
        blake3: b3.finalize().to_hex().to_string(),
        size,
    })
}

/// [`digest_file`] for many files, in parallel on the rayon pool; results in input order.
pub fn digest_files(paths: &[std::path::PathBuf]) -> Vec<std::io::Result<FileDigests>> {
    use rayon::prelude::*;
    paths.par_iter().map(|p| digest_file(p)).collect()
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut sha = Sha256::new();
    read_chunks(path, |chunk| sha.update(chunk))?;
    Ok(hex::encode(sha.finalize()))
}

/// Lowercase hex BLAKE3 of a file.
pub fn blake3_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    read_chunks(path, |chunk| {
        hasher.update(chunk);
    })?;
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_in_memory_hashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let d = digest_file(&path).expect("digest");
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(d.blake3, blake3::hash(&data).to_hex().to_string());
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(sha256_file(&path).expect("sha"), d.sha256);
        assert_eq!(blake3_file(&path).expect("b3"), d.blake3);
    }
}
