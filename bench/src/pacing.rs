//! Open-loop pacing for fixed-rate runs: request `i` is due at `start + i / rate`, whether or not
//! earlier requests have been answered. Latency is measured from that due time (not from when the
//! request actually left), so a stalled server cannot hide its stall by slowing the generator down
//! (no coordinated omission).

use std::time::Duration;

/// A fixed request rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacer {
    rate: f64,
}

impl Pacer {
    /// `rate` requests per second; must be positive and finite.
    pub fn new(rate: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "the rate must be a positive number, got {rate}"
        );
        Ok(Self { rate })
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When request `index` is due, counted from the start of the run.
    pub fn due(&self, index: usize) -> Duration {
        Duration::from_secs_f64(index as f64 / self.rate)
    }

    /// How many requests a run of `duration` sends (at least one).
    pub fn requests_in(&self, duration: Duration) -> usize {
        ((duration.as_secs_f64() * self.rate).round() as usize).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced() {
        let pacer = Pacer::new(2000.0).unwrap();
        assert_eq!(pacer.due(0), Duration::ZERO);
        assert_eq!(pacer.due(1), Duration::from_micros(500));
        assert_eq!(pacer.due(2000), Duration::from_secs(1));
        assert_eq!(pacer.due(59_999), Duration::from_micros(29_999_500));
    }

    #[test]
    fn a_run_sends_rate_times_duration() {
        let pacer = Pacer::new(2000.0).unwrap();
        assert_eq!(pacer.requests_in(Duration::from_secs(30)), 60_000);
        assert_eq!(Pacer::new(0.5).unwrap().requests_in(Duration::from_secs(1)), 1);
        assert_eq!(Pacer::new(0.1).unwrap().requests_in(Duration::from_secs(1)), 1);
    }

    #[test]
    fn the_rate_must_be_positive() {
        assert!(Pacer::new(0.0).is_err());
        assert!(Pacer::new(-3.0).is_err());
        assert!(Pacer::new(f64::NAN).is_err());
    }
}
