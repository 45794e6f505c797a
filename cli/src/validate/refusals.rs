//! What `run`, `worker`, `ingest` and `validate --env` refuse to start with: features this
//! build does not run, devices it cannot use, and JPEG frames for stages that cannot read them.

use panoptes_topology::{
    Backend, CameraConfig, Diagnostic, FRAMES, OperatorStage, PathSeg, SinkFormat, StageConfig,
    TopologyFile, WireEncoding,
};

use std::path::Path;

use panoptes_contracts::PixelFormat;
use panoptes_wasm::WasmError;
use panoptes_wasm::accepts::AcceptsError;

use super::stage_path;

/// NATS's default `max_payload` (1 MiB): what `encoding: auto` cameras are checked against
/// where the server is not known (`run`, `worker` and `ingest` check before they connect;
/// `validate --env` asks the server).
pub const NATS_DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// Which parts of a topology a process runs, for [`unsupported`].
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub cameras: bool,
    pub stages: bool,
    /// The stages a worker runs when it runs some (`--stages`): a stage another unit runs may
    /// ask for what this build lacks (a CUDA model stage beside a CPU-only preprocessing unit).
    pub only_stages: Option<&'a [String]>,
}

impl Scope<'_> {
    pub const ALL: Scope<'static> = Scope {
        cameras: true,
        stages: true,
        only_stages: None,
    };
}

/// What the topology asks for that this build of the runtime does not do yet, within `scope`,
/// and cameras whose JPEG frames the stages could not read ([`jpeg_readers`], with `auto`
/// cameras judged against [`NATS_DEFAULT_MAX_PAYLOAD`]). `run`, `worker`, `ingest` and
/// `validate --env` refuse these instead of ignoring them.
pub fn unsupported(t: &TopologyFile, scope: Scope<'_>) -> Vec<Diagnostic> {
    refused(t, scope, None)
}

/// [`unsupported`] with `auto` cameras judged against the server's `max_payload` where known.
pub(super) fn refused(
    t: &TopologyFile,
    scope: Scope<'_>,
    max_payload: Option<usize>,
) -> Vec<Diagnostic> {
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
        if scope
            .only_stages
            .is_some_and(|only| !only.iter().any(|id| id == stage.id()))
        {
            continue;
        }
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
            StageConfig::Sink(s) if s.format == SinkFormat::Arrow => {
                not_yet(stage_path(i, "format"), "Arrow sink output".into());
            }
            _ => {}
        }
    }
    out.extend(no_device);
    out
}

/// Whether the operator at `path` (the file its stage would load) reads JPEG frames, by the
/// pixel formats its component declares (`export_operator!(Ty, accepts: [..])`, read by
/// [`panoptes_wasm::accepts`]): `None` for an operator that declares nothing, which may decode
/// JPEG itself (only running it could tell), and for a file that cannot be read or is not Wasm,
/// which the file check and `validate --env`'s load report on their own. A declaration that is
/// there but malformed is the error.
fn takes_jpeg(path: &Path) -> Result<Option<bool>, AcceptsError> {
    match panoptes_wasm::accepts::read_accepts(path) {
        Ok(declared) => Ok(declared.map(|formats| formats.contains(&PixelFormat::Jpeg))),
        Err(WasmError::Accepts {
            source: AcceptsError::NotWasm(_),
            ..
        }) => Ok(None),
        Err(WasmError::Accepts { source, .. }) => Err(source),
        Err(_) => Ok(None),
    }
}

/// Whether `cam`'s frames travel as JPEG on a server with this `max_payload` (`auto`: when a
/// raw frame would not fit, by the same rule as the ingest node's).
fn sends_jpeg(cam: &CameraConfig, max_payload: usize) -> bool {
    match cam.encoding {
        WireEncoding::Raw => false,
        WireEncoding::Jpeg => true,
        WireEncoding::Auto => {
            !panoptes_ingest::frame_out::raw_fits(cam.width, cam.height, max_payload)
        }
    }
}

/// Cameras that send JPEG frames to stages that cannot read them: every stage that reads
/// `frames` must take JPEG, and of the built-in operators only `jpeg` does (it passes raw frames
/// through, so raw and JPEG cameras share a chain behind it). Reported at the camera's
/// `encoding`, with the stage shown beside it. What an operator takes is what its component
/// declares; one that declares nothing is given the benefit of the doubt, and a malformed
/// declaration is reported at the stage's `wasm` (see [`takes_jpeg`]). The operator files are
/// read only when some camera sends JPEG. `max_payload` is the server's, where known; `auto`
/// cameras are otherwise judged against [`NATS_DEFAULT_MAX_PAYLOAD`].
pub fn jpeg_readers(t: &TopologyFile, max_payload: Option<usize>) -> Vec<Diagnostic> {
    let limit = max_payload.unwrap_or(NATS_DEFAULT_MAX_PAYLOAD);
    let whose = match max_payload {
        Some(_) => "the server's",
        None => "NATS's default",
    };
    let mut out = Vec::new();
    if !t.cameras.iter().any(|cam| sends_jpeg(cam, limit)) {
        return out;
    }
    let inputs = t.stage_inputs();
    let mut refusing: Vec<(usize, &OperatorStage)> = Vec::new();
    for (i, stage) in t.stages.iter().enumerate() {
        let StageConfig::Operator(op) = stage else {
            continue;
        };
        if inputs.get(i) != Some(&FRAMES) {
            continue;
        }
        // Resolved as the stage will load it.
        let path = crate::registry::module_spec(t, op).path;
        match takes_jpeg(&path) {
            Ok(Some(false)) => refusing.push((i, op)),
            Ok(_) => {}
            Err(e) => out.push(
                t.diagnostic_at(
                    &stage_path(i, "wasm"),
                    format!(
                        "cannot tell whether stage `{}` takes the JPEG frames it reads: {}: {e}",
                        op.id,
                        path.display()
                    ),
                )
                .help(
                    "rebuild the operator with the SDK's `export_operator!(Type, accepts: [..])`, which writes the section",
                ),
            ),
        }
    }
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
                .diagnostics(unsupported(
                    &t,
                    Scope {
                        cameras,
                        stages,
                        only_stages: None,
                    },
                ))
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
    fn a_worker_of_some_stages_is_judged_by_those_stages_only() {
        let stages = "  - { id: pre, kind: operator, wasm: \"{op:letterbox}\", config: { width: 160, height: 160 } }\n  - { id: det, kind: model, model: det, device: cuda }\n  - { id: boxes, kind: postprocess, postprocessor: db }\n";
        let t = wire_topology(&camera("cam-a", ""), stages);
        if panoptes_model::Device::Cuda.is_compiled() {
            return; // a CUDA build refuses nothing here
        }
        let all = t.diagnostics(unsupported(&t, Scope::ALL)).short();
        assert!(
            all.len() == 1 && all[0].contains("cannot run device cuda"),
            "{all:?}"
        );
        let pre = ["pre".to_owned()];
        let cpu_unit = Scope {
            only_stages: Some(&pre),
            ..Scope::ALL
        };
        assert_eq!(unsupported(&t, cpu_unit).len(), 0);
        let det = ["det".to_owned(), "boxes".to_owned()];
        let gpu_unit = Scope {
            only_stages: Some(&det),
            ..Scope::ALL
        };
        assert_eq!(unsupported(&t, gpu_unit).len(), 1);
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
    fn operators_that_declare_nothing_are_given_the_benefit_of_the_doubt() {
        // misbehave declares no formats: it may decode JPEG itself, which only running it
        // could tell.
        let stages = "  - { id: own, kind: operator, wasm: \"{op:misbehave-v2}\", emits: frames }\n  - { id: pre, kind: operator, wasm: \"{op:letterbox}\", config: { width: 160, height: 160 } }\n{tail:pre}";
        let t = wire_topology(&camera("cam-j", "    encoding: jpeg\n"), stages);
        assert_eq!(wire_problems(&t, None), Vec::<String>::new());
    }

    /// Copies of the built operators under other names, and one with a malformed declaration.
    fn renamed(dir: &std::path::Path) -> [String; 3] {
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../operators/dist");
        let copy = |from: &str, to: &str| {
            let path = dir.join(to);
            std::fs::copy(dist.join(from), &path).expect("copy");
            path.display().to_string()
        };
        let raw = copy("letterbox.wasm", "mine.wasm");
        let decoder = copy("jpeg.wasm", "letterbox.wasm");
        // A core module holding only a `panoptes:accepts` section that names no pixel format.
        let mut bad = b"\0asm\x01\0\0\0".to_vec();
        let body = [&[16u8][..], b"panoptes:accepts", b"v1 png"].concat();
        bad.extend([0, u8::try_from(body.len()).expect("short")]);
        bad.extend(body);
        let path = dir.join("bad.wasm");
        std::fs::write(&path, bad).expect("write");
        [raw, decoder, path.display().to_string()]
    }

    #[test]
    fn what_an_operator_takes_is_its_declaration_not_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let [raw, decoder, bad] = renamed(dir.path());
        let jpeg_cam = camera("cam-j", "    encoding: jpeg\n");
        let stage = |wasm: &str| {
            format!(
                "  - {{ id: pre, kind: operator, wasm: \"{wasm}\", config: {{ width: 160, height: 160 }} }}\n{{tail:pre}}"
            )
        };
        // letterbox's component under another name still takes raw frames only.
        let t = wire_topology(&jpeg_cam, &stage(&raw));
        let found = wire_problems(&t, None);
        assert!(
            found.len() == 1
                && found[0].contains("the `mine.wasm` operator, which takes raw frames only"),
            "{found:?}"
        );
        // jpeg's component named letterbox.wasm takes JPEG.
        let t = wire_topology(&jpeg_cam, &stage(&decoder));
        assert_eq!(wire_problems(&t, None), Vec::<String>::new());
        // A malformed declaration is reported at the stage's `wasm`, once JPEG is sent.
        let t = wire_topology(&jpeg_cam, &stage(&bad));
        let found = wire_problems(&t, None);
        assert!(
            found.len() == 1
                && found[0].starts_with("t.yaml:8:")
                && found[0]
                    .contains("cannot tell whether stage `pre` takes the JPEG frames it reads")
                && found[0].contains("bad.wasm")
                && found[0].contains("names `png`"),
            "{found:?}"
        );
        let t = wire_topology(&camera("cam-r", ""), &stage(&bad));
        assert_eq!(wire_problems(&t, None), Vec::<String>::new());
        // A file gone since the topology was read is the file check's to report (of a
        // topology read again), not this one's.
        let t = wire_topology(&jpeg_cam, &stage(&raw));
        std::fs::remove_file(&raw).expect("remove");
        assert_eq!(wire_problems(&t, None), Vec::<String>::new());
    }
}
