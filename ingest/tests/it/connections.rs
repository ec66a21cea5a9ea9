//! Issue 13, item 6: idle and half-open connections are closed, the number of connections is
//! capped, and the admin listener's `/healthz` keeps answering while the webhook listener is
//! flooded. Drives the real `switchboard_ingest::run` (Kafka unreachable: none of this needs it).

use std::time::{Duration, Instant};

use switchboard_ingest::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::support;

const CAP: usize = 200;
const IDLE_SOCKETS: usize = 1000;
const H2_PREFACE_ONLY: usize = 30;
const H2_WITH_SETTINGS: usize = 30;
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Reads until the server closes the connection; false if it is still open at `deadline`.
async fn closed_by_server(mut socket: TcpStream, deadline: Instant) -> bool {
    let mut buf = [0_u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline.into(), socket.read(&mut buf)).await {
            Err(_still_open) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // HTTP/2 SETTINGS, GOAWAY, a response: keep reading
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_connections_are_closed_and_capped_while_health_answers() {
    let config = Config {
        kafka_bootstrap: "127.0.0.1:1".into(),
        schema_registry_url: "http://127.0.0.1:1".into(),
        create_topics: false,
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        max_connections: CAP,
        ..support::config()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (webhooks, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let ingest = tokio::spawn(switchboard_ingest::run(
        config.validate().unwrap(),
        listener,
        admin,
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let healthz = format!("http://{admin_addr}/healthz");
    let started = Instant::now();
    while client.get(&healthz).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "ingest did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One HTTP/1.1 keep-alive connection that made a request and then went quiet.
    let mut keep_alive = TcpStream::connect(webhooks).await.unwrap();
    keep_alive
        .write_all(b"GET /nothing HTTP/1.1\r\nhost: ingest\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0_u8; 512];
    let n = keep_alive.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    let before = open_descriptors();
    let mut sockets = Vec::new();
    for i in 0..H2_PREFACE_ONLY + H2_WITH_SETTINGS {
        let mut socket = TcpStream::connect(webhooks).await.unwrap();
        socket.write_all(HTTP2_PREFACE).await.unwrap();
        if i >= H2_PREFACE_ONLY {
            socket.write_all(EMPTY_SETTINGS).await.unwrap();
        }
        sockets.push(socket);
    }
    for _ in 0..IDLE_SOCKETS {
        sockets.push(TcpStream::connect(webhooks).await.unwrap());
    }
    let flood = sockets.len();

    // The cap is reached and the admin listener still answers, promptly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = Instant::now();
    let health = client
        .get(&healthz)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("/healthz answers under a connection flood");
    assert_eq!(health.status(), 200);
    assert!(probe.elapsed() < Duration::from_secs(1), "{:?}", probe.elapsed());
    // Other tests of this binary open descriptors meanwhile: a wide margin, still far below the
    // `flood` an uncapped server accepts.
    let server_side = open_descriptors().saturating_sub(before + flood);
    assert!(
        server_side <= CAP + 300,
        "{server_side} descriptors opened by the server for {flood} connections (cap {CAP})"
    );

    // Every connection is closed by the server: the ones served now within the first-request
    // deadline, the ones waiting in the backlog as slots free up.
    let deadline = Instant::now() + Duration::from_secs(40);
    let waits: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(closed_by_server(socket, deadline)))
        .collect();
    let mut still_open = 0;
    for wait in waits {
        if !wait.await.unwrap() {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "{still_open} of {flood} flood connections never closed"
    );
    assert!(
        closed_by_server(keep_alive, Instant::now() + Duration::from_secs(5)).await,
        "an idle keep-alive connection is closed after idle_timeout"
    );

    // Served again once the flood is gone.
    let response = client.get(&healthz).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), ingest)
        .await
        .expect("ingest stops")
        .unwrap()
        .unwrap();
}
