//! Checking a Hugging Face model directory before anything is recorded, read or trained.
//!
//! `trainprov train` calls [`inspect`] on the base model before it creates a run record, runs
//! the data check or snapshots an input, so a checkpoint it cannot train leaves nothing behind
//! (no `failed` run in the registry). `trainprov eval` and `probe` load through
//! [`crate::model::Llama::load`], which resolves the weight files with [`weight_files`] and so
//! applies the same layout rules.
//!
//! # Layouts accepted
//!
//! A model directory holds `config.json`, `tokenizer.json` (optionally `tokenizer_config.json`)
//! and safetensors weights in one of two layouts:
//!
//! - **single file**: `model.safetensors`;
//! - **sharded**: `model.safetensors.index.json` (what `save_pretrained` writes above its
//!   `max_shard_size`), whose `weight_map` maps every tensor name to a shard file name in the
//!   same directory (a plain name: no `/`, `\`, `.` or `..`). Every shard it names must exist,
//!   and the index and the shards must agree exactly: a tensor the index maps to a shard that
//!   lacks it, a tensor a shard holds that the index does not list (or lists under another
//!   shard), and a tensor held by two shards are each refused with a one-line error naming the
//!   file at fault. A shard no entry names is not read (and not checked).
//!
//! `model.safetensors` wins when both are present (as in `transformers`). A directory with only
//! pickle checkpoints (`pytorch_model.bin`, its sharded index, `*.pt`, `*.pth`) is refused:
//! nothing pickled is ever opened.
//!
//! Any file may be a symlink: the Hugging Face hub cache
//! (`models--org--name/snapshots/REV/…` linking into `../../blobs/`) is read through its links.
//! Where the hub-cache path names the repository and revision, the recorder records them
//! (`recorder::hub_cache`).
//!
//! # Dtypes
//!
//! Floating-point weights may be stored as `F32`, `BF16`, `F16` or `F64`; the trainer computes in
//! `f32` (a `bf16` or `f16` value converts to `f32` exactly). [`Checkpoint::dtypes`] lists what
//! the files store, lower-cased (`"bf16"`), and `trainprov train` records it with the base model
//! (annotation `weights.dtypes` of its `resolvedDependencies` entry). A dtype the loader does not
//! convert (`BOOL`, `I8`, `U16`, `U64`, the 8-, 6- and 4-bit floats) is refused here, naming the
//! tensor and the file.
//!
//! # What [`inspect`] checks, in order
//!
//! 1. `config.json` parses and describes an architecture this trainer runs, with sane sizes
//!    ([`read_model_config`], the one place that reads it for the check);
//! 2. unless only the config is needed (random initialisation), the weight files
//!    ([`weight_files`]) and every header in them (the checks of [`crate::safe_load`], headers
//!    only: no tensor data is read), the index against the shards (above), the dtypes, and that
//!    every tensor the config implies is present with its shape;
//! 3. `tokenizer.json` loads and its end-of-sequence id is inside the vocabulary
//!    ([`crate::data::TextTokenizer::load`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::LlamaConfig;
use crate::data::TextTokenizer;
use crate::error::TrainerError;
use crate::model::{expected_shapes, WEIGHTS_FILE, WEIGHTS_INDEX_FILE};
use crate::safe_load::{self, SafetensorsHeader};

/// A weight dtype the loader converts to a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoredDtype {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// Single precision.
    F32,
    /// Double precision.
    F64,
    /// Unsigned bytes.
    U8,
    /// 16-bit signed integers.
    I16,
    /// 32-bit unsigned integers.
    U32,
    /// 32-bit signed integers.
    I32,
    /// 64-bit signed integers.
    I64,
}

impl StoredDtype {
    /// The dtype of a safetensors header entry (`"BF16"`), if the loader converts it.
    pub fn from_safetensors(name: &str) -> Option<StoredDtype> {
        Some(match name {
            "F16" => StoredDtype::F16,
            "BF16" => StoredDtype::Bf16,
            "F32" => StoredDtype::F32,
            "F64" => StoredDtype::F64,
            "U8" => StoredDtype::U8,
            "I16" => StoredDtype::I16,
            "U32" => StoredDtype::U32,
            "I32" => StoredDtype::I32,
            "I64" => StoredDtype::I64,
            _ => return None,
        })
    }

    /// Lower-case name, as recorded: `f16`, `bf16`, `f32`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            StoredDtype::F16 => "f16",
            StoredDtype::Bf16 => "bf16",
            StoredDtype::F32 => "f32",
            StoredDtype::F64 => "f64",
            StoredDtype::U8 => "u8",
            StoredDtype::I16 => "i16",
            StoredDtype::U32 => "u32",
            StoredDtype::I32 => "i32",
            StoredDtype::I64 => "i64",
        }
    }
}

impl fmt::Display for StoredDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a checkpoint's weights are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// `model.safetensors`.
    Single {
        /// Its path.
        file: PathBuf,
    },
    /// `model.safetensors.index.json` and its shards.
    Sharded {
        /// The index.
        index: PathBuf,
        /// Shard path → the tensor names the index maps to it (sorted).
        shards: BTreeMap<PathBuf, Vec<String>>,
    },
}

impl WeightFiles {
    /// Every weight file, in name order.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            WeightFiles::Single { file } => vec![file.as_path()],
            WeightFiles::Sharded { shards, .. } => shards.keys().map(PathBuf::as_path).collect(),
        }
    }

    /// `"single"` or `"sharded"`.
    pub fn layout(&self) -> &'static str {
        match self {
            WeightFiles::Single { .. } => "single",
            WeightFiles::Sharded { .. } => "sharded",
        }
    }
}

/// A checked model directory; see the module doc.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The directory as given.
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: LlamaConfig,
    /// Its weight files; `None` when only the config was needed.
    pub weights: Option<WeightFiles>,
    /// The dtypes the weight files store, sorted, each once (empty without weights).
    pub dtypes: Vec<StoredDtype>,
    /// Its `tokenizer.json`.
    pub tokenizer: PathBuf,
}

/// Reads and validates `DIR/config.json`: the single call through which [`inspect`] decides
/// whether the architecture is supported.
pub fn read_model_config(model_dir: &Path) -> Result<LlamaConfig, TrainerError> {
    let path = model_dir.join("config.json");
    if !path.is_file() {
        return Err(TrainerError::ModelConfig {
            file: path,
            message: "not found; a Hugging Face model directory needs its config.json".into(),
        });
    }
    LlamaConfig::from_file(&path)
}

/// Checks a model directory as the module doc says; `with_weights = false` skips the weights
/// (a base initialised at random needs only its config and tokenizer).
pub fn inspect(model_dir: &Path, with_weights: bool) -> Result<Checkpoint, TrainerError> {
    if !model_dir.is_dir() {
        return Err(TrainerError::ModelConfig {
            file: model_dir.to_path_buf(),
            message: "not a directory; pass a Hugging Face model directory".into(),
        });
    }
    let config = read_model_config(model_dir)?;
    let (weights, dtypes) = if with_weights {
        let files = weight_files(model_dir)?;
        let headers = read_headers(&files)?;
        let dtypes = check_tensors(&config, &files, &headers)?;
        (Some(files), dtypes)
    } else {
        (None, Vec::new())
    };
    let tokenizer = TextTokenizer::load(model_dir, &config)?;
    Ok(Checkpoint {
        dir: model_dir.to_path_buf(),
        config,
        weights,
        dtypes,
        tokenizer: tokenizer.path().to_path_buf(),
    })
}

/// Finds the weight files of a model directory and, for a sharded checkpoint, reads its index
/// (every named shard must exist); pickle-only directories are refused. Headers are not read.
pub fn weight_files(model_dir: &Path) -> Result<WeightFiles, TrainerError> {
    let single = model_dir.join(WEIGHTS_FILE);
    let index = model_dir.join(WEIGHTS_INDEX_FILE);
    if single.is_file() {
        safe_load::refuse_pickle(&single)?;
        return Ok(WeightFiles::Single { file: single });
    }
    if index.is_file() {
        return read_index(model_dir, &index);
    }
    refuse_pickle_only(model_dir)?;
    Err(TrainerError::ModelConfig {
        file: model_dir.to_path_buf(),
        message: format!(
            "no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in this directory; pass a Hugging Face \
             model directory with safetensors weights"
        ),
    })
}

fn read_index(model_dir: &Path, index: &Path) -> Result<WeightFiles, TrainerError> {
    let bad = |message: String| TrainerError::ModelConfig {
        file: index.to_path_buf(),
        message,
    };
    let text = fs_err::read_to_string(index)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    if map.is_empty() {
        return Err(bad("\"weight_map\" is empty; it names no tensor".into()));
    }
    let mut shards: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for (name, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[\"{name}\"] is not a file name")))?;
        let plain =
            !shard.is_empty() && !shard.contains(['/', '\\']) && shard != "." && shard != "..";
        if !plain {
            return Err(bad(format!(
                "weight_map[\"{name}\"] = \"{shard}\" is not a plain file name in the model \
                 directory; refusing to read outside it"
            )));
        }
        shards
            .entry(model_dir.join(shard))
            .or_default()
            .push(name.clone());
    }
    for (path, names) in &mut shards {
        safe_load::refuse_pickle_extension(path)?;
        if !path.is_file() {
            return Err(TrainerError::ModelConfig {
                file: path.clone(),
                message: format!(
                    "shard listed in {} ({} tensors) is missing",
                    WEIGHTS_INDEX_FILE,
                    names.len()
                ),
            });
        }
        names.sort();
    }
    Ok(WeightFiles::Sharded {
        index: index.to_path_buf(),
        shards,
    })
}

/// Says why a directory with only pickle weights is refused.
fn refuse_pickle_only(model_dir: &Path) -> Result<(), TrainerError> {
    for name in [
        "pytorch_model.bin",
        "model.bin",
        "model.pt",
        "model.pth",
        "pytorch_model.bin.index.json",
    ] {
        let p = model_dir.join(name);
        if p.is_file() {
            let pickle = if name.ends_with(".json") {
                model_dir.join("pytorch_model-00001-of-00002.bin")
            } else {
                p.clone()
            };
            safe_load::refuse_pickle(&pickle)?;
            return Err(TrainerError::ModelConfig {
                file: p,
                message: "pickle checkpoints are not loaded; convert to model.safetensors".into(),
            });
        }
    }
    Ok(())
}

/// Validates the header of every weight file (no tensor data is read).
pub fn read_headers(
    files: &WeightFiles,
) -> Result<BTreeMap<PathBuf, SafetensorsHeader>, TrainerError> {
    let mut out = BTreeMap::new();
    for file in files.files() {
        safe_load::refuse_pickle(file)?;
        out.insert(file.to_path_buf(), safe_load::validate_safetensors(file)?);
    }
    Ok(out)
}

/// Checks that the index and the shards agree (see the module doc), given the tensor names each
/// shard holds. Used on headers by [`inspect`] and on loaded tensors by the model loader.
pub fn check_shards<'a>(
    index: &Path,
    shards: &BTreeMap<PathBuf, Vec<String>>,
    held: impl IntoIterator<Item = (&'a Path, Vec<&'a str>)>,
) -> Result<(), TrainerError> {
    let mut listed: BTreeMap<&str, &Path> = BTreeMap::new();
    for (shard, names) in shards {
        for name in names {
            listed.insert(name.as_str(), shard.as_path());
        }
    }
    let index_name = index
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| WEIGHTS_INDEX_FILE.into());
    let mut holder: BTreeMap<&str, &Path> = BTreeMap::new();
    for (shard, names) in held {
        for name in names {
            if let Some(first) = holder.insert(name, shard) {
                return Err(TrainerError::ModelConfig {
                    file: shard.to_path_buf(),
                    message: format!(
                        "tensor `{name}` is also in {}; a tensor must be in one shard only",
                        first.display()
                    ),
                });
            }
            match listed.get(name) {
                Some(mapped) if *mapped == shard => {}
                Some(mapped) => {
                    return Err(TrainerError::ModelConfig {
                        file: shard.to_path_buf(),
                        message: format!(
                            "holds tensor `{name}`, which {index_name} maps to {}",
                            mapped.display()
                        ),
                    })
                }
                None => {
                    return Err(TrainerError::ModelConfig {
                        file: shard.to_path_buf(),
                        message: format!(
                            "holds tensor `{name}`, which {index_name} does not list; the index \
                             and the shards disagree"
                        ),
                    })
                }
            }
        }
    }
    for (name, shard) in listed {
        if holder.get(name) != Some(&shard) {
            return Err(TrainerError::MissingTensor {
                name: name.to_string(),
                file: shard.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// The index against the shards, the dtypes, and the tensors the config implies; returns the
/// dtypes stored.
fn check_tensors(
    config: &LlamaConfig,
    files: &WeightFiles,
    headers: &BTreeMap<PathBuf, SafetensorsHeader>,
) -> Result<Vec<StoredDtype>, TrainerError> {
    if let WeightFiles::Sharded { index, shards } = files {
        check_shards(
            index,
            shards,
            headers.iter().map(|(path, header)| {
                (
                    path.as_path(),
                    header.tensors.iter().map(|t| t.name.as_str()).collect(),
                )
            }),
        )?;
    }
    let mut dtypes = BTreeSet::new();
    let mut found: BTreeMap<&str, (&[usize], &Path)> = BTreeMap::new();
    for (path, header) in headers {
        for t in &header.tensors {
            let dtype = StoredDtype::from_safetensors(&t.dtype).ok_or_else(|| {
                TrainerError::Load(
                    safe_load::LoadError::UnsupportedDtype {
                        tensor: t.name.clone(),
                        dtype: t.dtype.clone(),
                    }
                    .in_file(path),
                )
            })?;
            dtypes.insert(dtype);
            found.insert(t.name.as_str(), (t.shape.as_slice(), path.as_path()));
        }
    }
    let default_file = match files {
        WeightFiles::Single { file } => file.clone(),
        WeightFiles::Sharded { index, .. } => index.clone(),
    };
    for (name, shape) in expected_shapes(config) {
        match found.get(name.as_str()) {
            None => {
                return Err(TrainerError::MissingTensor {
                    name,
                    file: default_file,
                })
            }
            Some((got, file)) if *got != shape.as_slice() => {
                return Err(TrainerError::TensorShape {
                    name,
                    file: file.to_path_buf(),
                    expected: shape,
                    got: got.to_vec(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(dtypes.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(entries: &[(&str, &[&str])]) -> BTreeMap<PathBuf, Vec<String>> {
        entries
            .iter()
            .map(|(f, names)| {
                (
                    PathBuf::from(f),
                    names.iter().map(|n| n.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn index_and_shards_must_agree() {
        let index = Path::new("m/model.safetensors.index.json");
        let listed = shards(&[("m/a", &["x", "y"]), ("m/b", &["z"])]);
        let ok = [
            (Path::new("m/a"), vec!["x", "y"]),
            (Path::new("m/b"), vec!["z"]),
        ];
        assert!(check_shards(index, &listed, ok.clone()).is_ok());

        let extra = [
            (Path::new("m/a"), vec!["x", "y"]),
            (Path::new("m/b"), vec!["z", "w"]),
        ];
        let err = check_shards(index, &listed, extra).expect_err("unlisted tensor");
        assert!(
            err.to_string().starts_with("m/b: holds tensor `w`")
                && err.to_string().contains("does not list"),
            "{err}"
        );

        let twice = [
            (Path::new("m/a"), vec!["x", "y"]),
            (Path::new("m/b"), vec!["z", "y"]),
        ];
        let err = check_shards(index, &listed, twice).expect_err("tensor in two shards");
        assert!(
            err.to_string()
                .starts_with("m/b: tensor `y` is also in m/a"),
            "{err}"
        );

        let missing = [(Path::new("m/a"), vec!["x"]), (Path::new("m/b"), vec!["z"])];
        let err = check_shards(index, &listed, missing).expect_err("missing tensor");
        assert!(
            matches!(&err, TrainerError::MissingTensor { name, file } if name == "y" && file == Path::new("m/a")),
            "{err}"
        );
    }

    #[test]
    fn stored_dtypes_have_lowercase_names() {
        assert_eq!(
            StoredDtype::from_safetensors("BF16"),
            Some(StoredDtype::Bf16)
        );
        assert_eq!(StoredDtype::Bf16.to_string(), "bf16");
        assert_eq!(StoredDtype::from_safetensors("F8_E4M3"), None);
        assert_eq!(
            serde_json::to_value([StoredDtype::F16, StoredDtype::F32]).expect("json"),
            serde_json::json!(["f16", "f32"])
        );
    }
}
