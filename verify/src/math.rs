//! Math answer verification: is a model's final answer the gold answer?
//!
//! Pipeline: [`extract`] the final answer from the output (see `extract.rs` for the tiers), then
//! normalise both answers' LaTeX (`normalize.rs`), parse them into lists, tuples, intervals, sets,
//! relations, matrices and expressions (`parse.rs`), and compare (`compare.rs`) with exact
//! rational arithmetic (`num.rs`) and evaluation (`eval.rs`). No model, no CAS: what cannot be
//! decided this way is "not equal".
//!
//! The conventions follow Hugging Face Math-Verify, the checker the DFT paper used to label
//! rejection-sampled responses, and are tested against its own test cases
//! (`tests/math_verify_cases.rs`). In brief:
//!
//! - Numbers are exact rationals on `i128`: `\frac{2}{4}` = `0.5` = `1/2`. A value past the `i128`
//!   range is never compared approximately; it is "not equal" (unless the texts are identical).
//! - **Scientific notation.** `4.5e33` and `1E-5` are 4.5 × 10^33 and 10^-5, exactly, so
//!   `4.5 \times 10^{33}` and `0.00001` match them (Minerva writes its golds so); `e-5` is still
//!   Euler's number minus 5.
//! - **Tolerance.** A number written with a decimal point (or in scientific notation) may be
//!   rounded, so a comparison that involves one accepts agreement to
//!   [`CompareOptions::float_digits`] decimal places (default 6, Math-Verify's `float_rounding`):
//!   `1/3` = `0.333333`, but not `0.3333` unless `float_digits` is 4. It must also agree to
//!   `float_digits - 2` significant digits (a relative 1e-4 at 6, Qwen2.5-Math's `math_equal`),
//!   which only decides below a magnitude of 0.005: `3.89 \times 10^{-10}` is not `0` nor
//!   `4 \times 10^{-10}`. There is deliberately no looser relative tolerance for large values:
//!   `1000.1` is not `1000`. Values only computed in floating point (`\sqrt{2}`, `\pi`, `\sin`)
//!   must agree to a relative 1e-9, far above `f64` noise (absolute 1e-12 near 0, where the
//!   noise is that of the terms that cancelled).
//! - Expressions with variables are equal when they agree at 10 deterministic sample points
//!   (small integers and positive and negative fractions, exact where the arithmetic is
//!   rational), of which at least 3 must be defined on both sides.
//! - Sets and bare lists compare in any order; tuples in order; a list against a tuple in order;
//!   `(a, b)` is both a pair and an open interval; `\pm` stands for both values.
//! - `x = 3` vs `3`: an assignment's value is the answer; `2x + z = 1` vs `1` is not equal.
//! - `28\%` matches `28` and `0.28`; units (`\text{ cm}`, "miles"), degrees and `$` are dropped.
//! - `15\frac{39}{40}` and `4 4/9` are mixed numbers; `204_5` is compared by its digits (`204`).
//!
//! Every check is bounded: outputs are scanned over their last 64 KiB, answers longer than
//! [`MAX_ANSWER_BYTES`] compare only as identical text, parsing has depth and size limits,
//! evaluation has a step budget, exact exponents and factorials are capped, and a panic anywhere
//! is caught and reported as "not equal" / "no answer".

mod compare;
mod eval;
mod extract;
mod normalize;
mod num;
mod parse;

pub(crate) use parse::join_thousands;

use anyhow::Context;
use rayon::prelude::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Longer answers are only compared as identical text: real answers are far shorter, and parsing
/// cost should not depend on what a model chooses to emit.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// How to find the final answer in an output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// With nothing else to go on, take the last plain number or arithmetic expression in the
    /// text. Right for GSM8K-style benchmarks whose answers are bare numbers; wrong for MATH-style
    /// ones, where the last number of a derivation is usually not the answer.
    pub last_number_fallback: bool,
}

impl ExtractOptions {
    pub const MATH: ExtractOptions = ExtractOptions { last_number_fallback: false };
    pub const GSM8K: ExtractOptions = ExtractOptions { last_number_fallback: true };

    /// The options for an evaluation benchmark by name (`gsm8k_test`, `math500`, `aime24`, ...):
    /// only GSM8K answers are bare numbers at the end of free text.
    pub fn for_benchmark(name: &str) -> ExtractOptions {
        if name.to_ascii_lowercase().starts_with("gsm8k") {
            Self::GSM8K
        } else {
            Self::MATH
        }
    }
}

/// How strictly to compare two answers. The defaults are Math-Verify's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompareOptions {
    /// Decimal places to which a written decimal must agree (see the module docs).
    pub float_digits: u32,
    /// Variable names matter: `f(x)` ≠ `f(y)`. When false, the variables of the prediction are
    /// matched to the gold's by name order.
    pub strict_variables: bool,
    /// Accept a relation (`-2 ≤ x ≤ 7`) for a gold written as a set (`[-2, 7]`). The other way
    /// round is always accepted.
    pub allow_set_relation: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions { float_digits: 6, strict_variables: true, allow_set_relation: false }
    }
}

/// The final answer in `text`, as written there (LaTeX, not yet normalised); plain numbers found
/// by the number rules come back normalised (`1,000.5` → `1000.5`).
pub fn extract(text: &str, opts: &ExtractOptions) -> Option<String> {
    guarded(|| extract::extract(text, opts)).flatten()
}

/// Whether two answers (already extracted: `\frac{1}{2}`, `$x=3$`, `(1, 2)`) are the same, with
/// the default [`CompareOptions`]. Not symmetric: `gold` comes first (see [`CompareOptions`] and
/// the assignment rule in the module docs).
pub fn equivalent(gold: &str, pred: &str) -> bool {
    equivalent_with(gold, pred, &CompareOptions::default())
}

pub fn equivalent_with(gold: &str, pred: &str, opts: &CompareOptions) -> bool {
    guarded(|| compare_answers(gold, pred, opts)).unwrap_or(false)
}

fn compare_answers(gold: &str, pred: &str, opts: &CompareOptions) -> bool {
    if gold.trim().is_empty() || pred.trim().is_empty() {
        return false;
    }
    if gold.len() > MAX_ANSWER_BYTES || pred.len() > MAX_ANSWER_BYTES {
        return normalize::squeeze(gold) == normalize::squeeze(pred);
    }
    let (g, p) = (normalize::normalize(gold), normalize::normalize(pred));
    if g.is_empty() || p.is_empty() {
        return false;
    }
    if normalize::squeeze(&g) == normalize::squeeze(&p) {
        return true;
    }
    let (g, p) = (parse::parse_answer(&g), parse::parse_answer(&p));
    compare::Comparer::new(opts).equal(&g, &p)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The answer found in the prediction; `None` when there was none (then `correct` is false).
    pub extracted: Option<String>,
    pub correct: bool,
}

/// Extracts the answer from `prediction` (a whole model output) and compares it with `gold`.
pub fn verify(gold: &str, prediction: &str, opts: &ExtractOptions) -> Verdict {
    verify_with(gold, prediction, opts, &CompareOptions::default())
}

pub fn verify_with(gold: &str, prediction: &str, extract_opts: &ExtractOptions, compare_opts: &CompareOptions) -> Verdict {
    let extracted = extract(prediction, extract_opts);
    let correct = extracted.as_deref().is_some_and(|p| equivalent_with(&gold_answer(gold, extract_opts), p, compare_opts));
    Verdict { extracted, correct }
}

/// The answer a gold field stands for. A list of math pieces whose outermost `$` a dataset
/// stripped (`f(n)=n$, $g(n)=1`) is that list. Otherwise a gold with markup (a box, math
/// delimiters, "answer", `####`) is a solution and goes through [`extract`]; a plain gold is the
/// answer itself (`x^2+1`, `\frac{1}{2}`), except that with the number fallback a gold that is
/// one number is read like a predicted number (`1,000` → `1000`, `1,5` → `1.5`).
pub fn gold_answer(gold: &str, opts: &ExtractOptions) -> String {
    guarded(|| {
        if let Some(list) = extract::stripped_math_list(gold) {
            return Some(list);
        }
        let marked = ["\\boxed", "\\fbox", "$", "\\(", "\\[", "####"].iter().any(|m| gold.contains(m))
            || gold.to_ascii_lowercase().contains("answer");
        if marked {
            extract::extract(gold, opts)
        } else if opts.last_number_fallback {
            extract::whole_number(gold.trim())
        } else {
            None
        }
    })
    .flatten()
    .unwrap_or_else(|| gold.trim().to_string())
}

/// The letter (or other option string) a multiple-choice output picks, as written: "final
/// answer is X", "answer: X", "answer ... X", an option at the very start (`A. because ...`),
/// else the last option standing alone. `None` when no option appears as a word.
pub fn extract_choice(text: &str, choices: &[&str]) -> Option<String> {
    guarded(|| extract::choice(text, choices)).flatten()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: usize,
    pub correct: usize,
    /// Lines whose prediction had no extractable answer.
    pub no_answer: usize,
}

/// Lines processed in parallel at a time; output order is input order.
const JSONL_CHUNK: usize = 2048;

/// Reads JSON lines with `gold` and `prediction` fields and writes each line back with every
/// original field plus `extracted` (string or null) and `correct` (bool). Blank lines are
/// skipped. The output appears atomically (temporary file, then rename) and only when every line
/// was valid; errors name the file and line.
pub fn verify_jsonl(input: &Path, output: &Path, opts: &ExtractOptions) -> anyhow::Result<Summary> {
    let file = std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    schemas::write_atomic_with(output, |w| write_verified(BufReader::new(file), input, w, opts))
}

fn write_verified(reader: impl BufRead, input: &Path, w: &mut impl Write, opts: &ExtractOptions) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut lines = reader.lines().enumerate();
    loop {
        let mut chunk = Vec::with_capacity(JSONL_CHUNK);
        for (i, line) in lines.by_ref() {
            let line = line.with_context(|| format!("{}:{}: cannot read line", input.display(), i + 1))?;
            if !line.trim().is_empty() {
                chunk.push((i + 1, line));
            }
            if chunk.len() == JSONL_CHUNK {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        let rows: Vec<anyhow::Result<(String, Verdict)>> =
            chunk.par_iter().map(|(n, line)| verify_line(line, opts).with_context(|| format!("{}:{n}", input.display()))).collect();
        for row in rows {
            let (json, verdict) = row?;
            summary.lines += 1;
            summary.correct += usize::from(verdict.correct);
            summary.no_answer += usize::from(verdict.extracted.is_none());
            w.write_all(json.as_bytes())?;
            w.write_all(b"\n")?;
        }
    }
    Ok(summary)
}

fn verify_line(line: &str, opts: &ExtractOptions) -> anyhow::Result<(String, Verdict)> {
    let mut row: serde_json::Map<String, Value> = serde_json::from_str(line).context("not a JSON object")?;
    if !row.contains_key("gold") && row.contains_key("completion") && row.contains_key("prompt_id") {
        anyhow::bail!(
            "no field `gold`: this is an evaluation's results file, whose gold answers are in its snapshot; run the \
             same `trainer eval` again to grade it with this verifier"
        );
    }
    let gold = text_field(&row, "gold")?;
    let prediction = text_field(&row, "prediction")?;
    let verdict = verify(&gold, &prediction, opts);
    row.insert("extracted".into(), verdict.extracted.clone().map_or(Value::Null, Value::String));
    row.insert("correct".into(), Value::Bool(verdict.correct));
    Ok((serde_json::to_string(&row)?, verdict))
}

/// A string field; a number (a gold such as `42`) is read as its JSON text.
fn text_field(row: &serde_json::Map<String, Value>, key: &str) -> anyhow::Result<String> {
    match row.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => anyhow::bail!("field `{key}` is not a string: {other}"),
        None => anyhow::bail!("no field `{key}`"),
    }
}

/// Last line of defence: the checks are bounded by construction, but an unforeseen panic in one
/// line must not take down a whole evaluation run.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

#[cfg(test)]
mod tests;
