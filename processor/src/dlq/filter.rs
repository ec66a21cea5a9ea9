//! Which DLQ records a command acts on: the filters shared by `list` and `redrive`, and the
//! parsing of their values. Pure, no I/O.

use chrono::{DateTime, SecondsFormat, Utc};
use switchboard_schemas::Source;

use super::record::{DlqHeaders, Position};
use crate::normalize::PoisonClass;
use switchboard_schemas::error_class;

/// Every `error-class` a DLQ record can carry: the processor's poison classes, then the
/// dispatcher's (`retries_exhausted`, `rejected`; `undecodable` is shared).
pub fn known_error_classes() -> Vec<&'static str> {
    let mut classes: Vec<&'static str> = PoisonClass::ALL.iter().map(|c| c.as_str()).collect();
    for class in [
        error_class::RETRIES_EXHAUSTED,
        error_class::REJECTED,
        error_class::UNDECODABLE,
    ] {
        if !classes.contains(&class) {
            classes.push(class);
        }
    }
    classes
}

/// The filters shared by the `dlq` commands. A record matches when it passes every filter given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only records from this source: twilio, stripe, calendly or generic.
    #[arg(long)]
    pub source: Option<Source>,
    /// Only records of this error class: undecodable, unknown_kind, missing_field (processor),
    /// retries_exhausted or rejected (actions).
    #[arg(long, value_parser = parse_error_class)]
    pub error_class: Option<&'static str>,
    /// Only failed deliveries of this action (dispatcher records).
    #[arg(long)]
    pub action: Option<String>,
    /// Only records that failed at or after this time (RFC 3339, e.g. 2026-11-29T13:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only records that failed before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Only the record at this DLQ position, <partition>/<offset> as `dlq list` prints it
    /// (repeat for several).
    #[arg(long = "position")]
    pub positions: Vec<Position>,
    /// At most this many records: `list` shows the newest N matches, `redrive` republishes the
    /// first N matches not yet redriven, in DLQ order.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// A filter that can match nothing, rejected before any broker is contacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFilter {
    #[error("--since ({since}) must be before --until ({until})")]
    EmptyWindow { since: String, until: String },
    #[error("--limit must be at least 1")]
    ZeroLimit,
}

impl Filter {
    /// Rejects filters that cannot match anything.
    pub fn validate(&self) -> Result<(), InvalidFilter> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            return Err(InvalidFilter::EmptyWindow {
                since: format_time(since.timestamp_millis()),
                until: format_time(until.timestamp_millis()),
            });
        }
        if self.limit == Some(0) {
            return Err(InvalidFilter::ZeroLimit);
        }
        Ok(())
    }

    /// Whether the DLQ record at `position` with these headers passes the filters (`--limit`
    /// aside). A record without a `failed-at` header fails any time filter.
    pub fn matches(&self, position: Position, record: &DlqHeaders) -> bool {
        if !self.positions.is_empty() && !self.positions.contains(&position) {
            return false;
        }
        if let Some(source) = self.source
            && record.source() != Some(source.as_str())
        {
            return false;
        }
        if let Some(class) = self.error_class
            && record.error_class.as_deref() != Some(class)
        {
            return false;
        }
        if let Some(action) = &self.action
            && record.action.as_ref() != Some(action)
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(failed_at) = record.failed_at else {
            return false;
        };
        self.since
            .is_none_or(|since| failed_at >= since.timestamp_millis())
            && self
                .until
                .is_none_or(|until| failed_at < until.timestamp_millis())
    }
}

/// Parses an `--error-class` value.
pub fn parse_error_class(value: &str) -> Result<&'static str, String> {
    let known = known_error_classes();
    known
        .iter()
        .find(|class| **class == value)
        .copied()
        .ok_or_else(|| {
            format!(
                "unknown error class {value:?}: expected one of {}",
                known.join(", ")
            )
        })
}

/// Parses an RFC 3339 time (`2026-11-29T13:00:00Z`, `2026-11-29T14:00:00+01:00`).
pub fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| format!("{value:?} is not an RFC 3339 time such as 2026-11-29T13:00:00Z: {e}"))
}

/// Epoch milliseconds as RFC 3339 in UTC with milliseconds; the number itself if out of range.
pub fn format_time(millis: i64) -> String {
    DateTime::from_timestamp_millis(millis).map_or_else(
        || millis.to_string(),
        |time| time.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: &str, class: &str, failed_at: Option<i64>) -> DlqHeaders {
        DlqHeaders {
            event_id: Some("EV-1".into()),
            source: Some(source.into()),
            error_class: Some(class.into()),
            error_reason: Some("missing field CallSid".into()),
            failed_at,
            origin: None,
            action: None,
        }
    }

    /// A DLQ position for the tests that do not filter by it.
    const HERE: Position = Position {
        partition: 0,
        offset: 7,
    };

    fn at(time: &str) -> DateTime<Utc> {
        parse_time(time).unwrap()
    }

    #[test]
    fn times_parse_as_rfc3339_with_any_offset() {
        assert_eq!(at("2025-11-29T13:00:00Z").timestamp_millis(), 1_764_421_200_000);
        assert_eq!(at("2025-11-29T14:00:00+01:00"), at("2025-11-29T13:00:00Z"));
        assert_eq!(
            at("2025-11-29T13:00:00.250Z").timestamp_millis(),
            1_764_421_200_250
        );
        for bad in ["2026-11-29", "yesterday", "1764421200000", "2026-11-29 13:00"] {
            assert!(parse_time(bad).is_err(), "{bad:?} is rejected");
        }
        assert_eq!(format_time(1_764_421_200_250), "2025-11-29T13:00:00.250Z");
    }

    #[test]
    fn error_classes_parse_by_their_names() {
        for class in PoisonClass::ALL {
            assert_eq!(parse_error_class(class.as_str()), Ok(class.as_str()));
        }
        assert_eq!(parse_error_class("retries_exhausted"), Ok("retries_exhausted"));
        let err = parse_error_class("timeout").unwrap_err();
        assert!(
            err.contains("undecodable, unknown_kind, missing_field, retries_exhausted, rejected"),
            "{err}"
        );
    }

    #[test]
    fn no_filter_matches_everything() {
        assert!(Filter::default().matches(HERE, &record("stripe", "undecodable", None)));
        assert!(Filter::default().matches(HERE, &DlqHeaders::default()));
    }

    #[test]
    fn source_and_class_must_both_match() {
        let filter = Filter {
            source: Some(Source::Twilio),
            error_class: Some("missing_field"),
            ..Filter::default()
        };
        assert!(filter.matches(HERE, &record("twilio", "missing_field", None)));
        assert!(!filter.matches(HERE, &record("stripe", "missing_field", None)));
        assert!(!filter.matches(HERE, &record("twilio", "unknown_kind", None)));
        assert!(!filter.matches(HERE, &DlqHeaders::default()));
    }

    #[test]
    fn the_action_filter_keeps_only_that_actions_deliveries() {
        let filter = Filter {
            action: Some("app".into()),
            ..Filter::default()
        };
        let mut delivery = record("twilio", "retries_exhausted", None);
        assert!(
            !filter.matches(HERE, &delivery),
            "a processor record has no action"
        );
        delivery.action = Some("app".into());
        assert!(filter.matches(HERE, &delivery));
        delivery.action = Some("crm".into());
        assert!(!filter.matches(HERE, &delivery));
    }

    #[test]
    fn the_time_window_is_since_inclusive_until_exclusive() {
        let filter = Filter {
            since: Some(at("2025-11-29T13:00:00Z")),
            until: Some(at("2025-11-29T14:00:00Z")),
            ..Filter::default()
        };
        let since = 1_764_421_200_000;
        let until = since + 3_600_000;
        assert!(filter.matches(HERE, &record("twilio", "undecodable", Some(since))));
        assert!(filter.matches(HERE, &record("twilio", "undecodable", Some(until - 1))));
        assert!(!filter.matches(HERE, &record("twilio", "undecodable", Some(since - 1))));
        assert!(!filter.matches(HERE, &record("twilio", "undecodable", Some(until))));
        assert!(
            !filter.matches(HERE, &record("twilio", "undecodable", None)),
            "no failed-at: outside any window"
        );
    }

    #[test]
    fn the_position_filter_keeps_only_the_positions_named() {
        let record = record("twilio", "undecodable", None);
        let other = Position {
            partition: 1,
            offset: 7,
        };
        let filter = Filter {
            positions: vec![HERE],
            ..Filter::default()
        };
        assert!(filter.matches(HERE, &record));
        assert!(!filter.matches(other, &record));
        let filter = Filter {
            positions: vec![other, HERE],
            source: Some(Source::Stripe),
            ..Filter::default()
        };
        assert!(!filter.matches(HERE, &record), "every other filter still applies");
    }

    #[test]
    fn impossible_filters_are_rejected() {
        let empty = Filter {
            since: Some(at("2025-11-29T14:00:00Z")),
            until: Some(at("2025-11-29T13:00:00Z")),
            ..Filter::default()
        };
        assert!(matches!(empty.validate(), Err(InvalidFilter::EmptyWindow { .. })));
        let zero = Filter {
            limit: Some(0),
            ..Filter::default()
        };
        assert_eq!(zero.validate(), Err(InvalidFilter::ZeroLimit));
        assert_eq!(Filter::default().validate(), Ok(()));
    }
}
