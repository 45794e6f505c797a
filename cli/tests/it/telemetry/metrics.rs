//! `/metrics` of the ingest and worker processes count exactly the frames published and the
//! detections received, and a NATS restart is counted as a reconnect.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use panoptes_tests::{ServerControls as _, nats_server};

use super::{GUARD, Process, SERIAL, STAGES, topology, write_topology};

/// A free loopback port for a `/metrics` listener.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The sum of `name` over the series whose labels include `labels` (0 when there is none).
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric_name != name {
                return None;
            }
            let have: Vec<(&str, &str)> = label_text
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|want| have.contains(want))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        // + 0.0: an empty f64 sum is -0.0, which prints as "-0".
        .sum::<f64>()
        + 0.0
}

/// Counts messages per camera (the subject's last token) on `subject`.
pub(crate) async fn count_per_camera(
    client: &async_nats::Client,
    subject: &str,
) -> std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>> {
    let mut sub = client
        .subscribe(subject.to_owned())
        .await
        .expect("subscribe");
    let counts = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let shared = counts.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let camera = msg
                .subject
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_owned();
            *shared.lock().expect("counts").entry(camera).or_insert(0) += 1;
        }
    });
    counts
}

const CLIP_FRAMES: u64 = 24;

/// An MJPEG-in-Matroska clip of CLIP_FRAMES frames at 12 fps, made with GStreamer's encoders.
fn make_clip(path: &Path, text: &str) {
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args([
            "videotestsrc",
            &format!("num-buffers={CLIP_FRAMES}"),
            "pattern=ball",
            "!",
        ])
        .args(["video/x-raw,width=320,height=240,framerate=12/1", "!"])
        .args([
            "textoverlay",
            &format!("text={text}"),
            "font-desc=Sans Bold 24",
            "!",
        ])
        .args(["jpegenc", "!", "matroskamux", "!", "filesink"])
        .arg(format!("location={}", path.display()))
        .status()
        .unwrap_or_else(|e| panic!("cannot run gst-launch-1.0 (run scripts/setup.sh): {e}"));
    assert!(status.success(), "gst-launch-1.0: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_frames_published_and_the_detections_received() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = nats_server();
    let mut cameras = Vec::new();
    for id in ["clip-a", "clip-b"] {
        let clip = dir.path().join(format!("{id}.mkv"));
        make_clip(&clip, &format!("METRICS {id}"));
        cameras.push(serde_json::json!({
            "id": id, "fps": 12, "width": 320, "height": 240,
            "source": {"file": {"path": clip}},
        }));
    }
    let topology = write_topology(dir.path(), &topology("met", &cameras));
    let topology = topology.to_str().expect("utf-8 path");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let frames = count_per_camera(&client, "met.frames.>").await;
    let detections = count_per_camera(&client, "met.detections.>").await;
    let mut events = client.subscribe("met.events.>").await.expect("subscribe");

    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let ingest_metrics = format!("127.0.0.1:{}", free_port());
    let mut worker = Process::worker(
        dir.path(),
        topology,
        server.url(),
        &["--metrics", &worker_metrics],
        &[],
    )
    .await;
    let mut ingest = Process::start(
        dir.path(),
        "ingest",
        &["ingest", topology, "--nats", server.url()],
        &[("PANOPTES_METRICS", &ingest_metrics)],
    );
    // Both clips played to their end.
    let mut ended = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + GUARD;
    while ended.len() < 2 {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, events.next()).await else {
            panic!("the clips did not end:\n{}", ingest.log());
        };
        if let Ok(e) = serde_json::from_slice::<panoptes_contracts::Event>(&msg.payload)
            && e.kind == panoptes_contracts::EventKind::CameraDown
        {
            ended.insert(e.camera.clone());
        }
    }
    // The worker has finished once every frame it received is accounted for and every
    // detection it counted has arrived here.
    let cams = ["clip-a", "clip-b"];
    let settled = |w: &str| {
        let frames = frames.lock().expect("counts").clone();
        let detections = detections.lock().expect("counts").clone();
        cams.iter().all(|c| {
            let l = [("camera", *c)];
            let received = metric(w, "panoptes_worker_frames_received_total", &l);
            let done = metric(w, "panoptes_worker_frames_processed_total", &l)
                + metric(w, "panoptes_worker_frames_dropped_total", &l)
                + metric(w, "panoptes_worker_frames_failed_total", &l);
            received == frames.get(*c).copied().unwrap_or(0) as f64
                && done == received
                && metric(w, "panoptes_detections_published_total", &l)
                    == detections.get(*c).copied().unwrap_or(0) as f64
        })
    };
    let mut w = panoptes_tests::scrape(&worker_metrics).await;
    while !settled(&w) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        w = panoptes_tests::scrape(&worker_metrics).await;
    }
    let i = panoptes_tests::scrape(&ingest_metrics).await;
    let frames = frames.lock().expect("counts").clone();
    let detections = detections.lock().expect("counts").clone();
    let mut report = Vec::new();
    for c in cams {
        let l = [("camera", c)];
        let seen = frames.get(c).copied().unwrap_or(0) as f64;
        let published = metric(&i, "panoptes_ingest_frames_total", &l);
        assert!(seen > 0.0, "no frames of {c}");
        assert_eq!(
            published, seen,
            "{c}: ingest's count vs frames on the subject"
        );
        let received = metric(&w, "panoptes_worker_frames_received_total", &l);
        let processed = metric(&w, "panoptes_worker_frames_processed_total", &l);
        let dropped = metric(&w, "panoptes_worker_frames_dropped_total", &l);
        let failed = metric(&w, "panoptes_worker_frames_failed_total", &l);
        assert_eq!(received, seen, "{c}: worker received vs published\n{w}");
        assert_eq!(processed + dropped + failed, received, "{c}\n{w}");
        assert_eq!(failed, 0.0, "{c}");
        let got = detections.get(c).copied().unwrap_or(0) as f64;
        assert_eq!(
            metric(&w, "panoptes_detections_published_total", &l),
            got,
            "{c}: detections published vs received"
        );
        assert_eq!(
            got, processed,
            "{c}: one detection message per processed frame"
        );
        for (stage, next) in STAGES.iter().zip(STAGES.iter().skip(1)) {
            let out = metric(
                &w,
                "panoptes_stage_frames_out_total",
                &[("stage", stage), ("camera", c)],
            );
            let into = metric(
                &w,
                "panoptes_stage_frames_in_total",
                &[("stage", next), ("camera", c)],
            );
            assert_eq!(out, into, "{c}: {stage} out vs {next} in");
        }
        assert_eq!(
            metric(
                &w,
                "panoptes_stage_frames_in_total",
                &[("stage", "preprocess"), ("camera", c)]
            ),
            processed,
            "{c}: frames into the first stage"
        );
        assert_eq!(
            metric(&w, "panoptes_frame_latency_seconds_count", &l),
            processed,
            "{c}: one end-to-end latency per published frame"
        );
        report.push(format!(
            "{c}: {published} published, {received} received, {processed} processed, {dropped} dropped, {got} detection messages"
        ));
    }
    assert!(metric(&w, "panoptes_batch_frames_count", &[]) > 0.0, "{w}");
    assert!(metric(&w, "panoptes_model_batch_rows_count", &[("model", "det")]) > 0.0);
    assert!(metric(&w, "panoptes_stage_seconds_count", &[("stage", "detect")]) > 0.0);
    assert_eq!(metric(&w, "panoptes_nats_reconnects_total", &[]), 0.0);

    // A NATS restart: both processes reconnect and count it.
    server.restart().expect("restart nats-server");
    let reconnected = |text: &str| metric(text, "panoptes_nats_reconnects_total", &[]) >= 1.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(reconnected(&panoptes_tests::scrape(&worker_metrics).await)
        && reconnected(&panoptes_tests::scrape(&ingest_metrics).await))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect counted:\n{}\n{}",
            worker.log(),
            ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ingest.stop();
    worker.stop();
    eprintln!("{}", report.join("\n"));
}
