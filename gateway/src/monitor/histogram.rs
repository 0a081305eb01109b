//! A small log-linear latency histogram in microseconds: exact below 16 µs, then 8 buckets per
//! power of two (a value is known within 1/16 of itself). Fixed size, so recording is an index
//! computation and an increment.

/// Values at or above 2^36 µs (19 hours) land in the last bucket.
const MAX_EXP: u32 = 36;
pub const BUCKETS: usize = 16 + (MAX_EXP as usize - 4) * 8;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

fn index(us: u64) -> usize {
    if us < 16 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (us >> (exp - 3)) & 7;
    16 + (exp as usize - 4) * 8 + sub as usize
}

/// The middle of bucket `i`, in microseconds.
fn middle(i: usize) -> f64 {
    if i < 16 {
        return i as f64;
    }
    let exp = (i - 16) / 8 + 4;
    let sub = ((i - 16) % 8) as u64;
    let width = 1u64 << (exp - 3);
    ((8 + sub) * width) as f64 + width as f64 / 2.0
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let c = &mut self.counts[index(us)];
        *c = c.saturating_add(1);
        self.total += 1;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
    }

    pub fn clear(&mut self) {
        if self.total != 0 {
            self.counts.fill(0);
            self.total = 0;
        }
    }

    /// The `q` quantile (0..=1) in milliseconds, `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some((middle(i) / 1000.0 * 1000.0).round() / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_a_sixteenth() {
        for us in [
            0u64, 1, 15, 16, 17, 100, 999, 1_000, 12_345, 1_000_000, 59_000_000,
        ] {
            let m = middle(index(us));
            let err = (m - us as f64).abs() / (us.max(1) as f64);
            assert!(err <= 1.0 / 16.0 + 1e-9, "{us}: {m}");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        let mut last = 0;
        for us in 0..100_000u64 {
            let i = index(us);
            assert!(i >= last, "monotonic at {us}");
            last = i;
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for _ in 0..98 {
            h.record(1_000);
        }
        h.record(50_000);
        h.record(50_000);
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 1.0).abs() < 0.07, "{p50}");
        assert!((p99 - 50.0).abs() < 3.2, "{p99}");
        let mut other = Histogram::default();
        other.merge(&h);
        assert_eq!(other.total(), 100);
        other.clear();
        assert_eq!(other.quantile_ms(0.99), None);
    }
}
