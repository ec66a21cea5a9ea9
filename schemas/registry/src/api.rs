//! The HTTP routes, named and shaped as in the Confluent Schema Registry API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::compat::Level;
use crate::error::ApiError;
use crate::store::{Registered, Store, VersionSpec};

/// The media type Confluent answers with; clients also accept `application/json`.
const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Shared = State<Arc<Store>>;

/// The registry's routes.
pub fn app(store: Store) -> Router {
    Router::new()
        .route("/", get(|| async { reply(json!({})) }))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/types", get(|| async { reply(json!(["AVRO"])) }))
        .route("/config", get(global_config).put(set_global_config))
        .route("/config/{subject}", get(subject_config).put(set_subject_config))
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_with_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        // Clients read every error as JSON, also for endpoints this registry does not have.
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(Arc::new(store))
}

fn reply(body: Value) -> Response {
    ([(CONTENT_TYPE, MEDIA_TYPE)], Json(body)).into_response()
}

/// Reads a JSON body whatever its declared content type: clients send
/// `application/vnd.schemaregistry.v1+json`, `application/json`, or nothing.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidSchema(format!("unreadable request body: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

impl SchemaRequest {
    fn read(body: &Bytes) -> Result<Self, ApiError> {
        let request: SchemaRequest = parse(body)?;
        match request.schema_type.as_deref() {
            None | Some("AVRO") => {}
            Some(other) => return Err(ApiError::UnsupportedSchemaType(other.to_owned())),
        }
        if !request.references.is_empty() {
            return Err(ApiError::InvalidSchema(
                "schema references are not supported".into(),
            ));
        }
        Ok(request)
    }
}

fn registered(r: Registered) -> Response {
    reply(json!({ "subject": r.subject, "version": r.version, "id": r.id, "schema": r.schema }))
}

async fn subjects(State(store): Shared) -> Response {
    reply(json!(store.subjects().await))
}

async fn register(
    State(store): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = SchemaRequest::read(&body)?;
    let id = store.register(&subject, &request.schema).await?;
    tracing::info!(%subject, id, "schema registered");
    Ok(reply(json!({ "id": id })))
}

async fn lookup(
    State(store): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = SchemaRequest::read(&body)?;
    Ok(registered(store.lookup(&subject, &request.schema).await?))
}

async fn versions(State(store): Shared, Path(subject): Path<String>) -> Result<Response, ApiError> {
    Ok(reply(json!(store.versions(&subject).await?)))
}

async fn version(
    State(store): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(registered(
        store.version(&subject, VersionSpec::parse(&version)?).await?,
    ))
}

async fn version_schema(
    State(store): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let schema = store
        .version(&subject, VersionSpec::parse(&version)?)
        .await?
        .schema;
    Ok(([(CONTENT_TYPE, MEDIA_TYPE)], schema).into_response())
}

/// A schema id from the path; one that is not a number names no resource, as in Confluent.
fn schema_id(segment: &str) -> Result<u32, ApiError> {
    segment.parse().map_err(|_| ApiError::NotFound)
}

async fn schema_by_id(State(store): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(reply(json!({ "schema": store.schema(schema_id(&id)?).await? })))
}

async fn raw_schema_by_id(State(store): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(([(CONTENT_TYPE, MEDIA_TYPE)], store.schema(schema_id(&id)?).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn read_level(body: &Bytes) -> Result<Level, ApiError> {
    let request: ConfigRequest = parse(body).map_err(|_| ApiError::InvalidCompatibilityLevel)?;
    request
        .compatibility
        .parse()
        .map_err(|()| ApiError::InvalidCompatibilityLevel)
}

async fn global_config(State(store): Shared) -> Result<Response, ApiError> {
    Ok(reply(
        json!({ "compatibilityLevel": store.level(None, true).await? }),
    ))
}

async fn set_global_config(State(store): Shared, body: Bytes) -> Result<Response, ApiError> {
    let level = read_level(&body)?;
    store.set_level(None, level).await?;
    Ok(reply(json!({ "compatibility": level })))
}

/// Reads a boolean query parameter as Confluent's Java server does (`Boolean.valueOf`): `true` in
/// any letter case is true, anything else false. confluent-kafka's Python client sends `True` and
/// `False`, which a strict parser refuses.
fn query_bool<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(String::deserialize(deserializer)?.eq_ignore_ascii_case("true"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigQuery {
    #[serde(default, deserialize_with = "query_bool")]
    default_to_global: bool,
}

async fn subject_config(
    State(store): Shared,
    Path(subject): Path<String>,
    Query(query): Query<ConfigQuery>,
) -> Result<Response, ApiError> {
    Ok(reply(
        json!({ "compatibilityLevel": store.level(Some(&subject), query.default_to_global).await? }),
    ))
}

async fn set_subject_config(
    State(store): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let level = read_level(&body)?;
    store.set_level(Some(&subject), level).await?;
    Ok(reply(json!({ "compatibility": level })))
}

#[derive(Debug, Deserialize)]
struct CompatibilityQuery {
    #[serde(default, deserialize_with = "query_bool")]
    verbose: bool,
}

/// Tests a schema against one version of a subject, `latest` included, whatever the level.
async fn compatibility(
    State(store): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(query): Query<CompatibilityQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = SchemaRequest::read(&body)?;
    let problems = store
        .check(&subject, Some(VersionSpec::parse(&version)?), &request.schema)
        .await?;
    Ok(compatibility_answer(problems, query.verbose))
}

/// Tests a schema as registering it would: against the latest version, or against every version
/// under a transitive level.
async fn compatibility_with_all(
    State(store): Shared,
    Path(subject): Path<String>,
    Query(query): Query<CompatibilityQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = SchemaRequest::read(&body)?;
    let problems = store.check(&subject, None, &request.schema).await?;
    Ok(compatibility_answer(problems, query.verbose))
}

fn compatibility_answer(problems: Vec<String>, verbose: bool) -> Response {
    let mut answer = json!({ "is_compatible": problems.is_empty() });
    if verbose {
        answer["messages"] = json!(problems);
    }
    reply(answer)
}
