//! Model stage: runs an ONNX graph on the host through ONNX Runtime (`ort`, loaded dynamically
//! from the `onnxruntime` wheel that setup installs). One environment per process; one session
//! per model stage.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use panoptes_pipeline::stage::{Item, Payload, Stage, StageError};
use panoptes_pipeline::tensor::Tensor;

/// The onnxruntime release the ort bindings are built for (`api-31`).
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

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
    #[error("model file {path} does not exist; run models/fetch.sh")]
    MissingFile { path: String },
    #[error("cannot load model {path}: {message}")]
    Load { path: String, message: String },
    #[error("model {model}: {message}")]
    Run { model: String, message: String },
}

/// `$ORT_DYLIB_PATH`, else the library inside the venv setup creates.
pub fn library_path() -> Result<PathBuf, ModelError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let venv = panoptes_pipeline::paths::venv();
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| {
            python
                .path()
                .join("site-packages/onnxruntime/capi")
                .join(ORT_LIBRARY)
        })
        .find(|p| p.is_file())
        .ok_or(ModelError::LibraryNotFound {
            venv: lib
                .join("python3*/site-packages/onnxruntime/capi")
                .join(ORT_LIBRARY)
                .display()
                .to_string(),
        })
}

/// The process-wide ONNX Runtime environment, created on first use.
pub fn environment() -> Result<&'static Environment, ModelError> {
    // The first failure is kept as text: every later caller gets the same cause, unchanged.
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let path = library_path().map_err(|e| e.to_string())?;
        let fail = |message: String| {
            ModelError::LibraryLoad {
                path: path.display().to_string(),
                message,
            }
            .to_string()
        };
        ort::init_from(&path)
            .map_err(|e| fail(e.to_string()))?
            .with_name("panoptes")
            .with_telemetry(false)
            .build()
            .map_err(|e| fail(e.to_string()))
    });
    env.as_ref()
        .map_err(|cause| ModelError::Environment(cause.clone()))
}

#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// Intra-op threads; 0 lets ONNX Runtime choose (one per core).
    pub threads: usize,
}

/// One loaded ONNX graph with a single f32 input and (at least) one f32 output.
pub struct OrtModel {
    session: Session,
    name: String,
    input: String,
}

impl OrtModel {
    pub fn load(path: &Path, opts: &ModelOptions) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.display().to_string(),
            });
        }
        let fail = |message: String| ModelError::Load {
            path: path.display().to_string(),
            message,
        };
        let mut builder = Session::builder(environment()?)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail(e.to_string()))?;
        if opts.threads > 0 {
            builder = builder
                .with_intra_threads(opts.threads)
                .map_err(|e| fail(e.to_string()))?;
        }
        let session = builder
            .commit_from_file(path)
            .map_err(|e| fail(e.to_string()))?;
        let input = session
            .inputs()
            .first()
            .map(|i| i.name().to_owned())
            .ok_or_else(|| fail("the graph has no inputs".into()))?;
        if session.outputs().is_empty() {
            return Err(fail("the graph has no outputs".into()));
        }
        let name = path
            .file_stem()
            .map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned());
        tracing::info!(model = %name, path = %path.display(), input = %input, "model loaded");
        Ok(Self {
            session,
            name,
            input,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first input's declared shape; `-1` marks a dynamic dimension.
    pub fn input_shape(&self) -> Option<Vec<i64>> {
        match self.session.inputs().first()?.dtype() {
            ort::value::ValueType::Tensor { shape, .. } => Some(shape.iter().copied().collect()),
            _ => None,
        }
    }

    /// The name reported in detection messages (default: the file stem).
    pub fn set_name(&mut self, name: &str) {
        name.clone_into(&mut self.name);
    }

    /// Runs the graph on one input tensor and returns its first output.
    pub fn run(&mut self, input: &Tensor) -> Result<Tensor, ModelError> {
        let fail = |message: String| ModelError::Run {
            model: self.name.clone(),
            message,
        };
        let shape: Vec<i64> = input.shape.iter().map(|&d| d as i64).collect();
        let value = TensorRef::from_array_view((shape, input.data.as_slice()))
            .map_err(|e| fail(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => value])
            .map_err(|e| fail(e.to_string()))?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| fail(e.to_string()))?;
        let shape = shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect();
        Tensor::new(shape, data.to_vec()).map_err(|e| fail(e.to_string()))
    }
}

/// A model stage: tensor in, the model's first output out; the transform passes through.
pub struct ModelStage {
    id: String,
    model: OrtModel,
}

impl ModelStage {
    pub fn new(id: impl Into<String>, model: OrtModel) -> Self {
        Self {
            id: id.into(),
            model,
        }
    }
}

impl Stage for ModelStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> Option<&str> {
        Some(self.model.name())
    }

    fn process(&mut self, mut item: Item) -> Result<Item, StageError> {
        let Payload::Tensor(input) = &item.payload else {
            return Err(StageError::WrongInput {
                expected: "tensor",
                got: item.payload.kind(),
            });
        };
        let output = self
            .model
            .run(input)
            .map_err(|e| StageError::Failed(e.to_string()))?;
        item.payload = Payload::Tensor(output);
        Ok(item)
    }
}
