//! What a shadow candidate costs the live pipeline, and how fast a replay runs, on the replay
//! scene (`cli/tests/fixtures/replay.yaml`: letterbox, the PP-OCR text detector, DB boxes, a zone
//! filter) with several cameras offering more frames than the detector takes, so throughput is
//! capacity.
//!
//! - Shadowing: windows without a candidate, with the detector's candidate (the same model, so
//!   its reports agree) on 10% of frames, on 100%, and with a zone-filter candidate that spins
//!   until its 50 ms limit on every frame, alternating, each on a fresh pipeline. Prints live
//!   detection messages per second and the live latency (capture to result received, p50) per
//!   window, the medians, and each ratio against the windows without a candidate; also the
//!   candidate's reports per second (how much of its sample it got to run: it runs at the
//!   lowest CPU priority and skips what it cannot take).
//! - Replay: one live window with retention on, then `panoptes replay` over that window through
//!   the unchanged stages; prints replayed frames per second against live processing.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! export CARGO_TARGET_DIR=/root/.cache/panoptes/target
//! cargo bench -p panoptes-tests --bench shadow                   # 3 rounds of 20 s windows
//! cargo bench -p panoptes-tests --bench shadow -- --rounds 5 --cameras 16
//! ```
//!
//! Nothing here asserts a speed.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser as _;
use futures::StreamExt as _;
use panoptes::replay_cmd::{Candidate, replay_with};
use panoptes::runner::{Role, Running};
use panoptes_contracts::DetectionMessage;
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_replay::read::Range;
use panoptes_tests::median_f64;
use panoptes_topology::{ModelShadow, OperatorShadow, RetainConfig, StageConfig, TopologyFile};
use time::OffsetDateTime;

#[derive(clap::Parser, Debug)]
struct Options {
    /// Cameras (copies of the scene's camera, 320×240). 12 at 10 fps offer more than the
    /// detector takes on a 2-core machine (a replay of the same stages runs about 86 frames/s).
    #[arg(long, env = "PANOPTES_BENCH_CAMERAS", default_value_t = 12)]
    cameras: usize,
    /// Frames per second of each camera.
    #[arg(long, env = "PANOPTES_BENCH_FPS", default_value_t = 10)]
    fps: u32,
    /// Rounds of windows (one per variant).
    #[arg(long, env = "PANOPTES_BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    #[arg(long, env = "PANOPTES_BENCH_WINDOW_S", default_value_t = 20)]
    window_s: u64,
    /// cargo bench passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Messages counted on a subject; the subscription ends when this is dropped, so a window's
/// counters do not go on reading (and parsing) through the windows after it.
struct Counter {
    n: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    fn load(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts messages on `subject` from now on; with `latencies`, also keeps each detection
/// message's capture-to-received time, ms.
async fn counter(
    client: &async_nats::Client,
    subject: String,
    latencies: Option<Arc<Mutex<Vec<f64>>>>,
) -> anyhow::Result<Counter> {
    let mut sub = client.subscribe(subject).await?;
    client.flush().await?;
    let n = Arc::new(AtomicU64::new(0));
    let count = n.clone();
    let task = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            count.fetch_add(1, Ordering::Relaxed);
            if let Some(l) = &latencies
                && let Ok(d) = serde_json::from_slice::<DetectionMessage>(&m.payload)
            {
                let ms =
                    panoptes_contracts::time::now_ns().saturating_sub(d.capture_ts_ns) as f64 / 1e6;
                if let Ok(mut l) = l.lock() {
                    l.push(ms);
                }
            }
        }
    });
    Ok(Counter { n, task })
}

/// The machine's CPU time so far from /proc/stat, in ticks: (busy, steal, total). Steal is
/// time the hypervisor gave this VM's CPUs to someone else.
fn cpu_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let total: u64 = (0..8).map(at).sum();
    (total - at(3) - at(4) - at(7), at(7), total)
}

/// What one window measured.
struct Window {
    /// Detection messages per second.
    live: f64,
    /// Shadow reports per second.
    shadow: f64,
    /// Capture to result received, p50, ms.
    latency_ms: f64,
    /// Shares of the machine's CPU time: busy here, and stolen by the hypervisor.
    busy: f64,
    steal: f64,
}

/// One live window of `topology`, measured after the pipeline warmed up.
async fn window(
    topology: &TopologyFile,
    nats: &str,
    client: &async_nats::Client,
    seconds: u64,
) -> anyhow::Result<Window> {
    let ns = topology.namespace.clone();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let live = counter(
        client,
        format!("{ns}.detections.*"),
        Some(latencies.clone()),
    )
    .await?;
    let shadow = counter(client, format!("{ns}.shadow.>"), None).await?;
    let running = Running::start(topology, Some(nats), Role::All).await?;
    // Warm-up: the model loaded, the first batches through.
    let warm = tokio::time::Instant::now() + Duration::from_secs(60);
    while live.load() < 20 && tokio::time::Instant::now() < warm {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (l0, s0) = (live.load(), shadow.load());
    if let Ok(mut l) = latencies.lock() {
        l.clear();
    }
    let cpu0 = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (l1, s1) = (live.load(), shadow.load());
    let cpu1 = cpu_ticks();
    let total = cpu1.2.saturating_sub(cpu0.2).max(1) as f64;
    let measured = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    running.stop().await?;
    // A window must not leave cameras behind to load the next one.
    let frames = counter(client, format!("{ns}.frames.>"), None).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = frames.load();
    if left > 0 {
        eprintln!("warning: {left} frames arrived in the second after the pipeline stopped");
    }
    let s = seconds as f64;
    Ok(Window {
        live: (l1 - l0) as f64 / s,
        shadow: (s1 - s0) as f64 / s,
        latency_ms: median_f64(measured),
        busy: cpu1.0.saturating_sub(cpu0.0) as f64 / total,
        steal: cpu1.1.saturating_sub(cpu0.1) as f64 / total,
    })
}

/// What runs beside the live stages in a window.
#[derive(Clone, Copy)]
enum Variant {
    None,
    /// The detector's candidate (the same model) on this share of frames.
    Model(f64),
    /// A zone-filter candidate that spins until its 50 ms limit, on every frame.
    Spinning,
}

/// `topology` with `variant`'s candidate.
fn with_shadow(topology: &TopologyFile, variant: Variant, root: &Path) -> TopologyFile {
    let mut t = topology.clone();
    for stage in &mut t.stages {
        match (stage, variant) {
            (StageConfig::Model(m), Variant::Model(sample)) => {
                m.shadow = Some(ModelShadow {
                    model: m.model.clone(),
                    sample,
                });
            }
            (StageConfig::Operator(op), Variant::Spinning) if op.id == "zone" => {
                op.shadow = Some(OperatorShadow {
                    wasm: root.join("operators/dist/misbehave.wasm"),
                    digest: None,
                    config: Some(serde_json::json!({ "all": "spin" })),
                    timeout_ms: Some(50),
                    memory_mib: None,
                    sample: 1.0,
                });
            }
            _ => {}
        }
    }
    t
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let root = panoptes_tests::require_setup();
    panoptes_tests::gst();
    let nats = NatsServer::start(&NatsServerOptions::default())?;
    let client = async_nats::connect(nats.url()).await?;
    let mut topology = TopologyFile::load(&root.join("cli/tests/fixtures/replay.yaml"))
        .map_err(|d| anyhow::anyhow!(d.render(false)))?;
    panoptes_tests::copy_first_camera(&mut topology, options.cameras, options.fps);
    let retained = topology.retain.take();

    let variants = [
        ("no candidate", Variant::None),
        ("detector 10%", Variant::Model(0.1)),
        ("detector 100%", Variant::Model(1.0)),
        ("spinning 100%", Variant::Spinning),
    ];
    let mut windows: Vec<Vec<Window>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        for (v, (name, variant)) in variants.iter().enumerate() {
            let t = with_shadow(&topology, *variant, &root);
            let w = window(&t, nats.url(), &client, options.window_s).await?;
            eprintln!(
                "round {round}: {name:>13}: {:6.2} detection msg/s, latency p50 {:6.1} ms, {:6.2} shadow reports/s; CPU busy {:.0}%, stolen {:.0}%",
                w.live,
                w.latency_ms,
                w.shadow,
                100.0 * w.busy,
                100.0 * w.steal
            );
            windows[v].push(w);
        }
    }
    let med = |v: usize, f: fn(&Window) -> f64| median_f64(windows[v].iter().map(f).collect());
    let base = med(0, |w| w.live);
    let base_latency = med(0, |w| w.latency_ms);
    println!(
        "\nshadowing ({} cameras × {} fps, {} rounds of {} s; medians):",
        options.cameras, options.fps, options.rounds, options.window_s
    );
    for (v, (name, _)) in variants.iter().enumerate() {
        let live = med(v, |w| w.live);
        let latency = med(v, |w| w.latency_ms);
        println!(
            "  {name:>13}: {live:6.2} msg/s (ratio {:.3}), latency p50 {latency:6.1} ms (ratio {:.3}), candidate ran {:6.2} frames/s",
            live / base,
            latency / base_latency,
            med(v, |w| w.shadow)
        );
    }

    // Replay: a live window with retention, then the same stages over it.
    let mut t = topology.clone();
    t.retain = retained.or(Some(RetainConfig {
        max_age_h: 1.0,
        max_gib: 2.0,
    }));
    let from = OffsetDateTime::now_utc();
    let live_retained = window(&t, nats.url(), &client, options.window_s)
        .await?
        .live;
    let to = OffsetDateTime::now_utc();
    let comparison = replay_with(
        &client,
        &t,
        Range { from, to },
        None,
        None,
        Candidate::default(),
        panoptes_replay::compare::DEFAULT_IOU,
    )
    .await?;
    println!(
        "\nreplay: {} frames at {:.2} frames/s (agreement {:.3}); live with retention {:.2} frames/s, without {:.2}: replay/live {:.3}",
        comparison.frames,
        comparison.frames_per_s,
        comparison.agreement(),
        live_retained,
        base,
        comparison.frames_per_s / base
    );
    Ok(())
}
