//! [`DomainEvent`]: one enum over the domain events, with each one's topic, key, schema, and the
//! decoding of a domain topic's record.

use crate::codec::{Codec, CodecError};
use crate::domain::{BillingEvent, BookingEvent, CallEvent, GenericEvent, MessageEvent};
use crate::schema::SchemaDef;
use crate::topics;
use crate::transience::{Classify, Transience};

/// An event of a domain topic: what the processor's normalizers produce and write, and what the
/// sink and the actions service read back ([`DomainEvent::decode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    /// A Twilio voice callback, for [`topics::CALLS`].
    Call(CallEvent),
    /// A Twilio message callback, for [`topics::MESSAGES`].
    Message(MessageEvent),
    /// A Stripe event, for [`topics::BILLING`].
    Billing(BillingEvent),
    /// A Calendly invitee event, for [`topics::BOOKINGS`].
    Booking(BookingEvent),
    /// A generic-source webhook, for [`topics::GENERIC`].
    Generic(GenericEvent),
}

impl DomainEvent {
    /// The topic this event is written to.
    pub fn topic(&self) -> &'static str {
        match self {
            DomainEvent::Call(_) => topics::CALLS,
            DomainEvent::Message(_) => topics::MESSAGES,
            DomainEvent::Billing(_) => topics::BILLING,
            DomainEvent::Booking(_) => topics::BOOKINGS,
            DomainEvent::Generic(_) => topics::GENERIC,
        }
    }

    /// The record key: the phone id.
    pub fn key(&self) -> &str {
        match self {
            DomainEvent::Call(e) => &e.phone_id,
            DomainEvent::Message(e) => &e.phone_id,
            DomainEvent::Billing(e) => &e.phone_id,
            DomainEvent::Booking(e) => &e.phone_id,
            DomainEvent::Generic(e) => &e.phone_id,
        }
    }

    /// The raw webhook's event id, carried through.
    pub fn event_id(&self) -> &str {
        match self {
            DomainEvent::Call(e) => &e.event_id,
            DomainEvent::Message(e) => &e.event_id,
            DomainEvent::Billing(e) => &e.event_id,
            DomainEvent::Booking(e) => &e.event_id,
            DomainEvent::Generic(e) => &e.event_id,
        }
    }

    /// When ingest received the webhook (epoch milliseconds), carried through.
    pub fn received_at(&self) -> i64 {
        match self {
            DomainEvent::Call(e) => e.received_at,
            DomainEvent::Message(e) => e.received_at,
            DomainEvent::Billing(e) => e.received_at,
            DomainEvent::Booking(e) => e.received_at,
            DomainEvent::Generic(e) => e.received_at,
        }
    }

    /// The schema the event is written with.
    pub fn schema_def(&self) -> &'static SchemaDef {
        match self {
            DomainEvent::Call(_) => CallEvent::schema_def(),
            DomainEvent::Message(_) => MessageEvent::schema_def(),
            DomainEvent::Billing(_) => BillingEvent::schema_def(),
            DomainEvent::Booking(_) => BookingEvent::schema_def(),
            DomainEvent::Generic(_) => GenericEvent::schema_def(),
        }
    }

    /// Decodes a record of domain topic `topic` (its value, in the Confluent wire format; `None`
    /// for a record without one).
    pub async fn decode(codec: &Codec, topic: &str, payload: Option<&[u8]>) -> Result<Self, DecodeError> {
        let payload = payload.ok_or(DecodeError::NoValue)?;
        Ok(match topic {
            topics::CALLS => DomainEvent::Call(codec.decode(CallEvent::schema_def(), payload).await?),
            topics::MESSAGES => {
                DomainEvent::Message(codec.decode(MessageEvent::schema_def(), payload).await?)
            }
            topics::BILLING => DomainEvent::Billing(codec.decode(BillingEvent::schema_def(), payload).await?),
            topics::BOOKINGS => {
                DomainEvent::Booking(codec.decode(BookingEvent::schema_def(), payload).await?)
            }
            topics::GENERIC => DomainEvent::Generic(codec.decode(GenericEvent::schema_def(), payload).await?),
            _ => return Err(DecodeError::NotADomainTopic(topic.to_owned())),
        })
    }
}

/// Why a record is not a [`DomainEvent`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The topic is none of [`topics::DOMAIN_TOPICS`].
    #[error("{0} is not a domain topic")]
    NotADomainTopic(String),
    /// The record has no value.
    #[error("record has no value")]
    NoValue,
    /// The value could not be decoded with the topic's schema (or the registry is unavailable:
    /// transient).
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Classify for DecodeError {
    /// Only the registry's unavailability is transient: everything else is the record's fault.
    fn transience(&self) -> Transience {
        match self {
            DecodeError::NotADomainTopic(_) | DecodeError::NoValue => Transience::Permanent,
            DecodeError::Codec(error) => error.transience(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_registry_is_transient() {
        let unavailable = DecodeError::Codec(CodecError::RegistryUnavailable("down".into()));
        assert_eq!(unavailable.transience(), Transience::Transient);
        for permanent in [
            DecodeError::NoValue,
            DecodeError::NotADomainTopic("switchboard.raw.twilio".into()),
            DecodeError::Codec(CodecError::Decode("junk".into())),
        ] {
            assert_eq!(permanent.transience(), Transience::Permanent, "{permanent}");
        }
    }
}
