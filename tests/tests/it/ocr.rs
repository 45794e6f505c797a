//! The OCR topology end to end over a real nats-server: GStreamer `textoverlay` cameras render
//! ten known strings in different fonts, sizes and places; the PP-OCRv4 detector (batched
//! across cameras), the orientation classifier and the recogniser (on crops, batched) must read
//! them back, and the boxes must lie on the rendered text.

use std::collections::HashMap;
use std::time::Duration;

use panoptes::runner::{Role, Running};
use panoptes_client::{DetectionSubscriber, EventSubscriber, Received};
use panoptes_contracts::DetectionMessage;
use panoptes_tests::{area, intersection, repo_root, require_setup, text_region};
use panoptes_topology::TopologyFile;

/// (camera, text, font, xpos, ypos): textoverlay centres the text at (xpos, ypos); these
/// sizes render lines 33 to 60 pixels high, spread over the frame.
const STRINGS: [(&str, &str, &str, f64, f64); 10] = [
    ("receipt", "TOTAL 42.00 EUR", "Sans Bold 20", 0.3, 0.12),
    ("gate", "Gate B12 Departures", "Sans 18", 0.7, 0.7),
    ("hello", "Hello World", "Serif 26", 0.5, 0.45),
    ("invoice", "Invoice 2026-11-22", "Sans 16", 0.25, 0.08),
    ("speed", "Speed 88 km/h", "Sans Bold 22", 0.6, 0.9),
    ("brand", "PANOPTES", "Sans Bold 24", 0.75, 0.3),
    ("platform", "Platform 9", "Sans 14", 0.85, 0.55),
    ("exit", "Exit North", "Serif Bold 22", 0.2, 0.3),
    ("batch", "Batch 7 of 12", "Sans 16", 0.4, 0.75),
    ("order", "Order #A1234", "Monospace 18", 0.2, 0.92),
];

/// Messages per camera to wait for (the first ones after start-up are as good as any).
const MESSAGES_PER_CAMERA: usize = 2;

/// `topologies/ocr.yaml` with its cameras replaced by one camera per string.
fn ocr_topology() -> TopologyFile {
    let mut topology = panoptes_tests::topology("ocr");
    topology.config.cameras = STRINGS
        .iter()
        .map(|(id, text, font, x, y)| {
            panoptes_tests::camera_config(serde_json::json!({
                "id": id, "fps": 1, "width": 1280, "height": 720,
                "source": {"test_pattern": {
                    "text": text, "font": font, "xpos": x, "ypos": y, "background": "#283038",
                }},
            }))
        })
        .collect();
    // Fixed batches without a latency target: on this CPU the adaptive controller would
    // (rightly) keep the detector mostly unbatched, and on a loaded machine the target would
    // forbid batches; this test is about batches being read correctly.
    for stage in &mut topology.stages {
        match stage {
            panoptes_topology::StageConfig::Model(m) => {
                if let Some(b) = &mut m.batching {
                    b.adaptive = false;
                    b.latency_target_ms = None;
                    b.max_wait_ms = Some(50);
                }
            }
            // The sandbox deadline is wall-clock time: ten cameras and three models on two
            // cores can starve the worker thread past 500 ms, and deadlines are not what this
            // test is about (tests/tests/operators.rs is).
            panoptes_topology::StageConfig::Operator(op) => op.timeout_ms = Some(5000),
            _ => {}
        }
    }
    topology
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// What the message says is written inside `region`: the texts of the boxes lying on it, left
/// to right, spaces removed.
fn read_in(m: &DetectionMessage, region: [f32; 4]) -> String {
    squash(&words_in(m, region))
}

/// The words written inside `region`: the boxes lying on it left to right, their texts joined
/// by single spaces.
fn words_in(m: &DetectionMessage, region: [f32; 4]) -> String {
    let mut on: Vec<_> = m
        .detections
        .iter()
        .filter(|d| intersection(d.bbox, region) >= 0.5 * area(d.bbox))
        .collect();
    on.sort_by(|a, b| a.bbox[0].total_cmp(&b.bbox[0]));
    on.iter()
        .filter_map(|d| d.text.as_deref())
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocr_reads_the_rendered_strings() {
    let _machine = crate::shared_machine();
    let topology = ocr_topology();
    let regions: HashMap<String, [f32; 4]> = topology
        .cameras
        .iter()
        .map(|c| (c.id.to_string(), text_region(c)))
        .collect();
    for (camera, r) in &regions {
        // A string cut off by the frame edge could not be read in full: that would be this
        // test's mistake, not the pipeline's.
        assert!(
            r[0] > 1.0 && r[1] > 1.0 && r[2] < 1279.0 && r[3] < 719.0,
            "{camera}: text {r:?} touches the frame edge; move it"
        );
    }

    let running = Running::start(&topology, None, Role::All)
        .await
        .expect("start the OCR topology");
    let client = panoptes::connect(&running.nats_url).await.expect("connect");
    let mut sub = DetectionSubscriber::new(&client, &running.subjects, None)
        .await
        .expect("subscribe");
    // Every event, so a failed frame is explained in the assertion that counts it.
    let mut event_sub = EventSubscriber::new(&client, &running.subjects, None)
        .await
        .expect("subscribe to events");
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let collector = {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(e) = event_sub.next().await {
                if let Ok(mut seen) = events.lock() {
                    seen.push(format!("{e:?}"));
                }
            }
        })
    };

    let mut got: HashMap<String, Vec<DetectionMessage>> = HashMap::new();
    let collect = async {
        while got.len() < STRINGS.len() || got.values().any(|v| v.len() < MESSAGES_PER_CAMERA) {
            match sub.next().await {
                Some(Received::Message(m)) => got.entry(m.camera.clone()).or_default().push(m),
                Some(Received::Invalid { subject, error }) => {
                    panic!("invalid message on {subject}: {error}")
                }
                None => panic!("subscription closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), collect)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out; messages so far per camera: {:?}",
                got.iter()
                    .map(|(k, v)| (k.clone(), v.len()))
                    .collect::<Vec<_>>()
            )
        });

    let (mut correct, mut words_correct) = (0, 0);
    let mut report = Vec::new();
    for (camera, expected, ..) in STRINGS {
        let region = regions[camera];
        let messages = &got[camera];
        for m in messages {
            assert_eq!(m.pipeline, "preprocess>detect>text-boxes>recognize>text");
            assert!(
                !m.detections.is_empty(),
                "{camera} seq {}: nothing read",
                m.seq
            );
            for d in &m.detections {
                // Every box is on the text, and carries a confident reading.
                let on_text = intersection(d.bbox, region) / area(d.bbox).max(1.0);
                assert!(
                    on_text >= 0.5,
                    "{camera} seq {}: box {:?} ({:?}) is off the text {region:?}",
                    m.seq,
                    d.bbox,
                    d.text
                );
                assert!(d.text.is_some() && d.score >= 0.5, "{camera}: {d:?}");
            }
            // Together the boxes cover the rendered text.
            let covered: f32 = m
                .detections
                .iter()
                .map(|d| intersection(d.bbox, region))
                .sum();
            assert!(
                covered >= 0.8 * area(region),
                "{camera} seq {}: boxes {:?} cover {:.0}% of the text {region:?}",
                m.seq,
                m.detections.iter().map(|d| d.bbox).collect::<Vec<_>>(),
                100.0 * covered / area(region)
            );
        }
        // Case-sensitive, spaces ignored; judged on the first message.
        let read = read_in(&messages[0], region);
        let ok = read == squash(expected);
        correct += usize::from(ok);
        // And word by word: the spaces between words are read too (the ctc stage's
        // space_threshold), not only the characters.
        let words = words_in(&messages[0], region);
        let words_ok = words == expected;
        words_correct += usize::from(words_ok);
        report.push(format!(
            "{camera}: {expected:?} -> {words:?}{}{}",
            if ok { "" } else { "  WRONG" },
            if words_ok || !ok {
                ""
            } else {
                "  WORDS RUN TOGETHER OR SPLIT"
            }
        ));
    }
    let report = report.join("\n");
    println!("{report}");
    assert!(
        correct * 10 >= STRINGS.len() * 9,
        "read {correct} of {} strings correctly (90% needed):\n{report}",
        STRINGS.len()
    );
    assert!(
        words_correct * 10 >= STRINGS.len() * 9,
        "read {words_correct} of {} strings word by word (90% needed):\n{report}",
        STRINGS.len()
    );

    drop(sub);
    drop(client);
    let summary = running.stop().await.expect("clean stop");
    collector.abort();
    let events = events.lock().map(|e| e.clone()).unwrap_or_default();
    assert_eq!(summary.worker.failed, 0, "{summary:?}\nevents: {events:#?}");
    assert!(
        summary.worker.batches < summary.worker.processed,
        "frames of several cameras should have shared passes: {summary:?}"
    );
    // The detector ran frames of several cameras in one call, and the recogniser read the
    // lines of several frames in one call.
    for stage in ["detect", "recognize"] {
        let b = summary
            .batches
            .iter()
            .find(|b| b.stage == stage)
            .unwrap_or_else(|| panic!("no counters for {stage}: {summary:?}"));
        assert!(
            b.sizes.iter().any(|(size, _)| *size > 1),
            "{stage} never ran a batch: {b:?}"
        );
    }
}

/// Lines whose words the PP-OCRv4 recogniser runs together under argmax decoding
/// ("Point42.00"): `tests/fixtures/ocr-words.png` is part of a frame the OCR benchmark rendered
/// (`tests/benches/ocr_rapidocr.py render --seed 7`, frame 009: Pillow, DejaVu faces, rotated,
/// blurred, noise), on which RapidOCR reads "Point42.00" and "CafeWarehouse9:45". Through
/// `topologies/ocr.yaml` the words come apart (the ctc stage's `space_threshold`); with
/// `space_threshold: 1` (argmax only, as PaddleOCR decodes) they run together again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_come_apart_where_argmax_runs_them_together() {
    let _machine = crate::shared_machine();
    require_setup();
    let png = std::fs::read(repo_root().join("tests/fixtures/ocr-words.png")).expect("fixture");
    let image = panoptes_tests::browser::Rgba::from_png(&png).expect("PNG");
    let rgb = image.rgb();
    let read = |threshold: Option<f64>| {
        let rgb = rgb.clone();
        async move {
            let mut topology = TopologyFile::load(&repo_root().join("topologies/ocr.yaml"))
                .unwrap_or_else(|d| panic!("{d}"));
            topology.config.cameras.clear();
            for stage in &mut topology.stages {
                if let panoptes_topology::StageConfig::Postprocess(p) = stage
                    && p.postprocessor == panoptes_contracts::kinds::Postprocessor::Ctc
                    && let (Some(t), Some(params)) = (threshold, p.params.as_object_mut())
                {
                    params.insert("space_threshold".into(), t.into());
                }
            }
            let running = Running::start(&topology, None, Role::All)
                .await
                .expect("start the OCR topology");
            let client = panoptes::connect(&running.nats_url).await.expect("connect");
            let camera = panoptes_contracts::CameraId::new("words").expect("camera id");
            let message = panoptes_tests::publish_until_detected(
                &client,
                &running.subjects,
                &camera,
                (image.width, image.height, &rgb),
                &mut 0,
                Duration::from_secs(120),
            )
            .await;
            drop(client);
            running.stop().await.expect("clean stop");
            let mut texts: Vec<String> = message
                .expect("detections for the frame")
                .detections
                .into_iter()
                .filter_map(|d| d.text)
                .collect();
            texts.sort();
            texts
        }
    };
    assert_eq!(
        read(None).await,
        ["Cafe Warehouse 9:45", "Entrance A3", "Point 42.00"]
    );
    assert_eq!(
        read(Some(1.0)).await,
        ["CafeWarehouse9:45", "Entrance A3", "Point42.00"]
    );
}
