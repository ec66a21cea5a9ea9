//! A small schema registry that speaks the Confluent Schema Registry REST API, so that real
//! clients (`schema_registry_converter`, `confluent-kafka`, the Java serializers) work against it
//! unchanged. It holds Avro schemas only, keeps its state in one JSON file, and decides
//! compatibility with apache-avro's schema-resolution check.
//!
//! It exists because no schema registry server can be installed on the development and CI
//! machines. Production deployments point at Confluent Schema Registry, Karapace, Redpanda or
//! Apicurio.

mod api;
mod compat;
mod error;
mod store;

use std::future::Future;

pub use api::app;
pub use compat::Level;
pub use error::ApiError;
pub use store::Store;

/// Serves the registry on `listener` until `shutdown` completes.
pub async fn run(
    store: Store,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, app(store))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
