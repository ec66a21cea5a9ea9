//! The Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary) backed by a
//! schema registry, with subjects named by the TopicNameStrategy (`<topic>-value`).
//!
//! Writers register their schema on first use and cache the id per subject, so a registry outage
//! after start-up does not stop encoding. Readers fetch writer schemas by id (cached) and resolve
//! each record against the reader's own schema, which is what makes schema evolution work: a
//! reader with an added optional field reads records written before the field existed.

use std::fmt;
use std::time::Duration;

use apache_avro::{from_value, to_value};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::schema::SchemaDef;

/// How long one call to the schema registry may take.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached or answered with a server error; trying again may work.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The registry refused the schema or does not know the id; trying again will not help.
    #[error("schema registry rejected the request: {0}")]
    Registry(String),
    /// The value does not match the schema it is written with.
    #[error("value does not match schema {schema}: {reason}")]
    Encode { schema: &'static str, reason: String },
    /// The bytes are not a Confluent-framed Avro record of a compatible schema.
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

impl CodecError {
    /// Whether the same call may succeed later (registry down) rather than never (bad data).
    pub fn is_transient(&self) -> bool {
        matches!(self, CodecError::RegistryUnavailable(_))
    }

    fn from_registry(err: SRCError) -> Self {
        let message = match &err.cause {
            Some(cause) => format!("{}: {cause}", err.error),
            None => err.error.clone(),
        };
        if err.retriable {
            CodecError::RegistryUnavailable(message)
        } else {
            CodecError::Registry(message)
        }
    }
}

/// Encodes and decodes records in the Confluent wire format. Cheap to share behind an `Arc`.
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
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
            .map_err(CodecError::from_registry)?;
        Ok(registered.id)
    }

    /// Encodes `value`, written with `def`, for `topic`.
    pub async fn encode<T: Serialize>(
        &self,
        topic: &str,
        def: &SchemaDef,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        // Validate locally first so that a bad value is reported as such, not as a registry error.
        let avro = to_value(value)
            .and_then(|v| v.resolve(def.schema()))
            .map_err(|e| CodecError::Encode {
                schema: def.name,
                reason: e.to_string(),
            })?;
        self.encoder
            .encode_value(avro, &Self::strategy(topic, def))
            .await
            .map_err(CodecError::from_registry)
    }

    /// Decodes a Confluent-framed record and reads it as `T`, whose schema is `def`.
    pub async fn decode<T: DeserializeOwned>(&self, def: &SchemaDef, bytes: &[u8]) -> Result<T, CodecError> {
        let decoded = self.decoder.decode(Some(bytes)).await.map_err(|err| {
            if err.retriable {
                CodecError::from_registry(err)
            } else {
                CodecError::Decode(err.error)
            }
        })?;
        let value = decoded
            .value
            .resolve(def.schema())
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        from_value(&value).map_err(|e| CodecError::Decode(e.to_string()))
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
}
