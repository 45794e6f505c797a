//! Request and reply bodies of the camera control subjects
//! (`<ns>.control.cameras.{add,remove,list,reload}`), served by ingest processes.

use serde::{Deserialize, Serialize};

/// `add`: a camera as a topology's `cameras:` entry has it (JSON). Relative file paths resolve
/// against the directory of the topology the ingest process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    pub camera: serde_json::Value,
}

/// `remove`: the camera's ID. Only the process that runs it answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    pub camera: String,
}

/// One camera in a `list` reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CameraEntry {
    pub id: String,
    /// `starting`, `up`, `reconnecting` or `ended`, with `attempt` and `cause` where they apply.
    pub state: serde_json::Value,
    pub published: u64,
    pub dropped: u64,
    pub failed: u64,
    pub reconnects: u64,
    /// Previews published while someone watched (`preview/v1`).
    #[serde(default)]
    pub previews: u64,
}

/// Every reply: `ok`, and what the operation did or why it did not.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ControlReply {
    pub ok: bool,
    /// The answering process (`host:pid`), to tell replies apart.
    pub process: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Cameras whose configuration changed in the file, stopped and started again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarted: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cameras: Option<Vec<CameraEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
