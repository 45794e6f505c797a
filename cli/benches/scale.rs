//! Scale-out throughput: 1, 2 and 3 `panoptes worker` processes sharing eight cameras through
//! partition leases, live delivery, over a real nats-server; against the bare model measured in
//! the same run.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! export CARGO_TARGET_DIR=/root/.cache/panoptes/target
//! cargo bench -p panoptes --bench scale
//! ```
//!
//! Needs what scripts/setup.sh makes (the letterbox operator, the PP-OCRv4 det model, a
//! nats-server). Options (the measured windows per configuration, the rate each camera offers):
//! `cargo bench -p panoptes --bench scale -- --help` (each also an environment variable; the
//! argument wins).
//!
//! What it measures:
//!
//! 1. **Bare model**: `Graph::run_f32` on `[1, 3, 640, 640]` with 1 and 2 intra-op threads
//!    (ONNX Runtime, as the workers use it), median of 7 calls after one untimed call, as
//!    frames/s. Measured first, while nothing else of the benchmark runs.
//! 2. **Workers**: for each configuration (1, 2, 3 workers with `threads: 1`; 1 worker with
//!    `threads: 2`; all with the server's partition mapping of docs/nats.md, so a worker
//!    receives only its partitions' frames; then 2 and 3 workers again without it, when every
//!    worker receives every frame and skips the foreign ones) a fresh nats-server and
//!    namespace, a topology letterbox 640×640 (Wasm) → det → db written to a temporary
//!    directory, and that many `panoptes worker` processes leasing its 16 partitions. Once
//!    every worker is a member and holds leases (KV bucket `<ns>-leases`),
//!    the bench publishes eight cameras' 640×480 RGB frames at `--fps` each (more than the
//!    workers take: live delivery drops the rest, so every worker always has work), warms up
//!    3 s, then counts detection messages on `<ns>.detections.*` per window. Reported: the
//!    median det/s over the windows, its ratio to one worker and to the bare model (same
//!    threads), the share of received frames the workers skipped (other partitions', from the
//!    summaries they print at SIGTERM), and CPU use over the windows (utime + stime from /proc/<pid>/stat) of the
//!    worker processes, of nats-server and of this process, as a share of the whole machine
//!    (all cores), and the machine's remaining busy time (/proc/stat): load that is not this
//!    benchmark, which makes a row unreliable when it is large.
//!    Workers stop with SIGTERM between configurations (they hand their partitions back).
//!
//! The publisher republishes one pre-encoded frame per camera (its sequence number does not
//! change), so this process spends little CPU next to the workers; nats-server and the
//! workers still move every byte. On a 2-core machine 2 and 3 single-threaded workers compete
//! with nats-server and the transport of the dropped frames: that competition is what the
//! ratios show. Nothing here asserts a speed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt as _;
use panoptes_contracts::Tensor;
use panoptes_contracts::partition::partition_of;
use panoptes_model::{Graph, GraphOptions, ModelManifest};
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_tests::procstat::{
    clock_ticks, cpu_ticks, find_server_pid, machine_busy_ticks, ticks_of,
};
use panoptes_tests::{count_after, median_f64};
use tokio_util::sync::CancellationToken;

const CAMERAS: usize = 8;
const PARTITIONS: u32 = 16;
const FRAME_WIDTH: u32 = 640;
const FRAME_HEIGHT: u32 = 480;
const SIDE: usize = 640;
const BARE_RUNS: usize = 7;
const WARMUP: Duration = Duration::from_secs(3);
/// Failure guard only: how long workers may take to start and share the partitions.
const GUARD: Duration = Duration::from_secs(120);
/// (worker processes, intra-op threads per worker, server partition mapping). The mapping
/// (docs/nats.md) is the recommended deployment: each worker receives only its partitions'
/// frames. Without it every live worker receives every frame and skips the foreign ones.
const CONFIGS: [(usize, usize, bool); 6] = [
    (1, 1, true),
    (2, 1, true),
    (3, 1, true),
    (1, 2, true),
    (2, 1, false),
    (3, 1, false),
];

/// Scale-out throughput of 1-3 `panoptes worker` processes sharing cameras through partition
/// leases; see the file's header.
#[derive(clap::Parser)]
struct Args {
    /// Frames per second each camera offers.
    #[arg(long, env = "SCALE_FPS", default_value_t = 15.0, value_parser = panoptes_tests::positive)]
    fps: f64,
    /// Seconds per measured window.
    #[arg(long, env = "SCALE_WINDOW_S", default_value_t = 10.0, value_parser = panoptes_tests::positive)]
    window_s: f64,
    /// Measured windows per configuration.
    #[arg(long, env = "SCALE_WINDOWS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    windows: u64,
    #[command(flatten)]
    cargo: panoptes_tests::CargoBench,
}

/// A smooth deterministic pattern in [-1, 1] (values do not change the work a CNN does).
fn model_input() -> anyhow::Result<Tensor> {
    let shape = vec![1, 3, SIDE, SIDE];
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect();
    Ok(Tensor::new(shape, data)?)
}

/// The bare model with `threads` intra-op threads: median frames/s over [`BARE_RUNS`] calls.
fn bare_fps(manifest: &ModelManifest, threads: usize) -> anyhow::Result<(f64, Duration)> {
    let graph: Graph = manifest.load_model(&GraphOptions {
        threads,
        ..GraphOptions::default()
    })?;
    let x = model_input()?;
    std::hint::black_box(graph.run_f32(&x)?);
    let mut times = Vec::with_capacity(BARE_RUNS);
    for _ in 0..BARE_RUNS {
        let started = Instant::now();
        std::hint::black_box(graph.run_f32(&x)?);
        times.push(started.elapsed().as_secs_f64());
    }
    let m = median_f64(times);
    Ok((1.0 / m, Duration::from_secs_f64(m)))
}

fn write_topology(dir: &Path, ns: &str, threads: usize) -> anyhow::Result<PathBuf> {
    let mut topology = panoptes_tests::detector_topology(SIDE as u32, threads);
    topology.config.namespace = ns.to_owned();
    topology.config.partitions = PARTITIONS;
    Ok(panoptes_tests::write_topology(dir, ns, &topology))
}

/// `panoptes worker` processes; killed and reaped if still running when dropped.
struct Workers(panoptes_tests::WorkerProcesses);

impl Workers {
    fn start(n: usize, topology: &Path, url: &str, dir: &Path) -> anyhow::Result<Self> {
        let w = panoptes_tests::WorkerProcesses::start(
            Path::new(env!("CARGO_BIN_EXE_panoptes")),
            n,
            topology,
            url,
            "warn",
            dir,
        )
        .context("cannot start `panoptes worker`")?;
        Ok(Self(w))
    }

    fn pids(&self) -> Vec<u32> {
        self.0.pids()
    }

    fn logs(&self) -> String {
        self.0.logs()
    }

    /// SIGTERM to each, then waits: they hand their partitions back and exit. Returns the
    /// frames they received and skipped (other partitions' frames), summed, from the summary
    /// each prints on stderr; `None` if a summary could not be read.
    fn stop(mut self) -> anyhow::Result<Option<(u64, u64)>> {
        for child in &self.0.children {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
        }
        let deadline = Instant::now() + GUARD;
        for child in &mut self.0.children {
            loop {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        bail!("a worker exited with {status}:\n{}", self.logs());
                    }
                    break;
                }
                if Instant::now() > deadline {
                    bail!("a worker did not stop after SIGTERM:\n{}", self.logs());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut totals = Some((0, 0));
        for log in &self.0.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let counts = text
                .lines()
                .rev()
                .find(|l| l.contains("worker received"))
                .and_then(|l| Some((count_after(l, "received ")?, count_after(l, "skipped ")?)));
            totals = totals
                .zip(counts)
                .map(|((r, s), (r1, s1))| (r + r1, s + s1));
        }
        Ok(totals)
    }
}

/// Waits until `workers` members are registered and all partitions are leased by them;
/// returns the pid holding each partition.
async fn wait_for_leases(
    js: &jetstream::Context,
    ns: &str,
    workers: &Workers,
) -> anyhow::Result<BTreeMap<u32, u32>> {
    let wanted = workers.0.children.len();
    let start = Instant::now();
    loop {
        let (members, leases) = panoptes_tests::lease_holders(js, ns).await;
        let owners: BTreeSet<u32> = leases.values().copied().collect();
        if members == wanted && leases.len() == PARTITIONS as usize && owners.len() == wanted {
            return Ok(leases);
        }
        if start.elapsed() > GUARD {
            bail!(
                "the workers did not share the partitions in time:\n{}",
                workers.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Row {
    workers: usize,
    threads: usize,
    mapped: bool,
    det_per_s: f64,
    windows: Vec<f64>,
    offered_per_s: f64,
    /// Share of the whole machine (all cores), over the measured windows.
    workers_cpu: f64,
    server_cpu: Option<f64>,
    /// This process (publisher and counter).
    bench_cpu: f64,
    /// Everything else that ran on the machine meanwhile (builds, other tests).
    other_cpu: Option<f64>,
    /// Cameras each worker served, by the leases held at the start.
    cameras_per_worker: Vec<usize>,
    startup: Duration,
    /// Share of the frames the workers received that belonged to another worker's partitions
    /// (whole run, from the workers' summaries).
    skipped: Option<f64>,
}

struct Env<'a> {
    frames: &'a [(String, Bytes)],
    fps: f64,
    window: Duration,
    windows: usize,
    cores: f64,
    ticks: f64,
    dir: &'a Path,
}

async fn run_config(
    env: &Env<'_>,
    workers_n: usize,
    threads: usize,
    mapped: bool,
) -> anyhow::Result<Row> {
    let ns = format!(
        "scale-w{workers_n}-t{threads}-{}",
        if mapped { "mapped" } else { "flat" }
    );
    // A server per configuration: its CPU time is this configuration's alone, and the
    // partition mapping names the namespace.
    let options = NatsServerOptions {
        partition_mapping: mapped.then(|| (ns.clone(), PARTITIONS)),
        ..NatsServerOptions::default()
    };
    let server = tokio::task::spawn_blocking(move || NatsServer::start(&options)).await??;
    let server_pid = find_server_pid(&server.store_dir().join("nats.conf"));
    if server_pid.is_none() {
        eprintln!("warning: nats-server's process not found in /proc; its CPU is not reported");
    }
    let url = server.url();
    let topology = write_topology(env.dir, &ns, threads)?;
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client.clone());

    // Detections: a connection with default capacities (thousands of messages), so the
    // counting side never drops.
    let mut detections = client.subscribe(format!("{ns}.detections.*")).await?;
    client.flush().await?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = {
        let received = received.clone();
        tokio::spawn(async move {
            while detections.next().await.is_some() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let started = Instant::now();
    let workers = Workers::start(workers_n, &topology, url, env.dir)?;
    let leases = wait_for_leases(&js, &ns, &workers).await?;
    let startup = started.elapsed();
    let pids = workers.pids();
    let cameras_per_worker = pids
        .iter()
        .map(|pid| {
            env.frames
                .iter()
                .filter(|(cam, _)| leases.get(&partition_of(cam, PARTITIONS)) == Some(pid))
                .count()
        })
        .collect();

    // Cameras: each publishes at a fixed rate, phases spread over one period like independent
    // cameras; a publisher that falls behind skips ticks instead of bursting. The connection is
    // the one ingest nodes use (64-message outbound channel).
    let publisher = panoptes::connect(url).await?;
    let published = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let cameras = panoptes_tests::spawn_paced_cameras(
        &publisher, &ns, env.frames, env.fps, &published, &stop,
    );

    tokio::time::sleep(WARMUP).await;
    let mut windows = Vec::with_capacity(env.windows);
    let me = std::process::id();
    let (t0, w0, s0, p0, b0, m0) = (
        Instant::now(),
        ticks_of(&pids),
        server_pid.and_then(cpu_ticks),
        published.load(Ordering::Relaxed),
        cpu_ticks(me).unwrap_or(0),
        machine_busy_ticks(),
    );
    for _ in 0..env.windows {
        let (start, before) = (Instant::now(), received.load(Ordering::Relaxed));
        tokio::time::sleep(env.window).await;
        let n = received.load(Ordering::Relaxed) - before;
        windows.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let secs = t0.elapsed().as_secs_f64();
    let (w1, s1, p1, b1, m1) = (
        ticks_of(&pids),
        server_pid.and_then(cpu_ticks),
        published.load(Ordering::Relaxed),
        cpu_ticks(me).unwrap_or(0),
        machine_busy_ticks(),
    );
    let share = |ticks: u64| ticks as f64 / env.ticks / secs / env.cores;
    let (workers_ticks, bench_ticks) = (w1.saturating_sub(w0), b1.saturating_sub(b0));
    let server_ticks = s0.zip(s1).map(|(a, b)| b.saturating_sub(a));
    let other_cpu = m0.zip(m1).map(|(a, b)| {
        let ours = workers_ticks + bench_ticks + server_ticks.unwrap_or(0);
        share(b.busy.saturating_sub(a.busy).saturating_sub(ours))
    });

    stop.cancel();
    for c in cameras {
        c.await?;
    }
    publisher.flush().await?;
    // Waiting for the processes blocks: off the runtime's threads.
    let summaries = tokio::task::spawn_blocking(move || workers.stop()).await??;
    counter.abort();
    drop(client);
    tokio::task::spawn_blocking(move || server.stop()).await?;
    Ok(Row {
        workers: workers_n,
        threads,
        mapped,
        skipped: summaries.map(|(r, s)| s as f64 / r.max(1) as f64),
        det_per_s: median_f64(windows.clone()),
        windows,
        offered_per_s: (p1 - p0) as f64 / secs,
        workers_cpu: share(workers_ticks),
        server_cpu: server_ticks.map(share),
        bench_cpu: share(bench_ticks),
        other_cpu,
        cameras_per_worker,
        startup,
    })
}

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let fps = args.fps;
    let window = Duration::from_secs_f64(args.window_s);
    // At most 1000, checked by clap, so the cast is exact.
    let windows = args.windows as usize;
    let root = panoptes_tests::require_setup();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "scale bench: PP-OCRv4 det behind letterbox 640, live delivery, {CAMERAS} cameras × {fps} fps of {FRAME_WIDTH}x{FRAME_HEIGHT} RGB offered, {cores} cores, load average {} at start",
        panoptes_tests::loadavg()
    );
    println!(
        "per configuration: {:.0} s warm-up, {windows} windows of {:.0} s (median det/s)",
        WARMUP.as_secs_f64(),
        window.as_secs_f64()
    );
    println!("{}", "-".repeat(100));

    // 1. The bare model, before anything else runs.
    let manifest = ModelManifest::load(&root.join("models/ppocr-v4-det.yaml"))?;
    let mut bare = BTreeMap::new();
    for threads in [1, 2] {
        let (fps, per_call) = bare_fps(&manifest, threads)?;
        println!(
            "bare model, {threads} thread(s): {:>7.1} ms per call (median of {BARE_RUNS}) -> {fps:.2} frames/s",
            per_call.as_secs_f64() * 1e3
        );
        bare.insert(threads, fps);
    }

    // 2. The workers.
    let frames = (0..CAMERAS)
        .map(|i| panoptes_tests::bench_camera_frame(i, FRAME_WIDTH, FRAME_HEIGHT))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rows = runtime.block_on(async {
        let env = Env {
            frames: &frames,
            fps,
            window,
            windows,
            cores: cores as f64,
            ticks: clock_ticks(),
            dir: dir.path(),
        };
        let mut rows = Vec::new();
        for (workers, threads, mapped) in CONFIGS {
            let started = Instant::now();
            let row = run_config(&env, workers, threads, mapped).await?;
            eprintln!(
                "  {workers} worker(s) × {threads} thread(s), mapping {}: {:.2} det/s, windows {:?} ({:.0} s)",
                if mapped { "on" } else { "off" },
                row.det_per_s,
                row.windows
                    .iter()
                    .map(|w| format!("{w:.2}"))
                    .collect::<Vec<_>>(),
                started.elapsed().as_secs_f64()
            );
            rows.push(row);
        }
        eprintln!("load average at the end: {}", panoptes_tests::loadavg());
        anyhow::Ok(rows)
    })?;

    // 3. The table.
    let one = rows
        .iter()
        .find(|r| r.workers == 1 && r.threads == 1 && r.mapped)
        .map_or(f64::NAN, |r| r.det_per_s);
    let pct = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |c| format!("{:.0}%", c * 100.0));
    println!(
        "\n{:>7} {:>7} {:>7} {:>7} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "workers",
        "threads",
        "mapping",
        "det/s",
        "÷1 worker",
        "÷bare",
        "offered/s",
        "skipped",
        "wkr CPU",
        "nats CPU",
        "bench",
        "other",
        "cams/wkr",
        "start s"
    );
    for r in &rows {
        let bare_fps = bare.get(&r.threads).copied().unwrap_or(f64::NAN);
        println!(
            "{:>7} {:>7} {:>7} {:>7.2} {:>9.2} {:>6.2} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7.1}",
            r.workers,
            r.threads,
            if r.mapped { "on" } else { "off" },
            r.det_per_s,
            r.det_per_s / one,
            r.det_per_s / bare_fps,
            r.offered_per_s,
            pct(r.skipped),
            pct(Some(r.workers_cpu)),
            pct(r.server_cpu),
            pct(Some(r.bench_cpu)),
            pct(r.other_cpu),
            r.cameras_per_worker
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("/"),
            r.startup.as_secs_f64()
        );
    }
    println!(
        "\ndet/s: detection messages per second (one per processed frame), median of the windows; \
         ÷1 worker: against 1 worker × 1 thread; ÷bare: against the bare model with the same \
         threads ({}); mapping: the server's partition mapping (on: a worker receives only its \
         partitions' frames); skipped: share of the frames the workers received that were another \
         worker's; CPU (workers, nats-server, this bench, other load): share of all {cores} cores \
         over the windows; start s: spawn until every worker held leases",
        bare.iter()
            .map(|(t, f)| format!("{t} thread(s) {f:.2} frames/s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
