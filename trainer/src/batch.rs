//! Batch assembly: the tensors of a micro-batch of packed rows, with next-token targets.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use schemas::snapshot::{segment_runs, Row};

/// Tensors for a micro-batch of rows: inputs, positions, next-token targets and their mask
/// (both `[batch, seq-1]`), the reference log-probabilities of those targets when every row has
/// them (`ref_logprobs[1..]`, also `[batch, seq-1]`), and the segment runs of each row.
pub struct MicroBatch<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub positions: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
    pub target_mask: Tensor<B, 2>,
    pub target_ref_logprobs: Option<Tensor<B, 2>>,
    pub segments: Vec<Vec<(usize, usize)>>,
}

pub fn micro_batch<B: Backend>(rows: &[&Row], device: &B::Device) -> MicroBatch<B> {
    let b = rows.len();
    let t = rows[0].input_ids.len();
    let flat = |f: &dyn Fn(&Row) -> Vec<i64>| -> Vec<i64> { rows.iter().flat_map(|r| f(r)).collect() };
    let ids = flat(&|r| r.input_ids.iter().map(|&x| x as i64).collect());
    let pos = flat(&|r| r.position_ids.iter().map(|&x| x as i64).collect());
    let targets = flat(&|r| r.input_ids[1..].iter().map(|&x| x as i64).collect());
    let mask: Vec<f32> = rows.iter().flat_map(|r| (1..t).map(|i| if r.is_target(i) { 1.0 } else { 0.0 })).collect();
    let refs: Option<Vec<f32>> =
        rows.iter().map(|r| r.ref_logprobs.as_ref().map(|v| &v[1..])).collect::<Option<Vec<&[f32]>>>().map(|v| v.concat());
    MicroBatch {
        target_ref_logprobs: refs.map(|v| Tensor::from_data(TensorData::new(v, [b, t - 1]), device)),
        input_ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
        positions: Tensor::from_data(TensorData::new(pos, [b, t]), device),
        targets: Tensor::from_data(TensorData::new(targets, [b, t - 1]), device),
        target_mask: Tensor::from_data(TensorData::new(mask, [b, t - 1]), device),
        segments: rows.iter().map(|r| segment_runs(&r.segment_ids)).collect(),
    }
}
