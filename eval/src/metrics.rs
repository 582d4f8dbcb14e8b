//! Pass rates over K samples per prompt.

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

#[cfg(test)]
mod tests {
    use super::*;

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
