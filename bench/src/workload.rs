//! The workload: many distinct, realistic Twilio voice status callbacks, signed before any clock
//! starts.
//!
//! Each call gets its four status callbacks in order (`initiated`, `ringing`, `in-progress`,
//! `completed`, `SequenceNumber` 0–3, the duration on the last one), and calls overlap: the
//! callbacks of a window of [`WINDOW`] calls are interleaved, as a busy account's would be. Each
//! webhook knows the event id ingest derives from its signed content ([`twilio::event_id`]), so
//! every domain event can be matched to the request that caused it; the request also carries it as
//! its `I-Twilio-Idempotency-Token` (metadata for ingest, as Twilio's own token is). The signature is computed exactly as
//! Twilio does, by ingest's own `send` tool: HMAC-SHA1 with the auth token over the public URL plus
//! the sorted parameters.

use bytes::Bytes;
use switchboard_ingest::samples;
use switchboard_ingest::verify::Secret;
use switchboard_ingest::verify::twilio::{self, TwilioKey};

/// Calls whose callbacks are interleaved.
pub const WINDOW: usize = 64;
/// The status callbacks of one call, in the order Twilio sends them.
pub const STATUSES: [&str; 4] = ["initiated", "ringing", "in-progress", "completed"];
/// The route ingest serves Twilio voice callbacks on.
pub const PATH: &str = "/webhooks/twilio/calls";
/// Ingest's Event Streams route.
pub const EVENTS_PATH: &str = "/webhooks/twilio-events";
/// The Event Streams event type suffix of each of [`STATUSES`].
const TRANSITIONS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];
const ACCOUNT_SID: &str = "AC3f1e9c2b7d4a4e6f8b0c1d2e3f4a5b6c";
/// The receptionist's numbers: inbound calls are keyed by `To`, so this is the phone id space.
const PHONES: u64 = 500;
/// 2025-01-14T18:05:59Z, the first callback's time; later callbacks are a second apart per stage.
const BASE_TIME: i64 = 1_736_877_959;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Number of requests (four per call; rounded up to whole calls).
    pub requests: usize,
    /// Distinguishes the CallSids and event ids of separate runs against the same pipeline.
    pub seed: u64,
    /// Ingest's `SWITCHBOARD_PUBLIC_URL`: the signature covers this base plus [`PATH`].
    pub public_url: String,
    /// The Twilio auth token (HMAC-SHA1).
    pub auth_token: String,
}

/// One pre-signed request. Cheap to clone (the body is shared).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub call_sid: String,
    pub status: &'static str,
    /// Ingest's event id ([`twilio::event_id`] of the signed URL and parameters), and the `event-id`
    /// header downstream; also sent as the `I-Twilio-Idempotency-Token`.
    pub event_id: String,
    /// The form body (callbacks) or the JSON array of CloudEvents (Event Streams).
    pub body: Bytes,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Appended to the route's URL: empty for callbacks, `?bodySHA256=…` for Event Streams.
    pub query: String,
    /// Events the request carries: 1 for a callback, the batch size for Event Streams.
    pub events: u32,
    /// `X-Twilio-Signature`.
    pub signature: String,
    /// The parameters the body encodes, in body order (for verification and for envelopes).
    pub params: Vec<(String, String)>,
}

impl Webhook {
    /// True for the callback that ends its call.
    pub fn is_final(&self) -> bool {
        self.status == "completed"
    }
}

/// SplitMix64: a tiny deterministic generator, so that one seed always gives the same workload.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The URL Twilio signs: the public base followed by the path.
pub fn signed_url(public_url: &str) -> String {
    format!("{}{PATH}", public_url.trim_end_matches('/'))
}

/// RFC 2822, as Twilio's `Timestamp` parameter (`Tue, 14 Jan 2025 18:05:59 +0000`).
fn rfc2822(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The parameters of one call's status callback at `stage` (index into [`STATUSES`]).
fn params(call: &Call, stage: usize) -> Vec<(String, String)> {
    let status = STATUSES[stage];
    let mut params: Vec<(String, String)> = [
        ("AccountSid", ACCOUNT_SID.to_owned()),
        ("ApiVersion", "2010-04-01".to_owned()),
        ("CallSid", call.sid.clone()),
        ("CallStatus", status.to_owned()),
        ("Called", call.to.clone()),
        ("CalledCountry", "US".to_owned()),
        ("Caller", call.from.clone()),
        ("CallerCountry", "US".to_owned()),
        ("CallbackSource", "call-progress-events".to_owned()),
        ("Direction", "inbound".to_owned()),
        ("From", call.from.clone()),
        ("FromCountry", "US".to_owned()),
        ("SequenceNumber", stage.to_string()),
        ("Timestamp", rfc2822(call.started + stage as i64)),
        ("To", call.to.clone()),
        ("ToCountry", "US".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    if status == "completed" {
        params.push(("CallDuration".to_owned(), call.duration.to_string()));
        params.push(("Duration".to_owned(), call.duration.div_ceil(60).to_string()));
    }
    params
}

#[derive(Debug)]
struct Call {
    sid: String,
    from: String,
    to: String,
    started: i64,
    duration: u64,
}

fn call(rng: &mut Rng, index: usize) -> Call {
    Call {
        sid: format!("CA{:016x}{:016x}", rng.next(), rng.next()),
        from: format!("+1{}{:07}", 201 + rng.below(780), rng.below(10_000_000)),
        to: format!("+1628555{:04}", rng.below(PHONES)),
        started: BASE_TIME + index as i64,
        duration: 5 + rng.below(600),
    }
}

/// The request index's position: (call index, stage). Callbacks of [`WINDOW`] calls interleave.
pub fn position(index: usize) -> (usize, usize) {
    let block = index / (WINDOW * STATUSES.len());
    let within = index % (WINDOW * STATUSES.len());
    (block * WINDOW + within % WINDOW, within / WINDOW)
}

/// Generates and signs the workload. Deterministic for a given spec.
pub fn presign(spec: &Spec) -> Vec<Webhook> {
    let calls = spec.requests.div_ceil(STATUSES.len()).div_ceil(WINDOW) * WINDOW;
    let mut rng = Rng(spec.seed);
    let calls: Vec<Call> = (0..calls).map(|i| call(&mut rng, i)).collect();
    let url = signed_url(&spec.public_url);
    let key = TwilioKey::AuthToken(Secret::new(spec.auth_token.as_str()));
    (0..calls.len() * STATUSES.len())
        .map(|index| {
            let (call_index, stage) = position(index);
            let call = &calls[call_index];
            let params = params(call, stage);
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&params)
                .finish();
            Webhook {
                call_sid: call.sid.clone(),
                status: STATUSES[stage],
                event_id: twilio::event_id(&url, &params),
                signature: twilio::sign(&key, &url, &params),
                body: Bytes::from(body),
                content_type: FORM,
                query: String::new(),
                events: 1,
                params,
            }
        })
        .collect()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// The same calls as [`presign`], delivered as Twilio Event Streams batches of `batch` CloudEvents
/// (`com.twilio.voice.status-callback.call.*`, each embedding the callback's parameters), signed
/// as Twilio signs webhook sinks. `spec.requests` counts events (rounded up to whole batches).
pub fn presign_event_streams(spec: &Spec, batch: usize) -> Vec<Webhook> {
    let batch = batch.max(1);
    let callbacks = presign(&Spec {
        requests: spec.requests.div_ceil(batch) * batch,
        ..spec.clone()
    });
    let callback_url = signed_url(&spec.public_url);
    let key = TwilioKey::AuthToken(Secret::new(spec.auth_token.as_str()));
    let events_url = url::Url::parse(&format!("{}{EVENTS_PATH}", spec.public_url.trim_end_matches('/')))
        .expect("the public URL is a URL");
    callbacks
        .chunks(batch)
        .filter(|chunk| chunk.len() == batch)
        .map(|chunk| {
            let events: Vec<serde_json::Value> = chunk
                .iter()
                .map(|callback| {
                    let stage = STATUSES.iter().position(|s| *s == callback.status).unwrap_or(0);
                    let at = BASE_TIME + stage as i64;
                    samples::twilio_call_event(at, TRANSITIONS[stage], &callback_url, &callback.params)
                })
                .collect();
            let body = serde_json::to_vec(&events).expect("JSON values serialize");
            // Ingest's own sample builder: `bodySHA256` appended, the URL signed.
            let signed = samples::twilio_events_body_request(events_url.clone(), None, body, &key, None);
            let query = format!("?{}", signed.url.query().unwrap_or_default());
            let signature = signed.headers[twilio::SIGNATURE_HEADER]
                .to_str()
                .expect("base64 is ASCII")
                .to_owned();
            let first = &chunk[0];
            Webhook {
                call_sid: first.call_sid.clone(),
                status: first.status,
                event_id: format!("batch:{}", first.event_id),
                signature,
                body: Bytes::from(signed.body),
                content_type: "application/json",
                query,
                events: batch as u32,
                params: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use http::{HeaderMap, HeaderValue};
    use switchboard_ingest::verify::{SecretSet, SharedKeys, VerifyError, twilio};

    use super::*;

    fn spec(requests: usize) -> Spec {
        Spec {
            requests,
            seed: 7,
            public_url: "http://127.0.0.1:8080".to_owned(),
            auth_token: "dev-twilio-auth-token".to_owned(),
        }
    }

    fn verify(webhook: &Webhook, token: &str, url: &str) -> Result<(), VerifyError> {
        let tokens = SecretSet::from_strings([token]).expect("valid token");
        let mut headers = HeaderMap::new();
        headers.insert(
            twilio::SIGNATURE_HEADER,
            HeaderValue::from_str(&webhook.signature).expect("ascii"),
        );
        let content_type = "application/x-www-form-urlencoded";
        twilio::verify(
            &tokens,
            &SharedKeys::default(),
            &headers,
            url,
            content_type,
            &webhook.body,
        )
        .map(|_| ())
    }

    #[test]
    fn ingest_verifier_accepts_every_presigned_request() {
        let webhooks = presign(&spec(600));
        let url = signed_url("http://127.0.0.1:8080");
        for webhook in &webhooks {
            verify(webhook, "dev-twilio-auth-token", &url).expect("signature verifies");
        }
    }

    #[test]
    fn ingest_verifier_rejects_another_token_or_url() {
        let webhook = &presign(&spec(4))[0];
        let url = signed_url("http://127.0.0.1:8080");
        assert!(verify(webhook, "another-token", &url).is_err());
        assert!(
            verify(
                webhook,
                "dev-twilio-auth-token",
                "http://127.0.0.1:9999/webhooks/twilio/calls"
            )
            .is_err()
        );
    }

    #[test]
    fn calls_are_distinct_and_each_gets_its_callbacks_in_order() {
        let webhooks = presign(&spec(1000));
        assert_eq!(webhooks.len(), 1024, "rounded up to whole windows of calls");
        let ids: HashSet<_> = webhooks.iter().map(|w| &w.event_id).collect();
        assert_eq!(ids.len(), webhooks.len(), "event ids are distinct");
        let calls: HashSet<_> = webhooks.iter().map(|w| &w.call_sid).collect();
        assert_eq!(calls.len(), 256);
        let first = &webhooks[0].call_sid;
        let sequence: Vec<_> = webhooks
            .iter()
            .filter(|w| &w.call_sid == first)
            .map(|w| w.status)
            .collect();
        assert_eq!(sequence, STATUSES);
        let completed = webhooks
            .iter()
            .find(|w| w.is_final())
            .expect("a completed callback");
        assert!(completed.params.iter().any(|(name, _)| name == "CallDuration"));
    }

    #[test]
    fn the_same_spec_gives_the_same_workload() {
        let a = presign(&spec(8));
        let b = presign(&spec(8));
        assert_eq!(a[5].event_id, b[5].event_id);
        assert_eq!(a[5].signature, b[5].signature);
        let other = presign(&Spec { seed: 8, ..spec(8) });
        assert_ne!(a[5].call_sid, other[5].call_sid);
    }

    #[test]
    fn timestamps_are_rfc_2822() {
        assert_eq!(rfc2822(1_736_877_959), "Tue, 14 Jan 2025 18:05:59 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn positions_interleave_a_window_of_calls() {
        assert_eq!(position(0), (0, 0));
        assert_eq!(position(WINDOW - 1), (WINDOW - 1, 0));
        assert_eq!(position(WINDOW), (0, 1));
        assert_eq!(position(4 * WINDOW), (WINDOW, 0));
    }

    #[test]
    fn event_streams_batches_pass_ingest_verifier_and_carry_every_callback() {
        let spec = spec(40);
        let batches = presign_event_streams(&spec, 10);
        // Whole windows of calls, as for callbacks: every callback in exactly one batch.
        assert_eq!(batches.len() * 10, presign(&spec).len() / 10 * 10);
        let url = format!("{}{EVENTS_PATH}", spec.public_url);
        for batch in &batches {
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-twilio-signature",
                HeaderValue::from_str(&batch.signature).unwrap(),
            );
            let verified = switchboard_ingest::verify::twilio_events::verify(
                &SecretSet::from_strings([spec.auth_token.as_str()]).unwrap(),
                &SharedKeys::default(),
                &Default::default(),
                &headers,
                &format!("{url}{}", batch.query),
                &batch.body,
            );
            assert!(verified.is_ok(), "{verified:?}");
            let events = switchboard_ingest::verify::twilio_events::split(&batch.body, 100).unwrap();
            assert_eq!(events.len(), 10);
            assert_eq!(batch.events, 10);
        }
    }
}
