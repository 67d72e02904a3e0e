//! What a Hugging Face hub-cache path says about where an input came from.
//!
//! `huggingface_hub` stores a repository `org/name` of type `model` (`dataset`, `space`) under
//! `CACHE/models--org--name/` (`datasets--…`, `spaces--…`):
//!
//! ```text
//! models--org--name/
//!   blobs/<sha256 or git sha1>            the file contents
//!   refs/main                             a text file: the commit hash `main` points at
//!   snapshots/<commit>/config.json        -> ../../blobs/<…>
//! ```
//!
//! An input whose path is `…/models--org--name/snapshots/REV` (or a folder below it) is recorded
//! with [`HubRef`]: the repository id `org/name` (`--` separates the owner from the name;
//! `huggingface_hub` forbids `--` inside either), its type, the revision `REV` and the names of
//! the refs under `refs/` whose file holds `REV` (`main`, `pr/1`). When `REV` is not itself a
//! commit hash but the name of a file under `refs/` (a snapshot folder named after a branch), the
//! revision is that file's commit hash and the ref name is `REV`. The given path is read first;
//! if it does not have this shape, the path with its symlinks resolved is read (a link
//! `tiny -> …/models--org--tiny/snapshots/abc` is the hub cache too).
//!
//! This is what the **path** says, not a check against the hub: trainprov pins the input by its
//! content (the snapshot digest) either way. In the Statement, the input's
//! `resolvedDependencies` entry carries it as the annotation
//!
//! ```json
//! "hf": {"repoType": "model", "repoId": "org/name", "revision": "0123…cdef", "refs": ["main"]}
//! ```
//!
//! with `"subfolder": "a/b"` added when the path is below the snapshot's root. `refs` is empty
//! when no ref names the revision (a snapshot downloaded by commit hash).

use std::path::{Component, Path};

use serde::Serialize;

/// A hub repository type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoType {
    /// `models--…`.
    Model,
    /// `datasets--…`.
    Dataset,
    /// `spaces--…`.
    Space,
}

impl RepoType {
    fn from_prefix(folder: &str) -> Option<(RepoType, &str)> {
        [
            ("models--", RepoType::Model),
            ("datasets--", RepoType::Dataset),
            ("spaces--", RepoType::Space),
        ]
        .into_iter()
        .find_map(|(prefix, kind)| folder.strip_prefix(prefix).map(|rest| (kind, rest)))
    }
}

/// Repository and revision named by a hub-cache path; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubRef {
    /// Model, dataset or space.
    pub repo_type: RepoType,
    /// `org/name` (or `name` for a repository without an owner).
    pub repo_id: String,
    /// The snapshot's commit hash (the folder under `snapshots/`, or what the ref of that name
    /// holds).
    pub revision: String,
    /// Names of the refs (files under `refs/`) holding `revision`, sorted.
    pub refs: Vec<String>,
    /// The path below the snapshot's root, `/`-separated, when the input is a folder inside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subfolder: Option<String>,
}

impl HubRef {
    /// What `path` says (see the module doc); `None` when it is not inside a hub cache.
    pub fn from_path(path: &Path) -> Option<HubRef> {
        let absolute = std::path::absolute(path).ok()?;
        parse(&absolute).or_else(|| parse(&absolute.canonicalize().ok()?))
    }
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse(path: &Path) -> Option<HubRef> {
    let parts: Vec<&str> = path
        .components()
        .map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => Some(""),
        })
        .collect::<Option<Vec<_>>>()?;
    // The last `<type>s--…/snapshots/REV` in the path.
    let at = (0..parts.len().saturating_sub(2))
        .rev()
        .find(|&i| RepoType::from_prefix(parts[i]).is_some() && parts[i + 1] == "snapshots")?;
    let (repo_type, rest) = RepoType::from_prefix(parts[at])?;
    let folder = parts[at + 2];
    if rest.is_empty() || folder.is_empty() {
        return None;
    }
    let repo_id = match rest.split_once("--") {
        Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains("--") => {
            format!("{owner}/{name}")
        }
        Some(_) => return None,
        None => rest.to_string(),
    };
    let mut repo_dir = path.to_path_buf();
    for _ in at + 1..parts.len() {
        repo_dir.pop();
    }
    let refs = read_refs(&repo_dir.join("refs"));
    let (revision, refs) = if is_commit_hash(folder) {
        let named: Vec<String> = refs
            .iter()
            .filter(|(_, commit)| commit == folder)
            .map(|(name, _)| name.clone())
            .collect();
        (folder.to_string(), named)
    } else {
        match refs.iter().find(|(name, _)| name == folder) {
            Some((name, commit)) => {
                let mut named: Vec<String> = refs
                    .iter()
                    .filter(|(_, c)| c == commit)
                    .map(|(n, _)| n.clone())
                    .collect();
                if !named.contains(name) {
                    named.push(name.clone());
                }
                named.sort();
                (commit.clone(), named)
            }
            None => {
                let named = refs
                    .iter()
                    .filter(|(_, commit)| commit == folder)
                    .map(|(name, _)| name.clone())
                    .collect();
                (folder.to_string(), named)
            }
        }
    };
    let below = &parts[at + 3..];
    let subfolder = (!below.is_empty()).then(|| below.join("/"));
    Some(HubRef {
        repo_type,
        repo_id,
        revision,
        refs,
        subfolder,
    })
}

/// `(name, commit)` of every file under `refs/` (names `/`-separated, e.g. `pr/1`), sorted by
/// name; unreadable or oversized files are skipped.
fn read_refs(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .max_depth(4)
        .into_iter()
        .flatten()
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(dir) else {
            continue;
        };
        let Some(name) = relative
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.len() > 256 {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        out.push((name.join("/"), text.trim().to_string()));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn repo_id_and_revision_from_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("hub/models--org--tiny");
        let snap = repo.join("snapshots").join(REV);
        std::fs::create_dir_all(snap.join("sub")).expect("mkdir");
        std::fs::create_dir_all(repo.join("refs/pr")).expect("mkdir");
        std::fs::write(repo.join("refs/main"), REV).expect("ref");
        std::fs::write(repo.join("refs/pr/1"), format!("{REV}\n")).expect("ref");
        std::fs::write(repo.join("refs/old"), "f".repeat(40)).expect("ref");
        let got = HubRef::from_path(&snap).expect("hub ref");
        assert_eq!(
            got,
            HubRef {
                repo_type: RepoType::Model,
                repo_id: "org/tiny".into(),
                revision: REV.into(),
                refs: vec!["main".into(), "pr/1".into()],
                subfolder: None,
            }
        );
        assert_eq!(
            HubRef::from_path(&snap.join("sub"))
                .expect("sub")
                .subfolder
                .as_deref(),
            Some("sub")
        );
        assert_eq!(
            serde_json::to_value(&got).expect("json"),
            serde_json::json!({"repoType": "model", "repoId": "org/tiny", "revision": REV,
                               "refs": ["main", "pr/1"]})
        );
        // A snapshot folder named after a ref resolves through it.
        let by_name = repo.join("snapshots/main");
        std::fs::create_dir_all(&by_name).expect("mkdir");
        let got = HubRef::from_path(&by_name).expect("by ref name");
        assert_eq!((got.revision.as_str(), got.refs.len()), (REV, 2));
        // Reached through a symlink.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&snap, dir.path().join("tiny")).expect("link");
            let got = HubRef::from_path(&dir.path().join("tiny")).expect("through link");
            assert_eq!(got.repo_id, "org/tiny");
        }
        // Not a hub cache.
        assert_eq!(HubRef::from_path(dir.path()), None);
        assert_eq!(HubRef::from_path(&repo), None);
        assert_eq!(
            HubRef::from_path(Path::new("/x/models--a--b--c/snapshots/r")),
            None
        );
        let single = HubRef::from_path(Path::new("/x/datasets--squad/snapshots/r")).expect("ds");
        assert_eq!(
            (
                single.repo_type,
                single.repo_id.as_str(),
                single.revision.as_str()
            ),
            (RepoType::Dataset, "squad", "r")
        );
    }
}
