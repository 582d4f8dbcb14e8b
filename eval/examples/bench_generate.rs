//! Decoding speed on CPU for `make bench-generate`: new tokens/s of batched generation at several
//! batch sizes, prompts included and decoding alone, on the host decoder (`model::host`, what
//! `trainer eval` and `trainer sample` use on CPU) and, with BENCH_BURN=1, on Burn's CPU backend
//! (the path the GPU uses). llama.cpp, the peer, is measured by `scripts/bench_generate.sh`.
//!
//! usage: bench_generate MODEL SNAPSHOT_DIR [NEW_TOKENS] [BATCH_SIZES]
//!
//! SNAPSHOT_DIR is a `prompts` snapshot (e.g. snapshots/eval/gsm8k_test). Every sequence runs to
//! exactly NEW_TOKENS (no stop tokens), so all configurations do the same work. Prints JSON lines.

use burn::backend::Flex;
use eval::benchmark::load_benchmark;
use eval::throughput;
use model::generate::{BurnGenerator, Generator, GreedyOn};
use model::matmul::{matmul, Weight};
use model::sampling::Sampling;
use model::{HostDecoder, Llama};
use rayon::prelude::*;
use std::path::Path;
use std::time::Instant;

/// Best of `n` timings of `f`, in seconds.
fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Bytes of the matrices one decoding step reads, as a GGUF file stores them: every 2-D tensor,
/// the embedding only where it is also the output head (tied). None for other formats.
fn gguf_matrix_bytes(path: &Path) -> Option<u64> {
    let g = model_files::gguf::Gguf::open(path).ok()?;
    let untied = g.tensors.iter().any(|t| t.name == "output.weight");
    g.tensors.iter().filter(|t| t.dims.len() == 2 && !(untied && t.name == "token_embd.weight")).map(|t| t.n_bytes()).sum()
}

/// This machine's two ceilings for the model: reading 1 GiB with every thread (memory
/// bandwidth) and the host matmul on a 64-row batch against the model's largest layer matrix.
fn ceilings(path: &Path, model: &HostDecoder, mean_prompt: f64, new_tokens: usize) -> serde_json::Value {
    let big = vec![1f32; 1 << 28];
    let mut sink = 0f32;
    // 16 partial sums per chunk: one running sum would be bound by the add's latency, not by
    // memory.
    let sum16 = |c: &[f32]| {
        let mut acc = [0f32; 16];
        for v in c.chunks_exact(16) {
            for (a, v) in acc.iter_mut().zip(v) {
                *a += v;
            }
        }
        acc.iter().sum::<f32>()
    };
    let read = best_of(5, || sink += big.par_chunks(1 << 16).map(sum16).sum::<f32>());
    drop(big);
    let bandwidth = (4usize << 28) as f64 / read / 1e9;
    let c = &model.config;
    let (rows, out, k) = (64, 2 * c.intermediate_size, c.hidden_size);
    let w = Weight::new(out, k, (0..out * k).map(|i| (i % 7) as f32 * 0.01).collect());
    let x: Vec<f32> = (0..rows * k).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut y = vec![0f32; rows * out];
    let secs = best_of(10, || matmul(&x, rows, &w, None, &mut y));
    let gflops = 2.0 * (rows * out * k) as f64 / secs / 1e9;
    let context = mean_prompt + new_tokens as f64 / 2.0;
    let flops = model.flops_per_token(context as usize);
    // The same matrices as the file stores them (llama.cpp reads these): Q4_1 keeps an f16 scale
    // and minimum per 32 weights where rectify's layout keeps f32 ones.
    let file_bytes = gguf_matrix_bytes(path);
    serde_json::json!({
        "kind": "ceilings", "bandwidth_gb_per_s": bandwidth, "weight_bytes": model.weight_bytes(),
        "batch1_tokens_per_second": bandwidth * 1e9 / model.weight_bytes() as f64,
        "file_weight_bytes": file_bytes, "file_batch1_tokens_per_second": file_bytes.map(|b| bandwidth * 1e9 / b as f64),
        "matmul_gflops": gflops, "matmul_shape": [rows, out, k], "flops_per_token": flops, "mean_context": context,
        "compute_tokens_per_second": gflops * 1e9 / flops, "sink": sink + y[0],
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() >= 3, "usage: bench_generate MODEL SNAPSHOT_DIR [NEW_TOKENS] [BATCH_SIZES]");
    let new_tokens: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let sizes: Vec<usize> = args.get(4).map(String::as_str).unwrap_or("1,8,32").split(',').map(|s| s.parse()).collect::<Result<_, _>>()?;
    let path = Path::new(&args[1]);
    let bench = load_benchmark(&args[2], Path::new("."))?;
    let n = *sizes.iter().max().unwrap_or(&1);
    let prompts = throughput::prompts(&bench, n);
    let params = Sampling::greedy(new_tokens);
    let host = HostDecoder::load(path)?;
    let mean_prompt = prompts.iter().map(|p| p.len()).sum::<usize>() as f64 / prompts.len() as f64;
    let ceilings = ceilings(path, &host, mean_prompt, new_tokens);
    let mut engines: Vec<(&str, Box<dyn Generator>)> = vec![("host", Box::new(host))];
    if std::env::var_os("BENCH_BURN").is_some() {
        let device = Default::default();
        engines.push((
            "burn",
            Box::new(BurnGenerator {
                model: Llama::<Flex>::load(path, &device)?,
                device,
                greedy_on: GreedyOn::Host,
                parallel_batches: true,
            }),
        ));
    }
    for (name, engine) in &engines {
        for &b in &sizes {
            let r = throughput::measure(engine.as_ref(), &prompts[..b], &params);
            let mut line = serde_json::to_value(&r)?;
            line["engine"] = (*name).into();
            println!("{line}");
        }
    }
    println!("{ceilings}");
    Ok(())
}
