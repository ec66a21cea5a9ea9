//! The `t=<unix seconds>,v1=<hex>[,v1=<hex>…]` signature header shared by Stripe and Calendly, the
//! timestamp tolerance window (also used by Standard Webhooks), and the signing and verification they
//! share: HMAC-SHA256 over `"{t}.{raw body}"`.

use std::time::Duration;

use http::HeaderMap;

use super::mac::{self, Algorithm};
use super::{Scheme, Secret, SecretSet, Verified, VerifyError, headers};

/// A parsed `t=…,v1=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampedSignature {
    /// The signing time, unix seconds.
    pub timestamp: i64,
    /// Every `v1` signature, hex-decoded, in header order. Other keys (`v0`, future versions) are ignored.
    pub v1: Vec<Vec<u8>>,
}

/// Parses a `t=…,v1=…` header value. `None` when an entry has no `=`, `t` is missing or its first
/// occurrence is not an integer, or a `v1` value is not hex. A repeated `t` is ignored after the first,
/// as Stripe's libraries do (the signature covers that first `t`). A header with no `v1` entry parses
/// (it simply cannot match).
pub fn parse_header(value: &str) -> Option<TimestampedSignature> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let (key, value) = entry.split_once('=')?;
        match key.trim() {
            "t" if timestamp.is_none() => timestamp = Some(value.trim().parse().ok()?),
            "v1" => v1.push(hex::decode(value.trim()).ok()?),
            _ => {}
        }
    }
    Some(TimestampedSignature {
        timestamp: timestamp?,
        v1,
    })
}

/// Accepts `timestamp` if it is within `tolerance` of `now` in either direction (bounds inclusive).
pub fn check_window(timestamp: i64, now: i64, tolerance: Duration) -> Result<(), VerifyError> {
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    let age = now.saturating_sub(timestamp);
    if age > tolerance {
        Err(VerifyError::StaleTimestamp)
    } else if age < -tolerance {
        Err(VerifyError::FutureTimestamp)
    } else {
        Ok(())
    }
}

/// The header value a sender puts on a request with `body` signed at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256 over "{t}.{body}">`.
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let signature = mac::sign(Algorithm::Sha256, secret, &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex::encode(signature))
}

/// Verifies a request signed with HMAC-SHA256 over `"{t}.{body}"` and carrying the signature in
/// `header` (lowercase). The signature is checked before the timestamp, so a stale or future error
/// means a correctly signed request outside the window (a replay or a clock problem).
pub(super) fn verify(
    scheme: Scheme,
    header: &'static str,
    secrets: &SecretSet,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<Verified, VerifyError> {
    let value = headers::required(headers, header)?;
    let signature = parse_header(value).ok_or(VerifyError::MalformedSignature { header })?;
    let timestamp = signature.timestamp.to_string();
    let message = [timestamp.as_bytes(), b".", body];
    if !mac::any_secret_signed(secrets, Algorithm::Sha256, &message, &signature.v1) {
        return Err(VerifyError::SignatureMismatch);
    }
    check_window(signature.timestamp, now, tolerance)?;
    Ok(Verified::new(scheme, Vec::new(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers() {
        type Row = (&'static str, Option<(i64, &'static [&'static str])>);
        let cases: [Row; 12] = [
            ("t=1700000000,v1=0a0b", Some((1_700_000_000, &["0a0b"]))),
            ("t=1,v1=aa,v1=BB,v0=cc", Some((1, &["aa", "bb"]))),
            (" t = 1 , v1 = aa ,", Some((1, &["aa"]))),
            ("v1=aa,t=1,scheme=x", Some((1, &["aa"]))),
            ("t=1", Some((1, &[]))),
            ("t=-5,v1=aa", Some((-5, &["aa"]))),
            ("v1=aa", None),
            ("t=abc,v1=aa", None),
            ("t=1,t=2,v1=aa", Some((1, &["aa"]))),
            ("t=1,t=soon,v1=aa", Some((1, &["aa"]))),
            ("t=1,v1=zz", None),
            ("t=1,garbage", None),
        ];
        for (input, expected) in cases {
            let expected = expected.map(|(timestamp, v1)| TimestampedSignature {
                timestamp,
                v1: v1.iter().map(|hex| hex::decode(hex).unwrap()).collect(),
            });
            assert_eq!(parse_header(input), expected, "{input}");
        }
    }

    #[test]
    fn window_is_inclusive_in_both_directions() {
        let tolerance = Duration::from_secs(300);
        let now = 1_700_000_000;
        let cases = [
            (now, Ok(())),
            (now - 300, Ok(())),
            (now + 300, Ok(())),
            (now - 301, Err(VerifyError::StaleTimestamp)),
            (now + 301, Err(VerifyError::FutureTimestamp)),
            (i64::MIN, Err(VerifyError::StaleTimestamp)),
            (i64::MAX, Err(VerifyError::FutureTimestamp)),
        ];
        for (timestamp, expected) in cases {
            assert_eq!(check_window(timestamp, now, tolerance), expected, "{timestamp}");
        }
        assert_eq!(check_window(0, now, Duration::MAX), Ok(()));
    }
}
