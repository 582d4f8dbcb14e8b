//! What an evaluation writes: every sample in `results/<bench>.jsonl`, and `summary.json` /
//! `summary.md` with the model's and each snapshot's hashes.

use model::generate::Finish;
use model::sampling::Sampling;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Settings of one evaluation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    pub samples: usize,
    pub sampling: Sampling,
    /// First N prompts of each benchmark (snapshot order), for quick runs.
    pub limit: Option<usize>,
    /// Sequences decoded together; each CPU thread decodes one batch at a time.
    pub batch_size: usize,
    /// What computed the logits; results are reused only from the same engine (empty in
    /// summaries written before it was recorded).
    #[serde(default)]
    pub engine: String,
}

/// One line of `results/<bench>.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleResult {
    pub bench: String,
    pub prompt_id: String,
    pub sample: usize,
    pub completion: String,
    /// Math: the answer found in the completion; code: the code that was run.
    pub extracted: Option<String>,
    pub correct: bool,
    pub finish: Finish,
    pub new_tokens: usize,
    /// Code: how the sandboxed run ended (`Passed`, `Failed { .. }`, `Timeout`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Per-benchmark figures of `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSummary {
    pub bench: String,
    pub snapshot_id: String,
    pub snapshot: String,
    pub prompts: usize,
    pub samples: usize,
    /// Mean over prompts of the fraction of correct samples (greedy accuracy when K = 1, T = 0).
    pub average_at_k: f64,
    /// Unbiased pass@k (Chen et al. 2021) for k = 1 and k = K.
    pub pass_at_1: f64,
    pub pass_at_k: f64,
    /// Samples cut off by `max_new_tokens` rather than ended by the model.
    pub truncated: usize,
    pub mean_new_tokens: f64,
    pub generation_seconds: f64,
    pub new_tokens_per_second: f64,
    /// sha256 of `results/<bench>.jsonl` as written with these figures: results are reused only
    /// while the file is still that one (empty in summaries written before it was recorded).
    #[serde(default)]
    pub results_sha256: String,
    /// The ids that ended a completion (`model::generate::stop_ids` of the snapshot's
    /// tokenizer): results are reused only for the same stops (empty in summaries written before
    /// they were recorded).
    #[serde(default)]
    pub stop_ids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub model: String,
    pub model_sha256: String,
    /// The version of the verifier and sandbox that graded the samples (absent in summaries
    /// written before it was recorded).
    #[serde(default)]
    pub verifier_version: String,
    pub config: EvalConfig,
    pub benchmarks: Vec<BenchSummary>,
}

/// Writes the results (atomically) and returns their sha256.
pub fn write_results(path: &Path, results: &[SampleResult]) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    for r in results {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    std::fs::create_dir_all(path.parent().expect("results/ folder"))?;
    schemas::write_atomic(path, &buf)?;
    Ok(schemas::sha256_hex(&buf))
}

/// The summary as a Markdown table, model and snapshots named by hash.
pub fn markdown(s: &Summary) -> String {
    let c = &s.config;
    let mut md = format!(
        "model: `{}` (sha256 `{}`)\n\nK = {} samples, temperature {}, top-p {}, top-k {}, max {} new tokens, seed {}{}\n\n",
        s.model,
        &s.model_sha256[..16.min(s.model_sha256.len())],
        c.samples,
        c.sampling.temperature,
        c.sampling.top_p,
        c.sampling.top_k,
        c.sampling.max_new_tokens,
        c.sampling.seed,
        c.limit.map(|l| format!(", first {l} prompts per benchmark")).unwrap_or_default()
    );
    let k = c.samples;
    // With K = 1, pass@1 and pass@K are the same column.
    let kcol = if k > 1 { format!(" pass@{k} |") } else { String::new() };
    md.push_str(&format!("| benchmark | snapshot | prompts | Average@{k} | pass@1 |{kcol} truncated | mean new tokens | tokens/s |\n"));
    md.push_str(&format!("|---|---|---:|---:|---:|{}---:|---:|---:|\n", if k > 1 { "---:|" } else { "" }));
    for b in &s.benchmarks {
        let kval = if k > 1 { format!(" {:.1}% |", 100.0 * b.pass_at_k) } else { String::new() };
        md.push_str(&format!(
            "| {} | `{}` | {} | {:.1}% | {:.1}% |{kval} {} | {:.0} | {:.0} |\n",
            b.bench,
            b.snapshot_id,
            b.prompts,
            100.0 * b.average_at_k,
            100.0 * b.pass_at_1,
            b.truncated,
            b.mean_new_tokens,
            b.new_tokens_per_second
        ));
    }
    md
}

/// Writes `summary.json` and `summary.md` into `out_dir` (atomically).
pub fn write_summary(out_dir: &Path, s: &Summary) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let mut json = serde_json::to_vec_pretty(s)?;
    json.write_all(b"\n")?;
    schemas::write_atomic(&out_dir.join("summary.json"), &json)?;
    schemas::write_atomic(&out_dir.join("summary.md"), markdown(s).as_bytes())
}

/// Evaluations side by side, the first as the baseline: per benchmark, each run's Average@K
/// (with the difference to the baseline in points), truncated samples and mean new tokens. Runs
/// that evaluated different settings, engines, verifiers or snapshots are compared anyway, with a
/// note saying what differs; benchmarks the baseline lacks are named, not shown.
pub fn compare_markdown(runs: &[(String, Summary)]) -> String {
    let mut md = String::new();
    let Some((_, base)) = runs.first() else { return md };
    for (label, s) in runs {
        md.push_str(&format!("- {label}: `{}` (sha256 `{}`)\n", s.model, &s.model_sha256[..16.min(s.model_sha256.len())]));
    }
    let c = &base.config;
    md.push_str(&format!(
        "\nK = {}, temperature {}, max {} new tokens{}\n\n",
        c.samples,
        c.sampling.temperature,
        c.sampling.max_new_tokens,
        c.limit.map(|l| format!(", first {l} prompts per benchmark")).unwrap_or_default()
    ));
    for (label, s) in &runs[1..] {
        let (a, b) = (&s.config, &base.config);
        let mut other = vec![];
        if a.samples != b.samples {
            other.push(format!("K = {}", a.samples));
        }
        if a.sampling != b.sampling {
            other.push("sampling settings".to_string());
        }
        if a.limit != b.limit {
            other.push(format!("prompts per benchmark {}", a.limit.map_or("all".to_string(), |l| l.to_string())));
        }
        if a.engine != b.engine {
            other.push(format!("engine `{}`", a.engine));
        }
        // Another verifier grades the same completions otherwise.
        if s.verifier_version != base.verifier_version {
            other.push(format!("verifier {}", s.verifier_version));
        }
        if !other.is_empty() {
            md.push_str(&format!("note: {label} differs from {}: {}\n\n", runs[0].0, other.join(", ")));
        }
        let extra: Vec<&str> =
            s.benchmarks.iter().filter(|x| !base.benchmarks.iter().any(|b| b.bench == x.bench)).map(|x| x.bench.as_str()).collect();
        if !extra.is_empty() {
            md.push_str(&format!("note: {label} also evaluated {}, which {} did not: not shown\n\n", extra.join(", "), runs[0].0));
        }
    }
    let mut head = "| benchmark | prompts |".to_string();
    let mut rule = "|---|---:|".to_string();
    for (i, (label, s)) in runs.iter().enumerate() {
        head.push_str(&format!(" {label} Average@{} |", s.config.samples));
        rule.push_str("---:|");
        if i > 0 {
            head.push_str(" Δ |");
            rule.push_str("---:|");
        }
    }
    for (label, _) in runs {
        head.push_str(&format!(" {label} truncated | {label} mean new tokens |"));
        rule.push_str("---:|---:|");
    }
    md.push_str(&format!("{head}\n{rule}\n"));
    for b in &base.benchmarks {
        let found: Vec<Option<&BenchSummary>> = runs.iter().map(|(_, s)| s.benchmarks.iter().find(|x| x.bench == b.bench)).collect();
        let mut line = format!("| {} | {} |", b.bench, b.prompts);
        for (i, f) in found.iter().enumerate() {
            match f {
                Some(x) => {
                    let mark = if x.snapshot_id != b.snapshot_id || x.prompts != b.prompts { "*" } else { "" };
                    line.push_str(&format!(" {:.1}%{mark} |", 100.0 * x.average_at_k));
                    if i > 0 {
                        line.push_str(&format!(" {:+.1} |", 100.0 * (x.average_at_k - b.average_at_k)));
                    }
                }
                None => line.push_str(if i > 0 { " – | – |" } else { " – |" }),
            }
        }
        for f in &found {
            match f {
                Some(x) => line.push_str(&format!(" {} | {:.0} |", x.truncated, x.mean_new_tokens)),
                None => line.push_str(" – | – |"),
            }
        }
        md.push_str(&line);
        md.push('\n');
    }
    let differs =
        |x: &BenchSummary| base.benchmarks.iter().any(|b| b.bench == x.bench && (b.snapshot_id != x.snapshot_id || b.prompts != x.prompts));
    if runs.iter().any(|(_, s)| s.benchmarks.iter().any(differs)) {
        md.push_str("\n* another snapshot or number of prompts than the baseline's\n");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(engine: &str, verifier: &str, samples: usize, benches: &[(&str, f64)]) -> Summary {
        Summary {
            model: "m".into(),
            model_sha256: "ab".repeat(32),
            verifier_version: verifier.into(),
            config: EvalConfig { samples, sampling: Sampling::greedy(8), limit: Some(30), batch_size: 8, engine: engine.into() },
            benchmarks: benches
                .iter()
                .map(|&(bench, avg)| BenchSummary {
                    bench: bench.into(),
                    snapshot_id: "s".into(),
                    snapshot: "snap".into(),
                    prompts: 30,
                    samples,
                    average_at_k: avg,
                    pass_at_1: avg,
                    pass_at_k: avg,
                    truncated: 0,
                    mean_new_tokens: 1.0,
                    generation_seconds: 1.0,
                    new_tokens_per_second: 1.0,
                    results_sha256: String::new(),
                    stop_ids: vec![2],
                })
                .collect(),
        }
    }

    #[test]
    fn compare_names_what_differs_and_what_it_leaves_out() {
        let base = run("host", "0.1.0+a", 1, &[("gsm8k_test", 0.5)]);
        let same = run("host", "0.1.0+a", 1, &[("gsm8k_test", 0.6)]);
        let md = compare_markdown(&[("base".into(), base.clone()), ("dft".into(), same)]);
        assert!(!md.contains("note:"), "{md}");
        assert!(md.contains("| gsm8k_test | 30 | 50.0% | 60.0% | +10.0 |"), "{md}");

        let other = run("burn cuda, f32 matmuls", "0.1.0+b", 4, &[("gsm8k_test", 0.25), ("math500", 0.1)]);
        let md = compare_markdown(&[("base".into(), base), ("gpu".into(), other)]);
        assert!(md.contains("note: gpu differs from base: K = 4, engine `burn cuda, f32 matmuls`, verifier 0.1.0+b"), "{md}");
        assert!(md.contains("note: gpu also evaluated math500, which base did not: not shown"), "{md}");
        assert!(md.contains("base Average@1 | gpu Average@4 |"), "{md}");
    }
}
