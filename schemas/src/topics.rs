//! Topic names. Nothing outside this module spells a topic name.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Prefix shared by every topic switchboard owns.
pub const PREFIX: &str = "switchboard";

/// The providers whose webhooks ingest accepts; each has its own raw topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Twilio,
    Stripe,
    Calendly,
    Generic,
}

impl Source {
    /// Every source, in a stable order.
    pub const ALL: [Source; 4] = [Source::Twilio, Source::Stripe, Source::Calendly, Source::Generic];

    /// The lower-case name used in topics, metrics labels and the envelope's `source` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Twilio => "twilio",
            Source::Stripe => "stripe",
            Source::Calendly => "calendly",
            Source::Generic => "generic",
        }
    }

    /// The topic ingest publishes this source's raw webhooks to: `switchboard.raw.<source>`.
    pub fn raw_topic(self) -> &'static str {
        match self {
            Source::Twilio => RAW_TWILIO,
            Source::Stripe => RAW_STRIPE,
            Source::Calendly => RAW_CALENDLY,
            Source::Generic => RAW_GENERIC,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a source name that is not one of [`Source::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source {0:?}: expected one of twilio, stripe, calendly, generic")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|source| source.as_str() == s)
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

pub const RAW_TWILIO: &str = "switchboard.raw.twilio";
pub const RAW_STRIPE: &str = "switchboard.raw.stripe";
pub const RAW_CALENDLY: &str = "switchboard.raw.calendly";
pub const RAW_GENERIC: &str = "switchboard.raw.generic";

/// Twilio voice callbacks as `CallEvent`s, keyed by phone id.
pub const CALLS: &str = "switchboard.calls";
/// Twilio message callbacks as `MessageEvent`s, keyed by phone id.
pub const MESSAGES: &str = "switchboard.messages";
/// Stripe events as `BillingEvent`s, keyed by phone id.
pub const BILLING: &str = "switchboard.billing";
/// Calendly invitee events as `BookingEvent`s, keyed by phone id.
pub const BOOKINGS: &str = "switchboard.bookings";
/// Generic-source webhooks as `GenericEvent`s, keyed by phone id.
pub const GENERIC: &str = "switchboard.generic";
/// The current `CallState` of every call; compacted, keyed by call sid.
pub const CALL_STATE: &str = "switchboard.call-state";
/// Raw webhooks the processor could not turn into a domain event (poison), with the reason.
pub const DLQ: &str = "switchboard.dlq";
/// The processor's dedup state changelog (internal); compacted.
pub const DEDUP_CHANGELOG: &str = "switchboard.processor.dedup";
/// DLQ positions (`<partition>/<offset>`) already re-published by `dlq redrive`; compacted.
pub const DLQ_REDRIVEN: &str = "switchboard.dlq.redriven";
/// Dead-lettered action deliveries re-published by `dlq redrive`, each for the one action named in
/// its `action` header. (The retry topics, `switchboard.retry.<delay>`, follow the configured
/// ladder and are not listed here.)
pub const ACTIONS_REDRIVE: &str = "switchboard.actions.redrive";
/// Every committed delivery attempt of the actions service ([`crate::ActionAttempt`]), keyed by
/// event id; time-retained. The sink stores them for the console's deliveries page.
pub const ACTIONS_ATTEMPTS: &str = "switchboard.actions.attempts";

/// Prefix of every retry topic of the actions service's ladder (see [`retry_topic`]).
pub const RETRY_TOPIC_PREFIX: &str = "switchboard.retry.";

/// The retry topic of a ladder step: `switchboard.retry.` + the delay in its largest whole unit
/// (`500ms`, `1s`, `5m`, `2h`).
pub fn retry_topic(delay: Duration) -> String {
    let millis = delay.as_millis();
    let suffix = if millis.is_multiple_of(3_600_000) {
        format!("{}h", millis / 3_600_000)
    } else if millis.is_multiple_of(60_000) {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1_000) {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    };
    format!("{RETRY_TOPIC_PREFIX}{suffix}")
}

/// The domain topics the processor writes normalized events to.
pub const DOMAIN_TOPICS: [&str; 5] = [CALLS, MESSAGES, BILLING, BOOKINGS, GENERIC];

/// Topics that must be created with `cleanup.policy=compact`: only the latest record per key matters.
pub const COMPACTED_TOPICS: [&str; 3] = [CALL_STATE, DEDUP_CHANGELOG, DLQ_REDRIVEN];

/// Every topic switchboard owns, raw topics first: what a deployment creates.
pub const ALL_TOPICS: [&str; 15] = [
    RAW_TWILIO,
    RAW_STRIPE,
    RAW_CALENDLY,
    RAW_GENERIC,
    CALLS,
    MESSAGES,
    BILLING,
    BOOKINGS,
    GENERIC,
    CALL_STATE,
    DLQ,
    DEDUP_CHANGELOG,
    DLQ_REDRIVEN,
    ACTIONS_REDRIVE,
    ACTIONS_ATTEMPTS,
];

/// The subject of a topic's record values under the TopicNameStrategy: `<topic>-value`.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_topics_follow_the_naming_scheme() {
        for source in Source::ALL {
            assert_eq!(source.raw_topic(), format!("{PREFIX}.raw.{source}"));
            assert_eq!(source.as_str().parse::<Source>(), Ok(source));
        }
        assert_eq!(value_subject(RAW_TWILIO), "switchboard.raw.twilio-value");
    }

    #[test]
    fn output_topics_have_their_fixed_names() {
        assert_eq!(CALLS, "switchboard.calls");
        assert_eq!(MESSAGES, "switchboard.messages");
        assert_eq!(BILLING, "switchboard.billing");
        assert_eq!(BOOKINGS, "switchboard.bookings");
        assert_eq!(GENERIC, "switchboard.generic");
        assert_eq!(CALL_STATE, "switchboard.call-state");
        assert_eq!(DLQ, "switchboard.dlq");
        assert_eq!(DEDUP_CHANGELOG, "switchboard.processor.dedup");
        assert_eq!(DLQ_REDRIVEN, "switchboard.dlq.redriven");
    }

    #[test]
    fn every_topic_is_prefixed_unique_and_listed() {
        let unique: std::collections::BTreeSet<_> = ALL_TOPICS.into_iter().collect();
        assert_eq!(unique.len(), ALL_TOPICS.len(), "topic names are unique");
        for topic in ALL_TOPICS {
            assert!(
                topic.starts_with(&format!("{PREFIX}.")),
                "{topic} starts with the prefix"
            );
            // Legal Kafka topic names: at most 249 of [a-zA-Z0-9._-].
            assert!(
                topic.len() <= 249
                    && topic
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
            );
        }
        for source in Source::ALL {
            assert!(ALL_TOPICS.contains(&source.raw_topic()));
        }
        for topic in DOMAIN_TOPICS.into_iter().chain(COMPACTED_TOPICS) {
            assert!(ALL_TOPICS.contains(&topic), "{topic} is listed in ALL_TOPICS");
        }
        assert_eq!(
            ALL_TOPICS.len(),
            4 + DOMAIN_TOPICS.len() + 6,
            "raw, domain, call-state, DLQ, dedup, redriven, actions redrive, actions attempts"
        );
        assert_eq!(COMPACTED_TOPICS, [CALL_STATE, DEDUP_CHANGELOG, DLQ_REDRIVEN]);
    }

    #[test]
    fn unknown_source_is_named_in_the_error() {
        let err = "paypal".parse::<Source>().unwrap_err();
        assert!(err.to_string().contains("\"paypal\""));
    }
}
