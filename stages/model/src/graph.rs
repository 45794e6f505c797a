//! The backend-agnostic graph API: load an ONNX file with ONNX Runtime or tract, describe its
//! inputs and outputs, and run it on byte tensors from any thread. The model stage and the
//! `wasi:nn` host both go through [`Graph`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use panoptes_contracts::tensor::Tensor;

use crate::ModelError;
use crate::ort_backend::OrtGraph;
use crate::tract_backend::TractGraph;

/// Element types a tensor crossing the host API may have. `wasi:nn` also names f16, f64 and
/// bf16; neither backend path here handles them, so they are refused with
/// [`ModelError::Unsupported`] rather than converted behind the caller's back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    F32,
    U8,
    I32,
    I64,
}

impl ElementType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            ElementType::U8 => 1,
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::I64 => 8,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "f32",
            ElementType::U8 => "u8",
            ElementType::I32 => "i32",
            ElementType::I64 => "i64",
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor owned by the host: row-major, little-endian element bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub ty: ElementType,
    pub bytes: Vec<u8>,
}

impl HostTensor {
    pub fn from_f32(shape: Vec<usize>, data: &[f32]) -> Self {
        HostTensor {
            shape,
            ty: ElementType::F32,
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }

    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            shape: &self.shape,
            ty: self.ty,
            bytes: &self.bytes,
        }
    }

    /// The values as f32 (copied: `bytes` need not be 4-byte aligned); `None` for other types.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.ty == ElementType::F32 && self.bytes.len().is_multiple_of(4))
            .then(|| bytemuck::pod_collect_to_vec(&self.bytes))
    }
}

/// A borrowed tensor: row-major, little-endian element bytes, at any address (aligned f32 bytes
/// reach ONNX Runtime without a copy; misaligned ones are copied once).
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub shape: &'a [usize],
    pub ty: ElementType,
    pub bytes: &'a [u8],
}

impl<'a> TensorView<'a> {
    pub fn from_f32(shape: &'a [usize], data: &'a [f32]) -> Self {
        TensorView {
            shape,
            ty: ElementType::F32,
            bytes: bytemuck::cast_slice(data),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// ONNX Runtime, loaded from the onnxruntime wheel; the only backend with devices other than
    /// the CPU.
    #[default]
    Ort,
    /// tract: pure Rust, CPU only.
    Tract,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Ort => "ort",
            Backend::Tract => "tract",
        })
    }
}

/// Where ONNX Runtime runs a graph: the CPU, or an execution provider compiled in by the cargo
/// feature of the same name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
    OpenVino,
}

impl Device {
    /// The cargo feature (of this crate and of the `panoptes` binary) that compiles this device's
    /// execution provider in; `None` for the CPU, which is always there.
    pub const fn feature(self) -> Option<&'static str> {
        match self {
            Device::Cpu => None,
            Device::Cuda => Some("cuda"),
            Device::TensorRt => Some("tensorrt"),
            Device::OpenVino => Some("openvino"),
        }
    }

    /// Whether this build can use the device at all (see [`compiled_devices`]).
    pub fn is_compiled(self) -> bool {
        compiled_devices().contains(&self)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
            Device::OpenVino => "openvino",
        })
    }
}

/// The devices this build has execution providers for (the CPU always; the others by feature).
pub fn compiled_devices() -> &'static [Device] {
    const DEVICES: &[Device] = &[
        Device::Cpu,
        #[cfg(feature = "cuda")]
        Device::Cuda,
        #[cfg(feature = "tensorrt")]
        Device::TensorRt,
        #[cfg(feature = "openvino")]
        Device::OpenVino,
    ];
    DEVICES
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GraphOptions {
    pub backend: Backend,
    pub device: Device,
    /// Intra-op threads; 0 lets the backend decide (ONNX Runtime: one per core; tract: one per
    /// core for its matrix products).
    pub threads: usize,
}

/// One input or output of a graph as the file declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: ElementType,
    /// `None` marks a dynamic dimension. Empty when the file declares no shape (or a scalar):
    /// such an input's shape is left to the backend to check.
    pub shape: Vec<Option<usize>>,
}

/// `[?, 3, 640, ?]`
pub(crate) fn fmt_dims(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or_else(|| "?".to_owned(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn fmt_names(infos: &[TensorInfo]) -> String {
    let names: Vec<String> = infos.iter().map(|i| format!("`{}`", i.name)).collect();
    names.join(", ")
}

/// One output as a backend hands it over: borrowed from the backend's own buffer, so the caller
/// makes the only copy, into whatever form it returns.
pub(crate) enum OutData<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl OutData<'_> {
    fn ty(&self) -> ElementType {
        match self {
            OutData::F32(_) => ElementType::F32,
            OutData::U8(_) => ElementType::U8,
            OutData::I32(_) => ElementType::I32,
            OutData::I64(_) => ElementType::I64,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            OutData::F32(d) => bytemuck::cast_slice(d),
            OutData::U8(d) => d,
            OutData::I32(d) => bytemuck::cast_slice(d),
            OutData::I64(d) => bytemuck::cast_slice(d),
        }
    }
}

/// Receives each output, by its index in [`Graph::outputs`]; an `Err` stops the run.
pub(crate) type OutputSink<'s> = dyn FnMut(usize, &[usize], OutData<'_>) -> Result<(), String> + 's;

pub(crate) enum Engine {
    Ort(OrtGraph),
    // Boxed: the per-shape plan cache makes it several times the size of the ort variant.
    Tract(Box<TractGraph>),
}

/// What a backend learnt from the file.
pub(crate) struct Loaded {
    pub engine: Engine,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// The file's `metadata_props` (custom key/value pairs), read once at load.
    pub metadata: BTreeMap<String, String>,
}

struct Inner {
    name: String,
    path: PathBuf,
    opts: GraphOptions,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
    engine: Engine,
}

/// A loaded ONNX graph. Cloning is cheap (one `Arc`) and every clone runs the same loaded graph;
/// `run` takes `&self` and may be called from several threads at once.
#[derive(Clone)]
pub struct Graph {
    inner: Arc<Inner>,
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graph")
            .field("name", &self.inner.name)
            .field("path", &self.inner.path)
            .field("options", &self.inner.opts)
            .field("inputs", &self.inner.inputs)
            .field("outputs", &self.inner.outputs)
            .finish()
    }
}

impl Graph {
    /// Loads `path` as the model called `name` (the name errors and detections carry).
    pub fn load(name: &str, path: &Path, opts: &GraphOptions) -> Result<Graph, ModelError> {
        // A FIFO, directory or device is named as such, and a file past the size limit is
        // refused before a backend reads it.
        crate::registry::check_model_file(name, path)?;
        if opts.backend == Backend::Tract && opts.device != Device::Cpu {
            return Err(ModelError::Device {
                model: name.to_owned(),
                device: opts.device,
                message:
                    "the tract backend runs on the CPU only; use `backend: ort` for other devices"
                        .into(),
            });
        }
        if !opts.device.is_compiled() {
            return Err(ModelError::DeviceNotCompiled {
                model: name.to_owned(),
                device: opts.device,
            });
        }
        let loaded = match opts.backend {
            Backend::Ort => crate::ort_backend::load(name, path, opts)?,
            Backend::Tract => crate::tract_backend::load(name, path, opts)?,
        };
        let Loaded {
            engine,
            inputs,
            outputs,
            metadata,
        } = loaded;
        if inputs.is_empty() || outputs.is_empty() {
            return Err(ModelError::Load {
                model: name.to_owned(),
                path: path.display().to_string(),
                message: format!(
                    "the graph has {} inputs and {} outputs; it needs at least one of each",
                    inputs.len(),
                    outputs.len()
                ),
            });
        }
        tracing::info!(
            model = %name,
            path = %path.display(),
            backend = %opts.backend,
            device = %opts.device,
            inputs = %fmt_names(&inputs),
            "model loaded"
        );
        Ok(Graph {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                path: path.to_owned(),
                opts: *opts,
                inputs,
                outputs,
                metadata,
                engine,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn backend(&self) -> Backend {
        self.inner.opts.backend
    }

    pub fn device(&self) -> Device {
        self.inner.opts.device
    }

    pub fn options(&self) -> &GraphOptions {
        &self.inner.opts
    }

    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inner.inputs
    }

    pub fn outputs(&self) -> &[TensorInfo] {
        &self.inner.outputs
    }

    /// A custom value from the ONNX file's `metadata_props` (e.g. `character`, the PP-OCR
    /// recogniser's character list); `None` when the file has no such key. Read once at load,
    /// the same for every backend.
    pub fn metadata(&self, key: &str) -> Option<String> {
        self.inner.metadata.get(key).cloned()
    }

    /// Every custom key of the file's `metadata_props`, sorted.
    pub fn metadata_keys(&self) -> impl Iterator<Item = &str> {
        self.inner.metadata.keys().map(String::as_str)
    }

    /// Whether two handles share one loaded graph.
    pub fn ptr_eq(a: &Graph, b: &Graph) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// Runs the graph; inputs by name (a graph with one input also accepts an empty name);
    /// returns every output by name, in the order of [`Graph::outputs`].
    pub fn run(
        &self,
        inputs: &[(&str, TensorView<'_>)],
    ) -> Result<Vec<(String, HostTensor)>, ModelError> {
        let ordered = self.check_inputs(inputs)?;
        let mut out = Vec::with_capacity(self.inner.outputs.len());
        let outputs = &self.inner.outputs;
        self.run_ordered(&ordered, &mut |ix, shape, data| {
            let name = outputs.get(ix).map_or_else(String::new, |o| o.name.clone());
            out.push((
                name,
                HostTensor {
                    shape: shape.to_vec(),
                    ty: data.ty(),
                    bytes: data.bytes().to_vec(),
                },
            ));
            Ok(())
        })?;
        Ok(out)
    }

    /// Convenience for the f32 single-input / first-output case: the input reaches ONNX Runtime
    /// without a copy; the first output is copied once.
    pub fn run_f32(&self, input: &Tensor) -> Result<Tensor, ModelError> {
        self.run_first_f32(TensorView::from_f32(&input.shape, &input.data))
    }

    /// Runs a single-input graph on `input` and returns its first output (f32).
    pub fn run_first_f32(&self, input: TensorView<'_>) -> Result<Tensor, ModelError> {
        let ordered = self.check_inputs(&[("", input)])?;
        let mut first = None;
        self.run_ordered(&ordered, &mut |ix, shape, data| {
            if ix != 0 {
                return Ok(());
            }
            let OutData::F32(values) = data else {
                return Err(format!(
                    "output `{}` is {}, not f32",
                    self.inner.outputs[0].name,
                    data.ty()
                ));
            };
            let tensor = Tensor::new(shape.to_vec(), values.to_vec()).map_err(|e| e.to_string())?;
            first = Some(tensor);
            Ok(())
        })?;
        first.ok_or_else(|| self.run_error("the graph returned no outputs".into()))
    }

    fn run_ordered(
        &self,
        inputs: &[TensorView<'_>],
        sink: &mut OutputSink<'_>,
    ) -> Result<(), ModelError> {
        match &self.inner.engine {
            Engine::Ort(g) => g.run(&self.inner.inputs, inputs, sink),
            Engine::Tract(g) => g.run(inputs, sink),
        }
        .map_err(|message| self.run_error(message))
    }

    fn run_error(&self, message: String) -> ModelError {
        ModelError::Run {
            model: self.inner.name.clone(),
            message,
        }
    }

    fn input_error(&self, message: String) -> ModelError {
        ModelError::Input {
            model: self.inner.name.clone(),
            message,
        }
    }

    /// Matches the caller's inputs to the graph's (by name; every input exactly once) and checks
    /// element type, byte length and declared dimensions, so a mistake is named here rather
    /// than surfacing as a backend's message (or a panic) deep inside a kernel.
    fn check_inputs<'v>(
        &self,
        given: &[(&str, TensorView<'v>)],
    ) -> Result<Vec<TensorView<'v>>, ModelError> {
        let declared = &self.inner.inputs;
        let mut slots: Vec<Option<TensorView<'v>>> = vec![None; declared.len()];
        for (name, view) in given {
            let ix = if name.is_empty() && declared.len() == 1 {
                0
            } else if name.is_empty() {
                return Err(self.input_error(format!(
                    "an unnamed input needs a graph with one input; this one takes {}",
                    fmt_names(declared)
                )));
            } else {
                declared
                    .iter()
                    .position(|i| i.name == *name)
                    .ok_or_else(|| {
                        self.input_error(format!(
                            "no input named `{name}`; the graph takes {}",
                            fmt_names(declared)
                        ))
                    })?
            };
            let info = &declared[ix];
            let slot = &mut slots[ix];
            if slot.is_some() {
                return Err(self.input_error(format!("input `{}` is given twice", info.name)));
            }
            check_view(info, view).map_err(|m| self.input_error(m))?;
            *slot = Some(*view);
        }
        let mut ordered = Vec::with_capacity(slots.len());
        for (slot, info) in slots.into_iter().zip(declared) {
            let view =
                slot.ok_or_else(|| self.input_error(format!("input `{}` is missing", info.name)))?;
            ordered.push(view);
        }
        Ok(ordered)
    }
}

/// One input against what the graph declares for it.
fn check_view(info: &TensorInfo, view: &TensorView<'_>) -> Result<(), String> {
    let name = &info.name;
    if view.ty != info.ty {
        return Err(format!(
            "input `{name}` takes {} tensors, got {}",
            info.ty, view.ty
        ));
    }
    let bytes = view
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_mul(view.ty.size()));
    match bytes {
        Some(n) if n == view.bytes.len() => {}
        Some(n) => {
            return Err(format!(
                "input `{name}`: shape {:?} of {} needs {n} bytes, got {}",
                view.shape,
                view.ty,
                view.bytes.len()
            ));
        }
        None => {
            return Err(format!(
                "input `{name}`: shape {:?} is too large",
                view.shape
            ));
        }
    }
    // An empty declaration is a scalar or an undeclared shape; ONNX files do not tell them apart
    // here, so the backend checks those.
    if info.shape.is_empty() {
        return Ok(());
    }
    let fits = view.shape.len() == info.shape.len()
        && view
            .shape
            .iter()
            .zip(&info.shape)
            .all(|(&got, want)| want.is_none_or(|w| w == got));
    if !fits {
        return Err(format!(
            "input `{name}` has shape {:?}; the graph takes {}",
            view.shape,
            fmt_dims(&info.shape)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(shape: Vec<Option<usize>>) -> TensorInfo {
        TensorInfo {
            name: "x".into(),
            ty: ElementType::F32,
            shape,
        }
    }

    #[test]
    fn views_are_checked_against_the_declaration() {
        let data = [0f32; 6];
        let shape = [1, 2, 3];
        let ok = TensorView::from_f32(&shape, &data);
        assert!(check_view(&info(vec![None, Some(2), None]), &ok).is_ok());
        assert!(check_view(&info(vec![]), &ok).is_ok());
        let err = check_view(&info(vec![None, Some(3), None]), &ok).unwrap_err();
        assert!(err.contains("[?, 3, ?]"), "{err}");
        let short = TensorView {
            bytes: &ok.bytes[..20],
            ..ok
        };
        let err = check_view(&info(vec![]), &short).unwrap_err();
        assert!(err.contains("needs 24 bytes, got 20"), "{err}");
        let huge = [usize::MAX, 2];
        let err = check_view(&info(vec![]), &TensorView { shape: &huge, ..ok }).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let bytes = TensorView {
            ty: ElementType::U8,
            ..ok
        };
        let err = check_view(&info(vec![]), &bytes).unwrap_err();
        assert!(err.contains("takes f32 tensors, got u8"), "{err}");
    }

    #[test]
    fn a_model_file_that_is_not_a_regular_file_is_named_as_such() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("m.onnx");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        for (path, kind) in [
            (fifo.as_path(), "is a FIFO, not a regular file"),
            (dir.path(), "is a directory, not a regular file"),
            (Path::new("/dev/zero"), "is a device, not a regular file"),
        ] {
            let err = Graph::load("m", path, &GraphOptions::default()).unwrap_err();
            assert!(matches!(err, ModelError::Read { .. }), "{err}");
            assert!(err.to_string().ends_with(kind), "{err}");
        }
        let err =
            Graph::load("m", &dir.path().join("nope.onnx"), &GraphOptions::default()).unwrap_err();
        assert!(matches!(err, ModelError::MissingFile { .. }), "{err}");
    }

    #[test]
    fn feature_names_match_the_devices() {
        assert_eq!(Device::Cpu.feature(), None);
        assert_eq!(Device::TensorRt.feature(), Some("tensorrt"));
        assert!(Device::Cpu.is_compiled());
        assert_eq!(Device::Cuda.is_compiled(), cfg!(feature = "cuda"));
    }
}
