//! Arbitrary requests (headers, URL, content type, body, clock) through every verifier, with fixed
//! secrets. Never a panic; never a success for a request the fuzzer signed itself (it does not know the
//! secrets), and always a success once the request is signed correctly with
//! each scheme's own `sign`, whatever the body.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchboard_ingest::verify::twilio::TwilioKey;
use switchboard_ingest::verify::{
    Scheme, Secret, SecretSet, SharedKeys, calendly, github, standard_webhooks, stripe, timestamped, twilio,
};
use url::form_urlencoded;

const TOKEN: &str = "fuzz-auth-token";
const SHARED_KEY_ID: &str = "k1";
const SHARED_KEY: &str = "fuzz-shared-key";
const TEXT_SECRET: &str = "whsec_fuzz_text_secret";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// Header names the verifiers read; the fuzzer picks one by index or invents its own.
const NAMES: [&str; 11] = [
    twilio::SIGNATURE_HEADER,
    twilio::SETTINGS_HEADER,
    twilio::IDEMPOTENCY_HEADER,
    stripe::SIGNATURE_HEADER,
    calendly::SIGNATURE_HEADER,
    standard_webhooks::ID_HEADER,
    standard_webhooks::TIMESTAMP_HEADER,
    standard_webhooks::SIGNATURE_HEADER,
    github::SIGNATURE_HEADER,
    github::DELIVERY_HEADER,
    "content-type",
];

struct Keys {
    tokens: SecretSet,
    shared: SharedKeys,
    text: SecretSet,
    standard: SecretSet,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    tokens: SecretSet::from_strings([TOKEN]).unwrap(),
    shared: SharedKeys::from_strings([format!("{SHARED_KEY_ID}:{SHARED_KEY}")]).unwrap(),
    text: SecretSet::from_strings([TEXT_SECRET]).unwrap(),
    standard: SecretSet::from_standard_webhooks([STANDARD_SECRET]).unwrap(),
});

#[derive(Debug, Arbitrary)]
enum Name<'a> {
    Known(u8),
    Other(&'a str),
}

#[derive(Debug, Arbitrary)]
struct Request<'a> {
    headers: Vec<(Name<'a>, &'a [u8])>,
    url: &'a str,
    content_type: &'a str,
    body: &'a [u8],
    now: i64,
    tolerance_secs: u64,
}

impl Request<'_> {
    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = match name {
                Name::Known(index) => HeaderName::from_static(NAMES[usize::from(*index) % NAMES.len()]),
                Name::Other(text) => match HeaderName::from_bytes(text.as_bytes()) {
                    Ok(name) => name,
                    Err(_) => continue,
                },
            };
            if let Ok(value) = HeaderValue::from_bytes(value) {
                map.append(name, value);
            }
        }
        map
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    headers.insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(value).unwrap(),
    );
}

fuzz_target!(|request: Request<'_>| {
    let keys = &*KEYS;
    let headers = request.header_map();
    let Request {
        url,
        content_type,
        body,
        now,
        tolerance_secs,
        ..
    } = request;
    let tolerance = Duration::from_secs(tolerance_secs);

    // As sent: nothing the fuzzer builds can carry a valid signature.
    let results = [
        twilio::verify(&keys.tokens, &keys.shared, &headers, url, content_type, body),
        stripe::verify(&keys.text, &headers, body, now, tolerance),
        calendly::verify(&keys.text, &headers, body, now, tolerance),
        standard_webhooks::verify(&keys.standard, &headers, body, now, tolerance),
        github::verify(&keys.text, &headers, body),
    ];
    for result in results {
        let error = result.expect_err("accepted a request signed without the secret");
        let _ = (error.reason(), error.is_bad_request(), error.to_string());
    }

    // Signed correctly: always accepted.
    let token = TwilioKey::AuthToken(Secret::new(TOKEN));
    let shared = TwilioKey::SharedKey {
        id: SHARED_KEY_ID.into(),
        key: Secret::new(SHARED_KEY),
    };
    if let Ok(params) = twilio::parse_form(body) {
        for (key, scheme) in [
            (&token, Scheme::TwilioHmacSha1),
            (&shared, Scheme::TwilioSharedKeyHmacSha256),
        ] {
            let mut signed = headers.clone();
            signed.remove(twilio::SETTINGS_HEADER);
            if let TwilioKey::SharedKey { id, .. } = key {
                set(
                    &mut signed,
                    twilio::SETTINGS_HEADER,
                    &format!("key={id},algorithm=HMAC_SHA256"),
                );
            }
            set(
                &mut signed,
                twilio::SIGNATURE_HEADER,
                &twilio::sign(key, url, &params),
            );
            let verified = twilio::verify(&keys.tokens, &keys.shared, &signed, url, FORM, body)
                .unwrap_or_else(|error| panic!("signed form rejected: {error}"));
            assert_eq!(verified.scheme(), scheme);
            assert_eq!(verified.params(), params.as_slice());
        }
    }
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let has_hash = form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "bodySHA256");
    if !url.contains('#') && !has_hash {
        use sha2::Digest as _;
        let separator = if url.contains('?') { '&' } else { '?' };
        let hash: String = sha2::Sha256::digest(body)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let json_url = format!("{url}{separator}bodySHA256={hash}");
        let mut signed = headers.clone();
        signed.remove(twilio::SETTINGS_HEADER);
        set(
            &mut signed,
            twilio::SIGNATURE_HEADER,
            &twilio::sign(&token, &json_url, &[]),
        );
        if let Err(error) = twilio::verify(&keys.tokens, &keys.shared, &signed, &json_url, JSON, body) {
            panic!("signed JSON rejected: {error}");
        }
    }

    let text = Secret::new(TEXT_SECRET);
    for header in [stripe::SIGNATURE_HEADER, calendly::SIGNATURE_HEADER] {
        let mut signed = headers.clone();
        set(&mut signed, header, &timestamped::sign(&text, now, body));
        let result = if header == stripe::SIGNATURE_HEADER {
            stripe::verify(&keys.text, &signed, body, now, tolerance)
        } else {
            calendly::verify(&keys.text, &signed, body, now, tolerance)
        };
        if let Err(error) = result {
            panic!("signed {header} rejected: {error}");
        }
    }

    let mut signed = headers.clone();
    let id = match signed.get(standard_webhooks::ID_HEADER).map(HeaderValue::to_str) {
        Some(Ok(id)) => id.to_owned(),
        _ => {
            set(&mut signed, standard_webhooks::ID_HEADER, "msg_fuzz");
            "msg_fuzz".to_owned()
        }
    };
    let key = Secret::from_standard_webhooks(STANDARD_SECRET).unwrap();
    set(&mut signed, standard_webhooks::TIMESTAMP_HEADER, &now.to_string());
    set(
        &mut signed,
        standard_webhooks::SIGNATURE_HEADER,
        &standard_webhooks::sign(&key, &id, now, body),
    );
    if let Err(error) = standard_webhooks::verify(&keys.standard, &signed, body, now, tolerance) {
        panic!("signed Standard Webhooks request rejected: {error}");
    }

    let mut signed = headers;
    set(
        &mut signed,
        github::SIGNATURE_HEADER,
        &github::sign(&text, body),
    );
    if let Err(error) = github::verify(&keys.text, &signed, body) {
        panic!("signed GitHub request rejected: {error}");
    }
});
