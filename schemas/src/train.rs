//! The YAML training recipe. Paths are relative to the recipe file; unknown keys are errors.
//! Defaults follow the DFT paper where it states one (lr 5e-5, AdamW betas 0.9/0.95, weight
//! decay 0.01, 10% warmup then cosine, clip 1.0).

use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Token-mean cross-entropy over loss tokens.
    Sft,
    /// Cross-entropy of each token weighted by its detached probability.
    Dft,
    /// Importance-weighted SFT: cross-entropy of each token weighted by the clipped, detached
    /// ratio of its current to its reference probability (needs a scored snapshot).
    Iwsft,
}

impl std::str::FromStr for LossKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "sft" => Ok(LossKind::Sft),
            "dft" => Ok(LossKind::Dft),
            "iwsft" => Ok(LossKind::Iwsft),
            other => bail!("unknown loss `{other}`: expected sft, dft or iwsft"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRecipe {
    /// GGUF file, or a Hugging Face folder (config.json + safetensors).
    pub model: String,
    /// A `train` snapshot folder from `pipeline build`.
    pub snapshot: String,
    pub output_dir: String,
    #[serde(default = "default_loss")]
    pub loss: LossKind,
    /// `iwsft` only: the bounds `[lo, hi]` of the token importance weight
    /// `clip(p_t / p_ref_t, lo, hi)`.
    #[serde(default = "default_iwsft_clip")]
    pub iwsft_clip: [f64; 2],
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_warmup")]
    pub warmup_ratio: f64,
    /// Global gradient-norm clip; 0 disables it.
    #[serde(default = "default_clip")]
    pub clip: f64,
    /// Tokens per optimizer step (packed rows x seq_len); rounded up to whole rows.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: usize,
    /// Rows per forward pass; the rest of a step is gradient accumulation.
    #[serde(default = "default_micro")]
    pub micro_batch_rows: usize,
    /// Optimizer steps; exactly one of `steps` and `epochs`.
    #[serde(default)]
    pub steps: Option<u64>,
    #[serde(default)]
    pub epochs: Option<f64>,
    #[serde(default)]
    pub seed: u64,
    /// Write a checkpoint every N steps (and always at the end).
    #[serde(default = "default_ckpt")]
    pub checkpoint_every: u64,
    /// Per-layer activation recompute: `false`, `true` (every block) or a number of blocks.
    #[serde(default)]
    pub recompute: Recompute,
}

/// Per-layer activation recompute: a recomputed block keeps only its input from the forward pass
/// and runs again in the backward pass. Less memory, more time; the same gradients. A number `N`
/// recomputes the first `N` blocks and keeps the others' activations, trading between the two
/// (Megatron's "block" method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Recompute {
    /// `true`: every block; `false`: none.
    Flag(bool),
    /// The first `N` blocks.
    Blocks(usize),
}

impl Default for Recompute {
    fn default() -> Self {
        Recompute::Flag(false)
    }
}

impl Recompute {
    /// How many of a model's `layers` blocks recompute.
    pub fn blocks(self, layers: usize) -> anyhow::Result<usize> {
        match self {
            Recompute::Flag(all) => Ok(if all { layers } else { 0 }),
            Recompute::Blocks(n) if n <= layers => Ok(n),
            Recompute::Blocks(n) => bail!("`recompute: {n}` asks for more blocks than the model's {layers}"),
        }
    }
}

impl std::str::FromStr for Recompute {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "true" | "all" => Ok(Recompute::Flag(true)),
            "false" | "none" => Ok(Recompute::Flag(false)),
            n => {
                n.parse().map(Recompute::Blocks).map_err(|_| anyhow::anyhow!("`recompute` is true, false or a number of blocks, got `{s}`"))
            }
        }
    }
}

impl std::fmt::Display for Recompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recompute::Flag(all) => write!(f, "{all}"),
            Recompute::Blocks(n) => write!(f, "{n}"),
        }
    }
}

fn default_loss() -> LossKind {
    LossKind::Dft
}
/// The token-level bounds of the iw-SFT authors' implementation: `1 ± 0.8`.
pub const DEFAULT_IWSFT_CLIP: [f64; 2] = [0.2, 1.8];

fn default_iwsft_clip() -> [f64; 2] {
    DEFAULT_IWSFT_CLIP
}
fn default_lr() -> f64 {
    5e-5
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.95]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_warmup() -> f64 {
    0.1
}
fn default_clip() -> f64 {
    1.0
}
fn default_batch_tokens() -> usize {
    4096
}
fn default_micro() -> usize {
    1
}
fn default_ckpt() -> u64 {
    50
}

impl TrainRecipe {
    pub fn load(path: &Path) -> anyhow::Result<TrainRecipe> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read training recipe {}: {e}", path.display()))?;
        let r: TrainRecipe = serde_norway::from_str(&text).map_err(|e| anyhow::anyhow!("training recipe {}: {e}", path.display()))?;
        Ok(r)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.steps.is_some() == self.epochs.is_some() {
            bail!("set exactly one of `steps` and `epochs`");
        }
        // Written so that a NaN learning rate fails too.
        let lr_positive = self.lr > 0.0;
        if !lr_positive || !(0.0..1.0).contains(&self.warmup_ratio) || self.micro_batch_rows == 0 || self.batch_tokens == 0 {
            bail!("`lr` and `batch_tokens` must be positive, `warmup_ratio` in [0, 1), `micro_batch_rows` at least 1");
        }
        let [lo, hi] = self.iwsft_clip;
        if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
            bail!("`iwsft_clip` must be [lo, hi] with 0 <= lo <= hi, got [{lo}, {hi}]");
        }
        if self.checkpoint_every == 0 {
            bail!("`checkpoint_every` must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_defaults_and_unknown_keys() {
        let r: TrainRecipe = serde_norway::from_str("model: m\nsnapshot: s\noutput_dir: o\nsteps: 3\n").unwrap();
        assert_eq!((r.loss, r.lr, r.betas, r.weight_decay, r.warmup_ratio, r.clip), (LossKind::Dft, 5e-5, [0.9, 0.95], 0.01, 0.1, 1.0));
        r.validate().unwrap();
        let err = serde_norway::from_str::<TrainRecipe>("model: m\nsnapshot: s\noutput_dir: o\nstep: 3\n").unwrap_err().to_string();
        assert!(err.contains("step"), "{err}");
        assert_eq!(r.iwsft_clip, [0.2, 1.8]);
        assert_eq!("iwsft".parse::<LossKind>().unwrap(), LossKind::Iwsft);
        let bad: TrainRecipe =
            serde_norway::from_str("model: m\nsnapshot: s\noutput_dir: o\nsteps: 3\nloss: iwsft\niwsft_clip: [2.0, 1.0]\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("iwsft_clip"));
    }

    #[test]
    fn recompute_is_a_flag_or_a_number_of_blocks() {
        let with =
            |v: &str| serde_norway::from_str::<TrainRecipe>(&format!("model: m\nsnapshot: s\noutput_dir: o\nsteps: 3\nrecompute: {v}\n"));
        let blocks = |v: &str| with(v).unwrap().recompute.blocks(30).unwrap();
        assert_eq!((blocks("false"), blocks("true"), blocks("12"), blocks("0"), blocks("30")), (0, 30, 12, 0, 30));
        let default: TrainRecipe = serde_norway::from_str("model: m\nsnapshot: s\noutput_dir: o\nsteps: 3\n").unwrap();
        assert_eq!(default.recompute.blocks(30).unwrap(), 0);
        assert!(with("31").unwrap().recompute.blocks(30).unwrap_err().to_string().contains("31"));
        assert!(with("-1").is_err() && with("some").is_err());
        for v in ["all", "true", "none", "false", "7"] {
            let r: Recompute = v.parse().unwrap();
            assert_eq!(r.to_string().parse::<Recompute>().unwrap(), r);
        }
        assert!("x".parse::<Recompute>().is_err());
    }
}
