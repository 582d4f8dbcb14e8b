//! Choosing the next token from a row of logits: greedy, temperature, top-k and top-p.
//!
//! Sampling draws from a random stream of its own per request (`seed`, `stream`), so the draws a
//! request gets do not depend on which other requests share its batch. (Its logits can still
//! differ in the last bits between batch shapes; the same command on the same machine repeats
//! exactly.)

use schemas::rng::{mix64, SplitMix64};

pub use schemas::generation::Sampling;

/// The random stream of one request: a function of the run's seed and the request's stream
/// number only.
pub fn request_rng(seed: u64, stream: u64) -> SplitMix64 {
    SplitMix64::new(mix64(seed) ^ mix64(stream.wrapping_add(0x5eed)))
}

/// The next token from one row of logits. Panics on a NaN logit: the model is broken (bad
/// weights, an overflow), and any token chosen from it would be graded as if it meant something.
pub fn choose(logits: &[f32], params: &Sampling, rng: &mut SplitMix64) -> u32 {
    if params.temperature <= 0.0 {
        return argmax(logits);
    }
    // Candidates in descending logit order (ties by id, so the order is a pure function of the
    // logits), cut to top-k. Tokens below e^-40 of the most likely one are left out before
    // sorting: their mass together is under vocab · 4e-18 (2e-13 for 50k tokens), below what
    // the f64 draw resolves, and sorting the whole vocabulary for every token cost more than
    // the model's step at batch 32.
    // One pass finds the maximum and any NaN (which `f32::max` would skip).
    let (max, nan) = logits.iter().fold((f32::NEG_INFINITY, false), |(m, nan), &x| (m.max(x), nan || x.is_nan()));
    assert!(!nan, "{NAN_LOGITS}");
    let floor = max - 40.0 * params.temperature;
    let mut order: Vec<u32> = (0..logits.len() as u32).filter(|&i| logits[i as usize] >= floor).collect();
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    if params.top_k > 0 && params.top_k < order.len() {
        order.select_nth_unstable_by(params.top_k - 1, by_logit);
        // Every token tied with the k-th stays, as in transformers and vLLM (a cut at the k-th
        // value, not the k-th index).
        let kth = logits[order[params.top_k - 1] as usize];
        order.retain(|&i| logits[i as usize] >= kth);
    }
    order.sort_unstable_by(by_logit);
    let t = params.temperature as f64;
    let max = logits[order[0] as usize] as f64;
    let weights: Vec<f64> = order.iter().map(|&i| ((logits[i as usize] as f64 - max) / t).exp()).collect();
    let total: f64 = weights.iter().sum();
    // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
    let mut keep = weights.len();
    if params.top_p < 1.0 {
        let mut mass = 0.0;
        for (j, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= params.top_p as f64 {
                keep = j + 1;
                break;
            }
        }
    }
    let kept: f64 = weights[..keep].iter().sum();
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * kept;
    let mut acc = 0.0;
    for (j, w) in weights[..keep].iter().enumerate() {
        acc += w;
        if u < acc {
            return order[j];
        }
    }
    order[keep - 1]
}

const NAN_LOGITS: &str = "the model's logits hold NaN: its weights are broken or its arithmetic overflowed, so no token can be chosen";

fn argmax(logits: &[f32]) -> u32 {
    let (mut best, mut nan) = (0, false);
    for (i, &x) in logits.iter().enumerate() {
        nan |= x.is_nan();
        if x > logits[best] {
            best = i;
        }
    }
    assert!(!nan, "{NAN_LOGITS}");
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled(logits: &[f32], params: &Sampling, draws: usize) -> Vec<usize> {
        let mut rng = SplitMix64::new(7);
        let mut counts = vec![0; logits.len()];
        for _ in 0..draws {
            counts[choose(logits, params, &mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    #[should_panic(expected = "logits hold NaN")]
    fn greedy_refuses_nan_logits() {
        // Nothing compares above a NaN in front, so argmax alone would answer 0.
        choose(&[f32::NAN, 1.0, 2.0], &Sampling::greedy(1), &mut SplitMix64::new(0));
    }

    #[test]
    #[should_panic(expected = "logits hold NaN")]
    fn sampling_refuses_nan_logits() {
        let p = Sampling { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 1, seed: 0 };
        choose(&[1.0, f32::NAN, 2.0], &p, &mut SplitMix64::new(0));
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let p = Sampling::greedy(1);
        assert_eq!(choose(&[0.0, 3.0, 1.0, 3.0], &p, &mut SplitMix64::new(0)), 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        // Probabilities at T=1: softmax([ln 4, ln 3, ln 2, ln 1]) = [.4, .3, .2, .1].
        let logits = [4f32.ln(), 3f32.ln(), 2f32.ln(), 1f32.ln()];
        let base = Sampling { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 1, seed: 0 };
        let all = sampled(&logits, &base, 20000);
        for (i, want) in [0.4, 0.3, 0.2, 0.1].iter().enumerate() {
            let got = all[i] as f64 / 20000.0;
            assert!((got - want).abs() < 0.015, "token {i}: {got} vs {want}");
        }
        let k2 = sampled(&logits, &Sampling { top_k: 2, ..base }, 20000);
        assert_eq!(k2[2] + k2[3], 0);
        assert!((k2[0] as f64 / 20000.0 - 4.0 / 7.0).abs() < 0.015);
        // Mass .4 + .3 = .7 is the first to reach top_p = .65: exactly two tokens stay.
        let p7 = sampled(&logits, &Sampling { top_p: 0.65, ..base }, 20000);
        assert_eq!(p7[2] + p7[3], 0);
        // Both kept, renormalised over the kept mass: 4/7 and 3/7 (not .4 and .6, as drawing
        // over the whole mass would give, nor token 0 alone, as a cut one early would).
        for (i, want) in [4.0 / 7.0, 3.0 / 7.0].iter().enumerate() {
            let got = p7[i] as f64 / 20000.0;
            assert!((got - want).abs() < 0.015, "top_p token {i}: {got} vs {want}");
        }
        // Top-k cuts at the k-th value: a token tied with it stays (transformers, vLLM).
        let tied = [2f32, 1.0, 1.0, 0.0];
        let k2 = sampled(&tied, &Sampling { top_k: 2, ..base }, 20000);
        assert!(k2[1] > 0 && k2[2] > 0 && k2[3] == 0, "{k2:?}");
        // A low temperature sharpens towards the argmax.
        let cold = sampled(&logits, &Sampling { temperature: 0.05, ..base }, 2000);
        assert!(cold[0] > 1990, "{cold:?}");
    }
}
