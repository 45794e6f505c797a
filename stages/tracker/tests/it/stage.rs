//! The tracker as a stage: boxes leave with their track, ended tracks become `track_end`
//! events (on the tick for a camera that went silent, in capture time extrapolated by the
//! worker's clock), and a camera's state moves to a new owner whose IDs come from its own range.

use std::time::{Duration, Instant};

use panoptes_contracts::Detection;
use panoptes_contracts::camera::CameraId;
use panoptes_contracts::event::EventKind;
use panoptes_contracts::stage::{FrameMeta, IdRange, Item, Payload, Stage};
use panoptes_contracts::tensor::Transform;
use panoptes_tracker::{TrackerConfig, TrackerStage};

use crate::scene::FRAME_NS;

fn item(camera: &str, seq: u64, boxes: &[[f32; 4]]) -> Item {
    Item {
        frame: FrameMeta {
            camera: CameraId::new(camera).expect("camera"),
            seq,
            capture_ts_ns: 1_000_000_000 + seq * FRAME_NS,
            width: 640,
            height: 480,
        },
        payload: Payload::Detections(
            boxes
                .iter()
                .map(|&bbox| Detection {
                    bbox,
                    polygon: None,
                    label: "person".into(),
                    score: 0.9,
                    text: None,
                    track: None,
                })
                .collect(),
        ),
        transform: Transform::IDENTITY,
        source: None,
        regions: None,
        span: tracing::Span::none(),
    }
}

/// One box moving right 4 px per frame, frames `seq`.
fn walker(seq: u64) -> [f32; 4] {
    let x = 10.0 + 4.0 * seq as f32;
    [x, 100.0, x + 40.0, 180.0]
}

fn track_ids(out: &Item) -> Vec<Option<u64>> {
    let Payload::Detections(d) = &out.payload else {
        panic!("detections expected, got {}", out.payload.kind());
    };
    d.iter().map(|d| d.track.map(|t| t.track_id)).collect()
}

fn run(stage: &mut TrackerStage, camera: &str, seqs: std::ops::Range<u64>) -> Vec<Option<u64>> {
    seqs.map(|seq| {
        let out = stage
            .process(item(camera, seq, &[walker(seq)]))
            .expect("tracked");
        track_ids(&out)[0]
    })
    .collect()
}

#[test]
fn boxes_get_a_track_after_min_hits_with_age_and_velocity() {
    let mut stage = TrackerStage::new("track", TrackerConfig::default());
    let ids = run(&mut stage, "cam-1", 0..10);
    assert_eq!(ids[0], None, "a tentative track has no ID yet");
    assert!(ids[1..].iter().all(|id| *id == Some(1)), "{ids:?}");
    let out = stage
        .process(item("cam-1", 10, &[walker(10)]))
        .expect("tracked");
    let Payload::Detections(d) = &out.payload else {
        panic!("detections");
    };
    let track = d[0].track.expect("tracked");
    // 10 frames at 30 fps since the first box; 4 px per frame is 120 px/s.
    assert_eq!(track.track_age_ms, 333);
    assert!((track.velocity[0] - 120.0).abs() < 15.0, "{track:?}");
    assert!(track.velocity[1].abs() < 5.0, "{track:?}");
    // Cameras are tracked on their own: IDs are per camera.
    assert_eq!(run(&mut stage, "cam-2", 0..3)[2], Some(1));
}

#[test]
fn a_track_not_seen_for_max_age_frames_ends_with_an_event() {
    let mut stage = TrackerStage::new(
        "track",
        TrackerConfig {
            max_age: 5,
            ..TrackerConfig::default()
        },
    );
    run(&mut stage, "cam-1", 0..20);
    assert!(stage.take_events().is_empty());
    for seq in 20..27 {
        stage.process(item("cam-1", seq, &[])).expect("empty frame");
    }
    let events = stage.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.kind, EventKind::TrackEnd);
    assert_eq!(e.stage.as_deref(), Some("track"));
    assert_eq!(e.camera, "cam-1");
    let t = e.track.as_ref().expect("track summary");
    assert_eq!(t.track_id, 1);
    assert_eq!(t.label, "person");
    assert_eq!(t.hits, 20);
    // Frames 0..=19: 19 intervals of 33.3 ms and of 4 px.
    assert_eq!(t.duration_ms, 633);
    assert!((t.path_px - 76.0).abs() < 1.0, "{t:?}");
}

#[test]
fn a_silent_cameras_tracks_end_on_the_tick_after_max_age_frames_of_time() {
    let mut stage = TrackerStage::new("track", TrackerConfig::default());
    run(&mut stage, "cam-1", 0..10);
    let seen = Instant::now();
    // 30 frames at 30 fps: a second without frames. Before it, nothing ends.
    stage.tick(seen + Duration::from_millis(900));
    assert!(stage.take_events().is_empty());
    stage.tick(seen + Duration::from_millis(1_200));
    let events = stage.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::TrackEnd);
    assert_eq!(events[0].seq, None, "ended by time, not by a frame");
    // Nothing twice.
    stage.tick(seen + Duration::from_secs(5));
    assert!(stage.take_events().is_empty());
}

#[test]
fn state_moves_to_a_new_owner_whose_new_ids_come_from_its_range() {
    let cam = CameraId::new("cam-1").expect("camera");
    let mut first = TrackerStage::new("track", TrackerConfig::default());
    first
        .restore(&cam, None, IdRange::of_tenure(0))
        .expect("fresh");
    assert_eq!(run(&mut first, "cam-1", 0..5)[4], Some(1));
    let saved = first.snapshot(&cam).expect("state");

    // The next owner continues track 1 and gives a new object an ID of its own tenure.
    let mut second = TrackerStage::new("track", TrackerConfig::default());
    let range = IdRange::of_tenure(1);
    second.restore(&cam, Some(&saved), range).expect("restored");
    let mut ids = Vec::new();
    for seq in 5..9 {
        let out = second
            .process(item(
                "cam-1",
                seq,
                &[walker(seq), [400.0, 300.0, 440.0, 380.0]],
            ))
            .expect("tracked");
        ids.push(track_ids(&out));
    }
    assert!(
        ids.iter().all(|i| i[0] == Some(1)),
        "track 1 continues: {ids:?}"
    );
    assert_eq!(ids[3][1], Some(range.first), "{ids:?}");
    assert_eq!(range.first, 1 << 32);

    // A third owner restoring the first owner's older state never reissues the second's IDs.
    let mut third = TrackerStage::new("track", TrackerConfig::default());
    third
        .restore(&cam, Some(&saved), IdRange::of_tenure(2))
        .expect("restored");
    third
        .process(item("cam-1", 9, &[walker(9), [400.0, 300.0, 440.0, 380.0]]))
        .expect("tracked");
    let out = third
        .process(item(
            "cam-1",
            10,
            &[walker(10), [400.0, 300.0, 440.0, 380.0]],
        ))
        .expect("tracked");
    assert_eq!(track_ids(&out), [Some(1), Some(2 << 32)]);
}

#[test]
fn unusable_state_is_refused_with_its_cause_and_a_fresh_start_works() {
    let cam = CameraId::new("cam-1").expect("camera");
    let mut stage = TrackerStage::new("track", TrackerConfig::default());
    let other_version = br#"{"format":"panoptes.tracker","version":99,"state":{}}"#;
    let e = stage
        .restore(&cam, Some(other_version), IdRange::of_tenure(3))
        .expect_err("another version");
    assert!(e.to_string().contains("version 99"), "{e}");
    let e = stage
        .restore(&cam, Some(b"\x00garbage"), IdRange::of_tenure(3))
        .expect_err("garbage");
    assert!(e.to_string().contains("cam-1"), "{e}");
    stage
        .restore(&cam, None, IdRange::of_tenure(3))
        .expect("fresh");
    assert_eq!(run(&mut stage, "cam-1", 0..3)[2], Some(3 << 32));
}

#[test]
fn a_topology_tracker_is_built_with_its_settings_checked() {
    let cfg: panoptes_topology::TrackerStage = serde_json::from_value(serde_json::json!({
        "id": "track", "low_score": 0.7, "high_score": 0.5
    }))
    .expect("config");
    let e = panoptes_tracker::build(&cfg).err().expect("low above high");
    assert!(
        e.to_string()
            .contains("low_score 0.7 is above high_score 0.5"),
        "{e}"
    );
    let cfg: panoptes_topology::TrackerStage =
        serde_json::from_value(serde_json::json!({ "id": "track" })).expect("config");
    let stage = panoptes_tracker::build(&cfg).expect("defaults");
    assert_eq!(stage.snapshot_interval(), Some(Duration::from_secs(1)));
}
