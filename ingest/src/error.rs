//! Every way a webhook request can be refused, its HTTP status, and its JSON body
//! `{"error": "<reason>"}`. Reasons are fixed strings: nothing from secrets, signatures or
//! internal errors reaches the caller.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::envelope::HeadTooLarge;
use crate::verify::VerifyError;
use crate::verify::twilio_events::BatchError;

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown source")]
    UnknownSource,
    #[error("{0}")]
    Verification(VerifyError),
    #[error("body is not valid JSON")]
    InvalidJson,
    /// A verified Event Streams body that is not a batch ingest stores.
    #[error("{0}")]
    Batch(BatchError),
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    /// A delivery-id header or the whole request head is larger than the envelope keeps.
    #[error("{0}")]
    HeadTooLarge(HeadTooLarge),
    /// The broker refused the record as too large: retrying cannot help.
    #[error("webhook too large to store")]
    Unstorable,
    #[error("unsupported content type, expected {}", .0.join(" or "))]
    UnsupportedMediaType(&'static [&'static str]),
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("request body could not be read")]
    BodyUnreadable,
    #[error("rate limit exceeded")]
    RateLimited { retry_after: Duration },
    #[error("form body has more than {0} parameters")]
    TooManyParameters(usize),
    #[error("too many requests in progress, retry later")]
    Overloaded,
    #[error("could not store the webhook, retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::UnknownSource => StatusCode::NOT_FOUND,
            Rejection::Verification(e) if e.is_bad_request() => StatusCode::BAD_REQUEST,
            Rejection::Verification(_) => StatusCode::UNAUTHORIZED,
            Rejection::InvalidJson | Rejection::BodyUnreadable => StatusCode::BAD_REQUEST,
            Rejection::Batch(BatchError::TooManyEvents(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Batch(_) => StatusCode::BAD_REQUEST,
            Rejection::TooLarge(_) | Rejection::Unstorable => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::TooManyParameters(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `outcome` metric label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::UnknownSource => "unknown_source",
            Rejection::Verification(e) if e.is_bad_request() => "bad_request",
            Rejection::Verification(_) => "unauthorized",
            Rejection::InvalidJson | Rejection::BodyUnreadable => "bad_request",
            Rejection::Batch(BatchError::TooManyEvents(_)) => "too_many_events",
            Rejection::Batch(_) => "bad_request",
            Rejection::TooLarge(_) | Rejection::Unstorable => "too_large",
            Rejection::HeadTooLarge(_) => "head_too_large",
            Rejection::UnsupportedMediaType(_) => "unsupported_media_type",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::TooManyParameters(_) => "too_many_parameters",
            Rejection::Overloaded => "overloaded",
            Rejection::Unavailable => "unavailable",
            Rejection::Internal => "internal_error",
        }
    }
}

/// Seconds to put in `Retry-After` when Kafka cannot take a record.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;
/// Seconds to put in `Retry-After` when the in-flight body budget is used up.
const OVERLOADED_RETRY_AFTER_SECS: u64 = 1;

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(json!({ "error": self.to_string() }))).into_response();
        let retry_after = match &self {
            Rejection::RateLimited { retry_after } => Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            Rejection::Unavailable => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            Rejection::Overloaded => Some(OVERLOADED_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<BatchError> for Rejection {
    fn from(error: BatchError) -> Self {
        Rejection::Batch(error)
    }
}
