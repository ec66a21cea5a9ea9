//! What a DLQ record says about itself: its position, the headers the processor added when it
//! dead-lettered the record, and the headers a redriven copy carries. Pure, no I/O.

use std::fmt;
use std::str::FromStr;

use switchboard_schemas::{Source, topics};

use switchboard_schemas::headers;
use switchboard_schemas::headers::ladder as ladder_headers;

/// Header a redriven record carries: `switchboard.dlq/<partition>/<offset>` of the DLQ record it
/// was copied from.
pub const REDRIVEN_FROM: &str = "redriven-from";

/// Headers the processor adds to a DLQ record; a redriven copy drops them (and any older
/// [`REDRIVEN_FROM`], which it replaces).
const DLQ_ONLY_HEADERS: [&str; 7] = [
    headers::ERROR_CLASS,
    headers::ERROR_REASON,
    headers::FAILED_AT,
    headers::ORIGIN_TOPIC,
    headers::ORIGIN_PARTITION,
    headers::ORIGIN_OFFSET,
    REDRIVEN_FROM,
];

/// Headers an action's DLQ record keeps when redriven: the action it is for and where the event
/// was read (the dispatcher decodes it by its original topic).
const KEPT_FOR_ACTIONS: [&str; 4] = [
    ladder_headers::ACTION,
    headers::ORIGIN_TOPIC,
    headers::ORIGIN_PARTITION,
    headers::ORIGIN_OFFSET,
];

/// A record's place in the DLQ topic, written `<partition>/<offset>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.partition, self.offset)
    }
}

/// The error for a position that is not `<partition>/<offset>` with non-negative numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DLQ position {0:?}: expected <partition>/<offset>, e.g. 2/1041")]
pub struct InvalidPosition(pub String);

impl FromStr for Position {
    type Err = InvalidPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPosition(s.to_owned());
        let (partition, offset) = s.trim().split_once('/').ok_or_else(invalid)?;
        let partition: i32 = partition.parse().map_err(|_| invalid())?;
        let offset: i64 = offset.parse().map_err(|_| invalid())?;
        if partition < 0 || offset < 0 {
            return Err(invalid());
        }
        Ok(Self { partition, offset })
    }
}

/// Where the processor read the record before dead-lettering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The headers of a DLQ record that say what it is and why it is there. Every field is optional:
/// a record written by hand or by an older release may lack some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlqHeaders {
    pub event_id: Option<String>,
    /// The `source` header of the original record.
    pub source: Option<String>,
    pub error_class: Option<String>,
    pub error_reason: Option<String>,
    /// Epoch milliseconds.
    pub failed_at: Option<i64>,
    pub origin: Option<Origin>,
    /// For a failed action delivery (dispatcher): the action.
    pub action: Option<String>,
}

impl DlqHeaders {
    /// Reads the headers (key, value) of a DLQ record. A repeated header counts by its last
    /// occurrence: the processor appends its own headers after the original ones.
    pub fn parse<'a>(record_headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
        let mut parsed = Self::default();
        let (mut topic, mut partition, mut offset) = (None, None, None);
        for (key, value) in record_headers {
            let Some(value) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
                continue;
            };
            let value = value.to_owned();
            match key {
                headers::EVENT_ID => parsed.event_id = Some(value),
                headers::SOURCE => parsed.source = Some(value),
                headers::ERROR_CLASS => parsed.error_class = Some(value),
                headers::ERROR_REASON => parsed.error_reason = Some(value),
                headers::FAILED_AT => parsed.failed_at = value.trim().parse().ok(),
                headers::ORIGIN_TOPIC => topic = Some(value),
                headers::ORIGIN_PARTITION => partition = value.trim().parse().ok(),
                headers::ORIGIN_OFFSET => offset = value.trim().parse().ok(),
                ladder_headers::ACTION => parsed.action = Some(value),
                _ => {}
            }
        }
        if let (Some(topic), Some(partition), Some(offset)) = (topic, partition, offset) {
            parsed.origin = Some(Origin {
                topic,
                partition,
                offset,
            });
        }
        parsed
    }

    /// The record's source: its `source` header, else the source whose raw topic it came from.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref().or_else(|| {
            let topic = &self.origin.as_ref()?.topic;
            Source::ALL
                .into_iter()
                .find(|source| source.raw_topic() == topic)
                .map(Source::as_str)
        })
    }

    /// The topic a redrive republishes to: for a failed action delivery, the actions' redrive
    /// topic (the dispatcher delivers it again to that action only); otherwise the original topic,
    /// if it is one of the raw topics (the processor processes it again). Nothing else.
    pub fn redrive_topic(&self) -> Option<&'static str> {
        let topic = &self.origin.as_ref()?.topic;
        if self.action.is_some() {
            return topics::DOMAIN_TOPICS
                .contains(&topic.as_str())
                .then_some(topics::ACTIONS_REDRIVE);
        }
        Source::ALL
            .into_iter()
            .map(Source::raw_topic)
            .find(|raw| raw == topic)
    }
}

/// The value of [`REDRIVEN_FROM`] for the DLQ record at `position`.
pub fn redriven_from(position: Position) -> String {
    format!("{}/{position}", topics::DLQ)
}

/// The headers of the redriven copy of the DLQ record at `position`: the original record's
/// headers, in order, without the DLQ's own, plus [`REDRIVEN_FROM`]. A failed action delivery
/// (`for_action`) keeps its `action` and `original-*` headers, and drops its `attempt`: it starts
/// the retry ladder afresh.
pub fn redrive_headers<'a>(
    record_headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    position: Position,
    for_action: bool,
) -> Vec<(String, Option<Vec<u8>>)> {
    let dropped = |key: &str| {
        if for_action {
            key == ladder_headers::ATTEMPT
                || (DLQ_ONLY_HEADERS.contains(&key) && !KEPT_FOR_ACTIONS.contains(&key))
        } else {
            DLQ_ONLY_HEADERS.contains(&key) || key == ladder_headers::ACTION || key == ladder_headers::ATTEMPT
        }
    };
    let mut kept: Vec<(String, Option<Vec<u8>>)> = record_headers
        .into_iter()
        .filter(|(key, _)| !dropped(key))
        .map(|(key, value)| (key.to_owned(), value.map(<[u8]>::to_vec)))
        .collect();
    kept.push((
        REDRIVEN_FROM.to_owned(),
        Some(redriven_from(position).into_bytes()),
    ));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dlq_headers() -> Vec<(&'static str, Option<&'static [u8]>)> {
        vec![
            ("event-id", Some(b"EV-1")),
            ("source", Some(b"twilio")),
            ("error-class", Some(b"missing_field")),
            ("error-reason", Some(b"missing field CallSid")),
            ("failed-at", Some(b"1764423117123")),
            ("original-topic", Some(b"switchboard.raw.twilio")),
            ("original-partition", Some(b"2")),
            ("original-offset", Some(b"41")),
        ]
    }

    #[test]
    fn positions_parse_and_print_as_partition_slash_offset() {
        let position: Position = "2/1041".parse().unwrap();
        assert_eq!(
            position,
            Position {
                partition: 2,
                offset: 1041
            }
        );
        assert_eq!(position.to_string(), "2/1041");
        for bad in ["", "2", "2/", "/3", "a/1", "1/b", "-1/3", "1/-3", "1/2/3"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} is rejected");
        }
    }

    #[test]
    fn the_processors_headers_are_read() {
        let parsed = DlqHeaders::parse(dlq_headers());
        assert_eq!(parsed.event_id.as_deref(), Some("EV-1"));
        assert_eq!(parsed.source(), Some("twilio"));
        assert_eq!(parsed.error_class.as_deref(), Some("missing_field"));
        assert_eq!(parsed.error_reason.as_deref(), Some("missing field CallSid"));
        assert_eq!(parsed.failed_at, Some(1_764_423_117_123));
        assert_eq!(
            parsed.origin,
            Some(Origin {
                topic: "switchboard.raw.twilio".into(),
                partition: 2,
                offset: 41
            })
        );
        assert_eq!(parsed.redrive_topic(), Some(topics::RAW_TWILIO));
    }

    #[test]
    fn missing_or_malformed_headers_leave_fields_empty() {
        let parsed = DlqHeaders::parse([
            ("failed-at", Some(&b"yesterday"[..])),
            ("original-topic", Some(b"switchboard.raw.stripe")),
            ("original-partition", Some(b"x")),
            ("event-id", None),
            ("error-class", Some(&[0xff, 0xfe][..])),
        ]);
        assert_eq!(parsed.failed_at, None);
        assert_eq!(parsed.origin, None, "an origin needs all three headers");
        assert_eq!(parsed.event_id, None);
        assert_eq!(parsed.error_class, None, "not UTF-8");
        assert_eq!(parsed.source(), None);
        assert_eq!(parsed.redrive_topic(), None);
    }

    #[test]
    fn the_source_falls_back_to_the_original_raw_topic() {
        let parsed = DlqHeaders::parse([
            ("original-topic", Some(&b"switchboard.raw.calendly"[..])),
            ("original-partition", Some(b"0")),
            ("original-offset", Some(b"7")),
        ]);
        assert_eq!(parsed.source(), Some("calendly"));
    }

    #[test]
    fn only_raw_topics_are_redrive_targets() {
        let parsed = DlqHeaders::parse([
            ("original-topic", Some(&b"switchboard.calls"[..])),
            ("original-partition", Some(b"0")),
            ("original-offset", Some(b"7")),
        ]);
        assert_eq!(parsed.redrive_topic(), None);
    }

    #[test]
    fn the_last_occurrence_of_a_header_wins() {
        let parsed = DlqHeaders::parse([
            ("error-class", Some(&b"undecodable"[..])),
            ("error-class", Some(b"unknown_kind")),
        ]);
        assert_eq!(parsed.error_class.as_deref(), Some("unknown_kind"));
    }

    #[test]
    fn a_redriven_copy_keeps_the_original_headers_and_says_where_it_came_from() {
        let mut input = dlq_headers();
        input.push(("x-custom", None));
        input.push(("redriven-from", Some(b"switchboard.dlq/0/1")));
        let position = Position {
            partition: 1,
            offset: 9,
        };
        let headers = redrive_headers(input, position, false);
        let keys: Vec<_> = headers.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["event-id", "source", "x-custom", "redriven-from"]);
        assert_eq!(headers[0].1.as_deref(), Some(&b"EV-1"[..]));
        assert_eq!(headers[2].1, None, "a null header stays null");
        assert_eq!(
            headers[3].1.as_deref(),
            Some(&b"switchboard.dlq/1/9"[..]),
            "the older redriven-from is replaced"
        );
    }

    #[test]
    fn a_failed_action_delivery_goes_back_to_its_action_with_its_origin() {
        let input = vec![
            ("event-id", Some(&b"EV-1"[..])),
            ("source", Some(&b"twilio"[..])),
            ("error-class", Some(&b"retries_exhausted"[..])),
            ("error-reason", Some(&b"6 attempts failed"[..])),
            ("failed-at", Some(&b"1764421200000"[..])),
            ("action", Some(&b"app"[..])),
            ("attempt", Some(&b"6"[..])),
            ("original-topic", Some(&b"switchboard.calls"[..])),
            ("original-partition", Some(&b"2"[..])),
            ("original-offset", Some(&b"40"[..])),
        ];
        let parsed = DlqHeaders::parse(input.clone());
        assert_eq!(parsed.action.as_deref(), Some("app"));
        assert_eq!(parsed.redrive_topic(), Some(topics::ACTIONS_REDRIVE));
        let headers = redrive_headers(
            input,
            Position {
                partition: 0,
                offset: 7,
            },
            true,
        );
        let keys: Vec<_> = headers.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "event-id",
                "source",
                "action",
                "original-topic",
                "original-partition",
                "original-offset",
                "redriven-from"
            ]
        );
        let processor_record = DlqHeaders {
            action: None,
            ..parsed.clone()
        };
        assert_eq!(
            processor_record.redrive_topic(),
            None,
            "a domain topic is no raw topic"
        );
        let stray = DlqHeaders {
            origin: Some(Origin {
                topic: "elsewhere".into(),
                partition: 0,
                offset: 0,
            }),
            ..parsed
        };
        assert_eq!(
            stray.redrive_topic(),
            None,
            "an action record goes back only from a domain topic"
        );
    }
}
