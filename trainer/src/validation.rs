//! Held-out loss during training: the recipe's `validation_snapshot` is a `train` snapshot of
//! rows the run does not train on. Before the first step, every `validation_every` steps and
//! after the last, the model's loss on its target tokens is measured without gradients and
//! appended to `validation.jsonl`: the curve that shows whether training generalises beyond its
//! rows or memorises them (the training rows' loss alone cannot tell).
//!
//! The log-probabilities come from the path `trainer score` uses (`model::logprobs`), and the
//! objective is computed from them on the host; the training objective is computed another way
//! (chunked closed-form gradients, `loss`), and a test holds the two equal.

use crate::loss::{Loss, LossKind};
use anyhow::Context;
use burn::tensor::backend::Backend;
use model::logprobs::{row_logprobs, rows_logprobs};
use model::Llama;
use schemas::snapshot::{load_snapshot, Row, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const VALIDATION_FILE: &str = "validation.jsonl";

/// One line of `validation.jsonl`: the model after `step` updates (0: the model the run starts
/// from) on every target token of the held-out snapshot. (A line of `metrics.jsonl` gives the
/// loss step n trains on, that of the model after n - 1 updates.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationMetrics {
    pub step: u64,
    /// The held-out snapshot measured: a resume that names another keeps no line of this one.
    pub snapshot_id: String,
    /// The run's own loss (SFT, DFT or iw-SFT) on the held-out tokens; absent for iw-SFT on a
    /// held-out snapshot without reference log-probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    /// Token-mean cross-entropy, whatever the loss: what compares an SFT run with a DFT run.
    pub cross_entropy: f64,
    /// Mean probability of the held-out target tokens.
    pub mean_token_prob: f64,
    pub loss_tokens: u64,
    pub rows: usize,
    pub seconds: f64,
}

/// The held-out snapshot of a run, loaded and checked once.
pub struct Validation {
    pub dir: PathBuf,
    snapshot: Snapshot,
    every: u64,
    /// The run's loss, whose objective each measurement gives.
    loss: Loss,
    /// Rows measured side by side: the CPU's cores; 1 on a GPU (see [`Validation::measure`]).
    concurrency: usize,
}

impl Validation {
    /// Loads the snapshot at `dir` and checks it against the model and the training snapshot:
    /// its ids must mean the model's tokens (refused otherwise, as for training), and rows it
    /// shares with the training snapshot are warned about (their loss is not held out).
    pub fn open(
        dir: &Path,
        every: u64,
        model_path: &Path,
        training: &Snapshot,
        loss: Loss,
        concurrency: usize,
    ) -> anyhow::Result<Validation> {
        let snapshot = load_snapshot(dir).with_context(|| {
            format!(
                "validation_snapshot {} (held-out rows: build them with `pipeline build`, as `make data` builds the default run's from datasets/recipes/validation.yaml, or pass --no-validation)",
                dir.display()
            )
        })?;
        anyhow::ensure!(
            snapshot.rows.iter().any(|r| r.targets() > 0),
            "validation_snapshot {} has no target tokens to measure",
            dir.display()
        );
        model_files::vocab::check_model_tokens(model_path, dir, snapshot.token_ids()).with_context(|| {
            format!(
                "validation_snapshot {} (held-out rows are tokenized with the model's tokenizer, as training rows are; name such a snapshot with --validation-snapshot, or pass --no-validation)",
                dir.display()
            )
        })?;
        let (shared, total) = shared_examples(&snapshot, training);
        if snapshot.manifest.snapshot_id == training.manifest.snapshot_id {
            tracing::warn!(
                "validation_snapshot {} is the training snapshot ({}): its loss is the training rows', not a held-out one",
                dir.display(),
                training.manifest.snapshot_id
            );
        } else if shared > 0 {
            tracing::warn!(
                "validation_snapshot {}: {shared} of its {total} examples are also in the training snapshot, token for token; their loss is not held out",
                dir.display()
            );
        }
        if loss.kind == LossKind::Iwsft {
            // The held-out objective weighs each token by p / p_ref: without scores there is no
            // objective, and another reference than training's would be another objective.
            match (&snapshot.manifest.ref_logprobs, &training.manifest.ref_logprobs) {
                (None, _) => tracing::warn!(
                    "validation_snapshot {} has no reference log-probabilities: its lines give the cross-entropy but no iwsft objective (`trainer score` it with the model that scored the training snapshot)",
                    dir.display()
                ),
                (Some(held), Some(trained)) if held.model_sha256 != trained.model_sha256 => tracing::warn!(
                    "validation_snapshot {} was scored by {} (sha256 {}), the training snapshot by {} (sha256 {}): its iwsft objective weighs tokens against another reference",
                    dir.display(),
                    held.model,
                    &held.model_sha256[..16.min(held.model_sha256.len())],
                    trained.model,
                    &trained.model_sha256[..16.min(trained.model_sha256.len())]
                ),
                _ => {}
            }
        }
        tracing::info!(
            "validation: {} rows, {} target tokens of {}, every {every} steps",
            snapshot.rows.len(),
            snapshot.rows.iter().map(Row::targets).sum::<usize>(),
            dir.display()
        );
        Ok(Validation { dir: dir.to_path_buf(), snapshot, every, loss, concurrency })
    }

    /// Whether the model after `step` of `total` steps is measured: before the first, every
    /// `every` steps, and after the last.
    pub fn due(&self, step: u64, total: u64) -> bool {
        step == 0 || step.is_multiple_of(self.every) || step == total
    }

    /// The held-out snapshot's id, which each line of the log names.
    pub fn snapshot_id(&self) -> &str {
        &self.snapshot.manifest.snapshot_id
    }

    /// The model can read every held-out row: the snapshot's vocabulary and longest example
    /// fit it, as the training snapshot's must.
    pub fn check_model<B: Backend>(&self, model: &Llama<B>) -> anyhow::Result<()> {
        let context = || format!("validation_snapshot {}", self.dir.display());
        model.check_vocab(self.snapshot.manifest.tokenizer.vocab_size).with_context(context)?;
        model.check_context(self.snapshot.longest_example()).with_context(context)
    }

    /// The model's loss on every held-out target token, without gradients: with the run's
    /// concurrency above 1 (the CPU's cores) the rows side by side on rayon's threads, with 1 (a GPU) one at
    /// a time on this thread. On a GPU, rows side by side would each hold their activations in
    /// the memory training needs, and work from another thread gets a CUDA stream of its own
    /// whose memory pool training never reuses.
    pub fn measure<B: Backend>(&self, model: &Llama<B>, step: u64, device: &B::Device) -> anyhow::Result<ValidationMetrics>
    where
        Llama<B>: Sync,
    {
        let t0 = Instant::now();
        let rows: Vec<&Row> = self.snapshot.rows.iter().collect();
        let logprobs = if self.concurrency > 1 {
            rows_logprobs(model, &rows, device, || {})
        } else {
            rows.iter().map(|row| row_logprobs(model, &[*row], device).pop().expect("one row")).collect()
        };
        let (objective, cross_entropy, mean_token_prob, tokens) = held_out_means(&rows, &logprobs, self.loss);
        // serde_json writes a NaN or an infinity as null, a line no reader takes back.
        anyhow::ensure!(
            cross_entropy.is_finite() && objective.is_none_or(f64::is_finite),
            "after {step} updates: the held-out cross-entropy of {} is {cross_entropy}, its objective {objective:?}: not finite",
            self.dir.display()
        );
        Ok(ValidationMetrics {
            step,
            snapshot_id: self.snapshot_id().to_string(),
            objective,
            cross_entropy,
            mean_token_prob,
            loss_tokens: tokens,
            rows: rows.len(),
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// Over the target tokens of `rows`, given each position's log-probability (aligned with
/// `input_ids`, as `row_logprobs` gives them): the objective of `loss` (`None` for iw-SFT
/// without reference log-probabilities), the cross-entropy, the mean probability, and the count.
/// The per-token weights are the loss module's: 1 (SFT), `p` (DFT), `clip(p / p_ref)` (iw-SFT).
pub fn held_out_means(rows: &[&Row], logprobs: &[Vec<f32>], loss: Loss) -> (Option<f64>, f64, f64, u64) {
    let (mut weighted, mut ce, mut prob, mut n) = (0.0f64, 0.0f64, 0.0f64, 0u64);
    let mut referenced = true;
    for (row, lp) in rows.iter().zip(logprobs) {
        for i in (0..lp.len()).filter(|&i| row.is_target(i)) {
            let l = f64::from(lp[i]);
            let p = l.exp();
            let w = match loss.kind {
                LossKind::Sft => 1.0,
                LossKind::Dft => p,
                LossKind::Iwsft => match &row.ref_logprobs {
                    Some(r) => (l - f64::from(r[i])).exp().clamp(loss.iwsft_clip[0], loss.iwsft_clip[1]),
                    None => {
                        referenced = false;
                        0.0
                    }
                },
            };
            weighted -= w * l;
            ce -= l;
            prob += p;
            n += 1;
        }
    }
    let d = n.max(1) as f64;
    (referenced.then_some(weighted / d), ce / d, prob / d, n)
}

/// How many of `held_out`'s examples (the token ids of one packed segment) appear, token for
/// token, among `training`'s, and how many examples it has.
fn shared_examples(held_out: &Snapshot, training: &Snapshot) -> (usize, usize) {
    fn examples(s: &Snapshot) -> impl Iterator<Item = &[i32]> {
        s.rows.iter().flat_map(|r| r.examples().into_iter().map(|(start, n)| &r.input_ids[start..start + n]))
    }
    let trained: HashSet<&[i32]> = examples(training).collect();
    let (mut shared, mut total) = (0, 0);
    for e in examples(held_out) {
        total += 1;
        shared += usize::from(trained.contains(e));
    }
    (shared, total)
}
