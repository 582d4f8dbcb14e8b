//! Per-token log-probabilities: of given targets under logits (the losses build on it), and of
//! every token of packed rows, aligned with `input_ids` (reference scoring, the probability
//! histogram).

use crate::decoder::Llama;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;
use schemas::snapshot::{segment_runs, Row};

/// Logits held at once: `chunk x vocab` floats, 64 MB. Large enough that the chunk's matmuls
/// run at full width (341 positions at a 49,152-token vocabulary, 110 at 151,936).
const CHUNK_ELEMENTS: usize = 1 << 24;

/// Positions per chunk of the output projection for a vocabulary of `vocab` tokens: training's
/// loss and scoring compute logits this many positions at a time, so the `[tokens, vocab]` block
/// never exists whole.
pub fn chunk_positions(vocab: usize) -> usize {
    (CHUNK_ELEMENTS / vocab.max(1)).max(1)
}

/// `log p(targets)` for logits `[batch, seq, vocab]` and targets `[batch, seq]`.
pub fn target_logprobs<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    // The max is a constant shift of the log-sum-exp; detaching it changes no gradient.
    let max = logits.clone().detach().max_dim(2);
    let lse = (logits.clone() - max.clone()).exp().sum_dim(2).log() + max;
    let target = logits.gather(2, targets.unsqueeze_dim(2));
    (target - lse).squeeze_dim(2)
}

/// `log p(input_ids[i] | earlier tokens of its segment)` for each row, aligned with `input_ids`:
/// 0.0 at the first token of each segment and on padding. All rows must have the same length.
/// Rows are run as one batch; call it with one row per thread to use several cores on CPU.
pub fn row_logprobs<B: Backend>(model: &Llama<B>, rows: &[&Row], device: &B::Device) -> Vec<Vec<f32>> {
    let Some(first) = rows.first() else { return vec![] };
    let t_full = first.input_ids.len();
    assert!(rows.iter().all(|r| r.input_ids.len() == t_full && r.segment_ids.len() == t_full), "rows of one batch have the same length");
    let mut out = vec![vec![0.0f32; t_full]; rows.len()];
    // Padding (segment 0) sits at the end of a packed row: stop at the last real token.
    let used = rows.iter().map(|r| r.segment_ids.iter().rposition(|&s| s != 0).map_or(0, |i| i + 1)).max().unwrap_or(0);
    if used < 2 {
        return out;
    }
    let b = rows.len();
    let ids: Vec<i64> = rows.iter().flat_map(|r| r.input_ids[..used].iter().map(|&x| x as i64)).collect();
    let pos: Vec<i64> = rows.iter().flat_map(|r| r.position_ids[..used].iter().map(|&x| x as i64)).collect();
    let targets: Vec<i64> = rows.iter().flat_map(|r| r.input_ids[1..used].iter().map(|&x| x as i64)).collect();
    let segments: Vec<Vec<(usize, usize)>> = rows.iter().map(|r| segment_runs(&r.segment_ids[..used])).collect();
    let hidden = model
        .hidden(
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, used]), device),
            Tensor::<B, 2, Int>::from_data(TensorData::new(pos, [b, used]), device),
            &segments,
        )
        .narrow(1, 0, used - 1);
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [b, used - 1]), device);
    // The output projection a chunk of positions at a time: at Qwen's 151,936 tokens, a 2048-token
    // row's logits alone would take 1.2 GB, and more for the log-softmax's copies.
    let chunk = chunk_positions(model.config.vocab_size * b);
    let lp: Vec<Tensor<B, 2>> = (0..used - 1)
        .step_by(chunk)
        .map(|start| {
            let c = chunk.min(used - 1 - start);
            let logits = crate::decoder::linear(hidden.clone().narrow(1, start, c), model.head(), None);
            target_logprobs(logits, targets.clone().narrow(1, start, c))
        })
        .collect();
    let lp: Vec<f32> = Tensor::cat(lp, 1).into_data().convert::<f32>().to_vec::<f32>().expect("f32 data");
    for (k, (row, o)) in rows.iter().zip(out.iter_mut()).enumerate() {
        for i in (1..used).filter(|&i| row.is_predicted(i)) {
            o[i] = lp[k * (used - 1) + i - 1];
        }
    }
    out
}

/// [`row_logprobs`] of each row, the rows side by side, one per rayon thread (on CPU, Burn's
/// element-wise ops are single-threaded, so one row at a time would leave cores idle), in
/// order; `on_row` is called as each row finishes (a progress bar).
pub fn rows_logprobs<B: Backend>(model: &Llama<B>, rows: &[&Row], device: &B::Device, on_row: impl Fn() + Sync) -> Vec<Vec<f32>>
where
    Llama<B>: Sync,
{
    rows.par_iter()
        .map(|row| {
            let v = row_logprobs(model, &[*row], device).pop().expect("one row");
            on_row();
            v
        })
        .collect()
}
