//! Processor throughput, exactly-once vs at-least-once, on the same pre-loaded raw input, in one
//! run: `make bench-processor` (or `cargo bench -p switchboard-processor --bench eos_vs_alo`).
//!
//! Starts a private Tansu broker and an in-process schema registry, pre-loads
//! `SWITCHBOARD_BENCH_EVENTS` (default 50,000) realistic Twilio status callbacks, then runs the
//! processor over them with fresh consumer groups, once per processing guarantee in each of
//! `SWITCHBOARD_BENCH_ROUNDS` rounds (default 4), and prints events/s for each run, each round's
//! EOS/ALO ratio and their median. The order alternates between rounds, so that neither guarantee
//! always runs second, on the fuller broker (in a 20,000-event trial the second run of each pair
//! was the slower one); an even count of rounds cancels the order out. One run lasts seconds on a
//! shared machine whose speed varies from minute to minute, so a single pair moves the ratio by
//! ±0.15; the median of alternating pairs much less. A report, not a test: it asserts nothing
//! about speed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_processor::config::{Config, Guarantee};
use switchboard_schemas::{Codec, RawWebhook, Source};
use switchboard_tests::broker::PrivateBroker;

const PARTITIONS: i32 = 6;

fn raw_call(n: usize, status: &str, sequence: usize) -> RawWebhook {
    let phone = format!("+1555300{:04}", n % 500);
    let call_sid = format!("CA{n:032x}");
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", call_sid.as_str()),
            ("CallStatus", status),
            ("Called", phone.as_str()),
            ("Caller", "+15005550006"),
            ("Direction", "inbound"),
            ("From", "+15005550006"),
            ("To", phone.as_str()),
            ("SequenceNumber", &sequence.to_string()),
            ("Timestamp", "Tue, 14 Jan 2025 18:05:59 +0000"),
            ("CallDuration", "42"),
        ])
        .finish();
    RawWebhook {
        event_id: format!("EV-{n}-{status}"),
        source: "twilio".into(),
        phone_id: phone,
        received_at: 1_736_877_959_000,
        url: "https://hooks.example.com/webhooks/twilio/calls".into(),
        content_type: "application/x-www-form-urlencoded".into(),
        headers: BTreeMap::new(),
        body: body.into_bytes(),
        signature_scheme: "twilio-hmac-sha1".into(),
        source_name: None,
    }
}

async fn preload(broker: &PrivateBroker, registry: &str, events: usize) -> anyhow::Result<()> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()?;
    let topics: Vec<_> = Source::ALL
        .iter()
        .map(|s| {
            rdkafka::admin::NewTopic::new(
                s.raw_topic(),
                PARTITIONS,
                rdkafka::admin::TopicReplication::Fixed(1),
            )
        })
        .collect();
    admin
        .create_topics(&topics, &rdkafka::admin::AdminOptions::new())
        .await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "10")
        .set("partitioner", "murmur2_random")
        .create()?;
    let codec = Codec::new(registry)?;
    let topic = Source::Twilio.raw_topic();
    let statuses = ["initiated", "ringing", "in-progress", "completed"];
    let raws: Vec<RawWebhook> = (0..events)
        .map(|i| raw_call(i / 4, statuses[i % 4], i % 4))
        .collect();
    for chunk in raws.chunks(1_000) {
        let mut sends = Vec::new();
        for raw in chunk {
            let payload = codec.encode(topic, RawWebhook::schema_def(), raw).await?;
            sends.push((raw.phone_id.clone(), raw.event_id.clone(), payload));
        }
        let futures = sends.iter().map(|(key, event_id, payload)| {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "event-id",
                    value: Some(event_id.as_str()),
                })
                .insert(Header {
                    key: "source",
                    value: Some("twilio"),
                });
            producer.send(
                FutureRecord::to(topic)
                    .key(key.as_str())
                    .payload(payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
        });
        for result in futures::future::join_all(futures).await {
            result.map_err(|(e, _)| e)?;
        }
    }
    Ok(())
}

/// Offsets committed by `group` over every raw partition.
fn committed_total(bootstrap: &str, group: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?;
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition(Source::Twilio.raw_topic(), partition);
    }
    Ok(consumer
        .committed_offsets(list, Duration::from_secs(10))?
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum())
}

/// Runs the processor with `guarantee` until its group has committed every raw record; returns
/// the time from the first to the last committed record (group join excluded).
async fn run(
    broker: &PrivateBroker,
    registry: &str,
    guarantee: Guarantee,
    events: usize,
    round: usize,
) -> anyhow::Result<Duration> {
    let group = format!("bench-{guarantee:?}-{round}").to_lowercase();
    let config = Config {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: registry.to_owned(),
        group_id: group.clone(),
        instance_id: Some("bench-0".into()),
        state_dir: broker.state_dir(&group),
        processing_guarantee: guarantee,
        topic_partitions: PARTITIONS,
        session_timeout: Duration::from_secs(6),
        ..Config::default()
    }
    .validate()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let processor = tokio::spawn(switchboard_processor::run(config, listener, async {
        let _ = stopped.await;
    }));
    let bootstrap = broker.bootstrap();
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let done = tokio::task::block_in_place(|| committed_total(&bootstrap, &group))?;
        if done > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if done >= events as i64 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{guarantee:?} run did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
    let _ = stop.send(());
    processor.await??;
    Ok(elapsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let events: usize = std::env::var("SWITCHBOARD_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let broker = PrivateBroker::start()?;
    let registry_dir = tempfile::tempdir()?;
    let store = switchboard_registry::Store::open(registry_dir.path()).await?;
    let registry_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let registry = format!("http://{}", registry_listener.local_addr()?);
    tokio::spawn(switchboard_registry::run(
        store,
        registry_listener,
        std::future::pending(),
    ));

    let started = Instant::now();
    preload(&broker, &registry, events).await?;
    println!(
        "pre-loaded {events} raw Twilio status callbacks in {:.1?} ({PARTITIONS} partitions)",
        started.elapsed()
    );

    let rounds: usize = std::env::var("SWITCHBOARD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
        .max(1);
    let rate = |elapsed: Duration| events as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        // Alternate which guarantee goes first, so that neither always meets the fuller broker.
        let order = if round % 2 == 1 {
            [Guarantee::ExactlyOnce, Guarantee::AtLeastOnce]
        } else {
            [Guarantee::AtLeastOnce, Guarantee::ExactlyOnce]
        };
        let mut eos = Duration::ZERO;
        let mut alo = Duration::ZERO;
        for guarantee in order {
            let elapsed = run(&broker, &registry, guarantee, events, round).await?;
            match guarantee {
                Guarantee::ExactlyOnce => eos = elapsed,
                Guarantee::AtLeastOnce => alo = elapsed,
            }
        }
        println!(
            "exactly-once   {:>10.0} events/s  ({eos:.2?}, round {round})",
            rate(eos)
        );
        println!(
            "at-least-once  {:>10.0} events/s  ({alo:.2?}, round {round})",
            rate(alo)
        );
        ratios.push(rate(eos) / rate(alo));
    }
    let by_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "EOS/ALO by round  {} (the ratio below is their median)",
        by_round.join(" ")
    );
    println!("EOS/ALO ratio  {:>10.2}", median(&mut ratios));
    Ok(())
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}
