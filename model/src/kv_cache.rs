//! The KV cache and the incremental forward pass that fills it, for generation.

use crate::decoder::{linear, rms_norm, Llama, Rotary};
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Int, Tensor, TensorData};
use schemas::train::LoraTarget;

/// Keys and values of every layer for the tokens seen so far, `[batch, kv_heads, len, head_dim]`
/// each, after rotary embedding. Row `b` of the cache belongs to row `b` of the batch.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(num_layers: usize) -> Self {
        KvCache { layers: vec![None; num_layers] }
    }

    /// Cached positions per row (0 before the first call).
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep only the batch rows in `rows` (in that order): finished sequences leave the batch.
    pub fn retain_rows(&mut self, rows: &[usize], device: &B::Device) {
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]), device);
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.clone().select(0, idx.clone());
            *v = v.clone().select(0, idx.clone());
        }
    }
}

impl<B: Backend> Llama<B> {
    /// Incremental decoding: runs `input_ids` `[batch, t]` at `positions` after the tokens already
    /// in `cache`, appends their keys and values to it, and returns the logits of the last
    /// position, `[batch, vocab]`. `bias` `[batch, t, cache_len + t]` is added to the attention
    /// scores: 0 where a query may look at a key, a large negative number where not (padding,
    /// the future). Used by batched generation with left padding.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        bias: Tensor<B, 3>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 2> {
        let [b, t] = input_ids.dims();
        let eps = self.config.rms_norm_eps;
        let rotary = self.rotary(&positions);
        let mut x = self.embed(input_ids);
        for (layer, layer_cache) in cache.layers.iter_mut().enumerate() {
            let h = rms_norm(x.clone(), &self.params.layers[layer].input_layernorm, eps);
            let x_attn = x + self.attention_cached(layer, h, &rotary, &bias, layer_cache);
            x = self.mlp(layer, x_attn);
        }
        let last = self.final_norm(x.narrow(1, t - 1, 1));
        let v = self.head().dims()[0];
        linear(last, self.head(), None).reshape([b, v])
    }

    fn attention_cached(
        &self,
        layer: usize,
        h: Tensor<B, 3>,
        rotary: &Rotary<B>,
        bias: &Tensor<B, 3>,
        cache: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = h.dims();
        let (nh, nkv, hd) = (self.config.num_attention_heads, self.config.num_key_value_heads, self.config.head_dim());
        let (q, k, v) = self.qkv(layer, h, rotary);
        let (k, v) = match cache.take() {
            Some((ck, cv)) => (Tensor::cat(vec![ck, k], 2), Tensor::cat(vec![cv, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let total = k.dims()[2];
        // Grouped-query attention without copying keys: the `group` query heads that share a
        // key/value head are stacked along the query axis of that head.
        let group = nh / nkv;
        let q = q.reshape([b, nkv, group * t, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (hd as f64).sqrt());
        let scores = scores.reshape([b, nkv, group, t, total]) + bias.clone().reshape([b, 1, 1, t, total]);
        let weights = activation::softmax(scores, 4).reshape([b, nkv, group * t, total]);
        let out = weights.matmul(v).reshape([b, nh, t, hd]).swap_dims(1, 2).reshape([b, t, nh * hd]);
        self.project(layer, LoraTarget::OProj, out)
    }
}
