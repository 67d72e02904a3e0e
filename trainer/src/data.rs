//! Training data: JSONL and Parquet examples, tokenization, batches and the seeded data order.
//!
//! # Examples
//!
//! Each non-blank line of a JSONL file, or each row of a Parquet file ([`crate::parquet_rows`];
//! its number is the 1-based row in the file), is an object with either
//! * `"prompt"` and `"completion"` (strings): the loss covers the completion tokens (and the
//!   end-of-sequence token) only, or
//! * `"text"` (a string): the loss covers every token, or
//! * `"messages"` (a chat): rendered with the model's chat template, the loss covers the
//!   assistant turns only; see [`crate::chat`] for the format and the exact tokens.
//!
//! Other keys are ignored; anything else (invalid JSON, two forms, non-strings) is an error
//! naming `file:line`. A directory is read as the `*.jsonl` and `*.parquet` files directly in
//! it, in name order.
//!
//! # Tokens, exactly
//!
//! `tokens = encode(prompt, add_special_tokens=true) ++ encode(completion, false) ++ [eos]`
//! (for `text`: `encode(text, true) ++ [eos]`; for `messages`: [`crate::chat`], nothing
//! appended), with the `tokenizers` crate and the model
//! directory's `tokenizer.json`. `add_special_tokens=true` on the first part means a Llama
//! tokenizer adds its BOS token as `transformers` would for one sequence. `eos` is the first
//! `eos_token_id` of `config.json`, else the `eos_token` of `tokenizer_config.json`, else
//! nothing is appended. Sequences are truncated to `seq_len` tokens (the end is cut) and padded
//! to `seq_len` with the pad id (`eos`, else 0); padding never counts in the loss. An example
//! left with no loss token after truncation is an error, so no line is silently ignored.
//!
//! Position `i` predicts token `i + 1`: a batch holds `input_ids`, `targets` (the ids shifted
//! left by one, padded) and `weights` (1.0 where the target is a loss token, else 0.0).
//!
//! # Data order
//!
//! Micro-batches come from one shuffle per epoch of the example indices (Fisher–Yates from
//! [`crate::rng::Stream::Data`]), cut in order into micro-batches of `batch_size` (the last of
//! an epoch may be smaller). The order digest is the BLAKE3 of the compact JSON of the list of
//! per-epoch permutations actually drawn, e.g. `[[2,0,1],[1,2,0]]`.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::config::LlamaConfig;
use crate::error::TrainerError;
use crate::rng::{Rng, Stream};

/// A token's `(start, end)` byte offsets in the text it was encoded from.
pub type ByteRange = (usize, usize);

/// A model directory's tokenizer, with the ids the trainer appends and pads with.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// Appended to every example when present.
    pub eos: Option<u32>,
    /// Padding id (`eos`, else 0).
    pub pad: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `model_dir/tokenizer.json` and finds the end-of-sequence id (see the module doc).
    pub fn load(model_dir: &Path, config: &LlamaConfig) -> Result<TextTokenizer, TrainerError> {
        let path = model_dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TrainerError::Tokenizer {
                file: path,
                message: "not found; the model directory needs a Hugging Face tokenizer.json"
                    .into(),
            });
        }
        let inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| TrainerError::Tokenizer {
                file: path.clone(),
                message: e.to_string(),
            })?;
        let eos = match config.eos_token_id() {
            Some(id) => Some(id),
            None => eos_from_tokenizer_config(model_dir, &inner)?,
        };
        if let Some(id) = eos {
            if id as usize >= config.vocab_size {
                return Err(TrainerError::Tokenizer {
                    file: path,
                    message: format!(
                        "end-of-sequence id {id} is outside the model's vocabulary of {}",
                        config.vocab_size
                    ),
                });
            }
        }
        Ok(TextTokenizer {
            inner,
            path,
            eos,
            pad: eos.unwrap_or(0),
        })
    }

    /// The ids of `text`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }

    /// The ids of `text` (no special tokens added) with each token's byte range in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<ByteRange>), String> {
        self.inner
            .encode(text, false)
            .map(|e| (e.get_ids().to_vec(), e.get_offsets().to_vec()))
            .map_err(|e| e.to_string())
    }

    /// The `tokenizer.json` path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn eos_from_tokenizer_config(
    model_dir: &Path,
    tok: &tokenizers::Tokenizer,
) -> Result<Option<u32>, TrainerError> {
    let path = model_dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = fs_err::read_to_string(&path)?;
    let v: Value = serde_json::from_str(&text).map_err(|e| TrainerError::Tokenizer {
        file: path.clone(),
        message: format!("not valid JSON: {e}"),
    })?;
    let token = match v.get("eos_token") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => s.clone(),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    match tok.token_to_id(&token) {
        Some(id) => Ok(Some(id)),
        None => Err(TrainerError::Tokenizer {
            file: path,
            message: format!("eos_token \"{token}\" is not in tokenizer.json's vocabulary"),
        }),
    }
}

/// One tokenized example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// At most `seq_len` token ids.
    pub tokens: Vec<u32>,
    /// Per token: whether it is a loss target.
    pub loss_mask: Vec<bool>,
    /// 1-based line in the JSONL file.
    pub line: usize,
}

impl Example {
    /// Number of loss targets (position 0 is never a target).
    pub fn loss_tokens(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m).count()
    }
}

/// A tokenized JSONL file.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The JSONL file.
    pub path: PathBuf,
    /// Examples in file order.
    pub examples: Vec<Example>,
    /// Tokens per row of a batch.
    pub seq_len: usize,
    /// Padding id.
    pub pad: u32,
    /// Examples cut to `seq_len`.
    pub truncated: usize,
}

/// Reads and tokenizes a data file, or every `*.jsonl` and `*.parquet` file of a directory in
/// name order (dataset shards), as one dataset (see the module doc). A `*.parquet` file is read
/// by [`crate::parquet_rows`].
pub fn load_jsonl(
    path: &Path,
    tok: &TextTokenizer,
    seq_len: usize,
    vocab_size: usize,
) -> Result<Dataset, TrainerError> {
    if !path.is_dir() {
        return load_file(path, tok, seq_len, vocab_size);
    }
    let mut shards: Vec<std::path::PathBuf> = fs_err::read_dir(path)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "jsonl" || e == "parquet")
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(TrainerError::Data {
            file: path.to_path_buf(),
            line: 0,
            message: "directory holds no *.jsonl or *.parquet files".into(),
        });
    }
    let mut dataset: Option<Dataset> = None;
    for shard in &shards {
        let part = load_file(shard, tok, seq_len, vocab_size)?;
        match dataset.as_mut() {
            None => dataset = Some(part),
            Some(all) => {
                all.examples.extend(part.examples);
                all.truncated += part.truncated;
            }
        }
    }
    let mut dataset = dataset.expect("at least one shard was read");
    dataset.path = path.to_path_buf();
    Ok(dataset)
}

/// Reads and tokenizes one JSONL or Parquet file.
fn load_file(
    path: &Path,
    tok: &TextTokenizer,
    seq_len: usize,
    vocab_size: usize,
) -> Result<Dataset, TrainerError> {
    let mut rows = RowTokenizer::new(path, tok, seq_len, vocab_size);
    if path.extension().is_some_and(|e| e == "parquet") {
        crate::parquet_rows::for_each_row(path, |row, value| rows.push(row, &value))?;
        return rows.finish();
    }
    let text = fs_err::read_to_string(path)?;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(raw).map_err(|e| TrainerError::Data {
            file: path.to_path_buf(),
            line,
            message: format!("invalid JSON: {e}"),
        })?;
        rows.push(line, &v)?;
    }
    rows.finish()
}

/// Turns the rows of one file (JSON objects, from JSONL lines or Parquet rows) into examples.
struct RowTokenizer<'a> {
    path: &'a Path,
    tok: &'a TextTokenizer,
    seq_len: usize,
    vocab_size: usize,
    /// The model's chat template, loaded at the first chat row.
    chat: Option<Option<crate::chat::ChatTemplate>>,
    examples: Vec<Example>,
    truncated: usize,
}

impl<'a> RowTokenizer<'a> {
    fn new(path: &'a Path, tok: &'a TextTokenizer, seq_len: usize, vocab_size: usize) -> Self {
        RowTokenizer {
            path,
            tok,
            seq_len,
            vocab_size,
            chat: None,
            examples: Vec::new(),
            truncated: 0,
        }
    }

    /// Tokenizes the row at `line` (1-based line, or row of a Parquet file).
    fn push(&mut self, line: usize, v: &Value) -> Result<(), TrainerError> {
        let path = self.path;
        let tok = self.tok;
        let (seq_len, vocab_size) = (self.seq_len, self.vocab_size);
        let err = |line: usize, message: String| TrainerError::Data {
            file: path.to_path_buf(),
            line,
            message,
        };
        let obj = v
            .as_object()
            .ok_or_else(|| err(line, "expected a JSON object".into()))?;
        let field = |k: &str| -> Result<Option<&str>, TrainerError> {
            match obj.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(err(line, format!("\"{k}\" must be a string"))),
            }
        };
        let enc = |s: &str, special: bool| {
            tok.encode(s, special)
                .map_err(|e| err(line, format!("tokenizer failed: {e}")))
        };
        let chat_row = obj.get("messages");
        let (mut tokens, mut mask) = match (
            field("prompt")?,
            field("completion")?,
            field("text")?,
            chat_row,
        ) {
            (Some(p), Some(c), None, None) => {
                let p = enc(p, true)?;
                let c = enc(c, false)?;
                let mut mask = vec![false; p.len()];
                mask.extend(std::iter::repeat_n(true, c.len()));
                let mut tokens = p;
                tokens.extend(c);
                (tokens, mask)
            }
            (None, None, Some(t), None) => {
                let t = enc(t, true)?;
                let mask = vec![true; t.len()];
                (t, mask)
            }
            (None, None, None, Some(messages)) => {
                let messages = crate::chat::parse_messages(messages).map_err(|m| err(line, m))?;
                if self.chat.is_none() {
                    let dir = tok.path().parent().unwrap_or(Path::new("."));
                    self.chat = Some(crate::chat::ChatTemplate::load(dir)?);
                }
                let Some(Some(template)) = &self.chat else {
                    let dir = tok.path().parent().unwrap_or(Path::new("."));
                    return Err(err(
                        line,
                        format!(
                            "a chat row (\"messages\") needs the model's chat template, but {} \
                             has no \"chat_template\"",
                            dir.join("tokenizer_config.json").display()
                        ),
                    ));
                };
                crate::chat::encode(template, tok, &messages).map_err(|m| err(line, m))?
            }
            _ => {
                return Err(err(
                    line,
                    "expected either \"prompt\" and \"completion\", or \"text\" (strings), or \
                     \"messages\""
                        .into(),
                ))
            }
        };
        // Chat rows end with the template's own end-of-turn markup (module `chat`).
        if let (Some(eos), None) = (tok.eos, chat_row) {
            tokens.push(eos);
            mask.push(true);
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(err(
                line,
                format!(
                    "token id {bad} is outside the model's vocabulary of {vocab_size}; the \
                     tokenizer does not match the model"
                ),
            ));
        }
        if tokens.len() > seq_len {
            tokens.truncate(seq_len);
            mask.truncate(seq_len);
            self.truncated += 1;
        }
        let ex = Example {
            tokens,
            loss_mask: mask,
            line,
        };
        if ex.loss_tokens() == 0 {
            return Err(err(
                line,
                format!(
                    "no token to compute a loss on within train.seq_len = {seq_len} (empty \
                     completion, no assistant turn, or a prompt that fills the whole sequence); \
                     raise seq_len or shorten the example"
                ),
            ));
        }
        self.examples.push(ex);
        Ok(())
    }

    fn finish(self) -> Result<Dataset, TrainerError> {
        if self.examples.is_empty() {
            return Err(TrainerError::Data {
                file: self.path.to_path_buf(),
                line: 0,
                message: "no examples in the file".into(),
            });
        }
        Ok(Dataset {
            path: self.path.to_path_buf(),
            examples: self.examples,
            seq_len: self.seq_len,
            pad: self.tok.pad,
            truncated: self.truncated,
        })
    }
}

/// One micro-batch, ready for the model.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[b, seq_len]` u32.
    pub input_ids: Tensor,
    /// `[b, seq_len]` u32: `input_ids` shifted left by one, padded.
    pub targets: Tensor,
    /// `[b, seq_len]` f32: 1.0 where `targets` is a loss token.
    pub weights: Tensor,
    /// Sum of `weights`.
    pub loss_tokens: usize,
    /// Rows.
    pub examples: usize,
}

impl Dataset {
    /// The micro-batch of the given example indices, in that order.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch, TrainerError> {
        let t = self.seq_len;
        let b = indices.len();
        let mut ids = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        let mut weights = Vec::with_capacity(b * t);
        let mut loss_tokens = 0;
        for &i in indices {
            let ex = &self.examples[i];
            let n = ex.tokens.len();
            for pos in 0..t {
                ids.push(if pos < n { ex.tokens[pos] } else { self.pad });
                let next = pos + 1;
                if next < n {
                    targets.push(ex.tokens[next]);
                    let w = ex.loss_mask[next];
                    weights.push(if w { 1f32 } else { 0f32 });
                    loss_tokens += usize::from(w);
                } else {
                    targets.push(self.pad);
                    weights.push(0f32);
                }
            }
        }
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            targets: Tensor::from_vec(targets, (b, t), device)?,
            weights: Tensor::from_vec(weights, (b, t), device)?,
            loss_tokens,
            examples: b,
        })
    }

    /// Micro-batches per epoch.
    pub fn micro_batches_per_epoch(&self, batch_size: usize) -> usize {
        self.examples.len().div_ceil(batch_size.max(1))
    }
}

/// The seeded sequence of micro-batches over epochs (see the module doc).
#[derive(Debug, Clone)]
pub struct DataOrder {
    rng: Rng,
    n: usize,
    batch_size: usize,
    epochs: Vec<Vec<usize>>,
    pos: usize,
}

impl DataOrder {
    /// The order for `n` examples from `seed`.
    pub fn new(seed: u64, n: usize, batch_size: usize) -> DataOrder {
        DataOrder {
            rng: Rng::stream(seed, Stream::Data),
            n,
            batch_size: batch_size.max(1),
            epochs: Vec::new(),
            pos: 0,
        }
    }

    /// The example indices of the next micro-batch (a new epoch is shuffled when needed).
    pub fn next_micro_batch(&mut self) -> Vec<usize> {
        if self.epochs.is_empty() || self.pos >= self.n {
            let mut order: Vec<usize> = (0..self.n).collect();
            self.rng.shuffle(&mut order);
            self.epochs.push(order);
            self.pos = 0;
        }
        let current = self.epochs.last().expect("an epoch was just pushed");
        let end = (self.pos + self.batch_size).min(self.n);
        let out = current[self.pos..end].to_vec();
        self.pos = end;
        out
    }

    /// The per-epoch permutations drawn so far.
    pub fn epochs(&self) -> &[Vec<usize>] {
        &self.epochs
    }

    /// BLAKE3 (hex) of the compact JSON of [`DataOrder::epochs`].
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(&self.epochs).expect("a list of integers serializes");
        blake3::hash(json.as_bytes()).to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_covers_every_example_once_per_epoch() {
        let mut o = DataOrder::new(5, 10, 4);
        let sizes: Vec<usize> = (0..6).map(|_| o.next_micro_batch().len()).collect();
        assert_eq!(sizes, vec![4, 4, 2, 4, 4, 2]);
        assert_eq!(o.epochs().len(), 2);
        for e in o.epochs() {
            let mut s = e.clone();
            s.sort_unstable();
            assert_eq!(s, (0..10).collect::<Vec<_>>());
        }
        let mut again = DataOrder::new(5, 10, 4);
        for _ in 0..6 {
            again.next_micro_batch();
        }
        assert_eq!(o.digest(), again.digest());
    }

    #[test]
    fn batch_shifts_and_masks() {
        let ds = Dataset {
            path: PathBuf::from("x.jsonl"),
            examples: vec![Example {
                tokens: vec![5, 6, 7],
                loss_mask: vec![false, true, true],
                line: 1,
            }],
            seq_len: 4,
            pad: 0,
            truncated: 0,
        };
        let b = ds.batch(&[0], &Device::Cpu).expect("batch");
        let ids: Vec<Vec<u32>> = b.input_ids.to_vec2().expect("ids");
        let tg: Vec<Vec<u32>> = b.targets.to_vec2().expect("targets");
        let w: Vec<Vec<f32>> = b.weights.to_vec2().expect("weights");
        assert_eq!(ids, vec![vec![5, 6, 7, 0]]);
        assert_eq!(tg, vec![vec![6, 7, 0, 0]]);
        assert_eq!(w, vec![vec![1.0, 1.0, 0.0, 0.0]]);
        assert_eq!(b.loss_tokens, 2);
    }
}
