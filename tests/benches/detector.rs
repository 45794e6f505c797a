//! The PP-OCRv4 text detector as a pipeline stage, without batching, with fixed batches (always
//! up to `max_batch` within the latency target) and with adaptive batching (the controller
//! learns the size with the lowest cost per frame), against the bare model measured in the same
//! run.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! export CARGO_TARGET_DIR=/root/.cache/panoptes/target
//! cargo bench -p panoptes-tests --bench detector                         # full: ort and tract
//! PANOPTES_BENCH_QUICK=1 cargo bench -p panoptes-tests --bench detector -- --backend ort
//! cargo bench -p panoptes-tests --bench detector -- --backend ort --load 1,3,10  # × bare model
//! cargo bench -p panoptes-tests --bench detector -- --backend ort --load 1,3,10 --wire jpeg
//! PANOPTES_BENCH_QUICK=1 cargo bench -p panoptes-tests --bench detector -- \
//!     --backend tract --cameras 4 --batching off,adaptive
//! ```
//!
//! Needs what scripts/setup.sh makes (the letterbox operator, the model file, a nats-server).
//! Options: `cargo bench -p panoptes-tests --bench detector -- --help` (each also an environment
//! variable; the argument wins).
//!
//! What it measures:
//!
//! 1. **Floor**: `Graph::run_f32` on `[b, 3, 640, 640]` for b = 1, 4, 8, per backend (default
//!    threads), median of the timed calls after one untimed call (tract plans the shape then).
//!    Measured first, while nothing else of the benchmark runs; batch 1 is measured again right
//!    before and after each pipeline case (`bare/s`, the case's ÷b1), since a shared machine's
//!    speed drifts over a run by more than the differences measured.
//! 2. **Pipeline**: a [`Worker`] built from the detector fixture (letterbox Wasm operator →
//!    `detect` model stage → `db` postprocess; with `--wire jpeg` the built-in `jpeg` operator
//!    first) on a real nats-server, fed by N synthetic cameras that publish pre-encoded 640×480
//!    frames (rendered text plus noise; raw RGB, or JPEG at quality 85) at a fixed rate each.
//!    The rate is meant to be more than the worker can take: live delivery keeps the newest
//!    frame per camera and counts the rest as dropped, so the worker always has work and the
//!    throughput is its capacity. Per case: warm-up, then a measured window (at least 10
//!    passes, quick: 4, of the case's largest batch at the bare model's speed, so that slow
//!    batched cases are not judged on one or two bursts of results) in which detection
//!    messages received per second give the throughput, receive time − the frame's
//!    `capture_ts_ns` (the publish time) gives the latency, and the worker's counters give the
//!    mean batch (frames processed ÷ passes) and drops. The worker's own histograms
//!    (`panoptes_stage_seconds`, `panoptes_model_inference_seconds`) give each stage's time per
//!    frame and its share of the window: where the time goes.
//! 3. **The bare model under the cameras' load**: batch 1 timed once more in each case after the
//!    cameras started and before the worker did: with nobody subscribed (`+pub/s`: what the
//!    cameras and nats-server take from the model's cores whatever reads the frames; on a
//!    deployment the cameras run elsewhere), then with a plain subscriber that receives and
//!    discards every frame (`+sub/s`: plus what delivering them costs any reader; the most a
//!    demand-driven intake could win back). `÷pub` and `÷sub` put the pipeline against them.
//!
//! Every worker, publisher and subscriber shares the machine with nats-server: on a 2-core box
//! the transport of the dropped frames costs CPU too (it is what a live deployment pays).
//! Numbers are medians and ratios to the floor of the same run; nothing here asserts a speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use panoptes_contracts::time::now_ns;
use panoptes_contracts::{DetectionMessage, Subjects};
use panoptes_model::{Backend, ModelManifest};
use panoptes_pipeline::worker::{StatsSnapshot, Worker};
use panoptes_topology::{
    Backend as TopologyBackend, BatchingConfig, Emits, StageConfig, TopologyFile,
};
use tokio_util::sync::CancellationToken;

#[path = "detector/cameras.rs"]
mod cameras;
#[path = "detector/floor.rs"]
mod floor;
#[path = "detector/time_spent.rs"]
mod time_spent;

use cameras::{Template, Wire};
use floor::Floor;

/// The model's name in the detector fixture and its manifest (relative to the repository).
const MODEL: &str = "det";
const MANIFEST: &str = "models/ppocr-v4-det.yaml";
/// The detector's input side after the letterbox.
const SIDE: usize = 640;
/// Timed calls of the bare model while the cameras publish (more than `--runs`: one reading
/// per case, on a busier machine).
const LOADED_RUNS: usize = 9;
/// How long the cameras' traffic runs (or a reader reads it) before the bare model is timed.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Batching {
    Off,
    /// Always fill batches up to max_batch (within the latency target).
    Fixed,
    /// The controller learns the batch size with the lowest cost per frame.
    Adaptive,
}

impl Batching {
    fn name(self) -> &'static str {
        match self {
            Batching::Off => "off",
            Batching::Fixed => "fixed",
            Batching::Adaptive => "adaptive",
        }
    }
}

/// The PP-OCRv4 text detector as a pipeline stage (off, fixed and adaptive batching) against
/// the bare model; see the file's header.
#[derive(clap::Parser)]
struct Args {
    /// Shorter runs: 3 s warm-up, 5 s measured, 3 bare calls (otherwise 8 s, 10 s, 7).
    #[arg(long, env = "PANOPTES_BENCH_QUICK", value_parser = clap::builder::FalseyValueParser::new())]
    quick: bool,
    /// Backends, comma-separated (ort, tract).
    #[arg(long = "backend", env = "PANOPTES_BENCH_BACKENDS", value_delimiter = ',',
          default_value = "ort,tract", value_parser = backend)]
    backends: Vec<Backend>,
    /// Camera counts, comma-separated, each 1..=64.
    #[arg(long, env = "PANOPTES_BENCH_CAMERAS", value_delimiter = ',', default_value = "1,4,8",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    cameras: Vec<u64>,
    /// Batching modes, comma-separated.
    #[arg(
        long,
        env = "PANOPTES_BENCH_BATCHING",
        value_delimiter = ',',
        default_value = "off,fixed,adaptive"
    )]
    batching: Vec<Batching>,
    /// Frames per second each camera offers.
    #[arg(long, env = "PANOPTES_BENCH_FPS", default_value_t = 15.0, value_parser = panoptes_tests::positive)]
    fps: f64,
    /// Offered load as multiples of the bare model's batch-1 frames/s, comma-separated (e.g.
    /// `1,3,10`): one case per value, all cameras together offering that many times what the
    /// bare model takes; replaces `--fps`.
    #[arg(long, env = "PANOPTES_BENCH_LOAD", value_delimiter = ',', value_parser = panoptes_tests::positive)]
    load: Vec<f64>,
    /// Intra-op threads of the model, for the bare model and the stage alike (0: the backend's
    /// default, one per core).
    #[arg(long, env = "PANOPTES_BENCH_THREADS", default_value_t = 0)]
    threads: usize,
    /// How frames travel: `raw` RGB, or `jpeg` (decoded in the topology's first stage, the
    /// built-in `jpeg` operator, as for `encoding: jpeg` cameras).
    #[arg(long, env = "PANOPTES_BENCH_WIRE", default_value = "raw")]
    wire: Wire,
    /// Warm-up seconds per case [default: see --quick].
    #[arg(long, env = "PANOPTES_BENCH_WARMUP_S", value_parser = panoptes_tests::positive)]
    warmup_s: Option<f64>,
    /// Measured seconds per case [default: see --quick].
    #[arg(long, env = "PANOPTES_BENCH_MEASURE_S", value_parser = panoptes_tests::positive)]
    measure_s: Option<f64>,
    /// Timed calls of the bare model per batch size [default: see --quick].
    #[arg(long, env = "PANOPTES_BENCH_RUNS", value_parser = clap::value_parser!(u64).range(1..))]
    runs: Option<u64>,
    /// The stage's max_batch.
    #[arg(long, env = "PANOPTES_BENCH_MAX_BATCH", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_batch: u64,
    /// The stage's latency target in ms [default: 4 × the bare batch-1 median].
    #[arg(long, env = "PANOPTES_BENCH_LATENCY_TARGET_MS", value_parser = panoptes_tests::positive)]
    latency_target_ms: Option<f64>,
    #[command(flatten)]
    cargo: panoptes_tests::CargoBench,
}

/// `--backend`'s values.
fn backend(s: &str) -> Result<Backend, String> {
    match s.trim() {
        "ort" => Ok(Backend::Ort),
        "tract" => Ok(Backend::Tract),
        other => Err(format!("unknown backend {other:?} (ort, tract)")),
    }
}

struct Config {
    backends: Vec<Backend>,
    cameras: Vec<usize>,
    batching: Vec<Batching>,
    fps: f64,
    load: Vec<f64>,
    threads: usize,
    wire: Wire,
    warmup: Duration,
    measure: Duration,
    /// A measured window lasts at least this many passes of the largest batch (at the bare
    /// model's speed), so that slow batched cases are not counted in one or two bursts.
    min_passes: u32,
    runs: usize,
    max_batch: usize,
    latency_target_ms: Option<u64>,
}

impl Config {
    /// The options of [`Args`], with `--quick`'s defaults filled in.
    fn load() -> Self {
        let args = <Args as clap::Parser>::parse();
        let (warmup, measure, runs, min_passes) = if args.quick {
            (3.0, 5.0, 3, 4)
        } else {
            (8.0, 10.0, 7, 10)
        };
        Self {
            backends: args.backends,
            // Ranges checked by clap (1..=64, 1..=1024), so the casts are exact.
            cameras: args.cameras.into_iter().map(|n| n as usize).collect(),
            batching: args.batching,
            fps: args.fps,
            load: args.load,
            threads: args.threads,
            wire: args.wire,
            warmup: Duration::from_secs_f64(args.warmup_s.unwrap_or(warmup)),
            measure: Duration::from_secs_f64(args.measure_s.unwrap_or(measure)),
            min_passes,
            runs: args.runs.map_or(runs, |n| n as usize),
            max_batch: args.max_batch as usize,
            latency_target_ms: args.latency_target_ms.map(|v| v.ceil() as u64),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The detector fixture (`panoptes_tests::detector_topology`) at [`SIDE`], with this case's
/// backend, threads (0: the backend's choice) and batching; JPEG frames are decoded first by
/// the built-in `jpeg` operator (next to the letterbox in `operators/dist`).
fn topology(
    ns: &str,
    backend: Backend,
    threads: usize,
    wire: Wire,
    batching: Option<(usize, u64, bool)>,
) -> TopologyFile {
    let mut topology = panoptes_tests::detector_topology(SIDE as u32, threads.max(1));
    topology.config.namespace = ns.to_owned();
    if let (Wire::Jpeg, Some(StageConfig::Operator(letterbox))) =
        (wire, topology.config.stages.first())
    {
        let mut decode = letterbox.clone();
        decode.id = "decode".into();
        decode.wasm = decode.wasm.with_file_name("jpeg.wasm");
        decode.config = serde_json::Value::Null;
        decode.emits = Emits::Frames;
        topology
            .config
            .stages
            .insert(0, StageConfig::Operator(decode));
    }
    for stage in &mut topology.config.stages {
        if let StageConfig::Model(m) = stage {
            m.threads = (threads > 0).then_some(threads);
            m.backend = match backend {
                Backend::Ort => TopologyBackend::Ort,
                Backend::Tract => TopologyBackend::Tract,
            };
            m.batching = batching.map(|(max_batch, target_ms, adaptive)| BatchingConfig {
                max_batch: u32::try_from(max_batch).unwrap_or(u32::MAX),
                max_wait_ms: None,
                latency_target_ms: Some(u32::try_from(target_ms).unwrap_or(u32::MAX)),
                adaptive,
            });
        }
    }
    topology
}

struct Case {
    backend: Backend,
    cameras: usize,
    /// Frames per second each camera offers.
    fps: f64,
    /// The offered load as a multiple of the bare batch-1 throughput, with `--load`.
    load: Option<f64>,
    batching: Batching,
    /// Adaptive only.
    latency_target_ms: Option<u64>,
    warmup: Duration,
    window: Duration,
}

struct Outcome {
    /// Detection messages received per second in the window.
    fps: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_batch: f64,
    offered: f64,
    received: f64,
    dropped: f64,
    failed: u64,
    /// Frames the worker processed during the window (its own count).
    processed: u64,
    /// The worker's stage and model time in the window.
    spent: time_spent::Spent,
    /// The bare model's batch-1 frames/s while the cameras published before the worker started:
    /// with nobody subscribed, and with a plain subscriber discarding every frame.
    published_only: f64,
    delivered: f64,
}

/// Runs one case. The worker runs in this process (not through `panoptes::runner`): the graph
/// is built with `registry::build` exactly as the runner does, but before the clock starts, so
/// the model's shapes can be planned (tract) on the very graph the stage uses, and the worker's
/// counters are read directly at the window's edges without a control round-trip. A child
/// process would only add its start-up to the warm-up and a second process to schedule.
async fn run_case(
    cfg: &Config,
    case: &Case,
    index: usize,
    url: &str,
    templates: &[Template],
    floor: &Floor,
    meter: &time_spent::Meter,
) -> anyhow::Result<Outcome> {
    let ns = format!("bench{index}");
    let batching = case
        .latency_target_ms
        .map(|t| (cfg.max_batch, t, case.batching == Batching::Adaptive));
    let topology = topology(&ns, case.backend, cfg.threads, cfg.wire, batching);
    let largest = match case.batching {
        Batching::Off => 1,
        Batching::Fixed | Batching::Adaptive => case.cameras.min(cfg.max_batch),
    };
    let built = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let built = panoptes::registry::build(&topology)?;
        // Every batch size this case can form, once, on the stage's own (shared) graph: tract
        // plans each input shape on first use, which would otherwise land in the warm-up.
        let graph = built.models.get(MODEL)?;
        for b in 1..=largest {
            std::hint::black_box(graph.run_f32(&floor::input(b))?);
        }
        Ok(built)
    })
    .await??;

    let subjects = Subjects::new(ns.clone());

    // Cameras: each publishes at a fixed rate, phases spread over one period like independent
    // cameras; a publisher that falls behind skips ticks instead of bursting.
    let pub_client = panoptes::connect(url).await?;
    let published = Arc::new(AtomicU64::new(0));
    let stop_cameras = CancellationToken::new();
    let period = Duration::from_secs_f64(1.0 / case.fps);
    let mut cameras = Vec::new();
    for (i, template) in templates.iter().take(case.cameras).enumerate() {
        let template = template.clone();
        let (client, published, stop) =
            (pub_client.clone(), published.clone(), stop_cameras.clone());
        let subject = subjects.frames(&template.camera);
        let start = tokio::time::Instant::now() + period.mul_f64(i as f64 / case.cameras as f64);
        cameras.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                seq += 1;
                let payload = template.stamp(seq, now_ns());
                if client.publish(subject.clone(), payload).await.is_ok() {
                    published.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // The bare model while the cameras publish, before any worker reads their frames: with
    // nobody subscribed (what the cameras and nats-server cost the machine whatever reads the
    // frames), then with a plain subscriber that receives every frame and discards it (plus
    // what delivering them costs any reader).
    tokio::time::sleep(SETTLE).await;
    let published_only = floor.b1_now(LOADED_RUNS).await?;
    let delivered = {
        let reader = async_nats::ConnectOptions::new()
            .name("detector-bench-reader")
            .subscription_capacity(64)
            .connect(url)
            .await?;
        let mut frames = reader.subscribe(format!("{ns}.frames.>")).await?;
        reader.flush().await?;
        let read = tokio::spawn(async move { while frames.next().await.is_some() {} });
        tokio::time::sleep(SETTLE).await;
        let delivered = floor.b1_now(LOADED_RUNS).await;
        read.abort();
        delivered?
    };

    let worker = Worker::with_graph(panoptes::connect(url).await?, subjects.clone(), built.graph);
    let stats = worker.stats();
    let stop_worker = CancellationToken::new();
    let worker = tokio::spawn(worker.run(stop_worker.clone()));

    // Detections: a plain connection (default capacities) so the measuring side does not drop.
    let sub_client = async_nats::ConnectOptions::new()
        .name("detector-bench")
        .connect(url)
        .await?;
    let mut sub = sub_client.subscribe(format!("{ns}.detections.>")).await?;
    sub_client.flush().await?;
    let stop_receiver = CancellationToken::new();
    let receiver = {
        let stop = stop_receiver.clone();
        tokio::spawn(async move {
            // (receive time, capture time), ns since the UNIX epoch.
            let mut seen: Vec<(u64, u64)> = Vec::with_capacity(4096);
            let mut unreadable = 0u64;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    msg = sub.next() => {
                        let Some(msg) = msg else { break };
                        let at = now_ns();
                        match serde_json::from_slice::<DetectionMessage>(&msg.payload) {
                            Ok(m) => seen.push((at, m.capture_ts_ns)),
                            Err(_) => unreadable += 1,
                        }
                    }
                }
            }
            (seen, unreadable)
        })
    };

    tokio::time::sleep(case.warmup).await;
    let (t0, s0, p0, m0) = (
        now_ns(),
        stats.snapshot(),
        published.load(Ordering::Relaxed),
        meter.read(),
    );
    tokio::time::sleep(case.window).await;
    let (t1, s1, p1, m1) = (
        now_ns(),
        stats.snapshot(),
        published.load(Ordering::Relaxed),
        meter.read(),
    );

    stop_cameras.cancel();
    for c in cameras {
        c.await?;
    }
    stop_worker.cancel();
    let last: StatsSnapshot = worker.await?.context("the worker failed")?;
    stop_receiver.cancel();
    let (seen, unreadable) = receiver.await?;
    if unreadable > 0 {
        eprintln!("warning: {unreadable} detection messages could not be parsed");
    }
    if last.failed > 0 {
        eprintln!(
            "warning: {} frames failed in the worker (see tracing output)",
            last.failed
        );
    }

    let secs = (t1 - t0) as f64 / 1e9;
    let mut latencies: Vec<u64> = seen
        .iter()
        .filter(|(at, _)| (t0..t1).contains(at))
        .map(|(at, captured)| at.saturating_sub(*captured))
        .collect();
    latencies.sort_unstable();
    let (p50_ms, p99_ms) = if latencies.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (
            percentile(&latencies, 50.0) as f64 / 1e6,
            percentile(&latencies, 99.0) as f64 / 1e6,
        )
    };
    let frames = (s1.processed + s1.failed) - (s0.processed + s0.failed);
    let batches = s1.batches - s0.batches;
    Ok(Outcome {
        fps: latencies.len() as f64 / secs,
        p50_ms,
        p99_ms,
        mean_batch: if batches == 0 {
            f64::NAN
        } else {
            frames as f64 / batches as f64
        },
        offered: (p1 - p0) as f64 / secs,
        received: (s1.received - s0.received) as f64 / secs,
        dropped: (s1.dropped - s0.dropped) as f64 / secs,
        failed: s1.failed - s0.failed,
        processed: s1.processed - s0.processed,
        spent: m1.since(&m0),
        published_only,
        delivered,
    })
}

fn main() -> anyhow::Result<()> {
    let cfg = Config::load();
    let meter = time_spent::Meter::install()?;
    let root = panoptes_tests::require_setup();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "detector bench: PP-OCRv4 det, {cores} cores, {:?} frames on the wire, load average {} \
         at start",
        cfg.wire,
        panoptes_tests::loadavg()
    );
    println!(
        "pipeline: {} offered, warm-up ≥ {:.0} s, measured ≥ {:.0} s and ≥ {} passes \
         of the largest batch at bare speed; floor: median of {} calls",
        match cfg.load.is_empty() {
            true => format!("{} fps per camera", cfg.fps),
            false => format!(
                "{:?} × the bare batch-1 frames/s over all cameras",
                cfg.load
            ),
        },
        cfg.warmup.as_secs_f64(),
        cfg.measure.as_secs_f64(),
        cfg.min_passes,
        cfg.runs.max(1)
    );

    // 1. The floor, before anything else of the benchmark runs.
    let manifest = ModelManifest::load(&root.join(MANIFEST))?;
    println!(
        "\n{:<7} {:>5} {:>14} {:>12} {:>10}",
        "bare", "batch", "first call ms", "median ms", "frames/s"
    );
    let floors = cfg
        .backends
        .iter()
        .map(|b| floor::measure_floor(&manifest, *b, cfg.runs, cfg.threads))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // 2. The pipeline.
    let most = cfg.cameras.iter().copied().max().unwrap_or(1);
    let templates = cameras::templates(most, cfg.wire)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(1))
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    runtime.block_on(async {
        let server = tokio::task::spawn_blocking(panoptes_tests::nats_server).await?;
        let url = server.url().to_owned();
        let mut index = 0;
        for floor in &floors {
            // The bare model measured after a case is the one before the next.
            let mut before = floor.b1_now(cfg.runs).await?;
            let b1 = floor.call(1).context("no batch-1 floor")?;
            let target = cfg
                .latency_target_ms
                .unwrap_or_else(|| (4.0 * ms(b1)).ceil() as u64);
            let loads: Vec<_> = cfg.load.iter().copied().map(Some).collect();
            let loads = if loads.is_empty() { vec![None] } else { loads };
            let bare = floor.fps(1).context("no batch-1 floor")?;
            for (&cameras, load) in cfg
                .cameras
                .iter()
                .flat_map(|c| loads.iter().map(move |l| (c, *l)))
            {
                for &batching in &cfg.batching {
                    // Passes of the largest batch this case forms (one frame per camera).
                    let pass = floor.estimate(match batching {
                        Batching::Off => 1,
                        Batching::Fixed | Batching::Adaptive => cameras.min(cfg.max_batch),
                    });
                    let case = Case {
                        backend: floor.backend,
                        cameras,
                        fps: load.map_or(cfg.fps, |l| l * bare / cameras as f64),
                        load,
                        batching,
                        latency_target_ms: (batching != Batching::Off).then_some(target),
                        warmup: cfg.warmup.max(pass * 3),
                        window: cfg.measure.max(pass * cfg.min_passes),
                    };
                    let started = Instant::now();
                    // The bare model right before and after the case, so that the ratio does not
                    // follow the machine's drift over the run.
                    let outcome = run_case(&cfg, &case, index, &url, &templates, floor, &meter).await?;
                    let after = floor.b1_now(cfg.runs).await?;
                    // frames/s at the mean of the two median call times.
                    let bracket = 2.0 / (1.0 / before + 1.0 / after);
                    before = after;
                    eprintln!(
                        "  {} {cameras} cam{} {}: {:.2} det/s, p50 {:.0} ms, batch {:.2} ({:.0} s)\n    \
                         per frame: {}",
                        floor.backend,
                        load.map_or_else(String::new, |l| format!(" load {l}×")),
                        batching.name(),
                        outcome.fps,
                        outcome.p50_ms,
                        outcome.mean_batch,
                        started.elapsed().as_secs_f64(),
                        outcome.spent.describe(outcome.processed, case.window.as_secs_f64())
                    );
                    rows.push((case, outcome, bracket));
                    index += 1;
                }
            }
        }
        tokio::task::spawn_blocking(move || server.stop()).await?;
        anyhow::Ok(())
    })?;

    // 3. The table.
    println!(
        "\n{:<7} {:>4} {:>5} {:<15} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>8} {:>6} {:>6}",
        "backend",
        "cams",
        "load",
        "batching",
        "det/s",
        "bare/s",
        "+pub/s",
        "+sub/s",
        "p50 ms",
        "p99 ms",
        "batch",
        "÷b1",
        "÷pub",
        "÷sub",
        "÷b8",
        "offer/s",
        "in/s",
        "drop/s",
        "failed",
        "win s"
    );
    for (case, o, bracket) in &rows {
        let floor = floors
            .iter()
            .find(|f| f.backend == case.backend)
            .context("floor")?;
        let ratio = |batch: usize| {
            floor
                .fps(batch)
                .map_or_else(|| "-".to_owned(), |f| format!("{:.2}", o.fps / f))
        };
        let batching = match case.latency_target_ms {
            Some(t) => format!("{} {t}ms", case.batching.name()),
            None => case.batching.name().to_owned(),
        };
        println!(
            "{:<7} {:>4} {:>5} {:<15} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.0} {:>8.0} {:>6.2} {:>7.2} {:>7.2} {:>7.2} {:>7} {:>8.1} {:>7.1} {:>8.1} {:>6} {:>6.0}",
            case.backend.to_string(),
            case.cameras,
            case.load
                .map_or_else(|| "-".to_owned(), |l| format!("{l}×")),
            batching,
            o.fps,
            bracket,
            o.published_only,
            o.delivered,
            o.p50_ms,
            o.p99_ms,
            o.mean_batch,
            o.fps / bracket,
            o.fps / o.published_only,
            o.fps / o.delivered,
            if case.batching != Batching::Off {
                ratio(8)
            } else {
                "-".to_owned()
            },
            o.offered,
            o.received,
            o.dropped,
            o.failed,
            case.window.as_secs_f64()
        );
        if o.processed == 0 {
            eprintln!(
                "warning: {} {} cameras {}: nothing processed in the window",
                case.backend,
                case.cameras,
                case.batching.name()
            );
        }
    }
    println!(
        "\ndet/s: detection messages received per second; latency: receive − capture (= publish) \
         time; bare/s: the bare model's batch-1 frames/s, measured right before and after the \
         case (mean of the two medians); +pub/s: the same while the case's cameras published \
         and nobody read their frames (before the worker started); +sub/s: the same with a \
         plain subscriber receiving and discarding every frame; batch: frames per pass (worker \
         counters); ÷b1, ÷pub, ÷sub: det/s over bare/s, +pub/s, +sub/s; ÷b8: det/s over the \
         bare model's batch-8 frames/s at the start; offer/s: frames published; in/s: \
         frames the worker received; drop/s: pending frames replaced by newer ones (live \
         delivery); win s: the measured window. Load average at end: {}",
        panoptes_tests::loadavg()
    );
    Ok(())
}
