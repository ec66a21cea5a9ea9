//! GitHub webhooks: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the raw body, keyed with the
//! webhook secret as text.
//!
//! The signature covers the body only: `X-GitHub-Delivery` (and `X-GitHub-Event`) are not signed, so
//! the event's identity is the body's hash (ingest's envelope) and the delivery id is metadata.

use http::HeaderMap;

use super::mac::{self, Algorithm};
use super::{Scheme, Secret, SecretSet, Verified, VerifyError, headers};

/// The signature header, lowercase.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The delivery id header, lowercase. Not signed: metadata only, never the event id.
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// The `X-Hub-Signature-256` value for `body`: `sha256=<hex HMAC-SHA256 over the body>`.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac::sign(Algorithm::Sha256, secret, &[body]))
    )
}

/// Verifies a GitHub webhook against every configured secret.
pub fn verify(secrets: &SecretSet, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
    let value = headers::required(headers, SIGNATURE_HEADER)?;
    let signature = value
        .trim()
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(VerifyError::MalformedSignature {
            header: SIGNATURE_HEADER,
        })?;
    if !mac::any_secret_signed(secrets, Algorithm::Sha256, &[body], &[signature]) {
        return Err(VerifyError::SignatureMismatch);
    }
    Ok(Verified::new(Scheme::GithubHmacSha256, Vec::new(), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, secrets};

    // The example from GitHub's "Validating webhook deliveries" documentation.
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

    struct Case {
        name: &'static str,
        secrets: &'static [&'static str],
        signature: &'static str,
        body: &'static [u8],
        expected: Result<(), VerifyError>,
    }

    const BASE: Case = Case {
        name: "docs example",
        secrets: &[SECRET],
        signature: SIGNATURE,
        body: BODY,
        expected: Ok(()),
    };

    #[test]
    fn sign_reproduces_the_known_answer() {
        assert_eq!(sign(&Secret::new(SECRET), BODY), SIGNATURE);
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
                name: "rotation",
                secrets: &["It's an old secret", SECRET],
                ..BASE
            },
            Case {
                name: "uppercase hex",
                signature: "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
                ..BASE
            },
            Case {
                name: "wrong secret",
                secrets: &["wrong secret"],
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "tampered body",
                body: b"Hello, World?",
                expected: mismatch.clone(),
                ..BASE
            },
            Case {
                name: "truncated signature",
                signature: "sha256=757107ea",
                expected: mismatch,
                ..BASE
            },
            Case {
                name: "no prefix",
                signature: "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
                expected: malformed.clone(),
                ..BASE
            },
            Case {
                name: "not hex",
                signature: "sha256=not-hex",
                expected: malformed,
                ..BASE
            },
        ];
        for case in cases {
            let headers = headers(&[
                ("X-Hub-Signature-256", case.signature),
                ("X-GitHub-Delivery", DELIVERY),
            ]);
            let got = verify(&secrets(case.secrets), &headers, case.body);
            assert_eq!(got.as_ref().err(), case.expected.as_ref().err(), "{}", case.name);
            if let Ok(verified) = got {
                assert_eq!(verified.scheme(), Scheme::GithubHmacSha256);
                assert_eq!(verified.event_id(), None, "the delivery id is not signed");
            }
        }
    }

    #[test]
    fn delivery_id_is_optional_and_signature_is_not() {
        let _ = DELIVERY_HEADER;
        let verified = verify(
            &secrets(&[SECRET]),
            &headers(&[("x-hub-signature-256", SIGNATURE)]),
            BODY,
        );
        assert_eq!(verified.unwrap().event_id(), None);

        let missing = verify(
            &secrets(&[SECRET]),
            &headers(&[("x-github-delivery", DELIVERY)]),
            BODY,
        );
        assert_eq!(
            missing.unwrap_err(),
            VerifyError::MissingSignature {
                header: SIGNATURE_HEADER
            }
        );
    }
}
