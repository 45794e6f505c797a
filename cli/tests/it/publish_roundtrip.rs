//! A third party feeding the pipeline, end to end with real parts: a nats-server, `panoptes
//! worker` (the quickstart's Wasm letterbox, PP-OCRv4 detector and DB boxes), `panoptes
//! subscribe`, and `panoptes publish` sending a PNG rendered by GStreamer. The detections must
//! lie on the text drawn into the PNG. Also: frames over the server's max_payload fail loudly,
//! and a worker without a NATS server to join refuses to start.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use panoptes_contracts::DetectionMessage;
use panoptes_contracts::partition::partition_of;
use panoptes_ingest::{Ingest, RawFrame, SourceSpec, ink_bbox};
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_tests::{area, intersection, iou, nats_server, repo_root, require_setup};

/// Failure guard only: how long any one step may take before the test gives up.
const GUARD: Duration = Duration::from_secs(120);
const CAMERA: &str = "cam-pub";
/// A camera hashed into another partition than CAMERA, whose frames the worker must skip.
const FOREIGN: &str = "cam-alpha";
const BACKGROUND: u32 = 0xff20_3040;

/// Child processes killed (and reaped) when the test ends, also when it fails.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn spawn(&mut self, cmd: &mut Command) -> usize {
        let child = cmd.spawn().expect("spawn panoptes");
        self.0.push(child);
        self.0.len() - 1
    }

    fn get(&mut self, i: usize) -> &mut Child {
        &mut self.0[i]
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn panoptes() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_panoptes"));
    cmd.current_dir(repo_root())
        .env("RUST_BACKTRACE", "0")
        .env_remove("PANOPTES_NATS_URL")
        .env_remove("PANOPTES_PARTITIONS")
        .stdin(Stdio::null());
    cmd
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

/// Waits for a line containing `needle`; panics with everything seen after `GUARD`.
fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, what: &str) -> String {
    let deadline = Instant::now() + GUARD;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("{what}: no line containing {needle:?}; got {seen:#?}");
}

fn wait_with_guard(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `panoptes publish` to completion.
fn publish(args: &[&str]) -> Output {
    panoptes()
        .arg("publish")
        .args(args)
        .output()
        .expect("run panoptes publish")
}

/// Renders a 1280x720 PNG of `text` on BACKGROUND with a plain GStreamer pipeline.
fn render_png(path: &Path, text: &str) {
    panoptes_ingest::init().expect("GStreamer");
    let desc = format!(
        "videotestsrc pattern=solid-color foreground-color={BACKGROUND} num-buffers=1 \
         ! video/x-raw,format=RGB,width=1280,height=720 \
         ! textoverlay text=\"{text}\" font-desc=\"Sans Bold 36\" halignment=center valignment=center \
         ! videoconvert ! pngenc ! filesink location=\"{}\"",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc).expect("PNG pipeline");
    let bus = pipeline.bus().expect("bus");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(GUARD.as_secs()),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("PNG pipeline finished");
    let _ = pipeline.set_state(gst::State::Null);
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("rendering the PNG failed: {}", e.error());
    }
}

/// Decodes the PNG back with GStreamer and returns the bounding box of its ink (every pixel
/// that is not background), `[x1, y1, x2, y2]` exclusive of the far edges.
fn ink_of(path: &Path) -> [f32; 4] {
    let (tx, rx) = mpsc::sync_channel::<RawFrame>(1);
    let spec = SourceSpec::Pipeline(format!("filesrc location=\"{}\" ! pngdec", path.display()));
    let ingest = Ingest::start(
        &spec,
        move |frame| {
            let _ = tx.try_send(frame);
        },
        |_| {},
    )
    .expect("decode PNG");
    let frame = rx.recv_timeout(GUARD).expect("decoded PNG");
    ingest.stop();
    assert_eq!((frame.width, frame.height), (1280, 720));
    let [_, r, g, b] = BACKGROUND.to_be_bytes();
    let Some([x1, y1, x2, y2]) = ink_bbox(&frame, [r, g, b], 24) else {
        panic!("the PNG has no text");
    };
    [x1 as f32, y1 as f32, x2 as f32 + 1.0, y2 as f32 + 1.0]
}

#[test]
fn published_png_comes_back_as_detections_on_its_text() {
    require_setup();
    // Only holds if the partition hash spreads these two names, which it does (2 and 5).
    let own = partition_of(CAMERA, 16);
    assert_ne!(own, partition_of(FOREIGN, 16));

    let dir = tempfile::tempdir().expect("tempdir");
    let png: PathBuf = dir.path().join("published.png");
    render_png(&png, "PUBLISHED 7");
    let ink = ink_of(&png);

    let server = nats_server();
    let url = server.url().to_owned();
    let mut children = Children::default();

    let worker = children.spawn(
        panoptes()
            .args(["worker", "topologies/quickstart.yaml", "--nats", &url])
            .args(["--partitions", &own.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let worker_err = lines(children.get(worker).stderr.take().expect("stderr"));
    wait_for_line(&worker_err, "worker subscribed", "panoptes worker");

    let subscriber = children.spawn(
        panoptes()
            .args([
                "subscribe",
                "--nats",
                &url,
                "--camera",
                CAMERA,
                "--count",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let detections = lines(children.get(subscriber).stdout.take().expect("stdout"));

    // The subscriber reports nothing once it is listening, so frames are sent until its one
    // message arrives. Each round first publishes a camera of another partition: the worker
    // receives those frames before CAMERA's and must skip them.
    let png_arg = png.to_str().expect("UTF-8 temp path");
    let deadline = Instant::now() + GUARD;
    let line = loop {
        assert!(
            Instant::now() < deadline,
            "no detection message for {CAMERA}"
        );
        let foreign = publish(&[
            "--test-pattern",
            "ELSEWHERE",
            "--camera",
            FOREIGN,
            "--nats",
            &url,
        ]);
        assert!(foreign.status.success(), "{foreign:?}");
        let out = publish(&[
            "--image", png_arg, "--camera", CAMERA, "--nats", &url, "--count", "5", "--fps", "2",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "publish failed: {stderr}");
        assert!(
            stderr.contains("published 5 frame(s) of 1280x720"),
            "no summary: {stderr}"
        );
        if let Ok(line) = detections.recv_timeout(Duration::from_secs(5)) {
            break line;
        }
    };

    let message: DetectionMessage = serde_json::from_str(&line).expect("detections/v1 JSON");
    assert_eq!(message.camera, CAMERA);
    assert_eq!((message.width, message.height), (1280, 720));
    assert_eq!(message.model.as_deref(), Some("ppocr-v4-det"));
    assert!(!message.detections.is_empty(), "no detections: {line}");
    let boxes: Vec<[f32; 4]> = message.detections.iter().map(|d| d.bbox).collect();
    for b in &boxes {
        let inside = intersection(*b, ink) / area(*b).max(1.0);
        assert!(inside >= 0.5, "box {b:?} lies off the text {ink:?}");
    }
    let best = boxes.iter().map(|b| iou(*b, ink)).fold(0.0f32, f32::max);
    assert!(
        best >= 0.3,
        "best IoU {best:.2}: boxes {boxes:?} vs text {ink:?}"
    );
    assert_eq!(
        wait_with_guard(children.get(subscriber), "subscribe --count 1").code(),
        Some(0)
    );

    // SIGTERM stops the worker cleanly; its summary counts the other partition's frames as
    // skipped, not as drops or failures.
    let status = Command::new("kill")
        .args(["-TERM", &children.get(worker).id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(wait_with_guard(children.get(worker), "worker").success());
    let summary = wait_for_line(&worker_err, "panoptes: worker received", "worker summary");
    assert!(summary.contains("failed 0"), "{summary}");
    let skipped: u64 = summary
        .split("skipped ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skipped count in {summary:?}"));
    assert!(skipped >= 1, "{summary}");
    eprintln!("boxes {boxes:?} on text {ink:?}, best IoU {best:.2}; {summary}");
}

#[test]
fn a_frame_over_max_payload_is_an_error_naming_both_sizes() {
    let server = NatsServer::start(&NatsServerOptions {
        max_payload: "1MB".to_owned(),
        jetstream: false,
        ..NatsServerOptions::default()
    })
    .expect("nats-server (run scripts/setup.sh)");
    // 1280x720 RGB is 2,764,800 bytes of pixels alone.
    let out = publish(&[
        "--test-pattern",
        "TOO BIG",
        "--camera",
        "cam-big",
        "--nats",
        server.url(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "publish succeeded: {stderr}");
    assert!(
        stderr.contains("more than the NATS server's max_payload of 1048576 bytes"),
        "{stderr}"
    );
    let size: usize = stderr
        .split("cam-big is ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame size in {stderr}"));
    assert!(size > 1280 * 720 * 3, "{size}");
    assert!(stderr.contains("published 0 frame(s)"), "{stderr}");
}

#[test]
fn a_worker_without_a_nats_server_to_join_says_so() {
    let out = panoptes()
        .args(["worker", "topologies/quickstart.yaml"])
        .output()
        .expect("run panoptes worker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("a worker joins an existing NATS server: give --nats or set nats.url"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_auto_sends_jpeg_when_a_raw_frame_would_not_fit() {
    use futures::StreamExt as _;
    let server = NatsServer::start(&NatsServerOptions {
        max_payload: "1MB".to_owned(),
        jetstream: false,
        ..NatsServerOptions::default()
    })
    .expect("nats-server (run scripts/setup.sh)");
    let client = panoptes::connect(server.url()).await.expect("connect");
    let mut frames = client
        .subscribe("panoptes.frames.cam-big")
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let url = server.url().to_owned();
    // The same 1280x720 frame the max_payload test is refused with.
    let out = tokio::task::spawn_blocking(move || {
        publish(&[
            "--test-pattern",
            "FITS AS JPEG",
            "--camera",
            "cam-big",
            "--nats",
            &url,
            "--encoding",
            "auto",
            "--count",
            "2",
        ])
    })
    .await
    .expect("publish");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(30), frames.next())
            .await
            .expect("a frame")
            .expect("subscription open");
        assert!(msg.payload.len() < 1 << 20);
        let frame = panoptes_contracts::frame::Frame::decode(msg.payload, Some("cam-big"))
            .expect("a valid frame/v1");
        assert_eq!(
            (frame.format, frame.width, frame.height),
            (panoptes_contracts::frame::PixelFormat::Jpeg, 1280, 720)
        );
    }
}
