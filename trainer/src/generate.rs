//! Batched generation with a KV cache: prompts of different lengths are left-padded into one
//! batch, prefilled together, then decoded a token per step until each meets a stop token or
//! its token budget. Finished sequences leave the batch, so a long answer does not make the
//! short ones pay for its steps.
//!
//! Sampling draws from a random stream of its own per request (`seed`, `stream`), so the draws a
//! request gets do not depend on which other requests share its batch. (Its logits can still
//! differ in the last bits between batch shapes; the same command on the same machine repeats
//! exactly.)

use crate::model::{KvCache, Llama};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use pipeline::normalize::{mix64, SplitMix64};
use serde::{Deserialize, Serialize};

/// Added to the attention scores of keys a query must not see. Finite, so that a padding query
/// whose keys are all hidden gets a uniform (unused) distribution instead of NaN.
const HIDDEN: f32 = -1e9;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 means greedy (argmax; ties go to the lowest id).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    /// 1.0 keeps all.
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    pub max_new_tokens: usize,
    pub seed: u64,
}

impl Sampling {
    pub fn greedy(max_new_tokens: usize) -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, max_new_tokens, seed: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// Ended with one of the stop tokens (kept as the last id).
    Stop,
    /// Reached `max_new_tokens` or the model's context length.
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub ids: Vec<u32>,
    pub finish: Finish,
}

impl Completion {
    /// The generated ids without the stop token that ended them: what to decode as text.
    pub fn text_ids(&self) -> &[u32] {
        match self.finish {
            Finish::Stop => &self.ids[..self.ids.len() - 1],
            Finish::Length => &self.ids,
        }
    }
}

/// The ids that end a completion: the tokenizer's end-of-turn token and whichever of the usual
/// end-of-text tokens its vocabulary has (a chat model may close with either).
pub fn stop_ids(tok: &pipeline::tokenize::ChatTokenizer) -> Vec<u32> {
    let mut stop = vec![tok.eos_id()];
    stop.extend(["<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>"].iter().filter_map(|t| tok.token_to_id(t)));
    stop.sort_unstable();
    stop.dedup();
    stop
}

/// One prompt to complete; `stream` picks its random stream (e.g. prompt index * K + sample).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub prompt: &'a [u32],
    pub stream: u64,
}

/// Completes every request in one batch. `stop` ends a sequence (end-of-turn, end-of-text);
/// `pad` fills the left of shorter prompts and is never attended to.
pub fn generate_batch<B: Backend>(model: &Llama<B>, requests: &[Request], params: &Sampling, stop: &[u32], pad: u32, device: &B::Device) -> Vec<Completion> {
    let n = requests.len();
    let mut done: Vec<Option<Completion>> = vec![None; n];
    if n == 0 {
        return vec![];
    }
    let longest = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
    assert!(requests.iter().all(|r| !r.prompt.is_empty()), "empty prompt: nothing to condition on");
    let context = model.config.max_position_embeddings;
    let mut rngs: Vec<SplitMix64> = requests.iter().map(|r| SplitMix64::new(mix64(params.seed) ^ mix64(r.stream.wrapping_add(0x5eed)))).collect();
    let mut outputs: Vec<Vec<u32>> = vec![vec![]; n];
    // Rows still decoding, as indices into `requests`; `pads[i]` is the left padding of row i.
    let mut live: Vec<usize> = (0..n).collect();
    let mut pads: Vec<usize> = requests.iter().map(|r| longest - r.prompt.len()).collect();
    let mut cache = KvCache::new(model.config.num_hidden_layers);

    // Prefill: every prompt right-aligned in a `[n, longest]` block.
    let mut ids = Vec::with_capacity(n * longest);
    let mut pos = Vec::with_capacity(n * longest);
    let mut bias = Vec::with_capacity(n * longest * longest);
    for (i, r) in requests.iter().enumerate() {
        let p = pads[i];
        for j in 0..longest {
            ids.push(if j < p { pad as i64 } else { r.prompt[j - p] as i64 });
            pos.push(j.saturating_sub(p) as i64);
        }
        for q in 0..longest {
            bias.extend((0..longest).map(|k| if k < p || k > q { HIDDEN } else { 0.0 }));
        }
    }
    let mut logits = model.forward_cached(
        Tensor::from_data(TensorData::new(ids, [n, longest]), device),
        Tensor::from_data(TensorData::new(pos, [n, longest]), device),
        Tensor::from_data(TensorData::new(bias, [n, longest, longest]), device),
        &mut cache,
    );
    if params.max_new_tokens == 0 {
        return requests.iter().map(|_| Completion { ids: vec![], finish: Finish::Length }).collect();
    }

    loop {
        let vocab = logits.dims()[1];
        let host: Vec<f32> = logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
        let mut next = Vec::with_capacity(live.len());
        let mut keep = Vec::with_capacity(live.len());
        for (row, &i) in live.iter().enumerate() {
            let token = choose(&host[row * vocab..(row + 1) * vocab], params, &mut rngs[i]);
            outputs[i].push(token);
            let len = requests[i].prompt.len() + outputs[i].len();
            let finish = if stop.contains(&token) {
                Some(Finish::Stop)
            } else if outputs[i].len() >= params.max_new_tokens || len >= context {
                Some(Finish::Length)
            } else {
                None
            };
            match finish {
                Some(f) => done[i] = Some(Completion { ids: std::mem::take(&mut outputs[i]), finish: f }),
                None => {
                    keep.push(row);
                    next.push(token);
                }
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < live.len() {
            cache.retain_rows(&keep, device);
            live = keep.iter().map(|&row| live[row]).collect();
            pads = keep.iter().map(|&row| pads[row]).collect();
        }
        let b = live.len();
        let total = cache.len() + 1;
        let pos: Vec<i64> = live.iter().map(|&i| (requests[i].prompt.len() + outputs[i].len() - 1) as i64).collect();
        let bias: Vec<f32> = pads.iter().flat_map(|&p| (0..total).map(move |k| if k < p { HIDDEN } else { 0.0 })).collect();
        logits = model.forward_cached(
            Tensor::<B, 1, Int>::from_data(TensorData::new(next.iter().map(|&t| t as i64).collect::<Vec<_>>(), [b]), device).reshape([b, 1]),
            Tensor::from_data(TensorData::new(pos, [b, 1]), device),
            Tensor::from_data(TensorData::new(bias, [b, 1, total]), device),
            &mut cache,
        );
    }
    done.into_iter().map(|c| c.expect("every request finishes")).collect()
}

/// The next token from one row of logits.
pub fn choose(logits: &[f32], params: &Sampling, rng: &mut SplitMix64) -> u32 {
    if params.temperature <= 0.0 {
        return argmax(logits);
    }
    // Candidates in descending logit order (ties by id, so the order is a pure function of the
    // logits), cut to top-k.
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    if params.top_k > 0 && params.top_k < order.len() {
        order.select_nth_unstable_by(params.top_k - 1, by_logit);
        order.truncate(params.top_k);
    }
    order.sort_unstable_by(by_logit);
    let t = params.temperature as f64;
    let max = logits[order[0] as usize] as f64;
    let weights: Vec<f64> = order.iter().map(|&i| ((logits[i as usize] as f64 - max) / t).exp()).collect();
    let total: f64 = weights.iter().sum();
    // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
    let mut keep = weights.len();
    if params.top_p < 1.0 {
        let mut mass = 0.0;
        for (j, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= params.top_p as f64 {
                keep = j + 1;
                break;
            }
        }
    }
    let kept: f64 = weights[..keep].iter().sum();
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * kept;
    let mut acc = 0.0;
    for (j, w) in weights[..keep].iter().enumerate() {
        acc += w;
        if u < acc {
            return order[j];
        }
    }
    order[keep - 1]
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled(logits: &[f32], params: &Sampling, draws: usize) -> Vec<usize> {
        let mut rng = SplitMix64::new(7);
        let mut counts = vec![0; logits.len()];
        for _ in 0..draws {
            counts[choose(logits, params, &mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let p = Sampling::greedy(1);
        assert_eq!(choose(&[0.0, 3.0, 1.0, 3.0], &p, &mut SplitMix64::new(0)), 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        // Probabilities at T=1: softmax([ln 4, ln 3, ln 2, ln 1]) = [.4, .3, .2, .1].
        let logits = [4f32.ln(), 3f32.ln(), 2f32.ln(), 1f32.ln()];
        let base = Sampling { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 1, seed: 0 };
        let all = sampled(&logits, &base, 20000);
        for (i, want) in [0.4, 0.3, 0.2, 0.1].iter().enumerate() {
            let got = all[i] as f64 / 20000.0;
            assert!((got - want).abs() < 0.015, "token {i}: {got} vs {want}");
        }
        let k2 = sampled(&logits, &Sampling { top_k: 2, ..base }, 20000);
        assert_eq!(k2[2] + k2[3], 0);
        assert!((k2[0] as f64 / 20000.0 - 4.0 / 7.0).abs() < 0.015);
        // Mass .4 + .3 = .7 is the first to reach top_p = .65: exactly two tokens stay.
        let p7 = sampled(&logits, &Sampling { top_p: 0.65, ..base }, 20000);
        assert_eq!(p7[2] + p7[3], 0);
        // A low temperature sharpens towards the argmax.
        let cold = sampled(&logits, &Sampling { temperature: 0.05, ..base }, 2000);
        assert!(cold[0] > 1990, "{cold:?}");
    }
}
