//! Limits on what an unauthenticated sender can make ingest spend before (and while) its signature
//! is checked: memory for request bodies across all requests ([`BodyBudget`]), the parameters of a
//! form body ([`form_param_count`]), and log lines about refused requests ([`LogSampler`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Body memory is counted in units of this many bytes.
const UNIT: usize = 1024;

/// The request body bytes held in memory at once, across all requests.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
}

/// Body bytes reserved by one request; released when dropped.
#[derive(Debug)]
pub struct Reservation(OwnedSemaphorePermit);

impl BodyBudget {
    /// A budget of `bytes` (rounded up to whole KiB).
    pub fn new(bytes: usize) -> Self {
        let units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            units: Arc::new(Semaphore::new(units)),
        }
    }

    /// Reserves room for a body of up to `bytes`, or `None` at once when the budget cannot hold it
    /// now.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let units = u32::try_from(units(bytes)).ok()?;
        Arc::clone(&self.units)
            .try_acquire_many_owned(units)
            .ok()
            .map(Reservation)
    }

    /// Bytes currently free.
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }
}

impl Reservation {
    /// Gives back what a body of `bytes` does not need.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = units(bytes);
        let spare = self.0.num_permits().saturating_sub(keep);
        if spare > 0 {
            drop(self.0.split(spare));
        }
    }
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT).max(1)
}

/// The number of parameters `application/x-www-form-urlencoded` parsing yields for `body`: the
/// non-empty `&`-separated pieces (what `url::form_urlencoded::parse` returns). One pass over the
/// bytes, no allocation: cheap enough to run before the signature check.
pub fn form_param_count(body: &[u8]) -> usize {
    body.split(|&byte| byte == b'&')
        .filter(|piece| !piece.is_empty())
        .count()
}

/// Lets through at most `limit` log lines per `window`, and counts the ones it holds back so that
/// the next line can say how many were suppressed. Under a flood of forged requests the log stays
/// readable; the metrics still count every request.
#[derive(Debug)]
pub struct LogSampler {
    limit: u32,
    window: Duration,
    state: Mutex<SamplerState>,
}

#[derive(Debug)]
struct SamplerState {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogSampler {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            state: Mutex::new(SamplerState {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed since the last line)` when this line may be logged, `None` when it is
    /// suppressed.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(state.window_start) >= self.window {
            state.window_start = now;
            state.logged = 0;
        }
        if state.logged < self.limit {
            state.logged += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_at_once_and_shrinks_to_the_body() {
        let budget = BodyBudget::new(10 * UNIT);
        let mut big = budget.try_reserve(8 * UNIT).unwrap();
        assert!(budget.try_reserve(4 * UNIT).is_none());
        big.shrink_to(100);
        assert_eq!(budget.available(), 9 * UNIT);
        let small = budget.try_reserve(4 * UNIT).unwrap();
        drop((big, small));
        assert_eq!(budget.available(), 10 * UNIT);
        assert!(
            budget.try_reserve(11 * UNIT).is_none(),
            "more than the whole budget"
        );
    }

    #[test]
    fn counts_form_parameters_like_the_parser() {
        for body in ["", "&", "a", "a=1&b=2", "&&a=1&&b&", "=&=", "a=%26&b=&c"] {
            let parsed = url::form_urlencoded::parse(body.as_bytes()).count();
            assert_eq!(form_param_count(body.as_bytes()), parsed, "{body:?}");
        }
    }

    #[test]
    fn the_sampler_lets_through_a_few_lines_per_window() {
        let sampler = LogSampler::new(2, Duration::from_millis(50));
        assert_eq!(sampler.admit(), Some(0));
        assert_eq!(sampler.admit(), Some(0));
        assert_eq!(sampler.admit(), None);
        assert_eq!(sampler.admit(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(sampler.admit(), Some(2), "reports what it held back");
    }
}
