//! Twilio webhooks: `X-Twilio-Signature` = base64(HMAC(key, URL + canonical POST parameters)).
//!
//! The key is an account auth token (HMAC-SHA1), or, when `X-Twilio-Webhooks-Signature-Settings`
//! names one, a shared key (HMAC-SHA256). Form bodies sign their parameters sorted by name then value;
//! JSON bodies sign the URL alone and prove the body through a `bodySHA256` query parameter.
//!
//! Twilio's SDKs disagree on details, so every variant they accept is accepted here: the URL as given,
//! without its port and with the scheme's default port added; repeated identical parameters signed once
//! (twilio-python) or every time (older twilio-node).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchboard_schemas::media_type;
use url::form_urlencoded;

use super::mac::{self, Algorithm};
use super::{Scheme, Secret, SecretSet, SharedKeys, Verified, VerifyError, headers};

/// The signature header, lowercase.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// Names the shared key and algorithm for shared-key signing, lowercase.
pub const SETTINGS_HEADER: &str = "x-twilio-webhooks-signature-settings";
/// Twilio's delivery token, lowercase. Not signed, so not the event id: it is kept in the envelope
/// as metadata only (see [`event_id`]).
pub const IDEMPOTENCY_HEADER: &str = "i-twilio-idempotency-token";
/// The only shared-key algorithm supported.
pub const SHARED_KEY_ALGORITHM: &str = "HMAC_SHA256";

/// A key a sender signs Twilio requests with.
#[derive(Debug, Clone)]
pub enum TwilioKey {
    /// An account auth token: HMAC-SHA1.
    AuthToken(Secret),
    /// A shared key and the id `X-Twilio-Webhooks-Signature-Settings` names: HMAC-SHA256.
    SharedKey { id: String, key: Secret },
}

impl TwilioKey {
    /// The `X-Twilio-Webhooks-Signature-Settings` value a request signed with this key carries:
    /// `key=<id>,algorithm=HMAC_SHA256` for a shared key, none for an auth token.
    pub fn settings(&self) -> Option<String> {
        match self {
            Self::AuthToken(_) => None,
            Self::SharedKey { id, .. } => Some(format!("key={id},algorithm={SHARED_KEY_ALGORITHM}")),
        }
    }
}

/// `X-Twilio-Signature`: base64(HMAC(key, url + canonical params)), every repeated pair signed (as
/// twilio-node does; [`verify`] accepts it either way). JSON bodies sign the URL alone, which
/// carries the body's [`body_sha256`]: pass no params.
pub fn sign(key: &TwilioKey, url: &str, params: &[(String, String)]) -> String {
    let (algorithm, secret) = match key {
        TwilioKey::AuthToken(token) => (Algorithm::Sha1, token),
        TwilioKey::SharedKey { key, .. } => (Algorithm::Sha256, key),
    };
    let params = canonical_params(params, Duplicates::Keep);
    STANDARD.encode(mac::sign(algorithm, secret, &[url.as_bytes(), params.as_bytes()]))
}

/// The `bodySHA256` query parameter a JSON body is signed with: the hex SHA-256 of `body`.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// How repeated identical `name=value` pairs enter the canonical string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// Every occurrence is signed (older twilio-node).
    Keep,
    /// Identical pairs are signed once (twilio-python's `sorted(set(values))`).
    Collapse,
}

/// The signed parameter string: each `name` followed by its `value`, sorted by name and then by value
/// (byte order).
pub fn canonical_params(params: &[(String, String)], duplicates: Duplicates) -> String {
    let mut sorted = sorted_pairs(params);
    if duplicates == Duplicates::Collapse {
        sorted.dedup();
    }
    join_pairs(&sorted)
}

/// The signed parameter strings a form may have been signed over, from one sort: with every pair
/// kept, then, only when the form repeats a pair, with repeats collapsed. The last one is always
/// the collapsed form (what [`event_id`] hashes).
fn signed_param_strings(params: &[(String, String)]) -> Vec<String> {
    let mut sorted = sorted_pairs(params);
    let kept = join_pairs(&sorted);
    let len = sorted.len();
    sorted.dedup();
    if sorted.len() == len {
        vec![kept]
    } else {
        vec![kept, join_pairs(&sorted)]
    }
}

fn sorted_pairs(params: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted
}

fn join_pairs(sorted: &[(&str, &str)]) -> String {
    sorted.iter().flat_map(|(name, value)| [*name, *value]).collect()
}

/// Decodes an `application/x-www-form-urlencoded` body into parameters in body order. The body must be
/// UTF-8; percent-escapes that decode to invalid UTF-8 are replaced (U+FFFD) and then simply fail to
/// match Twilio's signature.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, VerifyError> {
    std::str::from_utf8(body).map_err(|_| VerifyError::UnparsableForm)?;
    Ok(form_urlencoded::parse(body).into_owned().collect())
}

/// The URLs Twilio may have signed for a request to `url`: `url` itself, then `url` without its port if
/// it has one (any port, as twilio-python does), or with the scheme's default port (`:443` for https,
/// `:80` for http) if it has none. The text is otherwise kept as given.
pub fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    // A `:` after the host starts the port; inside `[…]` it belongs to an IPv6 address.
    let port_start = authority[host_start..]
        .rfind(':')
        .map(|colon| host_start + colon)
        .filter(|&colon| !authority[colon..].contains(']'));
    match port_start {
        Some(colon) => variants.push(format!("{scheme}://{}{tail}", &authority[..colon])),
        None if scheme.eq_ignore_ascii_case("https") => {
            variants.push(format!("{scheme}://{authority}:443{tail}"))
        }
        None if scheme.eq_ignore_ascii_case("http") => {
            variants.push(format!("{scheme}://{authority}:80{tail}"))
        }
        None => {}
    }
    variants
}

/// A parsed `X-Twilio-Webhooks-Signature-Settings` value that names an algorithm:
/// `key=<key id>,algorithm=<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureSettings<'a> {
    pub key_id: &'a str,
    pub algorithm: &'a str,
}

/// Parses `key=<id>,algorithm=<name>` in any order, ignoring other entries.
///
/// `Ok(None)` when the value names no algorithm (empty, or no `algorithm=` entry): twilio-python then
/// validates with the auth token (HMAC-SHA1), and so does ingest. A malformed header when an entry
/// has no `=`, `key` or `algorithm` is repeated or empty, or an algorithm is named without a key.
pub fn parse_signature_settings(value: &str) -> Result<Option<SignatureSettings<'_>>, VerifyError> {
    let malformed = || VerifyError::MalformedSignature {
        header: SETTINGS_HEADER,
    };
    let (mut key_id, mut algorithm) = (None, None);
    for entry in value.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let (name, value) = entry.split_once('=').ok_or_else(malformed)?;
        let slot = match name.trim() {
            "key" => &mut key_id,
            "algorithm" => &mut algorithm,
            _ => continue,
        };
        if slot.replace(value.trim()).is_some() {
            return Err(malformed());
        }
    }
    let Some(algorithm) = algorithm else {
        return Ok(None);
    };
    let key_id = key_id.ok_or_else(malformed)?;
    if key_id.is_empty() || algorithm.is_empty() {
        return Err(malformed());
    }
    Ok(Some(SignatureSettings { key_id, algorithm }))
}

/// Verifies a Twilio webhook. `url` is the full public URL Twilio called (scheme, host, optional port,
/// path and query); `content_type` is the request's `Content-Type`. Any auth token may match; with a
/// settings header only the named shared key is tried.
///
/// `application/json` bodies must carry a matching `bodySHA256` (checked before the signature, and
/// reported as bad requests); every other content type is parsed as a form body.
pub fn verify(
    auth_tokens: &SecretSet,
    shared_keys: &SharedKeys,
    headers: &HeaderMap,
    url: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    let signature = STANDARD
        .decode(headers::required(headers, SIGNATURE_HEADER)?.trim())
        .map_err(|_| VerifyError::MalformedSignature {
            header: SIGNATURE_HEADER,
        })?;
    let (scheme, algorithm, keys): (_, _, Vec<&Secret>) = match shared_key(shared_keys, headers)? {
        Some(key) => (Scheme::TwilioSharedKeyHmacSha256, Algorithm::Sha256, vec![key]),
        None => (
            Scheme::TwilioHmacSha1,
            Algorithm::Sha1,
            auth_tokens.iter().collect(),
        ),
    };

    let (params, param_strings) = if media_type::is_json(content_type) {
        check_body_hash(url, body)?;
        (Vec::new(), vec![String::new()])
    } else {
        let params = parse_form(body)?;
        let strings = signed_param_strings(&params);
        (params, strings)
    };

    let candidates = [signature];
    let signed = url_variants(url).iter().any(|url| {
        param_strings.iter().any(|params| {
            let message = [url.as_bytes(), params.as_bytes()];
            mac::any_secret_signed(keys.iter().copied(), algorithm, &message, &candidates)
        })
    });
    if !signed {
        return Err(VerifyError::SignatureMismatch);
    }
    // The collapsed parameter string, already built: what `event_id` would build again.
    let collapsed = param_strings.last().map_or("", String::as_str);
    let event_id = hashed_event_id(url, collapsed);
    Ok(Verified::new(scheme, params, Some(event_id)))
}

/// The event id of a Twilio request: `sha256:` + hex SHA-256 of exactly what the signature covers,
/// canonicalized: the URL as received followed by the parameters sorted by name then value, with
/// repeated identical pairs collapsed (as twilio-python signs them). A redelivery maps to the same
/// id, and so does a replay with a repeated pair appended or its pairs reordered (both still
/// verify); changing anything else breaks the signature. JSON bodies: `params` is empty and the URL
/// carries the body's `bodySHA256`.
///
/// Not the `I-Twilio-Idempotency-Token` header, which the signature does not cover.
pub fn event_id(url: &str, params: &[(String, String)]) -> String {
    hashed_event_id(url, &canonical_params(params, Duplicates::Collapse))
}

/// [`event_id`] of `url` and the collapsed canonical parameter string.
fn hashed_event_id(url: &str, collapsed: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(url.as_bytes());
    hasher.update(collapsed.as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The shared key named by the settings header, or `None` when the header is absent or names no
/// algorithm (auth tokens apply, as in twilio-python).
fn shared_key<'a>(
    shared_keys: &'a SharedKeys,
    headers: &HeaderMap,
) -> Result<Option<&'a Secret>, VerifyError> {
    if !headers.contains_key(SETTINGS_HEADER) {
        return Ok(None);
    }
    let Some(settings) = parse_signature_settings(headers::required(headers, SETTINGS_HEADER)?)? else {
        return Ok(None);
    };
    if !settings.algorithm.eq_ignore_ascii_case(SHARED_KEY_ALGORITHM) {
        return Err(VerifyError::UnsupportedAlgorithm);
    }
    shared_keys
        .get(settings.key_id)
        .map(Some)
        .ok_or(VerifyError::UnknownKeyId)
}

/// Checks that the URL's `bodySHA256` query parameter is the hex SHA-256 of `body`.
fn check_body_hash(url: &str, body: &[u8]) -> Result<(), VerifyError> {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    let claimed = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "bodySHA256")
        .ok_or(VerifyError::MissingBodyHash)?
        .1;
    let claimed = hex::decode(claimed.as_bytes()).map_err(|_| VerifyError::BodyHashMismatch)?;
    let actual = Sha256::digest(body);
    if bool::from(actual.as_slice().ct_eq(&claimed)) {
        Ok(())
    } else {
        Err(VerifyError::BodyHashMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, secrets};

    const TOKEN: &str = "12345";
    const FORM: &str = "application/x-www-form-urlencoded";
    const JSON: &str = "application/json";

    // Twilio's documentation example. Expected signatures computed with python3:
    //   base64.b64encode(hmac.new(b"12345", (url + "".join(k + v for k, v in sorted(params))).encode(),
    //                             hashlib.sha1).digest())
    const DOCS_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const DOCS_BODY: &str = "To=%2B18005551212&From=%2B12349013030&Caller=%2B12349013030&CallSid=CA1234567890ABCDE\
                             &Digits=1234";
    const DOCS_SIG: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
    // The same parameters signed with "https://mycompany.com:443/myapp.php?foo=1&bar=2".
    const DOCS_SIG_443: &str = "EpDEmp1PyjDYp77YxYU3GILBWzE=";
    // Signed with "http://mycompany.com:80/myapp.php?foo=1&bar=2" and without the port.
    const HTTP_SIG_80: &str = "boT12oXXJ0BuzO2U/6iCqFdh2Do=";
    const HTTP_SIG: &str = "FYMaGAU6nPbB9h2pncMl4aJ4vns=";

    // Repeated parameters, URL "https://mycompany.com/sms":
    //   twilio-python signs "BodyaBodyhiTo+15005550006", older twilio-node "BodyaBodyhiBodyhiTo+15005550006".
    const SMS_URL: &str = "https://mycompany.com/sms";
    const SMS_BODY: &str = "To=%2B15005550006&Body=hi&Body=a&Body=hi";
    const SMS_SIG_COLLAPSED: &str = "Y7aXaaYDIm9bj1cy5l80ftzjfpY=";
    const SMS_SIG_KEPT: &str = "1J9XfEXuuB9srktJBwUnWvKRx7E=";

    // JSON: hashlib.sha256(JSON_BODY).hexdigest() in the query; the signature covers the URL only.
    const JSON_BODY: &str = r#"{"property": "value", "boolean": true}"#;
    const JSON_URL: &str = "https://mycompany.com/myapp?bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    const JSON_SIG: &str = "UEGkzoW/cP+5rgfjjBKC7Wch1b4=";
    // A valid signature over "https://mycompany.com/myapp", which has no bodySHA256.
    const JSON_SIG_NO_HASH: &str = "cW+IjIT74N0opTmQjfHQ29NIs7w=";

    // Shared key: base64(HMAC-SHA256(b"shared-secret-2024", DOCS_URL + docs params)).
    const SHARED_KEYS: [&str; 2] = ["key-2023:old-shared-secret", "key-2024:shared-secret-2024"];
    const SHARED_SIG: &str = "+XMRmL8W+1dXIioHigQR0Z7xY+VaIR2khD9fNfsOemY=";

    struct Case {
        name: &'static str,
        tokens: &'static [&'static str],
        extra_headers: &'static [(&'static str, &'static str)],
        url: &'static str,
        content_type: &'static str,
        body: &'static str,
        signature: &'static str,
        expected: Result<Scheme, VerifyError>,
    }

    const BASE: Case = Case {
        name: "docs example",
        tokens: &[TOKEN],
        extra_headers: &[],
        url: DOCS_URL,
        content_type: FORM,
        body: DOCS_BODY,
        signature: DOCS_SIG,
        expected: Ok(Scheme::TwilioHmacSha1),
    };

    fn run(case: &Case) -> Result<Verified, VerifyError> {
        let mut pairs = vec![("X-Twilio-Signature", case.signature)];
        pairs.extend_from_slice(case.extra_headers);
        let shared_keys = SharedKeys::from_strings(SHARED_KEYS).unwrap();
        verify(
            &secrets(case.tokens),
            &shared_keys,
            &headers(&pairs),
            case.url,
            case.content_type,
            case.body.as_bytes(),
        )
    }

    #[test]
    fn sign_reproduces_the_known_answers() {
        let token = TwilioKey::AuthToken(Secret::new(TOKEN));
        let shared = TwilioKey::SharedKey {
            id: "key-2024".into(),
            key: Secret::new("shared-secret-2024"),
        };
        let docs = parse_form(DOCS_BODY.as_bytes()).unwrap();
        let sms = parse_form(SMS_BODY.as_bytes()).unwrap();
        let cases = [
            (sign(&token, DOCS_URL, &docs), DOCS_SIG),
            (
                sign(&token, "https://mycompany.com:443/myapp.php?foo=1&bar=2", &docs),
                DOCS_SIG_443,
            ),
            (
                sign(&token, "http://mycompany.com:80/myapp.php?foo=1&bar=2", &docs),
                HTTP_SIG_80,
            ),
            (
                sign(&token, "http://mycompany.com/myapp.php?foo=1&bar=2", &docs),
                HTTP_SIG,
            ),
            // Every repeated pair signed, as older twilio-node.
            (sign(&token, SMS_URL, &sms), SMS_SIG_KEPT),
            (sign(&token, JSON_URL, &[]), JSON_SIG),
            (sign(&shared, DOCS_URL, &docs), SHARED_SIG),
        ];
        for (index, (got, expected)) in cases.into_iter().enumerate() {
            assert_eq!(got, expected, "case {index}");
        }
        assert_eq!(
            JSON_URL.split_once("bodySHA256=").map(|(_, hash)| hash),
            Some(body_sha256(JSON_BODY.as_bytes()).as_str())
        );
        assert_eq!(token.settings(), None);
        assert_eq!(
            shared.settings().as_deref(),
            Some("key=key-2024,algorithm=HMAC_SHA256")
        );
    }

    #[test]
    fn known_answers() {
        let cases = [
            BASE,
            Case {
                name: "charset parameter",
                content_type: "application/x-www-form-urlencoded; charset=utf-8",
                ..BASE
            },
            Case {
                name: "received with :443, signed without",
                url: "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                ..BASE
            },
            Case {
                name: "signed with :443, received without",
                signature: DOCS_SIG_443,
                ..BASE
            },
            Case {
                name: "http signed with :80",
                url: "http://mycompany.com/myapp.php?foo=1&bar=2",
                signature: HTTP_SIG_80,
                ..BASE
            },
            Case {
                name: "http received with :80",
                url: "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                signature: HTTP_SIG,
                ..BASE
            },
            Case {
                name: "rotation",
                tokens: &["old-token", TOKEN],
                ..BASE
            },
            Case {
                name: "wrong token",
                tokens: &["54321"],
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "no tokens",
                tokens: &[],
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "tampered body",
                body: "To=%2B18005551212&From=%2B12349013030&Caller=%2B12349013030&CallSid=CA1234567890ABCDE&Digits=1235",
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "other path",
                url: "https://mycompany.com/other.php?foo=1&bar=2",
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "https signature on http",
                url: "http://mycompany.com/myapp.php?foo=1&bar=2",
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "repeated params, python",
                url: SMS_URL,
                body: SMS_BODY,
                signature: SMS_SIG_COLLAPSED,
                ..BASE
            },
            Case {
                name: "repeated params, node",
                url: SMS_URL,
                body: SMS_BODY,
                signature: SMS_SIG_KEPT,
                ..BASE
            },
            Case {
                name: "repeated params, one dropped",
                url: SMS_URL,
                body: "To=%2B15005550006&Body=hi&Body=a",
                signature: SMS_SIG_KEPT,
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "signature not base64",
                signature: "not base64!",
                expected: Err(VerifyError::MalformedSignature {
                    header: SIGNATURE_HEADER,
                }),
                ..BASE
            },
            Case {
                name: "json",
                url: JSON_URL,
                content_type: JSON,
                body: JSON_BODY,
                signature: JSON_SIG,
                ..BASE
            },
            Case {
                name: "json with charset and :443",
                url: "https://mycompany.com:443/myapp?bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
                content_type: "Application/JSON; charset=utf-8",
                body: JSON_BODY,
                signature: JSON_SIG,
                ..BASE
            },
            Case {
                name: "json without bodySHA256",
                url: "https://mycompany.com/myapp",
                content_type: JSON,
                body: JSON_BODY,
                signature: JSON_SIG_NO_HASH,
                expected: Err(VerifyError::MissingBodyHash),
                ..BASE
            },
            Case {
                name: "json body tampered",
                url: JSON_URL,
                content_type: JSON,
                body: r#"{"property": "value", "boolean": false}"#,
                signature: JSON_SIG,
                expected: Err(VerifyError::BodyHashMismatch),
                ..BASE
            },
            Case {
                name: "json bodySHA256 not hex",
                url: "https://mycompany.com/myapp?bodySHA256=zz",
                content_type: JSON,
                body: JSON_BODY,
                signature: JSON_SIG,
                expected: Err(VerifyError::BodyHashMismatch),
                ..BASE
            },
            Case {
                name: "json wrong token",
                tokens: &["54321"],
                url: JSON_URL,
                content_type: JSON,
                body: JSON_BODY,
                signature: JSON_SIG,
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "shared key",
                extra_headers: &[(SETTINGS_HEADER, "key=key-2024,algorithm=HMAC_SHA256")],
                signature: SHARED_SIG,
                expected: Ok(Scheme::TwilioSharedKeyHmacSha256),
                ..BASE
            },
            Case {
                name: "shared key, reordered settings",
                extra_headers: &[(SETTINGS_HEADER, " algorithm=HMAC_SHA256 , key=key-2024 ")],
                signature: SHARED_SIG,
                expected: Ok(Scheme::TwilioSharedKeyHmacSha256),
                ..BASE
            },
            Case {
                name: "shared key header, auth token signature",
                extra_headers: &[(SETTINGS_HEADER, "key=key-2024,algorithm=HMAC_SHA256")],
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "shared key, other key id",
                extra_headers: &[(SETTINGS_HEADER, "key=key-2023,algorithm=HMAC_SHA256")],
                signature: SHARED_SIG,
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "shared key, unknown id",
                extra_headers: &[(SETTINGS_HEADER, "key=key-2099,algorithm=HMAC_SHA256")],
                signature: SHARED_SIG,
                expected: Err(VerifyError::UnknownKeyId),
                ..BASE
            },
            Case {
                name: "shared key, bad algorithm",
                extra_headers: &[(SETTINGS_HEADER, "key=key-2024,algorithm=HMAC_SHA1")],
                signature: SHARED_SIG,
                expected: Err(VerifyError::UnsupportedAlgorithm),
                ..BASE
            },
            Case {
                name: "empty settings header: auth token, as twilio-python",
                extra_headers: &[(SETTINGS_HEADER, "")],
                ..BASE
            },
            Case {
                name: "settings without algorithm: auth token, as twilio-python",
                extra_headers: &[(SETTINGS_HEADER, "key=key-2024")],
                ..BASE
            },
            Case {
                name: "settings without algorithm, shared key signature",
                extra_headers: &[(SETTINGS_HEADER, "key=key-2024")],
                signature: SHARED_SIG,
                expected: Err(VerifyError::SignatureMismatch),
                ..BASE
            },
            Case {
                name: "shared key, malformed settings",
                extra_headers: &[(SETTINGS_HEADER, "key-2024")],
                signature: SHARED_SIG,
                expected: Err(VerifyError::MalformedSignature {
                    header: SETTINGS_HEADER,
                }),
                ..BASE
            },
        ];
        for case in &cases {
            let got = run(case).map(|verified| verified.scheme());
            assert_eq!(got, case.expected, "{}", case.name);
        }
    }

    #[test]
    fn verified_carries_params_in_body_order_and_the_signed_identity() {
        let case = Case {
            extra_headers: &[("I-Twilio-Idempotency-Token", "idem-123")],
            ..BASE
        };
        let verified = run(&case).unwrap();
        let names: Vec<&str> = verified.params().iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["To", "From", "Caller", "CallSid", "Digits"]);
        assert_eq!(verified.params()[0].1, "+18005551212");
        // python3: "sha256:" + hashlib.sha256((DOCS_URL + "".join(k + v for k, v in
        //          sorted(set(params)))).encode()).hexdigest()
        assert_eq!(
            verified.event_id(),
            Some("sha256:7f53140f1de604e286298b98bb1a37722df94f437ba80893752db0f5e7ba6561")
        );
        assert_eq!(
            verified.event_id(),
            run(&BASE).unwrap().event_id(),
            "the unsigned idempotency token is not the identity"
        );
        assert_eq!(
            verified.event_id().map(str::to_owned),
            Some(event_id(DOCS_URL, verified.params()))
        );
        let json = Case {
            url: JSON_URL,
            content_type: JSON,
            body: JSON_BODY,
            signature: JSON_SIG,
            ..BASE
        };
        assert!(run(&json).unwrap().params().is_empty());
    }

    #[test]
    fn repeated_params_have_one_identity_whichever_way_they_were_signed() {
        let signed = |signature| Case {
            url: SMS_URL,
            body: SMS_BODY,
            signature,
            ..BASE
        };
        let python = run(&signed(SMS_SIG_COLLAPSED)).unwrap();
        let node = run(&signed(SMS_SIG_KEPT)).unwrap();
        assert_eq!(python.event_id(), node.event_id());
        assert_eq!(
            python.event_id().map(str::to_owned),
            Some(event_id(SMS_URL, python.params()))
        );
        assert_eq!(
            signed_param_strings(python.params()).last(),
            Some(&canonical_params(python.params(), Duplicates::Collapse))
        );
    }

    #[test]
    fn missing_signature_and_unparsable_body() {
        let shared_keys = SharedKeys::default();
        let tokens = secrets(&[TOKEN]);
        let missing = verify(
            &tokens,
            &shared_keys,
            &HeaderMap::new(),
            DOCS_URL,
            FORM,
            DOCS_BODY.as_bytes(),
        );
        assert_eq!(
            missing.unwrap_err(),
            VerifyError::MissingSignature {
                header: SIGNATURE_HEADER
            }
        );

        let signed = headers(&[("x-twilio-signature", DOCS_SIG)]);
        let unparsable = verify(&tokens, &shared_keys, &signed, DOCS_URL, FORM, b"Body=\xff\xfe");
        assert_eq!(unparsable.unwrap_err(), VerifyError::UnparsableForm);
    }

    #[test]
    fn canonical_params_sort_by_name_then_value() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect()
        };
        type Row = (
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        let cases: [Row; 5] = [
            (&[], "", ""),
            (&[("b", "2"), ("a", "1")], "a1b2", "a1b2"),
            (
                &[("Caller", "x"), ("CallSid", "y")],
                "CallSidyCallerx",
                "CallSidyCallerx",
            ),
            (
                &[("Body", "hi"), ("Body", "a"), ("Body", "hi")],
                "BodyaBodyhiBodyhi",
                "BodyaBodyhi",
            ),
            (&[("a", ""), ("a", ""), ("b", "")], "aab", "ab"),
        ];
        for (input, kept, collapsed) in cases {
            assert_eq!(
                canonical_params(&params(input), Duplicates::Keep),
                kept,
                "{input:?}"
            );
            assert_eq!(
                canonical_params(&params(input), Duplicates::Collapse),
                collapsed,
                "{input:?}"
            );
        }
    }

    #[test]
    fn url_variants_add_or_remove_the_port() {
        let cases: [(&str, &[&str]); 8] = [
            (
                "https://a.com/p?q=1",
                &["https://a.com/p?q=1", "https://a.com:443/p?q=1"],
            ),
            ("https://a.com:443/p", &["https://a.com:443/p", "https://a.com/p"]),
            ("http://a.com?x=1", &["http://a.com?x=1", "http://a.com:80?x=1"]),
            ("http://a.com:8080/p", &["http://a.com:8080/p", "http://a.com/p"]),
            (
                "https://user:pw@a.com/p",
                &["https://user:pw@a.com/p", "https://user:pw@a.com:443/p"],
            ),
            ("https://[::1]/p", &["https://[::1]/p", "https://[::1]:443/p"]),
            (
                "https://[::1]:8443/p",
                &["https://[::1]:8443/p", "https://[::1]/p"],
            ),
            ("not a url", &["not a url"]),
        ];
        for (url, expected) in cases {
            assert_eq!(url_variants(url), expected, "{url}");
        }
    }

    #[test]
    fn parses_signature_settings() {
        let malformed = || {
            Err(VerifyError::MalformedSignature {
                header: SETTINGS_HEADER,
            })
        };
        let ok = |key_id, algorithm| Ok(Some(SignatureSettings { key_id, algorithm }));
        let cases = [
            ("key=k1,algorithm=HMAC_SHA256", ok("k1", "HMAC_SHA256")),
            (
                " algorithm = HMAC_SHA256 , key = k1 , version=2",
                ok("k1", "HMAC_SHA256"),
            ),
            // No algorithm named: the auth token applies (twilio-python).
            ("key=k1", Ok(None)),
            ("", Ok(None)),
            ("  ", Ok(None)),
            ("algorithm=HMAC_SHA256", malformed()),
            ("key=,algorithm=HMAC_SHA256", malformed()),
            ("key=k1,algorithm=", malformed()),
            ("key=k1,key=k2,algorithm=HMAC_SHA256", malformed()),
            ("key=k1,algorithm", malformed()),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_signature_settings(input), expected, "{input}");
        }
    }

    #[test]
    fn parses_form_bodies() {
        let got = parse_form(b"a=1&b=x+y&c=%2B1&a=2&flag").unwrap();
        let expected = [("a", "1"), ("b", "x y"), ("c", "+1"), ("a", "2"), ("flag", "")];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(parse_form(b"").unwrap(), Vec::new());
        assert_eq!(
            parse_form(b"a=\xc3\x28").unwrap_err(),
            VerifyError::UnparsableForm
        );
    }
}
