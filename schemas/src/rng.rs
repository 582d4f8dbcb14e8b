//! The seeded RNG, the shuffle and the stable hashes that define rectify's formats: snapshot row
//! order, MinHash seeds, dedup and decontamination hashes, the trainer's data order and the
//! verifier's sample points all come from here. They are written out rather than taken from a
//! crate whose algorithm could change with an upgrade, and never use std's per-process
//! randomised hasher: the same input gives the same values on every machine and run.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Stable 64-bit hash: FNV-1a over the bytes, then the splitmix64 finaliser.
///
/// FNV-1a alone has weak low and high bits for short inputs; the finaliser spreads every input
/// bit over the whole word, which MinHash needs because it compares hash values by size.
pub fn hash64(bytes: &[u8]) -> u64 {
    mix64(fnv1a(FNV_OFFSET, bytes))
}

/// `hash64` of the words joined by single spaces, without building the joined string.
///
/// Words never contain spaces, so the join is unambiguous.
pub fn hash_ngram<S: AsRef<str>>(words: &[S]) -> u64 {
    let mut h = FNV_OFFSET;
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            h = fnv1a(h, b" ");
        }
        h = fnv1a(h, w.as_ref().as_bytes());
    }
    mix64(h)
}

/// Plain FNV-1a of `bytes` (no finaliser), for callers that mix it themselves.
pub fn fnv64(bytes: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, bytes)
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The splitmix64 finaliser: a bijection on `u64` with good avalanche.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Deterministic stream of pseudo-random `u64`s (splitmix64): MinHash seeds, the row shuffle and
/// the trainer's data order. Its sequence is part of the snapshot format, so it is written here
/// rather than taken from a crate whose algorithm could change with an upgrade.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the tiny bias is irrelevant for shuffling).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

impl Iterator for SplitMix64 {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        Some(self.next_u64())
    }
}

/// Fisher-Yates with [`SplitMix64`]: the same seed gives the same order on every machine.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash64_is_stable_across_runs_and_platforms() {
        // Pinned values: a change here changes every dedup and decontamination decision.
        assert_eq!(fnv1a(FNV_OFFSET, b""), FNV_OFFSET);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash64(b"a"), mix64(0xaf63_dc4c_8601_ec8c));
        assert_ne!(hash64(b"ab"), hash64(b"ba"));
    }

    #[test]
    fn hash_ngram_equals_hash_of_joined_words() {
        let ws = ["the", "quick", "brown"];
        assert_eq!(hash_ngram(&ws), hash64(b"the quick brown"));
        assert_eq!(hash_ngram(&["x"]), hash64(b"x"));
        assert_ne!(hash_ngram(&["ab", "c"]), hash_ngram(&["a", "bc"]));
        let owned: Vec<String> = ws.iter().map(|s| s.to_string()).collect();
        assert_eq!(hash_ngram(&owned), hash_ngram(&ws));
    }

    #[test]
    fn splitmix_is_deterministic_and_seed_dependent() {
        let a: Vec<u64> = SplitMix64::new(7).take(4).collect();
        let b: Vec<u64> = SplitMix64::new(7).take(4).collect();
        let c: Vec<u64> = SplitMix64::new(8).take(4).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Reference value of splitmix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next(), Some(0xe220_a839_7b1d_cdaf));
    }

    #[test]
    fn shuffle_order_is_pinned() {
        // Computed independently (a few lines of Python: splitmix64, Lemire's multiply-shift,
        // Fisher-Yates from the end). Snapshot row order and the trainer's data order are this.
        let mut a: Vec<u32> = (0..10).collect();
        shuffle(&mut a, 42);
        assert_eq!(a, [8, 3, 6, 5, 4, 0, 9, 2, 1, 7]);
        let mut b: Vec<u32> = (0..20).collect();
        shuffle(&mut b, 20250101);
        assert_eq!(b, [1, 0, 9, 12, 11, 7, 10, 18, 6, 3, 15, 2, 14, 17, 5, 16, 8, 19, 4, 13]);
        let mut c: Vec<u32> = (0..10).collect();
        shuffle(&mut c, 43);
        assert_ne!(a, c);
    }
}
