//! Running models on the host's kernels (ONNX Runtime or tract, CPU or accelerator) through
//! the standard `wasi:nn` interface. Only models the topology lists for the stage can be loaded.

use crate::Error;
use crate::bindings::wasi::nn::errors::Error as NnError;
use crate::bindings::wasi::nn::graph::{Graph, load_by_name};
use crate::bindings::wasi::nn::inference::GraphExecutionContext;
use crate::bindings::wasi::nn::tensor::{Tensor as NnTensor, TensorType};

pub use crate::bindings::wasi::nn as raw;

/// A named model and an execution context for it.
pub struct Model {
    name: String,
    // The context borrows nothing from the graph in WIT terms, but the host keeps the graph
    // alive through it; holding both keeps that relationship obvious.
    _graph: Graph,
    context: GraphExecutionContext,
}

/// One f32 output of [`Model::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Model {
    /// Loads a model the topology declares (and lists in this stage's `models`).
    pub fn load(name: &str) -> Result<Self, Error> {
        let graph = load_by_name(name).map_err(|e| nn_error(name, "load", &e))?;
        let context = graph
            .init_execution_context()
            .map_err(|e| nn_error(name, "init-execution-context", &e))?;
        Ok(Self {
            name: name.to_owned(),
            _graph: graph,
            context,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the model on f32 inputs (`(name, shape, data)`; the name may be empty for a model
    /// with one input) and returns its f32 outputs. Non-f32 outputs are an error; use [`raw`]
    /// for other element types.
    pub fn run(&self, inputs: &[(&str, &[usize], &[f32])]) -> Result<Vec<Output>, Error> {
        let mut named = Vec::with_capacity(inputs.len());
        for (input, shape, data) in inputs {
            let dims = shape
                .iter()
                .map(|&d| u32::try_from(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    Error::InvalidInput(format!("input {input:?}: shape {shape:?} is too large"))
                })?;
            let tensor = NnTensor::new(&dims, TensorType::Fp32, &f32_bytes(data));
            named.push(((*input).to_owned(), tensor));
        }
        let outputs = self
            .context
            .compute(named)
            .map_err(|e| nn_error(&self.name, "compute", &e))?;
        outputs
            .into_iter()
            .map(|(name, tensor)| {
                if tensor.ty() != TensorType::Fp32 {
                    return Err(Error::Internal(format!(
                        "model {}: output {name:?} is {:?}, not FP32",
                        self.name,
                        tensor.ty()
                    )));
                }
                let shape = tensor.dimensions().iter().map(|&d| d as usize).collect();
                let data = f32_from_bytes(&tensor.data());
                Ok(Output { name, shape, data })
            })
            .collect()
    }
}

fn nn_error(model: &str, call: &str, e: &NnError) -> Error {
    Error::Internal(format!(
        "model {model}: wasi:nn {call} failed ({:?}): {}",
        e.code(),
        e.data()
    ))
}

/// Little-endian bytes of `data`. Wasm is little-endian, so this is a plain copy.
fn f32_bytes(data: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(data.len() * 4);
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

fn f32_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_bytes_round_trip() {
        let v = [0.0f32, -1.5, f32::MAX, 3.25e-7];
        assert_eq!(f32_from_bytes(&f32_bytes(&v)), v);
    }
}
