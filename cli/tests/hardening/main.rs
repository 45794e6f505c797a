//! Issue 17's regression tests ("close the doors"), compiled as one test binary: every file
//! here is a module, so adding a test file costs no extra link of wasmtime, ONNX Runtime and
//! GStreamer. Each module says what it proves.

mod bounded_inputs;
mod control_plane;
mod third_party_publisher;
mod validate_model_input;
mod worker_state;
