//! Model operators through the `wasi:nn` host kernel: the `onnx` operator (Wasm) running the
//! real PP-OCRv4 detector gives the same output as calling ONNX Runtime directly, only granted
//! models load, and graphs are shared between instances.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{first_tensor, load, max_abs_diff, options, rgb};
use panoptes_contracts::tensor::Tensor as FrameTensor;
use panoptes_model::{Graph, GraphOptions, ModelRegistry};
use panoptes_wasm::{
    Capabilities, Input, OperatorEngine, OperatorErrorKind, Tensor, TensorInput, Transform,
    WasmError,
};

const DET: &str = "ppocr-det";
const CLS: &str = "ppocr-cls";

fn cls_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/files/ch_ppocr_mobile_v2.0_cls_infer.onnx")
}

fn det_model() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/files/ch_PP-OCRv4_det_infer.onnx");
    assert!(
        p.is_file(),
        "{} is missing: run models/fetch.sh (or scripts/setup.sh)",
        p.display()
    );
    p
}

fn registry() -> Arc<ModelRegistry> {
    let registry = ModelRegistry::new();
    registry.declare(
        DET,
        det_model(),
        None,
        GraphOptions {
            threads: 2,
            ..GraphOptions::default()
        },
    );
    registry.declare(CLS, cls_model(), None, GraphOptions::default());
    Arc::new(registry)
}

/// A letterboxed 640x640 input made by the real `letterbox` operator from a white frame with a
/// band of dark vertical strokes, which the detector reads as a line of text.
fn det_input() -> Tensor {
    let (w, h) = (1280u32, 720u32);
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    for y in 300..370 {
        for x in 200..1000 {
            if (x / 10) % 2 == 0 {
                let i = ((y * w + x) * 3) as usize;
                pixels[i..i + 3].copy_from_slice(&[20, 20, 20]);
            }
        }
    }
    let (_engine, letterbox) = load("letterbox", options());
    let mut lb = letterbox.instantiate("{}").unwrap();
    let (tensor, _) = first_tensor(lb.process(rgb(w, h, 1, &pixels), &Input::Frame).unwrap());
    tensor
}

fn tensors(t: &Tensor) -> Input {
    Input::Tensors(TensorInput {
        tensors: vec![t.clone()],
        transform: Transform {
            scale_x: 0.5,
            scale_y: 0.5,
            offset_x: 0.0,
            offset_y: 140.0,
        },
    })
}

fn granted(models: &[&str]) -> Arc<Capabilities> {
    Arc::new(Capabilities {
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        ..Capabilities::default()
    })
}

#[test]
fn model_operator_matches_a_direct_ort_call() {
    let engine = OperatorEngine::with_models(options(), Some(registry())).unwrap();
    let module = engine.load(common::operator_path("onnx")).unwrap();
    let mut op = module
        .instantiate_with(&format!(r#"{{"model": "{DET}"}}"#), granted(&[DET]))
        .unwrap();
    let input = det_input();
    let (out, transform) = first_tensor(
        op.process(rgb(1280, 720, 1, &[]), &tensors(&input))
            .unwrap(),
    );
    assert_eq!(transform, None, "a model does not move pixels");

    // The same model loaded separately, called directly.
    let direct = Graph::load(DET, &det_model(), &GraphOptions::default()).unwrap();
    let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
    let want = direct
        .run_f32(&FrameTensor::new(shape, input.data.clone()).unwrap())
        .unwrap();
    let got_shape: Vec<usize> = out.shape.iter().map(|&d| d as usize).collect();
    assert_eq!(got_shape, want.shape);
    let diff = max_abs_diff(&out.data, &want.data);
    eprintln!("wasi:nn vs direct ort: max abs diff {diff}");
    assert!(diff <= 1e-5, "max abs diff {diff}");
    // Equal outputs must not be equal by being empty or constant.
    let (lo, hi) = want
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    assert!(hi > lo, "the probability map is constant ({lo})");

    // The second frame reuses the loaded graph and context.
    let (again, _) = first_tensor(
        op.process(rgb(1280, 720, 2, &[]), &tensors(&input))
            .unwrap(),
    );
    assert_eq!(again.data, out.data);
}

/// The orientation classifier gives probabilities of real size, so agreement is meaningful
/// in every value, not only in a map that is mostly zero.
#[test]
fn classifier_through_wasi_nn_matches_a_direct_ort_call() {
    let engine = OperatorEngine::with_models(options(), Some(registry())).unwrap();
    let module = engine.load(common::operator_path("onnx")).unwrap();
    let mut op = module
        .instantiate_with(&format!(r#"{{"model": "{CLS}"}}"#), granted(&[CLS]))
        .unwrap();
    let direct = Graph::load(CLS, &cls_model(), &GraphOptions::default()).unwrap();
    for seed in 0..4u32 {
        // A batch of 2 crops with different content.
        let shape = [2usize, 3, 48, 192];
        let data: Vec<f32> = (0..shape.iter().product::<usize>() as u32)
            .map(|i| {
                let v = i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) >> 16;
                (v % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        let input = Tensor {
            name: String::new(),
            shape: shape.iter().map(|&d| d as u32).collect(),
            data: data.clone(),
        };
        let (out, _) = first_tensor(op.process(rgb(8, 8, 1, &[]), &tensors(&input)).unwrap());
        let want = direct
            .run_f32(&FrameTensor::new(shape.to_vec(), data).unwrap())
            .unwrap();
        assert_eq!(out.shape, [2, 2]);
        let diff = max_abs_diff(&out.data, &want.data);
        assert!(diff <= 1e-6, "seed {seed}: max abs diff {diff}");
        for row in want.data.chunks(2) {
            assert!(
                (row[0] + row[1] - 1.0).abs() < 1e-4,
                "softmax rows: {row:?}"
            );
        }
    }
}

#[test]
fn only_granted_models_load_and_instances_share_them() {
    let models = registry();
    let engine = OperatorEngine::with_models(options(), Some(models.clone())).unwrap();
    let module = engine.load(common::operator_path("onnx")).unwrap();
    let config = format!(r#"{{"model": "{DET}"}}"#);
    let input = det_input();

    let mut ungranted = module.instantiate_with(&config, granted(&[])).unwrap();
    let err = ungranted
        .process(rgb(8, 8, 1, &[]), &tensors(&input))
        .unwrap_err();
    assert!(
        matches!(&err, WasmError::Operator { error, .. } if error.kind == OperatorErrorKind::Internal),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("not granted to this stage"), "{text}");
    assert!(text.contains(DET), "{text}");

    // A name granted but not declared gets the registry's error.
    let mut undeclared = module
        .instantiate_with(r#"{"model": "nope"}"#, granted(&["nope"]))
        .unwrap();
    let err = undeclared
        .process(rgb(8, 8, 1, &[]), &tensors(&input))
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    let mut a = module.instantiate_with(&config, granted(&[DET])).unwrap();
    let mut b = module.instantiate_with(&config, granted(&[DET])).unwrap();
    let out_a = first_tensor(a.process(rgb(8, 8, 1, &[]), &tensors(&input)).unwrap()).0;
    let out_b = first_tensor(b.process(rgb(8, 8, 1, &[]), &tensors(&input)).unwrap()).0;
    assert_eq!(out_a.data, out_b.data);
    let shared = models.get(DET).unwrap();
    assert!(
        Graph::ptr_eq(&shared, &models.get(DET).unwrap()),
        "one graph per process"
    );

    // Wrong input shape: a clear error from the model, the instance keeps working.
    let bad = Tensor {
        name: String::new(),
        shape: vec![1, 2, 3],
        data: vec![0.0; 6],
    };
    let err = a.process(rgb(8, 8, 2, &[]), &tensors(&bad)).unwrap_err();
    assert!(err.to_string().contains(DET), "{err}");
    assert!(!err.is_fatal_to_instance(), "{err:?}");
    a.process(rgb(8, 8, 3, &[]), &tensors(&input)).unwrap();
}
