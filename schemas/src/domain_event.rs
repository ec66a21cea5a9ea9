//! [`DomainEvent`]: one enum over the domain events, with each one's topic, key, schema, and the
//! decoding of a domain topic's record.

use crate::codec::{Codec, CodecError};
use crate::domain::{BillingEvent, BookingEvent, CallEvent, GenericEvent, MessageEvent};
use crate::schema::SchemaDef;
use crate::topics;

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

    /// Decodes a record of domain topic `topic` (its value, in the Confluent wire format).
    pub async fn decode(codec: &Codec, topic: &str, payload: &[u8]) -> Result<Self, DecodeError> {
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
            _ => return Err(DecodeError::NotADomainTopic),
        })
    }
}

/// Why a record is not a [`DomainEvent`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The topic is none of [`topics::DOMAIN_TOPICS`].
    #[error("not a domain topic")]
    NotADomainTopic,
    /// The value could not be decoded with the topic's schema (or the registry is unavailable:
    /// [`CodecError::is_transient`]).
    #[error(transparent)]
    Codec(#[from] CodecError),
}
