//! JPEG on the wire, end to end: a nats-server whose max_payload (1 MB) is too small for a raw
//! 1280×720 frame, and one `panoptes run` process with three test-pattern cameras: `jpeg`,
//! `auto` (which must choose JPEG on this server) and a small `raw` one beside them, all
//! through one chain `jpeg` operator → letterbox → PP-OCRv4 det → DB. Frames on
//! `<ns>.frames.<camera>` must be JPEG files of the camera's size (or RGB for the raw camera),
//! and every camera's detections must lie on its text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use panoptes_contracts::DetectionMessage;
use panoptes_contracts::frame::{Frame, PixelFormat};
use panoptes_op_preprocess::jpeg::{self, JpegOptions};
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_tests::{area, intersection, iou, repo_root, require_setup, text_region};
use panoptes_topology::TopologyFile;

use crate::child::Logged;

/// Failure guard only: how long the frames and detections may take to show up.
const GUARD: Duration = Duration::from_secs(120);
const NAMESPACE: &str = "jpegwire";
/// Checked frames and detection messages wanted per camera.
const WANTED: usize = 2;

/// `(id, size, encoding)`: 1280×720 RGB is 2,764,800 bytes, over the server's 1 MB; 320×240
/// (230,400 bytes) fits.
const CAMERAS: [(&str, (u32, u32), &str); 3] = [
    ("cam-jpeg", (1280, 720), "jpeg"),
    ("cam-auto", (1280, 720), "auto"),
    ("cam-raw", (320, 240), "raw"),
];

/// `tests/fixtures/jpeg-wire.yaml` with the cameras of [`CAMERAS`].
fn write_topology(dir: &Path) -> PathBuf {
    require_setup();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg-wire.yaml");
    let mut topology = TopologyFile::load(&fixture).unwrap_or_else(|d| panic!("{d}"));
    topology.config.namespace = NAMESPACE.to_owned();
    topology.config.cameras = CAMERAS
        .iter()
        .map(|(id, (w, h), encoding)| {
            // textoverlay scales the font with the frame's width, so the text covers the same
            // share of every camera's frame and one letterbox size finds it in all of them.
            panoptes_tests::camera_config(serde_json::json!({
                "id": id, "fps": 3, "width": w, "height": h,
                "encoding": encoding, "jpeg_quality": 85,
                "source": {"test_pattern": {"text": format!("WIRE {id}"), "font": "Sans Bold 36"}},
            }))
        })
        .collect();
    panoptes_tests::write_topology(dir, "topology", &topology)
}

/// `panoptes run` of `topology` on `url`, logging to `log`.
fn run(topology: &Path, url: &str, log: PathBuf) -> Logged {
    Logged::spawn(
        Command::new(env!("CARGO_BIN_EXE_panoptes"))
            .current_dir(repo_root())
            .arg("run")
            .arg(topology)
            .args(["--nats", url])
            .env("RUST_LOG", "info,ort=warn")
            .env_remove("PANOPTES_NATS_URL")
            .env_remove("PANOPTES_PARTITIONS")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("PANOPTES_METRICS"),
        log,
    )
}

/// Checks one frame message of `camera` and says what it was.
fn check_frame(camera: &str, (width, height): (u32, u32), encoding: &str, payload: bytes::Bytes) {
    let frame = Frame::decode(payload, Some(camera))
        .unwrap_or_else(|e| panic!("{camera}: frame does not decode: {e}"));
    assert_eq!((frame.width, frame.height), (width, height), "{camera}");
    if encoding == "raw" {
        assert_eq!(frame.format, PixelFormat::Rgb8, "{camera}");
        assert_eq!(frame.pixels.len(), (width * height * 3) as usize);
        return;
    }
    // `jpeg`, and `auto` on a server whose max_payload a raw frame exceeds.
    assert_eq!(frame.format, PixelFormat::Jpeg, "{camera} ({encoding})");
    let file = frame.pixels.as_slice();
    assert!(file.starts_with(&[0xFF, 0xD8]), "{camera}: not a JPEG file");
    // Well under the 1 MB a raw frame could not fit into.
    assert!(file.len() < 500_000, "{camera}: {} bytes", file.len());
    let mut rgb = Vec::new();
    let size = jpeg::decode_rgb8(file, &JpegOptions::default(), &mut rgb)
        .unwrap_or_else(|e| panic!("{camera}: the JPEG does not decode: {e}"));
    assert_eq!(size, (width, height), "{camera}: decoded size");
}

/// Every box is centred on the camera's text, and the best one covers most of it. (Looser than
/// the quickstart test's: at a 160×160 detector input the text is about a dozen pixels high,
/// and DB's unclipped boxes come out a few pixels larger than the ink on every side; measured
/// IoU 0.46–0.60, all of the text covered.)
fn check_detections(camera: &str, region: [f32; 4], m: &DetectionMessage) {
    assert!(
        !m.detections.is_empty(),
        "{camera} seq {}: no detections",
        m.seq
    );
    for d in &m.detections {
        let [x1, y1, x2, y2] = d.bbox;
        let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        assert!(
            (region[0]..=region[2]).contains(&cx) && (region[1]..=region[3]).contains(&cy),
            "{camera} seq {}: box {:?} is off the text {region:?}",
            m.seq,
            d.bbox
        );
    }
    let best = m
        .detections
        .iter()
        .map(|d| {
            (
                iou(d.bbox, region),
                intersection(d.bbox, region) / area(region),
            )
        })
        .fold((0.0f32, 0.0f32), |a, b| if b.0 > a.0 { b } else { a });
    eprintln!(
        "{camera} seq {}: best IoU {:.2}, covering {:.0}% of the text; boxes {:?} vs text {region:?}",
        m.seq,
        best.0,
        best.1 * 100.0,
        m.detections.iter().map(|d| d.bbox).collect::<Vec<_>>()
    );
    assert!(
        best.0 >= 0.3 && best.1 >= 0.8,
        "{camera} seq {}: best IoU {:.2}, covering {:.0}% of the text",
        m.seq,
        best.0,
        best.1 * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_and_auto_cameras_travel_as_jpeg_and_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topology_path = write_topology(dir.path());
    let topology = TopologyFile::load(&topology_path).unwrap_or_else(|d| panic!("{d}"));
    let regions: BTreeMap<String, [f32; 4]> = topology
        .cameras
        .iter()
        .map(|c| (c.id.clone(), text_region(c)))
        .collect();

    let server = tokio::task::spawn_blocking(|| {
        NatsServer::start(&NatsServerOptions {
            max_payload: "1MB".to_owned(),
            ..NatsServerOptions::default()
        })
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("cannot start nats-server (run scripts/setup.sh): {e}"));
    let url = server.url().to_owned();
    let client = async_nats::connect(&url).await.expect("connect");
    assert_eq!(
        client.server_info().max_payload,
        1 << 20,
        "the server's limit"
    );
    let mut frames = client
        .subscribe(format!("{NAMESPACE}.frames.>"))
        .await
        .expect("subscribe frames");
    let mut detections = client
        .subscribe(format!("{NAMESPACE}.detections.>"))
        .await
        .expect("subscribe detections");
    client.flush().await.expect("flush");

    let run = run(&topology_path, &url, dir.path().join("run.log"));
    let mut frames_seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut detections_seen: BTreeMap<&str, usize> = BTreeMap::new();
    let done = |f: &BTreeMap<&str, usize>, d: &BTreeMap<&str, usize>| {
        CAMERAS.iter().all(|(id, ..)| {
            f.get(id).copied().unwrap_or(0) >= WANTED && d.get(id).copied().unwrap_or(0) >= WANTED
        })
    };
    let deadline = Instant::now() + GUARD;
    while !done(&frames_seen, &detections_seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::select! {
            m = frames.next() => m,
            m = detections.next() => m,
            () = tokio::time::sleep(left) => None,
        };
        let Some(message) = message else {
            panic!(
                "frames {frames_seen:?}, detections {detections_seen:?} after {GUARD:?}; panoptes run:\n{}",
                run.log()
            );
        };
        let subject = message.subject.as_str();
        // `<ns>.frames.<camera>` or `<ns>.detections.<camera>` (this server maps no partitions).
        let camera = subject.rsplit('.').next().unwrap_or_default();
        let Some((id, size, encoding)) = CAMERAS.iter().find(|(id, ..)| *id == camera) else {
            panic!("message on {subject} from no camera of the topology");
        };
        if subject.starts_with(&format!("{NAMESPACE}.frames.")) {
            check_frame(id, *size, encoding, message.payload);
            *frames_seen.entry(id).or_default() += 1;
        } else {
            let m: DetectionMessage = serde_json::from_slice(&message.payload)
                .unwrap_or_else(|e| panic!("{subject}: not a detection message: {e}"));
            assert_eq!(
                (m.width, m.height),
                *size,
                "{id}: coordinates of the camera's frame"
            );
            check_detections(id, regions[*id], &m);
            *detections_seen.entry(id).or_default() += 1;
        }
    }
    // Nothing was refused for its size, and no frame failed in the chain.
    let log = run.log();
    assert!(
        !log.contains("frame not published") && !log.contains("frame_error"),
        "{log}"
    );
    drop(run);
    drop(client);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("join");
}
