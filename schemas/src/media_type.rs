//! Media types (`Content-Type` values), read one way by every service: ingest's verifiers and
//! envelope, and the processor's normalizers. A media type's type and subtype are
//! case-insensitive (RFC 9110 §8.3.1), so `Application/JSON; charset=utf-8` is JSON everywhere;
//! parameters such as `charset` are ignored.

/// `application/json`.
pub const JSON: &str = "application/json";
/// `application/x-www-form-urlencoded`.
pub const FORM: &str = "application/x-www-form-urlencoded";
/// `application/cloudevents+json`: one CloudEvent in structured mode (CloudEvents JSON format
/// §3). Ingest stores each event of a Twilio Event Streams batch under this type, which is how the
/// processor tells them from Twilio's callbacks (form or `application/json`).
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The essence of a `Content-Type` value: `type/subtype`, trimmed and lower-cased, parameters
/// dropped. `Application/JSON ; charset=UTF-8` -> `application/json`; an empty value -> `""`.
pub fn essence(content_type: &str) -> String {
    let essence = content_type
        .split_once(';')
        .map_or(content_type, |(essence, _)| essence);
    essence.trim().to_ascii_lowercase()
}

/// True when `content_type`'s essence is `expected` (compared case-insensitively).
pub fn is(content_type: &str, expected: &str) -> bool {
    let essence = content_type
        .split_once(';')
        .map_or(content_type, |(essence, _)| essence);
    essence.trim().eq_ignore_ascii_case(expected)
}

/// True for `application/json`, in any case, with or without parameters.
pub fn is_json(content_type: &str) -> bool {
    is(content_type, JSON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn essence_ignores_case_parameters_and_whitespace() {
        let cases = [
            ("application/json", "application/json", true),
            ("Application/JSON", "application/json", true),
            (" application/json ; charset=utf-8", "application/json", true),
            ("APPLICATION/JSON;charset=UTF-8", "application/json", true),
            ("application/jsonx", "application/jsonx", false),
            ("application/x-www-form-urlencoded", FORM, false),
            ("text/plain; a=application/json", "text/plain", false),
            ("", "", false),
        ];
        for (input, expected, json) in cases {
            assert_eq!(essence(input), expected, "{input}");
            assert_eq!(is_json(input), json, "{input}");
        }
        assert!(is("Application/X-WWW-Form-Urlencoded; charset=utf-8", FORM));
    }
}
