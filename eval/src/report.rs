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

pub fn write_results(path: &Path, results: &[SampleResult]) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    for r in results {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    std::fs::create_dir_all(path.parent().expect("results/ folder"))?;
    schemas::write_atomic(path, &buf)
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
/// that evaluated different settings or snapshots are compared anyway, with a note saying so.
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
        if a.samples != b.samples || a.sampling != b.sampling || a.limit != b.limit {
            md.push_str(&format!("note: {label} was evaluated with other settings than {}\n\n", runs[0].0));
        }
    }
    let k = c.samples;
    let mut head = "| benchmark | prompts |".to_string();
    let mut rule = "|---|---:|".to_string();
    for (i, (label, _)) in runs.iter().enumerate() {
        head.push_str(&format!(" {label} Average@{k} |"));
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
