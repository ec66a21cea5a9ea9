//! A raw Fetch client: every record batch of one partition, exactly as the broker stores it,
//! control batches (COMMIT/ABORT markers) included. [`crate::committed`] computes the committed
//! view from what this returns.
//!
//! Fetch v4 over a plain TCP connection to the partition's leader (found through rdkafka's
//! metadata), `read_uncommitted`, so that data of open and aborted transactions is returned too;
//! batches are decoded with the `kafka-protocol` crate (CRC checked; none, gzip, snappy and lz4
//! compression). Blocking: call it from a test thread or `spawn_blocking`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{Record, RecordBatchDecoder};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The Fetch version spoken: the oldest one Apache Kafka 4 still serves, and the simplest (no
/// sessions, no topic ids, no flexible encoding).
const FETCH_VERSION: i16 = 4;
const READ_UNCOMMITTED: i8 = 0;
/// How long the broker may hold a fetch that finds nothing new.
const MAX_WAIT: Duration = Duration::from_millis(200);
/// How long reading one partition to its end may take.
const DEADLINE: Duration = Duration::from_secs(120);
const TIMEOUT: Duration = Duration::from_secs(30);

/// Offset and size fields of the record batch v2 header (KIP-98), read before decoding so that
/// a batch cut off at the end of a fetch response is recognised, and so that the offset after
/// a batch is known even when it holds no records (after compaction).
const BATCH_OVERHEAD: usize = 8 + 4; // base offset, batch length
const LAST_OFFSET_DELTA_AT: usize = 8 + 4 + 4 + 1 + 4 + 2; // .., leader epoch, magic, crc, attributes

/// Kafka error codes a fetch is retried on (the partition is moving or not there yet).
const RETRIABLE: [i16; 4] = [3, 5, 6, 74]; // unknown topic/partition, leader not available, not leader, fenced leader epoch

/// One record batch as stored, with the fields the transaction rule needs.
#[derive(Debug, Clone)]
pub struct RawBatch {
    pub base_offset: i64,
    /// The offset after this batch (`base offset + last offset delta + 1`).
    pub next_offset: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Attribute bit 4: written inside a transaction.
    pub transactional: bool,
    /// Attribute bit 5: a control batch (a COMMIT or ABORT marker).
    pub control: bool,
    pub records: Vec<Record>,
}

/// Where one partition is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSource {
    pub partition: i32,
    /// `host:port` of its leader.
    pub leader: String,
    /// Its first offset (retention may have removed the ones before).
    pub log_start: i64,
}

/// The partitions of `topic`, in partition order, with each one's leader and first offset. A topic
/// that is still being created (unknown, or without a leader yet: the services create their
/// topics as they start) is asked for again for up to [`TIMEOUT`].
pub fn partitions(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<PartitionSource>> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match partitions_once(&consumer, topic) {
            Err(error) if Instant::now() < deadline && error.downcast_ref::<NotReady>().is_some() => {
                std::thread::sleep(MAX_WAIT);
            }
            result => return result,
        }
    }
}

/// A topic that has no metadata or no leader yet.
#[derive(Debug)]
struct NotReady(String);

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotReady {}

fn partitions_once(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<PartitionSource>> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let brokers: Vec<(i32, String)> = metadata
        .brokers()
        .iter()
        .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
        .collect();
    let topic_metadata = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| NotReady(format!("no metadata for {topic}")))?;
    if let Some(error) = topic_metadata.error() {
        if RETRIABLE.contains(&(error as i16)) {
            return Err(NotReady(format!("metadata of {topic}: {error:?}")).into());
        }
        bail!("metadata of {topic}: {error:?}");
    }
    let mut sources = topic_metadata
        .partitions()
        .iter()
        .map(|p| {
            let leader = brokers
                .iter()
                .find(|(id, _)| *id == p.leader())
                .map(|(_, address)| address.clone())
                .ok_or_else(|| {
                    NotReady(format!(
                        "{topic}[{}] has no known leader ({})",
                        p.id(),
                        p.leader()
                    ))
                })?;
            let (low, _high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
            Ok(PartitionSource {
                partition: p.id(),
                leader,
                log_start: low.max(0),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    sources.sort_by_key(|s| s.partition);
    Ok(sources)
}

/// Every batch of `topic[partition]` from `start`, in offset order, each once.
///
/// Reads until a fetch brings nothing new *and* the high watermark the broker reports has been
/// reached. Neither alone is enough: a fetch can come back empty while data is still being made
/// visible, and Tansu can report a high watermark (and a last stable offset) below the end of
/// the log. Fetch returns whole batches, so a fetch from offset 5 can return the batch that
/// starts at 4: batches that end at or before the offset already read are dropped.
pub fn read_partition(
    leader: &str,
    topic: &str,
    partition: i32,
    start: i64,
) -> anyhow::Result<Vec<RawBatch>> {
    let mut connection = Connection::open(leader)?;
    let deadline = Instant::now() + DEADLINE;
    let mut batches = Vec::new();
    let mut next = start;
    loop {
        ensure!(
            Instant::now() < deadline,
            "{topic}[{partition}] not read to its end within {DEADLINE:?} (at offset {next})"
        );
        let fetched = connection.fetch(topic, partition, next)?;
        let Fetched::Data {
            high_watermark,
            records,
        } = fetched
        else {
            std::thread::sleep(MAX_WAIT);
            continue;
        };
        let before = next;
        for batch in split_batches(records).with_context(|| format!("{topic}[{partition}] from {next}"))? {
            if batch.next_offset <= next {
                continue; // already read: a fetch returns the whole batch `next` falls in
            }
            next = batch.next_offset;
            batches.push(batch);
        }
        if next == before && next >= high_watermark {
            return Ok(batches);
        }
    }
}

enum Fetched {
    /// The partition answered with an error worth retrying.
    Retry,
    Data {
        high_watermark: i64,
        records: Bytes,
    },
}

/// One blocking connection to a broker.
struct Connection {
    stream: TcpStream,
    correlation_id: i32,
}

impl Connection {
    fn open(address: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(Self {
            stream,
            correlation_id: 0,
        })
    }

    fn fetch(&mut self, topic: &str, partition: i32, offset: i64) -> anyhow::Result<Fetched> {
        let request = FetchRequest::default()
            .with_max_wait_ms(MAX_WAIT.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(16 << 20)
            .with_isolation_level(READ_UNCOMMITTED)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(8 << 20),
                    ]),
            ]);
        let response = self.round_trip(&request)?;
        let data = response
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .with_context(|| format!("the fetch response has no {topic}[{partition}]"))?;
        match data.error_code {
            0 => Ok(Fetched::Data {
                high_watermark: data.high_watermark,
                records: data.records.unwrap_or_default(),
            }),
            code if RETRIABLE.contains(&code) => Ok(Fetched::Retry),
            code => bail!("fetching {topic}[{partition}] at {offset}: Kafka error code {code}"),
        }
    }

    fn round_trip(&mut self, request: &FetchRequest) -> anyhow::Result<FetchResponse> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(FETCH_VERSION)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(
                "switchboard-tests-committed-view",
            )));
        let mut body = BytesMut::new();
        header.encode(&mut body, FetchRequest::header_version(FETCH_VERSION))?;
        request.encode(&mut body, FETCH_VERSION)?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame)?;

        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        ensure!(size >= 0, "negative response size {size}");
        let mut response = vec![0u8; size as usize];
        self.stream.read_exact(&mut response)?;
        let mut response = Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, FetchResponse::header_version(FETCH_VERSION))?;
        ensure!(
            header.correlation_id == self.correlation_id,
            "correlation id {} answered {}",
            self.correlation_id,
            header.correlation_id
        );
        FetchResponse::decode(&mut response, FETCH_VERSION)
    }
}

/// The complete batches in a fetch response's records; a batch cut off at the end (the
/// response's size limit) is left for the next fetch.
fn split_batches(mut records: Bytes) -> anyhow::Result<Vec<RawBatch>> {
    let mut batches = Vec::new();
    while records.len() >= BATCH_OVERHEAD {
        let base_offset = i64::from_be_bytes(records[0..8].try_into()?);
        let length = i32::from_be_bytes(records[8..12].try_into()?);
        ensure!(
            length >= 0,
            "negative batch length {length} at offset {base_offset}"
        );
        let size = BATCH_OVERHEAD + length as usize;
        if records.len() < size {
            break;
        }
        let mut bytes = records.split_to(size);
        ensure!(
            bytes.len() >= LAST_OFFSET_DELTA_AT + 4,
            "batch at {base_offset} too short"
        );
        let last_offset_delta =
            i32::from_be_bytes(bytes[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].try_into()?);
        let magic = bytes[16];
        ensure!(
            magic == 2,
            "batch at {base_offset} is message format v{magic}, not v2"
        );
        let info = RecordBatchDecoder::decode_batch_info(&mut bytes.clone())?
            .into_iter()
            .next()
            .context("no batch header")?;
        let set = RecordBatchDecoder::decode(&mut bytes)
            .map_err(|e| anyhow::anyhow!("decoding the batch at {base_offset}: {e}"))?;
        debug_assert!(!bytes.has_remaining());
        batches.push(RawBatch {
            base_offset,
            next_offset: base_offset + i64::from(last_offset_delta) + 1,
            producer_id: info.producer_id,
            producer_epoch: info.producer_epoch,
            transactional: info.transactional,
            control: info.control,
            records: set.records,
        });
    }
    Ok(batches)
}
