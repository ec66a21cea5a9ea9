//! `switchboard-processor reset`: rewinds a stopped consumer group to a point in time, like
//! `kafka-consumer-groups --reset-offsets --to-datetime`, refusing while the group has members.
//!
//! The processor's group keeps its offsets in Kafka: a rewind makes it process those records
//! again, and since its dedup state counts only entries below the committed offsets, it re-emits
//! their events (consumers deduplicate by event id; the sink does). The sink keeps its offsets in
//! its database: `--database-url` rewinds those too (in one database transaction), which is what
//! makes the sink read again.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_schemas::topics;
use tokio::runtime::Handle;

use crate::config::Config;
use crate::kafka;
use switchboard_kafka::TopicPartition;
use switchboard_sink::{ConsumedOffset, Store};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `switchboard-processor reset` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ResetArgs {
    /// The consumer group to rewind (e.g. switchboard-processor, switchboard-sink).
    #[arg(long)]
    pub group: String,
    /// Rewind every partition to its first record at or after this time (RFC 3339); to its end
    /// when it has none.
    #[arg(long, value_parser = crate::dlq::filter::parse_time)]
    pub to_datetime: DateTime<Utc>,
    /// Topics to rewind (repeatable). Default: every switchboard topic the group has committed
    /// offsets for.
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Also rewind the offsets the sink keeps in this database (`sqlite://…` or `postgres://…`).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Print the new offsets; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// One partition's rewind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewind {
    pub task: TopicPartition,
    /// The committed offset before (`None`: nothing committed).
    pub from: Option<i64>,
    pub to: i64,
}

/// Rewinds the group (unless `dry_run`) and returns what changed. Blocking.
pub fn run(config: &Config, args: &ResetArgs, runtime: &Handle) -> anyhow::Result<Vec<Rewind>> {
    let mut client = kafka::consumer_config(config);
    client.set("group.id", &args.group);
    let consumer: BaseConsumer = client.create()?;
    let groups = consumer
        .fetch_group_list(Some(&args.group), TIMEOUT)
        .context("describing the group")?;
    if let Some(group) = groups
        .groups()
        .iter()
        .find(|g| g.name() == args.group && !g.members().is_empty())
    {
        anyhow::bail!(
            "group {} has {} active member(s) (state {}): stop them before resetting its offsets",
            args.group,
            group.members().len(),
            group.state()
        );
    }

    let candidates: Vec<String> = if args.topics.is_empty() {
        topics::ALL_TOPICS.iter().map(|t| (*t).to_owned()).collect()
    } else {
        args.topics.clone()
    };
    let mut all = TopicPartitionList::new();
    for topic in &candidates {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        for partition in metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions())
        {
            all.add_partition(topic, partition.id());
        }
    }
    let committed = consumer
        .committed_offsets(all.clone(), TIMEOUT)
        .context("reading the group's offsets")?;
    let offset = |list: &TopicPartitionList, topic: &str, partition: i32| match list
        .find_partition(topic, partition)
        .map(|e| e.offset())
    {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    };
    let chosen: Vec<TopicPartition> = all
        .elements()
        .iter()
        .filter(|e| !args.topics.is_empty() || offset(&committed, e.topic(), e.partition()).is_some())
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect();
    anyhow::ensure!(
        !chosen.is_empty(),
        "group {} has no committed offsets on switchboard's topics; name the topics with --topic",
        args.group
    );

    let mut query = TopicPartitionList::new();
    for task in &chosen {
        query.add_partition_offset(
            &task.topic,
            task.partition,
            Offset::Offset(args.to_datetime.timestamp_millis()),
        )?;
    }
    let by_time = consumer
        .offsets_for_times(query, TIMEOUT)
        .context("looking up offsets by time")?;
    let mut rewinds = Vec::new();
    let mut target = TopicPartitionList::new();
    for task in chosen {
        let (_, high) = consumer.fetch_watermarks(&task.topic, task.partition, TIMEOUT)?;
        let to = offset(&by_time, &task.topic, task.partition)
            .unwrap_or(high)
            .min(high);
        target.add_partition_offset(&task.topic, task.partition, Offset::Offset(to))?;
        rewinds.push(Rewind {
            from: offset(&committed, &task.topic, task.partition),
            to,
            task,
        });
    }
    if args.dry_run {
        return Ok(rewinds);
    }
    consumer
        .commit(&target, CommitMode::Sync)
        .context("committing the new offsets")?;
    if let Some(url) = &args.database_url {
        let offsets: Vec<ConsumedOffset> = rewinds
            .iter()
            .map(|r| ConsumedOffset {
                topic: r.task.topic.clone(),
                partition: r.task.partition,
                next_offset: r.to,
            })
            .collect();
        runtime
            .block_on(async {
                let store = Store::connect(url).await?;
                store.apply_batch(&args.group, &[], &offsets).await
            })
            .context("rewinding the offsets stored in the database")?;
    } else if rewinds
        .iter()
        .any(|r| topics::DOMAIN_TOPICS.contains(&r.task.topic.as_str()))
    {
        tracing::warn!(
            "the sink reads its offsets from its database, not from Kafka: pass --database-url to rewind a sink"
        );
    }
    Ok(rewinds)
}
