//! Tracker cost per frame at 10, 100 and 1,000 boxes, and the cost of a camera's state
//! snapshot (encode + decode), beside a baseline measured in the same run: the IoU of every
//! track with every box, the least any IoU tracker computes per frame.
//!
//! ```text
//! cargo bench -p panoptes-tracker --bench tracker            # --runs N for more frames
//! ```
//! Goal (issue 19): under 0.5 ms per frame at 100 boxes on one core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use panoptes_tracker::{
    CameraTracker, Observation, TrackerConfig, decode_state, encode_state, iou,
};

#[derive(clap::Parser)]
struct Args {
    /// Timed frames per box count under `cargo bench`.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    runs: u64,
    /// Set by `cargo bench`. Without it (`cargo test --benches`) each case runs a few frames,
    /// a smoke test rather than a measurement.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `n` boxes on a grid, each drifting along its own direction, frame `f`.
fn scene(n: usize, f: u64) -> Vec<[f32; 4]> {
    let side = (n as f32).sqrt().ceil() as usize;
    (0..n)
        .map(|i| {
            let (gx, gy) = ((i % side) as f32, (i / side) as f32);
            let dir = (i % 8) as f32 * std::f32::consts::FRAC_PI_4;
            let step = f as f32 * 0.8;
            let x = gx * 64.0 + dir.cos() * step;
            let y = gy * 64.0 + dir.sin() * step;
            [x, y, x + 40.0, y + 40.0]
        })
        .collect()
}

fn observations(boxes: &[[f32; 4]]) -> Vec<Observation<'static>> {
    boxes
        .iter()
        .map(|&bbox| Observation {
            bbox,
            score: 0.9,
            label: "object",
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let args: Args = clap::Parser::parse();
    let runs = if args.bench { args.runs } else { 3 };
    let cfg = TrackerConfig {
        max_tracks: 10_000,
        ..TrackerConfig::default()
    };
    println!(
        "{:>6} {:>12} {:>14} {:>8} {:>12} {:>12} {:>10}",
        "boxes", "tracker/frame", "all-pairs IoU", "ratio", "snapshot", "restore", "state KiB"
    );
    for n in [10usize, 100, 1_000] {
        let mut tracker = CameraTracker::starting_at(1);
        // Warm-up: tracks confirmed, motion learned.
        for f in 0..10u64 {
            tracker.update(&cfg, f * 33_333_333, &observations(&scene(n, f)));
        }
        let (mut tracked, mut pairs) = (Vec::new(), Vec::new());
        let mut previous = scene(n, 9);
        for f in 10..10 + runs {
            let boxes = scene(n, f);
            let obs = observations(&boxes);
            let start = Instant::now();
            black_box(tracker.update(&cfg, f * 33_333_333, &obs));
            tracked.push(start.elapsed());

            let start = Instant::now();
            let mut sum = 0.0f32;
            for a in &previous {
                for b in &boxes {
                    sum += iou(*a, *b);
                }
            }
            black_box(sum);
            pairs.push(start.elapsed());
            previous = boxes;
        }
        let (mut snaps, mut restores) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        for _ in 0..runs.min(100) {
            let start = Instant::now();
            let blob = encode_state(&tracker);
            snaps.push(start.elapsed());
            bytes = blob.len();
            let start = Instant::now();
            black_box(decode_state(&blob, cfg.max_tracks).expect("decodes"));
            restores.push(start.elapsed());
        }
        let (t, p) = (median(tracked), median(pairs));
        println!(
            "{n:>6} {:>10.3}ms {:>12.3}ms {:>8.2} {:>10.3}ms {:>10.3}ms {:>10.1}",
            t.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3,
            t.as_secs_f64() / p.as_secs_f64().max(1e-9),
            median(snaps).as_secs_f64() * 1e3,
            median(restores).as_secs_f64() * 1e3,
            bytes as f64 / 1024.0,
        );
    }
}
