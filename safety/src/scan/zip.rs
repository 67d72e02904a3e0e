//! Zip archives (PyTorch checkpoints, .npz, any zip): the directory, every entry sniffed.

use super::compress::decode;
use super::*;

/// Largest central directory read.
pub(super) const MAX_CENTRAL_DIRECTORY: u64 = 64 * 1024 * 1024;

pub(super) struct ZipEntry {
    name: String,
    raw_name: Vec<u8>,
    flags: u16,
    method: u16,
    compressed: u64,
    size: u64,
    offset: u64,
}

/// Scans a zip archive: the file itself (`outer` `None`) or an entry of another archive (its
/// entries are then named `outer/name`). Every entry is sniffed by content, whatever its name
/// (`torch.load` reads `<any>/data.pkl`, `np.load` any member of an `.npz`, other loaders any
/// member at all): pickles, `.npy` arrays, nested archives and compressed streams are scanned,
/// within the file's budget.
pub(super) fn scan_zip(
    blob: &dyn Blob,
    outer: Option<&str>,
    depth: u32,
    r: &mut Builder,
) -> io::Result<()> {
    let top = outer.is_none();
    if top {
        r.format = Format::Zip;
    }
    let entries = match zip_directory(blob)? {
        Ok(entries) => entries,
        Err(message) => {
            if top {
                r.summary = "zip archive".into();
            }
            r.add(Rule::ZipInvalid, prefixed(outer, &message), None, outer);
            return Ok(());
        }
    };
    let named = |name: &str| entries.iter().any(|e| e.name == name);
    let torch = entries
        .iter()
        .any(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl"));
    let npz = !entries.is_empty() && entries.iter().all(|e| e.name.ends_with(".npy"));
    let keras = named("config.json") && (named("model.weights.h5") || named("metadata.json"));
    if top {
        r.format = if torch {
            Format::TorchZip
        } else if npz {
            Format::Npz
        } else {
            Format::Zip
        };
    }
    let mut pickles = 0usize;
    let mut arrays = 0usize;
    let mut storages = 0usize;
    let mut inspected = 0usize;
    let mut torchscript = false;
    if entries.len() > MAX_ENTRIES {
        r.over_budget(
            outer,
            format!(
                "the archive has {} entries; only the first {MAX_ENTRIES} were inspected",
                entries.len()
            ),
        );
    }
    for e in entries.iter().take(MAX_ENTRIES) {
        let lower = e.name.to_ascii_lowercase();
        let mut hint = Hint {
            pickle: lower.ends_with(".pkl") || lower.ends_with(".pickle"),
            npy: lower.ends_with(".npy"),
            storage: false,
        };
        if torch {
            let parent = e.name.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
            let leaf = e.name.rsplit('/').next().unwrap_or("");
            if (parent == "data" || parent.ends_with("/data"))
                && !leaf.is_empty()
                && leaf.bytes().all(|b| b.is_ascii_digit())
            {
                storages += 1;
                hint.storage = true;
            }
            if e.name.starts_with("code/") || e.name.contains("/code/") {
                torchscript = true;
            }
        }
        if e.name.ends_with('/') && e.size == 0 {
            continue;
        }
        let name = match outer {
            Some(o) => format!("{o}/{}", e.name),
            None => e.name.clone(),
        };
        let what = match scan_entry(blob, e, &name, hint, depth, r)? {
            Ok(what) => what,
            Err(EntryProblem::Invalid(message)) => {
                r.add(
                    Rule::ZipInvalid,
                    format!("{name}: {message}"),
                    None,
                    Some(&name),
                );
                continue;
            }
            Err(EntryProblem::Uninspectable(why)) => {
                if hint.pickle || hint.npy {
                    let holds = if hint.pickle { "a pickle" } else { "an array" };
                    r.add(
                        Rule::ZipUninspectable,
                        format!("{name}: {why}, so {holds} inside cannot be checked"),
                        None,
                        Some(&name),
                    );
                }
                continue;
            }
        };
        match what {
            Embedded::Pickle => pickles += 1,
            Embedded::Array => arrays += 1,
            _ => {}
        }
        if what != Embedded::Data {
            inspected += 1;
        }
    }
    if keras {
        uninspectable(r, "Keras archive", outer);
    }
    if torchscript {
        r.add(
            Rule::TorchScript,
            prefixed(
                outer,
                "TorchScript archive (code/ entries): torch.jit.load runs its code",
            ),
            None,
            outer,
        );
    }
    if !top {
        return Ok(());
    }
    let mut parts = vec![r.format.to_string()];
    match r.format {
        Format::TorchZip => {
            parts.push(plural(pickles, "pickle", "pickles"));
            parts.push(plural(storages, "storage", "storages"));
        }
        Format::Npz => parts.push(plural(arrays, "array", "arrays")),
        _ => parts.push(plural(entries.len(), "entry", "entries")),
    }
    if pickles > 0 || !r.globals.is_empty() {
        parts.push(plural(r.globals.len(), "global", "globals"));
    }
    if !keras {
        r.summary = parts.join(", ");
    }
    if r.format == Format::Zip && inspected == 0 && !keras {
        r.add(
            Rule::NotAModel,
            "zip archive without pickle or .npy entries: not a model weight format".into(),
            None,
            None,
        );
    }
    Ok(())
}

pub(super) enum EntryProblem {
    Invalid(String),
    Uninspectable(String),
}

/// Where an entry's data starts, after checking its local header against the directory.
fn data_start(blob: &dyn Blob, e: &ZipEntry) -> io::Result<Result<u64, EntryProblem>> {
    use EntryProblem::Invalid;
    let local = blob.read_at(e.offset, 30)?;
    let mut c = Cursor::new(&local, 0, Eof::End, local.len() as u64);
    let header = (|| -> Result<(u16, u16), Stop> {
        if c.take(4, "local header signature")? != b"PK\x03\x04" {
            return bad("no local file header at the entry's offset");
        }
        c.take(22, "local file header")?;
        Ok((c.u16("name length")?, c.u16("extra length")?))
    })();
    let (name_len, extra_len) = match header {
        Ok(lens) => lens,
        Err(Stop::Bad(m)) => return Ok(Err(Invalid(m))),
        Err(Stop::More) => return Ok(Err(Invalid("truncated local header".into()))),
    };
    let local_name = blob.read_at(e.offset.saturating_add(30), u64::from(name_len))?;
    if local_name != e.raw_name {
        return Ok(Err(Invalid(format!(
            "the local header names it {:?}: readers disagree on which file this is",
            String::from_utf8_lossy(&local_name)
        ))));
    }
    let start = e
        .offset
        .saturating_add(30 + u64::from(name_len) + u64::from(extra_len));
    if start.saturating_add(e.compressed) > blob.size() {
        return Ok(Err(Invalid(format!(
            "its {} bytes at offset {start} run past the end of the archive",
            e.compressed
        ))));
    }
    Ok(Ok(start))
}

/// The codec of a zip compression method this scanner reads (Python's `zipfile` reads 8, 12
/// and 14; 93 is zstd).
fn method_codec(method: u16) -> Option<Codec> {
    match method {
        8 => Some(Codec::Deflate),
        12 => Some(Codec::Bzip2),
        14 => Some(Codec::Lzma),
        93 => Some(Codec::Zstd),
        _ => None,
    }
}

/// Scans one entry: stored ones in place, compressed ones decompressed within the budget
/// (first 4 KiB to sniff, then the whole entry if its content is worth reading).
fn scan_entry(
    blob: &dyn Blob,
    e: &ZipEntry,
    name: &str,
    hint: Hint,
    depth: u32,
    r: &mut Builder,
) -> io::Result<Result<Embedded, EntryProblem>> {
    use EntryProblem::{Invalid, Uninspectable};
    if e.flags & 1 != 0 {
        return Ok(Err(Uninspectable("the entry is encrypted".into())));
    }
    let start = match data_start(blob, e)? {
        Ok(start) => start,
        Err(problem) => return Ok(Err(problem)),
    };
    if e.method == 0 {
        if e.compressed != e.size {
            return Ok(Err(Invalid(format!(
                "stored entry with compressed size {} but size {}",
                e.compressed, e.size
            ))));
        }
        let sub = SubBlob {
            inner: blob,
            start,
            size: e.size,
        };
        return scan_embedded(&sub, name, hint, depth, r).map(Ok);
    }
    let Some(codec) = method_codec(e.method) else {
        return Ok(Err(Uninspectable(format!(
            "it is compressed with method {}, which this scanner does not read",
            e.method
        ))));
    };
    // zip's LZMA: a 2-byte version, a 2-byte properties length, then the `.lzma` properties
    // and the stream, without the size field (the directory has it).
    let (skip, size) = if codec == Codec::Lzma {
        (4, Some(e.size))
    } else {
        (0, None)
    };
    let reader = || {
        BlobReader::new(
            blob,
            start.saturating_add(skip),
            e.compressed.saturating_sub(skip),
        )
    };
    if !hint.pickle && !hint.npy {
        let sniffed = match decode(codec, reader(), 4096, size) {
            Ok(d) => d,
            Err(message) => {
                return Ok(Err(Invalid(format!(
                    "bad {} data: {message}",
                    codec.name()
                ))))
            }
        };
        r.inflated = r.inflated.saturating_add(sniffed.bytes.len() as u64);
        let head = sniffed.bytes;
        let worth = head.starts_with(b"\x93NUMPY")
            || is_zip(&head)
            || Codec::sniff(&head).is_some()
            || foreign(&head).is_some()
            || head.first().is_some_and(|&b| can_start_pickle(b));
        if !worth {
            return Ok(Ok(Embedded::Data));
        }
    }
    let allowance = r.allowance();
    if e.size > allowance {
        r.over_budget(
            Some(name),
            format!(
                "it declares {} bytes uncompressed, above what is left of the budget \
                 ({allowance} bytes; limits: {MAX_INFLATE_ENTRY} per entry, {MAX_INFLATE_TOTAL} \
                 per file): a decompression bomb, or too large to inspect; not scanned",
                e.size
            ),
        );
        return Ok(Ok(Embedded::Data));
    }
    let decoded = match decode(codec, reader(), e.size, size) {
        Ok(d) => d,
        Err(message) => {
            return Ok(Err(Invalid(format!(
                "bad {} data: {message}",
                codec.name()
            ))))
        }
    };
    r.inflated = r.inflated.saturating_add(decoded.bytes.len() as u64);
    if !decoded.complete || decoded.bytes.len() as u64 != e.size {
        let got = if decoded.complete {
            decoded.bytes.len().to_string()
        } else {
            "more".to_string()
        };
        return Ok(Err(Invalid(format!(
            "inflates to {got} bytes, the directory says {}",
            e.size
        ))));
    }
    let inner = PrefixBlob {
        bytes: decoded.bytes,
        size: e.size,
    };
    scan_embedded(&inner, name, hint, depth, r).map(Ok)
}

pub(super) fn zip_directory(blob: &dyn Blob) -> io::Result<Result<Vec<ZipEntry>, String>> {
    let total = blob.size();
    let tail_len = total.min(22 + 65_535);
    let tail_start = total - tail_len;
    let tail = blob.read_at(tail_start, tail_len)?;
    let Some(at) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail.get(i..i + 4) == Some(b"PK\x05\x06"))
    else {
        return Ok(Err(
            "no end-of-central-directory record: the archive is truncated or not a zip".into(),
        ));
    };
    let eocd_pos = tail_start + at as u64;
    let eocd = tail.get(at..).unwrap_or_default();
    let mut c = Cursor::new(eocd, 0, Eof::End, eocd.len() as u64);
    let fields = (|| -> Result<(u16, u16, u32, u32), Stop> {
        c.take(4, "signature")?;
        let disk = c.u16("disk number")?;
        c.take(4, "disk fields")?;
        let count = c.u16("entry count")?;
        let size = c.u32("directory size")?;
        let offset = c.u32("directory offset")?;
        Ok((disk, count, size, offset))
    })();
    let (disk, count16, size32, offset32) = match fields {
        Ok(f) => f,
        Err(Stop::Bad(m)) => return Ok(Err(m)),
        Err(Stop::More) => return Ok(Err("truncated end record".into())),
    };
    if disk != 0 {
        return Ok(Err("multi-disk archives are not supported".into()));
    }
    let (mut count, mut cd_size, mut cd_offset) =
        (u64::from(count16), u64::from(size32), u64::from(offset32));
    if count16 == 0xFFFF || size32 == 0xFFFF_FFFF || offset32 == 0xFFFF_FFFF {
        let locator = blob.read_at(eocd_pos.saturating_sub(20), 20)?;
        if eocd_pos >= 20 && locator.starts_with(b"PK\x06\x07") {
            let z64_at = locator
                .get(8..16)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(u64::MAX);
            let record = blob.read_at(z64_at, 56)?;
            let field = |at: usize| {
                record
                    .get(at..at + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes)
            };
            match (
                record.starts_with(b"PK\x06\x06"),
                field(32),
                field(40),
                field(48),
            ) {
                (true, Some(n), Some(s), Some(o)) => (count, cd_size, cd_offset) = (n, s, o),
                _ => return Ok(Err("bad zip64 end-of-central-directory record".into())),
            }
        }
    }
    if cd_size > MAX_CENTRAL_DIRECTORY {
        return Ok(Err(format!(
            "central directory of {cd_size} bytes is above the limit of {MAX_CENTRAL_DIRECTORY}"
        )));
    }
    if cd_offset
        .checked_add(cd_size)
        .is_none_or(|end| end > eocd_pos)
    {
        return Ok(Err(format!(
            "central directory ({cd_size} bytes at offset {cd_offset}) lies outside the archive"
        )));
    }
    if count > cd_size / 46 {
        return Ok(Err(format!(
            "{count} entries cannot fit a central directory of {cd_size} bytes"
        )));
    }
    let cd = blob.read_at(cd_offset, cd_size)?;
    let mut c = Cursor::new(&cd, 0, Eof::End, cd.len() as u64);
    let mut entries = Vec::new();
    let mut names = HashSet::new();
    for index in 0..count {
        let entry = (|| -> Result<ZipEntry, Stop> {
            if c.take(4, "central header signature")? != b"PK\x01\x02" {
                return bad(format!(
                    "central directory entry {index} has a bad signature"
                ));
            }
            c.take(4, "versions")?;
            let flags = c.u16("flags")?;
            let method = c.u16("method")?;
            c.take(8, "time, date, crc")?;
            let compressed32 = c.u32("compressed size")?;
            let size32 = c.u32("size")?;
            let name_len = c.u16("name length")?;
            let extra_len = c.u16("extra length")?;
            let comment_len = c.u16("comment length")?;
            c.take(8, "disk, attributes")?;
            let offset32 = c.u32("local header offset")?;
            let raw_name = c.take(u64::from(name_len), "name")?.to_vec();
            let extra = c.take(u64::from(extra_len), "extra field")?;
            c.take(u64::from(comment_len), "comment")?;
            let (mut size, mut compressed, mut offset) = (
                u64::from(size32),
                u64::from(compressed32),
                u64::from(offset32),
            );
            // The zip64 extra field holds the 64-bit values of the fields saturated above.
            let mut x = Cursor::new(extra, 0, Eof::End, extra.len() as u64);
            while x.remaining() >= 4 {
                let id = x.u16("extra id")?;
                let len = x.u16("extra length")?;
                let data = x.take(u64::from(len), "extra data")?;
                if id != 1 {
                    continue;
                }
                let mut z = Cursor::new(data, 0, Eof::End, data.len() as u64);
                if size32 == 0xFFFF_FFFF {
                    size = z.u64("zip64 size")?;
                }
                if compressed32 == 0xFFFF_FFFF {
                    compressed = z.u64("zip64 compressed size")?;
                }
                if offset32 == 0xFFFF_FFFF {
                    offset = z.u64("zip64 offset")?;
                }
            }
            Ok(ZipEntry {
                name: String::from_utf8_lossy(&raw_name).into_owned(),
                raw_name,
                flags,
                method,
                compressed,
                size,
                offset,
            })
        })();
        match entry {
            Ok(e) => {
                if !names.insert(e.raw_name.clone()) {
                    return Ok(Err(format!(
                        "entry {:?} appears twice: readers disagree on which one counts",
                        e.name
                    )));
                }
                entries.push(e);
            }
            Err(Stop::Bad(m)) => return Ok(Err(format!("central directory: {m}"))),
            Err(Stop::More) => return Ok(Err("central directory is truncated".into())),
        }
    }
    Ok(Ok(entries))
}
