//! The dashboard's sampler: every [`INTERVAL`], on its own thread, it measures the topics (end
//! offsets -> rates, DLQ depth), reads the processor's own consumer lag and event age metrics, scrapes the
//! actions service when configured (retry depth, breakers), reads the newest raw webhooks, and
//! publishes one [`Snapshot`]: the page, `/dashboard.json` and the `switchboard_observed_*`
//! gauges all show that same snapshot until the next one.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchboard_schemas::{Codec, Source, metric_names, topics};

use super::events::{EventMeta, describe, newest, rfc3339};
use super::metrics as names;
use super::prom;
use super::read::{Partition, Reader, Record};
use super::stats::{Point, bucket_delta, quantile, rate};
use super::trend::Trends;
use crate::config::Config;
use switchboard_kafka::txn::now_millis;

/// How often the sampler measures.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Recent events on the dashboard.
pub(crate) const RECENT: usize = 20;
/// Domain records written between two samples are counted by reading them while they are at most
/// this many offsets.
const RATE_COUNT_LIMIT: i64 = 20_000;
/// The DLQ depth is counted by reading the DLQ while it holds at most this many offsets.
const DLQ_COUNT_LIMIT: i64 = 10_000;
/// Budget of one sample's Kafka reads.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(4);
/// Budget of one scrape of the actions service.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// One source's request rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SourceRate {
    pub(crate) source: String,
    pub(crate) requests_per_second: f64,
}

/// One domain topic's event rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TopicRate {
    pub(crate) topic: String,
    pub(crate) events_per_second: f64,
}

/// The processor's consumer lag on one raw topic (sum over partitions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TopicLag {
    pub(crate) topic: String,
    pub(crate) lag: i64,
}

/// Records waiting in one retry topic for one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RetryDepth {
    pub(crate) action: String,
    pub(crate) topic: String,
    pub(crate) depth: i64,
}

/// One action's circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Breaker {
    pub(crate) action: String,
    /// `closed`, `open`, `half-open` (or `unknown`).
    pub(crate) state: &'static str,
}

/// What the actions service's `/metrics` said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ActionsView {
    /// Whether the last scrape succeeded (when not, the rest is empty).
    pub(crate) reachable: bool,
    pub(crate) retry_depth_total: i64,
    pub(crate) retry: Vec<RetryDepth>,
    pub(crate) breakers: Vec<Breaker>,
}

/// Event age (ingest's `received_at` to the processor's commit) over the domain events this
/// instance committed between two samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct EventAge {
    /// Domain events committed between the two samples.
    pub(crate) events: u64,
    pub(crate) p50_seconds: f64,
    pub(crate) p99_seconds: f64,
}

impl EventAge {
    /// From the processor's event-age buckets now and at the previous sample; `None` when no
    /// event was committed in between.
    pub(crate) fn between(previous: &[(f64, f64)], current: &[(f64, f64)]) -> Option<Self> {
        let delta = bucket_delta(previous, current);
        Some(EventAge {
            events: delta.last()?.1 as u64,
            p50_seconds: quantile(&delta, 0.5)?,
            p99_seconds: quantile(&delta, 0.99)?,
        })
    }
}

/// One sample: everything the dashboard shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Snapshot {
    /// Sequence number, from 1 (0: no sample yet).
    pub(crate) sample: u64,
    /// When it was taken, RFC 3339.
    pub(crate) taken_at: Option<String>,
    pub(crate) sources: Vec<SourceRate>,
    pub(crate) events: Vec<TopicRate>,
    pub(crate) dlq_depth: i64,
    pub(crate) consumer_lag: Vec<TopicLag>,
    pub(crate) consumer_lag_total: i64,
    /// `None`: no domain event committed by this instance since the previous sample.
    pub(crate) event_age: Option<EventAge>,
    /// `None`: `actions_admin_url` is not configured.
    pub(crate) actions: Option<ActionsView>,
    pub(crate) recent: Vec<EventMeta>,
    /// Set when the topics could not be measured (the numbers are those of the last good sample).
    pub(crate) error: Option<&'static str>,
}

impl Snapshot {
    /// Sets the dashboard's gauges ([`super::metrics`]) from this sample.
    fn export(&self) {
        for source in &self.sources {
            metrics::gauge!(names::REQUESTS_PER_SECOND, "source" => source.source.clone())
                .set(source.requests_per_second);
        }
        for topic in &self.events {
            metrics::gauge!(names::EVENTS_PER_SECOND, "topic" => topic.topic.clone())
                .set(topic.events_per_second);
        }
        metrics::gauge!(names::DLQ_DEPTH).set(self.dlq_depth as f64);
        for (quantile, value) in [
            ("0.5", self.event_age.as_ref().map(|a| a.p50_seconds)),
            ("0.99", self.event_age.as_ref().map(|a| a.p99_seconds)),
        ] {
            metrics::gauge!(names::EVENT_AGE_QUANTILE, "quantile" => quantile).set(value.unwrap_or(f64::NAN));
        }
        if let Some(actions) = &self.actions {
            metrics::gauge!(names::RETRY_DEPTH).set(actions.retry_depth_total as f64);
        }
        metrics::gauge!(names::SAMPLE).set(self.sample as f64);
    }
}

/// The latest snapshot and the last hour of them, shared by the sampler (writer) and the routes
/// (readers).
#[derive(Debug, Clone, Default)]
pub(crate) struct Latest {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    trends: Arc<RwLock<Trends>>,
}

impl Latest {
    pub(crate) fn get(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// `read` of the latest snapshot and the trends that end with it, under the trends' read
    /// lock: nothing is copied, and the sampler's next sample waits for the render.
    pub(crate) fn with_trends<T>(&self, read: impl FnOnce(&Snapshot, &Trends) -> T) -> T {
        let trends = self.trends.read().unwrap_or_else(PoisonError::into_inner);
        read(&self.get(), &trends)
    }

    fn set(&self, mut snapshot: Snapshot) {
        // The trends keep no recent events: clone the snapshot without them.
        let recent = std::mem::take(&mut snapshot.recent);
        let mut trends = self.trends.write().unwrap_or_else(PoisonError::into_inner);
        trends.push(snapshot.clone());
        snapshot.recent = recent;
        *self.snapshot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }
}

/// Breaker gauge value -> state name (see `switchboard_actions_breaker_state`).
pub(crate) fn breaker_state(value: f64) -> &'static str {
    match value as i64 {
        0 => "closed",
        1 => "open",
        2 => "half-open",
        _ => "unknown",
    }
}

/// Reads the actions service's metrics text.
pub(crate) fn actions_view(text: &str) -> ActionsView {
    let retry: Vec<RetryDepth> = prom::samples(text, metric_names::ACTIONS_RETRY_DEPTH)
        .into_iter()
        .map(|s| RetryDepth {
            action: s.labels.get("action").cloned().unwrap_or_default(),
            topic: s.labels.get("topic").cloned().unwrap_or_default(),
            depth: s.value as i64,
        })
        .collect();
    let breakers = prom::samples(text, metric_names::ACTIONS_BREAKER_STATE)
        .into_iter()
        .map(|s| Breaker {
            action: s.labels.get("action").cloned().unwrap_or_default(),
            state: breaker_state(s.value),
        })
        .collect();
    ActionsView {
        reachable: true,
        retry_depth_total: retry.iter().map(|r| r.depth).sum(),
        retry,
        breakers,
    }
}

/// The processor's consumer lag per topic, from its own metrics text.
pub(crate) fn consumer_lag(text: &str) -> Vec<TopicLag> {
    let mut lag: BTreeMap<String, i64> = BTreeMap::new();
    for sample in prom::samples(text, crate::metrics::LAG) {
        *lag.entry(sample.labels.get("topic").cloned().unwrap_or_default())
            .or_default() += sample.value as i64;
    }
    lag.into_iter()
        .map(|(topic, lag)| TopicLag { topic, lag })
        .collect()
}

/// What a sample needs beyond the topics.
#[derive(Debug)]
pub(crate) struct Sampler {
    pub(crate) config: Arc<Config>,
    pub(crate) codec: Arc<Codec>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) latest: Latest,
}

/// What a sample leaves for the next one's rates.
#[derive(Debug, Default)]
struct Totals {
    at_millis: i64,
    /// Raw topics: sum of end offsets. Domain topics: records counted since the sampler started.
    by_topic: BTreeMap<String, i64>,
    /// End offset of every partition.
    ends: BTreeMap<Partition, i64>,
}

impl Sampler {
    /// Samples every `interval` until `stop`. Blocking: run on its own thread.
    pub(crate) fn run(self, stop: &AtomicBool, interval: Duration) {
        let http = reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).build().ok();
        let mut reader: Option<Reader> = None;
        let mut previous: Option<Totals> = None;
        let mut sequence = 0;
        let mut failing = false;
        let mut age_buckets: Vec<(f64, f64)> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            sequence += 1;
            let mut snapshot = match self.measure(&mut reader, previous.as_ref()) {
                Ok((snapshot, totals)) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("dashboard samples work again");
                    }
                    previous = Some(totals);
                    snapshot
                }
                Err(error) => {
                    // Once per outage, not every few seconds.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %format!("{error:#}"), "dashboard sample failed");
                    }
                    reader = None;
                    Snapshot {
                        error: Some("Kafka unavailable at the last sample"),
                        ..(*self.latest.get()).clone()
                    }
                }
            };
            snapshot.sample = sequence;
            snapshot.taken_at = Some(rfc3339(now_millis()));
            let own = switchboard_service::telemetry::prometheus().render();
            snapshot.consumer_lag = consumer_lag(&own);
            let buckets = prom::buckets(&own, crate::metrics::EVENT_AGE_SECONDS);
            snapshot.event_age = EventAge::between(&age_buckets, &buckets);
            age_buckets = buckets;
            snapshot.consumer_lag_total = snapshot.consumer_lag.iter().map(|l| l.lag).sum();
            snapshot.actions = self.scrape_actions(http.as_ref());
            snapshot.export();
            self.latest.set(snapshot);
            while started.elapsed() < interval && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn measure(
        &self,
        reader: &mut Option<Reader>,
        previous: Option<&Totals>,
    ) -> anyhow::Result<(Snapshot, Totals)> {
        let reader = match reader {
            Some(reader) => {
                reader.renew(KAFKA_TIMEOUT);
                reader
            }
            None => reader.insert(Reader::new(&self.config, KAFKA_TIMEOUT)?),
        };
        let raw: Vec<&str> = Source::ALL.iter().map(|s| s.raw_topic()).collect();
        let mut named = raw.clone();
        named.extend(topics::DOMAIN_TOPICS);
        named.push(topics::DLQ);
        let partitions = reader.partitions(&named, None)?;
        let extents = reader.extents(&partitions)?;
        let at_millis = now_millis();
        let mut by_topic: BTreeMap<String, i64> = BTreeMap::new();
        for ((topic, _), extent) in &extents {
            if raw.contains(&topic.as_str()) {
                *by_topic.entry(topic.clone()).or_default() += extent.end;
            }
        }
        // Domain topics are written in transactions, whose markers take offsets: count the
        // records written since the last sample by reading them, while they are few (at high
        // rates transactions are large, so offsets are then close to records).
        let new_records: BTreeMap<Partition, (i64, i64)> = extents
            .iter()
            .filter(|((t, _), _)| topics::DOMAIN_TOPICS.contains(&t.as_str()))
            .map(|(tp, e)| {
                let from = previous.and_then(|p| p.ends.get(tp)).copied().unwrap_or(e.end);
                (tp.clone(), (from.clamp(e.low, e.end), e.end))
            })
            .collect();
        let counted = reader.count(&new_records, RATE_COUNT_LIMIT)?;
        for topic in topics::DOMAIN_TOPICS {
            let grown = match &counted {
                Some(counts) => counts.get(topic).copied().unwrap_or(0) as i64,
                None => new_records
                    .iter()
                    .filter(|((t, _), _)| t == topic)
                    .map(|(_, (from, end))| end - from)
                    .sum(),
            };
            let before = previous.and_then(|p| p.by_topic.get(topic)).copied().unwrap_or(0);
            by_topic.insert(topic.to_owned(), before + grown);
        }
        let ends = extents.iter().map(|(tp, e)| (tp.clone(), e.end)).collect();
        let totals = Totals {
            at_millis,
            by_topic,
            ends,
        };
        let point = |topic: &str, totals: &Totals| Point {
            at_millis: totals.at_millis,
            total: totals.by_topic.get(topic).copied().unwrap_or_default(),
        };
        let rate_of = |topic: &str| rate(previous.map(|p| point(topic, p)), point(topic, &totals));

        let tail = i64::try_from(RECENT * 2 + 10).unwrap_or(i64::MAX);
        let ranges = extents
            .iter()
            .filter(|((t, _), _)| raw.contains(&t.as_str()))
            .map(|(tp, e)| (tp.clone(), ((e.end - tail).max(e.low), e.end)))
            .collect();
        let mut records = Vec::new();
        reader.read(ranges, |message| {
            records.push(Record::from_message(message));
            ControlFlow::Continue(())
        })?;
        let records = newest(records, RECENT);
        let recent = self.runtime.block_on(describe(&self.codec, &records, false));

        // DLQ records (read and counted while few; transaction markers take offsets too).
        let dlq: BTreeMap<_, (i64, i64)> = extents
            .iter()
            .filter(|((t, _), _)| t == topics::DLQ)
            .map(|(tp, e)| (tp.clone(), (e.low, e.end)))
            .collect();
        let dlq_depth = match reader.count(&dlq, DLQ_COUNT_LIMIT)? {
            Some(counts) => counts.values().sum::<u64>() as i64,
            None => dlq.values().map(|(low, end)| end - low).sum(),
        };

        let snapshot = Snapshot {
            sources: Source::ALL
                .iter()
                .map(|s| SourceRate {
                    source: s.as_str().to_owned(),
                    requests_per_second: rate_of(s.raw_topic()),
                })
                .collect(),
            events: topics::DOMAIN_TOPICS
                .iter()
                .map(|t| TopicRate {
                    topic: (*t).to_owned(),
                    events_per_second: rate_of(t),
                })
                .collect(),
            dlq_depth,
            recent,
            ..Snapshot::default()
        };
        Ok((snapshot, totals))
    }

    fn scrape_actions(&self, http: Option<&reqwest::Client>) -> Option<ActionsView> {
        let base = self.config.actions_admin_url.as_ref()?;
        let url = format!("{}/metrics", base.trim_end_matches('/'));
        let Some(http) = http else {
            return Some(ActionsView::default());
        };
        let text = self.runtime.block_on(async {
            let response = http.get(&url).send().await?.error_for_status()?;
            response.text().await
        });
        match text {
            Ok(text) => Some(actions_view(&text)),
            Err(error) => {
                tracing::warn!(%error, "cannot scrape the actions service's metrics");
                Some(ActionsView::default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_retry_depth_breakers_and_lag_from_metrics_text() {
        let text = "switchboard_actions_retry_depth{action=\"crm\",topic=\"switchboard.retry.1s\"} 3\n\
            switchboard_actions_retry_depth{action=\"crm\",topic=\"switchboard.retry.1m\"} 2\n\
            switchboard_actions_breaker_state{action=\"crm\"} 1\n\
            switchboard_actions_breaker_state{action=\"sms\"} 0\n\
            switchboard_processor_consumer_lag{partition=\"0\",topic=\"switchboard.raw.twilio\"} 4\n\
            switchboard_processor_consumer_lag{partition=\"1\",topic=\"switchboard.raw.twilio\"} 1\n";
        let view = actions_view(text);
        assert!(view.reachable);
        assert_eq!(view.retry_depth_total, 5);
        assert_eq!(
            view.breakers,
            vec![
                Breaker {
                    action: "crm".into(),
                    state: "open"
                },
                Breaker {
                    action: "sms".into(),
                    state: "closed"
                },
            ]
        );
        assert_eq!(breaker_state(2.0), "half-open");
        assert_eq!(
            consumer_lag(text),
            vec![TopicLag {
                topic: "switchboard.raw.twilio".into(),
                lag: 5
            }]
        );
    }

    #[test]
    fn snapshot_json_shape() {
        let snapshot = Snapshot {
            sample: 3,
            sources: vec![SourceRate {
                source: "twilio".into(),
                requests_per_second: 1.5,
            }],
            actions: None,
            ..Snapshot::default()
        };
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["sample"], 3);
        assert_eq!(json["sources"][0]["requests_per_second"], 1.5);
        assert_eq!(json["actions"], serde_json::Value::Null);
        assert_eq!(json["dlq_depth"], 0);
        assert!(json["recent"].as_array().unwrap().is_empty());
    }
}
