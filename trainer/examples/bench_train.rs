//! DFT training steps (forward + backward + clip + AdamW) of a real model on real packed rows, on
//! CPU, for `make bench-train`.
//!
//! usage: bench_train MODEL SNAPSHOT SEQ_LEN STEPS [--rows-per-step R] [--recompute BLOCKS|all] [--rows-out FILE.jsonl]
//!                    [--lora RANK [--adapter-out DIR]]
//!        bench_train --matmul N
//!
//! Step k trains on rows kR..kR+R-1 of the snapshot (R = 2 unless given), each cut to its first
//! SEQ_LEN tokens (and before any trailing padding), one row per micro-batch and as many
//! micro-batches side by side as there are cores: the training loop's own step
//! (`trainer::train::step_gradients`), as `make train` runs it. `--rows-out` writes those rows as
//! JSON lines for the PyTorch baseline (`scripts/gpu_check.py --worker train`), so both run the
//! same tokens. Prints one JSON line: tokens/s over the steps after the first (which pays for
//! allocation), the process's peak RSS, each step's objective and gradient norm, its time and
//! the part of it spent in forward + backward (the rest is clipping and AdamW), and achieved
//! GFLOP/s. FLOPs per step use the usual estimate for a decoder: 6 x tokens x (non-embedding
//! parameters + the vocab x hidden output projection), plus attention scores and values,
//! 12 x layers x hidden x sum(segment_len^2) / 2 (causal), forward and backward. `--lora RANK`
//! trains LoRA adapters of rank RANK (alpha 2 x RANK) on all seven projections instead, starting
//! from `trainer::lora::initial_adapters` with seed 0, which `--adapter-out` writes as a PEFT
//! folder for the baseline to start from; its FLOPs count the frozen weights 4 x tokens (forward,
//! and the backward pass to the activations) and the adapters 6 x. `--matmul N` times an N x N x N
//! f32 matmul, the machine's practical ceiling.

use anyhow::{bail, ensure, Context};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use model::decoder::Llama;
use schemas::snapshot::{load_snapshot, segment_runs, Row};
use schemas::train::{Lora, LoraTarget, Recompute};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use trainer::loss::LossKind;
use trainer::optim::{clip_global, AdamW, AdamWConfig};
use trainer::train::{apply_update, step_gradients};

type B = Autodiff<Flex>;

/// The bench's constant learning rate (the PyTorch baseline is given the same).
const LR: f64 = 1e-5;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--matmul") {
        return matmul(args[2].parse()?);
    }
    ensure!(
        args.len() >= 5,
        "usage: bench_train MODEL SNAPSHOT SEQ_LEN STEPS [--rows-per-step R] [--recompute BLOCKS|all] [--rows-out FILE.jsonl] [--lora RANK [--adapter-out DIR]]"
    );
    let seq_len: usize = args[3].parse()?;
    let steps: usize = args[4].parse()?;
    let mut per_step = 2;
    let mut recompute = Recompute::Flag(false);
    let mut rows_out = None;
    let (mut lora_rank, mut adapter_out) = (None, None);
    let mut rest = args[5..].iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--recompute" => recompute = rest.next().context("--recompute needs a number of blocks or `all`")?.parse()?,
            "--rows-per-step" => per_step = rest.next().context("--rows-per-step needs a number")?.parse()?,
            "--rows-out" => rows_out = Some(rest.next().context("--rows-out needs a file")?.clone()),
            "--lora" => lora_rank = Some(rest.next().context("--lora needs a rank")?.parse::<usize>()?),
            "--adapter-out" => adapter_out = Some(rest.next().context("--adapter-out needs a folder")?.clone()),
            other => bail!("unknown argument {other}"),
        }
    }
    let snapshot = load_snapshot(Path::new(&args[2]))?;
    ensure!(seq_len <= snapshot.seq_len, "SEQ_LEN {seq_len} is longer than the snapshot's rows ({})", snapshot.seq_len);
    ensure!(
        steps * per_step <= snapshot.rows.len(),
        "{steps} steps need {} rows; the snapshot has {}",
        steps * per_step,
        snapshot.rows.len()
    );
    let rows: Vec<Row> = snapshot.rows[..steps * per_step].iter().map(|r| cut(r, seq_len)).collect();
    if let Some(path) = &rows_out {
        let mut f = std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?;
        for r in &rows {
            let line = serde_json::json!({"input_ids": r.input_ids, "position_ids": r.position_ids, "segment_ids": r.segment_ids, "loss_mask": r.loss_mask});
            writeln!(f, "{line}")?;
        }
    }

    let dev = Default::default();
    let base = Llama::<B>::load(Path::new(&args[1]), &dev)?;
    let cfg = base.config.clone();
    let lora = lora_rank.map(|rank| Lora::plain(rank, 2.0 * rank as f64, LoraTarget::ALL.to_vec()));
    let mut model = match &lora {
        None => base,
        Some(lora) => {
            let adapters = trainer::lora::initial_adapters(&cfg, lora, 0)?;
            if let Some(dir) = &adapter_out {
                model_files::lora::write_adapter(Path::new(dir), lora, &adapters, &args[1])?;
            }
            base.with_lora(lora, &adapters)?
        }
    }
    .with_trainable_leaves();
    let recompute_blocks = recompute.blocks(cfg.num_hidden_layers)?;
    let mut opt = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01 });
    let (mut times, mut backward, mut objectives, mut norms) = (vec![], vec![], vec![], vec![]);
    let cores = rayon::current_num_threads();
    for step_rows in rows.chunks(per_step) {
        let t = Instant::now();
        let step_rows: Vec<&Row> = step_rows.iter().collect();
        let step = step_gradients(&model, &step_rows, None, 1, cores, LossKind::Dft.into(), recompute_blocks, &dev)?;
        backward.push(t.elapsed().as_secs_f64());
        let (norm, grads) = clip_global(step.grads, 1.0, cores);
        model = apply_update(model, grads, &mut opt, LR, cores, &dev);
        let _ = model.params.norm.clone().into_data();
        times.push(t.elapsed().as_secs_f64());
        objectives.push(step.objective);
        norms.push(norm);
    }
    let tokens: Vec<usize> = rows.chunks(per_step).map(|s| s.iter().map(|r| r.input_ids.len()).sum()).collect();
    // The first step pays for allocation warm-up; the rest are timed.
    let skip = usize::from(steps > 1);
    let secs: f64 = times[skip..].iter().sum();
    let timed_tokens: usize = tokens[skip..].iter().sum();
    let (d, l, v) = (cfg.hidden_size as f64, cfg.num_hidden_layers as f64, cfg.vocab_size as f64);
    let count = |params: Vec<(String, &Tensor<B, 2>)>| params.iter().map(|(_, p)| p.dims().iter().product::<usize>()).sum::<usize>();
    let n_params = count(model.named_params());
    let trained = count(model.trainable_params());
    // Full fine-tuning: every weight 6 x tokens. LoRA: the frozen ones 4 x, the adapters 6 x.
    let (frozen, adapters) = if lora.is_some() { (n_params - trained, trained) } else { (n_params, 0) };
    let weight_passes = if lora.is_some() { 4.0 } else { 6.0 };
    let non_embed = frozen as f64 - if cfg.tie_word_embeddings { 0.0 } else { v * d } - v * d;
    let flops: f64 = rows[skip * per_step..]
        .iter()
        .map(|r| {
            let sum_sq: f64 = segment_runs(&r.segment_ids).iter().map(|&(_, n)| (n as f64).powi(2)).sum();
            let t = r.input_ids.len() as f64;
            weight_passes * t * (non_embed + v * d) + 6.0 * t * adapters as f64 + 12.0 * l * d * sum_sq / 2.0
        })
        .sum();
    println!(
        "{}",
        serde_json::json!({
            "seq_len": seq_len, "recompute_blocks": recompute_blocks, "params": n_params, "trained_params": trained,
            "lora_rank": lora_rank, "rows_per_step": per_step, "threads": cores, "step_tokens": tokens,
            "step_seconds": times, "forward_backward_seconds": backward, "objectives": objectives, "grad_norms": norms,
            "tokens_per_second": timed_tokens as f64 / secs, "gflops": flops / secs / 1e9,
            "peak_rss_mib": progress::peak_rss_mib().unwrap_or(0.0),
        })
    );
    Ok(())
}

/// The first `len` tokens of a packed row, without trailing padding.
fn cut(r: &Row, len: usize) -> Row {
    let used = r.segment_ids.iter().rposition(|&s| s != 0).map_or(0, |i| i + 1).min(len);
    Row {
        input_ids: r.input_ids[..used].to_vec(),
        loss_mask: r.loss_mask[..used].to_vec(),
        position_ids: r.position_ids[..used].to_vec(),
        segment_ids: r.segment_ids[..used].to_vec(),
        ref_logprobs: r.ref_logprobs.as_ref().map(|v| v[..used].to_vec()),
    }
}

fn matmul(n: usize) -> anyhow::Result<()> {
    let dev = Default::default();
    let a = Tensor::<Flex, 2>::random([n, n], Distribution::Default, &dev);
    let b = Tensor::<Flex, 2>::random([n, n], Distribution::Default, &dev);
    let _ = a.clone().matmul(b.clone()).into_data();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let _ = a.clone().matmul(b.clone()).into_data();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let flops = 2.0 * (n as f64).powi(3);
    println!("{}", serde_json::json!({"matmul_n": n, "seconds": best, "gflops": flops / best / 1e9}));
    Ok(())
}
