//! Core runtime of panoptes: the wire contracts every process agrees on (subjects, headers, Arrow
//! frames, detection and event messages), the [`Stage`] trait stage crates
//! implement, and the worker loop that moves frames from NATS through a chain of stages.

pub mod batch;
pub mod camera;
pub mod camera_state;
pub mod detection;
pub mod durable;
pub mod envelope;
pub mod event;
pub mod frame;
pub mod graph;
pub mod headers;
mod ipc_check;
pub mod lease;
pub mod meter;
pub mod nats_server;
pub mod partition;
pub mod paths;
pub mod stage;
pub mod subjects;
pub mod tensor;
pub mod time;
pub mod trace;
pub mod worker;

pub use batch::{BatchPolicy, BatchStats, Batcher};
pub use camera::{CameraId, InvalidCameraId};
pub use detection::{Detection, DetectionMessage};
pub use event::{Event, EventKind};
pub use frame::{Frame, FrameError, PixelFormat};
pub use graph::StageGraph;
pub use partition::{PartitionSet, PartitionSpecError};
pub use stage::{Item, Payload, Stage, StageError};
pub use subjects::Subjects;
pub use tensor::{Tensor, Transform};
