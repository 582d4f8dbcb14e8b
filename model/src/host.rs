//! The decoder on host memory, for generation on CPU: the same model as `decoder.rs`, laid out
//! for decoding instead of training.
//!
//! - Weights are stored once, at load, in the panels `matmul.rs` streams (a GGUF's Q4_1 and
//!   Q8_0 blocks kept as they are), with q/k/v and gate/up stacked into one matrix each, so a
//!   layer makes four weight passes.
//! - Each sequence owns its keys and values, preallocated for its prompt plus its token budget
//!   and written in place, instead of concatenated into a new tensor every step.
//! - One step runs any mix of sequences: a new sequence's whole prompt and a decoding
//!   sequence's one token share the same matmuls (what continuous batching in `generate.rs`
//!   needs), and only each sequence's last position goes through the output head.
//!
//! A row's arithmetic never depends on the other rows of the step (see `matmul.rs`), so a
//! sequence decodes to the same bits alone or in any batch. Burn keeps the training path and
//! the GPU; `tests/host.rs` checks this file against transformers, the reference greedy ids
//! and its own f32 load.

use crate::matmul::{matmul, Weight};
use anyhow::{bail, Context};
use model_files::checkpoint::{Checkpoint, HostTensor, QuantisedMatrix};
use model_files::config::LlamaConfig;
use model_files::gguf::GgmlType;
use model_files::params::Params;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// One transformer block, stacked for decoding.
#[derive(Clone, Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    /// q, k and v projections stacked: `[(heads + 2 kv_heads) · head_dim, hidden]`.
    qkv: Weight,
    qkv_bias: Option<Vec<f32>>,
    /// Qwen3's RMSNorm weights of each query and key head, `[head_dim]`.
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: Weight,
    o_bias: Option<Vec<f32>>,
    mlp_norm: Vec<f32>,
    /// gate and up projections stacked: `[2 · intermediate, hidden]`.
    gate_up: Weight,
    down: Weight,
}

#[derive(Clone, Debug)]
pub struct HostDecoder {
    pub config: LlamaConfig,
    /// `[vocab, hidden]`; also the output head when the embeddings are tied.
    embed: Weight,
    lm_head: Option<Weight>,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    /// Rotary tables `[max_positions, head_dim / 2]`, computed in f64 and rounded once, as
    /// `decoder.rs` does.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The keys and values of one sequence, `[layer][position][kv_heads · head_dim]`, after rotary
/// embedding.
#[derive(Clone, Debug)]
pub struct SeqCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl SeqCache {
    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl HostDecoder {
    /// Which kernels compute the logits on this CPU (recorded with samples and results).
    pub fn engine() -> &'static str {
        if crate::matmul::fused_kernels() {
            "host decoder, avx512 kernels"
        } else {
            "host decoder, portable kernels"
        }
    }

    /// From a checkpoint (every expected tensor must be there, with its shape), in f32.
    pub fn from_checkpoint(ckpt: &Checkpoint) -> anyhow::Result<Self> {
        Self::from_parts(ckpt, &BTreeMap::new())
    }

    /// Load a model file (GGUF, a Hugging Face folder or safetensors file, a rectify
    /// checkpoint). A GGUF's Q4_1 and Q8_0 matrices stay in their blocks, which gives the same
    /// bits as their f32 dequantisation (`matmul.rs`) from a fifth of the bytes.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let ckpt = model_files::checkpoint::load(path).with_context(|| format!("loading model {}", path.display()))?;
        let quantised = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            model_files::checkpoint::gguf_quantised_matrices(path, &[GgmlType::Q4_1, GgmlType::Q8_0])?
        } else {
            BTreeMap::new()
        };
        Self::from_parts(&ckpt, &quantised)
    }

    /// [`HostDecoder::load`] with every matrix in f32.
    pub fn load_f32(path: &Path) -> anyhow::Result<Self> {
        let ckpt = model_files::checkpoint::load(path).with_context(|| format!("loading model {}", path.display()))?;
        Self::from_checkpoint(&ckpt)
    }

    /// How the matrices are stored, e.g. `q4_1 x 210, q8_0 x 1`.
    pub fn storage(&self) -> String {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        for w in self.layers.iter().flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down]).chain([head]) {
            *kinds.entry(w.kind()).or_default() += 1;
        }
        kinds.iter().map(|(k, n)| format!("{k} x {n}")).collect::<Vec<_>>().join(", ")
    }

    /// From a checkpoint, with the matrices named in `quantised` kept in their blocks.
    fn from_parts(ckpt: &Checkpoint, quantised: &BTreeMap<String, QuantisedMatrix>) -> anyhow::Result<Self> {
        ckpt.validate()?;
        let cfg = ckpt.config.clone();
        if !cfg.head_dim().is_multiple_of(2) {
            bail!("head_dim {} is odd: rotary embeddings need an even head dimension", cfg.head_dim());
        }
        let p: Params<(&str, &HostTensor)> = Params::shapes(&cfg).map(|name, _| {
            let (name, t) = ckpt.tensors.get_key_value(&name.hf).expect("validated");
            (name.as_str(), t)
        });
        let matrix = |(name, t): (&str, &HostTensor)| {
            quantised.get(name).and_then(Weight::from_quantised).unwrap_or_else(|| Weight::new(t.shape[0], t.shape[1], t.data.clone()))
        };
        let vector = |(_, t): (&str, &HostTensor)| t.data.clone();
        let layers = p
            .layers
            .iter()
            .map(|l| {
                let qkv_bias = match (l.q_bias, l.k_bias, l.v_bias) {
                    (Some(q), Some(k), Some(v)) => Some([vector(q), vector(k), vector(v)].concat()),
                    (None, None, None) => None,
                    _ => panic!("q, k and v biases come together (checked by the config)"),
                };
                Layer {
                    attn_norm: vector(l.input_layernorm),
                    qkv: Weight::stack(&[&matrix(l.q_proj), &matrix(l.k_proj), &matrix(l.v_proj)]),
                    qkv_bias,
                    q_norm: l.q_norm.map(vector),
                    k_norm: l.k_norm.map(vector),
                    o: matrix(l.o_proj),
                    o_bias: l.o_bias.map(vector),
                    mlp_norm: vector(l.post_attention_layernorm),
                    gate_up: Weight::stack(&[&matrix(l.gate_proj), &matrix(l.up_proj)]),
                    down: matrix(l.down_proj),
                }
            })
            .collect();
        let half = cfg.rope_inv_freq()?;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for pos in 0..cfg.max_position_embeddings {
            for f in &half {
                let angle = pos as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(HostDecoder {
            embed: matrix(p.embed_tokens),
            lm_head: p.lm_head.map(matrix),
            norm: vector(p.norm),
            layers,
            cos,
            sin,
            config: cfg,
        })
    }

    /// Bytes of weights one decoding step reads: every layer's matrices and the output head.
    pub fn weight_bytes(&self) -> usize {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let layer = |l: &Layer| [&l.qkv, &l.o, &l.gate_up, &l.down].iter().map(|w| w.bytes()).sum::<usize>();
        self.layers.iter().map(layer).sum::<usize>() + head.bytes()
    }

    /// Multiply-adds of the weights per token: every layer matrix and the head.
    fn weight_count(&self) -> usize {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        self.layers.iter().flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down]).chain([head]).map(|w| w.out * w.k).sum()
    }

    /// Multiply-adds times two of one new token at `context` cached positions: the weights
    /// (`2 · weights`) and attention (`4 · layers · heads · head_dim · context`: scores, then
    /// the weighted sum of values).
    pub fn flops_per_token(&self, context: usize) -> f64 {
        let c = &self.config;
        let attention = 4 * c.num_hidden_layers * c.num_attention_heads * c.head_dim() * context;
        (2 * self.weight_count() + attention) as f64
    }

    /// An empty cache with room for `capacity` positions before it grows.
    pub fn new_cache(&self, capacity: usize) -> SeqCache {
        let kv = self.config.num_key_value_heads * self.config.head_dim();
        let layer = || Vec::with_capacity(capacity * kv);
        SeqCache { k: (0..self.layers.len()).map(|_| layer()).collect(), v: (0..self.layers.len()).map(|_| layer()).collect(), len: 0 }
    }

    /// Appends `tokens[s]` to sequence `s` (a whole prompt, or the one token just chosen) and
    /// returns the logits after each sequence's last new token, `[sequences, vocab]`.
    pub fn step(&self, caches: &mut [&mut SeqCache], tokens: &[&[u32]]) -> Vec<f32> {
        assert_eq!(caches.len(), tokens.len(), "one token list per sequence");
        let cfg = &self.config;
        let (d, eps) = (cfg.hidden_size, cfg.rms_norm_eps as f32);
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim());
        // Row r of the step: sequence `seq[r]` at position `pos[r]`.
        let mut seq = vec![];
        let mut pos = vec![];
        for (s, (cache, t)) in caches.iter().zip(tokens).enumerate() {
            assert!(!t.is_empty(), "sequence {s}: nothing to append");
            let end = cache.len + t.len();
            assert!(end <= cfg.max_position_embeddings, "sequence {s}: {end} positions exceed the model's context");
            seq.extend(std::iter::repeat_n(s, t.len()));
            pos.extend(cache.len..end);
        }
        let rows = seq.len();
        let mut x: Vec<f32> = tokens.iter().flat_map(|t| t.iter()).flat_map(|&id| self.embed.row(id as usize)).collect();
        let (q_width, kv_width) = (nh * hd, nkv * hd);
        let mut h = vec![0f32; rows * d];
        let mut qkv = vec![0f32; rows * (q_width + 2 * kv_width)];
        let mut attn = vec![0f32; rows * q_width];
        let mut gate_up = vec![0f32; rows * 2 * cfg.intermediate_size];
        let mut act = vec![0f32; rows * cfg.intermediate_size];
        let mut delta = vec![0f32; rows * d];
        for (li, l) in self.layers.iter().enumerate() {
            rms_norm(&x, &l.attn_norm, eps, &mut h);
            matmul(&h, rows, &l.qkv, l.qkv_bias.as_deref(), &mut qkv);
            let width = q_width + 2 * kv_width;
            qkv.par_chunks_mut(width).zip(&pos).for_each(|(row, &p)| {
                let (q, rest) = row.split_at_mut(q_width);
                let k = &mut rest[..kv_width];
                if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                    norm_heads(q, qn, eps);
                    norm_heads(k, kn, eps);
                }
                self.rope(q, p);
                self.rope(k, p);
            });
            for (r, row) in qkv.chunks_exact(width).enumerate() {
                let c = &mut caches[seq[r]];
                c.k[li].extend_from_slice(&row[q_width..q_width + kv_width]);
                c.v[li].extend_from_slice(&row[q_width + kv_width..]);
            }
            let caches: &[&mut SeqCache] = caches;
            // One task per row and head: decoding a few sequences still uses every core.
            attn.par_chunks_mut(hd).enumerate().for_each(|(rh, out)| {
                let (r, h) = (rh / nh, rh % nh);
                let c = &caches[seq[r]];
                let q = &qkv[r * width + h * hd..][..hd];
                attend(q, &c.k[li], &c.v[li], pos[r] + 1, h / (nh / nkv), nkv, out);
            });
            matmul(&attn, rows, &l.o, l.o_bias.as_deref(), &mut delta);
            add(&mut x, &delta);
            rms_norm(&x, &l.mlp_norm, eps, &mut h);
            matmul(&h, rows, &l.gate_up, None, &mut gate_up);
            let ff = cfg.intermediate_size;
            act.par_chunks_mut(ff).zip(gate_up.par_chunks(2 * ff)).for_each(|(a, gu)| {
                let (g, u) = gu.split_at(ff);
                for ((a, &g), &u) in a.iter_mut().zip(g).zip(u) {
                    *a = g / (1.0 + (-g).exp()) * u;
                }
            });
            matmul(&act, rows, &l.down, None, &mut delta);
            add(&mut x, &delta);
        }
        for c in caches.iter_mut() {
            c.len = c.k[0].len() / kv_width;
        }
        // The last row of each sequence, normed, through the head.
        let mut last = Vec::with_capacity(tokens.len() * d);
        let mut end = 0;
        for t in tokens {
            end += t.len();
            last.extend_from_slice(&x[(end - 1) * d..end * d]);
        }
        let mut normed = vec![0f32; last.len()];
        rms_norm(&last, &self.norm, eps, &mut normed);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0f32; tokens.len() * head.out];
        matmul(&normed, tokens.len(), head, None, &mut logits);
        logits
    }

    /// Rotary embedding of every head in `x` (`[heads · head_dim]`) at position `p`, Hugging
    /// Face's `rotate_half` form: the first and second halves of a head are the pairs.
    fn rope(&self, x: &mut [f32], p: usize) {
        let half = self.config.head_dim() / 2;
        let (cos, sin) = (&self.cos[p * half..(p + 1) * half], &self.sin[p * half..(p + 1) * half]);
        for head in x.chunks_exact_mut(2 * half) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] + -x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

/// `y = x / sqrt(mean(x²) + eps) · w` per row of `x`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let d = w.len();
    y.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
        let rms = rms(x, eps);
        for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
            *y = x / rms * w;
        }
    });
}

/// [`rms_norm`] of each head of `x` (`[heads · head_dim]`) in place, with `w` `[head_dim]`: one
/// row's heads, so the caller's parallelism over rows is enough.
fn norm_heads(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for head in x.chunks_exact_mut(d) {
        let rms = rms(head, eps);
        for (x, w) in head.iter_mut().zip(w) {
            *x = *x / rms * w;
        }
    }
}

/// `sqrt(mean(x²) + eps)`, the divisor of both norms.
fn rms(x: &[f32], eps: f32) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32 + eps).sqrt()
}

fn add(x: &mut [f32], delta: &[f32]) {
    for (x, d) in x.iter_mut().zip(delta) {
        *x += d;
    }
}

/// Causal attention of one query head `q` (`[head_dim]`) over the first `len` cached
/// positions of key/value head `g` (of `nkv`).
fn attend(q: &[f32], k: &[f32], v: &[f32], len: usize, g: usize, nkv: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { attend_avx512(q, k, v, len, g, nkv, out) };
    }
    attend_in(q, k, v, len, g, nkv, out)
}

/// `attend` compiled for 512-bit vectors (the crate's baseline is SSE2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_avx512(q: &[f32], k: &[f32], v: &[f32], len: usize, g: usize, nkv: usize, out: &mut [f32]) {
    attend_in(q, k, v, len, g, nkv, out)
}

#[inline(always)]
fn attend_in(q: &[f32], k: &[f32], v: &[f32], len: usize, g: usize, nkv: usize, out: &mut [f32]) {
    let hd = q.len();
    let kv_width = nkv * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    // Plain loops, no closures: a closure is compiled on its own, without the caller's
    // target features.
    let mut scores = vec![0f32; len];
    let mut max = f32::NEG_INFINITY;
    for j in 0..len {
        scores[j] = dot(q, &k[j * kv_width + g * hd..][..hd]) * scale;
        max = max.max(scores[j]);
    }
    let mut total = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    out.fill(0.0);
    for j in 0..len {
        let w = scores[j] / total;
        let v = &v[j * kv_width + g * hd..][..hd];
        for i in 0..hd {
            out[i] += w * v[i];
        }
    }
}

/// A dot product in 16 partial sums (one vector register), then a fixed tree over them.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (a, b) = (&a[c * 16..][..16], &b[c * 16..][..16]);
        for l in 0..16 {
            acc[l] += a[l] * b[l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 16..a.len() {
        tail += a[i] * b[i];
    }
    let mut width = 8;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0] + tail
}
