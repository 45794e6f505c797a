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
//! nats-server). Options: `cargo bench -p panoptes --bench tracing -- --help` (each also an
//! environment variable; the argument wins).
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

mod measure;
mod model;
mod worker;

use std::time::{Duration, Instant};

use anyhow::bail;
use panoptes_tests::median_f64;

use measure::{Sample, SpanCounts, measure};
use model::bare_model;
use worker::Summary;

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

/// Tracing overhead: one worker's throughput with trace export off, sampled at 1 % and at
/// 100 %; see the file's header.
#[derive(clap::Parser)]
struct Args {
    /// A smoke run: 2 rounds, 2 s warm-up, 4 s window (otherwise 5, 3 s, 8 s).
    #[arg(long, env = "PANOPTES_BENCH_QUICK", value_parser = clap::builder::FalseyValueParser::new())]
    quick: bool,
    /// Rounds of the three configurations [default: see --quick].
    #[arg(long, env = "TRACE_ROUNDS", value_parser = clap::value_parser!(u64).range(1..=1000))]
    rounds: Option<u64>,
    /// Seconds counted per run [default: see --quick].
    #[arg(long, env = "TRACE_WINDOW_S", value_parser = panoptes_tests::positive)]
    window_s: Option<f64>,
    /// Warm-up seconds per run [default: see --quick].
    #[arg(long, env = "TRACE_WARMUP_S", value_parser = panoptes_tests::positive)]
    warmup_s: Option<f64>,
    /// Cameras publishing.
    #[arg(long, env = "TRACE_CAMERAS", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    cameras: u64,
    /// Frames per second each camera offers.
    #[arg(long, env = "TRACE_FPS", default_value_t = 40.0, value_parser = panoptes_tests::positive)]
    fps: f64,
    /// The detector's input side in pixels, a multiple of 32 from 32 to 1280.
    #[arg(long, env = "TRACE_SIDE", default_value_t = 160, value_parser = side)]
    side: u32,
    #[command(flatten)]
    cargo: panoptes_tests::CargoBench,
}

/// `--side`'s values: what the detector takes.
fn side(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|side| side.is_multiple_of(32) && (32..=1280).contains(side))
        .ok_or_else(|| format!("{s:?} is not a multiple of 32 from 32 to 1280"))
}

struct Options {
    rounds: usize,
    window: Duration,
    warmup: Duration,
    cameras: usize,
    fps: f64,
    side: u32,
}

impl Options {
    /// The options of [`Args`], with `--quick`'s defaults filled in.
    fn load() -> Self {
        let args = <Args as clap::Parser>::parse();
        let (rounds, warmup, window) = if args.quick {
            (2, 2.0, 4.0)
        } else {
            (5, 3.0, 8.0)
        };
        Self {
            // Ranges checked by clap (at most 1000 and 64), so the casts are exact.
            rounds: args.rounds.map_or(rounds, |n| n as usize),
            window: Duration::from_secs_f64(args.window_s.unwrap_or(window)),
            warmup: Duration::from_secs_f64(args.warmup_s.unwrap_or(warmup)),
            cameras: args.cameras as usize,
            fps: args.fps,
            side: args.side,
        }
    }
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
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
    let options = Options::load();
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
