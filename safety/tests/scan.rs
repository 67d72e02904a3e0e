//! `scan` on a corpus built here, byte by byte (nothing opaque is checked in): benign and
//! malicious pickles of protocols 0 to 5, PyTorch zip checkpoints, NumPy arrays, GGUF files and
//! the safetensors corruptions of issue 6. Every file gets its verdict and nothing panics, also
//! under 2,000 seeded mutations of each sample.
//!
//! The pickles were written by hand and checked with `python3 -m pickletools` (disassembly only;
//! nothing was unpickled); the one deflate vector names its generator where it is used.

use safety::scan::{sarif, scan_bytes, scan_path, FileReport, Format, Rule, Severity, Verdict};
use trainer::safe_load::validate_safetensors_bytes;

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// Protocol 0: `os.system('echo pwned')` through GLOBAL, MARK, STRING, TUPLE, REDUCE.
const P0_OS_SYSTEM: &[u8] = b"cos\nsystem\n(S'echo pwned'\ntR.";

/// Protocol 2: `posix.system('id')` through GLOBAL, BINUNICODE, TUPLE1, REDUCE, with BINPUTs.
const P2_POSIX_SYSTEM: &[u8] =
    b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";

/// `zlib.compressobj(9, zlib.DEFLATED, -15)` on [`P2_POSIX_SYSTEM`], then `.flush()` (Python
/// 3.11.7, zlib 1.2.13): raw deflate with a fixed Huffman block.
const DEFLATED_POSIX_SYSTEM: &[u8] = &[
    0x6b, 0x60, 0x4a, 0x2e, 0xc8, 0x2f, 0xce, 0xac, 0xe0, 0x2a, 0xae, 0x2c, 0x2e, 0x49, 0xcd, 0xe5,
    0x2a, 0x64, 0x88, 0x60, 0x62, 0x60, 0x60, 0xc8, 0x4c, 0x29, 0x64, 0x6c, 0x2d, 0x64, 0x0a, 0x2a,
    0x64, 0xd6, 0x03, 0x00,
];

/// Protocol 2: `{'a': 1, 'b': 2}`.
const P2_DICT_OF_INTS: &[u8] =
    b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02K\x02u.";

/// Protocol 2: what `torch.save(OrderedDict(weight=tensor))` writes into `data.pkl`: an
/// OrderedDict whose value is `_rebuild_tensor_v2(persistent storage, 0, (2, 2), (2, 1), False,
/// OrderedDict())`.
const P2_TORCH_STATE_DICT: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01\
X\x06\x00\x00\x00weightq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04\
ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x02K\x02\x86K\x02K\x01\
\x86\x89ccollections\nOrderedDict\n)RtRs.";

/// Protocol 4, framed: `(builtins.eval('1+1'), builtins.exec('x=1'))`, the module string
/// memoized once (MEMOIZE) and fetched again (BINGET) for the second STACK_GLOBAL.
fn p4_stack_global() -> Vec<u8> {
    let body: &[u8] = b"\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x031+1\x85R\
h\x00\x8c\x04exec\x93\x8c\x03x=1\x85R\x86.";
    framed(4, body)
}

/// Protocol 5, framed: `webbrowser.open(bytearray(b"abc"))` with BINUNICODE strings stored by
/// BINPUT and popped, then fetched back by LONG_BINGET for STACK_GLOBAL, a BYTEARRAY8 argument
/// and READONLY_BUFFER.
fn p5_webbrowser() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(b"X\x0a\x00\x00\x00webbrowserq\x070");
    body.extend_from_slice(b"X\x04\x00\x00\x00openq\x080");
    body.extend_from_slice(b"j\x07\x00\x00\x00j\x08\x00\x00\x00\x93");
    body.push(0x96);
    body.extend_from_slice(&3u64.to_le_bytes());
    body.extend_from_slice(b"abc\x98\x85R.");
    framed(5, &body)
}

fn framed(protocol: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, protocol, 0x95];
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A zip archive of stored entries (method 0), as `torch.save` writes them.
fn zip_stored(entries: &[(&str, &[u8])]) -> Vec<u8> {
    zip(&entries
        .iter()
        .map(|(name, data)| ZipIn {
            name: name.to_string(),
            local_name: name.to_string(),
            method: 0,
            data: data.to_vec(),
            size: data.len(),
        })
        .collect::<Vec<_>>())
}

struct ZipIn {
    name: String,
    local_name: String,
    method: u16,
    data: Vec<u8>,
    size: usize,
}

fn zip(entries: &[ZipIn]) -> Vec<u8> {
    zip_with(entries, false)
}

/// With `zip64`, every central header saturates its offset to 0xFFFFFFFF and carries the real
/// one in a zip64 extra field, and the end record is saturated and points through a zip64
/// locator to a zip64 end record, as large PyTorch checkpoints have them.
fn zip_with(entries: &[ZipIn], zip64: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let crc = crc32(&e.data);
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&e.method.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(e.size as u32).to_le_bytes());
        out.extend_from_slice(&(e.local_name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(e.local_name.as_bytes());
        out.extend_from_slice(&e.data);

        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&e.method.to_le_bytes());
        central.extend_from_slice(&[0; 4]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(e.size as u32).to_le_bytes());
        central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&(if zip64 { 12u16 } else { 0 }).to_le_bytes());
        central.extend_from_slice(&[0; 10]);
        central.extend_from_slice(&(if zip64 { u32::MAX } else { offset }).to_le_bytes());
        central.extend_from_slice(e.name.as_bytes());
        if zip64 {
            central.extend_from_slice(&1u16.to_le_bytes());
            central.extend_from_slice(&8u16.to_le_bytes());
            central.extend_from_slice(&u64::from(offset).to_le_bytes());
        }
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    let (count, size, offset) = if zip64 {
        let record = out.len() as u64;
        out.extend_from_slice(b"PK\x06\x06");
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        out.extend_from_slice(&(central.len() as u64).to_le_bytes());
        out.extend_from_slice(&u64::from(cd_offset).to_le_bytes());
        out.extend_from_slice(b"PK\x06\x07");
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&record.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        (u16::MAX, u32::MAX, u32::MAX)
    } else {
        (entries.len() as u16, central.len() as u32, cd_offset)
    };
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PyTorch checkpoint around `data_pkl`, under the directory `archive/`.
fn torch_zip(data_pkl: &[u8]) -> Vec<u8> {
    zip_stored(&[
        ("archive/data.pkl", data_pkl),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &[0u8; 16]),
        ("archive/version", b"3\n"),
    ])
}

/// A `.npy` file: magic, version 1.0, the header padded to 64 bytes, then `data`.
fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut text = header.to_string();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

enum Kv {
    U32(u32),
    Str(&'static str),
    Strs(&'static [&'static str]),
    F32s(&'static [f32]),
}

struct GgufTensor {
    name: &'static str,
    dims: &'static [u64],
    ty: u32,
    offset: u64,
}

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A little-endian GGUF file; the data section (`data_len` zero bytes) starts 32-aligned.
fn gguf(version: u32, kvs: &[(&str, Kv)], tensors: &[GgufTensor], data_len: usize) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        gguf_string(&mut out, key);
        match value {
            Kv::U32(v) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Kv::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                gguf_string(&mut out, s);
            }
            Kv::Strs(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for s in *items {
                    gguf_string(&mut out, s);
                }
            }
            Kv::F32s(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for f in *items {
                    out.extend_from_slice(&f.to_le_bytes());
                }
            }
        }
    }
    for t in tensors {
        gguf_string(&mut out, t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.extend(std::iter::repeat_n(0u8, data_len));
    out
}

fn good_gguf_kvs() -> Vec<(&'static str, Kv)> {
    vec![
        ("general.architecture", Kv::Str("llama")),
        ("general.alignment", Kv::U32(32)),
        ("tokenizer.ggml.tokens", Kv::Strs(&["<s>", "a", "b"])),
        ("tokenizer.ggml.scores", Kv::F32s(&[0.0, -1.0, -2.0])),
    ]
}

/// F32 [4, 2] (32 bytes) at 0 and Q8_0 [32, 2] (2 blocks of 34 bytes) at 32: 100 data bytes.
fn good_gguf_tensors() -> Vec<GgufTensor> {
    vec![
        GgufTensor {
            name: "token_embd.weight",
            dims: &[4, 2],
            ty: 0,
            offset: 0,
        },
        GgufTensor {
            name: "blk.0.attn_q.weight",
            dims: &[32, 2],
            ty: 8,
            offset: 32,
        },
    ]
}

/// A safetensors file: the header as given, then `data_len` zero bytes.
fn st(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data_len));
    out
}

const ST_GOOD: &str = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2,2],"data_offsets":[8,16]}}"#;

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn expect(name: &str, bytes: &[u8], format: Format, verdict: Verdict) -> FileReport {
    let report = scan_bytes(name, bytes);
    assert_eq!(report.format, format, "{name}: format\n{report:#?}");
    assert_eq!(report.verdict, verdict, "{name}: verdict\n{report:#?}");
    report
}

fn has(report: &FileReport, rule: Rule) -> bool {
    report.findings.iter().any(|f| f.rule == rule)
}

fn rules(report: &FileReport) -> Vec<Rule> {
    report.findings.iter().map(|f| f.rule).collect()
}

// ---------------------------------------------------------------------------------------------
// Pickles
// ---------------------------------------------------------------------------------------------

#[test]
fn protocol_0_reduce_to_os_system_is_unsafe() {
    let r = expect(
        "evil.pkl",
        P0_OS_SYSTEM,
        Format::Pickle { protocol: 0 },
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["os.system"]);
    let f = &r.findings[0];
    assert_eq!(f.rule, Rule::PickleDangerousGlobal);
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.global.as_deref(), Some("os.system"));
    assert!(
        r.human_line()
            .starts_with("UNSAFE evil.pkl: pickle imports os.system"),
        "{}",
        r.human_line()
    );
}

#[test]
fn protocol_2_global_is_unsafe() {
    let r = expect(
        "model.bin",
        P2_POSIX_SYSTEM,
        Format::Pickle { protocol: 2 },
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["posix.system"]);
    assert!(has(&r, Rule::PickleDangerousGlobal) && has(&r, Rule::PickleFormat));
}

#[test]
fn protocol_4_stack_global_resolves_through_the_memo() {
    let r = expect(
        "model.pt",
        &p4_stack_global(),
        Format::Pickle { protocol: 4 },
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["builtins.eval", "builtins.exec"]);
    let dangerous: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.rule == Rule::PickleDangerousGlobal)
        .filter_map(|f| f.global.as_deref())
        .collect();
    assert_eq!(dangerous, ["builtins.eval", "builtins.exec"]);
}

#[test]
fn protocol_5_framed_is_unsafe() {
    let r = expect(
        "x.pkl",
        &p5_webbrowser(),
        Format::Pickle { protocol: 5 },
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["webbrowser.open"]);
    assert!(!has(&r, Rule::PickleInvalid), "{r:#?}");
}

#[test]
fn benign_dict_of_ints_is_safe_with_a_format_warning() {
    let r = expect(
        "ints.pkl",
        P2_DICT_OF_INTS,
        Format::Pickle { protocol: 2 },
        Verdict::Safe,
    );
    assert!(r.globals.is_empty());
    assert_eq!(rules(&r), [Rule::PickleFormat]);
    assert_eq!(r.findings[0].severity, Severity::Warning);
    assert!(r.human_line().starts_with("ok ints.pkl: pickle protocol 2"));
}

#[test]
fn benign_torch_state_dict_is_safe_and_lists_its_globals() {
    let r = expect(
        "pytorch_model.bin",
        P2_TORCH_STATE_DICT,
        Format::Pickle { protocol: 2 },
        Verdict::Safe,
    );
    assert_eq!(
        r.globals,
        [
            "collections.OrderedDict",
            "torch._utils._rebuild_tensor_v2",
            "torch.FloatStorage"
        ]
    );
    assert_eq!(rules(&r), [Rule::PickleFormat]);
}

#[test]
fn obfuscated_and_computed_globals_are_caught() {
    // STRING with a \x escape and UNICODE with a \u escape spell "os"; STACK_GLOBAL joins them.
    let escaped = b"\x80\x02S'o\\x73'\nVsy\\u0073tem\n\x93)R.";
    let r = expect(
        "a.pkl",
        escaped,
        Format::Pickle { protocol: 2 },
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["os.system"]);

    // STACK_GLOBAL whose module is not a string (an empty tuple): it cannot be named.
    let computed = b"\x80\x04)\x8c\x04eval\x93)R.";
    let r = expect(
        "b.pkl",
        computed,
        Format::Pickle { protocol: 4 },
        Verdict::Unsafe,
    );
    assert!(has(&r, Rule::PickleUnresolvedGlobal), "{r:#?}");

    // EXT1: a global from copyreg's extension registry.
    let ext = b"\x80\x02\x82\x01)R.";
    let r = expect(
        "c.pkl",
        ext,
        Format::Pickle { protocol: 2 },
        Verdict::Unsafe,
    );
    assert!(has(&r, Rule::PickleUnresolvedGlobal), "{r:#?}");

    // INST (protocol 0 class call) and a global not on either list.
    let inst = b"(S'x'\nisubprocess\nPopen\n.";
    let r = expect(
        "d.pkl",
        inst,
        Format::Pickle { protocol: 0 },
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["subprocess.Popen"]);
    let unknown = b"\x80\x02cfunctools\npartial\n)R.";
    let r = expect(
        "e.pkl",
        unknown,
        Format::Pickle { protocol: 2 },
        Verdict::Unsafe,
    );
    assert!(has(&r, Rule::PickleUnknownGlobal), "{r:#?}");

    // A dotted attribute of an allowed class is not allowed.
    let dotted = b"\x80\x04\x8c\x05torch\x8c\x15FloatStorage.__init__\x93.";
    let r = expect(
        "f.pkl",
        dotted,
        Format::Pickle { protocol: 4 },
        Verdict::Unsafe,
    );
    assert!(has(&r, Rule::PickleUnknownGlobal), "{r:#?}");
}

#[test]
fn malformed_pickles_are_invalid_and_imports_before_the_fault_still_count() {
    let cases: &[(&str, &[u8])] = &[
        ("truncated", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K"),
        ("unknown opcode", b"\x80\x02\xff."),
        ("stack underflow", b"\x80\x02R."),
        ("missing memo", b"\x80\x02h\x05."),
        ("bad protocol", b"\x80\x05\x80\x09N."),
        ("negative BINSTRING", b"\x80\x02T\xff\xff\xff\xff."),
        (
            "frame past the end",
            b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.",
        ),
        ("unquoted STRING", b"\x80\x02Sos\n."),
        ("no MARK", b"\x80\x02t."),
    ];
    for (case, bytes) in cases {
        let r = scan_bytes("x.pkl", bytes);
        assert_eq!(r.verdict, Verdict::Invalid, "{case}: {r:#?}");
        assert!(has(&r, Rule::PickleInvalid), "{case}: {r:#?}");
    }
    // os.system is imported (and would run) before the unknown opcode.
    let r = expect(
        "x.pkl",
        b"\x80\x02cos\nsystem\n(S'id'\ntR\xff",
        Format::Pickle { protocol: 2 },
        Verdict::Unsafe,
    );
    assert!(has(&r, Rule::PickleInvalid) && has(&r, Rule::PickleDangerousGlobal));
    // Also without PROTO: a protocol 0 stream that breaks after its GLOBAL is still recognised.
    let r = expect(
        "x.dat",
        b"cos\nsystem\n\xff",
        Format::Pickle { protocol: 0 },
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["os.system"]);
}

#[test]
fn consecutive_pickles_are_walked_like_legacy_torch_save() {
    // Legacy torch.save: magic number, protocol, sys info, the data pickle, storage keys, then
    // raw storage bytes. The fourth pickle carries the payload here.
    let mut file = Vec::new();
    file.extend_from_slice(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.");
    file.extend_from_slice(b"\x80\x02M\xe9\x03.");
    file.extend_from_slice(b"\x80\x02}q\x00.");
    file.extend_from_slice(P2_POSIX_SYSTEM);
    file.extend_from_slice(b"\x80\x02]q\x00X\x01\x00\x00\x000a.");
    file.extend_from_slice(&16u64.to_le_bytes());
    file.extend_from_slice(&[0x80; 64]);
    let r = expect(
        "old.pt",
        &file,
        Format::Pickle { protocol: 2 },
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["posix.system"]);
    assert!(has(&r, Rule::PickleTrailingData), "{r:#?}");
    assert!(r.summary.contains("in 5 pickles"), "{}", r.summary);
}

// ---------------------------------------------------------------------------------------------
// PyTorch zip checkpoints and other archives
// ---------------------------------------------------------------------------------------------

#[test]
fn torch_zip_with_a_malicious_data_pkl_is_unsafe() {
    let r = expect(
        "pytorch_model.bin",
        &torch_zip(P2_POSIX_SYSTEM),
        Format::TorchZip,
        Verdict::Unsafe,
    );
    let f = r
        .findings
        .iter()
        .find(|f| f.rule == Rule::PickleDangerousGlobal)
        .expect("a dangerous-global finding");
    assert_eq!(f.entry.as_deref(), Some("archive/data.pkl"));
    assert!(f
        .message
        .starts_with("archive/data.pkl: pickle imports posix.system"));
    assert!(r.summary.contains("1 storage"), "{}", r.summary);
}

#[test]
fn zip64_checkpoints_are_read() {
    let entries: Vec<ZipIn> = [
        ("archive/data.pkl", P2_POSIX_SYSTEM),
        ("archive/data/0", [0u8; 16].as_slice()),
    ]
    .iter()
    .map(|(name, data)| ZipIn {
        name: name.to_string(),
        local_name: name.to_string(),
        method: 0,
        data: data.to_vec(),
        size: data.len(),
    })
    .collect();
    let r = expect(
        "big.pt",
        &zip_with(&entries, true),
        Format::TorchZip,
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["posix.system"]);
}

#[test]
fn torch_zip_with_a_benign_state_dict_is_safe() {
    let r = expect(
        "model.pt",
        &torch_zip(P2_TORCH_STATE_DICT),
        Format::TorchZip,
        Verdict::Safe,
    );
    assert_eq!(rules(&r), [Rule::PickleFormat]);
    assert_eq!(r.globals.len(), 3);
}

#[test]
fn deflated_and_unreadable_pickle_entries() {
    let deflated = DEFLATED_POSIX_SYSTEM.to_vec();
    let entry = |method: u16, data: Vec<u8>| ZipIn {
        name: "archive/data.pkl".into(),
        local_name: "archive/data.pkl".into(),
        method,
        data,
        size: P2_POSIX_SYSTEM.len(),
    };
    let r = expect(
        "a.pt",
        &zip(&[entry(8, deflated.clone())]),
        Format::TorchZip,
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["posix.system"]);

    // AES (method 99) cannot be read here: the pickle inside cannot be cleared.
    let r = expect(
        "b.pt",
        &zip(&[entry(99, deflated.clone())]),
        Format::TorchZip,
        Verdict::Unsafe,
    );
    assert_eq!(rules(&r), [Rule::ZipUninspectable]);

    // The stream inflates to more than the directory says.
    let mut longer = entry(8, deflated.clone());
    longer.size -= 5;
    let r = expect("d.pt", &zip(&[longer]), Format::TorchZip, Verdict::Invalid);
    assert!(has(&r, Rule::ZipInvalid), "{r:#?}");

    // Corrupt deflate data.
    let r = expect(
        "c.pt",
        &zip(&[entry(8, vec![0xff; 20])]),
        Format::TorchZip,
        Verdict::Invalid,
    );
    assert!(has(&r, Rule::ZipInvalid), "{r:#?}");
}

#[test]
fn ambiguous_or_broken_archives_are_invalid() {
    // The local header names another file than the central directory.
    let mismatch = zip(&[ZipIn {
        name: "archive/data.pkl".into(),
        local_name: "archive/data.pk1".into(),
        method: 0,
        data: P2_DICT_OF_INTS.to_vec(),
        size: P2_DICT_OF_INTS.len(),
    }]);
    let r = expect("a.pt", &mismatch, Format::TorchZip, Verdict::Invalid);
    assert!(has(&r, Rule::ZipInvalid), "{r:#?}");

    // The same name twice.
    let twice = zip_stored(&[
        ("archive/data.pkl", P2_DICT_OF_INTS),
        ("archive/data.pkl", P2_POSIX_SYSTEM),
    ]);
    let r = expect("b.pt", &twice, Format::Zip, Verdict::Invalid);
    assert!(has(&r, Rule::ZipInvalid), "{r:#?}");

    // No end record (cut short).
    let mut cut = torch_zip(P2_DICT_OF_INTS);
    cut.truncate(cut.len() - 30);
    let r = expect("c.pt", &cut, Format::Zip, Verdict::Invalid);
    assert!(r.findings[0].message.contains("end-of-central-directory"));
}

#[test]
fn other_zips_are_scanned_for_pickles_or_ignored() {
    let r = expect(
        "bundle.zip",
        &zip_stored(&[("readme.txt", b"hi"), ("extra/state.pkl", P0_OS_SYSTEM)]),
        Format::Zip,
        Verdict::Unsafe,
    );
    assert_eq!(r.globals, ["os.system"]);
    let r = expect(
        "docs.zip",
        &zip_stored(&[("readme.txt", b"hi")]),
        Format::Zip,
        Verdict::Unknown,
    );
    assert_eq!(rules(&r), [Rule::NotAModel]);
    let r = expect(
        "ts.pt",
        &zip_stored(&[
            ("archive/data.pkl", P2_DICT_OF_INTS),
            ("archive/code/__torch__/m.py", b"def forward(self): pass"),
        ]),
        Format::TorchZip,
        Verdict::Safe,
    );
    assert!(has(&r, Rule::TorchScript), "{r:#?}");
}

// ---------------------------------------------------------------------------------------------
// NumPy
// ---------------------------------------------------------------------------------------------

#[test]
fn npy_float_array_is_safe() {
    let bytes = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        &[0u8; 24],
    );
    let r = expect("a.npy", &bytes, Format::Npy, Verdict::Safe);
    assert!(r.findings.is_empty(), "{r:#?}");
    assert_eq!(r.summary, "NumPy .npy v1.0, '<f4' (2, 3)");
}

#[test]
fn npy_object_array_is_unsafe_and_its_pickle_is_walked() {
    let bytes = npy(
        "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
        P2_POSIX_SYSTEM,
    );
    let r = expect("a.npy", &bytes, Format::Npy, Verdict::Unsafe);
    assert!(has(&r, Rule::NpyObjectDtype), "{r:#?}");
    assert_eq!(r.globals, ["posix.system"]);

    let structured = npy(
        "{'descr': [('x', '<f4'), ('y', '|O')], 'fortran_order': False, 'shape': (1,), }",
        P2_DICT_OF_INTS,
    );
    let r = expect("b.npy", &structured, Format::Npy, Verdict::Unsafe);
    assert!(has(&r, Rule::NpyObjectDtype), "{r:#?}");
}

#[test]
fn npy_bad_headers_are_invalid() {
    let mut bad_version = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    );
    bad_version[6] = 9;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad version", bad_version),
        (
            "short data",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                &[0; 20],
            ),
        ),
        (
            "extra data",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                &[0; 9],
            ),
        ),
        ("not a dict", npy("['descr', '<f4']", &[])),
        (
            "extra key",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                &[0; 4],
            ),
        ),
        (
            "negative dim",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                &[],
            ),
        ),
        (
            "bad descr",
            npy(
                "{'descr': '<zz', 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
        ),
        (
            "code in the header",
            npy(
                "{'descr': __import__('os'), 'fortran_order': False, 'shape': (1,)}",
                &[],
            ),
        ),
        (
            "overflowing shape",
            npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
                &[],
            ),
        ),
        (
            "truncated header",
            b"\x93NUMPY\x01\x00\xff\x00{'descr'".to_vec(),
        ),
    ];
    for (case, bytes) in cases {
        let r = expect(case, &bytes, Format::Npy, Verdict::Invalid);
        assert!(has(&r, Rule::NpyInvalid), "{case}: {r:#?}");
    }
}

#[test]
fn npz_is_each_of_its_arrays() {
    let good = npy(
        "{'descr': '<i8', 'fortran_order': False, 'shape': (), }",
        &[0; 8],
    );
    let evil = npy(
        "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
        P0_OS_SYSTEM,
    );
    let r = expect(
        "arrays.npz",
        &zip_stored(&[("a.npy", &good), ("b.npy", &good)]),
        Format::Npz,
        Verdict::Safe,
    );
    assert_eq!(r.summary, "NumPy .npz, 2 arrays");
    let r = expect(
        "arrays.npz",
        &zip_stored(&[("a.npy", &good), ("b.npy", &evil)]),
        Format::Npz,
        Verdict::Unsafe,
    );
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule == Rule::NpyObjectDtype && f.entry.as_deref() == Some("b.npy")),
        "{r:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// GGUF
// ---------------------------------------------------------------------------------------------

#[test]
fn gguf_good_file_is_safe() {
    let bytes = gguf(3, &good_gguf_kvs(), &good_gguf_tensors(), 100);
    let r = expect("model.gguf", &bytes, Format::Gguf, Verdict::Safe);
    assert!(r.findings.is_empty(), "{r:#?}");
    assert_eq!(r.summary, "GGUF v3 (llama), 2 tensors, 4 metadata keys");
}

#[test]
fn gguf_bad_files_are_invalid() {
    let kvs = good_gguf_kvs;
    let tensors = good_gguf_tensors;
    let with_tensor = |i: usize, f: &dyn Fn(&mut GgufTensor)| {
        let mut t = tensors();
        f(&mut t[i]);
        gguf(3, &kvs(), &t, 100)
    };
    let mut bad_magic = gguf(3, &kvs(), &tensors(), 100);
    bad_magic[3] = b'X';
    let mut absurd_tensors = gguf(3, &kvs(), &tensors(), 100);
    absurd_tensors[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut absurd_kvs = gguf(3, &kvs(), &tensors(), 100);
    absurd_kvs[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let mut truncated = gguf(3, &kvs(), &tensors(), 100);
    truncated.truncate(60);
    let mut dup_key = kvs();
    dup_key.push(("general.architecture", Kv::Str("gpt2")));
    let mut bad_alignment = kvs();
    bad_alignment[1] = ("general.alignment", Kv::U32(48));
    let mut dup_tensor = tensors();
    dup_tensor[1].name = "token_embd.weight";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("version 1", gguf(1, &kvs(), &tensors(), 100)),
        (
            "big-endian",
            gguf(3u32.swap_bytes(), &kvs(), &tensors(), 100),
        ),
        ("absurd tensor count", absurd_tensors),
        ("absurd metadata count", absurd_kvs),
        ("offset out of range", gguf(3, &kvs(), &tensors(), 90)),
        ("overlap", with_tensor(1, &|t| t.offset = 0)),
        ("misaligned", with_tensor(1, &|t| t.offset = 40)),
        ("removed ggml type", with_tensor(0, &|t| t.ty = 4)),
        ("five dims", with_tensor(0, &|t| t.dims = &[1, 1, 1, 1, 32])),
        ("block not dividing", with_tensor(1, &|t| t.dims = &[31, 2])),
        (
            "overflowing dims",
            with_tensor(0, &|t| t.dims = &[1 << 62, 1 << 62]),
        ),
        ("duplicate key", gguf(3, &dup_key, &tensors(), 100)),
        ("duplicate tensor", gguf(3, &kvs(), &dup_tensor, 100)),
        (
            "alignment not a power of two",
            gguf(3, &bad_alignment, &tensors(), 100),
        ),
        ("truncated", truncated),
    ];
    for (case, bytes) in cases {
        let r = expect("model.gguf", &bytes, Format::Gguf, Verdict::Invalid);
        assert!(has(&r, Rule::GgufInvalid), "{case}: {r:#?}");
    }
    // Bad magic is not GGUF at all; under a .gguf name that is itself invalid.
    let r = expect("model.gguf", &bad_magic, Format::Unknown, Verdict::Invalid);
    assert_eq!(rules(&r), [Rule::Misnamed]);
}

#[test]
fn gguf_chat_template_injection_is_unsafe() {
    let mut kvs = good_gguf_kvs();
    kvs.push((
        "tokenizer.chat_template",
        Kv::Str("{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}"),
    ));
    let r = expect(
        "model.gguf",
        &gguf(3, &kvs, &good_gguf_tensors(), 100),
        Format::Gguf,
        Verdict::Unsafe,
    );
    assert_eq!(rules(&r), [Rule::GgufChatTemplate]);
}

// ---------------------------------------------------------------------------------------------
// Safetensors
// ---------------------------------------------------------------------------------------------

#[test]
fn safetensors_good_file_is_safe() {
    let r = expect(
        "model.safetensors",
        &st(ST_GOOD, 16),
        Format::Safetensors,
        Verdict::Safe,
    );
    assert!(r.findings.is_empty());
    assert_eq!(
        r.human_line(),
        "ok model.safetensors: safetensors, 2 tensors"
    );
    // A safetensors file under a pickle extension is still judged by its bytes.
    expect(
        "model.bin",
        &st(ST_GOOD, 16),
        Format::Safetensors,
        Verdict::Safe,
    );
    // No tensors at all.
    expect(
        "empty.safetensors",
        &st("{}", 0),
        Format::Safetensors,
        Verdict::Safe,
    );
}

#[test]
fn safetensors_corruptions_are_invalid_with_the_loaders_message() {
    let mut oversize = (200_000_000u64).to_le_bytes().to_vec();
    oversize.extend_from_slice(b"{}");
    let mut truncated = st(ST_GOOD, 16);
    truncated.truncate(truncated.len() - 3);
    let mut cut_header = st(ST_GOOD, 16);
    cut_header.truncate(40);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "overlapping offsets",
            st(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
            ),
        ),
        (
            "gap",
            st(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#,
                20,
            ),
        ),
        ("oversize header", oversize),
        (
            "duplicate keys",
            st(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                8,
            ),
        ),
        (
            "negative shape",
            st(
                r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
                8,
            ),
        ),
        (
            "overflowing shape",
            st(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}}"#,
                8,
            ),
        ),
        ("truncated data", truncated),
        ("truncated header", cut_header),
        ("trailing bytes", st(ST_GOOD, 20)),
        (
            "offset mismatch",
            st(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
            ),
        ),
        (
            "unknown dtype",
            st(
                r#"{"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}}"#,
                8,
            ),
        ),
        ("not an object", st("[1, 2]  ", 0)),
        ("five bytes", b"\x10\x00\x00\x00\x00".to_vec()),
    ];
    for (case, bytes) in cases {
        let r = expect(
            "model.safetensors",
            &bytes,
            Format::Safetensors,
            Verdict::Invalid,
        );
        assert_eq!(rules(&r), [Rule::SafetensorsInvalid], "{case}: {r:#?}");
        let loader = validate_safetensors_bytes(&bytes)
            .err()
            .unwrap_or_else(|| panic!("{case}: the loader accepts it"));
        assert_eq!(r.findings[0].message, loader.to_string(), "{case}");
    }
}

// ---------------------------------------------------------------------------------------------
// Not model formats, and names that lie
// ---------------------------------------------------------------------------------------------

#[test]
fn configs_and_text_are_unknown_and_clean() {
    for (name, bytes) in [
        (
            "config.json",
            br#"{"model_type":"llama","hidden_size":64}"#.as_slice(),
        ),
        (
            "tokenizer.json",
            br#"{"version":"1.0","added_tokens":[]}"#.as_slice(),
        ),
        (
            "LICENSE",
            b"(c) 2024 Someone\nAll rights reserved.\n".as_slice(),
        ),
        ("README.md", b"# Model card\nIt is a model.\n".as_slice()),
        ("empty", b"".as_slice()),
        // `{` at byte 8 after text is JSON, not an oversize safetensors header.
        ("nested.json", br#"{"model":{"a":1}}"#.as_slice()),
        // A word list reads as `GLOBAL can.you` and then fails: not a pickle.
        ("words.txt", b"can\nyou\nsee\nme\n".as_slice()),
    ] {
        let r = expect(name, bytes, Format::Unknown, Verdict::Unknown);
        assert!(r.is_clean());
        assert_eq!(rules(&r), [Rule::NotAModel], "{name}");
    }
}

#[test]
fn model_names_over_other_bytes_are_invalid() {
    let r = expect(
        "weights.pt",
        b"\x00\x01garbage",
        Format::Unknown,
        Verdict::Invalid,
    );
    assert_eq!(rules(&r), [Rule::Misnamed]);
    // A benign pickle posing as safetensors: safe content, lying name.
    let r = expect(
        "model.safetensors",
        P2_DICT_OF_INTS,
        Format::Pickle { protocol: 2 },
        Verdict::Invalid,
    );
    assert!(has(&r, Rule::Misnamed) && has(&r, Rule::PickleFormat));
    // A malicious one is unsafe, whatever its name.
    expect(
        "model.safetensors",
        P2_POSIX_SYSTEM,
        Format::Pickle { protocol: 2 },
        Verdict::Unsafe,
    );
}

// ---------------------------------------------------------------------------------------------
// Paths, SARIF
// ---------------------------------------------------------------------------------------------

#[test]
fn scan_path_walks_a_directory_sorted_and_skips_git() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let write = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    };
    write("b/model.safetensors", &st(ST_GOOD, 16));
    write("a/pytorch_model.bin", &torch_zip(P2_POSIX_SYSTEM));
    write("config.json", b"{}");
    write(".git/objects/evil.pkl", P0_OS_SYSTEM);
    let reports = scan_path(root).expect("scan");
    let names: Vec<String> = reports
        .iter()
        .map(|r| {
            std::path::Path::new(&r.path)
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        ["a/pytorch_model.bin", "b/model.safetensors", "config.json"]
    );
    let verdicts: Vec<Verdict> = reports.iter().map(|r| r.verdict).collect();
    assert_eq!(verdicts, [Verdict::Unsafe, Verdict::Safe, Verdict::Unknown]);

    let one = scan_path(&root.join("config.json")).expect("file");
    assert_eq!(one.len(), 1);
    let missing = scan_path(&root.join("nope")).expect_err("missing");
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn sarif_has_rules_results_and_locations() {
    let reports = vec![
        scan_bytes("models/evil model.bin", P2_POSIX_SYSTEM),
        scan_bytes("models/ok.safetensors", &st(ST_GOOD, 16)),
    ];
    let log = sarif(&reports);
    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "trainprov");
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), Rule::ALL.len());
    let results = run["results"].as_array().expect("results");
    assert_eq!(results.len(), reports[0].findings.len());
    let first = &results[0];
    assert_eq!(first["ruleId"], "pickle-dangerous-global");
    assert_eq!(first["level"], "error");
    assert_eq!(
        rules[first["ruleIndex"].as_u64().expect("index") as usize]["id"],
        first["ruleId"]
    );
    assert_eq!(
        first["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "models/evil%20model.bin"
    );
    assert_eq!(run["artifacts"].as_array().map(Vec::len), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Mutations: never a panic
// ---------------------------------------------------------------------------------------------

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let good_npy = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        &[0u8; 24],
    );
    let obj_npy = npy(
        "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
        P2_POSIX_SYSTEM,
    );
    vec![
        ("a.pkl", P0_OS_SYSTEM.to_vec()),
        ("a.pkl", P2_POSIX_SYSTEM.to_vec()),
        ("a.pkl", P2_DICT_OF_INTS.to_vec()),
        ("a.pkl", P2_TORCH_STATE_DICT.to_vec()),
        ("a.pkl", p4_stack_global()),
        ("a.pkl", p5_webbrowser()),
        ("a.pt", torch_zip(P2_POSIX_SYSTEM)),
        ("a.pt", torch_zip(P2_TORCH_STATE_DICT)),
        (
            "a.pt",
            zip(&[ZipIn {
                name: "archive/data.pkl".into(),
                local_name: "archive/data.pkl".into(),
                method: 8,
                data: DEFLATED_POSIX_SYSTEM.to_vec(),
                size: P2_POSIX_SYSTEM.len(),
            }]),
        ),
        (
            "a.pt",
            zip_with(
                &[ZipIn {
                    name: "archive/data.pkl".into(),
                    local_name: "archive/data.pkl".into(),
                    method: 0,
                    data: P2_DICT_OF_INTS.to_vec(),
                    size: P2_DICT_OF_INTS.len(),
                }],
                true,
            ),
        ),
        (
            "a.npz",
            zip_stored(&[
                ("x.npy", good_npy.as_slice()),
                ("y.npy", obj_npy.as_slice()),
            ]),
        ),
        ("a.npy", good_npy),
        ("a.npy", obj_npy),
        (
            "a.gguf",
            gguf(3, &good_gguf_kvs(), &good_gguf_tensors(), 100),
        ),
        ("a.safetensors", st(ST_GOOD, 16)),
    ]
}

/// xorshift64*, seeded: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, sample: &[u8]) -> Vec<u8> {
    let mut bytes = sample.to_vec();
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        let at = rng.below(bytes.len());
        match rng.below(7) {
            0 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
            2 => bytes.truncate(at),
            3 => bytes.insert(at.min(bytes.len()), rng.next() as u8),
            4 => {
                if at < bytes.len() {
                    bytes.remove(at);
                }
            }
            5 => {
                // An extreme length or count: 0xff.. or 0x7f.. over 2 to 8 bytes.
                let fill = if rng.below(2) == 0 { 0xff } else { 0x7f };
                for b in bytes.iter_mut().skip(at).take(2 + rng.below(7)) {
                    *b = fill;
                }
            }
            _ => {
                // Splice in a slice of itself (duplicated structure).
                let from = rng.below(bytes.len());
                let len = rng.below(32);
                let chunk: Vec<u8> = bytes.iter().skip(from).take(len).copied().collect();
                let at = at.min(bytes.len());
                bytes.splice(at..at, chunk);
            }
        }
    }
    bytes
}

#[test]
fn two_thousand_mutations_of_each_sample_never_panic() {
    for (index, (name, sample)) in samples().into_iter().enumerate() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1));
        for round in 0..2_000 {
            let bytes = mutate(&mut rng, &sample);
            let report = scan_bytes(name, &bytes);
            let worst = report
                .findings
                .iter()
                .fold(Verdict::Safe, |v, f| v.worst(f.rule.verdict()));
            assert_eq!(report.verdict, worst, "{name} sample {index} round {round}");
            serde_json::to_string(&report).expect("serialises");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 11: bombs and differentials with CPython's unpickler
// ---------------------------------------------------------------------------------------------

/// Protocol 4 body (no PROTO, no FRAME): `posix.system('id')` via STACK_GLOBAL.
const P4_BODY_POSIX_SYSTEM: &[u8] = b"\x8c\x05posix\x8c\x06system\x93\x8c\x02id\x85R.";

#[test]
fn issue11_pickle_without_proto_is_walked_whatever_its_first_opcode() {
    // FRAME first (no PROTO): CPython reads it; the old sniff took it for unknown bytes.
    let mut framed_only = vec![0x95];
    framed_only.extend_from_slice(&(P4_BODY_POSIX_SYSTEM.len() as u64).to_le_bytes());
    framed_only.extend_from_slice(P4_BODY_POSIX_SYSTEM);
    let r = scan_bytes("pytorch_model.bin", &framed_only);
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    assert_eq!(r.globals, ["posix.system"]);
    // A binary string opcode first.
    let r = scan_bytes("pytorch_model.bin", P4_BODY_POSIX_SYSTEM);
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    assert!(matches!(r.format, Format::Pickle { .. }), "{r:#?}");
}

#[test]
fn issue11_memo_keys_follow_python_int_syntax() {
    // PUT "0_1" and GET "\x0b1" are memo key 1 to Python's int(); the walk used to fail there,
    // before the GLOBAL, and call the file unknown bytes.
    for put in [&b"0_1"[..], b"\x0b1", b" +1\r", b"0001"] {
        let mut p = b"(S'x'\np".to_vec();
        p.extend_from_slice(put);
        p.extend_from_slice(b"\ng\x0b1\n0cos\nsystem\n(S'id'\ntR.");
        let r = scan_bytes("model.bin", &p);
        assert_eq!(
            r.verdict,
            Verdict::Unsafe,
            "PUT {:?}: {r:#?}",
            String::from_utf8_lossy(put)
        );
        assert_eq!(r.globals, ["os.system"]);
    }
    // A STACK_GLOBAL resolved through text memo keys in the same syntax.
    let p = b"\x80\x04\x8c\x05posixp0_0\n0\x8c\x06systemp 1\n0g00\ng+1\n\x93)R.";
    let r = scan_bytes("model.pkl", p);
    assert_eq!(r.globals, ["posix.system"], "{r:#?}");
}

#[test]
fn issue11_unicode_surrogates_do_not_stop_the_walk() {
    // `V\ud800` is a str to Python (raw-unicode-escape keeps lone surrogates).
    let p = b"V\\ud800\n0cos\nsystem\n(S'id'\ntR.";
    let r = scan_bytes("model.bin", p);
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
}

#[test]
fn issue11_a_call_before_the_fault_makes_it_a_pickle() {
    // pandas.read_pickle('/tmp/x') runs, then the stream breaks: CPython has already called it.
    let p = b"cpandas\nread_pickle\n(S'/tmp/x'\ntR\xff";
    let r = scan_bytes("model.bin", p);
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    assert_eq!(r.globals, ["pandas.read_pickle"]);
}

#[test]
fn issue11_legacy_torch_reads_five_pickles_with_or_without_proto() {
    // Magic number (PROTO 2), then protocol, sys info, the model and the storage keys, none of
    // them with PROTO: the legacy loader unpickles all five.
    let mut file = Vec::new();
    file.extend_from_slice(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.");
    file.extend_from_slice(b"M\xe9\x03.");
    file.extend_from_slice(b"}q\x00.");
    file.extend_from_slice(P0_OS_SYSTEM);
    file.extend_from_slice(b"]q\x00.");
    file.extend_from_slice(&16u64.to_le_bytes());
    file.extend_from_slice(&[0x80; 64]);
    let r = scan_bytes("old.bin", &file);
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    assert_eq!(r.globals, ["os.system"]);
    assert!(r.summary.contains("in 5 pickles"), "{}", r.summary);
    assert!(has(&r, Rule::PickleTrailingData), "{r:#?}");

    // Any pickle after another is walked, PROTO or not (pickle.load in a loop).
    let mut two = P2_DICT_OF_INTS.to_vec();
    two.extend_from_slice(P0_OS_SYSTEM);
    let r = scan_bytes("two.pkl", &two);
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    assert!(!has(&r, Rule::PickleTrailingData), "{r:#?}");
}

/// A benign pickle whose `BININT2` argument straddles the end of its FRAME: the C unpickler
/// returns 1, the Python one raises "pickle exhausted before end of frame".
fn straddling_frame() -> Vec<u8> {
    let mut p = b"\x80\x04\x95".to_vec();
    p.extend_from_slice(&2u64.to_le_bytes());
    p.extend_from_slice(b"M\x01\x00.");
    p
}

/// A benign pickle with a FRAME inside a FRAME: the Python unpickler raises "beginning of a
/// new frame before end of current frame".
fn nested_frame() -> Vec<u8> {
    let mut p = b"\x80\x04\x95".to_vec();
    p.extend_from_slice(&12u64.to_le_bytes());
    p.push(0x95);
    p.extend_from_slice(&3u64.to_le_bytes());
    p.extend_from_slice(b"K\x01.");
    p
}

#[test]
fn issue11_frame_boundaries_that_cpython_readers_disagree_on_are_invalid() {
    for (what, p) in [("straddle", straddling_frame()), ("nested", nested_frame())] {
        let r = scan_bytes("model.pkl", &p);
        assert_eq!(r.verdict, Verdict::Invalid, "{what}: {r:#?}");
        assert!(
            r.findings
                .iter()
                .any(|f| f.rule == Rule::PickleInvalid && f.message.contains("FRAME")),
            "{what}: {r:#?}"
        );
    }
    // Well-formed frames, and reads that start exactly at a frame's end, are fine.
    let r = scan_bytes("ok.pkl", &p4_stack_global());
    assert!(!has(&r, Rule::PickleInvalid), "{r:#?}");
    let mut at_end = b"\x80\x04\x95".to_vec();
    at_end.extend_from_slice(&1u64.to_le_bytes());
    at_end.extend_from_slice(b"K\x01.");
    let r = scan_bytes("ok.pkl", &at_end);
    assert_eq!(r.verdict, Verdict::Safe, "{r:#?}");
}

/// CPython (the `python3` on PATH, or `$PYTHON`; only its standard library is used) agrees with
/// the walk on the differentials above. Only harmless pickles are loaded (ints and strings, no
/// global). Fails, never skips, when Python is missing: `.ci/run` needs it for the venv anyway.
#[test]
fn issue11_cpython_agrees_on_the_differentials() {
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("memo", b"(S'x'\np0_1\n0g\x0b1\n.".to_vec()),
        ("surrogate", b"V\\ud800\n.".to_vec()),
        ("straddle", straddling_frame()),
        ("nested", nested_frame()),
    ];
    for (name, bytes) in &cases {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    // For each case: what the C unpickler (pickle.loads) and the Python one (pickle._loads) say.
    let script = r#"
import pickle, sys, os
for name in sys.argv[2:]:
    data = open(os.path.join(sys.argv[1], name), 'rb').read()
    out = []
    for load in (pickle.loads, pickle._loads):
        try:
            out.append(repr(load(data)))
        except Exception as e:
            out.append('raises ' + type(e).__name__)
    print(name, '|'.join(out))
"#;
    let mut cmd = std::process::Command::new(&python);
    cmd.arg("-c").arg(script).arg(dir.path());
    for (name, _) in &cases {
        cmd.arg(name);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; install Python 3", python.to_string_lossy()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "memo 'x'|'x'",
            "surrogate '\\ud800'|'\\ud800'",
            "straddle 1|raises UnpicklingError",
            "nested 1|raises UnpicklingError",
        ]
    );
    // Where both readers load it, the walk does; where they disagree, it is invalid, never ok.
    for (name, bytes) in &cases {
        let r = scan_bytes("x.pkl", bytes);
        let want = if name.starts_with("memo") || name.starts_with("surrogate") {
            Verdict::Safe
        } else {
            Verdict::Invalid
        };
        assert_eq!(r.verdict, want, "{name}: {r:#?}");
    }
}

/// A valid safetensors file whose first byte is BINUNICODE: its length bytes skip into the JSON
/// header, a chain of SHORT_BINSTRINGs inside a metadata string hops to the data section, where
/// a U8 tensor holds `posix.system('id')`.
fn safetensors_pickle_polyglot() -> Vec<u8> {
    let payload = P4_BODY_POSIX_SYSTEM;
    let p = payload.len();
    let tail =
        format!("\"}},\"t\":{{\"dtype\":\"U8\",\"shape\":[{p}],\"data_offsets\":[0,{p}]}}}}");
    let prefix = "{\"__metadata__\":{\"x\":\"";
    for l in 3u64..4000 {
        let n = 0x58 + 256 * l;
        // The string ends at byte 5 + l; the header runs from 8 to 8 + n.
        let resume = 5 + l as usize;
        if resume < 8 + prefix.len() {
            continue;
        }
        let rest = 8 + n as usize - resume;
        let Some(k) = (0..rest / 128).find(|k| {
            let last = rest as i64 - 2 - 128 * *k as i64;
            (tail.len() as i64..=126).contains(&last) && last != 0x22 && last != 0x5c
        }) else {
            continue;
        };
        let last = rest - 2 - 128 * k;
        let mut header = prefix.to_string();
        header.push_str(&"a".repeat(resume - 8 - prefix.len()));
        for _ in 0..k {
            header.push('U');
            header.push('~');
            header.push_str(&"a".repeat(126));
        }
        header.push('U');
        header.push(char::from(last as u8));
        header.push_str(&"a".repeat(last - tail.len()));
        header.push_str(&tail);
        assert_eq!(header.len() as u64, n);
        let mut out = n.to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        return out;
    }
    unreachable!("no layout found")
}

#[test]
fn issue11_a_safetensors_that_is_also_a_pickle_is_reported_both_ways() {
    let bytes = safetensors_pickle_polyglot();
    validate_safetensors_bytes(&bytes).expect("a valid safetensors file");
    let r = scan_bytes("model.safetensors", &bytes);
    assert_eq!(r.format, Format::Safetensors);
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    assert!(has(&r, Rule::Polyglot), "{r:#?}");
    assert_eq!(r.globals, ["posix.system"]);
    // An ordinary safetensors file is no polyglot.
    let r = scan_bytes("model.safetensors", &st(ST_GOOD, 16));
    assert_eq!(r.verdict, Verdict::Safe, "{r:#?}");
}

#[test]
fn issue11_every_zip_entry_is_sniffed_whatever_its_name() {
    let r = scan_bytes(
        "model.pt",
        &zip_stored(&[
            ("archive/data.pkl", P2_DICT_OF_INTS),
            ("archive/extra", P2_POSIX_SYSTEM),
            ("archive/data/0", &[0u8; 16]),
        ]),
    );
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    let f = r
        .findings
        .iter()
        .find(|f| f.rule == Rule::PickleDangerousGlobal)
        .expect("dangerous");
    assert_eq!(f.entry.as_deref(), Some("archive/extra"));
    // A protocol 0 pickle in an entry named like data.
    let r = scan_bytes("bundle.zip", &zip_stored(&[("weights.bin", P0_OS_SYSTEM)]));
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    // Storages of random bytes are not pickles.
    let r = scan_bytes(
        "model.pt",
        &zip_stored(&[
            ("archive/data.pkl", P2_TORCH_STATE_DICT),
            ("archive/data/0", b"\x80\x02\x00\x01\x02\x03\x04\x05"),
        ]),
    );
    assert_eq!(r.verdict, Verdict::Safe, "{r:#?}");
}

fn compressed(codec: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match codec {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        "zlib" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("zlib");
            e.finish().expect("zlib")
        }
        "xz" => {
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut std::io::Cursor::new(data), &mut out).expect("xz");
            out
        }
        "lzma" => {
            let mut out = Vec::new();
            lzma_rs::lzma_compress(&mut std::io::Cursor::new(data), &mut out).expect("lzma");
            out
        }
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).expect("bzip2");
            e.finish().expect("bzip2")
        }
        "zstd" => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
        other => unreachable!("{other}"),
    }
}

#[test]
fn issue11_compressed_pickles_are_decompressed_and_scanned() {
    for codec in ["gzip", "zlib", "xz", "lzma", "bzip2", "zstd"] {
        let r = scan_bytes("model.joblib", &compressed(codec, P2_POSIX_SYSTEM));
        assert_eq!(r.format, Format::Compressed { codec }, "{codec}: {r:#?}");
        assert_eq!(r.verdict, Verdict::Unsafe, "{codec}: {r:#?}");
        assert_eq!(r.globals, ["posix.system"], "{codec}");
        let r = scan_bytes("state.pkl.gz", &compressed(codec, P2_DICT_OF_INTS));
        assert_eq!(r.verdict, Verdict::Safe, "{codec}: {r:#?}");
        assert!(
            r.summary.starts_with(&format!("{codec}-compressed pickle")),
            "{}",
            r.summary
        );
    }
    // Inside a zip entry of any name, and a zip inside gzip.
    let gz = compressed("gzip", P0_OS_SYSTEM);
    let r = scan_bytes("bundle.zip", &zip_stored(&[("blob", &gz)]));
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    let r = scan_bytes(
        "model.pt.gz",
        &compressed("gzip", &torch_zip(P2_POSIX_SYSTEM)),
    );
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    // Zip methods 12 (bzip2) and 93 (zstd), as Python's zipfile writes them.
    for (method, codec) in [(12u16, "bzip2"), (93, "zstd")] {
        let r = scan_bytes(
            "a.pt",
            &zip(&[ZipIn {
                name: "archive/data.pkl".into(),
                local_name: "archive/data.pkl".into(),
                method,
                data: compressed(codec, P2_POSIX_SYSTEM),
                size: P2_POSIX_SYSTEM.len(),
            }]),
        );
        assert_eq!(r.globals, ["posix.system"], "{codec}: {r:#?}");
    }
    // Corrupt data behind a strong magic number is invalid.
    let mut bad = compressed("gzip", P2_POSIX_SYSTEM);
    bad.truncate(12);
    let r = scan_bytes("x.gz", &bad);
    assert_eq!(r.verdict, Verdict::Invalid, "{r:#?}");
}

/// Raw deflate of `pattern` repeated to `len` bytes: one stored block with the pattern, then
/// fixed-Huffman blocks of back-references (length 258, distance `pattern.len()`), about 140:1.
fn deflate_repeat(pattern: &[u8], len: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, value: u32, bits: u32) {
            self.acc |= u64::from(value) << self.n;
            self.n += bits;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// Huffman codes go most significant bit first.
        fn code(&mut self, code: u32, bits: u32) {
            let mut rev = 0;
            for i in 0..bits {
                rev |= ((code >> i) & 1) << (bits - 1 - i);
            }
            self.put(rev, bits);
        }
    }
    let d = pattern.len();
    assert!((1..=4).contains(&d) || d == 12);
    let mut b = Bits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    // Stored block (not final) with the pattern.
    b.put(0, 1);
    b.put(0, 2);
    b.put(0, 8 - b.n % 8);
    b.put(d as u32, 16);
    b.put(!(d as u32) & 0xffff, 16);
    for &byte in pattern {
        b.put(u32::from(byte), 8);
    }
    // One final fixed-Huffman block of copies.
    b.put(1, 1);
    b.put(1, 2);
    let mut left = len - d;
    // Distance codes: 1..=4 are codes 0..=3; 12 is code 6 (9..12) with extra 3.
    let (dcode, dextra, dbits) = if d == 12 {
        (6, 3, 2)
    } else {
        (d as u32 - 1, 0, 0)
    };
    while left >= 258 {
        b.code(0b1100_0101, 8); // symbol 285: length 258
        b.code(dcode, 5);
        b.put(dextra, dbits);
        left -= 258;
    }
    for i in 0..left {
        // Literals for the rest (bytes 0..=143 are the 8-bit codes from 0x30).
        let byte = pattern[(len - left + i) % d];
        assert!(byte < 144);
        b.code(0x30 + u32::from(byte), 8);
    }
    b.code(0, 7); // end of block
    if !b.n.is_multiple_of(8) {
        b.put(0, 8 - b.n % 8);
    }
    b.out
}

#[test]
fn issue11_zip_bomb_is_refused_fast_and_never_ok() {
    // The attack: two deflated 256 MiB pickles of `GLOBAL os.system; POP` repeated.
    let pattern = b"cos\nsystem\n0";
    let size = 256 * 1024 * 1024;
    let mut stream = deflate_repeat(pattern, size);
    // Close the pickle: the directory's size counts what the stream inflates to.
    let entry = |name: &str, size: usize, data: Vec<u8>| ZipIn {
        name: name.into(),
        local_name: name.into(),
        method: 8,
        data,
        size,
    };
    stream.shrink_to_fit();
    let bomb = zip(&[
        entry("archive/data.pkl", size, stream.clone()),
        entry("archive/data2.pkl", size, stream.clone()),
    ]);
    assert!(bomb.len() < 8 * 1024 * 1024, "{}", bomb.len());
    let started = std::time::Instant::now();
    let r = scan_bytes("bomb.pt", &bomb);
    let took = started.elapsed();
    assert!(took.as_secs_f64() < 2.0, "took {took:?}");
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    assert!(has(&r, Rule::ScanBudget), "{r:#?}");

    // The directory lies (says 1 MiB): inflating stops one byte past it.
    let started = std::time::Instant::now();
    let liar = zip(&[entry("archive/data.pkl", 1 << 20, stream)]);
    let r = scan_bytes("liar.pt", &liar);
    assert!(started.elapsed().as_secs_f64() < 2.0);
    assert!(!r.is_clean(), "{r:#?}");
    assert!(has(&r, Rule::ZipInvalid), "{r:#?}");

    // A gzip bomb: 200 MiB of zeros behind a small file.
    let mut gz = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
    gz.extend_from_slice(&deflate_repeat(b"\x00", 200 * 1024 * 1024));
    gz.extend_from_slice(&[0; 8]);
    let started = std::time::Instant::now();
    let r = scan_bytes("x.pkl.gz", &gz);
    assert!(
        started.elapsed().as_secs_f64() < 5.0,
        "{:?}",
        started.elapsed()
    );
    assert!(has(&r, Rule::ScanBudget), "{r:#?}");
    assert_eq!(r.verdict, Verdict::Unsafe);
}

#[test]
fn issue11_imports_are_capped_and_counted() {
    let mut p = b"\x80\x02".to_vec();
    for i in 0..3000 {
        p.extend_from_slice(format!("cmod{i}\nname\n0").as_bytes());
    }
    p.extend_from_slice(b"N.");
    let r = scan_bytes("many.pkl", &p);
    assert_eq!(r.globals.len(), safety::scan::MAX_IMPORTS);
    assert_eq!(r.globals_omitted, 3000 - safety::scan::MAX_IMPORTS as u64);
    assert_eq!(r.verdict, Verdict::Unsafe);
}

#[test]
fn issue11_formats_not_read_are_uninspectable_not_clean() {
    let mut tar = vec![0u8; 512];
    tar[..8].copy_from_slice(b"pkl.pkl\0");
    tar[257..263].copy_from_slice(b"ustar\0");
    for (name, bytes) in [
        ("tf_model.h5", b"\x89HDF\r\n\x1a\n\0\0\0\0".to_vec()),
        ("model.7z", b"7z\xbc\xaf\x27\x1c\0\x04".to_vec()),
        ("model.rar", b"Rar!\x1a\x07\x01\x00".to_vec()),
        ("model.tar", tar),
        ("saved_model.pb", b"\x08\x01\x12\x05hello".to_vec()),
        (
            "model.keras",
            zip_stored(&[
                ("metadata.json", b"{\"keras_version\": \"3.3.3\"}"),
                ("config.json", b"{}"),
                ("model.weights.h5", b"\x89HDF\r\n\x1a\n\0\0\0\0"),
            ]),
        ),
    ] {
        let r = scan_bytes(name, &bytes);
        assert_eq!(r.verdict, Verdict::Uninspectable, "{name}: {r:#?}");
        assert!(!r.is_clean(), "{name}");
        assert!(has(&r, Rule::Uninspectable), "{name}: {r:#?}");
    }
}

const EVIL_TEMPLATE: &str =
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
const GOOD_TEMPLATE: &str = "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

#[test]
fn issue11_chat_templates_outside_gguf_are_checked() {
    let config = serde_json::json!({ "model_max_length": 2048, "chat_template": EVIL_TEMPLATE });
    let r = scan_bytes("tokenizer_config.json", config.to_string().as_bytes());
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    assert!(has(&r, Rule::ChatTemplate), "{r:#?}");
    let list = serde_json::json!({ "chat_template": [
        { "name": "default", "template": GOOD_TEMPLATE },
        { "name": "tool_use", "template": "{{ ''['_'*2 ~ 'class' ~ '_'*2] }}" },
    ]});
    let r = scan_bytes("tokenizer_config.json", list.to_string().as_bytes());
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    assert!(
        r.findings.iter().any(|f| f.message.contains("tool_use")),
        "{r:#?}"
    );
    let r = scan_bytes("chat_template.jinja", EVIL_TEMPLATE.as_bytes());
    assert_eq!(r.verdict, Verdict::Unsafe, "{r:#?}");
    // Ordinary templates stay clean.
    let good = serde_json::json!({ "chat_template": GOOD_TEMPLATE });
    let r = scan_bytes("tokenizer_config.json", good.to_string().as_bytes());
    assert_eq!(r.verdict, Verdict::Unknown, "{r:#?}");
    let r = scan_bytes("chat_template.jinja", GOOD_TEMPLATE.as_bytes());
    assert_eq!(r.verdict, Verdict::Unknown, "{r:#?}");
}

#[cfg(unix)]
#[test]
fn issue11_hub_cache_content_is_reported_once_with_its_aliases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("models--org--name");
    let blob = repo.join("blobs/0123abcd");
    std::fs::create_dir_all(blob.parent().expect("parent")).expect("mkdir");
    std::fs::write(&blob, st(ST_GOOD, 16)).expect("write");
    let snap = repo.join("snapshots/rev1");
    std::fs::create_dir_all(&snap).expect("mkdir");
    std::os::unix::fs::symlink("../../blobs/0123abcd", snap.join("model.safetensors"))
        .expect("symlink");
    let reports = scan_path(dir.path()).expect("scan");
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = &reports[0];
    assert!(
        r.path.ends_with("snapshots/rev1/model.safetensors"),
        "{}",
        r.path
    );
    assert_eq!(r.aliases.len(), 1);
    assert!(r.aliases[0].ends_with("blobs/0123abcd"), "{:?}", r.aliases);
    assert_eq!(r.verdict, Verdict::Safe);
}
