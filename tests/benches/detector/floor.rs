//! The bare model: `Graph::run_f32` on `[b, 3, SIDE, SIDE]`, timed per batch size on a quiet
//! machine, and batch 1 again around and during each pipeline case.

use std::time::{Duration, Instant};

use panoptes_contracts::Tensor;
use panoptes_model::{Backend, Graph, GraphOptions, ModelManifest};

use super::{SIDE, ms};

/// Batch sizes of the bare model measured before the pipeline cases.
pub const BARE_BATCHES: [usize; 3] = [1, 4, 8];

/// A smooth deterministic pattern in [-1, 1] (values do not change the work a CNN does).
pub fn input(batch: usize) -> Tensor {
    let shape = vec![batch, 3, SIDE, SIDE];
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect();
    Tensor::new(shape, data).expect("the shape matches the data")
}

/// The bare model of one backend: median time per call for each batch size, and the graph to
/// measure batch 1 again around each case.
pub struct Floor {
    pub backend: Backend,
    per_call: Vec<(usize, Duration)>,
    graph: Graph,
}

impl Floor {
    pub fn call(&self, batch: usize) -> Option<Duration> {
        self.per_call
            .iter()
            .find(|(b, _)| *b == batch)
            .map(|(_, d)| *d)
    }

    /// The bare time of a call of `batch` frames: measured, else per frame from the nearest
    /// measured size. Only sizes the measuring windows, never a result.
    pub fn estimate(&self, batch: usize) -> Duration {
        self.per_call
            .iter()
            .min_by_key(|(b, _)| b.abs_diff(batch))
            .map_or(Duration::ZERO, |(b, d)| d.mul_f64(batch as f64 / *b as f64))
    }

    pub fn fps(&self, batch: usize) -> Option<f64> {
        self.call(batch).map(|d| batch as f64 / d.as_secs_f64())
    }

    /// The bare model's batch-1 frames/s now: the median of `runs` calls, on a blocking thread
    /// so that the runtime's tasks (cameras, a reader) keep running beside it.
    pub async fn b1_now(&self, runs: usize) -> anyhow::Result<f64> {
        let graph = self.graph.clone();
        let (_, median) =
            tokio::task::spawn_blocking(move || time_calls(&graph, 1, runs)).await??;
        Ok(1.0 / median.as_secs_f64())
    }
}

/// The first call's time, and the median of the `runs` timed calls after it.
fn time_calls(graph: &Graph, batch: usize, runs: usize) -> anyhow::Result<(Duration, Duration)> {
    let x = input(batch);
    let started = Instant::now();
    std::hint::black_box(graph.run_f32(&x)?);
    let first = started.elapsed();
    let times = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(graph.run_f32(&x)?);
            Ok(started.elapsed().as_secs_f64())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((
        first,
        Duration::from_secs_f64(panoptes_tests::median_f64(times)),
    ))
}

pub fn measure_floor(
    manifest: &ModelManifest,
    backend: Backend,
    runs: usize,
    threads: usize,
) -> anyhow::Result<Floor> {
    let graph: Graph = manifest.load_model(&GraphOptions {
        backend,
        threads,
        ..GraphOptions::default()
    })?;
    let mut per_call = Vec::new();
    for batch in BARE_BATCHES {
        let (first, m) = time_calls(&graph, batch, runs)?;
        println!(
            "{:<7} {:>5} {:>14.1} {:>12.1} {:>10.2}",
            backend.to_string(),
            batch,
            ms(first),
            ms(m),
            batch as f64 / m.as_secs_f64()
        );
        per_call.push((batch, m));
    }
    Ok(Floor {
        backend,
        per_call,
        graph,
    })
}
