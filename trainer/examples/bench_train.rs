//! One training step (forward + backward + AdamW) of a real model on CPU, for `make bench-train`.
//!
//! usage: bench_train MODEL SEQ_LEN [SEGMENT_LEN] [STEPS]
//!        bench_train --matmul N
//!
//! Prints one JSON line. FLOPs per step use the usual estimate for a decoder: 6 x tokens x
//! (non-embedding parameters + the vocab x hidden output projection), plus attention scores and
//! values, 12 x layers x hidden x sum(segment_len^2) / 2 (causal), forward and backward.
//! `--matmul N` times an N x N x N f32 matmul, the machine's practical ceiling.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use model::decoder::Llama;
use schemas::snapshot::Row;
use std::time::Instant;
use trainer::loss::LossKind;
use trainer::optim::{clip_global, AdamW, AdamWConfig};
use trainer::train::{apply_update, micro_step};

type B = Autodiff<Flex>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--matmul") {
        let n: usize = args[2].parse()?;
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
        return Ok(());
    }
    anyhow::ensure!(args.len() >= 3, "usage: bench_train MODEL SEQ_LEN [SEGMENT_LEN] [STEPS]");
    let seq_len: usize = args[2].parse()?;
    let seg_len: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(256).min(seq_len);
    let steps: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let dev = Default::default();
    let mut model = Llama::<B>::load(std::path::Path::new(&args[1]), &dev)?.map_params(&dev, |_, p| p.require_grad());
    let cfg = model.config.clone();

    // A packed row of equal segments with deterministic token ids, 70% of them targets.
    let mut rng = schemas::rng::SplitMix64::new(1);
    let row = Row {
        input_ids: (0..seq_len).map(|_| rng.below(cfg.vocab_size) as i32).collect(),
        loss_mask: (0..seq_len).map(|i| ((i % seg_len) * 10 >= seg_len * 3) as i8).collect(),
        position_ids: (0..seq_len).map(|i| (i % seg_len) as i32).collect(),
        segment_ids: (0..seq_len).map(|i| (i / seg_len) as i32 + 1).collect(),
        ref_logprobs: None,
    };
    let mut opt = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01 });
    let mut times = vec![];
    for _ in 0..steps {
        let t = Instant::now();
        let step = micro_step(&model, &[&row], LossKind::Dft, row.targets() as f64, &dev)?;
        let (_, grads) = clip_global(step.grads, 1.0);
        model = apply_update(model, grads, &mut opt, 1e-5, &dev);
        let _ = model.params.norm.clone().into_data();
        times.push(t.elapsed().as_secs_f64());
    }
    // The first step pays for allocation warm-up; report the best of the rest.
    let best = times.iter().skip(usize::from(times.len() > 1)).cloned().fold(f64::INFINITY, f64::min);
    let (d, l, v) = (cfg.hidden_size as f64, cfg.num_hidden_layers as f64, cfg.vocab_size as f64);
    let n_params: usize = model.named_params().iter().map(|(_, p)| p.dims().iter().product::<usize>()).sum();
    let non_embed = n_params as f64 - v * d;
    let segs = seq_len.div_ceil(seg_len);
    let sum_sq: f64 = (0..segs).map(|s| (seg_len.min(seq_len - s * seg_len) as f64).powi(2)).sum();
    let flops = 6.0 * seq_len as f64 * (non_embed + v * d) + 12.0 * l * d * sum_sq / 2.0;
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .unwrap_or(0.0);
    println!(
        "{}",
        serde_json::json!({
            "seq_len": seq_len, "segment_len": seg_len, "params": n_params, "step_seconds": best, "steps": times,
            "tokens_per_second": seq_len as f64 / best, "gflops": flops / best / 1e9, "peak_rss_mib": rss / 1024.0,
        })
    );
    Ok(())
}
