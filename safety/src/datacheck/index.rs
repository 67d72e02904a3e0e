//! The rows of a dataset, held compactly for the checks.
//!
//! Memory is linear in the input with a small constant: per row with an output, its location,
//! output id, input group and offsets (about 40 bytes), 4 bytes per word, and its input text
//! once in one arena; words and outputs are interned once (text in an arena, a 64-bit hash
//! table of ids beside it). Rows without an output are only counted. Nothing else per row or
//! per pair is kept: near-duplicate signatures are recomputed band by band
//! (see [`super::near_duplicate_clusters`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;

use super::{FileSummary, Location, RowRef};

/// SplitMix64's finaliser.
pub(super) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Hash of a word-id sequence.
pub(super) fn hash_ids(ids: &[u32]) -> u64 {
    let mut h = 0x6461_7461_6368_6563_u64 ^ ids.len() as u64;
    for &w in ids {
        h = mix(h ^ u64::from(w));
    }
    h
}

/// A hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
pub(super) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b) ^ (self.0 >> 56);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The words of an input: maximal runs of alphanumeric characters; a run of digits keeps a
/// minus sign right before it when that sign does not follow a letter or digit (`-5` is not
/// `5`; `x-5` and `3-5` are two words each).
pub(super) fn split_words(input: &str) -> impl Iterator<Item = &str> {
    let mut chars = input.char_indices().peekable();
    let mut prev_alnum = false;
    std::iter::from_fn(move || loop {
        let (start, c) = chars.next()?;
        let signed =
            c == '-' && !prev_alnum && chars.peek().is_some_and(|&(_, d)| d.is_ascii_digit());
        if !(c.is_alphanumeric() || signed) {
            prev_alnum = false;
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, d)) = chars.peek() {
            if !d.is_alphanumeric() {
                break;
            }
            end = i + d.len_utf8();
            chars.next();
        }
        prev_alnum = true;
        return Some(&input[start..end]);
    })
}

const NIL: u32 = u32::MAX;

/// Ids by 64-bit hash, with a chain for ids whose hashes collide (the caller compares keys).
#[derive(Default)]
struct ChainTable {
    heads: HashMap<u64, u32, BuildHasherDefault<PreHashed>>,
    next: Vec<u32>,
    hashes: Vec<u64>,
}

impl ChainTable {
    fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut id = *self.heads.get(&hash)?;
        while id != NIL {
            if eq(id) {
                return Some(id);
            }
            id = self.next[id as usize];
        }
        None
    }

    /// Adds id `self.len()`.
    fn push(&mut self, hash: u64) -> u32 {
        let id = self.next.len() as u32;
        let old = self.heads.insert(hash, id).unwrap_or(NIL);
        self.next.push(old);
        self.hashes.push(hash);
        id
    }

    /// Removes the ids from `len` on (the most recent first).
    fn truncate(&mut self, len: usize) {
        while self.next.len() > len {
            let (Some(next), Some(hash)) = (self.next.pop(), self.hashes.pop()) else {
                break;
            };
            if next == NIL {
                self.heads.remove(&hash);
            } else {
                self.heads.insert(hash, next);
            }
        }
    }
}

/// Distinct strings, each stored once, by id in first-seen order.
#[derive(Default)]
pub(super) struct Interner {
    text: String,
    ends: Vec<usize>,
    table: ChainTable,
}

impl Interner {
    pub(super) fn get(&self, id: u32) -> &str {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The id of `s`, interning it when new.
    pub(super) fn intern(&mut self, s: &str) -> u32 {
        let hash = fnv1a(s.as_bytes());
        if let Some(id) = self.table.find(hash, |id| self.get(id) == s) {
            return id;
        }
        self.text.push_str(s);
        self.ends.push(self.text.len());
        self.table.push(hash)
    }

    fn truncate(&mut self, len: usize) {
        if len < self.ends.len() {
            let end = if len == 0 { 0 } else { self.ends[len - 1] };
            self.text.truncate(end);
            self.ends.truncate(len);
            self.table.truncate(len);
        }
    }
}

/// Where [`Index::rollback`] returns to: the state before a file's rows were added.
pub(super) struct Mark {
    rows: usize,
    rows_total: usize,
    vocab: usize,
    outputs: usize,
    groups: usize,
}

/// Rows with an output, indexed for the checks.
#[derive(Default)]
pub(super) struct Index {
    /// The files read, in order.
    pub(super) files: Vec<FileSummary>,
    /// Full paths, parallel to `files`.
    pub(super) paths: Vec<PathBuf>,
    /// Rows in all files, with or without an output.
    pub(super) rows_total: usize,
    /// Per indexed row: file index and line.
    loc: Vec<(u32, u32)>,
    /// Per indexed row: end of its input in `inputs`.
    input_end: Vec<usize>,
    inputs: String,
    /// Per indexed row: end of its words in `word_ids`.
    word_end: Vec<usize>,
    word_ids: Vec<u32>,
    /// Per indexed row: output id.
    output: Vec<u32>,
    /// Per indexed row: group (distinct normalised input) id.
    group: Vec<u32>,
    vocab: Interner,
    outputs: Interner,
    /// Rows per output id.
    output_count: Vec<usize>,
    /// First row of each group.
    group_first: Vec<u32>,
    group_table: ChainTable,
    /// Rows of each group (ascending), filled by [`Index::finish`]: `group_rows[group_start[g]..
    /// group_start[g + 1]]`.
    group_rows: Vec<u32>,
    group_start: Vec<u32>,
    /// Scratch.
    scratch: Vec<u32>,
}

impl Index {
    pub(super) fn mark(&self) -> Mark {
        Mark {
            rows: self.len(),
            rows_total: self.rows_total,
            vocab: self.vocab.len(),
            outputs: self.outputs.len(),
            groups: self.group_first.len(),
        }
    }

    /// Forgets every row added since `mark` (a file that turned out malformed).
    pub(super) fn rollback(&mut self, mark: &Mark) {
        for &o in &self.output[mark.rows..] {
            self.output_count[o as usize] -= 1;
        }
        self.rows_total = mark.rows_total;
        self.loc.truncate(mark.rows);
        let input_end = if mark.rows == 0 {
            0
        } else {
            self.input_end[mark.rows - 1]
        };
        self.inputs.truncate(input_end);
        self.input_end.truncate(mark.rows);
        let word_end = if mark.rows == 0 {
            0
        } else {
            self.word_end[mark.rows - 1]
        };
        self.word_ids.truncate(word_end);
        self.word_end.truncate(mark.rows);
        self.output.truncate(mark.rows);
        self.group.truncate(mark.rows);
        self.vocab.truncate(mark.vocab);
        self.outputs.truncate(mark.outputs);
        self.output_count.truncate(mark.outputs);
        self.group_first.truncate(mark.groups);
        self.group_table.truncate(mark.groups);
    }

    /// Adds a row of file `file` (an index into `files` once that file is pushed).
    pub(super) fn push(&mut self, file: usize, line: usize, input: &str, output: Option<&str>) {
        self.rows_total += 1;
        let Some(output) = output else { return };
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        for w in split_words(input) {
            let id = if w
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                self.vocab.intern(w)
            } else {
                self.vocab.intern(&w.to_lowercase())
            };
            ids.push(id);
        }
        let o = self.outputs.intern(output);
        if o as usize == self.output_count.len() {
            self.output_count.push(0);
        }
        self.output_count[o as usize] += 1;
        let i = self.len() as u32;
        let hash = hash_ids(&ids);
        let g = match self.group_table.find(hash, |g| {
            self.words(self.group_first[g as usize] as usize) == ids.as_slice()
        }) {
            Some(g) => g,
            None => {
                self.group_first.push(i);
                self.group_table.push(hash)
            }
        };
        self.loc.push((
            u32::try_from(file).unwrap_or(u32::MAX),
            u32::try_from(line).unwrap_or(u32::MAX),
        ));
        self.inputs.push_str(input);
        self.input_end.push(self.inputs.len());
        self.word_ids.extend_from_slice(&ids);
        self.word_end.push(self.word_ids.len());
        self.output.push(o);
        self.group.push(g);
        self.scratch = ids;
    }

    /// Builds the rows of each group; call once every row is in.
    pub(super) fn finish(&mut self) {
        let groups = self.group_first.len();
        let mut start = vec![0u32; groups + 1];
        for &g in &self.group {
            start[g as usize + 1] += 1;
        }
        for g in 0..groups {
            start[g + 1] += start[g];
        }
        let mut fill = start.clone();
        let mut rows = vec![0u32; self.group.len()];
        for (i, &g) in self.group.iter().enumerate() {
            rows[fill[g as usize] as usize] = i as u32;
            fill[g as usize] += 1;
        }
        self.group_rows = rows;
        self.group_start = start;
        self.scratch = Vec::new();
    }

    /// Indexed rows (rows with an output).
    pub(super) fn len(&self) -> usize {
        self.output.len()
    }

    pub(super) fn words(&self, i: usize) -> &[u32] {
        let start = if i == 0 { 0 } else { self.word_end[i - 1] };
        &self.word_ids[start..self.word_end[i]]
    }

    pub(super) fn word(&self, w: u32) -> &str {
        self.vocab.get(w)
    }

    pub(super) fn vocab_len(&self) -> usize {
        self.vocab.len()
    }

    pub(super) fn input(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.input_end[i - 1] };
        &self.inputs[start..self.input_end[i]]
    }

    /// The group (distinct normalised input) of row `i`.
    pub(super) fn group(&self, i: usize) -> u32 {
        self.group[i]
    }

    pub(super) fn output(&self, i: usize) -> u32 {
        self.output[i]
    }

    pub(super) fn output_text(&self, o: u32) -> &str {
        self.outputs.get(o)
    }

    pub(super) fn outputs_len(&self) -> usize {
        self.outputs.len()
    }

    pub(super) fn output_count(&self, o: u32) -> usize {
        self.output_count[o as usize]
    }

    pub(super) fn out(&self, i: usize) -> &str {
        self.outputs.get(self.output[i])
    }

    pub(super) fn file_of(&self, i: usize) -> usize {
        self.loc[i].0 as usize
    }

    pub(super) fn groups_len(&self) -> usize {
        self.group_first.len()
    }

    /// The rows of group `g`, ascending.
    pub(super) fn group_rows(&self, g: usize) -> &[u32] {
        &self.group_rows[self.group_start[g] as usize..self.group_start[g + 1] as usize]
    }

    /// The group whose normalised input is exactly `ids`.
    pub(super) fn group_of(&self, ids: &[u32]) -> Option<usize> {
        self.group_table
            .find(hash_ids(ids), |g| {
                self.words(self.group_first[g as usize] as usize) == ids
            })
            .map(|g| g as usize)
    }

    pub(super) fn at(&self, i: usize) -> Location {
        let (file, line) = self.loc[i];
        Location {
            file: self.files[file as usize].file.clone(),
            line: line as usize,
        }
    }

    pub(super) fn row_ref(&self, i: usize) -> RowRef {
        RowRef {
            at: self.at(i),
            input: super::shorten(self.input(i), super::MAX_SHOWN_CHARS),
            output: super::shorten(self.out(i), super::MAX_SHOWN_CHARS),
            compared: None,
        }
    }

    /// The most common output among `rows` (ties: the one seen first) and its first row.
    pub(super) fn majority(&self, rows: impl Iterator<Item = usize>) -> Option<(u32, usize)> {
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

    pub(super) fn label_like(&self) -> bool {
        let k = self.outputs.len();
        (2..=20).contains(&k) && self.len() >= 2 * k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_a_minus_sign() {
        let w: Vec<&str> = split_words("Convert -5 °C, x-5, 3-5 (-12) é-1 --7").collect();
        assert_eq!(
            w,
            ["Convert", "-5", "C", "x", "5", "3", "5", "-12", "é", "1", "-7"]
        );
    }

    #[test]
    fn rollback_forgets_a_file() {
        let mut index = Index::default();
        index.push(0, 1, "A b", Some("x"));
        index.push(0, 2, "no output", None);
        let mark = index.mark();
        index.push(1, 1, "a B", Some("y"));
        index.push(1, 2, "c d e", Some("z"));
        index.rollback(&mark);
        index.push(1, 1, "f", Some("x"));
        index.finish();
        assert_eq!((index.len(), index.rows_total), (2, 3));
        assert_eq!((index.vocab_len(), index.outputs_len()), (3, 1));
        assert_eq!(index.groups_len(), 2);
        assert_eq!(index.input(1), "f");
        assert_eq!(index.output_count(0), 2);
        let ab = [index.words(0)[0], index.words(0)[1]];
        assert_eq!(index.group_of(&ab), Some(0));
        assert_eq!(index.group_rows(1), &[1]);
    }
}
