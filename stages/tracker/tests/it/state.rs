//! The state that follows a camera to its next owner: a restored tracker continues exactly as
//! the original would have; a damaged or foreign blob is refused with a reason, never a panic.

use panoptes_tracker::{
    CameraTracker, DecodeError, MAX_STATE_BYTES, TrackerConfig, decode_state, encode_state,
};

use crate::scene::{Object, run, steady};

fn scene() -> Vec<Object> {
    vec![
        Object {
            label: "car",
            start: [0.0, 100.0],
            speed: [6.0, 0.5],
            size: [120.0, 60.0],
            frames: 0..120,
            score: steady,
        },
        Object {
            label: "car",
            start: [700.0, 140.0],
            speed: [-5.0, 0.0],
            size: [110.0, 55.0],
            frames: 10..120,
            score: |f| if f % 7 == 0 { 0.35 } else { 0.8 },
        },
    ]
}

/// Handing the state over mid-run changes nothing: the IDs after the hand-over are those an
/// uninterrupted tracker gives.
#[test]
fn a_restored_tracker_continues_as_the_original() {
    let cfg = TrackerConfig::default();
    let objects = scene();
    let mut whole = CameraTracker::starting_at(1);
    let expected = run(&objects, 120, &cfg, &mut whole, 0);

    let mut first = CameraTracker::starting_at(1);
    let before = run(&objects, 60, &cfg, &mut first, 0);
    let blob = encode_state(&first);
    let mut second = decode_state(&blob, cfg.max_tracks).expect("decodes");
    let after = run(&objects, 120, &cfg, &mut second, 60);
    let joined: Vec<_> = before.into_iter().chain(after).collect();
    assert_eq!(joined, expected);
}

/// A new owner reserves a fresh ID range: tracks carried over keep their IDs, new ones come
/// from the range, so two owners (one restored from an older snapshot) never issue one ID twice.
#[test]
fn new_ids_come_from_the_reserved_range() {
    let cfg = TrackerConfig::default();
    let objects = scene();
    let mut first = CameraTracker::starting_at(1);
    run(&objects, 5, &cfg, &mut first, 0);
    let blob = encode_state(&first);
    let mut next = decode_state(&blob, cfg.max_tracks).expect("decodes");
    next.reserve_from(1 << 32);
    let after = run(&objects, 40, &cfg, &mut next, 5);
    let ids: std::collections::BTreeSet<u64> = after
        .iter()
        .flat_map(|f| f.values().flatten().copied())
        .collect();
    // The first car was confirmed before the hand-over; the second appears after it.
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec![1, 1 << 32]);
}

#[test]
fn damaged_or_foreign_states_are_refused() {
    let cfg = TrackerConfig::default();
    let mut t = CameraTracker::starting_at(1);
    run(&scene(), 30, &cfg, &mut t, 0);
    let blob = encode_state(&t);
    let text = String::from_utf8(blob.clone()).expect("JSON");

    let truncated = decode_state(&blob[..blob.len() / 2], cfg.max_tracks);
    assert!(
        matches!(truncated, Err(DecodeError::Malformed(_))),
        "{truncated:?}"
    );
    let garbage = decode_state(&[0xff, 0x00, 0x13, 0x37], cfg.max_tracks);
    assert!(
        matches!(garbage, Err(DecodeError::Malformed(_))),
        "{garbage:?}"
    );

    let future = text.replacen("\"version\":1", "\"version\":2", 1);
    let e = decode_state(future.as_bytes(), cfg.max_tracks).expect_err("other version");
    assert!(
        matches!(e, DecodeError::Incompatible { version: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("version 2"), "{e}");

    let too_many = decode_state(&blob, 0).expect_err("more tracks than allowed");
    assert!(
        too_many.to_string().contains("more than the 0 allowed"),
        "{too_many}"
    );

    let reused = text.replacen("\"next_id\":3", "\"next_id\":1", 1);
    assert_ne!(reused, text, "the scene confirms two tracks: {text}");
    let e = decode_state(reused.as_bytes(), cfg.max_tracks).expect_err("ID reuse");
    assert!(e.to_string().contains("reuses track ID"), "{e}");

    let huge = vec![b' '; MAX_STATE_BYTES + 1];
    assert!(matches!(
        decode_state(&huge, cfg.max_tracks),
        Err(DecodeError::TooLarge(_))
    ));
}
