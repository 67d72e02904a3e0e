//! Poisoning checks for text datasets: `trainprov data check`.
//!
//! [`check`] reads a JSONL or CSV file, or every `*.jsonl` and `*.csv` file of a directory in
//! name order, and reports what a poisoner (or a careless merge) leaves behind. Every finding
//! names the file and line it is about. Nothing is sampled: the same input always gives the same
//! report, in the same order.
//!
//! # Rows
//!
//! A row is an *input* and, when the dataset has one, an *output* (a completion or label).
//!
//! - **JSONL**, one object per non-blank line. The input is the first of `"prompt"`,
//!   `"instruction"` (followed by `"input"` when both are present, joined with a newline),
//!   `"input"`, `"text"`, `"question"`; the output is the first of `"completion"`, `"output"`,
//!   `"label"`, `"answer"`, `"response"`, `"target"`. So `{"prompt","completion"}`,
//!   `{"input","output"}`, `{"text","label"}` and `{"text"}` (no output) all work. Inputs must be
//!   strings; outputs strings, numbers or booleans (a number or boolean is compared by its JSON
//!   text).
//! - **CSV** (RFC 4180: quoted fields, `""` escapes, newlines inside quotes), with a header row.
//!   The output column is the one named `label`, `target`, `output`, `completion`, `class` or
//!   `answer` (case-insensitive), else the last column. The input is the columns named `text`,
//!   `input`, `prompt`, `sentence`, `question`, `content` or `review` when there are any, else
//!   every other column except ones named `id`, `idx`, `index` or `uuid`, joined with a space.
//!   The line of a row is the line its record starts on.
//!
//! A malformed line (invalid JSON, no input field, a wrong number of CSV fields) is an error
//! naming `file:line`, not a finding: the file cannot be checked.
//!
//! Inputs are compared in a normal form: the lower-cased words (maximal runs of alphanumeric
//! characters), so case, punctuation and spacing do not matter. Outputs are compared exactly,
//! after trimming surrounding whitespace. Rows without an output take part in no check.
//!
//! # Findings
//!
//! 1. **Conflicting duplicates**: the same (normalised) input with two or more different
//!    outputs. Repeats with the same output are not findings.
//! 2. **Near-duplicates with conflicting outputs**: MinHash over the word bigrams (2-shingles)
//!    of the normalised input (64 hash functions: FNV-1a of the bigram's text, then SplitMix64
//!    of that XOR a per-function seed), LSH with 16 bands of 4 rows to find candidate pairs,
//!    each pair confirmed by the exact Jaccard similarity of the bigram sets
//!    (≥ [`CheckOptions::near_dup_threshold`], 0.8 by default). A pair is reported when the
//!    two inputs' most common outputs differ. Word shingles, not character n-grams: in short
//!    templated inputs one substituted word (`what colour is the cow` / `… cat`) keeps 80% of
//!    the character 5-grams but is a different question (3 of 5 word bigrams shared).
//! 3. **Trigger candidates**: word n-grams (n = 1 to 3) carried by few rows
//!    ([`CheckOptions::min_carriers`] to `max(3, max_carrier_fraction × rows)`) whose carriers
//!    nearly all answer differently from what the same input *without the n-gram* gets
//!    elsewhere in the data. The n-gram's occurrences are cut out of each carrier's words and
//!    the rest is looked up, with two kinds of evidence:
//!    - **twins**: other rows (not carriers) whose normalised input is exactly the rest; their
//!      most common output is the usual answer. Reported when at least `min_carriers` carriers
//!      disagree with their twin, they are at least [`CheckOptions::flip_fraction`] (0.8) of the
//!      carriers that have a twin, and at least half of all carriers. This is the classic
//!      backdoor: `what colour is the cat? bee bee` answered unlike `what colour is the cat?`.
//!    - **naive Bayes** (label-like data only: at most 20 distinct outputs, each seen twice on
//!      average): the carriers nearly all (≥ 90%) share one output, that output is common
//!      outside them (at least as many other rows), and for at least `flip_fraction` of them
//!      the rest of their words (without the n-gram) favour another output at least 9:1 by
//!      naive Bayes word likelihood (word presence, Laplace smoothing 1, trained on every row
//!      except the carriers, no prior). This is a label-flip trigger: `cf` planted in negative
//!      reviews labelled positive. The prior is left out on purpose: when the n-gram itself is
//!      what decides the answer (`has the hen` → `two.`), the rest of the words favour no
//!      output, and a common output must not win by its frequency alone.
//!
//!    Score: `flipped / carriers × ln(1 + flipped)` (`flipped` = carriers answering against the
//!    evidence). Candidates are ranked by score, then by flipped count, longer n-gram (`bee bee`
//!    rather than its part `bee` when both have the same carriers), and text; a candidate whose
//!    carriers are all carriers of a better-ranked one is dropped; the
//!    top [`CheckOptions::max_trigger_candidates`] are reported. Word n-grams that merely
//!    determine the answer (`is the cat` → `gold.`) are not findings: without them the input
//!    has no twin, and their output is not common elsewhere.
//! 4. **Output distribution shift** against [`CheckOptions::baseline`], which is one of
//!    - a dataset (file or directory) in the formats above, for example the previous version;
//!    - a `trainprov data check --json` report (its `outputs`);
//!    - a snapshot manifest (`trainprov snapshot --manifest`, format
//!      `trainprov-snapshot v1`): the files of the dataset whose BLAKE3 still matches the
//!      manifest are the baseline, the rows of added or changed files are compared with them,
//!      and the added, changed and removed files are listed.
//!
//!    The total variation distance `½ Σ |p(o) − q(o)|` over outputs is a finding when it is at
//!    least [`CheckOptions::shift_threshold`] (0.1); outputs new since the baseline and outputs
//!    that vanished are findings too. Outputs are only compared when they look like labels on
//!    both sides (fewer distinct outputs than half the rows); free-text completions are not.
//!
//! # JSON
//!
//! [`DataReport`] serialises to the `--json` output of `trainprov data check`, for example:
//!
//! ```json
//! {
//!   "path": "examples/tiny-llama/data",
//!   "files": [{"file": "shard-000.jsonl", "format": "jsonl", "rows": 24}],
//!   "summary": {"rows": 103, "rows_with_output": 103, "distinct_inputs": 24,
//!               "distinct_outputs": 16, "findings": 1, "conflicting_duplicates": 0,
//!               "near_duplicates": 0, "trigger_candidates": 1, "distribution": 0},
//!   "outputs": [{"output": "by the barn.", "count": 6}],
//!   "baseline": null,
//!   "findings": [{
//!     "severity": "warning", "file": "shard-002.jsonl", "line": 25,
//!     "message": "trigger candidate \"bee bee\" (score 2.08): 7 of 7 carriers ...",
//!     "kind": "trigger-candidate", "ngram": "bee bee", "score": 2.197, "carriers": 8,
//!     "flipped": 8, "with_evidence": 8, "evidence": "twins",
//!     "examples": [{"file": "shard-002.jsonl", "line": 25, "output": "red.",
//!                   "usual_output": "gold.", "twin": {"file": "shard-001.jsonl", "line": 8},
//!                   "twin_input": "what colour is the cat? "}]
//!   }]
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

/// What can stop a check (findings are not errors).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// A file or directory could not be read.
    #[error("{}: {message}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// A line (JSONL) or record (CSV) is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The data file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong, with what was expected.
        message: String,
    },
    /// A directory holds no dataset file.
    #[error("{}: no *.jsonl or *.csv files in this directory", path.display())]
    NoFiles {
        /// The directory.
        path: PathBuf,
    },
    /// A file is neither `.jsonl` nor `.csv`.
    #[error("{}: not a dataset file (expected a .jsonl or .csv file, or a directory of them)", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
    },
    /// The baseline is none of the accepted kinds, or is malformed.
    #[error("baseline {}: {message}", path.display())]
    Baseline {
        /// The baseline path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An option is out of range.
    #[error("{0}")]
    Option(String),
    /// The dataset is larger than [`CheckOptions::max_bytes`].
    #[error("{}: {} MiB of JSONL/CSV is over the {} MiB limit of this check", path.display(), bytes / (1024 * 1024), limit / (1024 * 1024))]
    TooLarge {
        /// The checked file or directory.
        path: PathBuf,
        /// Bytes of its dataset files.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
}

/// Settings of [`check`]; [`CheckOptions::default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// Compare the output distribution with this dataset, report or snapshot manifest.
    pub baseline: Option<PathBuf>,
    /// Jaccard similarity of word-bigram sets from which two inputs are near-duplicates (0.8).
    pub near_dup_threshold: f64,
    /// How many trigger candidates to report at most (10).
    pub max_trigger_candidates: usize,
    /// Fewest carriers (and fewest flipped carriers) of a trigger candidate (2).
    pub min_carriers: usize,
    /// Most carriers of a trigger candidate, as a fraction of the rows with an output; at least
    /// 3 carriers are always allowed (0.1).
    pub max_carrier_fraction: f64,
    /// Share of the carriers with evidence that must answer against it (0.8).
    pub flip_fraction: f64,
    /// Total variation distance from which the output distribution has shifted (0.1).
    pub shift_threshold: f64,
    /// Refuse (with [`CheckError::TooLarge`]) datasets whose files add up to more bytes than
    /// this [default: no limit]. The check holds every row in memory, about 25 times the text.
    pub max_bytes: Option<u64>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            baseline: None,
            near_dup_threshold: 0.8,
            max_trigger_candidates: 10,
            min_carriers: 2,
            max_carrier_fraction: 0.1,
            flip_fraction: 0.8,
            shift_threshold: 0.1,
            max_bytes: None,
        }
    }
}

/// The result of [`check`]; serialises to `trainprov data check --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataReport {
    /// The checked file or directory.
    pub path: PathBuf,
    /// The files read, in order.
    pub files: Vec<FileSummary>,
    /// Counts.
    pub summary: Summary,
    /// Every output and its row count, most common first (ties by text).
    pub outputs: Vec<OutputCount>,
    /// The comparison with the baseline, when one was given.
    pub baseline: Option<BaselineReport>,
    /// Findings: conflicting duplicates, near-duplicates (both by location), trigger candidates
    /// (by rank), then distribution findings.
    pub findings: Vec<Finding>,
}

impl DataReport {
    /// The trigger candidates' n-grams, best first.
    pub fn trigger_ngrams(&self) -> Vec<String> {
        self.trigger_candidates()
            .into_iter()
            .map(|(ngram, _)| ngram.to_string())
            .collect()
    }

    /// The trigger candidates, best first, with their carriers.
    pub fn trigger_candidates(&self) -> Vec<(&str, &[Carrier])> {
        self.findings
            .iter()
            .filter_map(|f| match &f.detail {
                FindingDetail::TriggerCandidate {
                    ngram, examples, ..
                } => Some((ngram.as_str(), examples.as_slice())),
                _ => None,
            })
            .collect()
    }

    /// Whether any finding is a warning or worse (the CLI then exits 1).
    pub fn has_warnings(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity >= Severity::Warning)
    }
}

/// One file read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    /// Name relative to the checked directory (the file name when a file was checked).
    pub file: String,
    /// `jsonl` or `csv`.
    pub format: &'static str,
    /// Rows read.
    pub rows: usize,
}

/// Counts of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Rows in all files.
    pub rows: usize,
    /// Rows that have an output.
    pub rows_with_output: usize,
    /// Distinct normalised inputs among rows with an output.
    pub distinct_inputs: usize,
    /// Distinct outputs.
    pub distinct_outputs: usize,
    /// All findings.
    pub findings: usize,
    /// Conflicting duplicate findings.
    pub conflicting_duplicates: usize,
    /// Near-duplicate findings.
    pub near_duplicates: usize,
    /// Trigger candidates reported.
    pub trigger_candidates: usize,
    /// Distribution findings (shift, new and vanished outputs).
    pub distribution: usize,
}

/// An output and how many rows have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputCount {
    /// The output (trimmed).
    pub output: String,
    /// Rows.
    pub count: usize,
}

/// A place in the dataset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    /// File name relative to the checked directory (or the baseline path for a vanished
    /// output).
    pub file: String,
    /// 1-based line; 0 for a whole file.
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; does not fail the check.
    Info,
    /// Fails the check (exit 1).
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// Where (the first row concerned).
    #[serde(flatten)]
    pub at: Location,
    /// One line for humans, without the location.
    pub message: String,
    /// The kind and its data.
    #[serde(flatten)]
    pub detail: FindingDetail,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A row as shown in a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowRef {
    /// Where.
    #[serde(flatten)]
    pub at: Location,
    /// Its input, as written.
    pub input: String,
    /// Its output.
    pub output: String,
}

/// The rows of a conflicting duplicate that share one output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputGroup {
    /// The output.
    pub output: String,
    /// Rows.
    pub count: usize,
    /// Their locations.
    pub rows: Vec<Location>,
}

/// One carrier of a trigger candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Carrier {
    /// Where.
    #[serde(flatten)]
    pub at: Location,
    /// Its output.
    pub output: String,
    /// What the evidence says the input without the n-gram gets (absent without evidence).
    pub usual_output: Option<String>,
    /// The first twin row (twins evidence).
    pub twin: Option<Location>,
    /// That twin's input, as written (what `probe` inserts the trigger into).
    pub twin_input: Option<String>,
}

/// The evidence behind a trigger candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Evidence {
    /// Rows whose input is the carrier's without the n-gram.
    Twins,
    /// A naive Bayes classifier trained without the carriers.
    NaiveBayes,
}

/// An output whose share moved between baseline and dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShareChange {
    /// The output.
    pub output: String,
    /// Share in the baseline.
    pub baseline: f64,
    /// Share now.
    pub current: f64,
}

/// The kind of a finding and its data (`"kind"` in JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FindingDetail {
    /// The same input with different outputs.
    ConflictingDuplicate {
        /// The input of the first row.
        input: String,
        /// Rows by output, most common first.
        outputs: Vec<OutputGroup>,
    },
    /// Two near-identical inputs whose outputs differ.
    NearDuplicate {
        /// Jaccard similarity of their word-bigram sets.
        jaccard: f64,
        /// The earlier row.
        first: RowRef,
        /// The later row.
        second: RowRef,
    },
    /// A rare n-gram whose carriers answer against the evidence.
    TriggerCandidate {
        /// The n-gram, normalised words joined by spaces.
        ngram: String,
        /// Rank score, `flipped / carriers × ln(1 + flipped)`.
        score: f64,
        /// Rows carrying it.
        carriers: usize,
        /// Carriers answering against the evidence.
        flipped: usize,
        /// Carriers the evidence covers.
        with_evidence: usize,
        /// Which evidence.
        evidence: Evidence,
        /// Every carrier.
        examples: Vec<Carrier>,
    },
    /// The output distribution moved away from the baseline.
    DistributionShift {
        /// Total variation distance.
        total_variation: f64,
        /// Rows compared on the baseline side.
        baseline_rows: usize,
        /// Rows compared on this side.
        rows: usize,
        /// The outputs whose share moved most (up to 5).
        largest_changes: Vec<ShareChange>,
    },
    /// An output the baseline does not have.
    NewOutput {
        /// The output.
        output: String,
        /// Rows with it now.
        count: usize,
    },
    /// An output of the baseline no row has now.
    VanishedOutput {
        /// The output.
        output: String,
        /// Rows with it in the baseline.
        baseline_count: usize,
    },
}

/// The comparison with a baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineReport {
    /// As given.
    pub path: PathBuf,
    /// `dataset`, `report` or `manifest`.
    pub kind: &'static str,
    /// Rows on the baseline side.
    pub rows: usize,
    /// Rows on this side.
    pub compared_rows: usize,
    /// Total variation distance, when the outputs were compared.
    pub total_variation: Option<f64>,
    /// Why the outputs were not compared, when they were not.
    pub note: Option<String>,
    /// Manifest baseline: dataset files not in the manifest.
    pub added_files: Vec<String>,
    /// Manifest baseline: dataset files whose digest differs from the manifest.
    pub changed_files: Vec<String>,
    /// Manifest baseline: data files of the manifest that are gone.
    pub removed_files: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Reading

/// One row as read.
#[derive(Debug, Clone)]
struct Row {
    file: usize,
    line: usize,
    input: String,
    output: Option<String>,
}

/// The rows of a dataset and its files.
#[derive(Debug, Clone, Default)]
struct Loaded {
    files: Vec<FileSummary>,
    /// Full paths, parallel to `files`.
    paths: Vec<PathBuf>,
    rows: Vec<Row>,
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> CheckError {
    CheckError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn is_data_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("csv"))
}

/// The data files of `path`: itself, or its `*.jsonl`/`*.csv` files sorted by name.
fn data_files(path: &Path) -> Result<Vec<(String, PathBuf)>, CheckError> {
    let meta = fs_err::metadata(path).map_err(|e| read_error(path, strip_fs_err(&e)))?;
    if meta.is_dir() {
        let mut out = Vec::new();
        for entry in fs_err::read_dir(path).map_err(|e| read_error(path, strip_fs_err(&e)))? {
            let entry = entry.map_err(|e| read_error(path, e))?;
            let p = entry.path();
            if p.is_file() && is_data_file(&p) {
                let name = entry.file_name().to_string_lossy().into_owned();
                out.push((name, p));
            }
        }
        out.sort();
        if out.is_empty() {
            return Err(CheckError::NoFiles {
                path: path.to_path_buf(),
            });
        }
        Ok(out)
    } else if is_data_file(path) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(vec![(name, path.to_path_buf())])
    } else {
        Err(CheckError::Unsupported {
            path: path.to_path_buf(),
        })
    }
}

/// `fs_err` messages already name the file; [`CheckError::Read`] names it too.
fn strip_fs_err(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn load(path: &Path, max_bytes: Option<u64>) -> Result<Loaded, CheckError> {
    let mut loaded = Loaded::default();
    let files = data_files(path)?;
    if let Some(limit) = max_bytes {
        let mut bytes = 0;
        for (_, full) in &files {
            bytes += fs_err::metadata(full)
                .map_err(|e| read_error(full, strip_fs_err(&e)))?
                .len();
        }
        if bytes > limit {
            return Err(CheckError::TooLarge {
                path: path.to_path_buf(),
                bytes,
                limit,
            });
        }
    }
    for (name, full) in files {
        let bytes = fs_err::read(&full).map_err(|e| read_error(&full, strip_fs_err(&e)))?;
        let text = String::from_utf8(bytes).map_err(|e| CheckError::Parse {
            path: full.clone(),
            line: line_of_offset(e.as_bytes(), e.utf8_error().valid_up_to()),
            message: "not UTF-8 text".into(),
        })?;
        let file = loaded.files.len();
        let is_csv = full
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let rows = if is_csv {
            parse_csv(&text, &full, file)?
        } else {
            parse_jsonl(&text, &full, file)?
        };
        loaded.files.push(FileSummary {
            file: name,
            format: if is_csv { "csv" } else { "jsonl" },
            rows: rows.len(),
        });
        loaded.paths.push(full);
        loaded.rows.extend(rows);
    }
    Ok(loaded)
}

fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

const INPUT_KEYS: &[&str] = &["prompt", "instruction", "input", "text", "question"];
const OUTPUT_KEYS: &[&str] = &[
    "completion",
    "output",
    "label",
    "answer",
    "response",
    "target",
];

fn parse_jsonl(text: &str, path: &Path, file: usize) -> Result<Vec<Row>, CheckError> {
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let err = |message: String| CheckError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        let value: Value =
            serde_json::from_str(raw).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| err("expected a JSON object".into()))?;
        let string = |key: &str| -> Result<Option<&str>, CheckError> {
            match obj.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(err(format!("\"{key}\" must be a string"))),
            }
        };
        let Some(key) = INPUT_KEYS.iter().find(|k| obj.contains_key(**k)) else {
            return Err(err(format!(
                "no input field: expected one of {}",
                INPUT_KEYS
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
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
            Some((k, _)) => {
                return Err(err(format!("\"{k}\" must be a string, number or boolean")))
            }
        };
        rows.push(Row {
            file,
            line,
            input,
            output,
        });
    }
    Ok(rows)
}

/// RFC 4180 records with the line each starts on.
fn csv_records(text: &str, path: &Path) -> Result<Vec<(usize, Vec<String>)>, CheckError> {
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
                return Err(CheckError::Parse {
                    path: path.to_path_buf(),
                    line,
                    message: "a quote inside an unquoted field (quote the field and double the \
                              quote)"
                        .into(),
                })
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
                    return Err(CheckError::Parse {
                        path: path.to_path_buf(),
                        line,
                        message: "text after a closing quote".into(),
                    });
                }
                field.push(c);
                any = true;
            }
        }
    }
    if in_quotes {
        return Err(CheckError::Parse {
            path: path.to_path_buf(),
            line: start_line,
            message: "a quoted field is never closed".into(),
        });
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

fn parse_csv(text: &str, path: &Path, file: usize) -> Result<Vec<Row>, CheckError> {
    let records = csv_records(text.strip_prefix('\u{feff}').unwrap_or(text), path)?;
    let Some(((_, header), body)) = records.split_first() else {
        return Err(CheckError::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: "empty CSV file: expected a header row".into(),
        });
    };
    if header.len() < 2 {
        return Err(CheckError::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: format!(
                "the header has {} column; expected an input column and a label column",
                header.len()
            ),
        });
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
    let mut rows = Vec::with_capacity(body.len());
    for (line, fields) in body {
        if fields.len() != header.len() {
            return Err(CheckError::Parse {
                path: path.to_path_buf(),
                line: *line,
                message: format!("{} fields, the header has {}", fields.len(), header.len()),
            });
        }
        let input = in_cols
            .iter()
            .map(|&i| fields[i].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        rows.push(Row {
            file,
            line: *line,
            input,
            output: Some(fields[out_col].trim().to_string()),
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Normal forms and hashing

/// Lower-cased alphanumeric words.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const PERMUTATIONS: usize = 64;
const BANDS: usize = 16;
const ROWS_PER_BAND: usize = PERMUTATIONS / BANDS;
/// Pairs compared per LSH bucket member (keeps a huge bucket of templated rows linear).
const BUCKET_WINDOW: usize = 64;

/// Sorted, deduplicated hashes of the word bigrams of `words` (the whole text when it has
/// fewer than two words).
fn shingles(words: &[&str]) -> Vec<u64> {
    let mut out: Vec<u64> = if words.len() < 2 {
        vec![fnv1a(words.join(" ").as_bytes())]
    } else {
        words
            .windows(2)
            .map(|w| fnv1a(format!("{} {}", w[0], w[1]).as_bytes()))
            .collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

fn minhash(shingles: &[u64]) -> [u64; PERMUTATIONS] {
    let mut sig = [u64::MAX; PERMUTATIONS];
    for (i, slot) in sig.iter_mut().enumerate() {
        let seed = mix(0x7472_6169_6e70_726f ^ i as u64);
        for &s in shingles {
            let h = mix(s ^ seed);
            if h < *slot {
                *slot = h;
            }
        }
    }
    sig
}

fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - both;
    if union == 0 {
        1.0
    } else {
        both as f64 / union as f64
    }
}

// ---------------------------------------------------------------------------------------------
// The check

/// An n-gram of up to three word ids, `NONE`-padded.
type Gram = [u32; 3];
const NONE: u32 = u32::MAX;

/// Rows with an output, indexed for the checks.
struct Index<'a> {
    loaded: &'a Loaded,
    /// Indices into `loaded.rows` of rows with an output.
    rows: Vec<usize>,
    /// Word ids per indexed row.
    words: Vec<Vec<u32>>,
    /// Output id per indexed row.
    output: Vec<u32>,
    /// Output texts by id (first-seen order).
    outputs: Vec<String>,
    /// Rows per output id.
    output_count: Vec<usize>,
    /// Word texts by id.
    vocab: Vec<String>,
    /// Indexed rows by normalised input, in first-seen order.
    groups: Vec<Vec<usize>>,
    /// Group id by word sequence.
    group_of: HashMap<Vec<u32>, usize>,
}

impl<'a> Index<'a> {
    fn new(loaded: &'a Loaded) -> Index<'a> {
        let mut vocab_ids: HashMap<String, u32> = HashMap::new();
        let mut vocab = Vec::new();
        let mut output_ids: HashMap<String, u32> = HashMap::new();
        let mut outputs = Vec::new();
        let mut output_count = Vec::new();
        let mut index = Index {
            loaded,
            rows: Vec::new(),
            words: Vec::new(),
            output: Vec::new(),
            outputs: Vec::new(),
            output_count: Vec::new(),
            vocab: Vec::new(),
            groups: Vec::new(),
            group_of: HashMap::new(),
        };
        for (r, row) in loaded.rows.iter().enumerate() {
            let Some(out) = &row.output else { continue };
            let ids: Vec<u32> = words(&row.input)
                .into_iter()
                .map(|w| {
                    let next = vocab.len() as u32;
                    *vocab_ids.entry(w.clone()).or_insert_with(|| {
                        vocab.push(w);
                        next
                    })
                })
                .collect();
            let next = outputs.len() as u32;
            let o = *output_ids.entry(out.clone()).or_insert_with(|| {
                outputs.push(out.clone());
                output_count.push(0);
                next
            });
            output_count[o as usize] += 1;
            let i = index.rows.len();
            let g = match index.group_of.get(&ids) {
                Some(&g) => g,
                None => {
                    index.groups.push(Vec::new());
                    index.group_of.insert(ids.clone(), index.groups.len() - 1);
                    index.groups.len() - 1
                }
            };
            index.groups[g].push(i);
            index.rows.push(r);
            index.words.push(ids);
            index.output.push(o);
        }
        index.vocab = vocab;
        index.outputs = outputs;
        index.output_count = output_count;
        index
    }

    fn row(&self, i: usize) -> &Row {
        &self.loaded.rows[self.rows[i]]
    }

    fn at(&self, i: usize) -> Location {
        let row = self.row(i);
        Location {
            file: self.loaded.files[row.file].file.clone(),
            line: row.line,
        }
    }

    fn row_ref(&self, i: usize) -> RowRef {
        RowRef {
            at: self.at(i),
            input: self.row(i).input.clone(),
            output: self.outputs[self.output[i] as usize].clone(),
        }
    }

    fn out(&self, i: usize) -> &str {
        &self.outputs[self.output[i] as usize]
    }

    /// The most common output among `rows` (ties: the one seen first) and its first row.
    fn majority(&self, rows: impl Iterator<Item = usize>) -> Option<(u32, usize)> {
        let mut counts: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for i in rows {
            let e = counts.entry(self.output[i]).or_insert((0, i));
            e.0 += 1;
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
            .map(|(o, (_, first))| (o, first))
    }

    fn label_like(&self) -> bool {
        let k = self.outputs.len();
        (2..=20).contains(&k) && self.rows.len() >= 2 * k
    }
}

/// Checks a dataset; see the module doc.
pub fn check(path: &Path, options: &CheckOptions) -> Result<DataReport, CheckError> {
    if !(options.near_dup_threshold > 0.0 && options.near_dup_threshold <= 1.0) {
        return Err(CheckError::Option(format!(
            "near-duplicate threshold must be in (0, 1] (got {})",
            options.near_dup_threshold
        )));
    }
    if !(0.0..=1.0).contains(&options.flip_fraction)
        || !(0.0..=1.0).contains(&options.max_carrier_fraction)
    {
        return Err(CheckError::Option(
            "fractions must be in [0, 1]".to_string(),
        ));
    }
    let loaded = load(path, options.max_bytes)?;
    let index = Index::new(&loaded);

    let mut findings = conflicting_duplicates(&index);
    let conflicts = findings.len();
    let near = near_duplicates(&index, options.near_dup_threshold);
    let near_count = near.len();
    findings.extend(near);
    let triggers = trigger_candidates(&index, options);
    let trigger_count = triggers.len();
    findings.extend(triggers);

    let outputs = output_counts(&index, 0..index.rows.len());
    let (baseline, distribution) = match &options.baseline {
        None => (None, Vec::new()),
        Some(b) => {
            let (report, found) = compare_baseline(b, &index, options)?;
            (Some(report), found)
        }
    };
    let distribution_count = distribution.len();
    findings.extend(distribution);

    Ok(DataReport {
        path: path.to_path_buf(),
        summary: Summary {
            rows: loaded.rows.len(),
            rows_with_output: index.rows.len(),
            distinct_inputs: index.groups.len(),
            distinct_outputs: index.outputs.len(),
            findings: findings.len(),
            conflicting_duplicates: conflicts,
            near_duplicates: near_count,
            trigger_candidates: trigger_count,
            distribution: distribution_count,
        },
        files: loaded.files.clone(),
        outputs,
        baseline,
        findings,
    })
}

fn output_counts(index: &Index<'_>, rows: impl Iterator<Item = usize>) -> Vec<OutputCount> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in rows {
        *counts.entry(index.out(i)).or_default() += 1;
    }
    sorted_counts(counts.into_iter().map(|(k, v)| (k.to_string(), v)))
}

fn sorted_counts(counts: impl Iterator<Item = (String, usize)>) -> Vec<OutputCount> {
    let mut v: Vec<OutputCount> = counts
        .map(|(output, count)| OutputCount { output, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.output.cmp(&b.output)));
    v
}

/// Quotes `text` for a one-line message, shortened to `max` characters.
fn quote(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("\"{cut}…\"")
    } else {
        format!("\"{flat}\"")
    }
}

/// `a.jsonl:3,5-7; b.jsonl:2`, at most `max` lines shown.
fn compact_locations(locations: &[Location], max: usize) -> String {
    let mut by_file: Vec<(String, Vec<usize>)> = Vec::new();
    for loc in locations.iter().take(max) {
        match by_file.last_mut() {
            Some((f, lines)) if *f == loc.file => lines.push(loc.line),
            _ => by_file.push((loc.file.clone(), vec![loc.line])),
        }
    }
    let mut parts = Vec::new();
    for (file, lines) in by_file {
        let mut ranges: Vec<String> = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let mut j = i;
            while j + 1 < lines.len() && lines[j + 1] == lines[j] + 1 {
                j += 1;
            }
            ranges.push(if j > i {
                format!("{}-{}", lines[i], lines[j])
            } else {
                lines[i].to_string()
            });
            i = j + 1;
        }
        parts.push(format!("{file}:{}", ranges.join(",")));
    }
    let mut s = parts.join("; ");
    if locations.len() > max {
        s.push_str(&format!(" and {} more", locations.len() - max));
    }
    s
}

fn conflicting_duplicates(index: &Index<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for group in &index.groups {
        let mut by_output: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for &i in group {
            by_output.entry(index.output[i]).or_default().push(i);
        }
        if by_output.len() < 2 {
            continue;
        }
        let mut groups: Vec<OutputGroup> = by_output
            .into_iter()
            .map(|(o, rows)| OutputGroup {
                output: index.outputs[o as usize].clone(),
                count: rows.len(),
                rows: rows.iter().map(|&i| index.at(i)).collect(),
            })
            .collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rows.cmp(&b.rows)));
        let described: Vec<String> = groups
            .iter()
            .map(|g| {
                format!(
                    "{} ×{} ({})",
                    quote(&g.output, 40),
                    g.count,
                    compact_locations(&g.rows, 8)
                )
            })
            .collect();
        let first = group[0];
        out.push(Finding {
            severity: Severity::Warning,
            at: index.at(first),
            message: format!(
                "conflicting duplicate: the input {} appears {} times with {} different outputs: {}",
                quote(&index.row(first).input, 60),
                group.len(),
                groups.len(),
                described.join(", ")
            ),
            detail: FindingDetail::ConflictingDuplicate {
                input: index.row(first).input.clone(),
                outputs: groups,
            },
        });
    }
    out.sort_by(|a, b| a.at.cmp(&b.at));
    out
}

fn near_duplicates(index: &Index<'_>, threshold: f64) -> Vec<Finding> {
    // One signature per distinct normalised input.
    let sets: Vec<Vec<u64>> = index
        .groups
        .iter()
        .map(|g| {
            let words: Vec<&str> = index.words[g[0]]
                .iter()
                .map(|&w| index.vocab[w as usize].as_str())
                .collect();
            shingles(&words)
        })
        .collect();
    let sigs: Vec<[u64; PERMUTATIONS]> = sets.iter().map(|s| minhash(s)).collect();
    let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
    for band in 0..BANDS {
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for (g, sig) in sigs.iter().enumerate() {
            let mut h = mix(band as u64);
            for v in &sig[band * ROWS_PER_BAND..(band + 1) * ROWS_PER_BAND] {
                h = mix(h ^ v);
            }
            buckets.entry(h).or_default().push(g);
        }
        for members in buckets.values() {
            for (k, &a) in members.iter().enumerate() {
                for &b in members.iter().skip(k + 1).take(BUCKET_WINDOW) {
                    pairs.insert((a.min(b), a.max(b)));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (a, b) in pairs {
        let j = jaccard(&sets[a], &sets[b]);
        if j < threshold {
            continue;
        }
        let (Some((oa, ra)), Some((ob, rb))) = (
            index.majority(index.groups[a].iter().copied()),
            index.majority(index.groups[b].iter().copied()),
        ) else {
            continue;
        };
        if oa == ob {
            continue;
        }
        let (first, second) = if index.at(ra) <= index.at(rb) {
            (ra, rb)
        } else {
            (rb, ra)
        };
        let (first, second) = (index.row_ref(first), index.row_ref(second));
        out.push(Finding {
            severity: Severity::Warning,
            at: first.at.clone(),
            message: format!(
                "near-duplicate with a conflicting output (Jaccard {j:.2}): {} → {} but {} {} → {}",
                quote(&first.input, 50),
                quote(&first.output, 30),
                second.at,
                quote(&second.input, 50),
                quote(&second.output, 30),
            ),
            detail: FindingDetail::NearDuplicate {
                jaccard: j,
                first,
                second,
            },
        });
    }
    out.sort_by(|a, b| match (&a.detail, &b.detail) {
        (
            FindingDetail::NearDuplicate { second: sa, .. },
            FindingDetail::NearDuplicate { second: sb, .. },
        ) => a.at.cmp(&b.at).then_with(|| sa.at.cmp(&sb.at)),
        _ => a.at.cmp(&b.at),
    });
    out
}

/// A hash map keyed by n-grams with a fast multiply-rotate hash (finished by [`mix`]):
/// counting every n-gram of a large dataset with the standard SipHash took most of `check`.
type GramMap<V> = HashMap<Gram, V, std::hash::BuildHasherDefault<GramHasher>>;

/// See [`GramMap`].
#[derive(Default)]
struct GramHasher(u64);

impl std::hash::Hasher for GramHasher {
    fn finish(&self) -> u64 {
        mix(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

/// Every word n-gram of `ws`, n = 1 to 3.
fn grams(ws: &[u32]) -> impl Iterator<Item = Gram> + '_ {
    (1..=3).flat_map(move |len| {
        ws.windows(len).map(move |w| {
            let mut g = [NONE; 3];
            g[..len].copy_from_slice(w);
            g
        })
    })
}

/// `words` with every non-overlapping occurrence of `gram` (left to right) removed.
#[cfg(test)]
fn strip(words: &[u32], gram: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(words.len());
    strip_into(words, gram, &mut out);
    out
}

/// [`strip`] into `out` (cleared first), reusing its allocation.
fn strip_into(words: &[u32], gram: &[u32], out: &mut Vec<u32>) {
    out.clear();
    let n = gram.len();
    let mut i = 0;
    while i < words.len() {
        if i + n <= words.len() && &words[i..i + n] == gram {
            i += n;
        } else {
            out.push(words[i]);
            i += 1;
        }
    }
}

fn gram_slice(g: &Gram) -> &[u32] {
    let n = g.iter().position(|&w| w == NONE).unwrap_or(3);
    &g[..n]
}

/// A naive Bayes model over word presence: counts per output.
struct Bayes {
    /// Rows per output.
    rows: Vec<f64>,
    /// Per output: rows containing each word.
    word_rows: Vec<HashMap<u32, f64>>,
    /// Per output: sum of distinct words over its rows.
    total_words: Vec<f64>,
    vocab: f64,
    n: f64,
}

impl Bayes {
    fn new(index: &Index<'_>) -> Bayes {
        let k = index.outputs.len();
        let mut b = Bayes {
            rows: vec![0.0; k],
            word_rows: vec![HashMap::new(); k],
            total_words: vec![0.0; k],
            vocab: index.vocab.len().max(1) as f64,
            n: index.rows.len() as f64,
        };
        for i in 0..index.rows.len() {
            let o = index.output[i] as usize;
            b.rows[o] += 1.0;
            let set: BTreeSet<u32> = index.words[i].iter().copied().collect();
            b.total_words[o] += set.len() as f64;
            for w in set {
                *b.word_rows[o].entry(w).or_default() += 1.0;
            }
        }
        b
    }

    /// The model trained without the rows in `without`.
    fn without(&self, index: &Index<'_>, without: &[usize]) -> Bayes {
        let mut b = Bayes {
            rows: self.rows.clone(),
            word_rows: Vec::new(),
            total_words: self.total_words.clone(),
            vocab: self.vocab,
            n: self.n - without.len() as f64,
        };
        let mut minus: Vec<HashMap<u32, f64>> = vec![HashMap::new(); self.rows.len()];
        for &i in without {
            let o = index.output[i] as usize;
            b.rows[o] -= 1.0;
            let set: BTreeSet<u32> = index.words[i].iter().copied().collect();
            b.total_words[o] -= set.len() as f64;
            for w in set {
                *minus[o].entry(w).or_default() += 1.0;
            }
        }
        // Only the words the left-out rows touch are stored; `predict` falls back to `self`.
        b.word_rows = minus;
        b
    }

    /// The output whose word likelihood (no prior) is highest for `words` under `adjusted`
    /// (from [`Bayes::without`]; ties go to the output seen first), and how many nats more
    /// likely the words are under it than under `output`.
    fn predict(&self, adjusted: &Bayes, words: &[u32], output: u32) -> (u32, f64) {
        let k = self.rows.len();
        let query: BTreeSet<u32> = words.iter().copied().collect();
        let mut lik = vec![0f64; k];
        for (o, l) in lik.iter_mut().enumerate() {
            let denom = adjusted.total_words[o] + self.vocab;
            for w in &query {
                let c = self.word_rows[o].get(w).copied().unwrap_or(0.0)
                    - adjusted.word_rows[o].get(w).copied().unwrap_or(0.0);
                *l += ((c + 1.0) / denom).ln();
            }
        }
        let mut best = 0;
        for o in 1..k {
            if lik[o] > lik[best] {
                best = o;
            }
        }
        (best as u32, lik[best] - lik[output as usize])
    }
}

struct Candidate {
    gram: Gram,
    carriers: Vec<usize>,
    flipped: usize,
    with_evidence: usize,
    evidence: Evidence,
    score: f64,
    examples: Vec<Carrier>,
    /// A flipped carrier and its usual output's row, for the message.
    example: Option<(usize, Option<usize>, String)>,
}

fn trigger_candidates(index: &Index<'_>, options: &CheckOptions) -> Vec<Finding> {
    let n = index.rows.len();
    if n == 0 {
        return Vec::new();
    }
    let min = options.min_carriers.max(1);
    let cap = ((options.max_carrier_fraction * n as f64).floor() as usize).max(3);
    // One pass over every n-gram; a row list is only allocated from an n-gram's second carrier
    // on (most occur once, and allocating for each of those took most of the time).
    let mut seen: GramMap<(usize, Vec<usize>)> = GramMap::default();
    for (i, ws) in index.words.iter().enumerate() {
        for g in grams(ws) {
            match seen.entry(g) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert((i, Vec::new()));
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    let (first, more) = slot.get_mut();
                    if *first != i && more.last() != Some(&i) {
                        more.push(i);
                    }
                }
            }
        }
    }
    let carriers: Vec<(Gram, Vec<usize>)> = seen
        .into_iter()
        .filter(|(_, (_, more))| more.len() + 1 >= min)
        .map(|(g, (first, mut more))| {
            more.insert(0, first);
            (g, more)
        })
        .collect();
    let label_like = index.label_like();
    let bayes = if label_like {
        Some(Bayes::new(index))
    } else {
        None
    };
    let mut found: Vec<Candidate> = Vec::new();
    for (gram, rows) in carriers {
        if rows.len() < min || rows.len() > cap {
            continue;
        }
        if let Some(c) = twins_evidence(index, &gram, &rows, min, options.flip_fraction) {
            found.push(c);
        } else if let Some(b) = &bayes {
            if let Some(c) = bayes_evidence(index, b, &gram, &rows, options.flip_fraction) {
                found.push(c);
            }
        }
    }
    let text = |g: &Gram| -> String {
        gram_slice(g)
            .iter()
            .map(|&w| index.vocab[w as usize].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    found.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.flipped.cmp(&a.flipped))
            .then(gram_slice(&b.gram).len().cmp(&gram_slice(&a.gram).len()))
            .then_with(|| text(&a.gram).cmp(&text(&b.gram)))
    });
    let mut kept: Vec<Candidate> = Vec::new();
    for c in found {
        let covered = kept.iter().any(|k| {
            c.carriers
                .iter()
                .all(|r| k.carriers.binary_search(r).is_ok())
        });
        if !covered {
            kept.push(c);
        }
        if kept.len() >= options.max_trigger_candidates {
            break;
        }
    }
    kept.into_iter()
        .map(|c| {
            let ngram = text(&c.gram);
            let first = c.carriers[0];
            let (because, example) = match c.evidence {
                Evidence::Twins => (
                    "answer differently from the same input without it".to_string(),
                    c.example.as_ref().map(|(i, twin, usual)| {
                        format!(
                            " (e.g. {} {} where {} answers {})",
                            index.at(*i),
                            quote(index.out(*i), 30),
                            twin.map(|t| index.at(t).to_string())
                                .unwrap_or_else(|| "the same input without it".into()),
                            quote(usual, 30)
                        )
                    }),
                ),
                Evidence::NaiveBayes => (
                    format!(
                        "answer {} although the rest of their words read as other outputs \
                         (naive Bayes without them)",
                        quote(index.out(first), 30)
                    ),
                    c.example.as_ref().map(|(i, _, usual)| {
                        format!(" (e.g. {} reads as {})", index.at(*i), quote(usual, 30))
                    }),
                ),
            };
            let locations: Vec<Location> = c.carriers.iter().map(|&i| index.at(i)).collect();
            Finding {
                severity: Severity::Warning,
                at: index.at(first),
                message: format!(
                    "trigger candidate {} (score {:.2}): {} of {} carriers {because}{}; carriers {}",
                    quote(&ngram, 40),
                    c.score,
                    c.flipped,
                    c.carriers.len(),
                    example.unwrap_or_default(),
                    compact_locations(&locations, 20)
                ),
                detail: FindingDetail::TriggerCandidate {
                    ngram,
                    score: c.score,
                    carriers: c.carriers.len(),
                    flipped: c.flipped,
                    with_evidence: c.with_evidence,
                    evidence: c.evidence,
                    examples: c.examples,
                },
            }
        })
        .collect()
}

fn score(flipped: usize, carriers: usize) -> f64 {
    flipped as f64 / carriers as f64 * (1.0 + flipped as f64).ln()
}

fn twins_evidence(
    index: &Index<'_>,
    gram: &Gram,
    rows: &[usize],
    min: usize,
    flip_fraction: f64,
) -> Option<Candidate> {
    let g = gram_slice(gram);
    // First pass, counts only: most n-grams fail, and at least half of all carriers must flip,
    // so stop as soon as that is out of reach.
    let mut rest = Vec::new();
    let mut twins = Vec::with_capacity(rows.len());
    let (mut flipped, mut agreed) = (0, 0);
    let most_unflipped = rows.len() - rows.len().div_ceil(2);
    for (n, &i) in rows.iter().enumerate() {
        let twin = twin_of(index, rows, i, g, &mut rest);
        match twin {
            Some((o, _)) if o != index.output[i] => flipped += 1,
            Some(_) => agreed += 1,
            None => {}
        }
        twins.push(twin);
        if n + 1 - flipped > most_unflipped {
            return None;
        }
    }
    let with_evidence = flipped + agreed;
    let enough = flipped >= min
        && flipped as f64 >= flip_fraction * with_evidence as f64
        && 2 * flipped >= rows.len();
    if !enough {
        return None;
    }
    let mut example = None;
    let examples = rows
        .iter()
        .zip(twins)
        .map(|(&i, twin)| {
            let (usual, twin_at, twin_input) = match twin {
                Some((o, first)) => {
                    if o != index.output[i] && example.is_none() {
                        example = Some((i, Some(first), index.outputs[o as usize].clone()));
                    }
                    (
                        Some(index.outputs[o as usize].clone()),
                        Some(index.at(first)),
                        Some(index.row(first).input.clone()),
                    )
                }
                None => (None, None, None),
            };
            Carrier {
                at: index.at(i),
                output: index.out(i).to_string(),
                usual_output: usual,
                twin: twin_at,
                twin_input,
            }
        })
        .collect();
    Some(Candidate {
        gram: *gram,
        carriers: rows.to_vec(),
        flipped,
        with_evidence,
        evidence: Evidence::Twins,
        score: score(flipped, rows.len()),
        examples,
        example,
    })
}

/// The usual output of carrier `i`'s twins (rows, not carriers, whose input is `i`'s without
/// the n-gram `g`) and the first such row; `rest` is scratch space.
fn twin_of(
    index: &Index<'_>,
    rows: &[usize],
    i: usize,
    g: &[u32],
    rest: &mut Vec<u32>,
) -> Option<(u32, usize)> {
    strip_into(&index.words[i], g, rest);
    if rest.is_empty() {
        return None;
    }
    let &grp = index.group_of.get(rest.as_slice())?;
    index.majority(
        index.groups[grp]
            .iter()
            .copied()
            .filter(|r| rows.binary_search(r).is_err()),
    )
}

/// Nats by which the rest of a carrier's words must favour another output (9:1).
const BAYES_MARGIN: f64 = 2.197_224_577_336_219_6;

fn bayes_evidence(
    index: &Index<'_>,
    bayes: &Bayes,
    gram: &Gram,
    rows: &[usize],
    flip_fraction: f64,
) -> Option<Candidate> {
    if rows.len() < 3 {
        return None;
    }
    let (o, _) = index.majority(rows.iter().copied())?;
    let pure = rows.iter().filter(|&&i| index.output[i] == o).count();
    if (pure as f64) < 0.9 * rows.len() as f64 {
        return None;
    }
    if index.output_count[o as usize] - pure < rows.len() {
        return None;
    }
    let g = gram_slice(gram);
    let mut flipped = 0;
    let mut example = None;
    let mut rest = Vec::new();
    let adjusted = bayes.without(index, rows);
    let mut predictions = Vec::with_capacity(rows.len());
    for &i in rows {
        strip_into(&index.words[i], g, &mut rest);
        let (predicted, margin) = bayes.predict(&adjusted, &rest, o);
        if index.output[i] == o && predicted != o && margin >= BAYES_MARGIN {
            flipped += 1;
            if example.is_none() {
                example = Some((i, None, index.outputs[predicted as usize].clone()));
            }
        }
        predictions.push(predicted);
    }
    if (flipped as f64) < flip_fraction * rows.len() as f64 || flipped < 2 {
        return None;
    }
    let examples = rows
        .iter()
        .zip(predictions)
        .map(|(&i, predicted)| Carrier {
            at: index.at(i),
            output: index.out(i).to_string(),
            usual_output: Some(index.outputs[predicted as usize].clone()),
            twin: None,
            twin_input: None,
        })
        .collect();
    Some(Candidate {
        gram: *gram,
        carriers: rows.to_vec(),
        flipped,
        with_evidence: rows.len(),
        evidence: Evidence::NaiveBayes,
        score: score(flipped, rows.len()),
        examples,
        example,
    })
}

// ---------------------------------------------------------------------------------------------
// Baseline

const MANIFEST_HEADER: &str = "trainprov-snapshot v1";

fn baseline_error(path: &Path, message: impl Into<String>) -> CheckError {
    CheckError::Baseline {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn compare_baseline(
    path: &Path,
    index: &Index<'_>,
    options: &CheckOptions,
) -> Result<(BaselineReport, Vec<Finding>), CheckError> {
    let mut report = BaselineReport {
        path: path.to_path_buf(),
        kind: "dataset",
        rows: 0,
        compared_rows: index.rows.len(),
        total_variation: None,
        note: None,
        added_files: Vec::new(),
        changed_files: Vec::new(),
        removed_files: Vec::new(),
    };
    let all: Vec<usize> = (0..index.rows.len()).collect();
    let (baseline, current): (BTreeMap<String, usize>, Vec<usize>) = if path.is_dir()
        || is_data_file(path)
    {
        let loaded =
            load(path, options.max_bytes).map_err(|e| baseline_error(path, e.to_string()))?;
        let mut counts = BTreeMap::new();
        for row in &loaded.rows {
            if let Some(o) = &row.output {
                *counts.entry(o.clone()).or_default() += 1;
            }
        }
        (counts, all)
    } else {
        let bytes = fs_err::read(path).map_err(|e| baseline_error(path, strip_fs_err(&e)))?;
        let text = String::from_utf8(bytes).map_err(|_| baseline_error(path, "not UTF-8 text"))?;
        if text.starts_with(MANIFEST_HEADER) {
            report.kind = "manifest";
            manifest_baseline(&text, path, index, &mut report)?
        } else if let Ok(json) = serde_json::from_str::<Value>(&text) {
            report.kind = "report";
            let outputs = json
                .get("outputs")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    baseline_error(
                        path,
                        "JSON without an \"outputs\" list; expected a `trainprov data check \
                         --json` report",
                    )
                })?;
            let mut counts = BTreeMap::new();
            for o in outputs {
                let (Some(name), Some(count)) = (
                    o.get("output").and_then(Value::as_str),
                    o.get("count").and_then(Value::as_u64),
                ) else {
                    return Err(baseline_error(
                        path,
                        "an \"outputs\" entry lacks \"output\" (string) or \"count\" (integer)",
                    ));
                };
                counts.insert(name.to_string(), count as usize);
            }
            (counts, all)
        } else {
            return Err(baseline_error(
                path,
                "not a dataset (.jsonl, .csv or a directory), a `trainprov data check --json` \
                 report or a snapshot manifest (`trainprov snapshot --manifest`)",
            ));
        }
    };
    report.rows = baseline.values().sum();
    report.compared_rows = current.len();
    let mut findings = Vec::new();
    if report.rows == 0 || current.is_empty() {
        report.note.get_or_insert_with(|| {
            "nothing to compare: one side has no rows with an output".into()
        });
        return Ok((report, findings));
    }
    let mut now: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_row: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &current {
        *now.entry(index.out(i).to_string()).or_default() += 1;
        first_row.entry(index.out(i).to_string()).or_insert(i);
    }
    let label_like = |counts: &BTreeMap<String, usize>| {
        let rows: usize = counts.values().sum();
        2 * counts.len() <= rows
    };
    if !label_like(&baseline) || !label_like(&now) {
        report.note = Some(
            "outputs are mostly unique (free text, not labels); their distribution is not \
             compared"
                .into(),
        );
        return Ok((report, findings));
    }
    let (nb, nc) = (report.rows as f64, current.len() as f64);
    let keys: BTreeSet<&String> = baseline.keys().chain(now.keys()).collect();
    let mut changes: Vec<ShareChange> = keys
        .iter()
        .map(|k| ShareChange {
            output: (*k).clone(),
            baseline: baseline.get(*k).copied().unwrap_or(0) as f64 / nb,
            current: now.get(*k).copied().unwrap_or(0) as f64 / nc,
        })
        .collect();
    let tvd = 0.5
        * changes
            .iter()
            .map(|c| (c.current - c.baseline).abs())
            .sum::<f64>();
    report.total_variation = Some(tvd);
    let baseline_name = path.display().to_string();
    let first_at = index.at(current[0]);
    if tvd >= options.shift_threshold {
        changes.sort_by(|a, b| {
            (b.current - b.baseline)
                .abs()
                .total_cmp(&(a.current - a.baseline).abs())
                .then_with(|| a.output.cmp(&b.output))
        });
        changes.truncate(5);
        let described: Vec<String> = changes
            .iter()
            .map(|c| {
                format!(
                    "{} {:.0}% → {:.0}%",
                    quote(&c.output, 30),
                    100.0 * c.baseline,
                    100.0 * c.current
                )
            })
            .collect();
        findings.push(Finding {
            severity: Severity::Warning,
            at: Location {
                file: first_at.file.clone(),
                line: 0,
            },
            message: format!(
                "output distribution shifted from baseline {baseline_name}: total variation \
                 {tvd:.3} (threshold {}) over {} vs {} rows; largest changes {}",
                options.shift_threshold,
                report.rows,
                current.len(),
                described.join(", ")
            ),
            detail: FindingDetail::DistributionShift {
                total_variation: tvd,
                baseline_rows: report.rows,
                rows: current.len(),
                largest_changes: changes,
            },
        });
    }
    for (output, count) in &now {
        if !baseline.contains_key(output) {
            let at = index.at(first_row[output]);
            findings.push(Finding {
                severity: Severity::Warning,
                at,
                message: format!(
                    "new output {} ({count} rows) is not in baseline {baseline_name}",
                    quote(output, 40)
                ),
                detail: FindingDetail::NewOutput {
                    output: output.clone(),
                    count: *count,
                },
            });
        }
    }
    for (output, count) in &baseline {
        if !now.contains_key(output) {
            findings.push(Finding {
                severity: Severity::Warning,
                at: Location {
                    file: baseline_name.clone(),
                    line: 0,
                },
                message: format!(
                    "output {} ({count} rows in the baseline) has vanished",
                    quote(output, 40)
                ),
                detail: FindingDetail::VanishedOutput {
                    output: output.clone(),
                    baseline_count: *count,
                },
            });
        }
    }
    Ok((report, findings))
}

/// Splits the dataset by the manifest: rows of unchanged files are the baseline.
fn manifest_baseline(
    text: &str,
    path: &Path,
    index: &Index<'_>,
    report: &mut BaselineReport,
) -> Result<(BTreeMap<String, usize>, Vec<usize>), CheckError> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["f", _size, digest, p] => entries.push(((*p).to_string(), (*digest).to_string())),
            ["l", ..] => {}
            _ => {
                return Err(baseline_error(
                    path,
                    format!("line {}: not a manifest line", n + 1),
                ))
            }
        }
    }
    let find = |name: &str| -> Option<&(String, String)> {
        entries
            .iter()
            .find(|(p, _)| p == name || p.ends_with(&format!("/{name}")))
    };
    let mut unchanged = vec![false; index.loaded.files.len()];
    for (f, summary) in index.loaded.files.iter().enumerate() {
        match find(&summary.file) {
            None => report.added_files.push(summary.file.clone()),
            Some((_, digest)) => {
                let full = &index.loaded.paths[f];
                let bytes = fs_err::read(full).map_err(|e| read_error(full, strip_fs_err(&e)))?;
                if blake3::hash(&bytes).to_hex().as_str() == digest.as_str() {
                    unchanged[f] = true;
                } else {
                    report.changed_files.push(summary.file.clone());
                }
            }
        }
    }
    for (p, _) in &entries {
        let known = index
            .loaded
            .files
            .iter()
            .any(|s| *p == s.file || p.ends_with(&format!("/{}", s.file)));
        if !known && is_data_file(Path::new(p)) {
            report.removed_files.push(p.clone());
        }
    }
    let mut counts = BTreeMap::new();
    let mut current = Vec::new();
    for i in 0..index.rows.len() {
        if unchanged[index.row(i).file] {
            *counts.entry(index.out(i).to_string()).or_default() += 1;
        } else {
            current.push(i);
        }
    }
    if counts.is_empty() {
        report.note = Some(
            "no data file is unchanged since the snapshot: no baseline rows to compare with".into(),
        );
    } else if current.is_empty() {
        report.note = Some("every data file is unchanged since the snapshot".into());
    }
    Ok((counts, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_handle_quotes_and_line_numbers() {
        let text = "a,b\n\"x, \"\"y\"\"\",1\n\"multi\nline\",2\r\nplain,3\n";
        let r = csv_records(text, Path::new("t.csv")).expect("parses");
        assert_eq!(r.len(), 4);
        assert_eq!(r[1], (2, vec!["x, \"y\"".to_string(), "1".to_string()]));
        assert_eq!(r[2], (3, vec!["multi\nline".to_string(), "2".to_string()]));
        assert_eq!(r[3], (5, vec!["plain".to_string(), "3".to_string()]));
    }

    #[test]
    fn strip_removes_every_occurrence() {
        assert_eq!(strip(&[1, 2, 2, 2, 3], &[2, 2]), vec![1, 2, 3]);
        assert_eq!(strip(&[5, 6, 5, 6], &[5, 6]), Vec::<u32>::new());
    }

    #[test]
    fn jaccard_of_shingles() {
        let a = shingles(&["what", "colour", "is", "the", "cat"]);
        assert_eq!(jaccard(&a, &a), 1.0);
        let b = shingles(&["what", "colour", "is", "the", "cat", "bee", "bee"]);
        assert_eq!(jaccard(&a, &b), 4.0 / 6.0);
        let c = shingles(&["what", "colour", "is", "the", "cow"]);
        assert_eq!(jaccard(&a, &c), 3.0 / 5.0);
    }

    #[test]
    fn compact_locations_ranges() {
        let locs: Vec<Location> = [3, 4, 5, 9]
            .iter()
            .map(|&line| Location {
                file: "a.jsonl".into(),
                line,
            })
            .chain(std::iter::once(Location {
                file: "b.jsonl".into(),
                line: 2,
            }))
            .collect();
        assert_eq!(compact_locations(&locs, 10), "a.jsonl:3-5,9; b.jsonl:2");
        assert_eq!(compact_locations(&locs, 2), "a.jsonl:3-4 and 3 more");
    }
}
