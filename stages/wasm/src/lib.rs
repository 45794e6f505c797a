//! Wasmtime host for Wasm operator components (panoptes:operator WIT world).
//!
//! One [`OperatorEngine`] per process compiles (or loads from an on-disk cache) operator
//! components into [`OperatorModule`]s; each worker instantiates a module once per stream into an
//! [`OperatorInstance`] and calls [`OperatorInstance::process`] per frame. Operators run sandboxed:
//! no filesystem, network, environment, inherited stdio or clock (guest output is captured only to
//! explain traps), a memory cap and a per-call deadline. A trap or timeout fails that frame only;
//! the instance is rebuilt on the next call. A topology can require a key holder's ed25519 signature
//! (`panoptes_client::keys`) before a module is compiled. [`accepts`] reads the frame formats an
//! operator declares, without compiling it; [`build`] turns a topology's `kind: operator` stage
//! into an [`OperatorStage`].

pub mod accepts;
pub mod build;
mod cache;
mod capabilities;
mod engine;
mod error;
mod instance;
mod nn;
mod stage;

pub use capabilities::{Capabilities, DirGrant};
pub use engine::{EngineOptions, OperatorEngine, OperatorModule};
pub use error::{OperatorError, OperatorErrorKind, WasmError};
pub use instance::{
    Detection, FrameResource, Image, Input, OperatorInstance, Output, PixelFormat, Tensor,
    TensorInput, TensorOutput, Transform,
};
pub use panoptes_client::keys::SignatureError;
pub use stage::{
    InstanceSpec, ModuleSpec, OperatorSlot, OperatorStage, OutputKind, Reloaded, Watcher,
    digest_matches, sha256_hex,
};

#[cfg(test)]
mod tests {
    /// Workers move instances across threads and share engines and modules between them.
    #[test]
    fn handles_are_thread_safe() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<super::OperatorInstance>();
        send_sync::<super::OperatorModule>();
        send_sync::<super::OperatorEngine>();
        send_sync::<super::WasmError>();
    }
}
