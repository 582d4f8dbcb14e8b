//! Batched generation with a KV cache: prompts of different lengths are left-padded into one
//! batch, prefilled together, then decoded a token per step until each meets a stop token or
//! its token budget. Finished sequences leave the batch, so a long answer does not make the
//! short ones pay for its steps.
//! Each request samples from its own random stream (see `sampling.rs`).

use crate::decoder::{single_sequence, Llama};
use crate::kv_cache::KvCache;
use crate::sampling::{choose, request_rng, Sampling};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use model_files::tokenizer::ChatTokenizer;

/// Added to the attention scores of keys a query must not see. Finite, so that a padding query
/// whose keys are all hidden gets a uniform (unused) distribution instead of NaN.
const HIDDEN: f32 = -1e9;

pub use schemas::generation::Finish;

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
pub fn stop_ids(tok: &ChatTokenizer) -> Vec<u32> {
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
pub fn generate_batch<B: Backend>(
    model: &Llama<B>,
    requests: &[Request],
    params: &Sampling,
    stop: &[u32],
    pad: u32,
    device: &B::Device,
) -> Vec<Completion> {
    let n = requests.len();
    let mut done: Vec<Option<Completion>> = vec![None; n];
    if n == 0 {
        return vec![];
    }
    let longest = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
    assert!(requests.iter().all(|r| !r.prompt.is_empty()), "empty prompt: nothing to condition on");
    let context = model.config.max_position_embeddings;
    let mut rngs: Vec<_> = requests.iter().map(|r| request_rng(params.seed, r.stream)).collect();
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
            Tensor::<B, 1, Int>::from_data(TensorData::new(next.iter().map(|&t| t as i64).collect::<Vec<_>>(), [b]), device)
                .reshape([b, 1]),
            Tensor::from_data(TensorData::new(pos, [b, 1]), device),
            Tensor::from_data(TensorData::new(bias, [b, 1, total]), device),
            &mut cache,
        );
    }
    done.into_iter().map(|c| c.expect("every request finishes")).collect()
}

/// Greedy decoding without a cache (each step re-runs the whole sequence): simple and exact,
/// used for parity checks. Stops after `max_new` tokens or on any id in `stop`.
pub fn greedy<B: Backend>(model: &Llama<B>, prompt: &[u32], max_new: usize, stop: &[u32], device: &B::Device) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    let mut out = vec![];
    for _ in 0..max_new {
        let (x, pos) = single_sequence::<B>(&ids, device);
        let logits = model.forward(x, pos, &[vec![(0, ids.len())]]);
        let v = logits.dims()[2];
        let last = logits.narrow(1, ids.len() - 1, 1).reshape([v]);
        let next = last.argmax(0).into_data().convert::<i64>().to_vec::<i64>().expect("int data")[0] as u32;
        out.push(next);
        ids.push(next);
        if stop.contains(&next) {
            break;
        }
    }
    out
}
