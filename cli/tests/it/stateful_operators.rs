//! A stateful Wasm operator's state follows its camera across workers, over a real nats-server:
//! two `panoptes worker` processes run the `tally` operator (world
//! `panoptes:operator/stateful-operator@0.2.0`, counting each camera's frames) and the test
//! publishes frames. The owner of most cameras is killed with SIGKILL (the next owner restores
//! the last periodic save: counts go on, never from 1 again) or stopped with SIGTERM (it saves
//! at hand-back: counts go on exactly, no frame counted twice). A corrupt state in KV is
//! refused by the operator, reported in a `state_discarded` event, and the camera starts
//! afresh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use panoptes_contracts::event::{Event, EventKind};
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::{CameraId, DetectionMessage};
use panoptes_tests::{WorkerProcesses, nats_server};

const CAMERAS: usize = 6;
const FPS: u64 = 10;
const FRAMES: u64 = 80;
const STOP_AT_FRAME: u64 = 25;
/// Failure guard only.
const GUARD: Duration = Duration::from_secs(120);

/// One test at a time: each runs two workers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tally.yaml")
}

fn camera(i: usize) -> String {
    format!("cam-{i}")
}

fn frame(cam: &str, seq: u64) -> bytes::Bytes {
    let (w, h) = (32u32, 24u32);
    Frame {
        camera: CameraId::new(cam).expect("camera id"),
        seq,
        capture_ts_ns: panoptes_contracts::time::now_ns(),
        width: w,
        height: h,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(vec![90u8; (w * h * 3) as usize]),
    }
    .encode()
    .expect("encode frame")
}

/// The tally's frame count in a detection message.
fn count(m: &DetectionMessage) -> u64 {
    let tally = m
        .detections
        .iter()
        .find(|d| d.label == "tally")
        .expect("the tally box");
    let counts: serde_json::Value =
        serde_json::from_str(tally.text.as_deref().expect("text")).expect("JSON counts");
    counts["frames"].as_u64().expect("frames")
}

enum Stop {
    Kill,
    Term,
}

struct Seen {
    /// Per camera: frame seq → the count reported for it.
    counts: BTreeMap<String, BTreeMap<u64, u64>>,
    discarded: Vec<Event>,
    moved: Vec<String>,
    logs: String,
}

async fn run(stop: Stop) -> Seen {
    let _serial = SERIAL.lock().await;
    let server = nats_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client.clone());
    let mut detections = client.subscribe("tly.detections.>").await.expect("sub");
    let mut events = client.subscribe("tly.events.>").await.expect("sub");
    let mut workers = WorkerProcesses::new();
    for i in 0..2 {
        workers
            .spawn(
                Path::new(env!("CARGO_BIN_EXE_panoptes")),
                &topology(),
                server.url(),
                &[],
                "info",
                (dir.path(), &format!("worker-{i}")),
            )
            .expect("spawn panoptes worker");
    }
    let leases =
        panoptes_tests::wait_for_shared_leases(&js, "tly", (2, 8), &mut workers, GUARD).await;
    // cam-0's saved state is not one tally can read: its first owner refuses it.
    js.get_key_value("tly-state")
        .await
        .expect("the workers made the state bucket")
        .put(
            "count.count.cam-0",
            r#"{"version":0,"counts":{"frames":5,"labels":{}}}"#.into(),
        )
        .await
        .expect("put a corrupt state");

    let cams: Vec<String> = (0..CAMERAS).map(camera).collect();
    let (victim_pid, moved) = panoptes_tests::busiest_owner(&leases, &cams, 8);
    let victim = workers
        .pids()
        .iter()
        .position(|&p| p == victim_pid)
        .expect("victim is ours");

    let collector = tokio::spawn(async move {
        let mut counts: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
        let mut discarded = Vec::new();
        loop {
            tokio::select! {
                Some(m) = detections.next() => {
                    let parsed: DetectionMessage =
                        serde_json::from_slice(&m.payload).expect("detections/v1.1");
                    counts.entry(parsed.camera.clone()).or_default().insert(parsed.seq, count(&parsed));
                }
                Some(m) = events.next() => {
                    let e: Event = serde_json::from_slice(&m.payload).expect("events/v1.1");
                    if e.kind == EventKind::StateDiscarded {
                        discarded.push(e);
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(3)) => break (counts, discarded),
            }
        }
    });
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
        }
        for cam in &cams {
            client
                .publish(format!("tly.frames.{cam}"), frame(cam, seq))
                .await
                .expect("publish");
        }
        tokio::time::sleep_until((started + Duration::from_millis((seq + 1) * 1000 / FPS)).into())
            .await;
    }
    client.flush().await.expect("flush");
    let (counts, discarded) = collector.await.expect("collector");
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
    Seen {
        counts,
        discarded,
        moved,
        logs,
    }
}

/// What both failovers show: the corrupt state refused by name; on every camera the count
/// starts at 1 and goes up by one per frame served, across a SIGTERM hand-back too; after a
/// kill the new owner goes on from the last periodic save (every 200 ms: two frames at 10
/// fps), not from 1.
fn check(seen: &Seen, stop: &Stop) {
    let Seen {
        counts,
        discarded,
        moved,
        logs,
    } = seen;
    let cam0: Vec<&Event> = discarded.iter().filter(|e| e.camera == "cam-0").collect();
    assert_eq!(cam0.len(), 1, "{discarded:?}\n{logs}");
    assert_eq!(cam0[0].stage.as_deref(), Some("count"));
    assert!(cam0[0].message.contains("version 0"), "{}", cam0[0].message);
    let consecutive = |values: &[u64]| values.windows(2).all(|w| w[1] == w[0] + 1);
    for cam in (0..CAMERAS).map(camera) {
        let by_seq = counts
            .get(&cam)
            .unwrap_or_else(|| panic!("no results for {cam}\n{logs}"));
        let before: Vec<u64> = by_seq.range(..STOP_AT_FRAME).map(|(_, &c)| c).collect();
        let after: Vec<u64> = by_seq.range(STOP_AT_FRAME..).map(|(_, &c)| c).collect();
        let all: Vec<u64> = by_seq.values().copied().collect();
        let is_moved = moved.contains(&cam);
        assert_eq!(all.first(), Some(&1), "{cam}: {by_seq:?}");
        assert!(
            before.len() > 10 && after.len() > 10,
            "{cam}: too few results on either side of the stop: {by_seq:?}\n{logs}"
        );
        match (stop, is_moved) {
            (Stop::Kill, true) => {
                assert!(
                    consecutive(&before) && consecutive(&after),
                    "{cam}: {by_seq:?}"
                );
                let (last, first) = (before[before.len() - 1], after[0]);
                assert!(
                    first + 5 >= last && first > 1,
                    "{cam}: the new owner went on from {first}, the old one had reached {last}: \
                     {by_seq:?}\n{logs}"
                );
            }
            _ => assert!(
                consecutive(&all),
                "{cam} (moved: {is_moved}): counts skip or repeat: {by_seq:?}\n{logs}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_state_survives_a_killed_worker() {
    let seen = run(Stop::Kill).await;
    check(&seen, &Stop::Kill);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_state_is_handed_back_exactly_at_sigterm() {
    let seen = run(Stop::Term).await;
    check(&seen, &Stop::Term);
}
