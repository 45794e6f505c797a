//! `shadow:` on an operator or model stage: a candidate that runs beside the live stage on a
//! sampled share of frames, in its own sandbox and budget, whose results are compared with the
//! live ones and never join them.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An operator stage's candidate module.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorShadow {
    /// The candidate component (`.wasm`), relative to the topology file. It must pass the
    /// stage's `signed_by` like the live module.
    pub wasm: PathBuf,
    /// Expected `sha256:<hex>` of the candidate module.
    #[serde(default)]
    pub digest: Option<String>,
    /// The candidate's `init` configuration (absent: the live stage's).
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// The candidate's per-call time limit in milliseconds (absent: the live stage's).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub timeout_ms: Option<u64>,
    /// The candidate's linear-memory cap in MiB (absent: the live stage's).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_mib: Option<u64>,
    /// The share of frames the candidate runs on, chosen by camera and seq (so every worker
    /// picks the same frames).
    #[serde(default = "default_sample")]
    #[schemars(range(min = 0.001, max = 1.0))]
    pub sample: f64,
}

/// A model stage's candidate model.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelShadow {
    /// A name from the top-level `models` map. When the live stage's results go through a
    /// `postprocess` stage, the candidate's go through a copy of it, and detections are
    /// compared; otherwise the output tensors are.
    pub model: String,
    /// The share of frames the candidate runs on, chosen by camera and seq.
    #[serde(default = "default_sample")]
    #[schemars(range(min = 0.001, max = 1.0))]
    pub sample: f64,
}

fn default_sample() -> f64 {
    0.1
}
