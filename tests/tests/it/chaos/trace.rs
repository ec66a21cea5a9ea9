//! One trace per webhook: the stack as processes (ingest, processor, sink, actions dispatcher, a
//! replay) exporting to an OTLP/HTTP receiver served here. One signed Twilio callback, sent with a
//! provider's sampled `traceparent`, must produce ONE trace holding, parent by parent: ingest's
//! request span, its produce, the processor's consume, the sink's write and the action delivery
//! (its HTTP request, whose receiver here sees the same trace in `traceparent`). The processor's
//! transaction and the sink's database batch are spans of their own linked to the record's span; a
//! replayed record starts a new trace linked to the original produce, and so does a dead-lettered
//! record that `dlq redrive` republishes (which the processor then continues). A forged request with
//! a sampled `traceparent` goes no further than its own 401 span, whose JSON log line carries its
//! trace and span ids.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use switchboard_ingest::verify::twilio::TwilioKey;
use switchboard_ingest::verify::{Secret, twilio};
use switchboard_tests::broker::PrivateBroker;

use super::*;

/// A span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    start: u64,
    end: u64,
    attributes: HashMap<String, String>,
    /// (trace id, span id) of each link.
    links: Vec<(String, String)>,
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

type Spans = Arc<Mutex<Vec<Got>>>;

async fn collect(State(spans): State<Spans>, body: Bytes) -> (StatusCode, HeaderMap, Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP/protobuf export");
    let mut got = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            got.push(Got {
                service: service.clone(),
                name: span.name,
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent: hex::encode(&span.parent_span_id),
                kind: span.kind,
                start: span.start_time_unix_nano,
                end: span.end_time_unix_nano,
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| {
                        (
                            kv.key.clone(),
                            text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                        )
                    })
                    .collect(),
                links: span
                    .links
                    .iter()
                    .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                    .collect(),
            });
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/x-protobuf".parse().unwrap());
    (
        StatusCode::OK,
        headers,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// Waits until `found` finds what it looks for in the spans received so far.
/// On a timeout, shows the spans received and the tail of every service's log in `logs`.
async fn wait_for<T>(spans: &Spans, logs: &Path, what: &str, found: impl Fn(&[Got]) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(t) = found(&spans.lock().unwrap()) {
            return t;
        }
        if Instant::now() >= deadline {
            for entry in std::fs::read_dir(logs).unwrap().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                eprintln!("== {}", entry.path().display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
            panic!("no {what} within 90 s; spans: {:#?}", spans.lock().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn one<'a>(spans: &'a [Got], what: &str, keep: impl Fn(&Got) -> bool) -> Option<&'a Got> {
    let mut found = spans.iter().filter(|s| keep(s));
    let first = found.next()?;
    assert!(found.next().is_none(), "more than one {what}: {spans:#?}");
    Some(first)
}

/// The trace as an indented tree: service, span name, start offset and duration.
fn render(spans: &[Got], trace_id: &str) -> String {
    let mut in_trace: Vec<&Got> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    in_trace.sort_by_key(|s| s.start);
    let t0 = in_trace.first().map_or(0, |s| s.start);
    let ids: Vec<&str> = in_trace.iter().map(|s| s.span_id.as_str()).collect();
    let mut out = format!("trace {trace_id}\n");
    fn walk(out: &mut String, spans: &[&Got], parent: &str, depth: usize, t0: u64) {
        for span in spans.iter().filter(|s| s.parent == parent) {
            let _ = writeln!(
                out,
                "{:indent$}└─ {:<22} {:<40} +{:>6.1} ms {:>7.1} ms",
                "",
                span.service,
                span.name,
                (span.start - t0) as f64 / 1e6,
                (span.end.saturating_sub(span.start)) as f64 / 1e6,
                indent = depth * 3
            );
            walk(out, spans, &span.span_id, depth + 1, t0);
        }
    }
    // Roots here: spans whose parent is not in the trace (the provider's remote span).
    let roots: Vec<String> = in_trace
        .iter()
        .filter(|s| !ids.contains(&s.parent.as_str()))
        .map(|s| s.parent.clone())
        .collect();
    for root in roots.iter().collect::<std::collections::BTreeSet<_>>() {
        let _ = writeln!(out, "(remote parent {root})");
        walk(&mut out, &in_trace, root, 0, t0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_one_twilio_webhook_is_one_trace_from_ingest_to_the_action_receiver() {
    let _one = ONE_AT_A_TIME.lock().await;
    let spans: Spans = Arc::default();
    let otlp = serve(
        axum::Router::new()
            .route("/v1/traces", axum::routing::post(collect))
            .with_state(Arc::clone(&spans)),
    )
    .await;
    // The action's target: records the trace context of every request.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let target = serve(
        axum::Router::new()
            .route(
                "/events",
                axum::routing::post(
                    |State(seen): State<Arc<Mutex<Vec<String>>>>, headers: HeaderMap| async move {
                        let traceparent = headers
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        seen.lock().unwrap().push(traceparent);
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(Arc::clone(&seen)),
    )
    .await;

    let mut stack = Stack::bare(PrivateBroker::start().unwrap(), "trace.db");
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("SWITCHBOARD_LOG_FORMAT", "json"),
    ];
    stack.registry = Some(stack.spawn_registry().await);
    let mut ingest = Command::new(binary("switchboard-ingest"));
    stack.common(&mut ingest);
    let ingest = ingest
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{}", stack.ingest_port))
        .env("SWITCHBOARD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_PUBLIC_URL", stack.public_url())
        .env("SWITCHBOARD_TWILIO_AUTH_TOKENS", TWILIO_TOKEN)
        .envs(otel)
        .stderr(stack.log("ingest"))
        .spawn()
        .unwrap();
    stack.ingest = Some(Proc(ingest));
    wait_for_port(stack.ingest_port, "ingest").await;
    stack.processor = Some(stack.spawn_instance("processor", &[], "trace-0", &otel));
    // The provider's span: a sampled `traceparent` ingest must continue.
    let provider_trace = trace_id(1);
    let provider_span = "00f067aa0ba902b7";
    let started = rfc3339_from_now(-120);
    let url = format!("{}/webhooks/twilio/calls", stack.public_url());
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallSid", "CA7ace0000000000000000000000000001"),
        ("CallStatus", "completed"),
        ("CallDuration", "42"),
        ("Direction", "inbound"),
        ("From", "+15005550006"),
        ("To", "+15557000001"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let key = TwilioKey::AuthToken(Secret::new(TWILIO_TOKEN.as_bytes().to_vec()));
    let signature = twilio::sign(&key, &url, &params);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let client = reqwest::Client::new();
    // Forged: a sampled `traceparent` and a bad signature.
    let forged_trace = trace_id(2);
    let forged = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", "Zm9yZ2Vk")
        .header("traceparent", format!("00-{forged_trace}-{provider_span}-01"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // Ingest may still be waiting for the broker: send until accepted, like Twilio.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", &signature)
            .header("traceparent", format!("00-{provider_trace}-{provider_span}-01"))
            .body(body.clone())
            .send()
            .await;
        if response.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "ingest never accepted the webhook");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let event_id = twilio::event_id(&url, &params);
    println!("event {event_id}, provider trace {provider_trace}");
    // Another call's callback in a trace its caller did not sample: no service may export a span
    // of it, and its context must still travel with the records (so that every service downstream
    // knows the trace, and that it is not sampled).
    let unsampled_trace = trace_id(4);
    let mut unsampled_params = params.clone();
    unsampled_params[1].1 = "CA7ace0000000000000000000000000002".to_owned();
    let unsampled = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", twilio::sign(&key, &url, &unsampled_params))
        .header("traceparent", format!("00-{unsampled_trace}-{provider_span}-00"))
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&unsampled_params)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert!(unsampled.status().is_success(), "{}", unsampled.status());
    let unsampled_event = twilio::event_id(&url, &unsampled_params);

    let t = provider_trace.as_str();
    let request = wait_for(&spans, stack.logs(), "ingest request span", |s| {
        one(s, "ingest request span", |g| g.trace_id == t && g.kind == SERVER).cloned()
    })
    .await;
    assert_eq!(request.service, "switchboard-ingest");
    assert_eq!(
        request.parent, provider_span,
        "ingest continues the caller's span"
    );
    assert_eq!(request.name, "POST /webhooks/twilio/{*rest}");
    assert_eq!(request.attributes["http.response.status_code"], "200");
    assert_eq!(request.attributes["http.route"], "/webhooks/twilio/{*rest}");

    let produce = wait_for(&spans, stack.logs(), "produce span", |s| {
        one(s, "produce span", |g| g.trace_id == t && g.kind == PRODUCER).cloned()
    })
    .await;
    assert_eq!(produce.parent, request.span_id);
    assert_eq!(produce.attributes["messaging.system"], "kafka");
    assert_eq!(
        produce.attributes["messaging.destination.name"],
        "switchboard.raw.twilio"
    );
    assert_eq!(produce.attributes["messaging.kafka.message.key"], "+15557000001");
    assert!(produce.attributes.contains_key("messaging.kafka.offset"));

    let process = wait_for(&spans, stack.logs(), "processor span", |s| {
        one(s, "processor span", |g| {
            g.trace_id == t && g.kind == CONSUMER && g.service == "switchboard-processor"
        })
        .cloned()
    })
    .await;
    assert_eq!(
        process.parent, produce.span_id,
        "the processor continues the record's trace"
    );
    assert_eq!(process.name, "process switchboard.raw.twilio");
    assert_eq!(
        process.attributes["messaging.consumer.group.name"],
        "switchboard-processor"
    );
    assert_eq!(
        process.attributes["messaging.destination.partition.id"],
        produce.attributes["messaging.destination.partition.id"]
    );
    assert_eq!(
        process.attributes["messaging.kafka.offset"],
        produce.attributes["messaging.kafka.offset"]
    );

    // The unsampled trace's context, on its raw record and on its domain event (the processor
    // continued it), with the trace id the caller sent and the sampled flag off.
    for topic in ["switchboard.raw.twilio", "switchboard.calls"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        let traceparent = loop {
            let view = committed::committed_view(&stack.broker.bootstrap(), topic)
                .await
                .unwrap();
            let found = view
                .records
                .iter()
                .find(|r| r.header("event-id").as_deref() == Some(unsampled_event.as_str()))
                .map(|r| r.header("traceparent").unwrap_or_default());
            if let Some(found) = found {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "no record of the unsampled webhook on {topic}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            traceparent.starts_with(&format!("00-{unsampled_trace}-")) && traceparent.ends_with("-00"),
            "{topic}: {traceparent:?}"
        );
    }

    // The sink and the dispatcher start once the processor has created the domain topics (a
    // consumer subscribed to a topic that does not exist yet may not see it for minutes).
    stack.sink = Some(stack.spawn_instance("sink", &["sink"], "trace-0", &otel));
    let actions_toml = stack.dir.path().join("actions.toml");
    std::fs::write(
        &actions_toml,
        format!(
            "retry_delays = [\"200ms\"]\n[[action]]\nname = \"app\"\non = [\"call.*\"]\nurl = \"{target}/events\"\ntimeout = \"2s\"\n"
        ),
    )
    .unwrap();
    let actions_config = actions_toml.display().to_string();
    let mut actions_env = otel.to_vec();
    actions_env.push(("SWITCHBOARD_CONFIG", &actions_config));
    let _actions = stack.spawn_instance("actions", &["actions"], "trace-0", &actions_env);

    let transaction = wait_for(&spans, stack.logs(), "transaction span", |s| {
        s.iter()
            .find(|g| g.links.contains(&(t.to_owned(), process.span_id.clone())))
            .cloned()
    })
    .await;
    assert_eq!(transaction.name, "kafka transaction");
    assert_ne!(
        transaction.trace_id, t,
        "a transaction is a trace of its own, linked to its records"
    );

    let write = wait_for(&spans, stack.logs(), "sink span", |s| {
        one(s, "sink span", |g| {
            g.trace_id == t && g.service == "switchboard-sink"
        })
        .cloned()
    })
    .await;
    assert_eq!(
        write.parent, process.span_id,
        "the sink continues the domain record's trace"
    );
    assert_eq!(write.name, "write switchboard.calls");
    assert_eq!(
        write.attributes["messaging.consumer.group.name"],
        "switchboard-sink"
    );
    let batch = wait_for(&spans, stack.logs(), "database batch span", |s| {
        s.iter()
            .find(|g| g.links.contains(&(t.to_owned(), write.span_id.clone())))
            .cloned()
    })
    .await;
    assert_eq!(batch.name, "database transaction");

    let deliver = wait_for(&spans, stack.logs(), "delivery span", |s| {
        one(s, "delivery span", |g| {
            g.trace_id == t && g.kind == CONSUMER && g.service == "switchboard-actions"
        })
        .cloned()
    })
    .await;
    assert_eq!(
        deliver.parent, process.span_id,
        "the dispatcher continues the domain record's trace"
    );
    assert_eq!(deliver.name, "deliver switchboard.calls");
    let request_out = wait_for(&spans, stack.logs(), "outbound request span", |s| {
        one(s, "outbound request span", |g| {
            g.trace_id == t && g.kind == CLIENT
        })
        .cloned()
    })
    .await;
    assert_eq!(request_out.parent, deliver.span_id);
    let routing = wait_for(&spans, stack.logs(), "actions transaction span", |s| {
        s.iter()
            .find(|g| {
                g.service == "switchboard-actions"
                    && g.links.contains(&(t.to_owned(), deliver.span_id.clone()))
            })
            .cloned()
    })
    .await;
    assert_eq!(routing.name, "kafka transaction");
    assert_ne!(
        routing.trace_id, t,
        "the dispatcher's transaction is a trace of its own, linked to its deliveries"
    );
    assert_eq!(request_out.attributes["http.response.status_code"], "204");
    let received: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|traceparent| !traceparent.contains(&unsampled_trace))
        .cloned()
        .collect();
    assert_eq!(
        received,
        vec![format!("00-{t}-{}-01", request_out.span_id)],
        "the receiver sees the same trace, parented by the outbound request span"
    );
    // The unsampled call's delivery carries its trace too, still unsampled.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unsampled: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|traceparent| traceparent.contains(&unsampled_trace))
            .cloned()
            .collect();
        if let [traceparent] = unsampled.as_slice() {
            assert!(
                traceparent.starts_with(&format!("00-{unsampled_trace}-")) && traceparent.ends_with("-00"),
                "{traceparent}"
            );
            break;
        }
        assert!(unsampled.len() < 2, "delivered twice: {unsampled:?}");
        assert!(
            Instant::now() < deadline,
            "the unsampled call's action was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing leaks: no signature, token or body in any attribute.
    for span in spans.lock().unwrap().iter() {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(TWILIO_TOKEN) && !value.contains(&signature) && !key.contains("signature"),
                "{key}={value} in {}",
                span.name
            );
        }
    }
    // The forged request's trace holds its 401 span and nothing else.
    let forged_spans = wait_for(&spans, stack.logs(), "forged request span", |s| {
        let found: Vec<Got> = s.iter().filter(|g| g.trace_id == forged_trace).cloned().collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(forged_spans.len(), 1, "{forged_spans:#?}");
    assert_eq!(forged_spans[0].attributes["http.response.status_code"], "401");

    // A replay into a backfill copy: a new trace, linked to the original record's produce.
    run_to_completion(
        &stack,
        &["replay", "--from", &started, "--into", "backfill"],
        "replay",
        &otel,
    );
    let relinked = wait_for(&spans, stack.logs(), "replayed record span", |s| {
        s.iter()
            .find(|g| {
                g.service == "switchboard-replay"
                    && g.links.contains(&(t.to_owned(), produce.span_id.clone()))
            })
            .cloned()
    })
    .await;
    assert_ne!(
        relinked.trace_id, t,
        "a replayed record starts a trace of its own"
    );
    assert_eq!(relinked.kind, CONSUMER);
    assert_eq!(relinked.name, "process switchboard.raw.twilio");

    // A poison record (not Avro) carrying a trace: dead-lettered in that trace, then redriven by
    // `dlq redrive` into a new trace linked to it, which the processor continues.
    let poison_trace = trace_id(3);
    let poison_parent = "0a0b0c0d0e0f0102";
    let producer: rdkafka::producer::FutureProducer =
        switchboard_tests::client_config_at(&stack.broker.bootstrap())
            .create()
            .unwrap();
    let traceparent = format!("00-{poison_trace}-{poison_parent}-01");
    producer
        .send(
            rdkafka::producer::FutureRecord::to("switchboard.raw.twilio")
                .key("+15557000002")
                .payload("not avro")
                .headers(
                    rdkafka::message::OwnedHeaders::new()
                        .insert(rdkafka::message::Header {
                            key: "source",
                            value: Some("twilio"),
                        })
                        .insert(rdkafka::message::Header {
                            key: "traceparent",
                            value: Some(traceparent.as_str()),
                        }),
                ),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let dead_lettered = wait_for(&spans, stack.logs(), "dead-lettered record span", |s| {
        one(s, "dead-lettered record span", |g| g.trace_id == poison_trace).cloned()
    })
    .await;
    assert_eq!(dead_lettered.parent, poison_parent);
    run_to_completion(&stack, &["dlq", "redrive", "--source", "twilio"], "dlq", &otel);
    let poison = (poison_trace.clone(), poison_parent.to_owned());
    let redrive_span = wait_for(&spans, stack.logs(), "redrive span", |s| {
        s.iter()
            .find(|g| g.service == "switchboard-dlq" && g.links.contains(&poison))
            .cloned()
    })
    .await;
    assert_ne!(
        redrive_span.trace_id, poison_trace,
        "a redrive starts a trace of its own"
    );
    assert_eq!(redrive_span.name, "redrive switchboard.dlq");
    wait_for(&spans, stack.logs(), "processor span of the redriven copy", |s| {
        one(s, "processor span of the redriven copy", |g| {
            g.service == "switchboard-processor" && g.parent == redrive_span.span_id
        })
        .cloned()
    })
    .await;

    // JSON log lines written inside a sampled span carry its ids; no signature is logged.
    let processor_log = std::fs::read_to_string(stack.logs().join("processor.log")).unwrap_or_default();
    let ingest_log = std::fs::read_to_string(stack.logs().join("ingest.log")).unwrap_or_default();
    assert!(
        !ingest_log.contains(&signature) && !processor_log.contains(&signature),
        "a signature in the logs"
    );
    let rejected_line = format!(
        "{{\"trace_id\":\"{forged_trace}\",\"span_id\":\"{}\",",
        forged_spans[0].span_id
    );
    assert!(
        ingest_log
            .lines()
            .any(|line| line.starts_with(&rejected_line) && line.contains("webhook rejected")),
        "the rejection's JSON log line carries its trace and span ids:\n{ingest_log}"
    );

    // By now every service has exported what it had of the unsampled webhook's trace: nothing.
    let exported: Vec<Got> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|g| g.trace_id == unsampled_trace)
        .cloned()
        .collect();
    assert!(exported.is_empty(), "spans of an unsampled trace: {exported:#?}");

    println!("{}", render(&spans.lock().unwrap(), t));
    println!(
        "linked: {} -> {} ; {} -> {} ; {} -> {}",
        transaction.name, process.name, batch.name, write.name, relinked.name, produce.name
    );
}

/// Runs `switchboard-processor ARGS` against the stack until it exits, which must be a success.
fn run_to_completion(stack: &Stack, args: &[&str], log: &str, env: &[(&str, &str)]) {
    let mut command = Command::new(binary("switchboard-processor"));
    stack.common(&mut command);
    let status = command
        .args(args)
        .env("SWITCHBOARD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_INSTANCE_ID", format!("trace-{log}"))
        .envs(env.iter().copied())
        .stderr(stack.log(log))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{args:?} failed: see {}",
        stack.logs().display()
    );
}

/// A trace id unlikely to repeat: the clock's nanoseconds, spread over 128 bits, plus `salt`.
fn trace_id(salt: u128) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:032x}",
        (nanos << 64) | nanos.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt
    )
}

/// Now plus `offset_secs`, RFC 3339.
fn rfc3339_from_now(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    chrono::DateTime::from_timestamp(now + offset_secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
