//! Server-side tenant mapping: which phone id (the record key, and so the tenant) an event belongs
//! to, decided from fields the provider sets rather than fields the sender of the event can edit.
//!
//! Configured under `[tenants]` (TOML only). A mapping that matches wins over every payload field;
//! an event none of the mappings matches keys as without mappings (see [`crate::envelope`]), so an
//! operator who maps every number, account and event type they own leaves no sender-controlled key.
//!
//! - `twilio_numbers`: a Twilio number (E.164) the account owns → phone id. Looked up on `To`, then
//!   on `From` unless the leg is `outbound-dial` (a `<Dial>` child leg's `From` is the original
//!   caller's id, which a caller can spoof). An inbound call or message always has the account's
//!   number in `To`, so a spoofed `From` never wins over a mapped `To`.
//! - `stripe_accounts`: a Connect account id (`acct_…`, the event's `account`, set by Stripe) →
//!   phone id; wins over `data.object.metadata.phone_id`, which a connected account can write.
//! - `calendly`: an event type URI (`payload.scheduled_event.event_type`) or an organizer's user URI
//!   (`payload.scheduled_event.event_memberships[].user`) → phone id; wins over
//!   `calendly_phone_id_pointer` (by default a UTM field the invitee can edit in the booking link).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The longest phone id a mapping may name (the same bound as payload phone ids).
pub const MAX_PHONE_ID_BYTES: usize = 256;

/// `[tenants]`: provider-set identifiers → phone id.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Tenants {
    /// Twilio number (E.164, e.g. `+15551230000`) → phone id.
    pub twilio_numbers: BTreeMap<String, String>,
    /// Stripe Connect account id (`acct_…`) → phone id.
    pub stripe_accounts: BTreeMap<String, String>,
    /// Calendly event type URI or organizer user URI → phone id.
    pub calendly: BTreeMap<String, String>,
}

impl Tenants {
    /// The phone id of a Twilio callback with these parameters, if a mapped number is on it.
    pub fn twilio(&self, params: &[(String, String)]) -> Option<String> {
        if self.twilio_numbers.is_empty() {
            return None;
        }
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, v)| n == name && !v.trim().is_empty())
                .map(|(_, v)| v.as_str())
        };
        let dial_leg = param("Direction") == Some("outbound-dial");
        let mut candidates = vec![param("To"), param("Called")];
        if !dial_leg {
            candidates.extend([param("From"), param("Caller")]);
        }
        candidates
            .into_iter()
            .flatten()
            .find_map(|number| self.twilio_numbers.get(number))
            .cloned()
    }

    /// The phone id of a Stripe event whose Connect `account` is mapped.
    pub fn stripe(&self, body: &Value) -> Option<String> {
        let account = body.pointer("/account")?.as_str()?;
        self.stripe_accounts.get(account).cloned()
    }

    /// The phone id of a Calendly event whose event type or one of whose organizers is mapped.
    pub fn calendly(&self, body: &Value) -> Option<String> {
        if self.calendly.is_empty() {
            return None;
        }
        let event = body.pointer("/payload/scheduled_event")?;
        let event_type = event.pointer("/event_type").and_then(Value::as_str);
        let organizers = event
            .pointer("/event_memberships")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|membership| membership.pointer("/user").and_then(Value::as_str));
        event_type
            .into_iter()
            .chain(organizers)
            .find_map(|uri| self.calendly.get(uri))
            .cloned()
    }

    /// Every mapped phone id is non-blank and at most [`MAX_PHONE_ID_BYTES`]; the error names the
    /// offending table.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let tables = [
            ("tenants.twilio_numbers", &self.twilio_numbers),
            ("tenants.stripe_accounts", &self.stripe_accounts),
            ("tenants.calendly", &self.calendly),
        ];
        for (name, table) in tables {
            for (from, phone_id) in table {
                if phone_id.trim().is_empty() || phone_id.len() > MAX_PHONE_ID_BYTES {
                    return Err((
                        name,
                        format!("{from:?} must map to a phone id of 1 to {MAX_PHONE_ID_BYTES} bytes"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tenants() -> Tenants {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Tenants {
            twilio_numbers: map(&[("+15551230000", "tenant-a"), ("+15559990000", "tenant-b")]),
            stripe_accounts: map(&[("acct_a", "tenant-a")]),
            calendly: map(&[
                ("https://api.calendly.com/event_types/A", "tenant-a"),
                ("https://api.calendly.com/users/B", "tenant-b"),
            ]),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn twilio_numbers_never_trust_a_dial_legs_from() {
        let tenants = tenants();
        let cases = [
            // Inbound with a spoofed From naming tenant B: the account's number in To wins.
            (
                vec![
                    ("Direction", "inbound"),
                    ("From", "+15559990000"),
                    ("To", "+15551230000"),
                ],
                Some("tenant-a"),
            ),
            // outbound-api: From is the account's own number.
            (
                vec![
                    ("Direction", "outbound-api"),
                    ("From", "+15551230000"),
                    ("To", "+1222"),
                ],
                Some("tenant-a"),
            ),
            // A <Dial> child leg: From is the caller's (spoofable) id and is not used.
            (
                vec![
                    ("Direction", "outbound-dial"),
                    ("From", "+15559990000"),
                    ("To", "+1222"),
                ],
                None,
            ),
            // A message status callback (no Direction) sent from the account's number.
            (vec![("From", "+15559990000"), ("To", "+1222")], Some("tenant-b")),
            (vec![("From", "+1333"), ("To", "+1222")], None),
        ];
        for (pairs, expected) in cases {
            assert_eq!(tenants.twilio(&params(&pairs)).as_deref(), expected, "{pairs:?}");
        }
        assert_eq!(
            Tenants::default().twilio(&params(&[("To", "+15551230000")])),
            None
        );
    }

    #[test]
    fn stripe_and_calendly_map_provider_set_fields() {
        let tenants = tenants();
        assert_eq!(
            tenants.stripe(&json!({"account": "acct_a"})).as_deref(),
            Some("tenant-a")
        );
        assert_eq!(tenants.stripe(&json!({"account": "acct_z"})), None);
        assert_eq!(tenants.stripe(&json!({})), None);

        let booking = |event_type: &str, user: &str| {
            json!({"payload": {"scheduled_event": {
                "event_type": event_type,
                "event_memberships": [{"user": "https://api.calendly.com/users/X"}, {"user": user}]
            }}})
        };
        let cases = [
            (
                booking(
                    "https://api.calendly.com/event_types/A",
                    "https://api.calendly.com/users/B",
                ),
                Some("tenant-a"),
            ),
            (
                booking(
                    "https://api.calendly.com/event_types/Z",
                    "https://api.calendly.com/users/B",
                ),
                Some("tenant-b"),
            ),
            (
                booking(
                    "https://api.calendly.com/event_types/Z",
                    "https://api.calendly.com/users/Z",
                ),
                None,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(tenants.calendly(&body).as_deref(), expected, "{body}");
        }
    }

    #[test]
    fn mapped_phone_ids_must_be_usable_keys() {
        assert_eq!(tenants().check(), Ok(()));
        let mut blank = tenants();
        blank.stripe_accounts.insert("acct_b".into(), " ".into());
        assert_eq!(blank.check().unwrap_err().0, "tenants.stripe_accounts");
    }
}
