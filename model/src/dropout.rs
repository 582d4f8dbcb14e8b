//! LoRA dropout's masks. They are drawn on the host from the recipe's seed, not from the
//! backend's generator, so that one step draws the same masks whatever the backend and the
//! threads' timing (micro-batches run side by side on CPU), activation recompute (which runs a
//! block's forward pass twice, and must drop the same inputs both times) draws them again, and a
//! resumed run draws those the uninterrupted one drew.
//!
//! The draw: each row of a step has a key, `mix64(mix64(mix64(seed ^ STREAM) ^ step) ^ slot)`
//! (`slot`: the row's place in the step, so micro-batching changes nothing); projection `t`
//! (its index in `LoraTarget::ALL`) of block `l` uses `k = mix64(row_key ^ mix64(l << 8 | t))`,
//! and element `i` of its `[seq, width]` input is kept where `splitmix64(k, i) >> 11`, a uniform
//! 53-bit integer, is at least `p · 2^53` (`splitmix64(k, i) = mix64(k + (i + 1) · 0x9e37...)`,
//! the `i`-th output of `schemas::rng::SplitMix64::new(k)`).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use schemas::rng::{mix64, SplitMix64};
use schemas::train::LoraTarget;

/// Keeps the masks' draw apart from the adapters' initial draw and the data order, which the same
/// recipe seed drives.
const STREAM: u64 = 0x4c6f_5241_2d64_726f;

/// The dropout of some rows of one training step.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraDropout {
    /// The probability of dropping an element.
    pub p: f64,
    step: u64,
    /// The slots (places in the step) of the rows, in batch order.
    first: usize,
    rows: usize,
}

impl LoraDropout {
    /// Dropout `p` for the `rows` rows of step `step` of a run of seed `seed`.
    pub fn for_step(p: f64, seed: u64, step: u64, rows: usize) -> Self {
        LoraDropout { p, step: mix64(mix64(seed ^ STREAM) ^ step), first: 0, rows }
    }

    /// The dropout of `rows` of these rows from the `first`-th on: a micro-batch of the step.
    pub fn rows(&self, first: usize, rows: usize) -> Self {
        assert!(first + rows <= self.rows, "rows {first}..{} of {}", first + rows, self.rows);
        LoraDropout { first: self.first + first, rows, ..self.clone() }
    }

    /// `x`, the input `[rows, seq, width]` of projection `target` of block `layer`, with its
    /// dropped elements zeroed and the rest scaled by `1 / (1 - p)`. The mask travels and is kept
    /// for the backward pass as booleans (a byte each), as torch's dropout keeps it.
    pub fn apply<B: Backend>(&self, layer: usize, target: LoraTarget, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [rows, seq, width] = x.dims();
        assert_eq!(rows, self.rows, "one draw per row of the batch");
        let index = LoraTarget::ALL.iter().position(|&t| t == target).expect("every target is in ALL") as u64;
        let site = mix64(((layer as u64) << 8) | index);
        // `p · 2^53` as an integer: a 53-bit draw below it is dropped.
        let cut = (self.p * (1u64 << 53) as f64).ceil() as u64;
        let mut dropped = vec![false; rows * seq * width];
        dropped.par_chunks_mut((seq * width).max(1)).enumerate().for_each(|(r, row)| {
            let key = mix64(mix64(self.step ^ (self.first + r) as u64) ^ site);
            for (d, draw) in row.iter_mut().zip(SplitMix64::new(key)) {
                *d = draw >> 11 < cut;
            }
        });
        let mask = Tensor::from_data(TensorData::new(dropped, [rows, seq, width]), &x.device());
        x.mask_fill(mask, 0.0).mul_scalar(1.0 / (1.0 - self.p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// The mask as `apply` multiplies by it: `apply` to ones.
    fn host(d: &LoraDropout, layer: usize, target: LoraTarget, seq: usize, width: usize) -> Vec<f32> {
        let ones = Tensor::<Flex, 3>::ones([d.rows, seq, width], &Default::default());
        d.apply(layer, target, ones).into_data().to_vec().unwrap()
    }

    #[test]
    fn masks_drop_p_and_scale_the_rest_and_follow_from_the_key_alone() {
        let d = LoraDropout::for_step(0.25, 7, 3, 4);
        let m = host(&d, 1, LoraTarget::VProj, 50, 64);
        let dropped = m.iter().filter(|&&x| x == 0.0).count() as f64 / m.len() as f64;
        // 12800 draws: the fraction is within 0.02 of p (five standard deviations are 0.019).
        assert!((dropped - 0.25).abs() < 0.02, "{dropped}");
        assert!(m.iter().all(|&x| x == 0.0 || x == 1.0 / 0.75));
        // The same key, the same mask; another block, projection, step or seed, another.
        assert_eq!(host(&d, 1, LoraTarget::VProj, 50, 64), m);
        for other in [
            host(&d, 0, LoraTarget::VProj, 50, 64),
            host(&d, 1, LoraTarget::KProj, 50, 64),
            host(&LoraDropout::for_step(0.25, 7, 4, 4), 1, LoraTarget::VProj, 50, 64),
            host(&LoraDropout::for_step(0.25, 8, 3, 4), 1, LoraTarget::VProj, 50, 64),
        ] {
            assert_ne!(other, m);
        }
        // A micro-batch of rows 2..4 draws what those rows drew in the whole step.
        let (row, n) = (50 * 64, 2);
        assert_eq!(host(&d.rows(2, n), 1, LoraTarget::VProj, 50, 64), m[2 * row..4 * row]);
        // Element i of row r is the i-th draw of SplitMix64 from the row's key (the module's
        // documented formula, which scripts may reproduce).
        let key = mix64(mix64(mix64(mix64(7 ^ STREAM) ^ 3) ^ 1) ^ mix64((1 << 8) | 2));
        let mut stream = SplitMix64::new(key);
        let want: Vec<f32> = (0..row)
            .map(|_| if (stream.next_u64() >> 11) >= (0.25 * (1u64 << 53) as f64).ceil() as u64 { 1.0 / 0.75 } else { 0.0 })
            .collect();
        assert_eq!(want, m[row..2 * row]);
    }
}
