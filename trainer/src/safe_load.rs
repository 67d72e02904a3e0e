//! Loading model weights as untrusted input.
//!
//! A model file is input from a stranger: trainprov never unpickles anything and checks every
//! byte of a safetensors header before it reads a single tensor. This module is the spec of
//! what "valid" means here; `trainprov scan` (issue 6) and the trainer's model loader share it.
//!
//! # Pickle formats are refused
//!
//! [`refuse_pickle`] refuses a file
//! 1. **by extension**, always, without reading it: `.bin`, `.pt`, `.pth`, `.ckpt`, `.pkl`,
//!    `.pickle` (case-insensitive). A safetensors file that was renamed to one of these is refused
//!    too; renaming it back is the fix.
//! 2. **by content**, whatever its name: a pickle of protocol 2 to 5 (byte 0 is the `PROTO`
//!    opcode `0x80`, byte 1 the protocol number), or a zip archive whose first entry is
//!    `data.pkl` or `<dir>/data.pkl` (what `torch.save` has written since PyTorch 1.6).
//!
//! Protocol 0 and 1 pickles have no magic bytes. They cannot pass as safetensors either: their
//! first eight bytes are ASCII opcodes, which read as a header length far above the limit. When
//! header validation fails on a file that starts like a pickle or a zip archive,
//! [`validate_safetensors_bytes`] reports [`LoadError::LooksLikePickle`] or
//! [`LoadError::LooksLikeZip`] instead of the raw header problem, so a `model.safetensors` that
//! is really a pickle is named as one. [`validate_safetensors`] and [`load_safetensors`] also
//! refuse the pickle extensions before they open the file.
//!
//! Why: unpickling calls whatever callables the file names (`os.system`, `builtins.exec`, ...),
//! so loading a pickle runs code of its author's choosing. The error message says how to convert:
//! `python -c "from safetensors.torch import save_file; import torch; save_file(torch.load('x.bin', weights_only=True), 'model.safetensors')"`
//! or transformers' `model.save_pretrained(dir, safe_serialization=True)`, in a sandbox if the
//! file's origin is unknown.
//!
//! # The safetensors checks, in order
//!
//! The file is `u64` little-endian header length `N`, then `N` bytes of header, then the data
//! section, whose byte offsets the header gives relative to its start.
//!
//! 1. The file holds at least 8 bytes ([`LoadError::TruncatedFile`]).
//! 2. `N <= 100_000_000`, the limit of the reference implementation (the `safetensors` crate's
//!    `MAX_HEADER_SIZE`) ([`LoadError::HeaderTooLarge`]), checked before any allocation.
//! 3. `8 + N <= file size` ([`LoadError::HeaderPastEof`]).
//! 4. The header is UTF-8 ([`LoadError::NotUtf8`]) and one JSON value with nothing but
//!    whitespace after it (the `safetensors` crate pads with spaces) ([`LoadError::BadJson`]).
//! 5. No object anywhere in the header repeats a key ([`LoadError::DuplicateKey`]). `serde_json`
//!    alone would keep the last of two `"w": {...}` entries without a word, so two readers could
//!    see different tensors under one name; the parser here is a strict visitor that refuses.
//! 6. The value is an object ([`LoadError::BadHeader`]). Its `__metadata__` entry, if present and
//!    not `null`, maps strings to strings ([`LoadError::BadMetadata`]).
//! 7. Every other entry is a tensor: an object with exactly the keys `dtype`, `shape` and
//!    `data_offsets`, no other ([`LoadError::BadTensorEntry`]).
//!    - `dtype` is one of `BOOL U8 I8 U16 I16 U32 I32 U64 I64 F16 BF16 F32 F64 F8_E4M3 F8_E5M2
//!      F8_E8M0 F4 F6_E2M3 F6_E3M2`, the set of `safetensors` 0.6 ([`LoadError::BadDtype`]).
//!    - `shape` is an array of integers in `0..=u64::MAX` that fit a `usize`
//!      ([`LoadError::BadShape`]: negative, fractional, too large).
//!    - `data_offsets` is `[begin, end]`, two such integers with `begin <= end`
//!      ([`LoadError::BadOffsets`]).
//!    - The element count (product of `shape`) and the size in bits (count × dtype bits) are
//!      computed with checked multiplication ([`LoadError::ShapeOverflow`]); the bit count of a
//!      sub-byte dtype must fill whole bytes ([`LoadError::PartialByte`]).
//!    - `end - begin` equals that size in bytes ([`LoadError::OffsetMismatch`]).
//! 8. Sorted by `(begin, end, name)`, the ranges tile the data section: the first starts at 0,
//!    each starts where the one before ended ([`LoadError::Gap`], [`LoadError::Overlap`]), and
//!    the last ends exactly at the end of the file: short of it is [`LoadError::NotCovering`]
//!    (trailing bytes that no tensor owns, where a second payload could hide), past it is
//!    [`LoadError::TruncatedFile`].
//!
//! The reference `safetensors` crate accepts every file these checks accept (the tests cross-check
//! it); it is more lenient in three places: it keeps the last of duplicate keys, ignores unknown
//! keys in a tensor entry, and does not report trailing bytes apart from truncation.
//!
//! # Loading
//!
//! [`load_safetensors`] validates the header from the file (reading only the length, the header
//! and the file size), then reads the file in one sequential pass (no `mmap`: this crate forbids
//! `unsafe`): the header once more, which must parse to the one validated, then each tensor's
//! bytes in file order, each built into a tensor before the next is read (so memory holds the
//! tensors plus one tensor's raw bytes, not the whole file as well), then one byte past the
//! expected end, which must not exist; a file that changes in between cannot slip through. `F32` is kept; `F16`, `BF16` and `F64` become
//! `F32` (the trainer computes in `F32`; [`load_safetensors_keep_half`] keeps `F16` and `BF16`,
//! for the model loader, which converts them per use); `U8`, `U32`, `I16`, `I32` and `I64` keep their dtype;
//! the rest (`BOOL`, `I8`, `U16`, `U64`, the 8-, 6- and 4-bit floats) is refused with
//! [`LoadError::UnsupportedDtype`].
//!
//! # Errors
//!
//! Every problem found in the bytes is a variant without a path; the functions that take a path
//! wrap it in [`LoadError::InFile`], whose message is one line:
//! `<path>: <problem>; <what to do>`. [`LoadError::problem`] gives the inner error back, for
//! `assert_eq!` in tests.
//!
//! ```
//! use trainer::safe_load::{validate_safetensors_bytes, LoadError};
//!
//! // A header claiming 2^40 bytes is refused before anything is allocated.
//! let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
//! bytes.extend_from_slice(b"{}");
//! assert_eq!(
//!     validate_safetensors_bytes(&bytes),
//!     Err(LoadError::HeaderTooLarge { len: 1 << 40, limit: 100_000_000 })
//! );
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The largest header accepted, in bytes: the `safetensors` crate's `MAX_HEADER_SIZE`.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// File extensions that mean a pickle-based format; refused by [`refuse_pickle`] without reading.
pub const PICKLE_EXTENSIONS: &[&str] = &["bin", "pt", "pth", "ckpt", "pkl", "pickle"];

/// How to turn a pickle checkpoint into safetensors; part of every pickle error message.
pub const CONVERT_HINT: &str = "convert it to safetensors where running its code is acceptable \
(a sandbox if its origin is unknown), e.g. `python -c \"from safetensors.torch import save_file; \
import torch; save_file(torch.load('x.bin', weights_only=True), 'model.safetensors')\"` or \
transformers' `model.save_pretrained(dir, safe_serialization=True)`";

/// One tensor entry of a validated header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, the header's key.
    pub name: String,
    /// The dtype as written in the header, e.g. `"F32"`.
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// `[begin, end)` in bytes, relative to the start of the data section.
    pub offsets: (usize, usize),
}

/// A validated safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// The header's length in bytes (the file's first 8 bytes); data starts at `8 + header_len`.
    pub header_len: u64,
    /// The tensors, sorted by `(begin, end, name)`; their ranges tile the data section.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map, if the header has one (an explicit `null` counts as none).
    pub metadata: Option<BTreeMap<String, String>>,
}

impl SafetensorsHeader {
    /// The byte offset in the file where the data section starts.
    pub fn data_start(&self) -> u64 {
        8 + self.header_len
    }

    /// The length of the data section in bytes (the end of the last range).
    pub fn data_len(&self) -> usize {
        self.tensors.iter().map(|t| t.offsets.1).max().unwrap_or(0)
    }
}

/// What a pickle check found; see [`refuse_pickle`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PickleFormat {
    /// The file name ends in one of [`PICKLE_EXTENSIONS`] (the extension, lower-cased, no dot).
    Extension(String),
    /// The bytes start with the pickle `PROTO` opcode and this protocol number (2 to 5).
    Protocol(u8),
    /// A zip archive whose first entry is `data.pkl`: a PyTorch checkpoint.
    TorchZip,
}

impl fmt::Display for PickleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickleFormat::Extension(ext) => {
                write!(f, "a `.{ext}` file, a pickle-based checkpoint format")
            }
            PickleFormat::Protocol(p) => write!(f, "a Python pickle, protocol {p}"),
            PickleFormat::TorchZip => {
                write!(
                    f,
                    "a PyTorch checkpoint, a zip archive around a pickled data.pkl"
                )
            }
        }
    }
}

/// Why a model file was refused. `Display` is one line: `<path>: <problem>; <what to do>` (the
/// path comes from [`LoadError::InFile`], [`LoadError::Io`] or [`LoadError::Pickle`]).
///
/// Equality compares the `Debug` forms, since `std::io::Error` has no `PartialEq`; for `Io` that
/// compares the path, the error kind and the OS code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}; check that the path exists and is readable", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file (a directory, a FIFO, a device).
    #[error("{}: not a regular file; pass the path of a .safetensors file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A pickle-based file, refused because loading it would run code.
    #[error(
        "{}: refusing {format}: unpickling runs code named by the file's author; {CONVERT_HINT}",
        path.display()
    )]
    Pickle {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        format: PickleFormat,
    },
    /// A problem found in the bytes of `path`.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The problem.
        source: Box<LoadError>,
    },
    /// The header is invalid and the file starts like a pickle (`0x80`, protocol 2 to 5).
    #[error(
        "not a safetensors file: it starts like a Python pickle (protocol {protocol}), and \
         unpickling runs code named by the file's author; {CONVERT_HINT}"
    )]
    LooksLikePickle {
        /// The protocol byte.
        protocol: u8,
    },
    /// The header is invalid and the file starts like a zip archive (`PK\x03\x04`).
    #[error(
        "not a safetensors file: it is a zip archive, perhaps a PyTorch checkpoint (pickle \
         inside, which runs code when loaded); {CONVERT_HINT}"
    )]
    LooksLikeZip,
    /// The file is shorter than its header says.
    #[error(
        "truncated: {expected} bytes needed, the file has {got}; download or copy the file again"
    )]
    TruncatedFile {
        /// Bytes the header requires.
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// The header length is above [`MAX_HEADER_LEN`].
    #[error(
        "header length {len} is above the limit of {limit} bytes; this is not a valid \
         safetensors file (or a hostile one)"
    )]
    HeaderTooLarge {
        /// The length the file claims.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The header length points past the end of the file.
    #[error(
        "header length {len} runs past the end of the file ({available} bytes after the length \
         field); the file is truncated or not safetensors"
    )]
    HeaderPastEof {
        /// The length the file claims.
        len: u64,
        /// Bytes after the 8-byte length field.
        available: u64,
    },
    /// The header is not UTF-8.
    #[error(
        "header is not UTF-8 (invalid byte at header offset {valid_up_to}); the file is corrupt \
         or not safetensors"
    )]
    NotUtf8 {
        /// Length of the valid UTF-8 prefix.
        valid_up_to: usize,
    },
    /// The header is not one well-formed JSON value.
    #[error("header is not valid JSON ({detail}); the file is corrupt or not safetensors")]
    BadJson {
        /// serde_json's message, with line and column.
        detail: String,
    },
    /// An object in the header repeats a key.
    #[error(
        "header repeats the key {key:?}; readers disagree on which entry wins, so the file is \
         refused: rewrite it with one entry per name"
    )]
    DuplicateKey {
        /// The key; a nested key is written `outer.inner`.
        key: String,
    },
    /// The header's structure is wrong (e.g. not an object).
    #[error("header is malformed: {detail}; the file is corrupt or not safetensors")]
    BadHeader {
        /// What is wrong.
        detail: String,
    },
    /// `__metadata__` is not a string-to-string map.
    #[error("`__metadata__` is malformed: {detail}; it must map strings to strings")]
    BadMetadata {
        /// What is wrong.
        detail: String,
    },
    /// A tensor entry is not `{dtype, shape, data_offsets}`.
    #[error(
        "tensor {tensor:?}: {detail}; an entry must be an object with exactly dtype, shape and \
         data_offsets"
    )]
    BadTensorEntry {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        detail: String,
    },
    /// An unknown dtype.
    #[error(
        "tensor {tensor:?}: unknown dtype {dtype:?}; expected one of BOOL, U8, I8, U16, I16, \
         U32, I32, U64, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2, F8_E8M0, F4, F6_E2M3, F6_E3M2"
    )]
    BadDtype {
        /// The tensor.
        tensor: String,
        /// The dtype as written.
        dtype: String,
    },
    /// A malformed shape.
    #[error("tensor {tensor:?}: bad shape: {detail}; dimensions must be non-negative integers")]
    BadShape {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        detail: String,
    },
    /// Malformed data offsets.
    #[error(
        "tensor {tensor:?}: bad data_offsets: {detail}; they must be [begin, end] with \
         0 <= begin <= end"
    )]
    BadOffsets {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        detail: String,
    },
    /// Element count or byte size overflows.
    #[error(
        "tensor {tensor:?}: its element count or byte size overflows a {}-bit integer; the \
         shape is corrupt or hostile",
        usize::BITS
    )]
    ShapeOverflow {
        /// The tensor.
        tensor: String,
    },
    /// A sub-byte dtype whose element count does not fill whole bytes.
    #[error(
        "tensor {tensor:?}: {bits} bits of data do not fill whole bytes; the shape does not \
         suit the dtype"
    )]
    PartialByte {
        /// The tensor.
        tensor: String,
        /// Its size in bits.
        bits: usize,
    },
    /// `end - begin` differs from what dtype and shape require.
    #[error(
        "tensor {tensor:?}: dtype and shape need {expected} bytes, data_offsets span {got}; the \
         header is corrupt"
    )]
    OffsetMismatch {
        /// The tensor.
        tensor: String,
        /// Bytes required by dtype and shape.
        expected: usize,
        /// `end - begin`.
        got: usize,
    },
    /// Two tensors share bytes.
    #[error(
        "tensors {a:?} and {b:?} overlap in the data section; one byte must belong to one tensor"
    )]
    Overlap {
        /// The earlier tensor (by offset).
        a: String,
        /// The later tensor.
        b: String,
    },
    /// Bytes between two tensors (or before the first) that no tensor owns.
    #[error(
        "bytes {from}..{to} of the data section belong to no tensor (before {next:?}); hidden \
         bytes are refused"
    )]
    Gap {
        /// Where the gap starts (end of the previous tensor, or 0).
        from: usize,
        /// Where the gap ends (start of `next`).
        to: usize,
        /// The tensor after the gap.
        next: String,
    },
    /// Bytes after the last tensor that no tensor owns.
    #[error(
        "the tensors cover {covered} bytes but the data section holds {data_len}: trailing \
         bytes belong to no tensor; hidden bytes are refused"
    )]
    NotCovering {
        /// The end of the last tensor.
        covered: u64,
        /// The data section's length.
        data_len: u64,
    },
    /// A valid dtype the loader does not turn into a tensor.
    #[error(
        "tensor {tensor:?}: dtype {dtype} is not supported by the trainer; convert the \
         checkpoint to F32, F16 or BF16"
    )]
    UnsupportedDtype {
        /// The tensor.
        tensor: String,
        /// The dtype.
        dtype: String,
    },
    /// candle refused to build the tensor.
    #[error("tensor {tensor:?}: cannot build it: {detail}")]
    Tensor {
        /// The tensor.
        tensor: String,
        /// candle's message.
        detail: String,
    },
    /// The file changed between header validation and reading the data.
    #[error("the file changed while it was read; retry once nothing else writes it")]
    FileChanged,
}

impl PartialEq for LoadError {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

impl LoadError {
    /// The problem without its file: the inner error of [`LoadError::InFile`], else `self`.
    pub fn problem(&self) -> &LoadError {
        match self {
            LoadError::InFile { source, .. } => source.problem(),
            other => other,
        }
    }

    /// The file the error is about, if it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            LoadError::Io { path, .. }
            | LoadError::NotAFile { path }
            | LoadError::Pickle { path, .. }
            | LoadError::InFile { path, .. } => Some(path),
            _ => None,
        }
    }

    /// This error as found in `path` (errors that already name a file are kept).
    pub(crate) fn in_file(self, path: &Path) -> LoadError {
        match self {
            e @ (LoadError::Io { .. }
            | LoadError::NotAFile { .. }
            | LoadError::Pickle { .. }
            | LoadError::InFile { .. }) => e,
            e => LoadError::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        }
    }
}

/// The dtypes of `safetensors` 0.6 and their size in bits.
fn dtype_bits(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" => 64,
        _ => return None,
    })
}

/// Validates a whole safetensors file held in memory: every check of the module doc.
///
/// Pure (no I/O, no path in its errors), so it can be fuzzed; it never panics.
pub fn validate_safetensors_bytes(bytes: &[u8]) -> Result<SafetensorsHeader, LoadError> {
    validate_bytes_inner(bytes).map_err(|e| disguise_hint(bytes, e))
}

fn validate_bytes_inner(bytes: &[u8]) -> Result<SafetensorsHeader, LoadError> {
    let total = bytes.len() as u64;
    let header_len = read_header_len(bytes.get(..8), total)?;
    let start = 8usize;
    // header_len <= MAX_HEADER_LEN and 8 + header_len <= total, so this fits.
    let end = start + header_len as usize;
    let header = bytes.get(start..end).ok_or(LoadError::HeaderPastEof {
        len: header_len,
        available: total.saturating_sub(8),
    })?;
    parse_header(header_len, header, total)
}

/// Checks the length field: present, within the limit, inside the file.
fn read_header_len(first8: Option<&[u8]>, total: u64) -> Result<u64, LoadError> {
    let first8: [u8; 8] =
        first8
            .and_then(|s| s.try_into().ok())
            .ok_or(LoadError::TruncatedFile {
                expected: 8,
                got: total,
            })?;
    let len = u64::from_le_bytes(first8);
    if len > MAX_HEADER_LEN {
        return Err(LoadError::HeaderTooLarge {
            len,
            limit: MAX_HEADER_LEN,
        });
    }
    let available = total.saturating_sub(8);
    if len > available {
        return Err(LoadError::HeaderPastEof { len, available });
    }
    Ok(len)
}

/// On a failed header, a file that starts like a pickle or a zip is named as one.
fn disguise_hint(bytes: &[u8], err: LoadError) -> LoadError {
    // A real header starts with `{` at byte 8; a pickle or zip practically never has it there.
    if bytes.get(8) == Some(&b'{') {
        return err;
    }
    match sniff(bytes) {
        Some(PickleFormat::Protocol(protocol)) => LoadError::LooksLikePickle { protocol },
        Some(_) => LoadError::LooksLikeZip,
        None if bytes.starts_with(ZIP_MAGIC) => LoadError::LooksLikeZip,
        None => err,
    }
}

const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Recognises a pickle (protocol 2-5) or a PyTorch zip from the first bytes of a file.
fn sniff(head: &[u8]) -> Option<PickleFormat> {
    if let [0x80, p @ 2..=5, ..] = head {
        return Some(PickleFormat::Protocol(*p));
    }
    if head.starts_with(ZIP_MAGIC) {
        // Local file header: name length at 26 (u16 LE), name at 30.
        let name_len = head
            .get(26..28)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))?;
        let name = head.get(30..30 + name_len)?;
        if name == b"data.pkl" || name.ends_with(b"/data.pkl") {
            return Some(PickleFormat::TorchZip);
        }
    }
    None
}

/// Validates the header of a safetensors file, reading only the 8-byte length, the header and
/// the file's size: nothing of the data section is read. Pickle extensions are refused first.
pub fn validate_safetensors(path: &Path) -> Result<SafetensorsHeader, LoadError> {
    refuse_pickle_extension(path)?;
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs_err::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(LoadError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let total = meta.len();
    let mut head = Vec::with_capacity(8);
    (&mut file).take(8).read_to_end(&mut head).map_err(io)?;
    let result = read_header_len(Some(&head), total).and_then(|header_len| {
        let mut header = Vec::new();
        // header_len <= MAX_HEADER_LEN: the allocation is bounded.
        (&mut file)
            .take(header_len)
            .read_to_end(&mut header)
            .map_err(io)?;
        if (header.len() as u64) < header_len {
            return Err(LoadError::FileChanged);
        }
        parse_header(header_len, &header, total)
    });
    result.map_err(|e| match e {
        e @ LoadError::Io { .. } => e,
        // The length field and the header's first byte are enough to recognise a pickle or zip.
        e => {
            let mut first = head.clone();
            first.extend(file_first_header_byte(path));
            disguise_hint(&first, e).in_file(path)
        }
    })
}

/// Byte 8 of the file, if it can be read (used only to word an error).
fn file_first_header_byte(path: &Path) -> Option<u8> {
    let mut file = fs_err::File::open(path).ok()?;
    let mut buf = [0u8; 9];
    file.read_exact(&mut buf).ok()?;
    Some(buf[8])
}

/// Validates and loads every tensor of a safetensors file; see the module doc for dtypes.
pub fn load_safetensors(
    path: &Path,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>, LoadError> {
    load(path, device, false)
}

/// Like [`load_safetensors`], but `F16` and `BF16` tensors keep their dtype (the model loader
/// holds half-precision matrices as they are and converts them per use; see
/// `crate::model`).
pub fn load_safetensors_keep_half(
    path: &Path,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>, LoadError> {
    load(path, device, true)
}

fn load(
    path: &Path,
    device: &Device,
    keep_half: bool,
) -> Result<BTreeMap<String, Tensor>, LoadError> {
    let header = validate_safetensors(path)?;
    let expected = header.data_start() + header.data_len() as u64;
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    // One sequential pass over the file: the header again (it must be the one validated), then
    // each tensor's bytes in file order, each turned into a tensor before the next is read (so
    // the raw bytes of one tensor at a time are held, not the whole file), then the end of the
    // file, which must come exactly where the validated header says.
    let file = fs_err::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let changed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => LoadError::FileChanged.in_file(path),
        _ => io(e),
    };
    let mut head = vec![0u8; usize::try_from(header.data_start()).unwrap_or(usize::MAX)];
    reader.read_exact(&mut head).map_err(changed)?;
    let fresh = read_header_len(head.get(..8), expected)
        .and_then(|len| parse_header(len, head.get(8..).unwrap_or_default(), expected))
        .map_err(|e| e.in_file(path))?;
    if fresh != header {
        return Err(LoadError::FileChanged.in_file(path));
    }
    let mut out = BTreeMap::new();
    let mut at = 0usize;
    // `tensors` is sorted by offsets and the ranges tile the data section (validated).
    for info in &fresh.tensors {
        if info.offsets.0 != at {
            return Err(LoadError::FileChanged.in_file(path));
        }
        let mut raw = vec![0u8; info.offsets.1 - info.offsets.0];
        reader.read_exact(&mut raw).map_err(changed)?;
        at = info.offsets.1;
        let tensor = build_tensor(info, &raw, device, keep_half).map_err(|e| e.in_file(path))?;
        out.insert(info.name.clone(), tensor);
    }
    let mut more = [0u8; 1];
    if reader.read(&mut more).map_err(io)? != 0 {
        return Err(LoadError::FileChanged.in_file(path));
    }
    Ok(out)
}

fn build_tensor(
    info: &TensorInfo,
    raw: &[u8],
    device: &Device,
    keep_half: bool,
) -> Result<Tensor, LoadError> {
    let shape = info.shape.as_slice();
    let built = match info.dtype.as_str() {
        "F32" => Tensor::from_vec(le::<4, f32>(raw, f32::from_le_bytes), shape, device),
        "F16" if keep_half => Tensor::from_vec(
            le::<2, half::f16>(raw, half::f16::from_le_bytes),
            shape,
            device,
        ),
        "BF16" if keep_half => Tensor::from_vec(
            le::<2, half::bf16>(raw, half::bf16::from_le_bytes),
            shape,
            device,
        ),
        "F16" => Tensor::from_vec(
            le::<2, f32>(raw, |b| half::f16::from_le_bytes(b).to_f32()),
            shape,
            device,
        ),
        "BF16" => Tensor::from_vec(
            le::<2, f32>(raw, |b| half::bf16::from_le_bytes(b).to_f32()),
            shape,
            device,
        ),
        "F64" => Tensor::from_vec(
            le::<8, f32>(raw, |b| f64::from_le_bytes(b) as f32),
            shape,
            device,
        ),
        "U8" => Tensor::from_vec(raw.to_vec(), shape, device),
        "U32" => Tensor::from_vec(le::<4, u32>(raw, u32::from_le_bytes), shape, device),
        "I16" => Tensor::from_vec(le::<2, i16>(raw, i16::from_le_bytes), shape, device),
        "I32" => Tensor::from_vec(le::<4, i32>(raw, i32::from_le_bytes), shape, device),
        "I64" => Tensor::from_vec(le::<8, i64>(raw, i64::from_le_bytes), shape, device),
        other => {
            return Err(LoadError::UnsupportedDtype {
                tensor: info.name.clone(),
                dtype: other.to_string(),
            })
        }
    };
    built.map_err(|e| LoadError::Tensor {
        tensor: info.name.clone(),
        detail: e.to_string(),
    })
}

/// Decodes little-endian elements of `N` bytes (`raw.len()` is a multiple of `N` once validated).
fn le<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

pub(crate) fn refuse_pickle_extension(path: &Path) -> Result<(), LoadError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext {
        Some(ext) if PICKLE_EXTENSIONS.contains(&ext.as_str()) => Err(LoadError::Pickle {
            path: path.to_path_buf(),
            format: PickleFormat::Extension(ext),
        }),
        _ => Ok(()),
    }
}

/// Refuses pickle-based model files: by extension without reading the file, then by content
/// (pickle protocol 2-5, PyTorch zip). `Ok(())` means "not recognisably a pickle", not "valid":
/// validate safetensors files with [`validate_safetensors`].
pub fn refuse_pickle(path: &Path) -> Result<(), LoadError> {
    refuse_pickle_extension(path)?;
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = fs_err::File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(LoadError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    // A zip local header is 30 bytes plus the name (at most 65535 bytes).
    let mut head = Vec::new();
    file.take(30 + 65_535).read_to_end(&mut head).map_err(io)?;
    match sniff(&head) {
        Some(format) => Err(LoadError::Pickle {
            path: path.to_path_buf(),
            format,
        }),
        None => Ok(()),
    }
}

// ---- the header parser ----

/// Parses and checks the header (checks 4 to 8 of the module doc). `total` is the file size.
fn parse_header(
    header_len: u64,
    header: &[u8],
    total: u64,
) -> Result<SafetensorsHeader, LoadError> {
    let text = std::str::from_utf8(header).map_err(|e| LoadError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let root = parse_strict_json(text)?;
    let Value::Object(entries) = root else {
        return Err(LoadError::BadHeader {
            detail: format!("the header is a JSON {}, not an object", kind(&root)),
        });
    };
    let mut metadata = None;
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if name == "__metadata__" {
            metadata = parse_metadata(value)?;
        } else {
            tensors.push(parse_tensor(name, value)?);
        }
    }
    tensors.sort_by(|x, y| (x.offsets, &x.name).cmp(&(y.offsets, &y.name)));

    let mut covered = 0usize;
    let mut prev: Option<&str> = None;
    for t in &tensors {
        let (begin, end) = t.offsets;
        if begin > covered {
            return Err(LoadError::Gap {
                from: covered,
                to: begin,
                next: t.name.clone(),
            });
        }
        if begin < covered {
            return Err(LoadError::Overlap {
                a: prev.unwrap_or_default().to_string(),
                b: t.name.clone(),
            });
        }
        covered = end;
        prev = Some(&t.name);
    }
    let data_len = total.saturating_sub(8).saturating_sub(header_len);
    let covered = covered as u64;
    if covered > data_len {
        return Err(LoadError::TruncatedFile {
            expected: 8 + header_len + covered,
            got: total,
        });
    }
    if covered < data_len {
        return Err(LoadError::NotCovering { covered, data_len });
    }
    Ok(SafetensorsHeader {
        header_len,
        tensors,
        metadata,
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn parse_metadata(value: Value) -> Result<Option<BTreeMap<String, String>>, LoadError> {
    let map = match value {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        other => {
            return Err(LoadError::BadMetadata {
                detail: format!("it is a {}, not an object", kind(&other)),
            })
        }
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        match v {
            Value::String(s) => {
                out.insert(k, s);
            }
            other => {
                return Err(LoadError::BadMetadata {
                    detail: format!("the value of {k:?} is a {}, not a string", kind(&other)),
                })
            }
        }
    }
    Ok(Some(out))
}

fn parse_tensor(name: String, value: Value) -> Result<TensorInfo, LoadError> {
    let entry_err = |detail: String| LoadError::BadTensorEntry {
        tensor: name.clone(),
        detail,
    };
    let Value::Object(mut map) = value else {
        return Err(entry_err(format!(
            "it is a {}, not an object",
            kind(&value)
        )));
    };
    if let Some(extra) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(entry_err(format!("unexpected key {extra:?}")));
    }
    let mut take = |key: &str| {
        map.remove(key)
            .ok_or_else(|| entry_err(format!("missing {key:?}")))
    };
    let dtype = take("dtype")?;
    let shape = take("shape")?;
    let offsets = take("data_offsets")?;

    let dtype = match dtype {
        Value::String(s) => s,
        other => {
            return Err(LoadError::BadDtype {
                tensor: name,
                dtype: other.to_string(),
            })
        }
    };
    let Some(bits) = dtype_bits(&dtype) else {
        return Err(LoadError::BadDtype {
            tensor: name,
            dtype,
        });
    };

    let index = |v: &Value| -> Result<usize, String> {
        match v {
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    usize::try_from(u).map_err(|_| format!("{u} does not fit a usize"))
                } else if n.as_i64().is_some() {
                    Err(format!("{n} is negative"))
                } else {
                    Err(format!("{n} is not an integer in 0..=2^64-1"))
                }
            }
            other => Err(format!("{} is a {}, not an integer", other, kind(other))),
        }
    };

    let Value::Array(dims) = shape else {
        return Err(LoadError::BadShape {
            tensor: name,
            detail: format!("it is a {}, not an array", kind(&shape)),
        });
    };
    let mut shape = Vec::with_capacity(dims.len());
    for d in &dims {
        match index(d) {
            Ok(d) => shape.push(d),
            Err(detail) => {
                return Err(LoadError::BadShape {
                    tensor: name,
                    detail,
                })
            }
        }
    }

    let offsets_err = |detail: String| LoadError::BadOffsets {
        tensor: name.clone(),
        detail,
    };
    let (begin, end) = match &offsets {
        Value::Array(pair) if pair.len() == 2 => (
            index(&pair[0]).map_err(offsets_err)?,
            index(&pair[1]).map_err(offsets_err)?,
        ),
        other => {
            return Err(offsets_err(format!(
                "{} is not an array of two integers",
                other
            )))
        }
    };
    if begin > end {
        return Err(offsets_err(format!("begin {begin} is after end {end}")));
    }

    let overflow = || LoadError::ShapeOverflow {
        tensor: name.clone(),
    };
    let nelements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let nbits = nelements.checked_mul(bits).ok_or_else(overflow)?;
    if nbits % 8 != 0 {
        return Err(LoadError::PartialByte {
            tensor: name,
            bits: nbits,
        });
    }
    let nbytes = nbits / 8;
    if end - begin != nbytes {
        return Err(LoadError::OffsetMismatch {
            tensor: name,
            expected: nbytes,
            got: end - begin,
        });
    }
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        offsets: (begin, end),
    })
}

/// Parses one JSON value (trailing whitespace allowed), refusing repeated keys in any object.
fn parse_strict_json(text: &str) -> Result<Value, LoadError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = StrictSeed {
        duplicate: &duplicate,
        parent: None,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => match duplicate.into_inner() {
            Some(key) => Err(LoadError::DuplicateKey { key }),
            None => Err(LoadError::BadJson {
                detail: e.to_string(),
            }),
        },
    }
}

/// A `serde_json::Value` deserializer that errors on the first repeated key, recording it.
#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    duplicate: &'a RefCell<Option<String>>,
    /// The key under which this value sits, for nested duplicate reports.
    parent: Option<&'a str>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictSeed {
            duplicate: self.duplicate,
            parent: self.parent,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let shown = match self.parent {
                    Some(p) => format!("{p}.{key}"),
                    None => key,
                };
                let msg = format!("duplicate key `{shown}`");
                *self.duplicate.borrow_mut() = Some(shown);
                return Err(A::Error::custom(msg));
            }
            let value = map.next_value_seed(StrictSeed {
                duplicate: self.duplicate,
                parent: Some(&key),
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}
