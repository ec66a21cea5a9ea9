//! `dlq list|show|redrive` against a processor that dead-lettered real records: filters pick the
//! right rows, a redrive republishes each DLQ record once (the processor dead-letters the copies
//! again, as they are still poison), and a second redrive republishes nothing. Topics are read
//! through their committed view (`switchboard_tests::committed`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use switchboard_processor::config::Config;
use switchboard_processor::dlq::{self, Filter, Position, REDRIVEN_FROM, Selector};
use switchboard_processor::normalize::PoisonClass;
use switchboard_schemas::{Source, topics};
use switchboard_tests::broker::PrivateBroker;
use switchboard_tests::committed;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);

async fn dlq_records(broker: &PrivateBroker, at_least: usize) -> Vec<rdkafka::message::OwnedMessage> {
    eventually(WAIT, || async {
        let records = read_committed(broker, topics::DLQ).await;
        (records.len() >= at_least).then_some(records)
    })
    .await
}

async fn event_ids(config: &Config, filter: Filter) -> Vec<String> {
    dlq::list(config, &filter)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.headers.event_id.unwrap())
        .collect()
}

/// chrono's `clock` feature is off in this workspace.
fn now() -> DateTime<Utc> {
    DateTime::from(std::time::SystemTime::now())
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_show_decodes_and_redrive_republishes_each_record_once() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let config = config(&broker, "dlq-0");
    let started: DateTime<Utc> = now();
    let processor = InProcess::start(config.clone()).await;
    let raw = RawProducer::new(&broker);
    let phone = "+15551110009";

    // Poison: a recording callback without CallSid, an unknown Twilio callback, junk on stripe.
    let mut missing = twilio_call(phone, "CA-M", "ringing", 1, "EV-missing");
    missing.body = b"AccountSid=AC1&RecordingSid=RE1&RecordingStatus=completed".to_vec();
    raw.send(&missing).await;
    let mut unknown = twilio_call(phone, "CA-U", "ringing", 1, "EV-unknown");
    unknown.body = b"AccountSid=AC1&Foo=bar".to_vec();
    raw.send(&unknown).await;
    raw.send_bytes(
        Source::Stripe.raw_topic(),
        phone,
        b"not an avro record",
        "EV-junk",
        "stripe",
    )
    .await;
    raw.send(&twilio_call(phone, "CA-OK", "ringing", 1, "EV-good"))
        .await;

    let first = dlq_records(&broker, 3).await;
    assert_eq!(first.len(), 3, "exactly the three poison records");

    // list: every filter.
    let all = dlq::list(&config, &Filter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(
        all.windows(2)
            .all(|w| w[0].headers.failed_at <= w[1].headers.failed_at),
        "newest last"
    );
    let twilio = Filter {
        source: Some(Source::Twilio),
        ..Filter::default()
    };
    assert_eq!(
        sorted(event_ids(&config, twilio.clone()).await),
        ["EV-missing", "EV-unknown"]
    );
    let missing_field = Filter {
        error_class: Some(PoisonClass::MissingField.as_str()),
        ..Filter::default()
    };
    let rows = dlq::list(&config, &missing_field).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].headers.event_id.as_deref(), Some("EV-missing"));
    assert!(
        rows[0]
            .headers
            .error_reason
            .as_deref()
            .unwrap()
            .contains("CallSid")
    );
    let stripe_undecodable = Filter {
        source: Some(Source::Stripe),
        error_class: Some(PoisonClass::Undecodable.as_str()),
        ..Filter::default()
    };
    assert_eq!(event_ids(&config, stripe_undecodable).await, ["EV-junk"]);
    let since_start = Filter {
        since: Some(started - chrono::Duration::seconds(1)),
        ..Filter::default()
    };
    assert_eq!(
        event_ids(&config, since_start).await.len(),
        3,
        "--since before every failure"
    );
    let since_later = Filter {
        since: Some(now() + chrono::Duration::hours(1)),
        ..Filter::default()
    };
    assert!(
        event_ids(&config, since_later).await.is_empty(),
        "--since after every failure"
    );
    let until_start = Filter {
        until: Some(started - chrono::Duration::seconds(1)),
        ..Filter::default()
    };
    assert!(
        event_ids(&config, until_start).await.is_empty(),
        "--until before every failure"
    );
    let newest = Filter {
        limit: Some(1),
        ..Filter::default()
    };
    let newest = dlq::list(&config, &newest).await.unwrap();
    assert_eq!(newest, all[2..], "--limit keeps the newest");

    // show: by position and by event id.
    let position = rows[0].position;
    let shown = dlq::show(&config, &Selector::Position(position)).await.unwrap();
    assert_eq!(shown.len(), 1);
    let envelope = shown[0].envelope.as_ref().unwrap();
    assert_eq!(envelope.event_id, "EV-missing");
    assert_eq!(envelope.body, missing.body);
    assert!(
        shown[0]
            .to_string()
            .contains(&format!("body ({} bytes, UTF-8):", missing.body.len()))
    );
    let junk = dlq::show(&config, &Selector::EventId("EV-junk".into()))
        .await
        .unwrap();
    assert_eq!(junk.len(), 1);
    assert!(junk[0].envelope.is_err(), "junk is not a RawWebhook");
    assert_eq!(junk[0].value.as_deref(), Some(&b"not an avro record"[..]));
    let nowhere = Position {
        partition: position.partition,
        offset: 1_000_000,
    };
    assert!(dlq::show(&config, &Selector::Position(nowhere)).await.is_err());

    // The CLI: wiring and exit codes.
    let cli = |args: &'static [&'static str]| {
        let config = config.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-processor"))
                .args(args)
                .env_remove("SWITCHBOARD_CONFIG")
                .env("SWITCHBOARD_KAFKA_BOOTSTRAP", &config.kafka_bootstrap)
                .env("SWITCHBOARD_SCHEMA_REGISTRY_URL", &config.schema_registry_url)
                .env("SWITCHBOARD_INSTANCE_ID", "dlq-cli")
                .output()
                .await
                .unwrap()
        }
    };
    let listed = cli(&["dlq", "list", "--source", "twilio"]).await;
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(stdout.starts_with("FAILED AT"), "{stdout}");
    assert!(
        stdout.contains("EV-missing") && stdout.contains("EV-unknown"),
        "{stdout}"
    );
    assert!(!stdout.contains("EV-junk"), "{stdout}");
    assert_eq!(stdout.lines().count(), 3);
    let bad = cli(&["dlq", "list", "--since", "yesterday"]).await;
    assert!(!bad.status.success(), "an invalid --since fails");
    let missing_record = cli(&["dlq", "show", "99/0"]).await;
    assert!(!missing_record.status.success(), "a missing record fails");

    // redrive: a dry run publishes nothing.
    let before_redrive = now();
    let twilio_until = Filter {
        until: Some(before_redrive),
        ..twilio.clone()
    };
    let dry = dlq::redrive(&config, &twilio_until, true).await.unwrap();
    assert_eq!((dry.matched, dry.redriven, dry.already_redriven), (2, 2, 0));
    assert_eq!(dry.skipped_by_filter, 1);
    let raw_twilio = read_committed(&broker, topics::RAW_TWILIO).await;
    assert!(raw_twilio.iter().all(|m| header(m, REDRIVEN_FROM).is_none()));

    // redrive: the two twilio records go back to their raw topic, with their key, value and
    // original headers, and the processor dead-letters them again.
    let summary = dlq::redrive(&config, &twilio_until, false).await.unwrap();
    assert_eq!(
        (
            summary.matched,
            summary.redriven,
            summary.already_redriven,
            summary.skipped_by_filter
        ),
        (2, 2, 0, 1),
        "{summary}"
    );
    let redriven: Vec<_> = read_committed(&broker, topics::RAW_TWILIO)
        .await
        .into_iter()
        .filter(|m| header(m, REDRIVEN_FROM).is_some())
        .collect();
    assert_eq!(redriven.len(), 2);
    for copy in &redriven {
        let from = header(copy, REDRIVEN_FROM).unwrap();
        let original = first
            .iter()
            .find(|m| format!("{}/{}/{}", topics::DLQ, m.partition(), m.offset()) == from)
            .unwrap_or_else(|| panic!("{from} names a DLQ record"));
        assert_eq!(copy.key(), original.key());
        assert_eq!(copy.payload(), original.payload());
        assert_eq!(header(copy, "event-id"), header(original, "event-id"));
        assert_eq!(header(copy, "source").as_deref(), Some("twilio"));
        for dropped in ["error-class", "error-reason", "failed-at", "original-topic"] {
            assert!(header(copy, dropped).is_none(), "{dropped} is dropped");
        }
    }
    let marks = read_committed(&broker, topics::DLQ_REDRIVEN).await;
    let mut marked: Vec<String> = marks
        .iter()
        .map(|m| String::from_utf8(m.key().unwrap().to_vec()).unwrap())
        .collect();
    marked.sort();
    let mut expected: Vec<String> = redriven
        .iter()
        .map(|m| {
            header(m, REDRIVEN_FROM)
                .unwrap()
                .trim_start_matches(&format!("{}/", topics::DLQ))
                .to_owned()
        })
        .collect();
    expected.sort();
    assert_eq!(marked, expected, "each redriven position is marked");

    let again = dlq_records(&broker, 5).await;
    assert_eq!(again.len(), 5, "the still-poison copies are dead-lettered again");
    // Each DLQ record exactly once in the committed view: the three originals and the two copies,
    // each named by its event id and the position it was redriven from.
    let identity = |event_id: Option<String>, from: Option<String>| {
        format!("{} {}", event_id.unwrap_or_default(), from.unwrap_or_default())
    };
    let expected: Vec<String> = first
        .iter()
        .map(|m| identity(header(m, "event-id"), None))
        .chain(
            redriven
                .iter()
                .map(|m| identity(header(m, "event-id"), header(m, REDRIVEN_FROM))),
        )
        .collect();
    let (_, report) = committed::assert_exactly_once(&broker.bootstrap(), topics::DLQ, expected, async |r| {
        Ok(identity(r.header("event-id"), r.header(REDRIVEN_FROM)))
    })
    .await;
    println!("DLQ after the redrive: {report}");
    assert_eq!(
        again
            .iter()
            .filter(|m| header(m, REDRIVEN_FROM).is_some())
            .count(),
        2,
        "the new DLQ records say where they were redriven from"
    );

    // A second redrive with the same filters republishes nothing.
    let second = dlq::redrive(&config, &twilio_until, false).await.unwrap();
    assert_eq!(
        (second.matched, second.redriven, second.already_redriven),
        (2, 0, 2),
        "{second}"
    );
    assert!(second.to_string().contains("already redriven 2"));
    let raw_after = read_committed(&broker, topics::RAW_TWILIO).await;
    assert_eq!(
        raw_after
            .iter()
            .filter(|m| header(m, REDRIVEN_FROM).is_some())
            .count(),
        2,
        "nothing republished the second time"
    );
    processor.stop().await;
}
