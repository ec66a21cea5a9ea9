//! Compatibility levels: refusing incompatible schemas with 409, the `/config` endpoints that set
//! the levels, and the compatibility test endpoint.

use serde_json::{Value, json};

use crate::support::{
    Registry, record, schema_body, v1, v2_dropped_field, v2_optional_field, v2_required_field,
};

/// Where a test sets the level under test.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Not set: the default, BACKWARD.
    Default,
    Subject,
    Global,
}

struct Case {
    level: &'static str,
    scope: Scope,
    history: Vec<String>,
    candidate: String,
    accepted: bool,
}

fn case(level: &'static str, scope: Scope, history: &[String], candidate: String, accepted: bool) -> Case {
    Case {
        level,
        scope,
        history: history.to_vec(),
        candidate,
        accepted,
    }
}

#[tokio::test]
async fn each_level_accepts_or_refuses_with_409() {
    let with_default_b = record(
        "Item",
        json!([{ "name": "a", "type": "string" }, { "name": "b", "type": "string", "default": "x" }]),
    );
    let a_as_int = record("Item", json!([{ "name": "a", "type": "int" }]));
    let one = [v1()];
    let two = [v1(), with_default_b];
    let cases = [
        case("BACKWARD", Scope::Default, &one, v2_required_field(), false),
        case("BACKWARD", Scope::Default, &one, v2_optional_field(), true),
        case("BACKWARD", Scope::Subject, &one, a_as_int.clone(), false),
        case("FORWARD", Scope::Subject, &one, v2_dropped_field(), false),
        case("FORWARD", Scope::Subject, &one, v2_required_field(), true),
        case("FORWARD", Scope::Global, &one, v2_dropped_field(), false),
        case("FULL", Scope::Global, &one, v2_required_field(), false),
        case("FULL", Scope::Subject, &one, v2_dropped_field(), false),
        case("FULL", Scope::Global, &one, v2_optional_field(), true),
        case("NONE", Scope::Subject, &one, v2_required_field(), true),
        case("NONE", Scope::Global, &one, a_as_int, true),
        // v1's records lack `b`, which the candidate requires: only a transitive check sees v1.
        case("BACKWARD", Scope::Subject, &two, v2_required_field(), true),
        case(
            "BACKWARD_TRANSITIVE",
            Scope::Subject,
            &two,
            v2_required_field(),
            false,
        ),
    ];

    for Case {
        level,
        scope,
        history,
        candidate,
        accepted,
    } in cases
    {
        let registry = Registry::start().await;
        let what = format!(
            "{level} ({scope:?}) after {} version(s): {candidate}",
            history.len()
        );
        match scope {
            Scope::Default => {}
            Scope::Subject => registry.set_level(Some("orders-value"), level).await,
            Scope::Global => registry.set_level(None, level).await,
        }
        let mut ids = Vec::new();
        for schema in &history {
            ids.push(registry.register("orders-value", schema).await);
        }
        let versions: Vec<usize> = (1..=history.len()).collect();

        // The test endpoint predicts what registering will do.
        let check = registry
            .post(
                "/compatibility/subjects/orders-value/versions",
                &schema_body(&candidate),
            )
            .await
            .ok();
        assert_eq!(
            check.body["is_compatible"],
            json!(accepted),
            "{what}: {}",
            check.body
        );

        let answer = registry
            .post("/subjects/orders-value/versions", &schema_body(&candidate))
            .await;
        if accepted {
            let id = answer.ok().id();
            assert!(!ids.contains(&id), "{what}: a new schema gets a new id");
            let mut expected = versions.clone();
            expected.push(history.len() + 1);
            assert_eq!(registry.versions("orders-value").await, json!(expected), "{what}");
        } else {
            let message = answer.error(409, 409);
            assert!(
                message.contains("orders-value"),
                "{what}: {message:?} names the subject"
            );
            assert_eq!(
                registry.versions("orders-value").await,
                json!(versions),
                "{what}: no new version"
            );
        }
    }
}

#[tokio::test]
async fn config_is_global_with_per_subject_overrides() {
    let registry = Registry::start().await;
    assert_eq!(
        registry.get("/config").await.ok().body,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    let message = registry.get("/config/orders-value").await.error(404, 40408);
    assert!(message.contains("orders-value"), "{message:?}");
    let fallback = registry
        .get("/config/orders-value?defaultToGlobal=true")
        .await
        .ok();
    assert_eq!(fallback.body, json!({ "compatibilityLevel": "BACKWARD" }));

    registry.set_level(None, "NONE").await;
    assert_eq!(
        registry.get("/config").await.ok().body,
        json!({ "compatibilityLevel": "NONE" })
    );
    let fallback = registry
        .get("/config/orders-value?defaultToGlobal=true")
        .await
        .ok();
    assert_eq!(fallback.body, json!({ "compatibilityLevel": "NONE" }));
    registry
        .get("/config/orders-value?defaultToGlobal=false")
        .await
        .error(404, 40408);

    // Levels are case-insensitive on the way in and upper-case on the way out.
    let set = registry
        .put(
            "/config/orders-value",
            &json!({ "compatibility": "full_transitive" }),
        )
        .await;
    assert_eq!(set.ok().body, json!({ "compatibility": "FULL_TRANSITIVE" }));
    registry.set_level(Some("orders-value"), "BACKWARD").await;
    assert_eq!(
        registry.get("/config/orders-value").await.ok().body,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    assert_eq!(
        registry.get("/config").await.ok().body,
        json!({ "compatibilityLevel": "NONE" })
    );

    // The subject's own level wins over the global one; other subjects follow the global one.
    registry.register("orders-value", &v1()).await;
    registry.register("audit-value", &v1()).await;
    registry
        .post(
            "/subjects/orders-value/versions",
            &schema_body(&v2_required_field()),
        )
        .await
        .error(409, 409);
    registry
        .post(
            "/subjects/audit-value/versions",
            &schema_body(&v2_required_field()),
        )
        .await
        .ok();

    for bad in [
        json!({ "compatibility": "SIDEWAYS" }),
        json!({ "level": "FULL" }),
        json!("FULL"),
    ] {
        registry.put("/config", &bad).await.error(422, 42203);
        registry.put("/config/orders-value", &bad).await.error(422, 42203);
    }
    assert_eq!(
        registry.get("/config").await.ok().body,
        json!({ "compatibilityLevel": "NONE" })
    );
}

#[tokio::test]
async fn the_compatibility_endpoint_answers_and_explains_when_verbose() {
    let registry = Registry::start().await;
    let latest = "/compatibility/subjects/orders-value/versions/latest";
    // A subject without versions accepts anything, as in Confluent.
    let empty = registry
        .post(latest, &schema_body(&v2_required_field()))
        .await
        .ok();
    assert_eq!(empty.body["is_compatible"], json!(true));
    registry.register("orders-value", &v1()).await;

    let compatible = registry
        .post(latest, &schema_body(&v2_optional_field()))
        .await
        .ok();
    assert_eq!(
        compatible.body,
        json!({ "is_compatible": true }),
        "no messages unless verbose"
    );
    let incompatible = registry
        .post(latest, &schema_body(&v2_required_field()))
        .await
        .ok();
    assert_eq!(incompatible.body, json!({ "is_compatible": false }));

    // `True` is how confluent-kafka's Python client spells it.
    for verbose in ["true", "True"] {
        let path = format!("{latest}?verbose={verbose}");
        let explained = registry
            .post(&path, &schema_body(&v2_required_field()))
            .await
            .ok();
        assert_eq!(explained.body["is_compatible"], json!(false));
        let messages = explained.body["messages"]
            .as_array()
            .expect("messages with verbose");
        assert!(
            !messages.is_empty() && messages.iter().all(Value::is_string),
            "{}",
            explained.body
        );
        let fine = registry
            .post(&path, &schema_body(&v2_optional_field()))
            .await
            .ok();
        assert_eq!(fine.body, json!({ "is_compatible": true, "messages": [] }));
    }
    let quiet = registry
        .post(&format!("{latest}?verbose=False"), &schema_body(&v1()))
        .await
        .ok();
    assert_eq!(quiet.body, json!({ "is_compatible": true }));

    // Against one named version: v2 (required `b`) is compatible with itself but not with v1.
    registry.set_level(Some("orders-value"), "NONE").await;
    registry.register("orders-value", &v2_required_field()).await;
    registry.set_level(Some("orders-value"), "BACKWARD").await;
    let against = |version: &str| format!("/compatibility/subjects/orders-value/versions/{version}");
    let v1_check = registry
        .post(&against("1"), &schema_body(&v2_required_field()))
        .await
        .ok();
    assert_eq!(v1_check.body["is_compatible"], json!(false));
    let v2_check = registry
        .post(&against("2"), &schema_body(&v2_required_field()))
        .await
        .ok();
    assert_eq!(v2_check.body["is_compatible"], json!(true));
    registry
        .post(&against("3"), &schema_body(&v1()))
        .await
        .error(404, 40402);

    // A transitive level: registering (and `/versions` without a number) checks every version,
    // while a named version, `latest` included, is checked on its own, as Confluent does.
    registry
        .set_level(Some("orders-value"), "BACKWARD_TRANSITIVE")
        .await;
    // Reads v2's records, but has no default for the `b` that v1's records lack.
    let b_without_default = record(
        "Item",
        json!([{ "name": "a", "type": "string" }, { "name": "b", "type": ["null", "string"] }]),
    );
    let body = schema_body(&b_without_default);
    let latest_only = registry.post(&against("latest"), &body).await.ok();
    assert_eq!(
        latest_only.body["is_compatible"],
        json!(true),
        "{}",
        latest_only.body
    );
    let with_v1 = registry.post(&against("1"), &body).await.ok();
    assert_eq!(with_v1.body["is_compatible"], json!(false), "{}", with_v1.body);
    let all = registry
        .post(
            "/compatibility/subjects/orders-value/versions?verbose=true",
            &body,
        )
        .await
        .ok();
    assert_eq!(all.body["is_compatible"], json!(false), "{}", all.body);
    assert!(
        !all.body["messages"].as_array().expect("messages").is_empty(),
        "{}",
        all.body
    );
    registry
        .post("/subjects/orders-value/versions", &body)
        .await
        .error(409, 409);
}
