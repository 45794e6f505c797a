//! The built-in operators (`resize`, `normalize`, `colorconvert`, `crop`, `jpeg`) run through the
//! real Wasm host and checked against their native references: the same
//! `panoptes-op-preprocess` kernels called directly. Each operator also gets a wrong input, which
//! must fail that frame with `invalid-input` and leave the instance working.
//!
//! The bounds are what was measured (see each test) plus a small margin.
//!
//! Needs the components in `operators/dist/`: run `scripts/build-operators.sh` first.

use crate::common;

use common::{first_tensor, load, max_abs_diff, options, rgb, rgb_frame};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use panoptes_contracts::frame::PixelFormat as FrameFormat;
use panoptes_op_preprocess::Normalize;
use panoptes_op_preprocess::color::{Layout, Matrix, Range, YuvToRgb};
use panoptes_op_preprocess::crop::{self, Crop};
use panoptes_op_preprocess::jpeg::{self, JpegOptions};
use panoptes_op_preprocess::normalize;
use panoptes_op_preprocess::resize::Resize;
use panoptes_wasm::{
    Detection, Image, Input, OperatorErrorKind, OperatorInstance, Output, PixelFormat, Tensor,
    TensorInput, Transform, WasmError,
};

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

fn instance(name: &str, config: &str) -> OperatorInstance {
    let (_engine, module) = load(name, options());
    module
        .instantiate(config)
        .unwrap_or_else(|e| panic!("instantiate {name} with {config}: {e}"))
}

fn image(output: Output) -> Image {
    match output {
        Output::Image(image) => image,
        other => panic!("expected an image, got {}", common::output_kind(&other)),
    }
}

fn max_u8_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn same_transform(t: Transform, n: panoptes_op_preprocess::Transform) {
    assert_eq!(
        (t.scale_x, t.scale_y, t.offset_x, t.offset_y),
        (n.scale_x, n.scale_y, n.offset_x, n.offset_y)
    );
}

/// Asserts an `invalid-input` operator error whose message contains every needle, that the
/// instance was not torn down, and that it still processes `good` afterwards.
fn assert_invalid_input_then_recovers(
    instance: &mut OperatorInstance,
    result: Result<Output, WasmError>,
    needles: &[&str],
    good: impl FnOnce(&mut OperatorInstance) -> Result<Output, WasmError>,
) {
    let err = result.expect_err("wrong input must fail");
    match &err {
        WasmError::Operator { error, .. } => {
            assert_eq!(error.kind, OperatorErrorKind::InvalidInput, "{err}");
            for needle in needles {
                assert!(error.message.contains(needle), "`{needle}` not in: {err}");
            }
        }
        other => panic!("expected an invalid-input operator error, got {other:?}"),
    }
    assert!(!err.is_fatal_to_instance());
    good(instance).expect("the instance keeps working after an invalid input");
    assert_eq!(instance.rebuilds(), 0, "an operator error must not rebuild");
}

/// NV12 (or I420) planes with texture in luma and chroma.
fn yuv420(width: u32, height: u32, layout: Layout) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut v: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (16 + (x * 3 + y * 5 + ((x * y) >> 4)) % 220) as u8))
        .collect();
    let u = |i: usize| (16 + (i * 7) % 225) as u8;
    let vv = |i: usize| (240 - (i * 11) % 225) as u8;
    match layout {
        Layout::Nv12 => v.extend((0..cw * ch).flat_map(|i| [u(i), vv(i)])),
        Layout::I420 => {
            v.extend((0..cw * ch).map(u));
            v.extend((0..cw * ch).map(vv));
        }
    }
    v
}

/// A JPEG of `rgb_frame`, from an encoder independent of the decoder under test.
fn jpeg_file(width: u16, height: u16, progressive: bool) -> Vec<u8> {
    let pixels = rgb_frame(u32::from(width), u32::from(height));
    let mut file = Vec::new();
    let mut enc = Encoder::new(&mut file, 90);
    enc.set_sampling_factor(SamplingFactor::R_4_2_0);
    enc.set_progressive(progressive);
    enc.encode(&pixels, width, height, ColorType::Rgb)
        .expect("encode");
    file
}

#[test]
fn resize_matches_native_for_images_and_tensors() {
    let (w, h) = (1280, 720);
    let pixels = rgb_frame(w, h);

    let mut op = instance("resize", r#"{"width":640,"height":640}"#);
    let img = image(op.process(rgb(w, h, 1, &pixels), &Input::Frame).unwrap());
    assert_eq!(
        (img.width, img.height, img.format),
        (640, 640, PixelFormat::Rgb8)
    );
    let mut native = Vec::new();
    Resize::new(640, 640)
        .unwrap()
        .run(&pixels, w, h, &mut native)
        .unwrap();
    // Measured: 0 (fast_image_resize's simd128 and AVX2 kernels round identically).
    let diff = max_u8_diff(&img.pixels, &native);
    eprintln!("resize image: wasm vs native max abs diff {diff}");
    assert!(diff <= 1, "max abs diff {diff}");

    let mut op = instance(
        "resize",
        r#"{"width":320,"height":192,"output":"tensor","mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225]}"#,
    );
    let (tensor, transform) =
        first_tensor(op.process(rgb(w, h, 2, &pixels), &Input::Frame).unwrap());
    assert_eq!(tensor.shape, [1, 3, 192, 320]);
    let mut native = Vec::new();
    let t = Resize::new(320, 192)
        .unwrap()
        .run_tensor(
            &pixels,
            w,
            h,
            &Normalize::new(MEAN, STD).unwrap(),
            &mut native,
        )
        .unwrap();
    let diff = max_abs_diff(&tensor.data, &native);
    eprintln!("resize tensor: wasm vs native max abs diff {diff}");
    assert!(diff <= 1e-5, "max abs diff {diff}");
    same_transform(transform.expect("a tensor output reports its transform"), t);
}

#[test]
fn resize_rejects_a_yuv_frame_and_recovers() {
    let mut op = instance("resize", r#"{"width":64,"height":64}"#);
    let nv12 = yuv420(32, 32, Layout::Nv12);
    let result = op.process(
        common::frame(32, 32, 7, FrameFormat::Nv12, &nv12),
        &Input::Frame,
    );
    let pixels = rgb_frame(32, 32);
    assert_invalid_input_then_recovers(
        &mut op,
        result,
        &["frame 7 of camera cam-1", "rgb8", "Nv12"],
        |op| op.process(rgb(32, 32, 8, &pixels), &Input::Frame),
    );
}

#[test]
fn normalize_matches_native_for_frames_and_tensors() {
    let (w, h) = (320, 240);
    let pixels = rgb_frame(w, h);
    let norm = Normalize::new(MEAN, STD).unwrap();
    let mut op = instance(
        "normalize",
        r#"{"mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225]}"#,
    );

    let (tensor, transform) =
        first_tensor(op.process(rgb(w, h, 1, &pixels), &Input::Frame).unwrap());
    assert_eq!(tensor.shape, [1, 3, 240, 320]);
    assert!(transform.is_none(), "coordinates are unchanged");
    let mut native = Vec::new();
    normalize::rgb8_to_tensor(&pixels, w, h, &norm, &mut native).unwrap();
    // Measured: 0 (one f32 multiply-add per value, no FMA on either side).
    let diff = max_abs_diff(&tensor.data, &native);
    eprintln!("normalize frame: wasm vs native max abs diff {diff}");
    assert!(diff <= 1e-6, "max abs diff {diff}");

    // A raw 0..255 tensor of two images, as `resize` with "output": "tensor" makes them.
    let mut raw = Vec::new();
    normalize::rgb8_to_tensor(&pixels, w, h, &Normalize::RAW, &mut raw).unwrap();
    let batch = [raw.clone(), raw].concat();
    let input = Input::Tensors(TensorInput {
        tensors: vec![Tensor {
            name: "x".into(),
            shape: vec![2, 3, 240, 320],
            data: batch.clone(),
        }],
        transform: Transform {
            scale_x: 0.5,
            scale_y: 0.5,
            offset_x: 0.0,
            offset_y: 0.0,
        },
    });
    let (tensor, transform) = first_tensor(op.process(rgb(w, h, 2, &pixels), &input).unwrap());
    assert_eq!(tensor.name, "x");
    assert_eq!(tensor.shape, [2, 3, 240, 320]);
    assert!(transform.is_none());
    let mut native = batch;
    normalize::tensor_in_place(&[2, 3, 240, 320], &mut native, &norm).unwrap();
    let diff = max_abs_diff(&tensor.data, &native);
    eprintln!("normalize tensor: wasm vs native max abs diff {diff}");
    assert!(diff <= 1e-6, "max abs diff {diff}");
}

#[test]
fn normalize_rejects_detections_and_bad_tensors_and_recovers() {
    let mut op = instance("normalize", "{}");
    let pixels = rgb_frame(16, 8);
    let result = op.process(rgb(16, 8, 3, &pixels), &Input::Detections(Vec::new()));
    assert_invalid_input_then_recovers(
        &mut op,
        result,
        &["frame 3 of camera cam-1", "got detections"],
        |op| op.process(rgb(16, 8, 4, &pixels), &Input::Frame),
    );
    let bad = Input::Tensors(TensorInput {
        tensors: vec![Tensor {
            name: String::new(),
            shape: vec![1, 4, 2, 2],
            data: vec![0.0; 16],
        }],
        transform: Transform {
            scale_x: 1.0,
            scale_y: 1.0,
            offset_x: 0.0,
            offset_y: 0.0,
        },
    });
    let result = op.process(rgb(16, 8, 5, &pixels), &bad);
    assert_invalid_input_then_recovers(&mut op, result, &["3 channels"], |op| {
        op.process(rgb(16, 8, 6, &pixels), &Input::Frame)
    });
}

#[test]
fn colorconvert_matches_native_for_nv12_and_i420() {
    for (w, h) in [(1280u32, 720u32), (33, 17)] {
        for (config, matrix, range) in [
            ("{}", Matrix::Bt601, Range::Limited),
            (
                r#"{"matrix":"bt709","range":"full"}"#,
                Matrix::Bt709,
                Range::Full,
            ),
        ] {
            let mut op = instance("colorconvert", config);
            for (layout, format) in [
                (Layout::Nv12, FrameFormat::Nv12),
                (Layout::I420, FrameFormat::I420),
            ] {
                let yuv = yuv420(w, h, layout);
                let img = image(
                    op.process(common::frame(w, h, 1, format, &yuv), &Input::Frame)
                        .unwrap(),
                );
                assert_eq!(
                    (img.width, img.height, img.format),
                    (w, h, PixelFormat::Rgb8)
                );
                let mut native = Vec::new();
                YuvToRgb::new(matrix, range)
                    .convert(layout, &yuv, w, h, &mut native)
                    .unwrap();
                // Measured: 0 (the same f32 operations in the same order; IEEE on both sides).
                let diff = max_u8_diff(&img.pixels, &native);
                eprintln!("colorconvert {w}x{h} {layout:?} {config}: max abs diff {diff}");
                assert!(diff <= 1, "max abs diff {diff}");
            }
        }
    }
}

#[test]
fn colorconvert_rejects_rgb_and_short_frames_and_recovers() {
    let mut op = instance("colorconvert", "{}");
    let pixels = rgb_frame(8, 8);
    let nv12 = yuv420(8, 8, Layout::Nv12);
    let result = op.process(rgb(8, 8, 11, &pixels), &Input::Frame);
    assert_invalid_input_then_recovers(
        &mut op,
        result,
        &["frame 11 of camera cam-1", "nv12 or i420", "Rgb8"],
        |op| {
            op.process(
                common::frame(8, 8, 12, FrameFormat::Nv12, &nv12),
                &Input::Frame,
            )
        },
    );
    let result = op.process(
        common::frame(8, 8, 13, FrameFormat::I420, &nv12[..90]),
        &Input::Frame,
    );
    assert_invalid_input_then_recovers(&mut op, result, &["8x8 I420 frame needs 96 bytes"], |op| {
        op.process(
            common::frame(8, 8, 14, FrameFormat::I420, &nv12),
            &Input::Frame,
        )
    });
}

fn detection(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> Detection {
    Detection {
        x1,
        y1,
        x2,
        y2,
        score,
        label: "text".into(),
        text: None,
    }
}

#[test]
fn crop_matches_native_and_maps_each_crop_back() {
    let (w, h) = (1280u32, 720u32);
    let pixels = rgb_frame(w, h);
    let boxes = vec![
        detection(10.0, 20.0, 200.0, 80.0, 0.9),
        detection(-30.0, 600.5, 90.25, 800.0, 0.8), // partly outside: clamped
        detection(500.0, 300.0, 500.0, 340.0, 0.95), // empty: skipped
        detection(640.5, 360.25, 700.75, 380.5, 0.7),
        detection(1200.0, 0.0, 1300.0, 50.0, 0.6),
        detection(300.0, 100.0, 310.0, 400.0, 0.5),
        detection(0.0, 0.0, 1280.0, 720.0, 0.4),
        detection(100.0, 650.0, 900.0, 719.0, 0.3),
        detection(5000.0, 5000.0, 6000.0, 6000.0, 1.0), // outside: skipped
    ];
    let config =
        r#"{"width":96,"height":48,"keep_aspect":true,"mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5]}"#;
    let mut op = instance("crop", config);
    let out = op
        .process(rgb(w, h, 1, &pixels), &Input::Detections(boxes.clone()))
        .unwrap();
    let Output::Tensors(out) = out else {
        panic!("expected tensors");
    };
    let tensor = &out.tensors[0];
    assert_eq!(tensor.shape, [7, 3, 48, 96]);
    assert_eq!(out.transforms.len(), 7);

    let mut crop = Crop::new(96, 48, true, Normalize::new([0.5; 3], [0.5; 3]).unwrap()).unwrap();
    let regions = crop::select(
        boxes.iter().map(|d| ([d.x1, d.y1, d.x2, d.y2], d.score)),
        w,
        h,
        32,
    );
    assert_eq!(regions.len(), 7);
    let mut native = Vec::new();
    for (region, wasm_t) in regions.iter().zip(&out.transforms) {
        let t = crop
            .append(&pixels[region.row_range(w)], w, region, &mut native)
            .unwrap();
        same_transform(*wasm_t, t);
        // The crop's corner maps back to the (clamped) box corner.
        let x = -wasm_t.offset_x / wasm_t.scale_x;
        let y = -wasm_t.offset_y / wasm_t.scale_y;
        assert!(
            (f64::from(x) - region.left).abs() < 1e-3,
            "{x} vs {}",
            region.left
        );
        assert!(
            (f64::from(y) - region.top).abs() < 1e-3,
            "{y} vs {}",
            region.top
        );
    }
    // Measured: 0.
    let diff = max_abs_diff(&tensor.data, &native);
    eprintln!("crop: wasm vs native max abs diff {diff}");
    assert!(diff <= 1e-5, "max abs diff {diff}");

    // `max_crops` keeps the best-scoring boxes, in input order.
    let mut op = instance("crop", r#"{"width":16,"height":16,"max_crops":2}"#);
    let out = op
        .process(rgb(w, h, 2, &pixels), &Input::Detections(boxes))
        .unwrap();
    let (tensor, first) = first_tensor(out);
    assert_eq!(tensor.shape, [2, 3, 16, 16]);
    let first = first.unwrap();
    let left = -first.offset_x / first.scale_x;
    assert!(
        (left - 10.0).abs() < 1e-3,
        "box 0 (0.9) comes before box 3 (0.7): {left}"
    );
}

#[test]
fn crop_rejects_a_frame_input_and_recovers() {
    let mut op = instance("crop", r#"{"width":16,"height":16}"#);
    let pixels = rgb_frame(64, 48);
    let result = op.process(rgb(64, 48, 21, &pixels), &Input::Frame);
    assert_invalid_input_then_recovers(
        &mut op,
        result,
        &["frame 21 of camera cam-1", "takes detections"],
        |op| {
            op.process(
                rgb(64, 48, 22, &pixels),
                &Input::Detections(vec![detection(1.0, 1.0, 30.0, 30.0, 1.0)]),
            )
        },
    );
    // No boxes: an empty batch, not an error.
    let out = op
        .process(rgb(64, 48, 23, &pixels), &Input::Detections(Vec::new()))
        .unwrap();
    let (tensor, transform) = first_tensor(out);
    assert_eq!(tensor.shape, [0, 3, 16, 16]);
    assert!(transform.is_none());
}

#[test]
fn jpeg_matches_native_decode() {
    let opts = JpegOptions::default();
    let mut op = instance("jpeg", "{}");
    for (w, h, progressive) in [(1280u16, 720u16, false), (333, 181, true)] {
        let file = jpeg_file(w, h, progressive);
        let (w, h) = (u32::from(w), u32::from(h));
        let img = image(
            op.process(
                common::frame(w, h, 1, FrameFormat::Jpeg, &file),
                &Input::Frame,
            )
            .unwrap(),
        );
        assert_eq!(
            (img.width, img.height, img.format),
            (w, h, PixelFormat::Rgb8)
        );
        let mut native = Vec::new();
        jpeg::decode_rgb8(&file, &opts, &mut native).unwrap();
        // Measured: 0. The native build runs zune-jpeg's AVX2 IDCT and colour conversion and
        // the Wasm build its scalar ones; they agreed bit for bit on these files.
        let diff = max_u8_diff(&img.pixels, &native);
        eprintln!("jpeg {w}x{h} progressive={progressive}: wasm vs native max abs diff {diff}");
        assert!(diff <= 2, "max abs diff {diff}");
    }
}

#[test]
fn jpeg_rejects_corrupt_and_oversized_files_and_recovers() {
    let good = jpeg_file(64, 48, false);
    let mut op = instance("jpeg", r#"{"max_pixels": 100000}"#);
    let ok = |op: &mut OperatorInstance| {
        op.process(
            common::frame(64, 48, 99, FrameFormat::Jpeg, &good),
            &Input::Frame,
        )
    };
    let mut junk = good[..good.len() / 2].to_vec();
    junk.extend_from_slice(b"garbage");
    let result = op.process(
        common::frame(64, 48, 31, FrameFormat::Jpeg, &junk),
        &Input::Frame,
    );
    assert_invalid_input_then_recovers(&mut op, result, &["frame 31 of camera cam-1", "JPEG"], ok);
    let result = op.process(
        common::frame(64, 48, 32, FrameFormat::Jpeg, b"\xFF\xD8\xFF\xE0 nope"),
        &Input::Frame,
    );
    assert_invalid_input_then_recovers(&mut op, result, &["frame 32 of camera cam-1"], ok);
    // A header claiming 400 x 400 (160,000 pixels) is refused by `max_pixels` before decoding.
    let big = jpeg_file(400, 400, false);
    let result = op.process(
        common::frame(400, 400, 33, FrameFormat::Jpeg, &big),
        &Input::Frame,
    );
    assert_invalid_input_then_recovers(&mut op, result, &["max_pixels", "400x400"], ok);
    // Declared size and JPEG size disagree.
    let result = op.process(
        common::frame(48, 64, 34, FrameFormat::Jpeg, &good),
        &Input::Frame,
    );
    assert_invalid_input_then_recovers(&mut op, result, &["says 48x64", "64x48"], ok);
    // An NV12 frame is neither a JPEG nor RGB8.
    let nv12 = yuv420(8, 8, Layout::Nv12);
    let result = op.process(
        common::frame(8, 8, 35, FrameFormat::Nv12, &nv12),
        &Input::Frame,
    );
    assert_invalid_input_then_recovers(&mut op, result, &["needs a jpeg or rgb8 frame"], ok);
}

#[test]
fn jpeg_passes_rgb8_frames_through() {
    // Raw and JPEG cameras share one chain behind the jpeg operator: an RGB8 frame comes out
    // as the same RGB8 image a decoded JPEG would be, byte for byte.
    let mut op = instance("jpeg", "{}");
    for (w, h) in [(1280u32, 720u32), (333, 181)] {
        let pixels = rgb_frame(w, h);
        for seq in 40..43 {
            let started = std::time::Instant::now();
            let img = image(op.process(rgb(w, h, seq, &pixels), &Input::Frame).unwrap());
            // Informative only: the copies into the guest and back that a raw frame pays here
            // (the first call also grows the instance's memory).
            eprintln!("jpeg passthrough {w}x{h}: {:?}", started.elapsed());
            assert_eq!(
                (img.width, img.height, img.format),
                (w, h, PixelFormat::Rgb8)
            );
            assert!(img.pixels == pixels, "{w}x{h}: pixels changed");
        }
    }
    // JPEG frames still decode on the same instance.
    let file = jpeg_file(64, 48, false);
    let img = image(
        op.process(
            common::frame(64, 48, 41, FrameFormat::Jpeg, &file),
            &Input::Frame,
        )
        .unwrap(),
    );
    assert_eq!((img.width, img.height), (64, 48));
}

#[test]
fn builtin_operators_reject_bad_config_at_init() {
    for (name, config, needle) in [
        ("resize", r#"{"width": 10}"#, "missing field `height`"),
        ("normalize", r#"{"std": [1, 0, 1]}"#, "std[1]"),
        (
            "colorconvert",
            r#"{"matrix": "bt2020"}"#,
            "unknown variant `bt2020`",
        ),
        (
            "crop",
            r#"{"width": 8, "height": 8, "max_crops": 0}"#,
            "`max_crops`",
        ),
        ("jpeg", r#"{"max_pixel": 5}"#, "unknown field `max_pixel`"),
    ] {
        let (_engine, module) = load(name, options());
        let err = module.instantiate(config).unwrap_err();
        assert!(matches!(err, WasmError::Init { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(needle), "{name}: {err}");
    }
}
