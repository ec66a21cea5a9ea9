//! `GET /debug/webhooks`: what the pipeline did over a time window, for an operator with the
//! admin token. The window runs from the offsets `offsets_for_times` gives to the end offsets; raw
//! topics are counted by offsets, transactionally written topics by bounded reads (see
//! [`super::read`]); error reasons come from a bounded scan of the DLQ, recent events from the tail
//! of the raw topics. See the README section "Observability" for the JSON fields.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_schemas::{Source, topics};

use super::events::{EventMeta, rfc3339};
use super::read::{Reader, Record};
use super::stats::{Reason, success_rate, top_reasons};
use crate::config::Config;
use crate::dlq::record::DlqHeaders;
use switchboard_schemas::topics::RETRY_TOPIC_PREFIX;

/// Window length unless `hours` says otherwise.
pub(crate) const DEFAULT_HOURS: u32 = 24;
/// The longest window accepted (30 days).
pub(crate) const MAX_HOURS: u32 = 720;
/// Recent events unless `limit` says otherwise.
pub(crate) const DEFAULT_LIMIT: usize = 20;
/// The largest `limit` accepted.
pub(crate) const MAX_LIMIT: usize = 200;
/// At most this many DLQ records are scanned for error reasons (the newest of the window).
pub(crate) const DLQ_SCAN_LIMIT: i64 = 10_000;
/// Transactional topics (domain, retry) are counted by reading when the window holds at most
/// this many of their offsets; beyond, by offsets (an upper bound, `estimated`).
pub(crate) const COUNT_SCAN_LIMIT: i64 = 100_000;
/// Error reasons listed.
pub(crate) const TOP_REASONS: usize = 10;
/// Budget of the Kafka reads of one request.
pub(crate) const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);

/// The query string, as sent (parsed by [`Params::parse`] for clear 400s).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawParams {
    source: Option<String>,
    hours: Option<String>,
    limit: Option<String>,
    include_body: Option<String>,
}

/// A valid query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Params {
    /// `None`: every source.
    pub(crate) source: Option<Source>,
    pub(crate) hours: u32,
    pub(crate) limit: usize,
    pub(crate) include_body: bool,
}

impl Params {
    pub(crate) fn parse(raw: RawParams) -> Result<Self, &'static str> {
        let source = match raw.source.as_deref() {
            None | Some("") => None,
            Some(source) => Some(
                Source::from_str(source)
                    .map_err(|_| "source must be one of twilio, stripe, calendly, generic")?,
            ),
        };
        let hours = match raw.hours.as_deref() {
            None => DEFAULT_HOURS,
            Some(hours) => hours
                .parse::<u32>()
                .ok()
                .filter(|h| (1..=MAX_HOURS).contains(h))
                .ok_or("hours must be an integer from 1 to 720")?,
        };
        let limit = match raw.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(limit) => limit
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or("limit must be an integer from 1 to 200")?,
        };
        let include_body = match raw.include_body.as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => return Err("include_body must be true or false"),
        };
        Ok(Self {
            source,
            hours,
            limit,
            include_body,
        })
    }

    fn sources(&self) -> Vec<Source> {
        match self.source {
            Some(source) => vec![source],
            None => Source::ALL.to_vec(),
        }
    }
}

/// The domain topics the processor writes a source's events to.
pub(crate) fn domain_topics(source: Source) -> &'static [&'static str] {
    match source {
        Source::Twilio => &[topics::CALLS, topics::MESSAGES],
        Source::Stripe => &[topics::BILLING],
        Source::Calendly => &[topics::BOOKINGS],
        Source::Generic => &[topics::GENERIC],
    }
}

/// A domain topic's type name: `switchboard.calls` -> `calls`.
pub(crate) fn type_name(topic: &str) -> &str {
    topic.strip_prefix("switchboard.").unwrap_or(topic)
}

/// What the Kafka reads found, before decoding the recent events.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) sources: BTreeMap<String, u64>,
    pub(crate) types: BTreeMap<String, u64>,
    pub(crate) dlq_records: u64,
    pub(crate) retrying: u64,
    pub(crate) estimated: bool,
    pub(crate) dead_lettered: u64,
    pub(crate) actions_dead_lettered: u64,
    pub(crate) scanned: u64,
    pub(crate) truncated: bool,
    pub(crate) reasons: Vec<Reason>,
    pub(crate) recent: Vec<Record>,
}

/// Reads what the report needs. Blocking.
pub(crate) fn collect(config: &Config, params: &Params, since_millis: i64) -> anyhow::Result<Collected> {
    let reader = Reader::new(config, KAFKA_TIMEOUT)?;
    let sources = params.sources();
    let raw_topics: Vec<&str> = sources.iter().map(|s| s.raw_topic()).collect();
    let type_topics: Vec<&str> = sources
        .iter()
        .flat_map(|s| domain_topics(*s).iter().copied())
        .collect();
    let mut named = raw_topics.clone();
    named.extend(&type_topics);
    named.push(topics::DLQ);
    let partitions = reader.partitions(&named, Some(RETRY_TOPIC_PREFIX))?;
    let extents = reader.extents(&partitions)?;
    let starts = reader.window_starts(&extents, since_millis)?;
    let ranges_of = |wanted: &dyn Fn(&str) -> bool| -> BTreeMap<_, (i64, i64)> {
        extents
            .iter()
            .filter(|((t, _), _)| wanted(t))
            .map(|(tp, extent)| (tp.clone(), (starts[tp], extent.end)))
            .collect()
    };
    let offsets = |ranges: &BTreeMap<_, (i64, i64)>, topic: &str| -> u64 {
        ranges
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|(_, (start, end))| u64::try_from(end - start).unwrap_or(0))
            .sum()
    };

    // Raw topics: offsets are records.
    let raw_ranges = ranges_of(&|t| raw_topics.contains(&t));
    let mut collected = Collected {
        sources: sources
            .iter()
            .map(|s| (s.as_str().to_owned(), offsets(&raw_ranges, s.raw_topic())))
            .collect(),
        ..Collected::default()
    };
    // Transactional topics: read and counted while the window is small enough.
    let written = ranges_of(&|t| type_topics.contains(&t) || t.starts_with(RETRY_TOPIC_PREFIX));
    let counted = reader.count(&written, COUNT_SCAN_LIMIT)?;
    collected.estimated = counted.is_none();
    let count = |topic: &str| match &counted {
        Some(counts) => counts.get(topic).copied().unwrap_or(0),
        None => offsets(&written, topic),
    };
    collected.types = type_topics
        .iter()
        .map(|t| (type_name(t).to_owned(), count(t)))
        .collect();
    collected.retrying = partitions
        .keys()
        .filter(|t| t.starts_with(RETRY_TOPIC_PREFIX))
        .map(|t| count(t))
        .sum();

    // The DLQ records of the window, the newest DLQ_SCAN_LIMIT at most.
    let dlq: Vec<_> = extents.iter().filter(|((t, _), _)| t == topics::DLQ).collect();
    let per_partition = (DLQ_SCAN_LIMIT / i64::try_from(dlq.len().max(1)).unwrap_or(1)).max(1);
    let mut ranges = BTreeMap::new();
    let mut dlq_offsets: u64 = 0;
    for (tp, extent) in dlq {
        dlq_offsets += u64::try_from(extent.end - starts[tp]).unwrap_or(0);
        let start = starts[tp].max(extent.end - per_partition);
        collected.truncated |= start > starts[tp];
        ranges.insert(tp.clone(), (start, extent.end));
    }
    let wanted: Option<&str> = params.source.map(Source::as_str);
    let mut failures = Vec::new();
    let scan_ends: BTreeMap<i32, i64> = ranges.iter().map(|((_, p), (_, end))| (*p, *end)).collect();
    reader.read(ranges, |message| {
        use rdkafka::message::{Headers, Message};
        if scan_ends
            .get(&message.partition())
            .is_none_or(|end| message.offset() >= *end)
        {
            return ControlFlow::Continue(());
        }
        collected.scanned += 1;
        let parsed = DlqHeaders::parse(
            message
                .headers()
                .into_iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value)),
        );
        if wanted.is_none() || parsed.source.as_deref() == wanted {
            if parsed.action.is_some() {
                collected.actions_dead_lettered += 1;
            } else {
                collected.dead_lettered += 1;
            }
            failures.push((parsed.error_class, parsed.error_reason));
        }
        ControlFlow::Continue(())
    })?;
    collected.reasons = top_reasons(failures, TOP_REASONS);
    collected.dlq_records = if collected.truncated {
        collected.estimated = true;
        dlq_offsets.max(collected.scanned)
    } else {
        collected.scanned
    };

    // The tail of the raw topics: enough offsets per partition for the newest `limit` records
    // even if transaction markers take some.
    let tail = i64::try_from(params.limit * 2 + 10).unwrap_or(i64::MAX);
    let ranges = extents
        .iter()
        .filter(|((t, _), _)| raw_topics.contains(&t.as_str()))
        .map(|(tp, e)| (tp.clone(), ((e.end - tail).max(e.low), e.end)))
        .collect();
    let mut recent = Vec::new();
    reader.read(ranges, |message| {
        recent.push(Record::from_message(message));
        ControlFlow::Continue(())
    })?;
    collected.recent = super::events::newest(recent, params.limit);
    Ok(collected)
}

/// The answer's window.
#[derive(Debug, Serialize)]
pub(crate) struct Window {
    pub(crate) hours: u32,
    pub(crate) from: String,
    pub(crate) to: String,
    /// The source asked for; `null`: all.
    pub(crate) source: Option<&'static str>,
}

/// How much of the DLQ was read for `top_errors`.
#[derive(Debug, Serialize)]
pub(crate) struct DlqScan {
    pub(crate) scanned: u64,
    /// More DLQ records are in the window than were scanned.
    pub(crate) truncated: bool,
}

/// The JSON answer.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) window: Window,
    /// Raw webhooks stored per source.
    pub(crate) sources: BTreeMap<String, u64>,
    /// Domain events per type (the topics the selected sources write).
    pub(crate) types: BTreeMap<String, u64>,
    /// Sum of `types`.
    pub(crate) processed: u64,
    /// Processor DLQ records (poison) of the selected sources.
    pub(crate) dead_lettered: u64,
    /// Action deliveries dead-lettered (actions service) for the selected sources.
    pub(crate) actions_dead_lettered: u64,
    /// Every record of `switchboard.dlq` in the window (all sources and actions).
    pub(crate) dlq_records: u64,
    /// Records in the retry topics (`switchboard.retry.*`, all sources).
    pub(crate) retrying: u64,
    /// Some counts of transactional topics are offsets (the window held too many records to
    /// read): upper bounds, as transaction markers take offsets too.
    pub(crate) estimated: bool,
    /// processed / (processed + dead_lettered); `null` when both are 0.
    pub(crate) success_rate: Option<f64>,
    pub(crate) top_errors: Vec<Reason>,
    pub(crate) dlq_scan: DlqScan,
    /// The newest raw webhooks, newest first.
    pub(crate) recent: Vec<EventMeta>,
}

impl Report {
    pub(crate) fn new(
        params: &Params,
        from_millis: i64,
        to_millis: i64,
        collected: Collected,
        recent: Vec<EventMeta>,
    ) -> Self {
        let processed = collected.types.values().sum();
        Self {
            window: Window {
                hours: params.hours,
                from: rfc3339(from_millis),
                to: rfc3339(to_millis),
                source: params.source.map(Source::as_str),
            },
            sources: collected.sources,
            types: collected.types,
            processed,
            dead_lettered: collected.dead_lettered,
            actions_dead_lettered: collected.actions_dead_lettered,
            dlq_records: collected.dlq_records,
            retrying: collected.retrying,
            estimated: collected.estimated,
            success_rate: success_rate(processed, collected.dead_lettered),
            top_errors: collected.reasons,
            dlq_scan: DlqScan {
                scanned: collected.scanned,
                truncated: collected.truncated,
            },
            recent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(query: &[(&str, &str)]) -> RawParams {
        let get = |key: &str| {
            query
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        };
        RawParams {
            source: get("source"),
            hours: get("hours"),
            limit: get("limit"),
            include_body: get("include_body"),
        }
    }

    #[test]
    fn params_have_defaults_and_bounds() {
        let defaults = Params::parse(RawParams::default()).unwrap();
        assert_eq!(
            (
                defaults.source,
                defaults.hours,
                defaults.limit,
                defaults.include_body
            ),
            (None, 24, 20, false)
        );
        let given = Params::parse(raw(&[
            ("source", "twilio"),
            ("hours", "2"),
            ("limit", "200"),
            ("include_body", "true"),
        ]))
        .unwrap();
        assert_eq!(
            (given.source, given.hours, given.limit, given.include_body),
            (Some(Source::Twilio), 2, 200, true)
        );
        for bad in [
            [("source", "smtp")],
            [("hours", "0")],
            [("hours", "721")],
            [("hours", "x")],
            [("limit", "201")],
            [("limit", "0")],
            [("include_body", "yes")],
        ] {
            assert!(Params::parse(raw(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn report_json_shape() {
        let params = Params::parse(raw(&[("source", "twilio")])).unwrap();
        let collected = Collected {
            sources: [("twilio".to_owned(), 5)].into(),
            types: [("calls".to_owned(), 3), ("messages".to_owned(), 1)].into(),
            dlq_records: 1,
            dead_lettered: 1,
            scanned: 1,
            reasons: vec![Reason {
                class: "missing_field".into(),
                reason: "CallSid".into(),
                count: 1,
            }],
            ..Collected::default()
        };
        let report = Report::new(&params, 0, 3_600_000, collected, Vec::new());
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({
                "window": {"hours": 24, "from": "1970-01-01T00:00:00.000Z", "to": "1970-01-01T01:00:00.000Z", "source": "twilio"},
                "sources": {"twilio": 5},
                "types": {"calls": 3, "messages": 1},
                "processed": 4,
                "dead_lettered": 1,
                "actions_dead_lettered": 0,
                "dlq_records": 1,
                "retrying": 0,
                "estimated": false,
                "success_rate": 0.8,
                "top_errors": [{"class": "missing_field", "reason": "CallSid", "count": 1}],
                "dlq_scan": {"scanned": 1, "truncated": false},
                "recent": [],
            })
        );
    }

    #[test]
    fn every_source_has_its_domain_topics() {
        assert_eq!(domain_topics(Source::Twilio), &[topics::CALLS, topics::MESSAGES]);
        let all: Vec<&str> = Source::ALL
            .iter()
            .flat_map(|s| domain_topics(*s).iter().copied())
            .collect();
        assert_eq!(all, topics::DOMAIN_TOPICS);
        assert_eq!(type_name(topics::BILLING), "billing");
    }
}
