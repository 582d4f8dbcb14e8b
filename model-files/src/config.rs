//! The model configuration of a Llama-family decoder (Llama, SmolLM2, Qwen2/Qwen2.5, Qwen3), read from a
//! Hugging Face `config.json` or from a GGUF file's metadata, and written back as a `config.json`
//! that Python `transformers` loads.
//!
//! Keys this struct does not name are kept in [`LlamaConfig::extra`], so a config read and written
//! again loses nothing. Features the model does not implement (RoPE scaling, MLP biases, sliding
//! window attention, activations other than SiLU) are accepted by the parser but rejected by
//! [`LlamaConfig::validate`]: silently ignoring them would give a model that loads and is wrong.

use crate::gguf::Gguf;
use crate::gguf::{dequantize, ROPE_FREQS_TENSOR};
use crate::rope::{llama3_from_factors, RopeScaling};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A model's architecture, as `config.json` spells `model_type` and GGUF `general.architecture`.
/// Any other name is read as [`ModelType::Unsupported`] so that [`LlamaConfig::validate`] can
/// refuse it by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ModelType {
    Llama,
    Qwen2,
    /// Qwen2 without the q/k/v biases, with an RMSNorm over each query and key head.
    Qwen3,
    Unsupported(String),
}

impl ModelType {
    /// The architectures this crate implements.
    pub const SUPPORTED: [ModelType; 3] = [ModelType::Llama, ModelType::Qwen2, ModelType::Qwen3];

    pub fn as_str(&self) -> &str {
        match self {
            ModelType::Llama => "llama",
            ModelType::Qwen2 => "qwen2",
            ModelType::Qwen3 => "qwen3",
            ModelType::Unsupported(name) => name,
        }
    }

    /// The `architectures` entry transformers needs to pick the model class.
    fn hf_architecture(&self) -> Option<&'static str> {
        match self {
            ModelType::Llama => Some("LlamaForCausalLM"),
            ModelType::Qwen2 => Some("Qwen2ForCausalLM"),
            ModelType::Qwen3 => Some("Qwen3ForCausalLM"),
            ModelType::Unsupported(_) => None,
        }
    }

    /// Fails for an architecture this crate does not implement, naming it as `what` calls it
    /// (`model_type`, `GGUF architecture`) and listing those it does implement.
    pub fn check_supported(&self, what: &str) -> Result<()> {
        if let ModelType::Unsupported(name) = self {
            let supported: Vec<&str> = Self::SUPPORTED.iter().map(ModelType::as_str).collect();
            bail!("{what} `{name}` is not supported (supported: {})", supported.join(", "));
        }
        Ok(())
    }
}

impl From<String> for ModelType {
    fn from(name: String) -> ModelType {
        Self::SUPPORTED.into_iter().find(|t| t.as_str() == name).unwrap_or(ModelType::Unsupported(name))
    }
}

impl From<ModelType> for String {
    fn from(t: ModelType) -> String {
        t.as_str().to_string()
    }
}

impl std::fmt::Display for ModelType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token id or a list of them: Llama 3 lists several end-of-turn ids as `eos_token_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// transformers' default for Llama and Qwen2 when a config names no `rope_theta`.
const DEFAULT_ROPE_THETA: f64 = 10000.0;

/// transformers' `Qwen3Config` default for `head_dim`: 128, whatever hidden_size /
/// num_attention_heads is (the other architectures default to that quotient).
const QWEN3_DEFAULT_HEAD_DIM: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawConfig")]
pub struct LlamaConfig {
    pub architectures: Vec<String>,
    pub model_type: ModelType,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no grouped-query attention) when the key is absent.
    pub num_key_value_heads: usize,
    /// Set when a config gives it, and always for Qwen3, whose default is not hidden_size /
    /// num_attention_heads (so an export states it); [`Self::head_dim()`] gives the value in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    /// From `rope_theta`, or from `rope_parameters.rope_theta`, where transformers 5 writes it
    /// (`rope_parameters` itself is kept in `extra` and checked by [`Self::validate`]).
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    /// transformers defaults this to false for Llama; SmolLM2 and small Qwen2.5 models set it.
    pub tie_word_embeddings: bool,
    /// Llama's and Qwen3's switch for biases on all four attention projections. Qwen2 has no such
    /// key: its q/k/v always have biases. Use [`Self::qkv_bias`] and [`Self::o_bias`], not this field.
    pub attention_bias: bool,
    // Serialised even when `None`: transformers would otherwise fill in its own default ids.
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What `config.json` holds, before the defaults that depend on other keys are filled in (serde
/// has no way to default one field from another).
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: ModelType,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<TokenIds>,
    #[serde(default)]
    torch_dtype: Option<String>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

impl From<RawConfig> for LlamaConfig {
    fn from(r: RawConfig) -> Self {
        let head_dim = r.head_dim.or((r.model_type == ModelType::Qwen3).then_some(QWEN3_DEFAULT_HEAD_DIM));
        LlamaConfig {
            architectures: r.architectures,
            model_type: r.model_type,
            vocab_size: r.vocab_size,
            hidden_size: r.hidden_size,
            intermediate_size: r.intermediate_size,
            num_hidden_layers: r.num_hidden_layers,
            num_attention_heads: r.num_attention_heads,
            num_key_value_heads: r.num_key_value_heads.unwrap_or(r.num_attention_heads),
            head_dim,
            rms_norm_eps: r.rms_norm_eps,
            rope_theta: r.rope_theta.or_else(|| rope_parameters_theta(&r.extra)).unwrap_or(DEFAULT_ROPE_THETA),
            max_position_embeddings: r.max_position_embeddings,
            tie_word_embeddings: r.tie_word_embeddings,
            attention_bias: r.attention_bias,
            bos_token_id: r.bos_token_id,
            eos_token_id: r.eos_token_id,
            torch_dtype: r.torch_dtype,
            extra: r.extra,
        }
    }
}

/// `rope_parameters.rope_theta` of a transformers 5 config, when it is a number.
fn rope_parameters_theta(extra: &BTreeMap<String, Value>) -> Option<f64> {
    extra.get("rope_parameters")?.get("rope_theta")?.as_f64()
}

impl LlamaConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        Ok(serde_json::from_str(json)?)
    }

    /// Read a `config.json`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("{}: not a usable model config", path.display()))
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q_proj, k_proj and v_proj carry a bias.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == ModelType::Qwen2 || self.attention_bias
    }

    /// Whether o_proj carries a bias: Llama or Qwen3 with `attention_bias`, never Qwen2.
    pub fn o_bias(&self) -> bool {
        self.model_type != ModelType::Qwen2 && self.attention_bias
    }

    /// Whether each query and key head is RMS-normed (weights `q_norm`, `k_norm` of `head_dim`)
    /// before the rotary embedding, as Qwen3 does.
    pub fn qk_norm(&self) -> bool {
        self.model_type == ModelType::Qwen3
    }

    /// How the rotary frequencies are scaled (`rope_scaling` or `rope_parameters`); an error
    /// names a scaling the model does not implement.
    pub fn rope_scaling(&self) -> Result<RopeScaling> {
        RopeScaling::from_config(&self.extra)
    }

    /// The `head_dim / 2` rotary inverse frequencies, scaled as the config says.
    pub fn rope_inv_freq(&self) -> Result<Vec<f64>> {
        Ok(self.rope_scaling()?.inv_freq(self.rope_theta, self.head_dim()))
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }

    /// Fails when a prompt of `len` tokens leaves no room for a new token in the context.
    pub fn check_prompt_fits(&self, len: usize) -> Result<()> {
        let context = self.max_position_embeddings;
        if len >= context {
            bail!("a prompt of {len} tokens leaves no room in the model's context of {context} (max_position_embeddings)");
        }
        Ok(())
    }

    /// Adds `id` first to `eos_token_id` unless it is there: transformers' `generate` stops on
    /// `config.json`'s ids, and a model trained to end its turns with `<|im_end|>` from a base
    /// whose config names only `<|endoftext|>` would otherwise run on past every turn.
    pub fn add_eos_token_id(&mut self, id: u32) {
        let mut ids = self.eos_token_ids();
        if !ids.contains(&id) {
            ids.insert(0, id);
            self.eos_token_id = Some(if ids.len() == 1 { TokenIds::One(id) } else { TokenIds::Many(ids) });
        }
    }

    /// Check that this is a model the trainer implements, with consistent dimensions.
    pub fn validate(&self) -> Result<()> {
        self.model_type.check_supported("model_type")?;
        let (heads, kv) = (self.num_attention_heads, self.num_key_value_heads);
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", heads),
            ("num_key_value_heads", kv),
            ("head_dim", self.head_dim()),
        ] {
            if v == 0 {
                bail!("{name} is 0");
            }
        }
        if heads % kv != 0 {
            bail!("num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}");
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(heads) {
            bail!("hidden_size {} is not a multiple of num_attention_heads {heads}", self.hidden_size);
        }
        // rotate_half splits each head in two halves.
        if !self.head_dim().is_multiple_of(2) {
            bail!("head_dim {} is odd; RoPE needs an even head dimension", self.head_dim());
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            bail!("rms_norm_eps {} is not a positive number", self.rms_norm_eps);
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            bail!("rope_theta {} is not a positive number", self.rope_theta);
        }
        if let Some(act) = self.extra.get("hidden_act") {
            if act.as_str() != Some("silu") {
                bail!("hidden_act {act} is not supported (only \"silu\")");
            }
        }
        // transformers 5 moved `rope_theta` and `rope_scaling` into one `rope_parameters` map.
        self.rope_scaling()?;
        if let Some(t) = self.extra.get("rope_parameters").and_then(|p| p.get("rope_theta")) {
            if t.as_f64() != Some(self.rope_theta) {
                bail!("rope_parameters.rope_theta {t} disagrees with rope_theta {}", self.rope_theta);
            }
        }
        if let Some(kinds) = self.extra.get("layer_types").and_then(Value::as_array) {
            if let Some(other) = kinds.iter().find(|k| k.as_str() != Some("full_attention")) {
                bail!("layer_types lists {other}: the model implements full attention only");
            }
        }
        if self.extra.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            bail!("mlp_bias = true is not supported");
        }
        if self.extra.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            bail!("use_sliding_window = true is not supported: the model implements full attention only");
        }
        Ok(())
    }

    /// This config as exported with [`Self::to_json`]: the keys transformers needs are filled in
    /// and the dtype is "float32", the dtype `save_hf` writes, under both its spellings.
    pub fn export_form(&self) -> LlamaConfig {
        let mut c = self.clone();
        if c.architectures.is_empty() {
            c.architectures = c.model_type.hf_architecture().map(|a| vec![a.to_string()]).unwrap_or_default();
        }
        c.torch_dtype = Some("float32".to_string());
        // transformers >= 4.56 writes `dtype` and prefers it over `torch_dtype` when both are
        // present (and transformers 5 loads with dtype="auto"): a `dtype` kept from the source
        // config ("bfloat16") would load the f32 export at lower precision. Both say float32.
        c.extra.insert("dtype".into(), Value::from("float32"));
        c.extra.entry("hidden_act".into()).or_insert_with(|| Value::from("silu"));
        c
    }

    /// `config.json` text for export (see [`Self::export_form`]).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.export_form()).expect("a config always serialises");
        s.push('\n');
        s
    }

    /// The config of a GGUF model, from its metadata and tensor directory.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        Self::from_gguf_inner(g).with_context(|| format!("{}: cannot derive a model config", g.path().display()))
    }

    fn from_gguf_inner(g: &Gguf) -> Result<Self> {
        // A part of a `llama-gguf-split` file has the metadata (in the first part) but only its
        // own tensors; loading it would fail later on "missing" tensors without saying why.
        if let Some(parts) = g.opt_u32("split.count")?.filter(|&n| n > 1) {
            let part = g.opt_u32("split.no")?.map_or("a part".to_string(), |i| format!("part {}", i + 1));
            bail!(
                "this file is {part} of a GGUF split into {parts} files (`split.count`); merge them with \
                 `llama-gguf-split --merge FIRST-PART.gguf MERGED.gguf` and load the merged file"
            );
        }
        let arch = g.get_str("general.architecture")?;
        let model_type = ModelType::from(arch.to_string());
        model_type.check_supported("GGUF architecture")?;
        let key = |k: &str| format!("{arch}.{k}");
        let usize_of = |k: &str| -> Result<usize> { Ok(g.get_u64(&key(k))? as usize) };

        let hidden_size = usize_of("embedding_length")?;
        let num_attention_heads = usize_of("attention.head_count")?;
        let num_kv = match g.opt_u32(&key("attention.head_count_kv"))? {
            Some(n) => n as usize,
            None => num_attention_heads,
        };
        // A Qwen3 config always states its head width (see `QWEN3_DEFAULT_HEAD_DIM`); without
        // the key llama.cpp uses hidden_size / heads, and so does this loader.
        let qwen3 = model_type == ModelType::Qwen3;
        let head_dim = match g.opt_u32(&key("attention.key_length"))? {
            Some(d) if qwen3 || num_attention_heads == 0 || d as usize != hidden_size / num_attention_heads => Some(d as usize),
            None if qwen3 => Some(hidden_size / num_attention_heads.max(1)),
            _ => None,
        };
        // Rotary embedding over part of each head (llama.cpp's `n_rot`) is not implemented: every
        // head dimension is rotated here.
        let full_head = head_dim.unwrap_or(hidden_size / num_attention_heads.max(1));
        if let Some(rot) = g.opt_u32(&key("rope.dimension_count"))?.filter(|&r| r as usize != full_head) {
            bail!(
                "`{}` is {rot}, but the heads have {full_head} dimensions: partial rotary embedding is not supported",
                key("rope.dimension_count")
            );
        }
        let vocab_size = if g.contains("tokenizer.ggml.tokens") {
            g.get_array("tokenizer.ggml.tokens")?.len()
        } else if g.contains(&key("vocab_size")) {
            usize_of("vocab_size")?
        } else if let Some(t) = g.tensor("token_embd.weight").filter(|t| t.dims.len() == 2) {
            t.dims[1] as usize
        } else {
            bail!("no vocabulary size: neither `tokenizer.ggml.tokens` nor `{}` is present", key("vocab_size"));
        };
        let rope_theta = if g.contains(&key("rope.freq_base")) { g.get_f64(&key("rope.freq_base"))? } else { DEFAULT_ROPE_THETA };
        let rms_norm_eps = g.get_f64(&key("attention.layer_norm_rms_epsilon"))?;

        let mut extra = BTreeMap::new();
        // As llama.cpp's loader (llama-model.cpp, load_hparams) reads them: the factor comes from
        // `rope.scaling.factor`, else the legacy `rope.scale_linear`, 0 meaning unscaled; a
        // missing `rope.scaling.type` means "linear", and the factor scales the frequencies
        // whatever the type. So a factor with no type is linear scaling, not plain RoPE.
        let type_key = key("rope.scaling.type");
        let factor = match [key("rope.scaling.factor"), key("rope.scale_linear")].into_iter().find(|k| g.contains(k)) {
            Some(k) => Some((g.get_f64(&k)?, k)),
            None => None,
        };
        let scaled_by = factor.as_ref().filter(|(f, _)| *f != 0.0 && *f != 1.0);
        // The key that set `rope_scaling`, for the error below.
        let mut scaling_key = type_key.as_str();
        match g.opt_str(&type_key)? {
            Some("none") => {
                if let Some((f, k)) = scaled_by {
                    bail!("`{type_key}` is \"none\" but `{k}` = {f}, which llama.cpp applies as linear scaling");
                }
            }
            // Linear scaling is implemented; `rope_scaling` is how the config says so.
            Some("linear") => {
                let Some((f, _)) = &factor else {
                    bail!(
                        "`{type_key}` is \"linear\" but neither `{}` nor `{}` gives its factor",
                        key("rope.scaling.factor"),
                        key("rope.scale_linear")
                    );
                };
                extra.insert("rope_scaling".to_string(), serde_json::json!({ "rope_type": "linear", "factor": shortest_f64(*f) }));
            }
            None => {
                if let Some((f, k)) = scaled_by {
                    scaling_key = k.as_str();
                    extra.insert("rope_scaling".to_string(), serde_json::json!({ "rope_type": "linear", "factor": shortest_f64(*f) }));
                }
            }
            // Any other type is recorded so that validate() refuses it by name rather than the
            // model quietly ignoring it.
            Some(t) => {
                extra.insert("rope_scaling".to_string(), serde_json::json!({ "rope_type": t }));
            }
        }
        if let Some(t) = g.tensor(ROPE_FREQS_TENSOR) {
            // Llama 3.1 / 3.2 files: llama.cpp's converter turns `rope_scaling` into per-frequency
            // divisors; read them back as the llama3 scaling they came from.
            if extra.contains_key("rope_scaling") {
                bail!("both `{scaling_key}` and tensor `{ROPE_FREQS_TENSOR}` scale the rotary frequencies");
            }
            let n = t.n_elements() as usize;
            let factors: Vec<f64> = dequantize(t.ggml_type, &g.tensor_bytes(t)?, n)?.into_iter().map(f64::from).collect();
            let head_dim = head_dim.unwrap_or(hidden_size / num_attention_heads.max(1));
            let theta = shortest_f64(rope_theta);
            let scaling = llama3_from_factors(&factors, theta, head_dim).with_context(|| format!("tensor `{ROPE_FREQS_TENSOR}`"))?;
            if let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } = scaling {
                // A context length: transformers warns about `64.0`, so a whole one is written as one.
                let original_max_position_embeddings = match original_max_position_embeddings {
                    n if n.fract() == 0.0 && n.abs() < 1e15 => serde_json::json!(n as i64),
                    n => serde_json::json!(n),
                };
                extra.insert(
                    "rope_scaling".to_string(),
                    serde_json::json!({ "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                        "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_position_embeddings }),
                );
            }
        }
        // Llama's and Qwen3's attention biases are all-or-nothing in transformers; qwen2 ignores the
        // flag.
        let attention_bias = model_type != ModelType::Qwen2 && g.tensor("blk.0.attn_q.bias").is_some();
        let cfg = LlamaConfig {
            architectures: vec![],
            model_type,
            vocab_size,
            hidden_size,
            intermediate_size: usize_of("feed_forward_length")?,
            num_hidden_layers: usize_of("block_count")?,
            num_attention_heads,
            num_key_value_heads: num_kv,
            head_dim,
            rms_norm_eps: shortest_f64(rms_norm_eps),
            rope_theta: shortest_f64(rope_theta),
            max_position_embeddings: usize_of("context_length")?,
            tie_word_embeddings: g.tensor("output.weight").is_none(),
            attention_bias,
            bos_token_id: g.opt_u32("tokenizer.ggml.bos_token_id")?,
            eos_token_id: g.opt_u32("tokenizer.ggml.eos_token_id")?.map(TokenIds::One),
            torch_dtype: None,
            extra,
        };
        Ok(cfg.export_form())
    }
}

/// GGUF stores eps and theta as f32, so 1e-5 arrives as 9.999999747378752e-6; going through the
/// shortest f32 decimal gives back the value the original config.json had.
fn shortest_f64(v: f64) -> f64 {
    let f = v as f32;
    if f as f64 == v {
        format!("{f}").parse().unwrap_or(v)
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's config.json as published.
    const SMOLLM2_JSON: &str = r#"{
      "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576,
      "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": true,
      "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
      "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2, "pretraining_tp": 1,
      "rms_norm_eps": 1e-05, "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.42.3",
      "use_cache": true, "vocab_size": 49152 }"#;

    const QWEN25_JSON: &str = r#"{
      "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
      "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
      "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
      "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
      "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
      "vocab_size": 151936 }"#;

    #[test]
    fn parses_smollm2() {
        let c = LlamaConfig::from_json(SMOLLM2_JSON).unwrap();
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_key_value_heads, c.head_dim()), (576, 30, 3, 64));
        assert_eq!((c.rope_theta, c.rms_norm_eps), (100000.0, 1e-5));
        assert!(c.tie_word_embeddings && !c.qkv_bias() && !c.o_bias());
        assert_eq!((c.bos_token_id, c.eos_token_ids()), (Some(1), vec![2]));
        // A prompt must leave room for one new token (SmolLM2's context is 8192).
        assert_eq!(c.max_position_embeddings, 8192);
        assert!(c.check_prompt_fits(8191).is_ok());
        let err = c.check_prompt_fits(8192).unwrap_err().to_string();
        assert!(err.contains("a prompt of 8192 tokens leaves no room") && err.contains("8192"), "{err}");
        let mut d = c.clone();
        d.add_eos_token_id(2);
        assert_eq!(d.eos_token_id, Some(TokenIds::One(2)), "already there: unchanged");
        d.add_eos_token_id(0);
        assert_eq!(d.eos_token_id, Some(TokenIds::Many(vec![0, 2])));
        let written: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(written["eos_token_id"], serde_json::json!([0, 2]), "as config.json writes it");
        assert_eq!(c.extra["initializer_range"], serde_json::json!(0.041666666666666664));
        assert!(c.extra["rope_scaling"].is_null());
        c.validate().unwrap();
    }

    #[test]
    fn parses_qwen2_with_qkv_bias() {
        let c = LlamaConfig::from_json(QWEN25_JSON).unwrap();
        assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim()), (14, 2, 64));
        assert!(c.qkv_bias() && !c.o_bias() && !c.attention_bias);
        c.validate().unwrap();
        let back = LlamaConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(back.architectures, vec!["Qwen2ForCausalLM"]);
        assert_eq!(back.extra["max_window_layers"], serde_json::json!(21));
    }

    /// Qwen3-0.6B's shape as a transformers 4 config: heads of 128 dimensions, wider than
    /// hidden_size / num_attention_heads = 64, no q/k/v biases, a norm over each q and k head.
    const QWEN3_JSON: &str = r#"{
      "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
      "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
      "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
      "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
      "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
      "use_cache": true, "use_sliding_window": false, "vocab_size": 151936 }"#;

    #[test]
    fn parses_qwen3_with_wide_heads_and_qk_norm() {
        let c = LlamaConfig::from_json(QWEN3_JSON).unwrap();
        c.validate().unwrap();
        assert_eq!((c.head_dim(), c.num_key_value_heads), (128, 8));
        assert!(c.qk_norm() && !c.qkv_bias() && !c.o_bias());
        let shapes = crate::params::Params::shapes(&c);
        let l = &shapes.layers[0];
        assert_eq!((&l.q_proj, &l.k_proj, &l.o_proj), (&vec![2048, 1024], &vec![1024, 1024], &vec![1024, 2048]));
        assert_eq!((&l.q_norm, &l.k_norm), (&Some(vec![128]), &Some(vec![128])));
        // attention_bias puts a bias on all four projections, as in transformers' Qwen3Attention.
        let biased = patched(QWEN3_JSON, r#"{"attention_bias": true}"#);
        assert!(biased.qkv_bias() && biased.o_bias());
        let back = LlamaConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(
            (back.model_type, back.architectures, back.head_dim),
            (ModelType::Qwen3, vec!["Qwen3ForCausalLM".to_string()], Some(128))
        );
        assert!(validate_error(QWEN3_JSON, r#"{"use_sliding_window": true}"#).contains("use_sliding_window"));
        assert!(validate_error(QWEN3_JSON, r#"{"model_type": "qwen3_moe"}"#)
            .contains("`qwen3_moe` is not supported (supported: llama, qwen2, qwen3)"));
        // Without the key a Qwen3's heads are 128 wide, as transformers' Qwen3Config says, not
        // hidden_size / heads = 64; the export states it.
        let mut v: Value = serde_json::from_str(QWEN3_JSON).unwrap();
        v.as_object_mut().unwrap().remove("head_dim");
        let c: LlamaConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c.head_dim(), 128);
        let j: Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(j["head_dim"], 128);
        // The Llama and Qwen2 default stays the quotient, and is not written out.
        let j: Value = serde_json::from_str(&LlamaConfig::from_json(SMOLLM2_JSON).unwrap().to_json()).unwrap();
        assert!(j.get("head_dim").is_none());
    }

    /// A qwen3 GGUF whose heads are hidden_size / heads wide (Qwen3-1.7B's 2048 / 16 = 128)
    /// exports `head_dim` all the same: transformers would otherwise build 128-wide heads.
    #[test]
    fn qwen3_gguf_config_states_its_head_width() {
        use crate::gguf::Value as V;
        for key_length in [Some(16), None] {
            let mut extra = vec![];
            if let Some(k) = key_length {
                extra.push(("qwen3.attention.key_length", V::U32(k)));
            }
            let c = gguf_config_arch("qwen3", &extra).unwrap();
            assert_eq!((c.model_type.clone(), c.head_dim), (ModelType::Qwen3, Some(16)), "key_length {key_length:?}");
            c.validate().unwrap();
            let j: Value = serde_json::from_str(&c.to_json()).unwrap();
            assert_eq!(j["head_dim"], 16);
        }
        // A llama file of the same shape keeps the quotient implicit.
        assert_eq!(gguf_config(&[("llama.attention.key_length", V::U32(16))]).unwrap().head_dim, None);
    }

    /// A Qwen2 config as transformers 5.24 `save_pretrained` writes it: no top-level `rope_theta`,
    /// `dtype` instead of `torch_dtype`, `layer_types`.
    const QWEN2_TRANSFORMERS5_JSON: &str = r#"{
      "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": null,
      "dtype": "float32", "eos_token_id": null, "hidden_act": "silu", "hidden_size": 64,
      "initializer_range": 0.02, "intermediate_size": 128,
      "layer_types": ["full_attention", "full_attention"], "max_position_embeddings": 32768,
      "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 4,
      "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": null, "rms_norm_eps": 1e-06,
      "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "sliding_window": null,
      "tie_word_embeddings": true, "transformers_version": "5.24.0", "use_cache": true,
      "use_sliding_window": false, "vocab_size": 49152 }"#;

    /// `base` with the top-level keys of `patch` replaced.
    fn patched(base: &str, patch: &str) -> LlamaConfig {
        let mut v: Value = serde_json::from_str(base).unwrap();
        let p: Value = serde_json::from_str(patch).unwrap();
        for (k, x) in p.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    /// Why `validate` refuses `base` patched with `patch`, with every cause.
    fn validate_error(base: &str, patch: &str) -> String {
        format!("{:#}", patched(base, patch).validate().unwrap_err())
    }

    #[test]
    fn parses_transformers5_rope_parameters() {
        let c = LlamaConfig::from_json(QWEN2_TRANSFORMERS5_JSON).unwrap();
        assert_eq!(c.rope_theta, 1e6, "rope_theta comes from rope_parameters, not the 10000 default");
        c.validate().unwrap();
        let back = LlamaConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(back.rope_theta, 1e6);
        back.validate().unwrap();
        let with = |patch: &str| validate_error(QWEN2_TRANSFORMERS5_JSON, patch);
        assert!(with(r#"{"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}}"#).contains("yarn"));
        let linear = patched(QWEN2_TRANSFORMERS5_JSON, r#"{"rope_parameters": {"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0}}"#);
        linear.validate().unwrap();
        let f = linear.rope_inv_freq().unwrap();
        assert!((f[1] - 1e6f64.powf(-2.0 / 16.0) / 2.0).abs() < 1e-15, "linear scaling halves every frequency: {f:?}");
        assert!(with(r#"{"rope_theta": 10000.0}"#).contains("disagrees"));
        assert!(with(r#"{"layer_types": ["full_attention", "sliding_attention"]}"#).contains("sliding_attention"));
    }

    #[test]
    fn defaults_and_list_eos() {
        let c = LlamaConfig::from_json(
            r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "rms_norm_eps": 1e-6,
                "max_position_embeddings": 64, "eos_token_id": [128001, 128009]}"#,
        )
        .unwrap();
        assert_eq!((c.num_key_value_heads, c.head_dim(), c.rope_theta), (2, 4, 10000.0));
        assert!(!c.tie_word_embeddings && c.bos_token_id.is_none());
        assert_eq!(c.eos_token_ids(), vec![128001, 128009]);
        let j: Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(j["architectures"], serde_json::json!(["LlamaForCausalLM"]));
        assert_eq!(j["hidden_act"], "silu");
        assert_eq!(j["torch_dtype"], "float32");
        assert_eq!(j["eos_token_id"], serde_json::json!([128001, 128009]));
        assert!(j["bos_token_id"].is_null(), "a null bos must stay null, not become transformers' default");
    }

    /// A bf16 transformers 5 config (`dtype`, no `torch_dtype`) exports as float32 under both
    /// keys: transformers reads `dtype` first, so a stale "bfloat16" there would win.
    #[test]
    fn export_sets_both_dtype_keys_to_float32() {
        let c = patched(QWEN2_TRANSFORMERS5_JSON, r#"{"dtype": "bfloat16"}"#);
        assert_eq!(c.torch_dtype, None);
        let j: Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!((j["dtype"].as_str(), j["torch_dtype"].as_str()), (Some("float32"), Some("float32")));
        // A transformers 4 config (torch_dtype only) gets both as well.
        let j: Value = serde_json::from_str(&LlamaConfig::from_json(SMOLLM2_JSON).unwrap().to_json()).unwrap();
        assert_eq!((j["dtype"].as_str(), j["torch_dtype"].as_str()), (Some("float32"), Some("float32")));
    }

    #[test]
    fn round_trip_keeps_unknown_keys() {
        let c = LlamaConfig::from_json(SMOLLM2_JSON).unwrap();
        let back = LlamaConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c.export_form());
        let orig: Value = serde_json::from_str(SMOLLM2_JSON).unwrap();
        let out: Value = serde_json::from_str(&c.to_json()).unwrap();
        for (k, v) in orig.as_object().unwrap() {
            match (v.as_f64(), out[k].as_f64()) {
                // 100000 may come back as 100000.0: the same number.
                (Some(a), Some(b)) => assert_eq!(a, b, "key {k}"),
                _ if k == "torch_dtype" => {}
                _ => assert_eq!(&out[k], v, "key {k}"),
            }
        }
    }

    #[test]
    fn validate_rejects_unsupported() {
        let with = |patch: &str| validate_error(SMOLLM2_JSON, patch);
        assert!(with(r#"{"model_type": "mistral"}"#).contains("`mistral`"));
        assert!(with(r#"{"num_key_value_heads": 2}"#).contains("multiple of num_key_value_heads 2"));
        assert!(with(r#"{"rope_scaling": {"rope_type": "yarn", "factor": 8.0}}"#).contains("`yarn` is not supported"));
        assert!(with(r#"{"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}"#).contains("low_freq_factor"));
        assert!(with(r#"{"hidden_act": "gelu"}"#).contains("hidden_act"));
        assert!(with(r#"{"mlp_bias": true}"#).contains("mlp_bias"));
        assert!(with(r#"{"rope_scaling": {"factor": 4.0}}"#).contains("no `rope_type`"));
    }

    #[test]
    fn gguf_files_this_loader_would_misread_are_refused() {
        use crate::gguf::Value as V;
        let e = format!("{:#}", gguf_config(&[("split.count", V::U16(3)), ("split.no", V::U16(0))]).unwrap_err());
        assert!(e.contains("part 1 of a GGUF split into 3 files") && e.contains("llama-gguf-split --merge"), "{e}");
        assert!(gguf_config(&[("split.count", V::U16(1))]).is_ok());
        let e = format!("{:#}", gguf_config(&[("llama.rope.dimension_count", V::U32(8))]).unwrap_err());
        assert!(e.contains("`llama.rope.dimension_count` is 8, but the heads have 16 dimensions"), "{e}");
        assert!(gguf_config(&[("llama.rope.dimension_count", V::U32(16))]).is_ok());
    }

    /// The config of a minimal llama GGUF (metadata only) with `extra` keys added.
    fn gguf_config(extra: &[(&str, crate::gguf::Value)]) -> Result<LlamaConfig> {
        gguf_config_arch("llama", extra)
    }

    /// [`gguf_config`] of architecture `arch`: 64 wide, 4 heads of 16.
    fn gguf_config_arch(arch: &str, extra: &[(&str, crate::gguf::Value)]) -> Result<LlamaConfig> {
        use crate::gguf::Value as V;
        let mut w = crate::gguf_writer::GgufWriter::new();
        let k = |name: &str| format!("{arch}.{name}");
        w.kv("general.architecture", V::str(arch))
            .kv(&k("embedding_length"), V::U32(64))
            .kv(&k("feed_forward_length"), V::U32(128))
            .kv(&k("block_count"), V::U32(1))
            .kv(&k("attention.head_count"), V::U32(4))
            .kv(&k("context_length"), V::U32(2048))
            .kv(&k("vocab_size"), V::U32(32))
            .kv(&k("rope.freq_base"), V::F32(10000.0))
            .kv(&k("attention.layer_norm_rms_epsilon"), V::F32(1e-5));
        for (k, v) in extra {
            w.kv(k, v.clone());
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), w.to_bytes()).unwrap();
        LlamaConfig::from_gguf(&Gguf::open(f.path()).unwrap())
    }

    /// llama.cpp reads a missing `rope.scaling.type` as "linear" and takes the factor from
    /// `rope.scaling.factor` or the legacy `rope.scale_linear`: such files are linearly scaled.
    #[test]
    fn gguf_linear_rope_scaling_without_type() {
        use crate::gguf::Value as V;
        let linear = |c: &LlamaConfig| c.rope_scaling().unwrap();
        let plain = gguf_config(&[]).unwrap();
        assert_eq!(linear(&plain), RopeScaling::None);
        for k in ["llama.rope.scaling.factor", "llama.rope.scale_linear"] {
            let c = gguf_config(&[(k, V::F32(4.0))]).unwrap();
            assert_eq!(linear(&c), RopeScaling::Linear { factor: 4.0 }, "{k}");
            c.validate().unwrap();
            let f = c.rope_inv_freq().unwrap();
            assert_eq!(f[1], plain.rope_inv_freq().unwrap()[1] / 4.0, "{k}");
            // 0 and 1 mean unscaled, as in llama.cpp.
            for none in [0.0, 1.0] {
                assert_eq!(linear(&gguf_config(&[(k, V::F32(none))]).unwrap()), RopeScaling::None, "{k} = {none}");
            }
        }
        // `rope.scaling.factor` wins over the legacy key, as in llama.cpp.
        let c = gguf_config(&[("llama.rope.scaling.factor", V::F32(2.0)), ("llama.rope.scale_linear", V::F32(8.0))]).unwrap();
        assert_eq!(linear(&c), RopeScaling::Linear { factor: 2.0 });
        // An explicit type: linear takes either key, "none" with a factor is a contradiction.
        let c = gguf_config(&[("llama.rope.scaling.type", V::str("linear")), ("llama.rope.scale_linear", V::F32(2.0))]).unwrap();
        assert_eq!(linear(&c), RopeScaling::Linear { factor: 2.0 });
        let e = format!("{:#}", gguf_config(&[("llama.rope.scaling.type", V::str("linear"))]).unwrap_err());
        assert!(e.contains("llama.rope.scaling.factor") && e.contains("llama.rope.scale_linear"), "{e}");
        let e = format!(
            "{:#}",
            gguf_config(&[("llama.rope.scaling.type", V::str("none")), ("llama.rope.scaling.factor", V::F32(2.0))]).unwrap_err()
        );
        assert!(e.contains("`llama.rope.scaling.type` is \"none\"") && e.contains("`llama.rope.scaling.factor` = 2"), "{e}");
        assert_eq!(linear(&gguf_config(&[("llama.rope.scaling.type", V::str("none"))]).unwrap()), RopeScaling::None);
        // Other types are refused by validate(), by name.
        let c = gguf_config(&[("llama.rope.scaling.type", V::str("yarn")), ("llama.rope.scaling.factor", V::F32(4.0))]).unwrap();
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("yarn"));
    }

    #[test]
    fn shortest_f64_recovers_config_values() {
        assert_eq!(shortest_f64(1e-5f32 as f64), 1e-5);
        assert_eq!(shortest_f64(1e-6f32 as f64), 1e-6);
        assert_eq!(shortest_f64(100000.0), 100000.0);
        assert_eq!(shortest_f64(0.1), 0.1);
    }
}
