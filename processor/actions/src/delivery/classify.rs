//! The one place where a delivery's result becomes an [`Outcome`]: HTTP statuses
//! ([`classify_status`]), transport errors ([`classify_error`]) and `Retry-After` values
//! ([`parse_retry_after`]).
//!
//! | Result                                              | Outcome     |
//! |-----------------------------------------------------|-------------|
//! | 2xx                                                 | Delivered   |
//! | 408, 429, 5xx                                       | Transient   |
//! | timeout, connection refused/reset, DNS failure      | Transient   |
//! | other 4xx; 1xx and 3xx (redirects are not followed) | Permanent   |
//! | a request that cannot be built                      | Permanent   |
//!
//! 429 and 503 carry their `Retry-After` (delay-seconds or an HTTP-date), capped at
//! [`MAX_RETRY_AFTER`]. The breaker's refusal is its own variant, [`Outcome::CircuitOpen`],
//! produced by the target without calling anyone; callers treat it as transient.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};

/// The longest `Retry-After` honoured; a longer one is cut to this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How the reason of an outcome from an HTTP status starts: `HTTP <status>`.
const STATUS_PREFIX: &str = "HTTP ";

/// Longest failure reason, in characters (response snippets are cut to fit).
pub(crate) const MAX_REASON_CHARS: usize = 200;

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The target accepted the event (2xx).
    Delivered,
    /// Worth retrying later: the target or the network failed, or asked us to back off.
    Transient {
        reason: String,
        /// The target's `Retry-After`, when it sent one (429 and 503).
        retry_after: Option<Duration>,
    },
    /// The target refused this event; retrying will not help. Goes to the DLQ.
    Permanent { reason: String },
    /// The target's circuit breaker is open: the target was not called. Transient for routing
    /// purposes; `retry_after` is the cool-down left (`None` while a probe is outstanding).
    CircuitOpen { retry_after: Option<Duration> },
}

impl Outcome {
    /// The `outcome` metric label: `delivered`, `transient`, `permanent` or `circuit_open`.
    pub(crate) fn class(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } => "permanent",
            Self::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// Whether the event should be retried later: [`Transient`](Self::Transient) and
    /// [`CircuitOpen`](Self::CircuitOpen).
    #[cfg(test)]
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::CircuitOpen { .. })
    }

    /// How long the target asked us to wait, if it said.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } | Self::CircuitOpen { retry_after } => *retry_after,
            Self::Delivered | Self::Permanent { .. } => None,
        }
    }

    /// The target's HTTP status, when it answered with a failure status: the reason of such an
    /// outcome starts with `HTTP <status>` ([`classify_status`] writes it so, and a response
    /// snippet is only ever appended).
    pub(crate) fn status_code(&self) -> Option<u16> {
        let digits = self.reason()?.strip_prefix(STATUS_PREFIX)?.get(..3)?;
        digits.parse().ok().filter(|status| (100..=599).contains(status))
    }

    /// Why it failed, for logs and DLQ headers; `None` when delivered.
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Self::Delivered => None,
            Self::Transient { reason, .. } | Self::Permanent { reason } => Some(reason),
            Self::CircuitOpen { .. } => Some("circuit open"),
        }
    }
}

/// Classifies an HTTP response status, with the response's `Retry-After` header if any.
pub(crate) fn classify_status(status: u16, retry_after: Option<&str>) -> Outcome {
    classify_status_at(status, retry_after, SystemTime::now())
}

/// [`classify_status`] with the clock passed in (an HTTP-date `Retry-After` is relative to it).
pub(crate) fn classify_status_at(status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome {
    let reason = format!("{STATUS_PREFIX}{status}");
    match status {
        200..=299 => Outcome::Delivered,
        429 | 503 => Outcome::Transient {
            reason,
            retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        408 | 500..=599 => Outcome::Transient {
            reason,
            retry_after: None,
        },
        _ => Outcome::Permanent { reason },
    }
}

/// Classifies a transport error (no response, or the response could not be read). The reason
/// names the kind and the underlying causes, never the URL (which may hold a token).
pub(crate) fn classify_error(error: &reqwest::Error) -> Outcome {
    let (kind, transient) = if error.is_builder() {
        // An invalid URL or header: no retry fixes it.
        ("invalid request", false)
    } else if error.is_redirect() {
        ("redirect", false)
    } else if error.is_timeout() {
        ("timed out", true)
    } else if error.is_connect() {
        // Refused, unreachable, DNS failure, TLS handshake.
        ("connect failed", true)
    } else if error.is_body() || error.is_decode() {
        ("reading the response failed", true)
    } else {
        // Sending failed (connection reset, closed early) or unknown: retrying is the safe side;
        // the Idempotency-Key lets the target drop a duplicate.
        ("request failed", true)
    };
    let reason = truncate(&with_causes(kind, error), MAX_REASON_CHARS);
    if transient {
        Outcome::Transient {
            reason,
            retry_after: None,
        }
    } else {
        Outcome::Permanent { reason }
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP-date (IMF-fixdate, RFC 850 or
/// asctime) relative to `now`, in the past counting as zero. Capped at [`MAX_RETRY_AFTER`];
/// `None` when unparseable.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit is still "very long".
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = http_date(value)?;
        SystemTime::from(at).duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

fn http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        return Some(date.with_timezone(&Utc));
    }
    // Obsolete forms recipients must still accept (RFC 9110 §5.6.7).
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| naive.and_utc())
}

fn with_causes(kind: &str, error: &reqwest::Error) -> String {
    let mut text = kind.to_owned();
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => {
            let cut = text[..end].char_indices().nth(max - 1).map_or(end, |(i, _)| i);
            format!("{}…", &text[..cut])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(status: u16, retry_after: Option<Duration>) -> Outcome {
        Outcome::Transient {
            reason: format!("HTTP {status}"),
            retry_after,
        }
    }

    fn permanent(status: u16) -> Outcome {
        Outcome::Permanent {
            reason: format!("HTTP {status}"),
        }
    }

    #[test]
    fn a_failure_status_is_read_back_from_its_reason() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(classify_status_at(503, None, now).status_code(), Some(503));
        assert_eq!(classify_status_at(404, None, now).status_code(), Some(404));
        assert_eq!(classify_status_at(200, None, now).status_code(), None);
        let with_snippet = Outcome::Permanent {
            reason: "HTTP 422: {\"error\":\"bad\"}".into(),
        };
        assert_eq!(with_snippet.status_code(), Some(422));
        let transport = Outcome::Transient {
            reason: "timed out".into(),
            retry_after: None,
        };
        assert_eq!(transport.status_code(), None);
        assert_eq!(Outcome::CircuitOpen { retry_after: None }.status_code(), None);
    }

    #[test]
    fn statuses() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        let secs = Duration::from_secs;
        let cases: &[(u16, Option<&str>, Outcome)] = &[
            (200, None, Outcome::Delivered),
            (201, None, Outcome::Delivered),
            (204, Some("5"), Outcome::Delivered),
            (299, None, Outcome::Delivered),
            (408, None, transient(408, None)),
            (429, None, transient(429, None)),
            (429, Some("2"), transient(429, Some(secs(2)))),
            (429, Some(" 0 "), transient(429, Some(secs(0)))),
            (429, Some("86400"), transient(429, Some(MAX_RETRY_AFTER))),
            (
                429,
                Some("99999999999999999999999"),
                transient(429, Some(MAX_RETRY_AFTER)),
            ),
            (429, Some("soon"), transient(429, None)),
            (429, Some("-1"), transient(429, None)),
            (
                503,
                Some("Sun, 06 Nov 1994 08:50:07 GMT"),
                transient(503, Some(secs(30))),
            ),
            (
                503,
                Some("Sunday, 06-Nov-94 08:50:07 GMT"),
                transient(503, Some(secs(30))),
            ),
            (
                503,
                Some("Sun Nov  6 08:50:07 1994"),
                transient(503, Some(secs(30))),
            ),
            (
                503,
                Some("Sun, 06 Nov 1994 08:00:00 GMT"),
                transient(503, Some(secs(0))),
            ),
            (500, None, transient(500, None)),
            (500, Some("2"), transient(500, None)),
            (502, None, transient(502, None)),
            (504, None, transient(504, None)),
            (599, None, transient(599, None)),
            (100, None, permanent(100)),
            (301, None, permanent(301)),
            (302, Some("2"), permanent(302)),
            (400, None, permanent(400)),
            (401, None, permanent(401)),
            (403, None, permanent(403)),
            (404, None, permanent(404)),
            (409, None, permanent(409)),
            (410, None, permanent(410)),
            (413, None, permanent(413)),
            (422, None, permanent(422)),
        ];
        for (status, retry_after, expected) in cases {
            assert_eq!(
                &classify_status_at(*status, *retry_after, now),
                expected,
                "{status} {retry_after:?}"
            );
        }
    }

    #[test]
    fn outcome_classes_and_accessors() {
        let cases = [
            (Outcome::Delivered, "delivered", false, None),
            (
                transient(500, Some(Duration::from_secs(1))),
                "transient",
                true,
                Some(Duration::from_secs(1)),
            ),
            (permanent(400), "permanent", false, None),
            (
                Outcome::CircuitOpen { retry_after: None },
                "circuit_open",
                true,
                None,
            ),
        ];
        for (outcome, class, is_transient, retry_after) in cases {
            assert_eq!(outcome.class(), class);
            assert_eq!(outcome.is_transient(), is_transient, "{class}");
            assert_eq!(outcome.retry_after(), retry_after, "{class}");
            assert_eq!(outcome.reason().is_none(), class == "delivered", "{class}");
        }
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("ééééééééééé", 10), "ééééééééé…");
        assert_eq!(truncate("ééééééééééé", 10).chars().count(), 10);
    }
}
