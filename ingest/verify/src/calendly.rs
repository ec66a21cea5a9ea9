//! Calendly webhooks: `Calendly-Webhook-Signature: t=<unix>,v1=<hex>`, HMAC-SHA256 over
//! `"{t}.{raw body}"`, keyed with the webhook signing key as text.
//!
//! Calendly sends no delivery id header; the caller derives one from the body.

use std::time::Duration;

use http::HeaderMap;

use super::{Scheme, Secret, SecretSet, Verified, VerifyError, timestamped};

/// The signature header, lowercase.
pub const SIGNATURE_HEADER: &str = "calendly-webhook-signature";

/// Calendly's documentation suggests three minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(180);

/// The `Calendly-Webhook-Signature` value for `body` sent at `timestamp` (unix seconds): see [`timestamped::sign`].
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    timestamped::sign(secret, timestamp, body)
}

/// Verifies a Calendly webhook; `now` is unix seconds.
pub fn verify(
    secrets: &SecretSet,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<Verified, VerifyError> {
    timestamped::verify(
        Scheme::CalendlyV1,
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

    const SECRET: &str = "calendly-signing-key";
    const BODY: &[u8] = br#"{"event":"invitee.created"}"#;
    const T: i64 = 1_492_774_577;
    // python3: hmac.new(b"calendly-signing-key", b'1492774577.{"event":"invitee.created"}',
    //                   hashlib.sha256).hexdigest() == d1c93578…
    const GOOD: &str = "t=1492774577,v1=d1c935786d6415427ce634c12c2867918107b4a761fabd63aed65198f60d84a0";

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
        let cases = [
            BASE,
            Case {
                name: "rotation",
                secrets: &["previous-key", SECRET],
                ..BASE
            },
            Case {
                name: "wrong key",
                secrets: &["wrong-key"],
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "tampered body",
                body: br#"{"event":"invitee.canceled"}"#,
                expected: mismatch,
                ..BASE
            },
            Case {
                name: "at the tolerance",
                now: T + 180,
                ..BASE
            },
            Case {
                name: "stale",
                now: T + 181,
                expected: Err(VerifyError::StaleTimestamp),
                ..BASE
            },
            Case {
                name: "future",
                now: T - 181,
                expected: Err(VerifyError::FutureTimestamp),
                ..BASE
            },
            Case {
                name: "no timestamp",
                header: Some("v1=d1c935786d6415427ce634c12c2867918107b4a761fabd63aed65198f60d84a0"),
                expected: Err(VerifyError::MalformedSignature {
                    header: SIGNATURE_HEADER,
                }),
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
        ];
        for case in cases {
            let headers = headers(
                case.header
                    .map(|value| ("Calendly-Webhook-Signature", value))
                    .as_slice(),
            );
            let got = verify(
                &secrets(case.secrets),
                &headers,
                case.body,
                case.now,
                DEFAULT_TOLERANCE,
            );
            assert_eq!(got.as_ref().err(), case.expected.as_ref().err(), "{}", case.name);
            if let Ok(verified) = got {
                assert_eq!(verified.scheme(), Scheme::CalendlyV1);
                assert_eq!(verified.event_id(), None);
            }
        }
    }
}
