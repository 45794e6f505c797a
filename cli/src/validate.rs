//! `panoptes validate`: structural checks (always) and environment checks (`--env`: NATS
//! reachable, models and operators load, digests and signatures match, what this build can run),
//! every problem reported against its line in the topology file. [`unsupported`] is also what
//! `run`, `worker` and `ingest` refuse to start with, JPEG frames for stages that cannot read
//! them included.

use std::time::Duration;

use panoptes_model::{Graph, GraphOptions, ManifestError};
use panoptes_topology::{
    Backend, CameraConfig, Diagnostic, FRAMES, OperatorStage, PathSeg, SinkFormat, SourceConfig,
    StageConfig, TopologyFile, WireEncoding,
};
use panoptes_wasm::{OperatorEngine, WasmError};

/// NATS's default `max_payload` (1 MiB): what `encoding: auto` cameras are checked against
/// where the server is not known (`run`, `worker` and `ingest` check before they connect;
/// `validate --env` asks the server).
pub const NATS_DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// The operator that decodes JPEG frames (and passes raw ones through): `operators/jpeg`,
/// shipped as `jpeg.wasm`.
const JPEG_OPERATOR: &str = "jpeg";

/// The other built-in operators (`scripts/build-operators.sh`), none of which reads JPEG.
const RAW_ONLY_OPERATORS: &[&str] = &[
    "letterbox",
    "resize",
    "normalize",
    "colorconvert",
    "crop",
    "onnx",
    "misbehave",
];

/// `stages[i].<key>` as a path.
fn stage_path(i: usize, key: &str) -> Vec<PathSeg> {
    vec!["stages".into(), i.into(), key.into()]
}

/// Which parts of a topology a process runs, for [`unsupported`].
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    pub cameras: bool,
    pub stages: bool,
}

impl Scope {
    pub const ALL: Scope = Scope {
        cameras: true,
        stages: true,
    };
}

/// What the topology asks for that this build of the runtime does not do yet, within `scope`,
/// and cameras whose JPEG frames the stages could not read ([`jpeg_readers`], with `auto`
/// cameras judged against [`NATS_DEFAULT_MAX_PAYLOAD`]). `run`, `worker`, `ingest` and
/// `validate --env` refuse these instead of ignoring them.
pub fn unsupported(t: &TopologyFile, scope: Scope) -> Vec<Diagnostic> {
    refused(t, scope, None)
}

/// [`unsupported`] with `auto` cameras judged against the server's `max_payload` where known.
fn refused(t: &TopologyFile, scope: Scope, max_payload: Option<usize>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    // Both sides of a deployment read the same file, and either one alone cannot work with
    // the other: an ingest node would send frames every worker fails.
    if scope.cameras || scope.stages {
        out.extend(jpeg_readers(t, max_payload));
    }
    let mut not_yet = |path: Vec<PathSeg>, what: String| {
        out.push(t.diagnostic_at(
            &path,
            format!("this build of panoptes does not run {what} yet"),
        ));
    };
    let stages = if scope.stages {
        t.stages.as_slice()
    } else {
        &[]
    };
    // A device is refused only where this build cannot use it; `not_yet` does not fit ("not
    // yet" is wrong: another build or backend has it), so these are worded on their own.
    let mut no_device = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        match stage {
            StageConfig::Model(m) => {
                let device = crate::registry::graph_options(m).device;
                if m.backend == Backend::Tract && device != panoptes_model::Device::Cpu {
                    no_device.push(t.diagnostic_at(
                        &stage_path(i, "device"),
                        format!(
                            "the tract backend runs on the CPU only; device {device} needs `backend: ort`"
                        ),
                    ));
                } else if let Some(feature) = device.feature().filter(|_| !device.is_compiled()) {
                    no_device.push(t.diagnostic_at(
                        &stage_path(i, "device"),
                        format!(
                            "this build of panoptes has no `{feature}` feature, so it cannot run device {device}; rebuild with `--features {feature}`"
                        ),
                    ));
                }
            }
            StageConfig::Tracker(_) => not_yet(stage_path(i, "kind"), "the tracker stage".into()),
            StageConfig::Sink(s) if s.format == SinkFormat::Arrow => {
                not_yet(stage_path(i, "format"), "Arrow sink output".into());
            }
            _ => {}
        }
    }
    out.extend(no_device);
    out
}

/// Whether an operator stage reads JPEG frames, told by its file's name: `Some(true)` for the
/// built-in `jpeg` operator, `Some(false)` for the other built-in ones, `None` for an operator
/// of the user's own, which may decode JPEG itself (nothing in a component declares the pixel
/// formats it takes, so only running it could tell).
fn takes_jpeg(op: &OperatorStage) -> Option<bool> {
    let name = op.wasm.file_stem()?.to_str()?;
    if name == JPEG_OPERATOR {
        Some(true)
    } else if RAW_ONLY_OPERATORS.contains(&name) {
        Some(false)
    } else {
        None
    }
}

/// Whether `cam`'s frames travel as JPEG on a server with this `max_payload` (`auto`: when a
/// raw frame would not fit, by the same rule as the ingest node's).
fn sends_jpeg(cam: &CameraConfig, max_payload: usize) -> bool {
    match cam.encoding {
        WireEncoding::Raw => false,
        WireEncoding::Jpeg => true,
        WireEncoding::Auto => !crate::frame_out::raw_fits(cam.width, cam.height, max_payload),
    }
}

/// Cameras that send JPEG frames to stages that cannot read them: every stage that reads
/// `frames` must take JPEG, and today only the `jpeg` operator does (it passes raw frames
/// through, so raw and JPEG cameras share a chain behind it). Reported at the camera's
/// `encoding`, with the stage shown beside it. Stages whose operator is not a built-in one are
/// given the benefit of the doubt (see [`takes_jpeg`]). `max_payload` is the server's, where
/// known; `auto` cameras are otherwise judged against [`NATS_DEFAULT_MAX_PAYLOAD`].
pub fn jpeg_readers(t: &TopologyFile, max_payload: Option<usize>) -> Vec<Diagnostic> {
    let limit = max_payload.unwrap_or(NATS_DEFAULT_MAX_PAYLOAD);
    let whose = match max_payload {
        Some(_) => "the server's",
        None => "NATS's default",
    };
    let inputs = t.stage_inputs();
    let refusing: Vec<(usize, &OperatorStage)> = t
        .stages
        .iter()
        .enumerate()
        .filter(|(i, _)| inputs.get(*i) == Some(&FRAMES))
        .filter_map(|(i, stage)| match stage {
            StageConfig::Operator(op) if takes_jpeg(op) == Some(false) => Some((i, op)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (c, cam) in t.cameras.iter().enumerate() {
        if !sends_jpeg(cam, limit) {
            continue;
        }
        let otherwise = match cam.encoding {
            WireEncoding::Auto => "or raise the server's max_payload so that raw frames fit",
            _ => "or send this camera's frames raw",
        };
        let why = match cam.encoding {
            WireEncoding::Auto => format!(
                "`encoding: auto`, and a raw {}x{} frame, {} bytes plus framing, is over {whose} max_payload of {limit} bytes",
                cam.width,
                cam.height,
                u64::from(cam.width) * u64::from(cam.height) * 3
            ),
            _ => "`encoding: jpeg`".to_owned(),
        };
        for (i, op) in &refusing {
            let name = op.wasm.file_name().map_or_else(
                || op.wasm.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let mut d = t
                .diagnostic_at(
                    &["cameras".into(), c.into(), "encoding".into()],
                    format!(
                        "camera `{}` sends JPEG frames ({why}), but stage `{}` reads frames with the `{name}` operator, which takes raw frames only",
                        cam.id, op.id
                    ),
                )
                .label("frames travel as JPEG")
                .help(format!(
                    "put the `jpeg` operator (operators/dist/jpeg.wasm, `emits: frames`) before `{}`: it decodes JPEG and passes raw frames through, so raw and JPEG cameras can share the chain; {otherwise}",
                    op.id
                ));
            if let Some(span) = t.diagnostic_at(&stage_path(*i, "wasm"), "").span {
                d = d.related(span, format!("stage `{}` takes raw frames", op.id));
            }
            out.push(d);
        }
    }
    out
}

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
                let key = if e.downcast_ref::<ManifestError>().is_some() {
                    &file_path
                } else {
                    &at("sha256")
                };
                out.push(t.diagnostic_at(key, format!("{e:#}")));
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
        let started =
            crate::registry::instance_spec(t, op).and_then(|spec| Ok(spec.instantiate(&module)?));
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

/// The tensor an operator stage hands the next stage, where its configuration tells:
/// `[1, 3, height, width]` from the built-in `letterbox` (640×640 unless configured) and from
/// the built-in `resize` with `"output": "tensor"`. `None` for anything else (an operator of the
/// user's own declares no shapes; only running it could tell).
fn operator_tensor_shape(op: &OperatorStage) -> Option<[usize; 4]> {
    let size = |key: &str, default: Option<u64>| match op.config.get(key) {
        Some(v) => v.as_u64(),
        None => default,
    };
    let (width, height) = match op.wasm.file_stem()?.to_str()? {
        "letterbox" => (size("width", Some(640))?, size("height", Some(640))?),
        "resize" if op.config.get("output").and_then(|v| v.as_str()) == Some("tensor") => {
            (size("width", None)?, size("height", None)?)
        }
        _ => return None,
    };
    Some([
        1,
        3,
        usize::try_from(height).ok()?,
        usize::try_from(width).ok()?,
    ])
}

/// Model stages of model `name` whose input stage produces a tensor (see
/// [`operator_tensor_shape`]) that the model's first input does not take, so that every frame
/// would fail in the model at run time. The model's dimensions are the file's where it fixes
/// them, else the manifest's, which may also ask for sizes that are a multiple of a number.
/// Reported at the model stage's `model`, with the producing stage's `config` beside it.
fn model_input_mismatches(
    t: &TopologyFile,
    name: &str,
    graph: &Graph,
    manifest: Option<&panoptes_model::ModelManifest>,
) -> Vec<Diagnostic> {
    let Some(input) = graph.inputs().first() else {
        return Vec::new();
    };
    let spec = manifest.and_then(|m| m.inputs.first());
    // Each axis: its fixed size, or the manifest's name for it ("?" where nothing names it).
    let dims: Vec<Result<usize, String>> = input
        .shape
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let declared = spec.and_then(|s| s.shape.get(k));
            match (d, declared) {
                (Some(n), _) => Ok(*n),
                (None, Some(panoptes_model::Dim::Fixed(n))) => Ok(*n),
                (None, Some(panoptes_model::Dim::Dynamic(s))) => Err(s.clone()),
                (None, None) => Err("?".to_owned()),
            }
        })
        .collect();
    let multiple = spec
        .and_then(|s| s.resize.as_ref())
        .and_then(|r| r.multiple_of)
        .filter(|m| *m > 1);
    let (_, h_axis, w_axis) = spec
        .and_then(|s| s.layout)
        .unwrap_or(panoptes_model::Layout::Nchw)
        .axes();
    let shown = |dims: &[Result<usize, String>]| {
        let parts: Vec<String> = dims
            .iter()
            .map(|d| match d {
                Ok(n) => n.to_string(),
                Err(s) => s.clone(),
            })
            .collect();
        format!("[{}]", parts.join(", "))
    };
    let inputs = t.stage_inputs();
    let mut out = Vec::new();
    for (i, stage) in t.stages.iter().enumerate() {
        let StageConfig::Model(m) = stage else {
            continue;
        };
        // Cascade stages cut their own crops to the model's size.
        if m.model != name || m.crops.is_some() {
            continue;
        }
        let Some(from) = inputs.get(i) else { continue };
        let Some((j, StageConfig::Operator(op))) =
            t.stages.iter().enumerate().find(|(_, s)| s.id() == *from)
        else {
            continue;
        };
        let Some(produced) = operator_tensor_shape(op) else {
            continue;
        };
        // The batch axis is the stage's to fill; every other axis must take what arrives.
        let fits =
            dims.len() == produced.len()
                && dims.iter().zip(produced).enumerate().skip(1).all(
                    |(k, (want, got))| match want {
                        Ok(n) => *n == got,
                        Err(_) => match multiple {
                            Some(m) if k == h_axis || k == w_axis => got % m == 0,
                            _ => true,
                        },
                    },
                );
        if fits {
            continue;
        }
        let operator = op
            .wasm
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let produced_text = shown(&produced.map(Ok::<usize, String>));
        let multiple_text = multiple
            .map(|m| format!(" (dynamic height and width in multiples of {m})"))
            .unwrap_or_default();
        let mut d = t
            .diagnostic_at(
                &stage_path(i, "model"),
                format!(
                    "model `{name}` takes input `{}` of shape {}{multiple_text}, but stage `{}` ({operator}) produces {produced_text}: every frame would fail in stage `{}`",
                    input.name,
                    shown(&dims),
                    op.id,
                    m.id
                ),
            )
            .label(format!("takes {}", shown(&dims)))
            .help(format!(
                "make `{}`'s `width` and `height` what the model takes, or use a model exported for {}x{}",
                op.id, produced[3], produced[2]
            ));
        let config = if op.config.is_null() {
            "wasm"
        } else {
            "config"
        };
        if let Some(span) = t.diagnostic_at(&stage_path(j, config), "").span {
            d = d.related(span, format!("stage `{}` produces {produced_text}", op.id));
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> TopologyFile {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../topologies")
            .join(format!("{name}.yaml"));
        TopologyFile::load(&path).unwrap_or_else(|d| panic!("{d}"))
    }

    #[test]
    fn quickstart_and_ocr_ask_for_nothing_this_build_lacks() {
        for name in ["quickstart", "ocr"] {
            let t = example(name);
            let found = t.diagnostics(unsupported(&t, Scope::ALL)).short();
            assert!(found.is_empty(), "{name}: {found:?}");
        }
    }

    #[test]
    fn unsupported_features_are_named_at_their_lines() {
        // distributed.yaml without its `decode` stage: the `warehouse` camera's JPEG frames
        // would reach the letterbox operator.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
        let text = std::fs::read_to_string(dir.join("distributed.yaml")).expect("example");
        let decode = text
            .lines()
            .find(|l| l.contains("id: decode"))
            .expect("distributed.yaml decodes JPEG first")
            .to_owned();
        let text = text.replace(&format!("{decode}\n"), "");
        let t = TopologyFile::parse(&text, "distributed.yaml", &dir, &|_| None)
            .unwrap_or_else(|d| panic!("{d}"));
        let found = t.diagnostics(unsupported(&t, Scope::ALL)).short();
        let text = found.join("\n");
        assert!(
            text.contains("camera `warehouse` sends JPEG frames"),
            "JPEG not reported:\n{text}"
        );
        assert!(
            found.iter().all(|l| l.contains("distributed.yaml:")),
            "{text}"
        );
        // Ingest nodes and workers read the same file, and neither works with the other here.
        for (cameras, stages) in [(true, false), (false, true)] {
            let one = t
                .diagnostics(unsupported(&t, Scope { cameras, stages }))
                .short();
            assert!(one.join("\n").contains("warehouse"), "{one:?}");
        }
        // With the decode stage, as the example has it, nothing is refused.
        let t = example("distributed");
        let found = t.diagnostics(unsupported(&t, Scope::ALL)).short();
        assert!(found.is_empty(), "{found:?}");
    }

    /// A topology of `cameras` (YAML list items) and `stages`, the operators named by file in
    /// `operators/dist`: `{op:letterbox}` becomes that file's absolute path. `{tail:<input>}`
    /// becomes a detector and DB boxes reading `<input>`, so every branch ends in detections.
    fn wire_topology(cameras: &str, stages: &str) -> TopologyFile {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let repo = repo.canonicalize().unwrap_or(repo);
        let dist = repo.join("operators/dist");
        let mut text = format!(
            "models:\n  det: {{ manifest: \"{}\" }}\ncameras:\n{cameras}stages:\n{stages}",
            repo.join("models/ppocr-v4-det.yaml").display()
        );
        while let Some(at) = text.find("{tail:") {
            let end = at + text[at..].find('}').unwrap_or(0);
            let input = text[at + 6..end].to_owned();
            let tail = format!(
                "  - {{ id: det-{input}, kind: model, model: det, input: {input} }}\n  - {{ id: boxes-{input}, kind: postprocess, postprocessor: db }}\n"
            );
            text.replace_range(at..=end, &tail);
        }
        for name in ["jpeg", "letterbox", "misbehave-v2"] {
            text = text.replace(
                &format!("{{op:{name}}}"),
                &dist.join(format!("{name}.wasm")).display().to_string(),
            );
        }
        TopologyFile::parse(&text, "t.yaml", &dist, &|_| None).unwrap_or_else(|d| panic!("{d}"))
    }

    const LETTERBOX: &str = "  - { id: pre, kind: operator, wasm: \"{op:letterbox}\", config: { width: 160, height: 160 } }\n{tail:pre}";
    const JPEG_FIRST: &str = "  - { id: decode, kind: operator, wasm: \"{op:jpeg}\", emits: frames }\n  - { id: pre, kind: operator, wasm: \"{op:letterbox}\", config: { width: 160, height: 160 } }\n{tail:pre}";

    fn camera(id: &str, extra: &str) -> String {
        format!("  - id: {id}\n    source: {{ test_pattern: {{ text: x }} }}\n{extra}")
    }

    fn wire_problems(t: &TopologyFile, max_payload: Option<usize>) -> Vec<String> {
        t.diagnostics(jpeg_readers(t, max_payload)).short()
    }

    #[test]
    fn jpeg_frames_need_the_jpeg_operator_first() {
        let jpeg_cam = camera("cam-j", "    encoding: jpeg\n");
        // Raw cameras are no concern; the jpeg operator reads both.
        let t = wire_topology(&camera("cam-r", ""), LETTERBOX);
        assert_eq!(wire_problems(&t, None), Vec::<String>::new());
        let t = wire_topology(&format!("{}{jpeg_cam}", camera("cam-r", "")), JPEG_FIRST);
        assert_eq!(wire_problems(&t, None), Vec::<String>::new());

        let t = wire_topology(&jpeg_cam, LETTERBOX);
        let found = wire_problems(&t, None);
        assert_eq!(found.len(), 1, "{found:?}");
        // Line 6: the camera's `encoding`.
        assert!(
            found[0].starts_with("t.yaml:6:")
                && found[0].contains("camera `cam-j` sends JPEG frames (`encoding: jpeg`)")
                && found[0].contains("stage `pre` reads frames with the `letterbox.wasm` operator, which takes raw frames only"),
            "{found:?}"
        );
        let d = &jpeg_readers(&t, None)[0];
        assert!(d.related.is_some(), "the stage is shown beside the camera");
        assert!(
            d.help
                .as_deref()
                .is_some_and(|h| h.contains("operators/dist/jpeg.wasm")),
            "{d:?}"
        );
        // And `run`, `worker` and `ingest` refuse it.
        assert_eq!(unsupported(&t, Scope::ALL).len(), 1);
    }

    #[test]
    fn every_stage_reading_frames_must_take_jpeg() {
        // Fan-out: the jpeg operator on one branch does not help the other.
        let stages = format!(
            "{JPEG_FIRST}  - {{ id: raw-branch, kind: operator, input: frames, wasm: \"{{op:letterbox}}\", config: {{ width: 64, height: 64 }} }}\n{{tail:raw-branch}}"
        );
        let t = wire_topology(&camera("cam-j", "    encoding: jpeg\n"), &stages);
        let found = wire_problems(&t, None);
        assert!(
            found.len() == 1 && found[0].contains("stage `raw-branch`"),
            "{found:?}"
        );
    }

    #[test]
    fn auto_cameras_are_judged_by_max_payload() {
        // 1280x720 RGB is 2,764,800 bytes: JPEG under NATS's default 1 MiB, raw under 8 MB.
        let t = wire_topology(&camera("cam-a", "    encoding: auto\n"), LETTERBOX);
        let found = wire_problems(&t, None);
        assert!(
            found.len() == 1
                && found[0].contains("`encoding: auto`, and a raw 1280x720 frame, 2764800 bytes plus framing, is over NATS's default max_payload of 1048576 bytes"),
            "{found:?}"
        );
        assert_eq!(wire_problems(&t, Some(8 << 20)), Vec::<String>::new());
        let found = wire_problems(&t, Some(2_000_000));
        assert!(
            found[0].contains("the server's max_payload of 2000000"),
            "{found:?}"
        );
        // 0: the server set no limit, so frames stay raw.
        assert_eq!(wire_problems(&t, Some(0)), Vec::<String>::new());
        // 640x480 (921,600 bytes) fits 1 MiB with the framing allowance.
        let small = camera(
            "cam-a",
            "    encoding: auto\n    width: 640\n    height: 480\n",
        );
        let t = wire_topology(&small, LETTERBOX);
        assert_eq!(wire_problems(&t, None), Vec::<String>::new());
    }

    #[test]
    fn operators_of_the_users_own_are_given_the_benefit_of_the_doubt() {
        // Not a built-in name: it may decode JPEG itself, which only running it could tell.
        let stages = "  - { id: own, kind: operator, wasm: \"{op:misbehave-v2}\", emits: frames }\n  - { id: pre, kind: operator, wasm: \"{op:letterbox}\", config: { width: 160, height: 160 } }\n{tail:pre}";
        let t = wire_topology(&camera("cam-j", "    encoding: jpeg\n"), stages);
        assert_eq!(wire_problems(&t, None), Vec::<String>::new());
    }

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
