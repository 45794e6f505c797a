//! The ctc postprocessor on the real PP-OCRv4 recogniser (`ch_PP-OCRv4_rec_infer.onnx`): a line
//! of text rendered by GStreamer (`videotestsrc ! textoverlay`), cropped around its ink and
//! preprocessed as PaddleOCR does, read back with the character list from the model's metadata.
//! The full detector + recogniser cascade is tested elsewhere; this pins the decoder to the
//! model's real output (class count, blank, space class, score).

use panoptes_contracts::detection::Detection;
use panoptes_contracts::stage::Payload;
use panoptes_contracts::tensor::Tensor;
use panoptes_ingest::{RawFrame, TestPattern, ink_bbox, render_still};
use panoptes_model::{Graph, GraphOptions};
use panoptes_op_preprocess::{Letterbox, Normalize, fit};
use panoptes_tests::{frame_item, gst, repo_root};

/// PP-OCR rec input: 48 rows, up to 320 columns.
const REC_H: u32 = 48;
const REC_W: u32 = 320;
/// Pixels of background kept around the ink.
const MARGIN: u32 = 6;

fn model() -> Graph {
    let path = repo_root().join("models/files/ch_PP-OCRv4_rec_infer.onnx");
    assert!(
        path.is_file(),
        "{} is missing: run models/fetch.sh (or scripts/setup.sh)",
        path.display()
    );
    Graph::load("ch_PP-OCRv4_rec_infer", &path, &GraphOptions::default()).expect("load rec")
}

/// The frame and the box around its text's ink (frame pixels, with a margin).
fn render(text: &str) -> (RawFrame, [u32; 4]) {
    gst();
    let pattern = TestPattern {
        text: text.to_owned(),
        width: 640,
        height: 360,
        font: "Sans Bold 28".to_owned(),
        live: false,
        ..TestPattern::default()
    };
    let frame = render_still(&pattern).unwrap_or_else(|e| panic!("cannot render {text:?}: {e}"));
    let [x1, y1, x2, y2] =
        ink_bbox(&frame, pattern.background_rgb(), 24).expect("textoverlay drew nothing");
    let b = [
        x1.saturating_sub(MARGIN),
        y1.saturating_sub(MARGIN),
        (x2 + 1 + MARGIN).min(frame.width),
        (y2 + 1 + MARGIN).min(frame.height),
    ];
    (frame, b)
}

/// PaddleOCR's `resize_norm_img`: height 48 keeping the aspect ratio, `(v / 255 - 0.5) / 0.5`,
/// BGR planes, padded on the right with 0.
fn preprocess(frame: &RawFrame, [x1, y1, x2, y2]: [u32; 4]) -> Tensor {
    let (w, h) = (x2 - x1, y2 - y1);
    let row = frame.width as usize * 3;
    let mut crop = Vec::with_capacity((w * h * 3) as usize);
    for y in y1..y2 {
        let start = y as usize * row + x1 as usize * 3;
        crop.extend_from_slice(&frame.data[start..start + w as usize * 3]);
    }
    let norm = Normalize::new([0.5; 3], [0.5; 3]).expect("norm");
    let mut letterbox = Letterbox::new(REC_W, REC_H, norm).expect("letterbox");
    let mut data = Vec::new();
    letterbox
        .run(&crop, w, h, &mut data)
        .expect("letterbox run");
    let fitted = fit(w, h, REC_W, REC_H);
    assert_eq!(
        fitted.new_h, REC_H,
        "the crop is too wide for one 48x320 input"
    );
    let plane = (REC_W * REC_H) as usize;
    for (i, v) in data.iter_mut().enumerate() {
        if i % REC_W as usize >= fitted.new_w as usize {
            *v = 0.0;
        }
    }
    let (r, gb) = data.split_at_mut(plane);
    r.swap_with_slice(&mut gb[plane..]);
    Tensor::new(vec![1, 3, REC_H as usize, REC_W as usize], data).expect("shape")
}

#[test]
fn pp_ocr_v4_rec_reads_a_rendered_line() {
    let _machine = crate::shared_machine();
    let model = model();
    let charset: Vec<String> = model
        .metadata("character")
        .expect("the rec model has a `character` metadata key")
        .lines()
        .map(str::to_owned)
        .collect();
    for text in ["Panoptes 42", "HELLO world"] {
        let (frame, crop) = render(text);
        let out = model.run_f32(&preprocess(&frame, crop)).expect("run");
        let [1, _, classes] = out.shape[..] else {
            panic!("rec output shape {:?}", out.shape)
        };
        // Blank + characters + PaddleOCR's space.
        assert_eq!(classes, charset.len() + 2, "{} characters", charset.len());

        let mut stage = panoptes_postprocess::build(
            "read",
            panoptes_postprocess::Postprocessor::Ctc,
            &serde_json::Value::Null,
            None,
            Some(charset.clone()),
        )
        .expect("stage");
        let region = Detection {
            bbox: crop.map(|v| v as f32),
            polygon: None,
            label: "line".to_owned(),
            score: 0.9,
            text: None,
            track: None,
        };
        let mut item = frame_item(&frame, out);
        item.regions = Some(vec![region.clone()]);
        let out = stage.process(item).expect("process");
        let Payload::Detections(read) = out.payload else {
            panic!("no detections payload")
        };
        eprintln!("{text:?}: {read:?}");
        assert_eq!(read.len(), 1, "{read:?}");
        assert_eq!(
            (read[0].bbox, read[0].label.as_str()),
            (region.bbox, "line")
        );
        assert_eq!(read[0].text.as_deref(), Some(text), "{read:?}");
        assert!(read[0].score > 0.8, "{read:?}");
    }
}
