//! The tract backend: pure-Rust CPU inference. tract plans (optimises) a graph for concrete
//! input shapes, so each input shape seen gets its own plan, made on first use and cached.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use tract_linalg::multithread::Executor;
use tract_onnx::model::ParseResult;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::ensure;
use tract_onnx::tract_core::runtime::RunOptions;

use crate::ModelError;
use crate::graph::{
    ElementType, Engine, GraphOptions, Loaded, OutData, OutputSink, TensorInfo, TensorView,
};

/// Plans kept per graph. Every distinct input shape costs one optimisation (0.15 to 0.5 s for the
/// PP-OCR models on a 2-core machine) and a plan's memory; a caller cycling through more shapes
/// than this evicts the least recently used.
const MAX_PLANS: usize = 16;

/// What a per-shape plan is made from.
enum Source {
    /// The graph typed and decluttered once, dynamic dimensions as symbols (graphs with fixed
    /// input shapes, like ddddocr's YOLOX detector, or a dynamic batch only); a shape binds the
    /// symbols and optimises.
    Typed(TypedModel),
    /// Graphs whose symbolic shapes tract cannot analyse (the PP-OCR detector, recogniser and
    /// classifier, with dynamic height and width): kept as parsed, and typed from scratch with
    /// each shape's concrete input facts.
    Inference(InferenceModel),
}

type Plan = Arc<TypedRunnableModel>;
/// A plan being made or made, or why it cannot be: the same shape gives the same answer, so a
/// failure is kept too. Concurrent first callers of one shape wait for one optimisation.
type PlanCell = Arc<OnceLock<Result<Plan, String>>>;

#[derive(Default)]
struct Plans {
    by_shapes: HashMap<Vec<Vec<usize>>, (PlanCell, u64)>,
    clock: u64,
}

pub(crate) struct TractGraph {
    source: Source,
    input_types: Vec<DatumType>,
    run_options: RunOptions,
    /// The map is only locked to find or add a shape's cell, never while optimising or running.
    plans: Mutex<Plans>,
}

pub(crate) fn load(name: &str, path: &Path, opts: &GraphOptions) -> Result<Loaded, ModelError> {
    let fail = |message: String| ModelError::Load {
        model: name.to_owned(),
        path: path.display().to_string(),
        message,
    };
    let unsupported = |message: String| ModelError::Unsupported {
        model: name.to_owned(),
        message,
    };
    // The file's own declarations describe the graph, as ONNX Runtime reports them; tract's
    // parsed model leaves output types and shapes open (it does not trust them for analysis).
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_path(path)
        .map_err(|e| fail(format!("{e:#}")))?;
    let dir = path.parent().and_then(Path::to_str);
    let ParseResult {
        model: parsed,
        unresolved_inputs,
        ..
    } = onnx
        .parse(&proto, dir)
        .map_err(|e| fail(format!("{e:#}")))?;
    if !unresolved_inputs.is_empty() {
        return Err(fail(format!(
            "the graph uses values nothing defines: {unresolved_inputs:?}"
        )));
    }
    let declared = |name: &str, list: &[pb::ValueInfoProto]| {
        let info = list.iter().find(|v| v.name == name);
        describe(name, info)
    };
    let graph = proto.graph.as_ref();
    let no_values = Vec::new();
    let (proto_inputs, proto_outputs) =
        graph.map_or((&no_values, &no_values), |g| (&g.input, &g.output));
    let mut inputs = Vec::new();
    for outlet in parsed.input_outlets().map_err(|e| fail(format!("{e:#}")))? {
        let name = &parsed.node(outlet.node).name;
        inputs.push(declared(name, proto_inputs).map_err(|m| unsupported(format!("input {m}")))?);
    }
    let input_types = inputs.iter().map(|i| datum_type(i.ty)).collect();
    let mut outputs = Vec::new();
    for outlet in parsed
        .output_outlets()
        .map_err(|e| fail(format!("{e:#}")))?
    {
        let name = parsed
            .outlet_label(*outlet)
            .unwrap_or(&parsed.node(outlet.node).name);
        outputs
            .push(declared(name, proto_outputs).map_err(|m| unsupported(format!("output {m}")))?);
    }
    // Later duplicates win, as in ONNX Runtime's custom metadata map.
    let metadata = proto
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    let typed = symbolic(&parsed, &inputs).and_then(|m| m.into_typed()?.into_decluttered());

    let source = match typed {
        Ok(typed) => Source::Typed(typed),
        Err(e) => {
            tracing::debug!(model = %name, cause = %format!("{e:#}"), "tract: symbolic shapes do not analyse; planning per input shape from the ONNX graph");
            Source::Inference(parsed)
        }
    };
    let run_options = RunOptions {
        executor: executor(opts.threads).map_err(fail)?,
        ..RunOptions::default()
    };
    Ok(Loaded {
        engine: Engine::Tract(Box::new(TractGraph {
            source,
            input_types,
            run_options,
            plans: Mutex::new(Plans::default()),
        })),
        inputs,
        outputs,
        metadata,
    })
}

/// The parsed graph with its inputs' declared types and shapes, dynamic dimensions as symbols:
/// tract's parser leaves inputs with `?` dimensions undetermined, and typing needs them.
fn symbolic(parsed: &InferenceModel, inputs: &[TensorInfo]) -> TractResult<InferenceModel> {
    let mut model = parsed.clone();
    for (ix, info) in inputs.iter().enumerate() {
        if info.shape.is_empty() {
            continue;
        }
        let dims: TVec<TDim> = info
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| match d {
                Some(v) => i64::try_from(*v).map(TDim::Val),
                None => Ok(TDim::Sym(model.sym(&format!("input{ix}_axis{axis}")))),
            })
            .collect::<Result<_, _>>()?;
        model.set_input_fact(ix, InferenceFact::dt_shape(datum_type(info.ty), dims))?;
    }
    Ok(model)
}

/// tract's matrix products run on the executor of the plan: one thread unless told otherwise.
/// `threads: 0` means one per core, as it does for ONNX Runtime.
fn executor(threads: usize) -> Result<Option<Executor>, String> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if threads <= 1 {
        return Ok(None);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("tract-{i}"))
        .build()
        .map_err(|e| format!("cannot start {threads} tract threads: {e}"))?;
    Ok(Some(Executor::MultiThread(Arc::new(pool))))
}

/// What the ONNX file declares for one input or output.
fn describe(name: &str, info: Option<&pb::ValueInfoProto>) -> Result<TensorInfo, String> {
    let Some(pb::type_proto::Value::TensorType(tensor)) = info
        .and_then(|i| i.r#type.as_ref())
        .and_then(|t| t.value.as_ref())
    else {
        return Err(format!("`{name}` is not declared as a tensor"));
    };
    use pb::tensor_proto::DataType;
    let ty = match DataType::try_from(tensor.elem_type) {
        Ok(DataType::Float) => ElementType::F32,
        Ok(DataType::Uint8) => ElementType::U8,
        Ok(DataType::Int32) => ElementType::I32,
        Ok(DataType::Int64) => ElementType::I64,
        other => {
            let what =
                other.map_or_else(|_| format!("#{}", tensor.elem_type), |t| format!("{t:?}"));
            return Err(format!(
                "`{name}` has elements of type {what}; panoptes handles f32, u8, i32 and i64"
            ));
        }
    };
    use pb::tensor_shape_proto::dimension::Value;
    let shape = tensor.shape.as_ref().map_or_else(Vec::new, |s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(v)) => usize::try_from(v).ok(),
                _ => None,
            })
            .collect()
    });
    Ok(TensorInfo {
        name: name.to_owned(),
        ty,
        shape,
    })
}

fn datum_type(ty: ElementType) -> DatumType {
    match ty {
        ElementType::F32 => DatumType::F32,
        ElementType::U8 => DatumType::U8,
        ElementType::I32 => DatumType::I32,
        ElementType::I64 => DatumType::I64,
    }
}

impl TractGraph {
    pub(crate) fn run(
        &self,
        inputs: &[TensorView<'_>],
        sink: &mut OutputSink<'_>,
    ) -> Result<(), String> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|v| v.shape.to_vec()).collect();
        let plan = self.plan(shapes)?;
        let values = inputs
            .iter()
            .map(|v| to_tensor(v).map(IntoTValue::into_tvalue))
            .collect::<TractResult<TVec<TValue>>>()
            .map_err(|e| format!("{e:#}"))?;
        let outputs = plan.run(values).map_err(|e| format!("{e:#}"))?;
        for (ix, out) in outputs.iter().enumerate() {
            emit(ix, out, sink)?;
        }
        Ok(())
    }

    fn plan(&self, shapes: Vec<Vec<usize>>) -> Result<Plan, String> {
        let cell = {
            let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
            plans.clock += 1;
            let now = plans.clock;
            if let Some((cell, used)) = plans.by_shapes.get_mut(&shapes) {
                *used = now;
                cell.clone()
            } else {
                if plans.by_shapes.len() >= MAX_PLANS {
                    let oldest = plans
                        .by_shapes
                        .iter()
                        .min_by_key(|(_, (_, used))| *used)
                        .map(|(k, _)| k.clone());
                    if let Some(oldest) = oldest {
                        plans.by_shapes.remove(&oldest);
                    }
                }
                let cell = PlanCell::default();
                plans.by_shapes.insert(shapes.clone(), (cell.clone(), now));
                cell
            }
        };
        cell.get_or_init(|| {
            let started = Instant::now();
            let plan = self
                .specialise(&shapes)
                .map_err(|e| format!("cannot plan for input shapes {shapes:?}: {e:#}"));
            tracing::debug!(
                ?shapes,
                ms = started.elapsed().as_secs_f64() * 1e3,
                ok = plan.is_ok(),
                "tract: planned"
            );
            plan
        })
        .clone()
    }

    fn specialise(&self, shapes: &[Vec<usize>]) -> TractResult<Plan> {
        let typed = match &self.source {
            Source::Typed(model) => {
                let mut symbols = HashMap::new();
                for (ix, shape) in shapes.iter().enumerate() {
                    let fact = model.input_fact(ix)?;
                    ensure!(
                        fact.rank() == shape.len(),
                        "input {ix} has rank {}, not {}",
                        fact.rank(),
                        shape.len()
                    );
                    for (dim, &value) in fact.shape.dims().iter().zip(shape) {
                        if let TDim::Sym(sym) = dim {
                            let value = TDim::Val(i64::try_from(value)?);
                            if let Some(bound) = symbols.insert(sym.clone(), value.clone()) {
                                ensure!(
                                    bound == value,
                                    "dimension {sym} is both {bound} and {value}"
                                );
                            }
                        }
                    }
                }
                let bound = model.set_symbols(&symbols)?;
                for (ix, shape) in shapes.iter().enumerate() {
                    let fact = bound.input_fact(ix)?;
                    ensure!(
                        fact.shape.as_concrete() == Some(shape.as_slice()),
                        "input {ix} takes {:?}, not {shape:?}",
                        fact.shape
                    );
                }
                bound
            }
            Source::Inference(model) => {
                let mut model = model.clone();
                for (ix, shape) in shapes.iter().enumerate() {
                    let dt = self.input_types.get(ix).copied().unwrap_or(DatumType::F32);
                    model.set_input_fact(ix, InferenceFact::dt_shape(dt, shape.iter().copied()))?;
                }
                model.into_typed()?
            }
        };
        typed
            .into_optimized()?
            .into_runnable_with_options(&self.run_options)
    }
}

/// One copy into tract's own (SIMD-aligned) buffer; a misaligned view costs a second one.
fn to_tensor(view: &TensorView<'_>) -> TractResult<Tensor> {
    fn typed<T: Datum + Copy + bytemuck::Pod>(view: &TensorView<'_>) -> TractResult<Tensor> {
        let data: Cow<'_, [T]> = match bytemuck::try_cast_slice(view.bytes) {
            Ok(data) => Cow::Borrowed(data),
            Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(view.bytes)),
        };
        Tensor::from_shape(view.shape, &data)
    }
    match view.ty {
        ElementType::F32 => typed::<f32>(view),
        ElementType::U8 => typed::<u8>(view),
        ElementType::I32 => typed::<i32>(view),
        ElementType::I64 => typed::<i64>(view),
    }
}

fn emit(ix: usize, out: &TValue, sink: &mut OutputSink<'_>) -> Result<(), String> {
    let fail = |e: TractError| format!("output {ix}: {e:#}");
    let plain = out.try_as_plain_ram().map_err(fail)?;
    let shape = out.shape();
    match out.datum_type() {
        DatumType::F32 => sink(
            ix,
            shape,
            OutData::F32(plain.as_slice::<f32>().map_err(fail)?),
        ),
        DatumType::U8 => sink(
            ix,
            shape,
            OutData::U8(plain.as_slice::<u8>().map_err(fail)?),
        ),
        DatumType::I32 => sink(
            ix,
            shape,
            OutData::I32(plain.as_slice::<i32>().map_err(fail)?),
        ),
        DatumType::I64 => sink(
            ix,
            shape,
            OutData::I64(plain.as_slice::<i64>().map_err(fail)?),
        ),
        other => Err(format!(
            "output {ix} has elements of type {other:?}; panoptes handles f32, u8, i32 and i64"
        )),
    }
}
