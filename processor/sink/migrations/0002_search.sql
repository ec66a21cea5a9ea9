-- The indexes of the event search (GET /events): newest received_at first, ties by event id
-- descending, per events table, optionally for one phone. Every arm of the search then reads its
-- rows in index order and stops after the page (plus one), whatever the filters: with phone_id
-- the by-phone index, without it the by-time one; call_sid and event_id use the indexes 0001
-- made (call_events_by_call, the primary keys). GET /calls/{sid}/events uses call_events_by_call.
-- Portable SQL like 0001; runs once, in one transaction, on a database 0001 made.

CREATE INDEX call_events_by_phone ON call_events (phone_id, received_at DESC, event_id DESC);
CREATE INDEX call_events_by_received ON call_events (received_at DESC, event_id DESC);

CREATE INDEX message_events_by_phone ON message_events (phone_id, received_at DESC, event_id DESC);
CREATE INDEX message_events_by_received ON message_events (received_at DESC, event_id DESC);

-- Replaces 0001's payments_by_phone (phone_id, received_at DESC): a prefix of the new one.
DROP INDEX payments_by_phone;
CREATE INDEX payments_by_phone ON payments (phone_id, received_at DESC, event_id DESC);
CREATE INDEX payments_by_received ON payments (received_at DESC, event_id DESC);

CREATE INDEX booking_events_by_phone ON booking_events (phone_id, received_at DESC, event_id DESC);
CREATE INDEX booking_events_by_received ON booking_events (received_at DESC, event_id DESC);
