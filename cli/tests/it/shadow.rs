//! Shadow stages as users run them: `panoptes run` on a real nats-server with a GStreamer camera
//! and the real text detector, four zone filters each with a candidate on every frame
//! (fixture `shadow.yaml`), and the detector's own model as its candidate. The identical
//! candidates agree on every frame (metric 1.0); the changed one (left half only) differs
//! exactly on the frames with boxes in the right half, which its reports on
//! `<ns>.shadow.<stage>.<camera>` list; trapping and spinning candidates are counted as faults
//! while every live branch publishes every frame, with no frame error.
//! Then `panoptes operator promote` makes the changed candidate live: from the next frames on
//! the live zone filter drops the right half, its candidate agrees, and no frame is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt as _;
use panoptes_contracts::shadow::{ShadowMessage, ShadowOutcome};
use panoptes_contracts::{Detection, DetectionMessage};

use crate::child::Logged;
use crate::telemetry::metrics::metric;

/// Only guards against a hang.
const PATIENCE: Duration = Duration::from_secs(240);
const NS: &str = "shadowtest";
const STAGES: [&str; 4] = ["zone", "same", "trap", "spin"];

/// Everything seen on the test's subjects, by kind.
#[derive(Default)]
struct Seen {
    /// Live detection messages by stage (the branch's last stage) and seq.
    live: BTreeMap<String, BTreeMap<u64, Vec<Detection>>>,
    shadow: BTreeMap<String, Vec<ShadowMessage>>,
    frame_errors: Vec<String>,
}

fn right_half(d: &Detection) -> bool {
    (d.bbox[0] + d.bbox[2]) / 2.0 >= 160.0
}

async fn promote(url: &str, key: &Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(["operator", "promote", "--stage", "zone", "--nats", url])
        .args(["--namespace", NS, "--expect", "1", "--wait-ms", "30000"])
        .arg("--key")
        .arg(key)
        .output()
        .await
        .expect("run panoptes operator promote")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_are_compared_without_touching_live_results_and_promotion_loses_no_frame() {
    let root = panoptes_tests::require_setup();
    panoptes_tests::gst();
    let nats = panoptes_tests::nats_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("admin.key");
    let public = panoptes_client::keys::generate_key_files(&key).expect("key pair");
    let client = panoptes::connect(nats.url()).await.expect("connect");
    let mut live = client
        .subscribe(format!("{NS}.detections.*"))
        .await
        .expect("subscribe");
    let mut shadow = client
        .subscribe(format!("{NS}.shadow.>"))
        .await
        .expect("subscribe");
    let mut events = client
        .subscribe(format!("{NS}.events.*"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");

    let metrics = format!("127.0.0.1:{}", panoptes_tests::free_port());
    let log = dir.path().join("run.log");
    let run = Logged::spawn(
        Command::new(env!("CARGO_BIN_EXE_panoptes"))
            .args(["--metrics", &metrics, "run", "--no-view"])
            .arg(root.join("cli/tests/fixtures/shadow.yaml"))
            .args(["--nats", nats.url()])
            .env("SHADOW_TEST_KEY", &public)
            .env("RUST_LOG", "info"),
        log,
    );

    let mut seen = Seen::default();
    // Reads what arrives until `done` says enough.
    async fn gather(
        seen: &mut Seen,
        live: &mut async_nats::Subscriber,
        shadow: &mut async_nats::Subscriber,
        events: &mut async_nats::Subscriber,
        done: impl Fn(&Seen) -> bool,
    ) {
        while !done(seen) {
            tokio::select! {
                Some(m) = live.next() => {
                    let m: DetectionMessage = serde_json::from_slice(&m.payload).expect("detections/v1");
                    let stage = m.pipeline.rsplit('>').next().unwrap_or_default().to_owned();
                    seen.live.entry(stage).or_default().insert(m.seq, m.detections);
                }
                Some(m) = shadow.next() => {
                    let s: ShadowMessage = serde_json::from_slice(&m.payload).expect("shadow/v1");
                    assert_eq!(m.subject.as_str(), format!("{NS}.shadow.{}.{}", s.stage, s.camera));
                    seen.shadow.entry(s.stage.clone()).or_default().push(s);
                }
                Some(m) = events.next() => {
                    let text = String::from_utf8_lossy(&m.payload).into_owned();
                    if text.contains("frame_error") {
                        seen.frame_errors.push(text);
                    }
                }
            }
        }
    }

    // Before promotion: 40 frames with a right-half box compared by the changed candidate.
    let enough = |s: &Seen| {
        s.shadow.get("zone").is_some_and(|m| {
            m.iter()
                .filter(|m| m.live.iter().flatten().any(right_half))
                .count()
                >= 40
        }) && ["same", "trap", "spin"]
            .iter()
            .all(|st| s.shadow.get(*st).is_some_and(|m| m.len() >= 10))
            && s.shadow.get("detect").is_some_and(|m| m.len() >= 3)
    };
    let gathered = tokio::time::timeout(
        PATIENCE,
        gather(&mut seen, &mut live, &mut shadow, &mut events, enough),
    )
    .await;
    assert!(gathered.is_ok(), "not enough frames; log:\n{}", run.log());
    let text = panoptes_tests::scrape(&metrics).await;

    // The identical candidate agrees everywhere.
    let same = &seen.shadow["same"];
    assert!(
        same.iter().all(|m| m.outcome == ShadowOutcome::Agree),
        "{same:?}"
    );
    assert_eq!(
        metric(&text, "panoptes_shadow_agreement", &[("stage", "same")]),
        1.0,
        "{text}"
    );
    // A model's candidate is compared on the detections of a copy of its postprocessor.
    let detect = &seen.shadow["detect"];
    assert!(
        detect
            .iter()
            .all(|m| m.compared == "detections" && m.outcome == ShadowOutcome::Agree),
        "{detect:?}"
    );
    eprintln!(
        "the detector's candidate agreed on all {} frames it ran",
        detect.len()
    );
    // The changed one differs exactly where the live boxes reach the right half, losing
    // exactly those boxes and adding none.
    let zone = &seen.shadow["zone"];
    for m in zone {
        let live = m.live.clone().unwrap_or_default();
        let expected: Vec<Detection> = live.iter().filter(|d| right_half(d)).cloned().collect();
        assert_eq!(m.lost, expected, "seq {}: {m:?}", m.seq);
        assert!(m.added.is_empty(), "{m:?}");
        let want = if expected.is_empty() {
            ShadowOutcome::Agree
        } else {
            ShadowOutcome::Differ
        };
        assert_eq!(m.outcome, want, "{m:?}");
    }
    let agreement = metric(&text, "panoptes_shadow_agreement", &[("stage", "zone")]);
    assert!(agreement < 1.0, "{text}");
    // Faulting candidates are counted, naming the cause.
    for (stage, cause) in [("trap", "trap"), ("spin", "time")] {
        let reports = &seen.shadow[stage];
        assert!(
            reports.iter().all(|m| m.outcome == ShadowOutcome::Fault
                && m.error.as_deref().is_some_and(|e| e.contains(cause))),
            "{stage}: {reports:?}"
        );
        assert!(
            metric(
                &text,
                "panoptes_shadow_frames_total",
                &[("stage", stage), ("outcome", "fault")]
            ) >= reports.len() as f64,
            "{text}"
        );
    }
    // Live: no stage failed anything, and every branch published every frame (the newest
    // frame may still be on its way to the last branches).
    assert!(seen.frame_errors.is_empty(), "{:?}", seen.frame_errors);
    assert_eq!(metric(&text, "panoptes_stage_errors_total", &[]), 0.0);
    assert_eq!(metric(&text, "panoptes_operator_faults_total", &[]), 0.0);
    let seqs = |stage: &str, seen: &Seen| -> BTreeSet<u64> {
        seen.live
            .get(stage)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    };
    let last = seqs("zone", &seen).last().copied().unwrap_or(0);
    let upto =
        |s: BTreeSet<u64>| -> BTreeSet<u64> { s.into_iter().filter(|q| *q < last).collect() };
    for stage in STAGES {
        assert_eq!(
            upto(seqs(stage, &seen)),
            upto(seqs("zone", &seen)),
            "branch {stage} published other frames than zone"
        );
    }
    let processed = metric(&text, "panoptes_worker_frames_processed_total", &[]);
    eprintln!(
        "before promotion: {processed} frames processed; zone agreement {agreement:.3}; shadow frames: {}",
        STAGES
            .iter()
            .map(|s| format!(
                "{s} {:?}",
                ["agree", "differ", "fault", "skipped"].map(|o| metric(
                    &text,
                    "panoptes_shadow_frames_total",
                    &[("stage", s), ("outcome", o)]
                ))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Promote the changed candidate through the command users run.
    let out = promote(nats.url(), &key).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "promote failed: {stdout}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        run.log()
    );
    assert!(stdout.contains("\"outcome\":\"promoted\""), "{stdout}");
    // Frames captured from now on run the promoted module (a frame already being processed
    // may still run the old one).
    let switched = seqs("same", &seen).last().copied().unwrap_or(0) + 3;
    let after = |s: &Seen| {
        s.live
            .get("zone")
            .is_some_and(|m| m.keys().filter(|q| **q > switched).count() >= 30)
            && s.shadow
                .get("zone")
                .is_some_and(|m| m.iter().filter(|m| m.seq > switched).count() >= 30)
    };
    let gathered = tokio::time::timeout(
        PATIENCE,
        gather(&mut seen, &mut live, &mut shadow, &mut events, after),
    )
    .await;
    assert!(
        gathered.is_ok(),
        "no frames after promotion; log:\n{}",
        run.log()
    );
    let zone_live = &seen.live["zone"];
    let same_live = &seen.live["same"];
    let mut right_half_frames = 0;
    for (seq, detections) in zone_live.range(switched + 1..) {
        assert!(
            !detections.iter().any(right_half),
            "seq {seq}: the promoted module kept a right-half box: {detections:?}"
        );
        // What the old module would have kept, the `same` branch still does.
        if same_live.get(seq).is_some_and(|d| d.iter().any(right_half)) {
            right_half_frames += 1;
        }
    }
    assert!(
        right_half_frames > 0,
        "the scene never reached the right half after promotion"
    );
    for m in seen.shadow["zone"].iter().filter(|m| m.seq > switched) {
        assert_eq!(m.outcome, ShadowOutcome::Agree, "{m:?}");
    }
    // No frame lost across the swap: zone published every frame `same` did.
    let last = seqs("zone", &seen).last().copied().unwrap_or(0);
    let upto =
        |s: BTreeSet<u64>| -> BTreeSet<u64> { s.into_iter().filter(|q| *q < last).collect() };
    assert_eq!(upto(seqs("zone", &seen)), upto(seqs("same", &seen)));
    assert!(seen.frame_errors.is_empty(), "{:?}", seen.frame_errors);
    drop(run);
}
