//! Model files are untrusted input: every check of `trainer::safe_load` against a file built to
//! break it, plus a round trip and a cross-check with the reference `safetensors` crate.
//!
//! Every corrupt file is built here from bytes (nothing opaque is checked in). Each refusal is
//! checked three ways: the exact error from the pure byte validator, the same error wrapped with
//! the file's path by `validate_safetensors` and `load_safetensors`, and a one-line message that
//! names the file.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use safetensors::tensor::{Dtype, TensorView};
use trainer::safe_load::{
    load_safetensors, refuse_pickle, validate_safetensors, validate_safetensors_bytes, LoadError,
    PickleFormat, MAX_HEADER_LEN,
};

// ---- helpers ----

/// A safetensors file from a header written by hand and `data_len` bytes of data.
fn raw(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend((0..data_len).map(|i| i as u8));
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs_err::write(&path, bytes).unwrap();
    path
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A valid file written by the reference crate: F32, F16, BF16, I64 tensors and metadata.
fn reference_file() -> Vec<u8> {
    let a = f32_bytes(&[1.0, -2.5, 3.25, 0.0, 1e-3, -7.0]);
    let b: Vec<u8> = [0.5f32, -1.0, 65504.0, 2.0]
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect();
    let c: Vec<u8> = [1.5f32, -0.75, 3.0, 256.0]
        .iter()
        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
        .collect();
    let d: Vec<u8> = [7i64, -1, 1 << 40]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let tensors = vec![
        (
            "model.a",
            TensorView::new(Dtype::F32, vec![2, 3], &a).unwrap(),
        ),
        ("model.b", TensorView::new(Dtype::F16, vec![4], &b).unwrap()),
        (
            "model.c",
            TensorView::new(Dtype::BF16, vec![2, 2], &c).unwrap(),
        ),
        ("model.d", TensorView::new(Dtype::I64, vec![3], &d).unwrap()),
    ];
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(tensors, Some(meta)).unwrap()
}

/// Asserts that the bytes, as a file named `name`, are refused with `expected`: by the pure
/// validator, and with the path by `validate_safetensors` and `load_safetensors`; the message is
/// one line that starts with the path.
fn assert_refused(name: &str, bytes: &[u8], expected: LoadError) -> String {
    assert_eq!(
        validate_safetensors_bytes(bytes).as_ref().unwrap_err(),
        &expected
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, bytes);
    let err = validate_safetensors(&path).unwrap_err();
    assert_eq!(err.problem(), &expected, "{err}");
    assert_eq!(err.path(), Some(path.as_path()));
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}: ", path.display())), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    let err = load_safetensors(&path, &Device::Cpu).unwrap_err();
    assert_eq!(err.problem(), &expected, "{err}");
    msg
}

/// name -> (dtype, shape, data offsets).
type Listing = BTreeMap<String, (String, Vec<usize>, (usize, usize))>;

/// The tensors as the reference crate sees them.
fn reference_view(bytes: &[u8]) -> Option<Listing> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    Some(
        meta.tensors()
            .into_iter()
            .map(|(name, info)| {
                (
                    name,
                    (
                        format!("{:?}", info.dtype),
                        info.shape.clone(),
                        info.data_offsets,
                    ),
                )
            })
            .collect(),
    )
}

fn our_view(bytes: &[u8]) -> Option<Listing> {
    let header = validate_safetensors_bytes(bytes).ok()?;
    Some(
        header
            .tensors
            .into_iter()
            .map(|t| (t.name, (t.dtype, t.shape, t.offsets)))
            .collect(),
    )
}

// ---- valid files ----

#[test]
fn valid_file_round_trips() {
    let bytes = reference_file();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "model.safetensors", &bytes);

    let header = validate_safetensors(&path).unwrap();
    assert_eq!(header, validate_safetensors_bytes(&bytes).unwrap());
    assert_eq!(
        header.metadata,
        Some(BTreeMap::from([("format".to_string(), "pt".to_string())]))
    );
    let names: Vec<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
    // Sorted by offset; the reference crate writes the widest dtype first, then by name.
    assert_eq!(names, ["model.d", "model.a", "model.c", "model.b"]);
    assert_eq!(
        header.data_start() + header.data_len() as u64,
        bytes.len() as u64
    );
    refuse_pickle(&path).unwrap();

    let tensors = load_safetensors(&path, &Device::Cpu).unwrap();
    assert_eq!(tensors.len(), 4);
    let a = &tensors["model.a"];
    assert_eq!(a.dtype(), DType::F32);
    assert_eq!(a.dims(), [2, 3]);
    assert_eq!(
        a.to_vec2::<f32>().unwrap(),
        [[1.0, -2.5, 3.25], [0.0, 1e-3, -7.0]]
    );
    // F16 and BF16 become F32; these values are exact in both.
    let b = &tensors["model.b"];
    assert_eq!(b.dtype(), DType::F32);
    assert_eq!(b.to_vec1::<f32>().unwrap(), [0.5, -1.0, 65504.0, 2.0]);
    let c = &tensors["model.c"];
    assert_eq!(c.dtype(), DType::F32);
    assert_eq!(c.to_vec2::<f32>().unwrap(), [[1.5, -0.75], [3.0, 256.0]]);
    // Integer tensors keep their dtype.
    let d = &tensors["model.d"];
    assert_eq!(d.dtype(), DType::I64);
    assert_eq!(d.to_vec1::<i64>().unwrap(), [7, -1, 1 << 40]);
}

#[test]
fn reference_crate_agrees_on_valid_files() {
    let zeros = [0u8; 64];
    let files: Vec<Vec<u8>> = vec![
        reference_file(),
        // No tensors at all, no metadata.
        safetensors::serialize(Vec::<(&str, TensorView)>::new(), None).unwrap(),
        // A scalar, an empty tensor, and sub-byte / 8-bit dtypes.
        safetensors::serialize(
            vec![
                (
                    "scalar",
                    TensorView::new(Dtype::F32, vec![], &zeros[..4]).unwrap(),
                ),
                (
                    "empty",
                    TensorView::new(Dtype::F32, vec![0, 5], &[]).unwrap(),
                ),
                (
                    "f4",
                    TensorView::new(Dtype::F4, vec![2, 3], &zeros[..3]).unwrap(),
                ),
                (
                    "fp8",
                    TensorView::new(Dtype::F8_E4M3, vec![5], &zeros[..5]).unwrap(),
                ),
                (
                    "flag",
                    TensorView::new(Dtype::BOOL, vec![2], &zeros[..2]).unwrap(),
                ),
            ],
            None,
        )
        .unwrap(),
        // Hand-written: keys out of offset order, no padding, explicit null metadata.
        raw(
            r#"{"z":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"__metadata__":null,"a":{"dtype":"I16","shape":[1],"data_offsets":[2,4]}}"#,
            4,
        ),
    ];
    for bytes in &files {
        let ours = our_view(bytes).expect("we accept it");
        let theirs = reference_view(bytes).expect("the reference crate accepts it");
        assert_eq!(ours, theirs);
        assert!(safetensors::SafeTensors::deserialize(bytes).is_ok());
    }
}

#[test]
fn header_is_read_without_the_data_section() {
    // A 64 MiB tensor in a sparse file: validation reads 8 bytes plus the header.
    let header = r#"{"big":{"dtype":"F32","shape":[4194304,4],"data_offsets":[0,67108864]}}"#;
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "big.safetensors", &raw(header, 0));
    let file = fs_err::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(8 + header.len() as u64 + 67_108_864).unwrap();
    let info = validate_safetensors(&path).unwrap();
    assert_eq!(info.tensors[0].shape, [4_194_304, 4]);
}

#[test]
fn unsupported_dtypes_are_validated_but_not_loaded() {
    let bytes = raw(
        r#"{"mask":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}"#,
        3,
    );
    validate_safetensors_bytes(&bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "mask.safetensors", &bytes);
    let err = load_safetensors(&path, &Device::Cpu).unwrap_err();
    assert_eq!(
        err.problem(),
        &LoadError::UnsupportedDtype {
            tensor: "mask".into(),
            dtype: "BOOL".into()
        }
    );
    assert!(err.to_string().starts_with(&path.display().to_string()));
}

// ---- each corruption, refused by name ----

#[test]
fn truncated_file_is_refused() {
    let bytes = reference_file();
    let cut = &bytes[..bytes.len() - 5];
    assert_refused(
        "cut.safetensors",
        cut,
        LoadError::TruncatedFile {
            expected: bytes.len() as u64,
            got: cut.len() as u64,
        },
    );
    // Shorter than the length field itself.
    assert_refused(
        "tiny.safetensors",
        &[1, 2, 3],
        LoadError::TruncatedFile {
            expected: 8,
            got: 3,
        },
    );
    assert_refused(
        "empty.safetensors",
        &[],
        LoadError::TruncatedFile {
            expected: 8,
            got: 0,
        },
    );
}

#[test]
fn header_length_past_eof_is_refused() {
    let mut bytes = raw("{}", 0);
    bytes[..8].copy_from_slice(&1000u64.to_le_bytes());
    assert_refused(
        "long.safetensors",
        &bytes,
        LoadError::HeaderPastEof {
            len: 1000,
            available: 2,
        },
    );
}

#[test]
fn header_length_over_the_limit_is_refused() {
    for len in [MAX_HEADER_LEN + 1, u64::MAX] {
        let mut bytes = raw("{}", 0);
        bytes[..8].copy_from_slice(&len.to_le_bytes());
        assert_refused(
            "huge.safetensors",
            &bytes,
            LoadError::HeaderTooLarge {
                len,
                limit: 100_000_000,
            },
        );
    }
}

#[test]
fn non_utf8_header_is_refused() {
    let mut bytes = raw(r#"{"a":{}}"#, 0);
    bytes[8 + 2] = 0xff;
    assert_refused(
        "latin.safetensors",
        &bytes,
        LoadError::NotUtf8 { valid_up_to: 2 },
    );
}

#[test]
fn bad_json_is_refused() {
    for header in [r#"{"a":"#, "{} x", "", "{,}"] {
        let bytes = raw(header, 0);
        let LoadError::BadJson { detail } = validate_safetensors_bytes(&bytes).unwrap_err() else {
            panic!("{header}");
        };
        assert_refused("json.safetensors", &bytes, LoadError::BadJson { detail });
    }
}

#[test]
fn duplicate_key_is_refused() {
    // Two entries named `w`: serde_json and the reference crate keep the second one silently.
    let bytes = raw(
        r#"{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        1,
    );
    assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok());
    assert_refused(
        "dup.safetensors",
        &bytes,
        LoadError::DuplicateKey { key: "w".into() },
    );
    // Nested: a tensor entry that gives its dtype twice.
    let bytes = raw(
        r#"{"w":{"dtype":"F32","dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        1,
    );
    assert_refused(
        "dup2.safetensors",
        &bytes,
        LoadError::DuplicateKey {
            key: "w.dtype".into(),
        },
    );
    // Repeated metadata keys too.
    let bytes = raw(r#"{"__metadata__":{"format":"pt","format":"np"}}"#, 0);
    assert_refused(
        "dup3.safetensors",
        &bytes,
        LoadError::DuplicateKey {
            key: "__metadata__.format".into(),
        },
    );
}

#[test]
fn unknown_dtype_is_refused() {
    let bytes = raw(
        r#"{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#,
        16,
    );
    assert_refused(
        "dtype.safetensors",
        &bytes,
        LoadError::BadDtype {
            tensor: "w".into(),
            dtype: "F128".into(),
        },
    );
}

#[test]
fn shape_overflow_is_refused() {
    // 2^32 * 2^32 elements overflow u64; 2^62 F32 elements overflow the bit count.
    for shape in [
        "[4294967296,4294967296]",
        "[4611686018427387904]",
        "[18446744073709551615,2]",
    ] {
        let header = format!(r#"{{"w":{{"dtype":"F32","shape":{shape},"data_offsets":[0,4]}}}}"#);
        assert_refused(
            "overflow.safetensors",
            &raw(&header, 4),
            LoadError::ShapeOverflow { tensor: "w".into() },
        );
    }
}

#[test]
fn negative_or_fractional_shape_is_refused() {
    for (dim, detail) in [
        ("-3", "-3 is negative"),
        ("1.5", "1.5 is not an integer in 0..=2^64-1"),
        (
            "18446744073709551616",
            "1.8446744073709552e+19 is not an integer in 0..=2^64-1",
        ),
        ("\"4\"", "\"4\" is a string, not an integer"),
    ] {
        let header = format!(r#"{{"w":{{"dtype":"U8","shape":[{dim}],"data_offsets":[0,4]}}}}"#);
        assert_refused(
            "shape.safetensors",
            &raw(&header, 4),
            LoadError::BadShape {
                tensor: "w".into(),
                detail: detail.into(),
            },
        );
    }
}

#[test]
fn offsets_not_matching_the_size_are_refused() {
    let bytes = raw(
        r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#,
        12,
    );
    assert_refused(
        "size.safetensors",
        &bytes,
        LoadError::OffsetMismatch {
            tensor: "w".into(),
            expected: 16,
            got: 12,
        },
    );
    let bytes = raw(
        r#"{"w":{"dtype":"U8","shape":[2],"data_offsets":[2,0]}}"#,
        2,
    );
    assert_refused(
        "backwards.safetensors",
        &bytes,
        LoadError::BadOffsets {
            tensor: "w".into(),
            detail: "begin 2 is after end 0".into(),
        },
    );
    let bytes = raw(
        r#"{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2,4]}}"#,
        2,
    );
    assert_refused(
        "three.safetensors",
        &bytes,
        LoadError::BadOffsets {
            tensor: "w".into(),
            detail: "[0,2,4] is not an array of two integers".into(),
        },
    );
}

#[test]
fn overlapping_ranges_are_refused() {
    let bytes = raw(
        r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
        6,
    );
    assert_refused(
        "overlap.safetensors",
        &bytes,
        LoadError::Overlap {
            a: "a".into(),
            b: "b".into(),
        },
    );
    // Two names for the same bytes (an alias) are an overlap too.
    let bytes = raw(
        r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#,
        4,
    );
    assert_refused(
        "alias.safetensors",
        &bytes,
        LoadError::Overlap {
            a: "a".into(),
            b: "b".into(),
        },
    );
}

#[test]
fn gap_between_ranges_is_refused() {
    let bytes = raw(
        r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}"#,
        8,
    );
    assert_refused(
        "gap.safetensors",
        &bytes,
        LoadError::Gap {
            from: 4,
            to: 6,
            next: "b".into(),
        },
    );
    // Data that does not start at 0.
    let bytes = raw(
        r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[3,7]}}"#,
        7,
    );
    assert_refused(
        "lead.safetensors",
        &bytes,
        LoadError::Gap {
            from: 0,
            to: 3,
            next: "a".into(),
        },
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = reference_file();
    let data_len = validate_safetensors_bytes(&bytes).unwrap().data_len() as u64;
    bytes.extend_from_slice(b"hidden payload");
    assert_refused(
        "trailing.safetensors",
        &bytes,
        LoadError::NotCovering {
            covered: data_len,
            data_len: data_len + 14,
        },
    );
}

#[test]
fn malformed_structure_is_refused() {
    assert_refused(
        "array.safetensors",
        &raw("[1,2]", 0),
        LoadError::BadHeader {
            detail: "the header is a JSON array, not an object".into(),
        },
    );
    assert_refused(
        "meta.safetensors",
        &raw(r#"{"__metadata__":{"step":3}}"#, 0),
        LoadError::BadMetadata {
            detail: r#"the value of "step" is a number, not a string"#.into(),
        },
    );
    assert_refused(
        "extra.safetensors",
        &raw(
            r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"url":"x"}}"#,
            1,
        ),
        LoadError::BadTensorEntry {
            tensor: "w".into(),
            detail: r#"unexpected key "url""#.into(),
        },
    );
    assert_refused(
        "missing.safetensors",
        &raw(r#"{"w":{"dtype":"U8","shape":[1]}}"#, 1),
        LoadError::BadTensorEntry {
            tensor: "w".into(),
            detail: r#"missing "data_offsets""#.into(),
        },
    );
    assert_refused(
        "nibble.safetensors",
        &raw(
            r#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#,
            1,
        ),
        LoadError::PartialByte {
            tensor: "w".into(),
            bits: 12,
        },
    );
}

// ---- pickle formats ----

/// `pickle.dumps({"w": 1}, protocol=4)`: PROTO 4, FRAME, EMPTY_DICT, ... STOP.
const PICKLE_V4: &[u8] = b"\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01w\x94K\x01s.";

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

/// A stored (uncompressed) zip with one entry `archive/data.pkl`, laid out like `torch.save`.
fn torch_zip() -> Vec<u8> {
    let name = b"archive/data.pkl";
    let crc = crc32(PICKLE_V4);
    let size = PICKLE_V4.len() as u32;
    let mut z = Vec::new();
    z.extend_from_slice(b"PK\x03\x04");
    z.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
    z.extend_from_slice(&crc.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z.extend_from_slice(name);
    z.extend_from_slice(PICKLE_V4);
    let cd_start = z.len() as u32;
    z.extend_from_slice(b"PK\x01\x02");
    z.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&crc.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&[0; 12]); // extra, comment, disk, internal + external attributes
    z.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    z.extend_from_slice(name);
    let cd_len = z.len() as u32 - cd_start;
    z.extend_from_slice(b"PK\x05\x06");
    z.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    z.extend_from_slice(&cd_len.to_le_bytes());
    z.extend_from_slice(&cd_start.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}

fn assert_pickle_message(err: &LoadError, path: &Path) {
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}: ", path.display())), "{msg}");
    assert!(msg.contains("runs code"), "{msg}");
    assert!(msg.contains("save_file(torch.load("), "{msg}");
    assert!(msg.contains("safe_serialization=True"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn pickle_extensions_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["bin", "pt", "pth", "ckpt", "pkl", "pickle", "BIN"] {
        // The file does not even exist: the name is enough.
        let path = dir.path().join(format!("pytorch_model.{ext}"));
        let expected = LoadError::Pickle {
            path: path.clone(),
            format: PickleFormat::Extension(ext.to_ascii_lowercase()),
        };
        assert_eq!(refuse_pickle(&path).unwrap_err(), expected);
        assert_eq!(validate_safetensors(&path).unwrap_err(), expected);
        assert_eq!(load_safetensors(&path, &Device::Cpu).unwrap_err(), expected);
        assert_pickle_message(&expected, &path);
    }
    // A valid safetensors file renamed to .bin is refused as well: rename it back.
    let path = write(dir.path(), "model.bin", &reference_file());
    assert!(matches!(
        load_safetensors(&path, &Device::Cpu),
        Err(LoadError::Pickle { .. })
    ));
}

#[test]
fn pickle_file_is_refused_by_name_and_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "weights.pkl", PICKLE_V4);
    let err = refuse_pickle(&path).unwrap_err();
    assert_eq!(
        err,
        LoadError::Pickle {
            path: path.clone(),
            format: PickleFormat::Extension("pkl".into())
        }
    );
    assert_pickle_message(&err, &path);

    // The same bytes under a safetensors name: refuse_pickle sniffs the PROTO opcode...
    let path = write(dir.path(), "model.safetensors", PICKLE_V4);
    let err = refuse_pickle(&path).unwrap_err();
    assert_eq!(
        err,
        LoadError::Pickle {
            path: path.clone(),
            format: PickleFormat::Protocol(4)
        }
    );
    assert_pickle_message(&err, &path);
    // ... and header validation names it as a pickle instead of a bad header length.
    assert_refused(
        "model.safetensors",
        PICKLE_V4,
        LoadError::LooksLikePickle { protocol: 4 },
    );
    // Protocol 2 as well (`pickle.dumps(None, protocol=2)`).
    assert_refused(
        "p2.safetensors",
        b"\x80\x02N.",
        LoadError::LooksLikePickle { protocol: 2 },
    );
}

#[test]
fn pytorch_zip_is_refused() {
    let zip = torch_zip();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "checkpoint.pt", &zip);
    let err = refuse_pickle(&path).unwrap_err();
    assert_eq!(
        err,
        LoadError::Pickle {
            path: path.clone(),
            format: PickleFormat::Extension("pt".into())
        }
    );
    assert_pickle_message(&err, &path);

    let path = write(dir.path(), "checkpoint.safetensors", &zip);
    assert_eq!(
        refuse_pickle(&path).unwrap_err(),
        LoadError::Pickle {
            path: path.clone(),
            format: PickleFormat::TorchZip
        }
    );
    let msg = assert_refused("checkpoint.safetensors", &zip, LoadError::LooksLikeZip);
    assert!(msg.contains("PyTorch checkpoint"), "{msg}");
}

#[test]
fn refuse_pickle_reports_missing_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.safetensors");
    let err = refuse_pickle(&missing).unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&missing.display().to_string()));
    let err = validate_safetensors(dir.path()).unwrap_err();
    assert_eq!(
        err,
        LoadError::NotAFile {
            path: dir.path().to_path_buf()
        }
    );
}

// ---- robustness ----

/// xorshift64*, seeded: the mutations are the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_header_mutations_never_panic_and_never_fool_the_reference() {
    let valid = reference_file();
    let header_end = 8 + validate_safetensors_bytes(&valid).unwrap().header_len as usize;
    let interesting = b"{}[]\",:0123456789-.eE \x00\xff\x80";
    let mut rng = XorShift(0x5eed_0f5a_fe10_ad00);
    let mut accepted = 0;
    for _ in 0..2000 {
        let mut bytes = valid.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(header_end);
            match rng.below(5) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = interesting[rng.below(interesting.len())],
                2 => bytes[at] = rng.next() as u8,
                3 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, interesting[rng.below(interesting.len())]),
            }
        }
        if rng.below(10) == 0 {
            bytes.truncate(rng.below(bytes.len() + 1));
        }
        let ours = our_view(&bytes);
        if ours.is_some() {
            accepted += 1;
            // Whatever we accept, the reference accepts and reads the same way.
            assert_eq!(
                ours,
                reference_view(&bytes),
                "{:?}",
                &bytes[..header_end.min(bytes.len())]
            );
        }
    }
    // Some mutations (e.g. inside padding) leave a valid file; most do not.
    assert!(accepted < 2000);
}

#[test]
fn messages_are_one_line_even_for_hostile_names() {
    // Names and dtypes come from the file: messages quote them escaped, so a newline in a
    // tensor name cannot forge a second line of output.
    let bytes = raw(
        "{\"a\\nb\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}",
        0,
    );
    let err = validate_safetensors_bytes(&bytes).unwrap_err();
    assert_eq!(
        err,
        LoadError::BadDtype {
            tensor: "a\nb".into(),
            dtype: "X".into()
        }
    );
    assert_eq!(
        err.to_string(),
        r#"tensor "a\nb": unknown dtype "X"; expected one of BOOL, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2, F8_E8M0, F4, F6_E2M3, F6_E3M2"#
    );
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&bytes).unwrap();
    let msg = validate_safetensors(f.path()).unwrap_err().to_string();
    assert!(!msg.contains('\n'), "{msg}");
}
