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
//! | `torch_zip` | `PK\x03\x04`, an entry `data.pkl` or `*/data.pkl` | the archive's directory, every `*.pkl` entry as a pickle, every `*.npy` entry |
//! | `npz` | `PK\x03\x04`, every entry `*.npy` | every entry as a `.npy` |
//! | `zip` | `PK\x03\x04` or `PK\x05\x06`, anything else | its `*.pkl`, `*.pickle` and `*.npy` entries |
//! | `safetensors` | `u64` LE header length `N <= 100_000_000`, `{` at byte 8 | everything [`trainer::safe_load`] checks (that module is the spec) |
//! | `pickle` | `0x80` `PROTO` with protocol 0 to 5 | the opcode stream (below) |
//! | `safetensors` | `{` at byte 8 with an oversize length, the 8 bytes before not all text | reported invalid: header too large |
//! | `pickle` (protocol 0/1) | a protocol-0/1 opcode that can start a pickle (`(`, `c`, `}`, `]`, `)`, `I`, `L`, `F`, `S`, `V`, `N`, `K`, `J`, `M`, `T`, `U`, `X`, `G`, `i`) | the walk reaches `STOP`, or imports a deny-listed global before it fails |
//! | `unknown` | anything else | nothing: "not a model weight format" |
//!
//! Zip archives are read through their central directory (zip64 included), parsed here: no zip
//! library. Stored entries are read in place; deflated ones are inflated by the small RFC 1951
//! decoder at the end of this module, up to [`SCAN_LIMIT`] bytes. An entry name that differs
//! between the central directory and its local header, or that appears twice, makes the archive
//! invalid (two readers could see two different files).
//!
//! # Verdicts
//!
//! Every finding has a [`Rule`]; every rule implies a verdict, and a file's verdict is the worst
//! implied by its findings, in the order `safe < unknown < invalid < unsafe` (a file with no
//! finding is `safe`). `safe` and `unknown` are clean (`trainprov scan` exits 0); `invalid` and
//! `unsafe` are not (exit 1).
//!
//! | rule | severity | verdict | when |
//! |---|---|---|---|
//! | `pickle-dangerous-global` | error | unsafe | a pickle imports a global of the deny-list below |
//! | `pickle-unknown-global` | error | unsafe | a pickle imports a global on neither list |
//! | `pickle-unresolved-global` | error | unsafe | `STACK_GLOBAL` on operands that are not constant strings, or `EXT1/2/4` (copyreg's registry) |
//! | `zip-uninspectable` | error | unsafe | a `*.pkl`/`*.npy` entry that is encrypted, or compressed other than deflate, or too large to read |
//! | `npy-object-dtype` | error | unsafe | a `.npy` whose `descr` holds an object (`O`) type: its data is a pickle that `np.load(allow_pickle=True)` runs |
//! | `gguf-chat-template` | error | unsafe | a `tokenizer.chat_template*` value reaching Python internals (`__globals__`, `__subclasses__`, `__builtins__`, ...), a Jinja template injection as in CVE-2024-34359 |
//! | `safetensors-invalid` | error | invalid | any [`trainer::safe_load::LoadError`] of the header checks; the message is the loader's |
//! | `pickle-invalid` | error | invalid | truncated stream, unknown opcode, stack underflow, missing memo entry, ... |
//! | `zip-invalid` | error | invalid | no end record, directory out of bounds, duplicate or mismatched names, bad deflate data |
//! | `npy-invalid` | error | invalid | bad version, header or `descr`, data shorter or longer than the shape needs |
//! | `gguf-invalid` | error | invalid | see GGUF below |
//! | `misnamed` | error | invalid | named `.safetensors`, `.gguf`, `.npy`, `.npz`, `.pt`, `.pth`, `.ckpt`, `.pkl` or `.pickle` but the bytes are another or no known format |
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
//! Every opcode of protocols 0 to 5 is decoded with its argument (lines for the text opcodes,
//! fixed and length-prefixed arguments for the binary ones, `FRAME` lengths checked against the
//! bytes present) and applied to a symbolic stack of *string*, *global* and *other* items, with
//! `MARK` positions and the memo, exactly as CPython's unpickler moves its stack, so a walk stays
//! in sync and `STACK_GLOBAL` is resolved from the items it really pops (strings pushed by any
//! string opcode, duplicated by `DUP`, fetched by `GET`/`BINGET`/`LONG_BINGET` after
//! `PUT`/`BINPUT`/`LONG_BINPUT`/`MEMOIZE`). `STRING` arguments are escape-decoded and `UNICODE`
//! arguments raw-unicode-escape-decoded, as CPython does, so `o\x73` still reads `os`. `GLOBAL`,
//! `INST`, `STACK_GLOBAL` and `EXT1/2/4` record imports; nothing is imported. A stream may be
//! followed by further pickles starting with `PROTO` (legacy `torch.save` writes five in a row),
//! which are walked too, up to five in all. The stack and memo hold at most 4,194,304 items, and
//! at most [`SCAN_LIMIT`] bytes of a file are read for a pickle, `.npy` header or GGUF metadata.
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
//! `torch_zip`, `zip`, `npy`, `npz`, `gguf`, `unknown`. [`sarif`] renders reports as SARIF 2.1.0.
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
use trainer::safe_load::{validate_safetensors_bytes, LoadError, MAX_HEADER_LEN};

/// The most bytes read from one file (or zip entry) to walk a pickle or parse a `.npy` header or
/// GGUF metadata; tensor data is never read.
pub const SCAN_LIMIT: u64 = 256 * 1024 * 1024;

/// Stack and memo sizes beyond which a pickle is refused as malformed.
const MAX_ITEMS: usize = 1 << 22;
/// Strings longer than this are not kept for `STACK_GLOBAL` resolution (no module is that long).
const MAX_KEPT_STR: usize = 1024;
/// At most this many consecutive pickles are walked (legacy `torch.save` writes five).
const MAX_PICKLES: usize = 5;
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
}

impl Verdict {
    /// `safe` and `unknown` are clean: `trainprov scan` exits 0 on them.
    pub fn is_clean(self) -> bool {
        matches!(self, Verdict::Safe | Verdict::Unknown)
    }

    fn rank(self) -> u8 {
        match self {
            Verdict::Safe => 0,
            Verdict::Unknown => 1,
            Verdict::Invalid => 2,
            Verdict::Unsafe => 3,
        }
    }

    /// The worse of two verdicts: `safe < unknown < invalid < unsafe`.
    pub fn worst(self, other: Verdict) -> Verdict {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// The label of a human output line: `ok`, `UNSAFE`, `INVALID`, `unknown`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Safe => "ok",
            Verdict::Unsafe => "UNSAFE",
            Verdict::Invalid => "INVALID",
            Verdict::Unknown => "unknown",
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
    /// A model-format file name over other bytes.
    Misnamed,
    /// The file holds a pickle.
    PickleFormat,
    /// Bytes after the last pickle.
    PickleTrailingData,
    /// A TorchScript archive.
    TorchScript,
    /// Not a model weight format.
    NotAModel,
}

impl Rule {
    /// Every rule, in SARIF `ruleIndex` order.
    pub const ALL: [Rule; 16] = [
        Rule::PickleDangerousGlobal,
        Rule::PickleUnknownGlobal,
        Rule::PickleUnresolvedGlobal,
        Rule::ZipUninspectable,
        Rule::NpyObjectDtype,
        Rule::GgufChatTemplate,
        Rule::SafetensorsInvalid,
        Rule::PickleInvalid,
        Rule::ZipInvalid,
        Rule::NpyInvalid,
        Rule::GgufInvalid,
        Rule::Misnamed,
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
            | Rule::GgufChatTemplate => Verdict::Unsafe,
            Rule::SafetensorsInvalid
            | Rule::PickleInvalid
            | Rule::ZipInvalid
            | Rule::NpyInvalid
            | Rule::GgufInvalid
            | Rule::Misnamed => Verdict::Invalid,
            Rule::PickleFormat | Rule::PickleTrailingData | Rule::TorchScript => Verdict::Safe,
            Rule::NotAModel => Verdict::Unknown,
        }
    }

    /// The severity of a finding of this rule.
    pub fn severity(self) -> Severity {
        match self.verdict() {
            Verdict::Unsafe | Verdict::Invalid => Severity::Error,
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
    /// Every global imported by the file's pickles (`module.name`), in order of first import.
    pub globals: Vec<String>,
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
/// sorted by path. Reads only what the checks need: headers, directories and pickles, never
/// tensor data.
pub fn scan_path(path: &Path) -> Result<Vec<FileReport>, ScanError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScanError::Io { path, source }
    };
    let meta = fs_err::metadata(path).map_err(io_err(path))?;
    if meta.is_file() {
        return Ok(vec![scan_file(path)?]);
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
                files.push(child);
            }
        }
    }
    files.sort();
    files.iter().map(|f| scan_file(f)).collect()
}

fn scan_file(path: &Path) -> Result<FileReport, ScanError> {
    let io_err = |source| ScanError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = fs_err::File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(ScanError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let blob = FileBlob {
        file: RefCell::new(file),
        size: meta.len(),
    };
    scan_blob(&path.display().to_string(), &blob).map_err(io_err)
}

/// Scans bytes held in memory; `name` is the report's path and is used only to notice a
/// model-format file name over other bytes (rule `misnamed`). Pure and total: it never panics,
/// whatever the bytes.
pub fn scan_bytes(name: &str, bytes: &[u8]) -> FileReport {
    match scan_blob(name, &SliceBlob(bytes)) {
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
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], pos: usize, eof: Eof, total: u64) -> Self {
        Cursor {
            buf,
            pos,
            eof,
            total,
        }
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
    findings: Vec<Finding>,
    seen: HashSet<(Rule, Option<String>, Option<String>)>,
}

impl Builder {
    fn new(path: &str) -> Self {
        Builder {
            path: path.to_string(),
            format: Format::Unknown,
            summary: String::new(),
            globals: Vec::new(),
            seen_globals: HashSet::new(),
            findings: Vec::new(),
            seen: HashSet::new(),
        }
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
    Pickle,
    Other,
}

/// Opcodes a protocol 0 or 1 pickle can start with.
const P01_START: &[u8] = b"(cicILFSVNKJMTUXG]})";

fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(b"GGUF") {
        return Kind::Gguf;
    }
    if head.starts_with(b"\x93NUMPY") {
        return Kind::Npy;
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
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
    if let [0x80, 0..=5, ..] = head {
        return Kind::Pickle;
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

fn scan_blob(name: &str, blob: &dyn Blob) -> io::Result<FileReport> {
    let mut r = Builder::new(name);
    let head = blob.read_at(0, 4096)?;
    match sniff(&head) {
        Kind::Gguf => scan_gguf(blob, &mut r)?,
        Kind::Npy => scan_npy(blob, None, &mut r)?,
        Kind::Zip => scan_zip(blob, &mut r)?,
        Kind::Safetensors => scan_safetensors(blob, &mut r)?,
        Kind::Pickle => scan_pickle(blob, None, &mut r)?,
        Kind::Other => {
            let maybe_pickle = head.first().is_some_and(|b| P01_START.contains(b));
            if !(maybe_pickle && scan_pickle01(blob, &mut r)?) {
                scan_unknown(blob, &head, &mut r)?;
            }
        }
    }
    check_name(&mut r);
    Ok(r.finish())
}

/// A file named as one model format whose bytes are another (or none) is refused.
fn check_name(r: &mut Builder) {
    let Some(ext) = extension(&r.path) else {
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

// ---------------------------------------------------------------------------------------------
// Safetensors
// ---------------------------------------------------------------------------------------------

fn scan_safetensors(blob: &dyn Blob, r: &mut Builder) -> io::Result<()> {
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
fn check_safetensors(blob: &dyn Blob) -> io::Result<Result<usize, LoadError>> {
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
fn count_tensors(header: &[u8]) -> usize {
    serde_json::from_slice::<serde_json::Map<String, Value>>(header)
        .map(|m| m.keys().filter(|k| *k != "__metadata__").count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Pickle: the symbolic walk
// ---------------------------------------------------------------------------------------------

/// A stack item: what the walk needs to know about a value.
#[derive(Clone)]
enum Item {
    Other,
    Str(Rc<str>),
    Global,
}

/// One import a pickle makes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Imported {
    Named {
        module: String,
        name: String,
    },
    /// `STACK_GLOBAL` on operands that are not strings the walk could follow.
    Unresolved,
    /// `EXT1/2/4`: a code of copyreg's extension registry.
    Extension(i64),
}

impl Imported {
    fn display(&self) -> String {
        match self {
            Imported::Named { module, name } => format!("{module}.{name}"),
            Imported::Unresolved => "<STACK_GLOBAL of computed operands>".into(),
            Imported::Extension(code) => format!("<copyreg extension {code}>"),
        }
    }
}

/// The result of walking one pickle.
struct PickleWalk {
    start: usize,
    imports: Vec<Imported>,
    protocol: Option<u8>,
    binary: bool,
    /// The offset after `STOP`.
    end: Option<usize>,
    /// Where and why the walk failed.
    error: Option<(usize, String)>,
}

struct Machine {
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    imports: Vec<Imported>,
    protocol: Option<u8>,
    binary: bool,
}

impl Machine {
    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, item: Item) -> Result<(), Stop> {
        if self.stack.len() >= MAX_ITEMS {
            return bad(format!("stack deeper than {MAX_ITEMS} items"));
        }
        self.stack.push(item);
        Ok(())
    }

    fn pop(&mut self) -> Result<Item, Stop> {
        if self.stack.len() <= self.base() {
            return bad("stack underflow");
        }
        self.stack
            .pop()
            .ok_or_else(|| Stop::Bad("stack underflow".into()))
    }

    fn top(&self) -> Result<&Item, Stop> {
        if self.stack.len() <= self.base() {
            return bad("stack underflow");
        }
        self.stack
            .last()
            .ok_or_else(|| Stop::Bad("stack underflow".into()))
    }

    /// Pops to the last mark; returns the first item above it, if any.
    fn pop_mark(&mut self) -> Result<Option<Item>, Stop> {
        let Some(mark) = self.marks.pop() else {
            return bad("no MARK on the stack");
        };
        let first = self.stack.get(mark).cloned();
        self.stack.truncate(mark);
        Ok(first)
    }

    fn string(&mut self, text: String) -> Result<(), Stop> {
        if text.len() > MAX_KEPT_STR {
            self.push(Item::Other)
        } else {
            self.push(Item::Str(Rc::from(text)))
        }
    }

    fn memo_get(&mut self, key: u64) -> Result<(), Stop> {
        match self.memo.get(&key) {
            Some(item) => {
                let item = item.clone();
                self.push(item)
            }
            None => bad(format!("memo key {key} was never stored")),
        }
    }

    fn memo_put(&mut self, key: u64) -> Result<(), Stop> {
        let item = self.top()?.clone();
        if self.memo.len() >= MAX_ITEMS && !self.memo.contains_key(&key) {
            return bad(format!("memo larger than {MAX_ITEMS} items"));
        }
        self.memo.insert(key, item);
        Ok(())
    }

    fn import(&mut self, imported: Imported) -> Result<(), Stop> {
        self.imports.push(imported);
        self.push(Item::Global)
    }

    /// Executes one opcode symbolically; `Ok(true)` after `STOP`.
    fn step(&mut self, c: &mut Cursor<'_>) -> Result<bool, Stop> {
        let op = c.u8("opcode")?;
        match op {
            b'(' => {
                if self.marks.len() >= MAX_ITEMS {
                    return bad(format!("more than {MAX_ITEMS} marks"));
                }
                self.marks.push(self.stack.len());
            }
            b'.' => {
                self.pop()?;
                return Ok(true);
            }
            b'0' => {
                // POP: an item, or the mark right on top (CPython's load_pop).
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?.clone();
                self.push(top)?;
            }
            b'F' => {
                let line = c.line("FLOAT")?;
                number_line(line, "FLOAT")?;
                self.push(Item::Other)?;
            }
            b'I' => {
                let line = c.line("INT")?;
                number_line(line, "INT")?;
                self.push(Item::Other)?;
            }
            b'L' => {
                let line = c.line("LONG")?;
                number_line(line.strip_suffix(b"L").unwrap_or(line), "LONG")?;
                self.push(Item::Other)?;
            }
            b'J' => {
                c.take(4, "BININT")?;
                self.push(Item::Other)?;
            }
            b'K' => {
                c.take(1, "BININT1")?;
                self.push(Item::Other)?;
            }
            b'M' => {
                c.take(2, "BININT2")?;
                self.push(Item::Other)?;
            }
            b'G' => {
                c.take(8, "BINFLOAT")?;
                self.push(Item::Other)?;
            }
            0x8a => {
                let n = c.u8("LONG1 length")?;
                c.take(u64::from(n), "LONG1")?;
                self.push(Item::Other)?;
            }
            0x8b => {
                let n = c.i32("LONG4 length")?;
                let Ok(n) = u64::try_from(n) else {
                    return bad("LONG4 has a negative byte count");
                };
                c.take(n, "LONG4")?;
                self.push(Item::Other)?;
            }
            b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f | 0x97 => self.push(Item::Other)?,
            b'S' => {
                let line = c.line("STRING")?;
                let text = string_opcode(line)?;
                self.string(text)?;
            }
            b'T' => {
                let n = c.i32("BINSTRING length")?;
                let Ok(n) = u64::try_from(n) else {
                    return bad("BINSTRING has a negative length");
                };
                let bytes = c.take(n, "BINSTRING")?;
                self.string(latin1(bytes))?;
            }
            b'U' => {
                let n = c.u8("SHORT_BINSTRING length")?;
                let bytes = c.take(u64::from(n), "SHORT_BINSTRING")?;
                self.string(latin1(bytes))?;
            }
            b'V' => {
                let line = c.line("UNICODE")?;
                let text = raw_unicode_escape(line)?;
                self.string(text)?;
            }
            b'X' => {
                let n = c.u32("BINUNICODE length")?;
                let bytes = c.take(u64::from(n), "BINUNICODE")?;
                self.string(String::from_utf8_lossy(bytes).into_owned())?;
            }
            0x8c => {
                let n = c.u8("SHORT_BINUNICODE length")?;
                let bytes = c.take(u64::from(n), "SHORT_BINUNICODE")?;
                self.string(String::from_utf8_lossy(bytes).into_owned())?;
            }
            0x8d => {
                let n = c.u64("BINUNICODE8 length")?;
                let bytes = c.take(n, "BINUNICODE8")?;
                self.string(String::from_utf8_lossy(bytes).into_owned())?;
            }
            b'B' => {
                let n = c.u32("BINBYTES length")?;
                c.take(u64::from(n), "BINBYTES")?;
                self.push(Item::Other)?;
            }
            b'C' => {
                let n = c.u8("SHORT_BINBYTES length")?;
                c.take(u64::from(n), "SHORT_BINBYTES")?;
                self.push(Item::Other)?;
            }
            0x8e | 0x96 => {
                let n = c.u64("BINBYTES8 length")?;
                c.take(n, "BINBYTES8/BYTEARRAY8")?;
                self.push(Item::Other)?;
            }
            0x98 => {
                self.top()?;
            }
            b't' | b'l' | b'd' | 0x91 => {
                self.pop_mark()?;
                self.push(Item::Other)?;
            }
            0x85 => {
                self.pop()?;
                self.push(Item::Other)?;
            }
            0x86 => {
                self.pop()?;
                self.pop()?;
                self.push(Item::Other)?;
            }
            0x87 => {
                self.pop()?;
                self.pop()?;
                self.pop()?;
                self.push(Item::Other)?;
            }
            b'a' => {
                self.pop()?;
                self.top()?;
            }
            b'e' | b'u' | 0x90 => {
                self.pop_mark()?;
                self.top()?;
            }
            b's' => {
                self.pop()?;
                self.pop()?;
                self.top()?;
            }
            b'c' => {
                let module = utf8_line(c, "GLOBAL module")?;
                let name = utf8_line(c, "GLOBAL name")?;
                self.import(Imported::Named { module, name })?;
            }
            b'i' => {
                let module = utf8_line(c, "INST module")?;
                let name = utf8_line(c, "INST name")?;
                // CPython imports first, then pops the arguments and calls.
                self.imports.push(Imported::Named { module, name });
                self.pop_mark()?;
                self.push(Item::Other)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let imported = match (module, name) {
                    (Item::Str(module), Item::Str(name)) => Imported::Named {
                        module: module.to_string(),
                        name: name.to_string(),
                    },
                    _ => Imported::Unresolved,
                };
                self.import(imported)?;
            }
            0x82..=0x84 => {
                let code = match op {
                    0x82 => i64::from(c.u8("EXT1 code")?),
                    0x83 => i64::from(c.u16("EXT2 code")?),
                    _ => i64::from(c.i32("EXT4 code")?),
                };
                if code <= 0 {
                    return bad("EXT specifies code <= 0");
                }
                self.import(Imported::Extension(code))?;
            }
            b'o' => {
                if self.pop_mark()?.is_none() {
                    return bad("OBJ without a class");
                }
                self.push(Item::Other)?;
            }
            b'R' | 0x81 => {
                self.pop()?;
                self.pop()?;
                self.push(Item::Other)?;
            }
            0x92 => {
                self.pop()?;
                self.pop()?;
                self.pop()?;
                self.push(Item::Other)?;
            }
            b'b' => {
                self.pop()?;
                self.top()?;
            }
            b'P' => {
                let line = c.line("PERSID")?;
                if !line.is_ascii() {
                    return bad("PERSID id is not ASCII");
                }
                self.push(Item::Other)?;
            }
            b'Q' => {
                self.pop()?;
                self.push(Item::Other)?;
            }
            b'g' => {
                let key = decimal_line(c.line("GET")?, "GET")?;
                self.memo_get(key)?;
            }
            b'h' => {
                let key = c.u8("BINGET")?;
                self.memo_get(u64::from(key))?;
            }
            b'j' => {
                let key = c.u32("LONG_BINGET")?;
                self.memo_get(u64::from(key))?;
            }
            b'p' => {
                let key = decimal_line(c.line("PUT")?, "PUT")?;
                self.memo_put(key)?;
            }
            b'q' => {
                let key = c.u8("BINPUT")?;
                self.memo_put(u64::from(key))?;
            }
            b'r' => {
                let key = c.u32("LONG_BINPUT")?;
                self.memo_put(u64::from(key))?;
            }
            0x94 => {
                let key = self.memo.len() as u64;
                self.memo_put(key)?;
            }
            0x80 => {
                let protocol = c.u8("PROTO")?;
                if protocol > 5 {
                    return bad(format!("unsupported pickle protocol {protocol}"));
                }
                self.protocol.get_or_insert(protocol);
            }
            0x95 => {
                let n = c.u64("FRAME length")?;
                if (c.remaining() as u64) < n {
                    return Err(c.short("FRAME", n));
                }
            }
            other => return bad(format!("unknown opcode 0x{other:02x}")),
        }
        if !b"(.02FILNPRSVabcdgilpst".contains(&op) {
            self.binary = true;
        }
        Ok(false)
    }
}

fn utf8_line(c: &mut Cursor<'_>, what: &str) -> Result<String, Stop> {
    let line = c.line(what)?;
    match std::str::from_utf8(line) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => bad(format!("{what} is not UTF-8")),
    }
}

/// A text-opcode number: what Python's `int(x, 0)`/`float(x)` could accept, loosely.
fn number_line(line: &[u8], what: &str) -> Result<(), Stop> {
    let text = line.trim_ascii();
    let ok = !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        bad(format!("{what} argument is not a number"))
    }
}

fn decimal_line(line: &[u8], what: &str) -> Result<u64, Stop> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| Stop::Bad(format!("{what} argument is not a non-negative integer")))
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// `STRING`: a quoted, backslash-escaped line (CPython: strip quotes, `codecs.escape_decode`).
fn string_opcode(line: &[u8]) -> Result<String, Stop> {
    let inner = match line {
        [q, inner @ .., last] if q == last && matches!(q, b'\'' | b'"') => inner,
        _ => return bad("the STRING opcode argument must be quoted"),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            return bad("STRING ends with a lone backslash");
        };
        i += 1;
        match e {
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'x' => {
                let hex = inner
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => return bad("invalid \\x escape in STRING"),
                }
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(latin1(&out))
}

/// `UNICODE`: Python's `raw-unicode-escape`: latin-1, except `\uXXXX` and `\UXXXXXXXX` after an
/// odd run of backslashes.
fn raw_unicode_escape(line: &[u8]) -> Result<String, Stop> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if b != b'\\' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let run = line
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&c| c == b'\\')
            .count();
        let after = line.get(i + run).copied();
        let digits = match after {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => {
                out.extend(std::iter::repeat_n('\\', run));
                i += run;
                continue;
            }
        };
        out.extend(std::iter::repeat_n('\\', run - 1));
        let hex = line
            .get(i + run + 1..i + run + 1 + digits)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match hex.and_then(char::from_u32) {
            Some(ch) => out.push(ch),
            None => return bad("truncated or invalid \\u escape in UNICODE"),
        }
        i += run + 1 + digits;
    }
    Ok(out)
}

fn walk_pickle(buf: &[u8], start: usize, eof: Eof, total: u64) -> Result<PickleWalk, Stop> {
    let mut m = Machine {
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        imports: Vec::new(),
        protocol: None,
        binary: false,
    };
    let mut c = Cursor::new(buf, start, eof, total);
    loop {
        let at = c.pos;
        let step = m.step(&mut c);
        let (end, error) = match step {
            Ok(false) => continue,
            Ok(true) => (Some(c.pos), None),
            Err(Stop::More) => return Err(Stop::More),
            Err(Stop::Bad(message)) => (None, Some((at, message))),
        };
        return Ok(PickleWalk {
            start,
            imports: m.imports,
            protocol: m.protocol,
            binary: m.binary,
            end,
            error,
        });
    }
}

/// The pickles of a file: one, then more while the next bytes start with `PROTO`.
struct PickleStream {
    walks: Vec<PickleWalk>,
    /// Offset and length of bytes after the last pickle.
    trailing: Option<(u64, u64)>,
}

impl PickleStream {
    fn protocol(&self) -> u8 {
        match self.walks.first() {
            Some(PickleWalk {
                protocol: Some(p), ..
            }) => *p,
            Some(w) if w.binary => 1,
            _ => 0,
        }
    }

    fn import_count(&self) -> usize {
        let all: HashSet<String> = self
            .walks
            .iter()
            .flat_map(|w| w.imports.iter().map(Imported::display))
            .collect();
        all.len()
    }
}

fn walk_stream(buf: &[u8], start: usize, eof: Eof, total: u64) -> Result<PickleStream, Stop> {
    let mut walks = Vec::new();
    let mut pos = start;
    loop {
        let walk = walk_pickle(buf, pos, eof, total)?;
        let end = walk.end;
        walks.push(walk);
        let Some(end) = end else {
            return Ok(PickleStream {
                walks,
                trailing: None,
            });
        };
        let left = total.saturating_sub(end as u64);
        if left == 0 {
            return Ok(PickleStream {
                walks,
                trailing: None,
            });
        }
        let next = buf.get(end..end + 2);
        if next.is_none() && eof == Eof::More {
            return Err(Stop::More);
        }
        let another = matches!(next, Some([0x80, 0..=5]));
        if !another || walks.len() >= MAX_PICKLES {
            return Ok(PickleStream {
                walks,
                trailing: Some((end as u64, left)),
            });
        }
        pos = end;
    }
}

/// How an import is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Allowed,
    Dangerous,
    Unknown,
}

const DANGEROUS_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "subprocess",
    "_posixsubprocess",
    "pty",
    "sys",
    "shutil",
    "runpy",
    "code",
    "codeop",
    "commands",
    "importlib",
    "imp",
    "pkgutil",
    "zipimport",
    "marshal",
    "pickle",
    "_pickle",
    "shelve",
    "dill",
    "cloudpickle",
    "ctypes",
    "_ctypes",
    "socket",
    "_socket",
    "ssl",
    "webbrowser",
    "requests",
    "urllib",
    "urllib2",
    "urllib3",
    "http",
    "httplib",
    "ftplib",
    "smtplib",
    "telnetlib",
    "xmlrpc",
    "asyncio",
    "multiprocessing",
    "threading",
    "_thread",
    "signal",
    "pdb",
    "bdb",
    "timeit",
    "profile",
    "cProfile",
    "trace",
    "pip",
    "setuptools",
    "distutils",
    "io",
    "_io",
    "pathlib",
    "fileinput",
    "tempfile",
    "_winapi",
    "winreg",
    "msvcrt",
    "torch.hub",
    "torch.jit",
    "torch.package",
];

const DANGEROUS_BUILTINS: &[&str] = &[
    "eval",
    "exec",
    "execfile",
    "compile",
    "open",
    "file",
    "__import__",
    "getattr",
    "setattr",
    "delattr",
    "globals",
    "locals",
    "vars",
    "breakpoint",
    "input",
    "apply",
    "reload",
];

const DANGEROUS_NAMES: &[(&str, &str)] = &[
    ("types", "CodeType"),
    ("types", "FunctionType"),
    ("types", "LambdaType"),
    ("types", "MethodType"),
    ("types", "ModuleType"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("torch", "load"),
    ("torch.storage", "_load_from_bytes"),
    ("numpy", "load"),
];

const ALLOWED_NAMES: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("_codecs", "encode"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.serialization", "_get_layout"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
];

const ALLOWED_BUILTINS: &[&str] = &["set", "frozenset", "bytearray", "complex", "slice"];

/// `torch.<name>` attributes that are plain values: dtypes, layouts, memory formats, qschemes.
const TORCH_VALUES: &[&str] = &[
    "Size",
    "Tensor",
    "device",
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "complex32",
    "complex64",
    "complex128",
    "cfloat",
    "cdouble",
    "chalf",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "bool",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_channel_affine",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
];

fn in_module(module: &str, root: &str) -> bool {
    module == root
        || module
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn classify(module: &str, name: &str) -> Class {
    let head = name.split('.').next().unwrap_or(name);
    let builtins = module == "builtins" || module == "__builtin__";
    if DANGEROUS_MODULES.iter().any(|root| in_module(module, root))
        || (builtins && DANGEROUS_BUILTINS.contains(&head))
        || DANGEROUS_NAMES
            .iter()
            .any(|(m, n)| *m == module && *n == head)
    {
        return Class::Dangerous;
    }
    let identifier =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let allowed = ALLOWED_NAMES.contains(&(module, name))
        || (builtins && ALLOWED_BUILTINS.contains(&name))
        || (module == "torch" && TORCH_VALUES.contains(&name))
        || (module == "torch" && name.ends_with("Storage") && identifier(name))
        || (module == "numpy.dtypes" && name.ends_with("DType") && identifier(name));
    if allowed {
        Class::Allowed
    } else {
        Class::Unknown
    }
}

/// Whether `s` is a dotted Python identifier (used to recognise protocol 0/1 pickles).
fn dotted_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            part.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Adds the findings of a walked pickle stream.
fn report_pickles(stream: &PickleStream, entry: Option<&str>, r: &mut Builder) {
    for walk in &stream.walks {
        for imported in &walk.imports {
            let shown = imported.display();
            r.global(&shown);
            let (rule, text) = match imported {
                Imported::Named { module, name } => match classify(module, name) {
                    Class::Allowed => continue,
                    Class::Dangerous => (
                        Rule::PickleDangerousGlobal,
                        format!(
                            "pickle imports {shown}, which can run commands or code when unpickled"
                        ),
                    ),
                    Class::Unknown => (
                        Rule::PickleUnknownGlobal,
                        format!(
                            "pickle imports {shown}, which is not on the allow-list; unpickling \
                             may call it"
                        ),
                    ),
                },
                Imported::Unresolved => (
                    Rule::PickleUnresolvedGlobal,
                    "pickle imports a global through STACK_GLOBAL on operands that are not \
                     constant strings; it cannot be checked"
                        .to_string(),
                ),
                Imported::Extension(code) => (
                    Rule::PickleUnresolvedGlobal,
                    format!(
                        "pickle imports extension code {code} of copyreg's registry; it cannot be \
                         checked"
                    ),
                ),
            };
            r.add(rule, prefixed(entry, &text), Some(shown), entry);
        }
        if let Some((offset, message)) = &walk.error {
            let which = if stream.walks.len() > 1 || walk.start > 0 {
                format!("pickle at byte {}", walk.start)
            } else {
                "pickle".to_string()
            };
            r.add(
                Rule::PickleInvalid,
                prefixed(
                    entry,
                    &format!("malformed {which}: {message} (at byte {offset})"),
                ),
                None,
                entry,
            );
        }
    }
    if let Some((offset, len)) = stream.trailing {
        r.add(
            Rule::PickleTrailingData,
            prefixed(
                entry,
                &format!(
                    "{} after the pickle stream (from byte {offset}) were not inspected",
                    plural(usize::try_from(len).unwrap_or(usize::MAX), "byte", "bytes")
                ),
            ),
            None,
            entry,
        );
    }
    r.add(
        Rule::PickleFormat,
        "pickle format: loading it executes code, and trainprov's loaders refuse it; convert \
         to safetensors"
            .into(),
        None,
        None,
    );
}

fn pickle_summary(r: &mut Builder, stream: &PickleStream) {
    let globals = stream.import_count();
    let mut summary = format!("{}, {}", r.format, plural(globals, "global", "globals"));
    if stream.walks.len() > 1 {
        summary.push_str(&format!(" in {} pickles", stream.walks.len()));
    }
    r.summary = summary;
}

/// A file (or entry) that starts like a pickle of protocol 2 or above.
fn scan_pickle(blob: &dyn Blob, entry: Option<&str>, r: &mut Builder) -> io::Result<()> {
    let stream = with_prefix(blob, |buf, eof, total| walk_stream(buf, 0, eof, total))?;
    match stream {
        Ok(stream) => {
            if entry.is_none() {
                r.format = Format::Pickle {
                    protocol: stream.protocol(),
                };
                pickle_summary(r, &stream);
            }
            report_pickles(&stream, entry, r);
        }
        Err(message) => {
            if entry.is_none() {
                r.format = Format::Pickle { protocol: 0 };
                r.summary = "pickle".into();
            }
            r.add(
                Rule::PickleInvalid,
                prefixed(entry, &format!("malformed pickle: {message}")),
                None,
                entry,
            );
        }
    }
    Ok(())
}

/// A file that may be a protocol 0 or 1 pickle: it is one if the walk reaches `STOP`, or imports
/// a deny-listed global before failing (a word list `can\nyou\n...` reads as `GLOBAL can.you`,
/// and is not taken for a pickle). Returns whether it was.
fn scan_pickle01(blob: &dyn Blob, r: &mut Builder) -> io::Result<bool> {
    let Ok(stream) = with_prefix(blob, |buf, eof, total| walk_stream(buf, 0, eof, total))? else {
        return Ok(false);
    };
    let Some(first) = stream.walks.first() else {
        return Ok(false);
    };
    let dangerous = first.imports.iter().any(|i| match i {
        Imported::Named { module, name } => {
            dotted_identifier(module)
                && dotted_identifier(name)
                && classify(module, name) == Class::Dangerous
        }
        _ => false,
    });
    if first.end.is_none() && !dangerous {
        return Ok(false);
    }
    r.format = Format::Pickle {
        protocol: stream.protocol(),
    };
    pickle_summary(r, &stream);
    report_pickles(&stream, None, r);
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Zip archives (PyTorch checkpoints, .npz)
// ---------------------------------------------------------------------------------------------

/// Largest central directory read.
const MAX_CENTRAL_DIRECTORY: u64 = 64 * 1024 * 1024;

struct ZipEntry {
    name: String,
    raw_name: Vec<u8>,
    flags: u16,
    method: u16,
    compressed: u64,
    size: u64,
    offset: u64,
}

fn scan_zip(blob: &dyn Blob, r: &mut Builder) -> io::Result<()> {
    r.format = Format::Zip;
    let entries = match zip_directory(blob)? {
        Ok(entries) => entries,
        Err(message) => {
            r.summary = "zip archive".into();
            r.add(Rule::ZipInvalid, message, None, None);
            return Ok(());
        }
    };
    let torch = entries
        .iter()
        .any(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl"));
    let npz = !entries.is_empty() && entries.iter().all(|e| e.name.ends_with(".npy"));
    r.format = if torch {
        Format::TorchZip
    } else if npz {
        Format::Npz
    } else {
        Format::Zip
    };
    let mut pickles = 0usize;
    let mut arrays = 0usize;
    let mut storages = 0usize;
    let mut torchscript = false;
    for e in &entries {
        let lower = e.name.to_ascii_lowercase();
        let is_pickle = lower.ends_with(".pkl") || lower.ends_with(".pickle");
        let is_npy = lower.ends_with(".npy");
        if torch {
            let parent = e.name.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
            let leaf = e.name.rsplit('/').next().unwrap_or("");
            if (parent == "data" || parent.ends_with("/data"))
                && !leaf.is_empty()
                && leaf.bytes().all(|b| b.is_ascii_digit())
            {
                storages += 1;
            }
            if e.name.starts_with("code/") || e.name.contains("/code/") {
                torchscript = true;
            }
        }
        if !is_pickle && !is_npy {
            continue;
        }
        let content = match open_entry(blob, e)? {
            Ok(content) => content,
            Err(EntryProblem::Invalid(message)) => {
                r.add(
                    Rule::ZipInvalid,
                    format!("{}: {message}", e.name),
                    None,
                    Some(&e.name),
                );
                continue;
            }
            Err(EntryProblem::Uninspectable(why)) => {
                let holds = if is_pickle { "a pickle" } else { "an array" };
                r.add(
                    Rule::ZipUninspectable,
                    format!("{}: {why}, so {holds} inside cannot be checked", e.name),
                    None,
                    Some(&e.name),
                );
                continue;
            }
        };
        if is_pickle {
            pickles += 1;
            scan_pickle(content.as_ref(), Some(&e.name), r)?;
        } else {
            arrays += 1;
            scan_npy(content.as_ref(), Some(&e.name), r)?;
        }
    }
    if torchscript {
        r.add(
            Rule::TorchScript,
            "TorchScript archive (code/ entries): torch.jit.load runs its code".into(),
            None,
            None,
        );
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
    r.summary = parts.join(", ");
    if r.format == Format::Zip && pickles == 0 && arrays == 0 {
        r.add(
            Rule::NotAModel,
            "zip archive without pickle or .npy entries: not a model weight format".into(),
            None,
            None,
        );
    }
    Ok(())
}

enum EntryProblem {
    Invalid(String),
    Uninspectable(String),
}

/// The contents of an entry, read in place (stored) or inflated (deflate).
fn open_entry<'a>(
    blob: &'a dyn Blob,
    e: &ZipEntry,
) -> io::Result<Result<Box<dyn Blob + 'a>, EntryProblem>> {
    use EntryProblem::{Invalid, Uninspectable};
    if e.flags & 1 != 0 {
        return Ok(Err(Uninspectable("the entry is encrypted".into())));
    }
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
    match e.method {
        0 => {
            if e.compressed != e.size {
                return Ok(Err(Invalid(format!(
                    "stored entry with compressed size {} but size {}",
                    e.compressed, e.size
                ))));
            }
            Ok(Ok(Box::new(SubBlob {
                inner: blob,
                start,
                size: e.size,
            })))
        }
        8 => {
            if e.compressed > SCAN_LIMIT {
                return Ok(Err(Uninspectable(format!(
                    "its {} compressed bytes exceed the scan limit of {SCAN_LIMIT}",
                    e.compressed
                ))));
            }
            let data = blob.read_at(start, e.compressed)?;
            // One byte more than the directory promises reveals a longer stream.
            let limit =
                usize::try_from(e.size.min(SCAN_LIMIT).saturating_add(1)).unwrap_or(usize::MAX);
            match inflate(&data, limit) {
                Ok((bytes, complete)) => {
                    if (complete || bytes.len() as u64 > e.size) && bytes.len() as u64 != e.size {
                        return Ok(Err(Invalid(format!(
                            "inflates to {} bytes, the directory says {}",
                            bytes.len(),
                            e.size
                        ))));
                    }
                    Ok(Ok(Box::new(PrefixBlob {
                        bytes,
                        size: e.size,
                    })))
                }
                Err(message) => Ok(Err(Invalid(format!("bad deflate data: {message}")))),
            }
        }
        m => Ok(Err(Uninspectable(format!(
            "it is compressed with method {m}, which this scanner does not read"
        )))),
    }
}

fn zip_directory(blob: &dyn Blob) -> io::Result<Result<Vec<ZipEntry>, String>> {
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

// ---------------------------------------------------------------------------------------------
// NumPy .npy
// ---------------------------------------------------------------------------------------------

/// Largest `.npy` header accepted.
const MAX_NPY_HEADER: u64 = 1024 * 1024;

struct NpyHeader {
    version: (u8, u8),
    descr: String,
    object: bool,
    itemsize: Option<u64>,
    shape: Vec<u64>,
    data_start: usize,
}

fn scan_npy(blob: &dyn Blob, entry: Option<&str>, r: &mut Builder) -> io::Result<()> {
    if entry.is_none() {
        r.format = Format::Npy;
        r.summary = "NumPy .npy".into();
    }
    let parsed = with_prefix(blob, |buf, eof, total| {
        let header = parse_npy(buf, eof, total)?;
        let stream = if header.object && (header.data_start as u64) < total {
            Some(walk_stream(buf, header.data_start, eof, total)?)
        } else {
            None
        };
        Ok((header, stream))
    })?;
    let (header, stream) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            r.add(Rule::NpyInvalid, prefixed(entry, &message), None, entry);
            return Ok(());
        }
    };
    let shape: Vec<String> = header.shape.iter().map(u64::to_string).collect();
    if entry.is_none() {
        r.summary = format!(
            "NumPy .npy v{}.{}, {} ({})",
            header.version.0,
            header.version.1,
            header.descr,
            shape.join(", ")
        );
    }
    if header.object {
        r.add(
            Rule::NpyObjectDtype,
            prefixed(
                entry,
                &format!(
                    "object dtype {}: the data is a pickle that np.load(allow_pickle=True) runs",
                    header.descr
                ),
            ),
            None,
            entry,
        );
        if let Some(stream) = stream {
            report_pickles(&stream, entry, r);
        }
        return Ok(());
    }
    let data_len = blob.size().saturating_sub(header.data_start as u64);
    let expected = header.itemsize.and_then(|size| {
        header
            .shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d))
    });
    match (header.itemsize, expected) {
        (Some(_), None) => r.add(
            Rule::NpyInvalid,
            prefixed(entry, "the shape's byte size overflows 64 bits"),
            None,
            entry,
        ),
        (Some(_), Some(expected)) if expected != data_len => r.add(
            Rule::NpyInvalid,
            prefixed(
                entry,
                &format!(
                    "dtype {} and shape ({}) need {expected} data bytes, the file holds {data_len}",
                    header.descr,
                    shape.join(", ")
                ),
            ),
            None,
            entry,
        ),
        _ => {}
    }
    Ok(())
}

fn parse_npy(buf: &[u8], eof: Eof, total: u64) -> Result<NpyHeader, Stop> {
    let mut c = Cursor::new(buf, 0, eof, total);
    if c.take(6, "magic")? != b"\x93NUMPY" {
        return bad("not a .npy file (bad magic)");
    }
    let major = c.u8("major version")?;
    let minor = c.u8("minor version")?;
    let header_len = match (major, minor) {
        (1, 0) => u64::from(c.u16("header length")?),
        (2 | 3, 0) => u64::from(c.u32("header length")?),
        _ => return bad(format!("unsupported .npy version {major}.{minor}")),
    };
    if header_len > MAX_NPY_HEADER {
        return bad(format!(
            "header of {header_len} bytes is above the limit of {MAX_NPY_HEADER}"
        ));
    }
    let raw = c.take(header_len, "header")?;
    let text: String = if major == 3 {
        match std::str::from_utf8(raw) {
            Ok(s) => s.to_string(),
            Err(_) => return bad("version 3.0 header is not UTF-8"),
        }
    } else {
        latin1(raw)
    };
    let dict = match parse_literal(&text) {
        Ok(Lit::Dict(items)) => items,
        Ok(_) => return bad("header is not a dict"),
        Err(message) => return bad(format!("header is not a Python literal: {message}")),
    };
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in dict {
        let Lit::Str(key) = key else {
            return bad("header has a key that is not a string");
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            other => return bad(format!("header has the unexpected key {other:?}")),
        };
        if slot.replace(value).is_some() {
            return bad(format!("header repeats the key {key:?}"));
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return bad("header must hold exactly descr, fortran_order and shape");
    };
    if !matches!(fortran, Lit::Bool(_)) {
        return bad("fortran_order is not a bool");
    }
    let Lit::Tuple(dims) = shape else {
        return bad("shape is not a tuple");
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            Lit::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| Stop::Bad("shape holds something other than non-negative ints".into()))?;
    let dtype = dtype_of(&descr, 0).map_err(Stop::Bad)?;
    Ok(NpyHeader {
        version: (major, minor),
        descr: literal_text(&descr),
        object: dtype.object,
        itemsize: dtype.itemsize,
        shape,
        data_start: c.pos,
    })
}

struct Dtype {
    object: bool,
    itemsize: Option<u64>,
}

/// A `descr`: a type string, a structured list of `(name, descr[, shape])`, or `(descr, shape)`.
fn dtype_of(descr: &Lit, depth: u32) -> Result<Dtype, String> {
    if depth > 16 {
        return Err("descr nests too deeply".into());
    }
    match descr {
        Lit::Str(s) => typestr(s),
        Lit::Tuple(parts) => match parts.as_slice() {
            [inner, shape] => {
                let inner = dtype_of(inner, depth + 1)?;
                Ok(Dtype {
                    object: inner.object,
                    itemsize: inner.itemsize.and_then(|s| scale(s, shape)),
                })
            }
            _ => Err("descr tuple is not (dtype, shape)".into()),
        },
        Lit::List(fields) => {
            let mut object = false;
            let mut itemsize = Some(0u64);
            for field in fields {
                let Lit::Tuple(parts) = field else {
                    return Err("structured descr field is not a tuple".into());
                };
                let (name, inner, shape) = match parts.as_slice() {
                    [name, inner] => (name, inner, None),
                    [name, inner, shape] => (name, inner, Some(shape)),
                    _ => return Err("structured descr field is not (name, dtype[, shape])".into()),
                };
                if !matches!(name, Lit::Str(_) | Lit::Tuple(_)) {
                    return Err("structured descr field name is not a string".into());
                }
                let inner = dtype_of(inner, depth + 1)?;
                object |= inner.object;
                let size = match shape {
                    Some(shape) => inner.itemsize.and_then(|s| scale(s, shape)),
                    None => inner.itemsize,
                };
                itemsize = itemsize.zip(size).and_then(|(a, b)| a.checked_add(b));
            }
            Ok(Dtype { object, itemsize })
        }
        _ => Err("descr is neither a type string nor a structured list".into()),
    }
}

fn scale(size: u64, shape: &Lit) -> Option<u64> {
    match shape {
        Lit::Int(n) => size.checked_mul(u64::try_from(*n).ok()?),
        Lit::Tuple(dims) => dims.iter().try_fold(size, |acc, d| match d {
            Lit::Int(n) => acc.checked_mul(u64::try_from(*n).ok()?),
            _ => None,
        }),
        _ => None,
    }
}

/// A NumPy type string: `[<>|=]` kind digits `[unit]`, or a one-letter code. Any `O` is object.
fn typestr(s: &str) -> Result<Dtype, String> {
    let body = s.strip_prefix(['<', '>', '|', '=']).unwrap_or(s);
    let (body, unit) = match body.split_once('[') {
        Some((b, rest)) => (b, Some(rest)),
        None => (body, None),
    };
    let mut chars = body.chars();
    let kind = chars
        .next()
        .ok_or_else(|| format!("descr {s:?} is empty"))?;
    let digits = chars.as_str();
    let unit_ok = unit.is_none_or(|u| {
        u.strip_suffix(']')
            .is_some_and(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_alphanumeric()))
    });
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 12 || !unit_ok {
        return Err(format!("descr {s:?} is not a NumPy type string"));
    }
    let n: Option<u64> = if digits.is_empty() {
        None
    } else {
        digits.parse().ok()
    };
    let itemsize = match (kind, n) {
        ('O', None) => Some(8),
        ('U', Some(n)) => n.checked_mul(4),
        ('b' | 'i' | 'u' | 'f' | 'c' | 'm' | 'M' | 'S' | 'a' | 'V' | 'O', Some(n)) => Some(n),
        ('?' | 'b' | 'B' | 'c', None) => Some(1),
        ('h' | 'H' | 'e', None) => Some(2),
        ('i' | 'I' | 'f', None) => Some(4),
        ('l' | 'L' | 'q' | 'Q' | 'p' | 'P' | 'd' | 'F', None) => Some(8),
        ('g' | 'D', None) => Some(16),
        ('G', None) => Some(32),
        ('S' | 'a' | 'U' | 'V' | 'm' | 'M', None) => None,
        _ => return Err(format!("descr {s:?} is not a NumPy type string")),
    };
    Ok(Dtype {
        object: s.contains('O'),
        itemsize,
    })
}

/// A Python literal of a `.npy` header.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

fn literal_text(lit: &Lit) -> String {
    match lit {
        Lit::Str(s) => format!("'{s}'"),
        Lit::Int(n) => n.to_string(),
        Lit::Bool(b) => if *b { "True" } else { "False" }.into(),
        Lit::None => "None".into(),
        Lit::Tuple(items) => format!(
            "({})",
            items
                .iter()
                .map(literal_text)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Lit::List(items) => format!(
            "[{}]",
            items
                .iter()
                .map(literal_text)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Lit::Dict(_) => "{...}".into(),
    }
}

fn parse_literal(text: &str) -> Result<Lit, String> {
    let mut p = LitParser {
        s: text.as_bytes(),
        pos: 0,
    };
    let value = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(format!("unexpected text at offset {}", p.pos));
    }
    Ok(value)
}

struct LitParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl LitParser<'_> {
    fn ws(&mut self) {
        while self
            .s
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn value(&mut self, depth: u32) -> Result<Lit, String> {
        if depth > 32 {
            return Err("nested too deeply".into());
        }
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Lit::Dict(items));
                    }
                    let key = self.value(depth + 1)?;
                    if self.peek() != Some(b':') {
                        return Err(format!("expected ':' at offset {}", self.pos));
                    }
                    self.pos += 1;
                    let value = self.value(depth + 1)?;
                    items.push((key, value));
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {}
                        _ => return Err(format!("expected ',' or '}}' at offset {}", self.pos)),
                    }
                }
            }
            Some(open @ (b'(' | b'[')) => {
                self.pos += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                let mut comma = false;
                loop {
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            comma = true;
                        }
                        Some(c) if c == close => {}
                        _ => return Err(format!("expected ',' at offset {}", self.pos)),
                    }
                }
                if open == b'[' {
                    Ok(Lit::List(items))
                } else if items.len() == 1 && !comma {
                    // `(x)` is x, not a tuple.
                    Ok(items.pop().unwrap_or(Lit::None))
                } else {
                    Ok(Lit::Tuple(items))
                }
            }
            Some(q @ (b'\'' | b'"')) => self.string(q),
            Some(b'u' | b'b') if matches!(self.s.get(self.pos + 1), Some(b'\'' | b'"')) => {
                self.pos += 1;
                let q = self.s.get(self.pos).copied().unwrap_or(b'\'');
                self.string(q)
            }
            Some(b'-' | b'+' | b'0'..=b'9') => {
                let start = self.pos;
                self.pos += 1;
                while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(self.s.get(start..self.pos).unwrap_or_default())
                    .unwrap_or_default();
                if self.s.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                digits
                    .parse::<i128>()
                    .map(Lit::Int)
                    .map_err(|_| format!("bad integer {digits:?}"))
            }
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'_') => {
                let start = self.pos;
                while self
                    .s
                    .get(self.pos)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    self.pos += 1;
                }
                match self.s.get(start..self.pos).unwrap_or_default() {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"None" => Ok(Lit::None),
                    other => Err(format!(
                        "unexpected name {:?}",
                        String::from_utf8_lossy(other)
                    )),
                }
            }
            Some(other) => Err(format!(
                "unexpected character {:?} at offset {}",
                char::from(other),
                self.pos
            )),
            None => Err("unexpected end".into()),
        }
    }

    fn string(&mut self, quote: u8) -> Result<Lit, String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.pos).copied() {
                None => return Err("unterminated string".into()),
                Some(b) if b == quote => {
                    self.pos += 1;
                    return Ok(Lit::Str(String::from_utf8_lossy(&out).into_owned()));
                }
                Some(b'\\') => {
                    let next = self
                        .s
                        .get(self.pos + 1)
                        .copied()
                        .ok_or("unterminated string")?;
                    out.push(next);
                    self.pos += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF
// ---------------------------------------------------------------------------------------------

const MAX_GGUF_TENSORS: u64 = 1 << 20;
const MAX_GGUF_KVS: u64 = 1 << 20;
const MAX_GGUF_DIMS: u32 = 4;
const MAX_GGUF_NAME: u64 = 63;
const GGUF_DEFAULT_ALIGNMENT: u64 = 32;

/// Substrings of a chat template that reach Python internals (Jinja SSTI).
const TEMPLATE_INJECTION: &[&str] = &[
    "__class__",
    "__globals__",
    "__subclasses__",
    "__builtins__",
    "__import__",
    "__mro__",
    "__base__",
    "__init__",
    "__getattribute__",
    "os.system",
    "os.popen",
    "subprocess",
];

/// ggml types: name, block size (elements), block size (bytes). Removed ids are absent.
fn ggml_type(id: u32) -> Option<(&'static str, u64, u64)> {
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

struct GgufInfo {
    version: u32,
    tensors: usize,
    kvs: u64,
    architecture: Option<String>,
    /// Chat-template keys and the injection pattern each matched.
    templates: Vec<(String, &'static str)>,
}

fn scan_gguf(blob: &dyn Blob, r: &mut Builder) -> io::Result<()> {
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

fn gguf_string<'a>(c: &mut Cursor<'a>, what: &str, max: u64) -> Result<&'a [u8], Stop> {
    let len = c.u64(what)?;
    if len > max {
        return bad(format!("{what} of {len} bytes is above the limit of {max}"));
    }
    c.take(len, what)
}

/// Skips one metadata value of type `ty`; returns the string for `STRING` values.
fn gguf_value<'a>(
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

fn parse_gguf(buf: &[u8], eof: Eof, total: u64) -> Result<GgufInfo, Stop> {
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
                if let Some(pattern) = TEMPLATE_INJECTION.iter().find(|p| text.contains(*p)) {
                    templates.push((key.to_string(), *pattern));
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

// ---------------------------------------------------------------------------------------------
// Inflate (RFC 1951), after Mark Adler's puff.c (zlib contrib/puff, public domain terms)
// ---------------------------------------------------------------------------------------------

struct Bits<'a> {
    input: &'a [u8],
    pos: usize,
    buf: u64,
    count: u32,
}

impl Bits<'_> {
    fn bits(&mut self, need: u32) -> Result<u32, String> {
        while self.count < need {
            let byte = *self
                .input
                .get(self.pos)
                .ok_or("the compressed data ends early")?;
            self.pos += 1;
            self.buf |= u64::from(byte) << self.count;
            self.count += 8;
        }
        let value = (self.buf & ((1u64 << need) - 1)) as u32;
        self.buf >>= need;
        self.count -= need;
        Ok(value)
    }
}

struct Huffman {
    count: [u16; 16],
    symbol: Vec<u16>,
}

impl Huffman {
    /// Builds a canonical code from code lengths; returns it and how incomplete it is (0 for
    /// complete, negative for over-subscribed).
    fn new(lengths: &[u8]) -> (Huffman, i32) {
        let mut count = [0u16; 16];
        for &len in lengths {
            if let Some(c) = count.get_mut(usize::from(len)) {
                *c += 1;
            }
        }
        let mut h = Huffman {
            count,
            symbol: vec![0; lengths.len()],
        };
        if usize::from(count[0]) == lengths.len() {
            return (h, 0);
        }
        let mut left = 1i32;
        for &c in count.iter().skip(1) {
            left <<= 1;
            left -= i32::from(c);
            if left < 0 {
                return (h, left);
            }
        }
        let mut offs = [0u16; 16];
        for len in 1..15 {
            offs[len + 1] = offs[len] + count[len];
        }
        for (symbol, &len) in lengths.iter().enumerate() {
            if len != 0 {
                let slot = &mut offs[usize::from(len) & 15];
                if let Some(s) = h.symbol.get_mut(usize::from(*slot)) {
                    *s = symbol as u16;
                }
                *slot += 1;
            }
        }
        (h, left)
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for &count in self.count.iter().skip(1) {
            code |= bits.bits(1)? as i32;
            let count = i32::from(count);
            if code - count < first {
                return self
                    .symbol
                    .get((index + (code - first)) as usize)
                    .copied()
                    .ok_or_else(|| "bad Huffman code".to_string());
            }
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        Err("ran out of Huffman codes".into())
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Inflates raw deflate data, stopping once `limit` bytes are out. Returns the output and
/// whether the stream ended (`false`: cut at the limit).
fn inflate(input: &[u8], limit: usize) -> Result<(Vec<u8>, bool), String> {
    let mut bits = Bits {
        input,
        pos: 0,
        buf: 0,
        count: 0,
    };
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() >= limit {
            return Ok((out, false));
        }
        let last = bits.bits(1)?;
        match bits.bits(2)? {
            0 => {
                bits.buf = 0;
                bits.count = 0;
                let header = input
                    .get(bits.pos..bits.pos + 4)
                    .ok_or("stored block header ends early")?;
                let len = u16::from_le_bytes([header[0], header[1]]);
                let nlen = u16::from_le_bytes([header[2], header[3]]);
                if len != !nlen {
                    return Err("stored block length check fails".into());
                }
                bits.pos += 4;
                let data = input
                    .get(bits.pos..bits.pos + usize::from(len))
                    .ok_or("stored block ends early")?;
                bits.pos += usize::from(len);
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
            }
            1 => {
                let mut lengths = [0u8; 288];
                for (i, l) in lengths.iter_mut().enumerate() {
                    *l = match i {
                        0..=143 => 8,
                        144..=255 => 9,
                        256..=279 => 7,
                        _ => 8,
                    };
                }
                let (lencode, _) = Huffman::new(&lengths);
                let (distcode, _) = Huffman::new(&[5u8; 30]);
                codes(&mut bits, &lencode, &distcode, &mut out, limit)?;
            }
            2 => {
                let (lencode, distcode) = dynamic_codes(&mut bits)?;
                codes(&mut bits, &lencode, &distcode, &mut out, limit)?;
            }
            _ => return Err("invalid block type 3".into()),
        }
        if last == 1 {
            let complete = out.len() < limit || bits.pos >= input.len();
            return Ok((out, complete));
        }
    }
}

fn dynamic_codes(bits: &mut Bits<'_>) -> Result<(Huffman, Huffman), String> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let nlen = bits.bits(5)? as usize + 257;
    let ndist = bits.bits(5)? as usize + 1;
    let ncode = bits.bits(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err("bad dynamic block counts".into());
    }
    let mut lengths = [0u8; 320];
    for &slot in ORDER.iter().take(ncode) {
        lengths[slot] = bits.bits(3)? as u8;
    }
    let (lencode, err) = Huffman::new(&lengths[..19]);
    if err != 0 {
        return Err("incomplete code-length code".into());
    }
    let mut index = 0;
    while index < nlen + ndist {
        let symbol = lencode.decode(bits)?;
        if symbol < 16 {
            lengths[index] = symbol as u8;
            index += 1;
            continue;
        }
        let (value, repeat) = match symbol {
            16 => {
                let prev = *lengths
                    .get(index.wrapping_sub(1))
                    .filter(|_| index > 0)
                    .ok_or("repeat with no previous length")?;
                (prev, 3 + bits.bits(2)? as usize)
            }
            17 => (0, 3 + bits.bits(3)? as usize),
            _ => (0, 11 + bits.bits(7)? as usize),
        };
        if index + repeat > nlen + ndist {
            return Err("too many code lengths".into());
        }
        for l in lengths.iter_mut().skip(index).take(repeat) {
            *l = value;
        }
        index += repeat;
    }
    if lengths[256] == 0 {
        return Err("no end-of-block code".into());
    }
    let (lencode, err) = Huffman::new(&lengths[..nlen]);
    if err < 0 || (err > 0 && nlen - usize::from(lencode.count[0]) != 1) {
        return Err("bad literal/length code".into());
    }
    let (distcode, err) = Huffman::new(&lengths[nlen..nlen + ndist]);
    if err < 0 || (err > 0 && ndist - usize::from(distcode.count[0]) != 1) {
        return Err("bad distance code".into());
    }
    Ok((lencode, distcode))
}

fn codes(
    bits: &mut Bits<'_>,
    lencode: &Huffman,
    distcode: &Huffman,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), String> {
    loop {
        let symbol = lencode.decode(bits)?;
        match symbol {
            0..=255 => {
                if out.len() >= limit {
                    return Ok(());
                }
                out.push(symbol as u8);
            }
            256 => return Ok(()),
            _ => {
                let i = usize::from(symbol - 257);
                let (Some(&base), Some(&extra)) = (LENGTH_BASE.get(i), LENGTH_EXTRA.get(i)) else {
                    return Err("bad length symbol".into());
                };
                let len = usize::from(base) + bits.bits(u32::from(extra))? as usize;
                let d = usize::from(distcode.decode(bits)?);
                let (Some(&base), Some(&extra)) = (DIST_BASE.get(d), DIST_EXTRA.get(d)) else {
                    return Err("bad distance symbol".into());
                };
                let dist = usize::from(base) + bits.bits(u32::from(extra))? as usize;
                if dist > out.len() {
                    return Err("distance reaches before the start".into());
                }
                for _ in 0..len {
                    if out.len() >= limit {
                        return Ok(());
                    }
                    let byte = out[out.len() - dist];
                    out.push(byte);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_examples() {
        assert_eq!(classify("os", "system"), Class::Dangerous);
        assert_eq!(classify("os.path", "join"), Class::Dangerous);
        assert_eq!(classify("ntpath", "join"), Class::Unknown);
        assert_eq!(classify("builtins", "getattr"), Class::Dangerous);
        assert_eq!(classify("__builtin__", "eval"), Class::Dangerous);
        assert_eq!(classify("builtins", "set"), Class::Allowed);
        assert_eq!(classify("torch", "FloatStorage"), Class::Allowed);
        assert_eq!(classify("torch", "FloatStorage.__init__"), Class::Unknown);
        assert_eq!(
            classify("torch._utils", "_rebuild_tensor_v2"),
            Class::Allowed
        );
        assert_eq!(classify("torch", "load"), Class::Dangerous);
        assert_eq!(classify("collections", "OrderedDict"), Class::Allowed);
    }

    #[test]
    fn string_escapes_decode() {
        assert_eq!(string_opcode(b"'o\\x73'").ok().as_deref(), Some("os"));
        assert_eq!(string_opcode(b"\"a\\\\b\"").ok().as_deref(), Some("a\\b"));
        assert_eq!(string_opcode(b"'\\157s'").ok().as_deref(), Some("os"));
        assert!(string_opcode(b"os").is_err());
        assert_eq!(raw_unicode_escape(b"\\u006fs").ok().as_deref(), Some("os"));
        assert_eq!(
            raw_unicode_escape(b"\\\\u006f").ok().as_deref(),
            Some("\\\\u006f")
        );
    }

    #[test]
    fn literal_parser() {
        let lit = parse_literal("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }  \n");
        assert!(
            matches!(lit, Ok(Lit::Dict(ref items)) if items.len() == 3),
            "{lit:?}"
        );
        assert_eq!(parse_literal("(3,)"), Ok(Lit::Tuple(vec![Lit::Int(3)])));
        assert_eq!(
            parse_literal("(3L, 4L)"),
            Ok(Lit::Tuple(vec![Lit::Int(3), Lit::Int(4)]))
        );
        assert_eq!(parse_literal("()"), Ok(Lit::Tuple(vec![])));
        assert!(parse_literal("{'a': __import__('os')}").is_err());
    }

    #[test]
    fn inflate_stored_and_fixed() {
        // A stored final block holding "hi".
        assert_eq!(
            inflate(&[0x01, 0x02, 0x00, 0xfd, 0xff, b'h', b'i'], 100),
            Ok((b"hi".to_vec(), true))
        );
        // zlib.compressobj(9, zlib.DEFLATED, -15).compress(b"hello hello hello") + flush()
        // (Python 3.11, zlib 1.2.13): a fixed-Huffman block with a back-reference.
        let data = [0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x57, 0xc8, 0x40, 0x90, 0x00];
        assert_eq!(
            inflate(&data, 1000),
            Ok((b"hello hello hello".to_vec(), true))
        );
        assert_eq!(inflate(&data, 5).map(|(o, _)| o), Ok(b"hello".to_vec()));
    }
}
