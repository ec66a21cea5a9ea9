//! Test-side signing, written from the providers' documented algorithms independently of the
//! crate's verifiers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

pub(crate) const TWILIO_TOKEN: &str = "twilio-test-token-0123456789abcdef";
pub(crate) const STRIPE_SECRET: &str = "whsec_stripe_test_secret";
pub(crate) const CALENDLY_KEY: &str = "calendly-test-signing-key";
pub(crate) const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const GITHUB_SECRET: &str = "github-test-secret";
pub(crate) const PUBLIC_URL: &str = "https://hooks.example.com";

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `X-Twilio-Signature` for a form POST to `url`.
pub(crate) fn twilio(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(TWILIO_TOKEN.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

pub(crate) fn form(params: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// `t=…,v1=…` as Stripe and Calendly send it.
pub(crate) fn timestamped(secret: &str, timestamp: i64, body: &str) -> String {
    let signature = hmac_sha256(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(signature))
}

/// `webhook-signature` for a Standard Webhooks request.
pub(crate) fn standard_webhooks(id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD
        .decode(STANDARD_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    format!(
        "v1,{}",
        STANDARD.encode(hmac_sha256(&key, format!("{id}.{timestamp}.{body}").as_bytes()))
    )
}

pub(crate) fn github(body: &str) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(GITHUB_SECRET.as_bytes(), body.as_bytes()))
    )
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
