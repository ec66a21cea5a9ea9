//! Bearer-token access to token-protected routes (the processor's observability routes, the calls
//! API): the token type (redacted in `Debug`), and the constant-time check of
//! `Authorization: Bearer <token>`.

use std::fmt;

use axum::http::{HeaderMap, header};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

/// The admin token (`admin_token`, `SWITCHBOARD_ADMIN_TOKEN`). `Debug` prints `[redacted]`; the
/// value is only ever compared, never logged or echoed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token from its text (configuration and tests).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token's text, only to send it as credentials (e.g. the console calling the calls
    /// API); never to log or render it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the token is only whitespace (treated as unset).
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The route needs a token and none is configured (403).
    Disabled,
    /// No bearer token, or the wrong one (401).
    Unauthorized,
}

/// The credentials of `Authorization: Bearer <credentials>` (scheme case-insensitive), if any.
pub fn presented_bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials.trim())
}

/// Whether `headers` carry `token` as a bearer token, compared in constant time.
pub fn bearer_matches(headers: &HeaderMap, token: &AdminToken) -> bool {
    bearer_is(headers, &token.0)
}

/// Whether `headers` carry `expected` as a bearer token, compared in constant time. Shared by
/// every token-protected route of the binary (admin routes, the calls API).
pub fn bearer_is(headers: &HeaderMap, expected: &str) -> bool {
    presented_bearer(headers)
        .is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(expected.as_bytes())))
}

/// A route that only answers with the token: refused when no token is configured.
pub fn require(token: Option<&AdminToken>, headers: &HeaderMap) -> Result<(), Refusal> {
    match token {
        None => Err(Refusal::Disabled),
        Some(token) if bearer_matches(headers, token) => Ok(()),
        Some(_) => Err(Refusal::Unauthorized),
    }
}

/// A route that is open without a configured token (like `/metrics`), and needs it otherwise.
pub fn require_if_set(token: Option<&AdminToken>, headers: &HeaderMap) -> Result<(), Refusal> {
    match token {
        None => Ok(()),
        Some(token) => require(Some(token), headers),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    #[test]
    fn bearer_token_is_checked_and_debug_redacts_it() {
        let token = AdminToken::new("s3cret");
        assert_eq!(format!("{token:?}"), "[redacted]");
        assert_eq!(require(Some(&token), &with("Bearer s3cret")), Ok(()));
        assert_eq!(require(Some(&token), &with("bearer  s3cret ")), Ok(()));
        assert_eq!(
            require(Some(&token), &with("Bearer s3cre")),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            require(Some(&token), &with("Basic s3cret")),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            require(Some(&token), &HeaderMap::new()),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(require(None, &with("Bearer s3cret")), Err(Refusal::Disabled));
        assert_eq!(require_if_set(None, &HeaderMap::new()), Ok(()));
        assert_eq!(
            require_if_set(Some(&token), &HeaderMap::new()),
            Err(Refusal::Unauthorized)
        );
    }
}
