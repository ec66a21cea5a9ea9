//! Crash test: at least 10,000 events, the processor SIGKILLed at random moments several times
//! and restarted. Nothing may be lost, the committed group offsets must reach the end of every
//! raw partition, and the committed view of the domain topic must hold every event exactly once
//! (computed from the raw batches on any broker; also compared with a real read_committed
//! consumer where the broker hides aborted records).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::Message;
use switchboard_schemas::domain::CallState;
use switchboard_schemas::{Source, topics};
use switchboard_tests::broker::PrivateBroker;

use crate::harness::*;

const CALLS: usize = 2_000;
const STATUSES: [&str; 5] = ["queued", "initiated", "ringing", "in-progress", "completed"];
const KILLS: usize = 5;
const GROUP: &str = "switchboard-processor";

fn spawn_processor(broker: &PrivateBroker, log: &std::path::Path) -> Proc {
    spawn_processor_with(broker, log, &[])
}

fn spawn_processor_with(broker: &PrivateBroker, log: &std::path::Path, extra: &[(&str, String)]) -> Proc {
    let mut env = vec![
        ("SWITCHBOARD_INSTANCE_ID", "crash-0".to_owned()),
        ("SWITCHBOARD_TOPIC_PARTITIONS", PARTITIONS.to_string()),
    ];
    env.extend(extra.iter().cloned());
    spawn(broker, &[], &env, log)
}

/// Waits until the processor's committed offsets reach `ends` (at most 300 s).
async fn wait_caught_up(broker: &PrivateBroker, ends: &HashMap<(String, i32), i64>, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let committed = tokio::task::block_in_place(|| progress(broker));
        if ends
            .iter()
            .all(|(tp, end)| committed.get(tp).copied().unwrap_or(0) >= *end)
        {
            return;
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            panic!(
                "the processor did not catch up: {committed:?} vs {ends:?}\n{}\nlog tail:\n{}",
                committed_outputs(broker).await,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the committed view of `switchboard.calls` holds, for a failure message: with every
/// event in it while a group offset lags, the broker lost an offset commit of a transaction
/// whose outputs it committed; with events missing, the processor did not process them.
async fn committed_outputs(broker: &PrivateBroker) -> String {
    match switchboard_tests::committed::committed_view(&broker.bootstrap(), topics::CALLS).await {
        Ok(view) => {
            let ids: HashSet<String> = view
                .records
                .iter()
                .filter_map(|r| r.header(switchboard_schemas::headers::EVENT_ID))
                .collect();
            format!(
                "{}: {} committed records for {} event ids, {} open transaction(s)",
                topics::CALLS,
                view.records.len(),
                ids.len(),
                view.open
            )
        }
        Err(error) => format!("{}: unreadable: {error:#}", topics::CALLS),
    }
}

/// Committed offsets of the processor's group per raw partition (0 where nothing is committed).
fn progress(broker: &PrivateBroker) -> HashMap<(String, i32), i64> {
    let raw_topics: Vec<&str> = Source::ALL.iter().map(|source| source.raw_topic()).collect();
    let committed = committed_offsets(broker, GROUP, &raw_topics);
    raw_topics
        .iter()
        .flat_map(|topic| (0..PARTITIONS).map(move |partition| (topic.to_string(), partition)))
        .map(|tp| {
            let offset = committed.get(&tp).copied().unwrap_or(0);
            (tp, offset)
        })
        .collect()
}

/// The end offset of every raw partition, from the records themselves (Tansu's high watermark is
/// the base offset of the last batch + 1, not the end).
async fn raw_ends(broker: &PrivateBroker) -> HashMap<(String, i32), i64> {
    let mut ends = HashMap::new();
    for source in Source::ALL {
        for partition in 0..PARTITIONS {
            ends.insert((source.raw_topic().to_owned(), partition), 0);
        }
        for message in read_raw(broker, source.raw_topic()).await {
            let end = ends
                .entry((source.raw_topic().to_owned(), message.partition()))
                .or_default();
            *end = (*end).max(message.offset() + 1);
        }
    }
    ends
}

/// The last call state of every call on the committed view of `switchboard.call-state`.
async fn latest_call_states(broker: &PrivateBroker) -> HashMap<String, CallState> {
    let states = read_decoded::<CallState>(
        broker,
        topics::CALL_STATE,
        "read_committed",
        CallState::schema_def(),
    )
    .await;
    let mut latest = HashMap::new();
    for (state, _) in states {
        latest.insert(state.call_sid.clone(), state);
    }
    latest
}

/// A SIGTERM that arrives while the processor is still starting (creating topics, joining its
/// group, long before it waits for the signal) shuts it down cleanly, not by the default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_exits_cleanly() {
    let broker = PrivateBroker::start().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("processor.log");
    let child = spawn_processor(&broker, &log);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = child.terminate();
    assert!(
        status.success(),
        "SIGTERM during start-up exits 0: {status}; log {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let raw = RawProducer::new(&broker);
    let log_dir = tempfile::tempdir().unwrap();
    let log = match std::env::var_os("SWITCHBOARD_TEST_LOG") {
        Some(path) => std::path::PathBuf::from(path),
        None => log_dir.path().join("processor.log"),
    };

    // 2,000 calls x 5 statuses = 10,000 events, on 50 phones; plus provider redeliveries.
    let mut expected = HashSet::new();
    let mut sends = Vec::new();
    for call in 0..CALLS {
        for (sequence, status) in STATUSES.iter().enumerate() {
            let event_id = format!("EV-{call}-{status}");
            let phone = format!("+1555200{:04}", call % 50);
            sends.push(twilio_call(
                &phone,
                &format!("CA{call:032}"),
                status,
                sequence as u32,
                &event_id,
            ));
            expected.insert(event_id);
        }
    }
    let redeliveries: Vec<_> = sends.iter().step_by(20).cloned().collect();
    sends.extend(redeliveries);
    let started = Instant::now();
    for chunk in sends.chunks(500) {
        futures::future::join_all(chunk.iter().map(|raw_webhook| raw.send(raw_webhook))).await;
    }
    println!("produced {} raw records in {:?}", sends.len(), started.elapsed());
    let ends = raw_ends(&broker).await;
    assert_eq!(ends.values().sum::<i64>(), sends.len() as i64);

    let mut rng = switchboard_tests::Rng::seeded("crash test");
    for kill in 0..KILLS {
        let child = spawn_processor(&broker, &log);
        // Group join takes ~3 s on Tansu; kill somewhere in the first seconds of processing.
        let after = Duration::from_millis(3_000 + rng.below(3_000));
        tokio::time::sleep(after).await;
        drop(child); // SIGKILL
        let committed = tokio::task::block_in_place(|| progress(&broker));
        println!(
            "kill {kill} after {after:?}: committed {}",
            committed.values().sum::<i64>()
        );
    }

    // A last run to the end, then SIGTERM.
    let child = spawn_processor(&broker, &log);
    wait_caught_up(&broker, &ends, &log).await;
    let status = child.terminate();
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}; log {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Committed offsets match the end of every raw partition (asserted by the loop above), and
    // the committed view of the domain topic holds every event exactly once: the records of the
    // transactions each SIGKILL left open were aborted (the restarted instance fenced them) and
    // are left out.
    let report = assert_calls_exactly_once(&broker, topics::CALLS, expected.iter().cloned()).await;
    assert_eq!(
        report.open, 0,
        "no transaction left open after the last run's SIGTERM"
    );
    println!(
        "{KILLS} SIGKILLs: {} records of aborted transactions seen and left out",
        report.aborted_seen
    );

    // Every call ends completed with its duration, whatever the order of replays.
    let latest = latest_call_states(&broker).await;
    assert_eq!(latest.len(), CALLS);
    assert!(
        latest
            .values()
            .all(|s| s.status == "completed" && s.duration_seconds == Some(120))
    );
}

/// The crash the local state store must survive: the process dies after a transaction has
/// committed in Kafka and before its state reached the store, so the store's checkpoint is
/// behind Kafka. The restart must bring the store up from the changelog tail: provider
/// redeliveries of events processed in that transaction, sent after the restart, are still
/// duplicates (dropped), and every event is in the committed output exactly once. A third start
/// finds every checkpoint current and reads no changelog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_kafka_commit_and_the_store_write_loses_and_doubles_nothing() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let raw = RawProducer::new(&broker);
    let log_dir = tempfile::tempdir().unwrap();
    let log = match std::env::var_os("SWITCHBOARD_TEST_LOG") {
        Some(path) => std::path::PathBuf::from(path),
        None => log_dir.path().join("processor.log"),
    };

    let calls = 400;
    let mut expected = HashSet::new();
    let mut sends = Vec::new();
    for call in 0..calls {
        for (sequence, status) in STATUSES.iter().enumerate() {
            let event_id = format!("EV-{call}-{status}");
            sends.push(twilio_call(
                &format!("+1555300{:04}", call % 40),
                &format!("CA{call:032}"),
                status,
                sequence as u32,
                &event_id,
            ));
            expected.insert(event_id);
        }
    }
    for chunk in sends.chunks(500) {
        futures::future::join_all(chunk.iter().map(|raw_webhook| raw.send(raw_webhook))).await;
    }

    // Run 1: aborts right after its 3rd Kafka commit, before that commit's store write. At most
    // 100 records a transaction, so that there is a 3rd commit and records are left for run 2
    // however large the batches a busy machine makes (at the default 5,000, two transactions
    // could hold all 2,000).
    let mut child = spawn_processor_with(
        &broker,
        &log,
        &[
            (
                switchboard_processor::FAULT_ABORT_BEFORE_STORE_WRITE,
                "3".to_owned(),
            ),
            ("SWITCHBOARD_MAX_BATCH_RECORDS", "100".to_owned()),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "the fault hook never fired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "aborted: {status}");
    let committed_at_crash: i64 = tokio::task::block_in_place(|| progress(&broker)).values().sum();
    assert!(
        committed_at_crash > 0,
        "the crash came after a committed transaction"
    );

    // Run 2: restores the tail the store missed, then processes the rest.
    let ends = raw_ends(&broker).await;
    let child = spawn_processor(&broker, &log);
    wait_caught_up(&broker, &ends, &log).await;
    assert!(child.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("restoring state from the changelogs") && text.contains("Some(Checkpoint"),
        "the restart read a changelog tail after a checkpoint:\n{text}"
    );

    // Run 3: every checkpoint is current; redeliveries of everything are duplicates.
    let before = text.len();
    let redeliveries: Vec<_> = sends.iter().step_by(7).cloned().collect();
    for chunk in redeliveries.chunks(500) {
        futures::future::join_all(chunk.iter().map(|raw_webhook| raw.send(raw_webhook))).await;
    }
    let ends = raw_ends(&broker).await;
    let child = spawn_processor(&broker, &log);
    wait_caught_up(&broker, &ends, &log).await;
    assert!(child.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let third = &text[before..];
    let current = third.matches("stored state is current").count();
    assert!(
        current >= Source::ALL.len() * PARTITIONS as usize
            && !third.contains("restoring state from the changelogs"),
        "every task's checkpoint was current on the third start ({current} said so):\n{third}"
    );

    let report = assert_calls_exactly_once(&broker, topics::CALLS, expected.iter().cloned()).await;
    assert_eq!(report.open, 0);
    let latest = latest_call_states(&broker).await;
    assert_eq!(latest.len(), calls);
    let unfinished: Vec<_> = latest.values().filter(|s| s.status != "completed").collect();
    assert!(
        unfinished.is_empty(),
        "{} calls not completed, e.g. {:?}; log:\n{}",
        unfinished.len(),
        unfinished.first(),
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("restor") || l.contains("current") || l.contains("ABORT"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
