//! A small, explicitly seeded PRNG (xoshiro256**, Blackman & Vigna) so a simulation is
//! reproducible bit for bit from its seed, on every platform, without depending on a crate's
//! stream stability across versions.

#[derive(Debug, Clone)]
pub struct Rng {
    state: [u64; 4],
}

/// SplitMix64 step: spreads a seed over the 256-bit state, as the xoshiro authors recommend.
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `stream` under `seed`: trial `i` uses stream `i`, so trials are
    /// independent and any one can be replayed alone.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut stream_state = stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut x = seed ^ splitmix64(&mut stream_state);
        let state = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (multiply-shift; the bias is below 2^-32 for our n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Exponentially distributed with the given rate (mean 1/rate).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -f64::ln_1p(-self.uniform()) / rate
    }

    /// Poisson-distributed count with the given mean.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean < 30.0 {
            // Knuth: multiply uniforms until the product drops below e^-mean.
            let limit = (-mean).exp();
            let mut product = self.uniform();
            let mut count = 0;
            while product > limit {
                product *= self.uniform();
                count += 1;
            }
            count
        } else {
            // Normal approximation (Box–Muller) is plenty for large means.
            let u1 = self.uniform().max(f64::MIN_POSITIVE);
            let u2 = self.uniform();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (mean + z * mean.sqrt()).round().max(0.0) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_roughly_uniform() {
        let mut a = Rng::new(42, 7);
        let mut b = Rng::new(42, 7);
        let mut c = Rng::new(42, 8);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut rng = Rng::new(1, 0);
        let n = 100_000;
        let mean_exp: f64 = (0..n).map(|_| rng.exponential(2.0)).sum::<f64>() / n as f64;
        assert!((mean_exp - 0.5).abs() < 0.01, "{mean_exp}");
        let mean_poisson: f64 = (0..n).map(|_| rng.poisson(3.0) as f64).sum::<f64>() / n as f64;
        assert!((mean_poisson - 3.0).abs() < 0.03, "{mean_poisson}");
    }
}
