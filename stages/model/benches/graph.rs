//! Milliseconds per call of the real PP-OCR models on each backend, 1 and 2 threads.
//!
//! `cargo bench -p panoptes-model --bench graph` (after scripts/setup.sh). Prints the median of
//! `GRAPH_BENCH_RUNS` runs (default 7) after one warm-up run, which for tract includes planning
//! for the input shape (reported separately as "first call"). `GRAPH_BENCH_MODELS=det,cls` picks
//! models (det, rec, cls, yolox; default all).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use panoptes_model::{Backend, Graph, GraphOptions, TensorView};

fn model(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/files")
        .join(file)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::var("GRAPH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let cases = [
        ("ch_PP-OCRv4_det_infer.onnx", "det", [1, 3, 640, 640]),
        ("ch_PP-OCRv4_rec_infer.onnx", "rec", [1, 3, 48, 320]),
        (
            "ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "cls",
            [1, 3, 48, 192],
        ),
        ("common_det.onnx", "yolox", [1, 3, 416, 416]),
    ];
    println!(
        "{:<6} {:<6} {:>7} {:>14} {:>12}",
        "model", "backend", "threads", "first call ms", "median ms"
    );
    let only = std::env::var("GRAPH_BENCH_MODELS").unwrap_or_default();
    for (file, name, shape) in cases {
        if !only.is_empty() && !only.split(',').any(|m| m == name) {
            continue;
        }
        let n: usize = shape.iter().product();
        // A smooth deterministic pattern in [-1, 1] (values do not change the work done).
        let data: Vec<f32> = (0..n).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect();
        for backend in [Backend::Ort, Backend::Tract] {
            for threads in [1, 2] {
                let opts = GraphOptions {
                    backend,
                    threads,
                    ..GraphOptions::default()
                };
                let graph = Graph::load(name, &model(file), &opts)?;
                let input = [("", TensorView::from_f32(&shape, &data))];
                let started = Instant::now();
                graph.run(&input)?;
                let first = started.elapsed();
                let mut times = Vec::with_capacity(runs);
                for _ in 0..runs {
                    let started = Instant::now();
                    std::hint::black_box(graph.run(&input)?);
                    times.push(started.elapsed());
                }
                println!(
                    "{:<6} {:<6} {:>7} {:>14.1} {:>12.2}",
                    name,
                    backend.to_string(),
                    threads,
                    ms(first),
                    ms(median(times))
                );
            }
        }
    }
    Ok(())
}
