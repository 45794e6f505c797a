//! A stage graph with fan-out and a sink: one detector feeds two postprocess branches, one
//! publishing on the default detections subject and one through a sink with its own subject.
//! Real cameras, real nats-server, real model.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt as _;
use panoptes::runner::{Role, Running};
use panoptes_contracts::DetectionMessage;
use panoptes_tests::{area, intersection, repo_root, text_region};
use panoptes_topology::TopologyFile;

const TOPOLOGY: &str = r##"
models:
  det: { file: ../models/files/ch_PP-OCRv4_det_infer.onnx }
cameras:
  - id: cam-fan
    source: { test_pattern: { text: "FAN OUT 9", font: "Sans Bold 36", background: "#203040" } }
    fps: 5
stages:
  - id: pre
    kind: operator
    wasm: ../operators/dist/letterbox.wasm
    config: { width: 640, height: 640, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] }
  - { id: detect, kind: model, model: det }
  - { id: words, kind: postprocess, postprocessor: db, label: words }
  - { id: lines, kind: postprocess, input: detect, postprocessor: db, label: lines }
  - { id: archive, kind: sink, input: lines, subject: "{namespace}.archive.{stage}.{camera}" }
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_detector_feeds_two_branches_and_a_sink_subject() {
    let _machine = crate::shared_machine();
    let topology = TopologyFile::parse(
        TOPOLOGY,
        "fanout.yaml",
        &repo_root().join("topologies"),
        &panoptes_topology::process_env,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let region = text_region(&topology.cameras[0]);

    let running = Running::start(&topology, None, Role::All)
        .await
        .expect("start");
    let client = panoptes::connect(&running.nats_url).await.expect("connect");
    let mut default = client
        .subscribe("panoptes.detections.cam-fan")
        .await
        .expect("subscribe");
    let mut archive = client
        .subscribe("panoptes.archive.archive.cam-fan")
        .await
        .expect("subscribe");

    // seq → branches seen for it.
    let mut seen: HashMap<u64, BTreeSet<String>> = HashMap::new();
    let collect = async {
        loop {
            let (msg, expect_pipeline, expect_label) = tokio::select! {
                Some(m) = default.next() => (m, "pre>detect>words", "words"),
                Some(m) = archive.next() => (m, "pre>detect>lines", "lines"),
            };
            let m: DetectionMessage = serde_json::from_slice(&msg.payload).expect("detections/v1");
            assert_eq!(
                m.pipeline, expect_pipeline,
                "{} carried the wrong branch",
                msg.subject
            );
            assert_eq!(m.model.as_deref(), Some("det"));
            assert!(
                !m.detections.is_empty(),
                "{}: seq {} has no boxes",
                msg.subject,
                m.seq
            );
            for d in &m.detections {
                assert_eq!(d.label, expect_label);
                let on_text = intersection(d.bbox, region) / area(d.bbox).max(1.0);
                assert!(
                    on_text >= 0.5,
                    "box {:?} is off the text {region:?}",
                    d.bbox
                );
            }
            let branches = seen.entry(m.seq).or_default();
            branches.insert(m.pipeline);
            // Both branches published for the same frame.
            if branches.len() == 2 {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(180), collect)
        .await
        .unwrap_or_else(|_| panic!("timed out; branches per seq: {seen:?}"));
    let summary = running.stop().await.expect("stop");
    assert_eq!(summary.worker.failed, 0, "{summary:?}");
}
