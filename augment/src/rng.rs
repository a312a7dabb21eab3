//! A counter-based random generator keyed by a tuple of words.
//!
//! Every random decision of the pipeline (sample order, crops, flips, colour factors, swap boxes)
//! is drawn from a [`KeyedRng`] whose key names the decision, e.g. `(seed, epoch, step, sample,
//! view)`. The stream depends on the key alone, never on which thread draws it or on what was drawn
//! before, which makes the loader's output identical for any number of threads and lets a resumed
//! run reproduce the batches of an uninterrupted one.
//!
//! Construction: the key words are absorbed one by one with the SplitMix64 finaliser (a strong
//! 64-bit bijective mixer) into two independent hashes, a start `state` and an odd increment
//! `gamma` (as in Java's `SplittableRandom`). Output `i` is `mix(state + i * gamma)`, so two keys
//! give two different Weyl sequences, and the stream can be jumped to any position in O(1).
//! The generator passes the usual statistical test batteries but is **not cryptographic**: never
//! use it for secrets.

/// The golden-ratio increment of SplitMix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser (Stafford's variant 13): a bijection on u64 with full avalanche.
#[inline]
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A second, independent finaliser (Stafford's variant 4), used to derive the increment.
#[inline]
const fn mix64_gamma(mut z: u64) -> u64 {
    z = (z ^ (z >> 33)).wrapping_mul(0x62A9_D9ED_7997_05F5);
    z = (z ^ (z >> 28)).wrapping_mul(0xCB24_D0A5_C88C_35B3);
    (z ^ (z >> 32)) | 1
}

/// A deterministic random stream named by a key of 64-bit words. Not cryptographic.
///
/// The same key gives the same stream on any thread and in any run; keys that differ in any word
/// (or in their number of words) give independent streams.
///
/// ```
/// use regioncl_augment::KeyedRng;
///
/// let (seed, epoch, step, sample, view) = (0, 3, 17, 5, 1);
/// let mut a = KeyedRng::new(&[seed, epoch, step, sample, view]);
/// let mut b = KeyedRng::new(&[seed, epoch, step, sample, view]);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.uniform(0.2, 1.0);
/// assert!((0.2..1.0).contains(&x));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedRng {
    state: u64,
    gamma: u64,
    counter: u64,
}

impl KeyedRng {
    /// The stream named by `key`.
    pub fn new(key: &[u64]) -> Self {
        // Two absorptions with different starting constants and mixers: (state, gamma) behave as
        // two independent 64-bit hashes of the key. The length enters first so that [0] and [0, 0]
        // differ.
        let len = key.len() as u64;
        let mut s = mix64(len ^ 0x243F_6A88_85A3_08D3);
        let mut g = mix64_gamma(len ^ 0x1319_8A2E_0370_7344);
        for (i, &w) in key.iter().enumerate() {
            let w = w.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN));
            s = mix64(s.wrapping_add(GOLDEN) ^ mix64(w));
            g = mix64_gamma(g.wrapping_add(GOLDEN) ^ mix64_gamma(w));
        }
        Self { state: s, gamma: g, counter: 0 }
    }

    /// How many 64-bit words have been drawn so far.
    pub fn position(&self) -> u64 {
        self.counter
    }

    /// Moves to position `n` of the stream (the next draw is output `n`).
    pub fn seek(&mut self, n: u64) {
        self.counter = n;
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let x = self.state.wrapping_add(self.counter.wrapping_mul(self.gamma));
        self.counter = self.counter.wrapping_add(1);
        mix64(x)
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform float in `[lo, hi)` (`lo` when `lo >= hi`).
    #[inline]
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let v = lo + (hi - lo) * self.next_f64();
        // Rounding can land on `hi` itself: keep the interval half-open.
        if v < hi { v } else { lo.max(hi.next_down()) }
    }

    /// A uniform integer in `0..n`, without modulo bias (Lemire's multiply-and-reject).
    ///
    /// # Panics
    /// If `n == 0`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "KeyedRng::below(0)");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            // Reject the low fragment that would be over-represented: 2^64 mod n values.
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// `true` with probability `p` (never for `p <= 0`, always for `p >= 1`).
    #[inline]
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Shuffles `items` in place (Fisher-Yates): every permutation is equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A uniformly random permutation of `0..n`, as `i64` (the index type of tensors: what
    /// `torch.randperm` gives).
    pub fn permutation(&mut self, n: usize) -> Vec<i64> {
        let mut v: Vec<i64> = (0..n as i64).collect();
        self.shuffle(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_length_and_order_matter() {
        let a = KeyedRng::new(&[0]).next_u64();
        let b = KeyedRng::new(&[0, 0]).next_u64();
        let c = KeyedRng::new(&[]).next_u64();
        let d = KeyedRng::new(&[1, 2]).next_u64();
        let e = KeyedRng::new(&[2, 1]).next_u64();
        assert!(a != b && a != c && b != c && d != e);
    }

    #[test]
    fn seek_replays_the_stream() {
        let mut a = KeyedRng::new(&[9, 9]);
        let first: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
        a.seek(4);
        assert_eq!(a.next_u64(), first[4]);
        assert_eq!(a.position(), 5);
    }

    #[test]
    fn floats_are_uniform_enough() {
        let mut r = KeyedRng::new(&[42]);
        let n = 200_000;
        let mut buckets = [0u32; 10];
        let mut sum = 0.0;
        for _ in 0..n {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            buckets[(x * 10.0) as usize] += 1;
            sum += x;
        }
        assert!((sum / n as f64 - 0.5).abs() < 0.005);
        for b in buckets {
            assert!((b as f64 - n as f64 / 10.0).abs() < 600.0, "{buckets:?}");
        }
    }

    #[test]
    fn bits_are_balanced_across_neighbouring_keys() {
        // Keys that differ in one low bit (sample i vs i+1) must not give correlated outputs.
        let mut ones = [0u32; 64];
        let n = 20_000u64;
        for i in 0..n {
            let x = KeyedRng::new(&[0, 0, 0, i]).next_u64()
                ^ KeyedRng::new(&[0, 0, 0, i + 1]).next_u64();
            for (bit, c) in ones.iter_mut().enumerate() {
                *c += ((x >> bit) & 1) as u32;
            }
        }
        for c in ones {
            assert!((f64::from(c) / n as f64 - 0.5).abs() < 0.02, "{ones:?}");
        }
    }

    #[test]
    fn shuffle_is_a_permutation_and_bernoulli_extremes() {
        let mut r = KeyedRng::new(&[3]);
        let mut v: Vec<u32> = (0..1000).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..1000).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
        assert!((0..1000).all(|_| !r.bernoulli(0.0) && r.bernoulli(1.0)));
    }

    #[test]
    fn below_is_unbiased_for_small_n() {
        let mut r = KeyedRng::new(&[5]);
        let mut counts = [0u32; 3];
        for _ in 0..300_000 {
            counts[r.below(3) as usize] += 1;
        }
        for c in counts {
            assert!((f64::from(c) - 100_000.0).abs() < 1_000.0, "{counts:?}");
        }
    }

    proptest! {
        #[test]
        fn same_key_same_stream(key in proptest::collection::vec(any::<u64>(), 0..6)) {
            let mut a = KeyedRng::new(&key);
            let mut b = KeyedRng::new(&key);
            for _ in 0..16 {
                prop_assert_eq!(a.next_u64(), b.next_u64());
            }
        }

        #[test]
        fn different_key_different_stream(
            key in proptest::collection::vec(any::<u64>(), 1..6),
            word in any::<prop::sample::Index>(),
            delta in 1u64..,
        ) {
            let mut other = key.clone();
            let i = word.index(key.len());
            other[i] = other[i].wrapping_add(delta);
            let a: Vec<u64> = { let mut r = KeyedRng::new(&key); (0..4).map(|_| r.next_u64()).collect() };
            let b: Vec<u64> = { let mut r = KeyedRng::new(&other); (0..4).map(|_| r.next_u64()).collect() };
            prop_assert_ne!(a, b);
        }

        #[test]
        fn below_in_range(key in any::<u64>(), n in 1u64..) {
            let mut r = KeyedRng::new(&[key]);
            for _ in 0..8 {
                prop_assert!(r.below(n) < n);
            }
        }

        #[test]
        fn uniform_in_range(key in any::<u64>(), lo in -1e6f64..1e6, span in 0.0f64..1e6) {
            let mut r = KeyedRng::new(&[key]);
            let x = r.uniform(lo, lo + span);
            prop_assert!(x >= lo && (x < lo + span || span == 0.0));
        }
    }
}
