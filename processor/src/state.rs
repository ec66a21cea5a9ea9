//! Per-partition processing state — the dedup set and the latest state of each call — with the
//! writes of the open transaction kept apart until it commits.
//!
//! Why this is correct under exactly-once: every state change is also written, in the same Kafka
//! transaction as the outputs and the consumed offsets, to a compacted changelog topic
//! co-partitioned with the raw topic (Kafka Streams' design). The in-memory copy is only a cache
//! of that changelog: changes of the open transaction live in `pending` and reach `committed` only
//! when the transaction commits; an abort drops them together with the outputs; and after a
//! rebalance or restart the state of a partition is rebuilt from its changelog (see `restore`)
//! before any of its records is processed.

use std::collections::HashMap;

use switchboard_kafka::TopicPartition;
use switchboard_schemas::domain::CallState;

/// The state of one task.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct PartitionState {
    /// Event ids seen, with when they were first seen (ms since the epoch).
    pub dedup: HashMap<String, i64>,
    /// Latest state per call sid.
    pub calls: HashMap<String, CallState>,
}

impl PartitionState {
    fn merge(&mut self, newer: PartitionState) {
        self.dedup.extend(newer.dedup);
        self.calls.extend(newer.calls);
    }

    /// Drops dedup entries first seen before `cutoff_millis` (the dedup window).
    fn evict(&mut self, cutoff_millis: i64) -> usize {
        let before = self.dedup.len();
        self.dedup.retain(|_, seen_at| *seen_at >= cutoff_millis);
        self.calls.retain(|_, call| call.updated_at >= cutoff_millis);
        before - self.dedup.len()
    }
}

/// The state of every owned task, committed and pending.
#[derive(Debug, Default)]
pub(crate) struct Stores {
    committed: HashMap<TopicPartition, PartitionState>,
    pending: HashMap<TopicPartition, PartitionState>,
}

impl Stores {
    /// Whether `event_id` was seen in `task`, committed or in the open transaction.
    pub(crate) fn seen(&self, task: &TopicPartition, event_id: &str) -> bool {
        let has = |states: &HashMap<TopicPartition, PartitionState>| {
            states.get(task).is_some_and(|s| s.dedup.contains_key(event_id))
        };
        has(&self.pending) || has(&self.committed)
    }

    pub(crate) fn mark_seen(&mut self, task: &TopicPartition, event_id: &str, at_millis: i64) {
        self.pending
            .entry(task.clone())
            .or_default()
            .dedup
            .insert(event_id.to_owned(), at_millis);
    }

    /// The latest state of `call_sid`, including the open transaction's changes.
    pub(crate) fn call(&self, task: &TopicPartition, call_sid: &str) -> Option<&CallState> {
        self.pending
            .get(task)
            .and_then(|s| s.calls.get(call_sid))
            .or_else(|| self.committed.get(task).and_then(|s| s.calls.get(call_sid)))
    }

    pub(crate) fn put_call(&mut self, task: &TopicPartition, state: CallState) {
        self.pending
            .entry(task.clone())
            .or_default()
            .calls
            .insert(state.call_sid.clone(), state);
    }

    /// The open transaction committed: its changes become committed state.
    pub(crate) fn commit(&mut self) {
        for (task, changes) in self.pending.drain() {
            self.committed.entry(task).or_default().merge(changes);
        }
    }

    /// The open transaction aborted: its changes never happened.
    pub(crate) fn abort(&mut self) {
        self.pending.clear();
    }

    /// Installs the state restored for a newly assigned task.
    pub(crate) fn install(&mut self, task: TopicPartition, state: PartitionState) {
        self.pending.remove(&task);
        self.committed.insert(task, state);
    }

    /// Forgets a task that is no longer owned.
    pub(crate) fn remove(&mut self, task: &TopicPartition) {
        self.pending.remove(task);
        self.committed.remove(task);
    }

    /// Applies the dedup window to committed state; returns how many ids were forgotten.
    pub(crate) fn evict(&mut self, cutoff_millis: i64) -> usize {
        self.committed
            .values_mut()
            .map(|state| state.evict(cutoff_millis))
            .sum()
    }

    /// Number of remembered event ids, for the metrics.
    pub(crate) fn dedup_entries(&self) -> usize {
        self.committed.values().map(|s| s.dedup.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(sid: &str, status: &str) -> CallState {
        serde_json::from_value(serde_json::json!({
            "call_sid": sid,
            "phone_id": "+15550001111",
            "status": status,
            "last_event_id": "EV",
            "updated_at": 1_000,
        }))
        .expect("a minimal call state")
    }

    #[test]
    fn pending_changes_are_visible_and_become_committed_on_commit() {
        let task = TopicPartition::new("switchboard.raw.twilio", 0);
        let mut stores = Stores::default();
        stores.install(task.clone(), PartitionState::default());
        stores.mark_seen(&task, "EV1", 1);
        stores.put_call(&task, call("CA1", "ringing"));
        assert!(stores.seen(&task, "EV1"));
        assert_eq!(
            stores.call(&task, "CA1").map(|c| c.status.as_str()),
            Some("ringing")
        );
        stores.commit();
        assert!(stores.seen(&task, "EV1"));
        assert_eq!(
            stores.call(&task, "CA1").map(|c| c.status.as_str()),
            Some("ringing")
        );
    }

    #[test]
    fn an_abort_forgets_the_open_transaction_only() {
        let task = TopicPartition::new("switchboard.raw.twilio", 0);
        let mut stores = Stores::default();
        stores.install(task.clone(), PartitionState::default());
        stores.mark_seen(&task, "EV1", 1);
        stores.put_call(&task, call("CA1", "ringing"));
        stores.commit();
        stores.mark_seen(&task, "EV2", 2);
        stores.put_call(&task, call("CA1", "completed"));
        stores.abort();
        assert!(stores.seen(&task, "EV1"));
        assert!(!stores.seen(&task, "EV2"));
        assert_eq!(
            stores.call(&task, "CA1").map(|c| c.status.as_str()),
            Some("ringing")
        );
    }

    #[test]
    fn tasks_are_separate_and_eviction_applies_the_window() {
        let a = TopicPartition::new("switchboard.raw.twilio", 0);
        let b = TopicPartition::new("switchboard.raw.twilio", 1);
        let mut stores = Stores::default();
        stores.mark_seen(&a, "EV1", 100);
        stores.mark_seen(&b, "EV2", 5_000);
        stores.commit();
        assert!(!stores.seen(&b, "EV1"));
        assert_eq!(stores.evict(1_000), 1);
        assert!(!stores.seen(&a, "EV1"));
        assert!(stores.seen(&b, "EV2"));
        stores.remove(&b);
        assert!(!stores.seen(&b, "EV2"));
    }
}
