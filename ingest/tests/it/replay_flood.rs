//! Issue 13, item 5: one captured, validly signed request replayed at full speed must not lock its
//! provider out. A replay of an event Kafka already acknowledged is answered 200 without a second
//! record and without spending the source's rate limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use switchboard_ingest::config::Config;

use crate::signing::{self, STRIPE_SECRET};
use crate::support::{self, Ingest};

fn stripe_event(id: &str) -> Request<Body> {
    let body = format!(
        r#"{{"id":"{id}","object":"event","type":"invoice.paid","account":"acct_1","data":{{"object":{{"metadata":{{"phone_id":"+15551230000"}}}}}}}}"#
    );
    let signature = signing::timestamped(STRIPE_SECRET, signing::now(), &body);
    Request::post("/webhooks/stripe")
        .header(header::CONTENT_TYPE, "application/json")
        .header("stripe-signature", signature)
        .body(Body::from(body))
        .unwrap()
}

/// The issue's scenario: a replay flood of one stored Stripe event while Stripe delivers 10 genuine
/// events; the source's rate limit (5/s, burst 5) is what the flood used to use up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_flood_does_not_lock_out_the_genuine_deliveries() {
    let ingest = Arc::new(Ingest::new(Config {
        rate_limit_per_second: 5,
        rate_limit_burst: 5,
        ..support::config()
    }));
    let (status, _, body) = support::send(&ingest.router, stripe_event("evt_captured")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let done = Arc::new(AtomicBool::new(false));
    let replays = Arc::new(AtomicUsize::new(0));
    let replays_refused = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let (ingest, done) = (Arc::clone(&ingest), Arc::clone(&done));
            let (replays, refused) = (Arc::clone(&replays), Arc::clone(&replays_refused));
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let (status, _, _) = support::send(&ingest.router, stripe_event("evt_captured")).await;
                    if status != StatusCode::OK {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    replays.fetch_add(1, Ordering::Relaxed);
                    // A replay of a stored event never waits on I/O here (no sockets, a fake
                    // publisher): let the genuine sender's timer run.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    let mut genuine = Vec::new();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (status, _, body) =
            support::send(&ingest.router, stripe_event(&format!("evt_genuine_{i}"))).await;
        genuine.push((status, body));
    }
    done.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }

    let replays = replays.load(Ordering::Relaxed);
    assert!(replays > 100, "the flood ran ({replays} replays)");
    for (i, (status, body)) in genuine.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "genuine delivery {i}: {body}");
    }
    let refused = replays_refused.load(Ordering::Relaxed);
    assert_eq!(refused, 0, "a replay of a stored event is answered 200");
    let ids: Vec<String> = ingest
        .published()
        .iter()
        .map(|e| e.event_id().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        11,
        "the captured event once and the 10 genuine ones: {ids:?}"
    );
    assert_eq!(ids.iter().filter(|id| id.contains("evt_captured")).count(), 1);
}

/// Replays that arrive while the first copy is still being published wait for its outcome: one
/// record, every copy answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_during_the_first_publish_make_no_second_record() {
    let ingest = Arc::new(Ingest::new(support::config()));
    *ingest.publisher.delay.lock().unwrap() = Some(Duration::from_millis(300));
    let copies: Vec<_> = (0..20)
        .map(|_| {
            let ingest = Arc::clone(&ingest);
            tokio::spawn(async move { support::send(&ingest.router, stripe_event("evt_once")).await })
        })
        .collect();
    for copy in copies {
        let (status, _, body) = copy.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("evt_once"), "{body}");
    }
    assert_eq!(ingest.published().len(), 1);
}
