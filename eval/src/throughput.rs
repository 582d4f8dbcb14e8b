//! Decoding throughput: new tokens per second of batched KV-cache generation of a benchmark's
//! prompts. Every sequence decodes exactly the same number of tokens (no stop tokens), so runs at
//! different batch sizes, on different devices or in another framework do the same work.

use crate::benchmark::Benchmark;
use model::generate::{Generator, Request};
use model::sampling::Sampling;
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
    /// New tokens over `seconds`: what a user waits for, prompts included.
    pub tokens_per_second: f64,
    /// Wall time of the same batch with a budget of one new token: prefill and one step.
    pub prefill_seconds: f64,
    /// The tokens after the first over the time after the first: decoding alone.
    pub decode_tokens_per_second: f64,
}

/// The prompt ids of the first `n` prompts, starting over when the benchmark has fewer.
pub fn prompts(bench: &Benchmark, n: usize) -> Vec<&[u32]> {
    bench.prompts.iter().cycle().take(if bench.prompts.is_empty() { 0 } else { n }).map(|p| p.prompt_ids.as_slice()).collect()
}

/// Decode every prompt in one batch to `sampling.max_new_tokens` new tokens, timed, after a run
/// with a budget of one token that times the prefill. Request `i` samples from stream `i`.
pub fn measure(model: &dyn Generator, prompts: &[&[u32]], sampling: &Sampling) -> Throughput {
    let requests: Vec<Request> = prompts.iter().enumerate().map(|(i, p)| Request { prompt: p, stream: i as u64 }).collect();
    // No stop ids: every sequence decodes its whole budget.
    let timed = |budget: usize| {
        let t = Instant::now();
        let done = model.complete(&requests, &Sampling { max_new_tokens: budget, ..*sampling }, &[], prompts.len(), &|_, _| {});
        (t.elapsed().as_secs_f64(), done.iter().map(|c| c.ids.len()).sum::<usize>())
    };
    let (prefill_seconds, first) = timed(1);
    let (seconds, new_tokens) = timed(sampling.max_new_tokens);
    let mean_prompt_tokens = prompts.iter().map(|p| p.len()).sum::<usize>() as f64 / prompts.len().max(1) as f64;
    Throughput {
        batch: prompts.len(),
        new_tokens,
        mean_prompt_tokens,
        seconds,
        tokens_per_second: new_tokens as f64 / seconds,
        prefill_seconds,
        decode_tokens_per_second: new_tokens.saturating_sub(first) as f64 / (seconds - prefill_seconds).max(1e-9),
    }
}
