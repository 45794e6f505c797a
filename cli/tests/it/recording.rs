//! Clips of events, over a real nats-server, with `panoptes record` processes and the real
//! GStreamer encoders; the test is the rest of the deployment (it publishes the frames of a
//! scripted scene, their detections and the analytics events), so it knows every frame:
//! - one zone entry makes one clip of pre-roll + post-roll (50 frames, 5 s, decoded back by
//!   GStreamer), a snapshot whose drawn box sits on the object, a `clips/v1` message naming
//!   both; two overlapping entries make one longer clip; `panoptes clips get` returns the
//!   stored bytes exactly, `clips list` filters, `clips rm` removes the clip;
//! - the recorder of a camera killed with SIGKILL mid-clip leaves no clip behind, and the
//!   camera's next recorder goes on with the clip as its second part;
//! - a camera recorded continuously is stored in segments of its `segment_s`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use panoptes_contracts::analytics::{ANALYTICS_SCHEMA, AnalyticsEvent, AnalyticsKind};
use panoptes_contracts::clip::ClipMessage;
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::{CameraId, Detection, DetectionMessage, TrackInfo};
use panoptes_tests::{WorkerProcesses, nats_server};

const W: u32 = 640;
const H: u32 = 360;
const FPS: u64 = 10;
const SIDE: u32 = 80;
const TRACK: u64 = 7;
/// Failure guard only.
const GUARD: Duration = Duration::from_secs(90);

/// One test at a time: each runs recorders and encodes video.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/record.yaml")
}

/// Where the scene's white square is at frame `seq`: 8 px further right each frame.
fn square(seq: u64) -> [f32; 4] {
    let x = (40 + 8 * seq).min(u64::from(W - SIDE)) as f32;
    [x, 140.0, x + SIDE as f32, 140.0 + SIDE as f32]
}

fn frame(cam: &str, seq: u64, ts: u64) -> bytes::Bytes {
    let mut px = vec![30u8; (W * H * 3) as usize];
    let [x1, y1, x2, y2] = square(seq).map(|v| v as u32);
    for y in y1..y2 {
        for x in x1..x2 {
            let at = ((y * W + x) * 3) as usize;
            px[at..at + 3].copy_from_slice(&[240, 240, 240]);
        }
    }
    Frame {
        camera: CameraId::new(cam).expect("camera"),
        seq,
        capture_ts_ns: ts,
        width: W,
        height: H,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(px),
    }
    .encode()
    .expect("encode frame")
}

fn detections(cam: &str, seq: u64, ts: u64) -> Vec<u8> {
    let m = DetectionMessage {
        schema: "detections/v1.1".into(),
        camera: cam.into(),
        seq,
        capture_ts_ns: ts,
        published_ts_ns: ts,
        width: W,
        height: H,
        pipeline: "tracks".into(),
        model: None,
        detections: vec![Detection {
            bbox: square(seq),
            polygon: None,
            label: "person".into(),
            score: 0.9,
            text: None,
            track: Some(TrackInfo {
                track_id: TRACK,
                track_age_ms: seq * 100,
                velocity: [80.0, 0.0],
            }),
        }],
    };
    serde_json::to_vec(&m).expect("json")
}

fn zone_enter(cam: &str, zone: &str, seq: u64, ts: u64, n: u32) -> Vec<u8> {
    let b = square(seq);
    let e = AnalyticsEvent {
        schema: ANALYTICS_SCHEMA.into(),
        id: format!(
            "{cam}:places:zone_enter:{zone}:{}:{seq}",
            TRACK + u64::from(n)
        ),
        kind: AnalyticsKind::ZoneEnter,
        camera: cam.into(),
        stage: "places".into(),
        zone: Some(zone.into()),
        line: None,
        direction: None,
        track_id: TRACK + u64::from(n),
        label: "person".into(),
        seq,
        capture_ts_ns: ts,
        ts_ns: ts,
        dwell_ms: None,
        ended: false,
        point: [(b[0] + b[2]) / 2.0, b[3]],
    };
    serde_json::to_vec(&e).expect("json")
}

fn start_recorders(n: usize, url: &str, dir: &Path) -> WorkerProcesses {
    let mut r = WorkerProcesses::new();
    for i in 0..n {
        r.spawn_role(
            Path::new(env!("CARGO_BIN_EXE_panoptes")),
            "record",
            &topology(),
            url,
            &[],
            "info,panoptes_recorder=debug",
            (dir, &format!("recorder-{i}")),
        )
        .expect("spawn panoptes record");
    }
    r
}

/// Publishes frames `0..frames` of `cams` at 10 fps with their detections; `events` are
/// (camera, zone, event frame, published with frame); `at_frame` runs before a frame.
async fn play(
    client: &async_nats::Client,
    cams: &[&str],
    frames: u64,
    events: &[(&str, &str, u64, u64)],
    mut at_frame: impl FnMut(u64),
) -> u64 {
    let t0 = panoptes_contracts::time::now_ns();
    let ts = |seq: u64| t0 + seq * 1_000_000_000 / FPS;
    let started = Instant::now();
    for seq in 0..frames {
        at_frame(seq);
        for cam in cams {
            client
                .publish(format!("rec.frames.{cam}"), frame(cam, seq, ts(seq)))
                .await
                .expect("publish frame");
            client
                .publish(
                    format!("rec.detections.{cam}"),
                    detections(cam, seq, ts(seq)).into(),
                )
                .await
                .expect("publish detections");
        }
        for (n, (cam, zone, at, with)) in events.iter().enumerate() {
            if *with == seq {
                client
                    .publish(
                        format!("rec.analytics.{cam}"),
                        zone_enter(cam, zone, *at, ts(*at), n as u32).into(),
                    )
                    .await
                    .expect("publish event");
            }
        }
        tokio::time::sleep_until((started + Duration::from_millis((seq + 1) * 1000 / FPS)).into())
            .await;
    }
    client.flush().await.expect("flush");
    t0
}

fn panoptes(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(args)
        .output()
        .expect("run panoptes")
}

fn list(url: &str, extra: &[&str]) -> Vec<ClipMessage> {
    list_clips(url, "rec", extra)
}

/// `panoptes clips list` of `namespace`, parsed (none when the command fails).
pub(crate) fn list_clips(url: &str, namespace: &str, extra: &[&str]) -> Vec<ClipMessage> {
    let mut args = vec!["clips", "list", "--nats", url, "--namespace", namespace];
    args.extend_from_slice(extra);
    let out = panoptes(&args);
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("clips/v1"))
        .collect()
}

/// Polls `clips list` until `done` holds.
async fn wait_for_clips(
    url: &str,
    logs: impl Fn() -> String,
    done: impl Fn(&[ClipMessage]) -> bool,
) -> Vec<ClipMessage> {
    let begun = Instant::now();
    loop {
        let clips = list(url, &[]);
        if done(&clips) {
            return clips;
        }
        assert!(
            begun.elapsed() < GUARD,
            "clips so far: {clips:#?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Decodes a stored file with GStreamer: RGB frames with their timestamps.
fn decode(path: &Path, demux: &str) -> Vec<(u64, u64, Vec<u8>, u32, u32)> {
    gst::init().expect("gstreamer");
    let description = format!(
        "filesrc location={} ! {demux} videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&description)
        .expect("decode pipeline")
        .downcast::<gst::Pipeline>()
        .expect("pipeline");
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("play");
    let mut out = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let caps = sample.caps().expect("caps");
        let s = caps.structure(0).expect("structure");
        let (w, h) = (
            s.get::<i32>("width").expect("width") as u32,
            s.get::<i32>("height").expect("height") as u32,
        );
        let buffer = sample.buffer().expect("buffer");
        let pts = buffer.pts().map_or(0, |t| t.nseconds());
        let duration = buffer.duration().map_or(0, |t| t.nseconds());
        let map = buffer.map_readable().expect("map");
        out.push((pts, duration, map.as_slice().to_vec(), w, h));
    }
    let _ = pipeline.set_state(gst::State::Null);
    out
}

fn get(url: &str, name: &str, dir: &Path) -> PathBuf {
    let path = dir.join(name.replace('/', "_"));
    let out = panoptes(&[
        "clips",
        "get",
        name,
        "-o",
        path.to_str().expect("utf-8"),
        "--nats",
        url,
        "--namespace",
        "rec",
    ]);
    assert!(
        out.status.success(),
        "clips get {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The bytes of an object as a client of NATS Object Store reads them, not through Panoptes.
async fn object_bytes(js: &async_nats::jetstream::Context, name: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let store = js.get_object_store("rec-clips").await.expect("bucket");
    let mut object = store.get(name).await.expect("object");
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.expect("read");
    bytes
}

fn pixel(rgb: &[u8], w: u32, x: u32, y: u32) -> [u8; 3] {
    let at = ((y * w + x) * 3) as usize;
    [rgb[at], rgb[at + 1], rgb[at + 2]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_makes_a_clip_of_pre_and_post_roll_and_a_snapshot_with_the_box_drawn() {
    let _serial = SERIAL.lock().await;
    let server = nats_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client.clone());
    let mut announced = client.subscribe("rec.clips.*").await.expect("sub");
    let mut recorders = start_recorders(1, server.url(), dir.path());
    panoptes_tests::wait_for_shared_leases(&js, "rec", (1, 16), &mut recorders, GUARD).await;

    // yard: one entry at frame 30 (its message comes 0.3 s later, as a pipeline's would).
    // dock: entries at 30 and 45, the second inside the first's clip.
    let events = [
        ("yard", "bay", 30, 33),
        ("dock", "bay", 30, 33),
        ("dock", "bay", 45, 48),
    ];
    play(&client, &["yard", "dock"], 90, &events, |_| {}).await;
    let logs = || recorders.logs();
    let clips = wait_for_clips(server.url(), logs, |c| c.len() >= 2).await;
    assert_eq!(clips.len(), 2, "{clips:#?}");
    let yard = clips
        .iter()
        .find(|c| c.camera == "yard")
        .expect("yard's clip");
    let dock = clips
        .iter()
        .find(|c| c.camera == "dock")
        .expect("dock's clip");

    // Pre-roll 2 s + post-roll 3 s at 10 fps: frames 10..=59.
    assert_eq!(yard.frames, 50, "{yard:#?}");
    assert_eq!(yard.end_ns - yard.start_ns, 5_000_000_000, "{yard:#?}");
    assert_eq!(yard.events.len(), 1);
    assert_eq!(yard.rules, ["bay-entry"]);
    assert_eq!(yard.tracks, [TRACK]);
    // The overlapping entry extended dock's clip to 3 s after frame 45: frames 10..=74.
    assert_eq!(dock.frames, 65, "{dock:#?}");
    assert_eq!(dock.events.len(), 2);

    // The video decodes to its frames and lasts pre-roll + post-roll, within one frame.
    let video = get(server.url(), &yard.object, dir.path());
    let demux = if yard.object.ends_with(".mp4") {
        "qtdemux ! h264parse ! avdec_h264 !"
    } else {
        "avidemux ! jpegdec !"
    };
    let decoded = decode(&video, demux);
    assert_eq!(decoded.len(), 50, "decoded frames of {}", yard.object);
    let (last_pts, last_duration) = decoded.last().map(|d| (d.0, d.1)).unwrap_or_default();
    let length = last_pts + last_duration - decoded[0].0;
    assert!(
        length.abs_diff(5_000_000_000) <= 100_000_000,
        "the clip lasts {length} ns"
    );
    // `clips get` wrote exactly what is stored.
    let stored = object_bytes(&js, &yard.object).await;
    assert_eq!(std::fs::read(&video).expect("read"), stored);

    // The snapshot is frame 30 with the square's box drawn around it in track 7's colour.
    let snapshot = yard.snapshot.clone().expect("a snapshot");
    let jpg = get(server.url(), &snapshot, dir.path());
    assert_eq!(
        std::fs::read(&jpg).expect("read"),
        object_bytes(&js, &snapshot).await
    );
    let image = decode(&jpg, "jpegdec !");
    let (_, _, rgb, w, h) = image.first().expect("one image");
    assert_eq!((*w, *h), (W, H));
    let [x1, y1, x2, y2] = square(30).map(|v| v as u32);
    let colour = panoptes_recorder::overlay::track_colour(Some(TRACK));
    let near = |p: [u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 70);
    // The track's hue: its full channels bright, its empty ones dark (JPEG blurs a thin line
    // next to the white square, so not the exact values).
    let hue = |p: [u8; 3]| {
        p.iter()
            .zip(colour)
            .all(|(&a, b)| if b == 255 { a > 140 } else { a < 100 })
    };
    // The 3 px stroke is centred on the box edges: the pixels just outside the square on
    // each side are covered whole.
    // (x1 + 10: the zone's left edge runs down the middle of the box at frame 30.)
    let mid = (x1 + 10, (y1 + y2) / 2);
    for (x, y) in [(mid.0, y1 - 1), (mid.0, y2), (x1 - 1, mid.1), (x2, mid.1)] {
        assert!(
            hue(pixel(rgb, W, x, y)),
            "box edge at ({x}, {y}) is {:?}, not near {colour:?}",
            pixel(rgb, W, x, y)
        );
    }
    // A few pixels further out there is no box; above it is the label, in the same colour.
    for (x, y) in [(mid.0, y2 + 8), (x1 - 8, mid.1), (x2 + 8, mid.1)] {
        assert!(
            near(pixel(rgb, W, x, y), [30, 30, 30]),
            "({x}, {y}) is {:?}",
            pixel(rgb, W, x, y)
        );
    }
    let label = (x1..x1 + 100)
        .flat_map(|x| (y1 - 20..y1 - 3).map(move |y| (x, y)))
        .filter(|&(x, y)| hue(pixel(rgb, W, x, y)))
        .count();
    assert!(
        label > 50,
        "the label above the box has {label} pixels of its colour"
    );
    // Inside the box the object is untouched; far from it, the background too.
    assert!(near(pixel(rgb, W, mid.0 + 10, mid.1), [240, 240, 240]));
    assert!(near(pixel(rgb, W, 100, 320), [30, 30, 30]));

    // The announcement names the clip and its snapshot.
    let message = tokio::time::timeout(Duration::from_secs(5), announced.next())
        .await
        .expect("a clips/v1 message")
        .expect("message");
    let m: ClipMessage = serde_json::from_slice(&message.payload).expect("clips/v1");
    assert!(m.object.ends_with(".mp4") || m.object.ends_with(".avi"));
    assert!(m.snapshot.is_some());

    // Filters, then removal of a whole clip (video and snapshot).
    assert_eq!(list(server.url(), &["--camera", "dock"]).len(), 1);
    assert_eq!(list(server.url(), &["--kind", "line_cross"]).len(), 0);
    let out = panoptes(&[
        "clips",
        "rm",
        &yard.id,
        "--nats",
        server.url(),
        "--namespace",
        "rec",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = list(server.url(), &[]);
    assert_eq!(
        left.iter().map(|c| c.camera.as_str()).collect::<Vec<_>>(),
        ["dock"]
    );
    let store = js.get_object_store("rec-clips").await.expect("bucket");
    assert!(
        store.info(&snapshot).await.is_ok_and(|i| i.deleted)
            || store.info(&snapshot).await.is_err(),
        "the snapshot went with its clip"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_killed_mid_clip_leaves_no_clip_and_the_next_goes_on() {
    let _serial = SERIAL.lock().await;
    let server = nats_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client.clone());
    let mut recorders = start_recorders(2, server.url(), dir.path());
    let leases =
        panoptes_tests::wait_for_shared_leases(&js, "rec", (2, 16), &mut recorders, GUARD).await;
    let owner = leases[&panoptes_contracts::partition::partition_of("gate", 16)];
    let victim = recorders
        .pids()
        .iter()
        .position(|&p| p == owner)
        .expect("ours");

    // The event at frame 30 asks for frames 10..=109 (pre-roll 2 s, post-roll 8 s); the
    // recorder holding them dies at frame 45.
    let events = [("gate", "lane", 30, 32)];
    let children = &mut recorders.children;
    play(&client, &["gate"], 140, &events, |seq| {
        if seq == 45 {
            let _ = children[victim].kill();
            let _ = children[victim].wait();
        }
    })
    .await;
    let logs = || recorders.logs();
    let clips = wait_for_clips(server.url(), logs, |c| !c.is_empty()).await;
    // Nothing of the dead recorder's part was stored; the next recorder's part is whole.
    assert_eq!(clips.len(), 1, "{clips:#?}");
    let part = &clips[0];
    assert_eq!(part.part, 2, "{part:#?}");
    assert!(part.id.ends_with("-p2"), "{}", part.id);
    assert_eq!(part.events.len(), 1);
    assert!(part.frames >= 20 && part.frames < 65, "{part:#?}");
    let video = get(server.url(), &part.object, dir.path());
    let demux = if part.object.ends_with(".mp4") {
        "qtdemux ! h264parse ! avdec_h264 !"
    } else {
        "avidemux ! jpegdec !"
    };
    assert_eq!(decode(&video, demux).len() as u64, part.frames);
    // It ends where the clip was to end: before frame 110.
    assert!(part.end_ns <= part.start_ns + 10_000_000_000, "{part:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuously_recorded_camera_is_stored_in_segments() {
    let _serial = SERIAL.lock().await;
    let server = nats_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client.clone());
    let mut recorders = start_recorders(1, server.url(), dir.path());
    panoptes_tests::wait_for_shared_leases(&js, "rec", (1, 16), &mut recorders, GUARD).await;
    // 2 s segments: frames 0..=19 and 20..=39 close when frames 20 and 40 arrive.
    play(&client, &["reel"], 45, &[], |_| {}).await;
    let logs = || recorders.logs();
    let segments = wait_for_clips(server.url(), logs, |c| c.len() >= 2).await;
    assert_eq!(segments.len(), 2, "{segments:#?}");
    for s in &segments {
        assert_eq!(s.kind, panoptes_contracts::clip::ClipKind::Segment);
        assert_eq!(s.camera, "reel");
        assert_eq!(s.frames, 20, "{s:#?}");
        assert!(s.events.is_empty() && s.snapshot.is_none());
        let video = get(server.url(), &s.object, dir.path());
        let demux = if s.object.ends_with(".mp4") {
            "qtdemux ! h264parse ! avdec_h264 !"
        } else {
            "avidemux ! jpegdec !"
        };
        assert_eq!(decode(&video, demux).len(), 20);
    }
    assert_eq!(segments[1].start_ns - segments[0].start_ns, 2_000_000_000);
}
