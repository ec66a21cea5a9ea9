//! `switchboard-load preload-state`: fills the processor's state changelogs with remembered
//! events, as if the processor had processed them, for the state-store benchmark
//! (`scripts/bench-state`): dedup entries (`twilio:<id>` -> first-seen time) and one call state
//! for every `calls_every` events, each with the origin headers of a committed raw record (raw
//! offset `origin_offset` of the same partition number), so that a restore counts them.
//!
//! Writing millions of events through ingest and the processor would take longer than the
//! benchmark, and measure something else; what the processor holds afterwards is the same.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use switchboard_kafka::txn::now_millis;
use switchboard_schemas::domain::CallState;
use switchboard_schemas::{Codec, Source, headers, topics};

/// What to preload.
#[derive(Debug, Clone)]
pub struct Preload {
    pub bootstrap: String,
    pub registry: String,
    /// Events to remember.
    pub events: u64,
    /// Partitions of the changelogs (and raw topics).
    pub partitions: i32,
    /// One call state every this many events (a call has about five status callbacks).
    pub calls_every: u64,
    /// The raw offset the entries claim to come from: below every partition's committed offset.
    pub origin_offset: i64,
    /// Distinguishes the ids of one preload from another's.
    pub seed: u64,
}

/// Produces the entries; returns how long it took.
pub async fn run(preload: &Preload) -> anyhow::Result<Duration> {
    let codec = Codec::new(&preload.registry)?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &preload.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let started = Instant::now();
    let seen_at = now_millis().to_string();
    let origin_offset = preload.origin_offset.to_string();
    let twilio = Source::Twilio.raw_topic();
    let partitions: Vec<String> = (0..preload.partitions).map(|p| p.to_string()).collect();
    for i in 0..preload.events {
        let partition = (i % preload.partitions as u64) as i32;
        let origin = || {
            OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: headers::ORIGIN_TOPIC,
                    value: Some(twilio),
                })
                .insert(Header {
                    key: headers::ORIGIN_PARTITION,
                    value: Some(partitions[partition as usize].as_str()),
                })
                .insert(Header {
                    key: headers::ORIGIN_OFFSET,
                    value: Some(origin_offset.as_str()),
                })
        };
        let key = format!("twilio:EVpreload{:08x}{i:024x}", preload.seed);
        send(
            &producer,
            BaseRecord::to(topics::DEDUP_CHANGELOG)
                .partition(partition)
                .key(key.as_str())
                .payload(seen_at.as_str())
                .headers(origin()),
        )?;
        if i % preload.calls_every == 0 {
            let call: CallState = serde_json::from_value(serde_json::json!({
                "call_sid": format!("CApreload{:08x}{i:023x}", preload.seed),
                "phone_id": format!("+1555{:07}", i % 10_000_000),
                "status": "completed",
                "from": "+15005550006",
                "direction": "inbound",
                "duration_seconds": 120,
                "sequence_number": 4,
                "last_event_id": key,
                "updated_at": now_millis(),
            }))?;
            let payload = codec
                .encode(topics::CALL_STATE, CallState::schema_def(), &call)
                .await?;
            send(
                &producer,
                BaseRecord::to(topics::CALL_STATE)
                    .partition(partition)
                    .key(call.call_sid.as_str())
                    .payload(&payload)
                    .headers(origin()),
            )?;
        }
        if i > 0 && i % 500_000 == 0 {
            eprintln!("preloaded {i} events in {:.1?}", started.elapsed());
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(started.elapsed())
}

/// Sends, waiting for queue space.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, str, impl rdkafka::message::ToBytes + ?Sized>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}
