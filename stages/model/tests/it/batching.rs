//! The model stage on batches: rows of several items in one call give the same results as one
//! call per item, a bad item fails alone, and cascades crop the right boxes (real PP-OCR
//! orientation classifier).

use std::path::PathBuf;
use std::time::Duration;

use panoptes_contracts::CameraId;
use panoptes_contracts::batching::BatchPolicy;
use panoptes_contracts::detection::Detection;
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::stage::{Item, Payload, Stage};
use panoptes_contracts::tensor::Tensor;
use panoptes_model::{CropSpec, Crops, Graph, GraphOptions, ModelStage, Orientation};

fn model(file: &str) -> Graph {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/files")
        .join(file);
    assert!(
        p.is_file(),
        "{} is missing: run models/fetch.sh",
        p.display()
    );
    Graph::load(
        file,
        &p,
        &GraphOptions {
            threads: 1,
            ..GraphOptions::default()
        },
    )
    .expect("load")
}

fn cls() -> Graph {
    model("ch_ppocr_mobile_v2.0_cls_infer.onnx")
}

/// A deterministic, text-like RGB frame: dark background, bright strokes whose pattern is not
/// symmetric, so an upside-down crop looks different from an upright one.
fn frame(camera: &str, seq: u64, w: u32, h: u32) -> Frame {
    let mut px = vec![30u8; (w * h * 3) as usize];
    for y in 0..h {
        for x in 0..w {
            let stroke = (x / 7 + y / 11 + (x * y) / 97) % 5 == 0 && y % 40 > 8;
            if stroke {
                let i = ((y * w + x) * 3) as usize;
                px[i..i + 3].copy_from_slice(&[230, 220, (x % 256) as u8]);
            }
        }
    }
    Frame {
        camera: CameraId::new(camera).expect("camera"),
        seq,
        capture_ts_ns: 0,
        width: w,
        height: h,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(px),
    }
}

fn tensor_item(camera: &str, seed: u32, shape: &[usize]) -> Item {
    let mut item = Item::from_frame(frame(camera, u64::from(seed), 8, 8));
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    item.payload = Payload::Tensor(Tensor::new(shape.to_vec(), data).expect("shape"));
    item
}

fn tensor(item: &Item) -> &Tensor {
    match &item.payload {
        Payload::Tensor(t) => t,
        other => panic!("expected a tensor, got {}", other.kind()),
    }
}

fn policy(max_batch: usize) -> BatchPolicy {
    BatchPolicy {
        max_batch,
        max_wait: Duration::from_millis(5),
        latency_target: None,
        adaptive: false,
    }
}

#[test]
fn batched_rows_equal_one_call_per_item() {
    let graph = cls();
    let items: Vec<Item> = (0..5)
        .map(|i| tensor_item(&format!("cam-{i}"), i, &[1, 3, 48, 192]))
        .collect();
    let mut single = ModelStage::new("cls", graph.clone());
    let expected: Vec<Tensor> = items
        .iter()
        .map(|i| tensor(&single.process(i.clone()).expect("single")).clone())
        .collect();

    let mut batched = ModelStage::new("cls", graph).with_batching(policy(4));
    let out = batched.process_batch(items);
    assert_eq!(out.len(), 5);
    for (got, want) in out.iter().zip(&expected) {
        let got = tensor(got.as_ref().expect("batched item"));
        assert_eq!(got.shape, vec![1, 2]);
        for (a, b) in got.data.iter().zip(&want.data) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", got.data, want.data);
        }
    }
    let stats = batched.stats();
    assert_eq!(
        stats.histogram(),
        vec![(1, 1), (4, 1)],
        "5 rows in calls of at most 4"
    );
    assert_eq!(batched.batching(), Some(policy(4)));
}

#[test]
fn a_bad_item_fails_alone() {
    let mut stage = ModelStage::new("cls", cls()).with_batching(policy(8));
    let mut not_a_tensor = tensor_item("cam-b", 2, &[1, 3, 48, 192]);
    not_a_tensor.payload = Payload::Detections(Vec::new());
    let out = stage.process_batch(vec![
        tensor_item("cam-a", 1, &[1, 3, 48, 192]),
        not_a_tensor,
        tensor_item("cam-c", 3, &[1, 1, 48, 192]),
        tensor_item("cam-d", 4, &[2, 3, 48, 192]),
    ]);
    assert_eq!(
        tensor(out[0].as_ref().expect("good item")).shape,
        vec![1, 2]
    );
    let err = out[1]
        .as_ref()
        .expect_err("detections are not a tensor")
        .to_string();
    assert!(err.contains("expected a tensor"), "{err}");
    let err = out[2]
        .as_ref()
        .expect_err("one channel for three")
        .to_string();
    assert!(err.contains("cls") && err.contains('3'), "{err}");
    assert_eq!(tensor(out[3].as_ref().expect("two rows")).shape, vec![2, 2]);
}

fn detection(bbox: [f32; 4], score: f32) -> Detection {
    Detection {
        bbox,
        polygon: None,
        label: "text".into(),
        score,
        text: None,
        track: None,
    }
}

fn crop_spec(width: u32, max_width: Option<u32>) -> CropSpec {
    CropSpec {
        width,
        height: 48,
        keep_aspect: true,
        max_width,
        max_crops: 8,
        mean: [0.5; 3],
        std: [0.5; 3],
        pad: Some([0.0; 3]),
        bgr: true,
    }
}

fn boxes_item(camera: &str, boxes: Vec<Detection>) -> Item {
    let mut item = Item::from_frame(frame(camera, 1, 640, 360));
    item.payload = Payload::Detections(boxes);
    item
}

#[test]
fn crops_keep_their_boxes_in_row_order() {
    let crops = Crops::new(crop_spec(192, None)).expect("crops");
    let mut stage = ModelStage::new("cls", cls())
        .with_batching(policy(16))
        .with_crops(crops);
    assert_eq!(
        stage.batching(),
        None,
        "a cascade does not ask the worker for more frames"
    );
    let a = vec![
        detection([10.0, 10.0, 200.0, 50.0], 0.9),
        detection([700.0, 10.0, 800.0, 50.0], 0.8), // outside the 640x360 frame
        detection([300.0, 100.0, 600.0, 140.0], 0.7),
    ];
    let out = stage.process_batch(vec![
        boxes_item("cam-a", a),
        boxes_item("cam-b", Vec::new()),
        tensor_item("cam-c", 1, &[1, 3, 48, 192]),
    ]);
    let first = out[0].as_ref().expect("cam-a");
    assert_eq!(
        tensor(first).shape,
        vec![2, 2],
        "two boxes inside the frame"
    );
    let regions = first.regions.as_ref().expect("regions");
    assert_eq!(
        regions.iter().map(|d| d.score).collect::<Vec<_>>(),
        vec![0.9, 0.7],
        "the outside box is dropped, the others keep their order"
    );
    let empty = out[1].as_ref().expect("cam-b");
    assert_eq!(tensor(empty).shape, vec![0, 2]);
    assert_eq!(empty.regions.as_deref(), Some(&[][..]));
    let err = out[2]
        .as_ref()
        .expect_err("a tensor is not detections")
        .to_string();
    assert!(err.contains("expected a detections"), "{err}");
    assert_eq!(
        stage.stats().histogram(),
        vec![(2, 1)],
        "one call for both crops"
    );
}

#[test]
fn long_boxes_widen_the_crops_up_to_max_width() {
    let rec = model("ch_PP-OCRv4_rec_infer.onnx");
    let crops = Crops::new(crop_spec(320, Some(640))).expect("crops");
    let mut stage = ModelStage::new("rec", rec).with_crops(crops);
    // 600x40 at height 48 needs 720 px: capped at 640.
    let out = stage
        .process_batch(vec![boxes_item(
            "cam-a",
            vec![detection([0.0, 0.0, 600.0, 40.0], 1.0)],
        )])
        .pop()
        .expect("one result")
        .expect("rec");
    // PP-OCRv4 rec emits one step per 8 columns.
    assert_eq!(tensor(&out).shape[..2], [1, 80]);
    // A short box keeps the base width.
    let out = stage
        .process_batch(vec![boxes_item(
            "cam-a",
            vec![detection([0.0, 0.0, 100.0, 40.0], 1.0)],
        )])
        .pop()
        .expect("one result")
        .expect("rec");
    assert_eq!(tensor(&out).shape[..2], [1, 40]);
}

/// A frame's crops read the same alone and in batches of 2 to 16 beside frames whose boxes are
/// longer or shorter: its crops are as wide as its own boxes need, never padded to another
/// frame's (which changed what the recogniser read, depending on the company a frame kept).
#[test]
fn a_frame_reads_the_same_alone_and_in_any_batch() {
    let rec = model("ch_PP-OCRv4_rec_infer.onnx");
    let mut stage = ModelStage::new("rec", rec)
        .with_crops(Crops::new(crop_spec(320, Some(960))).expect("crops"));
    // Frame i's long box is 100 + 30·i px wide: at height 48 it needs 320 to 660 px.
    let items: Vec<Item> = (0..16u8)
        .map(|i| {
            let (dy, long) = (f32::from(i), 100.0 + 30.0 * f32::from(i));
            let boxes = vec![
                detection([5.0, 5.0 + dy, 5.0 + long, 45.0 + dy], 0.9),
                detection([50.0, 200.0, 150.0, 240.0], 0.8),
            ];
            boxes_item(&format!("cam-{i}"), boxes)
        })
        .collect();
    let alone: Vec<Tensor> = items
        .iter()
        .map(|i| tensor(&stage.process(i.clone()).expect("alone")).clone())
        .collect();
    let argmax = |t: &Tensor| -> Vec<usize> {
        let classes = *t.shape.last().expect("classes");
        t.data
            .chunks_exact(classes)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(k, _)| k)
            })
            .collect()
    };
    for size in [2usize, 3, 5, 8, 16] {
        // Every frame once per size, each time in other company.
        for start in (0..16).step_by(size) {
            let members: Vec<usize> = (start..start + size).map(|k| (k * 7 + size) % 16).collect();
            let batch = members.iter().map(|&k| items[k].clone()).collect();
            let out = stage.process_batch(batch);
            for (&k, result) in members.iter().zip(out) {
                let got = result.unwrap_or_else(|e| panic!("frame {k} in a batch of {size}: {e}"));
                let (got, want) = (tensor(&got), &alone[k]);
                assert_eq!(got.shape, want.shape, "frame {k}, batch of {size}");
                assert_eq!(
                    argmax(got),
                    argmax(want),
                    "frame {k} reads otherwise in a batch of {size}"
                );
                let worst = got
                    .data
                    .iter()
                    .zip(&want.data)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    worst < 1e-3,
                    "frame {k}, batch of {size}: scores differ by {worst}"
                );
            }
        }
    }
}

/// The classifier's verdict flips when the crop is turned upside down; with the orientation
/// step, the upside-down crop reaches the model upright again.
#[test]
fn orientation_turns_upside_down_crops_upright() {
    let graph = cls();
    let spec = crop_spec(192, None);
    let bbox = [20.0, 20.0, 220.0, 68.0];
    let upright = frame("cam-a", 1, 640, 360);
    // The same frame turned by 180°: the box moves to the mirrored place.
    let mut turned = upright.clone();
    let mut px = upright.pixels.as_slice().to_vec();
    px.reverse();
    for p in px.chunks_exact_mut(3) {
        p.reverse();
    }
    turned.pixels = PixelBuffer::from_vec(px);
    let turned_box = [
        640.0 - bbox[2],
        360.0 - bbox[3],
        640.0 - bbox[0],
        360.0 - bbox[1],
    ];

    let item = |f: &Frame, b: [f32; 4]| {
        let mut i = Item::from_frame(f.clone());
        i.payload = Payload::Detections(vec![detection(b, 1.0)]);
        i
    };
    let run =
        |stage: &mut ModelStage, i: Item| tensor(&stage.process(i).expect("run")).data.clone();

    let mut plain =
        ModelStage::new("cls", graph.clone()).with_crops(Crops::new(spec.clone()).expect("crops"));
    let up = run(&mut plain, item(&upright, bbox));
    let down = run(&mut plain, item(&turned, turned_box));
    assert!(
        (up[0] - down[0]).abs() > 1e-3,
        "the crops differ: {up:?} {down:?}"
    );

    // Threshold 0: rotate whenever the classifier prefers 180°.
    let oriented = Crops::new(spec.clone())
        .expect("crops")
        .with_orientation(Orientation {
            graph: graph.clone(),
            spec,
            threshold: 0.0,
        })
        .expect("orientation");
    let mut stage = ModelStage::new("cls", graph).with_crops(oriented);
    let a = run(&mut stage, item(&upright, bbox));
    let b = run(&mut stage, item(&turned, turned_box));
    // Each crop the classifier calls upside down is rotated, i.e. becomes the other crop.
    let is_180 = |p: &[f32]| p[1] > p[0];
    let want_a = if is_180(&up) { &down } else { &up };
    let want_b = if is_180(&down) { &up } else { &down };
    for (got, want) in [(&a, want_a), (&b, want_b)] {
        for (x, y) in got.iter().zip(want.iter()) {
            assert!(
                (x - y).abs() < 1e-4,
                "{got:?} vs {want:?} (up {up:?}, down {down:?})"
            );
        }
    }
}
