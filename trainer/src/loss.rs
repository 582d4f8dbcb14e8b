//! SFT, DFT and importance-weighted SFT objectives on packed rows.
//!
//! With `logp_t = log p(target_t)`, computed stably as `z_t - logsumexp(z)` (never as
//! `log(softmax(z))`, which underflows to -inf for confident wrong tokens):
//!
//! - `sft`: `L = -(1/N) Σ_t m_t · logp_t`
//! - `dft`: `L = -(1/N) Σ_t m_t · sg(exp(logp_t)) · logp_t`, the token's own probability, detached,
//!   as its weight (Wu et al., eq. 8). Its gradient with respect to the logits of token t is
//!   `m_t · p_t · (softmax(z) - onehot(t)) / N`.
//! - `iwsft` (importance-weighted SFT, Qin and Springenberg 2025, *Supervised Fine Tuning on
//!   Curated Data is Reinforcement Learning (and can be improved)*), token level:
//!   `L = -(1/N) Σ_t m_t · w_t · logp_t` with `w_t = clip(exp(sg(logp_t) - ref_t), lo, hi)`, the
//!   detached ratio of the token's current probability to its probability under the reference
//!   model that scored the snapshot (`ref_t`, the shard's `ref_logprobs` shifted onto targets).
//!   `[lo, hi]` is the recipe's `iwsft_clip`, default `[0.2, 1.8]` (= `1 ± 0.8`, the bounds of the
//!   per-token variant in the authors' code). The gradient with respect to the logits of token t
//!   is `m_t · w_t · (softmax(z) - onehot(t)) / N`. The paper's main runs use a sequence-level
//!   weight instead (exp of the mean log-ratio over a sequence, clipped to `[0, 16]`); that variant
//!   is not implemented here.
//!
//! `N` is the number of loss tokens in the whole optimizer step, not in the micro-batch, so
//! gradient accumulation sums to exactly the objective of one big batch.

use anyhow::bail;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
pub use schemas::train::LossKind;

/// An objective and its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loss {
    pub kind: LossKind,
    /// `iwsft` only: bounds of the token importance weight.
    pub iwsft_clip: [f64; 2],
}

impl From<LossKind> for Loss {
    fn from(kind: LossKind) -> Loss {
        Loss { kind, iwsft_clip: schemas::train::DEFAULT_IWSFT_CLIP }
    }
}

impl From<&schemas::train::TrainRecipe> for Loss {
    fn from(r: &schemas::train::TrainRecipe) -> Loss {
        Loss { kind: r.loss, iwsft_clip: r.iwsft_clip }
    }
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

/// `mask` is 1.0 on target positions; `reference` is the reference model's log-probability of
/// each target (same shape, needed by `iwsft` only); `step_tokens` is N, the loss tokens of the
/// whole step.
pub fn objective<B: Backend>(
    logp: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    reference: Option<Tensor<B, 2>>,
    loss: Loss,
    step_tokens: f64,
) -> anyhow::Result<LossParts<B>> {
    let prob = logp.clone().detach().exp();
    let weight = match loss.kind {
        LossKind::Sft => mask.clone(),
        LossKind::Dft => prob.clone() * mask.clone(),
        LossKind::Iwsft => {
            let Some(reference) = reference else {
                bail!("the iwsft loss needs reference log-probabilities (a snapshot scored by `trainer score`)");
            };
            let [lo, hi] = loss.iwsft_clip;
            (logp.clone().detach() - reference).exp().clamp(lo, hi) * mask.clone()
        }
    };
    let objective = (logp.clone() * weight).sum().neg().div_scalar(step_tokens);
    let scalar = |t: Tensor<B, 1>| t.into_data().convert::<f64>().to_vec::<f64>().expect("f64")[0];
    Ok(LossParts {
        objective,
        ce_sum: scalar((logp.detach() * mask.clone()).sum().neg()),
        prob_sum: scalar((prob * mask.clone()).sum()),
        tokens: scalar(mask.sum()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Int, TensorData};
    use model::logprobs::target_logprobs;

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
        run_with(kind, None, n)
    }

    fn run_with(kind: LossKind, reference: Option<Vec<f32>>, n: f64) -> (f64, Vec<f32>, LossParts<B>) {
        let (z, t, m, shape) = logits_and_targets();
        let dev = Default::default();
        let logits = Tensor::<B, 3>::from_data(TensorData::new(z, shape), &dev).require_grad();
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(t, [1, 3]), &dev);
        let mask = Tensor::<B, 2>::from_data(TensorData::new(m, [1, 3]), &dev);
        let reference = reference.map(|r| Tensor::<B, 2>::from_data(TensorData::new(r, [1, 3]), &dev));
        let parts = objective(target_logprobs(logits.clone(), targets), mask, reference, kind.into(), n).unwrap();
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

    /// Reference log-probabilities that put token 0's ratio inside the bounds (e^0.3 = 1.35),
    /// token 1's above them (e^2 = 7.4, clipped to 1.8) and, in a second run, below them
    /// (e^-3 = 0.05, clipped to 0.2). The last position is not a target; its reference is
    /// arbitrary.
    #[test]
    fn iwsft_weights_are_clipped_ratios_and_its_gradient_is_w_times_softmax_minus_onehot_over_n() {
        let (z, t, m, _) = logits_and_targets();
        let n = 4.0;
        let p: Vec<f64> = (0..3).map(|pos| host_softmax(&z[pos * 4..pos * 4 + 4])[t[pos] as usize]).collect();
        for (shift1, w1) in [(2.0, 1.8), (-3.0, 0.2)] {
            let reference = vec![(p[0].ln() - 0.3) as f32, (p[1].ln() - shift1) as f32, 5.0];
            let w = [0.3f64.exp(), w1, 0.0];
            let (value, g, parts) = run_with(LossKind::Iwsft, Some(reference), n);
            let want = -(w[0] * p[0].ln() + w[1] * p[1].ln()) / n;
            assert!((value - want).abs() < 1e-6, "objective {value} vs {want}");
            assert!((parts.ce_sum - -(p[0].ln() + p[1].ln())).abs() < 1e-5);
            for pos in 0..3 {
                let s = host_softmax(&z[pos * 4..pos * 4 + 4]);
                for k in 0..4 {
                    let onehot = (k == t[pos] as usize) as u8 as f64;
                    let want = m[pos] as f64 * w[pos] * (s[k] - onehot) / n;
                    assert!((g[pos * 4 + k] as f64 - want).abs() < 1e-6, "iwsft pos {pos} k {k}: {} vs {want}", g[pos * 4 + k]);
                }
            }
        }
        // The reference is the model itself: every weight is 1 and iwsft is sft.
        let same = vec![p[0].ln() as f32, p[1].ln() as f32, 0.0];
        let (iw, g_iw, _) = run_with(LossKind::Iwsft, Some(same), n);
        let (sft, g_sft, _) = run(LossKind::Sft, n);
        assert!((iw - sft).abs() < 1e-6);
        assert!(g_iw.iter().zip(&g_sft).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn iwsft_without_reference_is_an_error() {
        let (z, t, m, shape) = logits_and_targets();
        let dev = Default::default();
        let logits = Tensor::<Flex, 3>::from_data(TensorData::new(z, shape), &dev);
        let targets = Tensor::<Flex, 2, Int>::from_data(TensorData::new(t, [1, 3]), &dev);
        let mask = Tensor::<Flex, 2>::from_data(TensorData::new(m, [1, 3]), &dev);
        let err = objective(target_logprobs(logits, targets), mask, None, LossKind::Iwsft.into(), 1.0).err().unwrap();
        assert!(err.to_string().contains("trainer score"), "{err}");
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
