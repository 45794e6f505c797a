//! `panoptes validate`: structural checks (always) and environment checks (`--env`: NATS
//! reachable, models and operators load, digests and signatures match, what this build can run),
//! every problem reported against its line in the topology file; labels of zones, lines and
//! output filters against what the stages give (model manifests are read). [`unsupported`] is
//! also what `run`, `worker` and `ingest` refuse to start with, JPEG frames for stages that
//! cannot read them included.

mod env;
mod labels;
mod model_input;
mod refusals;

use panoptes_topology::PathSeg;

pub use env::environment;
pub use labels::unknown_labels;
pub use refusals::{NATS_DEFAULT_MAX_PAYLOAD, Scope, jpeg_readers, unsupported};

/// `stages[i].<key>` as a path.
fn stage_path(i: usize, key: &str) -> Vec<PathSeg> {
    vec!["stages".into(), i.into(), key.into()]
}
