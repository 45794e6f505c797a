//! Topology graphs: snapshots of every example topology as DOT and Mermaid (and the same nodes
//! and edges as JSON), and the escaping and identifier rules that keep the output valid for any
//! topology.

use std::path::{Path, PathBuf};

use panoptes_topology::{TopologyFile, graph};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Loads with no environment, so `${VAR:-default}` takes its default on every machine.
fn parse(text: &str, origin: &str, base: &Path) -> TopologyFile {
    match TopologyFile::parse(text, origin, base, &|_: &str| None) {
        Ok(t) => t,
        Err(d) => panic!("{d}"),
    }
}

/// A topology in `topologies/`, so `../operators/dist/letterbox.wasm` resolves.
fn inline(text: &str) -> TopologyFile {
    parse(text, "inline.yaml", &repo().join("topologies"))
}

/// Node IDs a Mermaid flowchart declares: the text before the shape's opening bracket.
fn mermaid_ids(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("subgraph") && !l.contains("-->"))
        .filter_map(|l| l.find(['[', '(', '{']).map(|i| l[..i].to_owned()))
        .collect()
}

#[test]
fn example_topologies_snapshot() {
    let dir = repo().join("topologies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("topologies/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected the example topologies in {}",
        dir.display()
    );
    let repo_path = repo().display().to_string();
    for path in files {
        let name = path
            .file_stem()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("readable");
        let t = parse(&text, &format!("topologies/{name}.yaml"), &dir);
        let dot = graph::dot(&t);
        let mermaid = graph::mermaid(&t);
        for out in [&dot, &mermaid] {
            assert!(!out.contains(&repo_path), "{name}: machine path in\n{out}");
        }
        let ids = mermaid_ids(&mermaid);
        assert!(!ids.is_empty(), "{name}: no nodes in\n{mermaid}");
        for id in &ids {
            assert!(
                id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}: unsafe Mermaid ID {id:?}"
            );
        }
        // The JSON drawing has the Mermaid drawing's nodes, and its edges join them.
        let json: serde_json::Value =
            serde_json::from_str(&graph::render(&t, graph::Format::Json)).expect("JSON");
        let mut json_ids: Vec<String> = json["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["nodes"].as_array().expect("nodes").iter())
            .map(|n| n["id"].as_str().expect("id").to_owned())
            .collect();
        for edge in json["edges"].as_array().expect("edges") {
            for end in edge.as_array().expect("edge") {
                let end = end.as_str().expect("node ID");
                assert!(json_ids.iter().any(|id| id == end), "{name}: edge to {end}");
            }
        }
        let mut mermaid_sorted = ids.clone();
        mermaid_sorted.sort();
        json_ids.sort();
        assert_eq!(json_ids, mermaid_sorted, "{name}");
        insta::assert_snapshot!(format!("{name}.dot"), dot);
        insta::assert_snapshot!(format!("{name}.mermaid"), mermaid);
    }
}

#[test]
fn ids_that_sanitise_alike_stay_apart() {
    let t = inline(
        r#"
stages:
  - { id: pre, kind: operator, wasm: ../operators/dist/letterbox.wasm }
  - { id: text-boxes, kind: postprocess, postprocessor: db }
  - { id: text_boxes, kind: postprocess, postprocessor: db, input: pre }
"#,
    );
    let mermaid = graph::mermaid(&t);
    let ids = mermaid_ids(&mermaid);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "duplicate node IDs in\n{mermaid}");
    assert!(ids.contains(&"s_text_boxes".to_owned()), "{mermaid}");
    assert!(ids.contains(&"s_text_boxes_2".to_owned()), "{mermaid}");
    assert!(mermaid.contains("  s_pre --> s_text_boxes\n"), "{mermaid}");
    assert!(
        mermaid.contains("  s_pre --> s_text_boxes_2\n"),
        "{mermaid}"
    );
    let dot = graph::dot(&t);
    assert!(dot.contains("  s_pre -> s_text_boxes_2;\n"), "{dot}");
}

#[test]
fn labels_are_escaped_for_each_format() {
    let t = inline(
        r#"
stages:
  - { id: pre, kind: operator, wasm: ../operators/dist/letterbox.wasm }
  - { id: boxes, kind: postprocess, postprocessor: db, label: 'say "hi" <b>#1</b> & \n' }
  - { id: out, kind: sink, subject: '{namespace}.q"x.{camera}' }
"#,
    );
    let dot = graph::dot(&t);
    assert!(
        dot.contains(r#"label: say \"hi\" <b>#1</b> & \\n""#),
        "{dot}"
    );
    assert!(dot.contains(r#"label="panoptes.q\"x.*""#), "{dot}");
    let mermaid = graph::mermaid(&t);
    assert!(
        mermaid.contains("label: say #quot;hi#quot; #lt;b#gt;#35;1#lt;/b#gt; #amp; \\n\"]"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains(r#"[/"panoptes.q#quot;x.*"/]"#),
        "{mermaid}"
    );
    // Every label is one quoted string: exactly two raw quotes on each node line.
    for line in mermaid.lines().filter(|l| l.contains('"')) {
        assert_eq!(line.matches('"').count(), 2, "{line}");
    }
}

#[test]
fn without_cameras_frames_come_from_any_publisher() {
    let t = inline(
        r#"
namespace: lab
stages:
  - { id: pre, kind: operator, wasm: ../operators/dist/letterbox.wasm }
  - { id: boxes, kind: postprocess, postprocessor: db }
"#,
    );
    let mermaid = graph::mermaid(&t);
    assert!(
        mermaid.contains(r#"any_publisher(("any publisher"))"#),
        "{mermaid}"
    );
    assert!(mermaid.contains(r#"f_all[/"lab.frames.*"/]"#), "{mermaid}");
    assert!(
        mermaid.contains("  any_publisher --> f_all\n  f_all --> s_pre\n"),
        "{mermaid}"
    );
    assert!(mermaid.contains(r#"[/"lab.detections.*"/]"#), "{mermaid}");
    let dot = graph::dot(&t);
    assert!(!dot.contains("cluster_ingest"), "{dot}");
    assert!(dot.contains("  s_boxes -> r_1;\n"), "{dot}");
}

#[test]
fn only_leaves_and_sinks_publish() {
    let t = inline(
        r#"
cameras:
  - { id: a, source: { test_pattern: { text: A } } }
  - { id: b, source: { test_pattern: { text: B } } }
stages:
  - { id: pre, kind: operator, wasm: ../operators/dist/letterbox.wasm }
  - { id: boxes, kind: postprocess, postprocessor: db }
  - { id: tracks, kind: tracker }
  - { id: raw, kind: sink, input: boxes, subject: "{namespace}.raw.{stage}.{camera}" }
  - { id: again, kind: sink, input: tracks }
"#,
    );
    let dot = graph::dot(&t);
    // Both cameras' subjects feed the first stage.
    assert!(dot.contains("  f_a -> s_pre;\n  f_b -> s_pre;\n"), "{dot}");
    // `boxes` and `tracks` have readers, so they publish nothing themselves.
    assert!(!dot.contains("  s_boxes -> r_"), "{dot}");
    assert!(!dot.contains("  s_tracks -> r_"), "{dot}");
    assert!(
        dot.contains(r#"r_1 [shape=cds"#) && dot.contains(r#"label="panoptes.raw.raw.*"];"#),
        "{dot}"
    );
    assert!(
        dot.contains("  s_raw -> r_1;\n  s_again -> r_2;\n"),
        "{dot}"
    );
    assert!(dot.contains(r#"label="panoptes.detections.*"];"#), "{dot}");
}

#[test]
fn operators_show_what_they_emit_and_load() {
    let t = inline(
        r#"
models:
  det: { file: ../models/files/ch_PP-OCRv4_det_infer.onnx }
stages:
  - { id: decode, kind: operator, wasm: ../operators/dist/letterbox.wasm, emits: frames }
  - { id: pre, kind: operator, wasm: ../operators/dist/letterbox.wasm }
  - { id: boxes, kind: postprocess, postprocessor: db }
  - id: find-text
    kind: operator
    input: frames
    wasm: ../operators/dist/letterbox.wasm
    emits: detections
    models: [det]
    grants: { clock: true }
"#,
    );
    let dot = graph::dot(&t);
    assert!(
        dot.contains(r#"label="decode\noperator: letterbox.wasm\nemits frames"]"#),
        "{dot}"
    );
    // The default (tensors) is not spelled out.
    assert!(
        dot.contains(r#"label="pre\noperator: letterbox.wasm"]"#),
        "{dot}"
    );
    assert!(
        dot.contains(
            r#"label="find-text\noperator: letterbox.wasm\nemits detections\nmodels: det"]"#
        ),
        "{dot}"
    );
    // An operator that emits detections ends its branch on the default subject.
    assert!(dot.contains("  s_find_text -> r_1;\n"), "{dot}");
    let mermaid = graph::mermaid(&t);
    assert!(
        mermaid.contains(
            r#"s_find_text["find-text<br>operator: letterbox.wasm<br>emits detections<br>models: det"]"#
        ),
        "{mermaid}"
    );
}
