//! One decoder-only transformer for Llama, SmolLM2, Qwen2/Qwen2.5 and Qwen3: RMSNorm, rotary
//! embeddings, grouped-query attention, SwiGLU MLP, optional q/k/v bias, optional RMSNorm of each
//! query and key head (Qwen3), tied or untied output.
//!
//! Weights are plain tensors in `model_files::params::Params`, named by Hugging Face's names and
//! in its layout (`[out, in]` matrices), so loading and exporting are name-for-name copies. Every
//! parameter is held as a rank-2 tensor (norm weights and biases as `[1, n]`) so one map over
//! named parameters serves loading, export, the optimizer and moving between backends.
//!
//! Packed rows: attention is causal within each packed example and never crosses examples. Rather
//! than masking a `T x T` score matrix, each segment's attention is computed on its own slice,
//! which is block-diagonal by construction and needs `sum(len_i^2)` instead of `T^2` memory.

use crate::dropout::LoraDropout;
use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{activation, Int, Tensor, TensorData};
use model_files::checkpoint::{Checkpoint, HostTensor};
use model_files::config::LlamaConfig;
use model_files::params::{Adapter, Params};
use schemas::train::{Lora, LoraTarget};
use std::sync::Arc;

/// One transformer block's parameters (norm weights and biases as `[1, n]`).
pub type Block<B> = model_files::params::Block<Tensor<B, 2>>;

#[derive(Clone, Debug)]
pub struct Llama<B: Backend> {
    pub config: LlamaConfig,
    /// Every weight, named by [`Params::map`], with the LoRA adapters when `lora` is set.
    pub params: Params<Tensor<B, 2>>,
    /// The adapters' settings: each adapted projection adds `scale · B A`, with DoRA then scaled
    /// row by row (see `Llama::project`).
    pub lora: Option<Lora>,
    /// LoRA dropout in a training forward pass ([`Llama::with_dropout`]); None everywhere else.
    pub dropout: Option<LoraDropout>,
    rope: Rope<B>,
}

/// Precomputed rotary tables, `[max_positions, head_dim]`, in Hugging Face's `rotate_half`
/// layout (the frequencies repeated over both halves). The host copy is shared so that moving
/// the model between backends (every optimizer step does) copies the tables instead of
/// recomputing a few hundred thousand sines and cosines.
#[derive(Clone, Debug)]
struct Rope<B: Backend> {
    host: Arc<(Vec<f32>, Vec<f32>)>,
    head_dim: usize,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    /// `half`: the `head_dim / 2` inverse frequencies (already scaled, see `model_files::rope`).
    fn new(half: &[f64], max_positions: usize, device: &B::Device) -> Self {
        let head_dim = 2 * half.len();
        let inv_freq: Vec<f64> = half.iter().chain(half).copied().collect();
        let mut cos = Vec::with_capacity(max_positions * head_dim);
        let mut sin = Vec::with_capacity(max_positions * head_dim);
        for p in 0..max_positions {
            for f in &inv_freq {
                let angle = p as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Self::from_host(Arc::new((cos, sin)), head_dim, device)
    }

    fn from_host(host: Arc<(Vec<f32>, Vec<f32>)>, head_dim: usize, device: &B::Device) -> Self {
        let shape = [host.0.len() / head_dim, head_dim];
        Rope {
            cos: Tensor::from_data(TensorData::new(host.0.clone(), shape), device),
            sin: Tensor::from_data(TensorData::new(host.1.clone(), shape), device),
            host,
            head_dim,
        }
    }

    fn to_backend<B2: Backend>(&self, device: &B2::Device) -> Rope<B2> {
        Rope::from_host(self.host.clone(), self.head_dim, device)
    }

    /// The cos and sin at `positions` `[batch, seq]`, repeated for `heads` heads:
    /// `[batch, seq, heads, head_dim]`, the layout of a projection before its heads are moved
    /// ahead of the positions. With operands in the same layout the products in [`rotate`] run
    /// over memory in order; broadcast over the heads, or on the swapped view, Burn's CPU backend
    /// walks them element by element (7% of a training step, measured).
    fn at(&self, positions: &Tensor<B, 2, Int>, heads: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t] = positions.dims();
        let flat = positions.clone().reshape([b * t]);
        let per_head = |table: &Tensor<B, 2>| {
            let rows = table.clone().select(0, flat.clone()).reshape([b, t, 1, self.head_dim]);
            Tensor::cat(vec![rows; heads], 2)
        };
        (per_head(&self.cos), per_head(&self.sin))
    }
}

/// The rotary cos and sin of one forward pass, for queries and for keys (see `Rope::at`):
/// computed once and shared by every block, so a training step keeps one copy for its backward
/// pass rather than one per block.
#[derive(Clone, Debug)]
pub struct Rotary<B: Backend> {
    queries: (Tensor<B, 4>, Tensor<B, 4>),
    keys: (Tensor<B, 4>, Tensor<B, 4>),
}

/// `x` `[batch, seq, heads, head_dim]` rotated by `(cos, sin)` of the same shape.
fn rotate<B: Backend>(x: Tensor<B, 4>, (cos, sin): &(Tensor<B, 4>, Tensor<B, 4>)) -> Tensor<B, 4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.clone().narrow(3, d / 2, d / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// `x @ w^T + b` for a weight in Hugging Face `[out, in]` layout.
pub(crate) fn linear<B: Backend>(x: Tensor<B, 3>, w: &Tensor<B, 2>, bias: Option<&Tensor<B, 2>>) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    let out = w.dims()[0];
    let y = x.reshape([b * t, d]).matmul(w.clone().transpose());
    let y = match bias {
        Some(bias) => y + bias.clone(),
        None => y,
    };
    y.reshape([b, t, out])
}

/// RMSNorm over the last dimension of `x`, with `weight` `[1, last]`: over the hidden size of
/// `[batch, seq, hidden]`, or over each head of `[batch, seq, heads, head_dim]` (Qwen3's q/k norm).
pub(crate) fn rms_norm<B: Backend, const D: usize>(x: Tensor<B, D>, weight: &Tensor<B, 2>, eps: f64) -> Tensor<B, D> {
    let rms = x.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt();
    x / rms * weight.clone().unsqueeze::<D>()
}

impl<B: Backend> Llama<B> {
    /// Build from a checkpoint (every expected tensor must be there, with its shape).
    pub fn from_checkpoint(ckpt: &Checkpoint, device: &B::Device) -> anyhow::Result<Self> {
        ckpt.validate()?;
        let cfg = ckpt.config.clone();
        if !cfg.head_dim().is_multiple_of(2) {
            bail!("head_dim {} is odd: rotary embeddings need an even head dimension", cfg.head_dim());
        }
        let params = Params::shapes(&cfg).map(|name, _| host_to_tensor(&ckpt.tensors[&name.hf], device));
        let rope = Rope::new(&cfg.rope_inv_freq()?, cfg.max_position_embeddings, device);
        Ok(Llama { rope, params, config: cfg, lora: None, dropout: None })
    }

    /// Load a model file (GGUF, or a Hugging Face folder / safetensors file) onto `device`.
    pub fn load(path: &std::path::Path, device: &B::Device) -> anyhow::Result<Self> {
        let ckpt = model_files::checkpoint::load(path).with_context(|| format!("loading model {}", path.display()))?;
        Self::from_checkpoint(&ckpt, device)
    }

    /// A snapshot tokenized with a vocabulary of `vocab_size` ids can be fed to this model.
    pub fn check_vocab(&self, vocab_size: usize) -> anyhow::Result<()> {
        if self.config.vocab_size < vocab_size {
            bail!("model vocab {} is smaller than the snapshot tokenizer's {vocab_size}", self.config.vocab_size);
        }
        Ok(())
    }

    /// Examples of up to `longest_example` tokens fit the rotary tables of this model, which are
    /// looked up by position (positions restart with each packed example, so a row may be longer
    /// than the context). Past them Burn's CPU backend stops inside the table lookup, and a GPU
    /// reads out of bounds.
    pub fn check_context(&self, longest_example: usize) -> anyhow::Result<()> {
        let context = self.config.max_position_embeddings;
        if longest_example > context {
            bail!("an example of {longest_example} tokens is longer than the model's context of {context} (max_position_embeddings)");
        }
        Ok(())
    }

    /// Every parameter with its Hugging Face name, in [`Params::map`] order.
    pub fn named_params(&self) -> Vec<(String, &Tensor<B, 2>)> {
        self.params.as_ref().into_named().into_iter().map(|(n, t)| (n.hf, t)).collect()
    }

    /// Rebuild the model with every parameter passed through `f` (by Hugging Face name, in
    /// [`Params::map`] order), possibly onto another backend: used to attach gradients, apply
    /// updates and detach for inference.
    pub fn map_params<B2: Backend>(self, device: &B2::Device, mut f: impl FnMut(&str, Tensor<B, 2>) -> Tensor<B2, 2>) -> Llama<B2> {
        Llama {
            rope: self.rope.to_backend::<B2>(device),
            config: self.config,
            lora: self.lora,
            dropout: self.dropout,
            params: self.params.map(|n, t| f(&n.hf, t)),
        }
    }

    /// The weights as a Hugging Face checkpoint (norms and biases back to rank 1), with any LoRA
    /// adapters merged into their projections (`W + scale · B A`, with DoRA each row then scaled
    /// by its factor, as PEFT's `merge_and_unload`).
    pub fn to_checkpoint(&self) -> Checkpoint {
        let shapes = Params::shapes(&self.config).into_named();
        let tensors = self
            .merged_params()
            .into_named()
            .into_iter()
            .zip(shapes)
            .map(|((name, t), (_, shape))| {
                let data: Vec<f32> = t.into_data().convert::<f32>().to_vec().expect("f32 data");
                (name.hf, HostTensor { shape, data })
            })
            .collect();
        Checkpoint { config: self.config.clone(), tensors }
    }

    /// The parameters with each LoRA adapter merged into its projection.
    fn merged_params(&self) -> Params<Tensor<B, 2>> {
        let mut params = self.params.clone();
        if let Some(lora) = &self.lora {
            for block in &mut params.layers {
                for (target, ad) in std::mem::take(&mut block.lora) {
                    // Detached: a save records no autodiff graph over a copy of the weights.
                    let w = block.weight_mut(target);
                    let adapted = adapted_weight(w, &ad, lora.scale());
                    *w = match &ad.magnitude {
                        Some(m) => adapted.clone() * dora_factor(adapted, m).detach().transpose(),
                        None => adapted,
                    };
                }
            }
        }
        params
    }

    /// The model with LoRA adapters on `lora.targets` of every block, their tensors taken from
    /// `adapters` by Hugging Face name as [`Params::map`] names them
    /// (`model.layers.0.self_attn.q_proj.lora_A.weight`). Every adapter must be there with its
    /// shape, and every tensor of `adapters` must be one of them.
    pub fn with_lora(self, lora: &Lora, adapters: &std::collections::BTreeMap<String, HostTensor>) -> anyhow::Result<Self> {
        if self.lora.is_some() {
            bail!("the model has LoRA adapters already");
        }
        lora.validate()?;
        let device = self.params.embed_tokens.device();
        let shapes = Params::shapes(&self.config).with_lora(lora)?;
        let mut base: std::collections::BTreeMap<String, Tensor<B, 2>> =
            self.params.into_named().into_iter().map(|(n, t)| (n.hf, t)).collect();
        let mut problems = Vec::new();
        let params = shapes.map(|name, shape| {
            if let Some(t) = base.remove(&name.hf) {
                return t;
            }
            match adapters.get(&name.hf) {
                Some(t) if t.shape == shape => host_to_tensor(t, &device),
                Some(t) => {
                    problems.push(format!("`{}` has shape {:?}, expected {shape:?}", name.hf, t.shape));
                    Tensor::zeros([1, 1], &device)
                }
                None => {
                    problems.push(format!("`{}` is missing", name.hf));
                    Tensor::zeros([1, 1], &device)
                }
            }
        });
        let expected: std::collections::BTreeSet<String> = params.as_ref().into_named().into_iter().map(|(n, _)| n.hf).collect();
        problems.extend(
            adapters.keys().filter(|k| !expected.contains(*k)).map(|k| format!("`{k}` adapts nothing in this model ({})", lora.describe())),
        );
        if !problems.is_empty() {
            bail!("LoRA adapters ({}): {}", lora.describe(), problems.join("; "));
        }
        Ok(Llama { params, lora: Some(lora.clone()), ..self })
    }

    /// The LoRA adapters' tensors by Hugging Face name, in their Hugging Face shapes (a DoRA
    /// magnitude `[out]`, as PEFT saves it); empty without LoRA.
    pub fn adapters(&self) -> std::collections::BTreeMap<String, HostTensor> {
        let Some(lora) = &self.lora else {
            return Default::default();
        };
        let shapes = Params::shapes(&self.config).with_lora(lora).expect("checked when the adapters were added").into_named();
        self.params
            .as_ref()
            .into_named()
            .into_iter()
            .zip(shapes)
            .filter(|((n, _), _)| model_files::params::is_adapter(&n.hf))
            .map(|((n, t), (_, shape))| {
                (n.hf, HostTensor { shape, data: t.clone().into_data().convert::<f32>().to_vec().expect("f32 data") })
            })
            .collect()
    }

    /// DoRA's starting magnitudes for `lora`'s targets, by Hugging Face name: the row norms of
    /// each adapted projection, so that with `B` at zero the adapted model is this one (PEFT
    /// starts `lora_magnitude_vector` the same way).
    pub fn initial_magnitudes(&self, lora: &Lora) -> std::collections::BTreeMap<String, HostTensor> {
        let mut named: Params<Option<HostTensor>> = self.params.as_ref().map(|_, _| None);
        for (block, l) in named.layers.iter_mut().zip(&self.params.layers) {
            for &target in &lora.targets {
                let norm = l.weight(target).clone().detach().square().sum_dim(1).sqrt();
                let data: Vec<f32> = norm.into_data().convert::<f32>().to_vec().expect("f32 data");
                let magnitude = Some(Some(HostTensor { shape: vec![data.len()], data }));
                block.lora.insert(target, Adapter { a: None, b: None, magnitude });
            }
        }
        named.into_named().into_iter().filter_map(|(n, t)| Some((n.hf, t?))).collect()
    }

    /// The model whose forward passes drop the inputs of its adapters' low-rank paths as
    /// `dropout` draws (a training step's; see [`LoraDropout`]), or none.
    pub fn with_dropout(self, dropout: Option<LoraDropout>) -> Self {
        Llama { dropout, ..self }
    }

    /// Whether training updates parameter `name`: with LoRA only the adapters, else every one.
    pub fn trains(&self, name: &str) -> bool {
        trains(self.lora.is_some(), name)
    }

    /// The model with its trained parameters ([`Llama::trains`]) marked to track gradients, the
    /// others as they are.
    pub fn with_trainable_leaves(self) -> Self {
        let (lora, device) = (self.lora.is_some(), self.params.embed_tokens.device());
        self.map_params(&device, |name, p| if trains(lora, name) { p.require_grad() } else { p })
    }

    /// The parameters training updates ([`Llama::trains`]), in [`Params::map`] order.
    pub fn trainable_params(&self) -> Vec<(String, &Tensor<B, 2>)> {
        self.named_params().into_iter().filter(|(n, _)| self.trains(n)).collect()
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]` at `positions` `[batch, seq]`.
    /// `segments[b]` lists the `(start, len)` runs of row `b` (see `schemas::snapshot::segment_runs`); attention
    /// is causal within each run and zero across runs.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, positions: Tensor<B, 2, Int>, segments: &[Vec<(usize, usize)>]) -> Tensor<B, 3> {
        let h = self.hidden(input_ids, positions, segments);
        linear(h, self.head(), None)
    }

    /// Final hidden states (after the last norm), `[batch, seq, hidden]`.
    pub fn hidden(&self, input_ids: Tensor<B, 2, Int>, positions: Tensor<B, 2, Int>, segments: &[Vec<(usize, usize)>]) -> Tensor<B, 3> {
        assert_eq!(segments.len(), input_ids.dims()[0], "one segment list per row");
        let rotary = self.rotary(&positions);
        let mut x = self.embed(input_ids);
        for layer in 0..self.params.layers.len() {
            x = self.block(layer, x, &rotary, segments);
        }
        self.final_norm(x)
    }

    /// The token embeddings of `input_ids` `[batch, seq]`: the residual stream entering block 0.
    pub fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = input_ids.dims();
        self.params.embed_tokens.clone().select(0, input_ids.reshape([b * t])).reshape([b, t, self.config.hidden_size])
    }

    /// The norm after the last block.
    pub fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        rms_norm(x, &self.params.norm, self.config.rms_norm_eps)
    }

    /// The output projection `[vocab, hidden]`: `lm_head`, or the token embeddings when tied.
    pub fn head(&self) -> &Tensor<B, 2> {
        self.params.lm_head.as_ref().unwrap_or(&self.params.embed_tokens)
    }

    /// The rotary cos and sin at `positions` `[batch, seq]`, for every block of one forward pass.
    pub fn rotary(&self, positions: &Tensor<B, 2, Int>) -> Rotary<B> {
        let (nh, nkv) = (self.config.num_attention_heads, self.config.num_key_value_heads);
        let queries = self.rope.at(positions, nh);
        let keys = if nkv == nh { queries.clone() } else { self.rope.at(positions, nkv) };
        Rotary { queries, keys }
    }

    /// Block `layer` (of `params.layers`) on the residual stream `x` `[batch, seq, hidden]`, at
    /// the positions `rotary` was made for.
    pub fn block(&self, layer: usize, x: Tensor<B, 3>, rotary: &Rotary<B>, segments: &[Vec<(usize, usize)>]) -> Tensor<B, 3> {
        let h = rms_norm(x.clone(), &self.params.layers[layer].input_layernorm, self.config.rms_norm_eps);
        let x = x + self.attention(layer, h, rotary, segments);
        self.mlp(layer, x)
    }

    /// The second half of block `layer`: norm, SwiGLU MLP, residual.
    pub(crate) fn mlp(&self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = rms_norm(x.clone(), &self.params.layers[layer].post_attention_layernorm, self.config.rms_norm_eps);
        let gate = activation::silu(self.project(layer, LoraTarget::GateProj, h.clone()));
        let up = self.project(layer, LoraTarget::UpProj, h);
        x + self.project(layer, LoraTarget::DownProj, gate * up)
    }

    /// Queries, keys and values `[batch, heads, seq, head_dim]` of normed hidden states `h`, with
    /// rotary embeddings applied to queries and keys.
    pub(crate) fn qkv(&self, layer: usize, h: Tensor<B, 3>, rotary: &Rotary<B>) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let l = &self.params.layers[layer];
        let [b, t, _] = h.dims();
        let (nh, nkv, hd) = (self.config.num_attention_heads, self.config.num_key_value_heads, self.config.head_dim());
        let split = |x: Tensor<B, 3>, n: usize| x.reshape([b, t, n, hd]);
        // Qwen3 norms each head before the rotation.
        let norm = |x: Tensor<B, 4>, w: Option<&Tensor<B, 2>>| match w {
            Some(w) => rms_norm(x, w, self.config.rms_norm_eps),
            None => x,
        };
        let heads = |x: Tensor<B, 4>| x.swap_dims(1, 2);
        let q = norm(split(self.project(layer, LoraTarget::QProj, h.clone()), nh), l.q_norm.as_ref());
        let k = norm(split(self.project(layer, LoraTarget::KProj, h.clone()), nkv), l.k_norm.as_ref());
        let q = heads(rotate(q, &rotary.queries));
        let k = heads(rotate(k, &rotary.keys));
        let v = heads(split(self.project(layer, LoraTarget::VProj, h), nkv));
        (q, k, v)
    }

    fn attention(&self, layer: usize, h: Tensor<B, 3>, rotary: &Rotary<B>, segments: &[Vec<(usize, usize)>]) -> Tensor<B, 3> {
        let [b, t, _] = h.dims();
        let (nh, nkv, hd) = (self.config.num_attention_heads, self.config.num_key_value_heads, self.config.head_dim());
        let (q, k, v) = self.qkv(layer, h, rotary);
        // Grouped-query attention: each key/value head serves nh / nkv query heads.
        let group = nh / nkv;
        let expand =
            |x: Tensor<B, 4>| if group == 1 { x } else { x.reshape([b, nkv, 1, t, hd]).repeat_dim(2, group).reshape([b, nh, t, hd]) };
        let (k, v) = (expand(k), expand(v));
        let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        let mut rows = Vec::with_capacity(b);
        for (row, runs) in segments.iter().enumerate() {
            let pick = |x: &Tensor<B, 4>, s: usize, n: usize| x.clone().narrow(0, row, 1).narrow(2, s, n);
            let parts: Vec<Tensor<B, 4>> =
                runs.iter().map(|&(s, n)| attention(pick(&q, s, n), pick(&k, s, n), pick(&v, s, n), None, None, options)).collect();
            rows.push(if parts.len() == 1 { parts.into_iter().next().expect("one part") } else { Tensor::cat(parts, 2) });
        }
        let out = if rows.len() == 1 { rows.pop().expect("one row") } else { Tensor::cat(rows, 0) };
        let out = out.swap_dims(1, 2).reshape([b, t, nh * hd]);
        self.project(layer, LoraTarget::OProj, out)
    }

    /// Projection `target` of block `layer` (with its bias, if it has one), with its LoRA adapter
    /// if it has one: `x Wᵀ + b + scale · (x̃ Aᵀ) Bᵀ`, PEFT's order (the low-rank product is not
    /// formed for it), `x̃` being `x` with LoRA dropout applied in training and `x` otherwise. With
    /// DoRA, PEFT's `x Wᵀ + b + (factor - 1) ⊙ x̃ Wᵀ + factor ⊙ scale · (x̃ Aᵀ) Bᵀ` (see
    /// [`dora_factor`]), computed as `(x Wᵀ + scale · (x Aᵀ) Bᵀ) ⊙ factor + b` without dropout.
    pub(crate) fn project(&self, layer: usize, target: LoraTarget, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let l = &self.params.layers[layer];
        let (w, bias) = (l.weight(target), l.bias(target));
        let (Some(ad), Some(lora)) = (l.lora.get(&target), &self.lora) else {
            return linear(x, w, bias);
        };
        let dropped = self.dropout.as_ref().map(|d| d.apply(layer, target, x.clone()));
        let low = linear(linear(dropped.clone().unwrap_or_else(|| x.clone()), &ad.a, None), &ad.b, None).mul_scalar(lora.scale());
        let Some(m) = &ad.magnitude else {
            return linear(x, w, bias) + low;
        };
        let factor = dora_factor(adapted_weight(w, ad, lora.scale()), m).unsqueeze::<3>();
        match dropped {
            Some(dropped) => linear(x, w, bias) + linear(dropped, w, None) * factor.clone().sub_scalar(1.0) + low * factor,
            None => {
                let y = (linear(x, w, None) + low) * factor;
                match bias {
                    Some(bias) => y + bias.clone().unsqueeze::<3>(),
                    None => y,
                }
            }
        }
    }
}

/// DoRA's factor of each output row, `m / ||W + scale · B A||` as `[1, out]`, from the detached
/// adapted weight ([`adapted_weight`]): DoRA's section 4.3 (and PEFT) hold the norm constant in
/// the backward pass, so `m` gets its gradient through the factor and `A`, `B` theirs through the
/// low-rank path only.
fn dora_factor<B: Backend>(adapted: Tensor<B, 2>, m: &Tensor<B, 2>) -> Tensor<B, 2> {
    m.clone() / adapted.square().sum_dim(1).sqrt().transpose()
}

/// `W + scale · B A`, detached: the adapted weight of projection `w` (`[out, in]`).
fn adapted_weight<B: Backend>(w: &Tensor<B, 2>, ad: &Adapter<Tensor<B, 2>>, scale: f64) -> Tensor<B, 2> {
    w.clone().detach() + ad.b.clone().detach().matmul(ad.a.clone().detach()).mul_scalar(scale)
}

fn trains(lora: bool, name: &str) -> bool {
    !lora || model_files::params::is_adapter(name)
}

fn host_to_tensor<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 2> {
    let shape = match t.shape.as_slice() {
        [n] => [1, *n],
        [r, c] => [*r, *c],
        other => panic!("parameters are rank 1 or 2, got shape {other:?}"),
    };
    Tensor::from_data(TensorData::new(t.data.clone(), shape), device)
}

/// Token ids as a `[1, len]` tensor with positions `0..len`, for unpacked inference.
pub fn single_sequence<B: Backend>(ids: &[u32], device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let n = ids.len();
    let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let pos: Vec<i64> = (0..n as i64).collect();
    (Tensor::from_data(TensorData::new(ids, [1, n]), device), Tensor::from_data(TensorData::new(pos, [1, n]), device))
}
