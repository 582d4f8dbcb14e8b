//! What an evaluation writes: every sample in `results/<bench>.jsonl`, and `summary.json` /
//! `summary.md` with the model's and each snapshot's hashes.

use anyhow::Context;
use model::generate::Finish;
use model::sampling::Sampling;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// Average@K's 95% Wilson interval over the prompts, as fractions, for readers of
    /// `summary.json` (rectify's own reports compute it, [`Self::interval_percent`]); absent in
    /// summaries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_at_k_interval: Option<(f64, f64)>,
    /// Unbiased pass@k (Chen et al. 2021) for k = 1 and k = K.
    pub pass_at_1: f64,
    pub pass_at_k: f64,
    /// Unbiased pass@k for k = 1, 2, 4, ... below K, and K ([`crate::metrics::pass_at_k_curve`]);
    /// empty in summaries written before it was recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pass_at: BTreeMap<usize, f64>,
    /// maj@K for math with K > 1: the fraction of prompts whose most frequent answer among the
    /// K samples is correct ([`crate::metrics::majority`]; answers compared by the verifier).
    /// None for code, for K = 1, and in summaries written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub majority_at_k: Option<f64>,
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
    /// The verifier that graded these results where it is not the summary's `verifier_version`:
    /// set on a benchmark still waiting to be graded again when a run that was grading its
    /// completions again stopped part way (empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub graded_by: String,
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

impl BenchSummary {
    /// The verifier that graded these results, in a summary whose own is `summary_version`.
    pub fn verifier<'a>(&'a self, summary_version: &'a str) -> &'a str {
        if self.graded_by.is_empty() {
            summary_version
        } else {
            &self.graded_by
        }
    }

    /// The 95% Wilson interval of Average@K over this benchmark's prompts, in percent
    /// ([`crate::metrics::wilson_interval`]): how far another set of prompts like these could
    /// move the figure.
    pub fn interval_percent(&self) -> (f64, f64) {
        let (lo, hi) = crate::metrics::wilson_interval(self.average_at_k, self.prompts);
        (100.0 * lo, 100.0 * hi)
    }

    /// [`Self::interval_percent`] as text: `[5.3%, 29.7%]`.
    pub fn interval_text(&self) -> String {
        let (lo, hi) = self.interval_percent();
        format!("[{lo:.1}%, {hi:.1}%]")
    }
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
    let kcol = if k > 1 { format!(" pass@{k} | maj@{k} |") } else { String::new() };
    md.push_str(&format!(
        "| benchmark | snapshot | prompts | Average@{k} | 95% interval | pass@1 |{kcol} truncated | mean new tokens | tokens/s |\n"
    ));
    md.push_str(&format!("|---|---|---:|---:|---:|---:|{}---:|---:|---:|\n", if k > 1 { "---:|---:|" } else { "" }));
    for b in &s.benchmarks {
        // maj@K is a math figure: a code benchmark has none, and neither has a math benchmark
        // kept from a summary written before it was recorded.
        let majority = b.majority_at_k.map_or("–".to_string(), |m| format!("{:.1}%", 100.0 * m));
        let kval = if k > 1 { format!(" {:.1}% | {majority} |", 100.0 * b.pass_at_k) } else { String::new() };
        let verifier = b.verifier(&s.verifier_version);
        let name = if verifier == s.verifier_version { b.bench.clone() } else { format!("{} (graded by {verifier})", b.bench) };
        md.push_str(&format!(
            "| {} | `{}` | {} | {:.1}% | {} | {:.1}% |{kval} {} | {:.0} | {:.0} |\n",
            name,
            b.snapshot_id,
            b.prompts,
            100.0 * b.average_at_k,
            b.interval_text(),
            100.0 * b.pass_at_1,
            b.truncated,
            b.mean_new_tokens,
            b.new_tokens_per_second
        ));
    }
    md
}

/// Where `trainer eval` writes a model's results without `--out`: `runs/eval/NAME`, NAME the
/// model's file or folder name, or RUN for a trained `runs/RUN/final` (`make eval` passes the
/// same folder), so that two models never share one by default.
pub fn default_out(model: &Path) -> PathBuf {
    let model = if model.file_name().is_some_and(|n| n == "final") { model.parent().unwrap_or(model) } else { model };
    let name = model.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    Path::new("runs/eval").join(name)
}

/// Writes `summary.json` and `summary.md` into `out_dir` (atomically).
pub fn write_summary(out_dir: &Path, s: &Summary) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let mut json = serde_json::to_vec_pretty(s)?;
    json.write_all(b"\n")?;
    schemas::write_atomic(&out_dir.join("summary.json"), &json)?;
    schemas::write_atomic(&out_dir.join("summary.md"), markdown(s).as_bytes())
}

/// One evaluation as `trainer compare` reads it: its summary and, per benchmark, the fraction of
/// correct samples of each prompt (by prompt id), from its results file.
pub struct Evaluation {
    pub label: String,
    pub summary: Summary,
    /// Per benchmark; a benchmark whose results file is gone or is no longer the one the
    /// summary was written with is left out (its difference then has no interval).
    pub per_prompt: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Reads an evaluation folder (`trainer eval --out`) or its `summary.json`, with the results files
/// beside it. The label defaults to the folder's name.
pub fn load_evaluation(path: &Path, label: Option<String>) -> anyhow::Result<Evaluation> {
    let file = if path.is_dir() { path.join("summary.json") } else { path.to_path_buf() };
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {} (run `trainer eval` first)", file.display()))?;
    let summary: Summary = serde_json::from_str(&text).with_context(|| format!("{}: not an evaluation summary", file.display()))?;
    let mut per_prompt = BTreeMap::new();
    for b in &summary.benchmarks {
        let results = dir.join("results").join(format!("{}.jsonl", b.bench));
        let Ok(bytes) = std::fs::read(&results) else { continue };
        if !b.results_sha256.is_empty() && schemas::sha256_hex(&bytes) != b.results_sha256 {
            tracing::warn!("{}: not the file {} was written with; {} has no interval", results.display(), file.display(), b.bench);
            continue;
        }
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let r: SampleResult =
                serde_json::from_str(line).with_context(|| format!("{}:{}: not a sample result", results.display(), i + 1))?;
            let c = counts.entry(r.prompt_id).or_default();
            c.0 += r.correct as usize;
            c.1 += 1;
        }
        // The summary's figure is over `prompts` prompts of `samples` samples each; a file that
        // holds another shape would give an interval around another figure.
        if counts.len() != b.prompts || counts.values().any(|&(_, n)| n != b.samples) {
            tracing::warn!("{}: not {} prompts of {} samples each; {} has no interval", results.display(), b.prompts, b.samples, b.bench);
            continue;
        }
        per_prompt.insert(b.bench.clone(), counts.into_iter().map(|(id, (c, n))| (id, c as f64 / n as f64)).collect());
    }
    let label = label.unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string())
    });
    Ok(Evaluation { label, summary, per_prompt })
}

/// The difference to the baseline in points, with its 95% paired-bootstrap interval where both
/// evaluations' results cover the same prompts of the benchmark (`None` where they do not).
fn delta(base: &Evaluation, other: &Evaluation, bench: &str, base_avg: f64, avg: f64) -> (String, Option<(f64, f64)>) {
    let d = 100.0 * (avg - base_avg);
    let (Some(a), Some(b)) = (base.per_prompt.get(bench), other.per_prompt.get(bench)) else { return (format!("{d:+.1}"), None) };
    if a.is_empty() || !a.keys().eq(b.keys()) {
        return (format!("{d:+.1}"), None);
    }
    let diffs: Vec<f64> = a.iter().zip(b.values()).map(|((_, x), y)| y - x).collect();
    if diffs.iter().all(|&x| x == 0.0) {
        // Resampling cannot see noise where nothing differs; an interval [0, 0] would claim certainty.
        return (format!("{d:+.1} (no prompt differs)"), None);
    }
    let (lo, hi) = crate::metrics::bootstrap_interval(&diffs, crate::metrics::BOOTSTRAP_RESAMPLES, 0);
    let (gains, losses) = (diffs.iter().filter(|&&x| x > 0.0).count(), diffs.iter().filter(|&&x| x < 0.0).count());
    let p = crate::metrics::p_text(crate::metrics::sign_test(gains, losses));
    (format!("{d:+.1} [{:+.1}, {:+.1}] {p}", 100.0 * lo, 100.0 * hi), Some((lo, hi)))
}

/// Evaluations side by side as a bar chart: Average@K per benchmark of the first (the baseline's
/// benchmarks, in its order), one bar per evaluation, each with its 95% Wilson interval over the
/// prompts as a whisker.
pub fn compare_chart(evals: &[Evaluation]) -> crate::plot::BarChart {
    let base = evals.first().map(|e| &e.summary);
    let benches: Vec<String> = base.map(|b| b.benchmarks.iter().map(|x| x.bench.clone()).collect()).unwrap_or_default();
    let series: Vec<crate::plot::Series> = evals
        .iter()
        .map(|e| {
            let found: Vec<Option<&BenchSummary>> = benches.iter().map(|b| e.summary.benchmarks.iter().find(|x| &x.bench == b)).collect();
            crate::plot::Series {
                label: e.label.clone(),
                note: format!("{} (K = {})", e.summary.model, e.summary.config.samples),
                values: found.iter().map(|f| f.map_or(f64::NAN, |x| 100.0 * x.average_at_k)).collect(),
                intervals: found.iter().map(|f| f.map(BenchSummary::interval_percent)).collect(),
            }
        })
        .collect();
    let limit = base.and_then(|b| b.config.limit).map(|l| format!(", first {l} prompts per benchmark")).unwrap_or_default();
    // Wide enough that benchmark names do not run into each other and the legend's model paths
    // are not cut off (the chart's margins and legend layout: `BarChart::render`).
    let text = |s: &String, px: f32| crate::plot::text_width(s, px);
    let per_bench = benches.iter().map(|b| text(b, 13.0) + 24).max().unwrap_or(0);
    let legend =
        series.iter().map(|s| text(&s.label, 14.0)).max().unwrap_or(0) + series.iter().map(|s| text(&s.note, 14.0)).max().unwrap_or(0);
    let width = 1000.max(128 + benches.len() * per_bench).max(92 + 38 + legend + 16 + 36);
    crate::plot::BarChart {
        title: "Average@K per benchmark".into(),
        subtitle: format!("whiskers: 95% Wilson intervals over each benchmark's prompts{limit}"),
        x_label: "benchmark".into(),
        y_label: "Average@K (%)".into(),
        edges: (0..=benches.len()).map(|i| i as f64).collect(),
        categories: benches,
        series,
        log_y: false,
        width,
        height: 560,
    }
}

/// The legend's note for an evaluation with no curve in the figure, of `samples` per prompt.
fn no_curve(samples: usize) -> &'static str {
    if samples > 1 {
        ": no pass@k curve (a summary from before curves were recorded: run its `trainer eval` again)"
    } else {
        ": no pass@k curve (one sample per prompt)"
    }
}

/// Evaluations side by side as pass@k curves over k = 1, 2, 4, ... K on a log scale, one panel
/// per benchmark of the first (in its order) that some evaluation sampled more than once, one
/// line per evaluation (none where it lacks the benchmark, or has a summary written before
/// pass@k curves were recorded). Whether training narrowed what a model can reach shows as
/// curves that cross: higher pass@1, lower pass@K.
pub fn pass_at_k_figure(evals: &[Evaluation]) -> crate::plot::LineFigure {
    let base = evals.first().map(|e| &e.summary);
    let benches: Vec<&str> = base.map(|b| b.benchmarks.iter().map(|x| x.bench.as_str()).collect()).unwrap_or_default();
    let curve = |e: &Evaluation, bench: &str| -> Vec<(f64, f64)> {
        let found = e.summary.benchmarks.iter().find(|x| x.bench == bench);
        found.map_or(vec![], |x| x.pass_at.iter().map(|(&k, &p)| ((k as f64).log2(), 100.0 * p)).collect())
    };
    let panels: Vec<crate::plot::LinePanel> = benches
        .iter()
        .filter(|b| evals.iter().any(|e| curve(e, b).len() > 1))
        .map(|b| crate::plot::LinePanel {
            title: format!("{b}: pass@k (%)"),
            series: evals.iter().map(|e| curve(e, b)).collect(),
            smooth: false,
        })
        .collect();
    let legend = evals
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let c = &e.summary.config;
            let none = if panels.iter().all(|p| p.series[i].is_empty()) { no_curve(c.samples) } else { "" };
            (e.label.clone(), format!("{} (K = {}, temperature {}){none}", e.summary.model, c.samples, c.sampling.temperature))
        })
        .collect();
    let limit = base.and_then(|b| b.config.limit).map(|l| format!("; first {l} prompts per benchmark")).unwrap_or_default();
    crate::plot::LineFigure {
        title: "pass@k per benchmark".into(),
        subtitle: format!("unbiased estimator 1 - C(n-c, k) / C(n, k) over K samples per prompt{limit}"),
        x_label: "k (samples drawn)".into(),
        x_log2: true,
        y_min: Some(0.0),
        legend,
        columns: panels.len().clamp(1, 3),
        panels,
        panel_width: 440,
        panel_height: 320,
    }
}

/// Evaluations side by side, the first as the baseline: per benchmark, each run's Average@K
/// (with the difference to the baseline in points and its 95% paired-bootstrap interval),
/// truncated samples and mean new tokens. Runs that evaluated different settings, engines,
/// verifiers or snapshots are compared anyway, with a note saying what differs; benchmarks the
/// baseline lacks are named, not shown.
pub fn compare_markdown(evals: &[Evaluation]) -> String {
    let mut md = String::new();
    let Some(base_eval) = evals.first() else { return md };
    let base = &base_eval.summary;
    let runs: Vec<(String, &Summary)> = evals.iter().map(|e| (e.label.clone(), &e.summary)).collect();
    for (label, s) in &runs {
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
    // A benchmark still waiting to be graded again (a run grading it stopped part way).
    for (label, s) in &runs {
        for b in s.benchmarks.iter().filter(|b| b.verifier(&s.verifier_version) != s.verifier_version) {
            md.push_str(&format!(
                "note: {label}'s {} was graded by verifier {} (run `trainer eval` on it again)\n\n",
                b.bench, b.graded_by
            ));
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
    for (label, _) in &runs {
        head.push_str(&format!(" {label} truncated | {label} mean new tokens |"));
        rule.push_str("---:|---:|");
    }
    md.push_str(&format!("{head}\n{rule}\n"));
    let mut any_interval = false;
    for b in &base.benchmarks {
        let found: Vec<Option<&BenchSummary>> = runs.iter().map(|(_, s)| s.benchmarks.iter().find(|x| x.bench == b.bench)).collect();
        let mut line = format!("| {} | {} |", b.bench, b.prompts);
        for (i, f) in found.iter().enumerate() {
            match f {
                Some(x) => {
                    let mark = if x.snapshot_id != b.snapshot_id || x.prompts != b.prompts { "*" } else { "" };
                    line.push_str(&format!(" {:.1}%{mark} |", 100.0 * x.average_at_k));
                    if i > 0 {
                        let (text, interval) = delta(base_eval, &evals[i], &b.bench, b.average_at_k, x.average_at_k);
                        any_interval |= interval.is_some();
                        line.push_str(&format!(" {text} |"));
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
    if any_interval {
        md.push_str(&format!(
            "\nΔ: points against {}; in brackets, where both results files hold the same prompts, its 95% interval from a \
             paired bootstrap over those prompts ({} resamples, seed 0). An interval that holds 0 is no evidence of a \
             difference. p: the exact sign test over the prompts whose results differ (McNemar's exact test for one \
             sample per prompt), how often gains and losses at least as uneven would arise were neither better.\n",
            runs[0].0,
            crate::metrics::BOOTSTRAP_RESAMPLES
        ));
    }
    // Where runs drew several samples per prompt: what one of K samples reaches, and the
    // majority's answer (math), beside the Average@K above (which is the unbiased pass@1).
    if runs.iter().any(|(_, s)| s.config.samples > 1) {
        let pct = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let (mut head, mut rule) = ("| benchmark |".to_string(), "|---|".to_string());
        for (label, s) in &runs {
            let k = s.config.samples;
            head.push_str(&format!(" {label} pass@{k} | {label} maj@{k} |"));
            rule.push_str("---:|---:|");
        }
        md.push_str(&format!("\nK samples per prompt: pass@K and (math) maj@K (a run of one sample has neither)\n\n{head}\n{rule}\n"));
        for b in &base.benchmarks {
            let mut line = format!("| {} |", b.bench);
            for (_, s) in &runs {
                let x = s.benchmarks.iter().find(|x| x.bench == b.bench).filter(|x| x.samples > 1);
                let mark = if x.is_some_and(|x| x.snapshot_id != b.snapshot_id || x.prompts != b.prompts) { "*" } else { "" };
                let (pk, maj) = (x.map(|x| x.pass_at_k), x.and_then(|x| x.majority_at_k));
                line.push_str(&format!(" {}{mark} | {} |", pct(pk), pct(maj)));
            }
            md.push_str(&format!("{line}\n"));
        }
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
                    average_at_k_interval: None,
                    pass_at_1: avg,
                    pass_at_k: avg,
                    pass_at: BTreeMap::new(),
                    majority_at_k: None,
                    truncated: 0,
                    mean_new_tokens: 1.0,
                    generation_seconds: 1.0,
                    new_tokens_per_second: 1.0,
                    results_sha256: String::new(),
                    stop_ids: vec![2],
                    graded_by: String::new(),
                })
                .collect(),
        }
    }

    fn eval(label: &str, summary: Summary) -> Evaluation {
        Evaluation { label: label.into(), summary, per_prompt: BTreeMap::new() }
    }

    #[test]
    fn each_model_has_its_own_default_results_folder() {
        for (model, out) in [
            ("runs/dft/final", "runs/eval/dft"),
            ("runs/dft/final/", "runs/eval/dft"),
            ("models/SmolLM2-135M-Instruct.Q4_1.gguf", "runs/eval/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ("/models/Qwen2.5-1.5B-Instruct", "runs/eval/Qwen2.5-1.5B-Instruct"),
            ("runs/dft/checkpoints/step-000005", "runs/eval/step-000005"),
        ] {
            assert_eq!(default_out(Path::new(model)), Path::new(out), "{model}");
        }
    }

    #[test]
    fn compare_names_what_differs_and_what_it_leaves_out() {
        let base = run("host", "0.1.0+a", 1, &[("gsm8k_test", 0.5)]);
        let same = run("host", "0.1.0+a", 1, &[("gsm8k_test", 0.6)]);
        let md = compare_markdown(&[eval("base", base.clone()), eval("dft", same.clone())]);
        assert!(!md.contains("note:") && !md.contains("maj@"), "one sample per prompt: no pass@K table: {md}");
        // The chart: the baseline's benchmarks, one bar per run with its Wilson whisker.
        let chart = compare_chart(&[eval("base", base.clone()), eval("dft", same.clone())]);
        assert_eq!(chart.categories, ["gsm8k_test"]);
        assert_eq!(chart.width, 1000);
        // A long model path widens the chart to keep the legend whole.
        let mut far = same.clone();
        far.model = format!("/{}final", "checkpoints/".repeat(20));
        let wide = compare_chart(&[eval("base", base.clone()), eval("far", far)]);
        assert!(wide.width > 1000 && wide.width >= 92 + 38 + crate::plot::text_width(&wide.series[1].note, 14.0) + 52, "{}", wide.width);
        // A benchmark a later run lacks: no bar, no whisker.
        let two = run("host", "0.1.0+a", 1, &[("gsm8k_test", 0.5), ("math500", 0.2)]);
        let chart2 = compare_chart(&[eval("base", two), eval("dft", same.clone())]);
        assert!(chart2.series[1].values[1].is_nan() && chart2.series[1].intervals[1].is_none());
        assert_eq!(
            (chart.series[1].values[0], chart.series[1].intervals[0].map(|(a, b)| (a.round(), b.round()))),
            (60.0, Some((42.0, 75.0)))
        );
        // Without results files, the difference has no interval.
        assert_eq!(markdown(&same).lines().find(|l| l.starts_with("| gsm8k_test")).unwrap().split(" | ").nth(4), Some("[42.3%, 75.4%]"));
        assert!(md.contains("| gsm8k_test | 30 | 50.0% | 60.0% | +10.0 |"), "{md}");

        let other = run("burn cuda, f32 matmuls", "0.1.0+b", 4, &[("gsm8k_test", 0.25), ("math500", 0.1)]);
        let md = compare_markdown(&[eval("base", base), eval("gpu", other.clone())]);
        assert!(md.contains("note: gpu differs from base: K = 4, engine `burn cuda, f32 matmuls`, verifier 0.1.0+b"), "{md}");
        assert!(md.contains("note: gpu also evaluated math500, which base did not: not shown"), "{md}");
        assert!(md.contains("base Average@1 | gpu Average@4 |"), "{md}");
        // gpu drew 4 samples: pass@1, pass@4 and maj@4 of each run, in a table of their own.
        assert!(md.contains("| benchmark | base pass@1 | base maj@1 | gpu pass@4 | gpu maj@4 |"), "{md}");
        assert!(md.contains("| gsm8k_test | – | – | 25.0% | – |"), "{md}");
        // K > 1: maj@K beside pass@K, for math only.
        let mut four = other.clone();
        four.benchmarks[1].majority_at_k = Some(0.2);
        let md = markdown(&four);
        assert!(md.contains("| pass@1 | pass@4 | maj@4 | truncated |"), "{md}");
        assert!(md.contains("| 25.0% | 25.0% | – | 0 |") && md.contains("| 10.0% | 10.0% | 20.0% | 0 |"), "{md}");
        assert_eq!(md.lines().nth(4).unwrap().matches('|').count(), md.lines().nth(5).unwrap().matches('|').count(), "{md}");

        // A benchmark still waiting to be graded again is named in both reports.
        let mut pending = same.clone();
        pending.benchmarks[0].graded_by = "0.0.9+old".into();
        let md = compare_markdown(&[eval("base", same), eval("dft", pending.clone())]);
        assert!(md.contains("note: dft's gsm8k_test was graded by verifier 0.0.9+old"), "{md}");
        assert!(markdown(&pending).contains("| gsm8k_test (graded by 0.0.9+old) |"), "{}", markdown(&pending));
    }

    /// pass@k curves: a panel per benchmark of the baseline that some evaluation sampled more
    /// than once, a line per evaluation over log2 k, none where an evaluation lacks the curve.
    #[test]
    fn pass_at_k_figure_draws_a_curve_per_evaluation() {
        let mut base = run("host", "0.1.0+a", 4, &[("gsm8k_test", 0.25), ("math500", 0.1), ("aime24", 0.0)]);
        base.benchmarks[0].pass_at = BTreeMap::from([(1, 0.25), (2, 0.4), (4, 0.5)]);
        base.benchmarks[2].pass_at = BTreeMap::from([(1, 0.0)]);
        let mut dft = run("host", "0.1.0+a", 8, &[("gsm8k_test", 0.3)]);
        dft.benchmarks[0].pass_at = BTreeMap::from([(1, 0.3), (2, 0.35), (4, 0.4), (8, 0.45)]);
        let old = run("host", "0.1.0+a", 4, &[("gsm8k_test", 0.2), ("math500", 0.1)]);
        let fig = pass_at_k_figure(&[eval("base", base), eval("dft", dft), eval("old", old)]);
        // math500 has no curve anywhere and aime24 a single point: only gsm8k_test is drawn.
        assert_eq!(fig.panels.iter().map(|p| p.title.as_str()).collect::<Vec<_>>(), ["gsm8k_test: pass@k (%)"]);
        let s = &fig.panels[0].series;
        assert_eq!(s[0], [(0.0, 25.0), (1.0, 40.0), (2.0, 50.0)]);
        assert_eq!(s[1].last(), Some(&(3.0, 45.0)));
        assert!(s[2].is_empty());
        assert!(fig.legend[1].1.ends_with("(K = 8, temperature 0)"), "{:?}", fig.legend);
        assert!(
            fig.legend[2].1.ends_with(
                "(K = 4, temperature 0): no pass@k curve (a summary from before curves were recorded: run its `trainer eval` again)"
            ),
            "{:?}",
            fig.legend
        );
        let (_, layout) = fig.render();
        assert_eq!(layout[0].x_ticks, [0.0, 1.0, 2.0, 3.0], "whole powers of two");
        // A benchmark flat at 0% is drawn on the bottom line, with no negative tick.
        let mut zero = run("host", "0.1.0+a", 2, &[("math500", 0.0)]);
        zero.benchmarks[0].pass_at = BTreeMap::from([(1, 0.0), (2, 0.0)]);
        let (_, layout) = pass_at_k_figure(&[eval("zero", zero)]).render();
        assert_eq!(layout[0].y_range.0, 0.0);
        assert_eq!(layout[0].points[0][0].unwrap().1, layout[0].plot.3 - 1, "on the bottom line");
    }

    /// Two evaluations written as `trainer eval` writes them: the difference gets the paired
    /// bootstrap's interval over the prompts; a results file changed since its summary, or
    /// holding other prompts, gets none.
    #[test]
    fn compare_reads_results_and_gives_the_difference_an_interval() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, correct: &[bool]| {
            let dir = tmp.path().join(name);
            let results: Vec<SampleResult> = correct
                .iter()
                .enumerate()
                .map(|(i, &c)| SampleResult {
                    bench: "gsm8k_test".into(),
                    prompt_id: format!("gsm8k_test/L{i}"),
                    sample: 0,
                    completion: String::new(),
                    extracted: None,
                    correct: c,
                    finish: Finish::Stop,
                    new_tokens: 1,
                    status: None,
                })
                .collect();
            let sha = write_results(&dir.join("results/gsm8k_test.jsonl"), &results).unwrap();
            let avg = correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64;
            let mut s = run("host", "0.1.0+a", 1, &[("gsm8k_test", avg)]);
            s.benchmarks[0].results_sha256 = sha;
            write_summary(&dir, &s).unwrap();
            dir
        };
        // The other run gets 15 more of 30 prompts right and none fewer.
        let base = write("base", &[false; 30]);
        let better = write("better", &(0..30).map(|i| i % 2 == 0).collect::<Vec<_>>());
        let evals = [load_evaluation(&base, None).unwrap(), load_evaluation(&better.join("summary.json"), None).unwrap()];
        assert_eq!((evals[0].label.as_str(), evals[1].label.as_str()), ("base", "better"));
        assert_eq!(evals[1].per_prompt["gsm8k_test"]["gsm8k_test/L2"], 1.0);
        let md = compare_markdown(&evals);
        let d: Vec<f64> = (0..30).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect();
        let (lo, hi) = crate::metrics::bootstrap_interval(&d, crate::metrics::BOOTSTRAP_RESAMPLES, 0);
        // 15 gains, no loss: p = 2 / 2^15.
        let cell = format!("| 0.0% | 50.0% | +50.0 [{:+.1}, {:+.1}] p<0.001 |", 100.0 * lo, 100.0 * hi);
        assert!(md.contains(&cell) && lo > 0.25 && hi < 0.75, "{cell} not in\n{md}");
        assert!(md.contains("paired bootstrap"), "{md}");

        // Another prompt set: no interval.
        let fewer = write("fewer", &[true; 29]);
        let md = compare_markdown(&[load_evaluation(&base, None).unwrap(), load_evaluation(&fewer, None).unwrap()]);
        assert!(md.contains("| +100.0 |"), "{md}");
        // A results file edited after its summary: not used.
        let path = better.join("results/gsm8k_test.jsonl");
        let text = std::fs::read_to_string(&path).unwrap().replacen("\"correct\":true", "\"correct\":false", 1);
        std::fs::write(&path, text).unwrap();
        assert!(load_evaluation(&better, None).unwrap().per_prompt.is_empty());
        // A line that is not a sample result names file and line.
        std::fs::write(base.join("results/gsm8k_test.jsonl"), "{}\n").unwrap();
        let mut s: Summary = serde_json::from_str(&std::fs::read_to_string(base.join("summary.json")).unwrap()).unwrap();
        s.benchmarks[0].results_sha256 = String::new();
        write_summary(&base, &s).unwrap();
        let e = format!("{:#}", load_evaluation(&base, None).err().unwrap());
        assert!(e.contains("gsm8k_test.jsonl:1: not a sample result"), "{e}");
    }
}
