//! The sampling a Hugging Face model's makers suggest in its `generation_config.json`, which
//! transformers' `generate` uses by default. rectify samples as its flags say (a setting that
//! changes the figures is never taken silently); this only lets a run say where they differ.

use schemas::generation::Sampling;
use std::path::Path;

/// `generation_config.json`'s sampling, with transformers' `GenerationConfig` defaults for keys
/// it leaves out: greedy unless `do_sample`, then temperature 1, top-p 1 and top-k 50.
#[derive(Debug, Clone, PartialEq)]
pub struct SuggestedSampling {
    pub do_sample: bool,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    /// Suggested settings rectify's sampler has no flag for, as `key value`
    /// (`repetition_penalty 1.05`).
    pub unsupported: Vec<String>,
}

/// `generation_config.json` sampling keys rectify does not apply, with the value that leaves
/// sampling as it is.
const UNSUPPORTED: [(&str, f64); 5] =
    [("repetition_penalty", 1.0), ("min_p", 0.0), ("typical_p", 1.0), ("no_repeat_ngram_size", 0.0), ("epsilon_cutoff", 0.0)];

impl SuggestedSampling {
    /// The suggestion of the model at `model` (a folder, or a file in one), if it makes one that
    /// can be read.
    pub fn of(model: &Path) -> Option<SuggestedSampling> {
        if crate::checkpoint::is_gguf(model) {
            return None;
        }
        let dir = crate::checkpoint::model_folder(model);
        let text = std::fs::read_to_string(dir.join("generation_config.json")).ok()?;
        let c: serde_json::Value = serde_json::from_str(&text).ok()?;
        // A file that names only token ids suggests nothing: transformers' defaults are no one's
        // choice.
        if !["do_sample", "temperature", "top_p", "top_k"].iter().any(|k| c.get(k).is_some_and(|v| !v.is_null())) {
            return None;
        }
        let num = |k: &str, default: f64| c.get(k).and_then(serde_json::Value::as_f64).unwrap_or(default);
        Some(SuggestedSampling {
            do_sample: c.get("do_sample").and_then(serde_json::Value::as_bool).unwrap_or(false),
            temperature: num("temperature", 1.0),
            top_p: num("top_p", 1.0),
            top_k: num("top_k", 50.0) as usize,
            unsupported: UNSUPPORTED
                .iter()
                .filter_map(|&(k, off)| c.get(k).and_then(serde_json::Value::as_f64).filter(|v| *v != off).map(|v| format!("{k} {v}")))
                .collect(),
        })
    }

    /// The suggestion as flags, where `sampling` is not it, and what of it no flag gives:
    /// `None` where they agree.
    pub fn differs_from(&self, sampling: &Sampling) -> Option<String> {
        let greedy = sampling.temperature == 0.0;
        let flags = if !self.do_sample {
            (!greedy).then(|| "greedy decoding (--temperature 0)".to_string())
        } else {
            let same = !greedy
                && (f64::from(sampling.temperature) - self.temperature).abs() < 1e-6
                && (f64::from(sampling.top_p) - self.top_p).abs() < 1e-6
                && sampling.top_k == self.top_k;
            (!same).then(|| format!("--temperature {} --top-p {} --top-k {}", self.temperature, self.top_p, self.top_k))
        };
        let unsupported = (!self.unsupported.is_empty()).then(|| format!("{} (no flag here)", self.unsupported.join(", ")));
        match (flags, unsupported) {
            (None, None) => None,
            (Some(f), None) | (None, Some(f)) => Some(f),
            (Some(f), Some(u)) => Some(format!("{f}, and {u}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_read_with_transformers_defaults_and_compared_with_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SuggestedSampling::of(dir.path()), None, "no file, no suggestion");
        // Qwen3's: sampling, top-k given.
        std::fs::write(dir.path().join("generation_config.json"), r#"{"do_sample": true, "temperature": 0.6, "top_k": 20, "top_p": 0.95}"#)
            .unwrap();
        let qwen3 = SuggestedSampling::of(&dir.path().join("model.safetensors")).unwrap();
        assert_eq!(qwen3, SuggestedSampling { do_sample: true, temperature: 0.6, top_p: 0.95, top_k: 20, unsupported: vec![] });
        let greedy = Sampling::greedy(64);
        assert_eq!(qwen3.differs_from(&greedy).unwrap(), "--temperature 0.6 --top-p 0.95 --top-k 20");
        let same = Sampling { temperature: 0.6, top_p: 0.95, top_k: 20, ..greedy };
        assert_eq!(qwen3.differs_from(&same), None);
        // Qwen2.5's: a repetition penalty, which no flag gives.
        std::fs::write(
            dir.path().join("generation_config.json"),
            r#"{"do_sample": true, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}"#,
        )
        .unwrap();
        let qwen25 = SuggestedSampling::of(dir.path()).unwrap();
        let said = qwen25.differs_from(&greedy).unwrap();
        assert_eq!(said, "--temperature 0.7 --top-p 0.8 --top-k 20, and repetition_penalty 1.05 (no flag here)");
        let followed = Sampling { temperature: 0.7, top_p: 0.8, top_k: 20, ..greedy };
        assert_eq!(qwen25.differs_from(&followed).unwrap(), "repetition_penalty 1.05 (no flag here)");
        // transformers' defaults: top-k 50 unless given; greedy without do_sample.
        std::fs::write(dir.path().join("generation_config.json"), r#"{"do_sample": true, "temperature": 0.7}"#).unwrap();
        assert_eq!(SuggestedSampling::of(dir.path()).unwrap().top_k, 50);
        std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": [2, 7]}"#).unwrap();
        assert_eq!(SuggestedSampling::of(dir.path()), None, "token ids alone suggest no sampling");
        std::fs::write(dir.path().join("generation_config.json"), r#"{"do_sample": false, "eos_token_id": [2, 7]}"#).unwrap();
        let plain = SuggestedSampling::of(dir.path()).unwrap();
        assert_eq!((plain.differs_from(&greedy), plain.differs_from(&same).unwrap().as_str()), (None, "greedy decoding (--temperature 0)"));
    }
}
