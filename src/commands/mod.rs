//! One module per subcommand.

pub mod approve;
pub mod attest;
pub mod bom;
pub mod datacheck;
pub mod eval;
pub mod inputs;
pub mod keygen;
pub mod lineage;
pub mod policy;
pub mod probe;
pub mod registry;
pub mod retrain;
pub mod run;
pub mod scan;
pub mod sign_model;
pub mod snapshot;
pub mod train;
pub mod verify;

use std::path::Path;

/// Resolves a user-given path to one relative to `root`. A path that (from the current
/// directory) lies inside `root` is made relative to it, whether or not it exists yet; any other
/// relative path without `..` is taken as already relative to `root`. Paths elsewhere give `None`.
pub fn relative_to_root(root: &Path, given: &Path) -> Option<String> {
    let canonical_root = root.canonicalize().ok()?;
    let absolute = if given.is_absolute() {
        given.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(given)
    };
    let resolved = absolute.canonicalize().ok().or_else(|| {
        let parent = absolute.parent()?.canonicalize().ok()?;
        Some(parent.join(absolute.file_name()?))
    });
    if let Some(rel) = resolved
        .as_ref()
        .and_then(|r| r.strip_prefix(&canonical_root).ok())
    {
        return rel
            .to_str()
            .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
            .filter(|s| !s.is_empty());
    }
    let plain = given.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if given.is_relative() && plain {
        return given.to_str().map(str::to_string);
    }
    None
}

/// Human-readable byte count.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The path as the user would type it.
pub fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> std::path::PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// Loads public keys (`--key PUB`, repeatable); a bad file is an input error naming it.
pub fn public_keys(
    paths: &[std::path::PathBuf],
) -> Result<Vec<::attest::keys::PublicKey>, crate::exit::CliError> {
    use crate::exit::OrInput as _;
    paths
        .iter()
        .map(|k| ::attest::keyfile::load_public_key(k))
        .collect::<Result<Vec<_>, _>>()
        .or_input()
}

/// Loads private signing keys (`--key KEY`, repeatable); a bad file is an input error naming it.
pub fn signing_keys(
    paths: &[std::path::PathBuf],
) -> Result<Vec<::attest::keys::SigningKey>, crate::exit::CliError> {
    use crate::exit::OrInput as _;
    paths
        .iter()
        .map(|k| ::attest::keyfile::load_signing_key(k))
        .collect::<Result<Vec<_>, _>>()
        .or_input()
}

/// Loads the trusted public keys (`--key PUB`, repeatable) and checks that `threshold` distinct
/// signatures among them can be met (exit 2 otherwise).
pub fn trusted_keys(
    paths: &[std::path::PathBuf],
    threshold: usize,
) -> Result<Vec<::attest::keys::PublicKey>, crate::exit::CliError> {
    let keys = public_keys(paths)?;
    if threshold == 0 || threshold > keys.len() {
        return Err(crate::exit::CliError::input(anyhow::anyhow!(
            "--threshold {threshold} cannot be met with {} --key file(s)",
            keys.len()
        )));
    }
    Ok(keys)
}
