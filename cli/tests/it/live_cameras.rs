//! Cameras that fail and cameras that change: a real RTSP server on loopback (gst-rtsp-server)
//! that is stopped and started again, over TCP and UDP; and cameras added, removed and reloaded
//! at runtime through the camera control subjects while a real worker detects text on them.
//! Everything runs against a real nats-server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use panoptes::camera_cmd;
use panoptes::nats_args::NatsArgs;
use panoptes::runner::{Role, Running};
use panoptes_client::control::auth::Signer;
use panoptes_client::control::cameras::ControlReply;
use panoptes_client::{DetectionSubscriber, Received};
use panoptes_contracts::{Event, EventKind, Subjects, headers};
use panoptes_tests::rtsp::{RtspServer, h264_camera};
use panoptes_topology::TopologyFile;

/// Only guards against a hang; every wait below normally ends within seconds.
const PATIENCE: Duration = Duration::from_secs(60);

/// Frames (`seq` per camera, from the headers) and events seen on a namespace.
#[derive(Default)]
struct Seen {
    frames: Vec<(String, u64)>,
    events: Vec<Event>,
}

impl Seen {
    fn seqs(&self, camera: &str) -> Vec<u64> {
        self.frames
            .iter()
            .filter(|(c, _)| c == camera)
            .map(|(_, s)| *s)
            .collect()
    }

    fn events_of(&self, kind: EventKind) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }
}

/// Records every frame header and event of `ns` in the background.
async fn watch(client: &async_nats::Client, ns: &str) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut frames = client
        .subscribe(format!("{ns}.frames.>"))
        .await
        .expect("subscribe frames");
    let mut events = client
        .subscribe(format!("{ns}.events.*"))
        .await
        .expect("subscribe events");
    client.flush().await.expect("flush");
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(m) = frames.next() => {
                    let h = m.headers.as_ref();
                    let camera = h.and_then(|h| h.get(headers::CAMERA)).map(|v| v.as_str().to_owned());
                    let seq = h.and_then(|h| h.get(headers::SEQ)).and_then(|v| v.as_str().parse().ok());
                    if let (Some(c), Some(q)) = (camera, seq) {
                        s.lock().expect("lock").frames.push((c, q));
                    }
                }
                Some(m) = events.next() => {
                    let e: Event = serde_json::from_slice(&m.payload).expect("event JSON");
                    s.lock().expect("lock").events.push(e);
                }
                else => break,
            }
        }
    });
    seen
}

/// Waits until `done` holds for what was seen, or fails with `what` and a summary.
async fn until(seen: &Arc<Mutex<Seen>>, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        {
            let s = seen.lock().expect("lock");
            if done(&s) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let events: Vec<String> = s
                    .events
                    .iter()
                    .map(|e| format!("{}:{:?}:{}", e.camera, e.kind, e.message))
                    .collect();
                panic!(
                    "timed out waiting for {what}; {} frames, events: {events:#?}",
                    s.frames.len()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An ingest-only topology: the one camera at `url` (the detector stages are not run by an
/// ingest process; a topology needs some).
fn rtsp_topology(ns: &str, url: &str, transport: &str) -> TopologyFile {
    let mut topology = panoptes_tests::detector_topology(160, 1);
    topology.config.namespace = ns.to_owned();
    topology.config.cameras = vec![panoptes_tests::camera_config(serde_json::json!({
        "id": "door",
        "source": {"rtsp": {"url": url, "transport": transport, "latency_ms": 100}},
        "width": 160, "height": 120, "fps": 5,
        "reconnect": {"initial_ms": 200, "max_ms": 1000, "stall_ms": 2000},
    }))];
    topology
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_camera_goes_down_and_reconnects_when_its_server_restarts() {
    panoptes_tests::gst();
    let nats = panoptes_tests::nats_server();
    let launch = h264_camera(320, 240, 15, "door");
    let server = RtspServer::start("/door", &launch).expect("RTSP server");
    let port = server.port();
    let ns = "rtsptcp";
    let client = panoptes::connect(nats.url()).await.expect("connect");
    let seen = watch(&client, ns).await;

    let topology = rtsp_topology(ns, &server.url(), "tcp");
    let running = Running::start(&topology, Some(nats.url()), Role::Ingest { cameras: None })
        .await
        .expect("start ingest");

    until(&seen, "frames and camera_up", |s| {
        s.seqs("door").len() >= 5 && !s.events_of(EventKind::CameraUp).is_empty()
    })
    .await;

    server.stop();
    until(&seen, "camera_down and two reconnect attempts", |s| {
        !s.events_of(EventKind::CameraDown).is_empty()
            && s.events_of(EventKind::CameraReconnecting).len() >= 2
    })
    .await;
    let before = seen.lock().expect("lock").seqs("door");
    let last_before = *before.last().expect("frames before the outage");

    // The camera comes back where it was.
    let server = RtspServer::start_on(port, "/door", &launch).expect("RTSP server again");
    until(&seen, "frames after the restart", |s| {
        s.events_of(EventKind::CameraUp).len() >= 2
            && s.seqs("door").iter().filter(|&&q| q > last_before).count() >= 5
    })
    .await;
    running.stop().await.expect("stop");
    server.stop();

    let s = seen.lock().expect("lock");
    let seqs = s.seqs("door");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers must keep increasing across the reconnect: {seqs:?}"
    );
    let down = &s.events_of(EventKind::CameraDown)[0];
    assert_eq!(down.stage.as_deref(), Some("ingest"), "{down:?}");
    let attempts: Vec<u64> = s
        .events_of(EventKind::CameraReconnecting)
        .iter()
        .filter_map(|e| e.count)
        .collect();
    assert!(
        attempts.windows(2).all(|w| w[1] == w[0] + 1) && attempts.first() == Some(&1),
        "attempts count up from 1 within one outage: {attempts:?}"
    );
    // Order: up, down, reconnecting…, up.
    let kinds: Vec<EventKind> = s.events.iter().map(|e| e.kind).collect();
    let first_down = kinds.iter().position(|k| *k == EventKind::CameraDown);
    let second_up = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| **k == EventKind::CameraUp)
        .nth(1)
        .map(|(i, _)| i);
    assert!(
        kinds.first() == Some(&EventKind::CameraUp) && first_down < second_up,
        "{kinds:?}"
    );
    eprintln!(
        "rtsp tcp: {} frames before the outage, {} after; down: {:?}; {} reconnect attempts",
        before.len(),
        seqs.len() - before.len(),
        down.message,
        attempts.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_over_udp_delivers_frames_and_reports_a_vanished_server() {
    panoptes_tests::gst();
    let nats = panoptes_tests::nats_server();
    let server =
        RtspServer::start("/yard", &h264_camera(320, 240, 15, "yard")).expect("RTSP server");
    let ns = "rtspudp";
    let client = panoptes::connect(nats.url()).await.expect("connect");
    let seen = watch(&client, ns).await;
    let topology = rtsp_topology(ns, &server.url(), "udp");
    let running = Running::start(&topology, Some(nats.url()), Role::Ingest { cameras: None })
        .await
        .expect("start ingest");
    until(&seen, "frames over UDP", |s| s.seqs("door").len() >= 5).await;
    server.stop();
    // Over UDP nothing closes: the stall watchdog (or rtspsrc's own timeout) notices.
    until(&seen, "camera_down", |s| {
        !s.events_of(EventKind::CameraDown).is_empty()
    })
    .await;
    running.stop().await.expect("stop");
    let s = seen.lock().expect("lock");
    eprintln!(
        "rtsp udp: {} frames; down: {:?}",
        s.frames.len(),
        s.events_of(EventKind::CameraDown)[0].message
    );
}

/// A test-pattern camera entry, as a topology or `panoptes camera add` takes it.
fn pattern_camera(id: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "source": {"test_pattern": {"text": text, "font": "Sans Bold 40"}},
        "width": 320, "height": 240, "fps": 4,
    })
}

/// Topologies of these tests enable control with the key pair `admin.key`(`.pub`) beside them.
fn write_topology(path: &std::path::Path, ns: &str, cameras: &[(&str, &str)]) {
    let dir = path.parent().expect("dir");
    admin(dir);
    let mut topology = panoptes_tests::detector_topology(160, 1);
    topology.config.namespace = ns.to_owned();
    topology.config.control.enabled = true;
    topology.config.control.keys = vec![dir.join("admin.key.pub")];
    topology.config.cameras = (cameras.iter())
        .map(|(id, text)| panoptes_tests::camera_config(pattern_camera(id, text)))
        .collect();
    let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
    let written = panoptes_tests::write_topology(dir, name, &topology);
    assert_eq!(written, path);
}

/// A signer for `dir`'s topologies: makes `admin.key` there on first use.
fn admin(dir: &std::path::Path) -> Signer {
    let key = dir.join("admin.key");
    if !key.exists() {
        panoptes_client::keys::generate_key_files(&key).expect("keygen");
    }
    Signer::read(&key).expect("read key")
}

async fn control(
    dir: &std::path::Path,
    url: &str,
    ns: &str,
    op: &str,
    body: serde_json::Value,
) -> Vec<ControlReply> {
    let signer = admin(dir);
    camera_cmd::request(
        &NatsArgs::url(url),
        Some(&signer),
        &Subjects::new(ns),
        op,
        serde_json::to_vec(&body).expect("json"),
        Duration::from_secs(30),
        Some(1),
    )
    .await
    .expect("control request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_added_and_removed_at_runtime_start_and_stop_their_detections() {
    panoptes_tests::gst();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("live.yaml");
    let ns = "runtime";
    write_topology(&path, ns, &[("lobby", "LOBBY 1")]);
    let topology = TopologyFile::load(&path).unwrap_or_else(|d| panic!("{}", d.render(false)));
    let running = Running::start(&topology, None, Role::All)
        .await
        .expect("start");
    running.reload_from(&path);
    let url = running.nats_url.clone();
    let client = panoptes::connect(&url).await.expect("connect");
    let seen = watch(&client, ns).await;
    let detections: Arc<Mutex<Vec<(String, u64, usize)>>> = Arc::default();
    {
        let mut sub = DetectionSubscriber::new(&client, &running.subjects, None)
            .await
            .expect("subscribe detections");
        let d = detections.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Received::Message(m) = m {
                    d.lock()
                        .expect("lock")
                        .push((m.camera.clone(), m.seq, m.detections.len()));
                }
            }
        });
    }
    let count = |camera: &str| {
        detections
            .lock()
            .expect("lock")
            .iter()
            .filter(|(c, _, n)| c == camera && *n > 0)
            .count()
    };
    let wait_for = |camera: &'static str, n: usize| {
        let count = &count;
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while count(camera) < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{camera}: {} detection messages with boxes, wanted {n}",
                    count(camera)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for("lobby", 2).await;

    // Added through the control subject: it starts producing detections.
    let added = control(
        dir.path(),
        &url,
        ns,
        "add",
        serde_json::json!({"camera": {
            "id": "garage",
            "source": {"test_pattern": {"text": "GARAGE 2", "font": "Sans Bold 40"}},
            "width": 320, "height": 240, "fps": 4,
        }}),
    )
    .await;
    assert!(
        added.len() == 1 && added[0].ok && added[0].added == ["garage"],
        "{added:?}"
    );
    wait_for("garage", 2).await;
    let lobby_before = count("lobby");
    wait_for("lobby", lobby_before + 2).await;

    // A bad camera is refused with the cause, and nothing else changes.
    let refused = control(
        dir.path(),
        &url,
        ns,
        "add",
        serde_json::json!({"camera": {"id": "bad cam", "source": {"test_pattern": {"text": "x"}}}}),
    )
    .await;
    assert!(!refused[0].ok, "{refused:?}");
    let error = refused[0].error.clone().unwrap_or_default();
    assert!(error.contains("bad cam"), "{error}");
    let dup = control(
        dir.path(),
        &url,
        ns,
        "add",
        serde_json::json!({"camera": {"id": "garage", "source": {"test_pattern": {"text": "x"}}}}),
    )
    .await;
    assert!(
        !dup[0].ok
            && dup[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("already running"),
        "{dup:?}"
    );

    // Removed: its frames stop at once, its detections once the worker drained them.
    let removed = control(
        dir.path(),
        &url,
        ns,
        "remove",
        serde_json::json!({"camera": "lobby"}),
    )
    .await;
    assert!(
        removed[0].ok && removed[0].removed == ["lobby"],
        "{removed:?}"
    );
    let frames_at_removal = seen.lock().expect("lock").seqs("lobby").len();
    let garage_then = count("garage");
    wait_for("garage", garage_then + 3).await;
    let lobby_at = count("lobby");
    wait_for("garage", garage_then + 6).await;
    assert_eq!(
        seen.lock().expect("lock").seqs("lobby").len(),
        frames_at_removal,
        "no lobby frame after its removal"
    );
    // At most the frames in flight at removal (the worker's queue) still come out.
    assert!(
        count("lobby") <= lobby_at + 1,
        "lobby detections went on after it was removed: {} then {}",
        lobby_at,
        count("lobby")
    );
    let listed = control(dir.path(), &url, ns, "list", serde_json::json!({})).await;
    let ids: Vec<&str> = listed[0]
        .cameras
        .as_ref()
        .expect("cameras")
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, ["garage"], "{listed:?}");

    // Reload: the file now has `lobby` again and a new `dock`; `garage` (added at runtime)
    // is not in it, so it stops.
    write_topology(&path, ns, &[("lobby", "LOBBY 1"), ("dock", "DOCK 3")]);
    let reloaded = control(dir.path(), &url, ns, "reload", serde_json::json!({})).await;
    assert!(reloaded[0].ok, "{reloaded:?}");
    assert_eq!(reloaded[0].added, ["lobby", "dock"], "{reloaded:?}");
    assert_eq!(reloaded[0].removed, ["garage"], "{reloaded:?}");
    let lobby_now = count("lobby");
    wait_for("dock", 2).await;
    wait_for("lobby", lobby_now + 2).await;

    // A broken file is refused and changes nothing.
    std::fs::write(&path, "cameras: [ {id: 1").expect("write");
    let broken = control(dir.path(), &url, ns, "reload", serde_json::json!({})).await;
    assert!(!broken[0].ok, "{broken:?}");
    let listed = control(dir.path(), &url, ns, "list", serde_json::json!({})).await;
    assert_eq!(
        listed[0].cameras.as_ref().map(Vec::len),
        Some(2),
        "{listed:?}"
    );

    let summary = running.stop().await.expect("stop");
    assert_eq!(summary.worker.failed, 0);
    let s = seen.lock().expect("lock");
    let ups: Vec<String> = s
        .events_of(EventKind::CameraUp)
        .into_iter()
        .map(|e| e.camera)
        .collect();
    assert!(
        ups.iter().any(|c| c == "garage") && ups.iter().any(|c| c == "dock"),
        "{ups:?}"
    );
    eprintln!(
        "runtime cameras: detections with boxes: lobby {}, garage {}, dock {}",
        count("lobby"),
        count("garage"),
        count("dock")
    );
}

/// Encodes one second of a moving ball (20 frames at 20 fps) with `encoder` into `path`.
fn make_clip(path: &std::path::Path, encoder: &str) {
    let status = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(
            format!(
                "videotestsrc num-buffers=20 pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=20/1 ! {encoder} ! filesink"
            )
            .split(' '),
        )
        .arg(format!("location={}", path.display()))
        .status()
        .expect("gst-launch-1.0 (run scripts/setup.sh)");
    assert!(status.success(), "encoding {} failed", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_files_play_to_their_end_and_report_it_without_reconnecting() {
    panoptes_tests::gst();
    let nats = panoptes_tests::nats_server();
    let dir = tempfile::tempdir().expect("temp dir");
    make_clip(&dir.path().join("h264.mp4"), "x264enc ! mp4mux");
    make_clip(&dir.path().join("mjpeg.mkv"), "jpegenc ! matroskamux");
    let ns = "files";
    let mut topology = panoptes_tests::detector_topology(160, 1);
    topology.config.namespace = ns.to_owned();
    topology.config.cameras = [("mp4", "h264.mp4"), ("mkv", "mjpeg.mkv")]
        .map(|(id, file)| {
            panoptes_tests::camera_config(serde_json::json!({
                "id": id,
                "source": {"file": {"path": dir.path().join(file)}},
                "width": 160, "height": 120, "fps": 10,
            }))
        })
        .to_vec();
    let client = panoptes::connect(nats.url()).await.expect("connect");
    let seen = watch(&client, ns).await;
    let running = Running::start(&topology, Some(nats.url()), Role::Ingest { cameras: None })
        .await
        .expect("start ingest");
    until(&seen, "both files to end", |s| {
        s.events_of(EventKind::CameraDown).len() == 2
    })
    .await;
    // Nothing restarts a recording: give a reconnect (200 ms and up) the time to show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let summary = running.stop().await.expect("stop");
    let s = seen.lock().expect("lock");
    let (mut seen_total, mut holes) = (0, 0);
    for cam in ["mp4", "mkv"] {
        let seqs = s.seqs(cam);
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{cam}: {seqs:?}");
        seen_total += seqs.len() as u64;
        holes += seqs.last().map_or(0, |last| last + 1 - seqs.len() as u64);
        let down: Vec<Event> = s
            .events_of(EventKind::CameraDown)
            .into_iter()
            .filter(|e| e.camera == cam)
            .collect();
        assert_eq!(down.len(), 1, "{cam}: {down:?}");
        assert_eq!(down[0].message, "end of stream");
    }
    // One second at 10 fps each; videorate may add the frame at the very end. A frame the
    // ingest dropped because publishing fell behind (a loaded machine) is counted, not lost.
    assert_eq!(summary.published, seen_total, "{summary:?}");
    let made = summary.published + summary.ingest_dropped;
    assert!((20..=22).contains(&made), "{made} frames made: {summary:?}");
    assert!(holes <= summary.ingest_dropped, "{holes} gaps: {summary:?}");
    assert!(
        s.events_of(EventKind::CameraReconnecting).is_empty(),
        "a recording is not reconnected"
    );
}
