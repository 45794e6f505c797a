//! The committed JSON Schema (`schema/topology.schema.json`, what editors load) must be the one
//! the config types generate. Regenerate with `UPDATE_SCHEMA=1 cargo test -p panoptes-topology
//! --test schema` or `panoptes schema > schema/topology.schema.json`.

use std::path::Path;

#[test]
fn committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/topology.schema.json");
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&panoptes_topology::json_schema()).expect("serialises")
    );
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("writable");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `UPDATE_SCHEMA=1 cargo test -p panoptes-topology --test schema` and commit it",
        path.display()
    );
}

/// The message schemas Panoptes publishes under (`docs/detections.schema.json`,
/// `docs/events.schema.json`) are the ones the contract types generate; regenerate the same
/// way (`UPDATE_SCHEMA=1`, or `panoptes schema detections|events`).
#[test]
fn committed_message_schemas_are_current() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    for (name, schema) in [
        ("detections", panoptes_contracts::detection::json_schema()),
        ("events", panoptes_contracts::event::json_schema()),
        ("analytics", panoptes_contracts::analytics::json_schema()),
        ("output-events", panoptes_contracts::output::json_schema()),
        ("clips", panoptes_contracts::clip::json_schema()),
    ] {
        let path = docs.join(format!("{name}.schema.json"));
        let generated = format!(
            "{}\n",
            serde_json::to_string_pretty(&schema).expect("serialises")
        );
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).expect("writable");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale: run `UPDATE_SCHEMA=1 cargo test -p panoptes-topology --test it schema` and commit it",
            path.display()
        );
    }
}

#[test]
fn schema_describes_the_language() {
    let schema = panoptes_topology::json_schema();
    let props = schema["properties"]
        .as_object()
        .expect("top-level properties");
    for key in [
        "namespace",
        "nats",
        "delivery",
        "partitions",
        "telemetry",
        "models",
        "cameras",
        "stages",
    ] {
        assert!(props.contains_key(key), "schema lacks `{key}`");
    }
    assert_eq!(schema["required"], serde_json::json!(["stages"]));
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
}
