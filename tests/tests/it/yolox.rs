//! The yolo postprocessor's YOLOX layout on the real ddddocr `common_det.onnx` character
//! detector: a frame of large characters rendered by GStreamer (`videotestsrc ! textoverlay`),
//! preprocessed the way ddddocr does, run through ONNX Runtime, decoded and NMSed; every
//! detection must sit on a character and every character must be found.

use panoptes_contracts::detection::Detection;
use panoptes_contracts::stage::{Item, Payload};
use panoptes_contracts::tensor::{Tensor, Transform};
use panoptes_ingest::{RawFrame, TestPattern, render_still};
use panoptes_model::{Graph, GraphOptions};
use panoptes_op_preprocess::{Letterbox, Normalize};
use panoptes_tests::{frame_item, gst, iou, repo_root};

/// common_det's input side.
const SIDE: u32 = 416;
/// How far a pixel's channels may stray from the background and still count as background.
const TOLERANCE: u8 = 24;

fn render(text: &str, background: u32, width: u32, height: u32) -> (RawFrame, [u8; 3]) {
    gst();
    let pattern = TestPattern {
        text: text.to_owned(),
        width,
        height,
        font: "Sans Bold 40".to_owned(),
        background,
        live: false,
        ..TestPattern::default()
    };
    let frame = render_still(&pattern).unwrap_or_else(|e| panic!("cannot render {text:?}: {e}"));
    (frame, pattern.background_rgb())
}

/// The ink of each character: runs of columns holding pixels that differ from the background,
/// with the rows those columns have ink in, `[x1, y1, x2, y2]` (exclusive ends).
fn glyph_boxes(frame: &RawFrame, background: [u8; 3]) -> Vec<[f32; 4]> {
    let ink = |x: u32, y: u32| {
        frame.pixel(x, y).is_some_and(|p| {
            p.iter()
                .zip(background)
                .any(|(&a, b)| a.abs_diff(b) > TOLERANCE)
        })
    };
    let mut boxes = Vec::new();
    let mut run: Option<(u32, u32, u32)> = None; // x1, y1, y2 (inclusive)
    for x in 0..=frame.width {
        let rows: Vec<u32> = (0..frame.height).filter(|&y| ink(x, y)).collect();
        match (rows.first(), rows.last(), run) {
            (Some(&top), Some(&bottom), Some((x1, y1, y2))) => {
                run = Some((x1, y1.min(top), y2.max(bottom)));
            }
            (Some(&top), Some(&bottom), None) => run = Some((x, top, bottom)),
            (_, _, Some((x1, y1, y2))) => {
                boxes.push([x1 as f32, y1 as f32, x as f32, y2 as f32 + 1.0]);
                run = None;
            }
            _ => {}
        }
    }
    boxes
}

/// ddddocr's preprocessing: scale to fit 416x416 keeping the aspect ratio, pad right and bottom
/// with 114, raw 0..255 values, BGR planes. Returns the tensor and the letterbox transform.
fn preprocess(frame: &RawFrame) -> (Tensor, Transform) {
    let mut letterbox = Letterbox::new(SIDE, SIDE, Normalize::RAW)
        .expect("letterbox")
        .with_pad_value(114)
        .with_bgr(true);
    let mut data = Vec::new();
    let t = letterbox
        .run(&frame.data, frame.width, frame.height, &mut data)
        .expect("letterbox run");
    let transform = Transform {
        scale_x: t.scale_x,
        scale_y: t.scale_y,
        offset_x: t.offset_x,
        offset_y: t.offset_y,
    };
    let side = SIDE as usize;
    let tensor = Tensor::new(vec![1, 3, side, side], data).expect("shape");
    (tensor, transform)
}

fn item(frame: &RawFrame, tensor: Tensor, transform: Transform) -> Item {
    let mut item = frame_item(frame, tensor);
    item.transform = transform;
    item
}

fn model() -> Graph {
    let path = repo_root().join("models/files/common_det.onnx");
    assert!(
        path.is_file(),
        "{} is missing: run models/fetch.sh (or scripts/setup.sh)",
        path.display()
    );
    Graph::load("common_det", &path, &GraphOptions::default()).expect("load common_det")
}

/// The lowest and highest value of each of the 6 channels of an `[1, anchors, 6]` output.
fn ranges(out: &Tensor) -> Vec<(f32, f32)> {
    (0..6)
        .map(|c| {
            out.data
                .iter()
                .skip(c)
                .step_by(6)
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                })
        })
        .collect()
}

fn centre(b: [f32; 4]) -> [f32; 2] {
    [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]
}

fn contains(b: [f32; 4], [x, y]: [f32; 2]) -> bool {
    (b[0]..=b[2]).contains(&x) && (b[1]..=b[3]).contains(&y)
}

#[test]
fn yolox_finds_every_rendered_character() {
    let _machine = crate::shared_machine();
    let model = model();
    // Dark (the test pattern's default) and mid-grey backgrounds; a landscape frame (padded
    // below) and a portrait one (padded on the right).
    let cases = [
        ("A     7     K", 0xff30_3030, 640, 360),
        ("X  3  Q  8", 0xff30_3030, 640, 360),
        ("A     7     K", 0xff80_8080, 640, 360),
        ("4 W", 0xff30_3030, 360, 480),
    ];
    for (text, background, width, height) in cases {
        let what = format!("{text:?} on {background:x} at {width}x{height}");
        let (frame, bg) = render(text, background, width, height);
        let glyphs = glyph_boxes(&frame, bg);
        let characters = text.chars().filter(|c| !c.is_whitespace()).count();
        assert_eq!(glyphs.len(), characters, "{what}: ink runs {glyphs:?}");

        let (tensor, transform) = preprocess(&frame);
        let out = model.run_f32(&tensor).expect("run");
        assert_eq!(out.shape, vec![1, 3549, 6], "{what}");
        // Objectness and the one class score come out of a sigmoid inside the graph: the
        // postprocessor must not apply another.
        let r = ranges(&out);
        assert!(
            r[4..].iter().all(|&(lo, hi)| lo >= 0.0 && hi <= 1.0),
            "{what}: channel ranges {r:?}"
        );

        let params = serde_json::json!({"layout": "yolox"});
        let labels = Some(vec!["char".to_owned()]);
        let mut stage = panoptes_postprocess::build(
            "chars",
            panoptes_postprocess::Postprocessor::Yolo,
            &params,
            None,
            labels,
        )
        .expect("stage");
        let out = stage
            .process(item(&frame, out, transform))
            .expect("process");
        let Payload::Detections(found) = out.payload else {
            panic!("{what}: no detections payload")
        };
        let summary: Vec<_> = found
            .iter()
            .map(|d| (d.bbox.map(f32::round), d.score))
            .collect();
        eprintln!("{what}: ink {glyphs:?}, detections {summary:?}");
        // One box per character, centred on it and closely fitting its ink.
        assert_eq!(found.len(), characters, "{what}: {found:?} vs {glyphs:?}");
        for glyph in &glyphs {
            let hits: Vec<&Detection> = found
                .iter()
                .filter(|d| contains(*glyph, centre(d.bbox)))
                .collect();
            assert_eq!(
                hits.len(),
                1,
                "{what}: glyph {glyph:?}, detections {found:?}"
            );
            let d = hits[0];
            assert!(
                iou(d.bbox, *glyph) > 0.6,
                "{what}: {:?} fits glyph {glyph:?} poorly",
                d.bbox
            );
            assert_eq!(d.label, "char");
            assert!(d.score > 0.25 && d.score <= 1.0, "{what}: {d:?}");
        }
    }
}

/// `topologies/characters.yaml` end to end over a real nats-server: the letterbox operator does
/// YOLOX's preprocessing (pad 114, BGR), the yolo stage takes its params and labels from the
/// model's manifest, and each rendered character comes back as one box on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_characters_topology_finds_each_character() {
    let _machine = crate::shared_machine();
    use panoptes::runner::{Role, Running};
    use panoptes_client::{DetectionSubscriber, Received};

    let topology = panoptes_tests::topology("characters");
    let camera = &topology.cameras[0];
    let panoptes_topology::SourceConfig::TestPattern(pattern) = &camera.source else {
        panic!("the characters camera is a test pattern");
    };
    assert_eq!(pattern.text, "A 7 K Q");
    let spec = panoptes_ingest::node::source_spec(camera, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    let panoptes_ingest::SourceSpec::TestPattern(mut still) = spec else {
        panic!("not a test pattern");
    };
    still.live = false;
    gst();
    let frame = render_still(&still).unwrap_or_else(|e| panic!("{e}"));
    let glyphs = glyph_boxes(&frame, still.background_rgb());
    assert_eq!(glyphs.len(), 4, "A, 7, K and Q: {glyphs:?}");

    let running = Running::start(&topology, None, Role::All)
        .await
        .expect("start the characters topology");
    let client = panoptes::connect(&running.nats_url).await.expect("connect");
    let mut sub = DetectionSubscriber::new(&client, &running.subjects, None)
        .await
        .expect("subscribe");
    let message = tokio::time::timeout(std::time::Duration::from_secs(120), sub.next())
        .await
        .expect("a detection message in time");
    let message = match message {
        Some(Received::Message(m)) => m,
        Some(Received::Invalid { subject, error }) => {
            panic!("invalid message on {subject}: {error}")
        }
        None => panic!("subscription closed"),
    };
    assert_eq!(message.pipeline, "preprocess>detect>characters");
    assert_eq!(message.model.as_deref(), Some("ddddocr-det"));
    assert_eq!(
        message.detections.len(),
        glyphs.len(),
        "one box per character: {:?}",
        message.detections
    );
    for g in &glyphs {
        let best = message
            .detections
            .iter()
            .max_by(|a, b| iou(a.bbox, *g).total_cmp(&iou(b.bbox, *g)))
            .expect("detections");
        assert!(
            contains(best.bbox, centre(*g)) && iou(best.bbox, *g) > 0.5,
            "glyph {g:?}: best box {best:?}"
        );
        assert_eq!(best.label, "text", "the manifest's label");
    }
    drop(sub);
    drop(client);
    let summary = running.stop().await.expect("clean stop");
    assert_eq!(summary.worker.failed, 0, "{summary:?}");
}
