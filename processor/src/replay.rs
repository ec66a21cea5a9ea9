//! `switchboard-processor replay`: runs a time range of the raw topics through the processor's
//! own engine again — into the live topics, or into a prefixed copy for a backfill.
//!
//! A replay is a bounded run: it starts each raw partition at the first record of the range
//! (`offsets_for_times`, with a margin for clock skew between ingest instances; the envelope's
//! `received_at` decides what is in the range) and stops at the end offsets taken when it starts.
//! A partition is finished when its position reaches its end offset, however long its records
//! take to arrive (a slow partition, a transaction still open in it); a replay in which no
//! unfinished partition moves for [`STALL`] fails instead of reporting a success it did not have.
//! It is exactly-once like the processor: outputs, state changelog entries and the consumed
//! offsets of its own consumer group (`switchboard-replay-<run id>`, the run id a digest of the
//! arguments) commit in one transaction. Run the same command again after a crash and it resumes
//! where the last committed transaction ended.
//!
//! Without `--into`, output goes to the live domain topics, where the processor's dedup state
//! decides what is new: the replay restores it from the dedup changelog like the processor does
//! and re-emits exactly the events of the range whose event id is not in it — events older than
//! the dedup window, and events that were dead-lettered (poison is never marked seen) and
//! normalize now. Those it records in the dedup changelog. It leaves `switchboard.call-state` to
//! the running processor, and it stops each partition at the processor group's committed offset:
//! records the processor has not committed yet are the processor's to emit (it reads them, or
//! reads them again after a crash), so replaying them too would emit them twice. With
//! `--into <prefix>`, every output goes to `<prefix>.<topic>` with a fresh state: exactly the
//! events of the range, each once, with their call state.
//!
//! The end offsets are taken with `read_committed` (the last stable offset), and librdkafka moves
//! a partition's position past transaction markers and aborted records too, so a position always
//! reaches its end once everything before it was read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use switchboard_schemas::{Codec, RawWebhook, Source};
use tokio::runtime::Handle;

use crate::config::{Config, Guarantee};
use crate::engine::{Engine, Processed};
use crate::kafka;
use crate::restore;
use crate::state::Db;
use crate::topology::Topology;
use switchboard_kafka::TopicPartition;
use switchboard_kafka::end::EndOffsets;
use switchboard_kafka::txn::{self, ProducerContext, now_millis};

/// Records are looked up by their Kafka timestamp this much before `--from` and after `--to`:
/// ingest instances' clocks differ slightly, and the envelope's `received_at` decides.
const SKEW: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
/// A replay whose unfinished partitions have not moved for this long fails (run it again to
/// resume): longer than any transaction of a healthy producer stays open, and than a broker's
/// leader election.
const STALL: Duration = Duration::from_secs(300);

/// `switchboard-processor replay` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Start of the range (RFC 3339), inclusive, on the time ingest received each webhook.
    #[arg(long, value_parser = crate::dlq::filter::parse_time)]
    pub from: DateTime<Utc>,
    /// End of the range (RFC 3339), exclusive. Default: the end of the raw topics when the run
    /// (first) starts.
    #[arg(long, value_parser = crate::dlq::filter::parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Only these sources (repeatable). Default: all.
    #[arg(long = "source")]
    pub sources: Vec<Source>,
    /// Only webhooks of this phone id.
    #[arg(long)]
    pub phone_id: Option<String>,
    /// Write every output to `<prefix>.<topic>` (e.g. `backfill` → `backfill.switchboard.calls`)
    /// instead of the live topics.
    #[arg(long)]
    pub into: Option<String>,
    /// Read and count what the replay would emit; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ReplayArgs {
    /// Rejects arguments that cannot select anything or name no valid topic.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(to) = self.to {
            anyhow::ensure!(
                self.from < to,
                "--from ({}) must be before --to ({to})",
                self.from
            );
        }
        if let Some(prefix) = &self.into {
            let prefix = prefix.trim_end_matches('.');
            anyhow::ensure!(
                !prefix.is_empty()
                    && prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                    && prefix != "switchboard",
                "--into must be a topic prefix of letters, digits, '.', '_' or '-', other than \"switchboard\""
            );
        }
        Ok(())
    }

    /// The sources replayed.
    pub fn sources(&self) -> Vec<Source> {
        if self.sources.is_empty() {
            Source::ALL.to_vec()
        } else {
            self.sources.clone()
        }
    }

    /// Stable for the same arguments: names the replay's consumer group and transactional id, so
    /// that running the same command again resumes.
    pub fn run_id(&self) -> String {
        let mut sources: Vec<&str> = self.sources().iter().map(|s| s.as_str()).collect();
        sources.sort_unstable();
        let key = format!(
            "{}|{}|{}|{}|{}",
            self.from.timestamp_millis(),
            self.to
                .map(|t| t.timestamp_millis().to_string())
                .unwrap_or_default(),
            sources.join(","),
            self.phone_id.as_deref().unwrap_or_default(),
            self.into.as_deref().unwrap_or_default(),
        );
        let digest = Sha256::digest(key.as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// Where the outputs go.
    pub fn topology(&self) -> Topology {
        self.into
            .as_deref()
            .map_or_else(Topology::live_without_call_state, Topology::prefixed)
    }

    /// Whether the envelope is in the replayed range and selection.
    pub fn selects(&self, raw: &RawWebhook, to_millis: i64) -> bool {
        raw.received_at >= self.from.timestamp_millis()
            && raw.received_at < to_millis
            && self.phone_id.as_ref().is_none_or(|phone| &raw.phone_id == phone)
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub run_id: String,
    /// Raw records read (in range or not).
    pub read: u64,
    pub emitted: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    /// Records outside the range, of another phone id, or beyond the end.
    pub skipped: u64,
    pub dry_run: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would emit" } else { "emitted" };
        write!(
            f,
            "replay {}: read {}, {verb} {}, duplicates {}, DLQ {}, outside the selection {}",
            self.run_id, self.read, self.emitted, self.duplicates, self.dead_lettered, self.skipped
        )?;
        if self.dry_run {
            f.write_str(" (dry run: nothing written)")?;
        }
        Ok(())
    }
}

/// One raw partition's range.
#[derive(Debug, Clone, Copy)]
struct Range {
    start: i64,
    /// The end offset when the run started (exclusive); for a live replay, at most `limit`.
    end: i64,
    /// A live replay's hard end: the processor group's committed offset when the run started.
    /// Records from here on are the processor's, whatever their timestamp.
    limit: Option<i64>,
    /// The consumer's position when last looked at.
    position: i64,
    done: bool,
}

/// Runs the replay to its end (blocking; call from a blocking thread), with a progress bar on
/// the terminal.
pub fn run(
    config: &Config,
    args: &ReplayArgs,
    codec: Arc<Codec>,
    runtime: Handle,
) -> anyhow::Result<Summary> {
    let progress = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} replay [{bar:30}] {pos}/{len} records, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    run_with_progress(config, args, codec, runtime, &progress)
}

/// [`run`], reporting to `progress`: its length is set to the records of the range, its position
/// counts the records read.
pub fn run_with_progress(
    config: &Config,
    args: &ReplayArgs,
    codec: Arc<Codec>,
    runtime: Handle,
    progress: &ProgressBar,
) -> anyhow::Result<Summary> {
    args.validate()?;
    let run_id = args.run_id();
    let group = format!("switchboard-replay-{run_id}");
    let topology = args.topology();
    let started_at = now_millis();
    let to_millis = args.to.map_or(started_at, |t| t.timestamp_millis());
    if !args.dry_run && config.create_topics && !topology.is_live() {
        runtime
            .block_on(kafka::create_output_topics(config, &topology))
            .context("creating the output topics")?;
    }

    let mut consumer_config = kafka::consumer_config(config);
    consumer_config.set("group.id", &group);
    let consumer: BaseConsumer = consumer_config
        .create()
        .context("creating the replay's consumer")?;
    let ends = EndOffsets::probe(consumer.client(), TIMEOUT);
    let mut ranges = plan(config, &consumer, args, to_millis).context("finding the range's offsets")?;
    let total: i64 = ranges.values().map(|r| (r.end - r.start).max(0)).sum();
    tracing::info!(run_id, %group, partitions = ranges.len(), records = total, into = ?args.into, "replay starting");

    let mut assignment = TopicPartitionList::new();
    for (task, range) in &ranges {
        assignment.add_partition_offset(&task.topic, task.partition, Offset::Offset(range.start))?;
    }
    consumer.assign(&assignment)?;

    let mut replay_config = config.clone();
    replay_config.processing_guarantee = Guarantee::ExactlyOnce;
    let mut engine = if args.dry_run {
        None
    } else {
        let mut producer = kafka::producer_config(&replay_config);
        producer.set("transactional.id", &group);
        let producer = txn::make_producer(producer, ProducerContext::default);
        // The replay's own copy of the state it restores, in a temporary store: bounded memory
        // however large the range, deleted when the replay ends.
        let db = Db::temporary(config.state_cache, &group)?;
        Some(Engine::new(
            &replay_config,
            Arc::clone(&codec),
            runtime.clone(),
            producer,
            topology.clone(),
            db,
        )?)
    };
    if let Some(engine) = &mut engine {
        restore_state(config, &consumer, engine, &codec, &runtime, &ranges)?;
        engine.trace_as_relinked(&group);
    }

    progress.set_length(u64::try_from(total).unwrap_or(0));
    let mut summary = Summary {
        run_id: run_id.clone(),
        dry_run: args.dry_run,
        ..Summary::default()
    };
    let mut dry_seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut progressed_at = Instant::now();
    while ranges.values().any(|r| !r.done) {
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                let task = TopicPartition::new(message.topic(), message.partition());
                let Some(range) = ranges.get_mut(&task) else {
                    continue;
                };
                progressed_at = Instant::now();
                let timestamp = message.timestamp().to_millis().unwrap_or(i64::MAX);
                // Past the end offset taken at the start (on a broker that under-reports it,
                // records that were there when the run started still count), or past a live
                // replay's limit: the processor emits those.
                let offset = message.offset();
                if range.done
                    || range.limit.is_some_and(|limit| offset >= limit)
                    || ends.past_end(offset, range.end, timestamp, started_at)
                {
                    finish(&consumer, &task, range);
                    continue;
                }
                summary.read += 1;
                progress.inc(1);
                let processed = match &mut engine {
                    Some(engine) => engine.process_selected(&message, |raw| args.selects(raw, to_millis))?,
                    None => dry_run(&codec, &runtime, &message, args, to_millis, &mut dry_seen),
                };
                match processed {
                    Processed::Emitted => summary.emitted += 1,
                    Processed::Duplicate => summary.duplicates += 1,
                    Processed::DeadLettered => summary.dead_lettered += 1,
                    Processed::Skipped => summary.skipped += 1,
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None => {
                // Nothing fetched: a partition is finished when its position reached its end
                // (past transaction markers too, which librdkafka skips but counts), never
                // because it was quiet: its records may just be slow to arrive.
                let positions = consumer.position()?;
                for (task, range) in ranges.iter_mut().filter(|(_, r)| !r.done) {
                    let position = positions
                        .find_partition(&task.topic, task.partition)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                        .unwrap_or(range.start);
                    if position > range.position {
                        range.position = position;
                        progressed_at = Instant::now();
                    }
                    if position >= range.end {
                        finish(&consumer, task, range);
                    }
                }
                if progressed_at.elapsed() >= STALL {
                    let stuck: Vec<String> = ranges
                        .iter()
                        .filter(|(_, r)| !r.done)
                        .map(|(task, r)| format!("{task} at {} of {}", r.position, r.end))
                        .collect();
                    if let Some(engine) = &mut engine {
                        commit(engine, &consumer)?;
                    }
                    anyhow::bail!(
                        "replay stalled: no progress for {STALL:?} in {}; what was read is committed: run the same command again to resume",
                        stuck.join(", ")
                    );
                }
            }
        }
        if let Some(engine) = &mut engine
            && engine.due(false)
        {
            commit(engine, &consumer)?;
        }
    }
    if let Some(engine) = &mut engine {
        commit(engine, &consumer)?;
    }
    progress.finish_and_clear();
    tracing::info!(%summary, "replay finished");
    Ok(summary)
}

fn commit(engine: &mut Engine, consumer: &BaseConsumer) -> anyhow::Result<()> {
    // A bounded command does not retry on its own: run it again to resume.
    engine.commit(consumer).map_err(|error| {
        anyhow::Error::new(error)
            .context("committing a transaction failed; run the same command again to resume")
    })
}

fn finish(consumer: &BaseConsumer, task: &TopicPartition, range: &mut Range) {
    range.done = true;
    let mut list = TopicPartitionList::new();
    list.add_partition(&task.topic, task.partition);
    let _ = consumer.pause(&list);
}

/// Start and end offsets of every partition of the replayed raw topics: the replay group's
/// committed offset (resuming) or the first record of the range; the end offset now (or of the
/// range's end), for a live replay at most the processor group's committed offset (none: the
/// processor has yet to read the partition from its start, so nothing is left to replay).
fn plan(
    config: &Config,
    consumer: &BaseConsumer,
    args: &ReplayArgs,
    to_millis: i64,
) -> anyhow::Result<BTreeMap<TopicPartition, Range>> {
    let mut tasks = Vec::new();
    for source in args.sources() {
        let topic = source.raw_topic();
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            tasks.push(TopicPartition::new(topic, partition.id()));
        }
    }
    let mut list = TopicPartitionList::new();
    for task in &tasks {
        list.add_partition(&task.topic, task.partition);
    }
    let committed = consumer.committed_offsets(list.clone(), TIMEOUT)?;
    let processor = if args.topology().is_live() {
        let reader: BaseConsumer = kafka::consumer_config(config).create()?;
        Some(reader.committed_offsets(list.clone(), TIMEOUT)?)
    } else {
        None
    };
    let by_time = |millis: i64| -> anyhow::Result<TopicPartitionList> {
        let mut query = TopicPartitionList::new();
        for task in &tasks {
            query.add_partition_offset(&task.topic, task.partition, Offset::Offset(millis.max(0)))?;
        }
        Ok(consumer.offsets_for_times(query, TIMEOUT)?)
    };
    let skew = SKEW.as_millis() as i64;
    let starts = by_time(args.from.timestamp_millis() - skew)?;
    let ends = args.to.map(|_| by_time(to_millis + skew)).transpose()?;
    let offset_of = |list: &TopicPartitionList, task: &TopicPartition| match list
        .find_partition(&task.topic, task.partition)
        .map(|e| e.offset())
    {
        Some(Offset::Offset(offset)) => Some(offset),
        _ => None,
    };
    let mut ranges = BTreeMap::new();
    for task in tasks {
        let (low, high) = consumer.fetch_watermarks(&task.topic, task.partition, TIMEOUT)?;
        let first = offset_of(&starts, &task).unwrap_or(high).clamp(low, high);
        // `--to`'s end offset; a lookup answering 0 in a partition that starts at 0 is not
        // trusted: Tansu answers every lookup with 0 (Apache Kafka would mean a range before the
        // partition's first record). Then the partition is read to its end and `received_at`
        // selects, instead of ending before it started.
        let end = ends
            .as_ref()
            .and_then(|ends| offset_of(ends, &task))
            .filter(|end| !(*end == 0 && low == 0 && high > 0))
            .map_or(high, |end| end.min(high));
        let start = offset_of(&committed, &task).unwrap_or(first).max(first);
        let limit = processor
            .as_ref()
            .map(|processor| offset_of(processor, &task).unwrap_or(start));
        if let Some(processed) = limit.filter(|processed| *processed < end) {
            tracing::info!(%task, processed, end, "the processor has not committed the partition's tail: left to it");
        }
        ranges.insert(
            task,
            Range {
                start,
                end: limit.map_or(end, |limit| end.min(limit)),
                limit,
                position: start,
                done: false,
            },
        );
    }
    Ok(ranges)
}

/// Rebuilds the dedup (and call) state of every replayed partition, as the processor does on
/// assignment. A backfill restores its own prefixed changelogs as of its committed offsets (its
/// progress). A live replay restores the live dedup changelog as of the later of the processor's
/// and its own committed offsets: what the processor has seen, and what earlier runs of this
/// replay emitted.
fn restore_state(
    config: &Config,
    replay_consumer: &BaseConsumer,
    engine: &mut Engine,
    codec: &Codec,
    runtime: &Handle,
    ranges: &BTreeMap<TopicPartition, Range>,
) -> anyhow::Result<()> {
    let mut list = TopicPartitionList::new();
    for task in ranges.keys() {
        list.add_partition(&task.topic, task.partition);
    }
    let own = replay_consumer.committed_offsets(list.clone(), TIMEOUT)?;
    let processor = if engine.topology().is_live() {
        let reader: BaseConsumer = kafka::consumer_config(config).create()?;
        Some(reader.committed_offsets(list, TIMEOUT)?)
    } else {
        None
    };
    let offset_in = |list: &TopicPartitionList, task: &TopicPartition| match list
        .find_partition(&task.topic, task.partition)
        .map(|e| e.offset())
    {
        Some(Offset::Offset(offset)) => Some(offset),
        _ => None,
    };
    let mut jobs = Vec::new();
    for task in ranges.keys() {
        let committed = [Some(&own), processor.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|l| offset_in(l, task))
            .max();
        if let Some(committed) = committed {
            jobs.push(restore::TaskRestore {
                task: task.clone(),
                committed,
                from: None,
                cutoff_millis: now_millis() - config.dedup_window_of_topic(&task.topic).as_millis() as i64,
            });
        }
    }
    restore::restore(
        config,
        &engine.topology().clone(),
        codec,
        runtime,
        engine.stores.settled()?,
        &jobs,
    )
    .context("restoring the state of the replayed partitions")?;
    for task in ranges.keys() {
        engine.stores.install(task.clone());
    }
    Ok(())
}

/// What the engine would do with `message`, without writing: decode, select, dedup within this
/// run, normalize.
fn dry_run(
    codec: &Codec,
    runtime: &Handle,
    message: &rdkafka::message::BorrowedMessage<'_>,
    args: &ReplayArgs,
    to_millis: i64,
    seen: &mut std::collections::HashSet<String>,
) -> Processed {
    let Some(raw) = message.payload().and_then(|payload| {
        runtime
            .block_on(codec.decode::<RawWebhook>(RawWebhook::schema_def(), payload))
            .ok()
    }) else {
        return Processed::DeadLettered;
    };
    if !args.selects(&raw, to_millis) {
        return Processed::Skipped;
    }
    if !seen.insert(format!("{}:{}", raw.source, raw.event_id)) {
        return Processed::Duplicate;
    }
    match crate::normalize::normalize(&raw) {
        Ok(_) => Processed::Emitted,
        Err(_) => Processed::DeadLettered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplayArgs,
    }

    fn args(line: &[&str]) -> ReplayArgs {
        Cli::try_parse_from(std::iter::once("replay").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn the_run_id_depends_on_every_argument_but_not_their_order() {
        let base = args(&[
            "--from",
            "2026-11-29T10:00:00Z",
            "--to",
            "2026-11-29T11:00:00Z",
            "--into",
            "backfill",
        ]);
        let same = args(&[
            "--to",
            "2026-11-29T11:00:00Z",
            "--into",
            "backfill",
            "--from",
            "2026-11-29T11:00:00+01:00",
        ]);
        assert_eq!(base.run_id(), same.run_id());
        assert_eq!(base.run_id().len(), 12);
        for other in [
            args(&["--from", "2026-11-29T10:00:00Z", "--to", "2026-11-29T11:00:00Z"]),
            args(&[
                "--from",
                "2026-11-29T10:00:00Z",
                "--to",
                "2026-11-29T12:00:00Z",
                "--into",
                "backfill",
            ]),
            args(&[
                "--from",
                "2026-11-29T10:00:00Z",
                "--to",
                "2026-11-29T11:00:00Z",
                "--into",
                "backfill",
                "--source",
                "twilio",
            ]),
            args(&[
                "--from",
                "2026-11-29T10:00:00Z",
                "--to",
                "2026-11-29T11:00:00Z",
                "--into",
                "backfill",
                "--phone-id",
                "+1555",
            ]),
        ] {
            assert_ne!(base.run_id(), other.run_id(), "{other:?}");
        }
    }

    #[test]
    fn invalid_arguments_are_rejected_with_their_name() {
        let backwards = args(&["--from", "2026-11-29T11:00:00Z", "--to", "2026-11-29T10:00:00Z"]);
        assert!(backwards.validate().unwrap_err().to_string().contains("--from"));
        for prefix in ["switchboard", "a b", ""] {
            let bad = args(&["--from", "2026-11-29T10:00:00Z", "--into", prefix]);
            assert!(
                bad.validate().unwrap_err().to_string().contains("--into"),
                "{prefix:?}"
            );
        }
        assert!(Cli::try_parse_from(["replay", "--from", "yesterday"]).is_err());
        assert!(
            Cli::try_parse_from(["replay", "--from", "2026-11-29T10:00:00Z", "--source", "paypal"]).is_err()
        );
    }

    #[test]
    fn selection_is_the_half_open_range_and_the_phone_id() {
        let replay = args(&["--from", "2026-11-29T10:00:00Z", "--phone-id", "+15550001"]);
        let from = replay.from.timestamp_millis();
        let to = from + 3_600_000;
        let raw = |received_at: i64, phone: &str| RawWebhook {
            event_id: "EV".into(),
            source: "twilio".into(),
            phone_id: phone.into(),
            received_at,
            url: String::new(),
            content_type: String::new(),
            headers: Default::default(),
            body: Vec::new(),
            signature_scheme: String::new(),
            source_name: None,
        };
        assert!(replay.selects(&raw(from, "+15550001"), to));
        assert!(replay.selects(&raw(to - 1, "+15550001"), to));
        assert!(!replay.selects(&raw(to, "+15550001"), to));
        assert!(!replay.selects(&raw(from - 1, "+15550001"), to));
        assert!(!replay.selects(&raw(from, "+15550002"), to));
        assert_eq!(
            args(&["--from", "2026-11-29T10:00:00Z"]).topology(),
            Topology::live_without_call_state()
        );
        assert_eq!(
            args(&["--from", "2026-11-29T10:00:00Z", "--into", "bf"])
                .topology()
                .topic("switchboard.calls"),
            "bf.switchboard.calls"
        );
    }
}
