//! Tracing overhead: one `panoptes worker` process's throughput with trace export off, sampled
//! at 1 % and at 100 %, exporting over OTLP/gRPC to an in-process receiver, over a real
//! nats-server. The issue's target: the overhead at 1 % stays under 3 %.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! export CARGO_TARGET_DIR=/root/.cache/panoptes/target
//! cargo bench -p panoptes --bench tracing
//! cargo bench -p panoptes --bench tracing -- --quick          # smoke run (~1 min)
//! TRACE_ROUNDS=9 cargo bench -p panoptes --bench tracing      # tighter medians
//! ```
//!
//! Needs what scripts/setup.sh makes (the letterbox operator, the PP-OCRv4 det model, a
//! nats-server). Options (each also as an environment variable; the argument wins):
//!
//! | argument       | variable                 | default                                    |
//! |----------------|--------------------------|--------------------------------------------|
//! | `--quick`      | `PANOPTES_BENCH_QUICK=1` | off: 5 rounds, 3 s warm-up, 8 s window; quick: 2, 2 s, 4 s |
//! | `--rounds N`   | `TRACE_ROUNDS`           | see `--quick`                              |
//! | `--window-s S` | `TRACE_WINDOW_S`         | see `--quick`                              |
//! | `--warmup-s S` | `TRACE_WARMUP_S`         | see `--quick`                              |
//! | `--cameras N`  | `TRACE_CAMERAS`          | 4                                          |
//! | `--fps F`      | `TRACE_FPS`              | 40 per camera                              |
//! | `--side PX`    | `TRACE_SIDE`             | 160 (detector input side, a multiple of 32) |
//!
//! What it measures:
//!
//! 1. **Bare model**: `Graph::run_f32` on `[1, 3, side, side]` with one intra-op thread, six
//!    one-second slices: the median call and the lowest and highest calls/s of a slice. Nothing
//!    else of the benchmark runs yet, so the slices' spread is the machine's own steadiness.
//! 2. **Worker**: a topology letterbox `side`×`side` (Wasm) → PP-OCRv4 det (1 intra-op thread)
//!    → db, live delivery, written to a temporary directory; one nats-server for the whole run;
//!    N synthetic cameras publishing one pre-encoded 320×240 RGB frame each at a fixed rate,
//!    from the start to the end of the run. At side 160 one worker takes about 100 frames/s on
//!    this project's 2-core machine, so the default 4 × 40 fps is about 1.5 × what it takes:
//!    live delivery drops the excess and the worker is always busy, without spending much of
//!    the two cores on transporting frames that are then dropped (at 4 × 60 fps the worker
//!    processed about a quarter fewer frames). The frames carry no `traceparent`, so the worker
//!    starts each frame's trace and the sampling ratio applies there. Three configurations:
//!
//!    - **off**: every `OTEL_*` variable removed: no OpenTelemetry layer at all;
//!    - **1 %**: `OTEL_EXPORTER_OTLP_ENDPOINT` = the receiver,
//!      `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`, `OTEL_TRACES_SAMPLER_ARG=0.01` (the default
//!      parent-based trace-ID-ratio sampler);
//!    - **100 %**: the same with `OTEL_TRACES_SAMPLER_ARG=1.0`.
//!
//!    (`PANOPTES_*` variables are removed too, so none changes the worker.) One run of "off"
//!    first is not counted (the first worker starts on cold caches). Then the configurations
//!    are interleaved in rounds (round r runs them in an order rotated by r) so that drifts of
//!    the machine spread over all three. Each run: a fresh OTLP receiver, a fresh worker serving
//!    all partitions (`--partitions 0-15`, no leases), wait for its "worker subscribed" log
//!    line (and check it logs "exporting traces over OTLP" exactly when it should), warm up,
//!    count detection messages (one per processed frame) over the window and per one-second
//!    slice of it, SIGTERM (the worker flushes its spans and prints its summary).
//!
//! Reported per configuration: median det/s over the rounds and its range; the ratio to "off"
//! taken per round (off and the traced run of one round ran within a minute) and then the median
//! of those ratios, the statistic the verdict uses; the worker's CPU (utime + stime from
//! /proc/<pid>/stat, 100 % = one core) and CPU per detection; spans per second during the window
//! and per frame over the worker's whole life (from the receiver, after the worker flushed),
//! with a breakdown by span name against the worker's own counts; the share of received frames
//! live delivery dropped; CPU of this process, nats-server and everything else (with the
//! hypervisor's steal per run on stderr), and how many runs had other load of at least 20 % of a
//! core. Off's own round-to-round spread ((max − min) ÷ median) is the noise floor: a difference
//! smaller than it is reported as within noise, which is a verdict against the 3 % target only
//! when the floor itself is under 3 %.
//!
//! Caveats: the OTLP receiver runs in this process, so at 100 % the cost of decoding every span
//! is CPU this bench spends next to the worker on the same cores (in "bench CPU"). The worker
//! opens a frame span for every frame it receives, also those live delivery then drops, so the
//! tracing cost per processed frame grows with the offered rate. On a 2-core machine
//! nats-server and the publisher share the cores with the worker, and a shared virtual machine
//! varies by far more than 3 % from one second to the next (see the bare model's slices and
//! the per-run lines): a verdict on a 3 % target needs many rounds or a quiet machine. (Running
//! an "off" worker beside each configuration's, in the same window, did not help there: two
//! identical workers side by side differed by up to 20 %.) Nothing here asserts a speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::StreamExt as _;
use panoptes_model::{Graph, GraphOptions, ModelManifest};
use panoptes_pipeline::Tensor;
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_tests::otlp::{OtlpReceiver, ReceivedSpan};
use panoptes_tests::procstat::{clock_ticks, cpu_ticks, find_server_pid, machine_busy_ticks};
use panoptes_tests::{count_after, median_f64};
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "tracebench";
const PARTITIONS: u32 = 16;
const FRAME_WIDTH: u32 = 320;
const FRAME_HEIGHT: u32 = 240;
/// The 1 % configuration's target overhead, from the issue.
const TARGET_PCT: f64 = 3.0;
/// A run whose window had at least this much other load (of one core) is counted as disturbed.
const DISTURBED: f64 = 0.2;
/// Failure guard only: how long a worker may take to start or to stop.
const GUARD: Duration = Duration::from_secs(120);

/// The three configurations: a name and the sampling ratio (`None`: no export at all).
const CONFIGS: [(&str, Option<f64>); 3] = [("off", None), ("1%", Some(0.01)), ("100%", Some(1.0))];

struct Options {
    rounds: usize,
    window: Duration,
    warmup: Duration,
    cameras: usize,
    fps: f64,
    side: u32,
}

impl Options {
    /// Environment first, then arguments (`cargo bench` adds `--bench`, which is ignored).
    fn load() -> anyhow::Result<Self> {
        let known = [
            ("quick", "PANOPTES_BENCH_QUICK"),
            ("rounds", "TRACE_ROUNDS"),
            ("window-s", "TRACE_WINDOW_S"),
            ("warmup-s", "TRACE_WARMUP_S"),
            ("cameras", "TRACE_CAMERAS"),
            ("fps", "TRACE_FPS"),
            ("side", "TRACE_SIDE"),
        ];
        let args = panoptes_tests::BenchArgs::load(&known, &["quick"])?;
        let num = |key: &str, default: f64| args.positive(key, default);
        let quick = args.switch("quick");
        let (rounds, warmup, window) = if quick {
            (2.0, 2.0, 4.0)
        } else {
            (5.0, 3.0, 8.0)
        };
        let side = num("side", 160.0)?.round() as u32;
        if !side.is_multiple_of(32) || !(32..=1280).contains(&side) {
            bail!("--side {side} must be a multiple of 32 from 32 to 1280 (the detector's input)");
        }
        let cameras = num("cameras", 4.0)?.round() as usize;
        if !(1..=64).contains(&cameras) {
            bail!("--cameras {cameras} must be 1..=64");
        }
        Ok(Self {
            rounds: num("rounds", rounds)?.round().max(1.0) as usize,
            window: Duration::from_secs_f64(num("window-s", window)?),
            warmup: Duration::from_secs_f64(num("warmup-s", warmup)?),
            cameras,
            fps: num("fps", 40.0)?,
            side,
        })
    }
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The bare model on `[1, 3, side, side]` with one intra-op thread, as the worker runs it, for
/// `slices` one-second slices after one untimed call: median ms per call, and the lowest and
/// highest calls/s of a slice (how steady the machine itself is).
fn bare_model(side: u32, slices: usize) -> anyhow::Result<(f64, f64, f64)> {
    let root = panoptes_tests::require_setup();
    let manifest = ModelManifest::load(&root.join("models/ppocr-v4-det.yaml"))?;
    let graph: Graph = manifest.load_model(&GraphOptions {
        threads: 1,
        ..GraphOptions::default()
    })?;
    let side = side as usize;
    let shape = vec![1, 3, side, side];
    let n: usize = shape.iter().product();
    let x = Tensor::new(
        shape,
        (0..n).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect(),
    )?;
    std::hint::black_box(graph.run_f32(&x)?);
    let (mut calls, mut rates) = (Vec::new(), Vec::with_capacity(slices));
    for _ in 0..slices {
        let (start, mut k) = (Instant::now(), 0u32);
        while start.elapsed() < Duration::from_secs(1) {
            let t = Instant::now();
            std::hint::black_box(graph.run_f32(&x)?);
            calls.push(t.elapsed().as_secs_f64() * 1e3);
            k += 1;
        }
        rates.push(f64::from(k) / start.elapsed().as_secs_f64());
    }
    let (lo, hi) = min_max(&rates);
    Ok((median_f64(calls), lo, hi))
}

/// What a worker's summary line (printed at SIGTERM) says.
#[derive(Clone, Copy, Default)]
struct Summary {
    received: u64,
    processed: u64,
    dropped: u64,
}

/// One `panoptes worker` process, its OTEL_* environment set for one configuration; killed and
/// reaped if still running when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(
        topology: &Path,
        url: &str,
        endpoint: Option<(&str, f64)>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_panoptes"));
        command
            .current_dir(panoptes_tests::repo_root())
            .arg("worker")
            .arg(topology)
            .args([
                "--nats",
                url,
                "--partitions",
                &format!("0-{}", PARTITIONS - 1),
            ])
            // Info, for the "worker subscribed" and "exporting traces" lines (a few lines per
            // run; nothing per frame).
            .env("RUST_LOG", "info,ort=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        // Nothing inherited may change what a configuration means: no OTEL_* but ours, and no
        // PANOPTES_* (partitions, stages, metrics, log format) at all.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("OTEL_") || k.starts_with("PANOPTES_") {
                command.env_remove(&key);
            }
        }
        if let Some((endpoint, ratio)) = endpoint {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                .env("OTEL_TRACES_SAMPLER_ARG", ratio.to_string());
        }
        let child = command.spawn().context("cannot start `panoptes worker`")?;
        Ok(Self { child, log })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the "worker subscribed" log line.
    async fn wait_subscribed(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if self.log_text().contains("worker subscribed") {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the worker exited with {status}:\n{}", self.log_text());
            }
            if start.elapsed() > GUARD {
                bail!("the worker did not subscribe in time:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit (it flushes its spans first); returns its summary.
    async fn stop(mut self) -> anyhow::Result<Option<Summary>> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the worker exited with {status}:\n{}", self.log_text());
                }
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the worker did not stop after SIGTERM:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let text = self.log_text();
        Ok(text
            .lines()
            .rev()
            .find(|l| l.contains("worker received"))
            .and_then(|l| {
                Some(Summary {
                    received: count_after(l, "received ")?,
                    processed: count_after(l, "produced ")?,
                    dropped: count_after(l, "dropped ")?,
                })
            }))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One worker's run: one configuration in one round.
struct Sample {
    det_per_s: f64,
    offered_per_s: f64,
    /// Of one core (1.0 = one core busy), over the window.
    worker_cpu: f64,
    bench_cpu: f64,
    server_cpu: Option<f64>,
    /// Machine busy time not accounted to the worker, this bench or nats-server.
    other_cpu: Option<f64>,
    /// Of which steal (the hypervisor ran something else), of one core.
    steal: Option<f64>,
    /// Lowest and highest det/s of the window's one-second slices.
    slice_range: (f64, f64),
    /// Spans that arrived during the window, per second (export batches make this lumpy at
    /// low rates).
    window_spans_per_s: f64,
    /// The worker's whole life, after it flushed.
    summary: Option<Summary>,
    spans: SpanCounts,
}

impl Sample {
    fn cpu_ms_per_det(&self) -> f64 {
        self.worker_cpu / self.det_per_s * 1e3
    }
}

/// Spans the receiver got from one worker over its whole life.
#[derive(Clone, Copy, Default)]
struct SpanCounts {
    total: usize,
    frame: usize,
    /// Frame spans of frames live delivery dropped (`outcome = dropped`).
    dropped_frame: usize,
    stage: usize,
    batch: usize,
    publish: usize,
    /// Requests the receiver turned away (should be 0).
    rejected: usize,
}

impl SpanCounts {
    fn of(spans: &[ReceivedSpan], rejected: usize) -> Self {
        let mut c = Self {
            total: spans.len(),
            rejected,
            ..Self::default()
        };
        for s in spans {
            match s.name.as_str() {
                "frame" => {
                    c.frame += 1;
                    if s.attr("outcome") == Some("dropped") {
                        c.dropped_frame += 1;
                    }
                }
                "stage" => c.stage += 1,
                "batch" => c.batch += 1,
                "publish" => c.publish += 1,
                _ => {}
            }
        }
        c
    }

    fn add(self, o: Self) -> Self {
        Self {
            total: self.total + o.total,
            frame: self.frame + o.frame,
            dropped_frame: self.dropped_frame + o.dropped_frame,
            stage: self.stage + o.stage,
            batch: self.batch + o.batch,
            publish: self.publish + o.publish,
            rejected: self.rejected + o.rejected,
        }
    }
}

struct Bench<'a> {
    options: &'a Options,
    topology: &'a Path,
    url: &'a str,
    dir: &'a Path,
    detections: Arc<AtomicU64>,
    published: Arc<AtomicU64>,
    server_pid: Option<u32>,
    ticks: f64,
}

impl Bench<'_> {
    /// One run: a fresh receiver and worker, wait until subscribed, warm up, one measured
    /// window, stop.
    async fn run(&self, name: &str, ratio: Option<f64>, round: usize) -> anyhow::Result<Sample> {
        let receiver = OtlpReceiver::start().await?;
        let endpoint = receiver.grpc_endpoint();
        let log = self.dir.join(format!(
            "worker-r{round}-{}.log",
            name.trim_end_matches('%')
        ));
        let mut worker = Worker::start(
            self.topology,
            self.url,
            ratio.map(|r| (endpoint.as_str(), r)),
            log,
        )?;
        worker.wait_subscribed().await?;
        let exporting = worker.log_text().contains("exporting traces over OTLP");
        if exporting != ratio.is_some() {
            bail!(
                "configuration {name}: the worker {} exporting traces:\n{}",
                if exporting { "is" } else { "is not" },
                worker.log_text()
            );
        }
        tokio::time::sleep(self.options.warmup).await;

        let pid = worker.child.id();
        let me = std::process::id();
        // Spans counted first and last, so that cloning them is outside the CPU window.
        let spans0 = receiver.spans().len();
        let (t0, d0, p0, w0, b0, s0, m0) = (
            Instant::now(),
            self.detections.load(Ordering::Relaxed),
            self.published.load(Ordering::Relaxed),
            cpu_ticks(pid),
            cpu_ticks(me),
            self.server_pid.and_then(cpu_ticks),
            machine_busy_ticks(),
        );
        // The window in slices of about a second, to show how steady the rate was within it.
        let slices = self.options.window.as_secs_f64().round().max(1.0) as u32;
        let mut slice_rates = Vec::with_capacity(slices as usize);
        let mut before = d0;
        for _ in 0..slices {
            let start = Instant::now();
            tokio::time::sleep(self.options.window / slices).await;
            let now = self.detections.load(Ordering::Relaxed);
            slice_rates.push(now.saturating_sub(before) as f64 / start.elapsed().as_secs_f64());
            before = now;
        }
        let (secs, d1, p1, w1, b1, s1, m1) = (
            t0.elapsed().as_secs_f64(),
            self.detections.load(Ordering::Relaxed),
            self.published.load(Ordering::Relaxed),
            cpu_ticks(pid),
            cpu_ticks(me),
            self.server_pid.and_then(cpu_ticks),
            machine_busy_ticks(),
        );
        let spans1 = receiver.spans().len();

        let delta = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
        let Some(worker_ticks) = delta(w0, w1) else {
            bail!(
                "the worker's CPU time is unreadable:\n{}",
                worker.log_text()
            );
        };
        let (bench_ticks, server_ticks) = (delta(b0, b1), delta(s0, s1));
        let share = |ticks: u64| ticks as f64 / self.ticks / secs;
        let machine = m0.zip(m1).map(|(a, b)| {
            (
                b.busy.saturating_sub(a.busy),
                b.steal.saturating_sub(a.steal),
            )
        });
        let other_cpu = machine.map(|(busy, _)| {
            let ours = worker_ticks + bench_ticks.unwrap_or(0) + server_ticks.unwrap_or(0);
            share(busy.saturating_sub(ours))
        });
        let steal = machine.map(|(_, steal)| share(steal));

        let summary = worker.stop().await?;
        // The worker flushed before it exited, and an export is answered only once recorded.
        let spans = SpanCounts::of(&receiver.spans(), receiver.rejected().len());
        Ok(Sample {
            det_per_s: d1.saturating_sub(d0) as f64 / secs,
            offered_per_s: p1.saturating_sub(p0) as f64 / secs,
            worker_cpu: share(worker_ticks),
            bench_cpu: bench_ticks.map_or(f64::NAN, share),
            server_cpu: server_ticks.map(share),
            other_cpu,
            steal,
            slice_range: min_max(&slice_rates),
            window_spans_per_s: spans1.saturating_sub(spans0) as f64 / secs,
            summary,
            spans,
        })
    }
}

/// Starts the cameras (`panoptes_tests::spawn_paced_cameras`) on the connection ingest nodes use.
async fn start_cameras(
    url: &str,
    frames: &[(String, Bytes)],
    fps: f64,
    published: &Arc<AtomicU64>,
    stop: &CancellationToken,
) -> anyhow::Result<(async_nats::Client, Vec<tokio::task::JoinHandle<()>>)> {
    let publisher = panoptes::connect(url).await?;
    let cameras =
        panoptes_tests::spawn_paced_cameras(&publisher, NAMESPACE, frames, fps, published, stop);
    Ok((publisher, cameras))
}

fn report(label: &str, s: &Sample, took: Duration) {
    eprintln!(
        "  {label}: {:6.1} det/s (1 s slices {:.0}–{:.0}), offered {:.0}/s, worker CPU {:.0}%, other {}, steal {}, {:.0} spans/s in the window, {} spans in all ({:.0} s)",
        s.det_per_s,
        s.slice_range.0,
        s.slice_range.1,
        s.offered_per_s,
        s.worker_cpu * 100.0,
        pct(s.other_cpu.unwrap_or(f64::NAN)),
        pct(s.steal.unwrap_or(f64::NAN)),
        s.window_spans_per_s,
        s.spans.total,
        took.as_secs_f64()
    );
}

/// All rounds; `samples[config][round]`.
async fn measure(
    options: &Options,
    frames: &[(String, Bytes)],
    dir: &Path,
) -> anyhow::Result<Vec<Vec<Sample>>> {
    let server =
        tokio::task::spawn_blocking(|| NatsServer::start(&NatsServerOptions::default())).await??;
    let server_pid = find_server_pid(&server.store_dir().join("nats.conf"));
    if server_pid.is_none() {
        eprintln!("warning: nats-server's process not found in /proc; its CPU is not reported");
    }
    let url = server.url().to_owned();
    let header = format!("namespace: {NAMESPACE}\ndelivery: live\npartitions: {PARTITIONS}");
    let topology = panoptes_tests::detector_topology(dir, NAMESPACE, &header, options.side, 1);

    // Detections: a connection with default capacities (thousands of messages), so the counting
    // side never drops.
    let client = async_nats::connect(&url).await?;
    let mut subscription = client
        .subscribe(format!("{NAMESPACE}.detections.*"))
        .await?;
    client.flush().await?;
    let detections = Arc::new(AtomicU64::new(0));
    let counter = {
        let detections = detections.clone();
        tokio::spawn(async move {
            while subscription.next().await.is_some() {
                detections.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let published = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (publisher, cameras) = start_cameras(&url, frames, options.fps, &published, &stop).await?;

    let bench = Bench {
        options,
        topology: &topology,
        url: &url,
        dir,
        detections,
        published,
        server_pid,
        ticks: clock_ticks(),
    };
    // One run not counted first: the first worker of a session starts on cold caches.
    let started = Instant::now();
    let s = bench.run("warm-up", None, 0).await?;
    report("warm-up run, off (not counted)", &s, started.elapsed());
    let mut samples: Vec<Vec<Sample>> = CONFIGS.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        for k in 0..CONFIGS.len() {
            let c = (round + k) % CONFIGS.len();
            let (name, ratio) = CONFIGS[c];
            let started = Instant::now();
            let s = bench.run(name, ratio, round).await?;
            let label = format!("round {}/{} {name:>4}", round + 1, options.rounds);
            report(&label, &s, started.elapsed());
            if let Some(list) = samples.get_mut(c) {
                list.push(s);
            }
        }
    }

    stop.cancel();
    for c in cameras {
        c.await?;
    }
    publisher.flush().await?;
    counter.abort();
    drop(client);
    tokio::task::spawn_blocking(move || server.stop()).await?;
    Ok(samples)
}

/// `x` as a percentage with one decimal, "n/a" when not finite.
fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}%", x * 100.0)
    } else {
        "n/a".to_owned()
    }
}

fn main() -> anyhow::Result<()> {
    let options = Options::load()?;
    panoptes_tests::require_setup();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "tracing bench: PP-OCRv4 det behind letterbox {side}, 1 worker × 1 thread, live delivery, {cams} cameras × {fps} fps of {FRAME_WIDTH}x{FRAME_HEIGHT} RGB offered, OTLP/gRPC to an in-process receiver, {cores} cores, load average {load} at start",
        side = options.side,
        cams = options.cameras,
        fps = options.fps,
        load = panoptes_tests::loadavg()
    );
    println!(
        "{} rounds of off / 1% / 100% (order rotated per round), each run: {:.0} s warm-up, {:.0} s window",
        options.rounds,
        options.warmup.as_secs_f64(),
        options.window.as_secs_f64()
    );
    let (ms, lo, hi) = bare_model(options.side, 6)?;
    println!(
        "bare model {side}x{side}, 1 thread: {ms:.2} ms per call (median), 1 s slices {lo:.0}–{hi:.0} calls/s (the machine's own steadiness)",
        side = options.side
    );
    let frames = (0..options.cameras)
        .map(|i| panoptes_tests::bench_camera_frame(i, FRAME_WIDTH, FRAME_HEIGHT))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let samples = runtime.block_on(measure(&options, &frames, dir.path()))?;
    let elapsed = started.elapsed();
    let load_end = panoptes_tests::loadavg();

    let [off, one, all] = samples.as_slice() else {
        bail!("expected three configurations");
    };
    let det = |s: &[Sample]| s.iter().map(|x| x.det_per_s).collect::<Vec<_>>();
    // Per round, against the off run of the same round: (det/s ratio, CPU-per-detection ratio).
    let ratios = |s: &[Sample]| -> Vec<(f64, f64)> {
        s.iter()
            .zip(off)
            .map(|(x, o)| {
                (
                    x.det_per_s / o.det_per_s,
                    x.cpu_ms_per_det() / o.cpu_ms_per_det(),
                )
            })
            .collect()
    };

    println!();
    println!(
        "| config | det/s (median) | min–max | ÷off (median of per-round ratios) | per-round ÷off | CPU ms/det | CPU/det ÷off (median) | worker CPU | dropped | spans/s (window) | spans/received frame | spans/processed frame | bench CPU | nats CPU | other CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((name, _), s) in CONFIGS.iter().zip(&samples) {
        let d = det(s);
        let (lo, hi) = min_max(&d);
        let r = ratios(s);
        let med = |f: &dyn Fn(&Sample) -> f64| median_f64(s.iter().map(f).collect());
        let sum = |f: &dyn Fn(&Summary) -> u64| -> Option<u64> {
            s.iter().map(|x| x.summary.as_ref().map(f)).sum()
        };
        let (received, processed, dropped) = (
            sum(&|x| x.received),
            sum(&|x| x.processed),
            sum(&|x| x.dropped),
        );
        let spans: usize = s.iter().map(|x| x.spans.total).sum();
        let per = |n: Option<u64>| {
            n.filter(|n| *n > 0).map_or_else(
                || "n/a".to_owned(),
                |n| format!("{:.3}", spans as f64 / n as f64),
            )
        };
        println!(
            "| {name} | {:.1} | {lo:.1}–{hi:.1} | {:.3} | {} | {:.2} | {:.3} | {:.0}% | {} | {:.0} | {} | {} | {:.0}% | {} | {} |",
            median_f64(d.clone()),
            median_f64(r.iter().map(|x| x.0).collect()),
            r.iter()
                .map(|x| format!("{:.3}", x.0))
                .collect::<Vec<_>>()
                .join(" "),
            med(&Sample::cpu_ms_per_det),
            median_f64(r.iter().map(|x| x.1).collect()),
            med(&|x| x.worker_cpu) * 100.0,
            received
                .zip(dropped)
                .filter(|(r, _)| *r > 0)
                .map_or_else(|| "n/a".to_owned(), |(r, d)| pct(d as f64 / r as f64)),
            med(&|x| x.window_spans_per_s),
            per(received),
            per(processed),
            med(&|x| x.bench_cpu) * 100.0,
            pct(med(&|x| x.server_cpu.unwrap_or(f64::NAN))),
            pct(med(&|x| x.other_cpu.unwrap_or(f64::NAN))),
        );
    }

    // Span breakdown, whole worker lives summed over the rounds.
    println!();
    println!(
        "| config | spans | frame (of which dropped) | stage | batch | publish | rejected requests | frames received | processed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for ((name, _), s) in CONFIGS.iter().zip(&samples) {
        let c = s.iter().fold(SpanCounts::default(), |a, x| a.add(x.spans));
        let (received, processed) = s.iter().fold((0, 0), |(r, p), x| {
            x.summary
                .map_or((r, p), |y| (r + y.received, p + y.processed))
        });
        println!(
            "| {name} | {} | {} ({}) | {} | {} | {} | {} | {received} | {processed} |",
            c.total, c.frame, c.dropped_frame, c.stage, c.batch, c.publish, c.rejected
        );
    }

    // The verdict.
    let off_det = det(off);
    let (off_lo, off_hi) = min_max(&off_det);
    let noise = (off_hi - off_lo) / median_f64(off_det.clone());
    let overhead = |s: &[Sample]| 1.0 - median_f64(ratios(s).iter().map(|x| x.0).collect());
    let (o1, o100) = (overhead(one), overhead(all));
    let target = TARGET_PCT / 100.0;
    let verdict = if o1.abs() <= noise {
        if noise < target {
            format!("meets the < {TARGET_PCT}% target (the difference is within noise)")
        } else {
            format!(
                "within noise: no verdict against the {TARGET_PCT}% target from this run (the noise floor is larger than the target)"
            )
        }
    } else if o1 < target {
        format!("meets the < {TARGET_PCT}% target")
    } else {
        format!("exceeds the {TARGET_PCT}% target")
    };
    // Runs that shared the machine with other load (builds, the hypervisor's other guests).
    let runs: Vec<&Sample> = samples.iter().flatten().collect();
    let disturbed = runs
        .iter()
        .filter(|x| x.other_cpu.is_some_and(|o| o >= DISTURBED))
        .count();
    println!();
    println!(
        "noise floor: off's round-to-round spread (max − min) ÷ median = {} ({off_lo:.1}–{off_hi:.1} det/s)",
        pct(noise)
    );
    println!(
        "disturbed runs (other load, steal included, ≥ {:.0}% of a core over the window): {disturbed} of {}",
        DISTURBED * 100.0,
        runs.len()
    );
    println!(
        "overhead at 1% (1 − median of per-round det/s ratios to off): {}: {verdict}",
        pct(o1)
    );
    // A saturated worker's throughput is the inverse of its CPU time per frame; that ratio is
    // not moved by other load or the hypervisor's steal, which move det/s by tens of percent.
    let cpu_overhead = |s: &[Sample]| median_f64(ratios(s).iter().map(|x| x.1).collect()) - 1.0;
    let (c1, c100) = (cpu_overhead(one), cpu_overhead(all));
    println!(
        "overhead at 1% in worker CPU per processed frame (median of per-round ratios to off): {}: {}",
        pct(c1),
        if c1 < target {
            format!("meets the < {TARGET_PCT}% target")
        } else {
            format!("exceeds the {TARGET_PCT}% target")
        }
    );
    println!(
        "overhead at 100% in worker CPU per processed frame: {}",
        pct(c100)
    );
    println!(
        "overhead at 100%: {}{}",
        pct(o100),
        if o100.abs() <= noise {
            " (within noise)"
        } else {
            ""
        }
    );
    println!(
        "\ndet/s: detection messages per second (one per processed frame) in the window; ÷off: \
         det/s ÷ off's det/s of the same round, median over the rounds (the verdict's \
         statistic); CPU ms/det: worker CPU time per detection message, and its ratio to off's \
         the same way; worker CPU: utime + stime of the worker over the window, 100% = one core \
         ({cores} cores); dropped: share of the frames the worker received that live delivery \
         dropped (whole worker lives); spans/s (window): spans the receiver got during the \
         window (export batches make it lumpy at 1%); spans per frame: all spans over the \
         worker's whole life ÷ frames received / processed; bench CPU: this process (publisher, \
         counter and, when tracing, the OTLP receiver decoding spans), 100% = one core; nats, \
         other: nats-server and all other load, 100% = one core"
    );
    println!(
        "took {:.0} s; load average at the end: {load_end}",
        elapsed.as_secs_f64()
    );
    Ok(())
}
