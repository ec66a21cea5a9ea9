//! Standard Webhooks signing of outbound requests: the `whsec_…` secret and the
//! `webhook-signature` header value, HMAC-SHA256 over `"{id}.{timestamp}.{body}"`, computed by
//! [`switchboard_verify::standard_webhooks::sign`], the signer whose known answers ingest's verifier
//! shares.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use switchboard_verify::{Secret, standard_webhooks};

/// Prefix of a Standard Webhooks secret; the base64 key follows it.
const PREFIX: &str = "whsec_";

/// The key bytes of a Standard Webhooks signing secret. `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct SigningSecret(Secret);

/// Why a signing secret could not be decoded. Never carries the secret's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningSecretError {
    #[error("must be whsec_ followed by base64")]
    InvalidBase64,
    #[error("the key is empty")]
    Empty,
}

impl SigningSecret {
    /// Decodes `whsec_<base64 key>` (the prefix is optional, as in the reference libraries). Stricter
    /// than ingest's [`Secret::from_standard_webhooks`]: surrounding whitespace is ignored, but the
    /// base64 must carry its `=` padding.
    pub fn from_standard_webhooks(secret: &str) -> Result<Self, SigningSecretError> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix(PREFIX).unwrap_or(encoded);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SigningSecretError::InvalidBase64)?;
        if key.is_empty() {
            return Err(SigningSecretError::Empty);
        }
        Ok(Self(Secret::new(key)))
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The `webhook-signature` header value, `v1,<base64 HMAC-SHA256>`, for message `id` sent at
/// `timestamp` (unix seconds) with `body`.
pub(crate) fn sign(secret: &SigningSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    standard_webhooks::sign(&secret.0, id, timestamp, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_specification_example() {
        let secret = SigningSecret::from_standard_webhooks("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_decode_and_never_print() {
        let cases: [(&str, Result<(), SigningSecretError>); 4] = [
            ("whsec_aGVsbG8=", Ok(())),
            ("aGVsbG8=", Ok(())),
            ("whsec_not base64!", Err(SigningSecretError::InvalidBase64)),
            ("whsec_", Err(SigningSecretError::Empty)),
        ];
        for (input, expected) in cases {
            assert_eq!(
                SigningSecret::from_standard_webhooks(input).map(|_| ()),
                expected,
                "{input}"
            );
        }
        let secret = SigningSecret::from_standard_webhooks("whsec_aGVsbG8=").unwrap();
        assert_eq!(format!("{secret:?}"), "[redacted]");
    }
}
