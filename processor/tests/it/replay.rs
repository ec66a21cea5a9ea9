//! Replay and reset on a private broker: a backfill of one hour into a prefix holds exactly that
//! hour's events; a replay SIGKILLed mid-run resumes where its last transaction ended; a group is
//! rewound only while it has no members.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use switchboard_processor::replay::{ReplayArgs, Summary};
use switchboard_processor::reset::ResetArgs;
use switchboard_schemas::domain::CallState;
use switchboard_schemas::{Codec, RawWebhook, Source, topics};
use switchboard_tests::broker::PrivateBroker;

use crate::harness::*;

const HOUR: i64 = 3_600_000;

fn at(time: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(time).unwrap().with_timezone(&Utc)
}

/// A completed call received at `received_at`.
fn call(n: usize, received_at: i64) -> RawWebhook {
    let mut raw = twilio_call(
        &format!("+1555600{:04}", n % 40),
        &format!("CA{n:032}"),
        "completed",
        4,
        &format!("EV-replay-{n}"),
    );
    raw.received_at = received_at;
    raw
}

fn replay_args(from: &str, to: &str, into: Option<&str>) -> ReplayArgs {
    ReplayArgs {
        from: at(from),
        to: Some(at(to)),
        sources: vec![Source::Twilio],
        phone_id: None,
        into: into.map(str::to_owned),
        dry_run: false,
    }
}

async fn replay(broker: &PrivateBroker, args: ReplayArgs) -> Summary {
    let config = config(broker, "replay");
    let codec = std::sync::Arc::new(Codec::new(&switchboard_tests::registry_url()).unwrap());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || switchboard_processor::replay::run(&config, &args, codec, runtime))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_one_hour_into_a_prefix_holds_exactly_that_hours_events() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let producer = RawProducer::new(&broker);
    let ten = at("2026-11-28T10:00:00Z").timestamp_millis();
    let mut in_hour = HashSet::new();
    for n in 0..60 {
        // 10:00–12:59, 20 per hour; the 11 o'clock hour is the one replayed.
        let received_at = ten + (n as i64 / 20) * HOUR + (n as i64 % 20) * 170_000;
        let raw = call(n, received_at);
        if (ten + HOUR..ten + 2 * HOUR).contains(&received_at) {
            in_hour.insert(raw.event_id.clone());
        }
        producer.send(&raw).await;
    }
    // In the hour: a provider retry of one event, and a poison record.
    producer.send(&call(25, ten + HOUR + 5 * 170_000)).await;
    let mut poison = call(1_000, ten + HOUR + 60_000);
    poison.body = b"AccountSid=AC1&Foo=bar".to_vec();
    producer.send(&poison).await;

    let summary = replay(
        &broker,
        replay_args("2026-11-28T11:00:00Z", "2026-11-28T12:00:00Z", Some("backfill")),
    )
    .await;
    assert_eq!(
        (summary.emitted, summary.duplicates, summary.dead_lettered),
        (20, 1, 1),
        "{summary}"
    );

    // Exactly the hour's events, each once, in the committed view.
    assert_calls_exactly_once(&broker, "backfill.switchboard.calls", in_hour.iter().cloned()).await;
    let states = read_decoded::<CallState>(
        &broker,
        "backfill.switchboard.call-state",
        "read_committed",
        CallState::schema_def(),
    )
    .await;
    assert_eq!(states.len(), 20, "call state of the backfill");
    assert_eq!(read_committed(&broker, "backfill.switchboard.dlq").await.len(), 1);
    assert!(
        read_raw(&broker, topics::CALLS).await.is_empty(),
        "live topics untouched"
    );

    // The same command again: already complete, nothing more.
    let again = replay(
        &broker,
        replay_args("2026-11-28T11:00:00Z", "2026-11-28T12:00:00Z", Some("backfill")),
    )
    .await;
    assert_eq!((again.read, again.emitted), (0, 0), "{again}");
    assert_calls_exactly_once(&broker, "backfill.switchboard.calls", in_hour).await;
}

/// The replay group's committed offsets per raw partition.
fn committed(broker: &PrivateBroker, group: &str) -> BTreeMap<i32, i64> {
    committed_offsets(broker, group, &[topics::RAW_TWILIO])
        .into_iter()
        .map(|((_, partition), offset)| (partition, offset))
        .collect()
}

fn summary_read(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("replay "))
        .unwrap_or_else(|| panic!("no summary in {stdout:?}"));
    line.split("read ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_mid_run_resumes_where_its_last_transaction_ended() {
    const EVENTS: usize = 6_000;
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let producer = RawProducer::new(&broker);
    let eleven = at("2026-11-28T11:00:00Z").timestamp_millis();
    let calls: Vec<RawWebhook> = (0..EVENTS).map(|n| call(n, eleven + n as i64 * 500)).collect();
    for chunk in calls.chunks(500) {
        futures::future::join_all(chunk.iter().map(|raw| producer.send(raw))).await;
    }
    let raw_ends: HashMap<i32, i64> =
        read_raw(&broker, topics::RAW_TWILIO)
            .await
            .iter()
            .fold(HashMap::new(), |mut ends, m| {
                use rdkafka::Message;
                let end = ends.entry(m.partition()).or_insert(0);
                *end = (*end).max(m.offset() + 1);
                ends
            });

    let args = [
        "replay",
        "--from",
        "2026-11-28T11:00:00Z",
        "--to",
        "2026-11-28T12:00:00Z",
        "--source",
        "twilio",
        "--into",
        "bf",
    ];
    let group = format!(
        "switchboard-replay-{}",
        replay_args("2026-11-28T11:00:00Z", "2026-11-28T12:00:00Z", Some("bf")).run_id()
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("replay.log");
    let env = [
        ("SWITCHBOARD_TOPIC_PARTITIONS", PARTITIONS.to_string()),
        ("SWITCHBOARD_COMMIT_INTERVAL", "50ms".to_owned()),
    ];

    // Kill it once it has committed some progress, mid-run.
    let first = spawn(&broker, &args, &env, &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let progress: i64 = committed(&broker, &group).values().sum();
        if progress > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replay committed nothing; log {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(first); // SIGKILL
    let progress = committed(&broker, &group);
    let remaining: i64 = raw_ends
        .iter()
        .map(|(p, end)| end - progress.get(p).copied().unwrap_or(0))
        .sum();
    assert!(remaining > 0, "killed too late to test resuming");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard-processor"))
        .args(args)
        .env("SWITCHBOARD_KAFKA_BOOTSTRAP", broker.bootstrap())
        .env(
            "SWITCHBOARD_SCHEMA_REGISTRY_URL",
            switchboard_tests::registry_url(),
        )
        .env("SWITCHBOARD_TOPIC_PARTITIONS", PARTITIONS.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "resumed replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        summary_read(&stdout) as i64,
        remaining,
        "the resumed run reads exactly what was not committed: {stdout}"
    );
    assert_eq!(
        committed(&broker, &group),
        raw_ends.iter().map(|(p, e)| (*p, *e)).collect::<BTreeMap<_, _>>()
    );

    // Each event exactly once in the committed view of the prefix: what the killed run had in its
    // open transaction was aborted (fenced by the resumed run) and is left out.
    let report = assert_calls_exactly_once(
        &broker,
        "bf.switchboard.calls",
        calls.iter().map(|raw| raw.event_id.clone()),
    )
    .await;
    assert_eq!(report.committed, EVENTS);
    println!(
        "replay killed mid-run: {} records of aborted transactions seen and left out",
        report.aborted_seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_refuses_a_group_with_members_and_rewinds_a_stopped_one() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let producer = RawProducer::new(&broker);
    for n in 0..30 {
        producer
            .send(&call(n, at("2026-11-28T11:00:00Z").timestamp_millis() + n as i64))
            .await;
    }
    let processor = InProcess::start(config(&broker, "reset-0")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&broker, "switchboard-processor").values().sum::<i64>() < 30 {
        assert!(
            Instant::now() < deadline,
            "the processor did not process the records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reset = |dry_run: bool| {
        let config = config(&broker, "reset-tool");
        let args = ResetArgs {
            group: "switchboard-processor".into(),
            to_datetime: at("2000-01-01T00:00:00Z"),
            topics: Vec::new(),
            database_url: None,
            dry_run,
        };
        async move {
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || switchboard_processor::reset::run(&config, &args, &runtime))
                .await
                .unwrap()
        }
    };
    let refused = reset(false).await.unwrap_err().to_string();
    assert!(refused.contains("active member"), "{refused}");

    processor.stop().await;
    let before = committed(&broker, "switchboard-processor");
    let planned = reset(true).await.unwrap();
    assert!(planned.iter().all(|r| r.to == 0), "{planned:?}");
    assert_eq!(
        committed(&broker, "switchboard-processor"),
        before,
        "a dry run changes nothing"
    );
    let rewound = reset(false).await.unwrap();
    assert_eq!(rewound.len() as i32, PARTITIONS, "{rewound:?}");
    assert!(
        committed(&broker, "switchboard-processor")
            .values()
            .all(|o| *o == 0)
    );
}
