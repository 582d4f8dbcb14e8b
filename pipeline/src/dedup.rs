//! Exact and near-duplicate removal.
//!
//! Both stages keep the first occurrence in input order and drop the rest, each drop naming the
//! id it duplicates. Hashing runs in parallel; every decision is made from sorted data, so the
//! output depends neither on thread count nor on any hash map's iteration order.

use crate::normalize::{normalize, words};
use rayon::prelude::*;
use schemas::recipe::NearDedupConfig;
use schemas::rng::{hash_ngram, mix64, SplitMix64};
use schemas::{Dropped, Example};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Drop rows whose normalised prompt and response equal an earlier row's.
///
/// Rows are compared by the sha256 of the full normalised key, so unlike a 64-bit hash a false
/// match is not a practical concern.
pub fn exact_dedup(examples: Vec<Example>) -> (Vec<Example>, Vec<Dropped>) {
    let keys: Vec<[u8; 32]> = examples.par_iter().map(exact_key).collect();
    let mut first_seen: HashMap<[u8; 32], usize> = HashMap::with_capacity(examples.len());
    let mut keeper_of: Vec<Option<usize>> = Vec::with_capacity(examples.len());
    for (i, key) in keys.into_iter().enumerate() {
        match first_seen.get(&key) {
            Some(&k) => keeper_of.push(Some(k)),
            None => {
                first_seen.insert(key, i);
                keeper_of.push(None);
            }
        }
    }
    split_kept(examples, &keeper_of, "exact_dedup", "exact_duplicate")
}

fn exact_key(ex: &Example) -> [u8; 32] {
    let (prompt, response) = (normalize(&ex.prompt), normalize(&ex.response));
    let mut h = Sha256::new();
    // Length-prefixed rather than joined by a separator: the boundary between prompt and
    // response is then unambiguous whatever characters the texts contain.
    h.update((prompt.len() as u64).to_le_bytes());
    h.update(prompt.as_bytes());
    h.update(response.as_bytes());
    // The turns before the last exchange, where there are any (a single turn hashes as it
    // always has): the same last exchange after another history is another conversation.
    for t in &ex.context {
        let content = normalize(&t.content);
        h.update([t.role as u8]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(content.as_bytes());
    }
    h.finalize().into()
}

/// Partition rows into kept (input order) and dropped; `keeper_of[i]` is the row `i` duplicates.
fn split_kept(examples: Vec<Example>, keeper_of: &[Option<usize>], stage: &str, reason: &str) -> (Vec<Example>, Vec<Dropped>) {
    let ids: Vec<String> = keeper_of.iter().map(|k| k.map(|k| examples[k].id.clone()).unwrap_or_default()).collect();
    let mut kept = Vec::with_capacity(examples.len());
    let mut dropped = Vec::new();
    for ((ex, keeper), keeper_id) in examples.into_iter().zip(keeper_of).zip(ids) {
        match keeper {
            Some(_) => dropped.push(Dropped::new(stage, reason, &ex, keeper_id)),
            None => kept.push(ex),
        }
    }
    (kept, dropped)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NearDedupStats {
    /// Distinct document pairs whose Jaccard similarity was computed.
    pub candidate_pairs: u64,
    /// Candidate pairs at or above the threshold.
    pub verified_pairs: u64,
    /// Groups of two or more near-duplicates (each keeps one row).
    pub clusters: u64,
}

/// Within one LSH bucket, each member is paired with the next `BUCKET_WINDOW` members (input
/// order) and with the bucket's first member. Buckets of up to `BUCKET_WINDOW + 1` members are
/// therefore compared all-pairs; larger ones (many near-identical rows, or many rows sharing a
/// long prompt) cost O(k · window) instead of O(k²). Pairs a large bucket skips are usually
/// still found through other bands or through union-find transitivity.
const BUCKET_WINDOW: usize = 64;

/// Drop rows that are near-duplicates of an earlier row: MinHash LSH to find candidates, the true
/// Jaccard similarity of word-`ngram` shingle sets to confirm them.
///
/// Confirmed pairs are merged with union-find and every cluster keeps its earliest row. Through
/// transitivity (A~B, B~C) a dropped row may be only indirectly similar to its keeper; that is
/// intended, since chains of small edits are one family of duplicates. Rows without words have
/// no shingles and are never duplicates. With `cfg.enabled == false` nothing is dropped.
pub fn near_dedup(examples: Vec<Example>, cfg: &NearDedupConfig, seed: u64) -> (Vec<Example>, Vec<Dropped>, NearDedupStats) {
    if !cfg.enabled || examples.is_empty() {
        return (examples, Vec::new(), NearDedupStats::default());
    }
    let (ngram, bands, rows) = (cfg.ngram.max(1), cfg.bands.max(1), cfg.rows.max(1));
    let family = HashFamily::new(seed, bands * rows);

    let pb = progress::bar(examples.len(), "near-dedup");
    let band_keys: Vec<Vec<u64>> = examples
        .par_iter()
        .map(|ex| {
            let keys = family.band_keys(&shingles(ex, ngram), rows);
            pb.inc(1);
            keys
        })
        .collect();
    pb.finish_and_clear();

    let pairs = candidate_pairs(&band_keys);
    let similar = verify(&examples, &pairs, ngram, cfg.threshold);

    let mut uf = UnionFind::new(examples.len());
    for &(a, b) in &similar {
        uf.union(a as usize, b as usize);
    }
    let keeper_of: Vec<Option<usize>> = (0..examples.len()).map(|i| Some(uf.find(i)).filter(|&root| root != i)).collect();
    let stats =
        NearDedupStats { candidate_pairs: pairs.len() as u64, verified_pairs: similar.len() as u64, clusters: count_clusters(&keeper_of) };
    let (kept, dropped) = split_kept(examples, &keeper_of, "near_dedup", "near_duplicate");
    (kept, dropped, stats)
}

/// Sorted, distinct hashes of the word `ngram`-grams of the conversation's text (prompt +
/// response for a single turn). A text shorter than `ngram` words is one shingle, so short rows
/// can still be duplicates of each other.
fn shingles(ex: &Example, ngram: usize) -> Vec<u64> {
    let ws = words(&ex.text());
    let mut out: Vec<u64> = if ws.is_empty() {
        Vec::new()
    } else if ws.len() < ngram {
        vec![hash_ngram(&ws)]
    } else {
        ws.windows(ngram).map(hash_ngram).collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// `h_i(x) = a_i · x + b_i` (wrapping, `a_i` odd, so each is a permutation of `u64`), with
/// `(a_i, b_i)` drawn from splitmix64 seeded by the recipe seed. The shingle hashes are already
/// well mixed, so this cheap multiply-add family is enough for MinHash.
struct HashFamily {
    coeffs: Vec<(u64, u64)>,
}

impl HashFamily {
    fn new(seed: u64, n: usize) -> Self {
        let mut rng = SplitMix64::new(seed);
        let coeffs = (0..n).map(|_| (rng.next_u64() | 1, rng.next_u64())).collect();
        HashFamily { coeffs }
    }

    fn signature(&self, shingles: &[u64]) -> Vec<u64> {
        self.coeffs.iter().map(|&(a, b)| shingles.iter().map(|&x| a.wrapping_mul(x).wrapping_add(b)).min().unwrap_or(u64::MAX)).collect()
    }

    /// One bucket key per band; empty for a row without shingles, which joins no bucket.
    fn band_keys(&self, shingles: &[u64], rows: usize) -> Vec<u64> {
        if shingles.is_empty() {
            return Vec::new();
        }
        self.signature(shingles).chunks(rows).map(|band| band.iter().fold(0x51_7cc1_b727_220a_u64, |h, &v| mix64(h ^ v))).collect()
    }
}

/// Distinct `(a, b)` pairs with `a < b` that share at least one bucket, in sorted order.
fn candidate_pairs(band_keys: &[Vec<u64>]) -> Vec<(u32, u32)> {
    // Buckets come from sorting, not from a hash map, so members appear in input order.
    let mut entries: Vec<(u32, u64, u32)> = band_keys
        .iter()
        .enumerate()
        .flat_map(|(doc, keys)| keys.iter().enumerate().map(move |(band, &k)| (band as u32, k, doc as u32)))
        .collect();
    entries.par_sort_unstable();

    let mut pairs = Vec::new();
    for bucket in entries.chunk_by(|x, y| (x.0, x.1) == (y.0, y.1)) {
        if bucket.len() > 1 {
            let docs: Vec<u32> = bucket.iter().map(|e| e.2).collect();
            bucket_pairs(&docs, &mut pairs);
        }
    }
    pairs.par_sort_unstable();
    pairs.dedup();
    pairs
}

fn bucket_pairs(docs: &[u32], out: &mut Vec<(u32, u32)>) {
    for (i, &a) in docs.iter().enumerate() {
        if i > 0 {
            out.push((docs[0], a));
        }
        for &b in docs.iter().skip(i + 1).take(BUCKET_WINDOW) {
            out.push((a, b));
        }
    }
}

/// The candidate pairs whose true shingle Jaccard is at least `threshold`, in sorted order.
///
/// Shingles are recomputed here, only for rows in some pair, rather than kept for every row.
fn verify(examples: &[Example], pairs: &[(u32, u32)], ngram: usize, threshold: f64) -> Vec<(u32, u32)> {
    let mut involved: Vec<u32> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    involved.sort_unstable();
    involved.dedup();
    let sets: Vec<Vec<u64>> = involved.par_iter().map(|&d| shingles(&examples[d as usize], ngram)).collect();
    let set_of = |d: u32| &sets[involved.binary_search(&d).expect("involved row")];
    pairs.par_iter().copied().filter(|&(a, b)| jaccard(set_of(a), set_of(b)) >= threshold).collect()
}

/// Jaccard similarity of two sorted, deduplicated sets.
fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

fn count_clusters(keeper_of: &[Option<usize>]) -> u64 {
    let mut keepers: Vec<usize> = keeper_of.iter().flatten().copied().collect();
    keepers.sort_unstable();
    keepers.dedup();
    keepers.len() as u64
}

/// Union-find whose root is always the smallest index in its set, i.e. the earliest row.
struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind { parent: (0..n).collect() }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[hi] = lo;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::Domain;

    fn ex(id: &str, prompt: &str, response: &str) -> Example {
        Example {
            id: id.to_string(),
            source: "t".to_string(),
            domain: Domain::Math,
            prompt: prompt.to_string(),
            response: response.to_string(),
            gold: None,
            tests: None,
            metadata: "{}".to_string(),
            unfinished: false,
            context: vec![],
        }
    }

    fn ids(rows: &[Example]) -> Vec<&str> {
        rows.iter().map(|e| e.id.as_str()).collect()
    }

    /// `n` distinct pseudo-random words: `w{seed}_{k}`.
    fn text(seed: u64, n: usize) -> Vec<String> {
        SplitMix64::new(seed).take(n).map(|x| format!("w{}", x % 100_000)).collect()
    }

    fn cfg() -> NearDedupConfig {
        NearDedupConfig::default()
    }

    #[test]
    fn exact_duplicates_differing_in_case_whitespace_and_nfc_are_dropped() {
        let rows = vec![
            ex("a/0", "What is the café's  price?", "It is 5."),
            ex("a/1", "Something else", "entirely"),
            ex("b/0", "WHAT is the cafe\u{301}'s price?\n", "  it IS 5."),
            ex("b/1", "What is the café's price?", "It is 6."),
        ];
        let (kept, dropped) = exact_dedup(rows);
        assert_eq!(ids(&kept), ["a/0", "a/1", "b/1"]);
        assert_eq!(dropped.len(), 1);
        assert_eq!((dropped[0].id.as_str(), dropped[0].detail.as_str()), ("b/0", "a/0"));
        assert_eq!((dropped[0].stage.as_str(), dropped[0].reason.as_str()), ("exact_dedup", "exact_duplicate"));
    }

    /// The same last exchange after another history is another conversation; the same history,
    /// up to case and spacing, is a duplicate; and a history's turns keep their roles apart.
    #[test]
    fn exact_duplicates_of_a_conversation_share_its_history() {
        use schemas::{Role, Turn};
        let with = |id: &str, history: &[(Role, &str)]| Example {
            context: history.iter().map(|&(role, c)| Turn { role, content: c.to_string() }).collect(),
            ..ex(id, "And 3 + 3?", "6")
        };
        let rows = vec![
            with("a", &[(Role::User, "2 + 2?"), (Role::Assistant, "4")]),
            with("b", &[(Role::User, "2 + 5?"), (Role::Assistant, "7")]),
            with("c", &[(Role::User, "2  +  2?"), (Role::Assistant, "4")]),
            with("d", &[(Role::System, "2 + 2?"), (Role::User, "4")]),
            with("e", &[]),
        ];
        let (kept, dropped) = exact_dedup(rows);
        assert_eq!(ids(&kept), ["a", "b", "d", "e"]);
        assert_eq!((dropped[0].id.as_str(), dropped[0].detail.as_str()), ("c", "a"));
    }

    #[test]
    fn exact_key_keeps_prompt_and_response_apart() {
        let rows = vec![ex("a", "one two", "three"), ex("b", "one", "two three")];
        let (kept, dropped) = exact_dedup(rows);
        assert_eq!(kept.len(), 2);
        assert!(dropped.is_empty());
    }

    #[test]
    fn jaccard_of_hand_built_sets() {
        assert_eq!(jaccard(&[1, 2, 3, 4], &[3, 4, 5, 6]), 2.0 / 6.0);
        assert_eq!(jaccard(&[1, 2], &[1, 2]), 1.0);
        assert_eq!(jaccard(&[1], &[2]), 0.0);
        assert_eq!(jaccard(&[], &[]), 0.0);
        // 60 words, one changed in the middle: 5 of the 56 5-grams differ on each side.
        let a = text(1, 60);
        let mut b = a.clone();
        b[30] = "changed".to_string();
        let (sa, sb) = (shingles(&ex("a", &a.join(" "), ""), 5), shingles(&ex("b", &b.join(" "), ""), 5));
        assert_eq!((sa.len(), sb.len()), (56, 56));
        assert_eq!(jaccard(&sa, &sb), 51.0 / 61.0);
    }

    #[test]
    fn shingles_of_short_and_empty_texts() {
        assert!(shingles(&ex("a", "", " ?! "), 5).is_empty());
        assert_eq!(shingles(&ex("a", "What is", "4?"), 5).len(), 1);
        assert_eq!(shingles(&ex("a", "What is", "4?"), 5), shingles(&ex("b", "what IS 4", ""), 5));
    }

    #[test]
    fn near_duplicate_with_one_word_changed_is_dropped_pointing_at_earlier_row() {
        let a = text(1, 60);
        let mut b = a.clone();
        b[30] = "changed".to_string();
        let rows = vec![
            ex("x/0", &a[..20].join(" "), &a[20..].join(" ")),
            ex("x/1", &text(2, 60).join(" "), ""),
            ex("x/2", &b[..20].join(" "), &b[20..].join(" ")),
        ];
        let (kept, dropped, stats) = near_dedup(rows, &cfg(), 42);
        assert_eq!(ids(&kept), ["x/0", "x/1"]);
        assert_eq!(dropped.len(), 1);
        assert_eq!((dropped[0].id.as_str(), dropped[0].detail.as_str()), ("x/2", "x/0"));
        assert_eq!((dropped[0].stage.as_str(), dropped[0].reason.as_str()), ("near_dedup", "near_duplicate"));
        assert_eq!((stats.verified_pairs, stats.clusters), (1, 1));
    }

    #[test]
    fn unrelated_texts_are_not_merged() {
        let rows: Vec<Example> = (0..50).map(|i| ex(&format!("r/{i}"), &text(100 + i, 40).join(" "), "")).collect();
        let (kept, dropped, stats) = near_dedup(rows, &cfg(), 7);
        assert_eq!(kept.len(), 50);
        assert!(dropped.is_empty());
        assert_eq!(stats.verified_pairs, 0);
    }

    #[test]
    fn colliding_pair_below_threshold_is_not_merged() {
        // The second half of the words replaced: 5-gram Jaccard 26/86, far below 0.8.
        let a = text(3, 60);
        let b: Vec<String> = a[..30].iter().cloned().chain(text(4, 30)).collect();
        let (sa, sb) = (shingles(&ex("", &a.join(" "), ""), 5), shingles(&ex("", &b.join(" "), ""), 5));
        assert_eq!(jaccard(&sa, &sb), 26.0 / 86.0);
        let rows = vec![ex("a", &a.join(" "), ""), ex("b", &b.join(" "), "")];
        // One row per band makes any shared shingle a bucket collision, forcing verification.
        let loose = NearDedupConfig { bands: 64, rows: 1, ..cfg() };
        let (kept, dropped, stats) = near_dedup(rows, &loose, 1);
        assert_eq!(kept.len(), 2);
        assert!(dropped.is_empty());
        assert_eq!(stats.candidate_pairs, 1, "{stats:?}");
        assert_eq!(stats.verified_pairs, 0);
    }

    #[test]
    fn chain_of_near_duplicates_clusters_to_first_row() {
        // A~B and B~C, while A and C alone are below the threshold: C goes to A through B.
        let a = text(5, 80);
        let mut b = a.clone();
        b[20] = "edit1".to_string();
        let mut c = b.clone();
        c[60] = "edit2".to_string();
        let sets: Vec<Vec<u64>> = [&a, &b, &c].iter().map(|w| shingles(&ex("", &w.join(" "), ""), 5)).collect();
        assert!(jaccard(&sets[0], &sets[1]) >= 0.8 && jaccard(&sets[1], &sets[2]) >= 0.8);
        assert!(jaccard(&sets[0], &sets[2]) < 0.8);
        let rows =
            vec![ex("c", &text(6, 30).join(" "), ""), ex("A", &a.join(" "), ""), ex("B", &b.join(" "), ""), ex("C", &c.join(" "), "")];
        let (kept, dropped, stats) = near_dedup(rows, &cfg(), 9);
        assert_eq!(ids(&kept), ["c", "A"]);
        let d: Vec<(&str, &str)> = dropped.iter().map(|d| (d.id.as_str(), d.detail.as_str())).collect();
        assert_eq!(d, [("B", "A"), ("C", "A")]);
        assert_eq!(stats.clusters, 1);
    }

    #[test]
    fn empty_rows_are_never_near_duplicates() {
        let rows = vec![ex("a", "", ""), ex("b", "  ", "..."), ex("c", "", "")];
        let (kept, dropped, _) = near_dedup(rows, &cfg(), 0);
        assert_eq!(kept.len(), 3);
        assert!(dropped.is_empty());
    }

    #[test]
    fn disabled_near_dedup_keeps_everything() {
        let rows = vec![ex("a", "same text here", ""), ex("b", "same text here", "")];
        let off = NearDedupConfig { enabled: false, ..cfg() };
        let (kept, dropped, _) = near_dedup(rows, &off, 0);
        assert_eq!(kept.len(), 2);
        assert!(dropped.is_empty());
    }

    fn planted_corpus() -> Vec<Example> {
        let mut rows = Vec::new();
        // 70 base texts; rows 70.. are one-word variants of them.
        for i in 0..200u64 {
            let mut w = text(1000 + i % 70, 100);
            if i >= 70 {
                w[(i as usize * 7) % 100] = format!("v{i}");
            }
            rows.push(ex(&format!("p/{i}"), &w[..40].join(" "), &w[40..].join(" ")));
        }
        rows
    }

    #[test]
    fn near_dedup_is_deterministic_and_independent_of_thread_count() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| near_dedup(planted_corpus(), &cfg(), 1234))
        };
        let (k1, d1, s1) = run(1);
        let (k2, d2, s2) = run(4);
        let (k3, d3, s3) = run(4);
        assert!(!d1.is_empty() && k1.len() < 200);
        assert_eq!((&k1, &d1, &s1), (&k2, &d2, &s2));
        assert_eq!((&k2, &d2, &s2), (&k3, &d3, &s3));
        let (e1, x1) = exact_dedup(planted_corpus());
        let (e2, x2) = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(|| exact_dedup(planted_corpus()));
        assert_eq!((e1, x1), (e2, x2));
    }

    #[test]
    fn large_buckets_still_collapse_to_the_first_row() {
        // 300 copies of one text with a single word varied: one big bucket per band.
        let base = text(77, 60);
        let rows: Vec<Example> = (0..300)
            .map(|i| {
                let mut w = base.clone();
                w[59] = format!("tail{i}");
                ex(&format!("d/{i}"), &w.join(" "), "")
            })
            .collect();
        let (kept, dropped, stats) = near_dedup(rows, &cfg(), 5);
        assert_eq!(ids(&kept), ["d/0"]);
        assert_eq!(dropped.len(), 299, "every other row dropped, none lost");
        assert!(dropped.iter().all(|d| d.detail == "d/0"));
        assert_eq!(stats.clusters, 1);
        // Bounded pairing: far fewer than the 300·299/2 all-pairs.
        assert!(stats.candidate_pairs < 300 * 299 / 2, "{stats:?}");
    }

    #[test]
    fn minhash_estimate_tracks_true_jaccard() {
        let family = HashFamily::new(99, 256);
        let a = text(21, 200);
        let b: Vec<String> = a.iter().enumerate().map(|(i, w)| if i % 20 == 0 { format!("q{i}") } else { w.clone() }).collect();
        let (sa, sb) = (shingles(&ex("", &a.join(" "), ""), 5), shingles(&ex("", &b.join(" "), ""), 5));
        let truth = jaccard(&sa, &sb);
        let (ga, gb) = (family.signature(&sa), family.signature(&sb));
        let est = ga.iter().zip(&gb).filter(|(x, y)| x == y).count() as f64 / 256.0;
        assert!((est - truth).abs() < 0.12, "estimate {est} vs true {truth}");
    }
}
