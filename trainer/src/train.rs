//! The training loop: packed rows in, SFT, DFT or iw-SFT, AdamW with warmup + cosine, global clipping,
//! gradient accumulation, atomic checkpoints that resume to the same weights, JSONL metrics.

use crate::batch::{micro_batch, MicroBatch, Targets};
use crate::checkpoint::{
    latest_checkpoint, save_checkpoint, save_final, snapshot_tokenizer, Provenance, TrainerState, ADAPTER_DIR, OPTIMIZER_FILE, STATE_FILE,
};
use crate::in_place::{self, Arithmetic};
use crate::loss::{chunk_positions, objective, Loss, LossKind, LossParts};
use crate::optim::{clip_global, lr_at, AdamW, AdamWConfig};
use crate::validation::{Validation, ValidationMetrics, VALIDATION_FILE};
use anyhow::{bail, Context};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use model::dropout::LoraDropout;
use model::Llama;
use rayon::prelude::*;
use schemas::rng::shuffle;
use schemas::snapshot::{load_snapshot, Row};
use schemas::train::TrainRecipe;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const METRICS_FILE: &str = "metrics.jsonl";

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub lr: f64,
    /// The loss being optimised (SFT, DFT or iw-SFT), over the step's loss tokens.
    pub objective: f64,
    /// Plain token-mean cross-entropy over the same tokens, whatever the objective.
    pub cross_entropy: f64,
    /// Mean probability of the target tokens.
    pub mean_token_prob: f64,
    /// Mean over the target tokens of `log p(t) - log p_ref(t)`, the reference being the model
    /// that scored the snapshot (`trainer score`): how far training has moved the model from it
    /// on the data it trains on. Absent for an unscored snapshot. Not a KL divergence, which
    /// would need samples from the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_ratio_to_reference: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub loss_tokens: u64,
    pub tokens: u64,
    pub tokens_per_second: f64,
    pub elapsed_seconds: f64,
    /// The snapshot rows this step trained on, in micro-batch order (for replaying the run in
    /// another framework; absent from logs written before it was recorded).
    #[serde(default)]
    pub rows: Vec<usize>,
}

/// The reference's log-probabilities summed over the target tokens of `rows`, when every row has
/// them (a snapshot scored by `trainer score`).
fn reference_logprob_sum(rows: &[&Row]) -> Option<f64> {
    rows.iter()
        .map(|row| {
            let r = row.ref_logprobs.as_ref()?;
            Some((0..r.len()).filter(|&i| row.is_target(i)).map(|i| f64::from(r[i])).sum::<f64>())
        })
        .sum()
}

/// Fully resolved run settings.
pub struct Run {
    pub recipe: TrainRecipe,
    pub model_path: PathBuf,
    pub snapshot_dir: PathBuf,
    pub output_dir: PathBuf,
    /// The held-out snapshot measured during training (the recipe's `validation_snapshot`).
    pub validation_dir: Option<PathBuf>,
    /// The PEFT adapter folder LoRA starts from (the recipe's `lora.from`).
    pub lora_from: Option<PathBuf>,
    /// Write checkpoints and the final model (off for speed measurements: metrics only).
    pub save: bool,
    /// What computes the steps (`burn flex`, `burn cuda, f32 matmuls`), recorded in checkpoints
    /// and `training.json`.
    pub engine: String,
}

impl Run {
    pub fn new(recipe: TrainRecipe, recipe_path: &Path) -> anyhow::Result<Run> {
        // The flags have been applied: a value may come from either.
        recipe.validate().with_context(|| format!("training recipe {} (with the flags that override it)", recipe_path.display()))?;
        let at = |p: &str| schemas::recipe::resolve(recipe_path, p);
        Ok(Run {
            model_path: at(&recipe.model),
            snapshot_dir: at(&recipe.snapshot),
            output_dir: at(&recipe.output_dir),
            validation_dir: recipe.validation_snapshot.as_deref().map(at),
            lora_from: recipe.lora.as_ref().and_then(|l| l.from.as_deref()).map(at),
            recipe,
            save: true,
            engine: String::new(),
        })
    }
}

/// The shuffle seed of epoch `epoch`: `seed ^ mix64(epoch)`. Epoch 0 uses the seed itself
/// (`mix64(0) = 0`); `seed + epoch` would give seed 43's epoch 0 the order of seed 42's epoch 1,
/// so runs with neighbouring seeds would share most of their epochs.
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    seed ^ schemas::rng::mix64(epoch)
}

/// The data stream: epoch `e` visits the rows in `shuffle(0..n, epoch_seed(seed, e))` order.
struct Stream {
    n: usize,
    seed: u64,
    epoch: u64,
    order: Vec<usize>,
}

impl Stream {
    fn new(n: usize, seed: u64) -> Self {
        let mut s = Stream { n, seed, epoch: u64::MAX, order: vec![] };
        s.set_epoch(0);
        s
    }

    fn set_epoch(&mut self, epoch: u64) {
        if self.epoch != epoch {
            self.order = (0..self.n).collect();
            shuffle(&mut self.order, epoch_seed(self.seed, epoch));
            self.epoch = epoch;
        }
    }

    fn row(&mut self, k: u64) -> usize {
        self.set_epoch(k / self.n as u64);
        self.order[(k % self.n as u64) as usize]
    }
}

pub struct Summary {
    pub steps: u64,
    /// `None` when the run was told not to save.
    pub final_model: Option<PathBuf>,
    pub metrics: PathBuf,
    pub last: Option<StepMetrics>,
}

/// Train as the run says. With `resume`, continue from the newest checkpoint in the output
/// folder; without it, refuse to overwrite one.
/// `concurrency`: micro-batches computed at once (the CPU's cores; 1 on a GPU).
pub fn train<B: AutodiffBackend>(run: &Run, resume: bool, concurrency: usize, device: &B::Device) -> anyhow::Result<Summary> {
    let new_folder = !run.output_dir.exists();
    let result = train_in::<B>(run, resume, new_folder, concurrency, device);
    if result.is_err() && new_folder {
        // A run refused before it wrote anything leaves no empty folder behind to puzzle over
        // (`remove_dir` removes only an empty one: a run that logged steps keeps them).
        let _ = std::fs::remove_dir(&run.output_dir);
    }
    result
}

/// [`train`]; `new_folder`: the output folder did not exist before this run.
fn train_in<B: AutodiffBackend>(
    run: &Run,
    resume: bool,
    new_folder: bool,
    concurrency: usize,
    device: &B::Device,
) -> anyhow::Result<Summary> {
    let r = &run.recipe;
    let snapshot = load_snapshot(&run.snapshot_dir)?;
    if snapshot.rows.is_empty() {
        bail!("snapshot {} has no rows to train on", run.snapshot_dir.display());
    }
    let saved_tokenizer = if run.save { Some(snapshot_tokenizer(&run.snapshot_dir, &snapshot.manifest.tokenizer)?) } else { None };
    if r.loss == LossKind::Iwsft {
        // Before the model is loaded: a missing scoring pass should cost nothing to find out.
        snapshot.require_ref_logprobs(&run.snapshot_dir)?;
        if let Some(info) = &snapshot.manifest.ref_logprobs {
            tracing::info!(
                "iwsft: reference log-probabilities from {} (sha256 {})",
                info.model,
                &info.model_sha256[..16.min(info.model_sha256.len())]
            );
        }
    }
    // Before the base is hashed and loaded: a wrong `lora.from` should cost nothing to find out
    // (a resume takes a checkpoint's adapters instead, and needs the folder no more).
    let mut start_adapters = match (&r.lora, &run.lora_from) {
        (Some(lora), Some(dir)) if !resume => Some(crate::lora::adapters_from(dir, lora)?),
        _ => None,
    };
    model_files::vocab::check_model_tokens(&run.model_path, &run.snapshot_dir, snapshot.token_ids())?;
    let loss = Loss::from(r);
    let validation = match &run.validation_dir {
        Some(dir) => Some(Validation::open(dir, r.validation_interval(), &run.model_path, &snapshot, loss, concurrency)?),
        None => None,
    };
    let rows_per_step = r.batch_tokens.div_ceil(snapshot.seq_len).max(1);
    if rows_per_step * snapshot.seq_len != r.batch_tokens {
        // Whole rows only: said, since a step then holds other tokens than the recipe asked for.
        tracing::warn!(
            "batch_tokens {} is not a whole number of the snapshot's {}-token rows: each step takes {rows_per_step} of them, {} tokens",
            r.batch_tokens,
            snapshot.seq_len,
            rows_per_step * snapshot.seq_len
        );
    }
    let total_steps = match (r.steps, r.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => ((e * snapshot.rows.len() as f64) / rows_per_step as f64).ceil().max(1.0) as u64,
        _ => unreachable!("validated"),
    };
    let warmup = (r.warmup_ratio * total_steps as f64).round() as u64;
    std::fs::create_dir_all(&run.output_dir).with_context(|| format!("cannot create {}", run.output_dir.display()))?;

    tracing::info!(
        "{}: lr {} (warmup {warmup} of {total_steps} steps, then {}), betas {:?}, eps {}, weight decay {}, clip {}, {rows_per_step} rows of {} tokens per step, seed {}",
        r.math_value("loss"),
        r.lr,
        r.math_value("lr_schedule"),
        r.betas,
        r.eps,
        r.weight_decay,
        r.clip,
        snapshot.seq_len,
        r.seed
    );

    let mut opt =
        AdamW::<B::InnerBackend>::new(AdamWConfig { beta1: r.betas[0], beta2: r.betas[1], eps: r.eps, weight_decay: r.weight_decay });
    let base_model_sha256 = model_files::checkpoint::model_hash(&run.model_path)?.0;
    let metrics_path = run.output_dir.join(METRICS_FILE);
    let latest = latest_checkpoint(&run.output_dir)?;
    let (model_dir, mut state) = match (resume, latest) {
        (true, Some(dir)) => {
            let mut state = read_state(&dir)?;
            if state.snapshot_id != snapshot.manifest.snapshot_id {
                bail!(
                    "checkpoint {} was trained on snapshot {}, this run uses {}",
                    dir.display(),
                    state.snapshot_id,
                    snapshot.manifest.snapshot_id
                );
            }
            // The data order, the schedule and the update all follow from these: a resumed
            // run that changed one would silently be another run under the old name.
            let changed = state.recipe.math_differences(r);
            if !changed.is_empty() {
                bail!(
                    "checkpoint {} was trained with other settings; resume with the ones it started with (its {STATE_FILE} holds the recipe):\n  {}",
                    dir.display(),
                    changed.join("\n  ")
                );
            }
            crate::lora::check_resumed_start(&dir, state.lora_from_sha256.as_deref(), run.lora_from.as_deref())?;
            if state.base_model_sha256.as_ref().is_some_and(|h| *h != base_model_sha256) {
                bail!(
                    "checkpoint {} was trained from another base model than {} (sha256 {} there, {base_model_sha256} here)",
                    dir.display(),
                    run.model_path.display(),
                    state.base_model_sha256.as_deref().unwrap_or_default()
                );
            }
            // Allowed, but not bit for bit: another engine rounds differently, and another
            // micro-batch size or recompute adds the same terms in another order.
            let mut rounding = vec![];
            if !state.engine.is_empty() && state.engine != run.engine {
                rounding.push(format!("engine: {} -> {}", state.engine, run.engine));
            }
            if state.recipe.micro_batch_rows != r.micro_batch_rows {
                rounding.push(format!("micro_batch_rows: {} -> {}", state.recipe.micro_batch_rows, r.micro_batch_rows));
            }
            if state.recipe.recompute != r.recompute {
                rounding.push(format!("recompute: {} -> {}", state.recipe.recompute, r.recompute));
            }
            if !rounding.is_empty() {
                tracing::warn!(
                    "resuming with {}: the continuation equals the uninterrupted run to rounding, not bit for bit",
                    rounding.join(", ")
                );
            }
            state.engine = run.engine.clone();
            if state.step >= total_steps {
                tracing::warn!(
                    "{}: the run finished at step {} of {total_steps}: nothing left to train",
                    run.output_dir.display(),
                    state.step
                );
            }
            let moments = dir.join(OPTIMIZER_FILE);
            opt.load_state(state.step, &model_files::safetensors::read_safetensors(&moments)?, device)
                .with_context(|| format!("resuming from {}", moments.display()))?;
            tracing::info!("resuming from {} (step {})", dir.display(), state.step);
            (dir, state)
        }
        (false, Some(dir)) => match read_state(&dir) {
            Ok(s) if s.step >= s.total_steps => bail!(
                "{} holds a finished run ({} of {} steps, checkpoint {}): choose another output_dir, or remove it to start afresh",
                run.output_dir.display(),
                s.step,
                s.total_steps,
                dir.display()
            ),
            _ => bail!(
                "{} already holds checkpoint {}: pass --resume to continue it, or choose another output_dir",
                run.output_dir.display(),
                dir.display()
            ),
        },
        (_, None) => {
            // A finished run whose checkpoints were deleted, or (without --resume) a started one
            // that never saved, would be overwritten by a fresh start.
            let final_dir = run.output_dir.join("final");
            let metrics = std::fs::read_to_string(&metrics_path).unwrap_or_default();
            let logged = !metrics.is_empty();
            // The last step logged (None: not one line whole).
            let last_step = metrics.lines().filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok()).map(|m| m.step).max();
            let before_first_checkpoint = last_step.is_none_or(|s| s < r.checkpoint_every);
            if logged && resume && !final_dir.exists() && before_first_checkpoint {
                // Stopped before its first checkpoint was due: nothing to continue from, and its
                // logged steps are dropped (`keep_lines` up to step 0), so nothing is mixed.
                tracing::warn!(
                    "{} holds steps logged in {METRICS_FILE} but no checkpoint (the run stopped before its first one, due at step {}): starting afresh, dropping them",
                    run.output_dir.display(),
                    r.checkpoint_every
                );
            } else if final_dir.exists() || logged {
                // Past a checkpoint that is gone (deleted, or never completed): refused, so that
                // a long run's log is not dropped by a resume that cannot continue it.
                bail!(
                    "{} holds a run ({}) but no checkpoint to {}: choose another output_dir, or remove it to start afresh",
                    run.output_dir.display(),
                    if final_dir.exists() {
                        "final/".to_string()
                    } else {
                        format!("{METRICS_FILE}, up to step {}", last_step.unwrap_or(0))
                    },
                    if resume { "resume from" } else { "continue" }
                );
            }
            if resume && new_folder {
                // Most often a mistyped path: said louder than a resume of a run that had not
                // reached its first checkpoint.
                tracing::warn!(
                    "--resume: {} did not exist, so there is nothing to resume: starting a new run there",
                    run.output_dir.display()
                );
            } else if resume && !logged {
                tracing::info!("no checkpoint in {} yet: starting afresh", run.output_dir.display());
            }
            let state = TrainerState {
                step: 0,
                total_steps,
                rows_consumed: 0,
                seed: r.seed,
                snapshot_id: snapshot.manifest.snapshot_id.clone(),
                recipe: r.clone(),
                base_model_sha256: Some(base_model_sha256.clone()),
                lora_from_sha256: None,
                engine: run.engine.clone(),
            };
            (run.model_path.clone(), state)
        }
    };
    let mut model: Llama<B> = match &r.lora {
        None => Llama::<B>::load(&model_dir, device)?,
        // The base model stays as loaded; a checkpoint's own weights are merged, so a resume
        // takes the base again (its sha256 checked above) and the checkpoint's adapters.
        Some(lora) => {
            let base = Llama::<B>::load(&run.model_path, device)?;
            let adapters = if state.step > 0 {
                let dir = model_dir.join(ADAPTER_DIR);
                if !dir.is_dir() {
                    bail!(
                        "checkpoint {} has no {ADAPTER_DIR}/, the LoRA adapters a resume continues from (its merged weights cannot be split back into them): restore it, or start afresh in another output_dir",
                        model_dir.display()
                    );
                }
                let (saved, adapters) = model_files::lora::read_adapter(&dir)?;
                if !saved.same_as(lora) {
                    bail!("{} holds adapters of {}, the recipe asks for {}", dir.display(), saved.describe(), lora.describe());
                }
                adapters
            } else if let Some(dir) = &run.lora_from {
                let (adapters, sha256) = match start_adapters.take() {
                    Some(read) => read,
                    None => crate::lora::adapters_from(dir, lora)?,
                };
                crate::lora::check_adapter_base(dir, &run.model_path, &base_model_sha256)?;
                tracing::info!("LoRA starts from the adapters in {} (sha256 {})", dir.display(), &sha256[..16]);
                state.lora_from_sha256 = Some(sha256);
                adapters
            } else {
                let mut fresh = crate::lora::initial_adapters(&base.config, lora, r.seed)?;
                if lora.dora {
                    fresh.extend(base.initial_magnitudes(lora));
                }
                fresh
            };
            let model = base.with_lora(lora, &adapters)?;
            let trained: usize = model.trainable_params().iter().map(|(_, p)| p.shape().num_elements()).sum();
            let base: usize = model.named_params().iter().map(|(_, p)| p.shape().num_elements()).sum::<usize>() - trained;
            tracing::info!(
                "LoRA {}: {trained} trained parameters, {:.2}% of the base model's {base}",
                lora.describe(),
                100.0 * trained as f64 / base as f64
            );
            model
        }
    }
    .with_trainable_leaves();
    model.check_vocab(snapshot.manifest.tokenizer.vocab_size)?;
    model.check_context(snapshot.longest_example()).with_context(|| format!("snapshot {}", run.snapshot_dir.display()))?;
    let shapes: Vec<(String, [usize; 2])> = model.trainable_params().into_iter().map(|(n, p)| (n, p.dims())).collect();
    opt.check_moments(&shapes).with_context(|| format!("resuming from {}", model_dir.display()))?;
    let recompute_blocks = r.recompute.blocks(model.config.num_hidden_layers)?;
    if let Some(v) = &validation {
        v.check_model(&model)?;
    }

    keep_lines::<StepMetrics>(&metrics_path, |m| m.step <= state.step)?;
    let mut metrics = append_to(&metrics_path)?;
    // Each line measured the model of its step: a fresh start drops every line (another start
    // may have measured another model), a resume those past its checkpoint, and those of
    // another held-out snapshot than it measures (one curve, one set of rows). Kept in step
    // with the metrics also by a run that no longer measures.
    let validation_path = run.output_dir.join(VALIDATION_FILE);
    let resumed_at = state.step;
    let held_id = validation.as_ref().map(|v| v.snapshot_id().to_string());
    let mut other_set = 0;
    let last_measured = keep_lines::<ValidationMetrics>(&validation_path, |m| {
        let same_set = held_id.as_ref().is_none_or(|id| *id == m.snapshot_id);
        let continued = resumed_at > 0 && m.step <= resumed_at;
        other_set += usize::from(continued && !same_set);
        continued && same_set
    })?
    .map(|m| m.step);
    if other_set > 0 {
        tracing::warn!(
            "{}: dropped {other_set} lines measured on another held-out snapshot than {}",
            validation_path.display(),
            held_id.as_deref().unwrap_or_default()
        );
    }
    let mut validation = match validation {
        Some(v) => Some((v, append_to(&validation_path)?)),
        None => None,
    };
    let mut stream = Stream::new(snapshot.rows.len(), state.seed);
    let start = Instant::now();
    let pb = progress::steps(total_steps, r.loss.as_str());
    pb.set_position(state.step);
    let mut last = None;
    // Due, or the first measurement of this held-out set in a resumed run (added, or another
    // one named, at the resume): its curve starts where the run resumes.
    if let Some((v, log)) = validation
        .as_mut()
        .filter(|(v, _)| (v.due(state.step, total_steps) || last_measured.is_none()) && last_measured != Some(state.step))
    {
        validate(v, log, &model, state.step, &pb, device)?;
    }
    while state.step < total_steps {
        let t0 = Instant::now();
        let row_ids: Vec<usize> = (0..rows_per_step as u64).map(|i| stream.row(state.rows_consumed + i)).collect();
        let rows: Vec<&Row> = row_ids.iter().map(|&i| &snapshot.rows[i]).collect();
        // LoRA dropout: this step's draws (held-out measurement runs without).
        let dropout =
            r.lora.as_ref().filter(|l| l.dropout > 0.0).map(|l| LoraDropout::for_step(l.dropout, state.seed, state.step + 1, rows.len()));
        let step = step_gradients(&model, &rows, dropout.as_ref(), r.micro_batch_rows, concurrency, loss, recompute_blocks, device)?;
        let reference = reference_logprob_sum(&rows);
        let (obj, ce, prob, step_tokens) = (step.objective, step.ce_sum, step.prob_sum, step.tokens);
        let step_no = state.step + 1;
        let (norm, clipped) = clip_global(step.grads, r.clip, concurrency);
        if !obj.is_finite() || !ce.is_finite() || !norm.is_finite() {
            pb.abandon();
            bail!(
                "step {step_no}: objective {obj}, cross-entropy {}, grad norm {norm} is not finite; stopped before updating. The last good checkpoint in {} is intact",
                ce / step_tokens,
                run.output_dir.join("checkpoints").display()
            );
        }
        let lr = lr_at(state.step, total_steps, warmup, r.lr, r.lr_schedule);
        model = apply_update(model, clipped, &mut opt, lr, concurrency, device);
        // A GPU queues the update and returns; without waiting, a step's time would leave out its
        // own update and include the previous one's.
        B::sync(device).map_err(|e| anyhow::anyhow!("step {step_no}: the device failed while updating the weights: {e:?}"))?;
        state.step = step_no;
        state.rows_consumed += rows_per_step as u64;
        let tokens = (rows_per_step * snapshot.seq_len) as u64;
        let m = StepMetrics {
            step: step_no,
            lr,
            objective: obj,
            cross_entropy: ce / step_tokens,
            mean_token_prob: prob / step_tokens,
            // Σ log p = -Σ cross-entropy, over the same target tokens as the reference's sum.
            log_ratio_to_reference: reference.map(|r| (-ce - r) / step_tokens),
            grad_norm: norm,
            loss_tokens: step_tokens as u64,
            tokens,
            tokens_per_second: tokens as f64 / t0.elapsed().as_secs_f64(),
            elapsed_seconds: start.elapsed().as_secs_f64(),
            rows: row_ids,
        };
        writeln!(metrics, "{}", serde_json::to_string(&m)?)?;
        metrics.flush()?;
        pb.set_message(format!(
            "obj {:.4} ce {:.4} p {:.3} |g| {:.2} {:.0} tok/s",
            m.objective, m.cross_entropy, m.mean_token_prob, m.grad_norm, m.tokens_per_second
        ));
        pb.inc(1);
        // Before the checkpoint: a run killed between the two measures this step again when it
        // resumes from the checkpoint before it, not never.
        if let Some((v, log)) = validation.as_mut().filter(|(v, _)| v.due(step_no, total_steps)) {
            validate(v, log, &model, step_no, &pb, device)?;
        }
        if run.save && (step_no % r.checkpoint_every == 0 || step_no == total_steps) {
            save_checkpoint(&run.output_dir, &model, saved_tokenizer.as_ref().expect("read when saving"), &opt, &state, &run.model_path)?;
            if let Some(keep) = r.keep_checkpoints {
                crate::checkpoint::prune_checkpoints(&run.output_dir, keep)?;
            }
            crate::curves::refresh(&run.output_dir);
        }
        last = Some(m);
    }
    pb.finish();
    let final_model = if run.save {
        let dir = run.output_dir.join("final");
        let provenance = Provenance {
            base_model: run.model_path.display().to_string(),
            base_model_sha256,
            snapshot: run.snapshot_dir.display().to_string(),
            snapshot_id: state.snapshot_id.clone(),
            steps: state.step,
            recipe: r.clone(),
            tool: format!("rectify-trainer {} train", env!("CARGO_PKG_VERSION")),
            engine: run.engine.clone(),
            lora_from: run.lora_from.as_ref().map(|d| d.display().to_string()),
            lora_from_sha256: state.lora_from_sha256.clone(),
        };
        save_final(&dir, &model, saved_tokenizer.as_ref().expect("read when saving"), &provenance)?;
        Some(dir)
    } else {
        None
    };
    Ok(Summary { steps: state.step, final_model, metrics: metrics_path, last })
}

/// The summed gradients and detached loss sums of one optimizer step.
pub struct StepResult<B: AutodiffBackend> {
    /// By parameter name, in name order.
    pub grads: Vec<(String, Tensor<B::InnerBackend, 2>)>,
    pub objective: f64,
    pub ce_sum: f64,
    pub prob_sum: f64,
    /// N: the loss tokens of the step (at least 1).
    pub tokens: f64,
}

/// Forward and backward over the rows of one optimizer step, `micro_batch_rows` at a time, with
/// `concurrency` micro-batches side by side, their gradients summed; with the step's LoRA
/// `dropout`, if it has one.
#[allow(clippy::too_many_arguments)]
pub fn step_gradients<B: AutodiffBackend>(
    model: &Llama<B>,
    rows: &[&Row],
    dropout: Option<&LoraDropout>,
    micro_batch_rows: usize,
    concurrency: usize,
    loss: Loss,
    recompute_blocks: usize,
    device: &B::Device,
) -> anyhow::Result<StepResult<B>> {
    let step_tokens = rows.iter().map(|r| r.targets()).sum::<usize>().max(1) as f64;
    let mut grads = Grads::<B>::default();
    let (mut obj, mut ce, mut prob) = (0.0, 0.0, 0.0);
    // Burn's CPU backend runs element-wise ops on one thread, so on CPU the micro-batches of a
    // step run side by side, each on its own copy of the parameters (separate autodiff leaves),
    // and their gradients are summed in micro-batch order, which keeps the result independent
    // of thread timing.
    let chunks: Vec<&[&Row]> = rows.chunks(micro_batch_rows.max(1)).collect();
    // LoRA dropout draws by a row's place in the step: micro-batch `chunk` runs on a copy of the
    // model with its rows' draws (None: no dropout, so no copy).
    let dropped =
        |chunk: usize, rows: usize| dropout.map(|d| model.clone().with_dropout(Some(d.rows(chunk * micro_batch_rows.max(1), rows))));
    for (w, wave) in chunks.chunks(concurrency.max(1)).enumerate() {
        let first_chunk = w * concurrency.max(1);
        let results: Vec<anyhow::Result<MicroResult<B>>> = if wave.len() == 1 {
            let copy = dropped(first_chunk, wave[0].len());
            vec![micro_step(copy.as_ref().unwrap_or(model), wave[0], loss, step_tokens, recompute_blocks, device)]
        } else {
            wave.par_iter()
                .enumerate()
                .map(|(j, chunk)| {
                    let local = dropped(first_chunk + j, chunk.len())
                        .unwrap_or_else(|| model.clone())
                        .map_params(device, |_, p| Tensor::from_inner(p.inner()))
                        .with_trainable_leaves();
                    micro_step(&local, chunk, loss, step_tokens, recompute_blocks, device)
                })
                .collect()
        };
        for result in results {
            let m = result?;
            obj += m.objective;
            ce += m.ce_sum;
            prob += m.prob_sum;
            for (name, g) in m.grads {
                grads.add(name, g, concurrency);
            }
        }
    }
    Ok(StepResult { grads: grads.0.into_iter().collect(), objective: obj, ce_sum: ce, prob_sum: prob, tokens: step_tokens })
}

/// Gradients and detached loss sums of one micro-batch.
pub struct MicroResult<B: AutodiffBackend> {
    pub grads: Vec<(String, Tensor<B::InnerBackend, 2>)>,
    pub objective: f64,
    pub ce_sum: f64,
    pub prob_sum: f64,
}

/// One AdamW step with (already clipped) gradients over `threads` cores (see
/// [`AdamW::update_all`]); the updated parameters stay trainable.
pub fn apply_update<B: AutodiffBackend>(
    model: Llama<B>,
    grads: Vec<(String, Tensor<B::InnerBackend, 2>)>,
    opt: &mut AdamW<B::InnerBackend>,
    lr: f64,
    threads: usize,
    device: &B::Device,
) -> Llama<B> {
    opt.begin_step();
    let mut grads: BTreeMap<String, Tensor<B::InnerBackend, 2>> = grads.into_iter().collect();
    // The trained parameters are moved out of the model (one-element placeholders stand in until
    // the updates go back), so each old parameter is freed as soon as its update is computed
    // rather than all of them living next to all the new ones. One element, not zero: a
    // zero-byte allocation is a corner a GPU memory pool need not handle. Frozen ones (LoRA's
    // base weights) stay.
    let trained: std::collections::BTreeSet<String> = model.trainable_params().into_iter().map(|(name, _)| name).collect();
    let mut work = Vec::new();
    let emptied = model.map_params(device, |name, p| {
        if !trained.contains(name) {
            return p;
        }
        work.push((name.to_string(), p.inner(), grads.remove(name).expect("a gradient per trained parameter")));
        Tensor::<B, 2>::empty([1, 1], device)
    });
    let names: Vec<String> = work.iter().map(|(name, _, _)| name.clone()).collect();
    let mut updated: BTreeMap<String, _> = names.into_iter().zip(opt.update_all(work, lr, threads)).collect();
    emptied.map_params(device, |name, p| match updated.remove(name) {
        Some(u) => Tensor::from_inner(u).require_grad(),
        None => p,
    })
}

/// Forward and backward of one micro-batch, its objective scaled by the step's loss tokens.
/// With `recompute_blocks` above 0, the first that many blocks keep only their input from the
/// forward pass and run again in the backward pass (see [`recomputed_step`]).
pub fn micro_step<B: AutodiffBackend>(
    model: &Llama<B>,
    rows: &[&Row],
    loss: impl Into<Loss>,
    step_tokens: f64,
    recompute_blocks: usize,
    device: &B::Device,
) -> anyhow::Result<MicroResult<B>> {
    let mb = micro_batch::<B>(rows, device);
    if recompute_blocks > 0 {
        return recomputed_step(model, mb, loss.into(), step_tokens, recompute_blocks);
    }
    let h = model.hidden(mb.input_ids, mb.positions, &mb.segments);
    let parts = head_objective(model, h, &mb.targets, loss.into(), step_tokens)?;
    let mut grads = Grads::default();
    grads.take(model, &mut parts.surrogate.clone().backward());
    Ok(MicroResult { grads: grads.into_named(model)?, objective: parts.objective, ce_sum: parts.ce_sum, prob_sum: parts.prob_sum })
}

/// The objective at a micro-batch's trained positions, from its final hidden states
/// `[batch, seq, hidden]`.
fn head_objective<B: AutodiffBackend>(
    model: &Llama<B>,
    h: Tensor<B, 3>,
    targets: &Targets,
    loss: Loss,
    step_tokens: f64,
) -> anyhow::Result<LossParts<B>> {
    if targets.is_empty() {
        // Nothing trained: a zero objective whose gradient still reaches every parameter.
        let surrogate = h.sum().mul_scalar(0.0) + model.head().clone().sum().mul_scalar(0.0);
        return Ok(LossParts { surrogate, objective: 0.0, ce_sum: 0.0, prob_sum: 0.0, tokens: 0.0 });
    }
    let [b, t, d] = h.dims();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(targets.index.clone(), [targets.len()]), &h.device());
    let h = h.reshape([b * t, d]).select(0, index);
    objective(h, model.head(), targets, loss, step_tokens, chunk_positions(model.config.vocab_size))
}

/// What the forward pass leaves of one block for the backward pass.
enum Kept<B: AutodiffBackend> {
    /// A recomputed block: its input only, `[batch, seq, hidden]`.
    Input(Tensor<B::InnerBackend, 3>),
    /// A kept block: its input as a leaf and its output with the graph between them.
    Graph { x: Tensor<B, 3>, y: Tensor<B, 3> },
}

/// Per-layer activation recompute. The forward pass runs the first `blocks` blocks without a
/// graph, keeping only the residual stream entering each, and the other blocks with a graph of
/// their own (their input a fresh leaf). The backward pass then goes block by block from the
/// last: a recomputed block's input becomes a leaf and the block runs again with a graph; the
/// gradient flowing down from above is pushed through it (`Σ y ⊙ sg(dy)`). So a recomputed block's
/// activations exist only while its own backward runs, at the price of a second forward pass
/// through it.
pub fn recomputed_step<B: AutodiffBackend>(
    model: &Llama<B>,
    mb: MicroBatch<B>,
    loss: Loss,
    step_tokens: f64,
    blocks: usize,
) -> anyhow::Result<MicroResult<B>> {
    let plain: Llama<B::InnerBackend> = model.clone().map_params(&mb.input_ids.clone().inner().device(), |_, p| p.inner());
    let plain_rotary = plain.rotary(&mb.positions.clone().inner());
    let rotary = model.rotary(&mb.positions);
    let mut x = plain.embed(mb.input_ids.clone().inner());
    let mut kept: Vec<Kept<B>> = Vec::with_capacity(model.params.layers.len());
    for layer in 0..model.params.layers.len() {
        if layer < blocks {
            kept.push(Kept::Input(x.clone()));
            x = plain.block(layer, x, &plain_rotary, &mb.segments);
        } else {
            let leaf = Tensor::<B, 3>::from_inner(x).require_grad();
            let y = model.block(layer, leaf.clone(), &rotary, &mb.segments);
            x = y.clone().inner();
            kept.push(Kept::Graph { x: leaf, y });
        }
    }
    let mut grads = Grads::default();
    let x = Tensor::<B, 3>::from_inner(x).require_grad();
    let parts = head_objective(model, model.final_norm(x.clone()), &mb.targets, loss, step_tokens)?;
    let mut g = parts.surrogate.backward();
    grads.take(model, &mut g);
    let mut upstream = x.grad(&g).context("no gradient for the last block's output")?;
    for (layer, kept) in kept.into_iter().enumerate().rev() {
        let (x, y) = match kept {
            Kept::Input(x) => {
                let x = Tensor::<B, 3>::from_inner(x).require_grad();
                let y = model.block(layer, x.clone(), &rotary, &mb.segments);
                (x, y)
            }
            Kept::Graph { x, y } => (x, y),
        };
        let mut g = (y * Tensor::from_inner(upstream)).sum().backward();
        grads.take(model, &mut g);
        upstream = x.grad(&g).context("no gradient for a block's input")?;
    }
    // The embeddings' gradient, unless they are frozen (LoRA): then nothing below needs one.
    if model.params.embed_tokens.is_require_grad() {
        let mut g = (model.embed(mb.input_ids) * Tensor::from_inner(upstream)).sum().backward();
        grads.take(model, &mut g);
    }
    Ok(MicroResult { grads: grads.into_named(model)?, objective: parts.objective, ce_sum: parts.ce_sum, prob_sum: parts.prob_sum })
}

/// Parameter gradients summed over one or more backward passes or micro-batches, by Hugging Face
/// name.
struct Grads<B: AutodiffBackend>(BTreeMap<String, Tensor<B::InnerBackend, 2>>);

impl<B: AutodiffBackend> Default for Grads<B> {
    fn default() -> Self {
        Grads(BTreeMap::new())
    }
}

impl<B: AutodiffBackend> Grads<B> {
    /// Add the gradients one backward pass left on the model's parameters. They are moved out
    /// of `g`, so each is its bytes' only owner and sums run in place on CPU (`in_place`).
    fn take(&mut self, model: &Llama<B>, g: &mut B::Gradients) {
        for (name, p) in model.trainable_params() {
            if let Some(gp) = p.grad_remove(g) {
                // Inside one micro-batch, which has its own core: one thread.
                self.add(name, gp, 1);
            }
        }
    }

    /// Add `g` to the sum kept for `name`, over `threads` cores (in place on CPU, `in_place`).
    fn add(&mut self, name: String, g: Tensor<B::InnerBackend, 2>, threads: usize) {
        let sum = match self.0.remove(&name) {
            Some(acc) => in_place::add(acc, g, Arithmetic::for_backend::<B::InnerBackend>(), threads),
            None => g,
        };
        self.0.insert(name, sum);
    }

    /// One gradient per trained parameter, in [`Llama::trainable_params`] order.
    fn into_named(mut self, model: &Llama<B>) -> anyhow::Result<Vec<(String, Tensor<B::InnerBackend, 2>)>> {
        model
            .trainable_params()
            .into_iter()
            .map(|(name, _)| self.0.remove(&name).with_context(|| format!("no gradient for {name}")).map(|g| (name, g)))
            .collect()
    }
}

fn read_state(dir: &Path) -> anyhow::Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a trainer state", path.display()))
}

/// Keeps only the lines of a JSONL log (`metrics.jsonl`, `validation.jsonl`) that `keep` accepts,
/// where the file exists: a run killed after its last checkpoint left lines past it, and a
/// resumed run's log must have each step once. Returns the last line kept.
fn keep_lines<T: DeserializeOwned>(path: &Path, mut keep: impl FnMut(&T) -> bool) -> anyhow::Result<Option<T>> {
    let context = || format!("{}", path.display());
    let mut last = None;
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(context)?;
        let mut kept = String::new();
        for (i, l) in text.lines().enumerate() {
            match serde_json::from_str::<T>(l) {
                Ok(m) if keep(&m) => {
                    kept.extend([l, "\n"]);
                    last = Some(m);
                }
                Ok(_) => {}
                // A run killed while appending leaves a partial last line; it is dropped, but said.
                Err(e) => tracing::warn!("{}:{}: dropped, not a line of this log ({e})", path.display(), i + 1),
            }
        }
        schemas::write_atomic(path, kept.as_bytes()).with_context(context)?;
    }
    Ok(last)
}

fn append_to(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("{}", path.display()))
}

/// Measures the held-out loss of the model after `step` steps and appends it to the log.
fn validate<B: AutodiffBackend>(
    v: &Validation,
    log: &mut std::fs::File,
    model: &Llama<B>,
    step: u64,
    pb: &progress::ProgressBar,
    device: &B::Device,
) -> anyhow::Result<()> {
    // Without the autodiff graph: measuring must not change what the next step computes.
    let plain: Llama<B::InnerBackend> = model.clone().map_params(device, |_, p| p.inner());
    let m = v.measure(&plain, step, device).inspect_err(|_| pb.abandon())?;
    writeln!(log, "{}", serde_json::to_string(&m)?)?;
    log.flush()?;
    // A log line, not the bar's: the bar is hidden where stderr is not a terminal.
    pb.suspend(|| {
        tracing::info!(
            "after {step} updates: held-out cross-entropy {:.4}, p {:.3}{} ({} tokens, {:.1} s)",
            m.cross_entropy,
            m.mean_token_prob,
            m.objective.map(|o| format!(", objective {o:.4}")).unwrap_or_default(),
            m.loss_tokens,
            m.seconds
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use model::logprobs::target_logprobs;
    use model_files::checkpoint::{Checkpoint, HostTensor};

    type B = Autodiff<Flex>;

    /// A 2-layer model of architecture `kind` with seeded random weights: a tied Llama, a Qwen2
    /// with q/k/v biases and its own output head, or a tied Qwen3 with q/k norms over heads of 8
    /// (twice hidden_size / heads).
    fn tiny(kind: &str) -> Llama<B> {
        let (tied, head_dim) = match kind {
            "llama" => (true, 4),
            "qwen2" => (false, 4),
            _ => (true, 8),
        };
        let config = serde_json::from_str(&format!(
            r#"{{"model_type": "{kind}", "vocab_size": 300, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": {head_dim}, "rms_norm_eps": 1e-5,
                "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": {tied}}}"#
        ))
        .unwrap();
        let mut rng = schemas::rng::SplitMix64::new(11);
        let tensors = model_files::checkpoint::expected_tensors(&config)
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let offset = if name.contains("norm") { 1.0 } else { 0.0 };
                let data = (0..n).map(|_| offset + ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.8).collect();
                (name, HostTensor { shape, data })
            })
            .collect();
        let model = Llama::<B>::from_checkpoint(&Checkpoint { config, tensors }, &Default::default()).unwrap();
        model.map_params(&Default::default(), |_, p| p.require_grad())
    }

    /// Two rows of 12 tokens: two packed examples with a pad, and one example; reference
    /// log-probabilities for iwsft.
    fn rows() -> Vec<Row> {
        let mut rng = schemas::rng::SplitMix64::new(5);
        let mut ids = || (0..12).map(|_| rng.below(300) as i32).collect::<Vec<_>>();
        let a = Row {
            input_ids: ids(),
            loss_mask: vec![0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0],
            position_ids: vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 0],
            segment_ids: vec![1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0],
            ref_logprobs: Some((0..12).map(|i| -0.3 * i as f32 - 4.0).collect()),
        };
        let b = Row {
            input_ids: ids(),
            loss_mask: vec![0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
            position_ids: (0..12).collect(),
            segment_ids: vec![1; 12],
            ref_logprobs: Some((0..12).map(|i| -0.2 * i as f32 - 5.0).collect()),
        };
        vec![a, b]
    }

    /// The step as it was computed before trained-positions-only chunks: the whole logits,
    /// `logp` at every position, the mask and the weight applied to it, one backward pass.
    fn full_step(model: &Llama<B>, rows: &[&Row], loss: Loss, n: f64) -> (f64, BTreeMap<String, Vec<f32>>) {
        let dev = Default::default();
        let mb = micro_batch::<B>(rows, &dev);
        let [b, t] = mb.input_ids.dims();
        let logits = model.forward(mb.input_ids.clone(), mb.positions, &mb.segments).narrow(1, 0, t - 1);
        let ids: Vec<i64> = mb.input_ids.into_data().convert::<i64>().to_vec().unwrap();
        let next: Vec<i64> = (0..b).flat_map(|k| ids[k * t + 1..(k + 1) * t].to_vec()).collect();
        let logp = target_logprobs(logits, Tensor::from_data(TensorData::new(next, [b, t - 1]), &dev)).reshape([b * (t - 1)]);
        let mut mask = vec![0.0f32; b * (t - 1)];
        let mut reference = vec![0.0f32; b * (t - 1)];
        for (j, &i) in mb.targets.index.iter().enumerate() {
            // Flat indices count `t` positions per row; the logits have `t - 1`.
            let (k, p) = (i as usize / t, i as usize % t);
            mask[k * (t - 1) + p] = 1.0;
            reference[k * (t - 1) + p] = mb.targets.reference.as_ref().map_or(0.0, |r| r[j]);
        }
        let mask = Tensor::<B, 1>::from_data(TensorData::new(mask, [b * (t - 1)]), &dev);
        let reference = Tensor::<B, 1>::from_data(TensorData::new(reference, [b * (t - 1)]), &dev);
        let weight = match loss.kind {
            LossKind::Sft => mask.clone(),
            LossKind::Dft => logp.clone().detach().exp() * mask.clone(),
            LossKind::Iwsft => (logp.clone().detach() - reference).exp().clamp(loss.iwsft_clip[0], loss.iwsft_clip[1]) * mask.clone(),
        };
        let obj = (logp * weight).sum().neg().div_scalar(n);
        let value = obj.clone().into_data().convert::<f64>().to_vec::<f64>().unwrap()[0];
        let g = obj.backward();
        let grads = model.named_params().into_iter().map(|(name, p)| (name, host(p.grad(&g).unwrap()))).collect();
        (value, grads)
    }

    fn host(t: Tensor<Flex, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    fn assert_same_grads(got: &[(String, Tensor<Flex, 2>)], want: &BTreeMap<String, Vec<f32>>, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: one gradient per parameter");
        for (name, g) in got {
            let (g, w) = (host(g.clone()), &want[name]);
            // `f32::max` would pass over a NaN: every value is checked to be a number first.
            assert!(g.iter().chain(w).all(|x| x.is_finite()), "{what}: {name} has a gradient that is not a number");
            let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
            let worst = g.iter().zip(w).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= 2e-5 * scale, "{what}: {name} differs by {worst} (largest gradient {scale})");
        }
    }

    /// Trained positions only, in chunks, with and without activation recompute: the same
    /// objective and the same gradient of every parameter as the whole-logits computation, for
    /// each objective, on a tied Llama, an untied Qwen2 with biases and a Qwen3 with q/k norms.
    #[test]
    fn micro_step_gives_the_whole_logits_gradients_with_and_without_recompute() {
        let rows = rows();
        let rows: Vec<&Row> = rows.iter().collect();
        for arch in ["llama", "qwen2", "qwen3"] {
            let model = tiny(arch);
            for kind in [LossKind::Sft, LossKind::Dft, LossKind::Iwsft] {
                let (value, want) = full_step(&model, &rows, kind.into(), 20.0);
                // No recompute, the first block only (the other keeps its graph), both blocks.
                for recompute in [0, 1, 2] {
                    let what = format!("{arch} {kind:?} recompute {recompute} blocks");
                    let got = micro_step(&model, &rows, kind, 20.0, recompute, &Default::default()).unwrap();
                    assert!((got.objective - value).abs() < 1e-6 * (1.0 + value.abs()), "{what}: objective {} vs {value}", got.objective);
                    assert_same_grads(&got.grads, &want, &what);
                }
            }
        }
    }

    /// The reference's sum covers the target tokens the loss does (`Row::is_target`: trained and
    /// not the row's first token), and a step with an unscored row has none.
    #[test]
    fn reference_sum_covers_the_target_tokens() {
        let rows = rows();
        // Row a's targets are positions 3-5 and 8-10 (ref -0.3 i - 4), row b's 4-11 (-0.2 i - 5).
        let want = (-0.3 * 39.0 - 24.0) + (-0.2 * 60.0 - 40.0);
        let got = reference_logprob_sum(&[&rows[0], &rows[1]]).unwrap();
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        assert_eq!(rows[0].targets() + rows[1].targets(), 14);
        let unscored = Row { ref_logprobs: None, ..rows[1].clone() };
        assert_eq!(reference_logprob_sum(&[&rows[0], &unscored]), None);
    }

    /// Accumulation: one row per micro-batch, rows with different numbers of trained tokens,
    /// one or two micro-batches at once, equals one pass over both rows with the objective
    /// normalised by the step's trained tokens.
    #[test]
    fn micro_batches_with_unequal_targets_sum_to_the_whole_step() {
        let rows = rows();
        let rows: Vec<&Row> = rows.iter().collect();
        assert_ne!(rows[0].targets(), rows[1].targets(), "the rows must differ in trained tokens");
        let n = (rows[0].targets() + rows[1].targets()) as f64;
        let model = tiny("llama");
        for kind in [LossKind::Sft, LossKind::Dft] {
            let (value, want) = full_step(&model, &rows, kind.into(), n);
            for concurrency in [1, 2] {
                let got = step_gradients(&model, &rows, None, 1, concurrency, kind.into(), 0, &Default::default()).unwrap();
                let what = format!("{kind:?}, {concurrency} at once");
                assert_eq!(got.tokens, n, "{what}");
                assert!((got.objective - value).abs() < 1e-6 * (1.0 + value.abs()), "{what}: objective {} vs {value}", got.objective);
                assert_same_grads(&got.grads, &want, &what);
            }
        }
    }

    /// LoRA dropout draws by a row's place in the step: one micro-batch of both rows, one row at
    /// a time, and both side by side give the same step (its masks, so its objective and
    /// gradients), and with activation recompute too; without dropout the step is another.
    #[test]
    fn lora_dropout_draws_by_row_not_by_micro_batch() {
        use schemas::train::{Lora, LoraTarget};
        let rows = rows();
        let rows: Vec<&Row> = rows.iter().collect();
        let base = tiny("llama");
        let lora = Lora { dora: true, dropout: 0.3, ..Lora::plain(2, 4.0, LoraTarget::ALL.to_vec()) };
        let mut adapters = crate::lora::initial_adapters(&base.config, &lora, 1).unwrap();
        // B away from zero, so that the low-rank path (what dropout drops) counts.
        for (name, t) in adapters.iter_mut().filter(|(n, _)| n.ends_with(".lora_B.weight")) {
            t.data.iter_mut().enumerate().for_each(|(i, x)| *x = 0.2 * ((i + name.len()) as f32).sin());
        }
        adapters.extend(base.initial_magnitudes(&lora));
        let model = base.with_lora(&lora, &adapters).unwrap().with_trainable_leaves();
        let dropout = LoraDropout::for_step(lora.dropout, 5, 1, rows.len());
        let dev = Default::default();
        let kind = Loss::from(LossKind::Dft);
        let whole = step_gradients(&model, &rows, Some(&dropout), 2, 1, kind, 0, &dev).unwrap();
        let want: BTreeMap<String, Vec<f32>> = whole.grads.iter().map(|(n, g)| (n.clone(), host(g.clone()))).collect();
        for (micro, concurrency, recompute) in [(1, 1, 0), (1, 2, 0), (2, 1, 1), (1, 2, 2)] {
            let got = step_gradients(&model, &rows, Some(&dropout), micro, concurrency, kind, recompute, &dev).unwrap();
            let what = format!("{micro} row(s) per micro-batch, {concurrency} at once, {recompute} blocks recomputed");
            assert!(
                (got.objective - whole.objective).abs() < 1e-6 * whole.objective.abs(),
                "{what}: {} vs {}",
                got.objective,
                whole.objective
            );
            assert_same_grads(&got.grads, &want, &what);
        }
        let plain = step_gradients(&model, &rows, None, 2, 1, kind, 0, &dev).unwrap();
        assert!((plain.objective - whole.objective).abs() > 1e-3 * whole.objective.abs(), "dropout changed nothing");
    }

    /// The held-out measurement (per-token log-probabilities as scoring computes them, the
    /// objective on the host) equals the training objective (chunked closed form, on the device)
    /// of the same model on the same rows, for each loss; iw-SFT without reference
    /// log-probabilities has no objective but still a cross-entropy.
    #[test]
    fn the_held_out_loss_is_the_training_objective_of_the_same_rows() {
        use crate::validation::held_out_means;
        let dev = Default::default();
        for kind in ["llama", "qwen2"] {
            let model = tiny(kind);
            let plain: Llama<Flex> = model.clone().map_params(&dev, |_, p| p.inner());
            let rows = rows();
            let refs: Vec<&Row> = rows.iter().collect();
            let logprobs = model::logprobs::rows_logprobs(&plain, &refs, &dev, || {});
            // iw-SFT's ratio p / p_ref meets both clip bounds and lies between them somewhere.
            let ratios: Vec<f64> = refs
                .iter()
                .zip(&logprobs)
                .flat_map(|(r, lp)| {
                    let reference = r.ref_logprobs.as_ref().unwrap();
                    (0..lp.len()).filter(|&i| r.is_target(i)).map(|i| f64::from(lp[i] - reference[i]).exp()).collect::<Vec<_>>()
                })
                .collect();
            let [lo, hi] = schemas::train::DEFAULT_IWSFT_CLIP;
            let (below, above) = (ratios.iter().any(|&x| x < lo), ratios.iter().any(|&x| x > hi));
            assert!(below && above && ratios.iter().any(|&x| lo < x && x < hi), "{kind}: {ratios:?}");
            for loss in [LossKind::Sft, LossKind::Dft, LossKind::Iwsft].map(Loss::from) {
                let step = step_gradients(&model, &refs, None, 2, 1, loss, 0, &dev).unwrap();
                let (objective, ce, p, n) = held_out_means(&refs, &logprobs, loss);
                let what = format!("{kind} {:?}", loss.kind);
                assert_eq!(n as f64, step.tokens, "{what}");
                for (got, want, name) in [
                    (objective.unwrap(), step.objective, "objective"),
                    (ce, step.ce_sum / step.tokens, "ce"),
                    (p, step.prob_sum / step.tokens, "p"),
                ] {
                    assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{what} {name}: {got} vs {want}");
                }
            }
            let unscored: Vec<Row> = rows.iter().map(|r| Row { ref_logprobs: None, ..r.clone() }).collect();
            let unscored: Vec<&Row> = unscored.iter().collect();
            let (objective, ce, _, _) = held_out_means(&unscored, &logprobs, LossKind::Iwsft.into());
            assert_eq!(objective, None);
            assert!(ce > 0.0 && ce.is_finite());
            assert!(held_out_means(&unscored, &logprobs, LossKind::Dft.into()).0.is_some(), "only iw-SFT needs the scores");
        }
    }
}
