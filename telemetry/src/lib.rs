//! panoptes-telemetry: how a frame is followed across processes. [`trace`] carries the W3C trace
//! context in NATS headers and names the spans every process opens for a frame (`ingest`,
//! `frame`, `stage`, `batch`, `publish`); metric names are `panoptes_contracts::meter`'s.
//!
//! Invariant: spans are plain `tracing` spans; nothing here installs an exporter or a subscriber
//! (the binary does, `cli/src/telemetry.rs`), so without one tracing costs a callsite check and
//! nothing is written into headers.

pub mod trace;
