//! Reading request headers as text, mapping absence and non-text values to [`VerifyError`]s.

use http::HeaderMap;

use super::VerifyError;

/// The value of a header the scheme cannot verify without. `name` must be lowercase.
pub(super) fn required<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    let value = headers
        .get(name)
        .ok_or(VerifyError::MissingSignature { header: name })?;
    value
        .to_str()
        .map_err(|_| VerifyError::MalformedSignature { header: name })
}

/// The value of an optional header; absent when missing or not visible ASCII.
pub(super) fn optional<'a>(headers: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// An optional id header, owned; empty values count as absent.
pub(super) fn event_id(headers: &HeaderMap, name: &'static str) -> Option<String> {
    optional(headers, name)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}
