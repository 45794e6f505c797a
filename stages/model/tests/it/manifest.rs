//! The shipped model manifests (`models/*.yaml`) against the real files: every manifest loads,
//! agrees with models/fetch.sh on the sha256, describes its graph exactly (`check`) and resolves
//! its labels; broken manifests are refused with the manifest file and the field named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use panoptes_model::{
    Backend, ColorOrder, Device, Graph, GraphOptions, Labels, ManifestError, ModelManifest,
    PostprocessorKind,
};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn options(backend: Backend) -> GraphOptions {
    GraphOptions {
        backend,
        device: Device::Cpu,
        threads: 1,
    }
}

/// `file name -> sha256` from the `<path-in-wheel> <sha256>` lines of models/fetch.sh.
fn fetch_sh_hashes() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(models_dir().join("fetch.sh")).expect("models/fetch.sh");
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (path, sha) = (words.next()?, words.next()?);
            let ok = path.ends_with(".onnx")
                && sha.len() == 64
                && sha.bytes().all(|b| b.is_ascii_hexdigit())
                && words.next().is_none();
            let name = Path::new(path).file_name()?.to_string_lossy().into_owned();
            ok.then(|| (name, sha.to_owned()))
        })
        .collect()
}

fn manifests() -> Vec<ModelManifest> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .expect("models/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| ModelManifest::load(p).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn manifest(name: &str) -> ModelManifest {
    ModelManifest::load(&models_dir().join(format!("{name}.yaml")))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shipped_manifest_describes_its_model() {
    let hashes = fetch_sh_hashes();
    assert_eq!(hashes.len(), 4, "fetch.sh lists {hashes:?}");
    let all = manifests();
    let names: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["ddddocr-det", "ppocr-cls", "ppocr-v4-det", "ppocr-v4-rec"]
    );
    for m in &all {
        // The manifest is named after its file, and agrees with fetch.sh.
        let stem = m
            .path()
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        assert_eq!(stem.as_deref(), Some(m.name.as_str()));
        let file = m.file_path();
        let base = file.file_name().expect("file name").to_string_lossy();
        assert_eq!(
            m.sha256.as_deref(),
            hashes.get(base.as_ref()).map(String::as_str),
            "{}: sha256 differs from models/fetch.sh's for {base}",
            m.path().display()
        );
        let graph = m
            .load_model(&options(Backend::Ort))
            .unwrap_or_else(|e| panic!("{e}"));
        let labels = m.labels(&graph).unwrap_or_else(|e| panic!("{e}"));
        assert!(labels.is_some_and(|l| !l.is_empty()), "{}", m.name);
        assert!(m.postprocessor.is_some(), "{}", m.name);
        // Every shipped model takes BGR images (OpenCV), normalised.
        assert_eq!(m.normalization().color, ColorOrder::Bgr, "{}", m.name);
    }
}

#[test]
fn the_recogniser_charset_comes_from_the_model_metadata() {
    let m = manifest("ppocr-v4-rec");
    assert_eq!(m.labels, Some(Labels::Metadata("character".into())));
    assert_eq!(
        m.postprocessor.as_ref().map(|p| p.kind),
        Some(PostprocessorKind::Ctc)
    );
    let mut texts = Vec::new();
    for backend in [Backend::Ort, Backend::Tract] {
        let graph = m
            .load_model(&options(backend))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = graph.metadata("character").expect("a `character` key");
        assert!(graph.metadata("no-such-key").is_none());
        texts.push(text);
        let charset = m
            .labels(&graph)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("labels");
        // Output [N, T, C]: C = the characters + the CTC blank (class 0) + a space (last).
        let classes = graph.outputs()[0].shape[2].expect("a fixed class axis");
        assert_eq!(charset.len(), 6623, "{backend}");
        assert_eq!(classes, 6625, "{backend}");
        assert_eq!(classes, charset.len() + 2, "{backend}");
        assert!(charset.iter().all(|c| !c.is_empty()), "{backend}");
        assert!(
            !charset.iter().any(|c| c == " "),
            "the space is not in the list"
        );
        assert_eq!(charset[0], "'");
    }
    // Both backends read the same metadata; no line separators other than `\n` (Python's
    // `splitlines`, which RapidOCR uses, would split on them too).
    assert_eq!(texts[0], texts[1]);
    assert!(
        !texts[0].contains([
            '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}'
        ]),
        "unexpected line separators"
    );
    // Other shipped models carry no metadata.
    let det = manifest("ppocr-v4-det")
        .load_model(&options(Backend::Ort))
        .expect("det");
    assert_eq!(det.metadata_keys().count(), 0);
    assert_eq!(
        manifest("ppocr-v4-det").labels(&det).expect("labels"),
        Some(vec!["text".to_owned()])
    );
}

#[test]
fn max_batch_and_normalisation_come_from_the_first_input() {
    let dddd = manifest("ddddocr-det");
    assert_eq!(dddd.max_batch(), Some(1));
    let n = dddd.normalization();
    assert_eq!(
        (n.scale, n.mean.clone(), n.std.clone()),
        (1.0, vec![0.0; 3], vec![1.0; 3])
    );
    assert_eq!(n.apply(1, 114.0), 114.0);
    let det = manifest("ppocr-v4-det");
    assert_eq!(det.max_batch(), None);
    let n = det.normalization();
    assert_eq!(n.mean, vec![0.5; 3]);
    assert!((n.apply(0, 255.0) - 1.0).abs() < 1e-6 && (n.apply(2, 0.0) + 1.0).abs() < 1e-6);
}

/// A shipped manifest's text edited by `edit`, read as if it were `models/<name>.yaml` (so its
/// relative `file` still finds the real model).
fn edited(name: &str, edit: impl Fn(String) -> String) -> Result<ModelManifest, ManifestError> {
    let path = models_dir().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).expect("manifest");
    let changed = edit(text.clone());
    assert_ne!(changed, text, "the edit changed nothing");
    ModelManifest::parse(&changed, &path)
}

/// The error of an edited manifest, at load or at `load_model`; it must name the manifest
/// file and `field`.
fn error_of(name: &str, field: &str, edit: impl Fn(String) -> String) -> String {
    let err = match edited(name, edit) {
        Ok(m) => match m.load_model(&options(Backend::Ort)) {
            Ok(_) => panic!("an edited {name}.yaml was accepted"),
            Err(e) => e,
        },
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains(&format!("{name}.yaml")), "{msg}");
    assert!(msg.contains(field), "{msg}");
    msg
}

#[test]
fn a_wrong_fixed_dimension_is_named() {
    let msg = error_of("ddddocr-det", "inputs[0].shape[3]", |t| {
        t.replace("[1, 3, 416, 416]", "[1, 3, 416, 320]")
    });
    assert!(
        msg.contains("says 320") && msg.contains("fixes it to 416"),
        "{msg}"
    );
    let msg = error_of("ddddocr-det", "outputs[0].shape[2]", |t| {
        t.replace("[1, 3549, 6]", "[1, 3549, 7]")
    });
    assert!(msg.contains("output"), "{msg}");
    // A dimension the file fixes cannot be called dynamic.
    error_of("ppocr-v4-rec", "outputs[0].shape[2]", |t| {
        t.replace("[batch, time, 6625]", "[batch, time, classes]")
    });
    // Ranks.
    error_of("ppocr-cls", "outputs[0].shape", |t| {
        t.replace("shape: [batch, 2]", "shape: [batch, 2, 1]")
    });
    // Labels against the class axis.
    let msg = error_of("ppocr-cls", "labels", |t| {
        t.replace(r#"labels: ["0", "180"]"#, r#"labels: ["0", "90", "180"]"#)
    });
    assert!(msg.contains("3 labels"), "{msg}");
}

#[test]
fn a_missing_input_or_output_name_is_named() {
    let msg = error_of("ddddocr-det", "inputs[0].name", |t| {
        t.replace("name: images", "name: image")
    });
    assert!(
        msg.contains("no input `image`") && msg.contains("`images`"),
        "{msg}"
    );
    let msg = error_of("ppocr-v4-det", "outputs[0].name", |t| {
        t.replace("name: sigmoid_0.tmp_0", "name: sigmoid")
    });
    assert!(msg.contains("sigmoid_0.tmp_0"), "{msg}");
    let msg = error_of("ppocr-v4-det", "dtype", |t| {
        t.replace("dtype: f32", "dtype: u8")
    });
    assert!(msg.contains("inputs[0].dtype"), "{msg}");
}

#[test]
fn unknown_keys_are_refused() {
    let msg = error_of("ppocr-v4-det", "colour", |t| {
        t.replace("color: bgr", "colour: bgr")
    });
    assert!(msg.contains("unknown field"), "{msg}");
    error_of("ppocr-v4-det", "kind", |t| {
        t.replace("kind: db", "kind: dbnet")
    });
    error_of("ppocr-v4-rec", "metadat", |t| {
        t.replace("{ metadata: character }", "{ metadat: character }")
    });
}

#[test]
fn a_missing_file_is_named() {
    // The model file the manifest points at.
    let msg = error_of("ppocr-cls", "file", |t| {
        t.replace(
            "files/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "files/no-such-model.onnx",
        )
    });
    assert!(
        msg.contains("no-such-model.onnx") && msg.contains("fetch.sh"),
        "{msg}"
    );
    // The `file` key itself.
    let msg = error_of("ppocr-cls", "file", |t| {
        t.replace("file: files/ch_ppocr_mobile_v2.0_cls_infer.onnx\n", "")
    });
    assert!(msg.contains("missing field"), "{msg}");
    // A labels file.
    let msg = error_of("ppocr-cls", "labels.file", |t| {
        t.replace(
            r#"labels: ["0", "180"]"#,
            "labels: { file: no-such-labels.txt }",
        )
    });
    assert!(msg.contains("no-such-labels.txt"), "{msg}");
    // The manifest itself.
    let err = ModelManifest::load(&models_dir().join("no-such-manifest.yaml")).unwrap_err();
    assert!(err.to_string().contains("no-such-manifest.yaml"), "{err}");
    // A file that is not the one the manifest pins.
    let msg = error_of("ppocr-cls", "sha256", |t| {
        t.replace(
            "sha256: e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
            &format!("sha256: {}", "0".repeat(64)),
        )
    });
    assert!(msg.contains("refusing"), "{msg}");
}

#[test]
fn metadata_keys_of_a_graph_without_a_manifest() {
    let path = models_dir().join("files/ch_PP-OCRv4_rec_infer.onnx");
    let g = Graph::load("rec", &path, &options(Backend::Ort)).expect("rec");
    assert_eq!(g.metadata_keys().collect::<Vec<_>>(), ["character"]);
}
