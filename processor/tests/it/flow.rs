//! Raw webhooks become the right domain events; duplicates stay single across a restart; poison
//! goes to the DLQ and the partition moves on.

use std::time::Duration;

use rdkafka::Message;
use switchboard_schemas::domain::{CallEvent, CallState};
use switchboard_schemas::headers;
use switchboard_schemas::topics;
use switchboard_tests::broker::PrivateBroker;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

async fn call_events(broker: &PrivateBroker) -> Vec<CallEvent> {
    read_decoded::<CallEvent>(broker, topics::CALLS, "read_committed", CallEvent::schema_def())
        .await
        .into_iter()
        .map(|(event, _)| event)
        .collect()
}

async fn wait_for_events(broker: &PrivateBroker, event_ids: &[&str]) -> Vec<CallEvent> {
    eventually(WAIT, || async {
        let events = call_events(broker).await;
        event_ids
            .iter()
            .all(|id| events.iter().any(|e| e.event_id == *id))
            .then_some(events)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_callbacks_become_call_events_and_a_late_ringing_never_overwrites_completed() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let processor = InProcess::start(config(&broker, "flow-0")).await;
    let raw = RawProducer::new(&broker);
    let phone = "+15551110001";
    for (status, sequence, id) in [
        ("ringing", 1, "EV-ring"),
        ("completed", 3, "EV-done"),
        ("in-progress", 2, "EV-late"),
    ] {
        raw.send(&twilio_call(phone, "CA-FLOW-1", status, sequence, id))
            .await;
    }

    let events = wait_for_events(&broker, &["EV-ring", "EV-done", "EV-late"]).await;
    assert_eq!(events.len(), 3, "one domain event per provider event");
    let done = events.iter().find(|e| e.event_id == "EV-done").unwrap();
    assert_eq!(
        (done.call_sid.as_str(), done.phone_id.as_str(), done.kind.as_str()),
        ("CA-FLOW-1", phone, "status")
    );
    assert_eq!(done.call_status.as_deref(), Some("completed"));
    assert_eq!(done.call_duration, Some(120));

    let states = read_decoded::<CallState>(
        &broker,
        topics::CALL_STATE,
        "read_committed",
        CallState::schema_def(),
    )
    .await;
    let (latest, record) = states.last().expect("call state written");
    assert_eq!(latest.call_sid, "CA-FLOW-1");
    assert_eq!(record.key(), Some("CA-FLOW-1".as_bytes()));
    assert_eq!(
        latest.status, "completed",
        "the late in-progress must not overwrite completed"
    );
    assert_eq!(latest.duration_seconds, Some(120));
    processor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_yields_one_domain_event_also_across_a_restart() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let raw = RawProducer::new(&broker);
    let phone = "+15551110002";
    let first = InProcess::start(config(&broker, "dedup-0")).await;
    raw.send(&twilio_call(phone, "CA-DUP", "completed", 5, "EV-dup"))
        .await;
    raw.send(&twilio_call(phone, "CA-DUP", "completed", 5, "EV-dup"))
        .await;
    raw.send(&twilio_call(phone, "CA-MARK1", "ringing", 1, "EV-mark1"))
        .await;
    wait_for_events(&broker, &["EV-dup", "EV-mark1"]).await;
    first.stop().await;

    // A new instance restores the dedup state from the changelog.
    let second = InProcess::start(config(&broker, "dedup-0")).await;
    raw.send(&twilio_call(phone, "CA-DUP", "completed", 5, "EV-dup"))
        .await;
    raw.send(&twilio_call(phone, "CA-MARK2", "ringing", 1, "EV-mark2"))
        .await;
    let events = wait_for_events(&broker, &["EV-mark2"]).await;
    assert_eq!(
        events.iter().filter(|e| e.event_id == "EV-dup").count(),
        1,
        "{events:?}"
    );

    let metrics = reqwest::get(format!("http://{}/metrics", second.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_processor_duplicates_skipped_total{source=\"twilio\"}")),
        "{metrics}"
    );
    let ready = reqwest::get(format!("http://{}/readyz", second.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dlq_with_its_reasons_and_later_records_still_flow() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let processor = InProcess::start(config(&broker, "poison-0")).await;
    let raw = RawProducer::new(&broker);
    let phone = "+15551110003";
    let twilio = switchboard_schemas::Source::Twilio.raw_topic();
    raw.send_bytes(twilio, phone, b"not an avro record", "EV-junk", "twilio")
        .await;
    let mut unknown = twilio_call(phone, "CA-X", "ringing", 1, "EV-unknown");
    unknown.body = b"AccountSid=AC1&Foo=bar".to_vec();
    raw.send(&unknown).await;
    raw.send(&twilio_call(phone, "CA-OK", "ringing", 1, "EV-after"))
        .await;

    wait_for_events(&broker, &["EV-after"]).await;
    let dlq = eventually(WAIT, || async {
        let records = read_raw(&broker, topics::DLQ).await;
        (records.len() >= 2).then_some(records)
    })
    .await;
    assert_eq!(dlq.len(), 2, "exactly the two poison records");
    let classes: Vec<_> = dlq
        .iter()
        .map(|m| header(m, headers::ERROR_CLASS).unwrap())
        .collect();
    assert_eq!(classes, ["undecodable", "unknown_kind"]);
    let junk = &dlq[0];
    assert_eq!(
        junk.payload(),
        Some(&b"not an avro record"[..]),
        "the original value, unchanged"
    );
    assert_eq!(junk.key(), Some(phone.as_bytes()));
    assert_eq!(
        header(junk, "event-id").as_deref(),
        Some("EV-junk"),
        "original headers kept"
    );
    assert_eq!(header(junk, headers::ORIGIN_TOPIC).as_deref(), Some(twilio));
    assert!(header(junk, headers::ORIGIN_PARTITION).is_some());
    assert!(header(junk, headers::ORIGIN_OFFSET).is_some());
    assert!(header(junk, headers::FAILED_AT).is_some());
    assert!(!header(junk, headers::ERROR_REASON).unwrap().is_empty());
    processor.stop().await;
}
