//! Jittered delays: exponential backoff with a ceiling after failures, and
//! spread-out poll intervals, so a fleet restarted at once does not poll
//! Vault in lockstep.

use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is drawn between half
/// and all of the current step, and the step doubles up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Starts at `min`, never exceeds `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self { min, max: max.max(min), step: min, rng: fastrand::Rng::new() }
    }

    /// The next delay after a failure.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        step / 2 + fraction(&mut self.rng, step / 2)
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

/// `base` spread by ±`percent`%.
pub fn jitter(base: Duration, percent: u32) -> Duration {
    let spread = base * percent.min(100) / 100;
    base - spread + fraction(&mut fastrand::Rng::new(), spread * 2)
}

fn fraction(rng: &mut fastrand::Rng, of: Duration) -> Duration {
    let millis = u64::try_from(of.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.u64(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[9] >= Duration::from_secs(1), "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_its_band() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10), 20);
            assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12), "{d:?}");
        }
    }
}
