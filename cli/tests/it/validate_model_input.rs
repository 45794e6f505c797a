//! `panoptes validate --env` checks that each model stage's model takes the tensor the stage
//! before it produces: ddddocr's detector has a fixed 416×416 input, and behind a 640×640
//! letterbox every frame failed at run time while validation said `ok`. Real binary, real ONNX
//! files (read through their metadata), real topology files.

use std::path::Path;
use std::process::{Command, Stdio};

use panoptes_tests::{repo_root, require_setup};

/// A topology of `letterbox` to `width`×`height` feeding model `model` (manifest
/// `models/<manifest>.yaml`), then `postprocessor`, written to `<dir>/t.yaml`.
fn topology(dir: &Path, manifest: &str, size: (u32, u32), postprocessor: &str) {
    topology_shaped(dir, manifest, size, postprocessor, "fixed");
}

/// [`topology`] with the letterbox's `shape` (`fixed` or `frame`).
fn topology_shaped(
    dir: &Path,
    manifest: &str,
    (width, height): (u32, u32),
    postprocessor: &str,
    shape: &str,
) {
    let root = repo_root().canonicalize().expect("repository root");
    let text = format!(
        r#"models:
  m:
    manifest: {root}/models/{manifest}.yaml
stages:
  - id: preprocess
    kind: operator
    wasm: {root}/operators/dist/letterbox.wasm
    config: {{ width: {width}, height: {height}, shape: {shape} }}
  - id: detect
    kind: model
    model: m
  - id: boxes
    kind: postprocess
    postprocessor: {postprocessor}
"#,
        root = root.display()
    );
    std::fs::write(dir.join("t.yaml"), text).expect("write topology");
}

/// Runs `panoptes validate --env t.yaml` in `dir`: (success, stderr).
fn validate_env(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .current_dir(dir)
        .args(["validate", "--env", "t.yaml"])
        .env_remove("PANOPTES_NATS_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run panoptes validate");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stderr)
}

#[test]
fn a_fixed_size_model_behind_a_letterbox_of_another_size_is_refused_at_the_model_stage() {
    require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    topology(dir.path(), "ddddocr-det", (640, 640), "yolo");
    let (ok, stderr) = validate_env(dir.path());
    assert!(!ok, "validate --env accepted it:\n{stderr}");
    assert!(
        stderr.contains(
            "model `m` takes input `images` of shape [1, 3, 416, 416], but stage `preprocess` \
             (letterbox) produces [1, 3, 640, 640]"
        ),
        "{stderr}"
    );
    // Located at the model stage's `model:` line (line 11 of the file), the letterbox shown.
    assert!(stderr.contains("t.yaml:11:"), "{stderr}");
    assert!(
        stderr.contains("stage `preprocess` produces [1, 3, 640, 640]"),
        "{stderr}"
    );

    // The size the model takes passes.
    topology(dir.path(), "ddddocr-det", (416, 416), "yolo");
    let (ok, stderr) = validate_env(dir.path());
    assert!(ok, "a matching letterbox was refused:\n{stderr}");
}

#[test]
fn a_dynamic_model_is_held_to_the_multiple_its_manifest_asks_for() {
    require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    // PP-OCRv4's detector takes any height and width that are multiples of 32.
    topology(dir.path(), "ppocr-v4-det", (640, 480), "db");
    let (ok, stderr) = validate_env(dir.path());
    assert!(ok, "640x480 is two multiples of 32:\n{stderr}");

    topology(dir.path(), "ppocr-v4-det", (650, 480), "db");
    let (ok, stderr) = validate_env(dir.path());
    assert!(!ok, "validate --env accepted a width of 650:\n{stderr}");
    assert!(
        stderr.contains(
            "model `m` takes input `x` of shape [batch, 3, height, width] (dynamic height and \
             width in multiples of 32), but stage `preprocess` (letterbox) produces [1, 3, 480, 650]"
        ),
        "{stderr}"
    );
}

#[test]
fn a_frame_shaped_letterbox_needs_a_model_of_free_height_and_width() {
    require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    topology_shaped(dir.path(), "ppocr-v4-det", (640, 640), "db", "frame");
    let (ok, stderr) = validate_env(dir.path());
    assert!(
        ok,
        "PP-OCRv4's detector takes any multiple of 32:\n{stderr}"
    );

    topology_shaped(dir.path(), "ddddocr-det", (416, 416), "yolo", "frame");
    let (ok, stderr) = validate_env(dir.path());
    assert!(
        !ok,
        "validate --env accepted a fixed 416x416 model:\n{stderr}"
    );
    assert!(
        stderr.contains(
            "but stage `preprocess` (letterbox) produces tensors shaped to each frame (up to \
             [1, 3, 416, 416], sides in multiples of 32)"
        ),
        "{stderr}"
    );
}
