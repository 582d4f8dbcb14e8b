//! The training loop: packed rows in, SFT, DFT or iw-SFT, AdamW with warmup + cosine, global clipping,
//! gradient accumulation, atomic checkpoints that resume to the same weights, JSONL metrics.

use crate::batch::micro_batch;
use crate::checkpoint::{latest_checkpoint, save_checkpoint, save_final, Provenance, TrainerState, OPTIMIZER_FILE, STATE_FILE};
use crate::loss::{objective, Loss, LossKind};
use crate::optim::{clip_global, lr_at, AdamW, AdamWConfig};
use anyhow::{bail, Context};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use model::logprobs::target_logprobs;
use model::Llama;
use rayon::prelude::*;
use schemas::rng::shuffle;
use schemas::snapshot::{load_snapshot, Row};
use schemas::train::TrainRecipe;
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

/// Fully resolved run settings.
pub struct Run {
    pub recipe: TrainRecipe,
    pub model_path: PathBuf,
    pub snapshot_dir: PathBuf,
    pub output_dir: PathBuf,
    /// Write checkpoints and the final model (off for speed measurements: metrics only).
    pub save: bool,
}

impl Run {
    pub fn new(recipe: TrainRecipe, recipe_path: &Path) -> anyhow::Result<Run> {
        recipe.validate().with_context(|| format!("training recipe {}", recipe_path.display()))?;
        let at = |p: &str| schemas::recipe::resolve(recipe_path, p);
        Ok(Run {
            model_path: at(&recipe.model),
            snapshot_dir: at(&recipe.snapshot),
            output_dir: at(&recipe.output_dir),
            recipe,
            save: true,
        })
    }
}

/// The data stream: epoch `e` visits the rows in `shuffle(0..n, seed + e)` order.
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
            shuffle(&mut self.order, self.seed.wrapping_add(epoch));
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
    let r = &run.recipe;
    let snapshot = load_snapshot(&run.snapshot_dir)?;
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
    let loss = Loss::from(r);
    let rows_per_step = r.batch_tokens.div_ceil(snapshot.seq_len).max(1);
    let total_steps = match (r.steps, r.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => ((e * snapshot.rows.len() as f64) / rows_per_step as f64).ceil().max(1.0) as u64,
        _ => unreachable!("validated"),
    };
    let warmup = (r.warmup_ratio * total_steps as f64).round() as u64;
    std::fs::create_dir_all(&run.output_dir).with_context(|| format!("cannot create {}", run.output_dir.display()))?;

    let mut opt =
        AdamW::<B::InnerBackend>::new(AdamWConfig { beta1: r.betas[0], beta2: r.betas[1], eps: r.eps, weight_decay: r.weight_decay });
    let latest = latest_checkpoint(&run.output_dir)?;
    let (model_dir, mut state) = match (resume, latest) {
        (true, Some(dir)) => {
            let state: TrainerState = serde_json::from_str(&std::fs::read_to_string(dir.join(STATE_FILE))?)?;
            if state.snapshot_id != snapshot.manifest.snapshot_id {
                bail!(
                    "checkpoint {} was trained on snapshot {}, this run uses {}",
                    dir.display(),
                    state.snapshot_id,
                    snapshot.manifest.snapshot_id
                );
            }
            opt.load_state(state.step, &model_files::safetensors::read_safetensors(dir.join(OPTIMIZER_FILE))?, device)?;
            tracing::info!("resuming from {} (step {})", dir.display(), state.step);
            (dir, state)
        }
        (false, Some(dir)) => bail!(
            "{} already holds checkpoint {}: pass --resume to continue it, or choose another output_dir",
            run.output_dir.display(),
            dir.display()
        ),
        (_, None) => {
            let state = TrainerState {
                step: 0,
                total_steps,
                rows_consumed: 0,
                seed: r.seed,
                snapshot_id: snapshot.manifest.snapshot_id.clone(),
                recipe: r.clone(),
            };
            (run.model_path.clone(), state)
        }
    };
    let mut model: Llama<B> = Llama::<B>::load(&model_dir, device)?.map_params(device, |_, p| p.require_grad());
    model.check_vocab(snapshot.manifest.tokenizer.vocab_size)?;

    let metrics_path = run.output_dir.join(METRICS_FILE);
    let mut metrics = open_metrics(&metrics_path, state.step)?;
    let mut stream = Stream::new(snapshot.rows.len(), r.seed);
    let start = Instant::now();
    let pb = progress::steps(total_steps, &format!("{:?}", r.loss).to_lowercase());
    pb.set_position(state.step);
    let mut last = None;
    while state.step < total_steps {
        let t0 = Instant::now();
        let row_ids: Vec<usize> = (0..rows_per_step as u64).map(|i| stream.row(state.rows_consumed + i)).collect();
        let rows: Vec<&Row> = row_ids.iter().map(|&i| &snapshot.rows[i]).collect();
        let step_tokens = rows.iter().map(|r| r.targets()).sum::<usize>().max(1) as f64;
        let mut grads: BTreeMap<String, Tensor<B::InnerBackend, 2>> = BTreeMap::new();
        let (mut obj, mut ce, mut prob) = (0.0, 0.0, 0.0);
        // Burn's CPU backend runs element-wise ops on one thread, so on CPU the micro-batches of a
        // step run side by side, each on its own copy of the parameters (separate autodiff leaves),
        // and their gradients are summed in micro-batch order, which keeps the result independent
        // of thread timing.
        let chunks: Vec<&[&Row]> = rows.chunks(r.micro_batch_rows).collect();
        for wave in chunks.chunks(concurrency.max(1)) {
            let results: Vec<anyhow::Result<MicroResult<B>>> = if wave.len() == 1 {
                vec![micro_step(&model, wave[0], loss, step_tokens, device)]
            } else {
                wave.par_iter()
                    .map(|chunk| {
                        let local = model.clone().map_params(device, |_, p| Tensor::from_inner(p.inner()).require_grad());
                        micro_step(&local, chunk, loss, step_tokens, device)
                    })
                    .collect()
            };
            for result in results {
                let m = result?;
                obj += m.objective;
                ce += m.ce_sum;
                prob += m.prob_sum;
                for (name, g) in m.grads {
                    let sum = match grads.remove(&name) {
                        Some(acc) => acc + g,
                        None => g,
                    };
                    grads.insert(name, sum);
                }
            }
        }
        let step_no = state.step + 1;
        let (norm, clipped) = clip_global(grads.into_iter().collect(), r.clip);
        if !obj.is_finite() || !ce.is_finite() || !norm.is_finite() {
            pb.abandon();
            bail!(
                "step {step_no}: objective {obj}, cross-entropy {}, grad norm {norm} is not finite; stopped before updating. The last good checkpoint in {} is intact",
                ce / step_tokens,
                run.output_dir.join("checkpoints").display()
            );
        }
        let lr = lr_at(state.step, total_steps, warmup, r.lr);
        model = apply_update(model, clipped, &mut opt, lr, device);
        state.step = step_no;
        state.rows_consumed += rows_per_step as u64;
        let tokens = (rows_per_step * snapshot.seq_len) as u64;
        let m = StepMetrics {
            step: step_no,
            lr,
            objective: obj,
            cross_entropy: ce / step_tokens,
            mean_token_prob: prob / step_tokens,
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
        if run.save && (step_no % r.checkpoint_every == 0 || step_no == total_steps) {
            save_checkpoint(&run.output_dir, &model, &opt, &state)?;
        }
        last = Some(m);
    }
    pb.finish();
    let final_model = if run.save {
        let dir = run.output_dir.join("final");
        let provenance = Provenance {
            base_model: run.model_path.display().to_string(),
            base_model_sha256: model_files::checkpoint::model_hash(&run.model_path)?.0,
            snapshot: run.snapshot_dir.display().to_string(),
            snapshot_id: state.snapshot_id.clone(),
            steps: state.step,
            recipe: r.clone(),
            tool: format!("rectify-trainer {} train", env!("CARGO_PKG_VERSION")),
        };
        save_final(&dir, &model, &run.snapshot_dir, &provenance)?;
        Some(dir)
    } else {
        None
    };
    Ok(Summary { steps: state.step, final_model, metrics: metrics_path, last })
}

/// Gradients and detached loss sums of one micro-batch.
pub struct MicroResult<B: AutodiffBackend> {
    pub grads: Vec<(String, Tensor<B::InnerBackend, 2>)>,
    pub objective: f64,
    pub ce_sum: f64,
    pub prob_sum: f64,
}

/// One AdamW step with (already clipped) gradients; the updated parameters stay trainable.
pub fn apply_update<B: AutodiffBackend>(
    model: Llama<B>,
    grads: Vec<(String, Tensor<B::InnerBackend, 2>)>,
    opt: &mut AdamW<B::InnerBackend>,
    lr: f64,
    device: &B::Device,
) -> Llama<B> {
    opt.begin_step();
    let mut grads: BTreeMap<String, Tensor<B::InnerBackend, 2>> = grads.into_iter().collect();
    model.map_params(device, |name, p| {
        let g = grads.remove(name).expect("a gradient per parameter");
        Tensor::from_inner(opt.update(name, p.inner(), g, lr)).require_grad()
    })
}

/// Forward and backward of one micro-batch, its objective scaled by the step's loss tokens.
pub fn micro_step<B: AutodiffBackend>(
    model: &Llama<B>,
    rows: &[&Row],
    loss: impl Into<Loss>,
    step_tokens: f64,
    device: &B::Device,
) -> anyhow::Result<MicroResult<B>> {
    let mb = micro_batch::<B>(rows, device);
    let [_, t] = mb.input_ids.dims();
    let logits = model.forward(mb.input_ids, mb.positions, &mb.segments).narrow(1, 0, t - 1);
    let parts = objective(target_logprobs(logits, mb.targets), mb.target_mask, mb.target_ref_logprobs, loss.into(), step_tokens)?;
    let value = parts.objective.clone().into_data().convert::<f64>().to_vec::<f64>().expect("f64")[0];
    let g = parts.objective.backward();
    let grads = model
        .named_params()
        .into_iter()
        .map(|(name, p)| p.grad(&g).with_context(|| format!("no gradient for {name}")).map(|gp| (name, gp)))
        .collect::<anyhow::Result<_>>()?;
    Ok(MicroResult { grads, objective: value, ce_sum: parts.ce_sum, prob_sum: parts.prob_sum })
}

/// Open `metrics.jsonl` for appending, first dropping lines past `step` (left by a run killed
/// after its last checkpoint), so a resumed run's log has each step once.
fn open_metrics(path: &Path, step: u64) -> anyhow::Result<std::fs::File> {
    if path.exists() {
        let text = std::fs::read_to_string(path)?;
        let kept: String = text
            .lines()
            .filter(|l| serde_json::from_str::<StepMetrics>(l).is_ok_and(|m| m.step <= step))
            .map(|l| format!("{l}\n"))
            .collect();
        schemas::write_atomic(path, kept.as_bytes())?;
    }
    Ok(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
}
