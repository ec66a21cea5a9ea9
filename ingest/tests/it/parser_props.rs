//! Property tests over the form and header parsers, run by `make test` (the cargo-fuzz targets in
//! `ingest/fuzz/` need a nightly toolchain): no input panics, the form parameter cap is honoured by
//! the whole pipeline, and parse results equal a simple reference where one is defined.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use proptest::prelude::*;
use switchboard_ingest::config::Config;
use switchboard_ingest::limits::form_param_count;
use switchboard_ingest::verify::{standard_webhooks, timestamped, twilio};

use crate::support::{self, Ingest};

/// Bytes biased towards the characters that matter to form encoding.
fn form_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"&=%+a0F".to_vec()),
            1 => any::<u8>(),
        ],
        0..max,
    )
}

/// The reference decoder: split on `&`, skip empty pieces, split at the first `=`, `+` is a space,
/// `%XX` is a byte (a malformed escape stays as written), then UTF-8 with replacement.
fn reference_form(body: &str) -> Vec<(String, String)> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len()
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit() =>
                {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                    continue;
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            (decode(name), decode(value))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn form_parsing_matches_the_reference_and_the_count(body in form_bytes(400)) {
        let count = form_param_count(&body);
        prop_assert_eq!(count, url::form_urlencoded::parse(&body).count());
        match std::str::from_utf8(&body) {
            Ok(text) => {
                let parsed = twilio::parse_form(&body).unwrap();
                prop_assert_eq!(parsed.len(), count);
                prop_assert_eq!(parsed, reference_form(text));
            }
            Err(_) => prop_assert!(twilio::parse_form(&body).is_err()),
        }
    }

    #[test]
    fn header_parsers_never_panic(value in "[ -~]{0,200}") {
        let _ = timestamped::parse_header(&value);
        let _ = standard_webhooks::parse_signatures(&value);
        let _ = twilio::parse_signature_settings(&value);
        let _ = twilio::url_variants(&value);
    }

    #[test]
    fn well_formed_headers_parse_back(
        t in 0_i64..4_000_000_000,
        signature in prop::collection::vec(any::<u8>(), 32),
        key_id in "[A-Za-z0-9_-]{1,20}",
    ) {
        let parsed = timestamped::parse_header(&format!("t={t},v1={}", hex::encode(&signature)));
        prop_assert_eq!(parsed.map(|p| (p.timestamp, p.v1)), Some((t, vec![signature])));
        let value = format!("key={key_id},algorithm=HMAC_SHA256");
        let settings = twilio::parse_signature_settings(&value).ok().flatten().map(|s| (s.key_id.to_owned(), s.algorithm.to_owned()));
        prop_assert_eq!(settings, Some((key_id, "HMAC_SHA256".to_owned())));
    }
}

const CAP: usize = 50;

fn ingest() -> &'static Ingest {
    static INGEST: OnceLock<Ingest> = OnceLock::new();
    INGEST.get_or_init(|| {
        Ingest::new(Config {
            max_form_params: CAP,
            ..support::config()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Through the whole pipeline: an unsigned form is 413 exactly when it has more parameters than
    /// the cap, 401 otherwise; never a 5xx, never published.
    #[test]
    fn the_pipeline_honours_the_parameter_cap(
        params in prop::collection::vec(("[a-zA-Z%&=+]{0,6}", "[a-z0-9%&=+ ]{0,6}"), 0..(3 * CAP)),
        separators in 1_usize..3,
    ) {
        let body = params
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(&"&".repeat(separators));
        let count = url::form_urlencoded::parse(body.as_bytes()).count();
        let request = Request::post("/webhooks/twilio/calls")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-twilio-signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .body(Body::from(body))
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, _, answer) = runtime.block_on(support::send(&ingest().router, request));
        let expected = if count > CAP { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::UNAUTHORIZED };
        prop_assert_eq!(status, expected, "{} parameters: {}", count, answer);
        prop_assert!(ingest().published().is_empty());
    }
}
