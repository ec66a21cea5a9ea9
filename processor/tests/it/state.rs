//! The local state store's failure path: a restore that cannot progress fails loudly — `/readyz`
//! answers 503 with the reason while it retries, then the process exits non-zero — and never
//! loops silently or starts the partition with state it does not have.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchboard_schemas::{Source, headers, topics};
use switchboard_tests::broker::PrivateBroker;

use crate::harness::*;

const INSTANCE: &str = "state-0";

fn spawn_processor(broker: &PrivateBroker, log: &std::path::Path, admin: u16) -> Proc {
    let env = [
        ("SWITCHBOARD_INSTANCE_ID", INSTANCE.to_owned()),
        ("SWITCHBOARD_TOPIC_PARTITIONS", PARTITIONS.to_string()),
        ("SWITCHBOARD_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
    ];
    spawn(broker, &[], &env, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_cannot_progress_says_why_on_readyz_then_exits_non_zero() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let raw = RawProducer::new(&broker);
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("processor.log");
    for call in 0..30 {
        raw.send(&twilio_call(
            &format!("+1555400{call:04}"),
            &format!("CA{call:032}"),
            "ringing",
            2,
            &format!("EV-state-{call}"),
        ))
        .await;
    }

    // A first run processes everything and leaves its store and checkpoints.
    let child = spawn_processor(&broker, &log, free_port());
    let twilio = Source::Twilio.raw_topic();
    let committed = eventually(Duration::from_secs(120), || async {
        let committed =
            tokio::task::block_in_place(|| committed_offsets(&broker, "switchboard-processor", &[twilio]));
        (committed.values().sum::<i64>() >= 30).then_some(committed)
    })
    .await;
    assert!(child.terminate().success());

    // The store is lost, and the call-state changelog holds an entry of a committed record that
    // no longer decodes: the full restore cannot complete.
    std::fs::remove_dir_all(broker.state_dir(INSTANCE)).unwrap();
    let (&(_, partition), _) = committed.iter().find(|(_, offset)| **offset > 0).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let partition_text = partition.to_string();
    let origin = OwnedHeaders::new()
        .insert(Header {
            key: headers::ORIGIN_TOPIC,
            value: Some(twilio),
        })
        .insert(Header {
            key: headers::ORIGIN_PARTITION,
            value: Some(&partition_text),
        })
        .insert(Header {
            key: headers::ORIGIN_OFFSET,
            value: Some("0"),
        });
    producer
        .send(
            FutureRecord::to(topics::CALL_STATE)
                .partition(partition)
                .key("CA-corrupt")
                .payload("not an avro record")
                .headers(origin),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let admin = free_port();
    let mut child = spawn_processor(&broker, &log, admin);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut said_why = None;
    let status = loop {
        if let Some(status) = child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the processor neither gave up nor exited"
        );
        if said_why.is_none()
            && let Ok(response) = client
                .get(format!("http://127.0.0.1:{admin}/readyz"))
                .send()
                .await
            && response.status() == 503
            && let Ok(body) = response.text().await
            && body.contains("restoring state failed")
        {
            said_why = Some(body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "a restore that cannot complete exits non-zero: {status}"
    );
    let said_why = said_why.unwrap_or_else(|| panic!("/readyz never said why; log:\n{text}"));
    println!("/readyz said: {said_why}");
    assert!(said_why.contains("restoring state failed (attempt"), "{said_why}");
    assert!(text.contains("restoring state failed 5 times in a row"), "{text}");
}
