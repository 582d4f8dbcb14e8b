//! The parameters of a Llama-family decoder as one generic structure, and the one list of their
//! names: [`Params::map`] visits every parameter with its Hugging Face and llama.cpp names. The
//! same structure holds shapes (to check a checkpoint), host tensors, Burn tensors (the model),
//! gradients and optimizer moments, so no other file spells a parameter name.
//!
//! Why not Burn's `#[derive(Module)]` and burn-store: in burn-nn 0.21.0 `Linear` stores its weight
//! as `[d_input, d_output]` and records carry Burn's own names, while keeping Hugging Face's
//! `[out, in]` layout and names makes loading and export name-for-name copies; and burn-optim
//! 0.21.0's `AdamWConfig` has one `weight_decay` for every parameter, where the trainer's AdamW
//! skips norms and biases by name (as transformers does). This file is the one hand-kept list.

use crate::config::LlamaConfig;
use schemas::train::{Lora, LoraTarget};
use std::collections::BTreeMap;

/// A parameter's names: in a Hugging Face checkpoint (`model.layers.0.self_attn.q_proj.weight`)
/// and in a GGUF file (`blk.0.attn_q.weight`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub hf: String,
    pub gguf: String,
}

/// One transformer block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block<T> {
    pub input_layernorm: T,
    pub q_proj: T,
    pub k_proj: T,
    pub v_proj: T,
    pub q_bias: Option<T>,
    pub k_bias: Option<T>,
    pub v_bias: Option<T>,
    /// Qwen3's RMSNorm weights over each query and key head (`[head_dim]`).
    pub q_norm: Option<T>,
    pub k_norm: Option<T>,
    pub o_proj: T,
    /// Llama and Qwen3 with `attention_bias: true` also bias the output projection; Qwen2 does not.
    pub o_bias: Option<T>,
    pub post_attention_layernorm: T,
    pub gate_proj: T,
    pub up_proj: T,
    pub down_proj: T,
    /// LoRA adapters of some projections (none without LoRA).
    pub lora: BTreeMap<LoraTarget, Adapter<T>>,
}

/// A LoRA adapter of one projection `[out, in]`: `a` `[rank, in]` and `b` `[out, rank]`,
/// PEFT's `lora_A` and `lora_B`; with DoRA also `magnitude` `[out]`, PEFT's
/// `lora_magnitude_vector`.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter<T> {
    pub a: T,
    pub b: T,
    pub magnitude: Option<T>,
}

/// The end of a DoRA magnitude's name: PEFT saves it without `.weight`.
pub const MAGNITUDE: &str = ".lora_magnitude_vector";

/// Whether `hf_name` (as [`Params::map`] names parameters) is a LoRA adapter's.
pub fn is_adapter(hf_name: &str) -> bool {
    hf_name.ends_with(".lora_A.weight") || hf_name.ends_with(".lora_B.weight") || hf_name.ends_with(MAGNITUDE)
}

/// Every parameter of a decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Params<T> {
    pub embed_tokens: T,
    pub layers: Vec<Block<T>>,
    pub norm: T,
    /// `None` when the output projection is tied to `embed_tokens`.
    pub lm_head: Option<T>,
}

impl<T> Block<T> {
    /// The weight of projection `target`.
    pub fn weight(&self, target: LoraTarget) -> &T {
        match target {
            LoraTarget::QProj => &self.q_proj,
            LoraTarget::KProj => &self.k_proj,
            LoraTarget::VProj => &self.v_proj,
            LoraTarget::OProj => &self.o_proj,
            LoraTarget::GateProj => &self.gate_proj,
            LoraTarget::UpProj => &self.up_proj,
            LoraTarget::DownProj => &self.down_proj,
        }
    }

    /// The bias of projection `target`, where it has one (Qwen2's q/k/v, `attention_bias`).
    pub fn bias(&self, target: LoraTarget) -> Option<&T> {
        match target {
            LoraTarget::QProj => self.q_bias.as_ref(),
            LoraTarget::KProj => self.k_bias.as_ref(),
            LoraTarget::VProj => self.v_bias.as_ref(),
            LoraTarget::OProj => self.o_bias.as_ref(),
            LoraTarget::GateProj | LoraTarget::UpProj | LoraTarget::DownProj => None,
        }
    }

    /// The weight of projection `target`, to change it.
    pub fn weight_mut(&mut self, target: LoraTarget) -> &mut T {
        match target {
            LoraTarget::QProj => &mut self.q_proj,
            LoraTarget::KProj => &mut self.k_proj,
            LoraTarget::VProj => &mut self.v_proj,
            LoraTarget::OProj => &mut self.o_proj,
            LoraTarget::GateProj => &mut self.gate_proj,
            LoraTarget::UpProj => &mut self.up_proj,
            LoraTarget::DownProj => &mut self.down_proj,
        }
    }

    fn map<U>(self, layer: usize, f: &mut impl FnMut(&Name, T) -> U) -> Block<U> {
        let mut visited = Vec::new();
        let mut m = |hf: &str, gguf: &str, t: T| {
            let name = Name { hf: format!("model.layers.{layer}.{hf}"), gguf: format!("blk.{layer}.{gguf}") };
            let out = f(&name, t);
            visited.push(name);
            out
        };
        // Struct fields are evaluated in the order written: this is the visiting order, the
        // adapters last.
        let mut block = Block {
            input_layernorm: m("input_layernorm.weight", "attn_norm.weight", self.input_layernorm),
            q_proj: m("self_attn.q_proj.weight", "attn_q.weight", self.q_proj),
            k_proj: m("self_attn.k_proj.weight", "attn_k.weight", self.k_proj),
            v_proj: m("self_attn.v_proj.weight", "attn_v.weight", self.v_proj),
            q_bias: self.q_bias.map(|t| m("self_attn.q_proj.bias", "attn_q.bias", t)),
            k_bias: self.k_bias.map(|t| m("self_attn.k_proj.bias", "attn_k.bias", t)),
            v_bias: self.v_bias.map(|t| m("self_attn.v_proj.bias", "attn_v.bias", t)),
            q_norm: self.q_norm.map(|t| m("self_attn.q_norm.weight", "attn_q_norm.weight", t)),
            k_norm: self.k_norm.map(|t| m("self_attn.k_norm.weight", "attn_k_norm.weight", t)),
            o_proj: m("self_attn.o_proj.weight", "attn_output.weight", self.o_proj),
            o_bias: self.o_bias.map(|t| m("self_attn.o_proj.bias", "attn_output.bias", t)),
            post_attention_layernorm: m("post_attention_layernorm.weight", "ffn_norm.weight", self.post_attention_layernorm),
            gate_proj: m("mlp.gate_proj.weight", "ffn_gate.weight", self.gate_proj),
            up_proj: m("mlp.up_proj.weight", "ffn_up.weight", self.up_proj),
            down_proj: m("mlp.down_proj.weight", "ffn_down.weight", self.down_proj),
            lora: BTreeMap::new(),
        };
        // An adapter is named after its projection's weight, as PEFT names it inside its
        // `base_model.model.` prefix (`...q_proj.lora_A.weight`) and llama.cpp's LoRA GGUFs do
        // (`blk.0.attn_q.weight.lora_a`).
        for (target, ad) in self.lora {
            let suffix = format!(".{}.weight", target.as_str());
            let base = visited.iter().find(|n| n.hf.ends_with(&suffix)).expect("every LoRA target is a projection of the block");
            let module = base.hf.strip_suffix(".weight").expect("ends with .weight");
            let mut named = |hf: String, gguf: String, t: T| f(&Name { hf, gguf }, t);
            let a = named(format!("{module}.lora_A.weight"), format!("{}.lora_a", base.gguf), ad.a);
            let b = named(format!("{module}.lora_B.weight"), format!("{}.lora_b", base.gguf), ad.b);
            let magnitude = ad.magnitude.map(|m| named(format!("{module}{MAGNITUDE}"), format!("{}.lora_magnitude", base.gguf), m));
            block.lora.insert(target, Adapter { a, b, magnitude });
        }
        block
    }
}

impl<T> Params<T> {
    /// Every parameter passed through `f` with its names, in a fixed order (embeddings, then each
    /// block from `input_layernorm` to `down_proj` and then its LoRA adapters, the final norm,
    /// `lm_head`).
    pub fn map<U>(self, mut f: impl FnMut(&Name, T) -> U) -> Params<U> {
        let top = |hf: &str, gguf: &str| Name { hf: hf.to_string(), gguf: gguf.to_string() };
        let embed_tokens = f(&top("model.embed_tokens.weight", "token_embd.weight"), self.embed_tokens);
        let layers = self.layers.into_iter().enumerate().map(|(i, l)| l.map(i, &mut f)).collect();
        let norm = f(&top("model.norm.weight", "output_norm.weight"), self.norm);
        let lm_head = self.lm_head.map(|t| f(&top("lm_head.weight", "output.weight"), t));
        Params { embed_tokens, layers, norm, lm_head }
    }

    /// Each parameter with its names, in [`Params::map`] order.
    pub fn into_named(self) -> Vec<(Name, T)> {
        let mut out = Vec::new();
        self.map(|n, t| out.push((n.clone(), t)));
        out
    }

    /// References to the parameters, in the same structure.
    pub fn as_ref(&self) -> Params<&T> {
        Params {
            embed_tokens: &self.embed_tokens,
            layers: self.layers.iter().map(Block::as_ref).collect(),
            norm: &self.norm,
            lm_head: self.lm_head.as_ref(),
        }
    }
}

impl<T> Block<T> {
    fn as_ref(&self) -> Block<&T> {
        Block {
            input_layernorm: &self.input_layernorm,
            q_proj: &self.q_proj,
            k_proj: &self.k_proj,
            v_proj: &self.v_proj,
            q_bias: self.q_bias.as_ref(),
            k_bias: self.k_bias.as_ref(),
            v_bias: self.v_bias.as_ref(),
            q_norm: self.q_norm.as_ref(),
            k_norm: self.k_norm.as_ref(),
            o_proj: &self.o_proj,
            o_bias: self.o_bias.as_ref(),
            post_attention_layernorm: &self.post_attention_layernorm,
            gate_proj: &self.gate_proj,
            up_proj: &self.up_proj,
            down_proj: &self.down_proj,
            lora: self.lora.iter().map(|(&t, ad)| (t, Adapter { a: &ad.a, b: &ad.b, magnitude: ad.magnitude.as_ref() })).collect(),
        }
    }
}

impl Params<Vec<usize>> {
    /// The parameters a model of `cfg` has, with their Hugging Face shapes (`[out, in]` matrices,
    /// rank-1 norms and biases).
    pub fn shapes(cfg: &LlamaConfig) -> Params<Vec<usize>> {
        let (h, v, ff) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
        let q = cfg.num_attention_heads * cfg.head_dim();
        let kv = cfg.num_key_value_heads * cfg.head_dim();
        // An optional rank-1 parameter: a bias or a per-head norm.
        let bias = |on: bool, n: usize| on.then(|| vec![n]);
        let block = || Block {
            input_layernorm: vec![h],
            q_proj: vec![q, h],
            k_proj: vec![kv, h],
            v_proj: vec![kv, h],
            q_bias: bias(cfg.qkv_bias(), q),
            k_bias: bias(cfg.qkv_bias(), kv),
            v_bias: bias(cfg.qkv_bias(), kv),
            q_norm: bias(cfg.qk_norm(), cfg.head_dim()),
            k_norm: bias(cfg.qk_norm(), cfg.head_dim()),
            o_proj: vec![h, q],
            o_bias: bias(cfg.o_bias(), h),
            post_attention_layernorm: vec![h],
            gate_proj: vec![ff, h],
            up_proj: vec![ff, h],
            down_proj: vec![h, ff],
            lora: BTreeMap::new(),
        };
        Params {
            embed_tokens: vec![v, h],
            layers: (0..cfg.num_hidden_layers).map(|_| block()).collect(),
            norm: vec![h],
            lm_head: (!cfg.tie_word_embeddings).then(|| vec![v, h]),
        }
    }
}

impl Params<Vec<usize>> {
    /// These shapes with `lora`'s adapters on every block. A rank past a projection's smaller
    /// side is refused: that is no low-rank update, only a larger one (and, asked for by mistake,
    /// more memory than the model).
    pub fn with_lora(mut self, lora: &Lora) -> anyhow::Result<Params<Vec<usize>>> {
        for block in &mut self.layers {
            for &target in &lora.targets {
                let (out, inp) = match block.weight(target).as_slice() {
                    &[out, inp] => (out, inp),
                    other => unreachable!("projections are matrices, got {other:?}"),
                };
                if lora.rank > out.min(inp) {
                    anyhow::bail!(
                        "`lora.rank` {} is larger than {}'s smaller side ({}, of [{out}, {inp}]): a rank-r update needs r at most that",
                        lora.rank,
                        target.as_str(),
                        out.min(inp)
                    );
                }
                let magnitude = lora.dora.then(|| vec![out]);
                block.lora.insert(target, Adapter { a: vec![lora.rank, inp], b: vec![out, lora.rank], magnitude });
            }
        }
        Ok(self)
    }
}

impl Params<()> {
    /// Every parameter a decoder of `layers` blocks can have: all biases, the per-head norms and
    /// an untied head.
    pub fn every(layers: usize) -> Params<()> {
        let block = || Block {
            input_layernorm: (),
            q_proj: (),
            k_proj: (),
            v_proj: (),
            q_bias: Some(()),
            k_bias: Some(()),
            v_bias: Some(()),
            q_norm: Some(()),
            k_norm: Some(()),
            o_proj: (),
            o_bias: Some(()),
            post_attention_layernorm: (),
            gate_proj: (),
            up_proj: (),
            down_proj: (),
            lora: BTreeMap::new(),
        };
        Params { embed_tokens: (), layers: (0..layers).map(|_| block()).collect(), norm: (), lm_head: Some(()) }
    }
}
