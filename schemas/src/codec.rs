//! The Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary) backed by a
//! schema registry, with subjects named by the TopicNameStrategy (`<topic>-value`).
//!
//! Writers register their schema on first use and cache the id per subject, so a registry outage
//! after start-up does not stop encoding. Readers fetch writer schemas by id (cached) and resolve
//! each record against the reader's own schema, which is what makes schema evolution work: a
//! reader with an added optional field reads records written before the field existed.
//!
//! # Transient or permanent: decided here, once
//!
//! Every service that talks to the registry goes through this codec, and its errors'
//! [`Classify::transience`] is what they all act on (the processor rewinds and retries, the sink re-reads
//! the record, restore retries; only permanent errors are poison).
//!
//! - **Reading a record**, the record is to blame only for its own bytes: no Confluent frame
//!   (bad magic byte, too short) or a body that does not match its writer schema
//!   ([`CodecError::Decode`], permanent). *Any* failure to fetch the writer schema is
//!   [`CodecError::RegistryUnavailable`] (transient), whatever the registry answered: the id in a
//!   record we read was registered when the record was written, so a 404 means a follower that
//!   has not replicated it yet (or a registry being restored), 429 is rate limiting (Confluent
//!   Cloud), 401/403 a credential an operator must fix, 5xx and transport errors an outage. None of
//!   these make the record bad, and none may turn it into poison.
//! - **Registering and encoding** (a subject's id is asked for once, then cached), the registry's
//!   verdict on *our schema* is permanent ([`CodecError::Registry`]: 400, 409 incompatible, 422
//!   invalid), and so is a local failure before anything is sent; every other failure to get an
//!   answer (transport, timeouts, 401, 403, 404, 408, 429, 5xx) is transient.
//!
//! `schema_registry_converter` caches the errors it considers permanent (any HTTP status but 502
//! and 503) per schema id and subject, and would replay a cached 500 forever. This codec never
//! lets an error stay in the converter's caches: it clears them whenever a call fails, so the next
//! attempt asks the registry again. Successful lookups stay cached for the life of the process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use apache_avro::{Schema, from_value};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::schema::SchemaDef;
use crate::transience::{Classify, Transience};

/// The Confluent frame before the Avro datum: magic byte 0 and the 4-byte big-endian schema id.
const FRAME_HEADER: usize = 5;

/// How long one call to the schema registry may take.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not give the answer now (see the module docs for what counts); the same
    /// call may succeed later, so retry it: never skip or dead-letter the record.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The registry refused our schema (400, 409 incompatible, 422 invalid) or its URL is invalid;
    /// trying again will not help.
    #[error("schema registry rejected the request: {0}")]
    Registry(String),
    /// The value does not match the schema it is written with.
    #[error("value does not match schema {schema}: {reason}")]
    Encode { schema: &'static str, reason: String },
    /// The bytes are not a Confluent-framed Avro record, or do not match their writer schema (or
    /// the writer schema cannot be read as the reader's): poison.
    #[error("undecodable record: {0}")]
    Decode(String),
}

/// Basic-auth credentials (Confluent Cloud: API key and secret) written into the registry URL
/// (`https://key:secret@host`) are taken out of it: the URL without them, and the decoded user
/// and password.
type Credentials = Option<(String, Option<String>)>;

fn split_credentials(registry_url: &str) -> Result<(String, Credentials), CodecError> {
    let mut url = url::Url::parse(registry_url.trim())
        .map_err(|e| CodecError::Registry(format!("invalid schema registry URL: {e}")))?;
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials =
        (!url.username().is_empty()).then(|| (decode(url.username()), url.password().map(decode)));
    // Neither can fail on an http(s) URL.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url.as_str().trim_end_matches('/').to_owned(), credentials))
}

impl Classify for CodecError {
    /// Transient when the registry is down, permanent for bad data or a refused schema.
    fn transience(&self) -> Transience {
        match self {
            CodecError::RegistryUnavailable(_) => Transience::Transient,
            CodecError::Registry(_) | CodecError::Encode { .. } | CodecError::Decode(_) => {
                Transience::Permanent
            }
        }
    }
}

impl CodecError {
    /// A failed registration or encoding: permanent only when the registry judged the schema
    /// (or nothing was sent: a local error such as a schema the converter cannot parse).
    fn from_registry(err: SRCError) -> Self {
        let message = describe(&err);
        match http_status(&err) {
            Some(400 | 409 | 422) => CodecError::Registry(message),
            Some(_) => CodecError::RegistryUnavailable(message),
            None if err.retriable => CodecError::RegistryUnavailable(message),
            None => CodecError::Registry(message),
        }
    }

    /// A failed lookup of the writer schema of a record being read: always transient (module docs).
    fn from_lookup(id: u32, err: &SRCError) -> Self {
        CodecError::RegistryUnavailable(format!("fetching writer schema {id}: {}", describe(err)))
    }
}

/// The converter's error with its cause, without its retriable/cached flags (which this module
/// overrides). Never holds credentials: a transport error names the URL, from which
/// [`Codec::new`] moved them to basic auth.
fn describe(err: &SRCError) -> String {
    match &err.cause {
        Some(cause) => format!("{}: {cause}", err.error),
        None => err.error.clone(),
    }
}

/// The HTTP status the registry answered with, when the failure was an error status. The converter
/// only says it in its message (`HTTP request to schema registry failed with status 404 Not
/// Found`); the unit tests below pin that wording against a real HTTP exchange.
fn http_status(err: &SRCError) -> Option<u16> {
    let (_, rest) = err.error.split_once("failed with status ")?;
    rest.get(..3)?.parse().ok()
}

/// Encodes and decodes records in the Confluent wire format. Cheap to share behind an `Arc`;
/// every clone of the `Arc` shares one schema cache.
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    /// Schema ids registered by this codec: topic -> schema name -> the subject's id (looked up
    /// per record without allocating).
    ids: RwLock<HashMap<String, HashMap<&'static str, u32>>>,
    /// Per writer schema id and reader schema: whether the writer schema is the reader's own,
    /// so its records are read in one pass ([`SchemaDef::read_datum`]) rather than resolved.
    own: RwLock<HashMap<(u32, &'static str), bool>>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The registry settings may hold credentials: never print them.
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec for the registry at `registry_url` (e.g. `http://127.0.0.1:8081`).
    pub fn new(registry_url: &str) -> Result<Self, CodecError> {
        let (url, credentials) = split_credentials(registry_url)?;
        let settings = || {
            let mut builder = SrSettings::new_builder(url.clone());
            builder.set_timeout(REGISTRY_TIMEOUT).no_proxy();
            if let Some((username, password)) = &credentials {
                builder.set_basic_authorization(username, password.as_deref());
            }
            builder.build().map_err(CodecError::from_registry)
        };
        Ok(Self {
            encoder: AvroEncoder::new(settings()?),
            decoder: AvroDecoder::new(settings()?),
            ids: RwLock::default(),
            own: RwLock::default(),
        })
    }

    fn strategy(topic: &str, def: &SchemaDef) -> SubjectNameStrategy {
        SubjectNameStrategy::TopicNameStrategyWithSchema(
            topic.to_owned(),
            false,
            SuppliedSchema::new(Some(def.name.to_owned()), SchemaType::Avro, def.json.to_owned()),
        )
    }

    /// Registers `def` under `<topic>-value` (a no-op when it already is) and returns its id.
    /// Services call this at start-up so that readiness means "schemas are registered".
    pub async fn register(&self, topic: &str, def: &SchemaDef) -> Result<u32, CodecError> {
        let strategy = Self::strategy(topic, def);
        let subject = strategy.get_subject().map_err(CodecError::from_registry)?;
        let registered = self
            .encoder
            .get_schema_and_id(&subject, strategy)
            .await
            .map_err(|e| self.registry_failed(e))?;
        let mut ids = self.ids.write().unwrap_or_else(PoisonError::into_inner);
        ids.entry(topic.to_owned())
            .or_default()
            .insert(def.name, registered.id);
        Ok(registered.id)
    }

    /// Encodes `value`, written with `def`, for `topic`: the Confluent frame (magic byte 0, the
    /// schema id, the Avro datum), serialized in one pass. The value is written (and so checked
    /// against `def`) before the registry is asked, so a bad value is reported as such, never as a
    /// registry error; the id is asked for once per subject, then cached.
    pub async fn encode<T: Serialize>(
        &self,
        topic: &str,
        def: &'static SchemaDef,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let mut framed = vec![0; FRAME_HEADER];
        def.write_datum(value, &mut framed)
            .map_err(|e| CodecError::Encode {
                schema: def.name,
                reason: e.to_string(),
            })?;
        let id = match self.cached_id(topic, def) {
            Some(id) => id,
            None => self.register(topic, def).await?,
        };
        framed[1..FRAME_HEADER].copy_from_slice(&id.to_be_bytes());
        Ok(framed)
    }

    fn cached_id(&self, topic: &str, def: &SchemaDef) -> Option<u32> {
        let ids = self.ids.read().unwrap_or_else(PoisonError::into_inner);
        ids.get(topic)?.get(def.name).copied()
    }

    /// Classifies a failed registration and makes sure the converter does not keep it.
    fn registry_failed(&self, err: SRCError) -> CodecError {
        self.encoder.remove_errors_from_cache();
        CodecError::from_registry(err)
    }

    /// Decodes a Confluent-framed record and reads it as `T`, whose schema is `def`.
    ///
    /// A record written with `def` itself (the common case: the same build wrote it) is read in
    /// one pass, Avro binary straight to `T`. A record written with another schema (an older or a
    /// newer version) is decoded with its writer schema and resolved against `def`, which is
    /// what makes schema evolution work. Both give the same `T` for the same datum.
    ///
    /// Errors: [`CodecError::Decode`] when the bytes themselves are bad (poison),
    /// [`CodecError::RegistryUnavailable`] when the writer schema cannot be fetched now, whatever
    /// the registry answered (retry the same record later; nothing is cached).
    pub async fn decode<T: DeserializeOwned>(
        &self,
        def: &'static SchemaDef,
        bytes: &[u8],
    ) -> Result<T, CodecError> {
        let id = schema_id(bytes).ok_or_else(|| CodecError::Decode(not_a_frame(bytes)))?;
        // The lookup first, on its own, so that a registry failure can never be mistaken for a bad
        // record (the converter's `decode` mixes both into one non-retriable error).
        let writer = match self.decoder.get_schema(id).await {
            Ok(writer) => writer,
            Err(err) => {
                self.decoder.remove_errors_from_cache();
                return Err(CodecError::from_lookup(id, &err));
            }
        };
        // The writer schema is cached now: what fails from here on is the body.
        if self.is_own(id, &writer.parsed, def) {
            return def
                .read_datum(&bytes[FRAME_HEADER..])
                .map_err(|e| CodecError::Decode(format!("with writer schema {id}: {e}")));
        }
        let decoded = self
            .decoder
            .decode(Some(bytes))
            .await
            .map_err(|e| CodecError::Decode(format!("with writer schema {id}: {}", describe(&e))))?;
        let value = decoded
            .value
            .resolve(def.schema())
            .map_err(|e| CodecError::Decode(format!("writer schema {id} as {}: {e}", def.name)))?;
        from_value(&value).map_err(|e| CodecError::Decode(e.to_string()))
    }

    /// Whether `writer`, the schema of id `id`, is `def` itself (Avro's schema equality: the same
    /// types, names, fields and order; docs and defaults aside, which reading does not use when
    /// every field is present). Compared once per id and reader schema.
    fn is_own(&self, id: u32, writer: &Schema, def: &'static SchemaDef) -> bool {
        let key = (id, def.name);
        if let Some(own) = self.own.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return *own;
        }
        let own = writer == def.schema();
        self.own
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, own);
        own
    }
}

fn not_a_frame(bytes: &[u8]) -> String {
    match bytes.first() {
        None => "empty record".to_owned(),
        Some(0) => format!("{} bytes: too short for a Confluent frame", bytes.len()),
        Some(magic) => format!("magic byte {magic}, not 0: not a Confluent frame"),
    }
}

/// The schema id of a Confluent-framed record, or `None` when `bytes` is not one.
pub fn schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_id_reads_the_confluent_frame() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 42]), Some(258));
        assert_eq!(schema_id(&[1, 0, 0, 0, 1]), None);
        assert_eq!(schema_id(&[0, 0, 0]), None);
    }

    #[test]
    fn only_registry_outages_are_transient() {
        assert!(CodecError::RegistryUnavailable("down".into()).is_transient());
        assert!(!CodecError::Registry("409".into()).is_transient());
        assert!(!CodecError::Decode("junk".into()).is_transient());
    }

    #[test]
    fn registry_credentials_move_from_the_url_to_basic_auth() {
        assert_eq!(
            split_credentials("http://127.0.0.1:8081/").unwrap(),
            ("http://127.0.0.1:8081".into(), None)
        );
        assert_eq!(
            split_credentials("https://KEY:s%2Fcret@psrc-1.confluent.cloud").unwrap(),
            (
                "https://psrc-1.confluent.cloud".into(),
                Some(("KEY".into(), Some("s/cret".into())))
            )
        );
        assert!(split_credentials("not a url").is_err());
    }

    /// A registry that answers each request with the next scripted response (`connection:
    /// close`, so that each is its own exchange) and records the request lines.
    struct Scripted {
        url: String,
        requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Scripted {
        async fn start(responses: Vec<(u16, String)>) -> Self {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen = std::sync::Arc::clone(&requests);
            tokio::spawn(async move {
                for (status, body) in responses {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let head_end = loop {
                        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let n = socket.read(&mut buffer).await.unwrap();
                        assert!(n > 0, "connection closed before the request head");
                        request.extend_from_slice(&buffer[..n]);
                    };
                    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while request.len() < head_end + length {
                        let n = socket.read(&mut buffer).await.unwrap();
                        request.extend_from_slice(&buffer[..n]);
                    }
                    seen.lock()
                        .unwrap()
                        .push(head.lines().next().unwrap_or_default().to_owned());
                    let response = format!(
                        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(response.as_bytes()).await.unwrap();
                }
            });
            Self { url, requests }
        }

        fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    fn error(status: u16, code: u32) -> (u16, String) {
        (status, format!(r#"{{"error_code":{code},"message":"scripted"}}"#))
    }

    fn webhook() -> crate::RawWebhook {
        crate::RawWebhook {
            event_id: "CA0123".into(),
            source: "twilio".into(),
            phone_id: "+15550001111".into(),
            received_at: 1_764_000_000_123,
            url: "https://hooks.example.com/webhooks/twilio".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            headers: Default::default(),
            body: b"CallSid=CA01&CallStatus=completed".to_vec(),
            signature_scheme: "twilio-hmac-sha1".into(),
            source_name: None,
        }
    }

    /// `webhook()` in the Confluent frame with schema id 7.
    fn framed() -> Vec<u8> {
        let def = crate::RawWebhook::schema_def();
        let value = apache_avro::to_value(webhook())
            .unwrap()
            .resolve(def.schema())
            .unwrap();
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(def.schema())
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap();
        [&[0, 0, 0, 0, 7][..], &body].concat()
    }

    fn schema_7() -> (u16, String) {
        let json = serde_json::json!({ "schema": crate::RawWebhook::schema_def().json });
        (200, json.to_string())
    }

    /// The flap of issue 12: a follower that has not replicated the schema (404), an outage (500,
    /// 503), rate limiting (429), a credential being rotated (401). Each is transient, none is
    /// cached (every attempt asks again), and the record decodes once the registry answers.
    #[tokio::test]
    async fn a_writer_schema_the_registry_cannot_serve_now_is_transient_and_never_cached() {
        let registry = Scripted::start(vec![
            error(500, 50001),
            error(404, 40403),
            error(429, 42901),
            error(503, 50003),
            error(401, 40101),
            schema_7(),
        ])
        .await;
        let codec = Codec::new(&registry.url).unwrap();
        let def = crate::RawWebhook::schema_def();
        for status in [500, 404, 429, 503, 401] {
            let err = codec
                .decode::<crate::RawWebhook>(def, &framed())
                .await
                .expect_err("the registry does not answer");
            assert!(err.is_transient(), "{status}: {err}");
            assert!(err.to_string().contains(&status.to_string()), "{err}");
        }
        assert_eq!(
            codec.decode::<crate::RawWebhook>(def, &framed()).await.unwrap(),
            webhook()
        );
        // A schema that was served stays cached: no further request (the script is exhausted).
        assert_eq!(
            codec.decode::<crate::RawWebhook>(def, &framed()).await.unwrap(),
            webhook()
        );
        assert_eq!(
            registry.requests(),
            vec!["GET /schemas/ids/7?deleted=true HTTP/1.1"; 6]
        );
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let codec = Codec::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = codec
            .decode::<crate::RawWebhook>(crate::RawWebhook::schema_def(), &framed())
            .await
            .expect_err("nothing listens");
        assert!(err.is_transient(), "{err}");
    }

    /// Bad bytes are the record's fault, whatever the registry does: poison.
    #[tokio::test]
    async fn bytes_that_are_not_a_record_of_their_schema_are_poison() {
        let registry = Scripted::start(vec![schema_7()]).await;
        let codec = Codec::new(&registry.url).unwrap();
        let def = crate::RawWebhook::schema_def();
        let mut truncated = framed();
        truncated.truncate(12);
        for bytes in [vec![], vec![1, 0, 0, 0, 7, 2], vec![0, 0, 0], truncated] {
            let err = codec
                .decode::<crate::RawWebhook>(def, &bytes)
                .await
                .expect_err("poison");
            assert!(matches!(err, CodecError::Decode(_)), "{bytes:?}: {err}");
        }
        // Only the truncated record, which has a frame, made the codec ask for its schema.
        assert_eq!(registry.requests().len(), 1);
    }

    /// Registering: the registry's verdict on the schema is permanent, failing to get one is not,
    /// and neither is cached.
    #[tokio::test]
    async fn registering_is_permanent_only_when_the_registry_judged_the_schema() {
        let registry = Scripted::start(vec![
            error(500, 50001),
            error(429, 42901),
            error(404, 40401),
            error(409, 409),
            error(422, 42201),
            (200, r#"{"id":7}"#.to_owned()),
        ])
        .await;
        let codec = Codec::new(&registry.url).unwrap();
        let def = crate::RawWebhook::schema_def();
        for (status, transient) in [(500, true), (429, true), (404, true), (409, false), (422, false)] {
            let err = codec
                .register("switchboard.raw.twilio", def)
                .await
                .expect_err("no id");
            assert_eq!(err.is_transient(), transient, "{status}: {err}");
        }
        assert_eq!(codec.register("switchboard.raw.twilio", def).await.unwrap(), 7);
        // Encoding uses the registered id without asking again.
        let bytes = codec
            .encode("switchboard.raw.twilio", def, &webhook())
            .await
            .unwrap();
        assert_eq!(bytes, framed());
        assert_eq!(registry.requests().len(), 6);
    }
}
