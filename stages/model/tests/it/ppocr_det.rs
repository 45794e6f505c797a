//! Runs the real PP-OCRv4 text detector through the model stage's graph API.

use std::path::PathBuf;

use panoptes_contracts::CameraId;
use panoptes_contracts::stage::{FrameMeta, Item, Payload, Stage};
use panoptes_contracts::tensor::{Tensor, Transform};
use panoptes_model::{Graph, GraphOptions, ModelStage};

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

fn load(threads: usize) -> Graph {
    Graph::load(
        "ch_PP-OCRv4_det_infer",
        &det_model(),
        &GraphOptions {
            threads,
            ..GraphOptions::default()
        },
    )
    .expect("load")
}

/// A bright bar on a dark background, normalised like the operator does (mean 0.5, std 0.5).
fn striped_bar(h: usize, w: usize) -> Tensor {
    let mut data = vec![-1.0f32; 3 * h * w];
    for c in 0..3 {
        for y in 60..100 {
            for x in 40..280 {
                // Stripes so it looks like glyph strokes rather than one flat block.
                if (x / 6) % 2 == 0 {
                    data[c * h * w + y * w + x] = 1.0;
                }
            }
        }
    }
    Tensor::new(vec![1, 3, h, w], data).expect("shape")
}

#[test]
fn detector_output_is_a_probability_map_of_the_input_size() {
    let model = load(2);
    let (h, w) = (160usize, 320usize);
    let out = model.run_f32(&striped_bar(h, w)).expect("run");
    assert_eq!(out.shape, vec![1, 1, h, w]);
    assert!(
        out.data.iter().all(|p| (0.0..=1.0).contains(p)),
        "not probabilities"
    );
}

#[test]
fn the_stage_replaces_the_tensor_with_the_first_output() {
    let mut stage = ModelStage::new("det", load(1));
    assert_eq!(stage.model(), Some("ch_PP-OCRv4_det_infer"));
    let transform = Transform {
        scale_x: 0.5,
        scale_y: 0.5,
        offset_x: 0.0,
        offset_y: 8.0,
    };
    let item = Item {
        frame: FrameMeta {
            camera: CameraId::new("cam-1").expect("camera id"),
            seq: 7,
            capture_ts_ns: 0,
            width: 640,
            height: 304,
        },
        payload: Payload::Tensor(striped_bar(160, 320)),
        transform,
        source: None,
        regions: None,
        span: tracing::Span::none(),
    };
    let out = stage.process(item).expect("process");
    assert_eq!(out.transform, transform, "the transform passes through");
    let Payload::Tensor(t) = out.payload else {
        panic!("not a tensor")
    };
    assert_eq!(t.shape, vec![1, 1, 160, 320]);
}

#[test]
fn wrong_input_rank_is_an_error_not_a_crash() {
    let model = load(1);
    let err = model
        .run_f32(&Tensor::new(vec![3, 8], vec![0.0; 24]).expect("shape"))
        .expect_err("rank-2 input accepted");
    let text = err.to_string();
    assert!(text.contains("ch_PP-OCRv4_det_infer"), "{text}");
    assert!(
        text.contains("[3, 8]") && text.contains("[?, 3, ?, ?]"),
        "{text}"
    );
}

#[test]
fn missing_model_file_names_the_path() {
    let err = Graph::load(
        "nope",
        std::path::Path::new("/nope/model.onnx"),
        &GraphOptions::default(),
    )
    .expect_err("missing model loaded");
    assert!(err.to_string().contains("/nope/model.onnx"), "{err}");
}
