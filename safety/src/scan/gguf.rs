//! GGUF (llama.cpp): header, metadata, tensor infos.

use super::*;

pub(super) const MAX_GGUF_TENSORS: u64 = 1 << 20;
pub(super) const MAX_GGUF_KVS: u64 = 1 << 20;
pub(super) const MAX_GGUF_DIMS: u32 = 4;
pub(super) const MAX_GGUF_NAME: u64 = 63;
pub(super) const GGUF_DEFAULT_ALIGNMENT: u64 = 32;

/// ggml types: name, block size (elements), block size (bytes). Removed ids are absent.
pub(super) fn ggml_type(id: u32) -> Option<(&'static str, u64, u64)> {
    Some(match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    })
}

pub(super) struct GgufInfo {
    version: u32,
    tensors: usize,
    kvs: u64,
    architecture: Option<String>,
    /// Chat-template keys and the injection pattern each matched.
    templates: Vec<(String, &'static str)>,
}

pub(super) fn scan_gguf(blob: &dyn Blob, r: &mut Builder) -> io::Result<()> {
    r.format = Format::Gguf;
    r.summary = "GGUF".into();
    match with_prefix(blob, parse_gguf)? {
        Ok(info) => {
            let arch = info
                .architecture
                .map(|a| format!(" ({a})"))
                .unwrap_or_default();
            r.summary = format!(
                "GGUF v{}{arch}, {}, {}",
                info.version,
                plural(info.tensors, "tensor", "tensors"),
                plural(
                    usize::try_from(info.kvs).unwrap_or(usize::MAX),
                    "metadata key",
                    "metadata keys"
                )
            );
            for (key, pattern) in info.templates {
                r.add(
                    Rule::GgufChatTemplate,
                    format!(
                        "metadata {key} uses `{pattern}`: a Jinja template injection runs code \
                         when an unsandboxed engine renders it (CVE-2024-34359)"
                    ),
                    Some(key.clone()),
                    None,
                );
            }
        }
        Err(message) => r.add(Rule::GgufInvalid, message, None, None),
    }
    Ok(())
}

pub(super) fn gguf_string<'a>(c: &mut Cursor<'a>, what: &str, max: u64) -> Result<&'a [u8], Stop> {
    let len = c.u64(what)?;
    if len > max {
        return bad(format!("{what} of {len} bytes is above the limit of {max}"));
    }
    c.take(len, what)
}

/// Skips one metadata value of type `ty`; returns the string for `STRING` values.
pub(super) fn gguf_value<'a>(
    c: &mut Cursor<'a>,
    key: &str,
    ty: u32,
    depth: u32,
) -> Result<Option<&'a [u8]>, Stop> {
    let fixed = match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => return gguf_string(c, "string value", u64::MAX).map(Some),
        9 => {
            if depth >= 4 {
                return bad(format!("metadata {key:?}: arrays nest more than 4 deep"));
            }
            let elem = c.u32("array type")?;
            let count = c.u64("array length")?;
            match elem {
                8 | 9 => {
                    for _ in 0..count {
                        gguf_value(c, key, elem, depth + 1)?;
                    }
                }
                _ => {
                    let size = match elem {
                        0 | 1 | 7 => 1u64,
                        2 | 3 => 2,
                        4..=6 => 4,
                        10..=12 => 8,
                        other => {
                            return bad(format!(
                                "metadata {key:?}: unknown array element type {other}"
                            ))
                        }
                    };
                    let Some(bytes) = count.checked_mul(size) else {
                        return bad(format!("metadata {key:?}: array length {count} overflows"));
                    };
                    c.take(bytes, "array data")?;
                }
            }
            return Ok(None);
        }
        other => return bad(format!("metadata {key:?}: unknown value type {other}")),
    };
    c.take(fixed, "metadata value")?;
    Ok(None)
}

pub(super) fn parse_gguf(buf: &[u8], eof: Eof, total: u64) -> Result<GgufInfo, Stop> {
    let mut c = Cursor::new(buf, 0, eof, total);
    if c.take(4, "magic")? != b"GGUF" {
        return bad("bad magic: not a GGUF file");
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => return bad("GGUF version 1 is obsolete (32-bit lengths) and not accepted"),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return bad("big-endian GGUF is not supported")
        }
        v => return bad(format!("unsupported GGUF version {v} (expected 2 or 3)")),
    }
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata count")?;
    // The smallest tensor info is 8 + 4 + 4 + 8 bytes (empty name, no dimension), the smallest
    // metadata entry 8 + 4 + 1 (empty key, one-byte value).
    if tensor_count > MAX_GGUF_TENSORS || tensor_count.saturating_mul(24) > total {
        return bad(format!(
            "tensor count {tensor_count} is absurd for a file of {total} bytes (limit {MAX_GGUF_TENSORS})"
        ));
    }
    if kv_count > MAX_GGUF_KVS || kv_count.saturating_mul(13) > total {
        return bad(format!(
            "metadata count {kv_count} is absurd for a file of {total} bytes (limit {MAX_GGUF_KVS})"
        ));
    }
    let mut keys = HashSet::new();
    let mut alignment = GGUF_DEFAULT_ALIGNMENT;
    let mut architecture = None;
    let mut templates = Vec::new();
    for _ in 0..kv_count {
        let raw = gguf_string(&mut c, "metadata key", 65_535)?;
        let Ok(key) = std::str::from_utf8(raw) else {
            return bad("a metadata key is not UTF-8");
        };
        if !keys.insert(key.to_string()) {
            return bad(format!("metadata key {key:?} appears twice"));
        }
        let ty = c.u32("metadata type")?;
        let value_at = c.pos;
        let text = gguf_value(&mut c, key, ty, 0)?;
        if key == "general.alignment" {
            let value = buf
                .get(value_at..value_at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes);
            match (ty, value) {
                (4, Some(a)) if a.is_power_of_two() => alignment = u64::from(a),
                _ => return bad("general.alignment is not a UINT32 power of two"),
            }
        }
        if let Some(text) = text {
            if key == "general.architecture" {
                architecture = Some(String::from_utf8_lossy(text).chars().take(64).collect());
            }
            if key.starts_with("tokenizer.chat_template") {
                let text = String::from_utf8_lossy(text);
                if let Some(pattern) = template::injection(&text) {
                    templates.push((key.to_string(), pattern));
                }
            }
        }
    }
    struct Tensor {
        name: String,
        offset: u64,
        bytes: u64,
    }
    let mut names = HashSet::new();
    let mut tensors = Vec::new();
    for _ in 0..tensor_count {
        let raw = gguf_string(&mut c, "tensor name", MAX_GGUF_NAME)?;
        let name = String::from_utf8_lossy(raw).into_owned();
        if !names.insert(name.clone()) {
            return bad(format!("tensor {name:?} appears twice"));
        }
        let n_dims = c.u32("n_dims")?;
        if n_dims > MAX_GGUF_DIMS {
            return bad(format!(
                "tensor {name:?} has {n_dims} dimensions (at most {MAX_GGUF_DIMS})"
            ));
        }
        let mut dims = Vec::new();
        for _ in 0..n_dims {
            let d = c.u64("dimension")?;
            if d > i64::MAX as u64 {
                return bad(format!(
                    "tensor {name:?} has a dimension of {d}, above i64::MAX"
                ));
            }
            dims.push(d);
        }
        let ty = c.u32("tensor type")?;
        let Some((type_name, block, block_bytes)) = ggml_type(ty) else {
            return bad(format!("tensor {name:?} has unknown ggml type {ty}"));
        };
        let offset = c.u64("tensor offset")?;
        if !offset.is_multiple_of(alignment) {
            return bad(format!(
                "tensor {name:?} at offset {offset} is not aligned to {alignment} bytes"
            ));
        }
        if !dims.first().copied().unwrap_or(1).is_multiple_of(block) {
            return bad(format!(
                "tensor {name:?}: first dimension is not a multiple of {type_name}'s block of {block}"
            ));
        }
        let bytes = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| (n / block).checked_mul(block_bytes));
        let Some(bytes) = bytes else {
            return bad(format!("tensor {name:?}: its byte size overflows 64 bits"));
        };
        tensors.push(Tensor {
            name,
            offset,
            bytes,
        });
    }
    let data_start = (c.pos as u64)
        .checked_next_multiple_of(alignment)
        .unwrap_or(u64::MAX);
    let data_len = total.saturating_sub(data_start);
    tensors.sort_by_key(|t| (t.offset, t.bytes));
    let mut prev: Option<&Tensor> = None;
    for t in &tensors {
        let end = t.offset.checked_add(t.bytes);
        if end.is_none_or(|end| end > data_len) {
            return bad(format!(
                "tensor {:?}: bytes {}..{} lie outside the data section of {data_len} bytes",
                t.name,
                t.offset,
                end.map_or("overflow".to_string(), |e| e.to_string())
            ));
        }
        if let Some(p) = prev {
            if t.offset < p.offset + p.bytes {
                return bad(format!(
                    "tensors {:?} and {:?} overlap in the data section",
                    p.name, t.name
                ));
            }
        }
        prev = Some(t);
    }
    Ok(GgufInfo {
        version,
        tensors: tensors.len(),
        kvs: kv_count,
        architecture,
        templates,
    })
}
