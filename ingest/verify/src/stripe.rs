//! Stripe webhooks: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 over
//! `"{t}.{raw body}"`, keyed with the endpoint's `whsec_…` string as text.
//!
//! Stripe sends no delivery id header; the caller reads `id` from the JSON body.

use std::time::Duration;

use http::HeaderMap;

use super::{Scheme, Secret, SecretSet, Verified, VerifyError, timestamped};

/// The signature header, lowercase.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// Stripe's own libraries default to five minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The `Stripe-Signature` value for `body` sent at `timestamp` (unix seconds): see [`timestamped::sign`].
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    timestamped::sign(secret, timestamp, body)
}

/// Verifies a Stripe webhook. Any `v1` signature may match any secret; `now` is unix seconds, and the
/// signed timestamp must lie within `tolerance` of it in either direction.
pub fn verify(
    secrets: &SecretSet,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<Verified, VerifyError> {
    timestamped::verify(
        Scheme::StripeV1,
        SIGNATURE_HEADER,
        secrets,
        headers,
        body,
        now,
        tolerance,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, secrets};

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    const T: i64 = 1_700_000_000;
    // python3: hmac.new(b"whsec_test_secret", b'1700000000.{"id":"evt_1","object":"event"}',
    //                   hashlib.sha256).hexdigest() == 0c8670ed…
    const GOOD: &str = "t=1700000000,v1=0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";
    const MULTI: &str = "t=1700000000,\
                         v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,\
                         v1=0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd,\
                         v0=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd";

    struct Case {
        name: &'static str,
        secrets: &'static [&'static str],
        header: Option<&'static str>,
        body: &'static [u8],
        now: i64,
        expected: Result<(), VerifyError>,
    }

    const BASE: Case = Case {
        name: "valid",
        secrets: &[SECRET],
        header: Some(GOOD),
        body: BODY,
        now: T,
        expected: Ok(()),
    };

    #[test]
    fn sign_reproduces_the_known_answer() {
        assert_eq!(sign(&Secret::new(SECRET), T, BODY), GOOD);
    }

    #[test]
    fn known_answers() {
        let mismatch = Err(VerifyError::SignatureMismatch);
        let malformed = Err(VerifyError::MalformedSignature {
            header: SIGNATURE_HEADER,
        });
        let cases = [
            BASE,
            Case {
                name: "several v1, second matches",
                header: Some(MULTI),
                ..BASE
            },
            Case {
                name: "rotation",
                secrets: &["whsec_old", SECRET],
                ..BASE
            },
            Case {
                name: "wrong secret",
                secrets: &["whsec_wrong"],
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "tampered body",
                body: br#"{"id":"evt_2","object":"event"}"#,
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "other timestamp",
                header: Some(
                    "t=1700000001,v1=0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd",
                ),
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "only v0",
                header: Some(
                    "t=1700000000,v0=0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd",
                ),
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "at the tolerance",
                now: T + 300,
                ..BASE
            },
            Case {
                name: "stale",
                now: T + 301,
                expected: Err(VerifyError::StaleTimestamp),
                ..BASE
            },
            Case {
                name: "future",
                now: T - 301,
                expected: Err(VerifyError::FutureTimestamp),
                ..BASE
            },
            Case {
                name: "stale and wrong secret",
                secrets: &["whsec_wrong"],
                now: T + 301,
                expected: mismatch,
                ..BASE
            },
            Case {
                name: "missing header",
                header: None,
                expected: Err(VerifyError::MissingSignature {
                    header: SIGNATURE_HEADER,
                }),
                ..BASE
            },
            Case {
                name: "no timestamp",
                header: Some("v1=0c8670ed"),
                expected: malformed.clone(),
                ..BASE
            },
            Case {
                name: "timestamp not a number",
                header: Some("t=yesterday,v1=0c8670ed"),
                expected: malformed.clone(),
                ..BASE
            },
            Case {
                name: "v1 not hex",
                header: Some("t=1700000000,v1=not-hex"),
                expected: malformed.clone(),
                ..BASE
            },
            Case {
                name: "garbage",
                header: Some("garbage"),
                expected: malformed,
                ..BASE
            },
        ];
        for case in cases {
            let headers = headers(case.header.map(|value| ("Stripe-Signature", value)).as_slice());
            let got = verify(
                &secrets(case.secrets),
                &headers,
                case.body,
                case.now,
                DEFAULT_TOLERANCE,
            );
            assert_eq!(got.as_ref().err(), case.expected.as_ref().err(), "{}", case.name);
            if let Ok(verified) = got {
                assert_eq!(verified.scheme(), Scheme::StripeV1);
                assert_eq!(verified.event_id(), None);
                assert!(verified.params().is_empty());
            }
        }
    }
}
