//! Status events of outputs (webhooks, MQTT), published on `<ns>.outputs.<output>` (JSON,
//! schema `output-events/v1`, JSON Schema in `docs/output-events.schema.json`), and the
//! delivery ID receivers drop duplicates by.

use serde::{Deserialize, Serialize};

pub const OUTPUT_EVENTS_SCHEMA: &str = "output-events/v1";

/// What happened to an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputEventKind {
    /// Its endpoint cannot be reached or refused it (a host that does not resolve, a refused
    /// connection, a broker that refused the credentials, an HTTP error); `message` says
    /// which. Raised at start and whenever a working endpoint fails.
    OutputDown,
    /// Its endpoint took a message again after being down.
    OutputUp,
    /// A message was given up after `attempts` attempts, or refused for good by the endpoint
    /// (an HTTP 4xx other than 408 and 429). `id` names it; in durable delivery one given up
    /// after its attempts stays in JetStream and is tried again later (`message` says so).
    OutputGaveUp,
    /// `count` messages were dropped because the output's queue was full (live delivery).
    OutputDropped,
}

/// One status event of an output (`output-events/v1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "output-events/v1")]
pub struct OutputEvent {
    /// `output-events/v1`.
    pub schema: String,
    /// The output's ID in the topology.
    pub output: String,
    pub kind: OutputEventKind,
    /// Human-readable cause; never carries a secret or the message body.
    pub message: String,
    /// The camera of the message concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// The delivery ID of the message concerned (`output_gave_up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `output_gave_up`: attempts made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// `output_dropped`: messages dropped since the last such event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub ts_ns: u64,
}

impl OutputEvent {
    pub fn new(output: &str, kind: OutputEventKind, message: impl Into<String>) -> Self {
        Self {
            schema: OUTPUT_EVENTS_SCHEMA.to_owned(),
            output: output.to_owned(),
            kind,
            message: message.into(),
            camera: None,
            id: None,
            attempts: None,
            count: None,
            ts_ns: crate::time::now_ns(),
        }
    }
}

/// The JSON Schema of output status events (committed as `docs/output-events.schema.json`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(OutputEvent))
        .unwrap_or(serde_json::Value::Bool(true))
}

/// Delivery ID of a detection message, the same for every delivery of it: its camera, frame
/// sequence number and stage chain (an analytics event carries its own `id`).
pub fn detections_id(camera: &str, seq: u64, pipeline: &str) -> String {
    format!("{camera}:{seq}:{pipeline}")
}
