//! Helpers shared by the host's integration tests: finding built operators, small engines,
//! frames, and unpacking outputs.

use std::path::{Path, PathBuf};

use panoptes_contracts::frame::{PixelBuffer, PixelFormat as FrameFormat};
use panoptes_wasm::{
    EngineOptions, FrameResource, Input, OperatorEngine, OperatorInstance, OperatorModule, Output,
    Tensor, Transform, WasmError,
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
