//! HMAC computation and constant-time comparison against candidate signatures.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::Secret;

/// The hash function under the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Algorithm {
    Sha1,
    Sha256,
}

/// HMAC of the concatenation of `message` parts; `None` only if the key is rejected, which HMAC never
/// does (any key length is valid), so the verifiers treat it as "no match".
fn compute(algorithm: Algorithm, key: &[u8], message: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<M: Mac + KeyInit>(key: &[u8], message: &[&[u8]]) -> Option<Vec<u8>> {
        let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
        for part in message {
            mac.update(part);
        }
        Some(mac.finalize().into_bytes().to_vec())
    }
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<Sha1>>(key, message),
        Algorithm::Sha256 => run::<Hmac<Sha256>>(key, message),
    }
}

/// The HMAC a sender puts on a request: what the schemes' `sign` functions encode.
pub(super) fn sign(algorithm: Algorithm, secret: &Secret, message: &[&[u8]]) -> Vec<u8> {
    compute(algorithm, secret.expose(), message).expect("HMAC accepts keys of any length")
}

/// True if any secret's HMAC over `message` equals any candidate signature. Each comparison is
/// constant-time over the decoded MAC bytes.
pub(super) fn any_secret_signed<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    algorithm: Algorithm,
    message: &[&[u8]],
    candidates: &[Vec<u8>],
) -> bool {
    secrets.into_iter().any(|secret| {
        compute(algorithm, secret.expose(), message).is_some_and(|expected| {
            candidates
                .iter()
                .any(|candidate| bool::from(expected.ct_eq(candidate)))
        })
    })
}
