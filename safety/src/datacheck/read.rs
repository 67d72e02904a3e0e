//! Reading a dataset: which files a check covers, and the rows they hold.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::index::Index;
use super::{CheckError, FileSummary, UncheckedFile, UncheckedKind};

/// How a data file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Jsonl,
    Csv,
    Json,
    Parquet,
}

/// The format of a file by its name (`.jsonl`/`.ndjson`, `.csv`, `.json`, each optionally
/// `.gz`; `.parquet`/`.pq`), and whether it is gzip-compressed; `None` for anything else.
pub(super) fn classify(name: &str) -> Option<(Format, bool)> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".parquet") || lower.ends_with(".pq") {
        return Some((Format::Parquet, false));
    }
    let (stem, gz) = match lower.strip_suffix(".gz") {
        Some(stem) => (stem, true),
        None => (lower.as_str(), false),
    };
    let format = if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") {
        Format::Jsonl
    } else if stem.ends_with(".csv") {
        Format::Csv
    } else if stem.ends_with(".json") {
        Format::Json
    } else {
        return None;
    };
    Some((format, gz))
}

fn format_name(format: Format, gz: bool) -> &'static str {
    match (format, gz) {
        (Format::Jsonl, false) => "jsonl",
        (Format::Jsonl, true) => "jsonl.gz",
        (Format::Csv, false) => "csv",
        (Format::Csv, true) => "csv.gz",
        (Format::Json, false) => "json",
        (Format::Json, true) => "json.gz",
        (Format::Parquet, _) => "parquet",
    }
}

/// Why a file of a format the check does not read is left out.
fn unsupported_reason(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if [".zst", ".xz", ".bz2", ".zip", ".tar", ".7z", ".lz4"]
        .iter()
        .any(|s| lower.ends_with(s))
    {
        "a compressed or archived file data check does not open (it reads gzip only)".into()
    } else {
        "not a format data check reads (.jsonl, .ndjson, .csv, .json, each optionally .gz; \
         .parquet)"
            .into()
    }
}

pub(super) fn read_error(path: &Path, e: impl std::fmt::Display) -> CheckError {
    CheckError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// `fs_err` messages already name the file; [`CheckError::Read`] names it too.
pub(super) fn strip_fs_err(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn unchecked(file: &str, kind: UncheckedKind, reason: impl Into<String>) -> UncheckedFile {
    UncheckedFile {
        file: file.to_string(),
        kind,
        reason: reason.into(),
    }
}

/// A data file found by [`walk`].
pub(super) struct Found {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) format: Format,
    pub(super) gz: bool,
    pub(super) size: u64,
}

/// A directory to list: relative prefix, path, (device, inode) of it and its ancestors.
type Pending = (String, PathBuf, Vec<(u64, u64)>);

/// CSV records: the line each starts on, and its fields.
type CsvRecords = Vec<(usize, Vec<String>)>;

/// Every file under `root` (itself when it is a file), by relative path: the data files to
/// read, and every other file with why it is not read. Symlinks are followed (to files and to
/// directories; a link back to a directory it is inside is a cycle and not followed again).
pub(super) fn walk(root: &Path) -> Result<(Vec<Found>, Vec<UncheckedFile>), CheckError> {
    let meta = fs_err::metadata(root).map_err(|e| read_error(root, strip_fs_err(&e)))?;
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    if !meta.is_dir() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| root.display().to_string());
        classify_file(&name, root, &meta, &mut found, &mut skipped);
        return Ok((found, skipped));
    }
    let mut stack: Vec<Pending> = vec![(
        String::new(),
        root.to_path_buf(),
        vec![(meta.dev(), meta.ino())],
    )];
    while let Some((prefix, dir, ancestors)) = stack.pop() {
        let entries = match fs_err::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if prefix.is_empty() => return Err(read_error(&dir, strip_fs_err(&e))),
            Err(e) => {
                skipped.push(unchecked(
                    prefix.trim_end_matches('/'),
                    UncheckedKind::Unreadable,
                    format!("directory not readable: {}", strip_fs_err(&e)),
                ));
                continue;
            }
        };
        for entry in entries {
            let entry = entry.map_err(|e| read_error(&dir, e))?;
            let path = entry.path();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let lstat = match fs_err::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    skipped.push(unchecked(
                        &name,
                        UncheckedKind::Unreadable,
                        strip_fs_err(&e),
                    ));
                    continue;
                }
            };
            let meta = if lstat.file_type().is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) => {
                        skipped.push(unchecked(
                            &name,
                            UncheckedKind::Unreadable,
                            format!("a symlink that resolves to nothing: {}", strip_fs_err(&e)),
                        ));
                        continue;
                    }
                }
            } else {
                lstat
            };
            if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                if ancestors.contains(&id) {
                    // A cycle: everything below was or will be read through the directory itself.
                    continue;
                }
                let mut chain = ancestors.clone();
                chain.push(id);
                stack.push((format!("{name}/"), path, chain));
            } else {
                classify_file(&name, &path, &meta, &mut found, &mut skipped);
            }
        }
    }
    found.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    skipped.sort_by(|a, b| a.file.as_bytes().cmp(b.file.as_bytes()));
    Ok((found, skipped))
}

fn classify_file(
    name: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    found: &mut Vec<Found>,
    skipped: &mut Vec<UncheckedFile>,
) {
    if !meta.is_file() {
        skipped.push(unchecked(
            name,
            UncheckedKind::Unsupported,
            "not a regular file (a FIFO, socket or device)",
        ));
        return;
    }
    let base = name.rsplit('/').next().unwrap_or(name);
    match classify(base) {
        Some((format, gz)) => found.push(Found {
            name: name.to_string(),
            path: path.to_path_buf(),
            format,
            gz,
            size: meta.len(),
        }),
        None => skipped.push(unchecked(
            name,
            UncheckedKind::Unsupported,
            unsupported_reason(base),
        )),
    }
}

/// Decoded bytes read so far, against [`super::CheckOptions::max_bytes`].
pub(super) struct Budget<'a> {
    pub(super) root: &'a Path,
    pub(super) limit: Option<u64>,
    pub(super) used: u64,
}

impl Budget<'_> {
    fn spend(&mut self, bytes: u64) -> Result<(), CheckError> {
        self.used += bytes;
        match self.limit {
            Some(limit) if self.used > limit => Err(CheckError::TooLarge {
                path: self.root.to_path_buf(),
                bytes: self.used,
                limit,
            }),
            _ => Ok(()),
        }
    }
}

/// Why a file could not be read, as an unchecked entry (the dataset's other files still are).
struct Malformed {
    line: usize,
    message: String,
}

fn malformed(line: usize, message: impl Into<String>) -> Malformed {
    Malformed {
        line,
        message: message.into(),
    }
}

/// Reads every data file of `root` into `index`; returns the files left unchecked.
pub(super) fn load(
    root: &Path,
    limit: Option<u64>,
    index: &mut Index,
) -> Result<Vec<UncheckedFile>, CheckError> {
    let (found, mut skipped) = walk(root)?;
    if let Some(limit) = limit {
        let bytes: u64 = found.iter().map(|f| f.size).sum();
        if bytes > limit {
            return Err(CheckError::TooLarge {
                path: root.to_path_buf(),
                bytes,
                limit,
            });
        }
    }
    // Plain files count their size; gzip files what they inflate to, as they are read.
    let mut budget = Budget {
        root,
        limit,
        used: found.iter().filter(|f| !f.gz).map(|f| f.size).sum(),
    };
    for f in found {
        let raw = match fs_err::read(&f.path) {
            Ok(raw) => raw,
            Err(e) => {
                skipped.push(unchecked(
                    &f.name,
                    UncheckedKind::Unreadable,
                    strip_fs_err(&e),
                ));
                continue;
            }
        };
        let file = index.files.len();
        let mark = index.mark();
        let rows_before = index.rows_total;
        match read_rows(&raw, f.format, f.gz, file, index, &mut budget) {
            Ok(()) => {
                index.files.push(FileSummary {
                    file: f.name,
                    format: format_name(f.format, f.gz),
                    rows: index.rows_total - rows_before,
                    bytes: raw.len() as u64,
                    blake3: blake3::hash(&raw).to_hex().to_string(),
                });
                index.paths.push(f.path);
            }
            Err(Problem::Stop(e)) => return Err(e),
            Err(Problem::File(m)) => {
                index.rollback(&mark);
                let at = if m.line == 0 {
                    f.name.clone()
                } else {
                    format!("{}:{}", f.name, m.line)
                };
                skipped.push(unchecked(
                    &f.name,
                    UncheckedKind::Malformed,
                    format!("{at}: {}", m.message),
                ));
            }
        }
    }
    skipped.sort_by(|a, b| a.file.as_bytes().cmp(b.file.as_bytes()));
    index.finish();
    Ok(skipped)
}

enum Problem {
    /// Stops the whole check (over the size limit).
    Stop(CheckError),
    /// This file cannot be checked.
    File(Malformed),
}

impl From<Malformed> for Problem {
    fn from(m: Malformed) -> Self {
        Problem::File(m)
    }
}

fn read_rows(
    raw: &[u8],
    format: Format,
    gz: bool,
    file: usize,
    index: &mut Index,
    budget: &mut Budget<'_>,
) -> Result<(), Problem> {
    let inflated;
    let bytes: &[u8] = if gz {
        // Every member, as Python's gzip module and `zcat` read them; the budget bounds what
        // a small file may inflate to.
        let cap = budget
            .limit
            .map(|l| l.saturating_sub(budget.used).saturating_add(1))
            .unwrap_or(u64::MAX);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw)
            .take(cap)
            .read_to_end(&mut out)
            .map_err(|e| malformed(0, format!("not a valid gzip file: {e}")))?;
        // Plain files were counted before reading; the inflated size is counted here.
        budget.spend(out.len() as u64).map_err(Problem::Stop)?;
        inflated = out;
        &inflated
    } else {
        raw
    };
    match format {
        Format::Jsonl => jsonl_rows(bytes, file, index)?,
        Format::Csv => csv_rows(utf8(bytes)?, file, index)?,
        Format::Json => json_rows(utf8(bytes)?, file, index)?,
        Format::Parquet => parquet_rows(bytes, file, index)?,
    }
    Ok(())
}

fn utf8(bytes: &[u8]) -> Result<&str, Malformed> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.strip_prefix('\u{feff}').unwrap_or(s)),
        Err(e) => Err(malformed(
            line_of_offset(bytes, e.valid_up_to()),
            "not UTF-8 text",
        )),
    }
}

fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

pub(super) const INPUT_KEYS: &[&str] = &["prompt", "instruction", "input", "text", "question"];
const OUTPUT_KEYS: &[&str] = &[
    "completion",
    "output",
    "label",
    "answer",
    "response",
    "target",
];

/// One row of a record: its input and, when it has one, its output.
type RecordRow = (String, Option<String>);

/// The rows of one JSON record: one for a plain record; one per assistant turn for a chat
/// record (`messages`, `conversations`, or a conversational `prompt`/`completion`); see the
/// module doc.
fn record_rows(value: &Value) -> Result<Vec<RecordRow>, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| "expected a JSON object".to_string())?;
    if let Some(turns) = obj.get("messages") {
        return chat_rows(turns, "messages", "role", "content");
    }
    if let Some(turns) = obj.get("conversations") {
        return chat_rows(turns, "conversations", "from", "value");
    }
    if let Some(Value::Array(prompt)) = obj.get("prompt") {
        // TRL's conversational prompt-completion: both lists of messages.
        let input = turn_texts(prompt, "prompt", "role", "content")?
            .into_iter()
            .map(|(_, text)| text)
            .collect::<Vec<_>>()
            .join("\n");
        let output = match obj.get("completion") {
            None => None,
            Some(Value::Array(c)) => Some(
                turn_texts(c, "completion", "role", "content")?
                    .into_iter()
                    .map(|(_, text)| text)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim()
                    .to_string(),
            ),
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(_) => {
                return Err(
                    "\"completion\" must be a list of messages when \"prompt\" is one".into(),
                )
            }
        };
        return Ok(vec![(input, output)]);
    }
    record_row(obj).map(|row| vec![row])
}

/// Roles whose turns are outputs (ShareGPT's `gpt`, Gemini's `model`).
const ASSISTANT_ROLES: &[&str] = &["assistant", "gpt", "model"];

/// `(role, text)` of each turn of a list of chat messages. Content is a string, `null` (an
/// empty turn, as a tool-calling assistant turn has) or a list of parts whose `"text"`
/// members are joined (other parts, such as images, are left out).
fn turn_texts(
    turns: &[Value],
    key: &str,
    role_key: &str,
    content_key: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(turns.len());
    for (k, turn) in turns.iter().enumerate() {
        let Some(t) = turn.as_object() else {
            return Err(format!("\"{key}\"[{k}] must be an object"));
        };
        let role = match t.get(role_key) {
            Some(Value::String(r)) => r.to_ascii_lowercase(),
            _ => return Err(format!("\"{key}\"[{k}] has no string \"{role_key}\"")),
        };
        let text = match t.get(content_key) {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            Some(_) => {
                return Err(format!(
                    "\"{key}\"[{k}].\"{content_key}\" must be a string or a list of parts"
                ))
            }
        };
        out.push((role, text));
    }
    Ok(out)
}

/// A conversation: one row per assistant turn, whose input is every turn before it (system,
/// user, earlier assistant and tool turns, joined by newlines) and whose output is that turn;
/// a conversation without an assistant turn is one row without an output.
fn chat_rows(
    turns: &Value,
    key: &str,
    role_key: &str,
    content_key: &str,
) -> Result<Vec<RecordRow>, String> {
    let Value::Array(turns) = turns else {
        return Err(format!("\"{key}\" must be a list of turns"));
    };
    let turns = turn_texts(turns, key, role_key, content_key)?;
    let mut rows = Vec::new();
    let mut before: Vec<&str> = Vec::new();
    for (role, text) in &turns {
        if ASSISTANT_ROLES.contains(&role.as_str()) && !before.is_empty() {
            rows.push((before.join("\n"), Some(text.trim().to_string())));
        }
        before.push(text);
    }
    if rows.is_empty() {
        rows.push((before.join("\n"), None));
    }
    Ok(rows)
}

/// The input and output of one plain JSON record.
fn record_row(obj: &serde_json::Map<String, Value>) -> Result<RecordRow, String> {
    let string = |key: &str| -> Result<Option<&str>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let Some(key) = INPUT_KEYS.iter().find(|k| obj.contains_key(**k)) else {
        return Err(format!(
            "no input field: expected \"messages\", \"conversations\" or one of {}",
            INPUT_KEYS
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let mut input = string(key)?.unwrap_or_default().to_string();
    if *key == "instruction" {
        if let Some(extra) = string("input")? {
            if !extra.is_empty() {
                input.push('\n');
                input.push_str(extra);
            }
        }
    }
    let output_key = OUTPUT_KEYS
        .iter()
        .find(|k| obj.contains_key(**k) && **k != *key);
    let output = match output_key.and_then(|k| obj.get(*k).map(|v| (k, v))) {
        None => None,
        Some((_, Value::String(s))) => Some(s.trim().to_string()),
        Some((_, v @ (Value::Number(_) | Value::Bool(_)))) => Some(v.to_string()),
        Some((k, _)) => return Err(format!("\"{k}\" must be a string, number or boolean")),
    };
    Ok((input, output))
}

fn push_record(
    value: &Value,
    line: usize,
    file: usize,
    index: &mut Index,
) -> Result<(), Malformed> {
    for (input, output) in record_rows(value).map_err(|m| malformed(line, m))? {
        index.push(file, line, &input, output.as_deref());
    }
    Ok(())
}

/// A Parquet file (any row group layout, the compressions the `parquet` crate is built with):
/// each row becomes a JSON record and is read like a JSON line, its "line" being its 1-based
/// row number. A file the `parquet` crate cannot read (or panics on) is malformed, by name.
fn parquet_rows(bytes: &[u8], file: usize, index: &mut Index) -> Result<(), Malformed> {
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    let data = bytes::Bytes::copy_from_slice(bytes);
    let read = move || -> Result<Vec<Value>, Malformed> {
        let reader = SerializedFileReader::new(data)
            .map_err(|e| malformed(0, format!("not a readable Parquet file: {e}")))?;
        let rows = reader
            .get_row_iter(None)
            .map_err(|e| malformed(0, format!("not a readable Parquet file: {e}")))?;
        let mut out = Vec::new();
        for (i, row) in rows.enumerate() {
            let row = row.map_err(|e| malformed(i + 1, format!("unreadable Parquet row: {e}")))?;
            out.push(row.to_json_value());
        }
        Ok(out)
    };
    // The reader has panicked on corrupt files before: a panic is a malformed file too.
    let records = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .map_err(|_| malformed(0, "not a readable Parquet file (the reader gave up on it)"))??;
    for (i, value) in records.iter().enumerate() {
        push_record(value, i + 1, file, index)?;
    }
    Ok(())
}

fn jsonl_rows(bytes: &[u8], file: usize, index: &mut Index) -> Result<(), Malformed> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| malformed(line, "not UTF-8 text"))?;
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| malformed(line, format!("invalid JSON: {e}")))?;
        push_record(&value, line, file, index)?;
    }
    Ok(())
}

/// A `.json` file: an array of records; an object with exactly one member that is a list (of
/// records); or, when the text is more than one JSON value, JSON lines (what `datasets`'
/// `to_json` writes). The line of a record is the line it starts on.
fn json_rows(text: &str, file: usize, index: &mut Index) -> Result<(), Malformed> {
    let b = text.as_bytes();
    let mut lines = LineCounter::default();
    let start = skip_ws(b, 0);
    match b.get(start) {
        None => Ok(()),
        Some(b'[') => {
            let end = array_records(b, start, file, index, &mut lines)?;
            expect_end(b, end, &mut lines)
        }
        Some(b'{') => {
            let first_end = value_end(b, start).map_err(|m| malformed(lines.at(b, start), m))?;
            if skip_ws(b, first_end) < b.len() {
                // More than one value: JSON lines.
                return jsonl_rows(b, file, index);
            }
            let mut lists = Vec::new();
            let mut p = skip_ws(b, start + 1);
            if b.get(p) == Some(&b'}') {
                return Ok(());
            }
            loop {
                let key_end = value_end(b, p).map_err(|m| malformed(lines.at(b, p), m))?;
                let key: String = serde_json::from_slice(&b[p..key_end])
                    .map_err(|e| malformed(lines.at(b, p), format!("invalid JSON: {e}")))?;
                p = skip_ws(b, key_end);
                if b.get(p) != Some(&b':') {
                    return Err(malformed(
                        lines.at(b, p),
                        "expected ':' after an object key",
                    ));
                }
                p = skip_ws(b, p + 1);
                let end = value_end(b, p).map_err(|m| malformed(lines.at(b, p), m))?;
                if b.get(p) == Some(&b'[') {
                    lists.push((key, p));
                } else {
                    serde_json::from_slice::<serde::de::IgnoredAny>(&b[p..end])
                        .map_err(|e| malformed(lines.at(b, p), format!("invalid JSON: {e}")))?;
                }
                p = skip_ws(b, end);
                match b.get(p) {
                    Some(b',') => p = skip_ws(b, p + 1),
                    Some(b'}') => break,
                    _ => return Err(malformed(lines.at(b, p), "expected ',' or '}'")),
                }
            }
            expect_end(b, p + 1, &mut lines)?;
            match lists.as_slice() {
                [(_, at)] => array_records(b, *at, file, index, &mut lines).map(|_| ()),
                [] => {
                    // A single record.
                    let value: Value = serde_json::from_slice(b)
                        .map_err(|e| malformed(1, format!("invalid JSON: {e}")))?;
                    push_record(&value, lines.at(b, start), file, index)
                }
                _ => Err(malformed(
                    1,
                    format!(
                        "a JSON object with {} lists ({}); expected exactly one list of records",
                        lists.len(),
                        lists
                            .iter()
                            .map(|(k, _)| format!("\"{k}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        }
        Some(_) => Err(malformed(
            1,
            "expected a JSON array of records, an object with one list of records, or JSON lines",
        )),
    }
}

/// Line numbers of byte offsets, for offsets that only grow.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: usize,
}

impl LineCounter {
    fn at(&mut self, b: &[u8], offset: usize) -> usize {
        let offset = offset.min(b.len());
        if offset < self.offset {
            return line_of_offset(b, offset);
        }
        self.line += b[self.offset..offset]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        self.offset = offset;
        self.line + 1
    }
}

fn skip_ws(b: &[u8], mut p: usize) -> usize {
    while p < b.len() && matches!(b[p], b' ' | b'\t' | b'\n' | b'\r') {
        p += 1;
    }
    p
}

fn expect_end(b: &[u8], p: usize, lines: &mut LineCounter) -> Result<(), Malformed> {
    let p = skip_ws(b, p);
    if p < b.len() {
        return Err(malformed(lines.at(b, p), "text after the JSON value"));
    }
    Ok(())
}

/// The records of the array starting at `start` (`[`); returns the offset after its `]`.
fn array_records(
    b: &[u8],
    start: usize,
    file: usize,
    index: &mut Index,
    lines: &mut LineCounter,
) -> Result<usize, Malformed> {
    let mut p = skip_ws(b, start + 1);
    if b.get(p) == Some(&b']') {
        return Ok(p + 1);
    }
    loop {
        let end = value_end(b, p).map_err(|m| malformed(lines.at(b, p), m))?;
        let line = lines.at(b, p);
        let value: Value = serde_json::from_slice(&b[p..end])
            .map_err(|e| malformed(line, format!("invalid JSON: {e}")))?;
        push_record(&value, line, file, index)?;
        p = skip_ws(b, end);
        match b.get(p) {
            Some(b',') => p = skip_ws(b, p + 1),
            Some(b']') => return Ok(p + 1),
            _ => {
                return Err(malformed(
                    lines.at(b, p),
                    "expected ',' or ']' in the array",
                ))
            }
        }
    }
}

/// The offset just after the JSON value starting at `p` (its syntax is checked later, by
/// `serde_json`, on exactly these bytes).
fn value_end(b: &[u8], p: usize) -> Result<usize, String> {
    let mut depth = 0usize;
    let mut i = p;
    if i >= b.len() {
        return Err("unexpected end of the file".into());
    }
    loop {
        let Some(&c) = b.get(i) else {
            return Err("unexpected end of the file inside a JSON value".into());
        };
        match c {
            b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("a string is never closed".into()),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                if depth == 0 {
                    return Ok(i);
                }
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                if depth == 0 {
                    if i > p {
                        // The end of a scalar that is the last element.
                        return Ok(i);
                    }
                    return Err(format!("unexpected '{}'", c as char));
                }
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => {
                if i == p {
                    return Err(format!("unexpected '{}'", (c as char).escape_default()));
                }
                return Ok(i);
            }
            _ => {}
        }
        i += 1;
        if depth == 0 && i >= b.len() {
            return Ok(i);
        }
    }
}

/// RFC 4180 records with the line each starts on.
pub(super) fn csv_records(text: &str) -> Result<CsvRecords, (usize, &'static str)> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    let mut start_line = 1usize;
    let mut field = String::new();
    let mut fields: Vec<String> = Vec::new();
    let mut in_quotes = false;
    let mut quoted = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
                any = true;
            }
            '"' => {
                return Err((
                    line,
                    "a quote inside an unquoted field (quote the field and double the quote)",
                ))
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
                any = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if any || !field.is_empty() {
                    fields.push(std::mem::take(&mut field));
                    records.push((start_line, std::mem::take(&mut fields)));
                }
                quoted = false;
                any = false;
                line += 1;
                start_line = line;
            }
            _ => {
                if quoted {
                    return Err((line, "text after a closing quote"));
                }
                field.push(c);
                any = true;
            }
        }
    }
    if in_quotes {
        return Err((start_line, "a quoted field is never closed"));
    }
    if any || !field.is_empty() {
        fields.push(field);
        records.push((start_line, fields));
    }
    Ok(records)
}

const CSV_OUTPUT_COLUMNS: &[&str] = &["label", "target", "output", "completion", "class", "answer"];
const CSV_INPUT_COLUMNS: &[&str] = &[
    "text", "input", "prompt", "sentence", "question", "content", "review",
];
const CSV_ID_COLUMNS: &[&str] = &["id", "idx", "index", "uuid"];

fn csv_rows(text: &str, file: usize, index: &mut Index) -> Result<(), Malformed> {
    let records = csv_records(text).map_err(|(line, m)| malformed(line, m))?;
    let Some(((_, header), body)) = records.split_first() else {
        return Err(malformed(1, "empty CSV file: expected a header row"));
    };
    if header.len() < 2 {
        return Err(malformed(
            1,
            format!(
                "the header has {} column; expected an input column and a label column",
                header.len()
            ),
        ));
    }
    let lower: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
    let out_col = CSV_OUTPUT_COLUMNS
        .iter()
        .find_map(|name| lower.iter().position(|h| h == name))
        .unwrap_or(lower.len() - 1);
    let named: Vec<usize> = (0..lower.len())
        .filter(|&i| i != out_col && CSV_INPUT_COLUMNS.contains(&lower[i].as_str()))
        .collect();
    let in_cols: Vec<usize> = if named.is_empty() {
        (0..lower.len())
            .filter(|&i| i != out_col && !CSV_ID_COLUMNS.contains(&lower[i].as_str()))
            .collect()
    } else {
        named
    };
    for (line, fields) in body {
        if fields.len() != header.len() {
            return Err(malformed(
                *line,
                format!("{} fields, the header has {}", fields.len(), header.len()),
            ));
        }
        let input = in_cols
            .iter()
            .map(|&i| fields[i].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        index.push(file, *line, &input, Some(fields[out_col].trim()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_handle_quotes_and_line_numbers() {
        let text = "a,b\n\"x, \"\"y\"\"\",1\n\"multi\nline\",2\r\nplain,3\n";
        let r = csv_records(text).expect("parses");
        assert_eq!(r.len(), 4);
        assert_eq!(r[1], (2, vec!["x, \"y\"".to_string(), "1".to_string()]));
        assert_eq!(r[2], (3, vec!["multi\nline".to_string(), "2".to_string()]));
        assert_eq!(r[3], (5, vec!["plain".to_string(), "3".to_string()]));
    }

    #[test]
    fn json_value_ends() {
        let b = br#"{"a": [1, "x]\"y", {"b": null}]}, 7"#;
        assert_eq!(value_end(b, 0), Ok(b.len() - 3));
        assert_eq!(value_end(b"12 ", 0), Ok(2));
        assert_eq!(value_end(b"true", 0), Ok(4));
        assert!(value_end(b"\"open", 0).is_err());
        assert!(value_end(b"[1, 2", 0).is_err());
    }

    #[test]
    fn classify_names() {
        assert_eq!(classify("a.JSONL"), Some((Format::Jsonl, false)));
        assert_eq!(classify("a.jsonl.gz"), Some((Format::Jsonl, true)));
        assert_eq!(classify("a.ndjson"), Some((Format::Jsonl, false)));
        assert_eq!(classify("a.json"), Some((Format::Json, false)));
        assert_eq!(classify("a.csv.gz"), Some((Format::Csv, true)));
        assert_eq!(classify("a.parquet"), Some((Format::Parquet, false)));
        assert_eq!(classify("a.PQ"), Some((Format::Parquet, false)));
        assert_eq!(classify("a.gz"), None);
        assert_eq!(classify("README.md"), None);
    }
}
