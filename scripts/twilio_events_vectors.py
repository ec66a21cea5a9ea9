#!/usr/bin/env python3
"""Known-answer vectors for ingest's Twilio Event Streams verifier, computed with the official
`twilio` package (pip install twilio; 9.13.0 when they were made). Each vector is also checked with
`RequestValidator.validate`, the SDK's own acceptance test for a JSON body.

    python3 scripts/twilio_events_vectors.py

Prints the constants used by `ingest/verify/src/twilio_events.rs`'s tests.
"""
import hashlib

from twilio.request_validator import HMAC_SHA256, RequestValidator

TOKEN = "12345"
SHARED_SECRET = "shared-secret-2024"
BODY = (
    '[{"specversion":"1.0","type":"com.twilio.messaging.message.delivered",'
    '"source":"/2010-04-01/Accounts/AC123/Messages/SM123.json","id":"EZ00000000000000000000000000000001",'
    '"dataschema":"https://events-schemas.twilio.com/Messaging.MessageStatus/7",'
    '"datacontenttype":"application/json","time":"2025-01-14T18:06:00.000Z",'
    '"data":{"messageSid":"SM123","accountSid":"AC123","from":"+15551230000","to":"+14155550199",'
    '"messageStatus":"DELIVERED","timestamp":"2025-01-14T18:06:00.000Z",'
    '"eventName":"com.twilio.messaging.message.delivered","apiVersion":"2010-04-01"}}]'
)

body_hash = hashlib.sha256(BODY.encode()).hexdigest()
path = "/webhooks/twilio-events?bodySHA256=" + body_hash
plain = "https://hooks.example.com" + path
with_port = "https://hooks.example.com:443" + path
with_userinfo = "https://twilio:s3cret@hooks.example.com" + path

token = RequestValidator(TOKEN)
shared = RequestValidator(SHARED_SECRET)
vectors = {
    "SIG": (token, plain, None),
    "SIG_443": (token, with_port, None),
    "SIG_USERINFO": (token, with_userinfo, None),
    "SIG_SHARED": (shared, plain, HMAC_SHA256),
}
print(f'const BODY_SHA256: &str = "{body_hash}";')
for name, (validator, url, algorithm) in vectors.items():
    signature = validator.compute_signature(url, {}, algorithm)
    assert validator.validate(url, BODY, signature, algorithm), name
    print(f'const {name}: &str = "{signature}"; // {url.split("?")[0]}')
