//! The sink against real databases: exactly-once rows under SIGKILLs of the sink and the
//! processor, on the dev broker, for SQLite and PostgreSQL; the calls API's event search over
//! HTTP.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgConnection;
use sqlx::{AnyPool, Connection as _};
use switchboard_schemas::domain::{BillingEvent, BookingEvent, CallEvent, CallKind, MessageEvent};
use switchboard_schemas::{ActionAttempt, Codec, DomainEvent, topics};
use switchboard_sink::SinkConfig;
use switchboard_tests::broker::PrivateBroker;

use crate::harness::*;

const CALLS: usize = 2_000;
const STATUSES: [&str; 5] = ["queued", "initiated", "ringing", "in-progress", "completed"];

/// A database for one test run: a SQLite file, or a fresh PostgreSQL database created through the
/// admin URL in `SWITCHBOARD_TEST_POSTGRES` (unreachable PostgreSQL fails the test).
async fn database(kind: &str, dir: &std::path::Path) -> String {
    if kind == "sqlite" {
        return format!("sqlite://{}", dir.join("sink.db").display());
    }
    let admin = postgres_admin_url();
    let name = format!(
        "sb_crash_{}",
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
    );
    let mut connection = PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (SWITCHBOARD_TEST_POSTGRES): {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// The PostgreSQL URL test databases are created through.
fn postgres_admin_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A read-only view of the sink's database, through sqlx like the sink itself.
async fn open(database_url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .unwrap()
}

async fn count(pool: &AnyPool, table: &str) -> i64 {
    // The sink creates its tables on start: before that, nothing is stored.
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

async fn crash_test(kind: &str) {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("services.log");
    let database_url = database(kind, dir.path()).await;
    let raw = RawProducer::new(&broker);

    let mut sends = Vec::new();
    for call in 0..CALLS {
        for (sequence, status) in STATUSES.iter().enumerate() {
            sends.push(twilio_call(
                &format!("+1555400{:04}", call % 50),
                &format!("CA{call:032}"),
                status,
                sequence as u32,
                &format!("EV-{call}-{status}"),
            ));
        }
    }
    let expected_ids: HashSet<String> = sends.iter().map(|raw| raw.event_id.clone()).collect();
    let redeliveries: Vec<_> = sends.iter().step_by(25).cloned().collect();
    sends.extend(redeliveries);
    for chunk in sends.chunks(500) {
        futures::future::join_all(chunk.iter().map(|r| raw.send(r))).await;
    }

    let processor_env = [
        ("SWITCHBOARD_INSTANCE_ID", "sink-crash-0".to_owned()),
        ("SWITCHBOARD_TOPIC_PARTITIONS", PARTITIONS.to_string()),
    ];
    let sink_env = [
        ("SWITCHBOARD_DATABASE_URL", database_url.clone()),
        ("SWITCHBOARD_BATCH_MAX_RECORDS", "500".to_owned()),
    ];
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("{kind} sink crash test seed: {seed}");
    let mut rng = switchboard_tests::Rng::from_seed(seed);
    let mut processor = spawn(&broker, &[], &processor_env, &log);
    for round in 0..5 {
        let sink = spawn(&broker, &["sink"], &sink_env, &log);
        tokio::time::sleep(Duration::from_millis(3_000 + rng.below(4_000))).await;
        drop(sink); // SIGKILL the sink
        if round % 2 == 1 {
            drop(processor); // and now and then the processor
            processor = spawn(&broker, &[], &processor_env, &log);
        }
        println!(
            "{kind} round {round}: call_events = {}",
            count(&open(&database_url).await, "call_events").await
        );
    }

    let _sink = spawn(&broker, &["sink"], &sink_env, &log);
    let db = open(&database_url).await;
    let expected = (CALLS * STATUSES.len()) as i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stored = count(&db, "call_events").await;
        if stored >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kind}: only {stored} of {expected} events stored; log {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let anything in flight land, then check: exactly the events sent, each once (redeliveries
    // deduplicated), and every call at its final status.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM call_events")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(ids.len() as i64, expected, "{kind}: call_events rows");
    let ids: HashSet<String> = ids.into_iter().collect();
    assert_eq!(
        ids, expected_ids,
        "{kind}: stored event ids differ from the ones sent"
    );
    let rows: Vec<(String, Option<i64>, i64)> =
        sqlx::query_as("SELECT status, CAST(duration_seconds AS BIGINT), COUNT(*) FROM calls GROUP BY status, duration_seconds")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![("completed".to_owned(), Some(120), CALLS as i64)],
        "{kind}: final call states"
    );
    // And what the sink read: the committed view of the domain topic the SIGKILLed processor
    // wrote holds each event exactly once.
    let report = assert_calls_exactly_once(&broker, topics::CALLS, expected_ids).await;
    println!(
        "{kind}: {} records of aborted transactions in {} seen and left out",
        report.aborted_seen,
        topics::CALLS
    );
    drop(processor);
    drop(_sink);
    db.close().await;
    drop_database(&database_url).await;
}

/// Removes the PostgreSQL database [`database`] created (SQLite files go with their directory).
async fn drop_database(database_url: &str) {
    let Some((_, name)) = database_url
        .strip_prefix("postgres")
        .and(database_url.rsplit_once('/'))
    else {
        return;
    };
    let mut connection = PgConnection::connect(&postgres_admin_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_of_sink_and_processor_neither_lose_nor_double_a_row_sqlite() {
    crash_test("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_of_sink_and_processor_neither_lose_nor_double_a_row_postgres() {
    crash_test("postgres").await;
}

/// Forwards every connection accepted on `listener` to `target` until the task is aborted.
async fn forward(listener: tokio::net::TcpListener, target: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// With the schema registry unreachable the sink cannot decode a record; it must wait and read
/// it again, never skip it (a skipped record would be lost to the database for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_read_while_the_registry_is_down_are_stored_once_it_is_back() {
    const EVENTS: usize = 20;
    let broker = PrivateBroker::start().unwrap();
    let events: Vec<CallEvent> = (0..EVENTS)
        .map(|n| completed_call(&format!("EV-outage-{n}"), n))
        .collect();
    produce_calls(&broker, &events).await;

    // The sink's registry address refuses connections until the forwarder starts.
    let registry_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("sink.db").display());
    let (stop, sink) = start_sink(
        &broker,
        &format!("http://127.0.0.1:{registry_port}"),
        &database_url,
    )
    .await;

    // Long enough to join the group and fail to decode every record at least once.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!sink.is_finished(), "the sink exited while the registry was down");
    let db = open(&database_url).await;
    assert_eq!(count(&db, "calls").await, 0, "stored without a schema?");

    let registry = switchboard_tests::registry_url();
    let target = registry
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let forwarder = tokio::spawn(forward(
        tokio::net::TcpListener::bind(("127.0.0.1", registry_port))
            .await
            .unwrap(),
        target,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db, "calls").await < EVENTS as i64 {
        assert!(
            Instant::now() < deadline,
            "records read during the outage were not stored afterwards"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let completed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM calls WHERE status = 'completed' AND duration_seconds = 120",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(completed, EVENTS as i64);

    let _ = stop.send(());
    sink.await.unwrap().unwrap();
    forwarder.abort();
}

/// A sink running in this process on `database_url`, until the sender is used.
async fn start_sink(
    broker: &PrivateBroker,
    registry: &str,
    database_url: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (stop, sink, _) = start_sink_with(broker, registry, database_url, None).await;
    (stop, sink)
}

/// [`start_sink`] with API token `api_token`; also returns the admin (calls API) address.
async fn start_sink_with(
    broker: &PrivateBroker,
    registry: &str,
    database_url: &str,
    api_token: Option<&str>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    std::net::SocketAddr,
) {
    let config = SinkConfig {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: registry.to_owned(),
        database_url: database_url.to_owned(),
        session_timeout: Duration::from_secs(6),
        api_token: api_token.map(str::to_owned),
        ..SinkConfig::default()
    }
    .validate()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sink = tokio::spawn(switchboard_sink::run(config, listener, async {
        let _ = stopped.await;
    }));
    (stop, sink, address)
}

/// Every stored row of the sink's call tables, as text, in key order.
async fn snapshot(db: &AnyPool) -> Vec<String> {
    let calls: Vec<(String, String, Option<i64>, i64, String)> = sqlx::query_as(
        "SELECT call_sid, status, CAST(duration_seconds AS BIGINT), updated_at, last_event_id FROM calls ORDER BY call_sid",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let events: Vec<String> = sqlx::query_scalar("SELECT event_id FROM call_events ORDER BY event_id")
        .fetch_all(db)
        .await
        .unwrap();
    calls.iter().map(|row| format!("{row:?}")).chain(events).collect()
}

/// The documented rebuild: a sink on an empty database (same group) reads the domain topics from
/// the beginning and ends with the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_on_an_empty_database_rebuilds_the_same_rows() {
    const CALLS: usize = 100;
    let broker = PrivateBroker::start().unwrap();
    let mut events = Vec::new();
    for n in 0..CALLS {
        let mut ringing = completed_call(&format!("EV-rebuild-{n}-ringing"), n);
        ringing.call_status = Some("ringing".into());
        ringing.call_duration = None;
        ringing.sequence_number = Some(2);
        // Delivered late: after completed. The rule keeps completed.
        events.push(completed_call(&format!("EV-rebuild-{n}-completed"), n));
        events.push(ringing);
    }
    produce_calls(&broker, &events).await;

    let dir = tempfile::tempdir().unwrap();
    let mut snapshots = Vec::new();
    for name in ["first.db", "rebuilt.db"] {
        let url = format!("sqlite://{}", dir.path().join(name).display());
        let (stop, sink) = start_sink(&broker, &switchboard_tests::registry_url(), &url).await;
        let deadline = Instant::now() + Duration::from_secs(90);
        // The sink installs sqlx's drivers when it opens its database; this may poll first.
        sqlx::any::install_default_drivers();
        let db = loop {
            if let Ok(db) = AnyPoolOptions::new().max_connections(1).connect(&url).await
                && count(&db, "call_events").await == events.len() as i64
            {
                break db;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: the sink did not store every event"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let _ = stop.send(());
        sink.await.unwrap().unwrap();
        snapshots.push(snapshot(&db).await);
    }
    assert_eq!(snapshots[0].len(), CALLS * 3, "{:?}", &snapshots[0][..3]);
    assert!(
        snapshots[0]
            .iter()
            .take(CALLS)
            .all(|row| row.contains("\"completed\""))
    );
    assert_eq!(snapshots[0], snapshots[1], "the rebuilt database differs");
    // Both databases hold exactly the committed view of the topic they were rebuilt from.
    assert_calls_exactly_once(&broker, topics::CALLS, events.iter().map(|e| e.event_id.clone())).await;
    let stored: Vec<String> = snapshots[0][CALLS..].to_vec();
    let mut sent: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    sent.sort();
    assert_eq!(stored, sent, "call_events rows are the committed events");
}

/// The sink writes a batch as soon as it is caught up, not on `batch_interval`: with a 5 s
/// interval, one domain event at a time reaches the database within a second or two; the
/// event-age histogram on the sink's `/metrics` counts each stored event once, with plausible
/// ages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_event_is_stored_well_before_the_batch_interval_and_its_age_is_measured() {
    const BATCH_INTERVAL: Duration = Duration::from_secs(5);
    const EVENTS: usize = 3;
    let broker = PrivateBroker::start().unwrap();
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let event = |n: usize| CallEvent {
        received_at: now(),
        ..completed_call(&format!("EV-fresh-{n}"), n)
    };
    // The first one (which also creates the topic) waits for the group join too.
    produce_calls(&broker, &[event(0)]).await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("sink.db").display());
    let port = free_port();
    let env = [
        ("SWITCHBOARD_DATABASE_URL", database_url.clone()),
        ("SWITCHBOARD_BATCH_INTERVAL", "5s".to_owned()),
        ("SWITCHBOARD_ADMIN_LISTEN", format!("127.0.0.1:{port}")),
    ];
    let _sink = spawn(&broker, &["sink"], &env, &dir.path().join("sink.log"));
    // Ready once its database is migrated and it polls.
    eventually(Duration::from_secs(60), || async {
        let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let db = open(&database_url).await;
    let stored = async |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&db, "call_events").await < n as i64 {
            assert!(Instant::now() < deadline, "event {n} not stored");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    stored(1).await;
    let mut stored_after = Vec::new();
    for n in 1..EVENTS {
        let sent = Instant::now();
        produce_calls(&broker, &[event(n)]).await;
        stored(n + 1).await;
        stored_after.push(sent.elapsed());
    }
    println!("stored after {stored_after:?} (batch interval {BATCH_INTERVAL:?})");
    for elapsed in &stored_after {
        assert!(
            *elapsed < BATCH_INTERVAL / 2,
            "a lone event waited for the batch interval: {stored_after:?}"
        );
    }

    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let name = "switchboard_sink_event_age_seconds";
    assert_eq!(
        metric(&text, &format!("{name}_count"), &[]),
        EVENTS as f64,
        "one age per stored event\n{text}"
    );
    assert!(metric(&text, &format!("{name}_sum"), &[]) > 0.0, "{text}");
    assert_eq!(
        metric(&text, &format!("{name}_bucket"), &[("le", "60")]),
        EVENTS as f64
    );
    assert!(
        metric(&text, &format!("{name}_bucket"), &[("le", "2")]) >= (EVENTS - 1) as f64,
        "{text}"
    );
}

/// A sink started before the processor has created the domain topics (both start together on a
/// fresh cluster) stores their events once they exist, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_started_before_its_topics_exist_stores_their_events_once_created() {
    let broker = PrivateBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sink.db").display());
    let (stop, sink) = start_sink(&broker, &switchboard_tests::registry_url(), &url).await;
    // Long enough to have joined the group with nothing to assign (a join takes about half the
    // 6 s session timeout on the dev broker).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let created = Instant::now();
    produce_calls(&broker, &[completed_call("EV-late-topic", 1)]).await;
    let db = open(&url).await;
    // Well below librdkafka's periodic metadata refresh (5 minutes).
    let deadline = created + Duration::from_secs(90);
    while count(&db, "call_events").await < 1 {
        assert!(
            Instant::now() < deadline,
            "the sink never read the topic created after it started"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("stored {:?} after the topic was created", created.elapsed());
    let _ = stop.send(());
    sink.await.unwrap().unwrap();
}

/// Produces domain `events` to their topics as the processor does (Avro, key phone id, headers
/// event-id and source).
async fn produce_domain_events(broker: &PrivateBroker, events: &[DomainEvent]) {
    let producer = RawProducer::new(broker);
    let codec = Codec::new(&switchboard_tests::registry_url()).unwrap();
    for event in events {
        let (topic, schema) = (event.topic(), event.schema_def());
        let (payload, source) = match event {
            DomainEvent::Call(e) => (codec.encode(topic, schema, e).await, "twilio"),
            DomainEvent::Message(e) => (codec.encode(topic, schema, e).await, "twilio"),
            DomainEvent::Billing(e) => (codec.encode(topic, schema, e).await, "stripe"),
            DomainEvent::Booking(e) => (codec.encode(topic, schema, e).await, "calendly"),
            DomainEvent::Generic(e) => (codec.encode(topic, schema, e).await, "generic"),
        };
        producer
            .send_bytes(topic, event.key(), &payload.unwrap(), event.event_id(), source)
            .await;
    }
}

/// The event search and a call's events through the sink's own HTTP server, with an API token:
/// events of all four kinds on two phones, produced to the domain topics and stored by the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_search_and_a_calls_events_are_served_over_http() {
    const TOKEN: &str = "it-api-token";
    const P1: &str = "+15554100001";
    const P2: &str = "+15554100002";
    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;
    let call = |event_id: &str, phone: &str, sid: &str, status: &str, at: i64, received_at: i64| {
        DomainEvent::Call(CallEvent {
            call_status: Some(status.into()),
            received_at,
            ..CallEvent::new(event_id, phone, sid, CallKind::Status, at)
        })
    };
    let message = |event_id: &str, phone: &str, sid: &str, status: &str, at: i64| {
        DomainEvent::Message(MessageEvent {
            event_id: event_id.into(),
            phone_id: phone.into(),
            message_sid: sid.into(),
            message_status: status.into(),
            error_code: None,
            from: None,
            to: None,
            account_sid: None,
            received_at: at,
        })
    };
    let events = vec![
        call("ev-ca1-ringing", P1, "CA1", "ringing", T0, T0 + 100),
        call("ev-ca1-done", P1, "CA1", "completed", T0 + 60_000, T0 + 60_100),
        // Delivered last, happened second.
        call(
            "ev-ca1-progress",
            P1,
            "CA1",
            "in-progress",
            T0 + 1_000,
            T0 + 90_000,
        ),
        call("ev-ca2-ringing", P2, "CA2", "ringing", T0 + 5_000, T0 + 5_100),
        message("ev-sm1", P1, "SM1", "delivered", T0 + 2_000),
        message("ev-sm2", P2, "SM2", "failed", T0 + 3_000),
        DomainEvent::Billing(BillingEvent {
            event_id: "evt_it_1".into(),
            phone_id: P1.into(),
            event_type: "invoice.paid".into(),
            object_id: "in_it_1".into(),
            customer: None,
            amount: Some(4_900),
            currency: Some("usd".into()),
            status: Some("paid".into()),
            created: Some(T0 + 9_000),
            livemode: Some(false),
            received_at: T0 + 10_000,
        }),
        DomainEvent::Booking(BookingEvent {
            event_id: "invitee.created:https://api.calendly.com/invitees/it".into(),
            phone_id: P2.into(),
            event_type: "invitee.created".into(),
            invitee_uri: "https://api.calendly.com/invitees/it".into(),
            invitee_name: None,
            invitee_email: None,
            event_start: None,
            event_end: None,
            cancel_reason: None,
            canceled: false,
            received_at: T0 + 20_000,
        }),
    ];
    let broker = PrivateBroker::start().unwrap();
    produce_domain_events(&broker, &events).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sink.db").display());
    let (stop, sink, address) =
        start_sink_with(&broker, &switchboard_tests::registry_url(), &url, Some(TOKEN)).await;
    let client = reqwest::Client::new();
    let get = async |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("http://{address}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, body)
    };
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["events"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|event| event["event_id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Stored once every event is listed.
    let all = eventually(Duration::from_secs(90), || async {
        let client = reqwest::Client::new();
        let response = client
            .get(format!("http://{address}/events?limit=200"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        (body["events"].as_array()?.len() == events.len()).then_some(body)
    })
    .await;
    assert_eq!(
        ids(&all),
        [
            "ev-ca1-progress",
            "ev-ca1-done",
            "invitee.created:https://api.calendly.com/invitees/it",
            "evt_it_1",
            "ev-ca2-ringing",
            "ev-sm2",
            "ev-sm1",
            "ev-ca1-ringing",
        ]
    );
    assert_eq!(
        all["events"][3],
        serde_json::json!({
            "event_id": "evt_it_1",
            "source": "stripe",
            "subject_kind": "payment",
            "kind": "invoice.paid",
            "phone_id": P1,
            "subject": "in_it_1",
            "status": "paid",
            "occurred_at": "2026-01-01T00:00:09.000Z",
            "received_at": "2026-01-01T00:00:10.000Z",
        })
    );

    // Filters.
    let (status, p1) = get("/events?phone_id=%2B15554100001", Some(TOKEN)).await;
    assert_eq!(status, 200, "{p1}");
    assert_eq!(
        ids(&p1),
        [
            "ev-ca1-progress",
            "ev-ca1-done",
            "evt_it_1",
            "ev-sm1",
            "ev-ca1-ringing"
        ]
    );
    let (_, twilio_p2) = get("/events?phone_id=%2B15554100002&source=twilio", Some(TOKEN)).await;
    assert_eq!(ids(&twilio_p2), ["ev-ca2-ringing", "ev-sm2"]);
    assert_eq!(twilio_p2["events"][1]["subject_kind"], "message");
    assert_eq!(twilio_p2["events"][1]["occurred_at"], serde_json::Value::Null);
    let (_, calendly) = get("/events?source=calendly", Some(TOKEN)).await;
    assert_eq!(
        calendly["events"][0]["subject"],
        "https://api.calendly.com/invitees/it"
    );
    assert_eq!(calendly["events"][0]["status"], serde_json::Value::Null);
    let (_, window) = get(
        "/events?since=2026-01-01T00:00:03Z&until=2026-01-01T00:00:10Z",
        Some(TOKEN),
    )
    .await;
    assert_eq!(ids(&window), ["ev-ca2-ringing", "ev-sm2"]);
    let (_, by_call) = get("/events?call_sid=CA1&until=2026-01-01T00:01:00.101Z", Some(TOKEN)).await;
    assert_eq!(ids(&by_call), ["ev-ca1-done", "ev-ca1-ringing"]);
    let (_, by_id) = get("/events?event_id=ev-sm2", Some(TOKEN)).await;
    assert_eq!(ids(&by_id), ["ev-sm2"]);

    // Paging: every event exactly once.
    let mut seen = Vec::new();
    let mut path = "/events?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = get(&path, Some(TOKEN)).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/events?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!((pages, seen), (3, ids(&all)));

    // 400s.
    for (query, reason) in [
        ("source=generic", "source must be twilio, stripe or calendly"),
        ("source=voice", "source must be twilio, stripe or calendly"),
        (
            "since=2026-01-01T00:00:10Z&until=2026-01-01T00:00:03Z",
            "since must be earlier than until",
        ),
        (
            "until=soon",
            "until must be an RFC 3339 timestamp, e.g. 2026-01-31T09:00:00Z",
        ),
    ] {
        assert_eq!(
            get(&format!("/events?{query}"), Some(TOKEN)).await,
            (400, serde_json::json!({ "error": reason })),
            "{query}"
        );
    }

    // A call with its events, in the order they happened.
    let (status, history) = get("/calls/CA1/events", Some(TOKEN)).await;
    assert_eq!(status, 200, "{history}");
    let (_, call) = get("/calls/CA1", Some(TOKEN)).await;
    assert_eq!(history["call"], call);
    assert_eq!(history["call"]["status"], "completed");
    assert_eq!(
        history["events"],
        serde_json::json!([
            {
                "event_id": "ev-ca1-ringing",
                "kind": "status",
                "status": "ringing",
                "occurred_at": "2026-01-01T00:00:00.000Z",
                "received_at": "2026-01-01T00:00:00.100Z",
            },
            {
                "event_id": "ev-ca1-progress",
                "kind": "status",
                "status": "in-progress",
                "occurred_at": "2026-01-01T00:00:01.000Z",
                "received_at": "2026-01-01T00:01:30.000Z",
            },
            {
                "event_id": "ev-ca1-done",
                "kind": "status",
                "status": "completed",
                "occurred_at": "2026-01-01T00:01:00.000Z",
                "received_at": "2026-01-01T00:01:00.100Z",
            },
        ])
    );
    assert_eq!(
        get("/calls/CA-none/events", Some(TOKEN)).await,
        (404, serde_json::json!({ "error": "call not found" }))
    );

    // The token guards both routes.
    for path in ["/events", "/events?source=stripe", "/calls/CA1/events"] {
        for token in [None, Some("wrong")] {
            assert_eq!(
                get(path, token).await,
                (401, serde_json::json!({ "error": "unauthorized" })),
                "{path} {token:?}"
            );
        }
    }

    let _ = stop.send(());
    sink.await.unwrap().unwrap();
}

/// The running sink deletes the delivery attempts older than `attempts_retention` (its first sweep
/// runs at start) and keeps the newer ones; `/metrics` counts what it deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_deletes_delivery_attempts_older_than_their_retention() {
    let broker = PrivateBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("sink.db").display());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let attempt = |id: &str, attempted_at: i64| ActionAttempt {
        attempt_id: id.to_owned(),
        action: "crm".into(),
        event_id: format!("ev-{id}"),
        event_type: "call.completed".into(),
        attempt: 1,
        outcome: "delivered".into(),
        status_code: Some(200),
        reason: None,
        routed_to: None,
        latency_ms: 12,
        attempted_at,
    };
    let store = switchboard_sink::Store::connect(&database_url).await.unwrap();
    store
        .apply_batch_with_attempts(
            "switchboard-sink",
            &[],
            &[
                attempt("two-hours-old", now - 7_200_000),
                attempt("a-minute-old", now - 60_000),
            ],
            &[],
        )
        .await
        .unwrap();
    store.close().await;

    let port = free_port();
    let env = [
        ("SWITCHBOARD_DATABASE_URL", database_url.clone()),
        ("SWITCHBOARD_ATTEMPTS_RETENTION", "1h".to_owned()),
        ("SWITCHBOARD_ADMIN_LISTEN", format!("127.0.0.1:{port}")),
    ];
    let _sink = spawn(&broker, &["sink"], &env, &dir.path().join("sink.log"));
    let pool = open(&database_url).await;
    let left: Vec<String> = eventually(Duration::from_secs(60), || async {
        let ids: Vec<String> = sqlx::query_scalar("SELECT attempt_id FROM action_attempts")
            .fetch_all(&pool)
            .await
            .ok()?;
        (ids.len() == 1).then_some(ids)
    })
    .await;
    assert_eq!(left, ["a-minute-old"]);
    eventually(Duration::from_secs(30), || async {
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .lines()
            .any(|line| line == "switchboard_sink_attempts_expired_total 1")
            .then_some(())
    })
    .await;
}
