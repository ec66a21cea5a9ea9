//! Ingest against a real broker and registry: what is answered 2xx is in Kafka, decodable with the
//! schema; a paused broker gets 503 within the deadline and ingest recovers by itself.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::message::{Headers, Message};
use switchboard_ingest::config::{Config, SecretStrings};
use switchboard_schemas::{Codec, RawWebhook};
use switchboard_tests::broker::PrivateBroker;
use switchboard_tests::consume::read_to_end;
use tokio::sync::oneshot;

use crate::signing::{self, PUBLIC_URL, TWILIO_TOKEN, form};

/// An ingest instance serving on a free port until dropped.
pub(crate) struct RunningIngest {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningIngest {
    async fn start(bootstrap: String, publish_timeout: Duration) -> Self {
        Self::start_with(Config {
            kafka_bootstrap: bootstrap,
            publish_timeout,
            ..Config::default()
        })
        .await
    }

    pub(crate) async fn start_with(base: Config) -> Self {
        switchboard_service::telemetry::init_logging();
        let config = Config {
            schema_registry_url: switchboard_tests::registry_url(),
            public_url: Some(PUBLIC_URL.into()),
            twilio_auth_tokens: SecretStrings(vec![TWILIO_TOKEN.into()]),
            topic_partitions: 3,
            ..base
        };
        let settings = config.validate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let task = tokio::spawn(switchboard_ingest::run(settings, listener, admin, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        self.task.await.unwrap().unwrap();
    }
}

pub(crate) fn call(to: &str, call_sid: &str, status: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef".into()),
        ("CallSid", call_sid.into()),
        ("From", "+15005550006".into()),
        ("To", to.into()),
        ("Direction", "inbound".into()),
        ("CallStatus", status.into()),
    ]
}

async fn post_call(
    client: &reqwest::Client,
    ingest: &RunningIngest,
    params: &[(&str, String)],
) -> reqwest::Result<reqwest::Response> {
    post_to(client, &format!("http://{}", ingest.addr), params).await
}

/// Posts a signed Twilio call-status callback to the ingest at `base`.
pub(crate) async fn post_to(
    client: &reqwest::Client,
    base: &str,
    params: &[(&str, String)],
) -> reqwest::Result<reqwest::Response> {
    let path = "/webhooks/twilio/calls";
    let pairs: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    client
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            signing::twilio(&format!("{PUBLIC_URL}{path}"), &pairs),
        )
        .body(form(&pairs))
        .timeout(Duration::from_secs(15))
        .send()
        .await
}

/// A record read back: the decoded envelope, the record headers, the record key.
pub(crate) type Stored = (RawWebhook, Vec<(String, String)>, String);

pub(crate) fn records_for(bootstrap: &str, phone_id: &str, call_sids: &HashSet<String>) -> Vec<Stored> {
    let runtime = tokio::runtime::Handle::current();
    let codec = Codec::new(&switchboard_tests::registry_url()).unwrap();
    let messages =
        tokio::task::block_in_place(|| read_to_end(bootstrap, "switchboard.raw.twilio", "read_committed"))
            .unwrap();
    messages
        .into_iter()
        .filter_map(|message| {
            // Other tests (and earlier runs) write to the same topic: only this test's phone id.
            if message.key() != Some(phone_id.as_bytes()) {
                return None;
            }
            let raw: RawWebhook = tokio::task::block_in_place(|| {
                runtime.block_on(codec.decode(RawWebhook::schema_def(), message.payload().unwrap()))
            })
            .expect("every record decodes with the RawWebhook schema");
            let body = String::from_utf8(raw.body.clone()).unwrap();
            let sid = url::form_urlencoded::parse(body.as_bytes())
                .find(|(k, _)| k == "CallSid")?
                .1
                .into_owned();
            if !call_sids.contains(&sid) {
                return None;
            }
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            Some((raw, headers, key))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_stored_in_kafka_as_an_avro_envelope() {
    let bootstrap = switchboard_tests::kafka_bootstrap();
    let ingest = RunningIngest::start(bootstrap.clone(), Duration::from_secs(5)).await;
    let client = reqwest::Client::new();
    let call_sid = format!("CA{}", &switchboard_tests::unique("x").replace('-', "")[..20]);
    let phone_id = format!("+1555{}", std::process::id() % 10_000_000);
    let params = call(&phone_id, &call_sid, "completed");
    let response = post_call(&client, &ingest, &params).await.unwrap();
    assert_eq!(response.status(), 200);

    let records = records_for(&bootstrap, &phone_id, &HashSet::from([call_sid.clone()]));
    assert_eq!(records.len(), 1, "exactly one record for one accepted webhook");
    let (raw, headers, key) = &records[0];
    assert_eq!(key, &phone_id);
    assert_eq!(raw.source, "twilio");
    assert_eq!(raw.phone_id, phone_id);
    let pairs: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(raw.body, form(&pairs).into_bytes());
    assert_eq!(raw.url, format!("{PUBLIC_URL}/webhooks/twilio/calls"));
    assert!(
        headers.contains(&("event-id".into(), raw.event_id.clone())),
        "{headers:?}"
    );
    assert!(headers.contains(&("source".into(), "twilio".into())));
    assert!(headers.iter().all(|(_, v)| !v.contains(TWILIO_TOKEN)));
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_gets_503_in_time_and_nothing_answered_2xx_is_lost() {
    let broker = PrivateBroker::start_pausable().unwrap();
    let publish_timeout = Duration::from_secs(2);
    let ingest = RunningIngest::start(broker.bootstrap(), publish_timeout).await;
    let client = reqwest::Client::new();
    let mut accepted = HashSet::new();
    let mut sent = 0;
    let mut send = |status: &'static str| {
        sent += 1;
        let sid = format!("CA{:032x}", sent);
        (sid.clone(), call("+15551230000", &sid, status))
    };

    // Warm up: the first request also waits for the producer's first metadata.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (sid, params) = send("ringing");
        let response = post_call(&client, &ingest, &params).await.unwrap();
        if response.status() == 200 {
            accepted.insert(sid);
            break;
        }
        assert!(Instant::now() < deadline, "ingest never became able to publish");
    }

    broker.pause().unwrap();
    for _ in 0..3 {
        let (sid, params) = send("in-progress");
        let started = Instant::now();
        let response = post_call(&client, &ingest, &params).await.unwrap();
        let elapsed = started.elapsed();
        if response.status() == 200 {
            accepted.insert(sid);
            continue;
        }
        assert_eq!(response.status(), 503, "a paused broker means 503");
        assert!(response.headers().contains_key("retry-after"));
        assert!(
            elapsed < publish_timeout + Duration::from_secs(2),
            "answered after {elapsed:?}"
        );
    }
    broker.resume().unwrap();

    // Recovers without a restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut recovered = 0;
    while recovered < 5 {
        assert!(
            Instant::now() < deadline,
            "ingest did not recover after the broker resumed"
        );
        let (sid, params) = send("completed");
        let response = post_call(&client, &ingest, &params).await.unwrap();
        if response.status() == 200 {
            accepted.insert(sid);
            recovered += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    ingest.shutdown().await;

    let stored: HashSet<String> = records_for(&broker.bootstrap(), "+15551230000", &accepted)
        .into_iter()
        .map(|(raw, _, _)| {
            let body = String::from_utf8(raw.body).unwrap();
            url::form_urlencoded::parse(body.as_bytes())
                .find(|(k, _)| k == "CallSid")
                .unwrap()
                .1
                .into_owned()
        })
        .collect();
    let missing: Vec<_> = accepted.difference(&stored).collect();
    assert!(missing.is_empty(), "answered 2xx but not in Kafka: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ingest = RunningIngest::start_with(Config {
        kafka_bootstrap: switchboard_tests::kafka_bootstrap(),
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        ..Config::default()
    })
    .await;

    // Headers that never finish: the connection is closed after the header read timeout.
    let mut slow_head = tokio::net::TcpStream::connect(ingest.addr).await.unwrap();
    slow_head
        .write_all(b"POST /webhooks/twilio/calls HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow_head.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection still open 5 s after a 1 s header timeout"
    );

    // A body that never finishes: 408 after the body read timeout.
    let mut slow_body = tokio::net::TcpStream::connect(ingest.addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /webhooks/twilio/calls HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 100\r\n\r\nCallSid=CA1",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut response = vec![0; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), slow_body.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&response[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(3));
    ingest.shutdown().await;
}

/// The CallSids among `call_sids` whose records are in Kafka under `phone_id`.
pub(crate) fn stored_call_sids(
    bootstrap: &str,
    phone_id: &str,
    call_sids: &HashSet<String>,
) -> HashSet<String> {
    records_for(bootstrap, phone_id, call_sids)
        .into_iter()
        .map(|(raw, _, _)| {
            let body = String::from_utf8(raw.body).unwrap();
            url::form_urlencoded::parse(body.as_bytes())
                .find(|(k, _)| k == "CallSid")
                .unwrap()
                .1
                .into_owned()
        })
        .collect()
}
