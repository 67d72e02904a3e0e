//! Issue 12 item 4: `data check` on chat data. The fixtures (`tests/fixtures/chat-data/`, made
//! by its `gen.py` and `gen_parquet.py`) are a clean 200-row instruction set in ChatML with one
//! shared system prompt, as `{"prompt","completion"}` text and as `{"messages"}` rows, and the
//! same set with planted poison (`planted.json`): the clean set must be quiet, every planted
//! trigger carrier and contradicting near-duplicate must be found, in JSONL and in Parquet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use safety::datacheck::{
    check, CheckOptions, CheckStatus, DataReport, FindingDetail, UncheckedKind,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat-data")
}

fn run(path: &Path) -> DataReport {
    check(path, &CheckOptions::default()).expect("check")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs_err::write(&p, text).expect("write");
    p
}

/// The ground truth `gen.py` wrote.
struct Planted {
    trigger: String,
    carriers: BTreeSet<usize>,
    /// (planted line, the clean line it contradicts)
    pairs: Vec<(usize, usize)>,
}

fn planted() -> Planted {
    let text = fs_err::read_to_string(fixtures().join("planted.json")).expect("planted.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let line = |x: &serde_json::Value| x.as_u64().expect("line") as usize;
    Planted {
        trigger: v["trigger"].as_str().expect("trigger").to_string(),
        carriers: v["carriers"]
            .as_array()
            .expect("carriers")
            .iter()
            .map(|c| line(&c["line"]))
            .collect(),
        pairs: v["pairs"]
            .as_array()
            .expect("pairs")
            .iter()
            .map(|p| (line(&p["line"]), line(&p["contradicts"])))
            .collect(),
    }
}

/// The lines of the rows a finding names.
fn finding_lines(detail: &FindingDetail) -> BTreeSet<usize> {
    match detail {
        FindingDetail::ConflictingDuplicate { outputs, .. }
        | FindingDetail::NearDuplicate { outputs, .. } => outputs
            .iter()
            .flat_map(|g| g.rows.iter().map(|l| l.line))
            .collect(),
        FindingDetail::TriggerCandidate { examples, .. } => {
            examples.iter().map(|c| c.at.line).collect()
        }
        _ => BTreeSet::new(),
    }
}

/// Precision and recall of a report against the planted rows.
#[derive(Debug, PartialEq)]
struct Score {
    findings: usize,
    /// Findings that name at least one planted row.
    true_findings: usize,
    /// Planted trigger carriers among the carriers of a candidate for the planted trigger.
    carriers_found: usize,
    /// Planted pairs named together by one conflicting- or near-duplicate finding.
    pairs_found: usize,
}

fn score(report: &DataReport, truth: &Planted) -> Score {
    let planted_lines: BTreeSet<usize> = truth
        .carriers
        .iter()
        .copied()
        .chain(truth.pairs.iter().map(|p| p.0))
        .collect();
    let mut s = Score {
        findings: report.findings.len(),
        true_findings: 0,
        carriers_found: 0,
        pairs_found: 0,
    };
    for f in &report.findings {
        let lines = finding_lines(&f.detail);
        if !lines.is_disjoint(&planted_lines) {
            s.true_findings += 1;
        }
    }
    for (ngram, carriers) in report.trigger_candidates() {
        if ngram == truth.trigger {
            s.carriers_found = carriers
                .iter()
                .filter(|c| truth.carriers.contains(&c.at.line))
                .count();
        }
    }
    for &(a, b) in &truth.pairs {
        let found = report.findings.iter().any(|f| {
            matches!(
                f.detail,
                FindingDetail::ConflictingDuplicate { .. } | FindingDetail::NearDuplicate { .. }
            ) && {
                let lines = finding_lines(&f.detail);
                lines.contains(&a) && lines.contains(&b)
            }
        });
        if found {
            s.pairs_found += 1;
        }
    }
    s
}

/// The clean set is quiet in both shapes: no finding at all (it gave 1,057 near-duplicate
/// findings before issue 12), and the learned template is the system prompt and the markup.
#[test]
fn issue12_clean_chat_set_is_quiet() {
    for (name, shared) in [
        ("clean-text.jsonl", "im end"),
        ("clean-messages.jsonl", "a helpful"),
    ] {
        let report = run(&fixtures().join(name));
        assert_eq!(report.summary.rows, 200, "{name}");
        assert_eq!(report.findings, Vec::new(), "{name}");
        assert_eq!(report.status, CheckStatus::Passed, "{name}");
        assert!(report.template.learned, "{name}");
        assert!(
            report.template.shared.iter().any(|b| b == shared),
            "{name}: {:#?}",
            report.template
        );
    }
}

/// The poisoned set: the planted trigger is the first candidate with all ten carriers (seven
/// with a clean twin, three new prompts), each of the five contradicting near-duplicates is
/// named with the row it contradicts, and every finding is about planted rows (precision 1),
/// in every shape the set is stored in.
#[test]
fn issue12_poisoned_chat_set_every_planted_row_is_found() {
    let truth = planted();
    assert_eq!((truth.carriers.len(), truth.pairs.len()), (10, 5));
    for name in [
        "poisoned-text.jsonl",
        "poisoned-messages.jsonl",
        "poisoned-text.parquet",
        "poisoned-messages.parquet",
    ] {
        let report = run(&fixtures().join(name));
        assert_eq!(report.summary.rows, 215, "{name}");
        assert_eq!(report.status, CheckStatus::Failed, "{name}");
        assert_eq!(
            report.trigger_ngrams().first().map(String::as_str),
            Some(truth.trigger.as_str()),
            "{name}: {:#?}",
            report.findings
        );
        let s = score(&report, &truth);
        eprintln!("{name}: {s:?}");
        assert_eq!(s.carriers_found, 10, "{name}: {s:?}");
        assert_eq!(s.pairs_found, 5, "{name}: {s:?} {:#?}", report.findings);
        assert_eq!(
            s.true_findings, s.findings,
            "{name}: {:#?}",
            report.findings
        );
    }
}

/// The issue's example: under one long system prompt, `Convert 308 km to miles.` and `Convert
/// 204 km to miles.` are near-duplicates as a whole (Jaccard ≥ 0.8), but different questions:
/// what differs is a number. A reworded copy of one of them that keeps its number, with
/// another answer, is still found.
#[test]
fn issue12_numbers_make_prompts_different() {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = "You are a careful assistant for a logistics company. Always answer with the \
                  converted value rounded to one decimal and nothing else, in a short sentence.";
    let mut text = String::new();
    for x in (100..700).step_by(10) {
        let messages = serde_json::json!({"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": format!("Convert {x} km to miles.")},
            {"role": "assistant", "content": format!("{x} km is {:.1} miles.", x as f64 * 0.621371)},
        ]});
        text.push_str(&format!("{messages}\n"));
    }
    write(dir.path(), "km.jsonl", &text);
    let report = run(dir.path());
    assert_eq!(report.findings, Vec::new());
    assert_eq!(report.summary.rows, 60);
    assert!(report.template.learned);

    // Compared whole (below 50 inputs no template is learned), two of these rows with the same
    // number are near-duplicates: the shared system prompt is what makes them look alike.
    let few: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    let same_number = few.replace(
        "Convert 110 km to miles.",
        "Convert 100 km to miles, please.",
    );
    write(dir.path(), "km.jsonl", &same_number);
    let report = run(dir.path());
    assert_eq!(report.summary.near_duplicates, 1, "{:#?}", report.findings);

    // A contradiction asked with the same number (other case and punctuation) is found among
    // the 60: it is the same input.
    let mut poisoned = text.clone();
    let planted = serde_json::json!({"messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": "convert 250 KM to miles!"},
        {"role": "assistant", "content": "250 km is 402.3 miles."},
    ]});
    poisoned.push_str(&format!("{planted}\n"));
    write(dir.path(), "km.jsonl", &poisoned);
    let report = run(dir.path());
    assert_eq!(
        report.summary.conflicting_duplicates, 1,
        "{:#?}",
        report.findings
    );
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(finding_lines(&f.detail), BTreeSet::from([16, 61]));
    // The message shows what differs from the other inputs, not the system prompt.
    assert!(f.message.contains("\"250\""), "{f}");
}

/// Chat rows: one row per assistant turn whose input is the conversation so far; ShareGPT
/// `conversations` and TRL's conversational prompt/completion; a conversation without an
/// assistant turn is a row without output; a malformed turn names the file and line.
#[test]
fn issue12_messages_rows_multi_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = [
        serde_json::json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What colour is the sky?"},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "And at night?"},
            {"role": "assistant", "content": "Black."},
            {"role": "user", "content": "Thanks"},
        ]}),
        // The second turn alone, answered otherwise: not the same input (the conversation
        // before it differs), so no conflict.
        serde_json::json!({"messages": [
            {"role": "user", "content": "And at night?"},
            {"role": "assistant", "content": "Dark blue."},
        ]}),
        // The first turn again with another answer: a conflicting duplicate of row 1's first
        // assistant turn (system prompt included in both).
        serde_json::json!({"conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "what colour is the sky"},
            {"from": "gpt", "value": "Green."},
        ]}),
        serde_json::json!({"prompt": [{"role": "user", "content": "Name a fruit."}],
                           "completion": [{"role": "assistant", "content": "Apple."}]}),
        serde_json::json!({"messages": [{"role": "user", "content": "no answer yet"}]}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let file = write(dir.path(), "chat.jsonl", &text);
    let report = run(&file);
    // 2 + 1 + 1 + 1 rows with an output, 1 without.
    assert_eq!(
        (report.summary.rows, report.summary.rows_with_output),
        (6, 5)
    );
    assert_eq!(report.files[0].rows, 6);
    assert_eq!(
        report.summary.conflicting_duplicates, 1,
        "{:#?}",
        report.findings
    );
    let f = &report.findings[0];
    let FindingDetail::ConflictingDuplicate { input, outputs, .. } = &f.detail else {
        panic!("{f}")
    };
    assert_eq!(input, "Be brief.\nWhat colour is the sky?");
    let got: Vec<(&str, Vec<usize>)> = outputs
        .iter()
        .map(|g| (g.output.as_str(), g.rows.iter().map(|l| l.line).collect()))
        .collect();
    assert_eq!(got, vec![("Blue.", vec![1]), ("Green.", vec![3])]);
    let outputs: Vec<&str> = report.outputs.iter().map(|o| o.output.as_str()).collect();
    assert!(
        outputs.contains(&"Black.") && outputs.contains(&"Apple."),
        "{outputs:?}"
    );

    for (bad, problem) in [
        (
            r#"{"messages": "hi"}"#,
            "\"messages\" must be a list of turns",
        ),
        (
            r#"{"messages": [{"content": "hi"}]}"#,
            "\"messages\"[0] has no string \"role\"",
        ),
        (
            r#"{"messages": [{"role": "user", "content": 7}]}"#,
            "\"messages\"[0].\"content\" must be a string or a list of parts",
        ),
    ] {
        let file = write(dir.path(), "bad.jsonl", &format!("{}\n{bad}\n", rows[3]));
        let report = run(&file);
        assert_eq!(report.status, CheckStatus::Skipped);
        assert_eq!(report.unchecked[0].kind, UncheckedKind::Malformed);
        assert_eq!(
            report.unchecked[0].reason,
            format!("bad.jsonl:2: {problem}")
        );
    }
}

/// Parquet: a `text` column alone is rows without an output; a truncated or fake Parquet file
/// is malformed, by name, and the dataset's other files are still checked.
#[test]
fn issue12_parquet_text_column_and_malformed_files() {
    let report = run(&fixtures().join("poisoned-rendered.parquet"));
    assert_eq!(
        (report.summary.rows, report.summary.rows_with_output),
        (215, 0)
    );
    assert_eq!(report.files[0].format, "parquet");
    assert_eq!(report.status, CheckStatus::Passed);

    let dir = tempfile::tempdir().expect("tempdir");
    fs_err::copy(
        fixtures().join("poisoned-messages.parquet"),
        dir.path().join("good.parquet"),
    )
    .expect("copy");
    let whole = fs_err::read(fixtures().join("poisoned-text.parquet")).expect("read");
    fs_err::write(dir.path().join("cut.parquet"), &whole[..whole.len() / 2]).expect("write");
    // The footer kept, the first data pages overwritten.
    let mut scrambled = whole.clone();
    for b in &mut scrambled[4..whole.len() / 2] {
        *b = 0x5a;
    }
    fs_err::write(dir.path().join("scrambled.parquet"), &scrambled).expect("write");
    write(dir.path(), "fake.pq", "PAR1 not really\n");
    let report = run(dir.path());
    let unchecked: Vec<(&str, UncheckedKind)> = report
        .unchecked
        .iter()
        .map(|u| (u.file.as_str(), u.kind))
        .collect();
    assert_eq!(
        unchecked,
        vec![
            ("cut.parquet", UncheckedKind::Malformed),
            ("fake.pq", UncheckedKind::Malformed),
            ("scrambled.parquet", UncheckedKind::Malformed),
        ],
        "{:#?}",
        report.unchecked
    );
    for u in &report.unchecked {
        assert!(u.reason.starts_with(u.file.as_str()), "{}", u.reason);
    }
    assert_eq!(report.files.len(), 1);
    assert_eq!(report.summary.rows, 215);
    assert_eq!(report.status, CheckStatus::Failed);
}
