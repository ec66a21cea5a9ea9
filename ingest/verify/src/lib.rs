//! switchboard-verify: webhook signatures in both directions, one pure module per scheme.
//!
//! Every scheme exposes a `verify` function that takes the configured secrets, the request headers and
//! the raw body (plus the public URL or the current time where the scheme needs them) and returns
//! [`Verified`] or a [`VerifyError`], and a `sign` function that computes the header value a sender
//! puts on the request, so the known-answer tests of each module cover both directions. Nothing here
//! reads the clock, the network or the environment: timestamps are passed in.
//!
//! This crate owns the types shared by all schemes: the proof of verification ([`Verified`], which only
//! code in this crate can build), the scheme names ([`Scheme`]), the errors and the secret holders.
//! Each scheme's wire format lives in its own file; the `t=…,v1=…` header shared by Stripe and Calendly
//! lives in [`timestamped`]. Ingest verifies with it; the `send` tool, the load generator and the
//! processor's outbound actions sign with it.

pub mod calendly;
mod error;
pub mod github;
mod headers;
mod mac;
mod secret;
pub mod standard_webhooks;
pub mod stripe;
#[cfg(test)]
mod test_support;
pub mod timestamped;
pub mod twilio;
pub mod twilio_events;

pub use error::{SecretError, VerifyError};
pub use secret::{Secret, SecretSet, SharedKeys};

/// The signature scheme a request was verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `X-Twilio-Signature`, HMAC-SHA1 keyed with an account auth token.
    TwilioHmacSha1,
    /// `X-Twilio-Signature`, HMAC-SHA256 keyed with a shared key named by
    /// `X-Twilio-Webhooks-Signature-Settings`.
    TwilioSharedKeyHmacSha256,
    /// `Stripe-Signature`, `v1` entries.
    StripeV1,
    /// `Calendly-Webhook-Signature`, `v1` entries.
    CalendlyV1,
    /// `webhook-signature`, `v1` entries (Standard Webhooks / Svix).
    StandardWebhooksV1,
    /// `X-Hub-Signature-256`.
    GithubHmacSha256,
}

impl Scheme {
    /// A stable lowercase name, suitable for metric labels and record headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TwilioHmacSha1 => "twilio-hmac-sha1",
            Self::TwilioSharedKeyHmacSha256 => "twilio-shared-key-hmac-sha256",
            Self::StripeV1 => "stripe-v1",
            Self::CalendlyV1 => "calendly-v1",
            Self::StandardWebhooksV1 => "standard-webhooks-v1",
            Self::GithubHmacSha256 => "github-hmac-sha256",
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Proof that a request's signature was checked against a configured secret.
///
/// Only the verifiers in this crate can build one, so code that accepts a `Verified` knows the
/// check happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    scheme: Scheme,
    params: Vec<(String, String)>,
    event_id: Option<String>,
}

impl Verified {
    /// Private to this crate: the scheme modules are the only callers.
    fn new(scheme: Scheme, params: Vec<(String, String)>, event_id: Option<String>) -> Self {
        Self {
            scheme,
            params,
            event_id,
        }
    }

    /// The scheme whose signature matched.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Twilio form parameters in body order; empty for every other scheme and for Twilio JSON bodies.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The event's identity as the signature vouches for it, when the scheme signs one outside the
    /// body: Twilio's [`twilio::event_id`] of the signed content, the Standard Webhooks `webhook-id`.
    /// `None` for the schemes whose identity is in the (signed) body: Stripe, Calendly, GitHub.
    ///
    /// Never a header the signature does not cover (`I-Twilio-Idempotency-Token`,
    /// `X-GitHub-Delivery`): whoever holds one captured request could change those at will.
    pub fn event_id(&self) -> Option<&str> {
        self.event_id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_names_are_stable() {
        let cases = [
            (Scheme::TwilioHmacSha1, "twilio-hmac-sha1"),
            (Scheme::TwilioSharedKeyHmacSha256, "twilio-shared-key-hmac-sha256"),
            (Scheme::StripeV1, "stripe-v1"),
            (Scheme::CalendlyV1, "calendly-v1"),
            (Scheme::StandardWebhooksV1, "standard-webhooks-v1"),
            (Scheme::GithubHmacSha256, "github-hmac-sha256"),
        ];
        for (scheme, name) in cases {
            assert_eq!(scheme.as_str(), name);
            assert_eq!(scheme.to_string(), name);
        }
    }
}
