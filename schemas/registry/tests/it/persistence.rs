//! The registry's state file: everything survives a restart, and a damaged file is refused.

use serde_json::{Value, json};
use switchboard_registry::Store;

use crate::support::{Registry, record, schema_body, v1, v2_optional_field};

/// Everything a client can read back from `registry` about the subjects it knows.
async fn snapshot(registry: &Registry) -> Value {
    let subjects = registry.get("/subjects").await.ok().body;
    let mut state =
        json!({ "subjects": subjects.clone(), "config": registry.get("/config").await.ok().body });
    for subject in subjects.as_array().expect("a list") {
        let subject = subject.as_str().expect("a name");
        let mut versions = Vec::new();
        for version in registry.versions(subject).await.as_array().expect("a list") {
            versions.push(
                registry
                    .get(&format!("/subjects/{subject}/versions/{version}"))
                    .await
                    .ok()
                    .body,
            );
        }
        let level = registry
            .get(&format!("/config/{subject}?defaultToGlobal=true"))
            .await
            .ok()
            .body;
        state[subject] = json!({ "versions": versions, "config": level });
    }
    state
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let registry = Registry::start_in(dir.path()).await;
    let id1 = registry.register("orders-value", &v1()).await;
    let id2 = registry.register("orders-value", &v2_optional_field()).await;
    registry.register("audit-value", &v1()).await;
    registry.set_level(None, "FULL").await;
    registry.set_level(Some("audit-value"), "NONE").await;
    let before = snapshot(&registry).await;
    registry.stop().await;

    let state_file = dir.path().join("registry.json");
    assert!(state_file.is_file(), "state is kept in {}", state_file.display());
    assert!(
        !dir.path().join("registry.json.tmp").exists(),
        "no temporary file is left behind"
    );

    let registry = Registry::start_in(dir.path()).await;
    assert_eq!(snapshot(&registry).await, before);
    assert_eq!(before["orders-value"]["versions"][1]["id"], json!(id2));
    assert_eq!(
        registry.get("/config/audit-value").await.ok().body,
        json!({ "compatibilityLevel": "NONE" })
    );
    let by_id = registry
        .get(&format!("/schemas/ids/{id1}/schema"))
        .await
        .ok()
        .body;
    assert_eq!(
        by_id,
        serde_json::from_str::<Value>(&v1()).unwrap(),
        "schema {id1} by id"
    );

    // Ids go on from where they were, and the restored level (FULL) still applies.
    let v3 = record(
        "Item",
        json!([
            { "name": "a", "type": "string" },
            { "name": "b", "type": ["null", "string"], "default": null },
            { "name": "c", "type": "long", "default": 0 },
        ]),
    );
    assert_eq!(registry.register("orders-value", &v3).await, id2 + 1);
    let required = record(
        "Item",
        json!([{ "name": "a", "type": "string" }, { "name": "d", "type": "long" }]),
    );
    registry
        .post("/subjects/audit-value/versions", &schema_body(&required))
        .await
        .ok();
    registry
        .post("/subjects/orders-value/versions", &schema_body(&required))
        .await
        .error(409, 409);
    registry.stop().await;
}

#[tokio::test]
async fn a_damaged_state_file_is_refused_not_replaced() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let state_file = dir.path().join("registry.json");
    std::fs::write(&state_file, b"{\"schemas\": {\"1\": ").expect("write a truncated state file");

    let err = Store::open(dir.path())
        .await
        .expect_err("a truncated state file must not open");
    assert!(
        err.to_string().contains("registry.json"),
        "the error names the file: {err}"
    );
    let kept = std::fs::read(&state_file).expect("the file is still there");
    assert_eq!(
        kept, b"{\"schemas\": {\"1\": ",
        "the damaged file is left as it was"
    );
}
