//! Analytics cost per frame at 10, 100 and 1,000 tracks against 20 places (10 zones of 6
//! corners, 10 lines), beside a baseline measured in the same run: testing every track's
//! point against every zone and every line once, the least any zone/line counter computes.
//!
//! ```text
//! cargo bench -p panoptes-analytics --bench analytics        # --runs N for more frames
//! ```
//! Goal (issue 20): well under a millisecond per frame at 100 tracks and 20 places.

use std::hint::black_box;
use std::time::{Duration, Instant};

use panoptes_analytics::{CameraAnalytics, Limits, Line, Rules, Zone};
use panoptes_topology::Side;
use panoptes_topology::geometry::{Point, contains, cross};

#[derive(clap::Parser)]
struct Args {
    /// Timed frames per track count under `cargo bench`.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    runs: u64,
    /// Set by `cargo bench`. Without it (`cargo test --benches`) each case runs a few frames.
    #[arg(long, hide = true)]
    bench: bool,
}

const W: f64 = 1920.0;
const H: f64 = 1080.0;

/// 10 hexagonal zones on a grid and 10 lines, 5 across and 5 down the frame.
fn rules() -> Rules {
    let zones = (0..10)
        .map(|i| {
            let (cx, cy) = (
                200.0 + 380.0 * (i % 5) as f64,
                300.0 + 450.0 * (i / 5) as f64,
            );
            let polygon = (0..6)
                .map(|k| {
                    let a = k as f64 * std::f64::consts::PI / 3.0;
                    [cx + 150.0 * a.cos(), cy + 150.0 * a.sin()]
                })
                .collect();
            Zone {
                id: format!("zone-{i}"),
                polygon,
                labels: Vec::new(),
                dwell_ms: Some(5_000),
            }
        })
        .collect();
    let lines = (0..10)
        .map(|i| {
            let (from, to) = if i < 5 {
                (
                    [0.0, 100.0 + 200.0 * i as f64],
                    [W, 100.0 + 200.0 * i as f64],
                )
            } else {
                (
                    [100.0 + 400.0 * (i - 5) as f64, 0.0],
                    [100.0 + 400.0 * (i - 5) as f64, H],
                )
            };
            Line {
                id: format!("line-{i}"),
                from,
                to,
                in_side: Side::Right,
                labels: Vec::new(),
            }
        })
        .collect();
    Rules { zones, lines }
}

/// `n` tracks walking in 8 directions from a grid, frame `f`.
fn points(n: usize, f: u64) -> Vec<(u64, &'static str, Point)> {
    let side = (n as f64).sqrt().ceil() as usize;
    (0..n)
        .map(|i| {
            let (gx, gy) = ((i % side) as f64, (i / side) as f64);
            let dir = (i % 8) as f64 * std::f64::consts::FRAC_PI_4;
            let step = f as f64 * 3.0;
            let x = (60.0 + gx * W / side as f64 + dir.cos() * step).rem_euclid(W);
            let y = (60.0 + gy * H / side as f64 + dir.sin() * step).rem_euclid(H);
            (i as u64 + 1, "person", [x, y])
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
    let rules = rules();
    let limits = Limits {
        max_age: 30,
        max_age_ms: None,
    };
    println!(
        "{:>7} {:>15} {:>15} {:>8} {:>12}",
        "tracks", "analytics/frame", "point tests", "ratio", "events/frame"
    );
    for n in [10usize, 100, 1_000] {
        let mut state = CameraAnalytics::default();
        for f in 0..5u64 {
            state.frame(&rules, limits, f, f * 33_333_333, &points(n, f));
        }
        let (mut analysed, mut baseline, mut events) = (Vec::new(), Vec::new(), 0usize);
        for f in 5..5 + runs {
            let tracked = points(n, f);
            let start = Instant::now();
            let out = state.frame(&rules, limits, f, f * 33_333_333, &tracked);
            analysed.push(start.elapsed());
            events += out.len();
            black_box(out);
            let start = Instant::now();
            let mut hits = 0usize;
            for &(_, _, p) in &tracked {
                for z in &rules.zones {
                    hits += usize::from(contains(&z.polygon, p));
                }
                for l in &rules.lines {
                    hits += usize::from(cross(l.from, l.to, p) > 0.0);
                }
            }
            baseline.push(start.elapsed());
            black_box(hits);
        }
        let (a, b) = (median(analysed), median(baseline));
        println!(
            "{n:>7} {:>12.3} ms {:>12.3} ms {:>8.2} {:>12.1}",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            a.as_secs_f64() / b.as_secs_f64().max(1e-9),
            events as f64 / runs as f64
        );
    }
}
