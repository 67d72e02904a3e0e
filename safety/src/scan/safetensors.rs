//! Safetensors: the loader's own header checks, without reading the data section.

use trainer::safe_load::{validate_safetensors_bytes, LoadError};

use super::*;

pub(super) fn scan_safetensors(blob: &dyn Blob, r: &mut Builder) -> io::Result<()> {
    r.format = Format::Safetensors;
    match check_safetensors(blob)? {
        Ok(tensors) => r.summary = format!("safetensors, {}", plural(tensors, "tensor", "tensors")),
        Err(e) => {
            r.summary = "safetensors".into();
            r.add(Rule::SafetensorsInvalid, e.to_string(), None, None);
        }
    }
    Ok(())
}

/// Runs [`validate_safetensors_bytes`] on the length field and the header only, then finishes
/// its last check (the tensors tile the data section to the end of the file) against the file
/// size, so the data section is never read. The errors are exactly the loader's: the tests
/// compare them with `validate_safetensors_bytes` on the whole file.
pub(super) fn check_safetensors(blob: &dyn Blob) -> io::Result<Result<usize, LoadError>> {
    let total = blob.size();
    let mut bytes = blob.read_at(0, 8)?;
    let Ok(first8) = <[u8; 8]>::try_from(bytes.as_slice()) else {
        return Ok(validate_safetensors_bytes(&bytes).map(|h| h.tensors.len()));
    };
    let header_len = u64::from_le_bytes(first8);
    if header_len > MAX_HEADER_LEN {
        return Ok(Err(LoadError::HeaderTooLarge {
            len: header_len,
            limit: MAX_HEADER_LEN,
        }));
    }
    let available = total.saturating_sub(8);
    if header_len > available {
        return Ok(Err(LoadError::HeaderPastEof {
            len: header_len,
            available,
        }));
    }
    bytes.extend(blob.read_at(8, header_len)?);
    let head_len = bytes.len() as u64;
    let data_len = total.saturating_sub(head_len);
    Ok(match validate_safetensors_bytes(&bytes) {
        Ok(header) if data_len == 0 => Ok(header.tensors.len()),
        Ok(_) => Err(LoadError::NotCovering {
            covered: 0,
            data_len,
        }),
        // Every check but the last passed; the last only needs the data section's length.
        Err(LoadError::TruncatedFile { expected, got })
            if got == head_len && got == 8 + header_len =>
        {
            let covered = expected.saturating_sub(head_len);
            if covered == data_len {
                Ok(count_tensors(bytes.get(8..).unwrap_or_default()))
            } else if covered > data_len {
                Err(LoadError::TruncatedFile {
                    expected,
                    got: total,
                })
            } else {
                Err(LoadError::NotCovering { covered, data_len })
            }
        }
        Err(e) => Err(e),
    })
}

/// Tensor entries of an already validated header.
pub(super) fn count_tensors(header: &[u8]) -> usize {
    serde_json::from_slice::<serde_json::Map<String, Value>>(header)
        .map(|m| m.keys().filter(|k| *k != "__metadata__").count())
        .unwrap_or(0)
}
