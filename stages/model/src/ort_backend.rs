//! The ONNX Runtime backend: one environment per process (the library is loaded dynamically
//! from the `onnxruntime` wheel setup installs), one session per graph, execution providers by
//! cargo feature.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue, SessionInputs};

use ort::value::{DynValue, PrimitiveTensorElementType, TensorElementType, TensorRef, ValueType};

use crate::ModelError;
use crate::graph::{
    Device, ElementType, Engine, GraphOptions, Loaded, OutData, OutputSink, TensorInfo, TensorView,
};

/// The onnxruntime release the ort bindings are built for (`api-31`).
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

/// `$ORT_DYLIB_PATH`, else the library inside the venv setup creates.
pub fn library_path() -> Result<PathBuf, ModelError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let venv = panoptes_files::paths::venv();
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

/// One ONNX Runtime session.
///
/// ort 2.0.0-rc.15's `Session::run` takes `&mut self` (some execution providers' allocators are
/// not thread-safe), so the session sits behind a mutex and concurrent callers take turns. On the
/// CPU that costs little: one run already spreads over every core (intra-op threads), so two
/// runs at once would only compete for the same cores. Callers that want real parallelism on
/// many-core hosts load the model twice with fewer threads each.
pub(crate) struct OrtGraph {
    session: Mutex<Session>,
}

pub(crate) fn load(name: &str, path: &Path, opts: &GraphOptions) -> Result<Loaded, ModelError> {
    let fail = |message: String| ModelError::Load {
        model: name.to_owned(),
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
    // ONNX Runtime's pool threads spin while they wait for work. On a machine whose cores
    // also run capture, NATS and operators, spinning threads take the CPU from the very work
    // they wait for.
    if std::env::var_os("PANOPTES_ORT_SPINNING").is_none_or(|v| v != "1") {
        builder = builder
            .with_intra_op_spinning(false)
            .map_err(|e| fail(e.to_string()))?
            .with_inter_op_spinning(false)
            .map_err(|e| fail(e.to_string()))?;
    }
    if opts.device != Device::Cpu {
        builder = register_device(builder, opts.device).map_err(|message| ModelError::Device {
            model: name.to_owned(),
            device: opts.device,
            message,
        })?;
    }
    let session = builder.commit_from_file(path).map_err(|e| {
        // A provider that registered may still fail to initialise here (a library it loads
        // lazily, no GPU): say which device was asked for.
        if opts.device == Device::Cpu {
            fail(e.to_string())
        } else {
            ModelError::Device {
                model: name.to_owned(),
                device: opts.device,
                message: format!("cannot create the session for {}: {e}", path.display()),
            }
        }
    })?;
    let unsupported = |message: String| ModelError::Unsupported {
        model: name.to_owned(),
        message,
    };
    let describe = |kind: &str, outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| {
                tensor_info(o.name(), o.dtype()).map_err(|m| unsupported(format!("{kind} {m}")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let inputs = describe("input", session.inputs())?;
    let outputs = describe("output", session.outputs())?;
    // The graph runs without its metadata; only what reads a key would miss it.
    let metadata = custom_metadata(&session).unwrap_or_else(|e| {
        tracing::warn!(model = %name, error = %e, "cannot read the model's metadata");
        BTreeMap::new()
    });
    Ok(Loaded {
        engine: Engine::Ort(OrtGraph {
            session: Mutex::new(session),
        }),
        inputs,
        outputs,
        metadata,
    })
}

/// The model's custom metadata (`metadata_props`), every key read once.
fn custom_metadata(session: &Session) -> ort::Result<BTreeMap<String, String>> {
    let meta = session.metadata()?;
    let mut out = BTreeMap::new();
    for key in meta.custom_keys()? {
        if let Some(value) = meta.custom(&key) {
            out.insert(key, value);
        }
    }
    Ok(out)
}

fn tensor_info(name: &str, dtype: &ValueType) -> Result<TensorInfo, String> {
    let ValueType::Tensor { ty, shape, .. } = dtype else {
        return Err(format!("`{name}` is {dtype}; panoptes passes tensors only"));
    };
    let ty = element_type(*ty).ok_or_else(|| {
        format!("`{name}` has elements of type {ty}; panoptes handles f32, u8, i32 and i64")
    })?;
    Ok(TensorInfo {
        name: name.to_owned(),
        ty,
        // ONNX Runtime reports a dynamic dimension as -1.
        shape: shape.iter().map(|&d| usize::try_from(d).ok()).collect(),
    })
}

fn element_type(ty: TensorElementType) -> Option<ElementType> {
    Some(match ty {
        TensorElementType::Float32 => ElementType::F32,
        TensorElementType::Uint8 => ElementType::U8,
        TensorElementType::Int32 => ElementType::I32,
        TensorElementType::Int64 => ElementType::I64,
        _ => return None,
    })
}

/// Appends the device's execution provider and makes its failure an error: ONNX Runtime's
/// default is to log and fall back to the CPU, which would hide a missing GPU library behind a
/// slow node.
fn register_device(builder: SessionBuilder, device: Device) -> Result<SessionBuilder, String> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda => with_providers::<ort::ep::CUDA>(
            builder,
            vec![ort::ep::CUDA::default().build()],
            "e.g. the onnxruntime-gpu wheel's library, with the CUDA and cuDNN libraries it was built against on the library path",
        ),
        // CUDA goes second, as ONNX Runtime advises: nodes TensorRT cannot take then run on the
        // GPU too instead of on the CPU.
        #[cfg(feature = "tensorrt")]
        Device::TensorRt => with_providers::<ort::ep::TensorRT>(
            builder,
            vec![
                ort::ep::TensorRT::default().build(),
                ort::ep::CUDA::default().build(),
            ],
            "e.g. the onnxruntime-gpu wheel's library, with the TensorRT, CUDA and cuDNN libraries on the library path",
        ),
        #[cfg(feature = "openvino")]
        Device::OpenVino => with_providers::<ort::ep::OpenVINO>(
            builder,
            vec![ort::ep::OpenVINO::default().build()],
            "e.g. the onnxruntime-openvino wheel's library, with the OpenVINO runtime libraries on the library path",
        ),
        // `Graph::load` refuses devices this build lacks (and never asks for the CPU here).
        other => {
            drop(builder);
            Err(format!("no execution provider for {other} in this build"))
        }
    }
}

/// Registers `providers` (the first is the device's own, `E`), each with error-on-failure.
#[cfg(any(feature = "cuda", feature = "tensorrt", feature = "openvino"))]
fn with_providers<E: ort::ep::ExecutionProvider>(
    builder: SessionBuilder,
    providers: Vec<ort::ep::ExecutionProviderDispatch>,
    needs: &str,
) -> Result<SessionBuilder, String> {
    // The CPU-only onnxruntime wheel lacks every GPU provider: say so plainly instead of passing
    // on the registration's generic failure.
    if !E::is_available().unwrap_or(true) {
        let lib = library_path().map_or_else(|_| "?".into(), |p| p.display().to_string());
        return Err(format!(
            "the ONNX Runtime library {lib} has no {}; set ORT_DYLIB_PATH to a build with it ({needs})",
            E::NAME
        ));
    }
    let providers: Vec<_> = providers
        .into_iter()
        .map(ort::ep::ExecutionProviderDispatch::error_on_failure)
        .collect();
    builder
        .with_execution_providers(providers)
        .map_err(|e| format!("cannot register {}: {e} (it needs {needs})", E::NAME))
}

impl OrtGraph {
    pub(crate) fn run(
        &self,
        declared: &[TensorInfo],
        inputs: &[TensorView<'_>],
        sink: &mut OutputSink<'_>,
    ) -> Result<(), String> {
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
        for (info, view) in declared.iter().zip(inputs) {
            let value = match view.ty {
                ElementType::F32 => input_value::<f32>(view),
                ElementType::U8 => input_value::<u8>(view),
                ElementType::I32 => input_value::<i32>(view),
                ElementType::I64 => input_value::<i64>(view),
            }
            .map_err(|e| format!("input `{}`: {e}", info.name))?;
            values.push((Cow::Borrowed(info.name.as_str()), value));
        }
        // A panic while holding the lock (inside ort) leaves the session itself intact, so a
        // poisoned lock is taken over rather than failing every later run.
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(SessionInputs::<'_, '_, 0>::ValueMap(values))
            .map_err(|e| e.to_string())?;
        for (ix, (name, value)) in outputs.iter().enumerate() {
            emit(ix, name, &value, sink)?;
        }
        Ok(())
    }
}

/// The view as an ONNX Runtime value: borrowed when its bytes are aligned for `T` (the common
/// case: a `Vec<f32>`'s bytes), copied once when not (e.g. bytes at an odd offset of a buffer).
fn input_value<'v, T>(view: &TensorView<'v>) -> ort::Result<SessionInputValue<'v>>
where
    T: PrimitiveTensorElementType + bytemuck::Pod + Debug,
{
    let shape = view.shape.to_vec();
    match bytemuck::try_cast_slice::<u8, T>(view.bytes) {
        Ok(data) => Ok(TensorRef::from_array_view((shape, data))?.into()),
        Err(_) => {
            let data: Vec<T> = bytemuck::pod_collect_to_vec(view.bytes);
            Ok(ort::value::Tensor::from_array((shape, data))?.into())
        }
    }
}

fn emit(ix: usize, name: &str, value: &DynValue, sink: &mut OutputSink<'_>) -> Result<(), String> {
    let fail = |e: ort::Error| format!("output `{name}`: {e}");
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("output `{name}` is {other}, not a tensor")),
    };
    macro_rules! emit_as {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(fail)?;
            let shape = dims(name, shape)?;
            sink(ix, &shape, OutData::$variant(data))
        }};
    }
    match ty {
        TensorElementType::Float32 => emit_as!(f32, F32),
        TensorElementType::Uint8 => emit_as!(u8, U8),
        TensorElementType::Int32 => emit_as!(i32, I32),
        TensorElementType::Int64 => emit_as!(i64, I64),
        other => Err(format!(
            "output `{name}` has elements of type {other}; panoptes handles f32, u8, i32 and i64"
        )),
    }
}

fn dims(name: &str, shape: &[i64]) -> Result<Vec<usize>, String> {
    shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("output `{name}` has a negative dimension {d}"))
        })
        .collect()
}
