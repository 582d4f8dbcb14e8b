//! Decoding throughput: new tokens per second of batched KV-cache generation of a benchmark's
//! prompts. Every sequence decodes exactly the same number of tokens (no stop tokens), so runs at
//! different batch sizes, on different devices or in another framework do the same work.

use crate::benchmark::Benchmark;
use model::generate::{generate_batch, Request};
use model::sampling::Sampling;
use model::Llama;
use serde::Serialize;
use std::time::Instant;

/// One timed batch.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub batch: usize,
    /// New tokens over all sequences.
    pub new_tokens: usize,
    pub mean_prompt_tokens: f64,
    /// Wall time of prefill and decoding together.
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// The prompt ids of the first `n` prompts, starting over when the benchmark has fewer.
pub fn prompts(bench: &Benchmark, n: usize) -> Vec<&[u32]> {
    bench.prompts.iter().cycle().take(if bench.prompts.is_empty() { 0 } else { n }).map(|p| p.prompt_ids.as_slice()).collect()
}

/// Decode every prompt in one batch to `sampling.max_new_tokens` new tokens, timed. Request `i`
/// samples from stream `i`.
pub fn measure<B: burn::tensor::backend::Backend>(
    model: &Llama<B>,
    prompts: &[&[u32]],
    sampling: &Sampling,
    device: &B::Device,
) -> Throughput {
    let requests: Vec<Request> = prompts.iter().enumerate().map(|(i, p)| Request { prompt: p, stream: i as u64 }).collect();
    let t = Instant::now();
    // No stop ids; the pad id is never attended to, so any id serves.
    let done = generate_batch(model, &requests, sampling, &[], 0, device);
    let seconds = t.elapsed().as_secs_f64();
    let new_tokens: usize = done.iter().map(|c| c.ids.len()).sum();
    let mean_prompt_tokens = prompts.iter().map(|p| p.len()).sum::<usize>() as f64 / prompts.len().max(1) as f64;
    Throughput { batch: prompts.len(), new_tokens, mean_prompt_tokens, seconds, tokens_per_second: new_tokens as f64 / seconds }
}
