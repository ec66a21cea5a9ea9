//! `POST /webhooks/twilio-events`: a Twilio Event Streams webhook sink.
//!
//! The request goes through the shared pipeline up to verification
//! ([`verify::twilio_events`]), then its JSON array is split into one record per CloudEvent, each on
//! `switchboard.raw.twilio` with content type `application/cloudevents+json`, its own event id
//! (`twilio-events:<id>`) and phone id. The batch is answered as a whole: 200 only once Kafka
//! acknowledged every record that was not already stored (replay cache); when any record is not
//! acknowledged the answer is 503 + `Retry-After` (or 500/413 if no record failed transiently), and
//! Twilio redelivers the whole batch: the records already stored are then answered from the replay
//! cache or, on another instance, stored again and dropped by the processor's dedup on event id.
//!
//! A batch is one request against the rate limit, checked after verification.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures::future::join_all;
use serde_json::json;
use switchboard_schemas::{Source, media_type};

use super::{AppState, JSON, Received, check_rate_limit, publish, receive, refuse};
use crate::envelope::Extract;
use crate::error::Rejection;
use crate::metrics;
use crate::replay::Claim;
use crate::verify;

/// The label of this route in metrics, logs and the replay cache.
pub(super) const LABEL: &str = "twilio-events";

pub(super) async fn handle(State(state): State<AppState>, request: Request) -> Response {
    let _in_flight = metrics::InFlight::start();
    match accept(&state, request).await {
        Ok(stored) => {
            metrics::request(
                LABEL,
                if stored.published > 0 || stored.events == 0 {
                    "accepted"
                } else {
                    "duplicate"
                },
            );
            Json(json!({
                "status": "stored",
                "events": stored.events,
                "duplicates": stored.events - stored.published,
            }))
            .into_response()
        }
        Err(rejection) => refuse(&state, Source::Twilio, LABEL, rejection),
    }
}

/// What an accepted batch held.
struct Stored {
    events: usize,
    /// Events published now; the others were replays of events this instance stored recently.
    published: usize,
}

async fn accept(state: &AppState, request: Request) -> Result<Stored, Rejection> {
    let settings = &state.settings;
    let received: Received = receive(state, &[JSON], request, |req| {
        verify::twilio_events::verify(
            &settings.twilio_auth_tokens,
            &settings.twilio_shared_keys,
            &settings.twilio_events_basic,
            req.headers,
            req.url,
            req.body,
        )
    })
    .await?;
    let events = verify::twilio_events::split(&received.body, settings.config.twilio_events_max_events)?;
    let envelopes = events
        .iter()
        .map(|event| {
            let extract = Extract::TwilioEvent {
                tenants: &settings.config.tenants,
                phone_id_pointers: &settings.config.twilio_events_phone_id_pointers,
                event,
            };
            received.envelope(
                state,
                Source::Twilio,
                None,
                extract,
                event.raw,
                media_type::CLOUDEVENTS_JSON,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_rate_limit(state, LABEL)?;

    // Every record is published at once; the answer waits for all of them.
    let outcomes = join_all(envelopes.iter().map(|envelope| async move {
        let claim = match &state.recent {
            Some(recent) => match recent.claim(LABEL, envelope.event_id()).await {
                Claim::Seen => return Ok(false),
                Claim::Claimed(pending) => Some(pending),
            },
            None => None,
        };
        publish(state, envelope, claim).await.map(|()| true)
    }))
    .await;
    let mut published = 0;
    let mut failure: Option<Rejection> = None;
    for outcome in outcomes {
        match outcome {
            Ok(true) => published += 1,
            Ok(false) => {}
            Err(rejection) => {
                if failure
                    .as_ref()
                    .is_none_or(|worst| severity(&rejection) > severity(worst))
                {
                    failure = Some(rejection);
                }
            }
        }
    }
    match failure {
        Some(rejection) => Err(rejection),
        None => Ok(Stored {
            events: envelopes.len(),
            published,
        }),
    }
}

/// Which failure answers a partly stored batch: one Twilio should retry (503) before an internal
/// error (500) before a record the broker refuses as too large (413).
fn severity(rejection: &Rejection) -> u8 {
    match rejection {
        Rejection::Unavailable => 3,
        Rejection::Internal => 2,
        _ => 1,
    }
}
