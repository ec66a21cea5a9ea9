//! A failure to encode one of the processor's own outputs after the domain event is in the
//! transaction (here: the registry refuses the call-state schema) aborts the transaction; it never
//! dead-letters the raw record next to the event already written (a redrive of that record would
//! emit the event a second time).

use chrono::{DateTime, Utc};
use switchboard_processor::replay::ReplayArgs;
use switchboard_schemas::{Codec, Source};
use switchboard_tests::broker::PrivateBroker;

use crate::harness::*;

const PREFIX: &str = "encode";

/// Registers, under the backfill's call-state subject, a schema the processor's call state is
/// not backward compatible with: the registry answers 409 to the processor's registration.
async fn block_call_state_subject() {
    let subject = format!("{PREFIX}.switchboard.call-state-value");
    let schema = r#"{"type":"record","name":"Blocker","fields":[{"name":"unrelated","type":"string"}]}"#;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/subjects/{subject}/versions",
            switchboard_tests::registry_url().trim_end_matches('/')
        ))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

fn at(time: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(time).unwrap().with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_output_that_does_not_encode_aborts_and_is_never_dead_lettered() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    RawProducer::new(&broker)
        .send(&twilio_call(
            "+15550199",
            "CA-encode-1",
            "completed",
            4,
            "EV-encode-1",
        ))
        .await;
    block_call_state_subject().await;

    let config = config(&broker, "encode");
    let codec = std::sync::Arc::new(Codec::new(&switchboard_tests::registry_url()).unwrap());
    let runtime = tokio::runtime::Handle::current();
    let args = ReplayArgs {
        from: at("2025-01-14T18:00:00Z"),
        to: Some(at("2025-01-14T19:00:00Z")),
        sources: vec![Source::Twilio],
        phone_id: None,
        into: Some(PREFIX.to_owned()),
        dry_run: false,
    };
    let result = tokio::task::spawn_blocking(move || {
        switchboard_processor::replay::run(&config, &args, codec, runtime)
    })
    .await
    .unwrap();

    // The bounded command stops on the aborted transaction (run again to resume); the live loop
    // retries it with a backoff.
    let error = result.expect_err("the record must not be processed while its call state cannot be encoded");
    assert!(format!("{error:#}").contains("call-state"), "{error:#}");
    let dead_lettered = read_raw(&broker, &format!("{PREFIX}.switchboard.dlq")).await;
    assert!(
        dead_lettered.is_empty(),
        "{} record(s) dead-lettered next to a domain event already written",
        dead_lettered.len()
    );
}
