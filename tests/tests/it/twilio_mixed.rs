//! Issue 18's acceptance test: the same calls reported through Twilio status callbacks, through
//! Event Streams batches, or through both at once (shuffled, with redeliveries on both channels)
//! end in the same row of the calls API. End to end: real HTTP into ingest, the broker, the
//! processor with its dedup and call state, the sink and its calls API.
//!
//! Each call exists three times with the same transitions and timestamps, under three call sids:
//! callbacks only, Event Streams only, and mixed. Their rows must be equal but for the sid, and
//! equal to the row the transitions define. A transition that arrives on both channels is two
//! domain events (their event ids differ); call state folds them to one row.

use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_ingest::config::{Config, SecretStrings};
use switchboard_ingest::samples::{self, Outgoing};
use switchboard_ingest::send;
use switchboard_ingest::verify::Secret;
use switchboard_ingest::verify::twilio::TwilioKey;
use switchboard_schemas::domain::CallEvent;
use switchboard_schemas::topics;
use switchboard_tests::broker::PrivateBroker;
use tokio::sync::oneshot;
use url::Url;

use crate::pipeline::{API_TOKEN, Running, read, start_processor, start_sink};

const PUBLIC_URL: &str = "https://hooks.example.com";
const TWILIO_TOKEN: &str = "mixed-twilio-token";
const RECEPTIONIST: &str = "+15557770018";
const CALLER: &str = "+15005550006";
/// 2025-01-14T18:05:00Z; transition `i` of call `c` happens `c * 60 + i * 7` seconds later.
const START: i64 = 1_736_877_900;
const CALLS: usize = 4;
/// `(event type suffix, CallStatus, SequenceNumber)`.
const TRANSITIONS: [(&str, &str, &str); 4] = [
    ("initiated", "initiated", "0"),
    ("ringing", "ringing", "1"),
    ("answered", "in-progress", "2"),
    ("completed", "completed", "3"),
];

async fn start_ingest(broker: &PrivateBroker) -> (Running, String) {
    let config = Config {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: switchboard_tests::registry_url(),
        public_url: Some(PUBLIC_URL.into()),
        twilio_auth_tokens: SecretStrings(vec![TWILIO_TOKEN.into()]),
        topic_partitions: 3,
        // Redeliveries must reach the processor: its dedup is what this test exercises.
        replay_cache_entries: 0,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(switchboard_ingest::run(
        config.validate().unwrap(),
        listener,
        admin,
        async {
            let _ = stopped.await;
        },
    ));
    (Running::new(stop, task), base)
}

/// A deterministic pseudo-random sequence (64-bit LCG), so a failure replays exactly.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % bound as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.next(i + 1));
        }
    }
}

fn call_sid(variant: char, call: usize) -> String {
    format!("CA{variant}{call:031}")
}

fn at(call: usize, transition: usize) -> i64 {
    START + call as i64 * 60 + transition as i64 * 7
}

/// The status callback parameters of `transition` of a call.
fn params(sid: &str, call: usize, transition: usize) -> Vec<(String, String)> {
    let (_, status, sequence) = TRANSITIONS[transition];
    let mut overrides = vec![
        ("CallSid".to_owned(), sid.to_owned()),
        ("CallStatus".to_owned(), status.to_owned()),
        ("SequenceNumber".to_owned(), sequence.to_owned()),
        ("From".to_owned(), CALLER.to_owned()),
        ("Caller".to_owned(), CALLER.to_owned()),
        ("To".to_owned(), RECEPTIONIST.to_owned()),
        ("Called".to_owned(), RECEPTIONIST.to_owned()),
        ("CallDuration".to_owned(), (call * 10 + 30).to_string()),
    ];
    if status != "completed" {
        overrides.retain(|(name, _)| name != "CallDuration");
    }
    let mut params = samples::twilio_params(at(call, transition), &overrides);
    if status != "completed" {
        params.retain(|(name, _)| name != "CallDuration" && name != "Duration");
    }
    params
}

fn key() -> TwilioKey {
    TwilioKey::AuthToken(Secret::new(TWILIO_TOKEN))
}

fn callback(base: &str, params: &[(String, String)]) -> Outgoing {
    samples::twilio_request(
        Url::parse(&format!("{base}/webhooks/twilio/calls")).unwrap(),
        Some(&Url::parse(PUBLIC_URL).unwrap()),
        params,
        false,
        &key(),
    )
}

fn event(call: usize, transition: usize, params: &[(String, String)]) -> Value {
    samples::twilio_call_event(
        at(call, transition),
        TRANSITIONS[transition].0,
        &format!("{PUBLIC_URL}/webhooks/twilio/calls"),
        params,
    )
}

fn batch(base: &str, events: &[Value]) -> Outgoing {
    samples::twilio_events_request(
        Url::parse(&format!("{base}/webhooks/twilio-events")).unwrap(),
        Some(&Url::parse(PUBLIC_URL).unwrap()),
        events,
        &key(),
        None,
    )
}

/// Posts until ingest answers 200 (it may answer 503 until its producer has metadata).
async fn deliver(client: &reqwest::Client, request: &Outgoing) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = send::send(client, request.clone()).await.unwrap();
        if reply.status == 200 {
            return;
        }
        assert_eq!(reply.status, 503, "{}: {}", request.url, reply.body);
        assert!(Instant::now() < deadline, "ingest never accepted {}", request.url);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The calls API row `transitions` define, without `call_sid`.
fn expected_row(call: usize) -> Value {
    let rfc3339 = |unix: i64| {
        let text = samples::twilio_params(unix, &[])
            .into_iter()
            .find(|(name, _)| name == "Timestamp")
            .unwrap()
            .1;
        let parsed = api_time_of_rfc2822(&text);
        Value::String(parsed)
    };
    serde_json::json!({
        "phone_id": RECEPTIONIST,
        "from": CALLER,
        "to": RECEPTIONIST,
        "direction": "inbound",
        "status": "completed",
        "duration_seconds": call * 10 + 30,
        "recording_url": null,
        "recording_duration": null,
        "transcription_text": null,
        "started_at": rfc3339(at(call, 2)),
        "ended_at": rfc3339(at(call, 3)),
        "updated_at": rfc3339(at(call, 3)),
    })
}

/// `Tue, 14 Jan 2025 18:05:00 +0000` -> `2025-01-14T18:05:00.000Z`, the calls API's format.
fn api_time_of_rfc2822(text: &str) -> String {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .unwrap()
        + 1;
    format!("{}-{month:02}-{:0>2}T{}.000Z", parts[3], parts[1], parts[4])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_and_event_streams_for_the_same_calls_converge_to_one_row() {
    let broker = PrivateBroker::start().unwrap();
    let (ingest, base) = start_ingest(&broker).await;
    let processor = start_processor(&broker).await;
    let database = tempfile::tempdir().unwrap();
    let (sink, sink_base) = start_sink(
        &broker,
        format!("sqlite://{}", database.path().join("calls.db").display()),
    )
    .await;
    let client = reqwest::Client::new();
    let mut random = Lcg(18);

    // What each channel delivers: callbacks one per request, events in batches.
    let mut callbacks: Vec<Outgoing> = Vec::new();
    let mut events: Vec<Value> = Vec::new();
    let mut mixed_deliveries = std::collections::BTreeSet::new();
    for call in 0..CALLS {
        for transition in 0..TRANSITIONS.len() {
            let only_callbacks = params(&call_sid('A', call), call, transition);
            callbacks.push(callback(&base, &only_callbacks));
            let only_events = params(&call_sid('B', call), call, transition);
            events.push(event(call, transition, &only_events));
            // Mixed: a callback, an event, or both, each possibly delivered twice.
            let mixed = params(&call_sid('C', call), call, transition);
            let channels = random.next(3);
            if channels != 1 {
                let request = callback(&base, &mixed);
                if random.next(2) == 0 {
                    callbacks.push(request.clone());
                }
                callbacks.push(request);
                mixed_deliveries.insert(("callback", transition, call));
            }
            if channels != 0 {
                let event = event(call, transition, &mixed);
                if random.next(2) == 0 {
                    events.push(event.clone());
                }
                events.push(event);
                mixed_deliveries.insert(("event", transition, call));
            }
        }
    }
    random.shuffle(&mut callbacks);
    random.shuffle(&mut events);
    let mut requests: Vec<Outgoing> = callbacks;
    for chunk in events.chunks(5) {
        let request = batch(&base, chunk);
        // Twilio redelivers a batch it got no 2xx for: some batches arrive twice.
        if random.next(3) == 0 {
            requests.push(request.clone());
        }
        requests.push(request);
    }
    random.shuffle(&mut requests);
    for request in &requests {
        deliver(&client, request).await;
    }

    // Every variant of every call ends in the row its transitions define.
    let deadline = Instant::now() + Duration::from_secs(120);
    for call in 0..CALLS {
        let expected = expected_row(call);
        for variant in ['A', 'B', 'C'] {
            let sid = call_sid(variant, call);
            let row = loop {
                let response = client
                    .get(format!("{sink_base}/calls/{sid}"))
                    .bearer_auth(API_TOKEN)
                    .send()
                    .await
                    .unwrap();
                let mut body = if response.status() == 200 {
                    response.json::<Value>().await.unwrap()
                } else {
                    Value::Null
                };
                if let Some(object) = body.as_object_mut() {
                    assert_eq!(object.remove("call_sid"), Some(Value::String(sid.clone())));
                }
                if body == expected {
                    break body;
                }
                assert!(
                    Instant::now() < deadline,
                    "call {sid} never reached its row:\n got {body}\nwant {expected}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            };
            assert_eq!(row, expected, "{sid}");
        }
    }

    // Redeliveries are dropped by the processor's dedup; a transition that came through both
    // channels is two domain events (distinct event ids), folded into the one row above.
    let domain: Vec<(CallEvent, Vec<u8>)> = read(&broker, topics::CALLS, CallEvent::schema_def()).await;
    let count = |variant: char| {
        domain
            .iter()
            .filter(|(event, _)| event.call_sid.starts_with(&format!("CA{variant}")))
            .count()
    };
    assert_eq!(count('A'), CALLS * TRANSITIONS.len());
    assert_eq!(count('B'), CALLS * TRANSITIONS.len());
    assert_eq!(count('C'), mixed_deliveries.len());
    assert!(
        mixed_deliveries.len() > CALLS * TRANSITIONS.len(),
        "the seed must send some transitions on both channels"
    );
    let mut ids: Vec<&str> = domain.iter().map(|(event, _)| event.event_id.as_str()).collect();
    ids.sort_unstable();
    let total = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), total, "no event is stored twice");

    sink.stop().await;
    processor.stop().await;
    ingest.stop().await;
}
