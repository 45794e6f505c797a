//! Wasmtime host for Wasm operator components (panoptes:operator WIT world).
//!
//! One [`OperatorEngine`] per process compiles (or loads from an on-disk cache) operator
//! components into [`OperatorModule`]s; each worker instantiates a module once per stream into an
//! [`OperatorInstance`] and calls [`OperatorInstance::process`] per frame. Operators run sandboxed:
//! no filesystem, network, environment, stdio or clock, a memory cap and a per-call deadline. A
//! trap or timeout fails that frame only; the instance is rebuilt on the next call.

mod cache;
mod engine;
mod error;
mod instance;

pub use engine::{EngineOptions, OperatorEngine, OperatorModule};
pub use error::{OperatorError, OperatorErrorKind, WasmError};
pub use instance::{FrameInfo, OperatorInstance, OperatorOutput, PixelFormat, Transform};
