//! Holders for signing keys: a single [`Secret`], a rotation set ([`SecretSet`]) and Twilio's named
//! shared keys ([`SharedKeys`]). None of them print key material in `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::SecretError;

const STANDARD_WEBHOOKS_PREFIX: &str = "whsec_";

/// Standard base64 that accepts the key with or without its `=` padding, as the Standard Webhooks
/// libraries do.
const PADDING_OPTIONAL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Key bytes for one HMAC secret.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw key bytes. Providers that hand out text secrets (Twilio, Stripe, Calendly, GitHub) use
    /// the text's UTF-8 bytes as the key.
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self(key.into())
    }

    /// Decodes a Standard Webhooks secret: `whsec_` followed by the base64 key (the prefix and the
    /// base64 padding are optional, as in the reference libraries).
    pub fn from_standard_webhooks(secret: &str) -> Result<Self, SecretError> {
        let encoded = secret.strip_prefix(STANDARD_WEBHOOKS_PREFIX).unwrap_or(secret);
        let key = PADDING_OPTIONAL
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(key))
    }

    /// The key bytes, for the MACs of this crate and for tests; never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(**redacted**)")
    }
}

/// Every secret currently accepted for one source. More than one means a rotation is in progress: a
/// signature made with any of them is accepted.
#[derive(Debug, Clone, Default)]
pub struct SecretSet(Vec<Secret>);

impl SecretSet {
    /// Builds a set from text secrets, using each string's bytes as the key. Empty strings are rejected:
    /// an empty HMAC key is a configuration mistake, not a secret.
    pub fn from_strings<I>(secrets: I) -> Result<Self, SecretError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        secrets
            .into_iter()
            .map(|secret| match secret.as_ref() {
                "" => Err(SecretError::Empty),
                text => Ok(Secret::new(text)),
            })
            .collect()
    }

    /// Builds a set from Standard Webhooks `whsec_…` secrets.
    pub fn from_standard_webhooks<I>(secrets: I) -> Result<Self, SecretError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        secrets
            .into_iter()
            .map(|secret| Secret::from_standard_webhooks(secret.as_ref()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Secret> {
        self.0.iter()
    }
}

impl FromIterator<Secret> for SecretSet {
    fn from_iter<I: IntoIterator<Item = Secret>>(secrets: I) -> Self {
        Self(secrets.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a SecretSet {
    type Item = &'a Secret;
    type IntoIter = std::slice::Iter<'a, Secret>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Twilio shared keys by key id, as named in `X-Twilio-Webhooks-Signature-Settings`. `Debug` shows the
/// ids (they are not secret) and redacts the keys.
#[derive(Debug, Clone, Default)]
pub struct SharedKeys(BTreeMap<String, Secret>);

impl SharedKeys {
    /// Builds the map from `id:secret` entries. The id is everything before the first `:`; the secret
    /// may itself contain `:`.
    pub fn from_strings<I>(entries: I) -> Result<Self, SecretError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut keys = BTreeMap::new();
        for entry in entries {
            let (id, secret) = entry
                .as_ref()
                .split_once(':')
                .ok_or(SecretError::SharedKeyFormat)?;
            if id.is_empty() {
                return Err(SecretError::SharedKeyFormat);
            }
            if secret.is_empty() {
                return Err(SecretError::Empty);
            }
            if keys.insert(id.to_owned(), Secret::new(secret)).is_some() {
                return Err(SecretError::DuplicateKeyId { id: id.to_owned() });
            }
        }
        Ok(Self(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The key configured under `id`.
    pub fn get(&self, id: &str) -> Option<&Secret> {
        self.0.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_material() {
        let secret = Secret::new("hunter2-secret");
        assert_eq!(format!("{secret:?}"), "Secret(**redacted**)");
        assert_eq!(format!("{secret:#?}"), "Secret(**redacted**)");

        let set = SecretSet::from_strings(["hunter2-secret", "second-secret"]).unwrap();
        let keys = SharedKeys::from_strings(["key-2024:hunter2-secret"]).unwrap();
        let webhooks = SecretSet::from_standard_webhooks(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap();
        for printed in [format!("{set:?}"), format!("{keys:#?}"), format!("{webhooks:?}")] {
            for secret in ["hunter2", "second-secret", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
                assert!(!printed.contains(secret), "{printed} leaks {secret}");
            }
            assert!(printed.contains("**redacted**"), "{printed}");
        }
        assert!(format!("{keys:?}").contains("key-2024"));
    }

    #[test]
    fn secret_sets_keep_order_and_reject_empty_entries() {
        let set = SecretSet::from_strings(["old", "new"]).unwrap();
        let keys: Vec<&[u8]> = set.iter().map(Secret::expose).collect();
        assert_eq!(keys, [b"old".as_slice(), b"new".as_slice()]);
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty());
        assert!(SecretSet::from_strings(Vec::<String>::new()).unwrap().is_empty());
        assert_eq!(
            SecretSet::from_strings(["old", ""]).unwrap_err(),
            SecretError::Empty
        );
    }

    #[test]
    fn standard_webhooks_secrets_are_base64_after_the_prefix() {
        let cases: [(&str, Result<&[u8], SecretError>); 6] = [
            ("whsec_aGVsbG8=", Ok(b"hello")),
            ("aGVsbG8=", Ok(b"hello")),
            ("whsec_not base64!", Err(SecretError::InvalidBase64)),
            ("whsec_", Err(SecretError::Empty)),
            // Unpadded, as the Standard Webhooks libraries accept it.
            ("whsec_aGVsbG8", Ok(b"hello")),
            ("whsec_aGVsbG8*", Err(SecretError::InvalidBase64)),
        ];
        for (input, expected) in cases {
            let got = Secret::from_standard_webhooks(input);
            assert_eq!(
                got.as_ref().map(Secret::expose).map_err(Clone::clone),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn shared_keys_parse_id_colon_secret() {
        let keys = SharedKeys::from_strings(["a:one", "b:two:with:colons"]).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.get("a").map(Secret::expose), Some(b"one".as_slice()));
        assert_eq!(
            keys.get("b").map(Secret::expose),
            Some(b"two:with:colons".as_slice())
        );
        assert!(keys.get("c").is_none());

        let errors = [
            ("no-colon", SecretError::SharedKeyFormat),
            (":secret", SecretError::SharedKeyFormat),
            ("id:", SecretError::Empty),
        ];
        for (entry, expected) in errors {
            assert_eq!(
                SharedKeys::from_strings([entry]).unwrap_err(),
                expected,
                "{entry}"
            );
        }
        assert_eq!(
            SharedKeys::from_strings(["a:one", "a:two"]).unwrap_err(),
            SecretError::DuplicateKeyId { id: "a".into() }
        );
    }
}
