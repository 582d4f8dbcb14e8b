//! The YAML training recipe. Paths are relative to the recipe file; unknown keys are errors.
//! Defaults follow the DFT paper where it states one (lr 5e-5, AdamW betas 0.9/0.95, weight
//! decay 0.01, 10% warmup then cosine, clip 1.0).

use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// Token-mean cross-entropy over loss tokens.
    Sft,
    /// Cross-entropy of each token weighted by its detached probability.
    Dft,
    /// Importance-weighted SFT: cross-entropy of each token weighted by the clipped, detached
    /// ratio of its current to its reference probability (needs a scored snapshot).
    Iwsft,
}

spelled!(LossKind, "loss", { Sft => "sft", Dft => "dft", Iwsft => "iwsft" });

/// How the learning rate moves after the linear warmup: the decays reach 0 one step past the
/// last (the last step runs just above it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LrSchedule {
    /// Half a cosine from the peak down to 0 (the DFT paper's).
    #[default]
    Cosine,
    /// A straight line from the peak down to 0 (transformers' default, `linear`).
    Linear,
    /// The peak to the end (transformers' `constant_with_warmup`).
    Constant,
}

impl LrSchedule {
    /// The learning rate of the step at `progress` (0 to 1) through the steps after warmup, as
    /// a fraction of the peak.
    pub fn fraction(self, progress: f64) -> f64 {
        match self {
            LrSchedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            LrSchedule::Linear => 1.0 - progress,
            LrSchedule::Constant => 1.0,
        }
    }
}

spelled!(LrSchedule, "lr_schedule", { Cosine => "cosine", Linear => "linear", Constant => "constant" });

/// Low-rank adaptation (LoRA, Hu et al. 2021) as PEFT's `LoraConfig` computes it: each target
/// projection `W` of every block gains `scale · B A` (`scale`: `alpha / rank`, or `alpha /
/// sqrt(rank)` with `rslora`), with `A` `[rank, in]` and `B` `[out, rank]`; only `A` and `B` (and
/// DoRA's magnitudes) train, the base weights stay as loaded. `A` starts as PEFT
/// draws it (uniform in `±1/sqrt(in)`), `B` at zero, so the first forward pass is the base model's;
/// or both start as a PEFT adapter folder holds them (`from`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lora {
    pub rank: usize,
    pub alpha: f64,
    /// The projections adapted in every block (PEFT's `target_modules`): a list, or `all-linear`.
    #[serde(deserialize_with = "lora_targets")]
    pub targets: Vec<LoraTarget>,
    /// Rank-stabilised LoRA (Kalajdzievski 2023; PEFT's `use_rslora`): the adapters' output is
    /// scaled by `alpha / sqrt(rank)`, which keeps its size from shrinking as the rank grows.
    /// Absent: plain LoRA's `alpha / rank`, PEFT's default; written only when set, so recipes and
    /// states of runs from before it existed read back unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rslora: bool,
    /// DoRA (Liu et al. 2024; PEFT's `use_dora`): each adapted projection also learns a magnitude
    /// per output row, `m ⊙ (W + scale · B A) / ||W + scale · B A||` (the norm over each row,
    /// held constant in the backward pass, as the paper's section 4.3 and PEFT do). `m` starts at
    /// the base weights' row norms, so the adapted model starts as the base model.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dora: bool,
    /// LoRA dropout (PEFT's `lora_dropout`): in training, each element of an adapted
    /// projection's input to the low-rank path is zeroed with this probability and the rest
    /// scaled by `1 / (1 - dropout)`, a fresh draw for every projection, row and step (seeded, so
    /// a resume and activation recompute draw the same). Off in held-out measurement, evaluation
    /// and merges. Absent: 0, PEFT's default; written only when set.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropout: f64,
    /// A PEFT adapter folder (relative to the recipe) whose adapters training starts from, as
    /// LLaMA-Factory's `adapter_name_or_path` continues one: its rank, alpha, targets, `rslora`
    /// and `dora` must be these. None: fresh adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// A projection LoRA can adapt, by its Hugging Face module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoraTarget {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

// `ALL` is every projection of a block: PEFT's `all-linear` (which leaves out the output head).
spelled!(LoraTarget, "LoRA target", {
    QProj => "q_proj",
    KProj => "k_proj",
    VProj => "v_proj",
    OProj => "o_proj",
    GateProj => "gate_proj",
    UpProj => "up_proj",
    DownProj => "down_proj",
});

/// `targets`: a list of projection names, or PEFT's `all-linear` (all seven).
fn lora_targets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<LoraTarget>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        List(Vec<String>),
        One(String),
    }
    let names = match Written::deserialize(d)? {
        Written::One(s) if s == "all-linear" => return Ok(LoraTarget::ALL.to_vec()),
        Written::One(s) => return Err(serde::de::Error::custom(format!("`targets` is `{s}`: give a list, as `[{s}]`, or `all-linear`"))),
        Written::List(names) => names,
    };
    names
        .iter()
        .map(|n| {
            LoraTarget::parse_name(n).map_err(|e| {
                let why = if n == "lm_head" || n == "embed_tokens" { " (the head and the embeddings are not adapted)" } else { "" };
                serde::de::Error::custom(format!("{e}{why}"))
            })
        })
        .collect()
}

impl Lora {
    /// Plain LoRA of these shapes from fresh adapters: PEFT's defaults for the rest (no rsLoRA,
    /// DoRA or dropout).
    pub fn plain(rank: usize, alpha: f64, targets: Vec<LoraTarget>) -> Lora {
        Lora { rank, alpha, targets, rslora: false, dora: false, dropout: 0.0, from: None }
    }

    /// The factor of `B A`: `alpha / rank`, or `alpha / sqrt(rank)` with rsLoRA (PEFT's
    /// `scaling`, with and without `use_rslora`).
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    pub fn adapts(&self, target: LoraTarget) -> bool {
        self.targets.contains(&target)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.rank == 0 {
            bail!("`lora.rank` must be at least 1, got 0");
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            bail!("`lora.alpha` must be positive, got {}", self.alpha);
        }
        if self.targets.is_empty() {
            bail!("`lora.targets` is empty: name the projections to adapt (all of them: {})", Self::all_names());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("`lora.dropout` must be in [0, 1), got {}", self.dropout);
        }
        let mut seen = self.targets.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.targets.len() {
            bail!("`lora.targets` names a projection twice: {:?}", self.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>());
        }
        Ok(())
    }

    fn all_names() -> String {
        LoraTarget::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// How messages and resume checks write it: the adapters ([`Lora::adapters_described`]) and
    /// the dropout that trains them.
    pub fn describe(&self) -> String {
        if self.dropout == 0.0 {
            self.adapters_described()
        } else {
            format!("{}, dropout {}", self.adapters_described(), self.dropout)
        }
    }

    /// The adapters' shapes and scale: the targets in one order (a block's), since the order
    /// they are listed in changes nothing.
    fn adapters_described(&self) -> String {
        let mut targets = self.targets.clone();
        targets.sort();
        let rslora = if self.rslora { " (rsLoRA)" } else { "" };
        let dora = if self.dora { ", DoRA" } else { "" };
        format!(
            "rank {}, alpha {}{rslora}{dora}, targets [{}]",
            self.rank,
            self.alpha,
            targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
        )
    }

    /// Adapters of the same shapes and scale, whatever order the targets are listed in, wherever
    /// they start from and whatever dropout trains them.
    pub fn same_as(&self, other: &Lora) -> bool {
        self.adapters_described() == other.adapters_described()
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
    /// After the warmup: `cosine` (default), `linear` or `constant`. Absent in runs saved
    /// before it existed, which all decayed as cosine.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
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
    /// Keep only the newest N checkpoints, deleting older ones as new ones are written (as
    /// transformers' `save_total_limit`); unset keeps them all. Each holds the weights and both
    /// AdamW moments: 1.6 GB for a 135M model, 18 GB for a 1.5B one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_checkpoints: Option<u64>,
    /// A `train` snapshot of held-out rows (`pipeline build`, e.g. `recipes/validation.yaml`):
    /// the model's loss on them is measured before the first step, every `validation_every`
    /// steps and after the last, into `validation.jsonl`. Measuring changes nothing in training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_snapshot: Option<String>,
    /// Steps between validation measurements (default: `checkpoint_every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_every: Option<u64>,
    /// Train low-rank adapters instead of every weight; absent: full fine-tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<Lora>,
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

/// The recipe keys whose values change what is computed: a resumed run must keep them, and a
/// recipe that leaves one out is told which default it got.
pub const MATH_KEYS: [&str; 13] = [
    "loss",
    "iwsft_clip",
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "warmup_ratio",
    "lr_schedule",
    "clip",
    "batch_tokens",
    "steps",
    "epochs",
    "seed",
];

impl TrainRecipe {
    pub fn load(path: &Path) -> anyhow::Result<TrainRecipe> {
        Ok(Self::load_with_unset(path)?.0)
    }

    /// The recipe, and the keys of [`MATH_KEYS`] its file leaves to their defaults.
    pub fn load_with_unset(path: &Path) -> anyhow::Result<(TrainRecipe, Vec<&'static str>)> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read training recipe {}: {e}", path.display()))?;
        let r: TrainRecipe = serde_norway::from_str(&text).map_err(|e| {
            // A data recipe (datasets/recipes/*.yaml) given in its place: say which tool reads it.
            let hint = if serde_norway::from_str::<crate::recipe::Recipe>(&text).is_ok() {
                format!("\n  this is a data recipe: build it with `pipeline build --recipe {} --out DIR`", path.display())
            } else {
                String::new()
            };
            anyhow::anyhow!("training recipe {}: {e}{hint}", path.display())
        })?;
        let keys: serde_norway::Mapping = serde_norway::from_str(&text).unwrap_or_default();
        if keys.get("lora").is_some_and(serde_norway::Value::is_null) {
            // `lora:` with its settings left out (or commented out) would otherwise train every
            // weight, at a learning rate chosen for adapters.
            bail!(
                "training recipe {}: `lora` is empty: give {{rank, alpha, targets}}, or remove the key for full fine-tuning",
                path.display()
            );
        }
        let unset = MATH_KEYS.into_iter().filter(|k| !keys.contains_key(*k)).collect();
        Ok((r, unset))
    }

    /// The value of one of [`MATH_KEYS`], as written in messages.
    pub fn math_value(&self, key: &str) -> String {
        match key {
            "loss" => self.loss.as_str().to_string(),
            "iwsft_clip" => format!("{:?}", self.iwsft_clip),
            "lr" => self.lr.to_string(),
            "betas" => format!("{:?}", self.betas),
            "eps" => self.eps.to_string(),
            "weight_decay" => self.weight_decay.to_string(),
            "warmup_ratio" => self.warmup_ratio.to_string(),
            "lr_schedule" => self.lr_schedule.as_str().to_string(),
            "clip" => self.clip.to_string(),
            "batch_tokens" => self.batch_tokens.to_string(),
            "steps" => self.steps.map_or("unset".into(), |v| v.to_string()),
            "epochs" => self.epochs.map_or("unset".into(), |v| v.to_string()),
            "seed" => self.seed.to_string(),
            "lora" => self.lora.as_ref().map_or("none (full fine-tuning)".into(), Lora::describe),
            other => unreachable!("`{other}` is not one of MATH_KEYS"),
        }
    }

    /// `key: was -> now` for each of [`MATH_KEYS`] and `lora` whose value differs between `self`
    /// and `now`. `lora` is not among the keys a recipe is told it left out: leaving it out is
    /// full fine-tuning, not a default of the adapters.
    pub fn math_differences(&self, now: &TrainRecipe) -> Vec<String> {
        MATH_KEYS
            .into_iter()
            .chain(["lora"])
            .filter_map(|k| {
                let (a, b) = (self.math_value(k), now.math_value(k));
                (a != b).then(|| format!("{k}: {a} -> {b}"))
            })
            .collect()
    }

    /// Steps between validation measurements: `validation_every`, else `checkpoint_every`.
    pub fn validation_interval(&self) -> u64 {
        self.validation_every.unwrap_or(self.checkpoint_every)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.steps.is_some() == self.epochs.is_some() {
            bail!("set exactly one of `steps` and `epochs`");
        }
        if self.steps == Some(0) {
            bail!("`steps` must be at least 1, got 0");
        }
        if let Some(e) = self.epochs.filter(|e| !(e.is_finite() && *e > 0.0)) {
            bail!("`epochs` must be a positive number, got {e}");
        }
        // Each comparison is written so that NaN fails it.
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("`lr` must be positive, got {}", self.lr);
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            bail!("`warmup_ratio` must be in [0, 1), got {}", self.warmup_ratio);
        }
        if self.micro_batch_rows == 0 {
            bail!("`micro_batch_rows` must be at least 1, got 0");
        }
        if self.batch_tokens == 0 {
            bail!("`batch_tokens` must be positive, got 0");
        }
        // beta2 = 1 would divide 0 by 0 in the bias correction and make every weight NaN.
        let [b1, b2] = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            bail!("`betas` must both be in [0, 1), got [{b1}, {b2}]");
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            bail!("`eps` must be positive, got {}", self.eps);
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            bail!("`weight_decay` must be 0 or more, got {}", self.weight_decay);
        }
        if !(self.clip >= 0.0 && self.clip.is_finite()) {
            bail!("`clip` must be 0 (off) or a positive norm, got {}", self.clip);
        }
        let [lo, hi] = self.iwsft_clip;
        if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
            bail!("`iwsft_clip` must be [lo, hi] with 0 <= lo <= hi, got [{lo}, {hi}]");
        }
        if self.checkpoint_every == 0 {
            bail!("`checkpoint_every` must be at least 1");
        }
        if self.validation_every.is_some() && self.validation_snapshot.is_none() {
            bail!("`validation_every` is set but `validation_snapshot` is not: name the held-out snapshot to measure");
        }
        if self.validation_every == Some(0) {
            bail!("`validation_every` must be at least 1");
        }
        if let Some(lora) = &self.lora {
            lora.validate()?;
        }
        if self.keep_checkpoints == Some(0) {
            bail!("`keep_checkpoints` must be at least 1 (the newest is what --resume continues from); leave it out to keep all");
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
    fn values_that_would_break_the_math_are_errors() {
        let base = "model: m\nsnapshot: s\noutput_dir: o\n";
        for (extra, what) in [
            ("steps: 3\nbetas: [0.9, 1.0]", "betas"),
            ("steps: 3\neps: 0", "eps"),
            ("steps: 3\nweight_decay: -0.1", "weight_decay"),
            ("steps: 3\nclip: .nan", "clip"),
            ("steps: 3\nlr: .inf", "`lr` must be positive, got inf"),
            ("steps: 3\nlr: -1", "`lr` must be positive, got -1"),
            ("steps: 3\nwarmup_ratio: 1", "`warmup_ratio` must be in [0, 1), got 1"),
            ("steps: 3\nbatch_tokens: 0", "`batch_tokens` must be positive, got 0"),
            ("steps: 0", "`steps` must be at least 1, got 0"),
            ("epochs: 0", "`epochs` must be a positive number, got 0"),
        ] {
            let r: TrainRecipe = serde_norway::from_str(&format!("{base}{extra}\n")).unwrap();
            let err = r.validate().unwrap_err().to_string();
            // One field named, with its value.
            assert!(err.contains(what), "{extra}: {err}");
        }
    }

    #[test]
    fn lora_settings_are_checked_and_part_of_the_math() {
        let base = "model: m\nsnapshot: s\noutput_dir: o\nsteps: 3\n";
        let r: TrainRecipe =
            serde_norway::from_str(&format!("{base}lora: {{rank: 8, alpha: 16, targets: [q_proj, down_proj]}}\n")).unwrap();
        r.validate().unwrap();
        let lora = r.lora.clone().unwrap();
        assert_eq!((lora.scale(), lora.targets), (2.0, vec![LoraTarget::QProj, LoraTarget::DownProj]));
        for (extra, said) in [
            ("lora: {rank: 0, alpha: 16, targets: [q_proj]}", "`lora.rank` must be at least 1, got 0"),
            ("lora: {rank: 8, alpha: 0, targets: [q_proj]}", "`lora.alpha` must be positive, got 0"),
            ("lora: {rank: 8, alpha: 16, targets: []}", "`lora.targets` is empty"),
            ("lora: {rank: 8, alpha: 16, targets: [q_proj, q_proj]}", "names a projection twice"),
            ("lora: {rank: 8, alpha: 16, targets: [q_proj], dropout: 1.0}", "`lora.dropout` must be in [0, 1), got 1"),
            ("lora: {rank: 8, alpha: 16, targets: [q_proj], dropout: .nan}", "`lora.dropout` must be in [0, 1), got NaN"),
        ] {
            let r: TrainRecipe = serde_norway::from_str(&format!("{base}{extra}\n")).unwrap();
            let err = r.validate().unwrap_err().to_string();
            assert!(err.contains(said), "{extra}: {err}");
        }
        // PEFT's `all-linear` is all seven; a single name must be a list.
        let all: TrainRecipe = serde_norway::from_str(&format!("{base}lora: {{rank: 8, alpha: 16, targets: all-linear}}\n")).unwrap();
        assert_eq!(all.lora.unwrap().targets, LoraTarget::ALL.to_vec());
        let err = serde_norway::from_str::<TrainRecipe>(&format!("{base}lora: {{rank: 8, alpha: 16, targets: q_proj}}\n")).unwrap_err();
        assert!(err.to_string().contains("`targets` is `q_proj`: give a list, as `[q_proj]`, or `all-linear`"), "{err}");
        // Unknown projections and PEFT settings rectify does not compute are refused by name.
        for (extra, said) in [
            ("lora: {rank: 8, alpha: 16, targets: [lm_head]}", "unknown LoRA target `lm_head`: expected one of q_proj, k_proj"),
            ("lora: {rank: 8, alpha: 16, targets: [lm_head]}", "(the head and the embeddings are not adapted)"),
            ("lora: {rank: 8, alpha: 16, targets: [q_proj], drop_out: 0.05}", "unknown field `drop_out`"),
        ] {
            let err = serde_norway::from_str::<TrainRecipe>(&format!("{base}{extra}\n")).unwrap_err().to_string();
            assert!(err.contains(said), "{extra}: {err}");
        }
        // `lora:` with nothing under it is refused, not read as full fine-tuning.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, format!("{base}lora:\n  # rank: 16\n")).unwrap();
        let err = TrainRecipe::load(&path).unwrap_err().to_string();
        assert!(err.contains("`lora` is empty: give {rank, alpha, targets}, or remove the key"), "{err}");
        // Adding, dropping or changing the adapters changes the math: a resume is refused.
        let full: TrainRecipe = serde_norway::from_str(base).unwrap();
        assert_eq!(full.math_differences(&r), ["lora: none (full fine-tuning) -> rank 8, alpha 16, targets [q_proj, down_proj]"]);
        // The order the targets are listed in is no change.
        let reordered: TrainRecipe =
            serde_norway::from_str(&format!("{base}lora: {{rank: 8, alpha: 16, targets: [down_proj, q_proj]}}\n")).unwrap();
        assert!(r.math_differences(&reordered).is_empty());
        assert!(r.lora.as_ref().unwrap().same_as(reordered.lora.as_ref().unwrap()));
        // Starting from an adapter folder: the same shapes. Where they start is compared on a
        // resume by the adapters' sha256 (the trainer's state), not by the path's text.
        let from: TrainRecipe =
            serde_norway::from_str(&format!("{base}lora: {{rank: 8, alpha: 16, targets: [q_proj, down_proj], from: ../sft/adapter}}\n"))
                .unwrap();
        assert_eq!(from.lora.as_ref().unwrap().from.as_deref(), Some("../sft/adapter"));
        assert!(r.lora.as_ref().unwrap().same_as(from.lora.as_ref().unwrap()));
        assert!(r.math_differences(&from).is_empty());
        // rsLoRA scales by alpha / sqrt(rank) (16 / sqrt(8)), is another scale for resumes and
        // adapters, and is written only when set (a recipe from before it reads back the same).
        let rs: TrainRecipe =
            serde_norway::from_str(&format!("{base}lora: {{rank: 8, alpha: 16, targets: [q_proj, down_proj], rslora: true}}\n")).unwrap();
        let rs_lora = rs.lora.clone().unwrap();
        assert!((rs_lora.scale() - 16.0 / 8f64.sqrt()).abs() < 1e-12, "{}", rs_lora.scale());
        assert!(!rs_lora.same_as(r.lora.as_ref().unwrap()));
        assert_eq!(
            r.math_differences(&rs),
            ["lora: rank 8, alpha 16, targets [q_proj, down_proj] -> rank 8, alpha 16 (rsLoRA), targets [q_proj, down_proj]"]
        );
        assert!(!serde_json::to_string(&r).unwrap().contains("rslora"));
        assert!(serde_json::to_string(&rs).unwrap().contains(r#""rslora":true"#));
        // Dropout trains the same adapters otherwise: another run's adapters fit, a resume may
        // not change it (it changes the math of training).
        let dropped: TrainRecipe =
            serde_norway::from_str(&format!("{base}lora: {{rank: 8, alpha: 16, targets: [q_proj, down_proj], dropout: 0.05}}\n")).unwrap();
        dropped.validate().unwrap();
        assert!(dropped.lora.as_ref().unwrap().same_as(r.lora.as_ref().unwrap()));
        assert_eq!(
            r.math_differences(&dropped),
            ["lora: rank 8, alpha 16, targets [q_proj, down_proj] -> rank 8, alpha 16, targets [q_proj, down_proj], dropout 0.05"]
        );
        assert!(!serde_json::to_string(&r).unwrap().contains("dropout"));
    }

    #[test]
    fn validation_needs_its_snapshot_and_defaults_to_the_checkpoint_interval() {
        let base = "model: m\nsnapshot: s\noutput_dir: o\nsteps: 3\ncheckpoint_every: 7\n";
        let r: TrainRecipe = serde_norway::from_str(&format!("{base}validation_snapshot: v\n")).unwrap();
        r.validate().unwrap();
        assert_eq!(r.validation_interval(), 7);
        let r: TrainRecipe = serde_norway::from_str(&format!("{base}validation_snapshot: v\nvalidation_every: 2\n")).unwrap();
        assert_eq!(r.validation_interval(), 2);
        for (extra, said) in [
            ("validation_every: 2", "`validation_every` is set but `validation_snapshot` is not"),
            ("validation_snapshot: v\nvalidation_every: 0", "`validation_every` must be at least 1"),
        ] {
            let r: TrainRecipe = serde_norway::from_str(&format!("{base}{extra}\n")).unwrap();
            let err = r.validate().unwrap_err().to_string();
            assert!(err.contains(said), "{extra}: {err}");
        }
        // Not a value of the math: a resume may add, change or drop it.
        let mut now = r.clone();
        now.validation_snapshot = Some("other".into());
        assert!(r.math_differences(&now).is_empty());
    }

    #[test]
    fn unset_keys_and_differences_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "model: m\nsnapshot: s\noutput_dir: o\nsteps: 3\nloss: sft\nlr: 1.0e-5\n").unwrap();
        let (r, unset) = TrainRecipe::load_with_unset(&path).unwrap();
        assert_eq!(
            unset,
            ["iwsft_clip", "betas", "eps", "weight_decay", "warmup_ratio", "lr_schedule", "clip", "batch_tokens", "epochs", "seed"]
        );
        let mut now = r.clone();
        assert!(r.math_differences(&now).is_empty());
        now.loss = LossKind::Dft;
        now.steps = Some(4);
        now.lr_schedule = LrSchedule::Linear;
        now.micro_batch_rows = 2; // not math: only the order of a sum
        assert_eq!(r.math_differences(&now), ["loss: sft -> dft", "lr_schedule: cosine -> linear", "steps: 3 -> 4"]);
    }

    #[test]
    fn the_lr_schedule_is_named_or_cosine() {
        let with = |extra: &str| serde_norway::from_str::<TrainRecipe>(&format!("model: m\nsnapshot: s\noutput_dir: o\nsteps: 3\n{extra}"));
        // A run saved before the key existed decayed as cosine, and resumes so.
        assert_eq!(with("").unwrap().lr_schedule, LrSchedule::Cosine);
        assert_eq!(with("lr_schedule: linear\n").unwrap().lr_schedule, LrSchedule::Linear);
        assert_eq!(with("lr_schedule: constant\n").unwrap().lr_schedule, LrSchedule::Constant);
        let err = with("lr_schedule: cosine_with_restarts\n").unwrap_err().to_string();
        assert!(err.contains("cosine_with_restarts") && err.contains("linear"), "{err}");
        assert_eq!("linear".parse::<LrSchedule>().unwrap(), LrSchedule::Linear);
        assert!("step".parse::<LrSchedule>().unwrap_err().to_string().contains("expected one of cosine, linear, constant"));
        // The recipe a checkpoint's state saved before the key existed (JSON, without it).
        let mut saved = serde_json::to_value(with("lr_schedule: linear\n").unwrap()).unwrap();
        saved.as_object_mut().unwrap().remove("lr_schedule").unwrap();
        assert_eq!(serde_json::from_value::<TrainRecipe>(saved).unwrap().lr_schedule, LrSchedule::Cosine);
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
