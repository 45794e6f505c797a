//! Per-frame cost of each built-in operator through the Wasm host versus its native kernel.
//!
//! Wasm is timed through `OperatorInstance::process`, so whatever a call costs beyond the kernel
//! is included (the built-in operators are kernel operators, world `kernel-operator@0.3.0`:
//! the frame and the result stay on the host, so that is the call, not copies); native is the same `panoptes-op-preprocess` kernel called
//! directly with reused state (what a native operator would do). Both run in this process,
//! alternating run by run so that load from other processes hits both alike, and the table
//! reports medians.
//!
//! ```text
//! scripts/build-operators.sh
//! cargo bench -p panoptes-wasm --bench operators            # PANOPTES_BENCH_RUNS=50 for more
//! cargo bench -p panoptes-wasm --bench operators -- crop jpeg  # only these; --help for options
//! ```

#[path = "../tests/it/common.rs"]
#[allow(dead_code)] // The benchmark uses a subset of the tests' helpers.
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use panoptes_contracts::frame::{PixelBuffer, PixelFormat as FrameFormat};
use panoptes_op_preprocess::color::{Layout, Matrix, Range, YuvToRgb};
use panoptes_op_preprocess::crop::{self, Crop};
use panoptes_op_preprocess::jpeg::{self, JpegOptions};
use panoptes_op_preprocess::resize::Resize;
use panoptes_op_preprocess::{Letterbox, Normalize, normalize};
use panoptes_wasm::{Detection, EngineOptions, FrameResource, Input, OperatorEngine};

const W: u32 = 1280;
const H: u32 = 720;
const WARMUP: usize = 3;

/// Per-frame cost of each built-in operator through the Wasm host versus its native kernel.
#[derive(clap::Parser)]
struct Args {
    /// Timed runs per operator and side under `cargo bench`.
    #[arg(long, env = "PANOPTES_BENCH_RUNS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    runs: u64,
    /// Set by `cargo bench`. Without it (`cargo test --benches`) each operator runs twice, a
    /// smoke test rather than a measurement.
    #[arg(long, hide = true)]
    bench: bool,
    /// Operators to run, by part of their name (e.g. to profile one); all when none is given.
    filters: Vec<String>,
}

/// The frame as a stage hands it over: the pixel buffer is shared, not copied, per call.
fn resource(format: FrameFormat, pixels: &PixelBuffer, seq: u64) -> FrameResource {
    FrameResource {
        camera: "bench".into(),
        seq,
        capture_ts_ns: seq,
        width: W,
        height: H,
        format,
        pixels: Some(pixels.clone()),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

struct Row {
    name: &'static str,
    native: Duration,
    wasm: Duration,
}

/// Times `native` and `wasm` alternately, `runs` times each after a warm-up.
fn compare(
    name: &'static str,
    runs: usize,
    mut native: impl FnMut(),
    mut wasm: impl FnMut(),
) -> Row {
    for _ in 0..WARMUP {
        native();
        wasm();
    }
    let (mut n, mut w) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        native();
        n.push(t.elapsed());
        let t = Instant::now();
        wasm();
        w.push(t.elapsed());
    }
    let row = Row {
        name,
        native: median(n),
        wasm: median(w),
    };
    eprintln!(
        "{name}: native {:.3} ms, wasm {:.3} ms",
        ms(row.native),
        ms(row.wasm)
    );
    row
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn nv12(w: u32, h: u32) -> Vec<u8> {
    let (w, h) = (w as usize, h as usize);
    let mut v: Vec<u8> = (0..w * h)
        .map(|i| (16 + (i % w * 3 + i / w * 5) % 220) as u8)
        .collect();
    v.extend(
        (0..w.div_ceil(2) * h.div_ceil(2))
            .flat_map(|i| [(16 + (i * 7) % 225) as u8, (240 - (i * 11) % 225) as u8]),
    );
    v
}

fn jpeg_file(pixels: &[u8]) -> Vec<u8> {
    let mut file = Vec::new();
    let mut enc = Encoder::new(&mut file, 85);
    enc.set_sampling_factor(SamplingFactor::R_4_2_0);
    enc.encode(pixels, W as u16, H as u16, ColorType::Rgb)
        .expect("encode");
    file
}

/// Eight text-line-sized boxes spread over the frame.
fn boxes() -> Vec<Detection> {
    (0..8)
        .map(|i| {
            let (x, y) = (40.0 + 150.0 * i as f32, 30.0 + 85.0 * i as f32);
            Detection {
                x1: x,
                y1: y,
                x2: x + 220.0 + 10.0 * i as f32,
                y2: y + 36.0 + 2.0 * i as f32,
                score: 0.9,
                label: "text".into(),
                text: None,
            }
        })
        .collect()
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    // At most 100 000, checked by clap, so the cast is exact.
    let runs = if args.bench { args.runs as usize } else { 2 };
    let selected = |name: &str| {
        args.filters.is_empty() || args.filters.iter().any(|f| name.contains(f.as_str()))
    };
    let engine = OperatorEngine::new(EngineOptions {
        max_instances: 8,
        ..EngineOptions::default()
    })
    .expect("engine");
    let instance = |name: &str, config: &str| {
        engine
            .load(common::operator_path(name))
            .and_then(|m| m.instantiate(config))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let rgb = common::rgb_frame(W, H);
    let rgb_buf = PixelBuffer::from_vec(rgb.clone());
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        seq
    };
    let mut rows = Vec::new();
    let norm = Normalize::new([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).unwrap();
    let norm_json = r#""mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225]"#;

    // letterbox 1280x720 -> [1, 3, 640, 640]
    if selected("letterbox") {
        let mut op = instance(
            "letterbox",
            &format!(r#"{{"width":640,"height":640,{norm_json}}}"#),
        );
        let mut lb = Letterbox::new(640, 640, norm).unwrap();
        let mut out = Vec::new();
        rows.push(compare(
            "letterbox 1280x720 -> 640x640 tensor",
            runs,
            || {
                lb.run(black_box(&rgb), W, H, &mut out).unwrap();
            },
            || {
                black_box(
                    op.process(resource(FrameFormat::Rgb8, &rgb_buf, next()), &Input::Frame)
                        .unwrap(),
                );
            },
        ));
    }

    // resize 1280x720 -> 640x640 RGB8 image
    if selected("resize") {
        let mut op = instance("resize", r#"{"width":640,"height":640}"#);
        let mut r = Resize::new(640, 640).unwrap();
        let mut out = Vec::new();
        rows.push(compare(
            "resize 1280x720 -> 640x640 image",
            runs,
            || {
                r.run(black_box(&rgb), W, H, &mut out).unwrap();
            },
            || {
                black_box(
                    op.process(resource(FrameFormat::Rgb8, &rgb_buf, next()), &Input::Frame)
                        .unwrap(),
                );
            },
        ));
    }

    // resize 1280x720 -> [1, 3, 640, 640] normalised tensor
    if selected("resize") {
        let mut op = instance(
            "resize",
            &format!(r#"{{"width":640,"height":640,"output":"tensor",{norm_json}}}"#),
        );
        let mut r = Resize::new(640, 640).unwrap();
        let mut out = Vec::new();
        rows.push(compare(
            "resize 1280x720 -> 640x640 tensor",
            runs,
            || {
                r.run_tensor(black_box(&rgb), W, H, &norm, &mut out)
                    .unwrap();
            },
            || {
                black_box(
                    op.process(resource(FrameFormat::Rgb8, &rgb_buf, next()), &Input::Frame)
                        .unwrap(),
                );
            },
        ));
    }

    // normalize 1280x720 frame -> [1, 3, 720, 1280]
    if selected("normalize") {
        let mut op = instance("normalize", &format!("{{{norm_json}}}"));
        let mut out = Vec::new();
        rows.push(compare(
            "normalize 1280x720 frame -> tensor",
            runs,
            || {
                normalize::rgb8_to_tensor(black_box(&rgb), W, H, &norm, &mut out).unwrap();
            },
            || {
                black_box(
                    op.process(resource(FrameFormat::Rgb8, &rgb_buf, next()), &Input::Frame)
                        .unwrap(),
                );
            },
        ));
    }

    // colorconvert NV12 1280x720 -> RGB8
    if selected("colorconvert") {
        let yuv = nv12(W, H);
        let yuv_buf = PixelBuffer::from_vec(yuv.clone());
        let mut op = instance("colorconvert", "{}");
        let mut conv = YuvToRgb::new(Matrix::Bt601, Range::Limited);
        let mut out = Vec::new();
        rows.push(compare(
            "colorconvert nv12 1280x720 -> rgb8",
            runs,
            || {
                conv.convert(Layout::Nv12, black_box(&yuv), W, H, &mut out)
                    .unwrap();
            },
            || {
                black_box(
                    op.process(resource(FrameFormat::Nv12, &yuv_buf, next()), &Input::Frame)
                        .unwrap(),
                );
            },
        ));
    }

    // crop: 8 boxes of a 1280x720 frame -> [8, 3, 48, 320]
    if selected("crop") {
        let dets = boxes();
        let input = Input::Detections(dets.clone());
        let mut op = instance(
            "crop",
            &format!(r#"{{"width":320,"height":48,"keep_aspect":true,{norm_json}}}"#),
        );
        let mut c = Crop::new(320, 48, true, norm).unwrap();
        let mut out = Vec::new();
        rows.push(compare(
            "crop 8 boxes of 1280x720 -> [8,3,48,320]",
            runs,
            || {
                let regions = crop::select(
                    dets.iter().map(|d| ([d.x1, d.y1, d.x2, d.y2], d.score)),
                    W,
                    H,
                    32,
                );
                out.clear();
                for r in &regions {
                    c.append(&rgb[r.row_range(W)], W, r, &mut out).unwrap();
                }
                black_box(&out);
            },
            || {
                black_box(
                    op.process(resource(FrameFormat::Rgb8, &rgb_buf, next()), &input)
                        .unwrap(),
                );
            },
        ));
    }

    // jpeg 1280x720 (quality 85, 4:2:0) -> RGB8
    if selected("jpeg") {
        let file = jpeg_file(&rgb);
        let file_buf = PixelBuffer::from_vec(file.clone());
        let mut op = instance("jpeg", "{}");
        let opts = JpegOptions::default();
        let mut out = Vec::new();
        rows.push(compare(
            "jpeg 1280x720 q85 4:2:0 -> rgb8",
            runs,
            || {
                jpeg::decode_rgb8(black_box(&file), &opts, &mut out).unwrap();
            },
            || {
                black_box(
                    op.process(
                        resource(FrameFormat::Jpeg, &file_buf, next()),
                        &Input::Frame,
                    )
                    .unwrap(),
                );
            },
        ));
    }

    println!();
    println!(
        "medians of {runs} runs each (native and Wasm alternating), after {WARMUP} warm-up runs"
    );
    println!(
        "| {:<40} | {:>8} | {:>8} | {:>11} |",
        "operator", "native", "wasm", "wasm/native"
    );
    println!("|{:-<42}|{:->10}|{:->10}|{:->13}|", "", ":", ":", ":");
    for r in &rows {
        let (n, w) = (r.native.as_secs_f64(), r.wasm.as_secs_f64());
        println!(
            "| {:<40} | {:>5.2} ms | {:>5.2} ms | {:>10.2}x |",
            r.name,
            n * 1e3,
            w * 1e3,
            w / n
        );
    }
}
