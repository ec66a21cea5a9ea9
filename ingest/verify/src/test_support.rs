//! Helpers shared by the scheme tests.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::SecretSet;

/// A header map from `(name, value)` pairs; names may be in any case.
pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            )
        })
        .collect()
}

/// A secret set from text secrets.
pub(super) fn secrets(texts: &[&str]) -> SecretSet {
    SecretSet::from_strings(texts).unwrap()
}
