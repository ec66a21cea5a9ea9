//! Issue 13, item 10: the operational endpoints live on the admin listener, `/readyz` says what is
//! not ready without internals, every error answer is JSON, and refused requests are logged at a
//! bounded rate (the metrics still count each one).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use switchboard_ingest::publish::NotReady;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{self, Ingest};

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn metrics_and_probes_are_served_on_the_admin_listener_only() {
    let ingest = Ingest::new(support::config());
    for path in ["/metrics", "/readyz", "/healthz"] {
        let (status, _, body) = support::send(&ingest.router, get(path)).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{path} on the webhook listener: {body}"
        );
        let (status, _, _) = support::send(&ingest.admin, get(path)).await;
        assert_eq!(status, StatusCode::OK, "{path} on the admin listener");
    }
}

#[tokio::test]
async fn readiness_names_what_is_not_ready_without_internals() {
    let ingest = Ingest::new(support::config());
    let internal = "BrokerTransportFailure (Local: Broker transport failure) kafka-7.prod.internal:9092";
    for (not_ready, names) in [
        (NotReady::Kafka(internal.into()), "kafka"),
        (
            NotReady::Registry(
                "error sending request for url (http://registry.prod.internal:8081/subjects)".into(),
            ),
            "schema registry",
        ),
    ] {
        *ingest.publisher.not_ready.lock().unwrap() = Some(not_ready);
        let (status, headers, body) = support::send(&ingest.admin, get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(body.contains(names), "{body}");
        assert!(
            !body.contains("internal") && !body.contains(":9092") && !body.contains("http"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn axum_rejections_answer_the_json_error_body() {
    let ingest = Ingest::new(support::config());
    let invalid_segment = Request::post("/webhooks/generic/%FF")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let generic = Ingest::new(switchboard_ingest::config::Config {
        generic: vec![switchboard_ingest::config::GenericSource {
            name: "gh".into(),
            scheme: switchboard_ingest::config::GenericScheme::Github,
            secrets: switchboard_ingest::config::SecretStrings(vec!["s".into()]),
            phone_id_pointer: None,
        }],
        ..support::config()
    });
    let cases = [
        (
            &generic.router,
            invalid_segment,
            StatusCode::BAD_REQUEST,
            "bad request",
        ),
        (
            &ingest.router,
            get("/webhooks/stripe"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ),
        (
            &ingest.admin,
            Request::post("/healthz").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ),
    ];
    for (router, request, expected, reason) in cases {
        let uri = request.uri().clone();
        let (status, headers, body) = support::send(router, request).await;
        assert_eq!(status, expected, "{uri}: {body}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{uri}");
        assert_eq!(body, format!(r#"{{"error":"{reason}"}}"#), "{uri}");
    }
}

/// Counts the INFO "webhook rejected" lines.
struct CountRejections(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountRejections {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}") == "webhook rejected" {
                    self.0 = true;
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        if message.0 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test]
async fn a_flood_of_forged_requests_logs_a_few_lines_and_counts_them_all() {
    let lines = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(CountRejections(Arc::clone(&lines)));
    let _guard = tracing::subscriber::set_default(subscriber);

    let ingest = Ingest::new(support::config());
    const FORGED: usize = 500;
    for _ in 0..FORGED {
        let request = Request::post("/webhooks/stripe")
            .header(header::CONTENT_TYPE, "application/json")
            .header("stripe-signature", "t=1,v1=00")
            .body(Body::from(r#"{"id":"evt_forged"}"#))
            .unwrap();
        let (status, _, _) = support::send(&ingest.router, request).await;
        assert!(status.is_client_error(), "{status}");
    }
    let logged = lines.load(Ordering::Relaxed);
    assert!(
        (1..=20).contains(&logged),
        "{logged} log lines for {FORGED} forged requests"
    );

    let (_, _, metrics) = support::send(&ingest.admin, get("/metrics")).await;
    let counted: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("switchboard_ingest_requests_total{")
                && line.contains("source=\"stripe\"")
                && !line.contains("outcome=\"accepted\"")
                && !line.contains("outcome=\"duplicate\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(counted >= FORGED as f64, "every refusal is counted: {counted}");
}
