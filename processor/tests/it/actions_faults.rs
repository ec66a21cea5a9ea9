//! The retry ladder under faults, against real HTTP targets served here and a private broker:
//! slow and timing-out targets get the whole delay counted from their failure, and a rebalance of
//! an action's group while a retry partition is paused (a second instance joins and leaves)
//! loses no retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use figment::providers::Format as _;
use rdkafka::message::{Headers, Message, OwnedMessage};
use switchboard_actions::ActionsConfig;
use switchboard_schemas::domain::CallEvent;
use switchboard_schemas::topics;
use switchboard_tests::broker::PrivateBroker;
use switchboard_tests::committed::read_committed_messages;

use crate::harness::*;

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// How a target path answers: `(delay before answering, status, Retry-After)` for the `n`th
/// request (from 1) of an event.
type Behavior = Arc<dyn Fn(u32) -> (Duration, u16, Option<&'static str>) + Send + Sync>;

/// One request a target received, with when it arrived and when it was answered (epoch ms).
#[derive(Debug, Clone)]
struct Request {
    path: String,
    event_id: String,
    arrived_at: i64,
    /// `None` while unanswered, and for good when the caller gave up first (timed out).
    answered_at: Option<i64>,
    status: u16,
}

/// HTTP targets on 127.0.0.1, one behavior per path, recording every request.
#[derive(Clone, Default)]
struct Targets {
    behaviors: Arc<Mutex<HashMap<String, Behavior>>>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Targets {
    async fn start(self) -> String {
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(answer))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    fn on(
        &self,
        path: &str,
        behavior: impl Fn(u32) -> (Duration, u16, Option<&'static str>) + Send + Sync + 'static,
    ) {
        self.behaviors
            .lock()
            .unwrap()
            .insert(path.to_owned(), Arc::new(behavior));
    }

    fn requests(&self, path: &str, event_id: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path && r.event_id == event_id)
            .cloned()
            .collect()
    }

    /// Answered 2xx requests of `event_id` on `path`.
    fn successes(&self, path: &str, event_id: &str) -> usize {
        self.requests(path, event_id)
            .iter()
            .filter(|r| r.answered_at.is_some() && (200..300).contains(&r.status))
            .count()
    }
}

async fn answer(State(targets): State<Targets>, Path(path): Path<String>, body: String) -> Response {
    let arrived_at = now_millis();
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let event_id = payload["data"]["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let behavior = targets.behaviors.lock().unwrap().get(&path).cloned();
    let (index, attempt) = {
        let mut requests = targets.requests.lock().unwrap();
        let attempt = requests
            .iter()
            .filter(|r| r.path == path && r.event_id == event_id)
            .count() as u32
            + 1;
        requests.push(Request {
            path,
            event_id,
            arrived_at,
            answered_at: None,
            status: 0,
        });
        (requests.len() - 1, attempt)
    };
    let Some(behavior) = behavior else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (delay, status, retry_after) = behavior(attempt);
    // Dropped here when the caller times out: the request stays unanswered.
    tokio::time::sleep(delay).await;
    let mut requests = targets.requests.lock().unwrap();
    requests[index].answered_at = Some(now_millis());
    requests[index].status = status;
    let status = StatusCode::from_u16(status).unwrap();
    match retry_after {
        Some(seconds) => (status, [("retry-after", seconds)]).into_response(),
        None => status.into_response(),
    }
}

fn action(name: &str, base: &str, timeout: &str) -> String {
    format!(
        "[[action]]\nname = \"{name}\"\non = [\"call.completed\"]\nurl = \"{base}/{name}\"\ntimeout = \"{timeout}\"\nbreaker = {{ failures = 1000 }}\n"
    )
}

fn config(broker: &PrivateBroker, actions_toml: &str, delays: &[&str], instance: &str) -> ActionsConfig {
    let toml = format!(
        "retry_delays = [{}]\n{actions_toml}",
        delays
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut config: ActionsConfig = figment::Figment::from(figment::providers::Toml::string(&toml))
        .extract()
        .unwrap();
    config.kafka_bootstrap = broker.bootstrap();
    config.schema_registry_url = switchboard_tests::registry_url();
    config.instance_id = Some(instance.into());
    config.session_timeout = Duration::from_secs(6);
    config.topic_partitions = PARTITIONS;
    config.validate().unwrap()
}

/// The dispatcher running in this process until stopped.
struct Dispatcher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Dispatcher {
    async fn start(config: ActionsConfig) -> Self {
        switchboard_service::telemetry::init_logging();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(switchboard_actions::run(config, listener, async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// SIGTERM-equivalent: commit the open transaction, leave the group.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Every record of `topic` as a `read_committed` reader sees it (the one place to change when the
/// suite reads output topics through the committed view).
fn committed_records(broker: &PrivateBroker, topic: &str) -> Vec<OwnedMessage> {
    read_committed_messages(&broker.bootstrap(), topic).unwrap_or_default()
}

/// Completed calls with their own phone ids: keys spread over every retry partition.
fn events(prefix: &str, count: usize) -> Vec<CallEvent> {
    (0..count)
        .map(|n| CallEvent {
            phone_id: format!("+1555700{n:04}"),
            ..completed_call(&format!("EV-{prefix}-{n}"), n)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_slow_and_timing_out_targets_wait_the_whole_delay_after_the_failure() {
    const SLOW: Duration = Duration::from_millis(700);
    let broker = PrivateBroker::start().unwrap();
    let targets = Targets::default();
    // Answers its first request after 0.7 s with a 503; then 200 at once.
    targets.on("slow", |n| {
        if n == 1 {
            (SLOW, 503, None)
        } else {
            (Duration::ZERO, 200, None)
        }
    });
    // The same, asking for 2 s with Retry-After.
    targets.on("hinted", |n| {
        if n == 1 {
            (SLOW, 503, Some("2"))
        } else {
            (Duration::ZERO, 200, None)
        }
    });
    // Lets its first request time out (the action's timeout is 1 s).
    targets.on("hanging", |n| {
        if n == 1 {
            (Duration::from_secs(3), 200, None)
        } else {
            (Duration::ZERO, 200, None)
        }
    });
    let base = targets.clone().start().await;
    let actions =
        action("slow", &base, "2s") + &action("hinted", &base, "2s") + &action("hanging", &base, "1s");
    // The events first: a worker subscribing to a topic that does not exist yet may not see it
    // for minutes (librdkafka's metadata refresh).
    let events = events("timing", 3);
    produce_calls(&broker, &events).await;
    let dispatcher = Dispatcher::start(config(&broker, &actions, &["1s", "2s"], "timing-0")).await;

    wait_until(
        "every event delivered to every target",
        Duration::from_secs(90),
        || {
            ["slow", "hinted", "hanging"]
                .iter()
                .all(|path| events.iter().all(|e| targets.successes(path, &e.event_id) == 1))
        },
    )
    .await;
    dispatcher.stop().await;

    let retry_records = committed_records(&broker, "switchboard.retry.1s");
    for event in &events {
        let id = event.event_id.as_str();
        // A 503 after 0.7 s on the 1 s step: the retry comes 1 s after the answer, not after
        // the request.
        let slow = targets.requests("slow", id);
        let answered = slow[0].answered_at.unwrap();
        let gap = slow[1].arrived_at - answered;
        println!("{id}: slow target retried {gap} ms after its 503 (step 1000 ms)");
        assert!(
            gap >= 1_000,
            "{id}: retried {gap} ms after the failed answer: {slow:?}"
        );
        let record = retry_records
            .iter()
            .find(|m| {
                header(m, "action").as_deref() == Some("slow") && header(m, "event-id").as_deref() == Some(id)
            })
            .unwrap_or_else(|| panic!("{id}: no retry record of the slow action"));
        let first_failed_at: i64 = header(record, "first-failed-at").unwrap().parse().unwrap();
        assert!(
            first_failed_at >= answered,
            "{id}: first-failed-at {first_failed_at} lies before the failure ({answered})"
        );

        // Retry-After: 2 counts from the answer too.
        let hinted = targets.requests("hinted", id);
        let gap = hinted[1].arrived_at - hinted[0].answered_at.unwrap();
        println!("{id}: Retry-After: 2 honoured {gap} ms after the answer");
        assert!(
            gap >= 2_000,
            "{id}: Retry-After: 2 retried after {gap} ms: {hinted:?}"
        );

        // A request that timed out after 1 s is retried 1 s (the step) after the time-out. The
        // client's timer starts a little before the request arrives: 50 ms of slack.
        let hanging = targets.requests("hanging", id);
        assert!(hanging[0].answered_at.is_none(), "{id}: {hanging:?}");
        let gap = hanging[1].arrived_at - hanging[0].arrived_at;
        println!(
            "{id}: timed-out request retried {gap} ms after it arrived (timeout 1000 ms + step 1000 ms)"
        );
        assert!(
            gap >= 1_950,
            "{id}: the time-out got no backoff: retried {gap} ms after the request: {hanging:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_while_retry_partitions_are_paused_delivers_every_retry() {
    const EVENTS: usize = 12;
    let broker = PrivateBroker::start().unwrap();
    let targets = Targets::default();
    // Every event fails once, then succeeds: each is retried once from `switchboard.retry.10s`.
    targets.on("app", |n| {
        if n == 1 {
            (Duration::ZERO, 503, None)
        } else {
            (Duration::ZERO, 200, None)
        }
    });
    let base = targets.clone().start().await;
    let actions = action("app", &base, "2s");
    let delays = ["10s", "20s"];
    let events = events("rebalance", EVENTS);
    produce_calls(&broker, &events).await;
    let first = Dispatcher::start(config(&broker, &actions, &delays, "rebalance-a")).await;
    wait_until("every event's first attempt", Duration::from_secs(60), || {
        events
            .iter()
            .all(|e| !targets.requests("app", &e.event_id).is_empty())
    })
    .await;
    // The retries are committed within the commit interval; the first instance then reads them
    // and pauses their partitions until they are due, 10 s after each failure.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A second instance joins the group and leaves again while those partitions are paused: two
    // rebalances, each revoking every partition of the first instance and assigning it again.
    let second = Dispatcher::start(config(&broker, &actions, &delays, "rebalance-b")).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    second.stop().await;

    wait_until(
        "every retry delivered after the rebalances",
        Duration::from_secs(90),
        || events.iter().all(|e| targets.successes("app", &e.event_id) >= 1),
    )
    .await;
    // Anything still in flight would show up as a second success.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.stop().await;

    for event in &events {
        let requests = targets.requests("app", &event.event_id);
        assert_eq!(
            targets.successes("app", &event.event_id),
            1,
            "{}: delivered once as a success: {requests:?}",
            event.event_id
        );
    }
    assert!(
        committed_records(&broker, topics::DLQ).is_empty(),
        "nothing dead-lettered: every event succeeds on its retry"
    );
    let retried: Vec<String> = committed_records(&broker, "switchboard.retry.10s")
        .iter()
        .filter_map(|m| header(m, "event-id"))
        .collect();
    assert_eq!(retried.len(), EVENTS, "each event retried once: {retried:?}");
}
