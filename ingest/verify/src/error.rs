//! Why a request failed verification ([`VerifyError`]) and why a configured secret was rejected
//! ([`SecretError`]). Messages name headers and rules, never secrets or signature values.

/// Why a request failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme requires is absent.
    #[error("missing `{header}` header")]
    MissingSignature { header: &'static str },
    /// A required header is present but cannot be parsed.
    #[error("malformed `{header}` header")]
    MalformedSignature { header: &'static str },
    /// No signature in the request matches any configured secret.
    #[error("signature does not match any configured secret")]
    SignatureMismatch,
    /// The signed timestamp is older than the tolerance allows.
    #[error("signature timestamp is too old")]
    StaleTimestamp,
    /// The signed timestamp is further in the future than the tolerance allows.
    #[error("signature timestamp is too far in the future")]
    FutureTimestamp,
    /// A Twilio JSON body arrived without a `bodySHA256` query parameter.
    #[error("JSON body without a `bodySHA256` query parameter")]
    MissingBodyHash,
    /// The Twilio `bodySHA256` query parameter is not the SHA-256 of the body.
    #[error("`bodySHA256` does not match the body")]
    BodyHashMismatch,
    /// The Twilio signature settings name a shared key that is not configured.
    #[error("unknown shared key id")]
    UnknownKeyId,
    /// The Twilio signature settings name an algorithm other than `HMAC_SHA256`.
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    /// A form body is not valid UTF-8.
    #[error("form body is not valid UTF-8")]
    UnparsableForm,
    /// Basic auth credentials are configured and the request's `Authorization` header is missing
    /// or presents none of them.
    #[error("missing or wrong basic auth credentials")]
    BasicAuthMismatch,
}

impl VerifyError {
    /// A short snake_case label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingSignature { .. } => "missing_signature",
            Self::MalformedSignature { .. } => "malformed_signature",
            Self::SignatureMismatch => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::MissingBodyHash => "missing_body_hash",
            Self::BodyHashMismatch => "body_hash_mismatch",
            Self::UnknownKeyId => "unknown_key_id",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::UnparsableForm => "unparsable_form",
            Self::BasicAuthMismatch => "bad_basic_auth",
        }
    }

    /// True when the request itself is malformed (HTTP 400); every other error is an authentication
    /// failure (HTTP 401).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            Self::UnparsableForm | Self::MissingBodyHash | Self::BodyHashMismatch
        )
    }
}

/// Why a configured secret was rejected at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// A secret (or the key part of a shared key entry) is empty.
    #[error("secret is empty")]
    Empty,
    /// A Standard Webhooks secret is not `whsec_<base64>`.
    #[error("Standard Webhooks secret is not valid base64 after the `whsec_` prefix")]
    InvalidBase64,
    /// A Twilio shared key entry is not `id:secret` with a non-empty id.
    #[error("shared key entry is not `id:secret`")]
    SharedKeyFormat,
    /// A basic auth entry is not `user:password` with a non-empty user and password.
    #[error("basic auth entry is not `user:password`")]
    BasicCredentialFormat,
    /// Two Twilio shared key entries use the same id.
    #[error("shared key id `{id}` is configured more than once")]
    DuplicateKeyId { id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [VerifyError; 11] = [
        VerifyError::MissingSignature {
            header: "stripe-signature",
        },
        VerifyError::MalformedSignature {
            header: "stripe-signature",
        },
        VerifyError::SignatureMismatch,
        VerifyError::StaleTimestamp,
        VerifyError::FutureTimestamp,
        VerifyError::MissingBodyHash,
        VerifyError::BodyHashMismatch,
        VerifyError::UnknownKeyId,
        VerifyError::UnsupportedAlgorithm,
        VerifyError::UnparsableForm,
        VerifyError::BasicAuthMismatch,
    ];

    #[test]
    fn reasons_are_distinct_snake_case_labels() {
        let mut seen = std::collections::HashSet::new();
        for error in ALL {
            let reason = error.reason();
            assert!(
                reason.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{reason}"
            );
            assert!(seen.insert(reason), "duplicate reason {reason}");
        }
    }

    #[test]
    fn only_malformed_bodies_are_bad_requests() {
        let bad_requests: Vec<_> = ALL
            .iter()
            .filter(|e| e.is_bad_request())
            .map(VerifyError::reason)
            .collect();
        assert_eq!(
            bad_requests,
            ["missing_body_hash", "body_hash_mismatch", "unparsable_form"]
        );
    }

    #[test]
    fn messages_never_contain_secrets_or_signatures() {
        // Secrets and signatures used by the scheme tests; no error message may echo them.
        let sensitive = [
            "12345",
            "shared-secret-2024",
            "whsec_test_secret",
            "calendly-signing-key",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "It's a Secret to Everybody",
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
            "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd",
        ];
        let secret_errors = [
            SecretError::Empty,
            SecretError::InvalidBase64,
            SecretError::SharedKeyFormat,
            SecretError::DuplicateKeyId {
                id: "key-2024".into(),
            },
        ];
        let messages = ALL
            .iter()
            .map(ToString::to_string)
            .chain(secret_errors.iter().map(ToString::to_string));
        for message in messages {
            for secret in sensitive {
                assert!(!message.contains(secret), "{message:?} leaks {secret:?}");
            }
        }
    }
}
