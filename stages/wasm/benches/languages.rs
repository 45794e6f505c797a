//! The same operator written in Rust, Python and JavaScript: `zonefilter` (Rust),
//! `operators/python/examples/zone_filter.py` (componentize-py) and
//! `operators/js/examples/zone_filter.js` (componentize-js), all with the same config, on
//! detections of 10 and 100 boxes. Per call: medians of `--runs` calls, alternating the three
//! languages call by call so load from other processes hits them alike, with ratios against
//! Rust measured in the same run. Cold start: compiling the component (no cache), loading it
//! from the compiled-module cache (a worker restart), and the first instantiation with `init`.
//! Memory: the linear memory one instance holds after a call (what `memory_mib` must allow).
//!
//! ```text
//! scripts/build-operators.sh
//! cargo bench -p panoptes-wasm --bench languages            # --runs N
//! ```

#[path = "../tests/it/common.rs"]
#[allow(dead_code)] // The benchmark uses a subset of the tests' helpers.
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use panoptes_contracts::frame::PixelFormat as FrameFormat;
use panoptes_wasm::{
    Detection, EngineOptions, FrameResource, Input, OperatorEngine, OperatorInstance, Output,
};

#[derive(clap::Parser)]
struct Args {
    /// Timed calls per language and size under `cargo bench`.
    #[arg(long, env = "PANOPTES_BENCH_RUNS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    runs: u64,
    /// Set by `cargo bench`. Without it (`cargo test --benches`) each case runs twice, a smoke
    /// test rather than a measurement.
    #[arg(long, hide = true)]
    bench: bool,
}

const LANGUAGES: [(&str, &str); 3] = [
    ("rust", "zonefilter"),
    ("python", "zone_filter"),
    ("javascript", "zone_filter-js"),
];

/// One zone (the lower half), a score floor and a relabel: every branch of the filter runs.
const CONFIG: &str = r#"{"min_score": 0.3, "labels": ["person", "car"],
    "zones": [{"id": "road", "units": "normalized",
               "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}],
    "relabel": "{zone}/{label}"}"#;

fn frame(seq: u64) -> FrameResource {
    FrameResource {
        camera: "bench".into(),
        seq,
        capture_ts_ns: seq,
        width: 1280,
        height: 720,
        format: FrameFormat::Rgb8,
        pixels: None,
    }
}

/// `n` boxes spread over the frame, labels and scores mixed so about half are kept.
fn detections(n: usize) -> Vec<Detection> {
    (0..n)
        .map(|i| {
            let x = (i * 97 % 1200) as f32;
            let y = (i * 53 % 660) as f32;
            Detection {
                x1: x,
                y1: y,
                x2: x + 60.0,
                y2: y + 50.0,
                score: (i % 10) as f32 / 10.0,
                label: ["person", "car", "bike"][i % 3].into(),
                text: None,
            }
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn engine(cache: Option<&std::path::Path>) -> OperatorEngine {
    OperatorEngine::new(EngineOptions {
        cache_dir: cache.map(ToOwned::to_owned),
        max_instances: 8,
        ..EngineOptions::default()
    })
    .expect("engine")
}

fn main() {
    let args: Args = clap::Parser::parse();
    let runs = if args.bench { args.runs } else { 2 };
    let cache = tempfile::tempdir().expect("cache dir");

    println!("cold start (one load each; the cache is empty at the first):");
    println!(
        "{:<11} {:>9} {:>14} {:>12} {:>18} {:>13}",
        "language", "size", "compile", "from cache", "first instance", "memory"
    );
    let mut instances: Vec<(&str, OperatorInstance)> = Vec::new();
    for (language, name) in LANGUAGES {
        let path = common::operator_path(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let t = Instant::now();
        let compiled = engine(Some(cache.path())).load(&path).expect("compile");
        let compile = t.elapsed();
        assert!(!compiled.from_cache());
        let warm = engine(Some(cache.path()));
        let t = Instant::now();
        let module = warm.load(&path).expect("load from the cache");
        let cached = t.elapsed();
        assert!(module.from_cache(), "{name} was not read from the cache");
        let t = Instant::now();
        let mut instance = module.instantiate(CONFIG).expect("instantiate");
        // `init` runs on the first call; a call with no boxes is its price.
        instance
            .process(frame(0), &Input::Detections(Vec::new()))
            .expect("first call");
        let first = t.elapsed();
        println!(
            "{:<11} {:>6.1} MiB {:>14} {:>12} {:>18} {:>9.1} MiB",
            language,
            size as f64 / f64::from(1 << 20),
            millis(compile),
            millis(cached),
            millis(first),
            instance.memory_bytes() as f64 / f64::from(1 << 20),
        );
        instances.push((language, instance));
    }

    println!("\nper call ({runs} calls each, medians; the three alternate call by call):");
    println!(
        "{:<11} {:>6} {:>12} {:>9}",
        "language", "boxes", "per call", "vs rust"
    );
    for boxes in [10, 100] {
        let input = Input::Detections(detections(boxes));
        let mut kept = Vec::new();
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); instances.len()];
        for seq in 0..runs + 5 {
            for (i, (_, instance)) in instances.iter_mut().enumerate() {
                let t = Instant::now();
                let out = instance.process(frame(seq), &input).expect("process");
                let took = t.elapsed();
                if seq >= 5 {
                    samples[i].push(took);
                }
                if seq == 0 {
                    match black_box(out) {
                        Output::Detections(d) => kept.push(d),
                        _ => panic!("zone filters return detections"),
                    }
                }
            }
        }
        // The three agree, box for box.
        assert!(kept.windows(2).all(|w| w[0] == w[1]), "{kept:?}");
        let medians: Vec<Duration> = samples.into_iter().map(median).collect();
        for ((language, _), m) in instances.iter().zip(&medians) {
            println!(
                "{:<11} {:>6} {:>12} {:>8.1}×",
                language,
                boxes,
                micros(*m),
                m.as_secs_f64() / medians[0].as_secs_f64()
            );
        }
        println!("  (kept {} of {boxes} boxes)", kept[0].len());
    }
    println!("\nlinear memory per instance after these calls:");
    for (language, instance) in &instances {
        println!(
            "{:<11} {:>9.1} MiB",
            language,
            instance.memory_bytes() as f64 / f64::from(1 << 20)
        );
    }
}
