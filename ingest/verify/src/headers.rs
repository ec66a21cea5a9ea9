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
