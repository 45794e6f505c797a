//! `validate --env`: the checks that need the machine. NATS answers (and its `max_payload`
//! judges `auto` cameras), models load and match their digests and manifests, operators load,
//! verify and start, and camera devices exist.

use std::time::Duration;

use panoptes_model::{Graph, GraphOptions};
use panoptes_topology::{Diagnostic, PathSeg, SourceConfig, StageConfig, TopologyFile};
use panoptes_wasm::{OperatorEngine, WasmError};

use super::model_input::model_input_mismatches;
use super::refusals::{Scope, refused};
use super::stage_path;

/// Checks that need the machine: files load, digests match, NATS answers.
pub async fn environment(t: &TopologyFile, nats: Option<&str>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    // `auto` cameras are judged against this server's max_payload when it answers.
    let mut max_payload = None;
    let url = nats.map(str::to_owned).or_else(|| t.nats.url.clone());
    if let Some(url) = url {
        match tokio::time::timeout(
            Duration::from_secs(5),
            crate::connect::connect_with(&url, &t.nats, &t.base_dir),
        )
        .await
        {
            Ok(Ok(client)) => {
                // 0 (the server did not say) refuses nothing, as at the ingest node.
                max_payload = Some(client.server_info().max_payload);
            }
            Ok(Err(e)) => {
                out.push(t.diagnostic_at(&["nats".into(), "url".into()], format!("{e:#}")))
            }
            Err(_) => out.push(t.diagnostic_at(
                &["nats".into(), "url".into()],
                format!("no answer from NATS at {url} within 5 s"),
            )),
        }
    }
    out.extend(refused(t, Scope::ALL, max_payload));
    let t2 = t.clone();
    match tokio::task::spawn_blocking(move || files(&t2)).await {
        Ok(found) => out.extend(found),
        Err(e) => out.push(Diagnostic::new(format!("file checks panicked: {e}"))),
    }
    out
}

fn files(t: &TopologyFile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (name, model) in &t.models {
        let at =
            |key: &str| -> Vec<PathSeg> { vec!["models".into(), name.as_str().into(), key.into()] };
        // Problems with the file are reported where it is named: `file`, or `manifest`.
        let file_path = at(if model.manifest.is_some() {
            "manifest"
        } else {
            "file"
        });
        let resolved = match crate::registry::resolve_model(t, name) {
            Ok(r) => r,
            Err(e) => {
                // A manifest that does not read, or a sha256 that disagrees with it.
                let key = if matches!(e, panoptes_model::build::BuildError::Manifest { .. }) {
                    &file_path
                } else {
                    &at("sha256")
                };
                out.push(t.diagnostic_at(key, format!("{:#}", anyhow::Error::from(e))));
                continue;
            }
        };
        let path = &resolved.path;
        if let Some(want) = &resolved.sha256 {
            // Declared in the topology, or else only in the manifest.
            let (key, whose) = match (&model.sha256, &resolved.manifest) {
                (None, Some(m)) => (file_path.clone(), format!(" in {}", m.path().display())),
                _ => (at("sha256"), String::new()),
            };
            match crate::registry::sha256_file(path) {
                Ok(got) if got.eq_ignore_ascii_case(want.trim()) => {}
                Ok(got) => out.push(t.diagnostic_at(
                    &key,
                    format!(
                        "{} has sha256 {got}, not the one declared{whose}",
                        path.display()
                    ),
                )),
                Err(e) => out.push(t.diagnostic_at(&file_path, format!("cannot read {e}"))),
            }
        }
        let opts = GraphOptions {
            threads: 1,
            ..GraphOptions::default()
        };
        let loaded = match Graph::load(name, path, &opts) {
            Ok(m) => m,
            Err(e) => {
                out.push(t.diagnostic_at(&file_path, format!("model `{name}` does not load: {e}")));
                continue;
            }
        };
        // The manifest must describe the file it names: inputs, outputs, shapes, labels.
        if let Some(manifest) = &resolved.manifest
            && let Err(e) = manifest.check(&loaded)
        {
            out.push(t.diagnostic_at(
                &file_path,
                format!("model `{name}` does not match its manifest: {e}"),
            ));
        }
        // What the stage before each model stage produces must be what the model takes.
        out.extend(model_input_mismatches(
            t,
            name,
            &loaded,
            resolved.manifest.as_deref(),
        ));
        // A fixed leading dimension is the most frames one call can take (the manifest may
        // fix one the file leaves dynamic).
        let graph_batch = loaded
            .inputs()
            .first()
            .and_then(|i| i.shape.first().copied().flatten())
            .into_iter()
            .chain(resolved.manifest.as_ref().and_then(|m| m.max_batch()))
            .min()
            .filter(|d| *d > 0)
            .map(|d| d as u64);
        let Some(graph_batch) = graph_batch else {
            continue;
        };
        if let Some(declared) = model.max_batch
            && u64::from(declared) > graph_batch
        {
            out.push(t.diagnostic_at(
                &["models".into(), name.as_str().into(), "max_batch".into()],
                format!("model `{name}` takes batches of {graph_batch} (its input's first dimension), not {declared}"),
            ));
        }
        for (i, stage) in t.stages.iter().enumerate() {
            if let StageConfig::Model(m) = stage
                && &m.model == name
                && let Some(b) = &m.batching
                && u64::from(b.max_batch) > graph_batch
            {
                out.push(t.diagnostic_at(
                    &["stages".into(), i.into(), "batching".into(), "max_batch".into()],
                    format!("model `{name}` takes batches of at most {graph_batch} (its input's first dimension), not {}", b.max_batch),
                ));
            }
        }
    }
    let mut engine: Option<OperatorEngine> = None;
    for (i, stage) in t.stages.iter().enumerate() {
        let StageConfig::Operator(op) = stage else {
            continue;
        };
        let path = t.resolve(&op.wasm);
        if let Some(digest) = &op.digest {
            match crate::registry::sha256_file(&path) {
                Ok(got) if crate::registry::digest_matches(&got, digest) => {}
                Ok(got) => out.push(t.diagnostic_at(
                    &stage_path(i, "digest"),
                    format!(
                        "{} has digest sha256:{got}, not the one declared",
                        path.display()
                    ),
                )),
                Err(e) => {
                    out.push(t.diagnostic_at(&stage_path(i, "wasm"), format!("cannot read {e}")))
                }
            }
        }
        if engine.is_none() {
            match crate::registry::operator_engine(None) {
                Ok(e) => engine = Some(e),
                Err(e) => {
                    out.push(Diagnostic::new(format!(
                        "cannot create the Wasm engine: {e}"
                    )));
                    return out;
                }
            }
        }
        let Some(engine) = &engine else { continue };
        // Load what was verified, as `run` does; an unverified module is not loaded at all.
        let spec = crate::registry::module_spec(t, op);
        let loaded = match spec.read_checked() {
            Ok(bytes) => engine.load_bytes(&spec.path, &bytes),
            Err(e @ WasmError::Signature { .. }) => {
                out.push(t.diagnostic_at(&stage_path(i, "signed_by"), e.to_string()));
                continue;
            }
            // Reported above, at `digest`.
            Err(WasmError::Digest { .. }) => continue,
            Err(e) => Err(e),
        };
        let module = match loaded {
            Ok(module) => module,
            Err(e) => {
                out.push(t.diagnostic_at(
                    &stage_path(i, "wasm"),
                    format!("operator {} does not load: {e}", path.display()),
                ));
                continue;
            }
        };
        let started = crate::registry::instance_spec(t, op)
            .map_err(anyhow::Error::from)
            .and_then(|spec| Ok(spec.instantiate(&module)?));
        if let Err(e) = started {
            out.push(t.diagnostic_at(
                &stage_path(i, "config"),
                format!("operator {} does not start: {e:#}", path.display()),
            ));
        }
    }
    for (i, cam) in t.cameras.iter().enumerate() {
        if let SourceConfig::V4l2(v) = &cam.source
            && !v.device.exists()
        {
            out.push(t.diagnostic_at(
                &[
                    "cameras".into(),
                    i.into(),
                    "source".into(),
                    "v4l2".into(),
                    "device".into(),
                ],
                format!(
                    "camera `{}`: device {} does not exist on this machine",
                    cam.id,
                    v.device.display()
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topology in a temporary directory whose model `det` has the given fields, and a
    /// manifest `m.yaml` there: the shipped PP-OCRv4 detector's, edited.
    fn with_manifest(
        model: &str,
        edit: impl Fn(String) -> String,
    ) -> (tempfile::TempDir, TopologyFile) {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = tempfile::tempdir().expect("tempdir");
        let shipped =
            std::fs::read_to_string(repo.join("models/ppocr-v4-det.yaml")).expect("manifest");
        let file = repo.join("models/files/ch_PP-OCRv4_det_infer.onnx");
        let text = shipped.replace(
            "file: files/ch_PP-OCRv4_det_infer.onnx",
            &format!("file: {}", file.display()),
        );
        std::fs::write(dir.path().join("m.yaml"), edit(text)).expect("writable");
        let topology = format!(
            "models:\n  det:\n{model}\nstages:\n  - {{ id: pre, kind: operator, wasm: {} }}\n  - {{ id: d, kind: model, model: det }}\n  - {{ id: boxes, kind: postprocess, postprocessor: db }}\n",
            repo.join("operators/dist/letterbox.wasm").display()
        );
        let t = TopologyFile::parse(&topology, "t.yaml", dir.path(), &|_| None)
            .unwrap_or_else(|d| panic!("{d}"));
        (dir, t)
    }

    fn file_problems(t: &TopologyFile) -> Vec<String> {
        t.diagnostics(files(t)).short()
    }

    #[test]
    fn a_manifest_is_checked_against_its_model_at_its_line() {
        let (_dir, t) = with_manifest("    manifest: m.yaml", |s| s);
        assert_eq!(file_problems(&t), Vec::<String>::new());

        let (_dir, t) = with_manifest("    manifest: m.yaml", |s| {
            s.replace("name: sigmoid_0.tmp_0", "name: probabilities")
        });
        let found = file_problems(&t);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("t.yaml:3:") && found[0].contains("outputs[0].name"),
            "{found:?}"
        );

        // A manifest that does not read is reported at the same place.
        let (_dir, t) = with_manifest("    manifest: m.yaml", |s| s.replace("color:", "colour:"));
        let found = file_problems(&t);
        assert!(
            found.len() == 1 && found[0].contains("t.yaml:3:") && found[0].contains("colour"),
            "{found:?}"
        );

        // A sha256 in the topology that is not the manifest's: at `sha256`.
        let zeros = "0".repeat(64);
        let (_dir, t) = with_manifest(
            &format!("    manifest: m.yaml\n    sha256: \"{zeros}\""),
            |s| s,
        );
        let found = file_problems(&t);
        assert!(
            found.len() == 1 && found[0].contains("t.yaml:4:"),
            "{found:?}"
        );

        // The manifest's own sha256 against the file: at `manifest`.
        let (_dir, t) = with_manifest("    manifest: m.yaml", |s| {
            s.replace("sha256: d2a7720d", "sha256: 00000000")
        });
        let found = file_problems(&t);
        assert!(
            found.len() == 1 && found[0].contains("t.yaml:3:") && found[0].contains("m.yaml"),
            "{found:?}"
        );
    }
}
