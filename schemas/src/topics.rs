//! Topic names. Nothing outside this module spells a topic name.

use std::fmt;
use std::str::FromStr;

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
    fn unknown_source_is_named_in_the_error() {
        let err = "paypal".parse::<Source>().unwrap_err();
        assert!(err.to_string().contains("\"paypal\""));
    }
}
