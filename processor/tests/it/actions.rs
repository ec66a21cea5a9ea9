//! The actions dispatcher against real HTTP targets served here and a private broker: the retry
//! ladder's order and headers, the DLQ after the last step, stable idempotency keys, Retry-After
//! and the circuit breaker, a healthy target unaffected by a failing one, and SIGKILLs during
//! retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use figment::providers::Format as _;
use rdkafka::message::{Headers, Message, OwnedMessage};
use switchboard_actions::ActionsConfig;
use switchboard_schemas::domain::CallEvent;
use switchboard_schemas::{ActionAttempt, topics};
use switchboard_tests::broker::PrivateBroker;
use switchboard_tests::committed::read_committed_messages;

use crate::harness::*;

/// How a target path answers the `n`th request (from 1) for an event.
type Behavior = Arc<dyn Fn(&str, u32) -> Response + Send + Sync>;

/// One request a target received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    event_id: String,
    idempotency_key: String,
    /// Position among every request the server received.
    sequence: usize,
    status: u16,
}

/// HTTP targets on 127.0.0.1, one behavior per path, recording every request.
#[derive(Clone, Default)]
struct Targets {
    behaviors: Arc<Mutex<HashMap<String, Behavior>>>,
    received: Arc<Mutex<Vec<Received>>>,
    counts: Arc<Mutex<HashMap<(String, String), u32>>>,
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

    fn on(&self, path: &str, behavior: impl Fn(&str, u32) -> Response + Send + Sync + 'static) {
        self.behaviors
            .lock()
            .unwrap()
            .insert(path.to_owned(), Arc::new(behavior));
    }

    fn received(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    fn for_event(&self, path: &str, event_id: &str) -> Vec<Received> {
        self.received(path)
            .into_iter()
            .filter(|r| r.event_id == event_id)
            .collect()
    }
}

async fn answer(
    State(targets): State<Targets>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let event_id = payload["data"]["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let n = {
        let mut counts = targets.counts.lock().unwrap();
        let n = counts.entry((path.clone(), event_id.clone())).or_default();
        *n += 1;
        *n
    };
    let behavior = targets.behaviors.lock().unwrap().get(&path).cloned();
    let response = behavior.map_or_else(|| StatusCode::NOT_FOUND.into_response(), |b| b(&event_id, n));
    let mut received = targets.received.lock().unwrap();
    let sequence = received.len();
    received.push(Received {
        path,
        event_id,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        sequence,
        status: response.status().as_u16(),
    });
    response
}

fn status(code: u16) -> Response {
    StatusCode::from_u16(code).unwrap().into_response()
}

fn action(name: &str, base: &str, path: &str, extra: &str) -> String {
    format!(
        "[[action]]\nname = \"{name}\"\non = [\"call.completed\"]\nurl = \"{base}/{path}\"\ntimeout = \"2s\"\n{extra}\n"
    )
}

fn config(broker: &PrivateBroker, actions_toml: &str, delays: &[&str]) -> ActionsConfig {
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
    config.instance_id = Some("test-0".into());
    config.session_timeout = Duration::from_secs(6);
    config.topic_partitions = PARTITIONS;
    config.validate().unwrap()
}

/// The dispatcher running in this process until stopped.
struct Dispatcher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The admin server's address.
    admin: std::net::SocketAddr,
}

impl Dispatcher {
    async fn start(config: ActionsConfig) -> Self {
        switchboard_service::telemetry::init_logging();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(switchboard_actions::run(config, listener, async {
            let _ = stopped.await;
        }));
        Self { stop, task, admin }
    }

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

/// The committed view of `topic` (empty while it does not exist yet): the dispatcher writes
/// retry and DLQ records in transactions, and records of aborted ones must not count.
fn read(broker: &PrivateBroker, topic: &str) -> Vec<OwnedMessage> {
    read_committed_messages(&broker.bootstrap(), topic).unwrap_or_default()
}

/// The committed attempt log; each record is keyed by its event id.
async fn attempt_log(broker: &PrivateBroker) -> Vec<ActionAttempt> {
    read_decoded::<ActionAttempt>(
        broker,
        topics::ACTIONS_ATTEMPTS,
        "read_committed",
        ActionAttempt::schema_def(),
    )
    .await
    .into_iter()
    .map(|(attempt, message)| {
        assert_eq!(message.key(), Some(attempt.event_id.as_bytes()));
        attempt
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_retries_in_order_then_dead_letters_while_a_healthy_target_keeps_receiving() {
    let broker = PrivateBroker::start().unwrap();
    let targets = Targets::default();
    targets.on("flaky", |event_id, n| match event_id {
        "EV-ok" => status(200),
        "EV-recovers" if n > 2 => status(200),
        _ => status(503),
    });
    targets.on("healthy", |_, _| status(204));
    let base = targets.clone().start().await;
    let actions = action("flaky", &base, "flaky", "breaker = { failures = 100 }")
        + &action("healthy", &base, "healthy", "");
    let dispatcher = Dispatcher::start(config(&broker, &actions, &["300ms", "600ms", "900ms"])).await;
    let events: Vec<CallEvent> = ["EV-ok", "EV-recovers", "EV-dead"]
        .iter()
        .enumerate()
        .map(|(n, id)| completed_call(id, n))
        .collect();
    produce_calls(&broker, &events).await;

    wait_until("the DLQ record of EV-dead", Duration::from_secs(90), || {
        targets.for_event("flaky", "EV-dead").len() >= 4 && !read(&broker, topics::DLQ).is_empty()
    })
    .await;
    // Retry depth per action and retry topic, and DLQ depth, are metrics (measured every 10 s).
    let metrics_url = format!("http://{}/metrics", dispatcher.admin);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
        let depth_series = ["300ms", "600ms", "900ms"].iter().all(|delay| {
            text.contains(&format!(
                "switchboard_actions_retry_depth{{action=\"flaky\",topic=\"switchboard.retry.{delay}\"}}"
            ))
        });
        if depth_series && text.contains("switchboard_dlq_depth{topic=\"switchboard.dlq\"}") {
            assert!(
                text.contains("switchboard_actions_breaker_state{action=\"flaky\"} 0"),
                "breaker closed"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retry and DLQ depth are not exported:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    dispatcher.stop().await;

    // The failing target: EV-dead tried 1 + 3 times, EV-recovers until its third attempt, EV-ok once;
    // every request of an event carries the event id as its idempotency key.
    let attempts = |id: &str| targets.for_event("flaky", id);
    assert_eq!(attempts("EV-dead").len(), 4, "{:?}", attempts("EV-dead"));
    assert_eq!(
        attempts("EV-recovers")
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        [503, 503, 200]
    );
    assert_eq!(attempts("EV-ok").len(), 1);
    for request in targets
        .received("flaky")
        .iter()
        .chain(&targets.received("healthy"))
    {
        assert_eq!(request.idempotency_key, request.event_id, "{request:?}");
    }
    // The healthy target got every event once, all before the failing target's last attempt.
    let healthy = targets.received("healthy");
    assert_eq!(healthy.len(), 3, "{healthy:?}");
    let last_flaky = attempts("EV-dead").last().unwrap().sequence;
    assert!(
        healthy.iter().all(|r| r.sequence < last_flaky),
        "the healthy target waited for the failing one"
    );

    // The ladder: EV-dead in each retry topic once, in order, with its attempt and the origin.
    for (step, topic) in [
        "switchboard.retry.300ms",
        "switchboard.retry.600ms",
        "switchboard.retry.900ms",
    ]
    .iter()
    .enumerate()
    {
        let records: Vec<OwnedMessage> = read(&broker, topic)
            .into_iter()
            .filter(|m| header(m, "event-id").as_deref() == Some("EV-dead"))
            .collect();
        assert_eq!(records.len(), 1, "{topic}");
        let record = &records[0];
        assert_eq!(header(record, "attempt"), Some((step + 1).to_string()), "{topic}");
        assert_eq!(header(record, "action").as_deref(), Some("flaky"));
        assert_eq!(header(record, "original-topic").as_deref(), Some(topics::CALLS));
        assert_eq!(
            record.key(),
            Some(events[2].phone_id.as_bytes()),
            "original key kept"
        );
        let not_before: i64 = header(record, "not-before").unwrap().parse().unwrap();
        let first_failed_at: i64 = header(record, "first-failed-at").unwrap().parse().unwrap();
        assert!(
            not_before >= first_failed_at + 300,
            "not-before follows the ladder"
        );
        assert!(header(record, "last-error").unwrap().contains("503"));
    }
    let dlq = read(&broker, topics::DLQ);
    assert_eq!(dlq.len(), 1, "only EV-dead is dead-lettered");
    assert_eq!(header(&dlq[0], "event-id").as_deref(), Some("EV-dead"));
    assert_eq!(
        header(&dlq[0], "error-class").as_deref(),
        Some("retries_exhausted")
    );
    assert_eq!(header(&dlq[0], "attempt").as_deref(), Some("4"));
    assert_eq!(header(&dlq[0], "action").as_deref(), Some("flaky"));
    assert_eq!(header(&dlq[0], "original-topic").as_deref(), Some(topics::CALLS));

    // The target is fixed: `dlq redrive --action flaky` gives EV-dead back to that action only,
    // which delivers it once; a second redrive changes nothing.
    targets.on("flaky", |_, _| status(200));
    let dispatcher = Dispatcher::start(config(&broker, &actions, &["300ms", "600ms", "900ms"])).await;
    let processor_config = crate::harness::config(&broker, "redrive");
    let filter = switchboard_processor::dlq::Filter {
        action: Some("flaky".into()),
        ..Default::default()
    };
    let summary = switchboard_processor::dlq::redrive(&processor_config, &filter, false)
        .await
        .unwrap();
    assert_eq!((summary.matched, summary.redriven), (1, 1), "{summary}");
    wait_until("the redriven EV-dead delivered", Duration::from_secs(60), || {
        attempts("EV-dead").len() == 5
    })
    .await;
    let again = switchboard_processor::dlq::redrive(&processor_config, &filter, false)
        .await
        .unwrap();
    assert_eq!((again.redriven, again.already_redriven), (0, 1), "{again}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    dispatcher.stop().await;
    let after = attempts("EV-dead");
    assert_eq!(after.len(), 5, "delivered once after the redrive: {after:?}");
    assert_eq!(after[4].status, 200);
    assert_eq!(
        targets.received("healthy").len(),
        3,
        "the other action is not redelivered"
    );
    assert_eq!(read(&broker, topics::DLQ).len(), 1, "nothing new dead-lettered");

    // The attempt log: every request a target received is one committed attempt record, keyed by
    // its event id, with its number, outcome, status and where the failure went.
    let logged = attempt_log(&broker).await;
    for action in ["flaky", "healthy"] {
        let received = targets.received(action).len();
        let recorded = logged.iter().filter(|a| a.action == action).count();
        assert_eq!(recorded, received, "{action}: one record per attempt");
    }
    let ids: std::collections::HashSet<&str> = logged.iter().map(|a| a.attempt_id.as_str()).collect();
    assert_eq!(ids.len(), logged.len(), "attempt ids are unique");
    let dead: Vec<(i32, &str, Option<i32>, Option<&str>)> = logged
        .iter()
        .filter(|a| a.action == "flaky" && a.event_id == "EV-dead")
        .map(|a| {
            (
                a.attempt,
                a.outcome.as_str(),
                a.status_code,
                a.routed_to.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        dead,
        [
            (1, "transient", Some(503), Some("switchboard.retry.300ms")),
            (2, "transient", Some(503), Some("switchboard.retry.600ms")),
            (3, "transient", Some(503), Some("switchboard.retry.900ms")),
            (4, "transient", Some(503), Some(topics::DLQ)),
            // Redriven: a fresh start on the ladder, delivered.
            (1, "delivered", None, None),
        ]
    );
    assert!(
        logged
            .iter()
            .all(|a| a.event_type == "call.completed" && a.attempted_at > 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_and_an_open_breaker_delay_retries_and_rejections_go_straight_to_the_dlq() {
    let broker = PrivateBroker::start().unwrap();
    let targets = Targets::default();
    let recovered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    targets.on("busy", |_, n| {
        if n == 1 {
            ([("retry-after", "2")], status(429)).into_response()
        } else {
            status(200)
        }
    });
    targets.on("rejecting", |_, _| status(422));
    let flag = Arc::clone(&recovered);
    targets.on("down", move |_, _| {
        status(if flag.load(std::sync::atomic::Ordering::Relaxed) {
            200
        } else {
            500
        })
    });
    let base = targets.clone().start().await;
    let actions = action("busy", &base, "busy", "breaker = { failures = 100 }")
        + &action("rejecting", &base, "rejecting", "")
        + &action(
            "down",
            &base,
            "down",
            "breaker = { failures = 2, cool_down = \"2s\" }\nrate_limit = { per_second = 5 }",
        );
    let delays = ["200ms", "400ms", "800ms", "1600ms", "3200ms", "6400ms"];
    let dispatcher = Dispatcher::start(config(&broker, &actions, &delays)).await;
    let events: Vec<CallEvent> = (0..6).map(|n| completed_call(&format!("EV-{n}"), n)).collect();
    produce_calls(&broker, &events).await;

    // The down target: its breaker opens; the retries wait for the cool-down.
    wait_until(
        "retries refused by the open breaker",
        Duration::from_secs(60),
        || {
            read(&broker, "switchboard.retry.200ms")
                .iter()
                .chain(&read(&broker, "switchboard.retry.400ms"))
                .any(|m| {
                    header(m, "action").as_deref() == Some("down")
                        && header(m, "last-error").as_deref() == Some("circuit open")
                })
        },
    )
    .await;
    let requests_while_open = targets.received("down").len();
    assert!(
        requests_while_open < 6 * 2,
        "the open breaker let {requests_while_open} requests through"
    );
    recovered.store(true, std::sync::atomic::Ordering::Relaxed);
    wait_until(
        "every event delivered to the recovered target",
        Duration::from_secs(90),
        || {
            (0..6).all(|n| {
                targets
                    .for_event("down", &format!("EV-{n}"))
                    .iter()
                    .any(|r| r.status == 200)
            })
        },
    )
    .await;
    wait_until(
        "every event delivered to the busy target",
        Duration::from_secs(30),
        || (0..6).all(|n| targets.for_event("busy", &format!("EV-{n}")).len() == 2),
    )
    .await;
    dispatcher.stop().await;

    // 429 with Retry-After: 2 delays the retry by 2 s although the first step is 200 ms.
    for record in read(&broker, "switchboard.retry.200ms")
        .iter()
        .filter(|m| header(m, "action").as_deref() == Some("busy"))
    {
        let not_before: i64 = header(record, "not-before").unwrap().parse().unwrap();
        let failed_at: i64 = header(record, "first-failed-at").unwrap().parse().unwrap();
        assert!(
            not_before - failed_at >= 2_000,
            "Retry-After ignored: {}",
            not_before - failed_at
        );
    }
    // 422: never retried, each event once in the DLQ.
    assert_eq!(targets.received("rejecting").len(), 6);
    let rejected: Vec<OwnedMessage> = read(&broker, topics::DLQ)
        .into_iter()
        .filter(|m| header(m, "action").as_deref() == Some("rejecting"))
        .collect();
    assert_eq!(rejected.len(), 6);
    assert!(
        rejected
            .iter()
            .all(|m| header(m, "error-class").as_deref() == Some("rejected"))
    );
    assert!(
        read(&broker, topics::DLQ)
            .iter()
            .all(|m| header(m, "action").as_deref() == Some("rejecting")),
        "nothing else dead-lettered"
    );
}

/// The application behind a target in the crash test: answers 503 to the first attempt of every
/// third event and the first two of every seventh, and stores accepted events in SQLite keyed by
/// the `Idempotency-Key` (as a receiver should), counting deliveries.
async fn store_event(State(db): State<sqlx::SqlitePool>, headers: HeaderMap) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let n: u64 = key.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let attempts: i64 = sqlx::query_scalar(
        "INSERT INTO attempts (event_id, count) VALUES (?, 1)
         ON CONFLICT (event_id) DO UPDATE SET count = count + 1 RETURNING count",
    )
    .bind(&key)
    .fetch_one(&db)
    .await
    .unwrap();
    let failures = if n.is_multiple_of(7) {
        2
    } else if n.is_multiple_of(3) {
        1
    } else {
        0
    };
    if attempts <= failures {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    sqlx::query(
        "INSERT INTO received (event_id, deliveries) VALUES (?, 1)
         ON CONFLICT (event_id) DO UPDATE SET deliveries = deliveries + 1",
    )
    .bind(&key)
    .execute(&db)
    .await
    .unwrap();
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_during_retries_lose_nothing_and_store_each_event_once() {
    const EVENTS: usize = 2_000;
    let broker = PrivateBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("app.db").display()
        ))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE received (event_id TEXT PRIMARY KEY, deliveries INTEGER NOT NULL)")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE attempts (event_id TEXT PRIMARY KEY, count INTEGER NOT NULL)")
        .execute(&db)
        .await
        .unwrap();
    let app = axum::Router::new()
        .route("/events", axum::routing::post(store_event))
        .with_state(db.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config_file = dir.path().join("actions.toml");
    std::fs::write(
        &config_file,
        format!(
            "retry_delays = [\"200ms\", \"400ms\", \"800ms\", \"1600ms\", \"3200ms\"]\n{}",
            action("app", &base, "events", "breaker = { failures = 1000 }")
        ),
    )
    .unwrap();
    let events: Vec<CallEvent> = (0..EVENTS)
        .map(|n| completed_call(&format!("EV-crash-{n}"), n))
        .collect();
    produce_calls(&broker, &events).await;

    let log = dir.path().join("actions.log");
    let env = [
        ("SWITCHBOARD_CONFIG", config_file.display().to_string()),
        ("SWITCHBOARD_INSTANCE_ID", "actions-crash-0".to_owned()),
        ("SWITCHBOARD_TOPIC_PARTITIONS", PARTITIONS.to_string()),
    ];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("actions crash test seed: {seed}");
    let mut rng = switchboard_tests::Rng::from_seed(seed);
    let stored = |db: sqlx::SqlitePool| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM received")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    // Each round: wait until this instance makes progress, then SIGKILL it at a random moment
    // within the next 2.5 s, while it is delivering, retrying and committing.
    for round in 0..5 {
        let before = stored(db.clone()).await;
        let dispatcher = spawn(&broker, &["actions"], &env, &log);
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored(db.clone()).await == before && before < EVENTS as i64 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no progress; log {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(2_500))).await;
        drop(dispatcher); // SIGKILL
        println!(
            "round {round}: {} of {EVENTS} events stored",
            stored(db.clone()).await
        );
    }
    let _dispatcher = spawn(&broker, &["actions"], &env, &log);
    let deadline = Instant::now() + Duration::from_secs(300);
    while stored(db.clone()).await < EVENTS as i64 {
        assert!(
            Instant::now() < deadline,
            "events were lost: {} of {EVENTS} stored; log {}",
            stored(db.clone()).await,
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let ids: std::collections::HashSet<String> = sqlx::query_scalar("SELECT event_id FROM received")
        .fetch_all(&db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected: std::collections::HashSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, expected, "the stored events are exactly the ones sent");
    let deliveries: i64 = sqlx::query_scalar("SELECT SUM(deliveries) FROM received")
        .fetch_one(&db)
        .await
        .unwrap();
    println!(
        "{EVENTS} events stored once each; {} redelivered after a kill (at-least-once HTTP)",
        deliveries - EVENTS as i64
    );
    assert!(
        read(&broker, topics::DLQ).is_empty(),
        "nothing may be dead-lettered: every event succeeds by its third attempt"
    );

    // The attempt log under SIGKILLs: each committed attempt once (an attempt whose transaction
    // died with the process is not in it), and each event's delivery that took effect is there.
    let logged = attempt_log(&broker).await;
    let attempt_ids: std::collections::HashSet<&str> = logged.iter().map(|a| a.attempt_id.as_str()).collect();
    assert_eq!(attempt_ids.len(), logged.len(), "no attempt is recorded twice");
    let delivered: std::collections::HashSet<String> = logged
        .iter()
        .filter(|a| a.outcome == "delivered")
        .map(|a| a.event_id.clone())
        .collect();
    assert_eq!(
        delivered, expected,
        "every event's successful attempt is recorded"
    );
    let requests: i64 = sqlx::query_scalar("SELECT SUM(count) FROM attempts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(
        logged.len() as i64 <= requests,
        "no more attempts recorded ({}) than requests made ({requests})",
        logged.len()
    );
    let delivered_records = logged.iter().filter(|a| a.outcome == "delivered").count() as i64;
    assert!(
        delivered_records <= deliveries,
        "no more delivered attempts recorded ({delivered_records}) than 2xx answers ({deliveries})"
    );
}
