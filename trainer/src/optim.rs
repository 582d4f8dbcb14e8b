//! AdamW, the learning-rate schedule and global gradient clipping, over named parameters.
//!
//! Written out rather than taken from Burn: Burn's AdamW applies one weight decay to every
//! parameter and its gradient clipping is per tensor, while we need no decay on norms and biases
//! and one clip over the global norm of all gradients (as PyTorch's `clip_grad_norm_`).

use crate::in_place::{self, Arithmetic, Buffer, CHUNK};
use anyhow::Context;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use model_files::checkpoint::HostTensor;
use rayon::prelude::*;
use schemas::train::LrSchedule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// Norm weights and biases are not decayed; everything else (matrices, embeddings) is.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("norm"))
}

pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    /// Optimizer steps taken so far (bias correction uses `step` after increment).
    pub step: u64,
    /// In place on Burn's CPU backend, tensor ops elsewhere (the same bits either way).
    pub arithmetic: Arithmetic,
    m: BTreeMap<String, Tensor<B, 2>>,
    v: BTreeMap<String, Tensor<B, 2>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW { config, step: 0, arithmetic: Arithmetic::for_backend::<B>(), m: BTreeMap::new(), v: BTreeMap::new() }
    }

    /// Start an optimizer step: every `update` until the next call uses this step's bias
    /// correction.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// The updated parameter: decoupled weight decay (`p -= lr·wd·p`) then the Adam step.
    pub fn update(&mut self, name: &str, param: Tensor<B, 2>, grad: Tensor<B, 2>, lr: f64) -> Tensor<B, 2> {
        self.update_all(vec![(name.to_string(), param, grad)], lr, 1).pop().expect("one parameter in, one out")
    }

    /// Every parameter's [`update`](Self::update), over `threads` cores: in place, each
    /// parameter split by chunks; or as tensor ops, `threads` parameters at a time. Each
    /// element's arithmetic is the same either way, and so is the result.
    pub fn update_all(&mut self, params: Vec<(String, Tensor<B, 2>, Tensor<B, 2>)>, lr: f64, threads: usize) -> Vec<Tensor<B, 2>> {
        let (c, t) = (self.config, self.step.max(1) as i32);
        let work: Vec<_> = params
            .into_iter()
            .map(|(name, p, g)| {
                let (m, v) = (self.m.remove(&name), self.v.remove(&name));
                (name, p, g, m, v)
            })
            .collect();
        let done = match self.arithmetic {
            Arithmetic::TensorOps => map_threads(work, threads, |(name, p, g, m, v)| {
                let (p, m, v) = adamw(AdamWStep::new(c, t, decays(&name), lr, m.is_none()), p, g, m, v);
                (name, p, m, v)
            }),
            Arithmetic::InPlace => work
                .into_iter()
                .map(|(name, p, g, m, v)| {
                    let (p, m, v) = adamw_in_place(AdamWStep::new(c, t, decays(&name), lr, m.is_none()), p, g, m, v, threads);
                    (name, p, m, v)
                })
                .collect(),
        };
        done.into_iter()
            .map(|(name, p, m, v)| {
                self.m.insert(name.clone(), m);
                self.v.insert(name, v);
                p
            })
            .collect()
    }

    /// Moment estimates as host tensors named `m.<param>` and `v.<param>`, for checkpoints.
    pub fn state_to_host(&self) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        for (prefix, map) in [("m", &self.m), ("v", &self.v)] {
            for (name, t) in map {
                let [r, c] = t.dims();
                let data = t.clone().into_data().convert::<f32>().to_vec::<f32>().expect("f32");
                out.insert(format!("{prefix}.{name}"), HostTensor { shape: vec![r, c], data });
            }
        }
        out
    }

    pub fn load_state(&mut self, step: u64, state: &BTreeMap<String, HostTensor>, device: &B::Device) -> anyhow::Result<()> {
        self.step = step;
        self.m.clear();
        self.v.clear();
        for (key, t) in state {
            let (prefix, name) =
                key.split_once('.').ok_or_else(|| anyhow::anyhow!("optimizer state `{key}`: expected m.<name> or v.<name>"))?;
            anyhow::ensure!(t.shape.len() == 2, "optimizer state `{key}`: expected a matrix, got shape {:?}", t.shape);
            let tensor = Tensor::from_data(TensorData::new(t.data.clone(), [t.shape[0], t.shape[1]]), device);
            match prefix {
                "m" => self.m.insert(name.to_string(), tensor),
                "v" => self.v.insert(name.to_string(), tensor),
                _ => anyhow::bail!("optimizer state `{key}`: expected m.<name> or v.<name>"),
            };
        }
        // A parameter's first update starts both moments from zero, so they come in pairs.
        if let Some(name) = self.m.keys().find(|n| !self.v.contains_key(*n)).or_else(|| self.v.keys().find(|n| !self.m.contains_key(*n))) {
            anyhow::bail!("optimizer state: `m.{name}` and `v.{name}` must both be there or both be missing");
        }
        Ok(())
    }

    /// After a resume: the moments are those of `params` (name and shape). Every parameter is
    /// updated at every step, so after step 1 each has its moments; one missing would silently
    /// restart from zero.
    pub fn check_moments(&self, params: &[(String, [usize; 2])]) -> anyhow::Result<()> {
        if self.step == 0 {
            return Ok(());
        }
        for (name, shape) in params {
            let m = self.m.get(name).with_context(|| format!("optimizer state has no moments for parameter `{name}`"))?;
            anyhow::ensure!(m.dims() == *shape, "optimizer state `m.{name}` has shape {:?}, the parameter {shape:?}", m.dims());
        }
        if let Some(extra) = self.m.keys().find(|n| !params.iter().any(|(p, _)| p == *n)) {
            anyhow::bail!("optimizer state has moments for `{extra}`, which the model does not have");
        }
        Ok(())
    }
}

/// One parameter's AdamW step as tensor ops: the new parameter and moments. Moments start at
/// zero (`None`).
fn adamw<B: Backend>(
    s: AdamWStep,
    param: Tensor<B, 2>,
    grad: Tensor<B, 2>,
    m: Option<Tensor<B, 2>>,
    v: Option<Tensor<B, 2>>,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let m = match m {
        Some(m) => m.mul_scalar(s.beta1) + grad.clone().mul_scalar(s.one_minus_beta1),
        None => grad.clone().mul_scalar(s.one_minus_beta1),
    };
    let v = match v {
        Some(v) => v.mul_scalar(s.beta2) + grad.square().mul_scalar(s.one_minus_beta2),
        None => grad.square().mul_scalar(s.one_minus_beta2),
    };
    let m_hat = m.clone().div_scalar(s.correction1);
    let v_hat = v.clone().div_scalar(s.correction2);
    let param = match s.decay {
        Some(decay) => param.clone() - param.mul_scalar(decay),
        None => param,
    };
    (param - (m_hat / v_hat.sqrt().add_scalar(s.eps)).mul_scalar(s.lr), m, v)
}

/// One AdamW step's scalars for one parameter, in f32 as both ways apply them.
#[derive(Clone, Copy)]
struct AdamWStep {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    correction1: f32,
    correction2: f32,
    /// `lr · weight_decay`, or `None` for parameters that are not decayed.
    decay: Option<f32>,
    eps: f32,
    lr: f32,
    /// The first step for this parameter: moments start from the gradient alone.
    fresh: bool,
}

impl AdamWStep {
    fn new(c: AdamWConfig, t: i32, decay: bool, lr: f64, fresh: bool) -> Self {
        AdamWStep {
            beta1: c.beta1 as f32,
            one_minus_beta1: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            correction1: (1.0 - c.beta1.powi(t)) as f32,
            correction2: (1.0 - c.beta2.powi(t)) as f32,
            decay: (decay && c.weight_decay != 0.0).then_some((lr * c.weight_decay) as f32),
            eps: c.eps as f32,
            lr: lr as f32,
            fresh,
        }
    }

    /// [`adamw`] on a chunk of one parameter: the same f32 operations in the same order.
    fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = if self.fresh { g * self.one_minus_beta1 } else { *m * self.beta1 + g * self.one_minus_beta1 };
            *v = if self.fresh { g * g * self.one_minus_beta2 } else { *v * self.beta2 + g * g * self.one_minus_beta2 };
            let (m_hat, v_hat) = (*m / self.correction1, *v / self.correction2);
            if let Some(decay) = self.decay {
                *p -= *p * decay;
            }
            *p -= m_hat / (v_hat.sqrt() + self.eps) * self.lr;
        }
    }
}

/// [`adamw`] in place on the buffers of the parameter and its moments, held in the gradient's
/// buffer order (see `in_place`), each parameter split by chunks over the cores.
fn adamw_in_place<B: Backend>(
    step: AdamWStep,
    param: Tensor<B, 2>,
    grad: Tensor<B, 2>,
    m: Option<Tensor<B, 2>>,
    v: Option<Tensor<B, 2>>,
    threads: usize,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let g = Buffer::new(grad);
    let moment = |t: Option<Tensor<B, 2>>| t.map_or_else(|| Buffer::zeros_like(&g), |t| Buffer::new(t).in_order_of(&g));
    let (mut p, mut m, mut v) = (Buffer::new(param).in_order_of(&g), moment(m), moment(v));
    let (ps, gs, ms, vs) = (p.values_mut(), g.values(), m.values_mut(), v.values_mut());
    assert!(gs.len() == ps.len() && ms.len() == ps.len() && vs.len() == ps.len(), "a parameter, its gradient and moments have one shape");
    if threads > 1 {
        ps.par_chunks_mut(CHUNK)
            .zip(gs.par_chunks(CHUNK))
            .zip(ms.par_chunks_mut(CHUNK))
            .zip(vs.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| step.apply(p, g, m, v));
    } else {
        step.apply(ps, gs, ms, vs);
    }
    (p.into_tensor(), m.into_tensor(), v.into_tensor())
}

/// `f` over `items`, in order, on up to `threads` threads (rayon's pool) when above 1.
fn map_threads<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Send + Sync) -> Vec<R> {
    if threads > 1 {
        items.into_par_iter().map(f).collect()
    } else {
        items.into_iter().map(f).collect()
    }
}

/// Linear warmup over `warmup` steps to `peak`, then `schedule` down to zero at `total` (or
/// the peak throughout, for `constant`). `step` counts from 0 (the first optimizer step uses
/// `lr_at(0, ..)`).
pub fn lr_at(step: u64, total: u64, warmup: u64, peak: f64, schedule: LrSchedule) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    peak * schedule.fraction(progress)
}

/// Global L2 norm of all gradients, and the gradients scaled so that norm is at most `max_norm`
/// (`max_norm <= 0` disables clipping). The norm is reported before clipping. `threads` as in
/// [`AdamW::update_all`]; in place on Burn's CPU backend (see `in_place`).
pub fn clip_global<B: Backend>(grads: Vec<(String, Tensor<B, 2>)>, max_norm: f64, threads: usize) -> (f64, Vec<(String, Tensor<B, 2>)>) {
    clip_global_with(grads, max_norm, threads, Arithmetic::for_backend::<B>())
}

/// [`clip_global`] with the arithmetic chosen. The squares are summed per parameter (in f32 by
/// Burn as tensor ops, in f64 by chunks in place), then over parameters in their order, so the
/// norm does not depend on thread timing; the two ways differ only in rounding.
pub fn clip_global_with<B: Backend>(
    grads: Vec<(String, Tensor<B, 2>)>,
    max_norm: f64,
    threads: usize,
    arithmetic: Arithmetic,
) -> (f64, Vec<(String, Tensor<B, 2>)>) {
    let (squares, grads): (Vec<f64>, Vec<(String, Tensor<B, 2>)>) = match arithmetic {
        Arithmetic::TensorOps => {
            // One read back for all parameters: on a GPU each read waits for the whole queue.
            let sums: Vec<Tensor<B, 1>> = grads.iter().map(|(_, g)| g.clone().square().sum()).collect();
            let squares =
                if sums.is_empty() { vec![] } else { Tensor::cat(sums, 0).into_data().convert::<f64>().to_vec::<f64>().expect("f64") };
            (squares, grads)
        }
        Arithmetic::InPlace => grads
            .into_iter()
            .map(|(name, g)| {
                let g = Buffer::new(g);
                (sum_of_squares(g.values(), threads), (name, g.into_tensor()))
            })
            .unzip(),
    };
    let norm = squares.iter().sum::<f64>().sqrt();
    if max_norm <= 0.0 || !norm.is_finite() || norm <= max_norm {
        return (norm, grads);
    }
    let scale = max_norm / (norm + 1e-6);
    let clipped = match arithmetic {
        Arithmetic::TensorOps => map_threads(grads, threads, |(n, g)| (n, g.mul_scalar(scale))),
        Arithmetic::InPlace => grads
            .into_iter()
            .map(|(n, g)| {
                // As `mul_scalar` does: the scale cast to f32, then one product per element.
                let s = scale as f32;
                let mut g = Buffer::new(g);
                in_place::for_chunks(g.values_mut(), threads, |x| x.iter_mut().for_each(|x| *x *= s));
                (n, g.into_tensor())
            })
            .collect(),
    };
    (norm, clipped)
}

/// Σ x² in f64, by chunks summed in chunk order.
fn sum_of_squares(x: &[f32], threads: usize) -> f64 {
    let chunk = |c: &[f32]| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
    let parts: Vec<f64> = if threads > 1 { x.par_chunks(CHUNK).map(chunk).collect() } else { x.chunks(CHUNK).map(chunk).collect() };
    parts.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn t(v: &[f32]) -> Tensor<Flex, 2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &Default::default())
    }

    fn host(x: Tensor<Flex, 2>) -> Vec<f32> {
        x.into_data().convert::<f32>().to_vec().unwrap()
    }

    #[test]
    fn adamw_matches_a_hand_computed_step() {
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01 };
        let mut opt = AdamW::<Flex>::new(cfg);
        opt.begin_step();
        let lr = 0.1;
        let p = opt.update("w", t(&[1.0, -2.0]), t(&[0.5, -0.25]), lr);
        // Step 1: m_hat = g, v_hat = g^2, so the Adam term is g/|g| = sign(g) (up to eps).
        let want = [1.0 - lr * 0.01 * 1.0 - lr * 1.0, -2.0 - lr * 0.01 * -2.0 + lr * 1.0];
        for (a, b) in host(p.clone()).iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Step 2, by hand.
        opt.begin_step();
        let p2 = opt.update("w", p.clone(), t(&[0.1, 0.1]), lr);
        let (g1, g2) = ([0.5f64, -0.25], [0.1f64, 0.1]);
        let p_host = host(p);
        for k in 0..2 {
            let m = 0.9 * 0.1 * g1[k] + 0.1 * g2[k];
            let v = 0.95 * 0.05 * g1[k] * g1[k] + 0.05 * g2[k] * g2[k];
            let m_hat = m / (1.0 - 0.9f64.powi(2));
            let v_hat = v / (1.0 - 0.95f64.powi(2));
            let pk = p_host[k] as f64;
            let want = pk - lr * 0.01 * pk - lr * m_hat / (v_hat.sqrt() + 1e-8);
            assert!((host(p2.clone())[k] as f64 - want).abs() < 1e-6);
        }
    }

    #[test]
    fn norms_and_biases_are_not_decayed() {
        assert!(decays("model.layers.0.self_attn.q_proj.weight"));
        assert!(decays("model.embed_tokens.weight"));
        assert!(!decays("model.layers.0.input_layernorm.weight"));
        assert!(!decays("model.norm.weight"));
        assert!(!decays("model.layers.0.self_attn.q_proj.bias"));
        assert!(!decays("model.layers.0.self_attn.q_norm.weight"), "Qwen3's per-head norms are norms");
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.5 };
        let mut opt = AdamW::<Flex>::new(cfg);
        opt.begin_step();
        let p = opt.update("model.norm.weight", t(&[2.0]), t(&[1.0]), 0.1);
        assert!((host(p)[0] - 1.9).abs() < 1e-6);
    }

    /// The parameters updated on two threads, twice (moments carried over), equal the same
    /// updates one by one, bit for bit, each under its own name.
    #[test]
    fn update_all_on_threads_equals_one_by_one() {
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
        let names = ["model.embed_tokens.weight", "model.norm.weight", "model.layers.0.self_attn.q_proj.bias", "lm_head.weight"];
        let value = |k: usize, s: f32| t(&[(k as f32 + 1.0) * s, -0.5 * s, 0.25 * k as f32]);
        let (mut one, mut all) = (AdamW::<Flex>::new(cfg), AdamW::<Flex>::new(cfg));
        let mut params: Vec<Tensor<Flex, 2>> = (0..names.len()).map(|k| value(k, 1.0)).collect();
        let mut by_one = params.clone();
        for step in 1..=2 {
            let grad = |k: usize| value(k, 0.3 * step as f32);
            one.begin_step();
            by_one = by_one.into_iter().enumerate().map(|(k, p)| one.update(names[k], p, grad(k), 0.01)).collect();
            all.begin_step();
            let work = params.into_iter().enumerate().map(|(k, p)| (names[k].to_string(), p, grad(k))).collect();
            params = all.update_all(work, 0.01, 2);
        }
        for (k, (a, b)) in params.into_iter().zip(by_one).enumerate() {
            assert_eq!(host(a), host(b), "{}", names[k]);
        }
        assert_eq!(one.state_to_host(), all.state_to_host());
    }

    /// A matrix over several chunks whose gradient arrives as a transposed view (as a linear
    /// weight's does), decayed or not, over three steps: in place equals the tensor ops bit for
    /// bit, parameters and moments, on one thread and on two.
    #[test]
    fn in_place_equals_tensor_ops_bit_for_bit() {
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
        let (rows, cols) = (CHUNK / 100 + 7, 3 * 100 + 1);
        let n = rows * cols;
        let matrix = |f: &dyn Fn(usize) -> f32| {
            Tensor::<Flex, 2>::from_data(TensorData::new((0..n).map(f).collect::<Vec<_>>(), [rows, cols]), &Default::default())
        };
        // The gradient held transposed: a [cols, rows] matrix in row order, viewed as [rows, cols].
        let grad = |step: usize| matrix(&|i| ((i * 7 + step * 13) as f32 * 0.013).sin() * 1e-3).transpose().into_data();
        let grad = |step: usize| Tensor::<Flex, 2>::from_data(grad(step), &Default::default()).transpose();
        for name in ["model.layers.0.mlp.up_proj.weight", "model.norm.weight"] {
            for threads in [1, 2] {
                let mut by = [Arithmetic::InPlace, Arithmetic::TensorOps].map(|arithmetic| {
                    let mut opt = AdamW::<Flex>::new(cfg);
                    opt.arithmetic = arithmetic;
                    (opt, matrix(&|i| (i as f32 * 0.37).cos()))
                });
                for step in 0..3 {
                    if step == 2 {
                        // As a resumed run: the in-place side's parameter and moments reloaded
                        // from host copies, in row order again, while the gradient is transposed.
                        let (opt, p) = &mut by[0];
                        let mut resumed = AdamW::<Flex>::new(cfg);
                        resumed.load_state(opt.step, &opt.state_to_host(), &Default::default()).unwrap();
                        *opt = resumed;
                        *p = Tensor::from_data(p.clone().into_data(), &Default::default());
                    }
                    for (opt, p) in by.iter_mut() {
                        opt.begin_step();
                        *p = opt.update_all(vec![(name.to_string(), p.clone(), grad(step))], 1e-2, threads).pop().unwrap();
                    }
                    let [(a_opt, a), (b_opt, b)] = &by;
                    assert_eq!(host(a.clone()), host(b.clone()), "{name}, step {step}, {threads} threads");
                    assert_eq!(a_opt.state_to_host(), b_opt.state_to_host(), "{name}, step {step}");
                }
            }
        }
    }

    /// The clip in place: the norm summed in f64 agrees with Burn's f32 sums to float rounding,
    /// and the clipped gradients with the tensor ops' to the same, for a gradient in row order and
    /// one held transposed (as a linear weight's comes).
    #[test]
    fn clip_in_place_agrees_with_tensor_ops() {
        let (rows, cols) = (CHUNK / 100 + 3, 3 * 100 + 1);
        let n = rows * cols;
        let g = |s: f32, shape: [usize; 2]| {
            Tensor::<Flex, 2>::from_data(
                TensorData::new((0..n).map(|i| (i as f32 * s).sin()).collect::<Vec<_>>(), shape),
                &Default::default(),
            )
        };
        let grads = || vec![("a".to_string(), g(0.1, [rows, cols])), ("b".to_string(), g(0.7, [cols, rows]).transpose())];
        let (norm_ops, ops) = clip_global_with(grads(), 1.0, 2, Arithmetic::TensorOps);
        let (norm, clipped) = clip_global_with(grads(), 1.0, 2, Arithmetic::InPlace);
        assert!(((norm - norm_ops) / norm_ops).abs() < 1e-6, "{norm} vs {norm_ops}");
        for ((_, a), (_, b)) in clipped.into_iter().zip(ops) {
            for (a, b) in host(a).iter().zip(host(b)) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn a_moment_without_its_pair_is_an_error() {
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 };
        let one = HostTensor { shape: vec![1, 1], data: vec![0.5] };
        let state: BTreeMap<String, HostTensor> =
            [("m.w".to_string(), one.clone()), ("m.u".to_string(), one.clone()), ("v.u".to_string(), one)].into();
        let err = AdamW::<Flex>::new(cfg).load_state(1, &state, &Default::default()).unwrap_err().to_string();
        assert!(err.contains("`m.w` and `v.w`"), "{err}");
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let cos = LrSchedule::Cosine;
        assert!((lr_at(0, 100, 10, 1.0, cos) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0, cos) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 10, 1.0, cos) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 100, 10, 1.0, cos) - 0.5).abs() < 1e-12);
        assert!(lr_at(100, 100, 10, 1.0, cos).abs() < 1e-12);
        // A quarter of the way: cos(pi/4) gives (1 + 0.7071) / 2 = 0.8536 of the peak; the
        // straight line 0.75; constant the peak. The warmup is the same for all three.
        assert!((lr_at(35, 110, 10, 2.0, cos) - (1.0 + 0.5f64.sqrt())).abs() < 1e-12);
        assert!((lr_at(35, 110, 10, 2.0, LrSchedule::Linear) - 1.5).abs() < 1e-12);
        assert!(lr_at(110, 110, 10, 2.0, LrSchedule::Linear).abs() < 1e-12);
        for step in [10, 32, 99, 100] {
            assert_eq!(lr_at(step, 100, 10, 2.0, LrSchedule::Constant), 2.0);
        }
        for s in [cos, LrSchedule::Linear, LrSchedule::Constant] {
            assert!((lr_at(4, 100, 10, 2.0, s) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn clipping_uses_the_global_norm() {
        // Norms 3 and 4 per tensor, 5 globally: each tensor alone is under 4.5, the whole is not.
        let grads = vec![("a".to_string(), t(&[3.0, 0.0])), ("b".to_string(), t(&[0.0, 4.0]))];
        let (norm, clipped) = clip_global(grads, 2.5, 2);
        assert!((norm - 5.0).abs() < 1e-9);
        let a = host(clipped[0].1.clone());
        let b = host(clipped[1].1.clone());
        assert!((a[0] - 1.5).abs() < 1e-5 && (b[1] - 2.0).abs() < 1e-5, "{a:?} {b:?}");
        let (_, untouched) = clip_global(vec![("a".to_string(), t(&[0.3]))], 1.0, 1);
        assert_eq!(host(untouched[0].1.clone()), [0.3]);
    }
}
