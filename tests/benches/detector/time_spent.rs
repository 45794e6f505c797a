//! Where a case's time goes, from the worker's own histograms (`panoptes_stage_seconds` per
//! stage call, `panoptes_model_inference_seconds` per model call): their sums over the measured
//! window, per frame processed and as a share of the window.

use std::collections::BTreeMap;

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use panoptes_contracts::meter;

/// The process's metrics recorder (one per process: the worker runs in this one).
pub struct Meter(PrometheusHandle);

/// Seconds summed per series (`stage` label; the model calls under `model <stage>`).
#[derive(Default)]
pub struct Reading(BTreeMap<String, f64>);

/// A window's difference of two readings: seconds per series.
pub struct Spent(Vec<(String, f64)>);

impl Meter {
    pub fn install() -> anyhow::Result<Self> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).context("a metrics recorder is already set")?;
        Ok(Self(handle))
    }

    pub fn read(&self) -> Reading {
        let mut sums = BTreeMap::new();
        for line in self.0.render().lines() {
            for (name, prefix) in [(meter::STAGE_SECONDS, ""), (meter::MODEL_SECONDS, "model ")] {
                let Some(rest) = line
                    .strip_prefix(name)
                    .and_then(|r| r.strip_prefix("_sum{"))
                else {
                    continue;
                };
                let (labels, value) = rest.split_once("} ").unwrap_or((rest, ""));
                let stage = labels
                    .split(',')
                    .find_map(|l| l.strip_prefix("stage=\""))
                    .map_or("?", |s| s.trim_end_matches('"'));
                if let Ok(v) = value.trim().parse::<f64>() {
                    *sums.entry(format!("{prefix}{stage}")).or_default() += v;
                }
            }
        }
        Reading(sums)
    }
}

impl Reading {
    pub fn since(&self, before: &Reading) -> Spent {
        Spent(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, v)| *v > 0.0)
                .collect(),
        )
    }
}

impl Spent {
    /// `stage: ms per frame (share of the window)`, each series, then the stages' total.
    pub fn describe(&self, frames: u64, window_s: f64) -> String {
        let per = |s: f64| {
            format!(
                "{:.1} ms ({:.0}%)",
                s * 1e3 / frames.max(1) as f64,
                100.0 * s / window_s
            )
        };
        let stages: f64 = self
            .0
            .iter()
            .filter(|(k, _)| !k.starts_with("model "))
            .map(|(_, v)| v)
            .sum();
        let mut parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{k} {}", per(*v)))
            .collect();
        parts.push(format!("all stages {}", per(stages)));
        parts.join(", ")
    }
}
