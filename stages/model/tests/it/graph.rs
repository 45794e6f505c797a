//! The graph API on the real PP-OCR models: tract and ONNX Runtime agree, the registry shares
//! one loaded graph, bad inputs are named, and a graph serves several threads at once.

use std::path::PathBuf;
use std::sync::Arc;

use panoptes_model::{
    Backend, Device, ElementType, Graph, GraphOptions, HostTensor, ModelError, ModelRegistry,
    TensorView,
};

const DET: &str = "ch_PP-OCRv4_det_infer.onnx";
const CLS: &str = "ch_ppocr_mobile_v2.0_cls_infer.onnx";
const YOLOX: &str = "common_det.onnx";
/// From DESIGN §4 (and models/fetch.sh).
const CLS_SHA256: &str = "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c";

/// Bounds on |ort - tract| over each model's output for these inputs: measured 2.6e-5 (det
/// probabilities, 640x640), 2.1e-6 (cls probabilities) and 7.7e-6 relative (YOLOX raw outputs) on
/// this machine, set about 10x higher so other CPUs' kernels (summation order) still pass.
const DET_MAX_DIFF: f32 = 3e-4;
const CLS_MAX_DIFF: f32 = 2e-5;
const YOLOX_MAX_REL_DIFF: f32 = 1e-4;

fn model(file: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/files")
        .join(file);
    assert!(
        p.is_file(),
        "{} is missing: run models/fetch.sh (or scripts/setup.sh)",
        p.display()
    );
    p
}

fn load(file: &str, backend: Backend, threads: usize) -> Graph {
    Graph::load(
        file.trim_end_matches(".onnx"),
        &model(file),
        &GraphOptions {
            backend,
            device: Device::Cpu,
            threads,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A page-like NCHW image: light paper with a gentle gradient and lines of dark "words" made of
/// glyph-sized strokes, normalised like PP-OCR's preprocessing (mean 0.5, std 0.5).
fn page(h: usize, w: usize) -> (Vec<usize>, Vec<f32>) {
    let mut data = vec![0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let paper = 0.92 - 0.1 * (x + y) as f32 / (h + w) as f32;
            let line = y % 48;
            let word = (x / 8 + (y / 48) * 3) % 11;
            let ink =
                (10..30).contains(&line) && word < 8 && (x % 8) < 5 && (x / 8 + line) % 7 != 0;
            let v = if ink { 0.08 } else { paper };
            for c in 0..3 {
                // A slight colour cast so the channels differ.
                let tinted = v * (1.0 - 0.03 * c as f32);
                data[c * h * w + y * w + x] = (tinted - 0.5) / 0.5;
            }
        }
    }
    (vec![1, 3, h, w], data)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn run_one(graph: &Graph, shape: &[usize], data: &[f32]) -> HostTensor {
    let mut out = graph
        .run(&[("", TensorView::from_f32(shape, data))])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.len(), graph.outputs().len());
    assert_eq!(out[0].0, graph.outputs()[0].name);
    out.swap_remove(0).1
}

#[test]
fn tract_and_ort_agree_on_the_detector_at_640() {
    let ort = load(DET, Backend::Ort, 2);
    let tract = load(DET, Backend::Tract, 2);
    assert_eq!(
        ort.inputs(),
        tract.inputs(),
        "both read the same declaration"
    );
    assert_eq!(ort.inputs()[0].shape, vec![None, Some(3), None, None]);
    let (shape, data) = page(640, 640);
    let a = run_one(&ort, &shape, &data);
    let b = run_one(&tract, &shape, &data);
    assert_eq!(a.shape, vec![1, 1, 640, 640]);
    assert_eq!(b.shape, a.shape);
    let (a, b) = (a.to_f32().expect("f32"), b.to_f32().expect("f32"));
    // The page has text: the detector must find some, or the comparison says little.
    let text = a.iter().filter(|p| **p > 0.3).count();
    assert!(text > 1000, "only {text} text pixels");
    let diff = max_abs_diff(&a, &b);
    eprintln!("det 640x640: max |ort - tract| = {diff:e}, {text} text pixels");
    assert!(diff <= DET_MAX_DIFF, "max abs diff {diff}");
}

#[test]
fn tract_and_ort_agree_on_the_classifier() {
    let ort = load(CLS, Backend::Ort, 1);
    let tract = load(CLS, Backend::Tract, 1);
    assert_eq!(ort.outputs()[0].ty, ElementType::F32);
    for (h, w) in [(48, 192), (48, 192), (48, 160)] {
        let (shape, data) = page(h, w);
        let a = run_one(&ort, &shape, &data).to_f32().expect("f32");
        let b = run_one(&tract, &shape, &data).to_f32().expect("f32");
        assert_eq!(a.len(), 2);
        let diff = max_abs_diff(&a, &b);
        eprintln!("cls {h}x{w}: ort {a:?} tract {b:?} max diff {diff:e}");
        assert!(diff <= CLS_MAX_DIFF, "max abs diff {diff}");
    }
}

/// A graph with fixed input shapes takes tract's other path (typed once at load, optimised at
/// first use); its raw outputs are pixel coordinates and scores, so the bound is relative.
#[test]
fn tract_and_ort_agree_on_the_yolox_detector() {
    let ort = load(YOLOX, Backend::Ort, 2);
    let tract = load(YOLOX, Backend::Tract, 2);
    assert_eq!(ort.inputs(), tract.inputs());
    assert_eq!(
        ort.inputs()[0].shape,
        vec![Some(1), Some(3), Some(416), Some(416)]
    );
    assert_eq!(ort.outputs(), tract.outputs());
    // ddddocr feeds raw 0..255 pixels.
    let (shape, data) = page(416, 416);
    let data: Vec<f32> = data.iter().map(|v| (v * 0.5 + 0.5) * 255.0).collect();
    let a = run_one(&ort, &shape, &data);
    let b = run_one(&tract, &shape, &data);
    assert_eq!(a.shape, vec![1, 3549, 6]);
    assert_eq!(b.shape, a.shape);
    let (a, b) = (a.to_f32().expect("f32"), b.to_f32().expect("f32"));
    let rel = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
        .fold(0.0, f32::max);
    eprintln!("yolox 416x416: max |ort - tract| / max(|ort|, 1) = {rel:e}");
    assert!(rel <= YOLOX_MAX_REL_DIFF, "max relative diff {rel}");
}

#[test]
fn run_f32_and_run_give_the_same_output() {
    for backend in [Backend::Ort, Backend::Tract] {
        let g = load(CLS, backend, 1);
        let (shape, data) = page(48, 192);
        let t = panoptes_contracts::Tensor::new(shape.clone(), data.clone()).expect("tensor");
        let a = g.run_f32(&t).expect("run_f32");
        let b = run_one(&g, &shape, &data);
        assert_eq!(a.shape, b.shape);
        assert_eq!(Some(a.data), b.to_f32(), "{backend}");
    }
}

#[test]
fn misaligned_input_bytes_are_copied_not_refused() {
    let (shape, data) = page(48, 192);
    let aligned: &[u8] = bytemuck::cast_slice(&data);
    // The same bytes one byte into a buffer: not 4-byte aligned.
    let mut buf = vec![0u8; aligned.len() + 1];
    buf[1..].copy_from_slice(aligned);
    let misaligned = &buf[1..];
    assert_ne!(misaligned.as_ptr() as usize % 4, 0);
    for backend in [Backend::Ort, Backend::Tract] {
        let g = load(CLS, backend, 1);
        let view = |bytes| TensorView {
            shape: &shape,
            ty: ElementType::F32,
            bytes,
        };
        let a = g.run(&[("x", view(aligned))]).expect("aligned");
        let b = g.run(&[("x", view(misaligned))]).expect("misaligned");
        assert_eq!(a, b, "{backend}");
    }
}

#[test]
fn bad_inputs_are_named_errors() {
    let (shape, data) = page(48, 192);
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    for backend in [Backend::Ort, Backend::Tract] {
        let g = load(CLS, backend, 1);
        let input = g.inputs()[0].name.clone();
        assert_eq!(input, "x");
        let check = |inputs: &[(&str, TensorView<'_>)], want: &[&str]| {
            let err = g.run(inputs).expect_err("bad input accepted");
            assert!(matches!(err, ModelError::Input { .. }), "{err:?}");
            let text = err.to_string();
            eprintln!("{backend}: {text}");
            assert!(text.contains("ch_ppocr_mobile_v2.0_cls_infer"), "{text}");
            for w in want {
                assert!(text.contains(w), "{backend}: {text:?} lacks {w:?}");
            }
        };
        let ok = TensorView::from_f32(&shape, &data);
        // Wrong element type (same byte length).
        let u8_shape = [1, 3, 48, 192 * 4];
        check(
            &[(
                "x",
                TensorView {
                    shape: &u8_shape,
                    ty: ElementType::U8,
                    bytes,
                },
            )],
            &["`x`", "takes f32", "got u8"],
        );
        // Byte length that does not match the shape.
        check(
            &[(
                "x",
                TensorView {
                    bytes: &bytes[4..],
                    ..ok
                },
            )],
            &["`x`", "needs 110592 bytes, got 110588"],
        );
        // An input the graph does not have.
        check(&[("image", ok)], &["no input named `image`", "`x`"]);
        // Missing and doubled inputs.
        check(&[], &["input `x` is missing"]);
        check(&[("x", ok), ("", ok)], &["`x` is given twice"]);
        // A fixed dimension that differs (the classifier takes 3 channels).
        assert_eq!(g.inputs()[0].shape[1], Some(3), "{:?}", g.inputs());
        let wrong = [1, 2, 48, 192];
        check(
            &[(
                "x",
                TensorView {
                    shape: &wrong,
                    bytes: &bytes[..2 * 48 * 192 * 4],
                    ..ok
                },
            )],
            &["[1, 2, 48, 192]", "the graph takes [?, 3, "],
        );
        // And the graph still works afterwards.
        g.run(&[("x", ok)]).expect("good input after bad ones");
    }
}

#[test]
fn one_graph_serves_two_threads_at_once() {
    for (file, h, w) in [(CLS, 48, 192), (DET, 160, 320)] {
        for backend in [Backend::Ort, Backend::Tract] {
            let g = load(file, backend, 1);
            let (shape, data) = page(h, w);
            let alone = run_one(&g, &shape, &data);
            let results: Vec<HostTensor> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let g = g.clone();
                        let (shape, data) = (&shape, &data);
                        s.spawn(move || {
                            (0..3).map(|_| run_one(&g, shape, data)).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().expect("thread"))
                    .collect()
            });
            assert_eq!(results.len(), 6);
            for r in &results {
                assert_eq!(r, &alone, "{file} on {backend}");
            }
        }
    }
}

#[test]
fn the_registry_loads_a_model_once_and_shares_it() {
    let reg = Arc::new(ModelRegistry::new());
    let opts = GraphOptions {
        threads: 1,
        ..GraphOptions::default()
    };
    reg.declare("cls", model(CLS), Some(CLS_SHA256.to_uppercase()), opts);
    reg.declare("det", model(DET), None, opts);
    assert_eq!(reg.names(), vec!["cls".to_owned(), "det".to_owned()]);
    let graphs: Vec<Graph> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let reg = Arc::clone(&reg);
                s.spawn(move || reg.get("cls").expect("cls"))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(graphs.windows(2).all(|p| Graph::ptr_eq(&p[0], &p[1])));
    assert!(Graph::ptr_eq(&graphs[0], &reg.get("cls").expect("cls")));
    assert_eq!(graphs[0].name(), "cls");
    assert!(!Graph::ptr_eq(&graphs[0], &reg.get("det").expect("det")));
}

#[test]
fn the_registry_names_a_wrong_sha256_and_an_unknown_model() {
    let reg = ModelRegistry::new();
    let wrong = "0".repeat(64);
    reg.declare(
        "cls",
        model(CLS),
        Some(wrong.clone()),
        GraphOptions::default(),
    );
    for _ in 0..2 {
        // Not cached as a success: the second get checks and fails the same way.
        let err = reg.get("cls").expect_err("wrong sha256 accepted");
        let text = err.to_string();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err:?}");
        assert!(text.contains(CLS) && text.contains(&wrong), "{text}");
        assert!(text.contains(CLS_SHA256), "names the actual digest: {text}");
        assert!(text.contains("`cls`"), "{text}");
    }
    let err = reg.get("detector").expect_err("unknown model");
    assert!(matches!(err, ModelError::UnknownModel { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("`detector`") && text.contains("`cls`"),
        "{text}"
    );

    reg.declare("gone", "/nope/gone.onnx", None, GraphOptions::default());
    let first = reg.get("gone").expect_err("missing file").to_string();
    let again = reg.get("gone").expect_err("missing file").to_string();
    assert_eq!(first, again);
    assert!(
        first.contains("/nope/gone.onnx") && first.contains("`gone`"),
        "{first}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_device_this_build_lacks_is_a_clear_error() {
    assert!(!panoptes_model::compiled_devices().contains(&Device::Cuda));
    let err = Graph::load(
        "det",
        &model(DET),
        &GraphOptions {
            device: Device::Cuda,
            ..GraphOptions::default()
        },
    )
    .expect_err("cuda without the feature");
    assert!(
        matches!(err, ModelError::DeviceNotCompiled { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("no `cuda` feature") && text.contains("--features cuda"),
        "{text}"
    );
}

/// With the feature compiled in but the CPU-only onnxruntime wheel (this machine, CI), asking
/// for the GPU must fail loudly rather than fall back to the CPU.
#[cfg(feature = "cuda")]
#[test]
fn cuda_without_a_cuda_onnxruntime_is_a_clear_error() {
    let err = Graph::load(
        "det",
        &model(DET),
        &GraphOptions {
            device: Device::Cuda,
            ..GraphOptions::default()
        },
    )
    .expect_err("cuda on the CPU-only wheel");
    assert!(matches!(err, ModelError::Device { .. }), "{err:?}");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.contains("device cuda") && text.contains("CUDAExecutionProvider"),
        "{text}"
    );
}

#[test]
fn tract_refuses_devices_other_than_the_cpu() {
    // Whether or not this build has the CUDA feature: tract never runs there.
    let err = Graph::load(
        "cls",
        &model(CLS),
        &GraphOptions {
            backend: Backend::Tract,
            device: Device::Cuda,
            threads: 0,
        },
    )
    .expect_err("tract on a GPU");
    assert!(matches!(err, ModelError::Device { .. }), "{err:?}");
    assert!(err.to_string().contains("CPU only"), "{err}");
}

/// The detector only fits sizes that are multiples of 32; tract finds out while planning.
#[test]
fn a_shape_tract_cannot_plan_is_an_error_each_time() {
    let g = load(DET, Backend::Tract, 1);
    let (shape, data) = page(100, 100);
    for _ in 0..2 {
        let err = g
            .run(&[("x", TensorView::from_f32(&shape, &data))])
            .expect_err("100x100 planned");
        let text = err.to_string();
        eprintln!("{text}");
        assert!(matches!(err, ModelError::Run { .. }), "{err:?}");
        assert!(text.contains("[[1, 3, 100, 100]]"), "{text}");
    }
    // Other shapes still run.
    let (shape, data) = page(96, 128);
    run_one(&g, &shape, &data);
}
