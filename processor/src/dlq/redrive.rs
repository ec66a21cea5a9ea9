//! `dlq redrive`: republishes DLQ records to the raw topic they came from, at most once per DLQ
//! position.
//!
//! Each batch of copies is written in one Kafka transaction together with one record per copied
//! DLQ position in the compacted `switchboard.dlq.redriven` topic, so a position is marked exactly
//! when its copy is committed. A run first fences any earlier run (same `transactional.id`), then
//! reads the marks and skips those positions: running it twice republishes nothing the second
//! time. A tombstone for a position (null value) forgets its mark.

use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use switchboard_schemas::topics;

use super::filter::Filter;
use super::read::{BoundedRead, Start};
use super::record::{DlqHeaders, Position, redrive_headers};

/// Records republished per transaction.
const BATCH: usize = 500;
/// How long one transactional call may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a redrive did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub dry_run: bool,
    /// DLQ records that passed the filters.
    pub matched: u64,
    /// Matching records republished (in a dry run: that would be).
    pub redriven: u64,
    /// Matching records an earlier run already republished: skipped.
    pub already_redriven: u64,
    /// Records read that did not pass the filters.
    pub skipped_by_filter: u64,
    /// Matching records with nowhere to go back to (no raw `original-topic`, or an action record
    /// without a domain one): skipped.
    pub unroutable: u64,
    /// Whether the run stopped at `--limit`.
    pub limited: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "would redrive" } else { "redriven" };
        write!(
            f,
            "matched {}, {verb} {}, already redriven {}, skipped by filter {}",
            self.matched, self.redriven, self.already_redriven, self.skipped_by_filter
        )?;
        if self.unroutable > 0 {
            write!(
                f,
                ", unroutable (no original topic to go back to) {}",
                self.unroutable
            )?;
        }
        if self.limited {
            f.write_str(" (stopped at --limit)")?;
        }
        if self.dry_run {
            f.write_str(" (dry run: nothing published)")?;
        }
        Ok(())
    }
}

/// What to do with one DLQ record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    SkipByFilter,
    AlreadyRedriven,
    Unroutable,
    /// Republish to this raw topic.
    Redrive(&'static str),
}

/// Decides, and counts, what happens to the record at `position`. Pure.
pub(crate) fn decide(
    filter: &Filter,
    redriven: &HashSet<Position>,
    position: Position,
    record: &DlqHeaders,
    summary: &mut Summary,
) -> Decision {
    if !filter.matches(position, record) {
        summary.skipped_by_filter += 1;
        return Decision::SkipByFilter;
    }
    summary.matched += 1;
    if redriven.contains(&position) {
        summary.already_redriven += 1;
        return Decision::AlreadyRedriven;
    }
    match record.redrive_topic() {
        Some(topic) => Decision::Redrive(topic),
        None => {
            summary.unroutable += 1;
            Decision::Unroutable
        }
    }
}

/// Reads the DLQ positions earlier runs redrove.
pub(crate) fn redriven_positions(reader: &rdkafka::ClientConfig) -> anyhow::Result<HashSet<Position>> {
    let mut positions = HashSet::new();
    let Some(read) = BoundedRead::open(reader, topics::DLQ_REDRIVEN, Start::Beginning)? else {
        return Ok(positions);
    };
    read.for_each(|message| {
        let Some(position) = message
            .key()
            .and_then(|key| std::str::from_utf8(key).ok())
            .and_then(|key| key.parse::<Position>().ok())
        else {
            return Ok(ControlFlow::Continue(()));
        };
        if message.payload().is_some() {
            positions.insert(position);
        } else {
            positions.remove(&position);
        }
        Ok(ControlFlow::Continue(()))
    })
    .with_context(|| format!("reading {}", topics::DLQ_REDRIVEN))?;
    Ok(positions)
}

/// The transactional producer and the open transaction's size.
struct Publisher {
    producer: ThreadedProducer<DefaultProducerContext>,
    in_txn: usize,
    /// Records committed so far.
    committed: u64,
}

impl Publisher {
    fn new(client: &rdkafka::ClientConfig) -> anyhow::Result<Self> {
        let producer: ThreadedProducer<DefaultProducerContext> =
            client.create().context("creating the transactional producer")?;
        producer
            .init_transactions(TXN_TIMEOUT)
            .context("initialising transactions (fences any earlier redrive still running)")?;
        Ok(Self {
            producer,
            in_txn: 0,
            committed: 0,
        })
    }

    fn send<K, P>(&self, record: BaseRecord<'_, K, P>) -> Result<(), KafkaError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        switchboard_kafka::txn::send_waiting(&self.producer, record)
    }

    /// Copies the DLQ record at `position` to `topic` and marks the position, in the open
    /// transaction (begun here if needed).
    fn redrive(
        &mut self,
        message: &BorrowedMessage<'_>,
        position: Position,
        topic: &str,
    ) -> anyhow::Result<()> {
        if self.in_txn == 0 {
            self.producer
                .begin_transaction()
                .context("beginning a transaction")?;
        }
        let original = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect::<Vec<_>>())
            .unwrap_or_default();
        let copied = redrive_headers(original, position, topic == topics::ACTIONS_REDRIVE);
        // A new trace, linked to the one the record carries (its original webhook's).
        let span = switchboard_service::trace::kafka_relink_span("redrive", message, super::CLIENT_ID);
        let mut record_headers = switchboard_service::trace::inject_kafka_from(
            &span,
            OwnedHeaders::new_with_capacity(copied.len()),
        );
        for (key, value) in &copied {
            if !span.is_disabled() && switchboard_service::trace::is_trace_header(key) {
                continue;
            }
            record_headers = record_headers.insert(Header {
                key: key.as_str(),
                value: value.as_deref(),
            });
        }
        let mut copy = BaseRecord::<[u8], [u8]>::to(topic).headers(record_headers);
        if let Some(key) = message.key() {
            copy = copy.key(key);
        }
        if let Some(payload) = message.payload() {
            copy = copy.payload(payload);
        }
        self.send(copy)
            .with_context(|| format!("republishing {position} to {topic}"))?;
        let mark_key = position.to_string();
        let mark_value = switchboard_kafka::txn::now_millis().to_string();
        self.send(
            BaseRecord::<str, str>::to(topics::DLQ_REDRIVEN)
                .key(mark_key.as_str())
                .payload(mark_value.as_str()),
        )
        .with_context(|| format!("marking {position} in {}", topics::DLQ_REDRIVEN))?;
        self.in_txn += 1;
        if self.in_txn >= BATCH {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> anyhow::Result<()> {
        if self.in_txn == 0 {
            return Ok(());
        }
        self.producer
            .commit_transaction(TXN_TIMEOUT)
            .context("committing a transaction")?;
        self.committed += self.in_txn as u64;
        self.in_txn = 0;
        Ok(())
    }

    /// Aborts the open transaction after a failure (best effort: the failure is what counts).
    fn abort(&mut self) {
        if self.in_txn > 0
            && let Err(error) = self.producer.abort_transaction(TXN_TIMEOUT)
        {
            tracing::warn!(%error, "could not abort the redrive transaction");
        }
        self.in_txn = 0;
    }
}

/// The blocking part of [`super::redrive`]: the redriven topic exists (unless `dry_run`).
pub(crate) fn run(
    reader: &rdkafka::ClientConfig,
    producer: &rdkafka::ClientConfig,
    filter: &Filter,
    dry_run: bool,
) -> anyhow::Result<Summary> {
    // Fence earlier runs first, so that their marks are committed (or aborted) before we read.
    let mut publisher = if dry_run {
        None
    } else {
        Some(Publisher::new(producer)?)
    };
    let redriven = redriven_positions(reader)?;
    let mut summary = Summary {
        dry_run,
        ..Summary::default()
    };
    let start = filter
        .since
        .map_or(Start::Beginning, |since| Start::Time(since.timestamp_millis()));
    let Some(read) = BoundedRead::open(reader, topics::DLQ, start)? else {
        return Ok(summary);
    };
    let progress = ProgressBar::new(read.span()).with_style(
        ProgressStyle::with_template("{spinner} redriving {pos}/{len} DLQ offsets [{bar:30}] {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = read.for_each(|message| {
        progress.inc(1);
        let position = Position {
            partition: message.partition(),
            offset: message.offset(),
        };
        let record = DlqHeaders::parse(
            message
                .headers()
                .into_iter()
                .flat_map(|h| h.iter().map(|h| (h.key, h.value))),
        );
        let Decision::Redrive(topic) = decide(filter, &redriven, position, &record, &mut summary) else {
            return Ok(ControlFlow::Continue(()));
        };
        if filter.limit.is_some_and(|limit| summary.redriven >= limit as u64) {
            // Not counted as matched: the run stopped before it.
            summary.matched -= 1;
            summary.limited = true;
            return Ok(ControlFlow::Break(()));
        }
        if let Some(publisher) = &mut publisher {
            publisher.redrive(message, position, topic)?;
        }
        summary.redriven += 1;
        Ok(ControlFlow::Continue(()))
    });
    progress.finish_and_clear();
    let result = result
        .context("reading the DLQ")
        .and_then(|()| publisher.as_mut().map_or(Ok(()), Publisher::commit));
    if let Err(error) = result {
        let committed = publisher.as_mut().map_or(0, |publisher| {
            publisher.abort();
            publisher.committed
        });
        return Err(error.context(format!(
            "redrive failed after {committed} records were committed; the open transaction was aborted. \
             Run it again: committed records are skipped"
        )));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::record::Origin;
    use crate::normalize::PoisonClass;

    fn record(class: &str, topic: &str) -> DlqHeaders {
        DlqHeaders {
            event_id: Some("EV-1".into()),
            source: Some("twilio".into()),
            error_class: Some(class.into()),
            error_reason: None,
            failed_at: Some(1),
            origin: Some(Origin {
                topic: topic.into(),
                partition: 0,
                offset: 3,
            }),
            action: None,
        }
    }

    fn at(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    #[test]
    fn decisions_are_counted_once_each() {
        let filter = Filter {
            error_class: Some(PoisonClass::MissingField.as_str()),
            ..Filter::default()
        };
        let done = HashSet::from([at(0, 1)]);
        let mut summary = Summary::default();
        let twilio = topics::RAW_TWILIO;
        let decisions = [
            decide(
                &filter,
                &done,
                at(0, 0),
                &record("missing_field", twilio),
                &mut summary,
            ),
            decide(
                &filter,
                &done,
                at(0, 1),
                &record("missing_field", twilio),
                &mut summary,
            ),
            decide(
                &filter,
                &done,
                at(0, 2),
                &record("unknown_kind", twilio),
                &mut summary,
            ),
            decide(
                &filter,
                &done,
                at(0, 3),
                &record("missing_field", topics::CALLS),
                &mut summary,
            ),
        ];
        assert_eq!(
            decisions,
            [
                Decision::Redrive(twilio),
                Decision::AlreadyRedriven,
                Decision::SkipByFilter,
                Decision::Unroutable
            ]
        );
        assert_eq!(
            summary,
            Summary {
                matched: 3,
                already_redriven: 1,
                skipped_by_filter: 1,
                unroutable: 1,
                ..Summary::default()
            }
        );
    }

    #[test]
    fn the_summary_line_names_every_count() {
        let summary = Summary {
            matched: 5,
            redriven: 3,
            already_redriven: 2,
            skipped_by_filter: 7,
            ..Summary::default()
        };
        assert_eq!(
            summary.to_string(),
            "matched 5, redriven 3, already redriven 2, skipped by filter 7"
        );
        let dry = Summary {
            dry_run: true,
            unroutable: 1,
            limited: true,
            ..summary
        };
        assert_eq!(
            dry.to_string(),
            "matched 5, would redrive 3, already redriven 2, skipped by filter 7, \
             unroutable (no original topic to go back to) 1 (stopped at --limit) (dry run: nothing published)"
        );
    }
}
