//! Host kernels for models: ONNX graphs run on the host through ONNX Runtime (`ort`, loaded
//! dynamically from the `onnxruntime` wheel that setup installs) or tract (pure Rust, CPU).
//!
//! [`Graph`] is the one backend-agnostic API: the model stage ([`ModelStage`]) and the `wasi:nn`
//! host that Wasm model operators call both run graphs through it, and [`ModelRegistry`] loads
//! each named model once per process and hands out clones of the same graph. [`build`] turns a
//! topology's `kind: model` stage into a [`ModelStage`] (and resolves what it feeds downstream).

pub mod build;
mod crops;
mod graph;
mod manifest;
mod ort_backend;
mod registry;
mod stage;
mod tract_backend;

pub use crops::{CropError, CropSpec, Crops, Orientation};
pub use graph::{
    Backend, Device, ElementType, Graph, GraphOptions, HostTensor, TensorInfo, TensorView,
    compiled_devices,
};
pub use manifest::{
    Align, BackendHints, ColorOrder, Dim, InputSpec, Labels, Layout, ManifestError, ModelManifest,
    ModelSource, Normalization, Normalize, OutputSpec, PostprocessorKind, PostprocessorSpec,
    Resize, ResizeMode, TractHints,
};
pub use ort_backend::{ORT_LIBRARY, environment, library_path};
pub use registry::{ModelRegistry, load_checked, sha256_file};
pub use stage::ModelStage;

/// Everything that can go wrong loading or running a model. Messages name the model (and the
/// file, where there is one) so a log line or a topology diagnostic stands on its own.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime library not found (looked at $ORT_DYLIB_PATH and {venv}); run scripts/setup.sh"
    )]
    LibraryNotFound { venv: String },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    LibraryLoad { path: String, message: String },
    /// ONNX Runtime could not be set up for this process (the first failure's message).
    #[error("{0}")]
    Environment(String),
    #[error("model `{model}`: file {path} does not exist; run models/fetch.sh")]
    MissingFile { model: String, path: String },
    #[error("model `{model}`: cannot read {path}: {message}")]
    Read {
        model: String,
        path: String,
        message: String,
    },
    #[error(
        "model `{model}`: refusing {path}: its sha256 is {actual}, not the declared {expected}"
    )]
    Checksum {
        model: String,
        path: String,
        expected: String,
        actual: String,
    },
    #[error("model `{model}`: cannot load {path}: {message}")]
    Load {
        model: String,
        path: String,
        message: String,
    },
    /// The device's execution provider is not compiled into this build.
    #[error(
        "model `{model}`: device {device}: this build has no `{feature}` feature; rebuild with `--features {feature}`",
        feature = device.feature().unwrap_or("?")
    )]
    DeviceNotCompiled { model: String, device: Device },
    /// The device was asked for but cannot be used here (provider or its libraries missing).
    #[error("model `{model}`: device {device}: {message}")]
    Device {
        model: String,
        device: Device,
        message: String,
    },
    /// The graph uses something this host does not handle (an element type, a non-tensor value).
    #[error("model `{model}`: {message}")]
    Unsupported { model: String, message: String },
    /// The caller's inputs do not fit the graph (names, element types, shapes, byte lengths).
    #[error("model `{model}`: {message}")]
    Input { model: String, message: String },
    #[error("model `{model}`: {message}")]
    Run { model: String, message: String },
    #[error("unknown model `{name}` (declared: {known})")]
    UnknownModel { name: String, known: String },
}

// Graphs are cloned into many Wasm instances and threads, and the registry is shared through an
// `Arc`: keep both `Send + Sync` a compile-time fact rather than a test's.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Graph>();
    send_sync::<ModelRegistry>();
};
