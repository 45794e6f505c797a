//! The quickstart topology end to end: real GStreamer cameras, a real nats-server (the embedded
//! default), the Wasm operator, the PP-OCRv4 detector and DB boxes, checked against where
//! textoverlay actually drew each camera's text.

use std::collections::HashMap;
use std::time::Duration;

use panoptes::runner::{Role, Running};
use panoptes_client::{DetectionSubscriber, Received};
use panoptes_contracts::DetectionMessage;
use panoptes_tests::{area, intersection, iou, text_region, topology};

const MESSAGES_PER_CAMERA: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_detects_the_rendered_text_on_every_camera() {
    let _machine = crate::shared_machine();
    let topology = topology("quickstart");
    let regions: HashMap<String, [f32; 4]> = topology
        .cameras
        .iter()
        .map(|c| (c.id.to_string(), text_region(c)))
        .collect();
    assert_eq!(regions.len(), 2, "quickstart should have two cameras");

    // No NATS URL: the run starts (and must stop) its own nats-server.
    let running = Running::start(&topology, None, Role::All)
        .await
        .expect("start quickstart");
    let url = running.nats_url.clone();
    let client = panoptes::connect(&url).await.expect("connect");
    let mut sub = DetectionSubscriber::new(&client, &running.subjects, None)
        .await
        .expect("subscribe");

    let mut got: HashMap<String, Vec<DetectionMessage>> = HashMap::new();
    let collect = async {
        while got.len() < regions.len() || got.values().any(|v| v.len() < MESSAGES_PER_CAMERA) {
            match sub.next().await {
                Some(Received::Message(m)) => got.entry(m.camera.clone()).or_default().push(m),
                Some(Received::Invalid { subject, error }) => {
                    panic!("invalid message on {subject}: {error}")
                }
                None => panic!("subscription closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(180), collect)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out; detections so far per camera: {:?}",
                got.iter()
                    .map(|(k, v)| (k.clone(), v.len()))
                    .collect::<Vec<_>>()
            )
        });

    for (camera, messages) in &got {
        let region = regions[camera];
        for m in messages {
            assert_eq!((m.width, m.height), (1280, 720));
            assert_eq!(m.model.as_deref(), Some("ppocr-v4-det"));
            assert!(
                !m.detections.is_empty(),
                "{camera} seq {}: no detections",
                m.seq
            );
            // Every box lies on the text: none in an empty part of the frame.
            for d in &m.detections {
                let on_text = intersection(d.bbox, region) / area(d.bbox).max(1.0);
                assert!(
                    on_text >= 0.5,
                    "{camera} seq {}: box {:?} is off the text region {region:?}",
                    m.seq,
                    d.bbox
                );
                assert!(d.score > 0.5 && d.label == "text", "{d:?}");
            }
            // And the boxes cover the text.
            let best = m
                .detections
                .iter()
                .map(|d| iou(d.bbox, region))
                .fold(0.0f32, f32::max);
            assert!(
                best >= 0.5,
                "{camera} seq {}: best IoU {best:.2} < 0.5; boxes {:?} vs text {region:?}",
                m.seq,
                m.detections.iter().map(|d| d.bbox).collect::<Vec<_>>()
            );
        }
    }

    drop(sub);
    drop(client);
    let summary = running.stop().await.expect("clean stop");
    assert!(
        summary.worker.processed >= (2 * MESSAGES_PER_CAMERA) as u64,
        "{summary:?}"
    );
    assert_eq!(summary.worker.failed, 0, "{summary:?}");
    // The embedded nats-server went away with the run.
    assert!(
        panoptes::connect(&url).await.is_err(),
        "nats-server still running at {url}"
    );
}
