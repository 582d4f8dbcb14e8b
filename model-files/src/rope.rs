//! Rotary embeddings' frequencies as a config asks for them: plain RoPE, or the scalings current
//! small models use, `linear` (position interpolation) and `llama3` (Llama 3.1 / 3.2). Read from
//! transformers 4's `rope_scaling` or transformers 5's `rope_parameters`; any other scaling is an
//! error that names it, since a model that ignored it would load and be wrong.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: `inv_freq[j] = theta^(-2j/d)`.
    None,
    /// Every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's: long wavelengths divided by `factor`, short ones kept, a smooth blend between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// The scalings implemented, as `rope_type` names them.
pub const SUPPORTED: [&str; 3] = ["default", "linear", "llama3"];

impl RopeScaling {
    /// The scaling of a config's extra keys: `rope_parameters` (transformers 5) when it names a
    /// type, else `rope_scaling` (transformers 4, which spelled the type `type` before `rope_type`).
    pub fn from_config(extra: &BTreeMap<String, Value>) -> Result<RopeScaling> {
        let read = |key: &str| -> Result<Option<RopeScaling>> {
            match extra.get(key).filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(map) => Self::parse(map).with_context(|| format!("{key} {map}")).map(Some),
            }
        };
        match (read("rope_parameters")?, read("rope_scaling")?) {
            (None, None) => Ok(RopeScaling::None),
            (Some(s), None) | (None, Some(s)) => Ok(s),
            // A transformers 5 config may carry both; a plain `rope_parameters` names no scaling.
            (Some(RopeScaling::None), Some(s)) => Ok(s),
            (Some(a), Some(b)) if b == RopeScaling::None || a == b => Ok(a),
            (Some(a), Some(b)) => bail!("rope_parameters ({a:?}) and rope_scaling ({b:?}) name different scalings"),
        }
    }

    fn parse(map: &Value) -> Result<RopeScaling> {
        let num = |k: &str| -> Result<f64> {
            match map.get(k).and_then(Value::as_f64) {
                Some(v) if v > 0.0 && v.is_finite() => Ok(v),
                Some(v) => bail!("`{k}` = {v} is not a positive number"),
                None => bail!("`{k}` is missing: it sets how the rotary frequencies are scaled"),
            }
        };
        if map.get("partial_rotary_factor").and_then(Value::as_f64).is_some_and(|f| f != 1.0) {
            bail!("partial_rotary_factor is not supported: the model rotates whole heads");
        }
        Ok(match kind(map)? {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: num("factor")? },
            "llama3" => {
                let (low_freq_factor, high_freq_factor) = (num("low_freq_factor")?, num("high_freq_factor")?);
                if high_freq_factor <= low_freq_factor {
                    bail!("high_freq_factor {high_freq_factor} must exceed low_freq_factor {low_freq_factor}");
                }
                RopeScaling::Llama3 {
                    factor: num("factor")?,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings: num("original_max_position_embeddings")?,
                }
            }
            other => bail!("rope type `{other}` is not supported (supported: {})", SUPPORTED.join(", ")),
        })
    }

    /// The `head_dim / 2` inverse frequencies for base `theta`, scaled, in f64 (transformers
    /// computes the same formulas in f32).
    pub fn inv_freq(&self, theta: f64, head_dim: usize) -> Vec<f64> {
        let half = head_dim / 2;
        (0..half)
            .map(|j| {
                let f = 1.0 / theta.powf((2 * j) as f64 / head_dim as f64);
                match *self {
                    RopeScaling::None => f,
                    RopeScaling::Linear { factor } => f / factor,
                    RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < old / high_freq_factor {
                            f
                        } else if wavelen > old / low_freq_factor {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    }
                }
            })
            .collect()
    }
}

/// The llama3 scaling whose per-frequency divisors are `factors`, as llama.cpp's converter writes
/// them to a GGUF's `rope_freqs.weight` (`inv_freq[j] / factors[j]` is the scaled frequency);
/// `None` when every factor is 1. An error when they follow no llama3 scaling.
///
/// The llama3 formula depends on `original_max_position_embeddings`, `low_freq_factor` and
/// `high_freq_factor` only through their ratios, so `low_freq_factor` is taken as 1 (every Llama
/// 3.x config's value) and the other two are fitted to the blended frequencies; the result is then
/// checked factor by factor, so a fit that does not reproduce the file is refused, never used.
pub fn llama3_from_factors(factors: &[f64], theta: f64, head_dim: usize) -> Result<RopeScaling> {
    if factors.len() != head_dim / 2 {
        bail!("{} rotary factors for head_dim {head_dim} (expected {})", factors.len(), head_dim / 2);
    }
    if factors.iter().all(|&r| r == 1.0) {
        return Ok(RopeScaling::None);
    }
    let plain = RopeScaling::None.inv_freq(theta, head_dim);
    // The file holds f32s; configs hold round numbers (32, 8192, 4): snap to them when within
    // f32 noise (`factor` always; the fitted two only when that changes no factor, below).
    let snap = |x: f64| if (x - x.round()).abs() <= 1e-4 * x.abs() { x.round() } else { x };
    let factor = snap(factors[factors.len() - 1]);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs();
    // The blend: smooth = (old / wavelen - 1) / (high - 1), linear in the frequency f.
    let blended: Vec<(f64, f64)> = plain
        .iter()
        .zip(factors)
        .filter(|(_, &r)| !close(r, 1.0) && !close(r, factor))
        .map(|(&f, &r)| (f, (1.0 / r - 1.0 / factor) / (1.0 - 1.0 / factor)))
        .collect();
    let wavelen = |f: f64| 2.0 * std::f64::consts::PI / f;
    // Wavelengths of the last unscaled and the first fully scaled frequency bound the blend.
    let last_kept = plain.iter().zip(factors).filter(|(_, &r)| close(r, 1.0)).map(|(&f, _)| wavelen(f)).fold(0.0, f64::max);
    let first_scaled = plain.iter().zip(factors).filter(|(_, &r)| close(r, factor)).map(|(&f, _)| wavelen(f)).fold(f64::INFINITY, f64::min);
    // The fit, and for the underdetermined cases how `high` follows from a chosen `old` (so that
    // `old` can be a whole number, which transformers requires of
    // original_max_position_embeddings).
    let (old, high, high_for): (f64, f64, Box<dyn Fn(f64) -> f64>) = match blended.as_slice() {
        // Too few blended frequencies to fit a line. Any (old, high) whose two boundaries fall
        // in the right gaps gives these factors: put the short boundary `old / high` at the
        // geometric middle of its gap, and the long one `old` through the blended point (or at
        // the first fully scaled frequency when there is none).
        [] => {
            let long = if first_scaled.is_finite() { first_scaled } else { 2.0 * wavelen(plain[plain.len() - 1]) };
            let short = if last_kept > 0.0 { (last_kept * long).sqrt() } else { long / 2.0 };
            // No frequency lies between the two boundaries, so `old` may sit anywhere there.
            let old = (short * long).sqrt();
            (old, old / short, Box::new(move |old| old / short))
        }
        &[(f, smooth)] => {
            // smooth = (old / w - 1) / (old / short - 1), solved for old.
            let w = wavelen(f);
            let short = if last_kept > 0.0 { (last_kept * w).sqrt() } else { w / 2.0 };
            let old = short * (1.0 - 1.0 / smooth) / (1.0 - short / (w * smooth));
            (old, old / short, Box::new(move |old| 1.0 + (old / w - 1.0) / smooth))
        }
        points => {
            // Least squares of smooth = a f + b; a = old / (2 pi (high - 1)), b = -1 / (high - 1).
            let n = points.len() as f64;
            let (sf, ss) = points.iter().fold((0.0, 0.0), |(a, b), &(f, s)| (a + f, b + s));
            let (mf, ms) = (sf / n, ss / n);
            let a =
                points.iter().map(|&(f, s)| (f - mf) * (s - ms)).sum::<f64>() / points.iter().map(|&(f, _)| (f - mf).powi(2)).sum::<f64>();
            let b = ms - a * mf;
            let high = 1.0 - 1.0 / b;
            (a * 2.0 * std::f64::consts::PI * (high - 1.0), high, Box::new(move |_| high))
        }
    };
    let llama3 = |old: f64, high: f64| RopeScaling::Llama3 {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: high,
        original_max_position_embeddings: old,
    };
    // The largest relative difference between the factors a scaling gives and the file's.
    let error = |s: &RopeScaling| -> f64 {
        plain.iter().zip(s.inv_freq(theta, head_dim)).zip(factors).map(|((f, g), r)| ((f / g - r) / r).abs()).fold(0.0, f64::max)
    };
    // Round numbers only when they give the same factors to within f32 noise (the file and
    // transformers both compute them in f32).
    let candidates = [llama3(old.round(), snap(high_for(old.round()))), llama3(snap(old), snap(high))];
    let fitted = candidates.into_iter().find(|c| error(c) <= 1e-6).unwrap_or_else(|| llama3(old, high));
    if !(factor > 1.0 && high > 1.0 && old > 0.0 && old.is_finite()) {
        bail!("rotary factors {factors:?} follow no llama3 scaling (fitted {fitted:?})");
    }
    for (j, (f, scaled)) in plain.iter().zip(fitted.inv_freq(theta, head_dim)).enumerate() {
        if !close(f / scaled, factors[j]) {
            bail!("rotary factor {j} is {}, but the llama3 scaling that fits the others gives {} ({fitted:?})", factors[j], f / scaled);
        }
    }
    Ok(fitted)
}

/// `rope_type` (or transformers 4's older `type`) of a scaling map; absent means plain RoPE,
/// unless a scaling factor says otherwise (transformers refuses such a map too).
fn kind(map: &Value) -> Result<&str> {
    match map.get("rope_type").or_else(|| map.get("type")) {
        None => match map.get("factor").and_then(Value::as_f64).filter(|&f| f != 1.0) {
            Some(f) => bail!("`rope_scaling` has factor {f} but no `rope_type`: which scaling it means is unknown"),
            None => Ok("default"),
        },
        Some(Value::String(s)) => Ok(s),
        Some(other) => bail!("rope_type {other} is not a string"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(json: &str) -> BTreeMap<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    /// Reference inverse frequencies from transformers 5.24's `ROPE_INIT_FUNCTIONS` (float32),
    /// head_dim 64: `scripts/rope_reference.py` printed them.
    #[test]
    fn matches_transformers_rotary_frequencies() {
        let cases: Value = serde_json::from_str(include_str!("../tests/fixtures/rope_inv_freq.json")).unwrap();
        for case in cases.as_array().unwrap() {
            let cfg: BTreeMap<String, Value> = serde_json::from_value(case["extra"].clone()).unwrap();
            let s = RopeScaling::from_config(&cfg).unwrap();
            let want: Vec<f64> = serde_json::from_value(case["inv_freq"].clone()).unwrap();
            let got = s.inv_freq(case["rope_theta"].as_f64().unwrap(), case["head_dim"].as_u64().unwrap() as usize);
            assert_eq!(got.len(), want.len());
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                // transformers works in f32: agreement to f32 precision.
                assert!((g - w).abs() <= 1e-6 * w.abs(), "{}: frequency {j}: {g} vs transformers {w}", case["name"]);
            }
        }
    }

    /// A GGUF's `rope_freqs.weight` is what llama.cpp's converter computes from the config:
    /// plain frequency / scaled frequency. From transformers' scaled frequencies (the fixture),
    /// the fit must give back a scaling with transformers' frequencies.
    #[test]
    fn llama3_scaling_recovered_from_gguf_rope_factors() {
        let cases: Value = serde_json::from_str(include_str!("../tests/fixtures/rope_inv_freq.json")).unwrap();
        let mut n = 0;
        for case in cases.as_array().unwrap().iter().filter(|c| c["name"].as_str().unwrap().starts_with("llama3")) {
            let theta = case["rope_theta"].as_f64().unwrap();
            let head_dim = case["head_dim"].as_u64().unwrap() as usize;
            let want: Vec<f64> = serde_json::from_value(case["inv_freq"].clone()).unwrap();
            let plain = RopeScaling::None.inv_freq(theta, head_dim);
            // Stored as f32 in the file.
            let factors: Vec<f64> = plain.iter().zip(&want).map(|(p, w)| (p / w) as f32 as f64).collect();
            let fitted = llama3_from_factors(&factors, theta, head_dim).unwrap();
            let RopeScaling::Llama3 { factor, high_freq_factor, original_max_position_embeddings, .. } = fitted else {
                panic!("{fitted:?}")
            };
            // The config's own numbers come back, up to the common scale of the three that the
            // formula cannot see (low_freq_factor is taken as 1).
            let p = &case["extra"]["rope_parameters"];
            let low = p["low_freq_factor"].as_f64().unwrap();
            assert_eq!(factor, p["factor"].as_f64().unwrap());
            assert_eq!(original_max_position_embeddings, p["original_max_position_embeddings"].as_f64().unwrap() / low, "{}", case["name"]);
            assert_eq!(high_freq_factor, p["high_freq_factor"].as_f64().unwrap() / low, "{}", case["name"]);
            for (j, (g, w)) in fitted.inv_freq(theta, head_dim).iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 2e-6 * w.abs(), "{}: frequency {j}: {g} vs transformers {w}", case["name"]);
            }
            n += 1;
        }
        assert_eq!(n, 3);
        assert_eq!(llama3_from_factors(&[1.0; 32], 1e4, 64).unwrap(), RopeScaling::None);
        // Factors that are no llama3 blend (not monotone) are refused.
        let mut bad: Vec<f64> = (0..32).map(|j| if j < 16 { 1.0 } else { 8.0 }).collect();
        bad[17] = 3.0;
        bad[18] = 2.0;
        bad[19] = 5.0;
        assert!(llama3_from_factors(&bad, 5e5, 64).is_err());
        assert!(llama3_from_factors(&[1.0; 3], 1e4, 64).unwrap_err().to_string().contains("3 rotary factors"));
    }

    #[test]
    fn reads_both_spellings_and_refuses_what_it_does_not_implement() {
        let v4 = RopeScaling::from_config(&extra(
            r#"{"rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}}"#,
        ))
        .unwrap();
        let v5 = RopeScaling::from_config(&extra(
            r#"{"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#,
        ))
        .unwrap();
        assert_eq!(v4, v5);
        assert!(matches!(v4, RopeScaling::Llama3 { factor, .. } if factor == 32.0));
        let old = RopeScaling::from_config(&extra(r#"{"rope_scaling": {"type": "linear", "factor": 2.0}}"#)).unwrap();
        assert_eq!(old, RopeScaling::Linear { factor: 2.0 });
        assert_eq!(RopeScaling::from_config(&extra(r#"{"rope_scaling": null}"#)).unwrap(), RopeScaling::None);
        let plain = r#"{"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}"#;
        assert_eq!(RopeScaling::from_config(&extra(plain)).unwrap(), RopeScaling::None);
        let err = |j: &str| format!("{:#}", RopeScaling::from_config(&extra(j)).unwrap_err());
        assert!(err(r#"{"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}"#).contains("`yarn` is not supported"));
        assert!(err(r#"{"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}"#).contains("`dynamic`"));
        assert!(err(r#"{"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}"#).contains("low_freq_factor` is missing"));
        assert!(err(r#"{"rope_scaling": {"rope_type": "linear"}}"#).contains("`factor` is missing"));
        assert!(err(r#"{"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}}"#).contains("partial_rotary"));
    }
}
