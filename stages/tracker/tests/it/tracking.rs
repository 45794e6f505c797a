//! Tracking on scripted scenes: crossings, occlusions, score dips, births, ends and floods.

use panoptes_tracker::{CameraTracker, Observation, TrackerConfig};

use crate::scene::{FRAME_NS, Object, identity, run, steady};

/// A confident detection of a person.
fn person(bbox: [f32; 4]) -> Observation<'static> {
    Observation {
        bbox,
        score: 0.9,
        label: "person",
    }
}

fn walker(start: [f32; 2], speed: [f32; 2], frames: std::ops::Range<u32>) -> Object {
    Object {
        label: "person",
        start,
        speed,
        size: [60.0, 120.0],
        frames,
        score: steady,
    }
}

/// Two people walk past each other head-on (one nearer the camera, so a little lower and
/// larger), and two more cross diagonally: each keeps one ID throughout.
#[test]
fn crossing_paths_keep_their_ids() {
    let objects = [
        walker([20.0, 200.0], [4.0, 0.0], 0..150),
        Object {
            size: [54.0, 108.0],
            ..walker([620.0, 222.0], [-4.0, 0.0], 0..150)
        },
        walker([100.0, 20.0], [3.0, 3.0], 0..150),
        Object {
            size: [66.0, 132.0],
            ..walker([550.0, 36.0], [-3.0, 3.0], 0..150)
        },
    ];
    let cfg = TrackerConfig::default();
    let mut tracker = CameraTracker::starting_at(1);
    let assignments = run(&objects, 150, &cfg, &mut tracker, 0);
    let id = identity(&assignments, objects.len());
    eprintln!("crossing: {id:?}");
    assert_eq!(id.switches, 0, "{id:?}");
    assert!(id.coverage.iter().all(|&c| c >= 0.95), "{id:?}");
    assert!(id.idf1 >= 0.95, "{id:?}");
}

/// Two boxes of the same size on the same line meet exactly: at that frame nothing tells them
/// apart (an IoU tracker has no appearance), so their IDs may swap for that frame; the motion
/// model swaps them back, and neither track is lost.
#[test]
fn an_exact_overlap_costs_at_most_the_frame_of_the_overlap() {
    let objects = [
        walker([20.0, 200.0], [4.0, 0.0], 0..150),
        walker([620.0, 200.0], [-4.0, 0.0], 0..150),
    ];
    let cfg = TrackerConfig::default();
    let mut tracker = CameraTracker::starting_at(1);
    let assignments = run(&objects, 150, &cfg, &mut tracker, 0);
    let id = identity(&assignments, objects.len());
    eprintln!("exact overlap: {id:?}");
    assert!(id.switches <= 4, "{id:?}");
    assert!(id.coverage.iter().all(|&c| c >= 0.95), "{id:?}");
    let ids: std::collections::BTreeSet<u64> = assignments
        .iter()
        .flat_map(|f| f.values().flatten().copied())
        .collect();
    assert_eq!(ids.len(), 2, "no track was lost and restarted");
}

/// Occluded for ten frames, the detector still sees the person but with a low score: the
/// second pass keeps the track alive with the same ID.
#[test]
fn a_low_score_stretch_keeps_the_id() {
    let objects = [Object {
        score: |f| if (40..50).contains(&f) { 0.3 } else { 0.9 },
        ..walker([20.0, 200.0], [3.0, 1.0], 0..100)
    }];
    let cfg = TrackerConfig::default();
    let mut tracker = CameraTracker::starting_at(1);
    let assignments = run(&objects, 100, &cfg, &mut tracker, 0);
    let id = identity(&assignments, 1);
    assert_eq!(id.switches, 0, "{id:?}");
    // Every frame but the first (a track needs two matches before it has an ID).
    let with_id = assignments.iter().filter(|f| f[&0].is_some()).count();
    assert_eq!(with_id, 99, "{id:?}");
}

/// Gone for twelve frames (behind a pillar), back where its motion said it would be: same ID.
#[test]
fn a_gap_shorter_than_max_age_keeps_the_id() {
    let cfg = TrackerConfig::default();
    let mut tracker = CameraTracker::starting_at(1);
    let o = walker([20.0, 200.0], [4.0, 0.0], 0..100);
    let mut ids = Vec::new();
    for f in 0..100u32 {
        let visible = !(50..62).contains(&f);
        let obs: Vec<Observation<'_>> = o
            .bbox(f)
            .filter(|_| visible)
            .map(person)
            .into_iter()
            .collect();
        let update = tracker.update(&cfg, u64::from(f) * FRAME_NS, &obs);
        assert!(update.ended.is_empty(), "frame {f}: {:?}", update.ended);
        if let Some(Some(v)) = update.views.first() {
            ids.push(v.id);
        }
    }
    ids.dedup();
    assert_eq!(ids, vec![1]);
}

/// A track unmatched for more than `max_age` frames ends once, with its duration, hit count
/// and path; a later object gets a new ID, never the old one.
#[test]
fn tracks_end_and_ids_are_never_reused() {
    let cfg = TrackerConfig {
        max_age: 10,
        ..TrackerConfig::default()
    };
    let mut tracker = CameraTracker::starting_at(1);
    let first = walker([20.0, 200.0], [5.0, 0.0], 0..40);
    let second = walker([20.0, 200.0], [5.0, 0.0], 60..100);
    let mut ended = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for f in 0..100u32 {
        let obs: Vec<Observation<'_>> = [&first, &second]
            .iter()
            .filter_map(|o| o.bbox(f))
            .map(person)
            .collect();
        let update = tracker.update(&cfg, u64::from(f) * FRAME_NS, &obs);
        ids.extend(update.views.iter().flatten().map(|v| v.id));
        for end in update.ended {
            ended.push((f, end));
        }
    }
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(ended.len(), 1, "{ended:?}");
    let (at, end) = &ended[0];
    // Last seen at frame 39; the 11th frame without it (50) ends it.
    assert_eq!(*at, 50);
    assert_eq!(end.id, 1);
    assert_eq!(end.hits, 40);
    assert_eq!(end.duration_ms, 39 * FRAME_NS / 1_000_000);
    assert!((end.path_px - 39.0 * 5.0).abs() < 1.0, "{end:?}");
    let rest = tracker.end_all();
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2]);
}

/// A person and a bag overlapping exactly: with tracking per label they never swap IDs.
#[test]
fn labels_are_tracked_apart() {
    let person = walker([20.0, 200.0], [4.0, 0.0], 0..80);
    let bag = Object {
        label: "bag",
        ..walker([300.0, 200.0], [-3.0, 0.0], 0..80)
    };
    let cfg = TrackerConfig::default();
    let mut tracker = CameraTracker::starting_at(1);
    let assignments = run(&[person, bag], 80, &cfg, &mut tracker, 0);
    let id = identity(&assignments, 2);
    assert_eq!(id.switches, 0, "{id:?}");
}

/// The velocity reported is the object's, in pixels per second.
#[test]
fn velocity_is_in_pixels_per_second() {
    let o = walker([20.0, 200.0], [4.0, -2.0], 0..60);
    let cfg = TrackerConfig::default();
    let mut tracker = CameraTracker::starting_at(1);
    let mut last = None;
    for f in 0..60u32 {
        let obs = [person(o.bbox(f).expect("visible"))];
        last = tracker.update(&cfg, u64::from(f) * FRAME_NS, &obs).views[0].clone();
    }
    let v = last.expect("tracked");
    // 4 px and -2 px per frame at 30 fps.
    assert!((v.velocity[0] - 120.0).abs() < 6.0, "{v:?}");
    assert!((v.velocity[1] + 60.0).abs() < 6.0, "{v:?}");
    assert_eq!(v.hits, 60);
    assert_eq!(v.age_ms, 59 * FRAME_NS / 1_000_000);
}

/// A flood of boxes starts at most `max_tracks` tracks.
#[test]
fn a_flood_of_boxes_is_bounded() {
    let cfg = TrackerConfig {
        max_tracks: 100,
        ..TrackerConfig::default()
    };
    let mut tracker = CameraTracker::starting_at(1);
    let obs: Vec<Observation<'_>> = (0..5_000)
        .map(|i| {
            let x = (i % 100) as f32 * 20.0;
            let y = (i / 100) as f32 * 20.0;
            Observation {
                bbox: [x, y, x + 10.0, y + 10.0],
                score: 0.9,
                label: "dot",
            }
        })
        .collect();
    for f in 0..3u64 {
        tracker.update(&cfg, f * FRAME_NS, &obs);
    }
    assert_eq!(tracker.len(), 100);
}

/// With `max_age_ms`, a camera that sends nothing still ends its tracks when time passes.
#[test]
fn silent_cameras_expire_by_time() {
    let cfg = TrackerConfig {
        max_age_ms: Some(500),
        ..TrackerConfig::default()
    };
    let mut tracker = CameraTracker::starting_at(1);
    let o = walker([20.0, 200.0], [4.0, 0.0], 0..10);
    for f in 0..10u32 {
        let obs = [person(o.bbox(f).expect("visible"))];
        tracker.update(&cfg, u64::from(f) * FRAME_NS, &obs);
    }
    let last = 9 * FRAME_NS;
    assert!(tracker.expire(&cfg, last + 400_000_000).is_empty());
    let ended = tracker.expire(&cfg, last + 600_000_000);
    assert_eq!(ended.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1]);
    assert!(tracker.is_empty());
}
