//! Stage 5, decontaminate: drop training rows that contain a benchmark prompt.
//!
//! Benchmark prompts are indexed by the hashes of their word `ngram`-grams (after
//! [`normalize`](crate::normalize::normalize) and [`words`]), and every training row's prompt +
//! response is scanned for them. A row overlaps an item when it contains at least
//! `min_overlap` of the item's distinct n-grams. Requiring a fraction rather than a single shared
//! n-gram matters: on GSM8K, one shared 8-gram flags 97 training rows against the test set, and
//! they share only stock phrases such as "how much money will she have left over" (or, for
//! MBPP, our own prompt boilerplate); a planted problem shares all of its n-grams, and a lightly
//! edited one most of them. Hashes are 64-bit, so a false hit needs a hash collision
//! between two different n-grams: negligible at benchmark sizes. A benchmark prompt shorter than
//! `ngram` words has no n-gram; it only matches a training row whose whole prompt has the same
//! word sequence, since a short phrase such as "what is 2 2" would otherwise hit countless
//! unrelated rows.

use crate::normalize::words;
use rayon::prelude::*;
use schemas::manifest::BenchmarkContamination;
use schemas::rng::hash_ngram;
use schemas::{Dropped, Example};
use std::collections::HashMap;

/// Evaluation items to keep out of training data, by benchmark.
#[derive(Debug, Clone)]
pub struct Benchmark {
    pub name: String,
    pub items: Vec<Example>,
    /// Rows of the benchmark's files that could not be read, so could not be checked against.
    pub malformed: usize,
}

/// At most this many `(training id, benchmark id)` pairs per benchmark in the report.
const REPORT_EXAMPLES: usize = 10;

/// A benchmark item found in a training row: word position of the first matching n-gram,
/// benchmark index, item index. Ordering by this tuple is the "first hit" rule.
type Hit = (usize, u32, u32);

/// Drop every training row that overlaps a benchmark prompt, and report the overlap per
/// benchmark (in `benchmarks` order).
///
/// A dropped row's detail is `{benchmark}:{item id}` of its first hit: the earliest n-gram in
/// text order that hits, ties going to the lowest benchmark, then item, index. A whole-prompt
/// match of a short item counts as a hit at position 0.
pub fn decontaminate(
    examples: Vec<Example>,
    benchmarks: &[Benchmark],
    ngram: usize,
    min_overlap: f64,
) -> (Vec<Example>, Vec<Dropped>, Vec<BenchmarkContamination>) {
    assert!(ngram > 0, "recipe validation keeps decontaminate.ngram positive");
    let mut index = Index::build(benchmarks, ngram);
    index.min_overlap = min_overlap;
    let pb = progress::bar(examples.len(), "decontaminate");
    let hits: Vec<Vec<Hit>> = examples
        .par_iter()
        .map(|ex| {
            let h = index.hits(ex);
            pb.inc(1);
            h
        })
        .collect();
    pb.finish_and_clear();

    let report = report(&examples, &hits, benchmarks);
    let mut kept = Vec::with_capacity(examples.len());
    let mut dropped = Vec::new();
    for (ex, row_hits) in examples.into_iter().zip(&hits) {
        match row_hits.first() {
            Some(&(_, b, i)) => {
                let bench = &benchmarks[b as usize];
                let detail = format!("{}:{}", bench.name, bench.items[i as usize].id);
                dropped.push(Dropped::new("decontaminate", "benchmark_overlap", &ex, detail));
            }
            None => kept.push(ex),
        }
    }
    (kept, dropped, report)
}

struct Index {
    ngram: usize,
    /// `(n-gram hash, benchmark, item)`, sorted and distinct; searched by binary search.
    ngrams: Vec<(u64, u32, u32)>,
    /// Word sequence (joined by spaces) of each item shorter than `ngram` words. Used for
    /// lookups only; each list is in (benchmark, item) order.
    short: HashMap<String, Vec<(u32, u32)>>,
    /// Distinct n-grams of each item, by benchmark then item.
    item_ngrams: Vec<Vec<u32>>,
    min_overlap: f64,
}

impl Index {
    fn build(benchmarks: &[Benchmark], ngram: usize) -> Self {
        let mut ngrams = Vec::new();
        let mut short: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        for (b, bench) in benchmarks.iter().enumerate() {
            for (i, item) in bench.items.iter().enumerate() {
                let ws = words(&item.prompt);
                let at = (b as u32, i as u32);
                if ws.len() >= ngram {
                    ngrams.extend(ws.windows(ngram).map(|w| (hash_ngram(w), at.0, at.1)));
                } else if !ws.is_empty() {
                    short.entry(ws.join(" ")).or_default().push(at);
                }
            }
        }
        ngrams.par_sort_unstable();
        ngrams.dedup();
        let mut item_ngrams: Vec<Vec<u32>> = benchmarks.iter().map(|b| vec![0; b.items.len()]).collect();
        for &(_, b, i) in &ngrams {
            item_ngrams[b as usize][i as usize] += 1;
        }
        Index { ngram, ngrams, short, item_ngrams, min_overlap: 0.0 }
    }

    /// Every benchmark item the row overlaps, once each at its earliest position, sorted by
    /// `(position, benchmark, item)`.
    fn hits(&self, ex: &Example) -> Vec<Hit> {
        let prompt_words = words(&ex.prompt);
        let mut hits: Vec<Hit> = Vec::new();
        // Each earlier turn's words, once (none for a single-turn example).
        let earlier: Vec<(schemas::Role, Vec<String>)> = ex.context.iter().map(|t| (t.role, words(&t.content))).collect();
        if !self.short.is_empty() {
            // A short benchmark question matches a user turn that is exactly it: the prompt,
            // or an earlier user turn of a conversation.
            let users = earlier.iter().filter(|(role, _)| *role == schemas::Role::User).map(|(_, w)| w);
            for turn in std::iter::once(&prompt_words).chain(users).filter(|w| !w.is_empty()) {
                if let Some(items) = self.short.get(&turn.join(" ")) {
                    hits.extend(items.iter().map(|&(b, i)| (0, b, i)));
                }
            }
        }
        if !self.ngrams.is_empty() {
            // Words of the earlier turns, the prompt and the response: a newline only separates words.
            let mut text: Vec<String> = earlier.into_iter().flat_map(|(_, w)| w).collect();
            text.extend(prompt_words);
            text.extend(words(&ex.response));
            // Each distinct n-gram of the row once, at its earliest position.
            let mut grams: Vec<(u64, usize)> = text.windows(self.ngram).enumerate().map(|(pos, w)| (hash_ngram(w), pos)).collect();
            grams.sort_unstable();
            grams.dedup_by_key(|g| g.0);
            let mut matched: Vec<Hit> =
                grams.iter().flat_map(|&(hash, pos)| self.lookup(hash).map(move |&(_, b, i)| (pos, b, i))).collect();
            // Count shared n-grams per item; keep items over the threshold, at their first hit.
            matched.sort_unstable_by_key(|&(pos, b, i)| (b, i, pos));
            for group in matched.chunk_by(|x, y| (x.1, x.2) == (y.1, y.2)) {
                let (_, b, i) = group[0];
                let total = self.item_ngrams[b as usize][i as usize] as f64;
                if group.len() as f64 >= (self.min_overlap * total).max(1.0) {
                    hits.push(group[0]);
                }
            }
        }
        first_per_item(hits)
    }

    fn lookup(&self, hash: u64) -> impl Iterator<Item = &(u64, u32, u32)> {
        let start = self.ngrams.partition_point(|e| e.0 < hash);
        self.ngrams[start..].iter().take_while(move |e| e.0 == hash)
    }
}

/// Keep each item's earliest hit only, so a verbatim copy of a long problem is one hit, not one
/// per n-gram.
fn first_per_item(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_unstable_by_key(|&(pos, b, i)| (b, i, pos));
    hits.dedup_by_key(|&mut (_, b, i)| (b, i));
    hits.sort_unstable();
    hits
}

/// Per benchmark: rows that hit it (each row once), distinct items hit, and the first few
/// `(training id, item id)` pairs in input order, each row paired with its first hit in that
/// benchmark.
fn report(examples: &[Example], hits: &[Vec<Hit>], benchmarks: &[Benchmark]) -> Vec<BenchmarkContamination> {
    let mut out: Vec<BenchmarkContamination> = benchmarks
        .iter()
        .map(|b| BenchmarkContamination {
            benchmark: b.name.clone(),
            items: b.items.len() as u64,
            malformed_items: b.malformed as u64,
            contaminated_rows: 0,
            contaminated_items: 0,
            examples: Vec::new(),
        })
        .collect();
    let mut item_hit: Vec<Vec<bool>> = benchmarks.iter().map(|b| vec![false; b.items.len()]).collect();
    for (ex, row_hits) in examples.iter().zip(hits) {
        let mut benches_seen: Vec<u32> = Vec::new();
        for &(_, b, i) in row_hits {
            let (bu, iu) = (b as usize, i as usize);
            if !item_hit[bu][iu] {
                item_hit[bu][iu] = true;
                out[bu].contaminated_items += 1;
            }
            if !benches_seen.contains(&b) {
                benches_seen.push(b);
                out[bu].contaminated_rows += 1;
                if out[bu].examples.len() < REPORT_EXAMPLES {
                    out[bu].examples.push((ex.id.clone(), benchmarks[bu].items[iu].id.clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::Domain;

    fn ex(id: &str, prompt: &str, response: &str) -> Example {
        Example {
            id: id.to_string(),
            source: id.split('/').next().unwrap_or("").to_string(),
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

    fn bench(name: &str, prompts: &[&str]) -> Benchmark {
        let items = prompts.iter().enumerate().map(|(i, p)| ex(&format!("{name}/{i}"), p, "")).collect();
        Benchmark { name: name.to_string(), items, malformed: 0 }
    }

    fn ids(rows: &[Example]) -> Vec<&str> {
        rows.iter().map(|e| e.id.as_str()).collect()
    }

    fn details(drops: &[Dropped]) -> Vec<(&str, &str)> {
        drops.iter().map(|d| (d.id.as_str(), d.detail.as_str())).collect()
    }

    const POLAR: &str = "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your \
                         answer in the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$";
    const DOMAIN: &str = "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.";

    #[test]
    fn planted_benchmark_problems_are_caught_verbatim_and_reformatted() {
        let math500 = bench("math500", &[DOMAIN, POLAR]);
        let rows = vec![
            ex("train/0", "What is the sum of the first ten positive integers?", "55"),
            ex("train/1", POLAR, "The answer is $(3, \\frac{\\pi}{2})$."),
            ex(
                "train/2",
                "CONVERT the point (0, 3) in rectangular\ncoordinates to polar coordinates! enter your answer \
                 in the form (r, \\theta) where r>0 and 0 \\le \\theta < 2\\pi",
                "",
            ),
            ex("train/3", "Solve the following problem.", &format!("Problem: {DOMAIN}\nSolution: [2, 5).")),
            ex("train/4", "Convert the point (1, 1) to polar form.", "sqrt 2"),
        ];
        let (kept, dropped, report) = decontaminate(rows, &[math500], 8, 0.5);
        assert_eq!(ids(&kept), ["train/0", "train/4"]);
        assert_eq!(
            details(&dropped),
            [("train/1", "math500:math500/1"), ("train/2", "math500:math500/1"), ("train/3", "math500:math500/0")]
        );
        assert!(dropped.iter().all(|d| d.stage == "decontaminate" && d.reason == "benchmark_overlap"));
        assert_eq!((report[0].items, report[0].contaminated_rows, report[0].contaminated_items), (2, 3, 2));
    }

    #[test]
    fn shared_seven_word_phrase_is_not_an_overlap_at_ngram_8() {
        let b = bench("b", &["the quick brown fox jumps over the lazy dog and runs far away"]);
        let rows = vec![ex("t/0", "I saw that the quick brown fox jumps over the cat", "")];
        let (kept, dropped, report) = decontaminate(rows.clone(), std::slice::from_ref(&b), 8, 0.5);
        assert_eq!((kept.len(), dropped.len(), report[0].contaminated_rows), (1, 0, 0));
        // The same row does overlap at n = 7, so the test above is about n, not about matching.
        let (_, dropped, _) = decontaminate(rows, &[b], 7, 0.0);
        assert_eq!(dropped.len(), 1);
    }

    #[test]
    fn stock_phrases_are_not_overlap_but_edited_copies_are() {
        let item = "Kim has 12 apples and buys 3 more bags with 4 apples each at the market. \
                    How much money will she have left over after buying a cake for 5 dollars?";
        let b = bench("gsm", &[item]);
        let rows = vec![
            // Shares one stock 8-gram ("how much money will she have left over") and nothing else.
            ex("t/0", "Tom earns 9 dollars a day. How much money will she have left over?", ""),
            // The item with one word changed in the middle: most 8-grams survive.
            ex("t/1", &item.replace("bags", "boxes"), "solution"),
        ];
        let (kept, dropped, _) = decontaminate(rows.clone(), std::slice::from_ref(&b), 8, 0.5);
        assert_eq!(ids(&kept), ["t/0"]);
        assert_eq!(details(&dropped), [("t/1", "gsm:gsm/0")]);
        // With the threshold at zero, a single shared n-gram is enough.
        let (kept, _, _) = decontaminate(rows, &[b], 8, 0.0);
        assert!(kept.is_empty());
    }

    #[test]
    fn short_benchmark_item_matches_only_a_whole_prompt() {
        let b = bench("arith", &["What is 2+2?"]);
        let rows = vec![
            ex("t/0", "what is 2 + 2", "4"),
            ex("t/1", "What is 2+2? Explain your reasoning.", "4"),
            ex("t/2", "Answer this.", "What is 2+2?"),
            ex("t/3", "What is 22?", "22"),
        ];
        let (kept, dropped, report) = decontaminate(rows, &[b], 8, 0.5);
        assert_eq!(ids(&kept), ["t/1", "t/2", "t/3"]);
        assert_eq!(details(&dropped), [("t/0", "arith:arith/0")]);
        assert_eq!((report[0].contaminated_rows, report[0].contaminated_items), (1, 1));
    }

    #[test]
    fn first_hit_is_earliest_in_text_then_lowest_index() {
        let a = "alpha beta gamma delta epsilon zeta eta theta iota kappa";
        let b = "one two three four five six seven eight nine ten";
        // Item 1 appears first in the text, so it is named although item 0 is also present.
        let bs = [bench("x", &[a, b]), bench("y", &[b])];
        let rows = vec![ex("t/0", b, a)];
        let (_, dropped, report) = decontaminate(rows, &bs, 8, 0.5);
        assert_eq!(details(&dropped), [("t/0", "x:x/1")]);
        // Same position in two benchmarks: the lower benchmark index wins; both are reported.
        assert_eq!(report[0].examples, [("t/0".to_string(), "x/1".to_string())]);
        assert_eq!(report[1].examples, [("t/0".to_string(), "y/0".to_string())]);
        assert_eq!((report[0].contaminated_rows, report[0].contaminated_items), (1, 2));
        assert_eq!((report[1].contaminated_rows, report[1].contaminated_items), (1, 1));
    }

    #[test]
    fn report_counts_rows_once_per_benchmark_and_caps_examples() {
        let b0 = bench("b0", &[POLAR, DOMAIN, "an item nobody ever copies into the training data at all"]);
        let b1 = bench("b1", &[POLAR]);
        let mut rows: Vec<Example> = (0..12).map(|k| ex(&format!("t/{k}"), &format!("Question {k}: {POLAR}"), "")).collect();
        rows.push(ex("t/12", DOMAIN, POLAR));
        rows.push(ex("t/13", "clean row with nothing in common", ""));
        let (kept, dropped, report) = decontaminate(rows, &[b0, b1], 8, 0.5);
        assert_eq!(ids(&kept), ["t/13"]);
        assert_eq!(dropped.len(), 13);
        assert_eq!(dropped[12].detail, "b0:b0/1");

        assert_eq!((report[0].benchmark.as_str(), report[0].items), ("b0", 3));
        assert_eq!((report[0].contaminated_rows, report[0].contaminated_items), (13, 2));
        assert_eq!(report[0].examples.len(), 10);
        let first: Vec<(String, String)> = (0..10).map(|k| (format!("t/{k}"), "b0/0".to_string())).collect();
        assert_eq!(report[0].examples, first);

        assert_eq!((report[1].items, report[1].contaminated_rows, report[1].contaminated_items), (1, 13, 1));
    }

    #[test]
    fn empty_and_missing_benchmarks_drop_nothing() {
        let rows = vec![ex("t/0", "", ""), ex("t/1", "some prompt", "some response")];
        let (kept, dropped, report) = decontaminate(rows.clone(), &[], 8, 0.5);
        assert_eq!((kept.len(), dropped.len(), report.len()), (2, 0, 0));
        let (kept, _, report) = decontaminate(rows, &[bench("e", &["", "  ?! "])], 8, 0.5);
        assert_eq!(kept.len(), 2);
        assert_eq!((report[0].items, report[0].contaminated_rows), (2, 0));
    }

    #[test]
    fn result_does_not_depend_on_thread_count() {
        let bs = [bench("b0", &[POLAR, DOMAIN]), bench("b1", &["What is 2+2?"])];
        let rows: Vec<Example> = (0..60)
            .map(|k| match k % 3 {
                0 => ex(&format!("t/{k}"), POLAR, ""),
                1 => ex(&format!("t/{k}"), "What is 2 + 2", ""),
                _ => ex(&format!("t/{k}"), &format!("unrelated question number {k}"), DOMAIN),
            })
            .collect();
        let run = |n: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
            pool.install(|| decontaminate(rows.clone(), &bs, 8, 0.5))
        };
        assert_eq!(run(1), run(4));
    }
}
