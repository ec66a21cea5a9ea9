//! Publishing envelopes to Kafka. The handlers see only the [`Publisher`] trait, so router tests
//! run against a fake and the Kafka implementation is tested against a real broker.
//!
//! [`KafkaPublisher`] answers only once the broker's delivery report says the record is stored
//! (idempotent producer, `acks=all`), within `publish_timeout`; otherwise the request gets 503 and
//! the provider retries. A record that times out may still have been stored: that is a duplicate,
//! which the processor's dedup absorbs, never a loss.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use switchboard_schemas::{Codec, CodecError, RawWebhook, Source, headers};
use tracing::Instrument as _;

use crate::envelope::Envelope;
use crate::kafka;

/// Why an envelope was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No delivery report within the deadline.
    #[error("kafka did not acknowledge the record within {0:?}")]
    Timeout(Duration),
    /// The broker refused or could not be reached.
    #[error("kafka unavailable")]
    Unavailable(#[source] KafkaError),
    /// The envelope could not be encoded: transient when the schema registry is needed and
    /// unreachable, otherwise a bug, not a condition to retry.
    #[error("envelope could not be encoded")]
    Encode(#[from] CodecError),
    /// The producer or the broker refused the record as too large (`message.max.bytes`, the
    /// topic's `max.message.bytes`): permanent, retrying cannot help.
    #[error("record too large for kafka")]
    TooLarge(#[source] KafkaError),
}

/// Why the publisher cannot publish right now. `Display` holds the internal detail (for logs);
/// [`NotReady::summary`] is what may be shown to a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("schemas not registered: {0}")]
    Registry(String),
    #[error("kafka metadata unreachable: {0}")]
    Kafka(String),
}

impl NotReady {
    /// A fixed text naming what is not ready, without hosts or transport errors.
    pub fn summary(&self) -> &'static str {
        match self {
            NotReady::Registry(_) => "schema registry: schemas not registered",
            NotReady::Kafka(_) => "kafka: brokers unreachable",
        }
    }
}

/// Makes envelopes durable.
pub trait Publisher: Send + Sync + 'static {
    /// Resolves once the envelope is durably stored.
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), PublishError>>;

    /// `Ok` when the publisher can currently publish (broker reachable, schemas registered).
    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>>;

    /// Waits until everything handed over has been delivered or `timeout` passes.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, ()>;
}

/// Publishes to Kafka through one shared idempotent producer.
///
/// An idempotent producer can hit a fatal error (e.g. fenced during the epoch bump that follows a
/// delivery timeout); librdkafka then fails every later record. The publisher replaces such a
/// producer with a fresh one instead of answering 503 until restarted.
pub struct KafkaPublisher {
    producer: RwLock<FutureProducer>,
    make_producer: Box<dyn Fn() -> Result<FutureProducer, KafkaError> + Send + Sync>,
    codec: Arc<Codec>,
    timeout: Duration,
    schemas_registered: AtomicBool,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A publisher whose producers come from `make_producer` (called now, and again whenever the
    /// current producer has failed fatally).
    pub fn new(
        make_producer: impl Fn() -> Result<FutureProducer, KafkaError> + Send + Sync + 'static,
        codec: Arc<Codec>,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: RwLock::new(make_producer()?),
            make_producer: Box::new(make_producer),
            codec,
            timeout,
            schemas_registered: AtomicBool::new(false),
        })
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces `failed` with a new producer if it has hit a fatal error (and no other request
    /// replaced it already).
    fn replace_if_fatal(&self, failed: &FutureProducer, error: Option<&KafkaError>) {
        let (code, reason) = match (
            failed.client().fatal_error(),
            error.and_then(KafkaError::rdkafka_error_code),
        ) {
            (Some(fatal), _) => fatal,
            // Fenced or out of sequence: this producer id is dead even if librdkafka did not raise
            // a fatal error (seen on brokers that answer the epoch bump with a fence).
            (
                None,
                Some(
                    code @ (RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::Fatal),
                ),
            ) => (code, code.to_string()),
            _ => return,
        };
        let mut current = self.producer.write().unwrap_or_else(PoisonError::into_inner);
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return;
        }
        match (self.make_producer)() {
            Ok(fresh) => {
                tracing::warn!(%code, %reason, "Kafka producer failed fatally; replaced it with a new one");
                *current = fresh;
            }
            Err(error) => tracing::error!(%error, "Kafka producer failed fatally and cannot be recreated"),
        }
    }

    /// Registers the `RawWebhook` schema under every raw topic's subject. Until this succeeds the
    /// service is not ready; [`KafkaPublisher::ready`] retries it.
    pub async fn register_schemas(&self) -> Result<(), CodecError> {
        for source in Source::ALL {
            self.codec
                .register(source.raw_topic(), RawWebhook::schema_def())
                .await?;
        }
        self.schemas_registered.store(true, Ordering::Release);
        Ok(())
    }

    async fn send(&self, envelope: &Envelope) -> Result<(), PublishError> {
        let payload = self
            .codec
            .encode(envelope.topic(), RawWebhook::schema_def(), envelope.record())
            .await?;
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: headers::EVENT_ID,
                value: Some(envelope.event_id()),
            })
            .insert(Header {
                key: headers::SOURCE,
                value: Some(envelope.source().as_str()),
            });
        let span = switchboard_service::trace::kafka_send_span(envelope.topic(), Some(envelope.key()));
        let headers = switchboard_service::trace::inject_kafka_from(&span, headers);
        // The record's timestamp is when ingest received the webhook, so that replays and
        // backfills find it by time (`offsets_for_times`).
        let record = FutureRecord::to(envelope.topic())
            .key(envelope.key())
            .payload(&payload)
            .headers(headers)
            .timestamp(envelope.record().received_at);
        // `send` waits for queue space (QueueFull) up to the deadline, then for the delivery report,
        // which librdkafka bounds by `message.timeout.ms` (set to the same deadline).
        let producer = self.producer();
        let delivery = producer.send(record, Timeout::After(self.timeout));
        let outcome = tokio::time::timeout(self.timeout + Duration::from_millis(500), delivery)
            .instrument(span.clone())
            .await;
        match &outcome {
            Ok(Ok(delivery)) => {
                switchboard_service::trace::record_stored(&span, delivery.partition, delivery.offset)
            }
            Ok(Err((error, _))) => {
                switchboard_service::trace::record_error(&span);
                self.replace_if_fatal(&producer, Some(error));
            }
            Err(_elapsed) => {
                switchboard_service::trace::record_error(&span);
                self.replace_if_fatal(&producer, None);
            }
        }
        match outcome {
            Ok(Ok(_delivered)) => Ok(()),
            Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _))) => {
                Err(PublishError::Timeout(self.timeout))
            }
            Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))) => {
                Err(PublishError::Timeout(self.timeout))
            }
            Ok(Err((
                error @ KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize,
                ),
                _,
            ))) => Err(PublishError::TooLarge(error)),
            Ok(Err((error, _))) => Err(PublishError::Unavailable(error)),
            Err(_elapsed) => Err(PublishError::Timeout(self.timeout)),
        }
    }
}

impl Publisher for KafkaPublisher {
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(self.send(envelope))
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        Box::pin(async move {
            if !self.schemas_registered.load(Ordering::Acquire) {
                self.register_schemas()
                    .await
                    .map_err(|e| NotReady::Registry(e.to_string()))?;
            }
            kafka::check_metadata(&self.producer(), Duration::from_secs(2))
                .await
                .map_err(|e| NotReady::Kafka(e.to_string()))
        })
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let producer = self.producer();
            let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
            match flushed {
                Ok(Ok(())) => tracing::info!("producer flushed"),
                Ok(Err(error)) => {
                    tracing::error!(%error, "producer flush incomplete: undelivered records were answered 503")
                }
                Err(error) => tracing::error!(%error, "producer flush task failed"),
            }
        })
    }
}
