//! Traces and metrics of real `panoptes` processes: an ingest process and a worker process
//! export OTLP to an in-process receiver, and one frame's spans must form one trace across both
//! (ingest → frame → every stage → publish, the model's batch span linked to every frame it
//! served); `/metrics` must count exactly the frames published and the detections received.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use panoptes_tests::otlp::{OtlpReceiver, ReceivedSpan};
use panoptes_tests::{nats_server, repo_root, require_setup};

const GUARD: Duration = Duration::from_secs(60);
const STAGES: [&str; 3] = ["preprocess", "detect", "text-boxes"];

/// Tests here start several processes that each want a core: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_panoptes"))
}

/// `header` first (namespace, telemetry, partitions), then two cameras from `cameras`, then
/// letterbox 160 → PP-OCRv4 det (frames of both cameras batched) → DB.
fn write_topology(dir: &Path, header: &str, cameras: &str) -> PathBuf {
    let root = require_setup();
    let root = root.canonicalize().unwrap_or(root);
    let text = format!(
        r#"{header}
models:
  det: {{ manifest: {root}/models/ppocr-v4-det.yaml }}
cameras:
{cameras}
stages:
  - id: preprocess
    kind: operator
    wasm: {root}/operators/dist/letterbox.wasm
    config: {{ width: 160, height: 160, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], channels: bgr }}
    timeout_ms: 5000
  - id: detect
    kind: model
    model: det
    threads: 1
    batching: {{ max_batch: 2, max_wait_ms: 400, adaptive: false }}
  - id: text-boxes
    kind: postprocess
    postprocessor: db
    label: text
"#,
        root = root.display()
    );
    let path = dir.join("topology.yaml");
    std::fs::write(&path, text).expect("write topology");
    path
}

fn test_pattern_cameras() -> String {
    ["cam-a", "cam-b"]
        .iter()
        .map(|id| {
            format!(
                "  - {{ id: {id}, fps: 4, width: 320, height: 240, source: {{ test_pattern: {{ text: \"TRACE {id}\", font: \"Sans Bold 24\" }} }} }}\n"
            )
        })
        .collect()
}

/// A `panoptes` child process logging to `<dir>/<name>.log`; killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(binary());
        command
            .current_dir(repo_root())
            .args(args)
            .env("RUST_LOG", "info,ort=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_SERVICE_NAME",
            "OTEL_SDK_DISABLED",
            "PANOPTES_METRICS",
        ] {
            command.env_remove(var);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start panoptes");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit (spans queued in the exporter are flushed).
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    assert!(status.success(), "exit {status}:\n{}", self.log());
                    return;
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => panic!("did not stop within 20 s:\n{}", self.log()),
            }
        }
    }

    /// `panoptes worker` on all partitions of a one-partition topology, once it subscribed.
    async fn worker(
        dir: &Path,
        topology: &str,
        url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut args = vec!["worker", topology, "--nats", url, "--partitions", "0"];
        args.extend_from_slice(extra);
        let worker = Self::start(dir, "worker", &args, env);
        worker.wait_for_log("worker subscribed").await;
        worker
    }

    async fn wait_for_log(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + GUARD;
        while !self.log().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Detection messages as they arrive, with the trace ID of their `traceparent` header.
async fn collect_detections(
    client: async_nats::Client,
    subject: String,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, u64, Option<String>)> {
    let mut sub = client.subscribe(subject).await.expect("subscribe");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(m) = serde_json::from_slice::<panoptes_pipeline::DetectionMessage>(&msg.payload)
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
    let header = format!(
        "namespace: tr\npartitions: 1\ntelemetry: {{ otlp_endpoint: \"{}\", otlp_protocol: grpc, sampling: 1.0 }}",
        receiver.grpc_endpoint()
    );
    let topology = write_topology(dir.path(), &header, &test_pattern_cameras());
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
    let cameras = "  - { id: cam-a, fps: 4, width: 320, height: 240, source: { test_pattern: { text: \"UNSAMPLED\" } } }\n";
    let topology = write_topology(dir.path(), "namespace: smp\npartitions: 1", cameras);
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
        panoptes_pipeline::Frame {
            camera: panoptes_pipeline::CameraId::new("cam-b").expect("camera id"),
            seq,
            capture_ts_ns: panoptes_pipeline::time::now_ns(),
            width: 320,
            height: 240,
            format: panoptes_pipeline::PixelFormat::Rgb8,
            pixels: panoptes_pipeline::frame::PixelBuffer::from_vec(vec![128u8; 320 * 240 * 3]),
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

/// A free loopback port for a `/metrics` listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The sum of `name` over the series whose labels include `labels` (0 when there is none).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
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
async fn count_per_camera(
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
    let mut cameras = String::new();
    for id in ["clip-a", "clip-b"] {
        let clip = dir.path().join(format!("{id}.mkv"));
        make_clip(&clip, &format!("METRICS {id}"));
        cameras.push_str(&format!(
            "  - {{ id: {id}, fps: 12, width: 320, height: 240, source: {{ file: {{ path: {} }} }} }}\n",
            clip.display()
        ));
    }
    let topology = write_topology(dir.path(), "namespace: met\npartitions: 1", &cameras);
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
        if let Ok(e) = serde_json::from_slice::<panoptes_pipeline::Event>(&msg.payload)
            && e.kind == panoptes_pipeline::EventKind::CameraDown
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_faults_are_counted_and_their_spans_fail() {
    const FRAMES: u64 = 4;
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let root = require_setup();
    let root = root.canonicalize().unwrap_or(root);
    let topology = dir.path().join("faults.yaml");
    std::fs::write(
        &topology,
        format!(
            r#"namespace: flt
partitions: 1
telemetry: {{ otlp_endpoint: "{endpoint}", sampling: 1.0 }}
stages:
  - id: probe
    kind: operator
    wasm: {root}/operators/dist/misbehave.wasm
    emits: detections
    timeout_ms: 100
    config: {{ faults: {{ cam-trap: trap, cam-spin: spin }} }}
"#,
            endpoint = receiver.grpc_endpoint(),
            root = root.display()
        ),
    )
    .expect("write topology");
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
            let frame = panoptes_pipeline::Frame {
                camera: panoptes_pipeline::CameraId::new(cam).expect("camera id"),
                seq,
                capture_ts_ns: panoptes_pipeline::time::now_ns(),
                width: 64,
                height: 48,
                format: panoptes_pipeline::PixelFormat::Rgb8,
                pixels: panoptes_pipeline::frame::PixelBuffer::from_vec(vec![0u8; 64 * 48 * 3]),
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
