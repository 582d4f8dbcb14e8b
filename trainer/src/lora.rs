//! LoRA's starting adapters: `A` drawn as PEFT draws it, `B` zero (see `schemas::train::Lora`),
//! or those of a PEFT adapter folder (`lora.from`).

use model_files::checkpoint::HostTensor;
use model_files::config::LlamaConfig;
use model_files::params::{is_adapter, Params, MAGNITUDE};
use schemas::rng::{mix64, SplitMix64};
use schemas::train::Lora;
use std::collections::BTreeMap;

/// Keeps the adapters' draw apart from the data order, which the same recipe seed drives.
const STREAM: u64 = 0x4c6f_5241_2d69_6e69;

/// The starting adapters of a model of `cfg`, by parameter name: each `A` `[rank, in]` uniform in
/// `±1/sqrt(in)` (PEFT's `kaiming_uniform_(a=sqrt(5))`), each `B` zero, so the adapted model
/// starts as the base model. The draw follows from `seed` alone, adapter by adapter in
/// [`Params::map`] order. DoRA's magnitudes are not drawn but follow from the base weights
/// (`model::Llama::initial_magnitudes`), so they are not here. Fails, before drawing anything,
/// where `lora` does not fit the model.
pub fn initial_adapters(cfg: &LlamaConfig, lora: &Lora, seed: u64) -> anyhow::Result<BTreeMap<String, HostTensor>> {
    let mut rng = SplitMix64::new(mix64(seed ^ STREAM));
    Ok(Params::shapes(cfg)
        .with_lora(lora)?
        .into_named()
        .into_iter()
        .filter(|(name, _)| is_adapter(&name.hf) && !name.hf.ends_with(MAGNITUDE))
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data = if name.hf.ends_with(".lora_A.weight") {
                let bound = 1.0 / (shape[1] as f64).sqrt();
                // 53 random bits: uniform in [0, 1), then onto [-bound, bound).
                (0..n).map(|_| (((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * bound).map(|x| x as f32).collect()
            } else {
                vec![0.0; n]
            };
            (name.hf, HostTensor { shape, data })
        })
        .collect())
}

/// The adapters of the folder `lora.from` names, checked for the run before anything costly is
/// loaded: an adapter folder (pointing to the `adapter/` of a run's `final/` or checkpoint where
/// it was given instead), of `lora`'s adapters ([`Lora::same_as`]: rank, alpha, targets, rsLoRA
/// and DoRA), with its sha256 for the state.
pub fn adapters_from(dir: &std::path::Path, lora: &Lora) -> anyhow::Result<(BTreeMap<String, HostTensor>, String)> {
    use model_files::lora::CONFIG_FILE;
    if !dir.exists() {
        anyhow::bail!("`lora.from` {}: no such folder", dir.display());
    }
    let inner = dir.join(crate::checkpoint::ADAPTER_DIR);
    if !dir.join(CONFIG_FILE).is_file() && inner.join(CONFIG_FILE).is_file() {
        anyhow::bail!("`lora.from` {} is a model folder; its adapters are in {}: name that", dir.display(), inner.display());
    }
    let (saved, adapters) = model_files::lora::read_adapter(dir).map_err(|e| anyhow::anyhow!("`lora.from`: {e:#}"))?;
    if !saved.same_as(lora) {
        anyhow::bail!(
            "`lora.from` {} holds adapters of {}, the recipe asks for {}: give the recipe the adapter's rank, alpha, targets, rslora and dora",
            dir.display(),
            saved.describe(),
            lora.describe()
        );
    }
    Ok((adapters, model_files::lora::adapter_sha256(dir)?))
}

/// Fails where a LoRA run resumed from `checkpoint`, which started from the adapters of sha256
/// `started` (None: fresh ones), is given another start: `from`, the recipe's `lora.from`,
/// compared by content, not by the path's text (a recipe read from elsewhere may name the same
/// folder otherwise). A `from` that is gone cannot be compared, and is said to be.
pub fn check_resumed_start(checkpoint: &std::path::Path, started: Option<&str>, from: Option<&std::path::Path>) -> anyhow::Result<()> {
    let now = match from {
        Some(d) if d.exists() => Some(model_files::lora::adapter_sha256(d)?),
        Some(d) => {
            tracing::warn!("`lora.from` {} is gone: the adapters this run started from cannot be compared", d.display());
            return Ok(());
        }
        None => None,
    };
    if now.as_deref() != started {
        let said = |h: Option<&str>| h.map_or("fresh adapters".to_string(), |h| format!("the adapters of sha256 {h}"));
        anyhow::bail!(
            "checkpoint {} started from {}; the recipe's `lora.from` gives {}: resume with the start it had",
            checkpoint.display(),
            said(started),
            said(now.as_deref())
        );
    }
    Ok(())
}

/// Fails where the adapters in `dir` were trained on another base than the one of sha256
/// `base_sha256` at `base`: known for the `adapter/` of a rectify run's `final/` or checkpoint,
/// beside which `training.json` or the checkpoint's state records its base's sha256; for others
/// only the base's name can be compared, and a different one is warned about.
pub fn check_adapter_base(dir: &std::path::Path, base: &std::path::Path, base_sha256: &str) -> anyhow::Result<()> {
    use crate::checkpoint::{STATE_FILE, TRAINING_FILE};
    // The one field `training.json` (`Provenance`) and a checkpoint's `TrainerState` share here.
    #[derive(serde::Deserialize)]
    struct Base {
        base_model_sha256: Option<String>,
    }
    let recorded = [TRAINING_FILE, STATE_FILE].into_iter().find_map(|name| {
        let path = dir.parent()?.join(name);
        let base: Base = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
        Some((path, base.base_model_sha256?))
    });
    match recorded {
        Some((path, h)) if h != base_sha256 => anyhow::bail!(
            "`lora.from` {} was trained on another base model (sha256 {h}, as its {} says) than this run's {} ({base_sha256})",
            dir.display(),
            path.display(),
            base.display()
        ),
        Some(_) => {}
        None => {
            if let Some(named) = model_files::lora::base_model(dir).filter(|n| model_files::lora::names_other_base(n, base)) {
                tracing::warn!(
                    "`lora.from` {} names its base `{named}`; this run's model is {}: make sure it was trained on these weights",
                    dir.display(),
                    base.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::train::LoraTarget;

    #[test]
    fn a_is_uniform_within_peft_bounds_and_b_is_zero() {
        let cfg: LlamaConfig = serde_json::from_str(
            r#"{"model_type": "llama", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                "max_position_embeddings": 64, "tie_word_embeddings": true}"#,
        )
        .unwrap();
        let lora = Lora::plain(8, 16.0, vec![LoraTarget::QProj, LoraTarget::DownProj]);
        let a = initial_adapters(&cfg, &lora, 1).unwrap();
        assert_eq!(a.len(), 2 * 2 * 2);
        let down = &a["model.layers.1.mlp.down_proj.lora_A.weight"];
        assert_eq!(down.shape, [8, 96]);
        let bound = 1.0 / 96f32.sqrt();
        assert!(down.data.iter().all(|x| x.abs() <= bound));
        // Spread over the whole range: a uniform's mean square is bound² / 3.
        let mean_square = down.data.iter().map(|x| x * x).sum::<f32>() / down.data.len() as f32;
        assert!((mean_square / (bound * bound / 3.0) - 1.0).abs() < 0.1, "{mean_square}");
        assert_eq!(a["model.layers.0.self_attn.q_proj.lora_B.weight"].shape, [64, 8]);
        assert!(a["model.layers.0.self_attn.q_proj.lora_B.weight"].data.iter().all(|&x| x == 0.0));
        // The seed decides the draw.
        assert_eq!(initial_adapters(&cfg, &lora, 1).unwrap(), a);
        assert_ne!(initial_adapters(&cfg, &lora, 2).unwrap(), a);
        // A rank past a projection's smaller side is refused before anything is drawn (a rank of
        // 100000 once aborted out of memory here).
        let huge = Lora { rank: 100_000, ..lora };
        let err = initial_adapters(&cfg, &huge, 1).unwrap_err().to_string();
        assert!(err.contains("`lora.rank` 100000 is larger than q_proj's smaller side (64, of [64, 64])"), "{err}");
    }
}
