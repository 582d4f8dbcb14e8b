//! Batched generation, two ways behind one trait ([`Generator`]):
//! - on CPU, continuous batching over the host decoder (`host.rs`): up to `batch` sequences
//!   decode together, and as soon as one finishes the next request's prompt joins the next
//!   step, so the batch stays full until the queue runs dry;
//! - on Burn (the GPU), left-padded batches: prompts of different lengths are right-aligned,
//!   prefilled together, then decoded a token per step until each meets a stop token or its
//!   budget; finished sequences leave the batch. On a GPU greedy steps choose on the device and
//!   copy one id per row to the host, not the `[batch, vocab]` logits ([`GreedyOn`]).
//!
//! Each request samples from its own random stream (see `sampling.rs`), so what a request
//! draws does not depend on which others share its batch.

use crate::decoder::{single_sequence, Llama};
use crate::host::{HostDecoder, SeqCache};
use crate::kv_cache::KvCache;
use crate::sampling::{choose, request_rng, Sampling};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use model_files::tokenizer::ChatTokenizer;
use rayon::prelude::*;
use schemas::rng::SplitMix64;

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
/// end-of-text tokens it has as special tokens (a chat model may close with either; Llama 3 has
/// three: end of turn, end of message before a tool call, end of text).
pub fn stop_ids(tok: &ChatTokenizer) -> Vec<u32> {
    let mut stop = vec![tok.eos_id()];
    stop.extend(tok.end_token_ids());
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

/// A model that completes requests: what evaluation and sampling generate with.
pub trait Generator: Sync {
    fn config(&self) -> &model_files::config::LlamaConfig;

    /// Completes every request, about `batch` sequences at a time, calling `progress(1,
    /// new_tokens)` as each finishes. The result is in request order.
    fn complete(
        &self,
        requests: &[Request],
        params: &Sampling,
        stop: &[u32],
        batch: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<Completion>;
}

impl Generator for HostDecoder {
    fn config(&self) -> &model_files::config::LlamaConfig {
        &self.config
    }

    fn complete(
        &self,
        requests: &[Request],
        params: &Sampling,
        stop: &[u32],
        batch: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<Completion> {
        generate_continuous(self, requests, params, stop, batch, progress)
    }
}

/// A Burn model on its device, generating in left-padded batches.
pub struct BurnGenerator<B: Backend> {
    pub model: Llama<B>,
    pub device: B::Device,
    pub greedy_on: GreedyOn,
    /// Batches side by side, one per rayon thread: on Burn's CPU backend, whose element-wise ops
    /// use one core each. A GPU runs one batch at a time (`false`); side-by-side batches would only
    /// queue for it, and the host's threads stay free for choosing tokens and for grading.
    pub parallel_batches: bool,
}

/// Where a greedy step's tokens are chosen; both give the same ids (tested).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreedyOn {
    /// The logits are copied to the host and chosen there: the cheaper way when the device is
    /// the host (Burn's CPU backend runs the device way's four passes on one thread: decoding at
    /// batch 32 measured 168 tokens/s this way, 133 the other).
    Host,
    /// Chosen on the device, one id per row copied back: for a GPU, where the logits block is
    /// 155 MB a step at batch 256 with Qwen's vocabulary, and the host's argmax over it runs on
    /// one core.
    Device,
}

impl<B: Backend> Generator for BurnGenerator<B>
where
    Llama<B>: Sync,
    B::Device: Sync,
{
    fn config(&self) -> &model_files::config::LlamaConfig {
        &self.model.config
    }

    fn complete(
        &self,
        requests: &[Request],
        params: &Sampling,
        stop: &[u32],
        batch: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<Completion> {
        // Sorted by prompt length so each batch pads little.
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| (requests[i].prompt.len(), i));
        let batches: Vec<&[usize]> = order.chunks(batch.max(1)).collect();
        let run = |b: &&[usize]| {
            let reqs: Vec<Request> = b.iter().map(|&i| requests[i]).collect();
            // The padding is never attended to, so any id serves.
            let out = generate_batch(&self.model, &reqs, params, stop, 0, self.greedy_on, &self.device);
            for c in &out {
                progress(1, c.ids.len());
            }
            out
        };
        let outs: Vec<Vec<Completion>> =
            if self.parallel_batches { batches.par_iter().map(run).collect() } else { batches.iter().map(run).collect() };
        let mut done: Vec<Option<Completion>> = vec![None; requests.len()];
        for (b, out) in batches.iter().zip(outs) {
            for (&i, c) in b.iter().zip(out) {
                done[i] = Some(c);
            }
        }
        done.into_iter().map(|c| c.expect("every request completed")).collect()
    }
}

/// Whether a sequence ends after `token`, the last of `out`: on a stop id, at the token budget,
/// or at the end of the model's context. One rule for both engines.
fn finish(token: u32, out: &[u32], prompt: usize, params: &Sampling, stop: &[u32], context: usize) -> Option<Finish> {
    if stop.contains(&token) {
        Some(Finish::Stop)
    } else if out.len() >= params.max_new_tokens || prompt + out.len() >= context {
        Some(Finish::Length)
    } else {
        None
    }
}

/// Prompt tokens one step of continuous batching prefills at most (beyond its first new
/// sequence), which bounds the step's activations.
const PREFILL_TOKENS: usize = 4096;

/// One sequence in flight.
struct Live {
    request: usize,
    cache: SeqCache,
    /// The tokens the next step appends: the prompt, then each chosen token.
    pending: Vec<u32>,
    out: Vec<u32>,
    rng: SplitMix64,
}

/// Continuous batching on the host decoder: requests join in order as sequences finish, up to
/// `batch` at a time.
pub fn generate_continuous(
    model: &HostDecoder,
    requests: &[Request],
    params: &Sampling,
    stop: &[u32],
    batch: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<Completion> {
    assert!(requests.iter().all(|r| !r.prompt.is_empty()), "empty prompt: nothing to condition on");
    let context = model.config.max_position_embeddings;
    if let Some(r) = requests.iter().find(|r| r.prompt.len() >= context) {
        panic!("a prompt of {} tokens leaves no room in the model's {context}-token context", r.prompt.len());
    }
    if params.max_new_tokens == 0 {
        return requests.iter().map(|_| Completion { ids: vec![], finish: Finish::Length }).collect();
    }
    let mut done: Vec<Option<Completion>> = vec![None; requests.len()];
    let mut queue = requests.iter().enumerate().peekable();
    let mut live: Vec<Live> = vec![];
    loop {
        let mut prefill = 0;
        while live.len() < batch.max(1) {
            let Some((i, r)) = queue.next_if(|(_, r)| prefill == 0 || prefill + r.prompt.len() <= PREFILL_TOKENS) else { break };
            prefill += r.prompt.len();
            let capacity = (r.prompt.len() + params.max_new_tokens).min(context);
            live.push(Live {
                request: i,
                cache: model.new_cache(capacity),
                pending: r.prompt.to_vec(),
                out: vec![],
                rng: request_rng(params.seed, r.stream),
            });
        }
        if live.is_empty() {
            break;
        }
        let (mut caches, tokens): (Vec<&mut SeqCache>, Vec<&[u32]>) = live.iter_mut().map(|l| (&mut l.cache, l.pending.as_slice())).unzip();
        let logits = model.step(&mut caches, &tokens);
        let vocab = logits.len() / live.len();
        let chosen: Vec<u32> = live.par_iter_mut().zip(logits.par_chunks(vocab)).map(|(l, row)| choose(row, params, &mut l.rng)).collect();
        let mut still = Vec::with_capacity(live.len());
        for (mut l, token) in live.into_iter().zip(chosen) {
            l.out.push(token);
            match finish(token, &l.out, requests[l.request].prompt.len(), params, stop, context) {
                Some(f) => {
                    progress(1, l.out.len());
                    done[l.request] = Some(Completion { ids: l.out, finish: f });
                }
                None => {
                    l.pending = vec![token];
                    still.push(l);
                }
            }
        }
        live = still;
    }
    done.into_iter().map(|c| c.expect("every request finishes")).collect()
}

/// Completes every request in one batch. `stop` ends a sequence (end-of-turn, end-of-text);
/// `pad` fills the left of shorter prompts and is never attended to; `greedy_on` says where a
/// greedy step chooses.
pub fn generate_batch<B: Backend>(
    model: &Llama<B>,
    requests: &[Request],
    params: &Sampling,
    stop: &[u32],
    pad: u32,
    greedy_on: GreedyOn,
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
    // Positions past the rotary tables: an index error on the CPU, an out-of-bounds read on a GPU.
    if let Some(r) = requests.iter().find(|r| r.prompt.len() >= context) {
        panic!("a prompt of {} tokens leaves no room in the model's {context}-token context", r.prompt.len());
    }
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
        let chosen = if params.temperature <= 0.0 && greedy_on == GreedyOn::Device { greedy_on_device(logits.clone()) } else { None };
        let tokens: Vec<u32> = match chosen {
            Some(tokens) => tokens,
            None => {
                let vocab = logits.dims()[1];
                let host: Vec<f32> = logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
                live.iter().enumerate().map(|(row, &i)| choose(&host[row * vocab..(row + 1) * vocab], params, &mut rngs[i])).collect()
            }
        };
        let mut next = Vec::with_capacity(live.len());
        let mut keep = Vec::with_capacity(live.len());
        for (row, (&i, token)) in live.iter().zip(tokens).enumerate() {
            outputs[i].push(token);
            match finish(token, &outputs[i], requests[i].prompt.len(), params, stop, context) {
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

/// Each row's greedy token, chosen where the logits are: the lowest id among the row's maxima,
/// as the host's `choose` picks it (a backend's own argmax may break ties otherwise). On a GPU
/// this copies one number per row to the host instead of the whole `[rows, vocab]` block, which
/// at batch 256 and Qwen's vocabulary is 155 MB a step. For logits without NaN the ids equal
/// the host's. None when a row holds a NaN (a backend's maximum may skip it or be it): the host
/// then decides, and refuses such a row as it always has.
fn greedy_on_device<B: Backend>(logits: Tensor<B, 2>) -> Option<Vec<u32>> {
    let [rows, vocab] = logits.dims();
    let device = logits.device();
    // 1 for a row with a NaN, read back with the ids so that checking costs no extra round trip.
    let has_nan = logits.clone().is_nan().float().max_dim(1);
    let is_max = logits.clone().equal(logits.max_dim(1).expand([rows, vocab]));
    // Ids as floats: exact, since vocabularies are far below 2^24.
    let ids = Tensor::<B, 1, Int>::arange(0..vocab as i64, &device).float().reshape([1, vocab]).expand([rows, vocab]);
    let lowest = ids.mask_fill(is_max.bool_not(), vocab as f32).min_dim(1) + has_nan * (vocab as f32);
    let lowest: Vec<f32> = lowest.into_data().convert::<f32>().to_vec().expect("f32 ids");
    lowest.iter().all(|&id| id < vocab as f32).then(|| lowest.iter().map(|&id| id as u32).collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use schemas::rng::SplitMix64;

    #[test]
    fn greedy_on_the_device_takes_the_lowest_id_among_equal_maxima_as_the_host_does() {
        let rows: Vec<Vec<f32>> = vec![
            vec![0.5, 2.0, -1.0, 2.0, 2.0],     // a three-way tie: id 1
            vec![3.0, 3.0, 0.0, 0.0, 0.0],      // tie at the first id
            vec![-5.0, -4.0, -3.0, -2.0, -1.0], // the last id
            vec![1.0, f32::NEG_INFINITY, 1.5, 1.5, 0.0],
        ];
        let flat: Vec<f32> = rows.concat();
        let logits = Tensor::<Flex, 2>::from_data(TensorData::new(flat, [4, 5]), &Default::default());
        let device = greedy_on_device(logits).expect("finite maxima");
        let host: Vec<u32> = rows.iter().map(|r| choose(r, &Sampling::greedy(1), &mut SplitMix64::new(0))).collect();
        assert_eq!(device, vec![1, 0, 4, 2]);
        assert_eq!(device, host);
    }

    #[test]
    fn a_row_with_a_nan_leaves_the_choice_to_the_host() {
        let logits = Tensor::<Flex, 2>::from_data(TensorData::new(vec![f32::NAN; 6], [2, 3]), &Default::default());
        assert_eq!(greedy_on_device(logits), None);
        // A finite maximum beside a NaN, in a row long enough for Flex's SIMD maximum. Flex's
        // maximum is NaN there too; the NaN count covers backends whose maximum skips NaN.
        let vocab = 1024;
        let mut partial: Vec<f32> = (0..2 * vocab).map(|i| (i % 7) as f32).collect();
        partial[vocab + 3] = f32::NAN;
        let logits = Tensor::<Flex, 2>::from_data(TensorData::new(partial, [2, vocab]), &Default::default());
        assert_eq!(greedy_on_device(logits), None);
    }
}
