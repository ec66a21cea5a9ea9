//! A second, independent client: Confluent's Python client (`confluent-kafka`) runs
//! `scripts/registry_client_check.py` against the registry, and reads and writes back a record
//! that the Rust codec wrote. Python and its packages come from `scripts/python-env`; without
//! python3 on the machine this test fails.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_schemas::codec::schema_id;
use switchboard_schemas::topics::{RAW_TWILIO, value_subject};
use switchboard_schemas::{Codec, RawWebhook};
use tokio::process::Command;

use crate::support::{Registry, sample_webhook};

/// Creating the venv downloads and installs the pinned packages once; later runs take ~0.1 s.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// The check itself takes about a second.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Runs `command` to completion, killing it when it takes longer than `timeout`.
async fn run_bounded(what: &str, mut command: Command, timeout: Duration) -> Output {
    command
        .kill_on_drop(true)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// The venv's interpreter, installing it first when needed.
async fn python() -> PathBuf {
    let script = repo_root().join("scripts/python-env");
    let mut setup = Command::new("bash");
    setup.arg(script);
    let output = run_bounded("scripts/python-env", setup, SETUP_TIMEOUT).await;
    let path = String::from_utf8(output.stdout).expect("a UTF-8 path");
    PathBuf::from(path.trim())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn confluent_kafka_python_agrees_with_the_registry_and_the_rust_codec() {
    let python = python().await;
    let registry = Registry::start().await;
    let codec = Codec::new(&registry.url).expect("codec");
    let def = RawWebhook::schema_def();
    let id = codec
        .register(RAW_TWILIO, def)
        .await
        .expect("register RawWebhook");
    let webhook = sample_webhook();
    let framed = codec.encode(RAW_TWILIO, def, &webhook).await.expect("encode");

    let mut check = Command::new(python);
    check
        .arg(repo_root().join("scripts/registry_client_check.py"))
        .arg(&registry.url)
        .arg(to_hex(&framed));
    let output = run_bounded("scripts/registry_client_check.py", check, CHECK_TIMEOUT).await;
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let answer: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the check prints one JSON line ({e}): {stdout:?}"));

    // Python read exactly what Rust wrote: bytes come back as hex, the timestamp as milliseconds.
    assert_eq!(answer["schema_id"], json!(id));
    let expected = json!({
        "event_id": webhook.event_id,
        "source": webhook.source,
        "phone_id": webhook.phone_id,
        "received_at": webhook.received_at,
        "url": webhook.url,
        "content_type": webhook.content_type,
        "headers": webhook.headers,
        "body": to_hex(&webhook.body),
        "signature_scheme": webhook.signature_scheme,
        "source_name": null,
    });
    assert_eq!(answer["decoded"], expected);

    // And Rust reads what Python wrote back, framed with the same id: Python registered the
    // schema text it got from the registry, which is the same schema, not a new version.
    let reencoded = from_hex(answer["reencoded_hex"].as_str().expect("reencoded_hex"));
    assert_eq!(schema_id(&reencoded), Some(id));
    let decoded: RawWebhook = codec
        .decode(def, &reencoded)
        .await
        .expect("decode what Python wrote");
    assert_eq!(decoded, webhook);
    assert_eq!(registry.versions(&value_subject(RAW_TWILIO)).await, json!([1]));

    // What the Python client registered is there for every other client to read.
    let subjects = registry.get("/subjects").await.ok().body;
    let subjects: Vec<&str> = subjects
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let api_subject = subjects
        .iter()
        .find(|s| s.ends_with("-api-value"))
        .expect("the API check's subject");
    assert_eq!(
        registry.versions(api_subject).await,
        json!([1, 2]),
        "the incompatible schema was refused"
    );
    let level = registry.get(&format!("/config/{api_subject}")).await.ok();
    assert_eq!(level.body, json!({ "compatibilityLevel": "NONE" }));
    assert!(
        subjects.iter().any(|s| s.ends_with("-serde-value")),
        "AvroSerializer auto-registered: {subjects:?}"
    );
    assert_eq!(
        registry.get("/config").await.ok().body,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
}
