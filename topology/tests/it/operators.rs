//! Operator stages: what they emit, the models they may load and the capabilities granted to
//! them. Broken cases are snapshots in `tests/broken/operator-*.yaml`; these are the valid ones.

use std::collections::BTreeMap;
use std::path::PathBuf;

use panoptes_topology::{DirGrant, Emits, Grants, StageConfig, TopologyFile};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A topology in `topologies/`, so `../operators/…` and `../models/…` resolve.
fn parse(text: &str) -> TopologyFile {
    match TopologyFile::parse(
        text,
        "inline.yaml",
        &repo().join("topologies"),
        &|_: &str| None,
    ) {
        Ok(t) => t,
        Err(d) => panic!("{d}"),
    }
}

fn operator<'t>(t: &'t TopologyFile, id: &str) -> &'t panoptes_topology::OperatorStage {
    match t.stages.iter().find(|s| s.id() == id) {
        Some(StageConfig::Operator(op)) => op,
        other => panic!("no operator `{id}`: {other:?}"),
    }
}

#[test]
fn defaults_grant_nothing() {
    let t = parse(
        r#"
stages:
  - { id: pre, kind: operator, wasm: ../operators/dist/letterbox.wasm }
  - { id: boxes, kind: postprocess, postprocessor: db }
"#,
    );
    let op = operator(&t, "pre");
    assert_eq!(op.emits, Emits::Tensors);
    assert!(op.models.is_empty());
    assert_eq!(op.grants, Grants::default());
    assert!(!op.grants.clock && !op.grants.logs);
    assert!(op.grants.env.is_empty() && op.grants.dirs.is_empty());
    assert!(!op.watch);
}

#[test]
fn frames_feed_an_operator_and_detections_feed_a_sink() {
    let t = parse(
        r#"
models:
  det: { file: ../models/files/ch_PP-OCRv4_det_infer.onnx }
stages:
  - id: decode
    kind: operator
    wasm: ../operators/dist/letterbox.wasm
    emits: frames
  - id: pre
    kind: operator
    wasm: ../operators/dist/letterbox.wasm
  - { id: detect, kind: model, model: det }
  - { id: boxes, kind: postprocess, postprocessor: db }
  - id: find-text
    kind: operator
    input: frames
    wasm: ../operators/dist/letterbox.wasm
    emits: detections
    models: [det]
    watch: true
    grants:
      clock: true
      logs: true
      env: { MODE: fast, EMPTY: "" }
      dirs:
        - { host: ../operators, guest: /data }
        - { host: ., guest: /out/, writable: true }
  - { id: out, kind: sink, subject: "{namespace}.text.{camera}" }
  - { id: tracks, kind: tracker, input: find-text }
"#,
    );
    assert_eq!(operator(&t, "decode").emits, Emits::Frames);
    assert_eq!(operator(&t, "pre").emits, Emits::Tensors);
    let op = operator(&t, "find-text");
    assert_eq!(op.emits, Emits::Detections);
    assert_eq!(op.models, ["det"]);
    assert!(op.watch);
    let env: BTreeMap<String, String> = [("EMPTY", ""), ("MODE", "fast")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        op.grants,
        Grants {
            clock: true,
            logs: true,
            env,
            dirs: vec![
                DirGrant {
                    host: PathBuf::from("../operators"),
                    guest: "/data".to_owned(),
                    writable: false,
                },
                DirGrant {
                    host: PathBuf::from("."),
                    guest: "/out/".to_owned(),
                    writable: true,
                },
            ],
        }
    );
    // Granted directories resolve like every other path in the topology.
    assert_eq!(
        t.resolve(&op.grants.dirs[0].host),
        repo().join("topologies").join("../operators")
    );
}

#[test]
fn an_operator_that_emits_detections_may_end_a_branch_or_feed_a_cascade() {
    parse(
        r#"
models:
  det: { file: ../models/files/ch_PP-OCRv4_det_infer.onnx }
  rec: { file: ../models/files/ch_PP-OCRv4_rec_infer.onnx }
stages:
  - id: find-text
    kind: operator
    wasm: ../operators/dist/letterbox.wasm
    emits: detections
    models: [det]
  - { id: read, kind: model, model: rec, crops: { width: 320, height: 48 } }
  - { id: text, kind: postprocess, postprocessor: ctc }
  - id: alone
    kind: operator
    input: frames
    wasm: ../operators/dist/letterbox.wasm
    emits: detections
"#,
    );
}

#[test]
fn the_schema_describes_the_operator_fields() {
    let schema = panoptes_topology::json_schema();
    let defs = &schema["$defs"];
    let emits: Vec<&str> = defs["Emits"]["oneOf"]
        .as_array()
        .expect("documented variants")
        .iter()
        .filter_map(|v| v["const"].as_str())
        .collect();
    assert_eq!(emits, ["tensors", "frames", "detections"]);
    assert_eq!(defs["Grants"]["additionalProperties"], false);
    assert_eq!(defs["DirGrant"]["additionalProperties"], false);
    assert_eq!(
        defs["DirGrant"]["required"],
        serde_json::json!(["host", "guest"])
    );
    let operator = defs["StageConfig"]["oneOf"]
        .as_array()
        .expect("stage kinds")
        .iter()
        .find(|b| b["properties"]["kind"]["const"] == "operator")
        .expect("operator stage");
    for key in ["emits", "models", "grants", "watch"] {
        let prop = &operator["properties"][key];
        assert!(
            prop["description"].as_str().is_some_and(|d| !d.is_empty()),
            "`{key}` is undocumented: {prop}"
        );
    }
    assert_eq!(operator["properties"]["emits"]["default"], "tensors");
    assert_eq!(operator["properties"]["watch"]["default"], false);
}

/// The operator example in `docs/topology.md` is valid, apart from the files it only imagines.
#[test]
fn the_documented_example_validates() {
    let doc = std::fs::read_to_string(repo().join("docs/topology.md")).expect("docs/topology.md");
    let example = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("emits:") && block.contains("grants:"))
        .expect("an operator example with emits and grants");
    let problems = match TopologyFile::parse(
        example,
        "docs/topology.md",
        &repo().join("topologies"),
        &|_: &str| None,
    ) {
        Ok(_) => return,
        Err(d) => d,
    };
    for item in &problems.items {
        assert!(
            item.message.contains("does not exist"),
            "{}",
            problems.render(false)
        );
    }
}

/// A NUL in an environment variable name is refused too (it would cut the name short); YAML
/// writes it as `\0` in a double-quoted key.
#[test]
fn env_names_with_nul_are_refused() {
    let text = r#"
stages:
  - id: pre
    kind: operator
    wasm: ../operators/dist/letterbox.wasm
    grants: { env: { "A\0B": x } }
  - { id: boxes, kind: postprocess, postprocessor: db }
"#;
    let problems = match TopologyFile::parse(
        text,
        "inline.yaml",
        &repo().join("topologies"),
        &|_: &str| None,
    ) {
        Ok(_) => panic!("a NUL in an environment variable name was accepted"),
        Err(d) => d,
    };
    let messages: Vec<&str> = problems.items.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        ["environment variable name \"A\\0B\" contains a NUL character"]
    );
    let span = problems.items[0].span.expect("located");
    assert_eq!(&text[span.start..span.end], r#""A\0B""#);
}

#[test]
fn a_shadow_candidate_samples_a_tenth_of_frames_unless_told() {
    let t = parse(
        r#"
models:
  det: { file: ../models/files/ch_PP-OCRv4_det_infer.onnx }
stages:
  - id: pre
    kind: operator
    wasm: ../operators/dist/letterbox.wasm
    shadow: { wasm: ../operators/dist/letterbox.wasm, config: { width: 320 } }
  - id: det
    kind: model
    model: det
    shadow: { model: det, sample: 1.0 }
  - { id: boxes, kind: postprocess, postprocessor: db }
"#,
    );
    let shadow = operator(&t, "pre").shadow.clone().expect("candidate");
    assert_eq!(shadow.sample, 0.1);
    assert_eq!(shadow.config, Some(serde_json::json!({ "width": 320 })));
    assert_eq!(shadow.timeout_ms, None);
    match t.stages.iter().find(|s| s.id() == "det") {
        Some(StageConfig::Model(m)) => {
            let shadow = m.shadow.clone().expect("candidate model");
            assert_eq!((shadow.model.as_str(), shadow.sample), ("det", 1.0));
        }
        other => panic!("{other:?}"),
    }
}
