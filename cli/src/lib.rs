//! The `panoptes` command as a library, so tests and benchmarks drive exactly what users run.
//! [`runner`] runs a topology, or one role of it, in one process; [`ingest_node`] publishes a
//! camera's frames; [`registry`] turns topology stage entries into stage implementations;
//! [`connect`](mod@connect) opens NATS connections with the topology's credentials and TLS;
//! [`sources`] turns camera sources into GStreamer pipelines; [`frame_out`] publishes frames as
//! contract v1 says; [`publish`] and [`roles`] are the `publish`, `worker` and `ingest`
//! subcommands; [`operator_cmd`] is `operator` (signing keys and module signatures);
//! [`telemetry`] sets up OTLP trace export and the `/metrics` endpoint; [`cameras`] changes the
//! running cameras (control subjects, reload) and [`camera_cmd`] is `camera`; control requests
//! are signed and checked by [`control_auth`] and confined by [`confine`]; [`nats_args`] holds
//! the NATS connection flags every command shares.

pub mod camera_cmd;
pub mod cameras;
pub mod confine;
pub mod connect;
pub mod control;
pub mod control_auth;
pub mod frame_out;
pub mod graph;
pub mod ingest_node;
pub mod nats_args;
pub mod operator_cmd;
pub mod publish;
pub mod registry;
pub mod roles;
pub mod runner;
pub mod sources;
pub mod telemetry;
pub mod validate;

pub use connect::{connect, connect_with};
