//! The retry ladder, as pure functions: retry topic names, the headers a retried or dead-lettered
//! record carries, and where a failed delivery goes next. Classification of the failure itself
//! lives in [`delivery::classify`](crate::delivery::classify); this module only routes its result.
//!
//! A record that failed transiently for the `n`th time goes to the ladder's `n`th topic
//! (`switchboard.retry.<delay>`) with `not-before` = failure time + that delay (or the target's
//! `Retry-After`, whichever is later); after the last step it goes to `switchboard.dlq`. A
//! permanent failure goes to the DLQ at once. The retried record keeps the original key, value
//! and headers; the ladder's own headers are replaced at every step.

use std::time::Duration;

use rdkafka::message::{Header, Headers, OwnedHeaders};

use switchboard_schemas::error_class;
use switchboard_schemas::headers;
use switchboard_schemas::headers::ladder as ladder_headers;
use switchboard_schemas::topics::retry_topic;

/// Where the delivered record came from originally (a domain topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The ladder state a retry record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetryState {
    pub action: String,
    /// Failed deliveries so far, from 1.
    pub attempt: u32,
    pub first_failed_at: i64,
    pub not_before: i64,
    pub last_error: String,
    pub origin: Origin,
}

fn header<'a, H: Headers>(headers: &'a H, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Reads the ladder's headers of a record (`what` names the record in errors).
struct Reader<'a, H: Headers> {
    headers: &'a H,
    what: &'static str,
}

impl<H: Headers> Reader<'_, H> {
    fn text(&self, key: &str) -> Result<&str, String> {
        header(self.headers, key).ok_or_else(|| format!("{} without a {key} header", self.what))
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        self.text(key)?
            .parse()
            .map_err(|_| format!("{} with a malformed {key} header", self.what))
    }

    fn origin(&self) -> Result<Origin, String> {
        Ok(Origin {
            topic: self.text(headers::ORIGIN_TOPIC)?.to_owned(),
            partition: self.number(headers::ORIGIN_PARTITION)?,
            offset: self.number(headers::ORIGIN_OFFSET)?,
        })
    }
}

impl RetryState {
    /// The state of a record read from a retry topic, or why it has none.
    pub(crate) fn from_headers<H: Headers>(headers: Option<&H>) -> Result<RetryState, String> {
        let read = Reader {
            headers: headers.ok_or("retry record without headers")?,
            what: "retry record",
        };
        Ok(RetryState {
            action: read.text(ladder_headers::ACTION)?.to_owned(),
            attempt: read.number(ladder_headers::ATTEMPT)?,
            first_failed_at: read.number(ladder_headers::FIRST_FAILED_AT)?,
            not_before: read.number(ladder_headers::NOT_BEFORE)?,
            last_error: header(read.headers, ladder_headers::LAST_ERROR)
                .unwrap_or_default()
                .to_owned(),
            origin: read.origin()?,
        })
    }
}

/// The action and origin of a record `dlq redrive` put back on
/// [`ACTIONS_REDRIVE`](switchboard_schemas::topics::ACTIONS_REDRIVE), or why it has none.
pub(crate) fn redriven<H: Headers>(headers: Option<&H>) -> Result<(String, Origin), String> {
    let read = Reader {
        headers: headers.ok_or("redriven record without headers")?,
        what: "redriven record",
    };
    Ok((read.text(ladder_headers::ACTION)?.to_owned(), read.origin()?))
}

/// How a delivery failed, as far as routing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliveryFailure {
    /// Worth trying again later; `retry_after` is the target's own hint.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Never worth trying again.
    Permanent { reason: String },
}

/// Where a failed record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// To `topic`, carrying `state`.
    Retry { topic: String, state: RetryState },
    /// To the DLQ.
    DeadLetter {
        class: &'static str,
        reason: String,
        attempt: u32,
    },
}

/// Where a record goes after its delivery for `action` failed at `failed_at` (epoch ms: when the
/// failure became known, i.e. when the target answered, the request timed out or the breaker
/// refused it; never when the batch was read, or a slow target would be retried early).
/// `previous` is its ladder state when it was read from a retry topic; `origin` is where it was
/// read from otherwise.
pub(crate) fn route(
    ladder: &[Duration],
    action: &str,
    previous: Option<&RetryState>,
    origin: Origin,
    failure: DeliveryFailure,
    failed_at: i64,
) -> Route {
    let attempt = previous.map_or(0, |p| p.attempt) + 1;
    match failure {
        DeliveryFailure::Permanent { reason } => Route::DeadLetter {
            class: error_class::REJECTED,
            reason,
            attempt,
        },
        DeliveryFailure::Transient { reason, .. } if attempt as usize > ladder.len() => Route::DeadLetter {
            class: error_class::RETRIES_EXHAUSTED,
            reason: format!("{attempt} attempts failed; last: {reason}"),
            attempt,
        },
        DeliveryFailure::Transient { reason, retry_after } => {
            let delay = ladder[attempt as usize - 1].max(retry_after.unwrap_or_default());
            Route::Retry {
                topic: retry_topic(ladder[attempt as usize - 1]),
                state: RetryState {
                    action: action.to_owned(),
                    attempt,
                    first_failed_at: previous.map_or(failed_at, |p| p.first_failed_at),
                    not_before: failed_at
                        .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                    last_error: reason,
                    origin: previous.map_or(origin, |p| p.origin.clone()),
                },
            }
        }
    }
}

/// Whether `key` is one of the headers this module (re)writes; they are never copied over.
fn is_ladder_header(key: &str) -> bool {
    [
        ladder_headers::ATTEMPT,
        ladder_headers::FIRST_FAILED_AT,
        ladder_headers::LAST_ERROR,
        ladder_headers::NOT_BEFORE,
        ladder_headers::ACTION,
        headers::ORIGIN_TOPIC,
        headers::ORIGIN_PARTITION,
        headers::ORIGIN_OFFSET,
        headers::ERROR_CLASS,
        headers::ERROR_REASON,
        headers::FAILED_AT,
    ]
    .contains(&key)
}

/// The original headers (the provider's `event-id`, `source` …) without any ladder header.
fn original<H: Headers>(headers: Option<&H>) -> OwnedHeaders {
    let mut owned = OwnedHeaders::new();
    for h in headers.into_iter().flat_map(|h| h.iter()) {
        if !is_ladder_header(h.key) {
            owned = owned.insert(h);
        }
    }
    owned
}

fn with(headers: OwnedHeaders, pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(headers, |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(*value),
        })
    })
}

/// Headers of the retry record for `state`: the original headers plus the ladder's.
pub(crate) fn retry_headers<H: Headers>(headers: Option<&H>, state: &RetryState) -> OwnedHeaders {
    with(
        original(headers),
        &[
            (ladder_headers::ACTION, &state.action),
            (ladder_headers::ATTEMPT, &state.attempt.to_string()),
            (
                ladder_headers::FIRST_FAILED_AT,
                &state.first_failed_at.to_string(),
            ),
            (ladder_headers::LAST_ERROR, &state.last_error),
            (ladder_headers::NOT_BEFORE, &state.not_before.to_string()),
            (headers::ORIGIN_TOPIC, &state.origin.topic),
            (headers::ORIGIN_PARTITION, &state.origin.partition.to_string()),
            (headers::ORIGIN_OFFSET, &state.origin.offset.to_string()),
        ],
    )
}

/// Headers of a dead-lettered record: the original headers plus why, where from, and for which
/// action.
pub(crate) fn dead_letter_headers<H: Headers>(
    headers: Option<&H>,
    action: &str,
    class: &str,
    reason: &str,
    attempt: u32,
    origin: &Origin,
    now: i64,
) -> OwnedHeaders {
    with(
        original(headers),
        &[
            (headers::ERROR_CLASS, class),
            (headers::ERROR_REASON, reason),
            (headers::FAILED_AT, &now.to_string()),
            (ladder_headers::ACTION, action),
            (ladder_headers::ATTEMPT, &attempt.to_string()),
            (headers::ORIGIN_TOPIC, &origin.topic),
            (headers::ORIGIN_PARTITION, &origin.partition.to_string()),
            (headers::ORIGIN_OFFSET, &origin.offset.to_string()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [Duration; 3] = [
        Duration::from_secs(1),
        Duration::from_secs(2),
        Duration::from_secs(4),
    ];

    fn origin() -> Origin {
        Origin {
            topic: "switchboard.calls".into(),
            partition: 2,
            offset: 40,
        }
    }

    fn transient(reason: &str) -> DeliveryFailure {
        DeliveryFailure::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    #[test]
    fn topics_name_their_delay_in_its_largest_whole_unit() {
        let cases = [
            (500, "500ms"),
            (1_000, "1s"),
            (16_000, "16s"),
            (60_000, "1m"),
            (90_000, "90s"),
            (1_800_000, "30m"),
            (7_200_000, "2h"),
        ];
        for (millis, suffix) in cases {
            assert_eq!(
                retry_topic(Duration::from_millis(millis)),
                format!("switchboard.retry.{suffix}")
            );
        }
    }

    #[test]
    fn transient_failures_climb_the_ladder_then_dead_letter() {
        let mut previous: Option<RetryState> = None;
        let mut topics = Vec::new();
        for (step, now) in [(1u32, 1_000i64), (2, 3_000), (3, 6_000)] {
            match route(&LADDER, "app", previous.as_ref(), origin(), transient("503"), now) {
                Route::Retry { topic, state } => {
                    assert_eq!(state.attempt, step);
                    assert_eq!(state.first_failed_at, 1_000, "first failure kept");
                    assert_eq!(
                        state.not_before,
                        now + LADDER[step as usize - 1].as_millis() as i64
                    );
                    assert_eq!(state.origin, origin(), "origin kept across steps");
                    topics.push(topic);
                    previous = Some(state);
                }
                other => panic!("step {step}: {other:?}"),
            }
        }
        assert_eq!(
            topics,
            [
                "switchboard.retry.1s",
                "switchboard.retry.2s",
                "switchboard.retry.4s"
            ]
        );
        let last = route(
            &LADDER,
            "app",
            previous.as_ref(),
            origin(),
            transient("503"),
            9_000,
        );
        assert!(
            matches!(&last, Route::DeadLetter { class: error_class::RETRIES_EXHAUSTED, attempt: 4, reason } if reason.contains("503")),
            "{last:?}"
        );
    }

    #[test]
    fn permanent_failures_dead_letter_at_once_and_retry_after_can_only_delay() {
        let rejected = route(
            &LADDER,
            "app",
            None,
            origin(),
            DeliveryFailure::Permanent { reason: "400".into() },
            0,
        );
        assert!(matches!(
            rejected,
            Route::DeadLetter {
                class: error_class::REJECTED,
                attempt: 1,
                ..
            }
        ));
        let later = DeliveryFailure::Transient {
            reason: "429".into(),
            retry_after: Some(Duration::from_secs(30)),
        };
        let Route::Retry { topic, state } = route(&LADDER, "app", None, origin(), later, 0) else {
            panic!()
        };
        assert_eq!(
            (topic.as_str(), state.not_before),
            ("switchboard.retry.1s", 30_000)
        );
        let sooner = DeliveryFailure::Transient {
            reason: "429".into(),
            retry_after: Some(Duration::from_millis(10)),
        };
        let Route::Retry { state, .. } = route(&LADDER, "app", None, origin(), sooner, 0) else {
            panic!()
        };
        assert_eq!(state.not_before, 1_000, "the ladder's delay is a floor");
    }

    #[test]
    fn headers_round_trip_and_replace_the_previous_step() {
        let provider = OwnedHeaders::new()
            .insert(Header {
                key: "event-id",
                value: Some("EV-1"),
            })
            .insert(Header {
                key: "source",
                value: Some("twilio"),
            });
        let Route::Retry { state, .. } = route(&LADDER, "app", None, origin(), transient("timeout"), 5)
        else {
            panic!()
        };
        let first = retry_headers(Some(&provider), &state);
        assert_eq!(RetryState::from_headers(Some(&first)).unwrap(), state);
        let Route::Retry {
            state: second_state, ..
        } = route(&LADDER, "app", Some(&state), origin(), transient("503"), 2_000)
        else {
            panic!()
        };
        let second = retry_headers(Some(&first), &second_state);
        assert_eq!(RetryState::from_headers(Some(&second)).unwrap(), second_state);
        let keys: Vec<&str> = second.iter().map(|h| h.key).collect();
        assert_eq!(keys.iter().filter(|k| **k == "attempt").count(), 1, "{keys:?}");
        assert_eq!(
            &keys[..2],
            ["event-id", "source"],
            "original headers first and kept"
        );

        let dead = dead_letter_headers(
            Some(&second),
            "app",
            error_class::RETRIES_EXHAUSTED,
            "gave up",
            6,
            &origin(),
            9,
        );
        let value = |key: &str| header(&dead, key).map(str::to_owned);
        assert_eq!(value("error-class").as_deref(), Some("retries_exhausted"));
        assert_eq!(value("attempt").as_deref(), Some("6"));
        assert_eq!(value("original-offset").as_deref(), Some("40"));
        assert_eq!(value("event-id").as_deref(), Some("EV-1"));
        assert_eq!(
            value("not-before"),
            None,
            "ladder state does not follow into the DLQ"
        );
    }

    #[test]
    fn malformed_retry_headers_are_reported() {
        let missing = OwnedHeaders::new().insert(Header {
            key: "attempt",
            value: Some("1"),
        });
        assert!(
            RetryState::from_headers(Some(&missing))
                .unwrap_err()
                .contains("action")
        );
        assert!(RetryState::from_headers::<OwnedHeaders>(None).is_err());
        let negative = OwnedHeaders::new()
            .insert(Header {
                key: "action",
                value: Some("app"),
            })
            .insert(Header {
                key: "attempt",
                value: Some("-1"),
            });
        assert!(
            RetryState::from_headers(Some(&negative))
                .unwrap_err()
                .contains("attempt")
        );
    }

    #[test]
    fn redriven_records_name_their_action_and_origin() {
        let redrive = OwnedHeaders::new()
            .insert(Header {
                key: "action",
                value: Some("app"),
            })
            .insert(Header {
                key: "original-topic",
                value: Some("switchboard.calls"),
            })
            .insert(Header {
                key: "original-partition",
                value: Some("2"),
            })
            .insert(Header {
                key: "original-offset",
                value: Some("40"),
            });
        assert_eq!(redriven(Some(&redrive)).unwrap(), ("app".to_owned(), origin()));
        let no_origin = OwnedHeaders::new().insert(Header {
            key: "action",
            value: Some("app"),
        });
        assert!(redriven(Some(&no_origin)).unwrap_err().contains("original-topic"));
    }
}
