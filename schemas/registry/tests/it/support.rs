//! Starting and stopping a registry for one test, plain JSON requests to it, and the schemas and
//! records the tests use.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_registry::{Store, run};
use switchboard_schemas::RawWebhook;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A registry serving on `127.0.0.1:<free port>` in this test's runtime.
pub(crate) struct Registry {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub(crate) url: String,
    http: reqwest::Client,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
    _owned_dir: Option<TempDir>,
}

impl Registry {
    /// A registry with a fresh, empty data directory that is removed with it.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().to_owned();
        Self::serve(&path, Some(dir)).await
    }

    /// A registry keeping its state in `dir`, as `switchboard-registry --data dir` would.
    pub(crate) async fn start_in(dir: &Path) -> Self {
        Self::serve(dir, None).await
    }

    async fn serve(dir: &Path, owned_dir: Option<TempDir>) -> Self {
        let store = Store::open(dir).await.expect("open the registry's state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(run(store, listener, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Self {
            url,
            http,
            shutdown,
            server,
            _owned_dir: owned_dir,
        }
    }

    /// Shuts the server down gracefully and waits until it has stopped serving.
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(5), self.server)
            .await
            .expect("the registry stops within 5 s")
            .expect("the server task does not panic")
            .expect("the server ends without an error");
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        Answer::read(self.http.get(format!("{}{path}", self.url)).send().await).await
    }

    /// A request without a body.
    pub(crate) async fn send(&self, method: reqwest::Method, path: &str) -> Answer {
        Answer::read(
            self.http
                .request(method, format!("{}{path}", self.url))
                .send()
                .await,
        )
        .await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Answer {
        Answer::read(
            self.http
                .post(format!("{}{path}", self.url))
                .json(body)
                .send()
                .await,
        )
        .await
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> Answer {
        Answer::read(
            self.http
                .put(format!("{}{path}", self.url))
                .json(body)
                .send()
                .await,
        )
        .await
    }

    /// Registers `schema` under `subject` and returns its id; the registry must accept it.
    pub(crate) async fn register(&self, subject: &str, schema: &str) -> u32 {
        self.post(&format!("/subjects/{subject}/versions"), &schema_body(schema))
            .await
            .ok()
            .id()
    }

    /// Sets the compatibility level of `subject`, or the global one for `None`.
    pub(crate) async fn set_level(&self, subject: Option<&str>, level: &str) {
        let path = subject.map_or_else(|| "/config".to_owned(), |s| format!("/config/{s}"));
        let answer = self.put(&path, &json!({ "compatibility": level })).await.ok();
        assert_eq!(answer.body, json!({ "compatibility": level }));
    }

    /// The versions of `subject`, e.g. `[1, 2]`.
    pub(crate) async fn versions(&self, subject: &str) -> Value {
        self.get(&format!("/subjects/{subject}/versions")).await.ok().body
    }
}

/// One HTTP answer. Every answer of the registry, errors included, must be JSON.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Answer {
    async fn read(response: reqwest::Result<reqwest::Response>) -> Self {
        let response = response.expect("the registry answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a readable body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("HTTP {status} body is not JSON ({e}): {text:?}"));
        Self { status, body }
    }

    /// Asserts a 200 answer and returns it.
    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.status, 200, "expected success, got {}", self.body);
        self
    }

    /// Asserts an error answer shaped as Confluent's: the status, `error_code`, and a message.
    pub(crate) fn error(self, status: u16, error_code: u32) -> String {
        assert_eq!(
            (self.status, &self.body["error_code"]),
            (status, &json!(error_code)),
            "{}",
            self.body
        );
        let message = self.body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {}", self.body));
        assert!(!message.is_empty(), "empty message: {}", self.body);
        message.to_owned()
    }

    /// The `id` of a register, lookup or version answer.
    pub(crate) fn id(&self) -> u32 {
        let id = self.body["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no id: {}", self.body));
        u32::try_from(id).expect("an id fits in 32 bits")
    }
}

/// The body of a register, lookup or compatibility request.
pub(crate) fn schema_body(schema: &str) -> Value {
    json!({ "schema": schema })
}

/// The text of a record schema `switchboard.test.<name>` with `fields` (a JSON array).
pub(crate) fn record(name: &str, fields: Value) -> String {
    json!({ "type": "record", "name": name, "namespace": "switchboard.test", "fields": fields }).to_string()
}

/// A record with one required string field `a`.
pub(crate) fn v1() -> String {
    record("Item", json!([{ "name": "a", "type": "string" }]))
}

/// [`v1`] plus an optional field `b`: compatible in every direction.
pub(crate) fn v2_optional_field() -> String {
    record(
        "Item",
        json!([{ "name": "a", "type": "string" }, { "name": "b", "type": ["null", "string"], "default": null }]),
    )
}

/// [`v1`] plus a required field `b` without a default: cannot read v1 data (not BACKWARD).
pub(crate) fn v2_required_field() -> String {
    record(
        "Item",
        json!([{ "name": "a", "type": "string" }, { "name": "b", "type": "string" }]),
    )
}

/// [`v1`] without `a`, plus an optional `b`: v1 cannot read its data (not FORWARD).
pub(crate) fn v2_dropped_field() -> String {
    record(
        "Item",
        json!([{ "name": "b", "type": ["null", "string"], "default": null }]),
    )
}

/// A webhook as ingest would publish it, with bytes that are not UTF-8 and several headers.
pub(crate) fn sample_webhook() -> RawWebhook {
    RawWebhook {
        event_id: "CA0123456789abcdef".into(),
        source: "twilio".into(),
        phone_id: "+15550001111".into(),
        received_at: 1_764_000_000_123,
        url: "https://hooks.example.com/webhooks/twilio/calls?attempt=1".into(),
        content_type: "application/x-www-form-urlencoded".into(),
        headers: BTreeMap::from([
            ("content-type".into(), "application/x-www-form-urlencoded".into()),
            ("x-twilio-signature".into(), "0k6u9sZpM2J3rWk1cQ5eWwzZ0iY=".into()),
        ]),
        body: b"CallSid=CA01&CallStatus=completed&Caller=%2B1555\xff\x00".to_vec(),
        signature_scheme: "twilio-hmac-sha1".into(),
        source_name: None,
    }
}
