//! panoptes (the binary) as a library, so tests and benchmarks drive exactly what users run.
//!
//! It owns the commands and what only a process needs: [`runner`] runs a topology, or one role
//! of it, in one process; [`registry`] turns topology stage entries into stage implementations;
//! [`connect`](mod@connect) opens NATS connections with the topology's credentials and TLS and
//! [`nats_args`] holds the connection flags every command shares; [`telemetry`] installs OTLP
//! trace export and the `/metrics` endpoint, beside which [`health`] answers `/healthz` and
//! `/readyz`; [`operator_reload`] serves the operator reload
//! subject. The subcommands: [`publish`], [`roles`] (`worker`, `ingest`), [`operator_cmd`]
//! (`operator`), [`camera_cmd`] (`camera`), [`clips_cmd`] (`clips`), [`validate`], [`graph`].
//!
//! Invariant: no noun of the design lives here. Frames, stages, cameras, workers and the control
//! protocol belong to their crates (see ARCHITECTURE.md); this crate wires them into processes.

pub mod camera_cmd;
pub mod clips_cmd;
pub mod connect;
pub mod control_args;
pub mod graph;
pub mod health;
pub mod nats_args;
pub mod operator_build;
pub mod operator_cmd;
pub mod operator_reload;
pub mod publish;
pub mod registry;
pub mod replay_cmd;
pub mod roles;
pub mod runner;
pub mod telemetry;
pub mod validate;
pub mod view_cmd;

pub use connect::{connect, connect_with};
