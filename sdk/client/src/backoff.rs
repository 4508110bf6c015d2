//! Jittered exponential backoff between reconnect attempts.

use std::time::Duration;

use rand::Rng;

/// Delays between reconnect attempts: `min · 2^attempt`, capped at `max`, of which a
/// random half is taken away ("equal jitter") so that clients dropped together do not
/// come back together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// The delay before attempt `attempt` (0 for the first retry).
    pub(crate) fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let factor = 1u32 << attempt.min(20);
        let base = self.min.saturating_mul(factor).min(self.max).max(self.min);
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let backoff = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..40 {
            let base = (Duration::from_millis(100) * 2u32.pow(attempt.min(20)))
                .min(Duration::from_secs(5));
            for _ in 0..20 {
                let d = backoff.delay(attempt, &mut rng);
                assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
            }
        }
        let delays: std::collections::HashSet<_> =
            (0..20).map(|_| backoff.delay(3, &mut rng)).collect();
        assert!(delays.len() > 1, "no jitter");
    }
}
