//! What generation is asked to do and how a completion ended, as evaluation results and
//! rollouts record them. The sampler itself lives in `model`; these are the settings and
//! outcomes every format that stores generated text shares.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 means greedy (argmax; ties go to the lowest id).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    /// 1.0 keeps all.
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    pub max_new_tokens: usize,
    pub seed: u64,
}

impl Sampling {
    pub fn greedy(max_new_tokens: usize) -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, max_new_tokens, seed: 0 }
    }

    /// A temperature is 0 (greedy) or positive and finite: a negative one would decode greedily
    /// under another name, and NaN would leave no candidate.
    pub fn check_temperature(t: f32) -> Result<f32, String> {
        if t >= 0.0 && t.is_finite() {
            // -0 is 0: one spelling of greedy in summaries and cache keys.
            Ok(t.abs())
        } else {
            Err(format!("temperature must be 0 (greedy) or positive, not {t}"))
        }
    }

    /// top-p is in (0, 1]: 0 or less would keep one token, greedy under another name.
    pub fn check_top_p(p: f32) -> Result<f32, String> {
        if p > 0.0 && p <= 1.0 {
            Ok(p)
        } else {
            Err(format!("top-p must be in (0, 1], not {p}"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finish {
    /// Ended with one of the stop tokens (kept as the last id).
    Stop,
    /// Reached `max_new_tokens` or the model's context length.
    Length,
}

spelled!(Finish, "finish reason", { Stop => "stop", Length => "length" }, custom FromStr);

impl std::str::FromStr for Finish {
    type Err = anyhow::Error;
    /// `stop` and `length` as rectify writes them; `eos` and `stop_sequence` (other engines'
    /// words for an ended turn) read as `stop`.
    fn from_str(s: &str) -> anyhow::Result<Finish> {
        match s {
            "eos" | "stop_sequence" => Ok(Finish::Stop),
            other => Finish::parse_name(other),
        }
    }
}
