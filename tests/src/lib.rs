//! Shared support for panoptes' end-to-end tests: a real nats-server per test, GStreamer set up
//! once per test binary, the example topologies, and the geometry tests assert with.

pub mod browser;
pub mod mqtt;
pub mod nats;
pub mod otlp;
pub mod procstat;
pub mod rtsp;

use std::path::{Path, PathBuf};

use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::stage::{Item, Payload};
use panoptes_contracts::{CameraId, Tensor};
use panoptes_ingest::{RawFrame, SourceSpec, ink_bbox, render_still};
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_topology::{CameraConfig, StageConfig, TopologyFile};

pub use nats::ServerControls;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A real nats-server on a free loopback port with a temp store dir; killed when dropped.
pub fn nats_server() -> NatsServer {
    match NatsServer::start(&NatsServerOptions::default()) {
        Ok(s) => s,
        Err(e) => panic!("cannot start nats-server (run scripts/setup.sh): {e}"),
    }
}

/// GStreamer, initialised once per test binary.
pub fn gst() {
    if let Err(e) = panoptes_ingest::init() {
        panic!("GStreamer is not usable (run scripts/setup.sh): {e}");
    }
}

/// Checks that the files setup produces (the letterbox operator, the det model) are there;
/// returns the repository root.
pub fn require_setup() -> PathBuf {
    let root = repo_root();
    for needed in [
        "operators/dist/letterbox.wasm",
        "models/files/ch_PP-OCRv4_det_infer.onnx",
    ] {
        assert!(
            root.join(needed).is_file(),
            "{needed} is missing: run scripts/setup.sh first"
        );
    }
    root
}

/// Loads `topologies/<name>.yaml`, after checking the files setup produces are there.
pub fn topology(name: &str) -> TopologyFile {
    let root = require_setup();
    let path = root.join("topologies").join(format!("{name}.yaml"));
    match TopologyFile::load(&path) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// Replaces `topology`'s cameras by `n` copies of its first camera (`cam-00`, `cam-01`, …),
/// each at `fps`: the benchmarks' way to scale one scene to many cameras.
pub fn copy_first_camera(topology: &mut TopologyFile, n: usize, fps: u32) {
    let Some(first) = topology.config.cameras.first().cloned() else {
        panic!("the topology has no camera to copy");
    };
    topology.config.cameras = (0..n)
        .map(|i| {
            let mut c = first.clone();
            c.id = format!("cam-{i:02}");
            c.fps = fps;
            c
        })
        .collect();
}

/// Where textoverlay draws a test-pattern camera's text: the ink of one rendered frame,
/// `[x1, y1, x2, y2]` in frame pixels.
pub fn text_region(cam: &CameraConfig) -> [f32; 4] {
    gst();
    let spec = match panoptes_ingest::node::source_spec(cam, Path::new(".")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let SourceSpec::TestPattern(mut pattern) = spec else {
        panic!("camera {} is not a test pattern", cam.id);
    };
    pattern.live = false;
    let frame = match render_still(&pattern) {
        Ok(f) => f,
        Err(e) => panic!("cannot render {}: {e}", cam.id),
    };
    let Some([x1, y1, x2, y2]) = ink_bbox(&frame, pattern.background_rgb(), 24) else {
        panic!("camera {}: no text was drawn", cam.id);
    };
    [x1 as f32, y1 as f32, x2 as f32 + 1.0, y2 as f32 + 1.0]
}

pub fn area(b: [f32; 4]) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

pub fn intersection(a: [f32; 4], b: [f32; 4]) -> f32 {
    area([
        a[0].max(b[0]),
        a[1].max(b[1]),
        a[2].min(b[2]),
        a[3].min(b[3]),
    ])
}

pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let i = intersection(a, b);
    let u = area(a) + area(b) - i;
    if u > 0.0 { i / u } else { 0.0 }
}

/// A pipeline item for a rendered frame (camera `cam`, seq 1) whose payload is `tensor`: what a
/// postprocess stage receives after the model ran on that frame.
pub fn frame_item(frame: &RawFrame, tensor: Tensor) -> Item {
    let camera = match CameraId::new("cam") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut item = Item::from_frame(Frame {
        camera,
        seq: 1,
        capture_ts_ns: 0,
        width: frame.width,
        height: frame.height,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(frame.data.clone()),
    });
    item.payload = Payload::Tensor(tensor);
    item
}

/// The detector chain the scale-out tests and benchmarks run (`tests/fixtures/detector.yaml`:
/// letterbox Wasm operator to `side`×`side` → PP-OCRv4 det with `threads` intra-op threads →
/// DB). Callers set the namespace, delivery, partitions and workers on the typed topology.
pub fn detector_topology(side: u32, threads: usize) -> TopologyFile {
    let root = require_setup();
    let path = root.join("tests/fixtures/detector.yaml");
    let mut topology = TopologyFile::load(&path).unwrap_or_else(|d| panic!("{d}"));
    for stage in &mut topology.config.stages {
        match stage {
            StageConfig::Operator(op) => {
                op.config["width"] = side.into();
                op.config["height"] = side.into();
            }
            StageConfig::Model(model) => model.threads = Some(threads),
            _ => {}
        }
    }
    topology
}

/// Writes `topology` to `<dir>/<name>.yaml` with its paths made absolute, for the worker and
/// ingest processes a test starts; returns the path.
pub fn write_topology(dir: &Path, name: &str, topology: &TopologyFile) -> PathBuf {
    let text = topology
        .to_text()
        .unwrap_or_else(|e| panic!("cannot write topology {name}: {e}"));
    let path = dir.join(format!("{name}.yaml"));
    if let Err(e) = std::fs::write(&path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
    path
}

/// A camera as a topology's `cameras:` entry gives it (JSON, defaults filled in as when a
/// topology is read).
pub fn camera_config(entry: serde_json::Value) -> CameraConfig {
    serde_json::from_value(entry).unwrap_or_else(|e| panic!("not a camera entry: {e}"))
}

/// `panoptes worker` child processes, each logging to its own file; killed and reaped when
/// dropped (also when a test fails).
pub struct WorkerProcesses {
    pub children: Vec<std::process::Child>,
    pub logs: Vec<PathBuf>,
}

impl WorkerProcesses {
    pub fn new() -> Self {
        Self {
            children: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// Starts `binary worker <topology> --nats <url> <extra…>` with `RUST_LOG=<log>`, logging
    /// to `<dir>/<name>.log`.
    pub fn spawn(
        &mut self,
        binary: &Path,
        topology: &Path,
        url: &str,
        extra: &[&str],
        log: &str,
        (dir, name): (&Path, &str),
    ) -> std::io::Result<()> {
        self.spawn_role(binary, "worker", topology, url, extra, log, (dir, name))
    }

    /// Like [`spawn`](Self::spawn) for another role (`record`, `sink`, `ingest`).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_role(
        &mut self,
        binary: &Path,
        role: &str,
        topology: &Path,
        url: &str,
        extra: &[&str],
        log: &str,
        (dir, name): (&Path, &str),
    ) -> std::io::Result<()> {
        let path = dir.join(format!("{name}.log"));
        let child = std::process::Command::new(binary)
            .current_dir(repo_root())
            .arg(role)
            .arg(topology)
            .args(["--nats", url])
            .args(extra)
            .env("RUST_LOG", log)
            .env_remove("PANOPTES_PARTITIONS")
            .env_remove("PANOPTES_STAGES")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&path)?)
            .spawn()?;
        self.children.push(child);
        self.logs.push(path);
        Ok(())
    }

    /// `n` workers of one topology, logging to `<dir>/worker-<i>.log`.
    pub fn start(
        binary: &Path,
        n: usize,
        topology: &Path,
        url: &str,
        log: &str,
        dir: &Path,
    ) -> std::io::Result<Self> {
        let mut w = Self::new();
        for i in 0..n {
            w.spawn(
                binary,
                topology,
                url,
                &[],
                log,
                (dir, &format!("worker-{i}")),
            )?;
        }
        Ok(w)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(std::process::Child::id).collect()
    }

    /// Every worker's log, for failure messages.
    pub fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| {
                format!(
                    "--- {}\n{}",
                    l.display(),
                    std::fs::read_to_string(l).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Default for WorkerProcesses {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// What the namespace's lease bucket says now: how many workers are members, and the pid of
/// the worker holding each partition (worker IDs are `<host>-<pid>-<nanos>`). Empty while the
/// bucket does not exist yet; no members while the leases still move (a partition is held by a
/// worker that is no member, or one holding more than its share).
pub async fn lease_holders(
    js: &async_nats::jetstream::Context,
    namespace: &str,
) -> (usize, std::collections::BTreeMap<u32, u32>) {
    use futures::StreamExt;
    let mut leases = std::collections::BTreeMap::new();
    let mut members = 0;
    let Ok(kv) = js.get_key_value(format!("{namespace}-leases")).await else {
        return (members, leases);
    };
    // A listing of a bucket whose keys expire can wait forever (nats-server#3481): bounded,
    // the caller's next poll tries again.
    let Ok(Ok(keys)) = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let mut out = Vec::new();
        let mut keys = kv.keys().await?;
        while let Some(key) = keys.next().await {
            out.push(key?);
        }
        Ok::<_, async_nats::Error>(out)
    })
    .await
    else {
        return (members, leases);
    };
    // Partitions move until every holder is a member within its share, `ceil(partitions /
    // members)` (the lease manager's rule: then nobody releases, and nothing is left to take
    // once every partition is held). Per unit: its members' worker IDs, and each leased
    // partition with its holder's.
    type Unit = (Vec<String>, Vec<(u32, String)>);
    let mut units: std::collections::BTreeMap<String, Unit> = Default::default();
    for key in &keys {
        if let Some((unit, worker)) = key.strip_prefix("member.").and_then(|k| k.rsplit_once('.')) {
            units
                .entry(unit.to_owned())
                .or_default()
                .0
                .push(worker.to_owned());
        } else if let Some((unit, p)) = key.strip_prefix("lease.").and_then(|k| k.rsplit_once('.'))
            && let Ok(p) = p.parse()
            && let Ok(Some(owner)) = kv.get(key).await
        {
            let owner = String::from_utf8_lossy(&owner).into_owned();
            units.entry(unit.to_owned()).or_default().1.push((p, owner));
        }
    }
    let settled = units.values().all(|(workers, held)| {
        let total = held.iter().map(|(p, _)| p + 1).max().unwrap_or(0) as usize;
        let cap = total.div_ceil(workers.len().max(1));
        let mut loads = std::collections::BTreeMap::<&str, usize>::new();
        for (_, owner) in held {
            *loads.entry(owner).or_default() += 1;
        }
        loads
            .iter()
            .all(|(owner, n)| workers.iter().any(|w| w == owner) && *n <= cap)
    });
    if !settled {
        return (0, leases);
    }
    for key in keys {
        if key.starts_with("member.") {
            members += 1;
        } else if key.starts_with("lease.")
            && let Some(p) = key.rsplit('.').next().and_then(|p| p.parse().ok())
            && let Ok(Some(owner)) = kv.get(&key).await
            && let Some(pid) = String::from_utf8_lossy(&owner)
                .rsplit('-')
                .nth(1)
                .and_then(|p| p.parse().ok())
        {
            leases.insert(p, pid);
        }
    }
    (members, leases)
}

/// Waits until `members` of the processes in `procs` share the namespace's `partitions` leases
/// (every partition held, each process holding some); returns the pid holding each partition.
/// Fails with the processes' logs if one of them exits, or after `guard`.
pub async fn wait_for_shared_leases(
    js: &async_nats::jetstream::Context,
    namespace: &str,
    (members, partitions): (usize, usize),
    procs: &mut WorkerProcesses,
    guard: std::time::Duration,
) -> std::collections::BTreeMap<u32, u32> {
    let begun = std::time::Instant::now();
    loop {
        let (now, leases) = lease_holders(js, namespace).await;
        let owners: std::collections::BTreeSet<u32> = leases.values().copied().collect();
        if now == members && leases.len() == partitions && owners.len() == members {
            return leases;
        }
        let exited = procs
            .children
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(Some(_))));
        assert!(
            !exited && begun.elapsed() < guard,
            "{members} processes did not share the {partitions} leases ({now} members, {leases:?}):\n{}",
            procs.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Of `cameras`, the owner (by `leases` of `partitions`) holding the most, with its cameras:
/// the process a failover test stops.
pub fn busiest_owner(
    leases: &std::collections::BTreeMap<u32, u32>,
    cameras: &[String],
    partitions: u32,
) -> (u32, Vec<String>) {
    let mut per_pid: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for c in cameras {
        let p = panoptes_contracts::partition::partition_of(c, partitions);
        if let Some(&pid) = leases.get(&p) {
            per_pid.entry(pid).or_default().push(c.clone());
        }
    }
    per_pid
        .into_iter()
        .max_by_key(|(_, c)| c.len())
        .unwrap_or_default()
}

/// What `cargo bench` adds to every benchmark binary's arguments: `--bench`. A benchmark's
/// `#[derive(clap::Parser)]` options take it with `#[command(flatten)]` so that clap accepts it.
#[derive(Debug, clap::Args)]
pub struct CargoBench {
    /// Set by `cargo bench`; changes nothing.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// A finite number `> 0`: clap's `value_parser` for benchmark rates, durations and targets.
pub fn positive(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or_else(|| format!("{s:?} is not a positive number"))
}

/// A finite number `>= 0`: clap's `value_parser` for benchmark amounts that may be zero.
pub fn non_negative(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a non-negative number"))
}

/// The 1, 5 and 15 minute load averages, for benchmark headers ("unknown" off Linux).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The median (the mean of the two middle values for an even count); NaN when empty.
pub fn median_f64(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match (
        xs.get(n / 2),
        n.checked_sub(1).and_then(|_| xs.get((n - 1) / 2)),
    ) {
        (Some(hi), Some(lo)) => (hi + lo) / 2.0,
        _ => f64::NAN,
    }
}

/// The number right after `word` in `line` (`"… dropped 12 (…)"`): reads the summary lines
/// `panoptes` processes print when they stop.
pub fn count_after(line: &str, word: &str) -> Option<u64> {
    let rest = &line[line.find(word)? + word.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Camera `cam-<i>`'s benchmark frame, `width`×`height` RGB encoded as `frame/v1`: noise with
/// three light bars placed by `i` (text-like blobs the detector finds), so every camera's frame
/// differs. The bars' size and place scale with the frame (at 640×480: 300×20 pixels).
pub fn bench_camera_frame(
    i: usize,
    width: u32,
    height: u32,
) -> anyhow::Result<(String, bytes::Bytes)> {
    let (w, h) = (width, height);
    let mut px = vec![0u8; (w * h * 3) as usize];
    let mut state: u32 = 0x1234_5678 ^ i as u32;
    for p in &mut px {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *p = 40 + (state >> 28) as u8;
    }
    let (sx, sy) = (|v: u32| v * w / 640, |v: u32| v * h / 480);
    let i = i as u32;
    for bar in 0..3u32 {
        let top = sy(i * 41 + bar * 130) % h.saturating_sub(sy(24)).max(1);
        let left = sx(30) + sx(i * 17 + bar * 50) % sx(200).max(1);
        for y in top..(top + sy(20)).min(h) {
            for x in left..(left + sx(300)).min(w) {
                let at = ((y * w + x) * 3) as usize;
                px[at..at + 3].copy_from_slice(&[230, 230, 230]);
            }
        }
    }
    let camera = format!("cam-{i}");
    let bytes = Frame {
        camera: CameraId::new(&camera)?,
        seq: 1,
        capture_ts_ns: panoptes_contracts::time::now_ns(),
        width: w,
        height: h,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(px),
    }
    .encode()?;
    Ok((camera, bytes))
}

/// Benchmark cameras: one task per `(camera, frame)` publishing that pre-encoded frame on
/// `<ns>.frames.<camera>` at `fps` until `stop`, counting successful publishes in `published`.
/// Phases are spread over one period like independent cameras; a publisher that falls behind
/// skips ticks instead of bursting.
pub fn spawn_paced_cameras(
    client: &async_nats::Client,
    ns: &str,
    frames: &[(String, bytes::Bytes)],
    fps: f64,
    published: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: &tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let period = std::time::Duration::from_secs_f64(1.0 / fps);
    let mut cameras = Vec::with_capacity(frames.len());
    for (i, (cam, bytes)) in frames.iter().enumerate() {
        let (client, published, stop) = (client.clone(), published.clone(), stop.clone());
        let (subject, bytes) = (format!("{ns}.frames.{cam}"), bytes.clone());
        let first = tokio::time::Instant::now() + period.mul_f64(i as f64 / frames.len() as f64);
        cameras.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if client.publish(subject.clone(), bytes.clone()).await.is_ok() {
                    published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    cameras
}

/// Every detection message a JetStream stream holds now, in stream order (an ordered consumer
/// reads them; each must arrive within two minutes).
pub async fn read_detections(
    stream: &async_nats::jetstream::stream::Stream,
) -> Vec<panoptes_contracts::DetectionMessage> {
    use futures::StreamExt as _;
    let guard = std::time::Duration::from_secs(120);
    let total = stream.clone().info().await.expect("info").state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    while (out.len() as u64) < total {
        let msg = tokio::time::timeout(guard, messages.next())
            .await
            .expect("detections in time")
            .expect("stream open")
            .expect("message");
        out.push(serde_json::from_slice(&msg.payload).expect("detections/v1"));
    }
    out
}

/// Publishes a `width`×`height` RGB8 frame of `camera` every 100 ms, with rising seq numbers
/// from `seq` on, until its detections arrive (a live worker keeps no frame sent before it
/// subscribed, so the first few may be lost); the message, or an error after `within`.
pub async fn publish_until_detected(
    client: &async_nats::Client,
    subjects: &panoptes_contracts::Subjects,
    camera: &CameraId,
    (width, height, rgb): (u32, u32, &[u8]),
    seq: &mut u64,
    within: std::time::Duration,
) -> anyhow::Result<panoptes_contracts::DetectionMessage> {
    use futures::StreamExt as _;
    let mut results = client.subscribe(subjects.detections(camera)).await?;
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        *seq += 1;
        let frame = Frame {
            camera: camera.clone(),
            seq: *seq,
            capture_ts_ns: panoptes_contracts::time::now_ns(),
            width,
            height,
            format: PixelFormat::Rgb8,
            pixels: PixelBuffer::from_vec(rgb.to_vec()),
        };
        client
            .publish(subjects.frames(camera), frame.encode()?)
            .await?;
        let wait = std::time::Duration::from_millis(100);
        if let Ok(Some(msg)) = tokio::time::timeout(wait, results.next()).await {
            return Ok(serde_json::from_slice(&msg.payload)?);
        }
    }
    anyhow::bail!("no detections for camera {camera} within {within:?}")
}

/// `GET /metrics` on `addr` (a 200 answer); the body.
pub async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot reach /metrics at {addr}: {e}"));
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// `GET path` on `addr` over HTTP/1.1: the status code and the body, or `None` when nothing
/// answers there (yet).
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A loopback TCP port nobody listens on right now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}
