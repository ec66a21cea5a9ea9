//! When an open batch commits: the one rule every consuming loop applies (the processor's and
//! each action worker's Kafka transaction, the sink's database transaction).
//!
//! A batch commits as soon as the consumer has nothing more ready (**caught up**: a poll of at
//! most [`CAUGHT_UP_WAIT`] came back empty while the batch holds records), when it reaches
//! `max_records`, or when it has been open for `interval`, whichever comes first. So a record at
//! light load waits for one commit, not for the interval; under load the records that arrive
//! while a commit is in flight fill the next batch, which grows up to the bounds. Pure: the loops
//! pass in what they saw.

use std::time::{Duration, Instant};

/// How long a loop with an open batch waits for another record before it counts as caught up.
pub const CAUGHT_UP_WAIT: Duration = Duration::from_millis(1);

/// The bounds of a batch: open at most `interval`, at most `max_records` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub interval: Duration,
    pub max_records: usize,
}

/// An open batch: when it started and how many records it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub started: Instant,
    pub records: usize,
}

impl Cadence {
    /// How long the next poll may wait: up to `interval` with nothing open (or an open batch
    /// without records), [`CAUGHT_UP_WAIT`] with records waiting to commit, and never past the
    /// batch's `interval`.
    pub fn poll_timeout(&self, open: Option<Open>) -> Duration {
        match open {
            None => self.interval,
            Some(open) => {
                let remaining = self.interval.saturating_sub(open.started.elapsed());
                if open.records > 0 {
                    remaining.min(CAUGHT_UP_WAIT)
                } else {
                    remaining
                }
            }
        }
    }

    /// Whether the open batch commits now; `caught_up`: the last poll (waiting at most
    /// [`Cadence::poll_timeout`]) returned nothing.
    pub fn due(&self, open: Option<Open>, caught_up: bool) -> bool {
        open.is_some_and(|open| {
            open.records >= self.max_records
                || open.started.elapsed() >= self.interval
                || (caught_up && open.records > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CADENCE: Cadence = Cadence {
        interval: Duration::from_secs(5),
        max_records: 3,
    };

    fn open(records: usize) -> Option<Open> {
        Some(Open {
            started: Instant::now(),
            records,
        })
    }

    #[test]
    fn commits_when_caught_up_full_or_old() {
        assert!(!CADENCE.due(None, true), "nothing open");
        assert!(!CADENCE.due(open(0), true), "nothing to commit");
        assert!(!CADENCE.due(open(1), false), "more is ready");
        assert!(CADENCE.due(open(1), true), "caught up");
        assert!(CADENCE.due(open(3), false), "full");
        let old = Some(Open {
            started: Instant::now() - Duration::from_secs(6),
            records: 1,
        });
        assert!(CADENCE.due(old, false), "open for the whole interval");
    }

    #[test]
    fn polls_briefly_only_with_records_waiting() {
        assert_eq!(CADENCE.poll_timeout(None), Duration::from_secs(5));
        assert_eq!(CADENCE.poll_timeout(open(2)), CAUGHT_UP_WAIT);
        assert!(CADENCE.poll_timeout(open(0)) > Duration::from_secs(4));
        let old = Some(Open {
            started: Instant::now() - Duration::from_secs(6),
            records: 0,
        });
        assert_eq!(CADENCE.poll_timeout(old), Duration::ZERO);
    }
}
