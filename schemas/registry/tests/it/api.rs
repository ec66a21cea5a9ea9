//! Registering and reading schemas over the Confluent REST API, and its error answers.

use serde_json::{Value, json};

use crate::support::{Registry, record, schema_body, v1, v2_optional_field};

#[tokio::test]
async fn an_identical_schema_gets_one_id_in_every_subject_and_spelling() {
    let registry = Registry::start().await;
    let id = registry.register("orders-value", &v1()).await;

    assert_eq!(
        registry.register("orders-value", &v1()).await,
        id,
        "registering again"
    );
    // The same schema with other whitespace and key order is the same schema.
    let respelled = r#"{
        "fields": [ { "type": "string", "name": "a" } ],
        "namespace": "switchboard.test",   "name": "Item",
        "type": "record"
    }"#;
    assert_eq!(
        registry.register("orders-value", respelled).await,
        id,
        "registering a respelled copy"
    );
    assert_eq!(
        registry.versions("orders-value").await,
        json!([1]),
        "no new version for the same schema"
    );

    assert_eq!(
        registry.register("refunds-value", &v1()).await,
        id,
        "the same schema in another subject"
    );
    assert_eq!(registry.versions("refunds-value").await, json!([1]));
    let by_version = registry.get("/subjects/refunds-value/versions/1").await.ok();
    assert_eq!(by_version.id(), id);
}

#[tokio::test]
async fn a_compatible_change_becomes_the_next_version_with_the_next_id() {
    let registry = Registry::start().await;
    let id1 = registry.register("orders-value", &v1()).await;
    let id2 = registry.register("orders-value", &v2_optional_field()).await;

    assert_eq!((id1, id2), (1, 2), "ids count up from 1");
    assert_eq!(registry.versions("orders-value").await, json!([1, 2]));
    let latest = registry.get("/subjects/orders-value/versions/latest").await.ok();
    assert_eq!((latest.body["version"].clone(), latest.id()), (json!(2), id2));
    // Registering an older version again only answers its id.
    assert_eq!(registry.register("orders-value", &v1()).await, id1);
    assert_eq!(registry.versions("orders-value").await, json!([1, 2]));
}

#[tokio::test]
async fn schemas_are_read_by_id_and_by_subject_version() {
    let registry = Registry::start().await;
    let id1 = registry.register("orders-value", &v1()).await;
    let id2 = registry.register("orders-value", &v2_optional_field()).await;
    registry.register("audit-value", &v1()).await;
    let parsed = |text: &str| serde_json::from_str::<Value>(text).expect("schema JSON");

    let by_id = registry.get(&format!("/schemas/ids/{id2}")).await.ok();
    assert_eq!(
        parsed(by_id.body["schema"].as_str().expect("schema text")),
        parsed(&v2_optional_field())
    );
    let raw = registry.get(&format!("/schemas/ids/{id1}/schema")).await.ok();
    assert_eq!(raw.body, parsed(&v1()), "the bare schema");

    assert_eq!(
        registry.get("/subjects").await.ok().body,
        json!(["audit-value", "orders-value"])
    );
    assert_eq!(registry.versions("orders-value").await, json!([1, 2]));

    for (version, id, schema) in [("1", id1, v1()), ("2", id2, v2_optional_field())] {
        let answer = registry
            .get(&format!("/subjects/orders-value/versions/{version}"))
            .await
            .ok();
        assert_eq!(answer.body["subject"], "orders-value");
        assert_eq!(answer.body["version"].to_string(), version);
        assert_eq!(answer.id(), id);
        assert_eq!(
            parsed(answer.body["schema"].as_str().expect("schema text")),
            parsed(&schema)
        );
    }
    let latest = registry
        .get("/subjects/orders-value/versions/latest")
        .await
        .ok()
        .body;
    assert_eq!(
        registry.get("/subjects/orders-value/versions/-1").await.ok().body,
        latest,
        "-1 is latest"
    );
    assert_eq!(latest["version"], 2);
    let bare = registry
        .get("/subjects/orders-value/versions/1/schema")
        .await
        .ok();
    assert_eq!(bare.body, parsed(&v1()));

    assert_eq!(registry.get("/schemas/types").await.ok().body, json!(["AVRO"]));
    assert_eq!(registry.get("/").await.ok().body, json!({}));
}

#[tokio::test]
async fn lookup_finds_the_version_that_holds_a_schema() {
    let registry = Registry::start().await;
    let id1 = registry.register("orders-value", &v1()).await;
    let id2 = registry.register("orders-value", &v2_optional_field()).await;

    let respelled = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&v1()).unwrap()).unwrap();
    let found = registry
        .post("/subjects/orders-value", &schema_body(&respelled))
        .await
        .ok();
    assert_eq!(found.body["subject"], "orders-value");
    assert_eq!((found.body["version"].clone(), found.id()), (json!(1), id1));
    assert!(found.body["schema"].is_string(), "{}", found.body);

    let found = registry
        .post("/subjects/orders-value", &schema_body(&v2_optional_field()))
        .await
        .ok();
    assert_eq!((found.body["version"].clone(), found.id()), (json!(2), id2));
    assert_eq!(
        registry.versions("orders-value").await,
        json!([1, 2]),
        "a lookup registers nothing"
    );
}

#[tokio::test]
async fn unknown_subjects_versions_and_schemas_are_404_with_confluent_codes() {
    let registry = Registry::start().await;
    registry.register("orders-value", &v1()).await;
    let never_registered = record("Other", json!([{ "name": "z", "type": "int" }]));

    registry
        .get("/subjects/nope-value/versions")
        .await
        .error(404, 40401);
    registry
        .get("/subjects/nope-value/versions/1")
        .await
        .error(404, 40401);
    registry
        .get("/subjects/nope-value/versions/latest")
        .await
        .error(404, 40401);
    registry
        .post("/subjects/nope-value", &schema_body(&v1()))
        .await
        .error(404, 40401);
    registry
        .get("/subjects/orders-value/versions/2")
        .await
        .error(404, 40402);
    registry
        .get("/subjects/orders-value/versions/2/schema")
        .await
        .error(404, 40402);
    registry.get("/schemas/ids/99").await.error(404, 40403);
    registry.get("/schemas/ids/99/schema").await.error(404, 40403);
    registry
        .post("/subjects/orders-value", &schema_body(&never_registered))
        .await
        .error(404, 40403);
}

#[tokio::test]
async fn malformed_versions_are_422_42202() {
    let registry = Registry::start().await;
    registry.register("orders-value", &v1()).await;

    for version in ["0", "-2", "one", "1.5", "2147483648"] {
        let message = registry
            .get(&format!("/subjects/orders-value/versions/{version}"))
            .await
            .error(422, 42202);
        assert!(message.contains(version), "{message:?} names {version}");
    }
    let path = "/compatibility/subjects/orders-value/versions/zero";
    registry.post(path, &schema_body(&v1())).await.error(422, 42202);
}

#[tokio::test]
async fn invalid_schemas_are_422_42201_and_register_nothing() {
    let registry = Registry::start().await;
    registry.register("orders-value", &v1()).await;

    let invalid = [
        schema_body("{not json"),
        schema_body(r#"{"type": "record", "name": "NoFields"}"#),
        schema_body(r#"{"type": "no-such-type"}"#),
        json!({ "schema": v1(), "schemaType": "PROTOBUF" }),
        json!({ "schema": v1(), "references": [{ "name": "x", "subject": "x-value", "version": 1 }] }),
        json!({ "schemaType": "AVRO" }),
    ];
    for body in &invalid {
        registry
            .post("/subjects/orders-value/versions", body)
            .await
            .error(422, 42201);
        registry
            .post("/subjects/orders-value", body)
            .await
            .error(422, 42201);
        registry
            .post("/compatibility/subjects/orders-value/versions/latest", body)
            .await
            .error(422, 42201);
    }
    registry
        .post("/subjects/fresh-value/versions", &invalid[1])
        .await
        .error(422, 42201);
    assert_eq!(registry.versions("orders-value").await, json!([1]));
    assert_eq!(registry.get("/subjects").await.ok().body, json!(["orders-value"]));
}

#[tokio::test]
async fn errors_off_the_api_are_json_too() {
    let registry = Registry::start().await;
    registry.register("orders-value", &v1()).await;

    registry.get("/no/such/endpoint").await.error(404, 404);
    registry.get("/schemas/ids/one").await.error(404, 404);
    registry.get("/schemas/ids/-1/schema").await.error(404, 404);
    registry
        .send(reqwest::Method::DELETE, "/subjects/orders-value/versions")
        .await
        .error(405, 405);
    registry
        .send(reqwest::Method::POST, "/config")
        .await
        .error(405, 405);
    assert_eq!(registry.versions("orders-value").await, json!([1]));
}
