//! The outputs' pure parts: what a filter keeps of analytics events and detection messages,
//! the IDs receivers deduplicate by, the HMAC signature (RFC 4231's vector), and the back-off
//! between attempts. Delivery itself is tested over real brokers and receivers in
//! `cli/tests/it/outputs.rs`.

use bytes::Bytes;
use panoptes_contracts::analytics::{AnalyticsEvent, AnalyticsKind};
use panoptes_contracts::detection::{DETECTIONS_SCHEMA, Detection, DetectionMessage};
use panoptes_outputs::{Backoff, Filter, Malformed, sign};
use panoptes_topology::{OutputFilter, OutputSource, RetryConfig};

fn analytics(camera: &str, kind: AnalyticsKind, label: &str) -> Bytes {
    let e = AnalyticsEvent {
        schema: "analytics/v1".into(),
        id: format!("{camera}:places:{}:bay:7:42", kind.name()),
        kind,
        camera: camera.into(),
        stage: "places".into(),
        zone: Some("bay".into()),
        line: None,
        direction: None,
        track_id: 7,
        label: label.into(),
        seq: 42,
        capture_ts_ns: 1,
        ts_ns: 2,
        dwell_ms: None,
        ended: false,
        point: [1.0, 2.0],
    };
    serde_json::to_vec(&e).expect("json").into()
}

fn detection(label: &str) -> Detection {
    Detection {
        bbox: [0.0, 0.0, 10.0, 10.0],
        polygon: None,
        label: label.into(),
        score: 0.9,
        text: None,
        track: None,
    }
}

fn detections(camera: &str, labels: &[&str]) -> Bytes {
    let m = DetectionMessage {
        schema: DETECTIONS_SCHEMA.into(),
        camera: camera.into(),
        seq: 5,
        capture_ts_ns: 1,
        published_ts_ns: 2,
        width: 640,
        height: 480,
        pipeline: "detect>boxes".into(),
        model: None,
        detections: labels.iter().map(|l| detection(l)).collect(),
    };
    serde_json::to_vec(&m).expect("json").into()
}

fn filter(cameras: &[&str], labels: &[&str], kinds: &[AnalyticsKind]) -> Filter {
    Filter::from(&OutputFilter {
        cameras: cameras.iter().map(|s| s.to_string()).collect(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        kinds: kinds.to_vec(),
    })
}

#[test]
fn an_analytics_event_passes_unchanged_with_its_own_id() {
    let body = analytics("door", AnalyticsKind::ZoneEnter, "person");
    let msg = Filter::default()
        .admit(OutputSource::Analytics, "door", &body)
        .expect("well formed")
        .expect("kept");
    assert_eq!(msg.id, "door:places:zone_enter:bay:7:42");
    assert_eq!(msg.kind, "zone_enter");
    assert_eq!(msg.label.as_deref(), Some("person"));
    assert_eq!(msg.body, body, "delivered as published");
}

#[test]
fn filters_keep_only_their_cameras_labels_and_kinds() {
    let f = filter(
        &["door"],
        &["person"],
        &[AnalyticsKind::Dwell, AnalyticsKind::LineCross],
    );
    let kept = |camera: &str, kind, label: &str| {
        f.admit(
            OutputSource::Analytics,
            camera,
            &analytics(camera, kind, label),
        )
        .expect("well formed")
        .is_some()
    };
    assert!(kept("door", AnalyticsKind::Dwell, "person"));
    assert!(
        !kept("yard", AnalyticsKind::Dwell, "person"),
        "another camera"
    );
    assert!(!kept("door", AnalyticsKind::Dwell, "car"), "another label");
    assert!(
        !kept("door", AnalyticsKind::ZoneEnter, "person"),
        "another kind"
    );
}

#[test]
fn a_label_filter_trims_detection_messages_and_skips_empty_ones() {
    let f = filter(&[], &["person"], &[]);
    let body = detections("door", &["person", "car", "person"]);
    let msg = f
        .admit(OutputSource::Detections, "door", &body)
        .expect("well formed")
        .expect("kept");
    assert_eq!(msg.id, "door:5:detect>boxes");
    assert_eq!(msg.kind, "detections");
    let trimmed: DetectionMessage = serde_json::from_slice(&msg.body).expect("json");
    assert_eq!(trimmed.detections.len(), 2);
    assert!(trimmed.detections.iter().all(|d| d.label == "person"));
    let none = f
        .admit(
            OutputSource::Detections,
            "door",
            &detections("door", &["car"]),
        )
        .expect("well formed");
    assert!(none.is_none(), "no person: nothing to deliver");
    // Kinds filter analytics events only.
    let kinds = filter(&[], &[], &[AnalyticsKind::Dwell]);
    let kept = kinds
        .admit(
            OutputSource::Detections,
            "door",
            &detections("door", &["car"]),
        )
        .expect("well formed");
    assert!(kept.is_some_and(|m| m.body == detections("door", &["car"])));
}

#[test]
fn malformed_payloads_are_refused_with_their_cause() {
    let f = Filter::default();
    let err =
        |source, camera: &str, body: Bytes| f.admit(source, camera, &body).expect_err("malformed");
    assert!(matches!(
        err(
            OutputSource::Analytics,
            "door",
            Bytes::from_static(b"{not json")
        ),
        Malformed::Json { .. }
    ));
    assert!(matches!(
        err(
            OutputSource::Analytics,
            "yard",
            analytics("door", AnalyticsKind::Dwell, "p")
        ),
        Malformed::Camera { .. }
    ));
    assert!(matches!(
        err(OutputSource::Analytics, "door", detections("door", &["p"])),
        Malformed::Json { .. }
    ));
    let big = Bytes::from(vec![b' '; panoptes_outputs::MAX_PAYLOAD + 1]);
    assert!(matches!(
        err(OutputSource::Detections, "door", big),
        Malformed::TooLarge(_)
    ));
    let mut other: serde_json::Value =
        serde_json::from_slice(&analytics("door", AnalyticsKind::Dwell, "p")).expect("json");
    other["schema"] = "analytics/v2".into();
    let other = Bytes::from(serde_json::to_vec(&other).expect("json"));
    assert!(matches!(
        err(OutputSource::Analytics, "door", other),
        Malformed::Schema(_)
    ));
}

#[test]
fn the_signature_is_hmac_sha256_of_the_body() {
    // RFC 4231, test case 2.
    assert_eq!(
        sign(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn back_off_doubles_with_jitter_and_stays_under_its_cap() {
    let cfg = RetryConfig {
        max_attempts: 6,
        initial_ms: 100,
        max_ms: 1000,
    };
    for _ in 0..50 {
        let mut b = Backoff::new(&cfg);
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        // Jitter adds up to the delay itself: attempt n waits in [100·2ⁿ, 2·100·2ⁿ], capped.
        for (n, d) in delays.iter().enumerate() {
            let base = (100u128 << n).min(1000);
            assert!(
                *d >= base.min(1000) && *d <= 1000,
                "delay {n}: {d} ms ({delays:?})"
            );
        }
    }
}
