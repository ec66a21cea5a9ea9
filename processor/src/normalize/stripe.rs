//! Stripe events (a JSON `event` object), reduced to the object they are about.
//!
//! Required: `type` and `data.object.id`. The event id is the envelope's (ingest took it from the
//! event's `id`), so an event without `id` still normalizes. Everything else is optional and read
//! leniently: a field of an unexpected JSON type is `None`.

use serde_json::Value;
use switchboard_schemas::RawWebhook;
use switchboard_schemas::domain::BillingEvent;

use super::{DomainEvent, Poison, json_object, required_str, str_at};

pub(crate) fn normalize(raw: &RawWebhook) -> Result<DomainEvent, Poison> {
    let event = Value::Object(json_object(&raw.body)?);
    let object = event.pointer("/data/object");
    let object_str = |field: &str| object.and_then(|o| str_at(o, field)).map(str::to_owned);
    // `customer` is an id, or the customer itself when the webhook endpoint expands it.
    let customer = object_str("/customer").or_else(|| object_str("/customer/id"));
    let amount = ["/amount", "/amount_paid", "/amount_due"]
        .into_iter()
        .find_map(|field| object.and_then(|o| o.pointer(field)).and_then(Value::as_i64));
    Ok(DomainEvent::Billing(BillingEvent {
        event_id: raw.event_id.clone(),
        phone_id: raw.phone_id.clone(),
        event_type: required_str(&event, "/type", "type")?,
        object_id: required_str(&event, "/data/object/id", "data.object.id")?,
        customer,
        amount,
        currency: object_str("/currency"),
        status: object_str("/status"),
        created: event
            .get("created")
            .and_then(Value::as_i64)
            .and_then(|seconds| seconds.checked_mul(1000)),
        livemode: event.get("livemode").and_then(Value::as_bool),
        received_at: raw.received_at,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::PoisonClass;
    use super::super::tests::envelope;
    use super::*;

    /// Shaped like the `invoice.paid` example in Stripe's API reference, trimmed.
    fn invoice_paid() -> Value {
        json!({
            "id": "evt_1QhB7d2eZvKYlo2CkU3w9XyZ",
            "object": "event",
            "api_version": "2024-12-18.acacia",
            "created": 1_736_877_959,
            "data": {
                "object": {
                    "id": "in_1QhB7a2eZvKYlo2C0n1Gq8Rt",
                    "object": "invoice",
                    "account_country": "US",
                    "amount_due": 4900,
                    "amount_paid": 4900,
                    "amount_remaining": 0,
                    "billing_reason": "subscription_cycle",
                    "currency": "usd",
                    "customer": "cus_RaQ2bX8kLm4Nop",
                    "customer_email": "owner@brightsmile-dental.example",
                    "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1Nv0FGQ9RKHgCVdK/test_YWNjdF8x",
                    "lines": {"object": "list", "data": [], "has_more": false},
                    "paid": true,
                    "status": "paid",
                    "subscription": "sub_1QhB6z2eZvKYlo2CaBcDeFgH",
                    "total": 4900
                }
            },
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": "invoice.paid"
        })
    }

    /// Shaped like Stripe's `customer.subscription.updated`, with an expanded customer.
    fn subscription_updated() -> Value {
        json!({
            "id": "evt_1QhC0e2eZvKYlo2C9pQrStUv",
            "object": "event",
            "api_version": "2024-12-18.acacia",
            "created": 1_736_881_200,
            "data": {
                "object": {
                    "id": "sub_1QhB6z2eZvKYlo2CaBcDeFgH",
                    "object": "subscription",
                    "cancel_at_period_end": true,
                    "currency": "usd",
                    "current_period_end": 1_739_556_000,
                    "current_period_start": 1_736_877_600,
                    "customer": {"id": "cus_RaQ2bX8kLm4Nop", "object": "customer", "email": "owner@brightsmile-dental.example"},
                    "items": {"object": "list", "data": []},
                    "status": "active"
                },
                "previous_attributes": {"cancel_at_period_end": false}
            },
            "livemode": true,
            "pending_webhooks": 1,
            "request": {"id": "req_8YtGh3kLmN0pQr", "idempotency_key": "0f9c2f7e-5d4b-4a3e-9c1d-2b8e7f6a5d4c"},
            "type": "customer.subscription.updated"
        })
    }

    fn billing(raw_body: &Value) -> Result<DomainEvent, Poison> {
        normalize(&envelope(
            "stripe",
            "application/json",
            raw_body.to_string().as_bytes(),
        ))
    }

    #[test]
    fn documented_events_normalize() {
        let expected_invoice = BillingEvent {
            event_id: "EV-1".into(),
            phone_id: "+14155550100".into(),
            event_type: "invoice.paid".into(),
            object_id: "in_1QhB7a2eZvKYlo2C0n1Gq8Rt".into(),
            customer: Some("cus_RaQ2bX8kLm4Nop".into()),
            amount: Some(4900),
            currency: Some("usd".into()),
            status: Some("paid".into()),
            created: Some(1_736_877_959_000),
            livemode: Some(false),
            received_at: 1_736_877_960_000,
        };
        let mut charge = invoice_paid();
        charge["data"]["object"]["amount"] = json!(1250);
        let cases = [
            ("invoice.paid", invoice_paid(), expected_invoice.clone()),
            (
                "amount wins over amount_paid",
                charge,
                BillingEvent {
                    amount: Some(1250),
                    ..expected_invoice.clone()
                },
            ),
            (
                "customer.subscription.updated with an expanded customer and no amount",
                subscription_updated(),
                BillingEvent {
                    event_type: "customer.subscription.updated".into(),
                    object_id: "sub_1QhB6z2eZvKYlo2CaBcDeFgH".into(),
                    amount: None,
                    status: Some("active".into()),
                    created: Some(1_736_881_200_000),
                    livemode: Some(true),
                    ..expected_invoice.clone()
                },
            ),
        ];
        for (name, body, expected) in cases {
            assert_eq!(billing(&body), Ok(DomainEvent::Billing(expected)), "{name}");
        }
    }

    #[test]
    fn optional_fields_of_unexpected_types_are_absent() {
        let mut body = invoice_paid();
        body["created"] = json!("yesterday");
        body["livemode"] = json!("no");
        body["data"]["object"]["amount_paid"] = json!("4900");
        body["data"]["object"]["currency"] = json!(840);
        let Ok(DomainEvent::Billing(event)) = billing(&body) else {
            panic!("a billing event")
        };
        assert_eq!(event.created, None);
        assert_eq!(event.livemode, None);
        assert_eq!(event.amount, Some(4900), "falls through to amount_due");
        assert_eq!(event.currency, None);
    }

    #[test]
    fn every_poison_class_is_detected() {
        let mut no_type = invoice_paid();
        no_type.as_object_mut().unwrap().remove("type");
        let mut no_object_id = invoice_paid();
        no_object_id["data"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("id");
        let mut no_data = invoice_paid();
        no_data.as_object_mut().unwrap().remove("data");
        let cases: Vec<(&str, Vec<u8>, PoisonClass, &str)> = vec![
            (
                "not JSON",
                b"type=invoice.paid".to_vec(),
                PoisonClass::Undecodable,
                "JSON",
            ),
            (
                "not an object",
                b"\"invoice.paid\"".to_vec(),
                PoisonClass::Undecodable,
                "object",
            ),
            (
                "no type",
                no_type.to_string().into_bytes(),
                PoisonClass::MissingField,
                "missing field type",
            ),
            (
                "no data.object.id",
                no_object_id.to_string().into_bytes(),
                PoisonClass::MissingField,
                "missing field data.object.id",
            ),
            (
                "no data",
                no_data.to_string().into_bytes(),
                PoisonClass::MissingField,
                "data.object.id",
            ),
        ];
        for (name, body, class, reason) in cases {
            let poison = normalize(&envelope("stripe", "application/json", &body)).unwrap_err();
            assert_eq!(poison.class, class, "{name}");
            assert!(poison.reason.contains(reason), "{name}: {:?}", poison.reason);
            assert!(!poison.reason.contains("cus_"), "{name}: reasons carry no values");
        }
    }
}
