//! The `operator` stage's settings: the Wasm component, what it emits, and what it may reach
//! (`grants`, nothing by default).

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorStage {
    pub id: String,
    #[serde(default)]
    pub input: Option<String>,
    /// The operator component (`.wasm`), relative to the topology file.
    pub wasm: PathBuf,
    /// Expected `sha256:<hex>` of the module; a different file is refused.
    #[serde(default)]
    pub digest: Option<String>,
    /// Require a valid ed25519 signature (`<wasm>.sig`) by this public key file.
    #[serde(default)]
    pub signed_by: Option<PathBuf>,
    /// Passed to the operator's `init` as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Per-call time limit in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub timeout_ms: Option<u64>,
    /// Linear-memory cap per instance, in MiB.
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_mib: Option<u64>,
    /// What the operator produces: `tensors` (preprocessing, the default), `frames` (decoders,
    /// colour converters) or `detections` (an operator that reads results itself).
    #[serde(default)]
    pub emits: Emits,
    /// Names from the top-level `models` map the operator may load through `wasi:nn`
    /// `load-by-name`. No other model can be loaded.
    #[serde(default)]
    pub models: Vec<String>,
    /// Capabilities beyond pure computation. Nothing is granted by default: clocks read zero,
    /// output is not forwarded, no environment variables, no directories.
    #[serde(default)]
    pub grants: Grants,
    /// Reload the module when its file (or its signature) changes, without restarting the
    /// worker. A control message can trigger a reload either way.
    #[serde(default)]
    pub watch: bool,
    /// For an operator that keeps per-camera state (world
    /// `panoptes:operator/stateful-operator@0.2.0`): how often each camera's state is saved to
    /// the KV bucket `<ns>-state`, besides when its partition is handed back. Ignored for other
    /// operators.
    #[serde(default = "default_operator_snapshot_ms")]
    #[schemars(range(min = 100))]
    pub snapshot_interval_ms: u64,
    /// A candidate module run beside this one on a sampled share of frames, in its own
    /// sandbox; its results go to `<ns>.shadow.<stage>.<camera>` and the agreement metrics,
    /// never into live results. `panoptes operator promote` makes it live.
    #[serde(default)]
    pub shadow: Option<crate::shadow::OperatorShadow>,
}

fn default_operator_snapshot_ms() -> u64 {
    1000
}

/// What an operator stage produces, for the checks of what flows between stages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Emits {
    /// Model input tensors (preprocessing such as letterbox); a model stage reads them.
    #[default]
    Tensors,
    /// Camera frames (decoders, colour converters); another operator must read them.
    Frames,
    /// Detections (e.g. an operator that runs a model and decodes its outputs); a tracker or
    /// sink may read them, or a branch may end with them.
    Detections,
}

/// What an operator may reach beyond pure computation. Nothing is granted by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Real wall and monotonic clocks (otherwise they read zero). Sleeping is never allowed.
    pub clock: bool,
    /// Forward what the operator prints to the worker's log.
    pub logs: bool,
    /// Environment variables the operator sees, name → value.
    pub env: BTreeMap<String, String>,
    /// Host directories the operator sees (preopened), read-only unless `writable`.
    pub dirs: Vec<DirGrant>,
}

/// One directory granted to an operator.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The directory on the worker's machine, relative to the topology file.
    pub host: PathBuf,
    /// The absolute path the operator opens it by, e.g. `/data`.
    pub guest: String,
    /// Let the operator create, change and delete files in it.
    #[serde(default)]
    pub writable: bool,
}
