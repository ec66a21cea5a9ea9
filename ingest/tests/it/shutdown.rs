//! SIGTERM under load: the binary stops accepting, lets in-flight requests finish (each still
//! waits for its delivery report), flushes, and exits 0; every request answered 2xx is in Kafka.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_tests::broker::PrivateBroker;

use crate::kafka::{call, post_to, stored_call_sids};
use crate::signing::{PUBLIC_URL, TWILIO_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let broker = PrivateBroker::start_pausable().unwrap();
    let port = switchboard_tests::free_port().unwrap();
    let admin_port = switchboard_tests::free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard-ingest"))
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("SWITCHBOARD_KAFKA_BOOTSTRAP", broker.bootstrap())
        .env(
            "SWITCHBOARD_SCHEMA_REGISTRY_URL",
            switchboard_tests::registry_url(),
        )
        .env("SWITCHBOARD_PUBLIC_URL", PUBLIC_URL)
        .env("SWITCHBOARD_TWILIO_AUTH_TOKENS", TWILIO_TOKEN)
        .env("SWITCHBOARD_TOPIC_PARTITIONS", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .get(format!("http://127.0.0.1:{admin_port}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "ingest never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Hold the requests in flight: the broker is paused until after SIGTERM.
    broker.pause().unwrap();
    let sids: Vec<String> = (0..20)
        .map(|i| format!("CA{:032x}", 0xdead_0000_u64 + i))
        .collect();
    let requests: Vec<_> = sids
        .iter()
        .map(|sid| {
            let (client, base, params) = (
                client.clone(),
                base.clone(),
                call("+15551230000", sid, "completed"),
            );
            tokio::spawn(async move { post_to(&client, &base, &params).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // New connections are refused while the in-flight ones drain. (A fresh client: one of the
    // shared client's idle keep-alive connections may still be answered, with `Connection: close`,
    // during the drain's linger.)
    assert!(
        reqwest::Client::new()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err(),
        "still accepting after SIGTERM"
    );
    broker.resume().unwrap();

    let mut accepted = HashSet::new();
    for (sid, request) in sids.iter().zip(requests) {
        let response = request
            .await
            .unwrap()
            .expect("in-flight requests are answered, not dropped");
        assert_eq!(response.status(), 200, "in-flight request for {sid}");
        accepted.insert(sid.clone());
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let stored = stored_call_sids(&broker.bootstrap(), "+15551230000", &accepted);
    assert_eq!(stored, accepted, "every request answered 200 is in Kafka");
}
