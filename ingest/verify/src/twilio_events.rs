//! Twilio Event Streams webhook sinks: a JSON array of CloudEvents per request.
//!
//! Twilio signs a sink delivery like a JSON callback: it appends `bodySHA256=<hex SHA-256 of the
//! body>` to the sink's destination URL and sends `X-Twilio-Signature` = base64 HMAC-SHA1(auth
//! token, that URL). The body is therefore covered byte for byte, and with it every event's `id`,
//! `type` and `data`. Verification is [`twilio::verify`] with the JSON rules (URL with and without
//! the default port; a `X-Twilio-Webhooks-Signature-Settings` header selects a shared key).
//!
//! A sink's destination URL may carry `user:password@`: Twilio then sends
//! `Authorization: Basic base64(user:password)` with every request. When credentials are configured
//! ([`BasicCredentials`]) the header is required and compared in constant time, before the
//! signature. The request line never carries the userinfo, and Twilio does not document whether the
//! signed URL keeps it, so the signature is checked over the URL without userinfo and, if that
//! fails, over the URL with the presented credentials' `user:password@` (percent-encoded as a URL
//! holds them). Both need the auth token; neither is weaker than the other.
//!
//! [`split`] turns the verified body into one [`CloudEvent`] per array element, each with the exact
//! bytes Twilio sent for it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;
use switchboard_schemas::media_type;

use super::{SecretError, SecretSet, SharedKeys, Verified, VerifyError, twilio};

/// The prefix of every Event Streams event id: keeps them apart from callback ids (`sha256:…`).
pub const EVENT_ID_PREFIX: &str = "twilio-events:";

/// `user:password` pairs accepted in `Authorization: Basic` (several during rotation).
#[derive(Clone, Default)]
pub struct BasicCredentials(Vec<String>);

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicCredentials({} configured)", self.0.len())
    }
}

impl BasicCredentials {
    /// Parses `user:password` entries; the user must be non-empty and contain no `:`.
    pub fn from_strings<I>(entries: I) -> Result<Self, SecretError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        entries
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref();
                match entry.split_once(':') {
                    Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                        Ok(entry.to_owned())
                    }
                    _ => Err(SecretError::BasicCredentialFormat),
                }
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The configured `user:password` the `Authorization` header presents, compared in constant
    /// time with every configured pair. `Ok(None)` when none are configured.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<&str>, VerifyError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then_some(token.trim())
            })
            .and_then(|token| STANDARD.decode(token).ok())
            .ok_or(VerifyError::BasicAuthMismatch)?;
        // Every configured pair is compared, so the time taken does not tell which one matched.
        let mut matched = None;
        for credential in &self.0 {
            if bool::from(credential.as_bytes().ct_eq(&presented)) {
                matched = Some(credential.as_str());
            }
        }
        matched.map(Some).ok_or(VerifyError::BasicAuthMismatch)
    }
}

/// The `Authorization` value Twilio sends for a destination URL with `user:password@`:
/// `Basic base64(user:password)`, which [`BasicCredentials::check`] accepts.
pub fn basic_authorization(credential: &str) -> String {
    format!("Basic {}", STANDARD.encode(credential))
}

/// Verifies an Event Streams delivery: Basic auth when configured, then the Twilio signature over
/// the URL (see the module docs for the userinfo rule) with the body proven by `bodySHA256`.
pub fn verify(
    auth_tokens: &SecretSet,
    shared_keys: &SharedKeys,
    basic: &BasicCredentials,
    headers: &HeaderMap,
    url: &str,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    let credential = basic.check(headers)?;
    let verify = |url: &str| twilio::verify(auth_tokens, shared_keys, headers, url, media_type::JSON, body);
    match (verify(url), credential) {
        (Err(VerifyError::SignatureMismatch), Some(credential)) => match with_userinfo(url, credential) {
            Some(url) => verify(&url),
            None => Err(VerifyError::SignatureMismatch),
        },
        (result, _) => result,
    }
}

/// `url` with `user:password@` before its host, each part percent-encoded except RFC 3986's
/// unreserved characters; `None` for a URL without `scheme://` or that already has userinfo.
pub fn with_userinfo(url: &str, credential: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[..authority_end].contains('@') {
        return None;
    }
    let (user, password) = credential.split_once(':')?;
    Some(format!("{scheme}://{}:{}@{rest}", encode(user), encode(password)))
}

fn encode(part: &str) -> String {
    part.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One CloudEvent of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent<'a> {
    /// The element's bytes exactly as received.
    pub raw: &'a [u8],
    /// The CloudEvent `id` (unique per event; the same on a redelivery).
    pub id: String,
    /// The CloudEvent `type`, e.g. `com.twilio.voice.status-callback.call.completed`.
    pub event_type: String,
    /// The whole event, parsed.
    pub json: Value,
}

impl CloudEvent<'_> {
    /// The record's event id: [`EVENT_ID_PREFIX`] + the CloudEvent `id`.
    pub fn event_id(&self) -> String {
        format!("{EVENT_ID_PREFIX}{}", self.id)
    }

    /// The callback parameters the event carries, as a status callback would have sent them:
    /// voice events (`Voice.WebhookEvent`) hold the callback request in `data.request.parameters`;
    /// message status events (`Messaging.MessageStatus`) name them in camelCase (`from`, `to`,
    /// `messageSid`, …), mapped to Twilio's parameter names here. Scalars only.
    pub fn params(&self) -> Vec<(String, String)> {
        let data = self.json.get("data");
        if let Some(Value::Object(parameters)) = data.and_then(|d| d.pointer("/request/parameters")) {
            return scalars(parameters.iter().map(|(name, value)| (name.as_str(), value)));
        }
        let Some(Value::Object(data)) = data else {
            return Vec::new();
        };
        const NAMES: [(&str, &str); 7] = [
            ("accountSid", "AccountSid"),
            ("messageSid", "MessageSid"),
            ("messageStatus", "MessageStatus"),
            ("errorCode", "ErrorCode"),
            ("from", "From"),
            ("to", "To"),
            ("callSid", "CallSid"),
        ];
        scalars(
            NAMES
                .iter()
                .filter_map(|(field, name)| data.get(*field).map(|value| (*name, value))),
        )
    }

    /// The callback URL a voice event records (`data.request.url`): it carries the `phone_id`
    /// query parameter when the application put one there, as for callbacks.
    pub fn callback_url(&self) -> Option<&str> {
        self.json.pointer("/data/request/url").and_then(Value::as_str)
    }
}

fn scalars<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>) -> Vec<(String, String)> {
    fields
        .filter_map(|(name, value)| match value {
            Value::String(s) => Some((name.to_owned(), s.clone())),
            Value::Number(n) => Some((name.to_owned(), n.to_string())),
            Value::Bool(b) => Some((name.to_owned(), b.to_string())),
            _ => None,
        })
        .collect()
}

/// Why a verified body is not a batch ingest can store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("body is not a JSON array of CloudEvents")]
    NotAnArray,
    #[error("a CloudEvent has no `id` or no `type`")]
    MissingAttribute,
    #[error("batch has more than {0} events")]
    TooManyEvents(usize),
}

#[derive(Deserialize)]
struct Attributes {
    id: Option<Value>,
    #[serde(rename = "type")]
    event_type: Option<Value>,
}

/// Splits a verified body into its events, in array order. More than `max_events` events, an
/// element that is not an object, or one without a non-empty string `id` and `type`, refuse the
/// whole batch: nothing of it is published.
pub fn split(body: &[u8], max_events: usize) -> Result<Vec<CloudEvent<'_>>, BatchError> {
    let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(|_| BatchError::NotAnArray)?;
    if elements.len() > max_events {
        return Err(BatchError::TooManyEvents(max_events));
    }
    elements
        .into_iter()
        .map(|element| {
            let json: Value = serde_json::from_str(element.get()).map_err(|_| BatchError::NotAnArray)?;
            let attributes = Attributes::deserialize(&json).map_err(|_| BatchError::MissingAttribute)?;
            let text = |value: Option<Value>| match value {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
                _ => Err(BatchError::MissingAttribute),
            };
            Ok(CloudEvent {
                raw: element.get().as_bytes(),
                id: text(attributes.id)?,
                event_type: text(attributes.event_type)?,
                json,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scheme;
    use crate::test_support::{headers, secrets};

    const TOKEN: &str = "12345";
    /// A batch as Twilio's docs show it, compact.
    const BODY: &str = r#"[{"specversion":"1.0","type":"com.twilio.messaging.message.delivered","source":"/2010-04-01/Accounts/AC123/Messages/SM123.json","id":"EZ00000000000000000000000000000001","dataschema":"https://events-schemas.twilio.com/Messaging.MessageStatus/7","datacontenttype":"application/json","time":"2025-01-14T18:06:00.000Z","data":{"messageSid":"SM123","accountSid":"AC123","from":"+15551230000","to":"+14155550199","messageStatus":"DELIVERED","timestamp":"2025-01-14T18:06:00.000Z","eventName":"com.twilio.messaging.message.delivered","apiVersion":"2010-04-01"}}]"#;
    // `scripts/twilio_events_vectors.py` (the official `twilio` package, 9.13.0): each signature is
    // also accepted by its `RequestValidator.validate(url, BODY, signature)`.
    const BODY_SHA256: &str = "3d65847e0019755232e91c983173627c4b48a2dd70f884c1502379e118b5c7d1";
    /// Over `https://hooks.example.com/webhooks/twilio-events?bodySHA256=…`.
    const SIG: &str = "ku/P/1vLljbLFC8bekUdquIC9kg=";
    /// Over the same URL with `:443`.
    const SIG_443: &str = "C4wyvfXLxfwZF9jKAQhVld24Mxk=";
    /// Over the same URL with `twilio:s3cret@` before the host.
    const SIG_USERINFO: &str = "Qt4M01CRayC1eFrLgJ6ioXpib/0=";
    /// HMAC-SHA256 with the shared key `shared-secret-2024`.
    const SIG_SHARED: &str = "UJaP9KgTsvaZoPJdpa8S1+FU8RaXY0i1BqPL5cj5q+U=";
    /// `twilio:s3cret`.
    const BASIC: &str = "Basic dHdpbGlvOnMzY3JldA==";

    fn url() -> String {
        format!("https://hooks.example.com/webhooks/twilio-events?bodySHA256={BODY_SHA256}")
    }

    #[test]
    fn signing_reproduces_the_sdk_vectors() {
        use crate::Secret;
        use crate::twilio::TwilioKey;

        let token = TwilioKey::AuthToken(Secret::new(TOKEN));
        let shared = TwilioKey::SharedKey {
            id: "key-2024".into(),
            key: Secret::new("shared-secret-2024"),
        };
        assert_eq!(twilio::body_sha256(BODY.as_bytes()), BODY_SHA256);
        assert_eq!(twilio::sign(&token, &url(), &[]), SIG);
        assert_eq!(
            twilio::sign(&token, &url().replace(".com/", ".com:443/"), &[]),
            SIG_443
        );
        let userinfo = with_userinfo(&url(), "twilio:s3cret").unwrap();
        assert_eq!(twilio::sign(&token, &userinfo, &[]), SIG_USERINFO);
        assert_eq!(twilio::sign(&shared, &url(), &[]), SIG_SHARED);
        assert_eq!(basic_authorization("twilio:s3cret"), BASIC);
    }

    #[test]
    fn basic_credentials_need_a_user_and_a_password() {
        assert!(BasicCredentials::from_strings(["u:p", "user:pa:ss"]).is_ok());
        for bad in ["", "user", ":pw", "user:"] {
            assert_eq!(
                BasicCredentials::from_strings([bad]).unwrap_err(),
                SecretError::BasicCredentialFormat,
                "{bad}"
            );
        }
        let credentials = BasicCredentials::from_strings(["twilio:s3cret"]).unwrap();
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }

    #[test]
    fn basic_auth_is_checked_against_every_configured_pair() {
        let credentials = BasicCredentials::from_strings(["old:pw1", "twilio:s3cret"]).unwrap();
        let basic = |token: &str| headers(&[("authorization", token)]);
        // python3: base64.b64encode(b"twilio:s3cret")
        assert_eq!(
            credentials.check(&basic("Basic dHdpbGlvOnMzY3JldA==")),
            Ok(Some("twilio:s3cret"))
        );
        assert_eq!(
            credentials.check(&basic("basic   dHdpbGlvOnMzY3JldA== ")),
            Ok(Some("twilio:s3cret"))
        );
        let refused = [
            basic("Basic dHdpbGlvOnMzY3JldDE="),  // twilio:s3cret1
            basic("Bearer dHdpbGlvOnMzY3JldA=="), // wrong scheme
            basic("Basic not base64!"),
            HeaderMap::new(),
        ];
        for headers in refused {
            assert_eq!(credentials.check(&headers), Err(VerifyError::BasicAuthMismatch));
        }
        assert_eq!(BasicCredentials::default().check(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn userinfo_goes_before_the_host_percent_encoded() {
        assert_eq!(
            with_userinfo("https://h.example.com:8443/p?q=1", "twilio:s3cret").as_deref(),
            Some("https://twilio:s3cret@h.example.com:8443/p?q=1")
        );
        assert_eq!(
            with_userinfo("https://h.example.com/p", "us er:p@ss:w").as_deref(),
            Some("https://us%20er:p%40ss%3Aw@h.example.com/p")
        );
        assert_eq!(with_userinfo("https://a:b@h.example.com/p", "u:p"), None);
        assert_eq!(with_userinfo("not a url", "u:p"), None);
    }

    #[test]
    fn splits_a_batch_into_its_events_with_their_exact_bytes() {
        let body = br#"[ {"id":"EZ1","type":"t.a","data":{"n":1.50}} ,{"type":"t.b","id":"EZ2"}]"#;
        let events = split(body, 10).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].raw, br#"{"id":"EZ1","type":"t.a","data":{"n":1.50}}"#);
        assert_eq!(
            (events[0].id.as_str(), events[0].event_type.as_str()),
            ("EZ1", "t.a")
        );
        assert_eq!(events[1].event_id(), "twilio-events:EZ2");
        assert_eq!(split(b"[]", 10).unwrap(), Vec::new());

        let refused: [(&[u8], BatchError); 6] = [
            (br#"{"id":"EZ1","type":"t"}"#, BatchError::NotAnArray),
            (b"[1]", BatchError::MissingAttribute),
            (br#"[{"type":"t"}]"#, BatchError::MissingAttribute),
            (br#"[{"id":"EZ1","type":""}]"#, BatchError::MissingAttribute),
            (br#"[{"id":7,"type":"t"}]"#, BatchError::MissingAttribute),
            (b"[", BatchError::NotAnArray),
        ];
        for (body, expected) in refused {
            assert_eq!(
                split(body, 10).unwrap_err(),
                expected,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let three = br#"[{"id":"1","type":"t"},{"id":"2","type":"t"},{"id":"3","type":"t"}]"#;
        assert_eq!(split(three, 2).unwrap_err(), BatchError::TooManyEvents(2));
        assert_eq!(split(three, 3).unwrap().len(), 3);
    }

    #[test]
    fn params_come_from_the_callback_request_or_the_message_fields() {
        let voice = br#"[{"id":"EZ1","type":"com.twilio.voice.status-callback.call.ringing","data":{"sid":"CA1","request":{"method":"POST","url":"https://hooks.example.com/webhooks/twilio/calls?phone_id=%2B15551230000","parameters":{"CallSid":"CA1","CallStatus":"ringing","To":"+15551230000","SequenceNumber":1,"Nested":{"x":1}}}}}]"#;
        let events = split(voice, 1).unwrap();
        let params = events[0].params();
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["CallSid", "CallStatus", "SequenceNumber", "To"]);
        assert_eq!(
            events[0].callback_url(),
            Some("https://hooks.example.com/webhooks/twilio/calls?phone_id=%2B15551230000")
        );

        let events = split(BODY.as_bytes(), 1).unwrap();
        let params = events[0].params();
        let expected = [
            ("AccountSid", "AC123"),
            ("MessageSid", "SM123"),
            ("MessageStatus", "DELIVERED"),
            ("From", "+15551230000"),
            ("To", "+14155550199"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(params, expected);
        assert_eq!(events[0].callback_url(), None);
    }

    struct Case {
        name: &'static str,
        url: String,
        body: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        basic: &'static [&'static str],
        expected: Result<Scheme, VerifyError>,
    }

    fn run(case: &Case) -> Result<Scheme, VerifyError> {
        let shared_keys = SharedKeys::from_strings(["key-2024:shared-secret-2024"]).unwrap();
        let basic = BasicCredentials::from_strings(case.basic).unwrap();
        verify(
            &secrets(&["old-token", TOKEN]),
            &shared_keys,
            &basic,
            &headers(&case.headers),
            &case.url,
            case.body.as_bytes(),
        )
        .map(|verified| verified.scheme())
    }

    #[test]
    fn verifies_against_the_sdk_vectors() {
        let base = || Case {
            name: "signed url",
            url: url(),
            body: BODY,
            headers: vec![("x-twilio-signature", SIG)],
            basic: &[],
            expected: Ok(Scheme::TwilioHmacSha1),
        };
        let cases = [
            base(),
            Case {
                name: "received with :443, signed without",
                url: url().replace(".com/", ".com:443/"),
                ..base()
            },
            Case {
                name: "signed with :443",
                headers: vec![("x-twilio-signature", SIG_443)],
                ..base()
            },
            Case {
                name: "shared key",
                headers: vec![
                    ("x-twilio-signature", SIG_SHARED),
                    (
                        "x-twilio-webhooks-signature-settings",
                        "key=key-2024,algorithm=HMAC_SHA256",
                    ),
                ],
                expected: Ok(Scheme::TwilioSharedKeyHmacSha256),
                ..base()
            },
            Case {
                name: "basic auth, URL signed without userinfo",
                headers: vec![("x-twilio-signature", SIG), ("authorization", BASIC)],
                basic: &["twilio:s3cret"],
                ..base()
            },
            Case {
                name: "basic auth, URL signed with userinfo",
                headers: vec![("x-twilio-signature", SIG_USERINFO), ("authorization", BASIC)],
                basic: &["other:pw", "twilio:s3cret"],
                ..base()
            },
            Case {
                name: "userinfo signature without basic auth configured",
                headers: vec![("x-twilio-signature", SIG_USERINFO), ("authorization", BASIC)],
                expected: Err(VerifyError::SignatureMismatch),
                ..base()
            },
            Case {
                name: "basic auth configured, header missing",
                basic: &["twilio:s3cret"],
                expected: Err(VerifyError::BasicAuthMismatch),
                ..base()
            },
            Case {
                name: "basic auth configured, wrong password",
                headers: vec![
                    ("x-twilio-signature", SIG),
                    ("authorization", "Basic dHdpbGlvOndyb25n"),
                ],
                basic: &["twilio:s3cret"],
                expected: Err(VerifyError::BasicAuthMismatch),
                ..base()
            },
            Case {
                name: "wrong token",
                headers: vec![("x-twilio-signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")],
                expected: Err(VerifyError::SignatureMismatch),
                ..base()
            },
            Case {
                name: "body tampered",
                body: "[]",
                expected: Err(VerifyError::BodyHashMismatch),
                ..base()
            },
            Case {
                name: "no bodySHA256",
                url: "https://hooks.example.com/webhooks/twilio-events".into(),
                expected: Err(VerifyError::MissingBodyHash),
                ..base()
            },
            Case {
                name: "other path",
                url: url().replace("twilio-events", "twilio-event"),
                expected: Err(VerifyError::SignatureMismatch),
                ..base()
            },
            Case {
                name: "no signature",
                headers: vec![],
                expected: Err(VerifyError::MissingSignature {
                    header: twilio::SIGNATURE_HEADER,
                }),
                ..base()
            },
        ];
        for case in &cases {
            assert_eq!(run(case), case.expected, "{}", case.name);
        }
    }
}
