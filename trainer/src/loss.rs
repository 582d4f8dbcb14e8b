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
//!
//! **Only trained positions, in chunks.** The logits `z = h · Wᵀ` exist only for the positions
//! whose next token is trained (the loss mask; about half of a packed row) and only a chunk of
//! positions at a time ([`chunk_positions`]: about 64 MB of logits), so the `[tokens, vocab]`
//! block (0.4 GB per 2048-token row at SmolLM2's 49,152 tokens, 1.2 GB at Qwen's 151,936, kept
//! several times over by an autodiff graph) never exists. Each chunk's gradient is computed
//! with the forward pass from the closed forms above, `dz = m·w·(softmax(z) - onehot(t)) / N`,
//! then `dh = dz · W` and `dW += dzᵀ · h`, outside the autodiff graph (Liger-Kernel's fused
//! linear cross-entropy does the same on GPU). They enter the graph through a surrogate scalar,
//! `Σ h ⊙ sg(dh) + Σ W ⊙ sg(dW)`, whose gradient with respect to `h` and `W` is exactly
//! `(dh, dW)`: backward through it and the rest of the model receives the objective's gradient.

use crate::batch::Targets;
use anyhow::bail;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
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

pub use model::logprobs::chunk_positions;

/// One micro-batch's objective (to be summed over the step) and its gradient carrier.
pub struct LossParts<B: AutodiffBackend> {
    /// Scalar `[1]` whose gradient is the objective's (see the module doc); its value is not
    /// the objective. Call `backward()` on it.
    pub surrogate: Tensor<B, 1>,
    /// This micro-batch's share of the step objective.
    pub objective: f64,
    /// Σ m_t · (-logp_t): plain cross-entropy, summed.
    pub ce_sum: f64,
    /// Σ m_t · p_t: for the mean probability of the target tokens.
    pub prob_sum: f64,
    /// Σ m_t.
    pub tokens: f64,
}

/// The objective at the trained positions: `hidden` `[n, hidden]` holds the final hidden states
/// of exactly the `n` positions of `targets` (in its order), `head` `[vocab, hidden]` is the
/// output projection, `step_tokens` is N, the loss tokens of the whole step, and `chunk` the
/// positions whose logits exist at once ([`chunk_positions`]; any value gives the same result).
pub fn objective<B: AutodiffBackend>(
    hidden: Tensor<B, 2>,
    head: &Tensor<B, 2>,
    targets: &Targets,
    loss: Loss,
    step_tokens: f64,
    chunk: usize,
) -> anyhow::Result<LossParts<B>> {
    let n = targets.len();
    assert_eq!(hidden.dims()[0], n, "one hidden state per target");
    let reference = match (loss.kind, &targets.reference) {
        (LossKind::Iwsft, None) => {
            bail!("the iwsft loss needs reference log-probabilities (a snapshot scored by `trainer score`)")
        }
        (LossKind::Iwsft, Some(r)) => Some(r),
        _ => None,
    };
    let head_trains = head.is_require_grad();
    let (h, w) = (hidden.clone().inner(), head.clone().inner());
    let device = h.device();
    let mut grad_h = Vec::with_capacity(n.div_ceil(chunk.max(1)));
    let mut grad_w: Option<Tensor<B::InnerBackend, 2>> = None;
    // Σ -w·logp, Σ -logp, Σ p, summed on the device and read once at the end.
    let mut sums: Option<Tensor<B::InnerBackend, 1>> = None;
    for start in (0..n).step_by(chunk.max(1)) {
        let c = chunk.max(1).min(n - start);
        let hc = h.clone().narrow(0, start, c);
        let ids = Tensor::<B::InnerBackend, 2, Int>::from_data(TensorData::new(targets.ids[start..start + c].to_vec(), [c, 1]), &device);
        let z = hc.clone().matmul(w.clone().transpose());
        // The max is a constant shift of the log-sum-exp, for stability; it changes nothing else.
        let max = z.clone().max_dim(1);
        let e = (z.clone() - max.clone()).exp();
        let sum_e = e.clone().sum_dim(1);
        let logp = z.gather(1, ids.clone()) - max - sum_e.clone().log();
        let p = logp.clone().exp();
        let weight = match loss.kind {
            LossKind::Sft => p.ones_like(),
            LossKind::Dft => p.clone(),
            LossKind::Iwsft => {
                let [lo, hi] = loss.iwsft_clip;
                let r = reference.expect("checked above")[start..start + c].to_vec();
                let r = Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(r, [c, 1]), &device);
                (logp.clone() - r).exp().clamp(lo, hi)
            }
        };
        let chunk_sums = Tensor::cat(vec![(weight.clone() * logp.clone()).sum().neg(), logp.sum().neg(), p.sum()], 0);
        sums = Some(match sums {
            Some(s) => s + chunk_sums,
            None => chunk_sums,
        });
        // dz = (w / N) · (softmax(z) - onehot(t)), the gradient of the objective at these logits.
        let scale = weight.div_scalar(step_tokens);
        let dz = (e / sum_e) * scale.clone();
        let dz = dz.scatter(1, ids, scale.neg(), IndexingUpdateOp::Add);
        grad_h.push(dz.clone().matmul(w.clone()));
        // A frozen head (LoRA) needs no gradient: `dzᵀ·h` would cost as much as the logits.
        if head_trains {
            let gw = dz.transpose().matmul(hc);
            grad_w = Some(match grad_w {
                Some(acc) => acc + gw,
                None => gw,
            });
        }
    }
    let Some(sums) = sums else {
        // No trained position: a zero surrogate that still reaches every parameter.
        let surrogate = head.clone().sum().mul_scalar(0.0) + hidden.sum().mul_scalar(0.0);
        return Ok(LossParts { surrogate, objective: 0.0, ce_sum: 0.0, prob_sum: 0.0, tokens: 0.0 });
    };
    let sums: Vec<f64> = sums.into_data().convert::<f64>().to_vec().expect("f64 sums");
    let grad_h = Tensor::<B, 2>::from_inner(Tensor::cat(grad_h, 0));
    let surrogate = match grad_w {
        Some(grad_w) => (hidden * grad_h).sum() + (head.clone() * Tensor::<B, 2>::from_inner(grad_w)).sum(),
        None => (hidden * grad_h).sum(),
    };
    Ok(LossParts { surrogate, objective: sums[0] / step_tokens, ce_sum: sums[1], prob_sum: sums[2], tokens: n as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use model::logprobs::target_logprobs;

    type B = Autodiff<Flex>;

    fn leaf(v: Vec<f32>, shape: [usize; 2]) -> Tensor<B, 2> {
        Tensor::<B, 2>::from_data(TensorData::new(v, shape), &Default::default()).require_grad()
    }

    fn floats(t: Tensor<Flex, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// Two trained positions, vocab 4, and an identity head, so the hidden states are the
    /// logits and their gradient is the logits' gradient.
    fn two_positions() -> (Vec<f32>, Targets) {
        let z = vec![2.0, 0.5, -1.0, 0.0, /**/ -3.0, 1.0, 4.0, 0.5];
        (z, Targets { index: vec![0, 1], ids: vec![0, 3], reference: None })
    }

    fn identity(n: usize) -> Vec<f32> {
        (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect()
    }

    fn host_softmax(z: &[f32]) -> Vec<f64> {
        let m = z.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let e: Vec<f64> = z.iter().map(|&x| (x as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    /// The objective, its parts, and the gradients of hidden states and head.
    fn run(h: &[f32], w: &[f32], d: usize, targets: &Targets, loss: Loss, n: f64, chunk: usize) -> (LossParts<B>, Vec<f32>, Vec<f32>) {
        let (h, w) = (leaf(h.to_vec(), [h.len() / d, d]), leaf(w.to_vec(), [w.len() / d, d]));
        let parts = objective(h.clone(), &w, targets, loss, n, chunk).unwrap();
        let g = parts.surrogate.clone().backward();
        let (gh, gw) = (floats(h.grad(&g).unwrap()), floats(w.grad(&g).unwrap()));
        (parts, gh, gw)
    }

    /// The computation this module replaced, kept as the reference: the whole `[n, vocab]`
    /// logits in one autodiff graph, `logp` by log-sum-exp, the weight detached.
    fn full(h: &[f32], w: &[f32], d: usize, targets: &Targets, loss: Loss, n: f64) -> (f64, Vec<f32>, Vec<f32>) {
        let (h, w) = (leaf(h.to_vec(), [h.len() / d, d]), leaf(w.to_vec(), [w.len() / d, d]));
        let k = targets.len();
        let dev = Default::default();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(targets.ids.clone(), [1, k]), &dev);
        let logp = target_logprobs(h.clone().matmul(w.clone().transpose()).unsqueeze::<3>(), ids);
        let weight = match loss.kind {
            LossKind::Sft => logp.ones_like(),
            LossKind::Dft => logp.clone().detach().exp(),
            LossKind::Iwsft => {
                let r = Tensor::<B, 2>::from_data(TensorData::new(targets.reference.clone().unwrap(), [1, k]), &dev);
                (logp.clone().detach() - r).exp().clamp(loss.iwsft_clip[0], loss.iwsft_clip[1])
            }
        };
        let obj = (logp * weight).sum().neg().div_scalar(n);
        let value = obj.clone().into_data().convert::<f64>().to_vec::<f64>().unwrap()[0];
        let g = obj.backward();
        (value, floats(h.grad(&g).unwrap()), floats(w.grad(&g).unwrap()))
    }

    fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
        }
    }

    #[test]
    fn loss_values_match_a_hand_computation() {
        let (z, t) = two_positions();
        // By hand, position 0: softmax([2, .5, -1, 0])[0]; position 1: softmax([-3, 1, 4, .5])[3].
        let p0 = host_softmax(&z[0..4])[0];
        let p1 = host_softmax(&z[4..8])[3];
        let n = 5.0; // the step's loss tokens, more than this micro-batch's two
        let (sft, _, _) = run(&z, &identity(4), 4, &t, LossKind::Sft.into(), n, 1);
        assert!((sft.objective - (-(p0.ln() + p1.ln()) / n)).abs() < 1e-6, "{}", sft.objective);
        let (dft, _, _) = run(&z, &identity(4), 4, &t, LossKind::Dft.into(), n, 2);
        assert!((dft.objective - (-(p0 * p0.ln() + p1 * p1.ln()) / n)).abs() < 1e-6, "{}", dft.objective);
        assert!((sft.ce_sum - -(p0.ln() + p1.ln())).abs() < 1e-5);
        assert!((sft.prob_sum - (p0 + p1)).abs() < 1e-6);
        assert_eq!(sft.tokens, 2.0);
    }

    #[test]
    fn dft_gradient_is_p_times_softmax_minus_onehot_over_n() {
        let (z, t) = two_positions();
        let n = 3.0;
        let (_, g, _) = run(&z, &identity(4), 4, &t, LossKind::Dft.into(), n, 1);
        let (_, g_sft, _) = run(&z, &identity(4), 4, &t, LossKind::Sft.into(), n, 2);
        for pos in 0..2 {
            let s = host_softmax(&z[pos * 4..pos * 4 + 4]);
            let p = s[t.ids[pos] as usize];
            for k in 0..4 {
                let onehot = (k == t.ids[pos] as usize) as u8 as f64;
                let want = p * (s[k] - onehot) / n;
                let want_sft = (s[k] - onehot) / n;
                assert!((g[pos * 4 + k] as f64 - want).abs() < 1e-6, "dft pos {pos} k {k}: {} vs {want}", g[pos * 4 + k]);
                assert!((g_sft[pos * 4 + k] as f64 - want_sft).abs() < 1e-6, "sft pos {pos} k {k}");
            }
        }
    }

    /// Reference log-probabilities that put token 0's ratio inside the bounds (e^0.3 = 1.35),
    /// token 1's above them (e^2 = 7.4, clipped to 1.8) and, in a second run, below them
    /// (e^-3 = 0.05, clipped to 0.2).
    #[test]
    fn iwsft_weights_are_clipped_ratios_and_its_gradient_is_w_times_softmax_minus_onehot_over_n() {
        let (z, t) = two_positions();
        let n = 4.0;
        let p: Vec<f64> = (0..2).map(|pos| host_softmax(&z[pos * 4..pos * 4 + 4])[t.ids[pos] as usize]).collect();
        for (shift1, w1) in [(2.0, 1.8), (-3.0, 0.2)] {
            let t = Targets { reference: Some(vec![(p[0].ln() - 0.3) as f32, (p[1].ln() - shift1) as f32]), ..t.clone() };
            let w = [0.3f64.exp(), w1];
            let (parts, g, _) = run(&z, &identity(4), 4, &t, LossKind::Iwsft.into(), n, 1);
            let want = -(w[0] * p[0].ln() + w[1] * p[1].ln()) / n;
            assert!((parts.objective - want).abs() < 1e-6, "objective {} vs {want}", parts.objective);
            assert!((parts.ce_sum - -(p[0].ln() + p[1].ln())).abs() < 1e-5);
            for pos in 0..2 {
                let s = host_softmax(&z[pos * 4..pos * 4 + 4]);
                for k in 0..4 {
                    let onehot = (k == t.ids[pos] as usize) as u8 as f64;
                    let want = w[pos] * (s[k] - onehot) / n;
                    assert!((g[pos * 4 + k] as f64 - want).abs() < 1e-6, "iwsft pos {pos} k {k}: {} vs {want}", g[pos * 4 + k]);
                }
            }
        }
        // The reference is the model itself: every weight is 1 and iwsft is sft.
        let same = Targets { reference: Some(vec![p[0].ln() as f32, p[1].ln() as f32]), ..t.clone() };
        let (iw, g_iw, _) = run(&z, &identity(4), 4, &same, LossKind::Iwsft.into(), n, 2);
        let (sft, g_sft, _) = run(&z, &identity(4), 4, &t, LossKind::Sft.into(), n, 2);
        assert!((iw.objective - sft.objective).abs() < 1e-6);
        close(&g_iw, &g_sft, 1e-6, "iwsft = sft");
    }

    /// Chunked, trained-positions-only: the value and both gradients equal the whole-logits
    /// computation for every objective, whatever the chunk (one position, a ragged split, all).
    #[test]
    fn chunks_give_the_full_computation_for_every_objective() {
        let (n_pos, d, v) = (7, 5, 11);
        let mut rng = schemas::rng::SplitMix64::new(7);
        let mut draw = |k: usize, scale: f32| -> Vec<f32> {
            (0..k).map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale).collect()
        };
        let (h, w) = (draw(n_pos * d, 4.0), draw(v * d, 2.0));
        let reference: Vec<f32> = draw(n_pos, 3.0).iter().map(|x| x - 2.5).collect();
        let t = Targets { index: (0..n_pos as i64).collect(), ids: vec![3, 0, 10, 3, 7, 1, 5], reference: Some(reference) };
        for kind in [LossKind::Sft, LossKind::Dft, LossKind::Iwsft] {
            let (value, gh_full, gw_full) = full(&h, &w, d, &t, kind.into(), 9.0);
            for chunk in [1, 3, 7, 100] {
                let (parts, gh, gw) = run(&h, &w, d, &t, kind.into(), 9.0, chunk);
                assert!(
                    (parts.objective - value).abs() < 1e-6 * (1.0 + value.abs()),
                    "{kind:?} chunk {chunk}: {} vs {value}",
                    parts.objective
                );
                close(&gh, &gh_full, 1e-5, &format!("{kind:?} chunk {chunk} dh"));
                close(&gw, &gw_full, 1e-5, &format!("{kind:?} chunk {chunk} dW"));
            }
        }
    }

    #[test]
    fn iwsft_without_reference_is_an_error() {
        let (z, t) = two_positions();
        let (h, w) = (leaf(z, [2, 4]), leaf(identity(4), [4, 4]));
        let err = objective(h, &w, &t, LossKind::Iwsft.into(), 1.0, 4).err().unwrap();
        assert!(err.to_string().contains("trainer score"), "{err}");
    }

    #[test]
    fn log_probability_is_stable_for_extreme_logits() {
        // softmax would round the target's probability to 0 in f32, and log(0) = -inf.
        let t = Targets { index: vec![0], ids: vec![1], reference: None };
        let (parts, g, _) = run(&[1000.0, -1000.0], &identity(2), 2, &t, LossKind::Sft.into(), 1.0, 1);
        assert!((parts.ce_sum - 2000.0).abs() < 1e-2, "{}", parts.ce_sum);
        assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
    }
}
