//! Operator faults (traps, timeouts) are counted per stage and camera, send their events, and
//! leave the failed stage spans with an error status.

use std::time::Duration;

use panoptes_tests::otlp::{OtlpReceiver, ReceivedSpan};
use panoptes_tests::{nats_server, repo_root};
use panoptes_topology::{StageConfig, TopologyFile};

use super::metrics::{count_per_camera, free_port, metric};
use super::{GUARD, Process, SERIAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_faults_are_counted_and_their_spans_fail() {
    const FRAMES: u64 = 4;
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    // The operator fault fixture (tests/fixtures/misbehave.yaml) without its cameras: the
    // test publishes the frames itself.
    let fixture = repo_root().join("tests/fixtures/misbehave.yaml");
    let mut topology = TopologyFile::load(&fixture).unwrap_or_else(|d| panic!("{d}"));
    topology.config.namespace = "flt".to_owned();
    topology.config.partitions = 1;
    topology.config.cameras.clear();
    topology.config.telemetry.otlp_endpoint = Some(receiver.grpc_endpoint());
    topology.config.telemetry.sampling = 1.0;
    for stage in &mut topology.config.stages {
        if let StageConfig::Operator(op) = stage {
            op.config = serde_json::json!({"faults": {"cam-trap": "trap", "cam-spin": "spin"}});
            op.memory_mib = None;
        }
    }
    let topology = panoptes_tests::write_topology(dir.path(), "faults", &topology);
    let topology = topology.to_str().expect("utf-8 path");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let detections = count_per_camera(&client, "flt.detections.>").await;
    let errors = count_per_camera(&client, "flt.events.>").await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut worker = Process::worker(
        dir.path(),
        topology,
        server.url(),
        &["--metrics", &metrics_addr],
        &[],
    )
    .await;
    let cams = ["cam-ok", "cam-trap", "cam-spin"];
    for seq in 0..FRAMES {
        for cam in cams {
            let frame = panoptes_contracts::Frame {
                camera: panoptes_contracts::CameraId::new(cam).expect("camera id"),
                seq,
                capture_ts_ns: panoptes_contracts::time::now_ns(),
                width: 64,
                height: 48,
                format: panoptes_contracts::PixelFormat::Rgb8,
                pixels: panoptes_contracts::frame::PixelBuffer::from_vec(vec![0u8; 64 * 48 * 3]),
            };
            client
                .publish(format!("flt.frames.{cam}"), frame.encode().expect("encode"))
                .await
                .expect("publish");
        }
        // One frame per camera at a time: live delivery would drop a waiting one.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let deadline = tokio::time::Instant::now() + GUARD;
    let mut m = panoptes_tests::scrape(&metrics_addr).await;
    let done = |m: &str| {
        cams.iter().all(|c| {
            let l = [("camera", *c)];
            metric(m, "panoptes_worker_frames_processed_total", &l)
                + metric(m, "panoptes_worker_frames_failed_total", &l)
                == FRAMES as f64
        })
    };
    while !done(&m) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        m = panoptes_tests::scrape(&metrics_addr).await;
    }
    worker.stop();
    let stage = |kind| [("stage", "probe"), ("kind", kind)];
    assert_eq!(
        metric(&m, "panoptes_operator_faults_total", &stage("trap")),
        FRAMES as f64,
        "{m}"
    );
    assert_eq!(
        metric(&m, "panoptes_operator_faults_total", &stage("timeout")),
        FRAMES as f64,
        "{m}"
    );
    for (cam, kind) in [("cam-trap", "trap"), ("cam-spin", "timeout")] {
        let l = [("stage", "probe"), ("camera", cam), ("kind", kind)];
        assert_eq!(
            metric(&m, "panoptes_stage_errors_total", &l),
            FRAMES as f64,
            "{cam}"
        );
        assert_eq!(
            metric(
                &m,
                "panoptes_worker_frames_failed_total",
                &[("camera", cam)]
            ),
            FRAMES as f64
        );
    }
    let ok = [("camera", "cam-ok")];
    assert_eq!(
        metric(&m, "panoptes_worker_frames_processed_total", &ok),
        FRAMES as f64
    );
    assert_eq!(metric(&m, "panoptes_stage_errors_total", &ok), 0.0);
    assert_eq!(
        metric(&m, "panoptes_detections_published_total", &ok),
        detections
            .lock()
            .expect("counts")
            .get("cam-ok")
            .copied()
            .unwrap_or(0) as f64
    );
    // Each fault's frame_error event went out, one per failed frame.
    let errors = errors.lock().expect("counts").clone();
    for cam in ["cam-trap", "cam-spin"] {
        assert_eq!(
            errors.get(cam).copied().unwrap_or(0),
            FRAMES,
            "{cam} events: {errors:?}"
        );
    }

    // In the traces, the failed stage spans carry an error status naming the cause.
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            spans.iter().filter(|s| s.name == "stage").count() >= 3 * FRAMES as usize
        })
        .await;
    for cam in cams {
        let stage_spans: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| s.name == "stage" && s.attr("camera") == Some(cam))
            .collect();
        assert_eq!(stage_spans.len(), FRAMES as usize, "{cam}: {stage_spans:?}");
        // OTLP status codes: 0 unset, 2 error.
        let want = if cam == "cam-ok" { 0 } else { 2 };
        assert!(
            stage_spans.iter().all(|s| s.status_code == want),
            "{cam}: {stage_spans:?}"
        );
    }
}
