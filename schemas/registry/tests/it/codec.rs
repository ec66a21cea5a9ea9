//! The project's codec (`switchboard_schemas::Codec`, built on `schema_registry_converter`)
//! against the registry: registering, the Confluent frame, and reading an evolved schema.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Schema, from_value, to_value};
use serde_json::{Value, json};
use switchboard_schemas::codec::schema_id;
use switchboard_schemas::topics::{RAW_TWILIO, value_subject};
use switchboard_schemas::{Classify, Codec, RawWebhook};

use crate::support::{Registry, sample_webhook};

#[tokio::test]
async fn the_codec_registers_frames_and_round_trips_a_raw_webhook() {
    let registry = Registry::start().await;
    let codec = Codec::new(&registry.url).expect("codec");
    let def = RawWebhook::schema_def();
    let subject = value_subject(RAW_TWILIO);

    let id = codec
        .register(RAW_TWILIO, def)
        .await
        .expect("register RawWebhook");
    assert_eq!(codec.register(RAW_TWILIO, def).await.expect("register again"), id);
    let latest = registry
        .get(&format!("/subjects/{subject}/versions/latest"))
        .await
        .ok();
    assert_eq!((latest.id(), latest.body["version"].clone()), (id, json!(1)));
    let registered: Value = serde_json::from_str(latest.body["schema"].as_str().expect("schema")).unwrap();
    assert_eq!(
        registered,
        serde_json::from_str::<Value>(def.json).unwrap(),
        "the shipped .avsc"
    );

    let webhook = sample_webhook();
    let framed = codec.encode(RAW_TWILIO, def, &webhook).await.expect("encode");
    assert_eq!(framed[0], 0, "magic byte");
    assert_eq!(framed[1..5], id.to_be_bytes(), "big-endian schema id");
    assert_eq!(schema_id(&framed), Some(id));
    // The rest is the record in plain Avro binary (map entries in no fixed order, so compare values).
    let mut rest = &framed[5..];
    let datum = GenericDatumReader::builder(def.schema()).build().unwrap();
    let plain: RawWebhook = from_value(&datum.read_value(&mut rest).expect("plain Avro")).unwrap();
    assert_eq!(
        (plain, rest.len()),
        (webhook.clone(), 0),
        "one record, nothing after it"
    );

    let decoded: RawWebhook = codec.decode(def, &framed).await.expect("decode");
    assert_eq!(decoded, webhook);
    // A fresh codec has no cached schema: it must fetch the writer schema by id.
    let fresh = Codec::new(&registry.url).expect("codec");
    assert_eq!(
        fresh
            .decode::<RawWebhook>(def, &framed)
            .await
            .expect("decode with a cold cache"),
        webhook
    );
    assert_eq!(registry.versions(&subject).await, json!([1]));
}

#[tokio::test]
async fn an_old_reader_decodes_records_written_with_an_evolved_schema() {
    let registry = Registry::start().await;
    let codec = Codec::new(&registry.url).expect("codec");
    let def = RawWebhook::schema_def();
    let old_id = codec
        .register(RAW_TWILIO, def)
        .await
        .expect("register RawWebhook");

    // A later release adds an optional field. It goes first, so that reading these records with
    // the old schema as the writer's (instead of fetching the evolved one by id) cannot succeed.
    let mut evolved_json: Value = serde_json::from_str(def.json).unwrap();
    let fields = evolved_json["fields"].as_array_mut().unwrap();
    fields.insert(
        0,
        json!({ "name": "trace_id", "type": ["null", "string"], "default": null }),
    );
    let subject = value_subject(RAW_TWILIO);
    let new_id = registry.register(&subject, &evolved_json.to_string()).await;
    assert_ne!(new_id, old_id);
    assert_eq!(
        registry.versions(&subject).await,
        json!([1, 2]),
        "BACKWARD accepts an optional field"
    );

    let evolved = Schema::parse(&evolved_json).expect("evolved schema");
    let webhook = sample_webhook();
    let resolved = to_value(&webhook)
        .unwrap()
        .resolve(&evolved)
        .expect("the webhook under the new schema");
    let AvroValue::Record(mut fields) = resolved else {
        panic!("a record")
    };
    let trace_id = fields
        .iter_mut()
        .find(|(name, _)| name == "trace_id")
        .expect("trace_id");
    trace_id.1 = AvroValue::Union(1, Box::new(AvroValue::String("trace-7f3a".into())));
    let avro = GenericDatumWriter::builder(&evolved)
        .build()
        .unwrap()
        .write_value_to_vec(AvroValue::Record(fields));
    let mut framed = vec![0];
    framed.extend(new_id.to_be_bytes());
    framed.extend(avro.expect("write with the evolved schema"));

    let decoded: RawWebhook = codec
        .decode(def, &framed)
        .await
        .expect("the old reader reads the new record");
    assert_eq!(
        decoded, webhook,
        "everything but the new field, which the old reader does not know"
    );
}

/// A record's schema id was registered when the record was written, so a registry that does not
/// know it now (a follower behind its leader, a registry being restored) cannot make the record
/// poison: the lookup is transient, like a registry that is down. Only the bytes can be poison.
#[tokio::test]
async fn a_schema_id_the_registry_cannot_serve_is_transient_and_only_bad_bytes_are_poison() {
    let registry = Registry::start().await;
    let codec = Codec::new(&registry.url).expect("codec");
    let def = RawWebhook::schema_def();
    let err = codec
        .decode::<RawWebhook>(def, &[0, 0, 0, 0, 42, 2, b'x'])
        .await
        .expect_err("no schema 42");
    assert!(err.is_transient(), "the registry may learn it: {err}");
    assert!(err.to_string().contains("404"), "{err}");
    let err = codec
        .decode::<RawWebhook>(def, &[1, 0, 0, 0, 42, 2, b'x'])
        .await
        .expect_err("no magic byte");
    assert!(!err.is_transient(), "retrying cannot help: {err}");

    registry.stop().await;
    let err = codec
        .decode::<RawWebhook>(def, &[0, 0, 0, 0, 42, 2, b'x'])
        .await
        .expect_err("no registry");
    assert!(err.is_transient(), "a registry that is down may come back: {err}");
}

/// Credentials in the registry URL (Confluent Cloud's API key and secret) are sent as HTTP basic
/// auth, and not as part of the URL.
#[tokio::test]
async fn credentials_in_the_registry_url_are_sent_as_basic_auth() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buffer).await.unwrap();
            assert!(n > 0, "connection closed before the request head");
            request.extend_from_slice(&buffer[..n]);
        }
        let _ = socket
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        String::from_utf8_lossy(&request).into_owned()
    });
    let codec = Codec::new(&format!("http://api-key:s%2Fcret@{address}")).expect("codec");
    let frame = [0u8, 0, 0, 0, 7, 2];
    assert!(
        codec
            .decode::<RawWebhook>(RawWebhook::schema_def(), &frame)
            .await
            .is_err()
    );
    let request = server.await.unwrap();
    let authorization = request
        .lines()
        .find_map(|line| {
            line.strip_prefix("authorization: ")
                .or_else(|| line.strip_prefix("Authorization: "))
        })
        .unwrap_or_else(|| panic!("no Authorization header in {request:?}"));
    // base64("api-key:s/cret")
    assert_eq!(authorization.trim(), "Basic YXBpLWtleTpzL2NyZXQ=");
    assert!(request.starts_with("GET /schemas/ids/7"), "{request}");
}
