//! The trainer's own seeded random number generator.
//!
//! candle's CPU generator cannot be seeded (see `shared/DESIGN.md`, "The trainer's determinism
//! contract"), so every random draw the trainer makes — LoRA initialisation, dropout masks, the
//! order of the training data, random initialisation of a base model — comes from this module.
//! Nothing here calls a transcendental function (`ln`, `cos`, ...), whose last bits may differ
//! between libm versions: every draw is built from integer arithmetic and correctly rounded IEEE
//! operations, so the same seed gives the same bits on every platform.
//!
//! # The algorithm, exactly ([`ALGORITHM`])
//!
//! * **Seeding**: a splitmix64 generator (Steele, Lea, Flood 2014; the reference
//!   `splitmix64.c` by Vigna) starts from `seed ^ (stream × 0x9E3779B97F4A7C15)` (wrapping
//!   multiplication), and its first four outputs become the xoshiro256** state `s[0..4]`.
//!   [`Rng::new`] is stream 0; the trainer uses one stream per purpose ([`Stream`]), so that for
//!   example changing the dropout rate does not change the data order.
//! * **Generation**: xoshiro256** 1.0 (Blackman, Vigna 2018; reference `xoshiro256starstar.c`).
//! * **`f32` in \[0, 1)**: `(next_u64() >> 40) as f32 × 2⁻²⁴` (24 random bits, exact).
//! * **`f64` in \[0, 1)**: `(next_u64() >> 11) as f64 × 2⁻⁵³`.
//! * **Integers below `n`**: Lemire's nearly-divisionless method (2019) with rejection, so the
//!   result is exactly uniform.
//! * **Shuffle**: Fisher–Yates from the last index down: for `i` in `(1..n).rev()`, swap `i` with
//!   `below(i + 1)`.
//! * **Bernoulli**: `f32 < p`.

/// The name recorded for this generator in every run record.
pub const ALGORITHM: &str = "xoshiro256**/splitmix64";

/// The independent streams the trainer draws from (the `stream` argument of [`Rng::stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stream {
    /// Initial values of LoRA `A` matrices and of randomly initialised base weights.
    Init,
    /// The order of training examples, one shuffle per epoch.
    Data,
    /// Dropout masks.
    Dropout,
}

impl Stream {
    /// The stream number mixed into the seed.
    pub fn number(self) -> u64 {
        match self {
            Stream::Init => 1,
            Stream::Data => 2,
            Stream::Dropout => 3,
        }
    }
}

/// One step of splitmix64: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** seeded through splitmix64; see the module doc for every derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed` (stream 0).
    pub fn new(seed: u64) -> Rng {
        Rng::with_stream(seed, 0)
    }

    /// The generator of one of the trainer's purposes.
    pub fn stream(seed: u64, stream: Stream) -> Rng {
        Rng::with_stream(seed, stream.number())
    }

    /// A generator for `seed` and a raw stream number.
    pub fn with_stream(seed: u64, stream: u64) -> Rng {
        let mut sm = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        // splitmix64 never yields four zeros in a row from consecutive states, so the xoshiro
        // state is never all zero.
        Rng { s }
    }

    /// The next 64 random bits (xoshiro256**).
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform `f32` in \[0, 1) with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / 16_777_216.0)
    }

    /// Uniform `f64` in \[0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform `f32` in \[lo, hi): `lo + (hi - lo) × u` computed in `f64`, rounded once.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = self.next_f32() as f64;
        let v = (lo as f64 + (hi as f64 - lo as f64) * u) as f32;
        // Rounding to f32 can land on `hi` itself; keep the interval half-open.
        if v >= hi {
            lo.max(hi - (hi - lo) * f32::EPSILON)
        } else {
            v
        }
    }

    /// `n` values uniform in \[lo, hi), in order.
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Uniform integer in \[0, n); `n` must be positive (0 returns 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire, "Fast Random Integer Generation in an Interval", ACM TOMACS 2019.
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// Shuffles `items` in place (Fisher–Yates, last index first).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// `true` with probability `p` (`next_f32() < p`).
    pub fn bernoulli(&mut self, p: f32) -> bool {
        self.next_f32() < p
    }

    /// An inverted-dropout mask of `n` elements: each is `1 / (1 - p)` with probability `1 - p`
    /// and `0` otherwise (what `torch.nn.Dropout(p)` multiplies by in training mode).
    pub fn dropout_mask(&mut self, n: usize, p: f32) -> Vec<f32> {
        let keep = 1.0 - p;
        let scale = 1.0 / keep;
        (0..n)
            .map(|_| if self.bernoulli(keep) { scale } else { 0.0 })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers: splitmix64 from state 0 gives 0xE220A8397B1DCDAF first (Vigna's
    /// reference code), and xoshiro256** from state [1, 2, 3, 4] gives 11520, 0, 1509978240,
    /// 1215971899390074240 (reference `xoshiro256starstar.c`).
    #[test]
    fn reference_outputs() {
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            vec![11520, 0, 1_509_978_240, 1_215_971_899_390_074_240]
        );
    }

    #[test]
    fn streams_differ_and_repeat() {
        let a: Vec<u64> = {
            let mut r = Rng::stream(7, Stream::Data);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::stream(7, Stream::Data);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::stream(7, Stream::Dropout);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ranges_and_shuffle() {
        let mut r = Rng::new(3);
        for _ in 0..10_000 {
            let x = r.next_f32();
            assert!((0.0..1.0).contains(&x));
            let y = r.uniform(-0.5, 0.5);
            assert!((-0.5..0.5).contains(&y));
            assert!(r.below(7) < 7);
        }
        let mut v: Vec<usize> = (0..100).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
        let mask = r.dropout_mask(10_000, 0.25);
        let kept = mask.iter().filter(|&&m| m != 0.0).count();
        assert!((7_000..8_000).contains(&kept), "{kept}");
        assert!(mask
            .iter()
            .all(|&m| m == 0.0 || (m - 4.0 / 3.0).abs() < 1e-6));
    }
}
