//! The per-target circuit breaker: a pure state machine, the clock passed in as `now`.
//!
//! - **Closed**: calls go through; consecutive transient failures are counted, and the breaker
//!   opens when the count reaches the threshold. Any success (or a permanent outcome: the target
//!   answered, the event was at fault) resets the count.
//! - **Open**: calls are refused until `opened_at + cool_down`.
//! - **HalfOpen**: the first call after the cool-down is the one probe; while it is outstanding
//!   every other call is refused. Success closes the breaker, failure opens it again with a
//!   fresh cool-down.
//!
//! Each [`Permit`] remembers the breaker's epoch (bumped on every state change), so a late report
//! from a call admitted before a state change is ignored: a slow request started while Closed
//! cannot close a breaker that opened meanwhile, nor be taken for the probe's result.
//!
//! State changes are logged and exported as the `switchboard_actions_breaker_state` gauge.

use std::time::{Duration, Instant};

use super::metrics;

/// Where the breaker stands; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// A stable lowercase name, for logs.
    #[cfg(test)]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub(crate) fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// Permission to make one call. Hand it back with [`CircuitBreaker::on_success`],
/// [`CircuitBreaker::on_failure`] or [`CircuitBreaker::on_abandon`].
#[derive(Debug)]
#[must_use = "report the call's result to the breaker"]
pub(crate) struct Permit {
    epoch: u64,
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Open {
    /// Time left in the cool-down; `None` while a half-open probe is outstanding.
    pub retry_in: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The probe is outstanding; `cooled_at` is when the cool-down ended (the state to go back
    /// to if the probe is abandoned).
    HalfOpen {
        cooled_at: Instant,
    },
}

/// One target's circuit breaker.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    action: String,
    failures: u32,
    cool_down: Duration,
    state: State,
    epoch: u64,
}

impl CircuitBreaker {
    /// A closed breaker for `action` that opens after `failures` (at least 1) consecutive
    /// transient failures and stays open for `cool_down`.
    pub(crate) fn new(action: impl Into<String>, failures: u32, cool_down: Duration) -> Self {
        let breaker = Self {
            action: action.into(),
            failures: failures.max(1),
            cool_down,
            state: State::Closed {
                consecutive_failures: 0,
            },
            epoch: 0,
        };
        metrics::breaker_state(&breaker.action, BreakerState::Closed.gauge_value());
        breaker
    }

    /// The current state. An open breaker whose cool-down has passed still reports `Open` until
    /// the next [`try_acquire`](Self::try_acquire) turns it half-open.
    pub(crate) fn state(&self) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call at `now`.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Result<Permit, Open> {
        match self.state {
            State::Closed { .. } => Ok(self.permit()),
            State::Open { until } if now >= until => {
                self.transition(State::HalfOpen { cooled_at: until });
                tracing::info!(action = %self.action, "circuit half-open: sending one probe");
                Ok(self.permit())
            }
            State::Open { until } => Err(Open {
                retry_in: Some(until - now),
            }),
            State::HalfOpen { .. } => Err(Open { retry_in: None }),
        }
    }

    /// The call reached the target and it answered (delivered, or a permanent rejection of the
    /// event): resets the failure count, or closes a half-open breaker.
    pub(crate) fn on_success(&mut self, permit: Permit) {
        if permit.epoch != self.epoch {
            return;
        }
        match self.state {
            State::Closed { .. } => {
                self.state = State::Closed {
                    consecutive_failures: 0,
                }
            }
            State::HalfOpen { .. } => {
                self.transition(State::Closed {
                    consecutive_failures: 0,
                });
                tracing::info!(action = %self.action, "circuit closed: probe succeeded");
            }
            State::Open { .. } => {}
        }
    }

    /// The call failed transiently at `now`: counts toward opening, or reopens a half-open
    /// breaker with a fresh cool-down.
    pub(crate) fn on_failure(&mut self, permit: Permit, now: Instant) {
        if permit.epoch != self.epoch {
            return;
        }
        match self.state {
            State::Closed { consecutive_failures } => {
                let consecutive_failures = consecutive_failures.saturating_add(1);
                if consecutive_failures >= self.failures {
                    self.transition(State::Open {
                        until: now + self.cool_down,
                    });
                    tracing::warn!(
                        action = %self.action,
                        consecutive_failures,
                        cool_down = ?self.cool_down,
                        "circuit open: target failing"
                    );
                } else {
                    self.state = State::Closed { consecutive_failures };
                }
            }
            State::HalfOpen { .. } => {
                self.transition(State::Open {
                    until: now + self.cool_down,
                });
                tracing::warn!(
                    action = %self.action,
                    cool_down = ?self.cool_down,
                    "circuit open again: probe failed"
                );
            }
            State::Open { .. } => {}
        }
    }

    /// The call was given up before it had a result (its future was dropped): a half-open
    /// breaker goes back to open with the cool-down already over, so the next call probes again.
    pub(crate) fn on_abandon(&mut self, permit: Permit) {
        if permit.epoch != self.epoch {
            return;
        }
        if let State::HalfOpen { cooled_at } = self.state {
            self.transition(State::Open { until: cooled_at });
        }
    }

    fn permit(&self) -> Permit {
        Permit { epoch: self.epoch }
    }

    fn transition(&mut self, to: State) {
        self.state = to;
        self.epoch += 1;
        metrics::breaker_state(&self.action, self.state().gauge_value());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(60);

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new("test", 3, COOL_DOWN)
    }

    fn fail(breaker: &mut CircuitBreaker, now: Instant) {
        let permit = breaker.try_acquire(now).expect("admitted");
        breaker.on_failure(permit, now);
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = breaker();
        fail(&mut b, t0);
        fail(&mut b, t0);
        let permit = b.try_acquire(t0).unwrap();
        b.on_success(permit);
        fail(&mut b, t0);
        fail(&mut b, t0);
        assert_eq!(b.state(), BreakerState::Closed, "a success reset the count");
        fail(&mut b, t0);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire(t0 + Duration::from_secs(10)).unwrap_err(),
            Open {
                retry_in: Some(Duration::from_secs(50))
            }
        );
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let t0 = Instant::now();
        let mut b = breaker();
        (0..3).for_each(|_| fail(&mut b, t0));
        let after = t0 + COOL_DOWN;
        let probe = b.try_acquire(after).expect("the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(after).unwrap_err(), Open { retry_in: None });
        b.on_success(probe);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire(after).is_ok());
    }

    #[test]
    fn failed_probe_reopens_with_a_fresh_cool_down() {
        let t0 = Instant::now();
        let mut b = breaker();
        (0..3).for_each(|_| fail(&mut b, t0));
        let probe_at = t0 + COOL_DOWN + Duration::from_secs(5);
        let probe = b.try_acquire(probe_at).unwrap();
        b.on_failure(probe, probe_at);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire(probe_at + Duration::from_secs(1)).unwrap_err(),
            Open {
                retry_in: Some(COOL_DOWN - Duration::from_secs(1))
            }
        );
        assert!(b.try_acquire(probe_at + COOL_DOWN).is_ok());
    }

    #[test]
    fn late_reports_from_before_a_state_change_are_ignored() {
        let t0 = Instant::now();
        let mut b = breaker();
        let slow = b.try_acquire(t0).unwrap();
        (0..3).for_each(|_| fail(&mut b, t0));
        b.on_success(slow);
        assert_eq!(b.state(), BreakerState::Open, "a stale success does not close");

        let probe = b.try_acquire(t0 + COOL_DOWN).unwrap();
        let stale = Permit { epoch: 0 };
        b.on_failure(stale, t0 + COOL_DOWN);
        assert_eq!(b.state(), BreakerState::HalfOpen, "nor is it the probe's result");
        b.on_success(probe);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let t0 = Instant::now();
        let mut b = breaker();
        (0..3).for_each(|_| fail(&mut b, t0));
        let later = t0 + COOL_DOWN;
        let probe = b.try_acquire(later).unwrap();
        b.on_abandon(probe);
        assert_eq!(b.state(), BreakerState::Open);
        let probe = b.try_acquire(later).expect("a new probe at once");
        b.on_success(probe);
        assert_eq!(b.state(), BreakerState::Closed);

        let closed = b.try_acquire(later).unwrap();
        b.on_abandon(closed);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "abandoning while closed changes nothing"
        );
    }

    #[test]
    fn states_have_names_and_gauge_values() {
        let cases = [
            (BreakerState::Closed, "closed", 0.0),
            (BreakerState::Open, "open", 1.0),
            (BreakerState::HalfOpen, "half_open", 2.0),
        ];
        for (state, name, value) in cases {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.gauge_value(), value);
        }
    }
}
