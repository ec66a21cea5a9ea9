//! A schema registry that answers 404, 500 and 429 for a while (a follower behind its leader, an
//! outage, rate limiting) to services whose schema caches are cold: the sink stores every record
//! it read meanwhile, the processor dead-letters none of them, and restoring state finishes once
//! the registry answers again. (Issue 12: the sink skipped 336 of 400 records for good, the
//! processor dead-lettered the stream and its restore retried a cached 500 forever.)

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use switchboard_schemas::domain::CallEvent;
use switchboard_schemas::topics;
use switchboard_sink::SinkConfig;
use switchboard_tests::broker::PrivateBroker;
use switchboard_tests::registry_proxy::{Mode, RegistryProxy};

use crate::harness::*;

/// The flap: each failure in turn, this long each, for this long in all.
const FLAP: Duration = Duration::from_secs(9);
const STEP: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(90);

async fn proxy() -> RegistryProxy {
    RegistryProxy::start(&switchboard_tests::registry_url())
        .await
        .unwrap()
}

/// Waits until the services behind `proxy` have asked for a schema and been refused, so that the
/// flap starts with their caches cold and records in hand.
async fn refused_once(proxy: &RegistryProxy) {
    eventually(WAIT, || async { (proxy.failed() > 0).then_some(()) }).await;
}

async fn count(db: &AnyPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(db)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_with_a_cold_cache_stores_every_record_read_during_a_registry_flap() {
    const EVENTS: usize = 40;
    let broker = PrivateBroker::start().unwrap();
    let events: Vec<CallEvent> = (0..EVENTS)
        .map(|n| completed_call(&format!("EV-flap-{n}"), n))
        .collect();
    produce_calls(&broker, &events).await;

    let proxy = proxy().await;
    proxy.set(Mode::ServerError);
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("sink.db").display());
    let config = SinkConfig {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: proxy.url().to_owned(),
        database_url: database_url.clone(),
        session_timeout: Duration::from_secs(6),
        ..SinkConfig::default()
    }
    .validate()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sink = tokio::spawn(switchboard_sink::run(config, listener, async {
        let _ = stopped.await;
    }));

    refused_once(&proxy).await;
    proxy.flap(FLAP, STEP).await;
    assert!(!sink.is_finished(), "the sink exited during the flap");
    let failed = proxy.failed();

    sqlx::any::install_default_drivers();
    let db = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&database_url)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while count(&db, "call_events").await < EVENTS as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = stop.send(());
    sink.await.unwrap().unwrap();
    let ids: HashSet<String> = sqlx::query_scalar("SELECT event_id FROM call_events")
        .fetch_all(&db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected: HashSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, expected, "every record stored, none skipped");
    println!("sink: {failed} registry requests refused during the flap; {EVENTS} of {EVENTS} stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_restarted_into_a_registry_flap_restores_and_dead_letters_nothing() {
    const CALLS: usize = 10;
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let raw = RawProducer::new(&broker);
    let phone = |call: usize| format!("+1555600{:04}", call % 4);
    let sid = |call: usize| format!("CA-FLAP-{call:04}");

    // First life, healthy registry: every call rings, which fills the call-state and dedup
    // changelogs that the next life must restore.
    let first = InProcess::start(config(&broker, "flap-0")).await;
    for call in 0..CALLS {
        raw.send(&twilio_call(
            &phone(call),
            &sid(call),
            "ringing",
            1,
            &format!("EV-{call}-ringing"),
        ))
        .await;
    }
    let ringing: Vec<String> = (0..CALLS).map(|call| format!("EV-{call}-ringing")).collect();
    wait_for_ids(&broker, &ringing).await;
    first.stop().await;

    // Second life, cold cache, through a registry that fails: restore reads call-state (Avro)
    // records, processing reads raw ones and writes domain ones.
    let proxy = proxy().await;
    proxy.set(Mode::NotFound);
    for call in 0..CALLS {
        raw.send(&twilio_call(
            &phone(call),
            &sid(call),
            "completed",
            3,
            &format!("EV-{call}-completed"),
        ))
        .await;
    }
    let mut second_config = config(&broker, "flap-0");
    second_config.schema_registry_url = proxy.url().to_owned();
    let second = InProcess::start(second_config).await;
    refused_once(&proxy).await;
    proxy.flap(FLAP, STEP).await;
    let failed = proxy.failed();

    let completed: Vec<String> = (0..CALLS).map(|call| format!("EV-{call}-completed")).collect();
    wait_for_ids(&broker, &completed).await;
    let dead_lettered = read_raw(&broker, topics::DLQ).await;
    assert!(
        dead_lettered.is_empty(),
        "dead-lettered during a registry flap: {:?}",
        dead_lettered
            .iter()
            .map(|m| header(m, "event-id"))
            .collect::<Vec<_>>()
    );
    println!("processor: {failed} registry requests refused during the flap; nothing dead-lettered");
    second.stop().await;
}

/// Waits until every one of `ids` is in `switchboard.calls`.
async fn wait_for_ids(broker: &PrivateBroker, ids: &[String]) {
    eventually(WAIT, || async {
        let present: HashSet<String> =
            read_decoded::<CallEvent>(broker, topics::CALLS, "read_committed", CallEvent::schema_def())
                .await
                .into_iter()
                .map(|(event, _)| event.event_id)
                .collect();
        ids.iter().all(|id| present.contains(id)).then_some(())
    })
    .await;
}

/// The other side of the line: a domain record whose bytes are not a record (not a registry
/// failure) is not skipped either. The sink stores what came before it, stops before it with an
/// error naming it, and stores no offset past it, so a restarted sink stops there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_stops_before_an_undecodable_domain_record_instead_of_skipping_it() {
    let broker = PrivateBroker::start().unwrap();
    let before: Vec<CallEvent> = (0..3)
        .map(|n| completed_call(&format!("EV-before-{n}"), n))
        .collect();
    let after: Vec<CallEvent> = (3..5)
        .map(|n| completed_call(&format!("EV-after-{n}"), n))
        .collect();
    produce_calls(&broker, &before).await;
    // Same key as the events: the same partition, after them.
    RawProducer::new(&broker)
        .send_bytes(
            topics::CALLS,
            &before[0].phone_id,
            b"not an avro record",
            "EV-junk",
            "twilio",
        )
        .await;
    produce_calls(&broker, &after).await;

    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("sink.db").display());
    for life in 0..2 {
        let config = SinkConfig {
            kafka_bootstrap: broker.bootstrap(),
            schema_registry_url: switchboard_tests::registry_url(),
            database_url: database_url.clone(),
            session_timeout: Duration::from_secs(6),
            ..SinkConfig::default()
        }
        .validate()
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut sink = tokio::spawn(switchboard_sink::run(config, listener, async {
            let _ = stopped.await;
        }));
        let ended = tokio::time::timeout(WAIT, &mut sink).await;
        if ended.is_err() {
            // Stop it (its loop runs on a blocking thread) before failing.
            let _ = stop.send(());
            let _ = sink.await;
            panic!("life {life}: the sink neither stopped nor skipped");
        }
        let error = ended
            .unwrap()
            .unwrap()
            .expect_err("the sink must stop at the undecodable record");
        assert!(
            format!("{error:#}").contains("undecodable domain record switchboard.calls["),
            "life {life}: {error:#}"
        );
        sqlx::any::install_default_drivers();
        let db = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&database_url)
            .await
            .unwrap();
        let ids: HashSet<String> = sqlx::query_scalar("SELECT event_id FROM call_events")
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let expected: HashSet<String> = before.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids, expected, "life {life}: what came before, nothing after");
        let next: Vec<i64> = sqlx::query_scalar("SELECT next_offset FROM sink_offsets")
            .fetch_all(&db)
            .await
            .unwrap();
        assert_eq!(
            next,
            [3],
            "life {life}: the stored offset is the undecodable record's"
        );
        db.close().await;
    }
}
