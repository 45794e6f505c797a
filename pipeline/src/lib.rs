//! panoptes-pipeline: the stage worker. It takes frames (and forwarded items) of the cameras
//! whose partitions it holds from NATS, gathers them into batches across cameras, runs them
//! through its unit's stage graph and publishes what comes out.
//!
//! Invariant: each camera has at most one owner at a time (a partition lease in NATS KV), and
//! every frame that reaches the owner is either published, reported (`frame_error`,
//! `frames_dropped`, `frames_lost`) or, in durable mode, left unacknowledged for redelivery.
//! A camera's stage state (tracks) is saved to KV and restored by its next owner (`state.rs`).
//! A shadow candidate (`shadow.rs`) sees copies of sampled frames on its own thread and never
//! holds up or changes what the live stages publish.
//! The wire formats it reads and writes are `panoptes-contracts`'.

pub mod batch;
pub mod camera_state;
pub mod durable;
pub mod graph;
pub mod lease;
pub mod nats_server;
pub mod shadow;
pub mod state;
pub mod worker;

pub use batch::Batcher;
pub use graph::StageGraph;
pub use shadow::Shadow;
