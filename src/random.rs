//! A cheap uniform random number for the pacer's jitter and the stand-in's scripted
//! faults: spread, not security (xorshift).

/// Xorshift's state.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    /// Any seed; the state is never zero.
    pub fn seeded(seed: u64) -> Xorshift {
        Xorshift(seed | 1)
    }

    /// A uniform number in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fall_in_the_unit_interval_and_spread() {
        let mut random = Xorshift::seeded(7);
        let draws: Vec<f64> = (0..10_000).map(|_| random.next_unit()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let low = draws.iter().filter(|x| **x < 0.5).count();
        assert!((4_500..5_500).contains(&low), "{low}");
    }
}
