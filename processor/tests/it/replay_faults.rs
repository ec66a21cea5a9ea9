//! Replay under faults, on a private broker: partitions that stay idle for seconds mid-run (the
//! broker paused) are finished only once their records are read, and a live replay while the
//! processor lags leaves the processor's uncommitted tail to it. Each asserts that the output
//! holds every event exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchboard_processor::replay::{ReplayArgs, Summary};
use switchboard_schemas::domain::CallEvent;
use switchboard_schemas::{Codec, RawWebhook, Source, topics};
use switchboard_tests::broker::PrivateBroker;

use crate::harness::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn at_millis(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap()
}

/// A completed call received at `received_at`, on one of 40 phones.
fn call(prefix: &str, n: usize, received_at: i64) -> RawWebhook {
    let mut raw = twilio_call(
        &format!("+1555800{:04}", n % 40),
        &format!("CA{n:032}"),
        "completed",
        4,
        &format!("EV-{prefix}-{n}"),
    );
    raw.received_at = received_at;
    raw
}

/// The event ids of `topic` as its committed view holds them: the one function to change when the
/// suite reads output topics through the committed-view reader.
async fn committed_event_ids(broker: &PrivateBroker, topic: &str) -> Vec<String> {
    read_decoded::<CallEvent>(broker, topic, "read_committed", CallEvent::schema_def())
        .await
        .into_iter()
        .map(|(event, _)| event.event_id)
        .collect()
}

/// Asserts that `ids` holds each of `expected` exactly once and nothing else.
fn assert_exactly_once(ids: &[String], expected: &[String], what: &str) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let duplicates: Vec<(&str, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    let lost: Vec<&String> = expected
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    let unexpected = counts
        .keys()
        .filter(|id| !expected.iter().any(|e| e == *id))
        .count();
    assert!(
        duplicates.is_empty() && lost.is_empty() && unexpected == 0,
        "{what}: {} records for {} events; duplicates {duplicates:?}; lost {} (first {:?}); unexpected {unexpected}",
        ids.len(),
        expected.len(),
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
}

async fn run_replay(
    config: switchboard_processor::config::Config,
    args: ReplayArgs,
    progress: indicatif::ProgressBar,
) -> tokio::task::JoinHandle<anyhow::Result<Summary>> {
    let codec = Arc::new(Codec::new(&switchboard_tests::registry_url()).unwrap());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        switchboard_processor::replay::run_with_progress(&config, &args, codec, runtime, &progress)
    })
}

/// The committed offsets of `group` per raw Twilio partition.
fn committed(broker: &PrivateBroker, group: &str) -> BTreeMap<i32, i64> {
    committed_offsets(broker, group, &[topics::RAW_TWILIO])
        .into_iter()
        .map(|((_, partition), offset)| (partition, offset))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_idle_for_seconds_mid_replay_are_read_to_their_end() {
    idle_partitions_are_read_to_their_end(false).await;
}

/// The same with `--to` (whose end offsets Tansu cannot look up: it answers every
/// `offsets_for_times` lookup with 0, which ended every partition at the first empty poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_idle_for_seconds_mid_replay_are_read_to_the_end_of_its_range() {
    idle_partitions_are_read_to_their_end(true).await;
}

/// A replay of 2,000 records, the broker paused for 5 s as soon as it reads; with `bounded`, the
/// range ends (`--to`) before 200 records produced after it.
async fn idle_partitions_are_read_to_their_end(bounded: bool) {
    const EVENTS: usize = 2_000;
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    // One record per batch, so that the replay's small fetches below take many turns.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    let codec = Codec::new(&switchboard_tests::registry_url()).unwrap();
    let start = now() - 3_600_000;
    let calls: Vec<RawWebhook> = (0..EVENTS).map(|n| call("idle", n, start + n as i64)).collect();
    // Past the range's end (`--to` = start + 10 min, plus the 60 s margin).
    let later: Vec<RawWebhook> = (0..200)
        .map(|n| call("later", EVENTS + n, start + 20 * 60_000 + n as i64))
        .collect();
    let to = bounded.then(|| at_millis(start + 10 * 60_000));
    let produced: Vec<&RawWebhook> = calls
        .iter()
        .chain(if bounded { &later[..] } else { &[] })
        .collect();
    for chunk in produced.chunks(50) {
        let sends = chunk.iter().map(|&raw| {
            let (codec, producer) = (&codec, &producer);
            async move {
                let payload = codec
                    .encode(topics::RAW_TWILIO, RawWebhook::schema_def(), raw)
                    .await
                    .unwrap();
                producer
                    .send(
                        FutureRecord::to(topics::RAW_TWILIO)
                            .key(&raw.phone_id)
                            .payload(&payload)
                            .timestamp(raw.received_at),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
        });
        futures::future::join_all(sends).await;
    }

    let mut config = config(&broker, "replay-idle");
    // Small fetches and almost no prefetch: the replay reads while the broker is paused below
    // instead of having every record queued already. One transaction for the whole run, so that
    // it polls (empty) through the pause instead of waiting in a commit.
    for (key, value) in [
        ("queued.min.messages", "1"),
        ("max.partition.fetch.bytes", "2048"),
    ] {
        config.kafka.0.insert(key.into(), value.into());
    }
    config.commit_interval = Duration::from_secs(30);
    let args = ReplayArgs {
        from: at_millis(start - 60_000),
        to,
        sources: vec![Source::Twilio],
        phone_id: None,
        into: Some("idle".into()),
        dry_run: false,
    };
    let progress = indicatif::ProgressBar::hidden();
    let replay = run_replay(config, args, progress.clone()).await;

    // As soon as it is reading, pause the broker for 5 s: every partition idles mid-run.
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress.position() == 0 && !replay.is_finished() {
        assert!(Instant::now() < deadline, "the replay read nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broker.pause().unwrap();
    let read_before_pause = progress.position();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ended_during_pause = replay.is_finished();
    broker.resume().unwrap();
    let summary = replay.await.unwrap().unwrap();
    assert!(
        read_before_pause < EVENTS as u64,
        "the pause came after the replay had read everything: make it longer"
    );
    println!(
        "{summary} ({read_before_pause} read before the pause; ended while the broker was paused: {ended_during_pause})"
    );
    // Every record of the range read and emitted (with `--to`, a broker without
    // `offsets_for_times` also has the replay read the records after the range, outside it).
    assert_eq!(
        (summary.emitted as usize, summary.read - summary.skipped),
        (EVENTS, EVENTS as u64),
        "every record of the range read: {summary}"
    );

    let ids = committed_event_ids(&broker, "idle.switchboard.calls").await;
    let expected: Vec<String> = calls.iter().map(|raw| raw.event_id.clone()).collect();
    assert_exactly_once(&ids, &expected, "idle.switchboard.calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_replay_while_the_processor_lags_leaves_its_uncommitted_tail_to_it() {
    const EVENTS: usize = 90;
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let producer = RawProducer::new(&broker);
    let start = now() - 3_600_000;
    let calls: Vec<RawWebhook> = (0..EVENTS)
        .map(|n| call("lag", n, start + n as i64 * 1_000))
        .collect();
    let (processed, lagging) = calls.split_at(EVENTS / 3);

    // The processor has processed and committed the first third, then falls behind (stopped):
    // the rest is in the raw topic beyond its committed offsets.
    for raw in processed {
        producer.send(raw).await;
    }
    let processor = InProcess::start(config(&broker, "lag-0")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&broker, "switchboard-processor").values().sum::<i64>() < processed.len() as i64 {
        assert!(
            Instant::now() < deadline,
            "the processor did not process the first third"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    processor.stop().await;
    for raw in lagging {
        producer.send(raw).await;
    }

    // A live replay of the whole range while the processor lags.
    let args = ReplayArgs {
        from: at_millis(start - 60_000),
        to: None,
        sources: vec![Source::Twilio],
        phone_id: None,
        into: None,
        dry_run: false,
    };
    let summary = run_replay(
        config(&broker, "replay-live"),
        args,
        indicatif::ProgressBar::hidden(),
    )
    .await
    .await
    .unwrap()
    .unwrap();
    println!("{summary}");

    // The processor catches up.
    let processor = InProcess::start(config(&broker, "lag-0")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&broker, "switchboard-processor").values().sum::<i64>() < EVENTS as i64 {
        assert!(Instant::now() < deadline, "the processor did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    processor.stop().await;

    let ids = committed_event_ids(&broker, topics::CALLS).await;
    let expected: Vec<String> = calls.iter().map(|raw| raw.event_id.clone()).collect();
    assert_exactly_once(&ids, &expected, topics::CALLS);
    assert_eq!(
        (summary.read, summary.emitted),
        (processed.len() as u64, 0),
        "only what the processor committed is replayed, and all of it is in its dedup state: {summary}"
    );
}
