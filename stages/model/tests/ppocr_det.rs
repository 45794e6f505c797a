//! Runs the real PP-OCRv4 text detector through the model stage.

use std::path::PathBuf;

use panoptes_model::{ModelOptions, OrtModel};
use panoptes_pipeline::tensor::Tensor;

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

#[test]
fn detector_output_is_a_probability_map_of_the_input_size() {
    let mut model = OrtModel::load(&det_model(), &ModelOptions { threads: 2 }).expect("load");
    // A bright bar on a dark background, normalised like the operator does (mean 0.5, std 0.5).
    let (h, w) = (160usize, 320usize);
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
    let out = model
        .run(&Tensor::new(vec![1, 3, h, w], data).expect("shape"))
        .expect("run");
    assert_eq!(out.shape, vec![1, 1, h, w]);
    assert!(
        out.data.iter().all(|p| (0.0..=1.0).contains(p)),
        "not probabilities"
    );
}

#[test]
fn wrong_input_rank_is_an_error_not_a_crash() {
    let mut model = OrtModel::load(&det_model(), &ModelOptions { threads: 1 }).expect("load");
    let err = model
        .run(&Tensor::new(vec![3, 8], vec![0.0; 24]).expect("shape"))
        .expect_err("rank-2 input accepted");
    assert!(err.to_string().contains("ch_PP-OCRv4_det_infer"), "{err}");
}

#[test]
fn missing_model_file_names_the_path() {
    let Err(err) = OrtModel::load(
        std::path::Path::new("/nope/model.onnx"),
        &ModelOptions::default(),
    ) else {
        panic!("missing model loaded");
    };
    assert!(err.to_string().contains("/nope/model.onnx"), "{err}");
}
