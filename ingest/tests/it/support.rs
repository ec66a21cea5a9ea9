//! A fake publisher and a router harness for the attack tests (replays, forged bodies, the admin
//! listener): records what it is asked to publish, optionally after a delay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use switchboard_ingest::app::{AppState, app};
use switchboard_ingest::config::{Config, SecretStrings};
use switchboard_ingest::envelope::Envelope;
use switchboard_ingest::publish::{NotReady, PublishError, Publisher};
use tower::ServiceExt;

use crate::signing::{PUBLIC_URL, STRIPE_SECRET, TWILIO_TOKEN};

#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) published: Mutex<Vec<Envelope>>,
    pub(crate) delay: Mutex<Option<Duration>>,
    pub(crate) not_ready: Mutex<Option<NotReady>>,
}

impl Publisher for Recorder {
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            let delay = *self.delay.lock().unwrap();
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            self.published.lock().unwrap().push(envelope.clone());
            Ok(())
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        Box::pin(async move { self.not_ready.lock().unwrap().clone().map_or(Ok(()), Err) })
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Twilio and Stripe enabled, everything else at its default.
pub(crate) fn config() -> Config {
    Config {
        public_url: Some(PUBLIC_URL.into()),
        twilio_auth_tokens: SecretStrings(vec![TWILIO_TOKEN.into()]),
        stripe_webhook_secrets: SecretStrings(vec![STRIPE_SECRET.into()]),
        ..Config::default()
    }
}

pub(crate) struct Ingest {
    pub(crate) publisher: Arc<Recorder>,
    pub(crate) router: axum::Router,
    pub(crate) admin: axum::Router,
}

impl Ingest {
    pub(crate) fn new(config: Config) -> Self {
        let publisher = Arc::new(Recorder::default());
        let state = AppState::new(
            Arc::new(config.validate().unwrap()),
            Arc::clone(&publisher) as Arc<dyn Publisher>,
        );
        Self {
            publisher,
            admin: switchboard_ingest::admin_app(state.clone()),
            router: app(state),
        }
    }

    pub(crate) fn published(&self) -> Vec<Envelope> {
        self.publisher.published.lock().unwrap().clone()
    }
}

/// Sends `request` to `router`; the status, headers and body text.
pub(crate) async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}
