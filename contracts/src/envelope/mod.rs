//! Pipeline items on the wire between stages in different processes (`<ns>.<stage>.<camera>`):
//! one Arrow IPC stream message holding one RecordBatch of one row (schema `item/v1`).

mod decode;
mod encode;
mod schema;
#[cfg(test)]
mod tests;

pub use decode::{decode, meta};
pub use encode::encode;

use crate::camera::InvalidCameraId;
use crate::frame::FrameError;

/// Version tag of the item payload schema, also sent in the `Panoptes-Schema` header.
pub const ITEM_SCHEMA: &str = "item/v1";
/// The schema-metadata key frame/v1 uses too, so one look tells the two apart.
const SCHEMA_KEY: &str = "panoptes.schema";
const SCHEMA_FAMILY: &str = "item/";

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a valid Arrow IPC stream: {0}")]
    Ipc(String),
    #[error("the Arrow stream holds no record batch")]
    NoBatch,
    #[error("an item message must hold exactly 1 row, this one holds {0}")]
    RowCount(usize),
    #[error("the message has no {SCHEMA_KEY:?} schema metadata (expected {ITEM_SCHEMA:?})")]
    MissingSchema,
    #[error("the message is schema {found:?}, not {ITEM_SCHEMA:?}")]
    WrongSchema { found: String },
    #[error("item schema version {found:?} is not supported (this build reads {ITEM_SCHEMA:?})")]
    UnsupportedVersion { found: String },
    #[error("missing column {0:?}")]
    MissingColumn(String),
    #[error("column {column:?} has type {found}, expected {expected}")]
    WrongType {
        column: String,
        found: String,
        expected: String,
    },
    #[error("unexpected column {0:?} (item/v1 has no such column)")]
    UnexpectedColumn(String),
    #[error("column {0:?} is null, but this item needs it")]
    NullColumn(String),
    #[error("unknown payload kind {0:?} (frame, tensor, detections)")]
    UnknownPayload(String),
    #[error("tensor shape {shape:?} does not match its {actual} values")]
    TensorShape { shape: Vec<u64>, actual: usize },
    #[error("column {column:?}: {reason}")]
    Malformed { column: String, reason: String },
    #[error(transparent)]
    Camera(#[from] InvalidCameraId),
    #[error(
        "the payload says camera {payload:?} but it arrived on the subject of camera {subject:?}"
    )]
    CameraMismatch { payload: String, subject: String },
    #[error("column {column:?} is not valid JSON for its type: {source}")]
    Json {
        column: &'static str,
        source: serde_json::Error,
    },
    #[error("the {which} frame: {source}")]
    Frame {
        which: &'static str,
        source: FrameError,
    },
    #[error(
        "the {which} frame is camera {camera:?} seq {seq} (captured {capture_ts_ns}), but the item \
         is about camera {item_camera:?} seq {item_seq} (captured {item_capture_ts_ns}); one \
         message carries one camera frame"
    )]
    ForeignFrame {
        which: &'static str,
        camera: String,
        seq: u64,
        capture_ts_ns: u64,
        item_camera: String,
        item_seq: u64,
        item_capture_ts_ns: u64,
    },
}

fn ipc(e: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::Ipc(e.to_string())
}
