//! One frame's spans form one trace across the ingest and worker processes, and the worker
//! follows the publisher's sampling decision.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use panoptes_tests::nats_server;
use panoptes_tests::otlp::{OtlpReceiver, ReceivedSpan};

use panoptes_topology::OtlpProtocol;

use super::{GUARD, Process, SERIAL, STAGES, test_pattern_cameras, topology, write_topology};

/// Detection messages as they arrive, with the trace ID of their `traceparent` header.
async fn collect_detections(
    client: async_nats::Client,
    subject: String,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, u64, Option<String>)> {
    let mut sub = client.subscribe(subject).await.expect("subscribe");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(m) =
                serde_json::from_slice::<panoptes_contracts::DetectionMessage>(&msg.payload)
            else {
                continue;
            };
            let trace = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("traceparent"))
                .and_then(|v| v.as_str().split('-').nth(1).map(str::to_owned));
            if tx.send((m.camera, m.seq, trace)).is_err() {
                break;
            }
        }
    });
    rx
}

fn find<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> Result<&'a ReceivedSpan, String> {
    let mut found = spans.iter().filter(|s| pred(s));
    match (found.next(), found.next()) {
        (Some(s), None) => Ok(s),
        (None, _) => Err(format!("no {what}")),
        (Some(_), Some(_)) => Err(format!("more than one {what}")),
    }
}

/// One frame's trace: ingest (root, in `ingest_service`) → frame (in `worker_service`) → a
/// span per stage and a publish span, all in one trace with the right parents; a batch span
/// links the frame's `detect` stage span. Returns the trace ID.
fn check_trace(
    spans: &[ReceivedSpan],
    (camera, seq): (&str, u64),
    (ingest_service, worker_service): (&str, &str),
) -> Result<String, String> {
    let seq_s = seq.to_string();
    let ours = |s: &ReceivedSpan| s.attr("camera") == Some(camera) && s.attr("seq") == Some(&seq_s);
    let ingest = find(spans, "ingest span", |s| s.name == "ingest" && ours(s))?;
    if ingest.service != ingest_service || ingest.parent_span_id.is_some() {
        return Err(format!(
            "ingest span is not a root of {ingest_service}: {ingest:?}"
        ));
    }
    let trace = ingest.trace_id.clone();
    let in_trace = |s: &ReceivedSpan| s.trace_id == trace;
    let frame = find(spans, "frame span", |s| s.name == "frame" && ours(s))?;
    if frame.service != worker_service
        || !in_trace(frame)
        || frame.parent_span_id.as_deref() != Some(&ingest.span_id)
    {
        return Err(format!(
            "frame span is not the ingest span's child in {worker_service}: {frame:?}"
        ));
    }
    let child_of_frame =
        |s: &ReceivedSpan| in_trace(s) && s.parent_span_id.as_deref() == Some(&frame.span_id);
    let mut detect = None;
    for stage in STAGES {
        let span = find(spans, &format!("stage span {stage}"), |s| {
            s.name == "stage" && s.attr("stage") == Some(stage) && ours(s)
        })?;
        if !child_of_frame(span) {
            return Err(format!(
                "stage span {stage} is not the frame span's child: {span:?}"
            ));
        }
        if stage == "detect" {
            detect = Some(span);
        }
    }
    let publish = find(spans, "publish span", |s| s.name == "publish" && ours(s))?;
    if !child_of_frame(publish) {
        return Err(format!(
            "publish span is not the frame span's child: {publish:?}"
        ));
    }
    let detect = detect.ok_or("no detect span")?;
    let link = (trace.clone(), detect.span_id.clone());
    let batch = find(spans, "batch span linking the detect stage", |s| {
        s.name == "batch" && s.links.contains(&link)
    })?;
    let parent_is_a_detect_span = spans.iter().any(|p| {
        p.name == "stage"
            && p.attr("stage") == Some("detect")
            && p.trace_id == batch.trace_id
            && Some(&p.span_id) == batch.parent_span_id.as_ref()
    });
    if !parent_is_a_detect_span
        || batch.attr("model") != Some("det")
        || batch.attr("device") != Some("cpu")
        || batch.attr("stage") != Some("detect")
        || batch.attr("batch_size").is_none()
    {
        return Err(format!(
            "batch span is not a detect span's child with model, device and batch size: {batch:?}"
        ));
    }
    Ok(trace)
}

/// Spans of batches that served frames of both cameras (linked to both).
fn cross_camera_batches(spans: &[ReceivedSpan]) -> usize {
    let camera_of: HashMap<(&str, &str), &str> = spans
        .iter()
        .filter(|s| s.name == "stage")
        .filter_map(|s| Some(((s.trace_id.as_str(), s.span_id.as_str()), s.attr("camera")?)))
        .collect();
    spans
        .iter()
        .filter(|s| s.name == "batch" && s.links.len() >= 2)
        .filter(|s| {
            let cams: std::collections::BTreeSet<&str> = s
                .links
                .iter()
                .filter_map(|(t, id)| camera_of.get(&(t.as_str(), id.as_str())).copied())
                .collect();
            cams.len() >= 2
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_frame_is_one_trace_across_the_ingest_and_worker_processes() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut topology = topology("tr", &test_pattern_cameras());
    topology.config.telemetry.otlp_endpoint = Some(receiver.grpc_endpoint());
    topology.config.telemetry.otlp_protocol = OtlpProtocol::Grpc;
    topology.config.telemetry.sampling = 1.0;
    let topology = write_topology(dir.path(), &topology);
    let topology = topology.to_str().expect("utf-8 path");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut detections = collect_detections(client.clone(), "tr.detections.>".into()).await;

    let mut worker = Process::worker(dir.path(), topology, server.url(), &[], &[]).await;
    let mut ingest = Process::start(
        dir.path(),
        "ingest",
        &["ingest", topology, "--nats", server.url()],
        &[],
    );
    // Some frames of each camera, with their trace IDs as the detections' headers carry them.
    let mut seen: BTreeMap<(String, u64), Option<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + GUARD;
    while ["cam-a", "cam-b"]
        .iter()
        .any(|c| seen.keys().filter(|(cam, _)| cam == c).count() < 6)
    {
        let next = tokio::time::timeout_at(deadline, detections.recv()).await;
        let Ok(Some((camera, seq, trace))) = next else {
            panic!(
                "too few detections: {seen:?}\nworker:\n{}\ningest:\n{}",
                worker.log(),
                ingest.log()
            );
        };
        seen.insert((camera, seq), trace);
    }
    ingest.stop();
    worker.stop();

    // Frames after the first few (the first ones may reach the worker before it batches).
    let picked: Vec<(String, u64)> = seen
        .keys()
        .filter(|(_, seq)| *seq >= 2)
        .take(4)
        .cloned()
        .collect();
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| {
            picked.iter().all(|(c, s)| {
                check_trace(spans, (c, *s), ("panoptes-ingest", "panoptes-worker")).is_ok()
            })
        })
        .await;
    for (camera, seq) in &picked {
        let trace = check_trace(
            &spans,
            (camera, *seq),
            ("panoptes-ingest", "panoptes-worker"),
        )
        .unwrap_or_else(|e| panic!("{camera}/{seq}: {e}\n{} spans received", spans.len()));
        // Whoever reads the detections continues the same trace.
        assert_eq!(
            seen[&(camera.clone(), *seq)].as_deref(),
            Some(trace.as_str()),
            "{camera}/{seq}: the detection message's traceparent"
        );
    }
    let cross = cross_camera_batches(&spans);
    assert!(
        cross > 0,
        "no batch span links frames of both cameras ({} spans)",
        spans.len()
    );
    assert!(receiver.requests("grpc") > 0);
    eprintln!(
        "{} spans; frames {picked:?} each one trace across both processes; {cross} batch spans linked frames of both cameras",
        spans.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_follows_the_sampling_decision_of_the_publisher() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    // cam-a comes from an ingest process that samples nothing; cam-b is published by this test
    // without any trace context, so the worker starts its traces (sampling everything).
    let camera = serde_json::json!({
        "id": "cam-a", "fps": 4, "width": 320, "height": 240,
        "source": {"test_pattern": {"text": "UNSAMPLED"}},
    });
    let topology = write_topology(dir.path(), &topology("smp", &[camera]));
    let topology = topology.to_str().expect("utf-8 path");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut detections = collect_detections(client.clone(), "smp.detections.>".into()).await;
    let http = receiver.http_endpoint();
    let env = |ratio| {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", http.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_SAMPLER_ARG", ratio),
        ]
    };
    let worker_env = env("1.0");
    let mut worker = Process::worker(dir.path(), topology, server.url(), &[], &worker_env).await;
    let ingest_env = env("0");
    let mut ingest = Process::start(
        dir.path(),
        "ingest",
        &["ingest", topology, "--nats", server.url()],
        &ingest_env,
    );
    let frame = |seq: u64| {
        panoptes_contracts::Frame {
            camera: panoptes_contracts::CameraId::new("cam-b").expect("camera id"),
            seq,
            capture_ts_ns: panoptes_contracts::time::now_ns(),
            width: 320,
            height: 240,
            format: panoptes_contracts::PixelFormat::Rgb8,
            pixels: panoptes_contracts::frame::PixelBuffer::from_vec(vec![128u8; 320 * 240 * 3]),
        }
        .encode()
        .expect("encode")
    };
    let mut per_camera: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + GUARD;
    let mut seq = 0;
    while per_camera.get("cam-a").copied().unwrap_or(0) < 6
        || per_camera.get("cam-b").copied().unwrap_or(0) < 6
    {
        client
            .publish("smp.frames.cam-b", frame(seq))
            .await
            .expect("publish");
        seq += 1;
        let pause = tokio::time::sleep(Duration::from_millis(250));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                d = detections.recv() => match d {
                    Some((camera, _, _)) => *per_camera.entry(camera).or_default() += 1,
                    None => panic!("subscription ended"),
                },
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "too few detections {per_camera:?}:\n{}\n{}",
            worker.log(),
            ingest.log()
        );
    }
    ingest.stop();
    worker.stop();
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            spans
                .iter()
                .filter(|s| s.name == "frame" && s.attr("camera") == Some("cam-b"))
                .count()
                >= 6
        })
        .await;
    let frames_of = |camera: &str| {
        spans
            .iter()
            .filter(|s| s.name == "frame" && s.attr("camera") == Some(camera))
            .count()
    };
    assert!(
        frames_of("cam-b") >= 6,
        "cam-b frames were not traced: {spans:?}"
    );
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "frame")
            .all(|s| s.parent_span_id.is_none() && s.service == "panoptes-worker"),
        "cam-b frames are the roots of their traces"
    );
    // Frames the ingest process did not sample leave no span anywhere, though they were
    // processed (their detections arrived).
    assert_eq!(frames_of("cam-a"), 0);
    assert!(
        spans.iter().all(|s| s.attr("camera") != Some("cam-a")),
        "a span of an unsampled frame was exported"
    );
    assert!(receiver.requests("http") > 0, "nothing came over OTLP/HTTP");
    assert_eq!(receiver.requests("grpc"), 0);
    eprintln!(
        "detections {per_camera:?}; traced frames: cam-a 0, cam-b {} (over OTLP/HTTP, {} requests)",
        frames_of("cam-b"),
        receiver.requests("http")
    );
}
