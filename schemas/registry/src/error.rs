//! Errors as the Confluent API spells them: an HTTP status and `{"error_code", "message"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the registry API, with Confluent's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version not found.")]
    VersionNotFound,
    #[error("Schema not found")]
    SchemaNotFound,
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\"; {details}"
    )]
    Incompatible { subject: String, details: String },
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error(
        "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
    )]
    InvalidCompatibilityLevel,
    #[error("Unsupported schema type '{0}': this registry stores AVRO schemas only")]
    UnsupportedSchemaType(String),
    #[error("Error in the backend data store: {0}")]
    Storage(String),
    /// A path this registry does not serve (or an id that is not a number), worded as Confluent's.
    #[error("HTTP 404 Not Found")]
    NotFound,
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// Confluent's numeric error code; its first three digits are the HTTP status.
    pub fn error_code(&self) -> u32 {
        match self {
            ApiError::SubjectNotFound(_) => 40401,
            ApiError::VersionNotFound => 40402,
            ApiError::SchemaNotFound => 40403,
            ApiError::SubjectConfigNotFound(_) => 40408,
            ApiError::Incompatible { .. } => 409,
            ApiError::InvalidSchema(_) | ApiError::UnsupportedSchemaType(_) => 42201,
            ApiError::InvalidVersion(_) => 42202,
            ApiError::InvalidCompatibilityLevel => 42203,
            ApiError::Storage(_) => 50001,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed => 405,
        }
    }

    fn status(&self) -> StatusCode {
        match self.error_code() {
            404 => StatusCode::NOT_FOUND,
            405 => StatusCode::METHOD_NOT_ALLOWED,
            409 => StatusCode::CONFLICT,
            code if code / 100 == 404 => StatusCode::NOT_FOUND,
            code if code / 100 == 422 => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.error_code(), "message": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}
