//! Deletes the actions' delivery attempts older than `attempts_retention`, in the background,
//! so that the `action_attempts` table (the console's deliveries page) stops growing. The rows of
//! calls, messages, payments and bookings are the product's data and are kept.
//!
//! An expired attempt that is read again (a replay of `switchboard.actions.attempts` from before
//! the cut) is stored again and deleted at the next sweep.

use std::time::Duration;

use switchboard_kafka::txn::now_millis;

use crate::metrics;
use crate::store::Store;

/// Rows deleted per statement: short transactions beside the sink's batches.
const CHUNK: u32 = 5_000;

/// How often the sweep runs: a hundredth of the retention, between a minute and an hour.
pub(crate) fn sweep_interval(retention: Duration) -> Duration {
    (retention / 100).clamp(Duration::from_secs(60), Duration::from_secs(3600))
}

/// Sweeps now, then every [`sweep_interval`]; returns at once when `retention` is zero (keep
/// forever). Never fatal: a failed sweep is logged and tried again at the next one. Stopped by
/// aborting its task (every chunk is a transaction of its own).
pub(crate) async fn run(store: Store, retention: Duration) {
    if retention.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(sweep_interval(retention));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        sweep(&store, retention).await;
    }
}

/// Deletes the attempts made more than `retention` ago; how many it deleted.
pub(crate) async fn sweep(store: &Store, retention: Duration) -> u64 {
    let before = now_millis().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    match store.expire_attempts(before, CHUNK).await {
        Ok(deleted) => {
            metrics::attempts_expired(deleted);
            if deleted > 0 {
                tracing::info!(
                    deleted,
                    ?retention,
                    "deleted delivery attempts older than the retention"
                );
            }
            deleted
        }
        Err(error) => {
            tracing::warn!(%error, "deleting expired delivery attempts failed; trying again at the next sweep");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{TestDb, attempt, offset, per_backend};
    use switchboard_schemas::topics;

    async fn a_sweep_deletes_only_the_attempts_older_than_the_retention(db: TestDb) {
        let now = now_millis();
        let hour = Duration::from_secs(3600);
        let old = attempt("crm", "ev-old", 1, 1, "delivered", now - 2 * 3_600_000);
        let recent = attempt("crm", "ev-new", 2, 1, "delivered", now - 60_000);
        db.store
            .apply_batch_with_attempts(
                "sink",
                &[],
                &[old, recent.clone()],
                &[offset(topics::ACTIONS_ATTEMPTS, 0, 2)],
            )
            .await
            .unwrap();
        assert_eq!(sweep(&db.store, hour).await, 1);
        let left = db
            .store
            .attempts(&crate::store::AttemptFilter::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(left.items, [recent]);
        assert_eq!(sweep(&db.store, hour).await, 0);
    }

    per_backend!(a_sweep_deletes_only_the_attempts_older_than_the_retention);

    #[test]
    fn the_sweep_runs_a_hundred_times_per_retention_within_a_minute_and_an_hour() {
        let hour = Duration::from_secs(3600);
        assert_eq!(sweep_interval(hour), Duration::from_secs(60));
        assert_eq!(sweep_interval(hour * 24 * 3), Duration::from_secs(2592));
        assert_eq!(sweep_interval(hour * 24 * 30), hour);
    }
}
