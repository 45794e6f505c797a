//! A scripted scene through the `analytics` stage: objects walking known paths across a zone
//! and a line, so every event is known in advance: each crossing once with its direction,
//! enter/exit pairs, one dwell per visit after its threshold, exits for tracks that end inside,
//! and time rules driven by the tick under tokio's paused clock.

use std::time::Duration;

use panoptes_contracts::analytics::{AnalyticsEvent, AnalyticsKind, Direction};
use panoptes_contracts::camera::CameraId;
use panoptes_contracts::stage::{FrameMeta, IdRange, Item, Payload, Stage};
use panoptes_contracts::tensor::Transform;
use panoptes_contracts::{Detection, TrackInfo};
use panoptes_topology::CameraConfig;

/// 10 fps.
const FRAME_NS: u64 = 100_000_000;
const T0: u64 = 1_000_000_000_000;

/// A 640x480 camera with a zone (the left half's middle band, normalised), a dwell of 2 s for
/// people, and a horizontal line at y = 300 whose `in` side is below it.
fn camera() -> CameraConfig {
    serde_json::from_value(serde_json::json!({
        "id": "door",
        "source": { "test_pattern": { "text": "x" } },
        "width": 640, "height": 480,
        "zones": [{ "id": "bay", "units": "normalized",
                    "polygon": [[0.0, 0.25], [0.5, 0.25], [0.5, 0.75], [0.0, 0.75]],
                    "labels": ["person"], "dwell_s": 2.0 }],
        "lines": [{ "id": "gate", "from": [0, 300], "to": [640, 300], "in": "right" }]
    }))
    .expect("camera config")
}

/// The stage, treating a track missing for 5 frames as ended.
fn stage() -> panoptes_analytics::AnalyticsStage {
    stage_with(5)
}

fn stage_with(max_age: u32) -> panoptes_analytics::AnalyticsStage {
    let cfg: panoptes_topology::AnalyticsStage =
        serde_json::from_value(serde_json::json!({ "id": "zones", "max_age": max_age }))
            .expect("stage config");
    panoptes_analytics::build(&cfg, &[camera()]).expect("build")
}

/// A tracked box whose bottom centre (the default anchor) is at `(x, y)`.
fn person(id: u64, x: f32, y: f32) -> Detection {
    Detection {
        bbox: [x - 20.0, y - 80.0, x + 20.0, y],
        polygon: None,
        label: "person".into(),
        score: 0.9,
        text: None,
        track: Some(TrackInfo {
            track_id: id,
            track_age_ms: 0,
            velocity: [0.0, 0.0],
        }),
    }
}

fn item(seq: u64, detections: Vec<Detection>) -> Item {
    Item {
        frame: FrameMeta {
            camera: CameraId::new("door").expect("camera"),
            seq,
            capture_ts_ns: T0 + seq * FRAME_NS,
            width: 640,
            height: 480,
        },
        payload: Payload::Detections(detections),
        transform: Transform::IDENTITY,
        source: None,
        regions: None,
        span: tracing::Span::none(),
    }
}

fn run(
    stage: &mut impl Stage,
    seqs: std::ops::Range<u64>,
    at: impl Fn(u64) -> Vec<Detection>,
) -> Vec<AnalyticsEvent> {
    let mut out = Vec::new();
    for seq in seqs {
        let passed = stage.process(item(seq, at(seq))).expect("processed");
        // Detections pass through unchanged.
        let Payload::Detections(d) = passed.payload else {
            panic!("detections out");
        };
        assert_eq!(d, at(seq));
        out.extend(stage.take_analytics());
    }
    out
}

fn kinds(events: &[AnalyticsEvent]) -> Vec<(AnalyticsKind, u64, u64)> {
    events.iter().map(|e| (e.kind, e.track_id, e.seq)).collect()
}

#[test]
fn a_walk_down_and_back_crosses_the_line_once_each_way() {
    let mut s = stage();
    // Track 1 walks down x = 500 from y = 200 to y = 400 (10 px per frame), then back up, with
    // a pause on the line itself (y = 300) on the way back, which must not count twice.
    let y = |seq: u64| -> f32 {
        match seq {
            0..=20 => 200.0 + 10.0 * seq as f32,
            21..=30 => 400.0 - 10.0 * (seq - 20) as f32,
            31..=35 => 300.0,
            _ => 300.0 - 10.0 * (seq - 35) as f32,
        }
    };
    let events = run(&mut s, 0..45, |seq| vec![person(1, 500.0, y(seq))]);
    let crossings: Vec<(Option<Direction>, u64)> = events
        .iter()
        .filter(|e| e.kind == AnalyticsKind::LineCross)
        .map(|e| (e.direction, e.seq))
        .collect();
    // Below the line from seq 11 (y = 310); above again from seq 36 (y = 290).
    assert_eq!(
        crossings,
        [(Some(Direction::In), 11), (Some(Direction::Out), 36)]
    );
    let e = events
        .iter()
        .find(|e| e.kind == AnalyticsKind::LineCross)
        .expect("crossing");
    assert_eq!(e.line.as_deref(), Some("gate"));
    assert_eq!(e.zone, None);
    assert_eq!(e.id, "door:zones:line_cross:gate:1:11");
    assert_eq!(e.capture_ts_ns, T0 + 11 * FRAME_NS);
    assert_eq!(e.point, [500.0, 310.0]);
}

#[test]
fn zone_visits_pair_enter_and_exit_and_dwell_fires_once_after_its_threshold() {
    let mut s = stage();
    // Track 7 walks right along y = 240 from x = 0: inside the zone (x < 320) for frames
    // 0..=31; it stays 3.1 s, so its 2 s dwell fires once, at frame 20.
    // Track 8 walks through in 1 s: no dwell.
    let events = run(&mut s, 0..40, |seq| {
        let mut d = vec![person(7, 10.0 * seq as f32 + 5.0, 240.0)];
        if (5..25).contains(&seq) {
            d.push(person(8, 40.0 * (seq - 5) as f32 + 10.0, 200.0));
        }
        d
    });
    let zone: Vec<_> = kinds(&events)
        .into_iter()
        .filter(|(k, ..)| *k != AnalyticsKind::LineCross)
        .collect();
    assert_eq!(
        zone,
        [
            (AnalyticsKind::ZoneEnter, 7, 0),
            (AnalyticsKind::ZoneEnter, 8, 5),
            (AnalyticsKind::ZoneExit, 8, 13),
            (AnalyticsKind::Dwell, 7, 20),
            (AnalyticsKind::ZoneExit, 7, 32),
        ]
    );
    let dwell = events
        .iter()
        .find(|e| e.kind == AnalyticsKind::Dwell)
        .expect("dwell");
    assert_eq!(dwell.dwell_ms, Some(2000));
    assert_eq!(dwell.ts_ns, T0 + 20 * FRAME_NS);
    let exit = events
        .iter()
        .find(|e| e.kind == AnalyticsKind::ZoneExit && e.track_id == 7)
        .expect("exit");
    assert_eq!(exit.dwell_ms, Some(3200));
    assert!(!exit.ended);
}

#[test]
fn a_track_that_ends_inside_a_zone_exits_it() {
    let mut s = stage();
    let mut events = run(&mut s, 0..10, |_| vec![person(3, 100.0, 240.0)]);
    // Gone for max_age (5) frames: at the 6th frame without it, it ended at its last sighting.
    events.extend(run(&mut s, 10..16, |_| Vec::new()));
    let last = events.last().expect("events");
    assert_eq!(
        kinds(&events),
        [
            (AnalyticsKind::ZoneEnter, 3, 0),
            (AnalyticsKind::ZoneExit, 3, 9)
        ]
    );
    assert!(last.ended);
    assert_eq!(last.ts_ns, T0 + 9 * FRAME_NS);
    assert_eq!(last.dwell_ms, Some(900));
}

#[tokio::test(start_paused = true)]
async fn time_rules_run_on_the_tick_for_a_silent_camera() {
    // A track ends after 30 frames' time of silence: 3 s at 10 fps.
    let mut s = stage_with(30);
    // Two frames with track 5 standing in the zone, then the camera goes silent.
    let mut events = run(&mut s, 0..2, |_| vec![person(5, 100.0, 240.0)]);
    let clock = || tokio::time::Instant::now().into_std();
    let tick = |s: &mut panoptes_analytics::AnalyticsStage| {
        assert!(
            s.tick(clock()).is_empty(),
            "detections pass; ticks emit no items"
        );
        s.take_analytics()
    };
    // The first tick stamps the silence; 1.9 s later the 2 s dwell (from frame 0, 0.1 s
    // before the last frame) has run out.
    events.extend(tick(&mut s));
    tokio::time::advance(Duration::from_millis(1_900)).await;
    events.extend(tick(&mut s));
    assert_eq!(
        kinds(&events),
        [
            (AnalyticsKind::ZoneEnter, 5, 0),
            (AnalyticsKind::Dwell, 5, 1)
        ]
    );
    assert_eq!(events[1].ts_ns, T0 + 2_000_000_000);
    // Silent for more than 3 s: the track ends, leaving the zone.
    tokio::time::advance(Duration::from_millis(1_200)).await;
    let ended = tick(&mut s);
    assert_eq!(kinds(&ended), [(AnalyticsKind::ZoneExit, 5, 1)]);
    assert!(ended[0].ended);
    // Nothing twice.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(tick(&mut s).is_empty());
}

#[test]
fn state_moves_to_the_next_owner_without_a_second_enter() {
    let cam = CameraId::new("door").expect("camera");
    let mut first = stage();
    let events = run(&mut first, 0..5, |_| vec![person(9, 100.0, 240.0)]);
    assert_eq!(kinds(&events), [(AnalyticsKind::ZoneEnter, 9, 0)]);
    let saved = first.snapshot(&cam).expect("state");
    let mut next = stage();
    next.restore(&cam, Some(&saved), IdRange::of_tenure(1))
        .expect("restored");
    // Still inside: no second enter; walking out exits once, with the whole visit's time.
    let events = run(&mut next, 5..40, |seq| {
        vec![person(9, 100.0 + 10.0 * (seq - 5) as f32, 240.0)]
    });
    assert_eq!(
        kinds(&events),
        [
            (AnalyticsKind::Dwell, 9, 20),
            (AnalyticsKind::ZoneExit, 9, 27)
        ]
    );
    // Another version's state is refused, naming it.
    let e = next
        .restore(
            &cam,
            Some(br#"{"format":"panoptes.analytics","version":9,"state":{}}"#),
            IdRange::of_tenure(2),
        )
        .expect_err("refused");
    assert!(e.to_string().contains("version 9"), "{e}");
}

#[test]
fn occupancy_counts_tracks_per_zone_and_label() {
    let rules = panoptes_analytics::Rules::of_camera(&camera(), 640, 480);
    assert_eq!(rules.zones[0].polygon[1], [320.0, 120.0]);
    let mut state = panoptes_analytics::CameraAnalytics::default();
    let limits = panoptes_analytics::Limits {
        max_age: 5,
        max_age_ms: None,
    };
    state.frame(
        &rules,
        limits,
        0,
        T0,
        &[
            (1, "person", [100.0, 200.0]),
            (2, "person", [200.0, 300.0]),
            (3, "car", [150.0, 200.0]),
        ],
    );
    assert_eq!(state.occupancy(&rules), [("bay", "person".to_owned(), 2)]);
    state.frame(
        &rules,
        limits,
        1,
        T0 + FRAME_NS,
        &[(1, "person", [400.0, 200.0])],
    );
    assert_eq!(state.occupancy(&rules), [("bay", "person".to_owned(), 1)]);
}
