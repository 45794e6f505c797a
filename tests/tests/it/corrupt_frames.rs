//! Bad frames on one camera's subject produce an error event naming that camera and the cause,
//! while the worker keeps producing detections for the other camera (with batching across
//! cameras on, so bad frames share passes with good ones).

use std::time::Duration;

use bytes::Bytes;
use panoptes::runner::{Role, Running};
use panoptes_client::{DetectionSubscriber, EventSubscriber, Received};
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::{CameraId, EventKind};
use panoptes_tests::{nats_server, topology};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_frames_are_reported_and_other_cameras_go_on() {
    let _machine = crate::shared_machine();
    let mut topology = topology("quickstart");
    // cam-bravo streams for real; the test plays a broken third-party camera.
    topology.cameras.retain(|c| c.id.as_str() == "cam-bravo");
    // Batching on: a bad frame gathered into a batch with good ones must fail alone.
    for stage in &mut topology.stages {
        if let panoptes_topology::StageConfig::Model(m) = stage {
            m.batching = Some(panoptes_topology::BatchingConfig {
                max_batch: 4,
                max_wait_ms: Some(20),
                latency_target_ms: None,
                adaptive: false,
            });
        }
    }
    let broken = CameraId::new("cam-broken").expect("valid");

    let server = nats_server();
    let running = Running::start(&topology, Some(server.url()), Role::All)
        .await
        .expect("start");
    let client = panoptes::connect(server.url()).await.expect("connect");
    let subjects = running.subjects.clone();
    let mut events = EventSubscriber::new(&client, &subjects, Some(&broken))
        .await
        .expect("sub");
    let mut detections = DetectionSubscriber::new(&client, &subjects, None)
        .await
        .expect("sub");

    // The healthy camera is producing before anything bad arrives.
    next_detection_for(&mut detections, "cam-bravo").await;

    let valid = Frame {
        camera: broken.clone(),
        seq: 7,
        capture_ts_ns: 1,
        width: 64,
        height: 32,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(vec![0u8; 64 * 32 * 3]),
    }
    .encode()
    .expect("encode");
    let lying = Frame {
        width: 1280,
        height: 720,
        ..Frame::decode(valid.clone(), None).expect("decode")
    }
    .encode()
    .expect("encode");
    let random: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let cases: [(&str, Bytes, &str); 3] = [
        ("random bytes", Bytes::from(random), "corrupt frame"),
        (
            "truncated Arrow",
            valid.slice(..valid.len() / 2),
            "corrupt frame",
        ),
        ("size mismatch", lying, "declared size 1280x720"),
    ];
    for (name, payload, cause) in cases {
        client
            .publish(subjects.frames(&broken), payload)
            .await
            .expect("publish");
        let event = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match events.next().await {
                    Some(Received::Message(e)) if e.kind == EventKind::FrameError => return e,
                    Some(_) => {}
                    None => panic!("event subscription closed"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: no error event"));
        assert_eq!(event.camera, "cam-broken", "{name}: {event:?}");
        assert_eq!(event.stage.as_deref(), Some("decode"), "{name}: {event:?}");
        assert!(
            event.message.contains(cause),
            "{name}: {:?} lacks {cause:?}",
            event.message
        );
        // ...and the other camera keeps going.
        next_detection_for(&mut detections, "cam-bravo").await;
    }

    let summary = running.stop().await.expect("stop");
    assert_eq!(summary.worker.failed, 3, "{summary:?}");
}

async fn next_detection_for(sub: &mut DetectionSubscriber, camera: &str) {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match sub.next().await {
                Some(Received::Message(m)) if m.camera == camera && !m.detections.is_empty() => {
                    return;
                }
                Some(_) => {}
                None => panic!("detection subscription closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no detections for {camera}"));
}
