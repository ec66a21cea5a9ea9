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
use crate::prom;
use crate::report::{self, EndToEnd, Latency, Window};
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
    /// The processor's `/metrics`, scraped at every window boundary (optional).
    pub processor_metrics: Option<String>,
    /// Length of the windows the run is reported in.
    pub window: Duration,
}

/// Scrapes `url` now and then every `every` until `stop`: (when, the exposition text or "").
fn scrape_every(
    url: Option<String>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Instant, String)>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .ok();
        let mut scrapes = Vec::new();
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let at = Instant::now();
            let text = match (&client, &url) {
                (Some(client), Some(url)) => match client.get(url).send().await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                },
                _ => String::new(),
            };
            scrapes.push((at, text));
            if stop.load(Ordering::Relaxed) {
                return scrapes;
            }
        }
    })
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

    let scraping = Arc::new(AtomicBool::new(false));
    let scrapes = scrape_every(
        settings.processor_metrics.clone(),
        settings.window,
        Arc::clone(&scraping),
    );
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
    scraping.store(true, Ordering::Relaxed);

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
    // A window that opens after the last request only holds its stragglers.
    let mut windows = windows(&webhooks[..count], &acks, &seen, &scrapes.await?);
    windows.retain(|w| w.from_secs + 0.5 < settings.duration.as_secs_f64());
    for window in &windows {
        eprintln!(
            "  {:>4.0}-{:<4.0} s: 2xx -> event p50 {:.1} ms p99 {:.1} ms; processor: {} transactions, mean commit {} ms",
            window.from_secs,
            window.to_secs,
            window.to_event.p50,
            window.to_event.p99,
            window.transactions.map_or("?".to_owned(), |n| format!("{n:.0}")),
            window
                .mean_commit_ms
                .map_or("?".to_owned(), |ms| format!("{ms:.1}")),
        );
    }
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
        windows,
    })
}

/// The run between consecutive scrapes: each answered event falls in the window of its 2xx.
pub fn windows(
    webhooks: &[Webhook],
    acks: &Acks,
    seen: &HashMap<String, Instant>,
    scrapes: &[(Instant, String)],
) -> Vec<Window> {
    let mut windows: Vec<(Window, hdrhistogram::Histogram<u64>)> = scrapes
        .windows(2)
        .map(|pair| {
            let [(from, before), (to, after)] = pair else {
                unreachable!()
            };
            let secs = |at: &Instant| at.saturating_duration_since(acks.start).as_secs_f64();
            let scraped = !before.is_empty() && !after.is_empty();
            let delta = scraped.then(|| {
                prom::Delta::between(
                    before,
                    after,
                    "switchboard_processor_transaction_commit_seconds",
                    "switchboard_processor_consumed_total",
                )
            });
            let window = Window {
                from_secs: secs(from),
                to_secs: secs(to),
                transactions: delta.map(|d| d.count),
                mean_commit_ms: delta.map(|d| d.mean_ms),
                ..Window::default()
            };
            (window, report::histogram())
        })
        .collect();
    for (index, webhook) in webhooks.iter().enumerate() {
        let (Some(acked), Some(&at)) = (acks.get(index), seen.get(&webhook.event_id)) else {
            continue;
        };
        let answered = acked.saturating_duration_since(acks.start).as_secs_f64();
        if let Some((_, histogram)) = windows
            .iter_mut()
            .find(|(w, _)| answered >= w.from_secs && answered < w.to_secs)
        {
            report::record(histogram, at.saturating_duration_since(acked));
        }
    }
    windows
        .into_iter()
        .filter(|(_, histogram)| !histogram.is_empty())
        .map(|(window, histogram)| Window {
            to_event: Latency::of(&histogram),
            ..window
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(transactions: f64, commit_seconds: f64, consumed: f64) -> String {
        format!(
            "switchboard_processor_transaction_commit_seconds_count {transactions}\n\
             switchboard_processor_transaction_commit_seconds_sum {commit_seconds}\n\
             switchboard_processor_consumed_total{{topic=\"t\"}} {consumed}\n"
        )
    }

    #[test]
    fn each_event_falls_in_the_window_of_its_2xx_with_that_windows_commits() {
        let spec = workload::Spec {
            requests: 4,
            seed: 1,
            public_url: "http://127.0.0.1:1".to_owned(),
            auth_token: "token".to_owned(),
        };
        let webhooks = workload::presign(&spec);
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let acks = Acks::new(start, webhooks.len());
        // Two events answered in the first window (seen 10 and 30 ms later), one in the second
        // (seen 200 ms later), one never answered.
        acks.set(0, at(100));
        acks.set(1, at(900));
        acks.set(2, at(1500));
        let seen: HashMap<String, Instant> = [(0, 110), (1, 930), (2, 1700), (3, 1800)]
            .into_iter()
            .map(|(i, millis)| (webhooks[i].event_id.clone(), at(millis)))
            .collect();
        let scrapes = vec![
            (at(0), exposition(10.0, 0.5, 100.0)),
            (at(1000), exposition(14.0, 0.7, 180.0)),
            (at(2000), String::new()),
        ];

        let windows = windows(&webhooks, &acks, &seen, &scrapes);

        assert_eq!(windows.len(), 2);
        let (first, second) = (&windows[0], &windows[1]);
        assert_eq!((first.from_secs, first.to_secs), (0.0, 1.0));
        assert_eq!(first.to_event.count, 2);
        assert!((first.to_event.max - 30.0).abs() < 0.1, "{}", first.to_event.max);
        assert_eq!(first.transactions, Some(4.0));
        assert!((first.mean_commit_ms.unwrap() - 50.0).abs() < 1e-6);
        assert_eq!(second.to_event.count, 1);
        assert!(
            (second.to_event.p50 - 200.0).abs() < 0.5,
            "{}",
            second.to_event.p50
        );
        // The last scrape failed: the window has its latency but no commit figures.
        assert_eq!((second.transactions, second.mean_commit_ms), (None, None));
    }
}
