//! The view's model fed the messages a deployment publishes, at instants the test chooses:
//! frames are shown with their own detections, or alone once they waited; everything held is
//! bounded; bad input is skipped and counted; a stopped camera leaves.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use panoptes_contracts::event::{Event, EventKind};
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::{CameraId, Detection, DetectionMessage, TrackInfo};
use panoptes_view::model::{CameraState, Deployment, Limits};

fn frame(camera: &str, seq: u64, side: u32) -> Bytes {
    Frame {
        camera: CameraId::new(camera).expect("camera id"),
        seq,
        capture_ts_ns: 1_000_000_000 + seq * 100_000_000,
        width: side,
        height: side,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(vec![40u8; (side * side * 3) as usize]),
    }
    .encode()
    .expect("encode")
}

fn detections(camera: &str, seq: u64, track: Option<u64>, x: f32) -> Vec<u8> {
    let message = DetectionMessage {
        schema: "detections/v1.1".into(),
        camera: camera.into(),
        seq,
        capture_ts_ns: 1_000_000_000 + seq * 100_000_000,
        published_ts_ns: 1_000_000_000 + seq * 100_000_000 + 40_000_000,
        width: 64,
        height: 64,
        pipeline: "detect>boxes".into(),
        model: None,
        detections: vec![Detection {
            bbox: [x, 10.0, x + 10.0, 20.0],
            polygon: None,
            label: "person".into(),
            score: 0.9,
            text: None,
            track: track.map(|track_id| TrackInfo {
                track_id,
                track_age_ms: 100,
                velocity: [1.0, 0.0],
            }),
        }],
    };
    serde_json::to_vec(&message).expect("json")
}

fn shown_seqs(model: &Deployment, sent: &HashMap<String, u64>, now: Instant) -> Vec<(String, u64)> {
    model
        .frames_to_show(sent, now)
        .into_iter()
        .map(|f| (f.camera, f.seq))
        .collect()
}

#[test]
fn a_frame_is_shown_with_its_own_detections_or_alone_after_the_wait() {
    let t0 = Instant::now();
    let mut model = Deployment::new(Limits::default());
    for seq in 0..3 {
        model.frame("cam", frame("cam", seq, 64), None, t0);
    }
    // Nothing matched yet and nothing waited: nothing to show.
    assert!(shown_seqs(&model, &HashMap::new(), t0).is_empty());
    // Detections of frame 1 arrive: frame 1 is shown (not 2, whose detections are not here).
    model.detections("cam", &detections("cam", 1, Some(5), 10.0), t0);
    let shown = model.frames_to_show(&HashMap::new(), t0);
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].seq, 1);
    assert_eq!(shown[0].header["detections"][0]["label"], "person");
    assert_eq!(shown[0].header["detections"][0]["track_id"], 5);
    // Once sent, frame 1 is not sent again; frame 2, having waited, goes without boxes.
    let sent = HashMap::from([("cam".to_owned(), 1)]);
    assert!(shown_seqs(&model, &sent, t0).is_empty());
    let later = t0 + Limits::default().match_wait;
    assert_eq!(shown_seqs(&model, &sent, later), [("cam".to_owned(), 2)]);
}

#[test]
fn tracks_leave_trails_that_fade() {
    let t0 = Instant::now();
    let mut model = Deployment::new(Limits::default());
    for seq in 0..4 {
        model.frame("cam", frame("cam", seq, 64), None, t0);
        model.detections(
            "cam",
            &detections("cam", seq, Some(9), 10.0 + seq as f32),
            t0,
        );
    }
    let shown = model.frames_to_show(&HashMap::new(), t0);
    let trail = shown[0].header["trails"]["9"]
        .as_array()
        .expect("trail of track 9");
    assert_eq!(trail.len(), 4);
    assert_eq!(trail[3][0], 18.0);
    // Track 9 not seen for 3 s: the next message of another track drops its trail.
    let late = t0 + Duration::from_secs(4);
    model.frame("cam", frame("cam", 10, 64), None, late);
    model.detections("cam", &detections("cam", 10, Some(11), 30.0), late);
    let shown = model.frames_to_show(&HashMap::new(), late);
    assert!(
        shown[0].header["trails"].get("9").is_none(),
        "{}",
        shown[0].header
    );
}

#[test]
fn what_the_view_holds_is_bounded() {
    let t0 = Instant::now();
    let limits = Limits {
        cameras: 3,
        frames: 5,
        frame_bytes: 3 * 64 * 64 * 3,
        events: 4,
        match_wait: Duration::from_secs(1),
    };
    let mut model = Deployment::new(limits);
    for seq in 0..100 {
        model.frame("cam", frame("cam", seq, 64), None, t0);
    }
    // 3 frames of 12 KiB fit the byte limit (which is below the count limit).
    assert_eq!(model.held_bytes(), 3 * 64 * 64 * 3);
    // One frame larger than the byte limit is still held: the newest always is.
    model.frame("cam", frame("cam", 100, 128), None, t0);
    assert_eq!(model.held_bytes(), 128 * 128 * 3);
    for i in 0..10 {
        model.frame(&format!("c{i}"), frame(&format!("c{i}"), 0, 8), None, t0);
    }
    assert_eq!(model.cameras(t0).len(), 3);
    for i in 0..10 {
        let e = Event::new("cam", EventKind::FramesDropped, "dropped").count(1 + i);
        model.event("cam", &serde_json::to_vec(&e).expect("json"), t0);
    }
    let events = model.events_after(0);
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].id, 7, "the oldest went first");
    let cam = model
        .cameras(t0)
        .into_iter()
        .find(|c| c.id == "cam")
        .expect("cam");
    assert_eq!(cam.dropped, (1..=10).sum::<u64>());
    assert_eq!(
        model.skipped(),
        [serde_json::json!({ "subject": "frames", "reason": "too_many_cameras", "count": 8 })]
    );
}

#[test]
fn bad_input_is_skipped_and_counted() {
    let t0 = Instant::now();
    let mut model = Deployment::new(Limits::default());
    model.frame("cam", frame("cam", 0, 64), None, t0);
    model.frame("cam", Bytes::from_static(b"not arrow"), None, t0);
    // A frame whose payload names another camera than its subject.
    model.frame("other", frame("cam", 1, 64), None, t0);
    model.detections("cam", b"{not json", t0);
    model.detections("ghost", &detections("ghost", 0, None, 1.0), t0);
    model.detections("cam", &detections("elsewhere", 0, None, 1.0), t0);
    model.analytics("cam", b"[]");
    model.event("cam", b"", t0);
    model.clip("cam", b"{}");
    let skipped = serde_json::to_value(model.skipped()).expect("json");
    let count = |subject: &str, reason: &str| {
        skipped
            .as_array()
            .expect("list")
            .iter()
            .find(|k| k["subject"] == subject && k["reason"] == reason)
            .and_then(|k| k["count"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(count("frames", "malformed"), 2, "{skipped}");
    assert_eq!(count("detections", "malformed"), 1, "{skipped}");
    assert_eq!(count("detections", "unknown_camera"), 1, "{skipped}");
    assert_eq!(count("detections", "camera_mismatch"), 1, "{skipped}");
    assert_eq!(count("analytics", "malformed"), 1, "{skipped}");
    assert_eq!(count("events", "malformed"), 1, "{skipped}");
    assert_eq!(count("clips", "malformed"), 1, "{skipped}");
    // The camera is still there and still shown.
    assert_eq!(model.cameras(t0).len(), 1);
    let later = t0 + Duration::from_secs(2);
    assert_eq!(
        shown_seqs(&model, &HashMap::new(), later),
        [("cam".to_owned(), 0)]
    );
}

#[test]
fn ingest_events_set_the_state_and_a_stopped_camera_leaves() {
    let t0 = Instant::now();
    let mut model = Deployment::new(Limits::default());
    let event = |kind, message: &str| {
        serde_json::to_vec(&Event::new("cam", kind, message).stage("ingest")).expect("json")
    };
    // A dead source at start: known from its events alone.
    model.event(
        "cam",
        &event(EventKind::CameraReconnecting, "restarting in 1.0 s"),
        t0,
    );
    assert_eq!(model.cameras(t0)[0].state, CameraState::Reconnecting);
    model.frame("cam", frame("cam", 0, 64), None, t0);
    assert_eq!(model.cameras(t0)[0].state, CameraState::Up);
    assert_eq!(
        model.cameras(t0 + Duration::from_secs(6))[0].state,
        CameraState::Silent
    );
    model.event("cam", &event(EventKind::CameraDown, "end of stream"), t0);
    let cam = &model.cameras(t0)[0];
    assert_eq!(
        (cam.state, cam.cause.as_str()),
        (CameraState::Down, "end of stream")
    );
    model.event("cam", &event(EventKind::CameraStopped, "stopped"), t0);
    assert!(model.cameras(t0).is_empty());
    // A frame still in flight does not bring it back; a new start does.
    model.frame(
        "cam",
        frame("cam", 1, 64),
        None,
        t0 + Duration::from_secs(1),
    );
    assert!(model.cameras(t0).is_empty());
    model.event("cam", &event(EventKind::CameraUp, "receiving frames"), t0);
    assert_eq!(model.cameras(t0)[0].state, CameraState::Up);
    let kinds: Vec<String> = model.events_after(0).into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "camera_reconnecting",
            "camera_down",
            "camera_stopped",
            "camera_up"
        ]
    );
}

#[test]
fn a_preview_is_shown_as_its_jpeg_at_its_frame_size_and_bad_ones_are_counted() {
    use panoptes_contracts::preview::PreviewMeta;
    use panoptes_view::model::Picture;
    let t0 = Instant::now();
    let mut model = Deployment::new(Limits::default());
    let meta = PreviewMeta {
        camera: "cam".into(),
        seq: 4,
        capture_ts_ns: 1_400_000_000,
        frame_width: 64,
        frame_height: 64,
    };
    let headers: HashMap<&str, String> = meta.headers().into_iter().collect();
    let get = |name: &str| headers.get(name).map(String::as_str);
    let jpeg = Bytes::from_static(b"\xFF\xD8 a small JPEG");
    assert!(!model.previewed("cam", t0, Duration::from_secs(5)));
    model.preview("cam", get, jpeg.clone(), None, t0);
    assert!(model.previewed("cam", t0, Duration::from_secs(5)));
    assert!(!model.previewed("cam", t0 + Duration::from_secs(6), Duration::from_secs(5)));
    // A probe from its ingest says more previews come.
    model.probed("cam", t0 + Duration::from_secs(6));
    assert!(model.previewed("cam", t0 + Duration::from_secs(6), Duration::from_secs(5)));
    // The same frame sampled as well is held once.
    model.frame("cam", frame("cam", 4, 64), None, t0);
    model.detections("cam", &detections("cam", 4, None, 10.0), t0);
    let shown = model.frames_to_show(&HashMap::new(), t0);
    assert_eq!(shown.len(), 1);
    assert!(matches!(&shown[0].picture, Picture::Jpeg(j) if *j == jpeg));
    // Boxes stay in the frame's pixels: the page scales them by the frame's size.
    assert_eq!(shown[0].header["width"], 64);
    assert_eq!(shown[0].header["detections"][0]["label"], "person");

    model.preview("cam", get, Bytes::from_static(b"GIF89a"), None, t0);
    model.preview("cam", |_| None, jpeg.clone(), None, t0);
    let skipped = serde_json::to_value(model.skipped()).expect("json");
    assert_eq!(
        skipped,
        serde_json::json!([{ "subject": "previews", "reason": "malformed", "count": 2 }])
    );
}
