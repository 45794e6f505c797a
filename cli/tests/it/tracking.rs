//! Track IDs across a failover, over a real nats-server: two `panoptes worker` processes run
//! the `tracker` stage of a split topology (the test is the detector's process: it publishes
//! `item/v1` detections of a scripted scene on `<ns>.text-boxes.<camera>`, so every frame's
//! ground truth is known). One worker is killed with SIGKILL (the next owner restores the last
//! periodic save) or stopped with SIGTERM (it saves at hand-back; periodic saves are off), and
//! every object keeps its track ID; IDs of new objects come from the new owner's range, never
//! one the old owner gave; objects that leave end their track with a `track_end` event. An
//! `analytics` stage after the tracker watches a zone A walks through (entering before the
//! failover, leaving after it) and a line B crosses after it: one enter, one exit, one
//! crossing per camera, whichever worker saw them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use panoptes_contracts::analytics::{AnalyticsEvent, AnalyticsKind, Direction};
use panoptes_contracts::event::{Event, EventKind};
use panoptes_contracts::stage::{FrameMeta, Item, Payload};
use panoptes_contracts::tensor::Transform;
use panoptes_contracts::{CameraId, Detection, DetectionMessage};
use panoptes_tests::{WorkerProcesses, nats_server};
use panoptes_topology::{StageConfig, TopologyFile};

const CAMERAS: usize = 6;
const FPS: u64 = 10;
/// Frames per camera: 14 s of video.
const FRAMES: u64 = 140;
const STOP_AT_FRAME: u64 = 50;
/// An object that enters the scene after the failover.
const LATE_FROM: u64 = 100;
/// Failure guard only.
const GUARD: Duration = Duration::from_secs(120);

/// One test at a time: each runs two workers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An object of the scene: a box moving along a straight line at a known speed while
/// `frames` contains the frame.
struct Object {
    start: [f32; 2],
    /// Pixels per frame.
    speed: [f32; 2],
    frames: std::ops::Range<u64>,
}

const SIZE: f32 = 80.0;

impl Object {
    fn bbox(&self, seq: u64) -> Option<[f32; 4]> {
        if !self.frames.contains(&seq) {
            return None;
        }
        let x = self.start[0] + self.speed[0] * seq as f32;
        let y = self.start[1] + self.speed[1] * seq as f32;
        Some([x, y, x + SIZE, y + SIZE])
    }
}

/// Every camera's scene: A moves right along y=100, B moves down along x=300 (their paths
/// cross, at different times: B passes y=100 at frame 60, A reaches x=300 at frame 187, after
/// the end), C enters after the failover, D leaves before it.
fn scene() -> [Object; 4] {
    [
        Object {
            start: [20.0, 100.0],
            speed: [1.5, 0.0],
            frames: 0..FRAMES,
        },
        Object {
            start: [300.0, 10.0],
            speed: [0.0, 1.5],
            frames: 0..FRAMES,
        },
        Object {
            start: [520.0, 300.0],
            speed: [-1.0, 0.0],
            frames: LATE_FROM..FRAMES,
        },
        Object {
            start: [60.0, 360.0],
            speed: [2.0, 0.0],
            frames: 5..30,
        },
    ]
}

fn camera(i: usize) -> String {
    format!("cam-{i}")
}

/// The detections of `cam`'s frame `seq` as the detector's process would forward them.
fn item(cam: &str, seq: u64, t0_ns: u64) -> bytes::Bytes {
    let detections = scene()
        .iter()
        .filter_map(|o| o.bbox(seq))
        .map(|bbox| Detection {
            bbox,
            polygon: None,
            label: "text".into(),
            score: 0.9,
            text: None,
            track: None,
        })
        .collect();
    let item = Item {
        frame: FrameMeta {
            camera: CameraId::new(cam).expect("camera"),
            seq,
            capture_ts_ns: t0_ns + seq * 1_000_000_000 / FPS,
            width: 640,
            height: 480,
        },
        payload: Payload::Detections(detections),
        transform: Transform::IDENTITY,
        source: None,
        regions: None,
        span: tracing::Span::none(),
    };
    panoptes_contracts::envelope::encode(&item).expect("encode item")
}

/// `tests/fixtures/tracking.yaml`: the detector chain with a tracker and analytics after it,
/// saving each camera's state every `save_ms`; the cameras have the zone `walk` on A's path
/// and the line `gate` across B's.
fn write_topology(dir: &Path, save_ms: u64) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tracking.yaml");
    let mut topology = TopologyFile::load(&path).unwrap_or_else(|d| panic!("{d}"));
    for stage in &mut topology.config.stages {
        match stage {
            StageConfig::Tracker(t) => t.snapshot_interval_ms = save_ms,
            StageConfig::Analytics(a) => a.snapshot_interval_ms = save_ms,
            _ => {}
        }
    }
    panoptes_tests::write_topology(dir, "tracking", &topology)
}

fn start(n: usize, topology: &Path, url: &str, dir: &Path) -> WorkerProcesses {
    let mut w = WorkerProcesses::new();
    for i in 0..n {
        w.spawn(
            Path::new(env!("CARGO_BIN_EXE_panoptes")),
            topology,
            url,
            &["--stages", "track,places"],
            "info,panoptes_pipeline=debug",
            (dir, &format!("worker-{i}")),
        )
        .expect("spawn panoptes worker");
    }
    w
}

/// What the workers published: per camera, the track ID of each object's box per frame, and
/// the `track_end` events.
#[derive(Default)]
struct Seen {
    ids: BTreeMap<(String, usize), BTreeMap<u64, u64>>,
    ends: Vec<Event>,
    /// Raw messages as published (detections with tracks, `track_end` events), one per line,
    /// for the third-party schema check.
    raw_detections: Vec<u8>,
    raw_ends: Vec<u8>,
    discarded: Vec<Event>,
    analytics: Vec<AnalyticsEvent>,
    raw_analytics: Vec<u8>,
}

impl Seen {
    fn detections(&mut self, m: &DetectionMessage) {
        for (o, object) in scene().iter().enumerate() {
            let Some(truth) = object.bbox(m.seq) else {
                continue;
            };
            // The tracker passes boxes through unchanged.
            if let Some(d) = m.detections.iter().find(|d| d.bbox == truth)
                && let Some(track) = d.track
            {
                self.ids
                    .entry((m.camera.clone(), o))
                    .or_default()
                    .insert(m.seq, track.track_id);
            }
        }
    }

    fn ids_of(&self, cam: &str, object: usize) -> BTreeSet<u64> {
        self.ids
            .get(&(cam.to_owned(), object))
            .map(|by_seq| by_seq.values().copied().collect())
            .unwrap_or_default()
    }
}

enum Stop {
    Kill,
    Term,
}

/// Publishes the scene on every camera, stopping the worker with the most cameras at
/// STOP_AT_FRAME; returns what was seen and the cameras that moved.
async fn run(stop: Stop, save_ms: u64) -> (Seen, Vec<String>, String) {
    let _serial = SERIAL.lock().await;
    let server = nats_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let topology = write_topology(dir.path(), save_ms);
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client.clone());
    let mut detections = client.subscribe("trk.detections.>").await.expect("sub");
    let mut events = client.subscribe("trk.events.>").await.expect("sub");
    let mut analytics = client.subscribe("trk.analytics.>").await.expect("sub");
    let mut workers = start(2, &topology, server.url(), dir.path());
    let leases =
        panoptes_tests::wait_for_shared_leases(&js, "trk", (2, 8), &mut workers, GUARD).await;
    // A state of another version waits for cam-0 (key `<unit>.<stage>.<camera>`, the unit being `track_places`): its first
    // owner discards it with an event and starts the camera afresh.
    let state = js
        .get_key_value("trk-state")
        .await
        .expect("the workers made the state bucket");
    state
        .put(
            "track_places.track.cam-0",
            r#"{"format":"panoptes.tracker","version":0,"state":{}}"#.into(),
        )
        .await
        .expect("put a stale state");
    let cams: Vec<String> = (0..CAMERAS).map(camera).collect();
    let (victim_pid, moved) = panoptes_tests::busiest_owner(&leases, &cams, 8);
    let victim = workers
        .pids()
        .iter()
        .position(|&p| p == victim_pid)
        .expect("victim is ours");

    let collector = tokio::spawn(async move {
        let mut seen = Seen::default();
        loop {
            tokio::select! {
                Some(m) = detections.next() => {
                    let parsed: DetectionMessage = serde_json::from_slice(&m.payload).expect("detections/v1.1");
                    assert_eq!(parsed.schema, "detections/v1.1");
                    seen.detections(&parsed);
                    seen.raw_detections.extend_from_slice(&m.payload);
                    seen.raw_detections.push(b'\n');
                }
                Some(m) = events.next() => {
                    let e: Event = serde_json::from_slice(&m.payload).expect("events/v1.1");
                    if e.kind == EventKind::TrackEnd {
                        seen.ends.push(e);
                        seen.raw_ends.extend_from_slice(&m.payload);
                        seen.raw_ends.push(b'\n');
                    } else if e.kind == EventKind::StateDiscarded {
                        seen.discarded.push(e);
                    }
                }
                Some(m) = analytics.next() => {
                    let e: AnalyticsEvent = serde_json::from_slice(&m.payload).expect("analytics/v1");
                    seen.analytics.push(e);
                    seen.raw_analytics.extend_from_slice(&m.payload);
                    seen.raw_analytics.push(b'\n');
                }
                () = tokio::time::sleep(Duration::from_secs(3)) => break seen,
            }
        }
    });
    let t0_ns = panoptes_contracts::time::now_ns();
    let started = Instant::now();
    for seq in 0..FRAMES {
        if seq == STOP_AT_FRAME {
            match stop {
                Stop::Kill => {
                    workers.children[victim].kill().expect("kill -9");
                    let _ = workers.children[victim].wait();
                }
                Stop::Term => {
                    let _ = Command::new("kill")
                        .args(["-TERM", &victim_pid.to_string()])
                        .status();
                }
            }
            eprintln!("stopped worker pid {victim_pid} serving {moved:?}");
        }
        for cam in &cams {
            client
                .publish(format!("trk.text-boxes.{cam}"), item(cam, seq, t0_ns))
                .await
                .expect("publish");
        }
        tokio::time::sleep_until((started + Duration::from_millis((seq + 1) * 1000 / FPS)).into())
            .await;
    }
    client.flush().await.expect("flush");
    let seen = collector.await.expect("collector");
    if let Stop::Term = stop {
        let status = workers.children[victim].wait().expect("wait");
        assert!(
            status.success(),
            "SIGTERM exit: {status}\n{}",
            workers.logs()
        );
    }
    let logs = workers.logs();
    drop(workers);
    (seen, moved, logs)
}

/// What both failovers must show.
fn check(seen: &Seen, moved: &[String], logs: &str) {
    // The stale state of cam-0 was refused, naming why; cam-0 is tracked all the same (below).
    let discarded: Vec<&Event> = seen
        .discarded
        .iter()
        .filter(|e| e.camera == "cam-0")
        .collect();
    assert_eq!(discarded.len(), 1, "{:?}", seen.discarded);
    assert_eq!(discarded[0].stage.as_deref(), Some("track"));
    assert!(
        discarded[0].message.contains("version 0"),
        "{}",
        discarded[0].message
    );
    for i in 0..CAMERAS {
        let cam = camera(i);
        // A and B span the failover: one ID each, the whole time.
        for object in [0, 1] {
            let ids = seen.ids_of(&cam, object);
            assert_eq!(
                ids.len(),
                1,
                "{cam} object {object} has track IDs {ids:?} (moved: {moved:?})\n{logs}"
            );
        }
        // No ID names two objects.
        let mut all = BTreeSet::new();
        for object in 0..4 {
            for id in seen.ids_of(&cam, object) {
                assert!(all.insert(id), "{cam}: ID {id} names two objects\n{logs}");
            }
        }
        // C appeared after the failover: on a camera that moved, its ID is from the new
        // owner's tenure, above every ID the first owner could give.
        let late = seen.ids_of(&cam, 2);
        assert_eq!(late.len(), 1, "{cam} object C: {late:?}\n{logs}");
        let a = seen.ids_of(&cam, 0).into_iter().next().unwrap_or_default();
        let c = late.into_iter().next().unwrap_or_default();
        if moved.contains(&cam) {
            assert!(
                c >= 1 << 32 && c > a,
                "{cam}: new object's ID {c} is not from the new owner's range (A is {a})"
            );
        } else {
            assert!(c < 1 << 32, "{cam}: C {c} on a camera that never moved");
        }
        // D left before the failover: its track ended, with the distance it went.
        let d = seen.ids_of(&cam, 3);
        assert_eq!(d.len(), 1, "{cam} object D: {d:?}");
        let end = seen
            .ends
            .iter()
            .find(|e| e.camera == cam && e.track.as_ref().is_some_and(|t| d.contains(&t.track_id)))
            .unwrap_or_else(|| panic!("{cam}: no track_end for D {d:?}: {:?}", seen.ends));
        let t = end.track.as_ref().expect("track");
        // Matched from frame 5 to 29 at 2 px per frame: 48 px in 2.4 s.
        assert!((t.path_px - 48.0).abs() < 2.0, "{t:?}");
        assert_eq!(t.duration_ms, 2400, "{t:?}");
        assert_eq!(end.stage.as_deref(), Some("track"));

        // A's bottom centre (x = 60 + 1.5·seq, y = 180) is in `walk` (x 100..200) from frame
        // 27 to 93; B's (x = 340, y = 90 + 1.5·seq) crosses `gate` (y = 250, `in` below) at
        // frame 107. Each once, by whichever worker held the camera then.
        let a = seen.ids_of(&cam, 0).into_iter().next().unwrap_or_default();
        let b = seen.ids_of(&cam, 1).into_iter().next().unwrap_or_default();
        let mine: Vec<&AnalyticsEvent> =
            seen.analytics.iter().filter(|e| e.camera == cam).collect();
        let what: Vec<(AnalyticsKind, u64, Option<Direction>)> = mine
            .iter()
            .map(|e| (e.kind, e.track_id, e.direction))
            .collect();
        assert_eq!(
            what,
            [
                (AnalyticsKind::ZoneEnter, a, None),
                (AnalyticsKind::ZoneExit, a, None),
                (AnalyticsKind::LineCross, b, Some(Direction::In)),
            ],
            "{cam} (moved: {}): {mine:?}",
            moved.contains(&cam)
        );
        // At the frame the scene says, or (live delivery drops a frame under load) just after.
        for (e, truth) in mine.iter().zip([27, 94, 107]) {
            assert!(
                (truth..=truth + 2).contains(&e.seq),
                "{cam}: {:?} at frame {}, expected {truth}",
                e.kind,
                e.seq
            );
        }
    }
}

/// Checks every message against the committed JSON Schemas with a validator that is not ours
/// (Python's `jsonschema`, from PyPI through the setup's venv), as a consumer would.
fn third_party_schema_check(seen: &Seen) {
    let dir = tempfile::tempdir().expect("tempdir");
    let detections = dir.path().join("detections.jsonl");
    let ends = dir.path().join("ends.jsonl");
    let analytics = dir.path().join("analytics.jsonl");
    std::fs::write(&detections, &seen.raw_detections).expect("write");
    std::fs::write(&ends, &seen.raw_ends).expect("write");
    std::fs::write(&analytics, &seen.raw_analytics).expect("write");
    let docs = panoptes_tests::repo_root().join("docs");
    let script = r#"
import json, sys, jsonschema
args = sys.argv[1:]
for schema_path, lines_path in zip(args[0::2], args[1::2]):
    validator = jsonschema.Draft202012Validator(json.load(open(schema_path)))
    n = 0
    for line in open(lines_path):
        message = json.loads(line)
        validator.validate(message)
        n += 1
    print(schema_path.rsplit("/", 1)[-1], n)
"#;
    let python = panoptes_files::paths::venv().join("bin").join("python");
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(docs.join("detections.schema.json"))
        .arg(&detections)
        .arg(docs.join("events.schema.json"))
        .arg(&ends)
        .arg(docs.join("analytics.schema.json"))
        .arg(&analytics)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (run scripts/setup.sh)", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "messages do not match docs/*.schema.json:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_ids_survive_a_killed_worker() {
    let (seen, moved, logs) = run(Stop::Kill, 200).await;
    check(&seen, &moved, &logs);
    third_party_schema_check(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_ids_survive_a_sigterm_hand_back_without_periodic_saves() {
    // Saves every 10 minutes: only the hand-back save can carry the tracks over.
    let (seen, moved, logs) = run(Stop::Term, 600_000).await;
    check(&seen, &moved, &logs);
}
