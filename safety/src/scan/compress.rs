//! Compressed streams: what `joblib.dump(..., compress=...)` and `pandas.to_pickle("x.pkl.gz")`
//! write, and the non-deflate methods of zip entries. Every stream is decompressed within the
//! file's budget ([`MAX_INFLATE_ENTRY`] per layer, [`MAX_INFLATE_TOTAL`] per file) and the inner
//! bytes are scanned by content. Decoders are pure Rust: `flate2` (miniz_oxide), `lzma-rs`,
//! `bzip2` (libbz2-rs-sys), `ruzstd`.

use std::io::{BufRead, Write};

use super::*;

/// A compression format, recognised by its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    /// `1f 8b`, RFC 1952 (members concatenated).
    Gzip,
    /// `78 01|5e|9c|da`, RFC 1950 (joblib's `zlib`).
    Zlib,
    /// `fd 37 7a 58 5a 00`.
    Xz,
    /// `5d` + a dictionary size + a size or `ff`×8: the legacy `.lzma` ("alone") format.
    Lzma,
    /// `BZh1`..`BZh9` + a block or end-of-stream magic.
    Bzip2,
    /// `28 b5 2f fd`.
    Zstd,
    /// Raw deflate (zip method 8); never sniffed.
    Deflate,
}

impl Codec {
    pub(super) fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zlib => "zlib",
            Codec::Xz => "xz",
            Codec::Lzma => "lzma",
            Codec::Bzip2 => "bzip2",
            Codec::Zstd => "zstd",
            Codec::Deflate => "deflate",
        }
    }

    pub(super) fn sniff(head: &[u8]) -> Option<Codec> {
        match head {
            [0x1f, 0x8b, 0x08, ..] => Some(Codec::Gzip),
            [0x78, 0x01 | 0x5e | 0x9c | 0xda, ..] => Some(Codec::Zlib),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Some(Codec::Xz),
            [b'B', b'Z', b'h', b'1'..=b'9', rest @ ..]
                if rest.starts_with(b"\x31\x41\x59\x26\x53\x59")
                    || rest.starts_with(b"\x17\x72\x45\x38\x50\x90") =>
            {
                Some(Codec::Bzip2)
            }
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Codec::Zstd),
            [0x5d, d0, d1, d2, d3, size @ ..] if size.len() >= 8 => {
                let dict = u32::from_le_bytes([*d0, *d1, *d2, *d3]);
                let size = size.get(..8).unwrap_or_default();
                let unknown = size.iter().all(|&b| b == 0xff);
                let plausible = size.get(6..8) == Some(&[0, 0]);
                (dict >= 4096 && (unknown || plausible)).then_some(Codec::Lzma)
            }
            _ => None,
        }
    }

    /// A magic number that text or other data could carry by chance: on a decoding error the
    /// bytes are read as something else.
    fn weak(self) -> bool {
        matches!(self, Codec::Zlib | Codec::Lzma)
    }
}

/// A decompressed stream.
pub(super) struct Decoded {
    pub(super) bytes: Vec<u8>,
    /// The stream ended within the limit (`false`: cut at the limit, more follows).
    pub(super) complete: bool,
}

/// A writer that takes `limit + 1` bytes and then fails with [`OverLimit`].
struct Capped {
    out: Vec<u8>,
    limit: usize,
}

#[derive(Debug)]
struct OverLimit;

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("output limit reached")
    }
}

impl std::error::Error for OverLimit {}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = (self.limit + 1).saturating_sub(self.out.len());
        if room == 0 {
            return Err(io::Error::other(OverLimit));
        }
        let n = room.min(buf.len());
        self.out.extend_from_slice(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn over_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<OverLimit>())
}

/// Reads `reader` into memory, at most `limit` bytes (one more tells that the stream goes on).
fn read_capped(mut reader: impl Read, limit: u64) -> Result<Decoded, String> {
    let mut bytes = Vec::new();
    let cap = limit.saturating_add(1);
    match (&mut reader).take(cap).read_to_end(&mut bytes) {
        Ok(_) => Ok(finish(bytes, limit)),
        Err(e) if over_limit(&e) => Ok(finish(bytes, limit)),
        Err(e) => Err(e.to_string()),
    }
}

fn finish(mut bytes: Vec<u8>, limit: u64) -> Decoded {
    let complete = bytes.len() as u64 <= limit;
    bytes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Decoded { bytes, complete }
}

/// Decompresses `input` (the whole stream, or a zip entry's data), keeping at most `limit`
/// bytes. `size`: the uncompressed size where a container states it (zip `lzma`).
pub(super) fn decode(
    codec: Codec,
    mut input: impl BufRead,
    limit: u64,
    size: Option<u64>,
) -> Result<Decoded, String> {
    let writer_limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let pushed = |result: Result<(), String>, out: Capped| match result {
        Ok(()) => Ok(finish(out.out, limit)),
        Err(_) if out.out.len() > writer_limit => Ok(finish(out.out, limit)),
        Err(e) => Err(e),
    };
    match codec {
        Codec::Gzip => read_capped(flate2::bufread::MultiGzDecoder::new(input), limit),
        Codec::Zlib => read_capped(flate2::bufread::ZlibDecoder::new(input), limit),
        Codec::Deflate => read_capped(flate2::bufread::DeflateDecoder::new(input), limit),
        Codec::Bzip2 => read_capped(bzip2::bufread::MultiBzDecoder::new(input), limit),
        Codec::Zstd => {
            let mut out = Vec::new();
            // Frames one after another, as `zstd -d` reads them.
            loop {
                let room = limit.saturating_sub(out.len() as u64);
                let decoder = ruzstd::decoding::StreamingDecoder::new(&mut input)
                    .map_err(|e| e.to_string())?;
                let part = read_capped(decoder, room)?;
                out.extend_from_slice(&part.bytes);
                if !part.complete {
                    return Ok(Decoded {
                        bytes: out,
                        complete: false,
                    });
                }
                if input.fill_buf().map_err(|e| e.to_string())?.is_empty() {
                    return Ok(Decoded {
                        bytes: out,
                        complete: true,
                    });
                }
            }
        }
        Codec::Xz => {
            let mut out = Capped {
                out: Vec::new(),
                limit: writer_limit,
            };
            let result = lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| e.to_string());
            pushed(result, out)
        }
        Codec::Lzma => {
            let mut out = Capped {
                out: Vec::new(),
                limit: writer_limit,
            };
            let options = lzma_rs::decompress::Options {
                unpacked_size: match size {
                    Some(n) => lzma_rs::decompress::UnpackedSize::UseProvided(Some(n)),
                    None => lzma_rs::decompress::UnpackedSize::ReadFromHeader,
                },
                memlimit: None,
                allow_incomplete: false,
            };
            let result = lzma_rs::lzma_decompress_with_options(&mut input, &mut out, &options)
                .map_err(|e| e.to_string());
            pushed(result, out)
        }
    }
}

/// Scans a compressed file (`entry` `None`) or entry: decompresses it within the budget and
/// scans the inner bytes by content. `Ok(false)`: a weak magic number whose data did not decode;
/// the caller reads the bytes as something else.
pub(super) fn scan_compressed(
    blob: &dyn Blob,
    codec: Codec,
    entry: Option<&str>,
    depth: u32,
    r: &mut Builder,
) -> io::Result<bool> {
    let name = codec.name();
    let inner_entry = match entry {
        Some(e) => format!("{e} [{name}]"),
        None => format!("[{name}]"),
    };
    let allowance = r.allowance();
    let decoded = decode(
        codec,
        BlobReader::new(blob, 0, blob.size()),
        allowance,
        None,
    );
    let decoded = match decoded {
        Ok(d) => d,
        Err(_) if codec.weak() => return Ok(false),
        Err(message) => {
            if entry.is_none() {
                r.format = Format::Compressed { codec: name };
                r.summary = format!("{name}-compressed data");
            }
            r.add(
                Rule::ZipInvalid,
                prefixed(entry, &format!("corrupt {name} stream: {message}")),
                None,
                entry,
            );
            return Ok(true);
        }
    };
    r.inflated = r.inflated.saturating_add(decoded.bytes.len() as u64);
    if entry.is_none() {
        r.format = Format::Compressed { codec: name };
        r.summary = format!("{name}-compressed data");
    }
    if !decoded.complete {
        r.over_budget(
            entry,
            format!(
                "the {name} stream decompresses past {allowance} bytes (limits: \
                 {MAX_INFLATE_ENTRY} per stream or entry, {MAX_INFLATE_TOTAL} per file): a \
                 decompression bomb, or too large to inspect; not scanned"
            ),
        );
        return Ok(true);
    }
    let size = decoded.bytes.len() as u64;
    let inner = PrefixBlob {
        bytes: decoded.bytes,
        size,
    };
    let what = scan_embedded(&inner, &inner_entry, Hint::default(), depth, r)?;
    if entry.is_none() {
        let mut summary = format!("{name}-compressed {}", what.describe());
        if what == Embedded::Pickle || !r.globals.is_empty() {
            summary.push_str(&format!(
                ", {}",
                plural(r.globals.len(), "global", "globals")
            ));
        }
        r.summary = summary;
    }
    Ok(true)
}
