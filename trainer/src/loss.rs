//! SFT and DFT objectives on packed rows.
//!
//! With `logp_t = log p(target_t)`, computed stably as `z_t - logsumexp(z)` (never as
//! `log(softmax(z))`, which underflows to -inf for confident wrong tokens):
//!
//! - `sft`: `L = -(1/N) Σ_t m_t · logp_t`
//! - `dft`: `L = -(1/N) Σ_t m_t · sg(exp(logp_t)) · logp_t`, the token's own probability, detached,
//!   as its weight (Wu et al., eq. 8). Its gradient with respect to the logits of token t is
//!   `m_t · p_t · (softmax(z) - onehot(t)) / N`.
//! - `iwsft` is not here yet: it needs the snapshot's reference log-probabilities.
//!
//! `N` is the number of loss tokens in the whole optimizer step, not in the micro-batch, so
//! gradient accumulation sums to exactly the objective of one big batch.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
pub use schemas::train::LossKind;

/// `log p(targets)` for logits `[batch, seq, vocab]` and targets `[batch, seq]`.
pub fn target_logprobs<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    // The max is a constant shift of the log-sum-exp; detaching it changes no gradient.
    let max = logits.clone().detach().max_dim(2);
    let lse = (logits.clone() - max.clone()).exp().sum_dim(2).log() + max;
    let target = logits.gather(2, targets.unsqueeze_dim(2));
    (target - lse).squeeze_dim(2)
}

/// The objective of one micro-batch (to be summed over the step), plus detached sums for logging.
pub struct LossParts<B: Backend> {
    /// Scalar `[1]`: this micro-batch's share of the step objective.
    pub objective: Tensor<B, 1>,
    /// Σ m_t · (-logp_t): plain cross-entropy, summed.
    pub ce_sum: f64,
    /// Σ m_t · p_t: for the mean probability of the target tokens.
    pub prob_sum: f64,
    /// Σ m_t.
    pub tokens: f64,
}

/// `mask` is 1.0 on target positions; `step_tokens` is N, the loss tokens of the whole step.
pub fn objective<B: Backend>(logp: Tensor<B, 2>, mask: Tensor<B, 2>, kind: LossKind, step_tokens: f64) -> LossParts<B> {
    let prob = logp.clone().detach().exp();
    let weight = match kind {
        LossKind::Sft => mask.clone(),
        LossKind::Dft => prob.clone() * mask.clone(),
    };
    let objective = (logp.clone() * weight).sum().neg().div_scalar(step_tokens);
    let scalar = |t: Tensor<B, 1>| t.into_data().convert::<f64>().to_vec::<f64>().expect("f64")[0];
    LossParts {
        objective,
        ce_sum: scalar((logp.detach() * mask.clone()).sum().neg()),
        prob_sum: scalar((prob * mask.clone()).sum()),
        tokens: scalar(mask.sum()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    fn logits_and_targets() -> (Vec<f32>, Vec<i64>, Vec<f32>, [usize; 3]) {
        // 1 row, 3 positions, vocab 4; the last position is not a target.
        let z = vec![2.0, 0.5, -1.0, 0.0, /**/ -3.0, 1.0, 4.0, 0.5, /**/ 0.1, 0.2, 0.3, 0.4];
        (z, vec![0, 3, 2], vec![1.0, 1.0, 0.0], [1, 3, 4])
    }

    fn host_softmax(z: &[f32]) -> Vec<f64> {
        let m = z.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let e: Vec<f64> = z.iter().map(|&x| (x as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    fn run(kind: LossKind, n: f64) -> (f64, Vec<f32>, LossParts<B>) {
        let (z, t, m, shape) = logits_and_targets();
        let dev = Default::default();
        let logits = Tensor::<B, 3>::from_data(TensorData::new(z, shape), &dev).require_grad();
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(t, [1, 3]), &dev);
        let mask = Tensor::<B, 2>::from_data(TensorData::new(m, [1, 3]), &dev);
        let parts = objective(target_logprobs(logits.clone(), targets), mask, kind, n);
        let value = parts.objective.clone().into_data().convert::<f64>().to_vec::<f64>().unwrap()[0];
        let grads = parts.objective.backward();
        let g = logits.grad(&grads).unwrap().into_data().convert::<f32>().to_vec::<f32>().unwrap();
        (value, g, parts)
    }

    #[test]
    fn loss_values_match_a_hand_computation() {
        let (z, t, _, _) = logits_and_targets();
        // By hand, position 0: softmax([2, .5, -1, 0])[0]; position 1: softmax([-3, 1, 4, .5])[3].
        let p0 = host_softmax(&z[0..4])[t[0] as usize];
        let p1 = host_softmax(&z[4..8])[t[1] as usize];
        let n = 5.0; // the step's loss tokens, more than this micro-batch's two
        let (sft, _, parts) = run(LossKind::Sft, n);
        assert!((sft - (-(p0.ln() + p1.ln()) / n)).abs() < 1e-6, "{sft}");
        let (dft, _, _) = run(LossKind::Dft, n);
        assert!((dft - (-(p0 * p0.ln() + p1 * p1.ln()) / n)).abs() < 1e-6, "{dft}");
        assert!((parts.ce_sum - -(p0.ln() + p1.ln())).abs() < 1e-5);
        assert!((parts.prob_sum - (p0 + p1)).abs() < 1e-6);
        assert_eq!(parts.tokens, 2.0);
    }

    #[test]
    fn dft_gradient_is_p_times_softmax_minus_onehot_over_n() {
        let (z, t, m, _) = logits_and_targets();
        let n = 3.0;
        let (_, g, _) = run(LossKind::Dft, n);
        let (_, g_sft, _) = run(LossKind::Sft, n);
        for pos in 0..3 {
            let s = host_softmax(&z[pos * 4..pos * 4 + 4]);
            let p = s[t[pos] as usize];
            for k in 0..4 {
                let onehot = (k == t[pos] as usize) as u8 as f64;
                let want = m[pos] as f64 * p * (s[k] - onehot) / n;
                let want_sft = m[pos] as f64 * (s[k] - onehot) / n;
                assert!((g[pos * 4 + k] as f64 - want).abs() < 1e-6, "dft pos {pos} k {k}: {} vs {want}", g[pos * 4 + k]);
                assert!((g_sft[pos * 4 + k] as f64 - want_sft).abs() < 1e-6, "sft pos {pos} k {k}");
            }
        }
    }

    #[test]
    fn log_probability_is_stable_for_extreme_logits() {
        let dev = Default::default();
        // softmax would round the target's probability to 0 in f32, and log(0) = -inf.
        let logits = Tensor::<Flex, 3>::from_data(TensorData::new(vec![1000.0f32, -1000.0], [1, 1, 2]), &dev);
        let targets = Tensor::<Flex, 2, Int>::from_data(TensorData::new(vec![1i64], [1, 1]), &dev);
        let lp = target_logprobs(logits, targets).into_data().convert::<f32>().to_vec::<f32>().unwrap()[0];
        assert!((lp - -2000.0).abs() < 1e-2, "{lp}");
    }
}
