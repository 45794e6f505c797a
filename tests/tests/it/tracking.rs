//! Tracking on real frames: `topologies/tracking.yaml` (a GStreamer test pattern with two texts
//! moving along known paths that cross, the PP-OCRv4 detector, the tracker) run in-process with
//! its own nats-server. Each text keeps one track ID in every frame it is found in, the two
//! never share one, and the velocities the tracker reports are the texts' known speeds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt as _;
use panoptes::runner::{Role, Running};
use panoptes_contracts::DetectionMessage;
use panoptes_tests::topology;

/// Frames to collect (8 s at 5 fps, less what a busy machine drops).
const MESSAGES: usize = 30;
const GUARD: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_texts_keep_their_track_ids_and_speeds() {
    let _machine = crate::shared_machine();
    let file = topology("tracking");
    let cam = &file.cameras[0];
    let (w, h) = (cam.width as f32, cam.height as f32);
    let running = Running::start(&file, None, Role::All).await.expect("start");
    let client = panoptes::connect(&running.nats_url).await.expect("connect");
    let mut sub = client
        .subscribe("panoptes.detections.crossing")
        .await
        .expect("subscribe");
    let mut messages = Vec::new();
    let collected = tokio::time::timeout(GUARD, async {
        while messages.len() < MESSAGES {
            let Some(m) = sub.next().await else { break };
            let m: DetectionMessage = serde_json::from_slice(&m.payload).expect("detections");
            messages.push(m);
        }
    })
    .await;
    running.stop().await.expect("stop");
    assert!(collected.is_ok(), "only {} messages", messages.len());

    // Which text a box is: DOCK FOUR WEST is more than twice as wide as GATE.
    let mut ids: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut velocity: BTreeMap<&str, Vec<[f32; 2]>> = BTreeMap::new();
    let mut tracked = 0;
    for m in &messages {
        for d in &m.detections {
            let width = d.bbox[2] - d.bbox[0];
            let text = if width > 0.2 * w {
                "DOCK FOUR WEST"
            } else {
                "GATE"
            };
            if let Some(t) = d.track {
                tracked += 1;
                ids.entry(text).or_default().insert(t.track_id);
                if t.track_age_ms >= 1000 {
                    velocity.entry(text).or_default().push(t.velocity);
                }
            }
        }
    }
    assert!(
        tracked >= MESSAGES,
        "{tracked} tracked boxes in {} messages",
        messages.len()
    );
    assert_eq!(ids.len(), 2, "{ids:?}");
    for (text, ids) in &ids {
        assert_eq!(ids.len(), 1, "{text} has track IDs {ids:?}");
    }
    assert_ne!(ids["GATE"], ids["DOCK FOUR WEST"]);

    // Median velocities against the pattern's motion: 0.08 w/s right, 0.1 h/s down.
    let median = |v: &[[f32; 2]], axis: usize| {
        let mut xs: Vec<f32> = v.iter().map(|v| v[axis]).collect();
        xs.sort_by(f32::total_cmp);
        xs[xs.len() / 2]
    };
    for (text, axis, speed) in [("GATE", 0, 0.08 * w), ("DOCK FOUR WEST", 1, 0.1 * h)] {
        let v = &velocity[text];
        let (along, across) = (median(v, axis), median(v, 1 - axis));
        eprintln!(
            "{text}: track {:?}, median velocity {along:.1} px/s along (expected {speed:.1}), {across:.1} across",
            ids[text]
        );
        assert!(
            (along - speed).abs() < 0.3 * speed && across.abs() < 0.3 * speed,
            "{text}: median velocity along {along:.1} px/s (expected {speed:.1}), across {across:.1}"
        );
    }
}
