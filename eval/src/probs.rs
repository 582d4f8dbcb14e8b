//! `trainer probs`: the distribution of the probability each model gives its training tokens.
//!
//! Wu et al. observe that SFT pushes nearly every training token toward probability 1, while DFT
//! polarises them: tokens the model already finds likely go to 1, a sizeable group stays near 0.
//! This command measures that on a train snapshot: for each model, the probability of every
//! loss-mask target token in a few deterministically chosen rows, binned over `[0, 1]`, drawn as
//! a grouped-bar histogram (PNG) and written as numbers (CSV).
//!
//! A target is token `i` of a row with `loss_mask[i] = 1`, predicted from tokens `..i` of its
//! own packed segment (the first token of a segment is never a target).

use crate::plot::{BarChart, Series};
use anyhow::{bail, Context};
use burn::backend::Flex;
use model::Llama;
use schemas::snapshot::{load_snapshot, Row};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bin of probability `p` among `bins` equal bins over `[0, 1]`: bin `k` is
/// `[k/bins, (k+1)/bins)`, the last bin also holds `p = 1`. Values are clamped into `[0, 1]`
/// first (`exp` of a log-probability can round a hair above 1). The result agrees with the edges
/// `k as f64 / bins as f64` written to the CSV, even where `p * bins` rounds across an edge.
pub fn bin_of(p: f64, bins: usize) -> usize {
    assert!(bins > 0, "at least one bin");
    let p = p.clamp(0.0, 1.0);
    let mut k = ((p * bins as f64).floor() as usize).min(bins - 1);
    let edge = |k: usize| k as f64 / bins as f64;
    if k > 0 && p < edge(k) {
        k -= 1;
    } else if k + 1 < bins && p >= edge(k + 1) {
        k += 1;
    }
    k
}

/// Bin edges `k / bins` for `k = 0..=bins`.
pub fn edges(bins: usize) -> Vec<f64> {
    (0..=bins).map(|k| k as f64 / bins as f64).collect()
}

/// Token counts per bin.
pub fn histogram(probs: &[f32], bins: usize) -> Vec<u64> {
    let mut counts = vec![0u64; bins];
    for &p in probs {
        counts[bin_of(p as f64, bins)] += 1;
    }
    counts
}

/// Summary numbers of one model's token probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub tokens: usize,
    pub mean: f64,
    pub median: f64,
    /// Fraction of tokens with `p < 0.1`.
    pub below_0_1: f64,
    /// Fraction of tokens with `p > 0.9`.
    pub above_0_9: f64,
}

pub fn summarize(probs: &[f32]) -> Summary {
    let n = probs.len();
    if n == 0 {
        return Summary { tokens: 0, mean: f64::NAN, median: f64::NAN, below_0_1: f64::NAN, above_0_9: f64::NAN };
    }
    let mut sorted: Vec<f64> = probs.iter().map(|&p| p as f64).collect();
    sorted.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    Summary {
        tokens: n,
        mean: sorted.iter().sum::<f64>() / n as f64,
        median,
        below_0_1: sorted.iter().filter(|&&p| p < 0.1).count() as f64 / n as f64,
        above_0_9: sorted.iter().filter(|&&p| p > 0.9).count() as f64 / n as f64,
    }
}

/// `n` row indices spread evenly over `total` rows (`i * total / n`), all rows when `n` is 0 or
/// at least `total`.
pub fn pick_rows(total: usize, n: usize) -> Vec<usize> {
    if n == 0 || n >= total {
        return (0..total).collect();
    }
    (0..n).map(|i| i * total / n).collect()
}

/// Probabilities of the loss-mask targets of `rows`, given log-probabilities aligned to
/// `input_ids`, in row then position order.
pub fn target_probs(rows: &[&Row], logprobs: &[Vec<f32>]) -> Vec<f32> {
    let mut out = vec![];
    for (row, lp) in rows.iter().zip(logprobs) {
        assert_eq!(row.input_ids.len(), lp.len(), "log-probabilities aligned to input_ids");
        let targets = (1..row.input_ids.len()).filter(|&i| row.is_target(i) && row.is_predicted(i));
        out.extend(targets.map(|i| lp[i].exp()));
    }
    out
}

/// A short legend name for a model path: a file's stem (`SmolLM2-135M-Instruct.Q4_1`), a
/// folder's parent and name (`dft/final`; `checkpoints` is skipped: `dft/step-000008`).
pub fn default_label(path: &Path) -> String {
    let name = |p: &Path| p.file_name().map(|s| s.to_string_lossy().into_owned());
    let is_file =
        path.is_file() || path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf") || e.eq_ignore_ascii_case("safetensors"));
    if is_file {
        if path.file_name().is_some_and(|n| n == "model.safetensors") {
            if let Some(parent) = path.parent() {
                return default_label(parent);
            }
        }
        return path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let last = name(&abs).unwrap_or_else(|| path.display().to_string());
    let mut parent = abs.parent();
    while let Some(p) = parent {
        if name(p).is_some_and(|n| n == "checkpoints") {
            parent = p.parent();
        } else {
            break;
        }
    }
    match parent.and_then(name) {
        Some(p) => format!("{p}/{last}"),
        None => last,
    }
}

/// One model's measured token probabilities.
#[derive(Clone, Debug)]
pub struct ModelProbs {
    pub label: String,
    pub path: String,
    pub probs: Vec<f32>,
}

/// What was measured, for titles and CSV columns.
#[derive(Clone, Debug)]
pub struct Sample {
    pub snapshot_name: String,
    pub snapshot_id: String,
    pub rows_used: usize,
    pub rows_total: usize,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Per model per bin: `label,model,rows,tokens,bin,bin_lo,bin_hi,count,fraction`.
pub fn histogram_csv(models: &[ModelProbs], sample: &Sample, bins: usize) -> String {
    let e = edges(bins);
    let mut s = String::from("label,model,rows,tokens,bin,bin_lo,bin_hi,count,fraction\n");
    for m in models {
        let counts = histogram(&m.probs, bins);
        let n = m.probs.len();
        for (k, &c) in counts.iter().enumerate() {
            let frac = if n == 0 { 0.0 } else { c as f64 / n as f64 };
            writeln!(
                s,
                "{},{},{},{},{},{},{},{},{:.6}",
                csv_field(&m.label),
                csv_field(&m.path),
                sample.rows_used,
                n,
                k,
                e[k],
                e[k + 1],
                c,
                frac
            )
            .expect("string");
        }
    }
    s
}

/// Per model: `label,model,rows,tokens,mean_prob,median_prob,frac_below_0.1,frac_above_0.9`.
pub fn summary_csv(models: &[ModelProbs], sample: &Sample) -> String {
    let mut s = String::from("label,model,rows,tokens,mean_prob,median_prob,frac_below_0.1,frac_above_0.9\n");
    for m in models {
        let x = summarize(&m.probs);
        writeln!(
            s,
            "{},{},{},{},{:.6},{:.6},{:.6},{:.6}",
            csv_field(&m.label),
            csv_field(&m.path),
            sample.rows_used,
            x.tokens,
            x.mean,
            x.median,
            x.below_0_1,
            x.above_0_9
        )
        .expect("string");
    }
    s
}

/// The histogram chart: fraction of each model's target tokens per probability bin.
pub fn chart(models: &[ModelProbs], sample: &Sample, bins: usize, log_y: bool) -> BarChart {
    let tokens: Vec<usize> = models.iter().map(|m| m.probs.len()).collect();
    let tokens_text = if tokens.windows(2).all(|w| w[0] == w[1]) {
        format!("{} loss-mask tokens", thousands(tokens.first().copied().unwrap_or(0)))
    } else {
        "loss-mask tokens".to_string()
    };
    let series = models
        .iter()
        .map(|m| {
            let n = m.probs.len();
            let x = summarize(&m.probs);
            Series {
                label: m.label.clone(),
                note: format!(
                    "mean p {:.3}   median p {:.3}   p < 0.1: {:.1}%   p > 0.9: {:.1}%",
                    x.mean,
                    x.median,
                    100.0 * x.below_0_1,
                    100.0 * x.above_0_9
                ),
                values: histogram(&m.probs, bins).iter().map(|&c| if n == 0 { 0.0 } else { c as f64 / n as f64 }).collect(),
                intervals: vec![],
            }
        })
        .collect();
    BarChart {
        title: "Probability each model assigns to the training tokens".into(),
        subtitle: format!(
            "snapshot {} ({}): {} of {} rows, evenly spaced; {}; {} bins",
            sample.snapshot_name, sample.snapshot_id, sample.rows_used, sample.rows_total, tokens_text, bins
        ),
        x_label: "probability of the target token".into(),
        y_label: if log_y { "fraction of tokens (log scale)".into() } else { "fraction of tokens".into() },
        edges: edges(bins),
        categories: vec![],
        series,
        log_y,
        width: 1100,
        height: 620,
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Paths of the CSV files written beside the PNG `out`.
pub fn csv_paths(out: &Path) -> (PathBuf, PathBuf) {
    (out.with_extension("csv"), out.with_extension("summary.csv"))
}

/// Write the PNG and both CSVs; returns their paths.
pub fn write_outputs(out: &Path, models: &[ModelProbs], sample: &Sample, bins: usize, log_y: bool) -> anyhow::Result<Vec<PathBuf>> {
    let (hist, summary) = csv_paths(out);
    let (canvas, _) = chart(models, sample, bins, log_y).render();
    canvas.save_png(out)?;
    schemas::write_atomic(&hist, histogram_csv(models, sample, bins).as_bytes())?;
    schemas::write_atomic(&summary, summary_csv(models, sample).as_bytes())?;
    Ok(vec![out.to_path_buf(), hist, summary])
}

pub struct Options {
    /// Model paths with an optional label each.
    pub models: Vec<(PathBuf, Option<String>)>,
    pub snapshot: PathBuf,
    /// Rows to score (0: all).
    pub rows: usize,
    pub bins: usize,
    pub log_y: bool,
    pub out: PathBuf,
}

/// Measure every model on the same rows of the snapshot, then write the PNG and CSVs.
pub fn run(opts: &Options) -> anyhow::Result<(Vec<ModelProbs>, Vec<PathBuf>)> {
    run_on::<Flex>(opts, &Default::default())
}

/// [`run`] with the models on `device` (on a GPU, inside a one-thread pool: the rows are spread
/// over rayon threads).
pub fn run_on<B: burn::tensor::backend::Backend>(opts: &Options, device: &B::Device) -> anyhow::Result<(Vec<ModelProbs>, Vec<PathBuf>)>
where
    Llama<B>: Sync,
{
    if opts.models.is_empty() {
        bail!("give at least one --model");
    }
    if opts.bins == 0 {
        bail!("--bins must be at least 1");
    }
    // Fail before minutes of scoring, not after.
    if opts.out.extension().is_none_or(|e| e != "png") {
        // The CSVs are named by swapping the extension, so `x.csv` would overwrite the PNG.
        bail!("--out {}: give a .png path (the CSVs are written beside it)", opts.out.display());
    }
    if let Some((missing, _)) = opts.models.iter().find(|(p, _)| !p.exists()) {
        bail!("model {} does not exist", missing.display());
    }
    let snapshot = load_snapshot(&opts.snapshot)?;
    let picked = pick_rows(snapshot.rows.len(), opts.rows);
    if picked.is_empty() {
        bail!("snapshot {} has no rows", opts.snapshot.display());
    }
    let rows: Vec<&Row> = picked.iter().map(|&i| &snapshot.rows[i]).collect();
    let sample = Sample {
        snapshot_name: snapshot.manifest.name.clone(),
        snapshot_id: snapshot.manifest.snapshot_id.clone(),
        rows_used: rows.len(),
        rows_total: snapshot.rows.len(),
    };
    // Every model before any is scored: a wrong one fails the run at once.
    for (path, _) in &opts.models {
        model_files::vocab::check_model_tokens(path, &opts.snapshot, snapshot.token_ids())?;
    }
    let mut models = vec![];
    for (path, label) in &opts.models {
        let t0 = Instant::now();
        let model = Llama::<B>::load(path, device)?;
        model.check_vocab(snapshot.manifest.tokenizer.vocab_size).with_context(|| format!("model {}", path.display()))?;
        model.check_context(snapshot.longest_example()).with_context(|| format!("model {}", path.display()))?;
        let t1 = Instant::now();
        let pb = progress::bar(rows.len(), label.as_deref().unwrap_or("probs"));
        let lp = model::logprobs::rows_logprobs(&model, &rows, device, || pb.inc(1));
        pb.finish_and_clear();
        let probs = target_probs(&rows, &lp);
        if let Some(bad) = probs.iter().find(|p| !p.is_finite()) {
            bail!("model {}: a token probability is {bad}", path.display());
        }
        // What the forward pass ran: each row stops at its last real token.
        let tokens: usize = rows.iter().map(|r| r.segment_ids.iter().filter(|&&s| s != 0).count()).sum();
        let secs = t1.elapsed().as_secs_f64();
        tracing::info!(
            "{}: {} rows, {} targets in {:.1}s ({:.0} tokens/s forward; load {:.1}s)",
            path.display(),
            rows.len(),
            probs.len(),
            secs,
            tokens as f64 / secs,
            (t1 - t0).as_secs_f64()
        );
        models.push(ModelProbs { label: label.clone().unwrap_or_else(|| default_label(path)), path: path.display().to_string(), probs });
    }
    let written = write_outputs(&opts.out, &models, &sample, opts.bins, opts.log_y)?;
    Ok((models, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_match_hand_counts_including_the_edges() {
        // 4 bins: [0, .25) [.25, .5) [.5, .75) [.75, 1].
        let probs = [0.0, 0.1, 0.2499999, 0.25, 0.3, 0.5, 0.74, 0.75, 0.99, 1.0, 1.0000001, -0.0];
        assert_eq!(histogram(&probs, 4), vec![4, 2, 2, 4]);
        assert_eq!(bin_of(0.0, 4), 0);
        assert_eq!(bin_of(1.0, 4), 3);
        assert_eq!(bin_of(1.0, 1), 0);
        // Every edge k/bins falls in bin k, for bin counts where p * bins rounds either way.
        for bins in [3, 7, 10, 20, 49, 100] {
            let e = edges(bins);
            for k in 0..bins {
                assert_eq!(bin_of(e[k], bins), k, "edge {k} of {bins}");
                let below = f64::from_bits(e[k + 1].to_bits() - 1);
                assert_eq!(bin_of(below, bins), k, "just under edge {} of {bins}", k + 1);
            }
        }
        // 20 bins, as the CLI defaults: a few hand-placed values.
        // (As f32, 0.95 is 0.94999999: bin 18; 0.05 is 0.0500000007: bin 1.)
        let probs = [0.0, 0.049, 0.05, 0.1, 0.5, 0.95, 0.9999, 1.0];
        let h = histogram(&probs, 20);
        assert_eq!(h.iter().sum::<u64>(), 8);
        assert_eq!((h[0], h[1], h[2], h[10], h[18], h[19]), (2, 1, 1, 1, 1, 2));
    }

    #[test]
    fn summary_numbers() {
        let s = summarize(&[0.05, 0.5, 0.95, 1.0]);
        assert_eq!(s.tokens, 4);
        assert!((s.mean - 0.625).abs() < 1e-7);
        assert!((s.median - 0.725).abs() < 1e-7);
        assert_eq!((s.below_0_1, s.above_0_9), (0.25, 0.5));
        assert!((summarize(&[0.3, 0.1, 0.2]).median - 0.2).abs() < 1e-7);
    }

    #[test]
    fn rows_are_spread_evenly_and_deterministically() {
        assert_eq!(pick_rows(100, 4), vec![0, 25, 50, 75]);
        assert_eq!(pick_rows(10, 3), vec![0, 3, 6]);
        assert_eq!(pick_rows(3, 8), vec![0, 1, 2]);
        assert_eq!(pick_rows(5, 0), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn labels_from_paths() {
        assert_eq!(default_label(Path::new("models/SmolLM2-135M-Instruct.Q4_1.gguf")), "SmolLM2-135M-Instruct.Q4_1");
        assert_eq!(default_label(Path::new("runs/dft/final")), "dft/final");
        assert_eq!(default_label(Path::new("runs/dft/final/model.safetensors")), "dft/final");
        assert_eq!(default_label(Path::new("runs/sft/checkpoints/step-000008")), "sft/step-000008");
    }

    fn row(ids: &[i32], mask: &[i8], seg: &[i32]) -> Row {
        let mut pos = vec![];
        for (i, s) in seg.iter().enumerate() {
            pos.push(if i > 0 && seg[i - 1] == *s { pos[i - 1] + 1 } else { 0 });
        }
        Row { input_ids: ids.to_vec(), loss_mask: mask.to_vec(), position_ids: pos, segment_ids: seg.to_vec(), ref_logprobs: None }
    }

    #[test]
    fn only_loss_mask_targets_within_a_segment_count() {
        // Two segments; token 3 starts segment 2 and is masked (never happens in a snapshot, but
        // nothing in segment 1 predicts it); token 0 is never a target.
        let r = row(&[10, 11, 12, 13, 14, 15], &[1, 0, 1, 1, 0, 1], &[1, 1, 1, 2, 2, 2]);
        let lp: Vec<f32> = [0.0f32, -1.0, -2.0, -3.0, -4.0, -5.0].to_vec();
        let p = target_probs(&[&r], &[lp]);
        assert_eq!(p, vec![(-2.0f32).exp(), (-5.0f32).exp()]);
    }

    #[test]
    fn row_logprobs_match_each_segment_run_alone() {
        use burn::tensor::Tensor;
        use model::decoder::single_sequence;
        let device = Default::default();
        let model = Llama::<Flex>::load(&model_files::test_model_path(), &device).unwrap();
        let a: Vec<i32> = vec![1, 4093, 28, 346, 5248, 30, 2, 905];
        let b: Vec<i32> = vec![1, 7566, 6471, 314, 3157, 17];
        // Host log-softmax of the model run on one segment alone: lp[i] = log p(seg[i] | seg[..i]).
        let alone = |seg: &[i32]| -> Vec<f64> {
            let ids: Vec<u32> = seg.iter().map(|&x| x as u32).collect();
            let (x, pos) = single_sequence::<Flex>(&ids, &device);
            let logits: Tensor<Flex, 3> = model.forward(x, pos, &[vec![(0, ids.len())]]);
            let v = logits.dims()[2];
            let z = logits.into_data().convert::<f32>().to_vec::<f32>().unwrap();
            let mut lp = vec![0.0];
            for i in 1..seg.len() {
                let row = &z[(i - 1) * v..i * v];
                let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
                let lse = row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
                lp.push(row[seg[i] as usize] as f64 - lse);
            }
            lp
        };
        let (la, lb) = (alone(&a), alone(&b));
        // Row 1: a, b, two padding tokens; row 2: b, a. Masks mark every token but the first of
        // each segment and the padding.
        let pack = |first: &[i32], second: &[i32], pad: usize| {
            let ids: Vec<i32> = first.iter().chain(second).copied().chain(std::iter::repeat_n(0, pad)).collect();
            let seg: Vec<i32> = std::iter::repeat_n(1, first.len())
                .chain(std::iter::repeat_n(2, second.len()))
                .chain(std::iter::repeat_n(0, pad))
                .collect();
            let mask: Vec<i8> = (0..ids.len()).map(|i| i8::from(i != 0 && i != first.len() && seg[i] != 0)).collect();
            row(&ids, &mask, &seg)
        };
        let (r1, r2) = (pack(&a, &b, 2), pack(&b, &a, 0));
        let lp = model::logprobs::rows_logprobs(&model, &[&r1, &r2], &device, || {});
        assert_eq!((lp[0].len(), lp[1].len()), (r1.input_ids.len(), r2.input_ids.len()));
        let want1: Vec<f64> = la[1..].iter().chain(&lb[1..]).copied().collect();
        let want2: Vec<f64> = lb[1..].iter().chain(&la[1..]).copied().collect();
        for (r, lp, want) in [(&r1, &lp[0], want1), (&r2, &lp[1], want2)] {
            let got: Vec<f32> = (1..r.input_ids.len()).filter(|&i| r.loss_mask[i] != 0).map(|i| lp[i]).collect();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 2e-3, "log p {g} vs {w}");
            }
            assert_eq!(target_probs(&[r], std::slice::from_ref(lp)), got.iter().map(|g| g.exp()).collect::<Vec<_>>());
        }
        // The log-probabilities differ by nats from position to position, so a shifted
        // alignment would fail.
        let spread = la[1..].iter().cloned().fold(f64::MIN, f64::max) - la[1..].iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 3.0, "{la:?}");
    }

    fn sample() -> Sample {
        Sample { snapshot_name: "toy".into(), snapshot_id: "abc".into(), rows_used: 2, rows_total: 10 }
    }

    fn toy_models() -> Vec<ModelProbs> {
        vec![
            ModelProbs { label: "base".into(), path: "models/base.gguf".into(), probs: vec![0.0, 0.05, 0.3, 0.96, 1.0] },
            ModelProbs { label: "dft, 8 steps".into(), path: "runs/dft/final".into(), probs: vec![0.01, 0.99, 0.97, 0.98] },
        ]
    }

    #[test]
    fn csv_contents() {
        let csv = histogram_csv(&toy_models(), &sample(), 4);
        let want = "label,model,rows,tokens,bin,bin_lo,bin_hi,count,fraction
base,models/base.gguf,2,5,0,0,0.25,2,0.400000
base,models/base.gguf,2,5,1,0.25,0.5,1,0.200000
base,models/base.gguf,2,5,2,0.5,0.75,0,0.000000
base,models/base.gguf,2,5,3,0.75,1,2,0.400000
\"dft, 8 steps\",runs/dft/final,2,4,0,0,0.25,1,0.250000
\"dft, 8 steps\",runs/dft/final,2,4,1,0.25,0.5,0,0.000000
\"dft, 8 steps\",runs/dft/final,2,4,2,0.5,0.75,0,0.000000
\"dft, 8 steps\",runs/dft/final,2,4,3,0.75,1,3,0.750000
";
        assert_eq!(csv, want);
        let s = summary_csv(&toy_models(), &sample());
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "label,model,rows,tokens,mean_prob,median_prob,frac_below_0.1,frac_above_0.9");
        assert_eq!(lines[1], "base,models/base.gguf,2,5,0.462000,0.300000,0.400000,0.400000");
        assert_eq!(lines[2], "\"dft, 8 steps\",runs/dft/final,2,4,0.737500,0.975000,0.250000,0.750000");
        // Edges of 20 bins print as written: 0.15, not 0.15000000000000002.
        let csv20 = histogram_csv(&toy_models()[..1], &sample(), 20);
        assert!(csv20.lines().nth(4).unwrap().contains(",3,0.15,0.2,"), "{csv20}");
    }

    #[test]
    fn out_must_be_a_png_so_the_csvs_cannot_overwrite_it() {
        let opts = |out: &str| Options {
            models: vec![("missing.gguf".into(), None)],
            snapshot: "missing".into(),
            rows: 0,
            bins: 4,
            log_y: false,
            out: out.into(),
        };
        let err = run(&opts("x.csv")).unwrap_err().to_string();
        assert!(err.contains("give a .png path"), "{err}");
        // A .png gets past that check to the next one.
        let err = run(&opts("x.png")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn png_shows_a_bar_for_each_non_empty_bin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub/probs.png");
        let written = write_outputs(&out, &toy_models(), &sample(), 4, false).unwrap();
        assert_eq!(written.len(), 3);
        assert_eq!(std::fs::read_to_string(dir.path().join("sub/probs.csv")).unwrap(), histogram_csv(&toy_models(), &sample(), 4));
        assert!(dir.path().join("sub/probs.summary.csv").is_file());
        let bytes = std::fs::read(&out).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let ch = chart(&toy_models(), &sample(), 4, false);
        let (canvas, layout) = ch.render();
        assert_eq!((info.width as usize, info.height as usize), (canvas.width, canvas.height));
        assert_eq!(info.width, 1100);
        let px = |x: i64, y: i64| {
            let i = (y as usize * info.width as usize + x as usize) * 3;
            [buf[i], buf[i + 1], buf[i + 2]]
        };
        let counts = [histogram(&toy_models()[0].probs, 4), histogram(&toy_models()[1].probs, 4)];
        for (s, series) in counts.iter().enumerate() {
            for (b, &count) in series.iter().enumerate() {
                match layout.bars[s][b] {
                    Some((x0, y0, x1, y1)) => {
                        assert!(count > 0);
                        assert_eq!(px((x0 + x1) / 2, (y0 + y1) / 2), crate::plot::PALETTE[s], "series {s} bin {b}");
                    }
                    None => assert_eq!(count, 0, "series {s} bin {b} has no bar"),
                }
            }
        }
        // Bin 2 is empty for both: white just above the axis across the middle of that bin.
        let (x0, _, x1, y1) = layout.plot;
        let mid = x0 + (x1 - x0) * 5 / 8;
        assert_eq!(px(mid, y1 - 2), crate::plot::WHITE);
        // The text is there: dark pixels in the title band and left of the plot (tick labels).
        let dark = |xa: i64, xb: i64, ya: i64, yb: i64| {
            (ya..yb).flat_map(|y| (xa..xb).map(move |x| (x, y))).filter(|&(x, y)| px(x, y)[0] < 100).count()
        };
        assert!(dark(0, 1100, 0, 45) > 200, "title");
        assert!(dark(30, x0 - 6, layout.plot.1 - 10, y1 + 10) > 50, "y tick labels");
        // Deterministic.
        write_outputs(&out, &toy_models(), &sample(), 4, false).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), bytes);
    }
}
