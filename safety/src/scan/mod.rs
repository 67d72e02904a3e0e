//! Judge model files by their bytes, without loading or executing anything: `trainprov scan`.
//!
//! A checkpoint from a stranger is a program: unpickling calls whatever the file names. This
//! module identifies each file by its **bytes, never its name**, reads it as data only (a pickle
//! is walked opcode by opcode by a symbolic stack machine that never imports or calls anything),
//! and returns a [`FileReport`] with a [`Verdict`] and the [`Finding`]s behind it.
//!
//! # Formats, as recognised
//!
//! | [`Format`] | first bytes | what is checked |
//! |---|---|---|
//! | `gguf` | `GGUF` | version 2 or 3, counts, every metadata entry, every tensor info, offsets |
//! | `npy` | `\x93NUMPY` | version, header dict (`descr`, `fortran_order`, `shape`), data length, object dtype |
//! | `torch_zip` | `PK\x03\x04`, an entry `data.pkl` or `*/data.pkl` | the archive's directory, then every entry by content (below) |
//! | `npz` | `PK\x03\x04`, every entry `*.npy` | every entry as a `.npy` |
//! | `zip` | `PK\x03\x04` or `PK\x05\x06`, anything else | every entry by content; root `config.json` with `model.weights.h5` or `metadata.json` is a Keras archive: uninspectable |
//! | `safetensors` | `u64` LE header length `N <= 100_000_000`, `{` at byte 8 | everything [`trainer::safe_load`] checks (that module is the spec), and the same bytes walked as a pickle (polyglot) |
//! | `pickle` | `0x80` `PROTO` with protocol 0 to 5, or `0x95` `FRAME` | the opcode stream (below); anything wrong is a finding |
//! | `compressed` | gzip `1f 8b 08`, zlib `78 01/5e/9c/da`, xz `fd 37 7a 58 5a 00`, `.lzma` `5d` + dictionary size + size, bzip2 `BZh[1-9]` + block magic, zstd `28 b5 2f fd` | decompressed within the budget; the inner bytes by content (a pickle, a zip, ...) |
//! | `uninspectable` | HDF5 `\x89HDF\r\n\x1a\n`, 7z, rar, tar (`ustar` at 257), lz4 frame; by name `saved_model.pb(txt)`, `keras_metadata.pb` | nothing: reported `uninspectable`, never clean |
//! | `safetensors` | `{` at byte 8 with an oversize length, the 8 bytes before not all text | reported invalid: header too large |
//! | `pickle` (no `PROTO`) | any opcode that can start a pickle (`MARK`, an opcode pushing a constant, `GLOBAL`, `PERSID`, `EXT1/2/4`) | a pickle if the walk reaches `STOP`, or imports a deny-listed global, or calls an imported one (`REDUCE`, `BUILD`, `OBJ`, `INST`, `NEWOBJ*`), before it fails |
//! | `unknown` | anything else | its chat templates (`*.jinja`, a JSON object's `chat_template`); else nothing: "not a model weight format" |
//!
//! Zip archives are read through their central directory (zip64 included), parsed here: no zip
//! library. **Every entry is sniffed by content, whatever its name**: `torch.load` unpickles
//! `<any>/data.pkl`, `np.load` reads any member of an `.npz`, other loaders any member. Stored
//! entries are read in place; deflate (8), bzip2 (12), LZMA (14) and zstd (93) entries are
//! decompressed (first 4 KiB to sniff, then whole if the content is a pickle, `.npy`, archive,
//! compressed stream or uninspectable format). Entries named `*.pkl`/`*.pickle` must be pickles
//! and `*.npy` arrays; PyTorch storages (`data/<n>`) are read as pickles only if they walk as
//! one. An entry name that differs between the central directory and its local header, or that
//! appears twice, or data that inflates to another size than the directory says, makes the
//! archive invalid (two readers could see two different files).
//!
//! # Budgets
//!
//! Every file is scanned in bounded time and memory. At most [`MAX_INFLATE_ENTRY`] (128 MiB)
//! are decompressed from one entry or layer and [`MAX_INFLATE_TOTAL`] (256 MiB) for the whole
//! file; at most [`MAX_ENTRIES`] entries of an archive are read and archives or compressed
//! layers nest at most [`MAX_DEPTH`] deep; at most [`MAX_PICKLES`] pickles are walked in a row
//! and [`MAX_IMPORTS`] distinct globals recorded per pickle (the rest counted in
//! `globals_omitted`). An entry whose directory size is over what is left of the budget is not
//! decompressed at all. Going over a budget is a `scan-budget` finding (unsafe): what was not
//! read cannot be vouched for. A zip of two deflated 256 MiB pickles is refused at once.
//!
//! # Paths
//!
//! [`scan_path`] scans each content once: paths that reach the same file (symbolic links, hard
//! links) are reported under one of them, the others in [`FileReport::aliases`].
//!
//! # Verdicts
//!
//! Every finding has a [`Rule`]; every rule implies a verdict, and a file's verdict is the worst
//! implied by its findings, in the order `safe < unknown < uninspectable < invalid < unsafe` (a
//! file with no finding is `safe`). `safe` and `unknown` are clean (`trainprov scan` exits 0);
//! `uninspectable`, `invalid` and `unsafe` are not (exit 1).
//!
//! | rule | severity | verdict | when |
//! |---|---|---|---|
//! | `pickle-dangerous-global` | error | unsafe | a pickle imports a global of the deny-list below |
//! | `pickle-unknown-global` | error | unsafe | a pickle imports a global on neither list |
//! | `pickle-unresolved-global` | error | unsafe | `STACK_GLOBAL` on operands that are not constant strings, or `EXT1/2/4` (copyreg's registry) |
//! | `zip-uninspectable` | error | unsafe | a `*.pkl`/`*.npy` entry that is encrypted, or compressed with a method not read here |
//! | `npy-object-dtype` | error | unsafe | a `.npy` whose `descr` holds an object (`O`) type: its data is a pickle that `np.load(allow_pickle=True)` runs |
//! | `gguf-chat-template` | error | unsafe | a `tokenizer.chat_template*` value reaching Python internals (below), a Jinja template injection as in CVE-2024-34359 |
//! | `chat-template` | error | unsafe | the same in a `*.jinja` file or a JSON object's `chat_template` (`tokenizer_config.json`, `chat_template.json`: a string, or a list of `{name, template}`) |
//! | `scan-budget` | error | unsafe | a budget (above) was exceeded: a decompression bomb, or too much to inspect |
//! | `safetensors-invalid` | error | invalid | any [`trainer::safe_load::LoadError`] of the header checks; the message is the loader's |
//! | `pickle-invalid` | error | invalid | truncated stream, unknown opcode, stack underflow, missing memo entry, ...; or a `FRAME` layout that CPython's C and Python unpicklers read differently |
//! | `zip-invalid` | error | invalid | no end record, directory out of bounds, duplicate or mismatched names, bad compressed data (also of a compressed file), wrong inflated size |
//! | `npy-invalid` | error | invalid | bad version, header or `descr`, data shorter or longer than the shape needs |
//! | `gguf-invalid` | error | invalid | see GGUF below |
//! | `polyglot` | error | invalid | a file of another format (safetensors) whose bytes also walk as a pickle that imports globals |
//! | `misnamed` | error | invalid | named `.safetensors`, `.gguf`, `.npy`, `.npz`, `.pt`, `.pth`, `.ckpt`, `.pkl` or `.pickle` but the bytes are another or no known format |
//! | `uninspectable` | error | uninspectable | a format this scanner does not read (table above), as a file or an archive entry |
//! | `pickle-format` | warning | safe | the file holds a pickle (every pickle gets this) |
//! | `pickle-trailing-data` | warning | safe | bytes after the last pickle that are not a further pickle (legacy `torch.save` storages, or a hidden payload) |
//! | `torchscript` | warning | safe | a TorchScript archive (`code/` entries): `torch.jit.load` runs that code |
//! | `not-a-model` | note | unknown | not a model weight format (configs, tokenizers, text) |
//!
//! **Benign pickles are `safe` with a `pickle-format` warning.** A pickle that imports only
//! allow-listed globals (what `torch.save` and `np.save` write for tensors, storages, ordered
//! dicts and arrays) gets verdict `safe`, so `scan` exits 0 on ordinary PyTorch checkpoints, and a
//! warning that loading it still executes code: trainprov's own loaders refuse pickle formats
//! whatever this scan says ([`trainer::safe_load::refuse_pickle`]); convert to safetensors. A
//! pickle is `unsafe` as soon as it imports one global outside the allow-list, dangerous or merely
//! unknown, because unpickling may call it. Globals imported before a pickle turns out to be
//! malformed still count: the unpickler would already have run them.
//!
//! # The pickle walk
//!
//! The walk models CPython's unpickler (`Lib/pickle.py` `_Unpickler` and `Modules/_pickle.c`,
//! which `pickle.load` and `torch.load` use), not a subset of it. Every opcode of protocols 0
//! to 5 is decoded with its argument (lines for the text opcodes, fixed and length-prefixed
//! arguments for the binary ones) and applied to a symbolic stack of *string*, *global* and
//! *other* items, with `MARK` positions and the memo, exactly as CPython moves its stack, so a
//! walk stays in sync and `STACK_GLOBAL` is resolved from the items it really pops (strings
//! pushed by any string opcode, duplicated by `DUP`, fetched by `GET`/`BINGET`/`LONG_BINGET`
//! after `PUT`/`BINPUT`/`LONG_BINPUT`/`MEMOIZE`). Text memo keys are parsed as Python's `int()`
//! does (surrounding ASCII whitespace, a sign, `_` between digits, leading zeros: `GET 0_1`,
//! `GET \x0b1` and `BINGET 1` are the same key); a key above `Py_ssize_t` or a negative `PUT` is
//! refused, as the C unpickler does. `STRING` arguments are escape-decoded and `UNICODE`
//! arguments raw-unicode-escape-decoded (lone surrogates kept), so `o\x73` still reads `os`.
//! `GLOBAL`, `INST`, `STACK_GLOBAL` and `EXT1/2/4` record imports; nothing is imported.
//!
//! `PROTO` is optional: a pickle may start with `FRAME` or any opcode (table above). `FRAME`
//! lengths must be present in the file (the C unpickler's rule); the walk also keeps the Python
//! unpickler's frame rules (a read that starts inside a frame must end inside it; no `FRAME`
//! before the current one ends) and reports a violation as `pickle-invalid`: the two readers
//! disagree, so the file is never `ok`, while the walk goes on as the C unpickler does. After a
//! pickle's `STOP`, the next bytes are walked as another pickle, `PROTO` or not (`pickle.load`
//! in a loop): they count if they are one (see the table), else they are trailing data. A
//! legacy `torch.save` file (its first pickle is the magic number `0x1950a86a20f9469cfc6c`) is
//! read as the legacy loader does: exactly five pickles (magic, protocol, system info, model,
//! storage keys), each required to be one, then raw storage bytes. The stack and memo hold at
//! most 4,194,304 items, and at most [`SCAN_LIMIT`] bytes of a file are read for a pickle,
//! `.npy` header or GGUF metadata.
//!
//! **Deny-list** (module or any submodule): `os`, `posix`, `nt`, `subprocess`, `_posixsubprocess`,
//! `pty`, `sys`, `shutil`, `runpy`, `code`, `codeop`, `commands`, `importlib`, `imp`, `pkgutil`,
//! `zipimport`, `marshal`, `pickle`, `_pickle`, `shelve`, `dill`, `cloudpickle`, `ctypes`,
//! `_ctypes`, `socket`, `_socket`, `ssl`, `webbrowser`, `requests`, `urllib`, `urllib2`, `urllib3`,
//! `http`, `httplib`, `ftplib`, `smtplib`, `telnetlib`, `xmlrpc`, `asyncio`, `multiprocessing`,
//! `threading`, `_thread`, `signal`, `pdb`, `bdb`, `timeit`, `profile`, `cProfile`, `trace`, `pip`,
//! `setuptools`, `distutils`, `io`, `_io`, `pathlib`, `fileinput`, `tempfile`, `_winapi`,
//! `winreg`, `msvcrt`, `torch.hub`, `torch.jit`, `torch.package`; in `builtins` and `__builtin__`:
//! `eval`, `exec`, `execfile`, `compile`, `open`, `file`, `__import__`, `getattr`, `setattr`,
//! `delattr`, `globals`, `locals`, `vars`, `breakpoint`, `input`, `apply`, `reload`; in `types`:
//! `CodeType`, `FunctionType`, `LambdaType`, `MethodType`, `ModuleType`; `operator.attrgetter`,
//! `operator.methodcaller`, `torch.load`, `torch.storage._load_from_bytes`, `numpy.load`.
//!
//! **Allow-list** (exact names; a dotted suffix such as `torch.Size.__init__` is not allowed):
//! `collections.OrderedDict`, `collections.Counter`, `_codecs.encode`, `builtins.`/`__builtin__.`
//! `set`/`frozenset`/`bytearray`/`complex`/`slice`, `torch._utils._rebuild_*` (tensor, tensor_v2,
//! tensor_v3, parameter, parameter_with_state, qtensor, sparse_tensor, nested_tensor,
//! meta_tensor_no_storage, wrapper_subclass), `torch._tensor._rebuild_from_type_v2`,
//! `torch.nn.parameter.Parameter`, `torch.serialization._get_layout`, `torch.Size`,
//! `torch.Tensor`, `torch.device`, every `torch.<X>Storage` class, `torch.storage.UntypedStorage`
//! and `TypedStorage`, the `torch` dtypes, layouts, memory formats and quantisation schemes,
//! `numpy.ndarray`, `numpy.dtype`, `numpy.core.multiarray._reconstruct`/`scalar` (and
//! `numpy._core.…`), and the `numpy.dtypes.<X>DType` classes.
//!
//! # NumPy
//!
//! `.npy` versions 1.0, 2.0 and 3.0; the header (at most 1 MiB) is parsed as the Python literal it
//! is and must hold exactly `descr`, `fortran_order` (a bool) and `shape` (non-negative ints).
//! `descr` is a type string (`<f4`, `|O`, `<U10`, `<M8[ns]`, a one-letter code) or a structured
//! list; an `O` anywhere in a type string is the object dtype. For other dtypes the data must be
//! exactly `itemsize × product(shape)` bytes (checked multiplication). Object data is walked as a
//! pickle, so its globals are listed too.
//!
//! # GGUF
//!
//! Magic, version 2 or 3 (1 is obsolete and refused, byte-swapped versions are named as
//! big-endian), `tensor_count <= 1,048,576` and `metadata_kv_count <= 1,048,576`, each also no
//! more than the file's bytes could hold. Metadata: keys are UTF-8 strings of at most 65,535
//! bytes, never repeated; values are of the 13 GGUF types, arrays (nested at most 4 deep) have
//! checked lengths; `general.alignment`, if present, is a `UINT32` power of two (default 32).
//! Tensor infos: a name of at most 63 bytes (ggml's limit), never repeated; `n_dims <= 4`; each
//! dimension `<= i64::MAX`; a known ggml type whose block size divides the first dimension; an
//! offset that is a multiple of the alignment. The data section starts at the next aligned offset
//! after the infos; every tensor's bytes (checked arithmetic) lie inside the file and no two
//! tensors overlap.
//!
//! # Output
//!
//! [`FileReport`] serialises as (one element of `trainprov scan --json`'s `files`):
//!
//! ```json
//! {
//!   "path": "models/evil/pytorch_model.bin",
//!   "format": { "kind": "torch_zip" },
//!   "verdict": "unsafe",
//!   "summary": "PyTorch zip checkpoint, 1 pickle, 2 storages, 3 globals",
//!   "globals": ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "posix.system"],
//!   "findings": [
//!     {
//!       "rule": "pickle-dangerous-global",
//!       "severity": "error",
//!       "message": "archive/data.pkl: pickle imports posix.system, which can run commands or code when unpickled",
//!       "global": "posix.system",
//!       "entry": "archive/data.pkl"
//!     },
//!     {
//!       "rule": "pickle-format",
//!       "severity": "warning",
//!       "message": "pickle format: loading it executes code, and trainprov's loaders refuse it; convert to safetensors",
//!       "global": null,
//!       "entry": null
//!     }
//!   ]
//! }
//! ```
//!
//! `format` is `{"kind": K}` with `K` one of `safetensors`, `pickle` (plus `"protocol": P`),
//! `torch_zip`, `zip`, `npy`, `npz`, `gguf`, `compressed` (plus `"codec": C`), `uninspectable`
//! (plus `"name": N`), `unknown`. `aliases` (other paths to the same content) and
//! `globals_omitted` appear when not empty or zero. Findings inside a decompressed layer name
//! it in `entry`: `[gzip]`, or `archive/x.pkl.gz [gzip]`. [`sarif`] renders reports as SARIF
//! 2.1.0.
//!
//! # Chat templates
//!
//! A template is flagged when it contains any of `template::TEMPLATE_INJECTION`: a dunder
//! (`__globals__`, `__class__`, any `__`), the `attr` filter, an underscore spelled as an escape
//! or a lone `'_'` literal, `os.system`, `os.popen`, `subprocess`. Ordinary chat templates use
//! none of them.
//!
//! ```
//! use safety::scan::{scan_bytes, Format, Verdict};
//!
//! // Protocol 0: GLOBAL 'os system', MARK, STRING 'id', TUPLE, REDUCE, STOP.
//! let report = scan_bytes("evil.pkl", b"cos\nsystem\n(S'id'\ntR.");
//! assert_eq!(report.format, Format::Pickle { protocol: 0 });
//! assert_eq!(report.verdict, Verdict::Unsafe);
//! assert_eq!(report.globals, ["os.system"]);
//! ```

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;
use serde_json::{json, Value};
use trainer::safe_load::MAX_HEADER_LEN;

mod compress;
mod gguf;
mod npy;
mod pickle;
mod safetensors;
mod template;
mod zip;

use compress::Codec;
use gguf::scan_gguf;
use npy::scan_npy;
use pickle::{announces_pickle, can_start_pickle, scan_pickle};
use safetensors::scan_safetensors;
use zip::scan_zip;

/// The most bytes read from one file (or zip entry) to walk a pickle or parse a `.npy` header or
/// GGUF metadata; tensor data is never read.
pub const SCAN_LIMIT: u64 = 256 * 1024 * 1024;

/// Stack and memo sizes beyond which a pickle is refused as malformed.
const MAX_ITEMS: usize = 1 << 22;
/// Strings longer than this are not kept for `STACK_GLOBAL` resolution (no module is that long).
const MAX_KEPT_STR: usize = 1024;
/// At most this many consecutive pickles are walked in one file or entry; more is a
/// `scan-budget` finding.
pub const MAX_PICKLES: usize = 1024;
/// At most this many distinct globals are recorded per pickle; the rest are only counted
/// ([`FileReport::globals_omitted`]).
pub const MAX_IMPORTS: usize = 1000;
/// The most bytes decompressed from one zip entry or one compressed layer.
pub const MAX_INFLATE_ENTRY: u64 = 128 * 1024 * 1024;
/// The most bytes decompressed for one file, over all its entries and layers.
pub const MAX_INFLATE_TOTAL: u64 = 256 * 1024 * 1024;
/// The most zip entries read from one archive.
pub const MAX_ENTRIES: usize = 65_536;
/// How deep archives and compressed layers may nest (a zip in a gzip in a zip is 3).
pub const MAX_DEPTH: u32 = 4;
/// The first read of a file; grown eightfold up to [`SCAN_LIMIT`] while a parser needs more.
const FIRST_READ: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// What a file is, judged by its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// A safetensors file.
    Safetensors,
    /// A Python pickle; protocol 0 or 1 when the stream has no `PROTO` opcode (1 if it uses
    /// binary opcodes).
    Pickle {
        /// The protocol of the first `PROTO` opcode, or 0/1.
        protocol: u8,
    },
    /// A zip archive with `data.pkl`: what `torch.save` writes since PyTorch 1.6.
    TorchZip,
    /// Another zip archive.
    Zip,
    /// A NumPy `.npy` array.
    Npy,
    /// A zip of `.npy` arrays (`np.savez`).
    Npz,
    /// A GGUF file (llama.cpp).
    Gguf,
    /// A compressed stream (what `joblib` and `pandas` write); the inner bytes are scanned.
    Compressed {
        /// `gzip`, `zlib`, `xz`, `lzma`, `bzip2` or `zstd`.
        codec: &'static str,
    },
    /// A format this scanner does not read (HDF5/Keras, TF SavedModel, 7z, rar, tar, lz4).
    Uninspectable {
        /// What the bytes (or, for a SavedModel, the name) say it is.
        name: &'static str,
    },
    /// Not a model weight format.
    Unknown,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Safetensors => f.write_str("safetensors"),
            Format::Pickle { protocol } => write!(f, "pickle protocol {protocol}"),
            Format::TorchZip => f.write_str("PyTorch zip checkpoint"),
            Format::Zip => f.write_str("zip archive"),
            Format::Npy => f.write_str("NumPy .npy"),
            Format::Npz => f.write_str("NumPy .npz"),
            Format::Gguf => f.write_str("GGUF"),
            Format::Compressed { codec } => write!(f, "{codec}-compressed data"),
            Format::Uninspectable { name } => f.write_str(name),
            Format::Unknown => f.write_str("unknown"),
        }
    }
}

/// The judgement on one file; see the module doc for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// A model format with nothing wrong found (a pickle of allow-listed globals included).
    Safe,
    /// Loading it can run code the file chose.
    Unsafe,
    /// Malformed: loaders would fail, or disagree on what it holds.
    Invalid,
    /// Not a model weight format (a config, a tokenizer, text).
    Unknown,
    /// A format this scanner cannot read: not known to be clean.
    Uninspectable,
}

impl Verdict {
    /// `safe` and `unknown` are clean: `trainprov scan` exits 0 on them; `uninspectable`,
    /// `invalid` and `unsafe` are not.
    pub fn is_clean(self) -> bool {
        matches!(self, Verdict::Safe | Verdict::Unknown)
    }

    fn rank(self) -> u8 {
        match self {
            Verdict::Safe => 0,
            Verdict::Unknown => 1,
            Verdict::Uninspectable => 2,
            Verdict::Invalid => 3,
            Verdict::Unsafe => 4,
        }
    }

    /// The worse of two verdicts: `safe < unknown < uninspectable < invalid < unsafe`.
    pub fn worst(self, other: Verdict) -> Verdict {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// The label of a human output line: `ok`, `UNSAFE`, `INVALID`, `UNINSPECTABLE`, `unknown`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Safe => "ok",
            Verdict::Unsafe => "UNSAFE",
            Verdict::Invalid => "INVALID",
            Verdict::Unknown => "unknown",
            Verdict::Uninspectable => "UNINSPECTABLE",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Safe => "safe",
            Verdict::Unsafe => "unsafe",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
            Verdict::Uninspectable => "uninspectable",
        })
    }
}

/// How serious a finding is; the SARIF `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Makes the file unsafe or invalid.
    Error,
    /// Worth acting on; the file stays clean.
    Warning,
    /// Information.
    Note,
}

impl Severity {
    /// `error`, `warning` or `note`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// The kind of a finding; each implies a severity and a verdict (table in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Rule {
    /// A pickle imports a deny-listed global.
    PickleDangerousGlobal,
    /// A pickle imports a global on neither list.
    PickleUnknownGlobal,
    /// A pickle imports a global that cannot be named statically.
    PickleUnresolvedGlobal,
    /// A zip entry that may hold a pickle cannot be read.
    ZipUninspectable,
    /// A `.npy` of object dtype.
    NpyObjectDtype,
    /// A GGUF chat template reaching Python internals.
    GgufChatTemplate,
    /// A chat template (`tokenizer_config.json`, `chat_template.json`, `*.jinja`) reaching Python
    /// internals.
    ChatTemplate,
    /// A scan budget was exceeded (decompressed bytes, entries, nesting, pickles).
    ScanBudget,
    /// Safetensors header validation failed.
    SafetensorsInvalid,
    /// A malformed pickle.
    PickleInvalid,
    /// A malformed zip archive.
    ZipInvalid,
    /// A malformed `.npy`.
    NpyInvalid,
    /// A malformed GGUF file.
    GgufInvalid,
    /// The bytes read as two formats, one of them a pickle that imports something.
    Polyglot,
    /// A model-format file name over other bytes.
    Misnamed,
    /// The file holds a pickle.
    PickleFormat,
    /// Bytes after the last pickle.
    PickleTrailingData,
    /// A TorchScript archive.
    TorchScript,
    /// A format this scanner does not read.
    Uninspectable,
    /// Not a model weight format.
    NotAModel,
}

impl Rule {
    /// Every rule, in SARIF `ruleIndex` order.
    pub const ALL: [Rule; 20] = [
        Rule::PickleDangerousGlobal,
        Rule::PickleUnknownGlobal,
        Rule::PickleUnresolvedGlobal,
        Rule::ZipUninspectable,
        Rule::NpyObjectDtype,
        Rule::GgufChatTemplate,
        Rule::ChatTemplate,
        Rule::ScanBudget,
        Rule::SafetensorsInvalid,
        Rule::PickleInvalid,
        Rule::ZipInvalid,
        Rule::NpyInvalid,
        Rule::GgufInvalid,
        Rule::Polyglot,
        Rule::Misnamed,
        Rule::Uninspectable,
        Rule::PickleFormat,
        Rule::PickleTrailingData,
        Rule::TorchScript,
        Rule::NotAModel,
    ];

    /// The rule's id, as serialised (`pickle-dangerous-global`, ...).
    pub fn id(self) -> &'static str {
        match self {
            Rule::PickleDangerousGlobal => "pickle-dangerous-global",
            Rule::PickleUnknownGlobal => "pickle-unknown-global",
            Rule::PickleUnresolvedGlobal => "pickle-unresolved-global",
            Rule::ZipUninspectable => "zip-uninspectable",
            Rule::NpyObjectDtype => "npy-object-dtype",
            Rule::GgufChatTemplate => "gguf-chat-template",
            Rule::ChatTemplate => "chat-template",
            Rule::ScanBudget => "scan-budget",
            Rule::Polyglot => "polyglot",
            Rule::Uninspectable => "uninspectable",
            Rule::SafetensorsInvalid => "safetensors-invalid",
            Rule::PickleInvalid => "pickle-invalid",
            Rule::ZipInvalid => "zip-invalid",
            Rule::NpyInvalid => "npy-invalid",
            Rule::GgufInvalid => "gguf-invalid",
            Rule::Misnamed => "misnamed",
            Rule::PickleFormat => "pickle-format",
            Rule::PickleTrailingData => "pickle-trailing-data",
            Rule::TorchScript => "torchscript",
            Rule::NotAModel => "not-a-model",
        }
    }

    /// The verdict a finding of this rule implies.
    pub fn verdict(self) -> Verdict {
        match self {
            Rule::PickleDangerousGlobal
            | Rule::PickleUnknownGlobal
            | Rule::PickleUnresolvedGlobal
            | Rule::ZipUninspectable
            | Rule::NpyObjectDtype
            | Rule::GgufChatTemplate
            | Rule::ChatTemplate
            | Rule::ScanBudget => Verdict::Unsafe,
            Rule::SafetensorsInvalid
            | Rule::PickleInvalid
            | Rule::ZipInvalid
            | Rule::NpyInvalid
            | Rule::GgufInvalid
            | Rule::Polyglot
            | Rule::Misnamed => Verdict::Invalid,
            Rule::Uninspectable => Verdict::Uninspectable,
            Rule::PickleFormat | Rule::PickleTrailingData | Rule::TorchScript => Verdict::Safe,
            Rule::NotAModel => Verdict::Unknown,
        }
    }

    /// The severity of a finding of this rule.
    pub fn severity(self) -> Severity {
        match self.verdict() {
            Verdict::Unsafe | Verdict::Invalid | Verdict::Uninspectable => Severity::Error,
            Verdict::Safe => Severity::Warning,
            Verdict::Unknown => Severity::Note,
        }
    }

    /// One sentence on what the rule means (SARIF `shortDescription`).
    pub fn description(self) -> &'static str {
        match self {
            Rule::PickleDangerousGlobal => {
                "A pickle imports a global that runs commands or code, or reaches the system, \
                 when unpickled."
            }
            Rule::PickleUnknownGlobal => {
                "A pickle imports a global outside the allow-list of tensor-rebuilding globals; \
                 unpickling may call it."
            }
            Rule::PickleUnresolvedGlobal => {
                "A pickle imports a global whose name cannot be read statically (STACK_GLOBAL on \
                 computed operands, or a copyreg extension code)."
            }
            Rule::ZipUninspectable => {
                "An archive entry that may hold a pickle is encrypted, compressed with an \
                 unsupported method, or too large to inspect."
            }
            Rule::NpyObjectDtype => {
                "A NumPy array of object dtype: its data is a pickle that \
                 np.load(allow_pickle=True) executes."
            }
            Rule::GgufChatTemplate => {
                "A GGUF chat template reaches Python internals: a Jinja template injection \
                 (CVE-2024-34359) runs code when an unsandboxed engine renders it."
            }
            Rule::ChatTemplate => {
                "A chat template reaches Python internals: a Jinja template injection \
                 (CVE-2024-34359) runs code when an unsandboxed engine renders it."
            }
            Rule::ScanBudget => {
                "A scan budget (decompressed bytes, archive entries, nesting, pickles) was \
                 exceeded: a decompression bomb, or a file too large to inspect; what was not \
                 read cannot be vouched for."
            }
            Rule::Polyglot => {
                "The bytes are two formats at once, one of them a pickle that imports globals: \
                 loaders disagree on what the file is."
            }
            Rule::Uninspectable => {
                "A format this scanner does not read (HDF5/Keras, TF SavedModel, 7z, rar, tar, \
                 lz4); it may hold code and is not counted as clean."
            }
            Rule::SafetensorsInvalid => "The safetensors header fails validation.",
            Rule::PickleInvalid => "The pickle opcode stream is malformed.",
            Rule::ZipInvalid => "The zip archive is malformed or ambiguous.",
            Rule::NpyInvalid => "The NumPy .npy header or data length is malformed.",
            Rule::GgufInvalid => "The GGUF header, metadata or tensor infos are malformed.",
            Rule::Misnamed => {
                "The file is named as a model format but its bytes are another or no known \
                 format."
            }
            Rule::PickleFormat => {
                "The file holds a pickle: loading it executes code even when every import is \
                 allow-listed; trainprov's loaders refuse it. Convert to safetensors."
            }
            Rule::PickleTrailingData => "Bytes follow the last pickle and were not inspected.",
            Rule::TorchScript => "A TorchScript archive: torch.jit.load runs its code.",
            Rule::NotAModel => "Not a model weight format.",
        }
    }
}

/// One thing found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The kind of finding.
    pub rule: Rule,
    /// The rule's severity.
    pub severity: Severity,
    /// One line for humans (the zip entry first, where there is one).
    pub message: String,
    /// The imported global (`module.name`) for the pickle-global rules.
    pub global: Option<String>,
    /// The archive entry the finding is in.
    pub entry: Option<String>,
}

/// The scan of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The path as given (or as found under a given directory), or `scan_bytes`'s name.
    pub path: String,
    /// What the bytes are.
    pub format: Format,
    /// The worst verdict implied by `findings`.
    pub verdict: Verdict,
    /// One line: `safetensors, 12 tensors`, `pickle protocol 2, 3 globals`, ...
    pub summary: String,
    /// Every global imported by the file's pickles (`module.name`), in order of first import,
    /// at most [`MAX_IMPORTS`] per pickle.
    pub globals: Vec<String>,
    /// Distinct globals beyond [`MAX_IMPORTS`] per pickle, counted but not listed (omitted from
    /// JSON when 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub globals_omitted: u64,
    /// Other paths to the same content (symbolic or hard links under a scanned directory, such
    /// as a hub cache's `snapshots/<rev>/model.bin -> ../../blobs/<sha>`); each content is
    /// scanned and reported once, under `path` (omitted from JSON when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// What was found, in the order found.
    pub findings: Vec<Finding>,
}

impl FileReport {
    /// Whether the verdict is clean (`safe` or `unknown`).
    pub fn is_clean(&self) -> bool {
        self.verdict.is_clean()
    }

    /// The human output line: `UNSAFE model.bin: pickle imports os.system, ...`,
    /// `ok model.safetensors: safetensors, 12 tensors`.
    pub fn human_line(&self) -> String {
        let detail = if self.verdict.is_clean() {
            let mut text = self.summary.clone();
            for f in self
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
            {
                text.push_str("; warning: ");
                text.push_str(&f.message);
            }
            text
        } else {
            let worst: Vec<&str> = self
                .findings
                .iter()
                .filter(|f| f.rule.verdict() == self.verdict)
                .map(|f| f.message.as_str())
                .collect();
            let mut text = worst.iter().take(3).copied().collect::<Vec<_>>().join("; ");
            if worst.len() > 3 {
                text.push_str(&format!(" (and {} more)", worst.len() - 3));
            }
            text
        };
        format!("{} {}: {}", self.verdict.label(), self.path, detail)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a path could not be scanned at all. Problems inside a file are findings, not errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The path could not be opened, listed or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The path is neither a regular file nor a directory (a FIFO, a device, a socket).
    #[error("{}: not a regular file or directory; pass model files or directories", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// Scans a file, or every regular file under a directory (recursively, following symbolic links
/// but never into the same directory twice, skipping `.git` directories and non-regular files),
/// sorted by path. Paths that reach the same file (symbolic links, hard links: same device and
/// inode) are scanned once and reported under one of them, the others listed as
/// [`FileReport::aliases`]: the first path in sorted order whose file name has an extension
/// (a hub cache's `snapshots/<rev>/model.safetensors` rather than `blobs/<sha256>`), else the
/// first. Reads only what the checks need: headers, directories and pickles, never tensor data.
pub fn scan_path(path: &Path) -> Result<Vec<FileReport>, ScanError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScanError::Io { path, source }
    };
    let meta = fs_err::metadata(path).map_err(io_err(path))?;
    if meta.is_file() {
        return Ok(vec![scan_file(&[path.to_path_buf()])?]);
    }
    if !meta.is_dir() {
        return Err(ScanError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let canonical = fs_err::canonicalize(&dir).map_err(io_err(&dir))?;
        if !visited.insert(canonical) {
            continue;
        }
        for entry in fs_err::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let child = entry.path();
            // Follows symbolic links; a dangling one is skipped like any non-regular file.
            let Ok(meta) = fs_err::metadata(&child) else {
                continue;
            };
            if meta.is_dir() {
                if entry.file_name() != ".git" {
                    pending.push(child);
                }
            } else if meta.is_file() {
                files.push((file_identity(&child, &meta), child));
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let mut groups: Vec<Vec<PathBuf>> = Vec::new();
    let mut index: HashMap<FileId, usize> = HashMap::new();
    for (id, file) in files {
        match index.get(&id) {
            Some(&i) => groups[i].push(file),
            None => {
                index.insert(id, groups.len());
                groups.push(vec![file]);
            }
        }
    }
    let mut reports = groups
        .iter()
        .map(|paths| scan_file(paths))
        .collect::<Result<Vec<_>, _>>()?;
    reports.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(reports)
}

/// What makes two paths the same file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileId {
    #[cfg(unix)]
    Inode(u64, u64),
    #[cfg_attr(unix, allow(dead_code))]
    Canonical(PathBuf),
}

fn file_identity(path: &Path, meta: &std::fs::Metadata) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = path;
        FileId::Inode(meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        FileId::Canonical(fs_err::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }
}

/// Scans one file reached by `paths` (sorted, at least one): reported under the first whose
/// name has an extension, the rest as aliases; every name is checked against the bytes.
fn scan_file(paths: &[PathBuf]) -> Result<FileReport, ScanError> {
    let Some(first) = paths.first() else {
        return Err(ScanError::NotAFile {
            path: PathBuf::new(),
        });
    };
    let primary = paths
        .iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| extension(&n.to_string_lossy()))
                .is_some()
        })
        .unwrap_or(first);
    let io_err = |source| ScanError::Io {
        path: primary.clone(),
        source,
    };
    let file = fs_err::File::open(primary).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(ScanError::NotAFile {
            path: primary.clone(),
        });
    }
    let blob = FileBlob {
        file: RefCell::new(file),
        size: meta.len(),
    };
    let aliases: Vec<String> = paths
        .iter()
        .filter(|p| *p != primary)
        .map(|p| p.display().to_string())
        .collect();
    scan_blob(&primary.display().to_string(), &aliases, &blob).map_err(io_err)
}

/// Scans bytes held in memory; `name` is the report's path and is used only to notice a
/// model-format file name over other bytes (rule `misnamed`). Pure and total: it never panics,
/// whatever the bytes.
pub fn scan_bytes(name: &str, bytes: &[u8]) -> FileReport {
    match scan_blob(name, &[], &SliceBlob(bytes)) {
        Ok(report) => report,
        // Reading a slice cannot fail; keep the function total anyway.
        Err(e) => {
            let mut r = Builder::new(name);
            r.add(Rule::Misnamed, format!("cannot read: {e}"), None, None);
            r.finish()
        }
    }
}

/// Renders reports as a SARIF 2.1.0 log: one run of tool `trainprov` with every [`Rule`] (in
/// [`Rule::ALL`] order) and one result per finding, located at the file's path as a URI
/// reference (relative paths stay relative, absolute ones become `file://` URIs). Scanned files
/// are listed under `artifacts` with their verdict and format.
pub fn sarif(reports: &[FileReport]) -> Value {
    let rules: Vec<Value> = Rule::ALL
        .iter()
        .map(|rule| {
            json!({
                "id": rule.id(),
                "shortDescription": { "text": rule.description() },
                "defaultConfiguration": { "level": rule.severity().as_str() },
                "properties": { "verdict": rule.verdict() },
            })
        })
        .collect();
    let mut results = Vec::new();
    let mut artifacts = Vec::new();
    for report in reports {
        let uri = path_uri(&report.path);
        artifacts.push(json!({
            "location": { "uri": uri },
            "properties": { "verdict": report.verdict, "format": report.format, "summary": report.summary },
        }));
        for finding in &report.findings {
            let index = Rule::ALL.iter().position(|r| *r == finding.rule);
            let mut properties = serde_json::Map::new();
            properties.insert("verdict".into(), json!(report.verdict));
            if let Some(global) = &finding.global {
                properties.insert("global".into(), json!(global));
            }
            if let Some(entry) = &finding.entry {
                properties.insert("entry".into(), json!(entry));
            }
            results.push(json!({
                "ruleId": finding.rule.id(),
                "ruleIndex": index,
                "level": finding.severity.as_str(),
                "message": { "text": finding.message },
                "locations": [{
                    "physicalLocation": { "artifactLocation": { "uri": uri } }
                }],
                "properties": properties,
            }));
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "trainprov",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://example.invalid/trainprov",
                    "rules": rules,
                }
            },
            "artifacts": artifacts,
            "results": results,
        }]
    })
}

/// A path as a URI reference: `/`-separated, percent-encoded outside RFC 3986's unreserved set.
fn path_uri(path: &str) -> String {
    let path = path.replace('\\', "/");
    let mut out = String::new();
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reading: a file or a slice, random access
// ---------------------------------------------------------------------------------------------

trait Blob {
    /// Total size in bytes.
    fn size(&self) -> u64;
    /// How many bytes from the start can actually be read (less than `size` for an inflated
    /// entry cut at the scan limit).
    fn readable(&self) -> u64 {
        self.size()
    }
    /// Up to `len` bytes at `offset`; fewer at the end.
    fn read_at(&self, offset: u64, len: u64) -> io::Result<Vec<u8>>;
    /// The readable bytes, when they are already in memory (no copy needed).
    fn in_memory(&self) -> Option<&[u8]> {
        None
    }
}

/// Reads `len` bytes of a blob from `start` as a stream (for decompressors).
struct BlobReader<'a> {
    blob: &'a dyn Blob,
    pos: u64,
    end: u64,
}

impl<'a> BlobReader<'a> {
    fn new(blob: &'a dyn Blob, start: u64, len: u64) -> io::BufReader<Self> {
        io::BufReader::with_capacity(
            64 * 1024,
            BlobReader {
                blob,
                pos: start,
                end: start.saturating_add(len),
            },
        )
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.end.saturating_sub(self.pos));
        if want == 0 {
            return Ok(0);
        }
        let data = self.blob.read_at(self.pos, want)?;
        let n = data.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(data.get(..n).unwrap_or_default());
        self.pos += n as u64;
        Ok(n)
    }
}

struct SliceBlob<'a>(&'a [u8]);

impl Blob for SliceBlob<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let end = start
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .min(self.0.len());
        Ok(self.0.get(start..end).unwrap_or_default().to_vec())
    }

    fn in_memory(&self) -> Option<&[u8]> {
        Some(self.0)
    }
}

/// An inflated zip entry: the first `bytes.len()` of `size` bytes.
struct PrefixBlob {
    bytes: Vec<u8>,
    size: u64,
}

impl Blob for PrefixBlob {
    fn size(&self) -> u64 {
        self.size
    }

    fn readable(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        SliceBlob(&self.bytes).read_at(offset, len)
    }

    fn in_memory(&self) -> Option<&[u8]> {
        Some(&self.bytes)
    }
}

/// A stored zip entry, read in place.
struct SubBlob<'a> {
    inner: &'a dyn Blob,
    start: u64,
    size: u64,
}

impl Blob for SubBlob<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let len = len.min(self.size.saturating_sub(offset));
        self.inner.read_at(self.start.saturating_add(offset), len)
    }
}

struct FileBlob {
    file: RefCell<fs_err::File>,
    size: u64,
}

impl Blob for FileBlob {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut file = self.file.borrow_mut();
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        (&mut *file).take(len).read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// What a parser does at the end of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eof {
    /// The bytes are the whole file: running out is truncation.
    End,
    /// More of the file can be read: ask for it.
    More,
    /// The read stopped at this many bytes, the scan limit.
    Limit(u64),
}

/// Why a parser stopped early.
#[derive(Debug)]
enum Stop {
    /// It needs more bytes than it was given (only with [`Eof::More`]).
    More,
    /// The bytes are malformed; the message says how.
    Bad(String),
}

fn bad<T>(message: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Bad(message.into()))
}

/// Runs `parse` on a prefix of `blob`, growing the prefix eightfold (from 64 KiB to
/// [`SCAN_LIMIT`]) while it asks for more. `Ok(Err(message))` is a malformed file.
fn with_prefix<T>(
    blob: &dyn Blob,
    mut parse: impl FnMut(&[u8], Eof, u64) -> Result<T, Stop>,
) -> io::Result<Result<T, String>> {
    let total = blob.size();
    let readable = blob.readable().min(total);
    if let Some(bytes) = blob.in_memory() {
        // Everything there is in memory already: one pass, no copy.
        let cut = usize::try_from(SCAN_LIMIT)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let buf = bytes.get(..cut).unwrap_or_default();
        let got = buf.len() as u64;
        let eof = if got >= total {
            Eof::End
        } else {
            Eof::Limit(got)
        };
        return Ok(match parse(buf, eof, total) {
            Ok(t) => Ok(t),
            Err(Stop::Bad(message)) => Err(message),
            Err(Stop::More) => Err("the parser stopped early".into()),
        });
    }
    let mut want = FIRST_READ.min(readable);
    loop {
        let buf = blob.read_at(0, want)?;
        let got = buf.len() as u64;
        let eof = if got >= total || got < want {
            Eof::End
        } else if got >= readable {
            Eof::Limit(readable)
        } else if want >= SCAN_LIMIT {
            Eof::Limit(SCAN_LIMIT)
        } else {
            Eof::More
        };
        match parse(&buf, eof, total) {
            Ok(t) => return Ok(Ok(t)),
            Err(Stop::Bad(message)) => return Ok(Err(message)),
            Err(Stop::More) if eof == Eof::More => {
                want = want.saturating_mul(8).min(SCAN_LIMIT).min(readable);
            }
            Err(Stop::More) => return Ok(Err("the parser stopped early".into())),
        }
    }
}

/// A read position in a buffer that is (a prefix of) `total` bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    eof: Eof,
    total: u64,
    /// For the pickle walk: `FRAME` bookkeeping as CPython's `pickle._Unframer` keeps it.
    frames: Option<Frames>,
}

/// CPython's Python unpickler reads through the current frame: a read (an opcode, a fixed or
/// length-prefixed argument, a line) that starts inside a frame must end inside it ("pickle
/// exhausted before end of frame"), a read that starts at its end leaves it, and a `FRAME`
/// must not start before the current frame's end. The C unpickler checks none of this.
#[derive(Debug, Default)]
struct Frames {
    /// The end offset of the current frame.
    end: Option<usize>,
    /// The first violation: offset and message.
    error: Option<(usize, String)>,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], pos: usize, eof: Eof, total: u64) -> Self {
        Cursor {
            buf,
            pos,
            eof,
            total,
            frames: None,
        }
    }

    /// Frame bookkeeping for a read of `n` bytes at the current position.
    fn frame_read(&mut self, n: u64, what: &str) {
        let pos = self.pos;
        let Some(frames) = self.frames.as_mut() else {
            return;
        };
        let Some(end) = frames.end else {
            return;
        };
        if pos >= end {
            frames.end = None;
        } else if (pos as u64).saturating_add(n) > end as u64 {
            frames.end = None;
            frames.error.get_or_insert((
                pos,
                format!("{what} ({n} bytes) crosses the end of the FRAME at byte {end}"),
            ));
        }
    }

    /// A `FRAME` of `n` bytes starts at the current position.
    fn begin_frame(&mut self, n: u64) {
        let pos = self.pos;
        let Some(frames) = self.frames.as_mut() else {
            return;
        };
        if let Some(end) = frames.end {
            if pos < end {
                frames.error.get_or_insert((
                    pos,
                    format!("a FRAME starts before the end of the current frame (byte {end})"),
                ));
            }
        }
        frames.end = usize::try_from(n).ok().and_then(|n| pos.checked_add(n));
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The error for `need` bytes at the current position that the buffer does not hold.
    fn short(&self, what: &str, need: u64) -> Stop {
        let end = (self.pos as u64).saturating_add(need);
        if end > self.total || self.eof == Eof::End {
            let left = self.total.saturating_sub(self.pos as u64);
            return Stop::Bad(format!(
                "truncated: {what} needs {need} bytes at offset {}, {left} remain",
                self.pos
            ));
        }
        match self.eof {
            Eof::More => Stop::More,
            Eof::Limit(limit) => Stop::Bad(format!(
                "{what} at offset {} runs past the scan limit of {limit} bytes",
                self.pos
            )),
            Eof::End => Stop::Bad(format!("truncated: {what} at offset {}", self.pos)),
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], Stop> {
        self.frame_read(n, what);
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .and_then(|end| self.buf.get(self.pos..end).map(|s| (s, end)));
        match slice {
            Some((s, end)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(self.short(what, n)),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Stop> {
        let s = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Stop> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, Stop> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, Stop> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, Stop> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, Stop> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// The bytes up to the next `\n` (excluded); the newline is consumed.
    fn line(&mut self, what: &str) -> Result<&'a [u8], Stop> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.frame_read(i as u64 + 1, what);
                self.pos += i + 1;
                Ok(rest.get(..i).unwrap_or_default())
            }
            None => Err(self.short(what, rest.len() as u64 + 1)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report under construction
// ---------------------------------------------------------------------------------------------

struct Builder {
    path: String,
    format: Format,
    summary: String,
    globals: Vec<String>,
    seen_globals: HashSet<String>,
    globals_omitted: u64,
    findings: Vec<Finding>,
    seen: HashSet<(Rule, Option<String>, Option<String>)>,
    /// Bytes decompressed so far for this file (against [`MAX_INFLATE_TOTAL`]).
    inflated: u64,
}

impl Builder {
    fn new(path: &str) -> Self {
        Builder {
            path: path.to_string(),
            format: Format::Unknown,
            summary: String::new(),
            globals: Vec::new(),
            seen_globals: HashSet::new(),
            globals_omitted: 0,
            findings: Vec::new(),
            seen: HashSet::new(),
            inflated: 0,
        }
    }

    fn omit_globals(&mut self, n: u64) {
        self.globals_omitted = self.globals_omitted.saturating_add(n);
    }

    /// How many more bytes may be decompressed for one entry or layer.
    fn allowance(&self) -> u64 {
        MAX_INFLATE_ENTRY.min(MAX_INFLATE_TOTAL.saturating_sub(self.inflated))
    }

    /// Records a budget finding.
    fn over_budget(&mut self, entry: Option<&str>, message: String) {
        self.add(Rule::ScanBudget, prefixed(entry, &message), None, entry);
    }

    /// Adds a finding unless one of the same rule, global and entry is already there.
    fn add(&mut self, rule: Rule, message: String, global: Option<String>, entry: Option<&str>) {
        let entry = entry.map(str::to_string);
        if !self.seen.insert((rule, global.clone(), entry.clone())) {
            return;
        }
        self.findings.push(Finding {
            rule,
            severity: rule.severity(),
            message,
            global,
            entry,
        });
    }

    fn global(&mut self, name: &str) {
        if self.seen_globals.insert(name.to_string()) {
            self.globals.push(name.to_string());
        }
    }

    fn finish(self) -> FileReport {
        let verdict = self
            .findings
            .iter()
            .fold(Verdict::Safe, |v, f| v.worst(f.rule.verdict()));
        FileReport {
            path: self.path,
            format: self.format,
            verdict,
            summary: self.summary,
            globals: self.globals,
            globals_omitted: self.globals_omitted,
            aliases: Vec::new(),
            findings: self.findings,
        }
    }
}

fn prefixed(entry: Option<&str>, message: &str) -> String {
    match entry {
        Some(e) => format!("{e}: {message}"),
        None => message.to_string(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

// ---------------------------------------------------------------------------------------------
// Identification
// ---------------------------------------------------------------------------------------------

enum Kind {
    Gguf,
    Npy,
    Zip,
    Safetensors,
    /// `PROTO` or `FRAME` first.
    Pickle,
    Compressed(Codec),
    Foreign(&'static str),
    Other,
}

fn is_zip(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
}

fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(b"GGUF") {
        return Kind::Gguf;
    }
    if head.starts_with(b"\x93NUMPY") {
        return Kind::Npy;
    }
    if is_zip(head) {
        return Kind::Zip;
    }
    let brace_at_8 = head.get(8) == Some(&b'{');
    let len = head
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes);
    if brace_at_8 && len.is_some_and(|n| n <= MAX_HEADER_LEN) {
        return Kind::Safetensors;
    }
    if announces_pickle(head) {
        return Kind::Pickle;
    }
    if let Some(codec) = Codec::sniff(head) {
        return Kind::Compressed(codec);
    }
    if let Some(name) = foreign(head) {
        return Kind::Foreign(name);
    }
    // An oversize length is named as such, unless the first bytes are text (`{"model":{...`).
    let text = head.get(..8).is_some_and(|b| {
        b.iter()
            .all(|c| c.is_ascii_graphic() || c.is_ascii_whitespace())
    });
    if brace_at_8 && !text {
        return Kind::Safetensors;
    }
    Kind::Other
}

/// Formats recognised by their first bytes that this scanner does not read.
fn foreign(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89HDF\r\n\x1a\n") {
        Some("HDF5 (Keras .h5)")
    } else if head.starts_with(b"7z\xbc\xaf\x27\x1c") {
        Some("7z archive")
    } else if head.starts_with(b"Rar!\x1a\x07") {
        Some("rar archive")
    } else if head.get(257..262) == Some(b"ustar") {
        Some("tar archive")
    } else if head.starts_with(b"\x04\x22\x4d\x18") {
        Some("lz4-compressed data")
    } else {
        None
    }
}

/// TensorFlow SavedModel files, recognised by name (protobuf has no magic number).
fn saved_model_name(path: &str) -> bool {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    matches!(
        name,
        "saved_model.pb" | "saved_model.pbtxt" | "keras_metadata.pb"
    )
}

/// A finding for a format this scanner does not read.
fn uninspectable(r: &mut Builder, name: &'static str, entry: Option<&str>) {
    let message = format!(
        "{name}: this scanner does not read this format, and it can hold code (Keras Lambda \
         layers, TensorFlow graph ops, archived pickles); it is not counted as clean. Inspect it \
         with a tool that reads it, or convert the weights to safetensors"
    );
    if entry.is_none() {
        r.format = Format::Uninspectable { name };
        r.summary = format!("{name}, not inspected");
    }
    r.add(Rule::Uninspectable, prefixed(entry, &message), None, entry);
}

/// File extensions that promise a model format.
const MODEL_EXTENSIONS: &[&str] = &[
    "safetensors",
    "gguf",
    "npy",
    "npz",
    "pt",
    "pth",
    "ckpt",
    "pkl",
    "pickle",
];

fn extension(path: &str) -> Option<String> {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

fn scan_blob(name: &str, aliases: &[String], blob: &dyn Blob) -> io::Result<FileReport> {
    let mut r = Builder::new(name);
    let head = blob.read_at(0, 4096)?;
    match sniff(&head) {
        Kind::Gguf => scan_gguf(blob, &mut r)?,
        Kind::Npy => scan_npy(blob, None, &mut r)?,
        Kind::Zip => scan_zip(blob, None, 0, &mut r)?,
        Kind::Safetensors => {
            scan_safetensors(blob, &mut r)?;
            also_pickle(blob, &head, &mut r)?;
        }
        Kind::Pickle => {
            scan_pickle(blob, None, true, &mut r)?;
        }
        Kind::Compressed(codec) => {
            if !compress::scan_compressed(blob, codec, None, 0, &mut r)? {
                scan_other(blob, &head, &mut r)?;
            }
        }
        Kind::Foreign(what) => uninspectable(&mut r, what, None),
        Kind::Other => scan_other(blob, &head, &mut r)?,
    }
    check_name(&mut r, name);
    for alias in aliases {
        check_name(&mut r, alias);
    }
    let mut report = r.finish();
    report.aliases = aliases.to_vec();
    Ok(report)
}

/// Bytes no magic number claims: a SavedModel by name, a pickle without `PROTO` (protocol 0/1,
/// or a stream starting with any opcode that can start one), else not a model format (with its
/// chat templates checked).
fn scan_other(blob: &dyn Blob, head: &[u8], r: &mut Builder) -> io::Result<()> {
    if saved_model_name(&r.path) {
        uninspectable(r, "TensorFlow SavedModel", None);
        return Ok(());
    }
    if head.first().is_some_and(|&b| can_start_pickle(b)) && scan_pickle(blob, None, false, r)? {
        return Ok(());
    }
    scan_unknown(blob, head, r)?;
    template::scan_templates(blob, head, r)
}

/// A file read as another format whose bytes also walk as a pickle that imports something (a
/// safetensors header can be a valid pickle prefix): both readings are reported, the worst wins.
fn also_pickle(blob: &dyn Blob, head: &[u8], r: &mut Builder) -> io::Result<()> {
    if !head.first().is_some_and(|&b| can_start_pickle(b)) {
        return Ok(());
    }
    let Ok(stream) = with_prefix(blob, |buf, eof, total| {
        pickle::walk_stream(buf, 0, eof, total)
    })?
    else {
        return Ok(());
    };
    let imports = stream.walks.first().is_some_and(|w| !w.imports.is_empty());
    if !(imports && stream.plausible()) {
        return Ok(());
    }
    let message = format!(
        "the bytes are also a pickle that imports {}: pickle.load/torch.load would run it",
        plural(stream.import_count(), "global", "globals")
    );
    r.add(Rule::Polyglot, message, None, None);
    pickle::report_pickles(&stream, Some("as pickle"), r);
    Ok(())
}

/// What a zip entry or decompressed layer turned out to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedded {
    Pickle,
    Array,
    Archive,
    Compressed,
    Foreign,
    Data,
}

impl Embedded {
    fn describe(self) -> &'static str {
        match self {
            Embedded::Pickle => "pickle",
            Embedded::Array => "NumPy array",
            Embedded::Archive => "zip archive",
            Embedded::Compressed => "compressed data",
            Embedded::Foreign => "uninspectable data",
            Embedded::Data => "data",
        }
    }
}

/// How an archive names an entry.
#[derive(Debug, Clone, Copy, Default)]
struct Hint {
    /// `*.pkl`, `*.pickle`: must be a pickle.
    pickle: bool,
    /// `*.npy`: must be a `.npy`.
    npy: bool,
    /// A PyTorch storage (`data/<n>`): raw tensor bytes, never unpickled by torch.
    storage: bool,
}

/// Scans a zip entry or a decompressed layer by its content: `.npy`, zip, compressed stream,
/// an uninspectable format, or a pickle (strictly when named or announced as one, except for
/// PyTorch storages; otherwise only if [`pickle::PickleWalk::plausible`]).
fn scan_embedded(
    blob: &dyn Blob,
    entry: &str,
    hint: Hint,
    depth: u32,
    r: &mut Builder,
) -> io::Result<Embedded> {
    let head = blob.read_at(0, 4096)?;
    if head.starts_with(b"\x93NUMPY") || hint.npy {
        scan_npy(blob, Some(entry), r)?;
        return Ok(Embedded::Array);
    }
    if is_zip(&head) {
        if depth >= MAX_DEPTH {
            r.over_budget(
                Some(entry),
                format!("archives nest more than {MAX_DEPTH} deep; not inspected"),
            );
        } else {
            scan_zip(blob, Some(entry), depth + 1, r)?;
        }
        return Ok(Embedded::Archive);
    }
    if let Some(codec) = Codec::sniff(&head) {
        if depth >= MAX_DEPTH {
            r.over_budget(
                Some(entry),
                format!("compressed layers nest more than {MAX_DEPTH} deep; not inspected"),
            );
            return Ok(Embedded::Compressed);
        }
        if compress::scan_compressed(blob, codec, Some(entry), depth + 1, r)? {
            return Ok(Embedded::Compressed);
        }
    }
    if let Some(what) = foreign(&head) {
        uninspectable(r, what, Some(entry));
        return Ok(Embedded::Foreign);
    }
    let strict = hint.pickle || (announces_pickle(&head) && !hint.storage);
    let starts = head.first().is_some_and(|&b| can_start_pickle(b));
    if (strict || starts) && scan_pickle(blob, Some(entry), strict, r)? {
        return Ok(Embedded::Pickle);
    }
    Ok(Embedded::Data)
}

/// A file named as one model format whose bytes are another (or none) is refused.
fn check_name(r: &mut Builder, path: &str) {
    let Some(ext) = extension(path) else {
        return;
    };
    let expected = match ext.as_str() {
        "safetensors" => Format::Safetensors,
        "gguf" => Format::Gguf,
        "npy" => Format::Npy,
        "npz" => Format::Npz,
        _ => return,
    };
    if r.format != expected && r.format != Format::Unknown {
        let message = format!(
            "named .{ext}, but its bytes are a {}: a loader that trusts the name would read it wrongly",
            r.format
        );
        r.add(Rule::Misnamed, message, None, None);
    }
}

fn scan_unknown(blob: &dyn Blob, head: &[u8], r: &mut Builder) -> io::Result<()> {
    r.format = Format::Unknown;
    let ext = extension(&r.path);
    if ext.as_deref() == Some("safetensors") {
        // Named safetensors: the loader's own checks say what is wrong.
        return scan_safetensors(blob, r);
    }
    if let Some(ext) = ext.filter(|e| MODEL_EXTENSIONS.contains(&e.as_str())) {
        r.summary = "unrecognised bytes".into();
        let message = format!(
            "named .{ext}, but its bytes are no known model format (safetensors, pickle, \
             PyTorch zip, NumPy, GGUF)"
        );
        r.add(Rule::Misnamed, message, None, None);
        return Ok(());
    }
    let kind = if blob.size() == 0 {
        "empty file"
    } else {
        match std::str::from_utf8(head) {
            Ok(_) => "text",
            Err(e) if e.error_len().is_none() => "text",
            Err(_) => "binary",
        }
    };
    r.summary = format!("not a model weight format ({kind})");
    r.add(
        Rule::NotAModel,
        "not a model weight format".into(),
        None,
        None,
    );
    Ok(())
}
