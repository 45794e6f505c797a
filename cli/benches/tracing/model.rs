//! The bare model, timed on its own before anything else of the bench runs: how fast one
//! call is, and how steady the machine itself is.

use std::time::{Duration, Instant};

use panoptes_contracts::Tensor;
use panoptes_model::{Graph, GraphOptions, ModelManifest};
use panoptes_tests::median_f64;

use crate::min_max;

/// The bare model on `[1, 3, side, side]` with one intra-op thread, as the worker runs it, for
/// `slices` one-second slices after one untimed call: median ms per call, and the lowest and
/// highest calls/s of a slice (how steady the machine itself is).
pub(crate) fn bare_model(side: u32, slices: usize) -> anyhow::Result<(f64, f64, f64)> {
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
