//! End-to-end latency at a fixed rate: from ingest's 2xx to (1) the domain event being readable on
//! `switchboard.calls` by a `read_committed` consumer, matched by its `event-id` header, and (2) the
//! call being served as `completed` by the sink's calls API (`GET /calls/{CallSid}`, polled for a
//! sample of calls after their `completed` callback is answered).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_schemas::topics::CALLS;
use tokio::sync::mpsc;

use crate::http_load::{self, Acks};
use crate::pacing::Pacer;
use crate::report::{self, EndToEnd, Latency};
use crate::rss::{self, Watched};
use crate::workload::{self, Webhook};

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ingest_url: String,
    pub bootstrap: String,
    pub sink_url: String,
    pub pacer: Pacer,
    pub duration: Duration,
    /// Poll the calls API for one call in this many.
    pub api_sample_every: usize,
    pub api_poll_interval: Duration,
    /// `fetch.wait.max.ms` of the consumer watching `switchboard.calls`.
    pub fetch_wait: Duration,
    /// How long to wait for stragglers after the last request.
    pub settle: Duration,
    pub watched: Vec<Watched>,
}

/// A consumer positioned at the current end of `switchboard.calls`, so it sees only this run.
fn consumer(bootstrap: &str, fetch_wait: Duration) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "switchboard-bench-e2e")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        .set("fetch.min.bytes", "1")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(CALLS), Duration::from_secs(10))?;
    let topic = metadata
        .topics()
        .first()
        .context("no metadata for switchboard.calls")?;
    anyhow::ensure!(
        !topic.partitions().is_empty(),
        "switchboard.calls has no partitions (is the processor running?)"
    );
    let mut assignment = TopicPartitionList::new();
    for partition in topic.partitions() {
        let (_, high) = consumer.fetch_watermarks(CALLS, partition.id(), Duration::from_secs(10))?;
        assignment.add_partition_offset(CALLS, partition.id(), Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Reads `switchboard.calls` until `stop`, noting when each event id first became readable.
fn read_events(
    consumer: BaseConsumer,
    stop: &AtomicBool,
    seen_count: &AtomicUsize,
) -> HashMap<String, Instant> {
    let mut seen = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let at = Instant::now();
        let event_id = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key == "event-id")
                .and_then(|header| header.value)
                .and_then(|value| std::str::from_utf8(value).ok())
                .map(str::to_owned)
        });
        if let Some(event_id) = event_id {
            seen.entry(event_id).or_insert(at);
            seen_count.store(seen.len(), Ordering::Relaxed);
        }
    }
    seen
}

/// Polls the calls API until `call_sid` is `completed`; when it was first seen so, or `None`.
async fn poll_call(
    client: &reqwest::Client,
    url: &str,
    interval: Duration,
    give_up: Instant,
) -> Option<Instant> {
    while Instant::now() < give_up {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
            && let Ok(body) = response.json::<serde_json::Value>().await
            && body.get("status").and_then(|s| s.as_str()) == Some("completed")
        {
            return Some(Instant::now());
        }
        tokio::time::sleep(interval).await;
    }
    None
}

/// Runs the fixed-rate load and measures both latencies. `webhooks` must hold at least
/// `rate × duration` requests.
pub async fn run(settings: &Settings, webhooks: Arc<[Webhook]>) -> anyhow::Result<EndToEnd> {
    let count = settings.pacer.requests_in(settings.duration);
    anyhow::ensure!(
        count <= webhooks.len(),
        "pre-signed {} webhooks for {count} requests",
        webhooks.len()
    );
    for watched in &settings.watched {
        if !rss::reset_peak(watched.pid) {
            eprintln!(
                "cannot reset the peak RSS of {} (pid {}): the figure covers its whole life",
                watched.name, watched.pid
            );
        }
    }

    let consumer = consumer(&settings.bootstrap, settings.fetch_wait)?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen_count = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, seen_count) = (Arc::clone(&stop), Arc::clone(&seen_count));
        std::thread::spawn(move || read_events(consumer, &stop, &seen_count))
    };

    // Pollers for the sampled calls, started as their `completed` callbacks are answered.
    let (notify, mut answered) = mpsc::unbounded_channel::<usize>();
    let api_client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let sample_every = settings.api_sample_every.max(1);
    let pollers = {
        let webhooks = Arc::clone(&webhooks);
        let (sink_url, interval, settle) = (
            settings.sink_url.trim_end_matches('/').to_owned(),
            settings.api_poll_interval,
            settings.settle,
        );
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Some(index) = answered.recv().await {
                let webhook = &webhooks[index];
                if !webhook.is_final() || !workload::position(index).0.is_multiple_of(sample_every) {
                    continue;
                }
                let url = format!("{sink_url}/calls/{}", webhook.call_sid);
                let client = api_client.clone();
                tasks.spawn(async move {
                    let visible = poll_call(
                        &client,
                        &url,
                        interval,
                        Instant::now() + settle + Duration::from_secs(30),
                    )
                    .await;
                    (index, visible)
                });
            }
            let mut results = Vec::new();
            while let Some(result) = tasks.join_next().await {
                results.extend(result.ok());
            }
            results
        })
    };

    let (ingest, acks) = http_load::open_loop(
        "switchboard-ingest",
        &settings.ingest_url,
        Arc::clone(&webhooks),
        settings.pacer,
        count,
        Some(notify),
    )
    .await?;
    eprintln!("{}", ingest.line());

    let polled = pollers.await?;
    // Give the reader until every answered event is seen, or `settle` passes without progress.
    let answered_events = (0..count).filter(|&i| acks.get(i).is_some()).count();
    let (mut last, mut last_progress) = (0, Instant::now());
    loop {
        let now_seen = seen_count.load(Ordering::Relaxed);
        if now_seen >= answered_events || last_progress.elapsed() >= settings.settle {
            break;
        }
        if now_seen > last {
            (last, last_progress) = (now_seen, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the event reader panicked"))?;
    let (to_event, events_missing) = event_latencies(&webhooks[..count], &acks, &seen);
    let (to_api, api_missing) = api_latencies(&acks, &polled);

    let peak_rss_kb: BTreeMap<String, u64> = settings
        .watched
        .iter()
        .filter_map(|w| rss::peak_kb(w.pid).map(|kb| (w.name.clone(), kb)))
        .collect();
    Ok(EndToEnd {
        ingest,
        to_event,
        events_missing,
        to_api,
        api_sample_every: sample_every,
        api_poll_interval_ms: u64::try_from(settings.api_poll_interval.as_millis()).unwrap_or(u64::MAX),
        api_missing,
        peak_rss_kb,
    })
}

/// Latency from each 2xx to its event being readable; and how many answered events were not seen.
pub fn event_latencies(webhooks: &[Webhook], acks: &Acks, seen: &HashMap<String, Instant>) -> (Latency, u64) {
    let mut histogram = report::histogram();
    let mut missing = 0;
    for (index, webhook) in webhooks.iter().enumerate() {
        let Some(acked) = acks.get(index) else { continue };
        match seen.get(&webhook.event_id) {
            // An event can be readable before the 2xx reaches the generator: that counts as 0.
            Some(&at) => report::record(&mut histogram, at.saturating_duration_since(acked)),
            None => missing += 1,
        }
    }
    (Latency::of(&histogram), missing)
}

/// Latency from each sampled call's final 2xx to the calls API serving it `completed`.
pub fn api_latencies(acks: &Acks, polled: &[(usize, Option<Instant>)]) -> (Latency, u64) {
    let mut histogram = report::histogram();
    let mut missing = 0;
    for &(index, visible) in polled {
        match (acks.get(index), visible) {
            (Some(acked), Some(at)) => report::record(&mut histogram, at.saturating_duration_since(acked)),
            _ => missing += 1,
        }
    }
    (Latency::of(&histogram), missing)
}
