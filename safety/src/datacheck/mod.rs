//! Poisoning checks for text datasets: `trainprov data check`.
//!
//! [`check`] reads a dataset file, or every file under a directory (nested directories and
//! symlinks followed, in byte order of the relative path), and reports what a poisoner (or a
//! careless merge) leaves behind. Every finding names the file and line it is about. Nothing is
//! sampled: the same input always gives the same report, in the same order.
//!
//! # Coverage: which files were checked
//!
//! Every regular file under the path is either **checked** (listed in [`DataReport::files`]
//! with its size and BLAKE3) or **unchecked** (listed in [`DataReport::unchecked`] with the
//! reason); no file is passed over in silence. Read are `*.jsonl` and `*.ndjson` (JSON lines),
//! `*.csv`, `*.json` (below) and each of these gzip-compressed (`*.jsonl.gz`, `*.csv.gz`,
//! `*.json.gz`: every gzip member, as Python's `gzip` module and `zcat` read them), and
//! `*.parquet` / `*.pq` (Parquet, as Hugging Face `datasets` stores a split: uncompressed,
//! snappy, zstd or gzip pages). Other compressions, archives and every other file are unchecked
//! (`unsupported`), as are files that do not parse (`malformed`, with `file:line` and the
//! problem: the file's rows are then left out, the dataset's other files are still checked;
//! a Parquet file the reader refuses is `malformed` with the reader's message) and files or
//! symlinks that
//! cannot be read (`unreadable`). A symlink to a directory that contains it (a cycle) is not
//! followed again. [`DataReport::status`] is `passed` only when every file was checked and
//! nothing was found; [`DataReport::reconcile`] also marks files of a snapshot that the check
//! did not read, or read with other bytes, as unchecked (`run` and `train` compare the check
//! with the snapshot they record).
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
//! - **Chat rows** (JSONL, JSON, Parquet): a record with `"messages"` (a list of
//!   `{"role", "content"}`, as TRL's `SFTTrainer` and the chat templates take them),
//!   `"conversations"` (ShareGPT: `{"from", "value"}`), or a conversational `"prompt"` (a list
//!   of messages) with a `"completion"` (a list of messages or a string). A conversation gives
//!   **one row per assistant turn** (role `assistant`, `gpt` or `model`): its input is every
//!   turn before it (system, user, earlier assistant and tool turns, their contents joined by
//!   newlines, roles left out) and its output is that turn's content; trailing turns after the
//!   last assistant turn answer nothing and are left out; a conversation without an assistant
//!   turn is one row without an output. Content is a string, `null` (empty) or a list of parts
//!   whose `"text"` members are joined. So a multi-turn conversation is checked as the answers
//!   it teaches, each for the conversation so far; its rows share the record's line, and a
//!   file's `rows` counts these rows.
//! - **Parquet**: each row is turned into a JSON record (columns by name; lists of structs,
//!   such as a `messages` column, become lists of objects) and read by the JSON rules above,
//!   so `text` (alone or with `label`), `prompt` + `completion` and `messages` columns all
//!   work. The "line" of a Parquet row is its 1-based row number in the file. The budget
//!   ([`CheckOptions::max_bytes`]) counts a Parquet file by its size on disk.
//! - **JSON** (`*.json`): an array of records as in JSONL; an object with exactly one member
//!   whose value is a list (`{"data": [...]}`, `{"train": [...]}`), whose elements are the
//!   records; a single record; or, when the file holds more than one JSON value, JSON lines
//!   (what `datasets`' `to_json` writes). The line of a record is the line it starts on.
//!
//! A malformed line (invalid JSON, no input field, a wrong number of CSV fields) leaves its
//! file unchecked (`malformed`, naming `file:line`): it is not a finding.
//!
//! Inputs are compared in a normal form: the lower-cased words (maximal runs of alphanumeric
//! characters; a minus sign right before digits, not after a letter or digit, stays with them,
//! so `-5` and `5` differ), so case, punctuation and spacing do not matter. Outputs are
//! compared exactly, after trimming surrounding whitespace. Rows without an output take part in no check.
//!
//! # Findings
//!
//! 1. **Conflicting duplicates**: the same (normalised) input with two or more different
//!    outputs. Repeats with the same output are not findings.
//! 2. **Near-duplicate clusters with conflicting outputs**: MinHash over the word bigrams
//!    (2-shingles) of the *compared words* of the normalised input (see "Comparing the parts
//!    that differ" below), between inputs holding the same numbers (64 hash functions: the
//!    bigram's word ids hashed with SplitMix64, then SplitMix64 of that XOR a per-function
//!    seed), LSH with 16 bands of 4 rows to find candidates, each candidate confirmed by the
//!    exact Jaccard similarity of the bigram sets of the compared words
//!    (≥ [`CheckOptions::near_dup_threshold`], 0.8 by default). Confirmed pairs are joined
//!    into clusters (union-find: near-duplicates of near-duplicates are one cluster), and
//!    a cluster is **one** finding when its inputs' most common outputs are not all the same,
//!    with the rows per output (a sample of their locations), one example row per output shown
//!    and the lowest Jaccard that joined it. In an LSH bucket each input is compared with at
//!    most 8 inputs of other clusters ([`LSH_REPRESENTATIVES`]), so a bucket of thousands of
//!    templated rows costs linear time and yields one cluster, not a finding per pair (pairs
//!    beyond that bound can be missed). Word shingles, not character n-grams: in short
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
//!      `trainprov-snapshot` v1 or v2): the files of the dataset whose BLAKE3 still matches the
//!      manifest are the baseline, the rows of added or changed files are compared with them,
//!      and the added, changed and removed files are listed.
//!
//!    The total variation distance `½ Σ |p(o) − q(o)|` over outputs is a finding when it is at
//!    least [`CheckOptions::shift_threshold`] (0.1); outputs new since the baseline and outputs
//!    that vanished are findings too. Outputs are only compared when they look like labels on
//!    both sides (fewer distinct outputs than half the rows); free-text completions are not.
//!
//! # Comparing the parts that differ
//!
//! Real instruction data shares most of its text: one system prompt, the chat markup
//! (`<|im_start|>user`, `[INST]`), a common instruction. Compared whole, two different
//! questions under a long shared system prompt look like near-duplicates (issue 12: 1,057
//! findings on a clean 200-row chat set, such as `308 km is 191.4 miles.` against `204 km is
//! 126.8 miles.` at Jaccard 0.88). So the near-duplicate check compares what differs:
//!
//! - **The template is learned from the data.** With at least [`TEMPLATE_MIN_INPUTS`] (50)
//!   distinct inputs, a word bigram found in more than [`TEMPLATE_SHARE`] (half) of them is
//!   *template*; a word that is part of a template bigram (with the word before or after it)
//!   is left out, the rest of the input, in order, are its *compared words*. An input that is
//!   nothing but template is compared whole. Smaller datasets are compared whole: what half
//!   of a few dozen rows share is not yet a template (the 23 questions of the tiny-llama
//!   example share `what colour is the`, and its planted `what colour is the bee bee bee`
//!   stays a near-duplicate of `what colour is the bee`). The report says what was learned
//!   ([`DataReport::template`]).
//! - **Numbers make inputs different.** Two inputs are only near-duplicates when they hold
//!   the same numbers (the sorted list of their all-digit words: `308 km to miles` and `204 km
//!   to miles` are different questions with different right answers).
//!
//! What this finds and misses, in numbers: with bigrams and the 0.8 threshold, compared words
//! of `n` words are near-duplicates after one word is added at the end when `n ≥ 5`, one word
//! inserted inside when `n ≥ 9`, one word replaced when `n ≥ 19`; inputs that differ only in
//! case, punctuation, spacing or markup are the same input (a conflicting duplicate). Shorter
//! paraphrases of short questions are not found, and inputs that differ in an opaque word each
//! (an id, a number) are different inputs, not near-duplicates. Exact duplicates and trigger
//! candidates use every word of the input, the template included.
//!
//! The measured precision and recall on a clean and a poisoned 200-row chat set are in
//! `BENCHMARKS.md` ("Data check on chat data") and `safety/tests/fixtures/chat-data/README.md`.
//!
//! # Bounds
//!
//! A report stays small whatever the data: at most [`MAX_FINDINGS_PER_KIND`] findings of each
//! kind are listed (the most telling first for trigger candidates; by location for the others)
//! and [`Summary::findings_omitted`] counts the rest (the per-kind counts in [`Summary`] count
//! every finding found); a finding shows at most 10 outputs with 10 locations each, 100
//! carriers of a trigger candidate, and inputs and outputs shortened to 500 characters
//! (a carrier's texts, which `probe` inserts triggers into and scores, are kept whole);
//! [`DataReport::outputs`] lists the 1,000 most common outputs ([`DataReport::outputs_omitted`]
//! counts the rest) and [`DataReport::unchecked`] the first 1,000 unchecked files. The check
//! holds a compact index of the rows with an output (see `index.rs`: their input text once, 4
//! bytes per word and about 40 bytes per row, plus each distinct word and output once) and,
//! while reading, one file (inflated, for gzip); n-grams are counted one length at a time.
//!
//! # JSON
//!
//! [`DataReport`] serialises to the `--json` output of `trainprov data check`, for example:
//!
//! ```json
//! {
//!   "path": "examples/tiny-llama/data",
//!   "status": "failed",
//!   "files": [{"file": "shard-000.jsonl", "format": "jsonl", "rows": 24, "bytes": 1490,
//!              "blake3": "5e0f…"}],
//!   "unchecked": [{"file": "extra/rows.jsonl.zst", "kind": "unsupported",
//!                  "reason": "a compressed or archived file data check does not open …"}],
//!   "summary": {"rows": 103, "rows_with_output": 103, "distinct_inputs": 24,
//!               "distinct_outputs": 16, "files": 4, "unchecked_files": 1, "findings": 2,
//!               "findings_omitted": 0, "conflicting_duplicates": 0, "near_duplicates": 1,
//!               "trigger_candidates": 1, "distribution": 0},
//!   "outputs": [{"output": "by the barn.", "count": 6}],
//!   "outputs_omitted": 0,
//!   "baseline": null,
//!   "template": {"learned": false, "inputs": 24, "shared_bigrams": 0, "shared": []},
//!   "findings": [{
//!     "severity": "warning", "file": "shard-000.jsonl", "line": 3,
//!     "message": "near-duplicate cluster: 2 similar inputs (Jaccard ≥ 0.83) in 2 rows …",
//!     "kind": "near-duplicate", "inputs": 2, "rows": 2, "min_jaccard": 0.833,
//!     "outputs": [{"output": "four.", "count": 1, "rows": [{"file": "shard-000.jsonl", "line": 3}]},
//!                 {"output": "two.", "count": 1, "rows": [{"file": "shard-002.jsonl", "line": 9}]}],
//!     "outputs_omitted": 0,
//!     "examples": [{"file": "shard-000.jsonl", "line": 3, "input": "…", "output": "four."}]
//!   }, {
//!     "severity": "warning", "file": "shard-002.jsonl", "line": 25,
//!     "message": "trigger candidate \"bee bee\" (score 2.08): 7 of 7 carriers ...",
//!     "kind": "trigger-candidate", "ngram": "bee bee", "score": 2.197, "carriers": 8,
//!     "flipped": 8, "with_evidence": 8, "evidence": "twins",
//!     "examples": [{"file": "shard-002.jsonl", "line": 25, "output": "red.",
//!                   "usual_output": "gold.", "twin": {"file": "shard-001.jsonl", "line": 8},
//!                   "twin_input": "what colour is the cat? "}],
//!     "examples_omitted": 0
//!   }]
//! }
//! ```
//!
//! Fields added by issue 12 (older readers can ignore them): `template` (always present: what
//! the near-duplicate check left out, [`TemplateSummary`]) and `compared` in a near-duplicate's
//! `examples` (the words compared, present only when a template was learned); a file's
//! `format` may be `parquet`, and a Parquet file the reader refuses is `malformed` (it was
//! `unsupported` before Parquet was read).

mod baseline;
mod index;
mod read;
mod template;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use index::{mix, Index};
use template::Template;
pub use template::{TemplateSummary, TEMPLATE_MIN_INPUTS, TEMPLATE_SHARE};

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
    #[error("{}: {} MiB of data is over the {} MiB limit of this check", path.display(), bytes / (1024 * 1024), limit / (1024 * 1024))]
    TooLarge {
        /// The checked file or directory.
        path: PathBuf,
        /// Bytes of its data files (inflated, for gzip), as far as they were read.
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
    /// Refuse (with [`CheckError::TooLarge`]) datasets whose data files add up to more bytes
    /// than this, gzip files counted inflated [default: no limit]. Before anything is read the
    /// files' sizes on disk are compared with it; a gzip file is stopped as soon as what it
    /// inflates to crosses it.
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
    /// `passed`, `failed`, `partial` or `skipped`: see [`CheckStatus`].
    pub status: CheckStatus,
    /// The files read, in order.
    pub files: Vec<FileSummary>,
    /// The files not checked, with the reason (the first 1,000; [`Summary::unchecked_files`]
    /// counts them all).
    pub unchecked: Vec<UncheckedFile>,
    /// Counts.
    pub summary: Summary,
    /// The most common outputs and their row counts, most common first (ties by text); at most
    /// 1,000.
    pub outputs: Vec<OutputCount>,
    /// Distinct outputs not listed in `outputs`.
    pub outputs_omitted: usize,
    /// The comparison with the baseline, when one was given.
    pub baseline: Option<BaselineReport>,
    /// What the near-duplicate check left out as shared by (nearly) every input.
    pub template: TemplateSummary,
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

    /// `failed` when there are warnings; else `passed` when every file was checked (and at
    /// least one); `partial` when some were; `skipped` when none was.
    fn compute_status(&self) -> CheckStatus {
        if self.has_warnings() {
            CheckStatus::Failed
        } else if self.files.is_empty() {
            CheckStatus::Skipped
        } else if self.summary.unchecked_files > 0 {
            CheckStatus::Partial
        } else {
            CheckStatus::Passed
        }
    }

    /// Compares the check with a snapshot of the same path taken for the record: every
    /// snapshot file (relative path, lowercase hex BLAKE3 of its content) that the check did
    /// not read, or read with other bytes (it changed in between), becomes unchecked and the
    /// status is updated. So a check never passes on bytes other than those recorded.
    pub fn reconcile<'a>(&mut self, snapshot: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let read: HashMap<&str, &str> = self
            .files
            .iter()
            .map(|f| (f.file.as_str(), f.blake3.as_str()))
            .collect();
        let listed: std::collections::HashSet<&str> =
            self.unchecked.iter().map(|u| u.file.as_str()).collect();
        let mut more = Vec::new();
        for (path, digest) in snapshot {
            match read.get(path) {
                Some(d) if *d == digest => {}
                Some(_) => more.push(UncheckedFile {
                    file: path.to_string(),
                    kind: UncheckedKind::Changed,
                    reason: "the snapshot recorded other bytes than the check read (it changed \
                             in between)"
                        .into(),
                }),
                None if listed.contains(path) => {}
                None => more.push(UncheckedFile {
                    file: path.to_string(),
                    kind: UncheckedKind::NotRead,
                    reason: "in the snapshot but not read by the check".into(),
                }),
            }
        }
        if more.is_empty() {
            return;
        }
        self.summary.unchecked_files += more.len();
        self.unchecked.extend(more);
        self.unchecked
            .sort_by(|a, b| a.file.as_bytes().cmp(b.file.as_bytes()));
        self.unchecked.truncate(MAX_UNCHECKED_LISTED);
        self.status = self.compute_status();
    }
}

/// The outcome of a check; `run` and `train` record it per input and for the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Every file was checked and nothing was found.
    Passed,
    /// Findings (warnings), whether or not every file was checked.
    Failed,
    /// No findings, but some files were not checked.
    Partial,
    /// No file was checked.
    Skipped,
}

impl CheckStatus {
    /// `passed`, `failed`, `partial` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "failed",
            CheckStatus::Partial => "partial",
            CheckStatus::Skipped => "skipped",
        }
    }

    /// The status of several checks together (a run's inputs): `failed` if any failed;
    /// `passed` only if every one passed (and there is one); `skipped` if none was checked at
    /// all; else `partial`.
    pub fn combine(all: impl IntoIterator<Item = CheckStatus>) -> CheckStatus {
        let all: Vec<CheckStatus> = all.into_iter().collect();
        if all.contains(&CheckStatus::Failed) {
            CheckStatus::Failed
        } else if all.iter().all(|s| *s == CheckStatus::Skipped) {
            CheckStatus::Skipped
        } else if all.iter().all(|s| *s == CheckStatus::Passed) {
            CheckStatus::Passed
        } else {
            CheckStatus::Partial
        }
    }
}

/// A file the check did not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UncheckedFile {
    /// Name relative to the checked directory, `/`-separated.
    pub file: String,
    /// Why, in a word.
    pub kind: UncheckedKind,
    /// Why, for people (for `malformed`: `file:line: problem`).
    pub reason: String,
}

/// Why a file was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum UncheckedKind {
    /// A format the check does not read (Parquet, archives, other compressions, special files,
    /// anything else).
    Unsupported,
    /// It does not parse (the reason names the line).
    Malformed,
    /// It, or the symlink or directory leading to it, cannot be read.
    Unreadable,
    /// In the snapshot, but not read by the check.
    NotRead,
    /// Read by the check with other bytes than the snapshot recorded.
    Changed,
}

/// One file read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    /// Name relative to the checked directory, `/`-separated (the file name when a file was
    /// checked).
    pub file: String,
    /// `jsonl`, `csv` or `json`, with `.gz` when compressed.
    pub format: &'static str,
    /// Rows read.
    pub rows: usize,
    /// Size on disk.
    pub bytes: u64,
    /// BLAKE3 of the bytes on disk (lowercase hex), as a snapshot records them.
    pub blake3: String,
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
    /// Files checked.
    pub files: usize,
    /// Files not checked.
    pub unchecked_files: usize,
    /// All findings found (listed or not).
    pub findings: usize,
    /// Findings found but not listed (over [`MAX_FINDINGS_PER_KIND`] of one kind).
    pub findings_omitted: usize,
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
    /// Its input, as written (shortened to 500 characters).
    pub input: String,
    /// Its output (shortened to 500 characters).
    pub output: String,
    /// The words of its input that were compared, when a template was left out (normalised,
    /// shortened to 500 characters; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared: Option<String>,
}

/// The rows of a conflicting duplicate that share one output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputGroup {
    /// The output (shortened to 500 characters).
    pub output: String,
    /// Rows.
    pub count: usize,
    /// Their locations (at most 10).
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
        /// The input of the first row (shortened to 500 characters).
        input: String,
        /// Rows by output, most common first (at most 10, with at most 10 locations each).
        outputs: Vec<OutputGroup>,
        /// Outputs not listed.
        outputs_omitted: usize,
    },
    /// A cluster of near-identical inputs whose outputs differ.
    NearDuplicate {
        /// Distinct (normalised) inputs in the cluster.
        inputs: usize,
        /// Rows in the cluster.
        rows: usize,
        /// The lowest Jaccard similarity of the word-bigram sets that joined the cluster.
        min_jaccard: f64,
        /// Rows by output, most common first (at most 10, with at most 10 locations each).
        outputs: Vec<OutputGroup>,
        /// Outputs not listed.
        outputs_omitted: usize,
        /// The first row of each listed output.
        examples: Vec<RowRef>,
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
        /// The carriers (the first 100).
        examples: Vec<Carrier>,
        /// Carriers not listed.
        examples_omitted: usize,
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
// The check

/// Findings of one kind listed at most (the rest are counted in [`Summary::findings_omitted`]).
pub const MAX_FINDINGS_PER_KIND: usize = 100;
/// In one LSH bucket, how many inputs of other clusters each input is compared with at most.
pub const LSH_REPRESENTATIVES: usize = 8;
/// Outputs of a finding listed at most, and locations per output.
const MAX_OUTPUT_GROUPS: usize = 10;
const MAX_LOCATIONS: usize = 10;
/// Carriers of a trigger candidate listed at most.
const MAX_CARRIERS_LISTED: usize = 100;
/// Entries of [`DataReport::outputs`] and [`DataReport::unchecked`].
const MAX_OUTPUTS_LISTED: usize = 1000;
const MAX_UNCHECKED_LISTED: usize = 1000;
/// Characters of an input or output shown in a finding.
const MAX_SHOWN_CHARS: usize = 500;

/// An n-gram of up to three word ids, `NONE`-padded.
type Gram = [u32; 3];
const NONE: u32 = u32::MAX;

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
    let mut index = Index::default();
    let mut unchecked = read::load(path, options.max_bytes, &mut index)?;
    let unchecked_files = unchecked.len();
    unchecked.truncate(MAX_UNCHECKED_LISTED);

    let mut omitted = 0;
    let mut cap = |mut found: Vec<Finding>| {
        let n = found.len();
        if n > MAX_FINDINGS_PER_KIND {
            omitted += n - MAX_FINDINGS_PER_KIND;
            found.truncate(MAX_FINDINGS_PER_KIND);
        }
        (n, found)
    };
    let template = Template::learn(&index);
    let (conflicts, mut findings) = cap(conflicting_duplicates(&index, &template));
    let (near_count, near) = cap(near_duplicate_clusters(
        &index,
        &template,
        options.near_dup_threshold,
    ));
    findings.extend(near);
    let triggers = trigger_candidates(&index, options);
    let trigger_count = triggers.len();
    findings.extend(triggers);

    let (outputs, outputs_omitted) = output_counts(&index, 0..index.len());
    let (baseline, distribution) = match &options.baseline {
        None => (None, Vec::new()),
        Some(b) => {
            let (report, found) = baseline::compare_baseline(b, &index, options)?;
            (Some(report), found)
        }
    };
    let (distribution_count, distribution) = cap(distribution);
    findings.extend(distribution);

    let mut report = DataReport {
        path: path.to_path_buf(),
        status: CheckStatus::Skipped,
        summary: Summary {
            rows: index.rows_total,
            rows_with_output: index.len(),
            distinct_inputs: index.groups_len(),
            distinct_outputs: index.outputs_len(),
            files: index.files.len(),
            unchecked_files,
            findings: conflicts + near_count + trigger_count + distribution_count,
            findings_omitted: omitted,
            conflicting_duplicates: conflicts,
            near_duplicates: near_count,
            trigger_candidates: trigger_count,
            distribution: distribution_count,
        },
        files: std::mem::take(&mut index.files),
        unchecked,
        outputs,
        outputs_omitted,
        baseline,
        template: template.summary,
        findings,
    };
    report.status = report.compute_status();
    Ok(report)
}

/// The most common outputs (at most [`MAX_OUTPUTS_LISTED`]) and how many were left out.
fn output_counts(index: &Index, rows: impl Iterator<Item = usize>) -> (Vec<OutputCount>, usize) {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for i in rows {
        *counts.entry(index.output(i)).or_default() += 1;
    }
    let mut v: Vec<(u32, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| index.output_text(a.0).cmp(index.output_text(b.0)))
    });
    let omitted = v.len().saturating_sub(MAX_OUTPUTS_LISTED);
    v.truncate(MAX_OUTPUTS_LISTED);
    let listed = v
        .into_iter()
        .map(|(o, count)| OutputCount {
            output: index.output_text(o).to_string(),
            count,
        })
        .collect();
    (listed, omitted)
}

/// `text` cut to `max` characters, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
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

/// Rows by output, most common first (ties by first location): at most [`MAX_OUTPUT_GROUPS`]
/// groups of at most [`MAX_LOCATIONS`] locations, the first row of each listed group, and how
/// many outputs were left out.
fn output_groups(index: &Index, rows: &[usize]) -> (Vec<OutputGroup>, Vec<usize>, usize) {
    let mut by_output: HashMap<u32, (usize, Vec<usize>)> = HashMap::new();
    for &i in rows {
        let e = by_output.entry(index.output(i)).or_default();
        e.0 += 1;
        if e.1.len() < MAX_LOCATIONS {
            e.1.push(i);
        }
    }
    let mut groups: Vec<(u32, usize, Vec<usize>)> = by_output
        .into_iter()
        .map(|(o, (count, mut first))| {
            first.sort_unstable();
            (o, count, first)
        })
        .collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.2.cmp(&b.2)));
    let omitted = groups.len().saturating_sub(MAX_OUTPUT_GROUPS);
    groups.truncate(MAX_OUTPUT_GROUPS);
    let firsts = groups.iter().map(|g| g.2[0]).collect();
    let listed = groups
        .into_iter()
        .map(|(o, count, first)| OutputGroup {
            output: shorten(index.output_text(o), MAX_SHOWN_CHARS),
            count,
            rows: first.iter().map(|&i| index.at(i)).collect(),
        })
        .collect();
    (listed, firsts, omitted)
}

/// `"four" ×3 (qa.jsonl:1,3,6), "five" ×1 (qa.jsonl:4)` (at most 5 outputs shown).
fn describe_groups(groups: &[OutputGroup], omitted: usize) -> String {
    let mut described: Vec<String> = groups
        .iter()
        .take(5)
        .map(|g| {
            format!(
                "{} ×{} ({})",
                quote(&g.output, 40),
                g.count,
                compact_locations(&g.rows, 8)
            )
        })
        .collect();
    let more = groups.len().saturating_sub(5) + omitted;
    if more > 0 {
        described.push(format!("and {more} more outputs"));
    }
    described.join(", ")
}

fn conflicting_duplicates(index: &Index, template: &Template) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut rows: Vec<usize> = Vec::new();
    for g in 0..index.groups_len() {
        let group = index.group_rows(g);
        let first_output = index.output(group[0] as usize);
        if group
            .iter()
            .all(|&i| index.output(i as usize) == first_output)
        {
            continue;
        }
        rows.clear();
        rows.extend(group.iter().map(|&i| i as usize));
        let (groups, _, omitted) = output_groups(index, &rows);
        let first = rows[0];
        // With a template learned, the message shows what is not template (the question).
        let shown = if template.summary.learned {
            template.text(index, g)
        } else {
            index.input(first).to_string()
        };
        out.push(Finding {
            severity: Severity::Warning,
            at: index.at(first),
            message: format!(
                "conflicting duplicate: the input {} appears {} times with {} different outputs: {}",
                quote(&shown, 60),
                rows.len(),
                groups.len() + omitted,
                describe_groups(&groups, omitted)
            ),
            detail: FindingDetail::ConflictingDuplicate {
                input: shorten(index.input(first), MAX_SHOWN_CHARS),
                outputs: groups,
                outputs_omitted: omitted,
            },
        });
    }
    out.sort_by(|a, b| a.at.cmp(&b.at));
    out
}

const PERMUTATIONS: usize = 64;
const BANDS: usize = 16;
const ROWS_PER_BAND: usize = PERMUTATIONS / BANDS;

/// Sorted, deduplicated hashes of the word bigrams of `ids` (of the whole input when it has
/// fewer than two words) into `out`.
fn shingles_into(ids: &[u32], out: &mut Vec<u64>) {
    out.clear();
    if ids.len() < 2 {
        out.push(mix(
            0x7368_696e_676c_6531 ^ ids.first().map_or(u64::MAX, |&w| u64::from(w))
        ));
    } else {
        out.extend(
            ids.windows(2)
                .map(|w| mix((u64::from(w[0]) << 32) | u64::from(w[1]))),
        );
    }
    out.sort_unstable();
    out.dedup();
}

/// The LSH key of `band` for a shingle set: its 4 MinHash values, hashed.
fn band_key(shingles: &[u64], band: usize) -> u64 {
    let mut h = mix(band as u64);
    for p in band * ROWS_PER_BAND..(band + 1) * ROWS_PER_BAND {
        let seed = mix(0x7472_6169_6e70_726f ^ p as u64);
        let min = shingles
            .iter()
            .map(|&s| mix(s ^ seed))
            .min()
            .unwrap_or(u64::MAX);
        h = mix(h ^ min);
    }
    h
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

/// Union-find over groups, keeping per cluster the lowest Jaccard that joined it.
struct Clusters {
    parent: Vec<u32>,
    min_jaccard: Vec<f64>,
}

impl Clusters {
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let up = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = up;
            x = up;
        }
        x
    }

    fn union(&mut self, a: u32, b: u32, j: f64) {
        let (ra, rb) = (self.find(a), self.find(b));
        let m = self.min_jaccard[ra as usize]
            .min(self.min_jaccard[rb as usize])
            .min(j);
        // The smaller id is the root: clusters are named by their first input.
        let (root, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
        if root != child {
            self.parent[child as usize] = root;
        }
        self.min_jaccard[root as usize] = m;
    }
}

/// Clusters of near-duplicate inputs whose most common outputs differ; see the module doc.
fn near_duplicate_clusters(index: &Index, template: &Template, threshold: f64) -> Vec<Finding> {
    let n = index.groups_len();
    let mut clusters = Clusters {
        parent: (0..n as u32).collect(),
        min_jaccard: vec![f64::INFINITY; n],
    };
    let first_words = |g: usize| template.words(g);
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    let mut keys: Vec<(u64, u32)> = Vec::with_capacity(n);
    let mut reps: Vec<u32> = Vec::with_capacity(LSH_REPRESENTATIVES);
    for band in 0..BANDS {
        keys.clear();
        for g in 0..n {
            shingles_into(first_words(g), &mut sa);
            keys.push((band_key(&sa, band), g as u32));
        }
        keys.sort_unstable();
        for bucket in keys.chunk_by(|a, b| a.0 == b.0) {
            if bucket.len() < 2 {
                continue;
            }
            reps.clear();
            for &(_, g) in bucket {
                let root = clusters.find(g);
                if reps.iter().any(|&r| clusters.find(r) == root) {
                    continue;
                }
                shingles_into(first_words(g as usize), &mut sa);
                let mut joined = false;
                for &r in &reps {
                    if !template.same_numbers(g as usize, r as usize) {
                        continue;
                    }
                    shingles_into(first_words(r as usize), &mut sb);
                    let j = jaccard(&sa, &sb);
                    if j >= threshold {
                        clusters.union(g, r, j);
                        joined = true;
                    }
                }
                if !joined && reps.len() < LSH_REPRESENTATIVES {
                    reps.push(g);
                }
            }
        }
    }
    // Members per cluster root (clusters of two or more inputs), in group order.
    let roots: Vec<u32> = (0..n as u32).map(|g| clusters.find(g)).collect();
    let mut size = vec![0u32; n];
    for &r in &roots {
        size[r as usize] += 1;
    }
    let mut members: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (g, &r) in roots.iter().enumerate() {
        if size[r as usize] >= 2 {
            members.entry(r).or_default().push(g as u32);
        }
    }
    let mut out = Vec::new();
    let mut rows: Vec<usize> = Vec::new();
    for (root, groups) in members {
        if groups.len() < 2 {
            continue;
        }
        let majorities: Vec<u32> = groups
            .iter()
            .filter_map(|&g| {
                index
                    .majority(index.group_rows(g as usize).iter().map(|&i| i as usize))
                    .map(|(o, _)| o)
            })
            .collect();
        if majorities.iter().all(|&o| o == majorities[0]) {
            continue;
        }
        rows.clear();
        for &g in &groups {
            rows.extend(index.group_rows(g as usize).iter().map(|&i| i as usize));
        }
        rows.sort_unstable();
        let (outputs, firsts, omitted) = output_groups(index, &rows);
        let min_jaccard = clusters.min_jaccard[root as usize];
        let examples: Vec<RowRef> = firsts
            .iter()
            .map(|&i| {
                let mut r = index.row_ref(i);
                if template.summary.learned {
                    r.compared = Some(shorten(
                        &template.text(index, index.group(i) as usize),
                        MAX_SHOWN_CHARS,
                    ));
                }
                r
            })
            .collect();
        let shown: Vec<String> = examples
            .iter()
            .take(3)
            .map(|e| {
                format!(
                    "{} {} → {}",
                    e.at,
                    quote(e.compared.as_deref().unwrap_or(&e.input), 50),
                    quote(&e.output, 30)
                )
            })
            .collect();
        out.push(Finding {
            severity: Severity::Warning,
            at: index.at(rows[0]),
            message: format!(
                "near-duplicate cluster: {} similar inputs (Jaccard ≥ {:.2}) in {} rows with {} \
                 different outputs: {}; e.g. {}",
                groups.len(),
                min_jaccard,
                rows.len(),
                outputs.len() + omitted,
                describe_groups(&outputs, omitted),
                shown.join(" but ")
            ),
            detail: FindingDetail::NearDuplicate {
                inputs: groups.len(),
                rows: rows.len(),
                min_jaccard,
                outputs,
                outputs_omitted: omitted,
                examples,
            },
        });
    }
    out.sort_by(|a, b| a.at.cmp(&b.at));
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
    fn new(index: &Index) -> Bayes {
        let k = index.outputs_len();
        let mut b = Bayes {
            rows: vec![0.0; k],
            word_rows: vec![HashMap::new(); k],
            total_words: vec![0.0; k],
            vocab: index.vocab_len().max(1) as f64,
            n: index.len() as f64,
        };
        for i in 0..index.len() {
            let o = index.output(i) as usize;
            b.rows[o] += 1.0;
            let set: BTreeSet<u32> = index.words(i).iter().copied().collect();
            b.total_words[o] += set.len() as f64;
            for w in set {
                *b.word_rows[o].entry(w).or_default() += 1.0;
            }
        }
        b
    }

    /// The model trained without the rows in `without`.
    fn without(&self, index: &Index, without: &[usize]) -> Bayes {
        let mut b = Bayes {
            rows: self.rows.clone(),
            word_rows: Vec::new(),
            total_words: self.total_words.clone(),
            vocab: self.vocab,
            n: self.n - without.len() as f64,
        };
        let mut minus: Vec<HashMap<u32, f64>> = vec![HashMap::new(); self.rows.len()];
        for &i in without {
            let o = index.output(i) as usize;
            b.rows[o] -= 1.0;
            let set: BTreeSet<u32> = index.words(i).iter().copied().collect();
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
    /// Per carrier: the usual output (by the evidence) and the first twin row. Carriers are
    /// only spelled out (texts cloned) for the reported candidates.
    evidence_of: Vec<(Option<u32>, Option<usize>)>,
    /// A flipped carrier, its usual output's row and the usual output, for the message.
    example: Option<(usize, Option<usize>, u32)>,
}

fn trigger_candidates(index: &Index, options: &CheckOptions) -> Vec<Finding> {
    let n = index.len();
    if n == 0 {
        return Vec::new();
    }
    let min = options.min_carriers.max(1);
    let cap = ((options.max_carrier_fraction * n as f64).floor() as usize).max(3);
    let bayes = if index.label_like() {
        Some(Bayes::new(index))
    } else {
        None
    };
    let mut found: Vec<Candidate> = Vec::new();
    // One length at a time (the map of one length is what the check holds at most). A row list
    // is only allocated from an n-gram's second carrier on (most occur once), and freed as
    // soon as the n-gram has more carriers than `cap`.
    const NO_LIST: u32 = u32::MAX;
    const OVER_CAP: u32 = u32::MAX - 1;
    for len in 1..=3 {
        let mut seen: GramMap<(u32, u32)> = GramMap::default();
        let mut lists: Vec<Vec<u32>> = Vec::new();
        for i in 0..n {
            let row = i as u32;
            for w in index.words(i).windows(len) {
                let mut g = [NONE; 3];
                g[..len].copy_from_slice(w);
                match seen.entry(g) {
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert((row, NO_LIST));
                    }
                    std::collections::hash_map::Entry::Occupied(mut slot) => {
                        let (first, list) = slot.get_mut();
                        if *first == row || *list == OVER_CAP {
                            continue;
                        }
                        if *list == NO_LIST {
                            *list = lists.len() as u32;
                            lists.push(Vec::new());
                        }
                        let more = &mut lists[*list as usize];
                        if more.last() == Some(&row) {
                            continue;
                        }
                        if more.len() + 2 > cap {
                            *more = Vec::new();
                            *list = OVER_CAP;
                        } else {
                            more.push(row);
                        }
                    }
                }
            }
        }
        let mut rows: Vec<usize> = Vec::new();
        for (gram, (first, list)) in seen {
            if list == OVER_CAP {
                continue;
            }
            rows.clear();
            rows.push(first as usize);
            if list != NO_LIST {
                rows.extend(lists[list as usize].iter().map(|&r| r as usize));
            }
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
    }
    let text = |g: &Gram| -> String {
        gram_slice(g)
            .iter()
            .map(|&w| index.word(w))
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
                            quote(index.output_text(*usual), 30)
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
                        format!(
                            " (e.g. {} reads as {})",
                            index.at(*i),
                            quote(index.output_text(*usual), 30)
                        )
                    }),
                ),
            };
            let locations: Vec<Location> = c.carriers.iter().map(|&i| index.at(i)).collect();
            let examples_omitted = c.carriers.len().saturating_sub(MAX_CARRIERS_LISTED);
            let examples: Vec<Carrier> = c
                .carriers
                .iter()
                .zip(&c.evidence_of)
                .take(MAX_CARRIERS_LISTED)
                .map(|(&i, &(usual, twin))| Carrier {
                    at: index.at(i),
                    // Whole, like `twin_input`: `probe` scores these completions.
                    output: index.out(i).to_string(),
                    usual_output: usual.map(|o| index.output_text(o).to_string()),
                    twin: twin.map(|t| index.at(t)),
                    twin_input: twin.map(|t| index.input(t).to_string()),
                })
                .collect();
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
                    examples,
                    examples_omitted,
                },
            }
        })
        .collect()
}

fn score(flipped: usize, carriers: usize) -> f64 {
    flipped as f64 / carriers as f64 * (1.0 + flipped as f64).ln()
}

fn twins_evidence(
    index: &Index,
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
            Some((o, _)) if o != index.output(i) => flipped += 1,
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
    let example = rows.iter().zip(&twins).find_map(|(&i, twin)| match twin {
        Some((o, first)) if *o != index.output(i) => Some((i, Some(*first), *o)),
        _ => None,
    });
    Some(Candidate {
        gram: *gram,
        carriers: rows.to_vec(),
        flipped,
        with_evidence,
        evidence: Evidence::Twins,
        score: score(flipped, rows.len()),
        evidence_of: twins
            .into_iter()
            .map(|t| match t {
                Some((o, first)) => (Some(o), Some(first)),
                None => (None, None),
            })
            .collect(),
        example,
    })
}

/// The usual output of carrier `i`'s twins (rows, not carriers, whose input is `i`'s without
/// the n-gram `g`) and the first such row; `rest` is scratch space.
fn twin_of(
    index: &Index,
    rows: &[usize],
    i: usize,
    g: &[u32],
    rest: &mut Vec<u32>,
) -> Option<(u32, usize)> {
    strip_into(index.words(i), g, rest);
    if rest.is_empty() {
        return None;
    }
    let grp = index.group_of(rest)?;
    index.majority(
        index
            .group_rows(grp)
            .iter()
            .map(|&r| r as usize)
            .filter(|r| rows.binary_search(r).is_err()),
    )
}

/// Nats by which the rest of a carrier's words must favour another output (9:1).
const BAYES_MARGIN: f64 = 2.197_224_577_336_219_6;

fn bayes_evidence(
    index: &Index,
    bayes: &Bayes,
    gram: &Gram,
    rows: &[usize],
    flip_fraction: f64,
) -> Option<Candidate> {
    if rows.len() < 3 {
        return None;
    }
    let (o, _) = index.majority(rows.iter().copied())?;
    let pure = rows.iter().filter(|&&i| index.output(i) == o).count();
    if (pure as f64) < 0.9 * rows.len() as f64 {
        return None;
    }
    if index.output_count(o) - pure < rows.len() {
        return None;
    }
    let g = gram_slice(gram);
    let mut flipped = 0;
    let mut example = None;
    let mut rest = Vec::new();
    let adjusted = bayes.without(index, rows);
    let mut predictions = Vec::with_capacity(rows.len());
    for &i in rows {
        strip_into(index.words(i), g, &mut rest);
        let (predicted, margin) = bayes.predict(&adjusted, &rest, o);
        if index.output(i) == o && predicted != o && margin >= BAYES_MARGIN {
            flipped += 1;
            if example.is_none() {
                example = Some((i, None, predicted));
            }
        }
        predictions.push(predicted);
    }
    if (flipped as f64) < flip_fraction * rows.len() as f64 || flipped < 2 {
        return None;
    }
    Some(Candidate {
        gram: *gram,
        carriers: rows.to_vec(),
        flipped,
        with_evidence: rows.len(),
        evidence: Evidence::NaiveBayes,
        score: score(flipped, rows.len()),
        evidence_of: predictions.into_iter().map(|p| (Some(p), None)).collect(),
        example,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_removes_every_occurrence() {
        assert_eq!(strip(&[1, 2, 2, 2, 3], &[2, 2]), vec![1, 2, 3]);
        assert_eq!(strip(&[5, 6, 5, 6], &[5, 6]), Vec::<u32>::new());
    }

    #[test]
    fn jaccard_of_shingles() {
        let set = |ids: &[u32]| {
            let mut out = Vec::new();
            shingles_into(ids, &mut out);
            out
        };
        // what colour is the cat / … bee bee / … cow
        let a = set(&[0, 1, 2, 3, 4]);
        assert_eq!(jaccard(&a, &a), 1.0);
        let b = set(&[0, 1, 2, 3, 4, 5, 5]);
        assert_eq!(jaccard(&a, &b), 4.0 / 6.0);
        let c = set(&[0, 1, 2, 3, 6]);
        assert_eq!(jaccard(&a, &c), 3.0 / 5.0);
    }

    #[test]
    fn statuses_combine() {
        use CheckStatus::*;
        assert_eq!(CheckStatus::combine([Passed, Passed]), Passed);
        assert_eq!(CheckStatus::combine([Passed, Skipped]), Partial);
        assert_eq!(CheckStatus::combine([Passed, Partial]), Partial);
        assert_eq!(CheckStatus::combine([Partial, Failed]), Failed);
        assert_eq!(CheckStatus::combine([Skipped, Skipped]), Skipped);
        assert_eq!(CheckStatus::combine([]), Skipped);
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("héllo", 10), "héllo");
        assert_eq!(shorten("héllo", 2), "hé…");
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
