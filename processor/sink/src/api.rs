//! The calls API: read-only JSON over the sink's rows.
//!
//! - `GET /calls/{call_sid}`: one call, or 404 `{"error":"call not found"}`.
//! - `GET /calls/{call_sid}/events`: `{"call":{…as above},"events":[…],"truncated":false}`, the
//!   call's first 1,000 events ([`MAX_CALL_EVENTS`]) in the order they happened (`occurred_at`,
//!   `received_at`, event id), each `{"event_id","kind","status","occurred_at","received_at"}`;
//!   `truncated` is `true` when the call has more (`GET /events?call_sid=` pages through them
//!   all); 404 as above.
//! - `GET /phones/{phone_id}/calls|bookings|messages?since=<RFC 3339>&limit=<1..200>&cursor=<opaque>`:
//!   newest `updated_at` first, `{"calls":[…],"next_cursor":"…"|null}` (likewise `bookings`,
//!   `messages`); pass `next_cursor` back as `cursor` for the next page.
//! - `GET /events?phone_id=&call_sid=&event_id=&source=twilio|stripe|calendly&since=&until=&limit=&cursor=`:
//!   the event search over every stored event (call and message events, payments, booking
//!   events), filters ANDed, `since` inclusive and `until` exclusive on `received_at`, newest
//!   `received_at` first (ties: greatest event id first), paged like the phone listings:
//!   `{"events":[{"event_id","source","subject_kind","kind","phone_id","subject","status",
//!   "occurred_at","received_at"}],"next_cursor":…}`. An empty parameter counts as absent.
//! - `GET /attempts?action=&event_id=&limit=&cursor=`: the actions' delivery attempts, newest
//!   first, paged like the listings: `{"attempts":[{"attempt_id","action","event_id","event_type",
//!   "attempt","outcome","status_code","reason","routed_to","latency_ms","attempted_at"}],
//!   "next_cursor":…}`.
//!
//! Timestamps are RFC 3339 UTC strings with milliseconds. With an API token configured every route
//! requires `Authorization: Bearer <token>` (401 otherwise). Errors are `{"error":"<reason>"}` with
//! fixed reasons: a database failure is logged and answered 500 `internal error`, never described.

use std::future::Future;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use serde_json::json;

use switchboard_schemas::{ActionAttempt, Source};

use super::store::{
    AttemptFilter, BookingRow, CallEventRow, CallRow, Cursor, EventFilter, EventRow, MessageRow, Page, Store,
    StoreError,
};

/// Rows per page unless `limit` says otherwise.
pub(crate) const DEFAULT_LIMIT: u32 = 50;
/// The largest `limit` accepted.
pub(crate) const MAX_LIMIT: u32 = 200;
/// The most events `GET /calls/{call_sid}/events` answers with (the first ones, in order).
pub(crate) const MAX_CALL_EVENTS: u32 = 1_000;

/// The API routes (no `/healthz` etc.: the sink merges these with its admin routes).
pub(crate) fn router(store: Store, api_token: Option<String>) -> Router {
    let routes = Router::new()
        .route("/calls/{call_sid}", get(call))
        .route("/calls/{call_sid}/events", get(call_events))
        .route("/events", get(events))
        .route("/attempts", get(attempts))
        .route("/phones/{phone_id}/calls", get(phone_list::<CallView>))
        .route("/phones/{phone_id}/bookings", get(phone_list::<BookingView>))
        .route("/phones/{phone_id}/messages", get(phone_list::<MessageView>));
    let routes = match api_token {
        Some(token) => routes.route_layer(middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_token,
        )),
        None => routes,
    };
    routes.with_state(store)
}

/// A refused or failed request, answered `{"error": "<reason>"}`.
#[derive(Debug)]
enum ApiError {
    BadRequest(&'static str),
    Unauthorized,
    NotFound(&'static str),
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, reason) = match self {
            ApiError::BadRequest(reason) => (StatusCode::BAD_REQUEST, reason),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(reason) => (StatusCode::NOT_FOUND, reason),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        };
        switchboard_service::respond::json_error(status, reason)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "calls API query failed");
        ApiError::Internal
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        ApiError::BadRequest("invalid path")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(_: QueryRejection) -> Self {
        ApiError::BadRequest("invalid query string")
    }
}

/// Lets the request through only with `Authorization: Bearer <token>` (scheme case-insensitive),
/// compared in constant time.
async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if switchboard_service::auth::bearer_is(request.headers(), &token) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// The query string of the listings. Strings, parsed by [`ListParams::parse`] for clear 400s.
#[derive(Debug, Deserialize)]
struct RawListParams {
    since: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug)]
struct ListParams {
    since: Option<i64>,
    limit: u32,
    cursor: Option<Cursor>,
}

impl ListParams {
    fn parse(raw: RawListParams) -> Result<Self, ApiError> {
        Ok(ListParams {
            since: parse_time(raw.since.as_deref(), INVALID_SINCE)?,
            limit: parse_limit(raw.limit.as_deref())?,
            cursor: parse_cursor(raw.cursor.as_deref())?,
        })
    }
}

/// `limit`: [`DEFAULT_LIMIT`] when absent, else an integer in `1..=MAX_LIMIT`.
fn parse_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) => limit
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or(ApiError::BadRequest("limit must be an integer from 1 to 200")),
    }
}

const INVALID_SINCE: &str = "since must be an RFC 3339 timestamp, e.g. 2026-01-31T09:00:00Z";
const INVALID_UNTIL: &str = "until must be an RFC 3339 timestamp, e.g. 2026-01-31T09:00:00Z";

/// A timestamp parameter in milliseconds, if given; 400 `invalid` if it is not RFC 3339.
fn parse_time(text: Option<&str>, invalid: &'static str) -> Result<Option<i64>, ApiError> {
    text.map(|text| parse_rfc3339(text).ok_or(ApiError::BadRequest(invalid)))
        .transpose()
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    cursor
        .map(|cursor| Cursor::decode(cursor).ok_or(ApiError::BadRequest("invalid cursor")))
        .transpose()
}

/// The query string of `GET /events`. Strings, parsed by [`EventParams::parse`] for clear 400s.
#[derive(Debug, Deserialize)]
struct RawEventParams {
    phone_id: Option<String>,
    call_sid: Option<String>,
    event_id: Option<String>,
    source: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug)]
struct EventParams {
    filter: EventFilter,
    limit: u32,
    cursor: Option<Cursor>,
}

impl EventParams {
    /// Every parameter optional; an empty one (`phone_id=`, as a form sends it) counts as absent.
    fn parse(raw: RawEventParams) -> Result<Self, ApiError> {
        let given = |value: Option<String>| value.filter(|value| !value.is_empty());
        let source = match given(raw.source).as_deref() {
            None => None,
            Some(source) => Some(
                source
                    .parse::<Source>()
                    .ok()
                    .filter(|source| *source != Source::Generic)
                    .ok_or(ApiError::BadRequest("source must be twilio, stripe or calendly"))?,
            ),
        };
        let since = parse_time(given(raw.since).as_deref(), INVALID_SINCE)?;
        let until = parse_time(given(raw.until).as_deref(), INVALID_UNTIL)?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err(ApiError::BadRequest("since must be earlier than until"));
        }
        Ok(EventParams {
            filter: EventFilter {
                phone_id: given(raw.phone_id),
                call_sid: given(raw.call_sid),
                event_id: given(raw.event_id),
                source,
                since,
                until,
            },
            limit: parse_limit(given(raw.limit).as_deref())?,
            cursor: parse_cursor(given(raw.cursor).as_deref())?,
        })
    }
}

/// The query string of `GET /attempts`.
#[derive(Debug, Deserialize)]
struct RawAttemptParams {
    action: Option<String>,
    event_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// One delivery attempt, as `GET /attempts` lists it.
#[derive(Debug, Serialize)]
struct AttemptView {
    attempt_id: String,
    action: String,
    event_id: String,
    event_type: String,
    attempt: i32,
    outcome: String,
    status_code: Option<i32>,
    reason: Option<String>,
    routed_to: Option<String>,
    latency_ms: i64,
    attempted_at: Option<String>,
}

impl From<ActionAttempt> for AttemptView {
    fn from(row: ActionAttempt) -> Self {
        AttemptView {
            attempt_id: row.attempt_id,
            action: row.action,
            event_id: row.event_id,
            event_type: row.event_type,
            attempt: row.attempt,
            outcome: row.outcome,
            status_code: row.status_code,
            reason: row.reason,
            routed_to: row.routed_to,
            latency_ms: row.latency_ms,
            attempted_at: rfc3339(row.attempted_at),
        }
    }
}

/// `GET /attempts`: one page of delivery attempts, newest first.
async fn attempts(
    State(store): State<Store>,
    query: Result<Query<RawAttemptParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(raw) = query?;
    let given = |value: Option<String>| value.filter(|value| !value.is_empty());
    let filter = AttemptFilter {
        action: given(raw.action),
        event_id: given(raw.event_id),
    };
    let limit = parse_limit(given(raw.limit).as_deref())?;
    let cursor = parse_cursor(given(raw.cursor).as_deref())?;
    let page = store.attempts(&filter, cursor.as_ref(), limit).await?;
    Ok(page_json::<_, AttemptView>("attempts", page))
}

/// Milliseconds since the epoch of an RFC 3339 timestamp. An unencoded `+` in a query string
/// arrives as a space, so a space where the offset belongs is read as `+`.
fn parse_rfc3339(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_rfc3339(&text.replace(' ', "+")))
        .ok()
        .map(|at| at.timestamp_millis())
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-01-31T09:00:00.000Z`.
fn rfc3339(millis: i64) -> Option<String> {
    DateTime::from_timestamp_millis(millis).map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[derive(Debug, Serialize)]
struct CallView {
    call_sid: String,
    phone_id: String,
    from: Option<String>,
    to: Option<String>,
    direction: Option<String>,
    status: String,
    duration_seconds: Option<i32>,
    recording_url: Option<String>,
    recording_duration: Option<i32>,
    transcription_text: Option<String>,
    started_at: Option<String>,
    ended_at: Option<String>,
    updated_at: Option<String>,
}

impl From<CallRow> for CallView {
    fn from(row: CallRow) -> Self {
        CallView {
            call_sid: row.call_sid,
            phone_id: row.phone_id,
            from: row.from,
            to: row.to,
            direction: row.direction,
            status: row.status,
            duration_seconds: row.duration_seconds,
            recording_url: row.recording_url,
            recording_duration: row.recording_duration,
            transcription_text: row.transcription_text,
            started_at: row.started_at.and_then(rfc3339),
            ended_at: row.ended_at.and_then(rfc3339),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct BookingView {
    invitee_uri: String,
    phone_id: String,
    event_type: String,
    invitee_name: Option<String>,
    invitee_email: Option<String>,
    event_start: Option<String>,
    event_end: Option<String>,
    canceled: bool,
    cancel_reason: Option<String>,
    updated_at: Option<String>,
}

impl From<BookingRow> for BookingView {
    fn from(row: BookingRow) -> Self {
        BookingView {
            invitee_uri: row.invitee_uri,
            phone_id: row.phone_id,
            event_type: row.event_type,
            invitee_name: row.invitee_name,
            invitee_email: row.invitee_email,
            event_start: row.event_start.and_then(rfc3339),
            event_end: row.event_end.and_then(rfc3339),
            canceled: row.canceled,
            cancel_reason: row.cancel_reason,
            updated_at: rfc3339(row.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct MessageView {
    message_sid: String,
    phone_id: String,
    status: String,
    error_code: Option<String>,
    from: Option<String>,
    to: Option<String>,
    updated_at: Option<String>,
}

impl From<MessageRow> for MessageView {
    fn from(row: MessageRow) -> Self {
        MessageView {
            message_sid: row.message_sid,
            phone_id: row.phone_id,
            status: row.status,
            error_code: row.error_code,
            from: row.from,
            to: row.to,
            updated_at: rfc3339(row.updated_at),
        }
    }
}

/// An event of the event search.
#[derive(Debug, Serialize)]
struct EventView {
    event_id: String,
    /// `twilio`, `stripe` or `calendly`.
    source: &'static str,
    /// `call`, `message`, `payment` or `booking`.
    subject_kind: &'static str,
    kind: String,
    phone_id: String,
    subject: String,
    status: Option<String>,
    occurred_at: Option<String>,
    received_at: Option<String>,
}

impl From<EventRow> for EventView {
    fn from(row: EventRow) -> Self {
        EventView {
            event_id: row.event_id,
            source: row.subject_kind.source().as_str(),
            subject_kind: row.subject_kind.as_str(),
            kind: row.kind,
            phone_id: row.phone_id,
            subject: row.subject,
            status: row.status,
            occurred_at: row.occurred_at.and_then(rfc3339),
            received_at: rfc3339(row.received_at),
        }
    }
}

/// An event of one call, in `GET /calls/{call_sid}/events`.
#[derive(Debug, Serialize)]
struct CallEventView {
    event_id: String,
    kind: String,
    status: Option<String>,
    occurred_at: Option<String>,
    received_at: Option<String>,
}

impl From<CallEventRow> for CallEventView {
    fn from(row: CallEventRow) -> Self {
        CallEventView {
            event_id: row.event_id,
            kind: row.kind,
            status: row.status,
            occurred_at: rfc3339(row.occurred_at),
            received_at: rfc3339(row.received_at),
        }
    }
}

/// `{"<name>": [views…], "next_cursor": "…"|null}`.
fn page_json<R, V: Serialize + From<R>>(name: &str, page: Page<R>) -> Json<serde_json::Value> {
    let items: Vec<V> = page.items.into_iter().map(V::from).collect();
    Json(json!({ name: items, "next_cursor": page.next_cursor.map(|cursor| cursor.encode()) }))
}

type Listing = Result<(Path<String>, ListParams), ApiError>;

/// The phone id and parsed query of a listing request.
fn listing(
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RawListParams>, QueryRejection>,
) -> Listing {
    let path = path?;
    let Query(raw) = query?;
    Ok((path, ListParams::parse(raw)?))
}

async fn call(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CallView>, ApiError> {
    let Path(call_sid) = path?;
    let row = store
        .call(&call_sid)
        .await?
        .ok_or(ApiError::NotFound("call not found"))?;
    Ok(Json(CallView::from(row)))
}

/// `GET /calls/{call_sid}/events`: the call and its first [`MAX_CALL_EVENTS`] events in order.
async fn call_events(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(call_sid) = path?;
    call_history_json(&store, &call_sid, MAX_CALL_EVENTS)
        .await
        .map(Json)
}

/// The call `call_sid` and its first `max` events, saying whether it has more.
async fn call_history_json(store: &Store, call_sid: &str, max: u32) -> Result<serde_json::Value, ApiError> {
    // One more than answered: whether there are more is known without counting them.
    let (call, mut events) = store
        .call_history(call_sid, max + 1)
        .await?
        .ok_or(ApiError::NotFound("call not found"))?;
    let truncated = events.len() > max as usize;
    events.truncate(max as usize);
    let events: Vec<CallEventView> = events.into_iter().map(CallEventView::from).collect();
    Ok(json!({ "call": CallView::from(call), "events": events, "truncated": truncated }))
}

/// `GET /events`: one page of the event search, newest first.
async fn events(
    State(store): State<Store>,
    query: Result<Query<RawEventParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(raw) = query?;
    let params = EventParams::parse(raw)?;
    let page = store
        .events(&params.filter, params.cursor.as_ref(), params.limit)
        .await?;
    Ok(page_json::<_, EventView>("events", page))
}

/// A per-phone listing (`/phones/{phone_id}/<NAME>`): its JSON name, and the store query of its
/// rows.
trait PhoneList: Serialize + From<Self::Row> {
    const NAME: &'static str;
    type Row;

    fn page(
        store: &Store,
        phone_id: &str,
        params: &ListParams,
    ) -> impl Future<Output = Result<Page<Self::Row>, StoreError>> + Send;
}

impl PhoneList for CallView {
    const NAME: &'static str = "calls";
    type Row = CallRow;

    fn page(
        store: &Store,
        phone_id: &str,
        params: &ListParams,
    ) -> impl Future<Output = Result<Page<CallRow>, StoreError>> + Send {
        store.phone_calls(phone_id, params.since, params.cursor.as_ref(), params.limit)
    }
}

impl PhoneList for BookingView {
    const NAME: &'static str = "bookings";
    type Row = BookingRow;

    fn page(
        store: &Store,
        phone_id: &str,
        params: &ListParams,
    ) -> impl Future<Output = Result<Page<BookingRow>, StoreError>> + Send {
        store.phone_bookings(phone_id, params.since, params.cursor.as_ref(), params.limit)
    }
}

impl PhoneList for MessageView {
    const NAME: &'static str = "messages";
    type Row = MessageRow;

    fn page(
        store: &Store,
        phone_id: &str,
        params: &ListParams,
    ) -> impl Future<Output = Result<Page<MessageRow>, StoreError>> + Send {
        store.phone_messages(phone_id, params.since, params.cursor.as_ref(), params.limit)
    }
}

/// `GET /phones/{phone_id}/<V::NAME>`: one page of the phone's rows, newest first.
async fn phone_list<V: PhoneList>(
    State(store): State<Store>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RawListParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (Path(phone_id), params) = listing(path, query)?;
    let page = V::page(&store, &phone_id, &params).await?;
    Ok(page_json::<_, V>(V::NAME, page))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::Value;
    use tower::ServiceExt as _;

    use super::*;
    use crate::store::testing::{
        TestDb, booking, call_recording, call_status, message, payment, per_backend,
    };
    use axum::http::header;
    use switchboard_schemas::DomainEvent;

    const PHONE: &str = "+15550001111";
    const PHONE_IN_PATH: &str = "%2B15550001111";
    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;
    const TOKEN: &str = "s3cret-token";

    /// Seven calls on PHONE, `CA-<n>` updated at T0 + n seconds (CA-6 completed), one call on
    /// another phone, three bookings and three messages on PHONE.
    async fn seed(store: &Store) {
        let mut events = Vec::new();
        for n in 0..7 {
            let status = if n == 6 { "completed" } else { "ringing" };
            let sid = format!("CA-{n}");
            events.push(DomainEvent::Call(call_status(
                &sid,
                PHONE,
                &sid,
                status,
                2,
                T0 + n * 1_000,
            )));
        }
        events.push(DomainEvent::Call(call_status(
            "CA-x",
            "+15550002222",
            "CA-x",
            "ringing",
            2,
            T0,
        )));
        for n in 0..3 {
            let uri = format!("https://api.calendly.com/invitees/{n}");
            events.push(DomainEvent::Booking(booking(
                &format!("bk-{n}"),
                PHONE,
                &uri,
                n == 2,
                T0 + n,
            )));
            let sid = format!("SM-{n}");
            events.push(DomainEvent::Message(message(
                &sid,
                PHONE,
                &sid,
                "delivered",
                T0 + n,
            )));
        }
        store.apply_batch("test", &events, &[]).await.unwrap();
    }

    /// GETs `uri` (with `Authorization: Bearer <token>` when given): status and JSON body.
    async fn get(router: &Router, uri: &str, authorization: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::get(uri);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{uri}: {e}: {body:?}"));
        (status, json)
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    fn sids<'a>(body: &'a Value, list: &str, key: &str) -> Vec<&'a str> {
        body[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item[key].as_str().unwrap())
            .collect()
    }

    async fn a_call_is_served_by_sid_or_404(db: TestDb) {
        seed(&db.store).await;
        let router = router(db.store.clone(), None);
        let (status, call) = get(&router, "/calls/CA-6", None).await;
        assert_eq!(status, StatusCode::OK, "{call}");
        assert_eq!(
            keys(&call),
            [
                "call_sid",
                "direction",
                "duration_seconds",
                "ended_at",
                "from",
                "phone_id",
                "recording_duration",
                "recording_url",
                "started_at",
                "status",
                "to",
                "transcription_text",
                "updated_at"
            ]
        );
        assert_eq!(call["call_sid"], "CA-6");
        assert_eq!(call["phone_id"], PHONE);
        assert_eq!(call["status"], "completed");
        assert_eq!(call["duration_seconds"], 120);
        assert_eq!(call["from"], "+15557770000");
        assert_eq!(call["updated_at"], "2026-01-01T00:00:06.000Z");
        assert_eq!(call["ended_at"], "2026-01-01T00:00:06.000Z");
        assert_eq!(call["recording_url"], Value::Null);

        let (status, body) = get(&router, "/calls/CA-missing", None).await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, json!({ "error": "call not found" }))
        );
    }

    async fn every_route_requires_the_token_when_one_is_set(db: TestDb) {
        seed(&db.store).await;
        let guarded = router(db.store.clone(), Some(TOKEN.to_owned()));
        let open = router(db.store.clone(), None);
        let uris = [
            "/calls/CA-1".to_owned(),
            "/calls/CA-1/events".to_owned(),
            "/events".to_owned(),
            "/events?source=twilio".to_owned(),
            format!("/phones/{PHONE_IN_PATH}/calls"),
            format!("/phones/{PHONE_IN_PATH}/bookings"),
            format!("/phones/{PHONE_IN_PATH}/messages"),
        ];
        let unauthorized = (StatusCode::UNAUTHORIZED, json!({ "error": "unauthorized" }));
        for uri in &uris {
            assert_eq!(get(&guarded, uri, None).await, unauthorized, "{uri}");
            for wrong in [
                "Bearer wrong",
                "Bearer s3cret-toke",
                "Basic czNjcmV0LXRva2Vu",
                TOKEN,
                "Bearer ",
            ] {
                assert_eq!(
                    get(&guarded, uri, Some(wrong)).await,
                    unauthorized,
                    "{uri} {wrong}"
                );
            }
            for right in [format!("Bearer {TOKEN}"), format!("bearer {TOKEN}")] {
                assert_eq!(get(&guarded, uri, Some(&right)).await.0, StatusCode::OK, "{uri}");
            }
            assert_eq!(get(&open, uri, None).await.0, StatusCode::OK, "{uri}");
        }
        let response = guarded
            .clone()
            .oneshot(Request::get("/calls/CA-1").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    async fn listings_page_with_an_opaque_cursor(db: TestDb) {
        seed(&db.store).await;
        let router = router(db.store.clone(), None);
        let mut seen = Vec::new();
        let mut uri = format!("/phones/{PHONE_IN_PATH}/calls?limit=3");
        let mut pages = 0;
        loop {
            let (status, body) = get(&router, &uri, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(keys(&body), ["calls", "next_cursor"]);
            pages += 1;
            seen.extend(sids(&body, "calls", "call_sid").into_iter().map(str::to_owned));
            match body["next_cursor"].as_str() {
                Some(cursor) => uri = format!("/phones/{PHONE_IN_PATH}/calls?limit=3&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ["CA-6", "CA-5", "CA-4", "CA-3", "CA-2", "CA-1", "CA-0"]);

        let (_, all) = get(&router, &format!("/phones/{PHONE_IN_PATH}/calls"), None).await;
        assert_eq!(all["calls"].as_array().unwrap().len(), 7);
        assert_eq!(all["next_cursor"], Value::Null);

        let (_, first) = get(
            &router,
            &format!("/phones/{PHONE_IN_PATH}/bookings?limit=2"),
            None,
        )
        .await;
        let cursor = first["next_cursor"].as_str().unwrap();
        let (_, second) = get(
            &router,
            &format!("/phones/{PHONE_IN_PATH}/bookings?limit=2&cursor={cursor}"),
            None,
        )
        .await;
        let uris: Vec<_> = [
            sids(&first, "bookings", "invitee_uri"),
            sids(&second, "bookings", "invitee_uri"),
        ]
        .concat();
        assert_eq!(
            uris,
            [
                "https://api.calendly.com/invitees/2",
                "https://api.calendly.com/invitees/1",
                "https://api.calendly.com/invitees/0"
            ]
        );
        assert_eq!(second["next_cursor"], Value::Null);
    }

    async fn since_filters_by_update_time(db: TestDb) {
        seed(&db.store).await;
        let router = router(db.store.clone(), None);
        for since in [
            "2026-01-01T00:00:04Z",
            "2026-01-01T01:00:04%2B01:00",
            "2026-01-01T01:00:04+01:00",
        ] {
            let (status, body) = get(
                &router,
                &format!("/phones/{PHONE_IN_PATH}/calls?since={since}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{since}: {body}");
            assert_eq!(
                sids(&body, "calls", "call_sid"),
                ["CA-6", "CA-5", "CA-4"],
                "{since}"
            );
        }
        let (_, body) = get(
            &router,
            &format!("/phones/{PHONE_IN_PATH}/messages?since=2026-01-01T00:00:00.002Z"),
            None,
        )
        .await;
        assert_eq!(sids(&body, "messages", "message_sid"), ["SM-2"]);
    }

    async fn url_encoded_phone_ids_reach_every_listing(db: TestDb) {
        seed(&db.store).await;
        let router = router(db.store.clone(), None);
        let (_, calls) = get(&router, &format!("/phones/{PHONE_IN_PATH}/calls"), None).await;
        assert!(
            calls["calls"]
                .as_array()
                .unwrap()
                .iter()
                .all(|call| call["phone_id"] == PHONE)
        );
        let (_, plain) = get(&router, &format!("/phones/{PHONE}/calls"), None).await;
        assert_eq!(plain, calls);

        let (status, bookings) = get(&router, &format!("/phones/{PHONE_IN_PATH}/bookings"), None).await;
        assert_eq!(status, StatusCode::OK);
        let canceled = &bookings["bookings"][0];
        assert_eq!(
            keys(canceled),
            [
                "cancel_reason",
                "canceled",
                "event_end",
                "event_start",
                "event_type",
                "invitee_email",
                "invitee_name",
                "invitee_uri",
                "phone_id",
                "updated_at"
            ]
        );
        assert_eq!(canceled["canceled"], true);
        assert_eq!(canceled["event_start"], "2026-01-01T00:00:00.000Z");
        assert_eq!(bookings["bookings"].as_array().unwrap().len(), 3);

        let (status, messages) = get(&router, &format!("/phones/{PHONE_IN_PATH}/messages"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            keys(&messages["messages"][0]),
            [
                "error_code",
                "from",
                "message_sid",
                "phone_id",
                "status",
                "to",
                "updated_at"
            ]
        );
        assert_eq!(
            sids(&messages, "messages", "message_sid"),
            ["SM-2", "SM-1", "SM-0"]
        );

        let (_, other) = get(&router, "/phones/%2B15550002222/calls", None).await;
        assert_eq!(sids(&other, "calls", "call_sid"), ["CA-x"]);
        let (_, none) = get(&router, "/phones/%2B19999999999/messages", None).await;
        assert_eq!(none, json!({ "messages": [], "next_cursor": null }));
    }

    async fn bad_parameters_are_400_and_failures_500_without_detail(db: TestDb) {
        seed(&db.store).await;
        let router = router(db.store.clone(), None);
        for query in [
            "limit=0",
            "limit=201",
            "limit=ten",
            "limit=-1",
            "since=yesterday",
            "since=2026-01-01",
            "cursor=not-a-cursor!",
            "cursor=MTIz",
            "limit=1&limit=2",
        ] {
            for list in ["calls", "bookings", "messages"] {
                let (status, body) =
                    get(&router, &format!("/phones/{PHONE_IN_PATH}/{list}?{query}"), None).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{list}?{query}: {body}");
                assert!(body["error"].is_string(), "{body}");
            }
        }
        let (status, _) = get(
            &router,
            &format!("/phones/{PHONE_IN_PATH}/calls?limit=200&unknown=1"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        db.store.close().await;
        for uri in [
            "/calls/CA-1".to_owned(),
            format!("/phones/{PHONE_IN_PATH}/calls"),
            "/calls/CA-1/events".to_owned(),
            "/events".to_owned(),
        ] {
            let (status, body) = get(&router, &uri, None).await;
            assert_eq!(
                (status, body),
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "internal error" })
                )
            );
        }
    }

    /// Besides [`seed`]: a recording of CA-6 (happened after its completion), a payment on PHONE
    /// (at T0 + 10 s, Stripe `created` a second earlier) and one on another phone.
    async fn seed_events(store: &Store) {
        seed(store).await;
        let events = [
            DomainEvent::Call(call_recording("rec-6", PHONE, "CA-6", T0 + 7_000)),
            DomainEvent::Billing(payment("evt_1", PHONE, T0 + 10_000)),
            DomainEvent::Billing(payment("evt_2", "+15550002222", T0 + 11_000)),
        ];
        store.apply_batch("test", &events, &[]).await.unwrap();
    }

    async fn the_event_search_serves_every_kind_filtered_and_paged(db: TestDb) {
        seed_events(&db.store).await;
        let router = router(db.store.clone(), None);

        let (status, body) = get(&router, &format!("/events?phone_id={PHONE_IN_PATH}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(keys(&body), ["events", "next_cursor"]);
        assert_eq!(body["next_cursor"], Value::Null);
        // 7 calls, 1 recording, 3 bookings, 3 messages, 1 payment on PHONE.
        assert_eq!(body["events"].as_array().unwrap().len(), 15);
        let payment = &body["events"][0];
        assert_eq!(
            keys(payment),
            [
                "event_id",
                "kind",
                "occurred_at",
                "phone_id",
                "received_at",
                "source",
                "status",
                "subject",
                "subject_kind"
            ]
        );
        assert_eq!(
            *payment,
            json!({
                "event_id": "evt_1",
                "source": "stripe",
                "subject_kind": "payment",
                "kind": "invoice.paid",
                "phone_id": PHONE,
                "subject": "in_evt_1",
                "status": "paid",
                "occurred_at": "2026-01-01T00:00:09.000Z",
                "received_at": "2026-01-01T00:00:10.000Z",
            })
        );
        assert_eq!(
            body["events"][1],
            json!({
                "event_id": "rec-6",
                "source": "twilio",
                "subject_kind": "call",
                "kind": "recording",
                "phone_id": PHONE,
                "subject": "CA-6",
                "status": "completed",
                "occurred_at": "2026-01-01T00:00:07.000Z",
                "received_at": "2026-01-01T00:00:07.050Z",
            })
        );

        let (_, twilio) = get(
            &router,
            "/events?source=twilio&since=2026-01-01T00:00:05Z&until=2026-01-01T00:00:07.050Z",
            None,
        )
        .await;
        assert_eq!(sids(&twilio, "events", "event_id"), ["CA-6", "CA-5"]);
        assert_eq!(twilio["events"][0]["subject_kind"], "call");

        let (_, messages) = get(
            &router,
            "/events?source=twilio&until=2026-01-01T00:00:00.003Z",
            None,
        )
        .await;
        assert_eq!(
            messages["events"][0],
            json!({
                "event_id": "SM-2",
                "source": "twilio",
                "subject_kind": "message",
                "kind": "message.status",
                "phone_id": PHONE,
                "subject": "SM-2",
                "status": "delivered",
                "occurred_at": null,
                "received_at": "2026-01-01T00:00:00.002Z",
            })
        );
        let (_, bookings) = get(&router, "/events?source=calendly&limit=1", None).await;
        assert_eq!(
            bookings["events"][0],
            json!({
                "event_id": "bk-2",
                "source": "calendly",
                "subject_kind": "booking",
                "kind": "invitee.canceled",
                "phone_id": PHONE,
                "subject": "https://api.calendly.com/invitees/2",
                "status": null,
                "occurred_at": null,
                "received_at": "2026-01-01T00:00:00.002Z",
            })
        );
        assert!(bookings["next_cursor"].is_string());

        let (_, stripe) = get(&router, "/events?source=stripe", None).await;
        assert_eq!(sids(&stripe, "events", "event_id"), ["evt_2", "evt_1"]);
        let (_, call) = get(&router, "/events?call_sid=CA-6&phone_id=&source=", None).await;
        assert_eq!(sids(&call, "events", "event_id"), ["rec-6", "CA-6"]);
        let (_, one) = get(&router, "/events?event_id=bk-1", None).await;
        assert_eq!(
            sids(&one, "events", "subject"),
            ["https://api.calendly.com/invitees/1"]
        );
        let (_, none) = get(&router, "/events?event_id=bk-1&source=stripe", None).await;
        assert_eq!(none, json!({ "events": [], "next_cursor": null }));

        // Every stored event once, newest first, through the cursor.
        let (_, all) = get(&router, "/events?limit=200", None).await;
        let all = sids(&all, "events", "event_id");
        assert_eq!(all.len(), 8 + 1 + 3 + 3 + 2);
        let mut seen = Vec::new();
        let mut uri = "/events?limit=4".to_owned();
        loop {
            let (status, body) = get(&router, &uri, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            seen.extend(sids(&body, "events", "event_id").into_iter().map(str::to_owned));
            match body["next_cursor"].as_str() {
                Some(cursor) => uri = format!("/events?limit=4&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    async fn a_call_is_served_with_its_events_in_order(db: TestDb) {
        seed_events(&db.store).await;
        // Delivered late: happened before the completion.
        let late = call_status("CA-6-ringing", PHONE, "CA-6", "ringing", 2, T0 + 5_500);
        db.store
            .apply_batch("test", &[DomainEvent::Call(late)], &[])
            .await
            .unwrap();
        let router = router(db.store.clone(), None);
        let (status, body) = get(&router, "/calls/CA-6/events", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(keys(&body), ["call", "events", "truncated"]);
        assert_eq!(body["truncated"], false);
        let (_, call) = get(&router, "/calls/CA-6", None).await;
        assert_eq!(body["call"], call);
        assert_eq!(
            body["events"],
            json!([
                {
                    "event_id": "CA-6-ringing",
                    "kind": "status",
                    "status": "ringing",
                    "occurred_at": "2026-01-01T00:00:05.500Z",
                    "received_at": "2026-01-01T00:00:05.550Z",
                },
                {
                    "event_id": "CA-6",
                    "kind": "status",
                    "status": "completed",
                    "occurred_at": "2026-01-01T00:00:06.000Z",
                    "received_at": "2026-01-01T00:00:06.050Z",
                },
                {
                    "event_id": "rec-6",
                    "kind": "recording",
                    "status": "completed",
                    "occurred_at": "2026-01-01T00:00:07.000Z",
                    "received_at": "2026-01-01T00:00:07.050Z",
                },
            ])
        );
        // Capped: the first events in order, and the cap said.
        let capped = call_history_json(&db.store, "CA-6", 2).await.unwrap();
        assert_eq!(capped["truncated"], true);
        assert_eq!(capped["events"], json!(body["events"].as_array().unwrap()[..2]));
        let exact = call_history_json(&db.store, "CA-6", 3).await.unwrap();
        assert_eq!(
            (&exact["truncated"], &exact["events"]),
            (&json!(false), &body["events"])
        );
        for missing in ["/calls/CA-missing/events", "/calls/SM-1/events"] {
            assert_eq!(
                get(&router, missing, None).await,
                (StatusCode::NOT_FOUND, json!({ "error": "call not found" })),
                "{missing}"
            );
        }
    }

    async fn bad_event_search_parameters_are_400_with_fixed_reasons(db: TestDb) {
        seed_events(&db.store).await;
        let router = router(db.store.clone(), None);
        for (query, reason) in [
            ("source=generic", "source must be twilio, stripe or calendly"),
            ("source=Twilio", "source must be twilio, stripe or calendly"),
            ("source=sms", "source must be twilio, stripe or calendly"),
            (
                "since=2026-01-01T00:00:05Z&until=2026-01-01T00:00:05Z",
                "since must be earlier than until",
            ),
            (
                "since=2026-01-01T00:00:06Z&until=2026-01-01T00:00:05Z",
                "since must be earlier than until",
            ),
            (
                "until=tomorrow",
                "until must be an RFC 3339 timestamp, e.g. 2026-01-31T09:00:00Z",
            ),
            (
                "since=2026-01-01",
                "since must be an RFC 3339 timestamp, e.g. 2026-01-31T09:00:00Z",
            ),
            ("limit=0", "limit must be an integer from 1 to 200"),
            ("limit=201", "limit must be an integer from 1 to 200"),
            ("cursor=MTIz", "invalid cursor"),
            ("source=twilio&source=stripe", "invalid query string"),
        ] {
            assert_eq!(
                get(&router, &format!("/events?{query}"), None).await,
                (StatusCode::BAD_REQUEST, json!({ "error": reason })),
                "{query}"
            );
        }
        let (status, _) = get(
            &router,
            "/events?since=2026-01-01T00:00:05Z&until=2026-01-01T00:00:05.001Z&unknown=1",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn attempts_are_served_newest_first_by_action_and_event(db: TestDb) {
        let attempt = |action: &str, event_id: &str, offset: i64, outcome: &str, at: i64| ActionAttempt {
            attempt_id: format!("{action}/switchboard.calls/0/{offset}"),
            action: action.into(),
            event_id: event_id.into(),
            event_type: "call.completed".into(),
            attempt: 1,
            outcome: outcome.into(),
            status_code: (outcome != "delivered").then_some(500),
            reason: (outcome != "delivered").then(|| "HTTP 500".to_owned()),
            routed_to: (outcome != "delivered").then(|| "switchboard.retry.1s".to_owned()),
            latency_ms: 7,
            attempted_at: T0 + at,
        };
        let attempts = [
            attempt("crm", "ev-1", 1, "transient", 1_000),
            attempt("sms", "ev-1", 1, "delivered", 2_000),
            attempt("crm", "ev-2", 2, "delivered", 3_000),
        ];
        db.store
            .apply_batch_with_attempts("test", &[], &attempts, &[])
            .await
            .unwrap();
        let router = router(db.store.clone(), None);
        let (status, body) = get(&router, "/attempts?action=crm&event_id=", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({
                "attempts": [
                    {
                        "attempt_id": "crm/switchboard.calls/0/2", "action": "crm", "event_id": "ev-2",
                        "event_type": "call.completed", "attempt": 1, "outcome": "delivered",
                        "status_code": null, "reason": null, "routed_to": null, "latency_ms": 7,
                        "attempted_at": "2026-01-01T00:00:03.000Z",
                    },
                    {
                        "attempt_id": "crm/switchboard.calls/0/1", "action": "crm", "event_id": "ev-1",
                        "event_type": "call.completed", "attempt": 1, "outcome": "transient",
                        "status_code": 500, "reason": "HTTP 500", "routed_to": "switchboard.retry.1s",
                        "latency_ms": 7, "attempted_at": "2026-01-01T00:00:01.000Z",
                    },
                ],
                "next_cursor": null,
            })
        );
        let (_, body) = get(&router, "/attempts?event_id=ev-1&limit=1", None).await;
        assert_eq!(body["attempts"][0]["action"], "sms");
        let cursor = body["next_cursor"].as_str().unwrap().to_owned();
        let (_, body) = get(
            &router,
            &format!("/attempts?event_id=ev-1&limit=1&cursor={cursor}"),
            None,
        )
        .await;
        assert_eq!(body["attempts"][0]["action"], "crm");
        assert_eq!(body["next_cursor"], Value::Null);
        let (status, _) = get(&router, "/attempts?limit=0", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    per_backend!(
        attempts_are_served_newest_first_by_action_and_event,
        a_call_is_served_by_sid_or_404,
        the_event_search_serves_every_kind_filtered_and_paged,
        a_call_is_served_with_its_events_in_order,
        bad_event_search_parameters_are_400_with_fixed_reasons,
        every_route_requires_the_token_when_one_is_set,
        listings_page_with_an_opaque_cursor,
        since_filters_by_update_time,
        url_encoded_phone_ids_reach_every_listing,
        bad_parameters_are_400_and_failures_500_without_detail,
    );

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(T0 + 1).as_deref(), Some("2026-01-01T00:00:00.001Z"));
        assert_eq!(parse_rfc3339("2026-01-01T01:00:00.001+01:00"), Some(T0 + 1));
        assert_eq!(parse_rfc3339("2026-01-01T01:00:00 01:00"), Some(T0));
        assert_eq!(parse_rfc3339("2026-01-01"), None);
    }
}
