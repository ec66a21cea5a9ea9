//! Generic sources (Standard Webhooks, GitHub-style): passed through as text, named by the source
//! name ingest recorded. The body may be anything UTF-8; other bytes are poison.

use switchboard_schemas::RawWebhook;
use switchboard_schemas::domain::GenericEvent;

use super::{DomainEvent, Poison};

pub(crate) fn normalize(raw: &RawWebhook) -> Result<DomainEvent, Poison> {
    let source_name = raw
        .source_name
        .as_deref()
        .filter(|name| !name.trim().is_empty())
        .ok_or_else(|| Poison::missing_field("source_name"))?;
    let body = std::str::from_utf8(&raw.body).map_err(|_| Poison::undecodable("body is not UTF-8"))?;
    Ok(DomainEvent::Generic(GenericEvent {
        event_id: raw.event_id.clone(),
        phone_id: raw.phone_id.clone(),
        source_name: source_name.to_owned(),
        content_type: raw.content_type.clone(),
        body: body.to_owned(),
        received_at: raw.received_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::PoisonClass;
    use super::super::tests::envelope;
    use super::*;

    fn generic(source_name: Option<&str>, content_type: &str, body: &[u8]) -> RawWebhook {
        RawWebhook {
            source_name: source_name.map(str::to_owned),
            ..envelope("generic", content_type, body)
        }
    }

    #[test]
    fn bodies_pass_through_with_the_source_name() {
        let cases: [(&str, &[u8]); 3] = [
            (
                "application/json",
                br#"{"type":"contact.updated","timestamp":"2025-01-14T18:06:02Z","data":{"id":"c_81"}}"#,
            ),
            ("text/plain; charset=utf-8", "Grüße, 予約 confirmed".as_bytes()),
            ("application/octet-stream", b""),
        ];
        for (content_type, body) in cases {
            let raw = generic(Some("crm"), content_type, body);
            let expected = GenericEvent {
                event_id: raw.event_id.clone(),
                phone_id: raw.phone_id.clone(),
                source_name: "crm".into(),
                content_type: content_type.into(),
                body: String::from_utf8(body.to_vec()).unwrap(),
                received_at: raw.received_at,
            };
            assert_eq!(normalize(&raw), Ok(DomainEvent::Generic(expected)));
        }
    }

    #[test]
    fn every_poison_class_is_detected() {
        let cases = [
            (
                generic(Some("crm"), "application/octet-stream", b"\x00\x9f\x92\x96"),
                PoisonClass::Undecodable,
                "UTF-8",
            ),
            (
                generic(None, "application/json", b"{}"),
                PoisonClass::MissingField,
                "missing field source_name",
            ),
            (
                generic(Some(" "), "application/json", b"{}"),
                PoisonClass::MissingField,
                "missing field source_name",
            ),
        ];
        for (raw, class, reason) in cases {
            let poison = normalize(&raw).unwrap_err();
            assert_eq!(poison.class, class);
            assert!(poison.reason.contains(reason), "{:?}", poison.reason);
        }
    }
}
