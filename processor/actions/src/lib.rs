//! switchboard-actions: the actions service, started as `switchboard-processor actions`: delivers
//! domain events to the HTTP targets of the `[[action]]` tables, with non-blocking retries down a
//! ladder of retry topics and a DLQ.
//!
//! - [`delivery`]: delivery to one HTTP target (no Kafka): rate limit, breaker, signing,
//!   classification of the answer.
//! - [`config`]: the service's settings and its actions.
//! - [`events`]: domain records as typed events (`call.completed` …) and their JSON.
//! - [`ladder`]: the retry ladder as pure functions: topics, headers, where a failure goes.
//! - [`worker`]: one action's exactly-once loop (its own consumer group and producer).
//!
//! Each action runs on its own thread with its own consumer group, so that a slow or failing
//! target holds back only its own events. Delivery is at-least-once with the event id as
//! `Idempotency-Key` (exactly-once is impossible across HTTP); routing a failure to a retry topic
//! or the DLQ is exactly-once (in the transaction that commits the consumed offsets).

mod config;
mod delivery;
mod events;
mod ladder;
mod metrics;
mod worker;

pub use config::ActionsConfig;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use switchboard_schemas::{Codec, topics};
use switchboard_service::http::{ServeOptions, serve};
use tokio::net::TcpListener;

use crate::delivery::{Target, http_client};
use switchboard_kafka::Health;
use worker::Worker;

/// How often retry and DLQ depth are measured.
const DEPTH_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the dispatcher until `shutdown` completes (every worker commits its open transaction and
/// leaves its group; `Ok`) or until a worker fails fatally (returned: exit non-zero).
pub async fn run(
    config: ActionsConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.actions.is_empty(),
        "no [[action]] is configured (SWITCHBOARD_CONFIG): the dispatcher has nothing to deliver"
    );
    // The recorder first: targets export their breaker state as they are built.
    switchboard_service::telemetry::prometheus();
    let client = http_client().context("building the HTTP client")?;
    let mut targets = Vec::new();
    for action in &config.actions {
        let resolved = action.resolve(|name| std::env::var(name).ok())?;
        targets.push(Arc::new(Target::new(resolved, client.clone())));
    }
    if config.create_topics {
        create_topics(&config)
            .await
            .context("creating the retry topics and the DLQ")?;
    }
    let config = Arc::new(config);
    let codec =
        Arc::new(Codec::new(&config.schema_registry_url).context("creating the schema registry client")?);
    let stop = Arc::new(AtomicBool::new(false));
    let healths: Vec<(String, Arc<Health>)> = targets
        .iter()
        .map(|t| (t.name().to_owned(), Arc::new(Health::default())))
        .collect();

    let router = switchboard_kafka::health::router(healths.iter().map(|(_, h)| Arc::clone(h)).collect());
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        drain_timeout: config.drain_timeout,
        ..ServeOptions::default()
    };
    tracing::info!(listen = %listener.local_addr()?, actions = targets.len(), "actions dispatcher admin listening");
    let server = tokio::spawn(serve(listener, router, options, async {
        let _ = admin_stopped.await;
    }));
    let depth_reporter = {
        let (config, healths, stop) = (Arc::clone(&config), healths.clone(), Arc::clone(&stop));
        tokio::task::spawn_blocking(move || report_depth(&config, &healths, &stop))
    };
    // One progress monitor per action: each worker is its own consumer group.
    let progress_monitors: Vec<_> = healths
        .iter()
        .map(|(action, health)| {
            let mut client = worker::reader_config(&config);
            switchboard_kafka::client::group_member(
                &mut client,
                &config.group_id(action),
                config.session_timeout,
            );
            let (health, stop) = (Arc::clone(health), Arc::clone(&stop));
            let stall_timeout = config.stall_timeout;
            tokio::task::spawn_blocking(move || {
                switchboard_kafka::progress::run(&client, &health, &stop, stall_timeout, None)
            })
        })
        .collect();

    let mut workers = tokio::task::JoinSet::new();
    for (target, (_, health)) in targets.into_iter().zip(&healths) {
        let (config, codec, stop, health) = (
            Arc::clone(&config),
            Arc::clone(&codec),
            Arc::clone(&stop),
            Arc::clone(health),
        );
        let runtime = tokio::runtime::Handle::current();
        workers.spawn_blocking(move || {
            let name = target.name().to_owned();
            Worker::new(&config, &target, &codec, runtime)
                .and_then(|worker| worker.run(&stop, &health))
                .with_context(|| format!("action {name}"))
        });
    }

    tokio::pin!(shutdown);
    let mut result = Ok(());
    tokio::select! {
        () = &mut shutdown => {}
        Some(ended) = workers.join_next() => {
            result = ended.context("action worker panicked").and_then(|r| r);
            if result.is_ok() {
                result = Err(anyhow::anyhow!("an action worker stopped unexpectedly"));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(ended) = workers.join_next().await {
        let ended = ended.context("action worker panicked").and_then(|r| r);
        if let (Ok(()), Err(error)) = (&result, ended) {
            result = Err(error);
        }
    }
    let _ = stop_admin.send(());
    let _ = server.await;
    let _ = depth_reporter.await;
    for monitor in progress_monitors {
        let _ = monitor.await;
    }
    match &result {
        Ok(()) => tracing::info!("actions dispatcher stopped"),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "actions dispatcher stopped by a fatal error")
        }
    }
    result
}

/// The retry topics (delete policy, retention `retry_retention`: days, so that waiting retries
/// outlive an outage of the actions service), the actions' redrive topic, the DLQ and the attempt
/// log (retention `retry_retention` too).
async fn create_topics(config: &ActionsConfig) -> Result<(), rdkafka::error::KafkaError> {
    let retry_topics = config.retry_topics();
    let retention = config.retry_retention.as_millis().to_string();
    let new_topics = new_topics(config, &retry_topics, &retention);
    switchboard_kafka::client::create_missing(&worker::reader_config(config), &new_topics).await
}

/// What [`create_topics`] creates; `retention` is `retry_retention` in milliseconds.
fn new_topics<'a>(
    config: &ActionsConfig,
    retry_topics: &'a [String],
    retention: &'a str,
) -> Vec<NewTopic<'a>> {
    let replication = || TopicReplication::Fixed(config.topic_replication_factor);
    let mut new_topics: Vec<NewTopic<'a>> = retry_topics
        .iter()
        .map(|topic| {
            NewTopic::new(topic, config.topic_partitions, replication()).set("retention.ms", retention)
        })
        .collect();
    new_topics.push(NewTopic::new(topics::DLQ, config.topic_partitions, replication()));
    new_topics.push(NewTopic::new(
        topics::ACTIONS_REDRIVE,
        config.topic_partitions,
        replication(),
    ));
    // The attempt log is read by the sink soon after it is written: kept as long as a retry.
    new_topics.push(
        NewTopic::new(topics::ACTIONS_ATTEMPTS, config.topic_partitions, replication())
            .set("retention.ms", retention),
    );
    new_topics
}

/// Measures, every [`DEPTH_INTERVAL`] until `stop`: per action and retry topic, the records not
/// yet consumed (end offset - position); per DLQ, its records (end - start offset). From a client
/// of its own, off the workers' threads.
fn report_depth(config: &ActionsConfig, healths: &[(String, Arc<Health>)], stop: &AtomicBool) {
    let Ok(client) = worker::reader_config(config).create::<BaseConsumer>() else {
        return;
    };
    let timeout = Duration::from_secs(2);
    let retry_topics = config.retry_topics();
    while !stop.load(Ordering::Relaxed) {
        for (action, health) in healths {
            let positions = health
                .positions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            for topic in &retry_topics {
                let depth: i64 = positions
                    .iter()
                    .filter(|(task, _)| &task.topic == topic)
                    .filter_map(|(task, position)| {
                        let (_, high) = client
                            .fetch_watermarks(&task.topic, task.partition, timeout)
                            .ok()?;
                        Some((high - position).max(0))
                    })
                    .sum();
                metrics::retry_depth(action, topic, depth);
            }
        }
        if let Ok(metadata) = client.fetch_metadata(Some(topics::DLQ), timeout) {
            let depth: i64 = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .filter_map(|p| client.fetch_watermarks(topics::DLQ, p.id(), timeout).ok())
                .map(|(low, high)| (high - low).max(0))
                .sum();
            metrics::dlq_depth(topics::DLQ, depth);
        }
        let deadline = std::time::Instant::now() + DEPTH_INTERVAL;
        while std::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_topics_keep_their_records_for_days_as_the_dlq_does() {
        let config = ActionsConfig {
            instance_id: Some("a-0".into()),
            ..ActionsConfig::default()
        }
        .validate()
        .unwrap();
        let retry_topics = config.retry_topics();
        let retention = config.retry_retention.as_millis().to_string();
        let created = new_topics(&config, &retry_topics, &retention);
        for topic in &retry_topics {
            let new = created.iter().find(|t| t.name == topic).unwrap();
            let retention_ms: u64 = new
                .config
                .iter()
                .find(|(key, _)| *key == "retention.ms")
                .map(|(_, value)| value.parse().unwrap())
                .unwrap();
            // A waiting retry outlives a week-long outage of the actions service, not the
            // 2.8 h that `max(delay, 1 min) × 168` gave the default ladder.
            assert_eq!(retention_ms, 7 * 24 * 3_600_000, "{topic}");
        }
        let dlq = created.iter().find(|t| t.name == topics::DLQ).unwrap();
        assert!(
            dlq.config.iter().all(|(key, _)| *key != "retention.ms"),
            "the DLQ keeps the broker's default (7 days)"
        );
    }
}
