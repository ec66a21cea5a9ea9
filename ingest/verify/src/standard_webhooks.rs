//! Standard Webhooks (as sent by Svix and others): headers `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (space-separated `v1,<base64>` entries), HMAC-SHA256 over
//! `"{id}.{timestamp}.{raw body}"`, keyed with the base64-decoded `whsec_…` secret
//! (see [`Secret::from_standard_webhooks`](super::Secret::from_standard_webhooks)).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

use super::mac::{self, Algorithm};
use super::{Scheme, Secret, SecretSet, Verified, VerifyError, headers, timestamped};

/// The delivery id header, lowercase; also the [`Verified::event_id`].
pub const ID_HEADER: &str = "webhook-id";
/// The signing time header (unix seconds), lowercase.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signature list header, lowercase.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The specification's tolerance: five minutes either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Parses a `webhook-signature` value into its `v1` signatures, base64-decoded, in header order.
/// Entries of other versions (such as `v1a`) are skipped. `None` when an entry has no `,` or a `v1`
/// signature is not base64.
pub fn parse_signatures(value: &str) -> Option<Vec<Vec<u8>>> {
    let mut v1 = Vec::new();
    for entry in value.split_whitespace() {
        let (version, signature) = entry.split_once(',')?;
        if version == "v1" {
            v1.push(STANDARD.decode(signature).ok()?);
        }
    }
    Some(v1)
}

/// The `webhook-signature` value for message `id` sent at `timestamp` (unix seconds) with `body`:
/// `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`, keyed with the decoded `whsec_` key
/// ([`Secret::from_standard_webhooks`]).
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let signature = mac::sign(
        Algorithm::Sha256,
        secret,
        &[id.as_bytes(), b".", t.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(signature))
}

/// Verifies a Standard Webhooks request; `now` is unix seconds. Any `v1` signature may match any secret.
/// An empty `webhook-id` counts as missing, as in the Standard Webhooks libraries.
pub fn verify(
    secrets: &SecretSet,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<Verified, VerifyError> {
    let id = headers::required(headers, ID_HEADER)?;
    if id.is_empty() {
        return Err(VerifyError::MissingSignature { header: ID_HEADER });
    }
    let timestamp: i64 = headers::required(headers, TIMESTAMP_HEADER)?
        .trim()
        .parse()
        .map_err(|_| VerifyError::MalformedSignature {
            header: TIMESTAMP_HEADER,
        })?;
    let signatures = parse_signatures(headers::required(headers, SIGNATURE_HEADER)?).ok_or(
        VerifyError::MalformedSignature {
            header: SIGNATURE_HEADER,
        },
    )?;

    let timestamp_text = timestamp.to_string();
    let message = [id.as_bytes(), b".", timestamp_text.as_bytes(), b".", body];
    if !mac::any_secret_signed(secrets, Algorithm::Sha256, &message, &signatures) {
        return Err(VerifyError::SignatureMismatch);
    }
    timestamped::check_window(timestamp, now, tolerance)?;
    Ok(Verified::new(
        Scheme::StandardWebhooksV1,
        Vec::new(),
        Some(id.to_owned()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    // The example from the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const T: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const ZEROS: &str = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    // 24 random bytes: a valid secret that did not sign the example.
    const OTHER_SECRET: &str = "whsec_naz7Pf8/Rgo7+vVmGegzQSRoDF/e1/VR";

    struct Case {
        name: &'static str,
        secrets: &'static [&'static str],
        id: Option<&'static str>,
        timestamp: Option<&'static str>,
        signature: Option<&'static str>,
        body: &'static [u8],
        now: i64,
        expected: Result<(), VerifyError>,
    }

    const BASE: Case = Case {
        name: "specification example",
        secrets: &[SECRET],
        id: Some(ID),
        timestamp: Some("1614265330"),
        signature: Some(SIGNATURE),
        body: BODY,
        now: T,
        expected: Ok(()),
    };

    #[test]
    fn sign_reproduces_the_known_answers() {
        let secret = Secret::from_standard_webhooks(SECRET).unwrap();
        assert_eq!(sign(&secret, ID, T, BODY), SIGNATURE);
        // The vector of the "empty id" case below.
        assert_eq!(
            sign(&secret, "", T, BODY),
            "v1,BbrBopkxy1IaPTmLxhGOIjtynRWNh3UqphKDPFaJ1cU="
        );
    }

    #[test]
    fn known_answers() {
        let mismatch = Err(VerifyError::SignatureMismatch);
        let cases = [
            BASE,
            Case {
                name: "several signatures, last matches",
                signature: Some(
                    "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1a,c2lnbmF0dXJl v2,xyz \
                     v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                ),
                ..BASE
            },
            Case {
                name: "rotation",
                secrets: &[OTHER_SECRET, SECRET],
                ..BASE
            },
            Case {
                name: "wrong secret",
                secrets: &[OTHER_SECRET],
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "tampered body",
                body: br#"{"test": 2432232315}"#,
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "other id",
                id: Some("msg_other"),
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "other timestamp",
                timestamp: Some("1614265331"),
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "wrong signature",
                signature: Some(ZEROS),
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "only other versions",
                signature: Some("v1a,c2lnbmF0dXJl"),
                expected: mismatch,
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
                name: "missing id",
                id: None,
                expected: Err(VerifyError::MissingSignature { header: ID_HEADER }),
                ..BASE
            },
            Case {
                // Signed over ".1614265330.{body}": still refused, as the reference library does.
                name: "empty id",
                id: Some(""),
                signature: Some("v1,BbrBopkxy1IaPTmLxhGOIjtynRWNh3UqphKDPFaJ1cU="),
                expected: Err(VerifyError::MissingSignature { header: ID_HEADER }),
                ..BASE
            },
            Case {
                name: "missing timestamp",
                timestamp: None,
                expected: Err(VerifyError::MissingSignature {
                    header: TIMESTAMP_HEADER,
                }),
                ..BASE
            },
            Case {
                name: "missing signature",
                signature: None,
                expected: Err(VerifyError::MissingSignature {
                    header: SIGNATURE_HEADER,
                }),
                ..BASE
            },
            Case {
                name: "timestamp not a number",
                timestamp: Some("soon"),
                expected: Err(VerifyError::MalformedSignature {
                    header: TIMESTAMP_HEADER,
                }),
                ..BASE
            },
            Case {
                name: "signature without version",
                signature: Some("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
                expected: Err(VerifyError::MalformedSignature {
                    header: SIGNATURE_HEADER,
                }),
                ..BASE
            },
            Case {
                name: "signature not base64",
                signature: Some("v1,not*base64"),
                expected: Err(VerifyError::MalformedSignature {
                    header: SIGNATURE_HEADER,
                }),
                ..BASE
            },
        ];
        for case in cases {
            let pairs = [
                ("webhook-id", case.id),
                ("Webhook-Timestamp", case.timestamp),
                ("Webhook-Signature", case.signature),
            ];
            let present: Vec<_> = pairs
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?)))
                .collect();
            let secrets = SecretSet::from_standard_webhooks(case.secrets).unwrap();
            let got = verify(
                &secrets,
                &headers(&present),
                case.body,
                case.now,
                DEFAULT_TOLERANCE,
            );
            assert_eq!(got.as_ref().err(), case.expected.as_ref().err(), "{}", case.name);
            if let Ok(verified) = got {
                assert_eq!(verified.scheme(), Scheme::StandardWebhooksV1);
                assert_eq!(verified.event_id(), Some(ID));
                assert!(verified.params().is_empty());
            }
        }
    }

    #[test]
    fn parses_signature_lists() {
        let cases: [(&str, Option<&[&[u8]]>); 6] = [
            ("v1,aGVsbG8=", Some(&[b"hello"])),
            ("v1,aGVsbG8=  v1a,eHl6 v1,d29ybGQ=", Some(&[b"hello", b"world"])),
            ("v1a,eHl6", Some(&[])),
            ("", Some(&[])),
            ("aGVsbG8=", None),
            ("v1,???", None),
        ];
        for (input, expected) in cases {
            let expected = expected.map(|list| list.iter().map(|bytes| bytes.to_vec()).collect::<Vec<_>>());
            assert_eq!(parse_signatures(input), expected, "{input}");
        }
    }
}
