//! `panoptes operator keygen/sign/verify` as users run them, and `signed_by` enforced by
//! `panoptes validate --env` and by start-up (`build_graph`) on a topology using the module.
//!
//! Needs `operators/dist/letterbox.wasm`, the PP-OCRv4 det model and ONNX Runtime: run
//! `scripts/setup.sh` first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VERIFY: &[&str] = &[
    "operator",
    "verify",
    "--public-key",
    "ops.key.pub",
    "letterbox.wasm",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn panoptes(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("PANOPTES_SIGNING_KEY")
        .env_remove("PANOPTES_PUBLIC_KEY")
        .output()
        .expect("panoptes runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn sign_verify_and_validate_refuse_a_tampered_module() {
    let root = repo();
    let original = root.join("operators/dist/letterbox.wasm");
    let model = root.join("models/files/ch_PP-OCRv4_det_infer.onnx");
    for needed in [&original, &model] {
        assert!(
            needed.is_file(),
            "{} is missing: run scripts/setup.sh",
            needed.display()
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::copy(&original, d.join("letterbox.wasm")).expect("copy module");

    let keygen = panoptes(d, &["operator", "keygen", "--out", "ops.key"]);
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    assert!(d.join("ops.key").is_file() && d.join("ops.key.pub").is_file());
    let again = panoptes(d, &["operator", "keygen", "--out", "ops.key"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );

    let sign = panoptes(
        d,
        &["operator", "sign", "--key", "ops.key", "letterbox.wasm"],
    );
    assert!(sign.status.success(), "{}", text(&sign.stderr));
    assert!(d.join("letterbox.wasm.sig").is_file());

    let verify = panoptes(d, VERIFY);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(
        text(&verify.stdout).starts_with("ok: "),
        "{}",
        text(&verify.stdout)
    );

    let topology = format!(
        r#"models:
  det:
    file: {model}
stages:
  - id: preprocess
    kind: operator
    wasm: letterbox.wasm
    signed_by: ops.key.pub
    config: {{ width: 640, height: 640, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] }}
  - id: detect
    kind: model
    model: det
  - id: text-boxes
    kind: postprocess
    postprocessor: db
    label: text
"#,
        model = model.display()
    );
    std::fs::write(d.join("signed.yaml"), topology).expect("write topology");
    let valid = panoptes(d, &["validate", "--env", "signed.yaml"]);
    assert!(
        valid.status.success(),
        "stdout: {}\nstderr: {}",
        text(&valid.stdout),
        text(&valid.stderr)
    );

    // What `run` and `worker` build: the signed module loads.
    let topology = panoptes_topology::TopologyFile::load(&d.join("signed.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = panoptes::registry::build_graph(&topology) {
        panic!("signed module refused: {e:#}");
    }

    let module = d.join("letterbox.wasm");
    let mut bytes = std::fs::read(&module).expect("read module");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&module, &bytes).expect("tamper");

    let verify = panoptes(d, VERIFY);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        text(&verify.stderr).contains("signature of letterbox.wasm does not verify"),
        "{}",
        text(&verify.stderr)
    );

    // Start-up refuses the stage before compiling anything, naming the stage and the file.
    let err = match panoptes::registry::build_graph(&topology) {
        Ok(_) => panic!("a tampered module was loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(r#"stage "preprocess""#), "{err}");
    assert!(
        err.contains("letterbox.wasm does not verify against"),
        "{err}"
    );

    let refused = panoptes(d, &["validate", "--env", "signed.yaml"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    let err = text(&refused.stderr);
    // The problem is reported at the stage's `signed_by` line (line 8, after `signed_by: `).
    assert!(err.contains("signed.yaml:8:16"), "{err}");
    assert!(
        err.contains("does not verify against") && err.contains("ops.key.pub"),
        "{err}"
    );
}
