//! The integration tests of the `panoptes` binary and its roles, compiled as one test binary
//! (one link of wasmtime, ONNX Runtime and GStreamer instead of one per file); a module per area,
//! each saying what it proves.

mod bounded_inputs;
mod child;
mod cli_topology;
mod control_plane;
mod ctrl_c;
mod health;
mod jpeg_wire;
mod kubernetes;
mod live_cameras;
mod operator_signing;
mod outputs;
mod preview;
mod publish_roundtrip;
mod python_operators;
mod recording;
mod replay;
mod scale_out;
mod shadow;
mod stateful_operators;
mod telemetry;
mod third_party_publisher;
mod tracking;
mod validate_labels;
mod validate_model_input;
mod view;
mod worker_state;
