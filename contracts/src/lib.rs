//! panoptes-contracts: what every Panoptes process agrees on, and nothing else.
//!
//! It owns the camera ID, the subject names, the NATS header names, the partition hash, the
//! Arrow `frame/v1` and `item/v1` encodings with their structural check, the `detections/v1`
//! and event JSON, the `preview/v1` headers, the `shadow/v1` JSON and the per-frame agreement it reports, tensors and the one [`Transform`] from tensor pixels back to the frame, the
//! batching policy a stage asks for, the metric names, and the [`Stage`] lifecycle that stage
//! crates implement and the worker drives.
//!
//! Invariant: no I/O. Nothing here opens a file, a socket or a process, or starts a runtime; a
//! change to a wire format is a change to this crate (and to `docs/nats.md` and `schema/`).

pub mod agreement;
pub mod analytics;
pub mod batching;
pub mod camera;
pub mod clip;
pub mod detection;
pub mod envelope;
pub mod event;
pub mod frame;
pub mod headers;
mod ipc_check;
pub mod kinds;
pub mod meter;
pub mod output;
pub mod partition;
pub mod preview;
pub mod shadow;
pub mod stage;
pub mod subjects;
pub mod tensor;
pub mod time;

pub use batching::{BatchPolicy, BatchStats};
pub use camera::{CameraId, InvalidCameraId};
pub use detection::{Detection, DetectionMessage, TrackInfo};
pub use event::{Event, EventKind};
pub use frame::{Frame, FrameError, PixelFormat};
pub use partition::{PartitionSet, PartitionSpecError};
pub use stage::{Item, Payload, Stage, StageError};
pub use subjects::Subjects;
pub use tensor::{Tensor, Transform};
