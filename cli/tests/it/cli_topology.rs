//! The topology commands as users run them: `validate` exit codes and located output, `schema`
//! matching the committed file, `graph` in both formats.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn panoptes(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(args)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .output()
        .expect("panoptes runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_the_examples_and_locates_every_problem() {
    let ok = panoptes(&[
        "validate",
        "topologies/quickstart.yaml",
        "topologies/ocr.yaml",
    ]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(
        text(&ok.stdout)
            .lines()
            .filter(|l| l.starts_with("ok: "))
            .count(),
        2
    );

    let bad = panoptes(&[
        "validate",
        "topologies/quickstart.yaml",
        "topology/tests/broken/unknown-input.yaml",
        "topology/tests/broken/wrong-types.yaml",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains("topology/tests/broken/unknown-input.yaml:16:12"),
        "{err}"
    );
    assert!(err.contains("did you mean `detect`?"), "{err}");
    // All five problems of the second file, not just the first.
    assert!(err.contains("wrong-types.yaml: 5 problems found"), "{err}");
    // The good file is still reported as good.
    assert!(text(&bad.stdout).contains("ok: topologies/quickstart.yaml"));

    let missing = panoptes(&["validate", "topologies/no-such-file.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("cannot read topology"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn schema_prints_the_committed_schema() {
    let out = panoptes(&["schema"]);
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("schema/topology.schema.json")).expect("committed"),
    )
    .expect("JSON");
    assert_eq!(printed, committed);
}

#[test]
fn graph_draws_cameras_stages_and_subjects() {
    let dot = panoptes(&["graph", "topologies/quickstart.yaml"]);
    assert!(dot.status.success(), "{}", text(&dot.stderr));
    let dot = text(&dot.stdout);
    assert!(dot.starts_with("digraph"), "{dot}");
    for needle in [
        "cam-alpha",
        "panoptes.frames.cam-alpha",
        "text-boxes",
        "panoptes.detections",
    ] {
        assert!(dot.contains(needle), "{needle} missing from\n{dot}");
    }
    let mermaid = panoptes(&[
        "graph",
        "--format",
        "mermaid",
        "topologies/rtsp-cameras.yaml",
    ]);
    assert!(mermaid.status.success());
    assert!(text(&mermaid.stdout).starts_with("flowchart LR"));

    let bad = panoptes(&["graph", "topology/tests/broken/cycle.yaml"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("cycle"), "{}", text(&bad.stderr));
}
