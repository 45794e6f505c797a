//! Wasm operator component: per-channel normalisation, `(value / 255 - mean) / std`, without
//! resizing.
//!
//! Input is either the frame (rgb8), which becomes a `[1, 3, H, W]` f32 tensor, or one
//! `[N, 3, H, W]` f32 tensor of 0..255 values (e.g. from `resize` with `"output": "tensor"`),
//! normalised in place. Coordinates are unchanged, so no transform is reported.

use panoptes_op_preprocess::{Normalize, PreprocessError, normalize};
use panoptes_operator_sdk::kernels::{self, KernelOperator, KernelOutput, Normalization};
use panoptes_operator_sdk::{Error, Frame, Input, Output, PixelFormat, Tensor};
use serde::Deserialize;

/// Operator configuration (JSON). Every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Per-channel (R, G, B) mean, in the 0..1 range of `value / 255`.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation; must be non-zero.
    pub std: [f32; 3],
}

impl Default for Config {
    /// The same defaults as `letterbox` (PP-OCR's 0.5 / 0.5).
    fn default() -> Self {
        Self {
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }
}

impl Config {
    /// Parses and validates the configuration.
    pub fn parse(json: &str) -> Result<Normalize, Error> {
        Self::read(json).map(|(norm, _)| norm)
    }

    /// Parses and validates the configuration, with the host kernel's parameters.
    pub fn read(json: &str) -> Result<(Normalize, Normalization), Error> {
        let c: Config = panoptes_operator_sdk::config(json)?;
        let norm = Normalize::new(c.mean, c.std)
            .map_err(|e| Error::InvalidConfig(format!("invalid normalize config: {e}")))?;
        Ok((norm, Normalization::new(c.mean, c.std)))
    }
}

/// The operator: a frame or a 0..255 tensor in, a normalised tensor out.
/// A frame is normalised by the host's kernel, and the tensor stays on the host; a tensor input
/// (already in the operator) is normalised here, in place.
pub struct NormalizeOperator {
    norm: Normalize,
    params: Normalization,
}

impl KernelOperator for NormalizeOperator {
    fn init(config: &str) -> Result<Self, Error> {
        let (norm, params) = Config::read(config)?;
        Ok(Self { norm, params })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<KernelOutput, Error> {
        let where_ = || format!("frame {} of camera {}", frame.seq(), frame.camera());
        let kernel_error = |e: PreprocessError| {
            if e.is_input() {
                Error::InvalidInput(format!("{}: {e}", where_()))
            } else {
                Error::Internal(e.to_string())
            }
        };
        match input {
            Input::Frame => {
                let format = frame.format();
                if format != PixelFormat::Rgb8 {
                    return Err(Error::InvalidInput(format!(
                        "{}: normalize needs an rgb8 frame or a tensor, got a {format:?} frame; \
                         convert or decode it first",
                        where_()
                    )));
                }
                let tensor = kernels::normalize(frame, Some(self.params))?;
                Ok(KernelOutput::host_tensors(vec![tensor], None))
            }
            Input::Tensors(input) => {
                let count = input.tensors.len();
                let Ok([mut tensor]) = <[Tensor; 1]>::try_from(input.tensors) else {
                    return Err(Error::InvalidInput(format!(
                        "{}: normalize takes exactly one [N, 3, H, W] tensor, got {count}",
                        where_()
                    )));
                };
                let shape = tensor.dims();
                normalize::tensor_in_place(&shape, &mut tensor.data, &self.norm)
                    .map_err(kernel_error)?;
                Ok(KernelOutput::Output(Output::tensors(vec![tensor], None)))
            }
            Input::Detections(_) => Err(Error::InvalidInput(format!(
                "{}: normalize takes the frame or a tensor as input, got detections",
                where_()
            ))),
        }
    }
}

// Or tensors; a frame it reads must be RGB8.
panoptes_operator_sdk::export_kernel_operator!(NormalizeOperator, accepts: [Rgb8]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_fields() {
        let half = Normalize::new([0.5; 3], [0.5; 3]).unwrap();
        assert_eq!(Config::parse("").unwrap(), half);
        assert_eq!(Config::parse("{}").unwrap(), half);
        let imagenet =
            Config::parse(r#"{"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}"#)
                .unwrap();
        assert_ne!(imagenet, half);
    }

    #[test]
    fn bad_config_names_the_field() {
        for (json, needle) in [
            (r#"{"mena": [0, 0, 0]}"#, "unknown field `mena`"),
            (r#"{"std": [1, 1]}"#, "expected an array of length 3"),
            (r#"{"std": [1, 0, 1]}"#, "std[1]"),
        ] {
            match Config::parse(json) {
                Err(Error::InvalidConfig(m)) => assert!(m.contains(needle), "{json}: {m}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }
}
