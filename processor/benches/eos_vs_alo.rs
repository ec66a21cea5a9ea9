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
//!
//! Each run also says where its time went, over the same interval: the processor's transactions
//! and their mean commit (its own `switchboard_processor_transaction_commit_seconds`), and the
//! CPU time used by this process (the processor, its librdkafka threads and the in-process
//! registry) and by the broker. A last line compares the two guarantees per 1,000 events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_processor::config::{Config, Guarantee};
use switchboard_processor::metrics::COMMIT_SECONDS;
use switchboard_schemas::{Codec, RawWebhook, Source};
use switchboard_tests::broker::PrivateBroker;
use switchboard_tests::metrics::metric;

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

/// What one run measured, from the group's first committed offset to its last.
#[derive(Debug, Clone, Copy)]
struct Run {
    elapsed: Duration,
    /// Transactions (offset commits under at-least-once) and the seconds their commits took.
    transactions: f64,
    commit_seconds: f64,
    /// CPU seconds of this process (the processor) and of the broker (`NaN` when the broker is
    /// not a process of this machine: a shared real Kafka).
    cpu_processor: f64,
    cpu_broker: f64,
}

impl Run {
    fn rate(&self, events: usize) -> f64 {
        events as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// `seconds` per 1,000 of `events`, in milliseconds.
    fn per_thousand(seconds: f64, events: usize) -> f64 {
        seconds * 1_000.0 * 1_000.0 / events as f64
    }
}

/// The counters a run is measured with, read at one instant.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: Instant,
    commit_sum: f64,
    commit_count: f64,
    cpu_processor: f64,
    cpu_broker: f64,
}

impl Counters {
    fn read(broker_pid: Option<u32>) -> Self {
        let metrics = switchboard_service::telemetry::prometheus().render();
        Self {
            at: Instant::now(),
            commit_sum: metric(&metrics, &format!("{COMMIT_SECONDS}_sum"), &[]),
            commit_count: metric(&metrics, &format!("{COMMIT_SECONDS}_count"), &[]),
            cpu_processor: cpu_seconds("self"),
            cpu_broker: broker_pid.map_or(f64::NAN, |pid| cpu_seconds(&pid.to_string())),
        }
    }

    fn since(&self, start: &Counters) -> Run {
        Run {
            elapsed: self.at - start.at,
            transactions: self.commit_count - start.commit_count,
            commit_seconds: self.commit_sum - start.commit_sum,
            cpu_processor: self.cpu_processor - start.cpu_processor,
            cpu_broker: self.cpu_broker - start.cpu_broker,
        }
    }
}

/// User plus system CPU seconds of process `pid` (`self` for this one), from `/proc/<pid>/stat`;
/// 0 when it cannot be read.
fn cpu_seconds(pid: &str) -> f64 {
    static TICKS_PER_SECOND: std::sync::LazyLock<f64> = std::sync::LazyLock::new(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / *TICKS_PER_SECOND
}

/// Runs the processor with `guarantee` until its group has committed every raw record; measures
/// it from the first to the last committed record (group join excluded).
async fn run(
    broker: &PrivateBroker,
    registry: &str,
    guarantee: Guarantee,
    events: usize,
    round: usize,
) -> anyhow::Result<Run> {
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
    let broker_pid = broker.pid().ok();
    let mut first: Option<Counters> = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    let last = loop {
        let done = tokio::task::block_in_place(|| committed_total(&bootstrap, &group))?;
        if done > 0 && first.is_none() {
            first = Some(Counters::read(broker_pid));
        }
        if done >= events as i64 {
            break Counters::read(broker_pid);
        }
        anyhow::ensure!(Instant::now() < deadline, "{guarantee:?} run did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(());
    processor.await??;
    Ok(last.since(&first.unwrap_or(last)))
}

/// One run's line: its rate, and where its time went.
fn report(name: &str, run: &Run, events: usize, round: usize) {
    println!(
        "{name:<14} {:>10.0} events/s  ({:.2?}, round {round}): {} transactions, commit {:.1} ms mean ({:.0} % of the run); CPU s: processor {:.2}, broker {:.2}",
        run.rate(events),
        run.elapsed,
        run.transactions,
        run.commit_seconds * 1_000.0 / run.transactions.max(1.0),
        run.commit_seconds * 100.0 / run.elapsed.as_secs_f64().max(f64::EPSILON),
        run.cpu_processor,
        run.cpu_broker,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let events: usize = std::env::var("SWITCHBOARD_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    // The processor's metrics are read from this process's recorder (see `Counters`).
    switchboard_service::telemetry::prometheus();
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
    let mut ratios = Vec::with_capacity(rounds);
    let mut runs: Vec<(Run, Run)> = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        // Alternate which guarantee goes first, so that neither always meets the fuller broker.
        let order = if round % 2 == 1 {
            [Guarantee::ExactlyOnce, Guarantee::AtLeastOnce]
        } else {
            [Guarantee::AtLeastOnce, Guarantee::ExactlyOnce]
        };
        let (mut eos, mut alo) = (None, None);
        for guarantee in order {
            let measured = run(&broker, &registry, guarantee, events, round).await?;
            match guarantee {
                Guarantee::ExactlyOnce => eos = Some(measured),
                Guarantee::AtLeastOnce => alo = Some(measured),
            }
        }
        let (eos, alo) = (eos.expect("ran"), alo.expect("ran"));
        report("exactly-once", &eos, events, round);
        report("at-least-once", &alo, events, round);
        ratios.push(eos.rate(events) / alo.rate(events));
        runs.push((eos, alo));
    }
    let by_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "EOS/ALO by round  {} (the ratio below is their median)",
        by_round.join(" ")
    );
    // Medians over the rounds, per 1,000 events: what each guarantee cost, and where.
    let cost = |of: fn(&Run) -> f64| {
        let mut eos: Vec<f64> = runs
            .iter()
            .map(|(e, _)| Run::per_thousand(of(e), events))
            .collect();
        let mut alo: Vec<f64> = runs
            .iter()
            .map(|(_, a)| Run::per_thousand(of(a), events))
            .collect();
        format!("{:.1}/{:.1}", median(&mut eos), median(&mut alo))
    };
    println!(
        "EOS/ALO per 1,000 events (medians, ms): wall {}, commits {}, processor CPU {}, broker CPU {}",
        cost(|run| run.elapsed.as_secs_f64()),
        cost(|run| run.commit_seconds),
        cost(|run| run.cpu_processor),
        cost(|run| run.cpu_broker),
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
