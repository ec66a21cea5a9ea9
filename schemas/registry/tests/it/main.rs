//! Integration tests of the schema registry. Each test starts the registry in-process on a free
//! loopback port with a data directory of its own and talks to it over real HTTP, with plain
//! requests (`reqwest`), with the project's codec (`schema_registry_converter`), and with
//! Confluent's Python client.

mod api;
mod codec;
mod compatibility;
mod persistence;
mod python_client;
mod support;
