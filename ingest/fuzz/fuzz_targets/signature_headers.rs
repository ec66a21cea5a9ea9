//! The signature header parsers on arbitrary strings: `timestamped::parse_header` (Stripe, Calendly),
//! `standard_webhooks::parse_signatures`, `twilio::parse_signature_settings`, plus `twilio::url_variants`
//! and `timestamped::check_window` with arbitrary numbers. They never panic, and what they parse
//! survives being written back in canonical form.

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use switchboard_ingest::verify::{standard_webhooks, timestamped, twilio};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    value: &'a str,
    now: i64,
    tolerance_secs: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fuzz_target!(|input: Input<'_>| {
    let Input {
        value,
        now,
        tolerance_secs,
    } = input;
    let tolerance = Duration::from_secs(tolerance_secs);

    if let Some(parsed) = timestamped::parse_header(value) {
        let _ = timestamped::check_window(parsed.timestamp, now, tolerance);
        let entries: Vec<String> = std::iter::once(format!("t={}", parsed.timestamp))
            .chain(parsed.v1.iter().map(|signature| format!("v1={}", hex(signature))))
            .collect();
        assert_eq!(timestamped::parse_header(&entries.join(",")), Some(parsed));
    }
    let _ = timestamped::check_window(now, now.wrapping_add(tolerance_secs as i64), tolerance);

    if let Some(signatures) = standard_webhooks::parse_signatures(value) {
        assert!(signatures.len() <= value.split_whitespace().count());
        let entries: Vec<String> = signatures
            .iter()
            .map(|signature| format!("v1,{}", STANDARD.encode(signature)))
            .collect();
        assert_eq!(
            standard_webhooks::parse_signatures(&entries.join(" ")),
            Some(signatures)
        );
    }

    if let Ok(Some(settings)) = twilio::parse_signature_settings(value) {
        assert!(!settings.key_id.is_empty() && !settings.algorithm.is_empty());
        assert!(value.contains(settings.key_id) && value.contains(settings.algorithm));
        let rebuilt = format!("key={},algorithm={}", settings.key_id, settings.algorithm);
        // Entries are split on `,` and trimmed, so the parsed values write back unchanged.
        assert_eq!(twilio::parse_signature_settings(&rebuilt), Ok(Some(settings)));
    }

    let variants = twilio::url_variants(value);
    assert_eq!(variants[0], value);
    assert!(variants.len() <= 2);
});
