#!/usr/bin/env python3
"""Checks a schema registry with Confluent's own Python client, as an independent second client.

    registry_client_check.py REGISTRY_URL [RECORD_HEX]

Runs the registry API through `confluent_kafka.schema_registry` (register, get by id, latest
version, lookup, compatibility level, compatibility test, an incompatible register that must be
refused with HTTP 409 / error_code 409) and a serialize/deserialize round trip with
`AvroSerializer` (auto-registering) and `AvroDeserializer`, on subjects of its own.

With RECORD_HEX, a Confluent-framed Avro record (magic byte, schema id, Avro binary) written by
another client on topic `switchboard.raw.twilio`: decodes it with `AvroDeserializer`, serializes
the result again with `AvroSerializer` under the same topic, and prints one JSON line to stdout:

    {"schema_id": ID, "decoded": {...}, "reencoded_hex": "..."}

In `decoded`, `bytes` values are written as lower-case hex and timestamps as milliseconds since
the Unix epoch, so the caller can compare them with what it encoded.

Progress goes to stderr. Exits 1 with a message naming the mismatch when any check fails.
Run it with the interpreter that `scripts/python-env` prints.
"""

import datetime
import json
import sys
import uuid

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

RUST_TOPIC = "switchboard.raw.twilio"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class CheckFailed(Exception):
    pass


def expect(condition, what):
    if not condition:
        raise CheckFailed(what)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}")


def expect_registry_error(call, statuses, what):
    """Expects `call` to raise SchemaRegistryError with (HTTP status, error_code) `statuses`."""
    try:
        call()
    except SchemaRegistryError as err:
        expect_eq((err.http_status_code, err.error_code), statuses, what)
    else:
        raise CheckFailed(f"{what}: expected a registry error {statuses}, the call succeeded")


def log(message):
    print(f"registry_client_check: {message}", file=sys.stderr)


def record_schema(name, fields):
    return json.dumps({"type": "record", "name": name, "namespace": "switchboard.check", "fields": fields})


def check_registry_api(url, run):
    client = SchemaRegistryClient({"url": url})
    subject = f"check-{run}-api-value"
    v1 = Schema(record_schema("Api", [{"name": "a", "type": "string"}]), "AVRO")
    v2 = Schema(
        record_schema(
            "Api",
            [{"name": "a", "type": "string"}, {"name": "b", "type": ["null", "string"], "default": None}],
        ),
        "AVRO",
    )
    incompatible = Schema(
        record_schema("Api", [{"name": "a", "type": "string"}, {"name": "c", "type": "long"}]), "AVRO"
    )

    id1 = client.register_schema(subject, v1)
    expect(isinstance(id1, int) and id1 > 0, f"register returned id {id1!r}")
    expect_eq(client.register_schema(subject, v1), id1, "registering the same schema again")

    # Reads go through a second client so that its caches cannot answer in place of the registry.
    reader = SchemaRegistryClient({"url": url})
    fetched = reader.get_schema(id1)
    expect_eq(json.loads(fetched.schema_str), json.loads(v1.schema_str), f"schema {id1} by id")
    expect_eq(fetched.schema_type, "AVRO", f"type of schema {id1}")

    expect_eq(client.get_compatibility(), "BACKWARD", "default global compatibility")
    expect(
        client.test_compatibility(subject, v2), "an added optional field must be BACKWARD compatible"
    )
    expect(
        not client.test_compatibility(subject, incompatible, verbose=True),
        "an added required field must not be BACKWARD compatible",
    )

    try:
        client.register_schema(subject, incompatible)
    except SchemaRegistryError as err:
        expect_eq(err.http_status_code, 409, "HTTP status of an incompatible register")
        expect_eq(err.error_code, 409, "error_code of an incompatible register")
        expect("incompatible" in (err.error_message or "").lower(), f"message {err.error_message!r}")
    else:
        raise CheckFailed("an incompatible schema was registered")

    id2 = client.register_schema(subject, v2)
    expect(id2 != id1, "a changed schema must get a new id")

    latest = reader.get_latest_version(subject)
    expect_eq((latest.version, latest.schema_id), (2, id2), "latest version and id")
    expect_eq(json.loads(latest.schema.schema_str), json.loads(v2.schema_str), "latest schema")
    expect_eq(reader.get_versions(subject), [1, 2], "versions")
    expect_eq(reader.get_version(subject, 1).schema_id, id1, "id of version 1")
    expect(subject in reader.get_subjects(), "subject listed")

    found = reader.lookup_schema(subject, v1)
    expect_eq((found.version, found.schema_id), (1, id1), "lookup of version 1")
    expect_registry_error(
        lambda: reader.lookup_schema(subject, incompatible), (404, 40403), "lookup of an unknown schema"
    )

    expect_registry_error(lambda: reader.get_schema(999_999), (404, 40403), "an unknown schema id")
    expect_registry_error(
        lambda: reader.get_compatibility(subject), (404, 40408), "a subject without its own level"
    )
    expect(
        not client.test_compatibility_all_versions(subject, incompatible),
        "an added required field must not be compatible with the subject's versions",
    )

    client.set_compatibility(subject, "NONE")
    expect_eq(client.get_compatibility(subject), "NONE", "subject compatibility after set")
    expect_eq(client.get_compatibility(), "BACKWARD", "global compatibility after a subject set")
    expect(client.test_compatibility(subject, incompatible), "anything is compatible under NONE")
    client.set_compatibility(level="FULL")
    expect_eq(client.get_compatibility(), "FULL", "global compatibility after set")
    client.set_compatibility(level="BACKWARD")
    log(f"registry API checks passed on {subject} (ids {id1}, {id2})")


def check_serde_round_trip(client, run):
    topic = f"check-{run}-serde"
    schema = record_schema(
        "Reading",
        [
            {"name": "sensor", "type": "string"},
            {"name": "value", "type": "double"},
            {"name": "raw", "type": "bytes"},
            {"name": "tags", "type": {"type": "map", "values": "string"}},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    )
    record = {"sensor": "s-1", "value": 21.5, "raw": b"\x00\xff\x10", "tags": {"site": "a"}, "note": None}
    ctx = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(client, schema, conf={"auto.register.schemas": True})
    framed = serializer(record, ctx)

    registered = client.get_latest_version(f"{topic}-value")
    expect_eq(framed[0], 0, "magic byte of a serialized record")
    expect_eq(int.from_bytes(framed[1:5], "big"), registered.schema_id, "schema id in the frame")
    decoded = AvroDeserializer(client)(framed, ctx)
    expect_eq(decoded, record, "AvroDeserializer of what AvroSerializer wrote")
    log(f"AvroSerializer/AvroDeserializer round trip passed on {topic} (id {registered.schema_id})")


def to_json(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_json(item) for item in value]
    return value


def cross_check(client, record_hex):
    framed = bytes.fromhex(record_hex)
    expect(len(framed) > 5 and framed[0] == 0, "the given record is not Confluent-framed")
    schema_id = int.from_bytes(framed[1:5], "big")
    ctx = SerializationContext(RUST_TOPIC, MessageField.VALUE)
    decoded = AvroDeserializer(client)(framed, ctx)
    expect(isinstance(decoded, dict), f"decoded a {type(decoded).__name__}, not a record")

    # Write it back with the writer's schema as the registry holds it: the same schema, so the same id.
    writer_schema = client.get_schema(schema_id).schema_str
    reencoded = AvroSerializer(client, writer_schema, conf={"auto.register.schemas": True})(decoded, ctx)
    expect_eq(int.from_bytes(reencoded[1:5], "big"), schema_id, "schema id of the re-encoded record")
    log(f"decoded and re-encoded the given record (schema id {schema_id})")
    return {"schema_id": schema_id, "decoded": to_json(decoded), "reencoded_hex": reencoded.hex()}


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    client = SchemaRegistryClient({"url": argv[1]})
    run = uuid.uuid4().hex[:8]
    try:
        check_registry_api(argv[1], run)
        check_serde_round_trip(client, run)
        if len(argv) == 3:
            print(json.dumps(cross_check(client, argv[2]), sort_keys=True))
    except CheckFailed as err:
        print(f"registry_client_check: FAILED: {err}", file=sys.stderr)
        return 1
    except SchemaRegistryError as err:
        print(f"registry_client_check: FAILED: unexpected registry error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
