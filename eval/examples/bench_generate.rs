//! Decoding speed on CPU for `make bench-generate`: new tokens/s of KV-cache generation at
//! several batch sizes against the baseline measured in the same run, cache-free greedy decoding
//! (`model::generate::greedy`, which re-runs the whole sequence for each token) of the same prompts.
//!
//! usage: bench_generate MODEL SNAPSHOT_DIR [NEW_TOKENS] [BATCH_SIZES]
//!
//! SNAPSHOT_DIR is a `prompts` snapshot (e.g. snapshots/eval/gsm8k_test). Every sequence runs to
//! exactly NEW_TOKENS (no stop tokens), so all configurations do the same work. Prints JSON lines.

use burn::backend::Flex;
use eval::benchmark::load_benchmark;
use eval::throughput;
use model::generate::greedy;
use model::sampling::Sampling;
use model::Llama;
use std::path::Path;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() >= 3, "usage: bench_generate MODEL SNAPSHOT_DIR [NEW_TOKENS] [BATCH_SIZES]");
    let new_tokens: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let sizes: Vec<usize> =
        args.get(4).map(String::as_str).unwrap_or("1,4,8,16").split(',').map(|s| s.parse()).collect::<Result<_, _>>()?;
    let dev = Default::default();
    let model = Llama::<Flex>::load(Path::new(&args[1]), &dev)?;
    let bench = load_benchmark(&args[2], Path::new("."))?;
    let n = *sizes.iter().max().unwrap_or(&1);
    let prompts = throughput::prompts(&bench, n);
    let params = Sampling::greedy(new_tokens);

    // Baseline: one prompt, no cache. (BENCH_NO_BASELINE=1 skips it, for profiling.)
    let mut base = f64::NAN;
    if std::env::var_os("BENCH_NO_BASELINE").is_none() {
        let t = Instant::now();
        let out = greedy(&model, prompts[0], new_tokens, &[], &dev);
        base = out.len() as f64 / t.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"mode": "no_cache", "batch": 1, "new_tokens": out.len(), "tokens_per_second": base, "speedup": 1.0})
        );
    }
    for &b in &sizes {
        let r = throughput::measure(&model, &prompts[..b], &params, &dev);
        println!(
            "{}",
            serde_json::json!({"mode": "kv_cache", "batch": b, "new_tokens": r.new_tokens, "mean_prompt_tokens": r.mean_prompt_tokens, "seconds": r.seconds, "tokens_per_second": r.tokens_per_second, "speedup": r.tokens_per_second / base})
        );
    }
    Ok(())
}
