//! What (nearly) every input shares: learned from the data, left out of the near-duplicate
//! comparison (see the module doc of [`super`], "Comparing the parts that differ").

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::index::Index;

/// Distinct inputs from which a template is learned; smaller datasets are compared whole.
pub const TEMPLATE_MIN_INPUTS: usize = 50;
/// A word bigram found in more than this share of the distinct inputs is template.
pub const TEMPLATE_SHARE: f64 = 0.5;
/// Template bigrams listed in [`TemplateSummary::shared`].
const SHARED_LISTED: usize = 10;

/// What the check learned to leave out of the near-duplicate comparison (`"template"` in the
/// JSON report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateSummary {
    /// Whether a template was learned (at least [`TEMPLATE_MIN_INPUTS`] distinct inputs).
    pub learned: bool,
    /// Distinct inputs it was learned from.
    pub inputs: usize,
    /// Word bigrams in more than half of the distinct inputs (system prompt, chat markup, a
    /// shared instruction).
    pub shared_bigrams: usize,
    /// The most widespread of them (at most 10, most widespread first, ties by text), as
    /// normalised words.
    pub shared: Vec<String>,
}

/// The learned template and, per distinct input (group), the words compared and a key of its
/// numbers.
pub(super) struct Template {
    pub(super) summary: TemplateSummary,
    /// Per group: end of its compared words in `words`.
    ends: Vec<usize>,
    words: Vec<u32>,
    /// Per group: hash of its sorted numbers (all-digit words, `-` allowed in front).
    numbers: Vec<u64>,
}

fn pair(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

impl Template {
    /// Learns the template of `index`'s distinct inputs.
    pub(super) fn learn(index: &Index) -> Template {
        let n = index.groups_len();
        let first_words = |g: usize| index.words(index.group_rows(g)[0] as usize);
        let learned = n >= TEMPLATE_MIN_INPUTS;
        let limit = TEMPLATE_SHARE * n as f64;
        let mut common: HashSet<u64> = HashSet::new();
        let mut shared: Vec<(u32, u64)> = Vec::new();
        if learned {
            // A bigram can only be widespread if both its words are: count those bigrams only,
            // so the map stays small whatever the vocabulary.
            let mut word_df = vec![0u32; index.vocab_len()];
            let mut seen: HashSet<u32> = HashSet::new();
            for g in 0..n {
                seen.clear();
                for &w in first_words(g) {
                    if seen.insert(w) {
                        word_df[w as usize] += 1;
                    }
                }
            }
            let widespread = |w: u32| f64::from(word_df[w as usize]) > limit;
            let mut df: HashMap<u64, u32> = HashMap::new();
            let mut seen: HashSet<u64> = HashSet::new();
            for g in 0..n {
                seen.clear();
                for w in first_words(g).windows(2) {
                    if widespread(w[0]) && widespread(w[1]) && seen.insert(pair(w[0], w[1])) {
                        *df.entry(pair(w[0], w[1])).or_default() += 1;
                    }
                }
            }
            for (p, count) in df {
                if f64::from(count) > limit {
                    common.insert(p);
                    shared.push((count, p));
                }
            }
        }
        let text = |p: u64| format!("{} {}", index.word((p >> 32) as u32), index.word(p as u32));
        shared.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| text(a.1).cmp(&text(b.1))));
        let summary = TemplateSummary {
            learned,
            inputs: n,
            shared_bigrams: common.len(),
            shared: shared
                .iter()
                .take(SHARED_LISTED)
                .map(|&(_, p)| text(p))
                .collect(),
        };
        let mut t = Template {
            summary,
            ends: Vec::with_capacity(n),
            words: Vec::new(),
            numbers: Vec::with_capacity(n),
        };
        let mut digits: Vec<&str> = Vec::new();
        for g in 0..n {
            let words = first_words(g);
            let start = t.words.len();
            for (i, &w) in words.iter().enumerate() {
                let before = i > 0 && common.contains(&pair(words[i - 1], w));
                let after = i + 1 < words.len() && common.contains(&pair(w, words[i + 1]));
                if !before && !after {
                    t.words.push(w);
                }
            }
            if t.words.len() == start {
                // Nothing but template: compare it whole.
                t.words.extend_from_slice(words);
            }
            t.ends.push(t.words.len());
            digits.clear();
            digits.extend(words.iter().map(|&w| index.word(w)).filter(|w| {
                let digits = w.strip_prefix('-').unwrap_or(w);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            }));
            digits.sort_unstable();
            let mut h = 0x6e75_6d62_6572_7321_u64;
            for d in &digits {
                h = super::index::mix(h ^ super::index::fnv1a(d.as_bytes()));
            }
            t.numbers.push(h);
        }
        t
    }

    /// The words of group `g` that are compared (all of them when no template was learned).
    pub(super) fn words(&self, g: usize) -> &[u32] {
        let start = if g == 0 { 0 } else { self.ends[g - 1] };
        &self.words[start..self.ends[g]]
    }

    /// Whether groups `a` and `b` hold the same numbers.
    pub(super) fn same_numbers(&self, a: usize, b: usize) -> bool {
        self.numbers[a] == self.numbers[b]
    }

    /// The compared words of group `g`, as text.
    pub(super) fn text(&self, index: &Index, g: usize) -> String {
        self.words(g)
            .iter()
            .map(|&w| index.word(w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(rows: &[String]) -> Index {
        let mut index = Index::default();
        for (i, r) in rows.iter().enumerate() {
            index.push(0, i + 1, r, Some("x"));
        }
        index.finish();
        index
    }

    #[test]
    fn shared_words_are_left_out_and_numbers_compared() {
        let topics = ["cats", "dogs", "owls", "hens", "bees"];
        let rows: Vec<String> = (0..60)
            .map(|i| {
                format!(
                    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nTell me about \
                     {} number {i}<|im_end|>",
                    topics[i % 5]
                )
            })
            .collect();
        let index = index(&rows);
        let t = Template::learn(&index);
        assert!(t.summary.learned);
        // The markup, the system prompt and "tell me about" are in every row; "number" is too,
        // but between two words that are not ("cats number", "number 0"), so it stays.
        assert_eq!(t.text(&index, 0), "cats number 0");
        assert_eq!(t.text(&index, 7), "owls number 7");
        assert!(t.summary.shared.contains(&"im start".to_string()));
        assert!(!t.same_numbers(0, 5));
        // Below the minimum nothing is learned and inputs are compared whole.
        let few = self::index(&rows[..TEMPLATE_MIN_INPUTS - 1]);
        let t = Template::learn(&few);
        assert!(!t.summary.learned);
        assert_eq!(t.words(0), few.words(0));
    }
}
