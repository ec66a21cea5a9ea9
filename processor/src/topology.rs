//! Which topics a processing run writes: the live ones, or a backfill's prefixed copies.
//!
//! The processor always writes the live topology. A replay writes either the live domain topics
//! (`switchboard-processor replay` without `--into`: the dedup state decides what is new, and the
//! running processor keeps owning call state) or a complete prefixed copy
//! (`--into backfill` → `backfill.switchboard.calls`, `backfill.switchboard.call-state`, …), so that
//! a new consumer or store can be filled without touching live topics.

use switchboard_schemas::topics;

/// The output topics of one processing run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Prepended, with a `.`, to every output topic.
    prefix: Option<String>,
    /// Whether the run writes call state (`switchboard.call-state`).
    call_state: bool,
}

impl Topology {
    /// The live topics, call state included: the processor's.
    pub fn live() -> Self {
        Self {
            prefix: None,
            call_state: true,
        }
    }

    /// The live domain topics and dedup changelog, without call state (a live replay: the running
    /// processor owns `switchboard.call-state`).
    pub fn live_without_call_state() -> Self {
        Self {
            prefix: None,
            call_state: false,
        }
    }

    /// Prefixed copies of every output topic, call state included (a backfill).
    pub fn prefixed(prefix: &str) -> Self {
        Self {
            prefix: Some(prefix.trim_end_matches('.').to_owned()),
            call_state: true,
        }
    }

    /// The topic this run writes for the live topic `name`.
    pub fn topic(&self, name: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}.{name}"),
            None => name.to_owned(),
        }
    }

    /// Whether call state is written (and restored).
    pub fn call_state(&self) -> bool {
        self.call_state
    }

    /// Whether this is the live topology or a variant of it (no prefix).
    pub fn is_live(&self) -> bool {
        self.prefix.is_none()
    }

    /// Every topic this run writes: the domain topics, the DLQ, the dedup changelog and, if
    /// written, call state.
    pub fn outputs(&self) -> Vec<String> {
        let mut names: Vec<&str> = topics::DOMAIN_TOPICS.to_vec();
        names.extend([topics::DLQ, topics::DEDUP_CHANGELOG]);
        if self.call_state {
            names.push(topics::CALL_STATE);
        }
        names.into_iter().map(|name| self.topic(name)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_applies_to_every_output() {
        let backfill = Topology::prefixed("backfill.");
        assert_eq!(backfill.topic(topics::CALLS), "backfill.switchboard.calls");
        assert!(
            backfill
                .outputs()
                .iter()
                .all(|t| t.starts_with("backfill.switchboard."))
        );
        assert!(
            backfill
                .outputs()
                .contains(&"backfill.switchboard.call-state".to_owned())
        );
        assert_eq!(Topology::live().topic(topics::CALLS), topics::CALLS);
        assert!(
            !Topology::live_without_call_state()
                .outputs()
                .contains(&topics::CALL_STATE.to_owned())
        );
    }
}
