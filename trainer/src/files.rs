//! Writing output files: atomically, and safetensors deterministically.
//!
//! Every product file is written to a temporary file in the destination directory, fsynced,
//! given mode 0644 (a temporary file starts as 0600), renamed over the destination, and the
//! directory is fsynced, so a crash leaves either the old file or the new one, never a torn one.
//!
//! Safetensors files hold little-endian `f32` tensors sorted by name (what the `safetensors`
//! crate's serializer does for one dtype) and metadata exactly `{"format":"pt"}`: the one key
//! PEFT and `transformers` write and some loaders check; more keys would serialize in varying
//! order (`shared/DESIGN.md`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::error::TrainerError;

/// Writes `bytes` to `path` atomically (see the module doc).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainerError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let with_path = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".trainprov-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(with_path)?;
    tmp.write_all(bytes).map_err(with_path)?;
    tmp.as_file().sync_all().map_err(with_path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(with_path)?;
    }
    tmp.persist(path).map_err(|e| with_path(e.error))?;
    // Make the rename durable. Some filesystems refuse fsync on a directory; the file itself
    // is already synced, so that is not an error.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The little-endian bytes of an `f32` tensor, row-major.
pub fn tensor_le_bytes(t: &Tensor) -> Result<Vec<u8>, TrainerError> {
    let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ok(bytes)
}

/// The bytes of a safetensors file holding `tensors` as `f32` with metadata
/// `{"format":"pt"}`.
pub fn safetensors_bytes(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>, TrainerError> {
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        data.push((name.clone(), t.dims().to_vec(), tensor_le_bytes(t)?));
    }
    let mut views = Vec::with_capacity(data.len());
    for (name, shape, bytes) in &data {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| {
            std::io::Error::other(format!("tensor `{name}` cannot be serialized: {e}"))
        })?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| std::io::Error::other(format!("safetensors serialization failed: {e}")))?;
    Ok(bytes)
}

/// Writes `tensors` to a safetensors file atomically.
pub fn save_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<(), TrainerError> {
    write_atomic(path, &safetensors_bytes(tensors)?)
}
