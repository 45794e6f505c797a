//! A publisher that is not panoptes: `examples/python/publish_frame.py`, written from the wire
//! contract in docs/nats.md with pyarrow and nats-py from PyPI, run with the venv that
//! scripts/setup.sh makes, against a real nats-server (NATS's default 1 MB max_payload) and a
//! real `panoptes worker` (Wasm letterbox, PP-OCRv4 detector, DB boxes). Its frames must come
//! back as detections on the text it drew, with no `frame_error`; and a frame built as the old
//! README described it (no `panoptes.schema` metadata) must be refused with an event that
//! names the missing key.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use panoptes_contracts::{DetectionMessage, Event, EventKind};
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_tests::{area, detector_topology, intersection, repo_root, require_setup};

/// Failure guard only: how long any one step may take before the test gives up.
const GUARD: Duration = Duration::from_secs(120);
const NS: &str = "thirdparty";
const CAMERA: &str = "py-dock";
const FRAMES: u64 = 6;

/// The venv's python, with the example's packages importable.
fn python() -> PathBuf {
    let python = panoptes_files::paths::venv().join("bin").join("python");
    let check = Command::new(&python)
        .args(["-c", "import pyarrow, nats, PIL"])
        .output();
    match check {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "{} lacks pyarrow, nats-py or Pillow (run scripts/setup.sh): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "cannot run {} (run scripts/setup.sh): {e}",
            python.display()
        ),
    }
}

/// The worker process, killed and reaped when the test ends (also when it fails).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Forwards each line of `stream` to a channel, from a thread, so reads can have a deadline.
fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) {
    let deadline = Instant::now() + GUARD;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("the worker never logged {needle:?}; it logged {seen:#?}");
}

/// Runs `python args…` in the repository root to completion; returns its stdout.
async fn run_python(python: &Path, args: &[&str]) -> String {
    let run = tokio::process::Command::new(python)
        .current_dir(repo_root())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(GUARD, run)
        .await
        .expect("the Python publisher hung")
        .expect("run python");
    assert!(
        out.status.success(),
        "python {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a frame built from the old README looked like: the example's frame with the schema
/// metadata left out.
const UNTAGGED: &str = r#"
import asyncio, sys, time
import nats
sys.path.insert(0, "examples/python")
import publish_frame as p
from PIL import Image

async def main(url, camera):
    p.FRAME_SCHEMA = p.FRAME_SCHEMA.remove_metadata()
    payload = p.encode_frame(camera, 1, time.time_ns(), Image.new("RGB", (64, 48)))
    nc = await nats.connect(url)
    await nc.publish("thirdparty.frames." + camera, payload)
    await nc.flush()
    await nc.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_from_the_python_example_are_processed_like_a_cameras() {
    require_setup();
    let python = python();
    let server = NatsServer::start(&NatsServerOptions {
        // NATS's default: a 640x480 RGB frame fits it.
        max_payload: "1MB".to_owned(),
        ..NatsServerOptions::default()
    })
    .expect("nats-server (run scripts/setup.sh)");
    let url = server.url().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut topology = detector_topology(640, 1);
    topology.config.namespace = NS.to_owned();
    let topology = panoptes_tests::write_topology(dir.path(), "t", &topology);

    let mut worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_panoptes"))
            .current_dir(repo_root())
            .arg("worker")
            .arg(&topology)
            .args(["--nats", &url, "--partitions", "0-15"])
            .env("RUST_LOG", "info")
            .env_remove("PANOPTES_NATS_URL")
            .env_remove("PANOPTES_PARTITIONS")
            .env_remove("PANOPTES_STAGES")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn panoptes worker"),
    );
    let log = lines(worker.0.stderr.take().expect("stderr"));
    tokio::task::block_in_place(|| wait_for_line(&log, "worker subscribed"));

    let client = async_nats::connect(url.as_str()).await.expect("connect");
    let mut detections = client
        .subscribe(format!("{NS}.detections.{CAMERA}"))
        .await
        .expect("subscribe detections");
    let mut events = client
        .subscribe(format!("{NS}.events.>"))
        .await
        .expect("subscribe events");
    client.flush().await.expect("flush");

    let script = "examples/python/publish_frame.py";
    let count = FRAMES.to_string();
    let summary = run_python(
        &python,
        &[
            script,
            "--nats",
            &url,
            "--namespace",
            NS,
            "--camera",
            CAMERA,
            "--count",
            &count,
            "--fps",
            "4",
        ],
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(summary.trim())
        .unwrap_or_else(|e| panic!("the example's summary {summary:?}: {e}"));
    assert_eq!(summary["published"], FRAMES, "{summary}");
    let text: Vec<f32> = summary["text_box"]
        .as_array()
        .expect("text_box")
        .iter()
        .map(|v| v.as_f64().expect("a number") as f32)
        .collect();
    let text = [text[0], text[1], text[2], text[3]];

    // Live delivery keeps each camera's newest frame, so the last one is always processed;
    // earlier ones are processed or reported dropped, never failed.
    let mut seen: Vec<DetectionMessage> = Vec::new();
    let mut seen_events: Vec<Event> = Vec::new();
    let deadline = tokio::time::Instant::now() + GUARD;
    while seen.last().map(|m| m.seq) != Some(FRAMES) {
        tokio::select! {
            m = detections.next() => {
                let m = m.expect("detections subscription");
                seen.push(serde_json::from_slice(&m.payload).expect("detections/v1 JSON"));
            }
            e = events.next() => {
                let e = e.expect("events subscription");
                seen_events.push(serde_json::from_slice(&e.payload).expect("events/v1 JSON"));
            }
            () = tokio::time::sleep_until(deadline) => panic!(
                "frame {FRAMES} of {CAMERA} was not processed; detections {:?}, events {seen_events:?}",
                seen.iter().map(|m| m.seq).collect::<Vec<_>>()
            ),
        }
    }
    let failed: Vec<&Event> = seen_events
        .iter()
        .filter(|e| e.kind == EventKind::FrameError)
        .collect();
    assert!(failed.is_empty(), "frames failed: {failed:?}");
    let seqs: Vec<u64> = seen.iter().map(|m| m.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]) && seqs.iter().all(|s| (1..=FRAMES).contains(s)),
        "{seqs:?}"
    );
    let dropped: u64 = seen_events
        .iter()
        .filter(|e| e.kind == EventKind::FramesDropped)
        .filter_map(|e| e.count)
        .sum();
    assert!(
        seqs.len() as u64 + dropped <= FRAMES,
        "{seqs:?} + {dropped}"
    );
    for m in &seen {
        assert_eq!(m.camera, CAMERA);
        assert_eq!((m.width, m.height), (640, 480));
        assert!(!m.detections.is_empty(), "frame {} found no text", m.seq);
        for d in &m.detections {
            let on_text = intersection(d.bbox, text) / area(d.bbox).max(1.0);
            assert!(
                on_text >= 0.5,
                "box {:?} lies off the text {text:?}",
                d.bbox
            );
        }
    }

    // The frame the old README described is refused, and the event names what it lacks.
    run_python(&python, &["-c", UNTAGGED, &url, "py-untagged"]).await;
    let refusal = loop {
        let e = tokio::time::timeout(GUARD, events.next())
            .await
            .expect("no event for the untagged frame")
            .expect("events subscription");
        let e: Event = serde_json::from_slice(&e.payload).expect("events/v1 JSON");
        if e.camera == "py-untagged" {
            break e;
        }
    };
    assert_eq!(refusal.kind, EventKind::FrameError, "{refusal:?}");
    assert!(
        refusal
            .message
            .contains("\"panoptes.schema\" = \"frame/v1\""),
        "{refusal:?}"
    );
    eprintln!(
        "python example: {FRAMES} published, {} processed ({seqs:?}), {dropped} reported dropped; \
         untagged frame: {}",
        seen.len(),
        refusal.message
    );
}
