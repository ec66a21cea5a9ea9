//! Issue 13, item 7: forged bodies must be cheap to refuse. A form's parameter count is capped
//! before any parsing or signature work, and the request body bytes held in memory at once are
//! bounded across all requests: past the budget a request is answered 503 with `Retry-After` at
//! once, without reading its body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use futures::channel::mpsc;
use switchboard_ingest::config::Config;

use crate::signing::{self, PUBLIC_URL, form};
use crate::support::{self, Ingest};

const FORM: &str = "application/x-www-form-urlencoded";

fn twilio_form(params: &[(&str, &str)], signature: &str) -> Request<Body> {
    Request::post("/webhooks/twilio/calls")
        .header(header::CONTENT_TYPE, FORM)
        .header("x-twilio-signature", signature)
        .body(Body::from(form(params)))
        .unwrap()
}

fn signed(params: &[(&str, &str)]) -> Request<Body> {
    let signature = signing::twilio(&format!("{PUBLIC_URL}/webhooks/twilio/calls"), params);
    twilio_form(params, &signature)
}

#[tokio::test]
async fn a_form_of_half_a_million_empty_parameters_is_refused_unparsed() {
    let ingest = Ingest::new(support::config());
    // 896 KiB of `a&a&a&…` (just under `max_body_bytes`): ~459k parameters, unsigned.
    let body = "a&".repeat(448 * 1024);
    let request = Request::post("/webhooks/twilio/calls")
        .header(header::CONTENT_TYPE, FORM)
        .header("x-twilio-signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .body(Body::from(body))
        .unwrap();
    let started = Instant::now();
    let (status, _, body) = support::send(&ingest.router, request).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body, r#"{"error":"form body has more than 1000 parameters"}"#);
    assert!(elapsed < Duration::from_millis(500), "refused in {elapsed:?}");
    assert!(ingest.published().is_empty());
}

#[tokio::test]
async fn the_parameter_cap_is_configurable_and_exact() {
    let ingest = Ingest::new(Config {
        max_form_params: 4,
        ..support::config()
    });
    let four = [
        ("CallSid", "CA1"),
        ("From", "+15005550006"),
        ("To", "+15551230000"),
        ("CallStatus", "completed"),
    ];
    let (status, _, body) = support::send(&ingest.router, signed(&four)).await;
    assert_eq!(status, StatusCode::OK, "exactly the cap: {body}");
    let five = [four.as_slice(), &[("Direction", "inbound")]].concat();
    let (status, _, body) = support::send(&ingest.router, signed(&five)).await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "a signed form over the cap too: {body}"
    );
    assert_eq!(ingest.published().len(), 1);
}

/// A request whose declared body never finishes arriving: it holds its reservation until dropped.
fn slow_body(length: usize) -> (Request<Body>, mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let (sender, receiver) = mpsc::channel(1);
    let request = Request::post("/webhooks/twilio/calls")
        .header(header::CONTENT_TYPE, FORM)
        .header(header::CONTENT_LENGTH, length)
        .header("x-twilio-signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .body(Body::from_stream(receiver))
        .unwrap();
    (request, sender)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_are_bounded_and_the_excess_is_told_to_retry_at_once() {
    let ingest = Arc::new(Ingest::new(Config {
        max_body_bytes: 64 * 1024,
        max_in_flight_body_bytes: 128 * 1024,
        body_read_timeout: Duration::from_secs(30),
        ..support::config()
    }));
    // Two slow senders reserve the whole budget.
    let mut senders = Vec::new();
    let mut slow = Vec::new();
    for _ in 0..2 {
        let (request, sender) = slow_body(64 * 1024);
        senders.push(sender);
        let ingest = Arc::clone(&ingest);
        slow.push(tokio::spawn(async move {
            support::send(&ingest.router, request).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let call = [
        ("CallSid", "CA1"),
        ("From", "+15005550006"),
        ("To", "+15551230000"),
    ];
    let started = Instant::now();
    let (status, headers, body) = support::send(&ingest.router, signed(&call)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(body.starts_with(r#"{"error":"#), "{body}");
    assert!(started.elapsed() < Duration::from_millis(200), "answered at once");

    // The slow senders' connections break; their reservations return.
    for mut sender in senders {
        sender
            .try_send(Err(std::io::Error::other("connection reset")))
            .unwrap();
    }
    for request in slow {
        let (status, _, _) = request.await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "an aborted body");
    }
    let (status, _, body) = support::send(&ingest.router, signed(&call)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
