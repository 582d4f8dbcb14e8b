//! Pass rates over K samples per prompt, and how far a difference between two evaluations of
//! the same prompts can be trusted.

/// Unbiased pass@k from `n` samples of which `c` are correct: `1 - C(n-c, k) / C(n, k)`,
/// computed as a product so large `n` does not overflow.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(k >= 1 && k <= n && c <= n, "pass@{k} needs 1 <= k <= n = {n} and c = {c} <= n");
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

/// Average@K, pass@1 and pass@K over prompts, from the number of correct samples of each
/// prompt out of `k`: `(average, pass_at_1, pass_at_k)`.
pub fn pass_rates(correct_per_prompt: &[usize], k: usize) -> (f64, f64, f64) {
    let n = correct_per_prompt.len().max(1) as f64;
    let (mut average, mut pass1, mut passk) = (0.0, 0.0, 0.0);
    for &c in correct_per_prompt {
        average += c as f64 / k as f64;
        pass1 += pass_at_k(k, c, 1);
        passk += pass_at_k(k, c, k);
    }
    (average / n, pass1 / n, passk / n)
}

/// maj@K's vote over one prompt's K samples (self-consistency, Wang et al. 2023): the index of
/// the first sample giving the answer that the most samples give, `same` deciding when two
/// answers are one; None when no sample gave an answer. A tie goes to the answer given first.
/// Each answer is compared with the first sample of each answer found so far, so `same` need
/// not be transitive.
pub fn majority(answers: &[Option<&str>], same: impl Fn(&str, &str) -> bool) -> Option<usize> {
    // (the first sample giving an answer, that answer, how many give it), in order of first
    // appearance.
    let mut votes: Vec<(usize, &str, usize)> = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        let Some(answer) = answer else { continue };
        match votes.iter_mut().find(|(_, first, _)| same(first, answer)) {
            Some(v) => v.2 += 1,
            None => votes.push((i, answer, 1)),
        }
    }
    // `max_by_key` keeps the last of equal maxima: over the reversed list, the first answer.
    votes.iter().rev().max_by_key(|v| v.2).map(|v| v.0)
}

/// The k at which an evaluation of K samples per prompt reports pass@k: 1, 2, 4, ... below K,
/// and K itself, so a curve over k draws evenly on a log scale.
pub fn pass_at_ks(k: usize) -> Vec<usize> {
    (0..usize::BITS).map(|i| 1usize << i).take_while(|&x| x < k).chain([k]).collect()
}

/// Mean unbiased pass@k over prompts for each k of [`pass_at_ks`]`(k)`, from the number of
/// correct samples of each prompt out of `k`: how the chance that one of k samples is right
/// grows with k (the curve by which RL and SFT papers compare what a model can reach at all).
pub fn pass_at_k_curve(correct_per_prompt: &[usize], k: usize) -> std::collections::BTreeMap<usize, f64> {
    let n = correct_per_prompt.len().max(1) as f64;
    pass_at_ks(k).into_iter().map(|j| (j, correct_per_prompt.iter().map(|&c| pass_at_k(k, c, j)).sum::<f64>() / n)).collect()
}

/// The 95% Wilson score interval of a rate `p` measured on `n` prompts. For K = 1 it is the
/// standard interval of a proportion, and unlike `p ± 1.96·se` it does not collapse to a point
/// at 0% or 100% (0 of 30 right: [0, 11.4%]). For K > 1, Average@K is a mean of per-prompt
/// fractions, each in [0, 1], whose variance is at most p(1 - p): the interval is then
/// conservative (at least as wide as needed).
pub fn wilson_interval(p: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n) = (1.959964, n as f64);
    let z2n = z * z / n;
    let center = (p + z2n / 2.0) / (1.0 + z2n);
    let half = z / (1.0 + z2n) * (p * (1.0 - p) / n + z2n / (4.0 * n)).max(0.0).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Resamples of [`bootstrap_interval`] in `trainer compare`.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// A 95% interval for the mean of `d` by the percentile bootstrap: `resamples` draws of `d.len()`
/// values with replacement (seeded, so the same inputs give the same interval), the 2.5th and
/// 97.5th percentiles of their means. With `d` the per-prompt differences between two
/// evaluations of the same prompts, this is the paired bootstrap: it needs no assumption about
/// how accuracy is distributed, and pairing removes the prompts' own difficulty from the noise.
pub fn bootstrap_interval(d: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    assert!(!d.is_empty() && resamples > 0, "bootstrap needs values and resamples");
    let mut rng = schemas::rng::SplitMix64::new(seed);
    let n = d.len();
    let mut means: Vec<f64> = (0..resamples).map(|_| (0..n).map(|_| d[rng.below(n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let lo = (0.025 * resamples as f64).floor() as usize;
    let hi = ((0.975 * resamples as f64).ceil() as usize).clamp(1, resamples) - 1;
    (means[lo], means[hi])
}

/// The exact two-sided sign test of paired differences: were gains and losses equally likely,
/// the probability of a split at least as uneven as `gains` to `losses` (prompts whose results
/// are equal are left out). With one sample per prompt this is McNemar's exact test. It is
/// sharper than the percentile bootstrap where few prompts differ: 2 losses and no gain give
/// the interval [x, 0] but p = 0.5.
pub fn sign_test(gains: usize, losses: usize) -> f64 {
    let n = gains + losses;
    // P(X <= min) for X ~ Binomial(n, 1/2), term by term in logarithms: C(n, i) / 2^n
    // overflows f64 past n = 1000, and an evaluation may have thousands of prompts.
    let ln_all = n as f64 * std::f64::consts::LN_2;
    let mut ln_choose = 0.0f64;
    let mut tail = 0.0f64;
    for i in 0..=gains.min(losses) {
        if i > 0 {
            ln_choose += ((n + 1 - i) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose - ln_all).exp();
    }
    (2.0 * tail).min(1.0)
}

/// A p-value as a table shows it: two digits, three below 0.1, `<0.001` below that.
pub fn p_text(p: f64) -> String {
    // Chosen on the value as printed: 0.0996 is `p=0.10`, not `p=0.100`.
    if p >= 0.0995 {
        format!("p={p:.2}")
    } else if p >= 0.001 {
        format!("p={p:.3}")
    } else {
        "p<0.001".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_curve_runs_over_powers_of_two_and_k() {
        assert_eq!(pass_at_ks(1), [1]);
        assert_eq!(pass_at_ks(4), [1, 2, 4]);
        assert_eq!(pass_at_ks(6), [1, 2, 4, 6]);
        // Two prompts of 4 samples, one right once and one never: pass@1 = 1/8, pass@2 = (1 -
        // C(3,2)/C(4,2)) / 2 = (1 - 3/6) / 2 = 1/4, pass@4 = 1/2.
        let curve = pass_at_k_curve(&[1, 0], 4);
        let want = [(1, 0.125), (2, 0.25), (4, 0.5)];
        assert_eq!(curve.len(), 3);
        for (k, p) in want {
            assert!((curve[&k] - p).abs() < 1e-12, "pass@{k} = {} not {p}", curve[&k]);
        }
    }

    #[test]
    fn the_majority_answer_wins_and_a_tie_goes_to_the_first() {
        let same = |a: &str, b: &str| a.trim_start_matches('0') == b.trim_start_matches('0');
        // "7" and "07" are one answer with three votes against "5"'s two; samples without an
        // answer do not vote.
        assert_eq!(majority(&[Some("5"), None, Some("7"), Some("5"), Some("07"), Some("007"), None], same), Some(2));
        assert_eq!(majority(&[Some("5"), Some("7"), Some("7"), Some("5")], same), Some(0), "tie: the first");
        assert_eq!(majority(&[Some("9"), Some("5"), Some("7"), Some("7"), Some("5")], same), Some(1), "tie: the first of the tied");
        assert_eq!(majority(&[None, None], same), None);
        assert_eq!(majority(&[None, Some("3")], same), Some(1));
    }

    #[test]
    fn sign_test_matches_the_binomial_distribution() {
        // Exact binomial tails (scipy.stats.binomtest(k, n).pvalue gives the same):
        // 0 of 10 → 2/1024; 2 of 10 → 2·(1 + 10 + 45)/1024; 5 of 20 → 2·21700/2^20.
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12 * b.max(1e-300);
        assert!(close(sign_test(0, 10), 2.0 / 1024.0), "{}", sign_test(0, 10));
        assert!(close(sign_test(8, 2), 112.0 / 1024.0), "{}", sign_test(8, 2));
        assert!(close(sign_test(5, 15), 43400.0 / 1048576.0), "{}", sign_test(5, 15));
        // Symmetric, 1 at an even split and with nothing to test, never above 1.
        assert_eq!(sign_test(15, 5), sign_test(5, 15));
        assert_eq!((sign_test(0, 0), sign_test(3, 3), sign_test(0, 1), sign_test(0, 2)), (1.0, 1.0, 1.0, 0.5));
        // Thousands of prompts: no overflow, and the normal approximation's value. 1,450 gains
        // and 1,550 losses: z = (1450.5 - 1500) / sqrt(750) = -1.807, two-sided 0.0707.
        let p = sign_test(1450, 1550);
        assert!((p - 0.0707).abs() < 0.001, "{p}");
        assert_eq!((p_text(0.5), p_text(0.0413), p_text(0.0004)), ("p=0.50".to_string(), "p=0.041".to_string(), "p<0.001".to_string()));
        assert_eq!(p_text(0.0996), "p=0.10");
    }

    #[test]
    fn wilson_interval_matches_published_values() {
        // Wilson's interval at z = 1.96 (e.g. Newcombe 1998, Table I: 0/10 → [0, 0.2775],
        // 1/10 → [0.0179, 0.4042]); and 15/30 → [0.3315, 0.6685], symmetric.
        let close = |(a, b): (f64, f64), (c, d): (f64, f64)| (a - c).abs() < 1e-4 && (b - d).abs() < 1e-4;
        assert!(close(wilson_interval(0.0, 10), (0.0, 0.2775)), "{:?}", wilson_interval(0.0, 10));
        assert!(close(wilson_interval(0.1, 10), (0.0179, 0.4042)), "{:?}", wilson_interval(0.1, 10));
        assert!(close(wilson_interval(0.5, 30), (0.3315, 0.6685)), "{:?}", wilson_interval(0.5, 30));
        assert!(close(wilson_interval(1.0, 10), (0.7225, 1.0)), "{:?}", wilson_interval(1.0, 10));
        assert_eq!(wilson_interval(0.3, 0), (0.0, 1.0));
    }

    #[test]
    fn bootstrap_interval_matches_the_binomial_spread_and_is_seeded() {
        // 15 prompts gained, 15 unchanged out of 30: mean 0.5, standard error sqrt(0.25 / 30) =
        // 0.091, so the normal 95% interval is 0.5 ± 0.179; the bootstrap's must be close to it.
        let d: Vec<f64> = (0..30).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect();
        let (lo, hi) = bootstrap_interval(&d, BOOTSTRAP_RESAMPLES, 0);
        assert!((lo - 0.321).abs() < 0.04 && (hi - 0.679).abs() < 0.04, "[{lo}, {hi}]");
        assert_eq!(bootstrap_interval(&d, BOOTSTRAP_RESAMPLES, 0), (lo, hi));
        // The seed picks the resamples (on values off a lattice, where percentiles cannot coincide).
        let spread: Vec<f64> = (0..30).map(|i| (i as f64 * 0.37).fract()).collect();
        assert_ne!(bootstrap_interval(&spread, BOOTSTRAP_RESAMPLES, 0), bootstrap_interval(&spread, BOOTSTRAP_RESAMPLES, 1));
        // No difference on any prompt: no spread. Gains and losses that cancel: around 0.
        assert_eq!(bootstrap_interval(&[0.0; 30], 1000, 0), (0.0, 0.0));
        let d: Vec<f64> = (0..40).map(|i| [1.0, -1.0, 0.0, 0.0][i % 4]).collect();
        let (lo, hi) = bootstrap_interval(&d, BOOTSTRAP_RESAMPLES, 0);
        assert!(lo < 0.0 && hi > 0.0 && (lo + hi).abs() < 0.05, "[{lo}, {hi}]");
    }

    #[test]
    fn pass_at_k_matches_the_combinatorial_definition() {
        // By hand: n = 5, c = 2. pass@1 = c/n = 0.4; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7;
        // pass@5 = 1 (any 5 of 5 include a correct one); c = 0 gives 0.
        assert!((pass_at_k(5, 2, 1) - 0.4).abs() < 1e-12);
        assert!((pass_at_k(5, 2, 2) - 0.7).abs() < 1e-12);
        assert_eq!(pass_at_k(5, 2, 5), 1.0);
        assert_eq!(pass_at_k(5, 0, 3), 0.0);
        // n = 16, c = 3, k = 4: 1 - C(13,4)/C(16,4) = 1 - 715/1820.
        assert!((pass_at_k(16, 3, 4) - (1.0 - 715.0 / 1820.0)).abs() < 1e-12);
    }
}
