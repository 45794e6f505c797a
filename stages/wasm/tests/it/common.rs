//! Helpers shared by the host's integration tests: finding built operators, small engines,
//! frames, and unpacking outputs.

use std::path::{Path, PathBuf};

use panoptes_contracts::frame::{PixelBuffer, PixelFormat as FrameFormat};
use panoptes_wasm::{
    Capabilities, EngineOptions, FrameResource, Input, OperatorEngine, OperatorInstance,
    OperatorModule, Output, Tensor, Transform, WasmError,
};

/// `operators/dist/<name>.wasm` (or under `$PANOPTES_OPERATOR_DIR`), which
/// `scripts/build-operators.sh` builds.
pub fn operator_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("PANOPTES_OPERATOR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../operators/dist"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the Wasm operators first with scripts/build-operators.sh \
         (or point PANOPTES_OPERATOR_DIR at a directory containing {name}.wasm)",
        path.display()
    );
    path
}

/// Small pools keep the parallel tests' virtual-memory reservations modest.
pub fn options() -> EngineOptions {
    EngineOptions {
        max_instances: 4,
        ..EngineOptions::default()
    }
}

pub fn load(name: &str, options: EngineOptions) -> (OperatorEngine, OperatorModule) {
    let engine = OperatorEngine::new(options).expect("engine");
    let module = engine
        .load(operator_path(name))
        .unwrap_or_else(|e| panic!("load {name}.wasm: {e}"));
    (engine, module)
}

/// A textured 8-bit RGB frame: gradients plus a high-frequency pattern, so resampling errors show.
pub fn rgb_frame(width: u32, height: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            for c in 0..3u32 {
                v.push(((x * 7 + y * 13 + c * 50) ^ (x.wrapping_mul(y) >> 3)) as u8);
            }
        }
    }
    v
}

/// The frame resource for camera `cam-1`.
pub fn frame(
    width: u32,
    height: u32,
    seq: u64,
    format: FrameFormat,
    pixels: &[u8],
) -> FrameResource {
    FrameResource {
        camera: "cam-1".into(),
        seq,
        capture_ts_ns: 1_700_000_000_000_000_000 + seq,
        width,
        height,
        format,
        pixels: Some(PixelBuffer::from_vec(pixels.to_vec())),
    }
}

pub fn rgb(width: u32, height: u32, seq: u64, pixels: &[u8]) -> FrameResource {
    frame(width, height, seq, FrameFormat::Rgb8, pixels)
}

/// Runs the instance on a frame that is its own input.
pub fn process_frame(
    instance: &mut OperatorInstance,
    frame: FrameResource,
) -> Result<Output, WasmError> {
    instance.process(frame, &Input::Frame)
}

/// The first tensor and the first transform of a tensor output; panics on other outputs.
pub fn first_tensor(output: Output) -> (Tensor, Option<Transform>) {
    match output {
        Output::Tensors(out) => {
            let transform = out.transforms.first().copied();
            let tensor = out.tensors.into_iter().next().expect("at least one tensor");
            (tensor, transform)
        }
        other => panic!("expected tensors, got {}", output_kind(&other)),
    }
}

pub fn output_kind(output: &Output) -> &'static str {
    match output {
        Output::Image(_) => "an image",
        Output::Tensors(_) => "tensors",
        Output::Detections(_) => "detections",
    }
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// A small RGB frame of `camera`, for the sandbox probes.
pub fn camera_frame(camera: &str, seq: u64) -> FrameResource {
    let (w, h) = (64, 48);
    FrameResource {
        camera: camera.into(),
        seq,
        capture_ts_ns: 0,
        width: w,
        height: h,
        format: FrameFormat::Rgb8,
        pixels: Some(PixelBuffer::from_vec(rgb_frame(w, h))),
    }
}

/// The label of the first detection of a call that must succeed (the `misbehave` fixtures
/// answer with one whole-frame detection).
pub fn first_label(result: Result<Output, WasmError>) -> String {
    match result.expect("the frame should succeed") {
        Output::Detections(d) => d[0].label.clone(),
        other => panic!("expected detections, got {}", output_kind(&other)),
    }
}

/// A `misbehave` fixture (any language) made with `config` and `caps`.
pub type MakeInstance<'a> = &'a dyn Fn(&str, Capabilities) -> OperatorInstance;

/// The `env` probe reads `name`: unset without a grant; with `name` granted as "granted", that
/// value if the language can read the environment at all (`readable`), else still unset.
pub fn check_env(make: MakeInstance<'_>, name: &str, readable: bool) {
    let config = format!(r#"{{"all": {{"env": "{name}"}}}}"#);
    let mut plain = make(&config, Capabilities::default());
    assert_eq!(
        first_label(process_frame(&mut plain, camera_frame("c", 1))),
        "unset"
    );
    let mut with_env = make(
        &config,
        Capabilities {
            env: vec![(name.into(), "granted".into())],
            ..Capabilities::default()
        },
    );
    assert_eq!(
        first_label(process_frame(&mut with_env, camera_frame("c", 1))),
        if readable { "granted" } else { "unset" }
    );
}

/// The `clock` probe: the wall clock reads 0 unless `clock` is granted.
pub fn check_clock(make: MakeInstance<'_>) {
    let config = r#"{"all": "clock"}"#;
    let mut frozen = make(config, Capabilities::default());
    assert_eq!(
        first_label(process_frame(&mut frozen, camera_frame("c", 1))),
        "clock 0"
    );
    let mut real = make(
        config,
        Capabilities {
            clock: true,
            ..Capabilities::default()
        },
    );
    let now: u64 = first_label(process_frame(&mut real, camera_frame("c", 1)))
        .trim_start_matches("clock ")
        .parse()
        .expect("seconds");
    assert!(now > 1_700_000_000, "a real wall clock reads {now}");
}
