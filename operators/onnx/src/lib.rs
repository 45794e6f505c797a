//! Model operator: runs a named ONNX model (declared in the topology and granted to the stage)
//! on its input tensor through the host's `wasi:nn` kernels, and passes the outputs on. The
//! model runs natively on the node's backend; only the glue runs in Wasm.

use panoptes_operator_sdk::nn::Model;
use panoptes_operator_sdk::{Error, Frame, Input, Operator, Output, Tensor};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The model's name in the topology's `models` map.
    pub model: String,
    /// The graph input to bind (empty: the model's only input).
    #[serde(default)]
    pub input: String,
    /// Outputs to pass on, in order (empty: all of them, in the model's order).
    #[serde(default)]
    pub outputs: Vec<String>,
}

pub struct OnnxOperator {
    config: Config,
    /// Loaded at the first frame, not in `init`: `validate` instantiates operators without
    /// loading every model.
    model: Option<Model>,
}

impl Operator for OnnxOperator {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Config = panoptes_operator_sdk::config(config)?;
        if config.model.is_empty() {
            return Err(Error::InvalidConfig("`model` must name a model".into()));
        }
        Ok(Self {
            config,
            model: None,
        })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<Output, Error> {
        let Input::Tensors(input) = input else {
            return Err(Error::InvalidInput(format!(
                "frame {} of camera {}: the onnx operator takes tensors; put a preprocessing \
                 operator before it",
                frame.seq(),
                frame.camera()
            )));
        };
        let tensor = input.tensors.first().ok_or_else(|| {
            Error::InvalidInput(format!("frame {}: no input tensor", frame.seq()))
        })?;
        let model = match &mut self.model {
            Some(model) => model,
            None => self.model.insert(Model::load(&self.config.model)?),
        };
        let dims = tensor.dims();
        let outputs = model.run(&[(&self.config.input, &dims, &tensor.data)])?;
        let mut tensors = Vec::with_capacity(outputs.len());
        if self.config.outputs.is_empty() {
            for out in outputs {
                tensors.push(Tensor::new(out.name, &out.shape, out.data)?);
            }
        } else {
            let mut outputs = outputs;
            for want in &self.config.outputs {
                let i = outputs
                    .iter()
                    .position(|o| o.name == *want)
                    .ok_or_else(|| {
                        Error::InvalidConfig(format!(
                            "model {} has no output {want:?}",
                            self.config.model
                        ))
                    })?;
                let out = outputs.swap_remove(i);
                tensors.push(Tensor::new(out.name, &out.shape, out.data)?);
            }
        }
        // Pixel coordinates are unchanged by the model: no transform.
        Ok(Output::tensors(tensors, None))
    }
}

// It takes tensors and reads no frame.
panoptes_operator_sdk::export_operator!(OnnxOperator, accepts: []);
