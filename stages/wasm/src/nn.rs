//! The `wasi:nn` host kernel: model operators run ONNX graphs on the node's backends (ONNX
//! Runtime or tract, CPU or an execution provider) through `panoptes-model`. Graphs come only
//! from the process's model registry, by name, and only names granted to the stage resolve.

use std::sync::Arc;
use std::time::Instant;

use panoptes_model::{ElementType, Graph, HostTensor, ModelRegistry, TensorView};
use wasmtime::component::Resource;

use crate::instance::HostState;
use crate::instance::bindings::wasi::nn::{errors, graph, inference, tensor};

use errors::ErrorCode;
use tensor::TensorType;

/// A tensor the guest made or a graph returned: owned bytes, row-major, little-endian.
#[derive(Debug)]
pub struct NnTensor {
    dims: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}

/// A loaded graph, shared with every other instance that loaded the same model.
pub struct NnGraph {
    graph: Graph,
}

/// An execution context; contexts of one graph share its weights and sessions.
pub struct NnContext {
    graph: Graph,
}

/// A `wasi:nn` error: a code and a message naming the model and what went wrong.
#[derive(Debug)]
pub struct NnError {
    code: ErrorCode,
    data: String,
}

/// Per-instance `wasi:nn` state: which registry to load from and which names are granted.
pub(crate) struct NnState {
    registry: Option<Arc<ModelRegistry>>,
    granted: Vec<String>,
}

impl NnState {
    pub(crate) fn new(registry: Option<Arc<ModelRegistry>>, granted: &[String]) -> Self {
        Self {
            registry,
            granted: granted.to_vec(),
        }
    }
}

fn element_type(ty: TensorType) -> Option<ElementType> {
    match ty {
        TensorType::Fp32 => Some(ElementType::F32),
        TensorType::U8 => Some(ElementType::U8),
        TensorType::I32 => Some(ElementType::I32),
        TensorType::I64 => Some(ElementType::I64),
        TensorType::Fp16 | TensorType::Fp64 | TensorType::Bf16 => None,
    }
}

fn tensor_type(ty: ElementType) -> TensorType {
    match ty {
        ElementType::F32 => TensorType::Fp32,
        ElementType::U8 => TensorType::U8,
        ElementType::I32 => TensorType::I32,
        ElementType::I64 => TensorType::I64,
    }
}

impl HostState {
    fn nn_error(&mut self, code: ErrorCode, data: String) -> wasmtime::Result<Resource<NnError>> {
        tracing::debug!(?code, %data, "wasi:nn call failed");
        Ok(self.table.push(NnError { code, data })?)
    }
}

type NnResult<T> = wasmtime::Result<Result<T, Resource<NnError>>>;

impl tensor::Host for HostState {}

impl tensor::HostTensor for HostState {
    fn new(
        &mut self,
        dims: Vec<u32>,
        ty: TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<NnTensor>> {
        // Sizes are checked when the tensor is used, where the error can name the model.
        Ok(self.table.push(NnTensor { dims, ty, data })?)
    }

    fn dimensions(&mut self, t: Resource<NnTensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&t)?.dims.clone())
    }

    fn ty(&mut self, t: Resource<NnTensor>) -> wasmtime::Result<TensorType> {
        Ok(self.table.get(&t)?.ty)
    }

    fn data(&mut self, t: Resource<NnTensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&t)?.data.clone())
    }

    fn drop(&mut self, t: Resource<NnTensor>) -> wasmtime::Result<()> {
        self.table.delete(t)?;
        Ok(())
    }
}

impl graph::Host for HostState {
    fn load(
        &mut self,
        _builder: Vec<Vec<u8>>,
        _encoding: graph::GraphEncoding,
        _target: graph::ExecutionTarget,
    ) -> NnResult<Resource<NnGraph>> {
        let e = self.nn_error(
            ErrorCode::Security,
            "loading graphs from operator-supplied bytes is not allowed; declare the model in \
             the topology and use load-by-name"
                .into(),
        )?;
        Ok(Err(e))
    }

    fn load_by_name(&mut self, name: String) -> NnResult<Resource<NnGraph>> {
        if !self.nn.granted.contains(&name) {
            let granted = if self.nn.granted.is_empty() {
                "none".to_owned()
            } else {
                self.nn.granted.join(", ")
            };
            let e = self.nn_error(
                ErrorCode::NotFound,
                format!(
                    "model {name:?} is not granted to this stage (granted: {granted}); list it \
                     in the stage's `models`"
                ),
            )?;
            return Ok(Err(e));
        }
        let Some(registry) = self.nn.registry.clone() else {
            let e = self.nn_error(
                ErrorCode::NotFound,
                format!("model {name:?}: this worker has no model registry"),
            )?;
            return Ok(Err(e));
        };
        // Loading a model is host work, not guest time.
        let started = Instant::now();
        let loaded = registry.get(&name);
        self.credit_kernel_time(started.elapsed());
        match loaded {
            Ok(graph) => Ok(Ok(self.table.push(NnGraph { graph })?)),
            Err(err) => {
                let e = self.nn_error(ErrorCode::RuntimeError, err.to_string())?;
                Ok(Err(e))
            }
        }
    }
}

impl graph::HostGraph for HostState {
    fn init_execution_context(&mut self, g: Resource<NnGraph>) -> NnResult<Resource<NnContext>> {
        let graph = self.table.get(&g)?.graph.clone();
        Ok(Ok(self.table.push(NnContext { graph })?))
    }

    fn drop(&mut self, g: Resource<NnGraph>) -> wasmtime::Result<()> {
        self.table.delete(g)?;
        Ok(())
    }
}

impl inference::Host for HostState {}

impl inference::HostGraphExecutionContext for HostState {
    fn compute(
        &mut self,
        ctx: Resource<NnContext>,
        inputs: Vec<(String, Resource<NnTensor>)>,
    ) -> NnResult<Vec<(String, Resource<NnTensor>)>> {
        let graph = self.table.get(&ctx)?.graph.clone();
        // The guest handed the tensors over (own handles): take them out of the table.
        let mut owned = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            owned.push((name, self.table.delete(t)?));
        }
        let mut shapes = Vec::with_capacity(owned.len());
        for (name, t) in &owned {
            let Some(ty) = element_type(t.ty) else {
                let e = self.nn_error(
                    ErrorCode::UnsupportedOperation,
                    format!(
                        "model {}: input {name:?} is {:?}; the host runs FP32, U8, I32 and I64 \
                         tensors",
                        graph.name(),
                        t.ty
                    ),
                )?;
                return Ok(Err(e));
            };
            let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            shapes.push((ty, shape));
        }
        let views: Vec<(&str, TensorView<'_>)> = owned
            .iter()
            .zip(&shapes)
            .map(|((name, t), (ty, shape))| {
                (
                    name.as_str(),
                    TensorView {
                        shape,
                        ty: *ty,
                        bytes: &t.data,
                    },
                )
            })
            .collect();
        let started = Instant::now();
        let result = graph.run(&views);
        self.credit_kernel_time(started.elapsed());
        match result {
            Ok(outputs) => {
                let mut named = Vec::with_capacity(outputs.len());
                for (name, t) in outputs {
                    let res = self.table.push(host_tensor(t))?;
                    named.push((name, res));
                }
                Ok(Ok(named))
            }
            Err(err) => {
                let e = self.nn_error(ErrorCode::RuntimeError, err.to_string())?;
                Ok(Err(e))
            }
        }
    }

    fn drop(&mut self, ctx: Resource<NnContext>) -> wasmtime::Result<()> {
        self.table.delete(ctx)?;
        Ok(())
    }
}

fn host_tensor(t: HostTensor) -> NnTensor {
    NnTensor {
        dims: t
            .shape
            .iter()
            .map(|&d| u32::try_from(d).unwrap_or(u32::MAX))
            .collect(),
        ty: tensor_type(t.ty),
        data: t.bytes,
    }
}

impl errors::Host for HostState {}

impl errors::HostError for HostState {
    fn code(&mut self, e: Resource<NnError>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&e)?.code)
    }

    fn data(&mut self, e: Resource<NnError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.data.clone())
    }

    fn drop(&mut self, e: Resource<NnError>) -> wasmtime::Result<()> {
        self.table.delete(e)?;
        Ok(())
    }
}
