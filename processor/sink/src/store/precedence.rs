//! How message and booking events fold into their rows: pure, and (like
//! [`call_state`](switchboard_schemas::call_state)) independent of delivery order for the fields that decide.
//!
//! Messages: the event with the greatest key `(rank(status), received_at, event_id)` sets
//! `status`, `error_code`, `phone_id`, `last_event_id` and `status_at`. Ranks follow Twilio's
//! message lifecycle: accepted/scheduled 0 < queued 1 < sending/receiving 2 < sent 3 < the final
//! statuses delivered/undelivered/failed/canceled/received/partially_delivered 4 < read 5 (a
//! WhatsApp message is read after it is delivered); a status this release does not know ranks -1.
//! So a final status is never overwritten by a late earlier one (`sent` after `delivered` loses),
//! and among equal ranks the later received wins.
//!
//! Bookings: the event with the greatest key `(canceled, received_at, event_id)` sets
//! `event_type`, `canceled`, `cancel_reason`, `phone_id`, `last_event_id` and `status_at`: a
//! canceled invitee stays canceled even if its `invitee.created` arrives late (Calendly
//! reschedules create a new invitee URI, so nothing un-cancels one).
//!
//! Descriptive fields (`from`/`to`; invitee name, email, start and end) come from the winning
//! event when it carries them, else stay as they were, and a losing event only fills those still
//! empty. `updated_at` is the latest `received_at` of any event.

use switchboard_schemas::domain::{BookingEvent, MessageEvent};

use super::{BookingRow, MessageRow};

/// A message status's place in the lifecycle (see the module docs); -1 for an unknown status.
pub(crate) fn message_rank(status: &str) -> i32 {
    match status {
        "accepted" | "scheduled" => 0,
        "queued" => 1,
        "sending" | "receiving" => 2,
        "sent" => 3,
        "delivered" | "undelivered" | "failed" | "canceled" | "received" | "partially_delivered" => 4,
        "read" => 5,
        _ => -1,
    }
}

/// The row after folding `event` into `current` (`None`: first event of this message), or `None`
/// when nothing changes.
pub(crate) fn fold_message(current: Option<&MessageRow>, event: &MessageEvent) -> Option<MessageRow> {
    let Some(current) = current else {
        return Some(MessageRow {
            message_sid: event.message_sid.clone(),
            phone_id: event.phone_id.clone(),
            status: event.message_status.clone(),
            error_code: event.error_code.clone(),
            from: event.from.clone(),
            to: event.to.clone(),
            last_event_id: event.event_id.clone(),
            status_at: event.received_at,
            updated_at: event.received_at,
        });
    };
    let mut next = current.clone();
    let key = |status: &str, at: i64, id: &str| (message_rank(status), at, id.to_owned());
    let wins = key(&event.message_status, event.received_at, &event.event_id)
        > key(&current.status, current.status_at, &current.last_event_id);
    if wins {
        next.status.clone_from(&event.message_status);
        next.error_code.clone_from(&event.error_code);
        next.phone_id.clone_from(&event.phone_id);
        next.last_event_id.clone_from(&event.event_id);
        next.status_at = event.received_at;
    }
    fill(&mut next.from, &event.from, wins);
    fill(&mut next.to, &event.to, wins);
    next.updated_at = next.updated_at.max(event.received_at);
    (next != *current).then_some(next)
}

/// The row after folding `event` into `current` (`None`: first event of this invitee), or `None`
/// when nothing changes.
pub(crate) fn fold_booking(current: Option<&BookingRow>, event: &BookingEvent) -> Option<BookingRow> {
    let Some(current) = current else {
        return Some(BookingRow {
            invitee_uri: event.invitee_uri.clone(),
            phone_id: event.phone_id.clone(),
            event_type: event.event_type.clone(),
            invitee_name: event.invitee_name.clone(),
            invitee_email: event.invitee_email.clone(),
            event_start: event.event_start,
            event_end: event.event_end,
            canceled: event.canceled,
            cancel_reason: event.cancel_reason.clone(),
            last_event_id: event.event_id.clone(),
            status_at: event.received_at,
            updated_at: event.received_at,
        });
    };
    let mut next = current.clone();
    let wins = (event.canceled, event.received_at, event.event_id.as_str())
        > (
            current.canceled,
            current.status_at,
            current.last_event_id.as_str(),
        );
    if wins {
        next.event_type.clone_from(&event.event_type);
        next.canceled = event.canceled;
        next.cancel_reason.clone_from(&event.cancel_reason);
        next.phone_id.clone_from(&event.phone_id);
        next.last_event_id.clone_from(&event.event_id);
        next.status_at = event.received_at;
    }
    fill(&mut next.invitee_name, &event.invitee_name, wins);
    fill(&mut next.invitee_email, &event.invitee_email, wins);
    fill(&mut next.event_start, &event.event_start, wins);
    fill(&mut next.event_end, &event.event_end, wins);
    next.updated_at = next.updated_at.max(event.received_at);
    (next != *current).then_some(next)
}

/// A descriptive field: the winner's value when it has one; otherwise an empty field is filled.
fn fill<T: Clone>(field: &mut Option<T>, value: &Option<T>, wins: bool) {
    if value.is_some() && (wins || field.is_none()) {
        field.clone_from(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(event_id: &str, status: &str, received_at: i64) -> MessageEvent {
        MessageEvent {
            event_id: event_id.into(),
            phone_id: "+15550001".into(),
            message_sid: "SM1".into(),
            message_status: status.into(),
            error_code: (status == "undelivered").then(|| "30003".into()),
            from: Some("+15550001".into()),
            to: Some("+15559999".into()),
            account_sid: None,
            received_at,
        }
    }

    fn booking(event_id: &str, canceled: bool, received_at: i64) -> BookingEvent {
        BookingEvent {
            event_id: event_id.into(),
            phone_id: "+15550001".into(),
            event_type: if canceled {
                "invitee.canceled"
            } else {
                "invitee.created"
            }
            .into(),
            invitee_uri: "https://api.calendly.com/invitees/1".into(),
            invitee_name: (!canceled).then(|| "Ada".into()),
            invitee_email: None,
            event_start: Some(1_000),
            event_end: Some(2_000),
            cancel_reason: canceled.then(|| "conflict".into()),
            canceled,
            received_at,
        }
    }

    fn fold<E, R: Clone>(events: &[E], apply: fn(Option<&R>, &E) -> Option<R>) -> Option<R> {
        events
            .iter()
            .fold(None, |state, event| apply(state.as_ref(), event).or(state))
    }

    /// Every permutation of `events` (Heap's algorithm).
    fn permutations<T: Clone>(events: &[T]) -> Vec<Vec<T>> {
        fn heap<T: Clone>(k: usize, items: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
            if k <= 1 {
                out.push(items.clone());
                return;
            }
            for i in 0..k {
                heap(k - 1, items, out);
                let j = if k.is_multiple_of(2) { i } else { 0 };
                items.swap(j, k - 1);
            }
        }
        let mut out = Vec::new();
        heap(events.len(), &mut events.to_vec(), &mut out);
        out
    }

    #[test]
    fn a_final_message_status_is_never_overwritten_by_a_late_earlier_one() {
        let events = [
            message("e1", "queued", 10),
            message("e2", "sent", 20),
            message("e3", "delivered", 30),
        ];
        for order in permutations(&events) {
            let row = fold(&order, fold_message).unwrap();
            assert_eq!(row.status, "delivered", "{order:?}");
            assert_eq!(row.last_event_id, "e3");
            assert_eq!(row.updated_at, 30);
        }
        let delivered = fold(&events, fold_message).unwrap();
        assert_eq!(
            fold_message(Some(&delivered), &message("e4", "sending", 40))
                .unwrap()
                .status,
            "delivered"
        );
        assert_eq!(
            fold_message(Some(&delivered), &message("e3", "delivered", 30)),
            None
        );
        assert_eq!(
            fold_message(Some(&delivered), &message("e5", "read", 50))
                .unwrap()
                .status,
            "read"
        );
        let undelivered = fold_message(None, &message("e6", "undelivered", 5)).unwrap();
        assert_eq!(undelivered.error_code.as_deref(), Some("30003"));
        let late_sent = fold_message(Some(&undelivered), &message("e7", "sent", 6)).unwrap();
        assert_eq!(
            (late_sent.status.as_str(), late_sent.error_code.as_deref()),
            ("undelivered", Some("30003"))
        );
        assert_eq!(message_rank("something-new"), -1);
    }

    #[test]
    fn a_canceled_booking_stays_canceled_and_keeps_the_created_details() {
        let events = [booking("b1", false, 10), booking("b2", true, 5)];
        for order in permutations(&events) {
            let row = fold(&order, fold_booking).unwrap();
            assert!(row.canceled, "{order:?}");
            assert_eq!(row.event_type, "invitee.canceled");
            assert_eq!(row.cancel_reason.as_deref(), Some("conflict"));
            assert_eq!(row.invitee_name.as_deref(), Some("Ada"));
            assert_eq!((row.last_event_id.as_str(), row.updated_at), ("b2", 10));
        }
    }
}
