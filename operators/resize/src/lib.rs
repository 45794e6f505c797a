//! Wasm operator component: bilinear resize of an RGB8 frame to `width x height` (the aspect
//! ratio is not kept; use `letterbox` for that).
//!
//! `"output": "image"` (the default) replaces the frame with the resized RGB8 image; later
//! coordinates then refer to the resized image, because an image output carries no transform.
//! `"output": "tensor"` gives a `[1, 3, height, width]` f32 tensor instead, with the transform
//! back to the frame, so detections made on it land on the original frame.

use panoptes_op_preprocess::Normalize;
use panoptes_op_preprocess::resize::Resize;
use panoptes_operator_sdk::kernels::{self, KernelOperator, KernelOutput, Normalization};
use panoptes_operator_sdk::{Error, Frame, Input, PixelFormat};
use serde::Deserialize;

/// What the operator produces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// The resized RGB8 image replaces the frame.
    #[default]
    Image,
    /// A `[1, 3, height, width]` f32 tensor and its transform.
    Tensor,
}

/// Operator configuration (JSON).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Output width in pixels (required).
    pub width: u32,
    /// Output height in pixels (required).
    pub height: u32,
    #[serde(default)]
    pub output: OutputKind,
    /// Tensor output only: per-channel (R, G, B) mean in the 0..1 range of `value / 255`.
    /// Without `mean` and `std` the tensor holds the 0..255 values; with either one it holds
    /// `(value / 255 - mean) / std`, `mean` defaulting to 0 and `std` to 1.
    #[serde(default)]
    pub mean: Option<[f32; 3]>,
    /// Tensor output only: per-channel standard deviation (non-zero).
    #[serde(default)]
    pub std: Option<[f32; 3]>,
}

impl Config {
    /// Parses and validates the configuration.
    pub fn parse(json: &str) -> Result<(Resize, Option<Normalize>), Error> {
        let c: Config = panoptes_operator_sdk::config(json)?;
        let invalid = |e: String| Error::InvalidConfig(format!("invalid resize config: {e}"));
        let resize = Resize::new(c.width, c.height)
            .map_err(|e| invalid(format!("`width`/`height`: {e}")))?;
        let norm = match c.output {
            OutputKind::Image if c.mean.is_some() || c.std.is_some() => {
                return Err(invalid(
                    "`mean` and `std` apply only to `\"output\": \"tensor\"`".into(),
                ));
            }
            OutputKind::Image => None,
            OutputKind::Tensor => Some(match (c.mean, c.std) {
                (None, None) => Normalize::RAW,
                (mean, std) => Normalize::new(mean.unwrap_or([0.0; 3]), std.unwrap_or([1.0; 3]))
                    .map_err(|e| invalid(e.to_string()))?,
            }),
        };
        Ok((resize, norm))
    }
}

/// The operator: an RGB8 frame in, a resized image or tensor out. The resize runs in the host's
/// kernel on the frame the host holds, and the result stays on the host.
pub struct ResizeOperator {
    width: u32,
    height: u32,
    /// `Some` for tensor output, with its normalisation (none: the 0..255 values).
    tensor: Option<Option<Normalization>>,
}

impl KernelOperator for ResizeOperator {
    fn init(config: &str) -> Result<Self, Error> {
        // Validated as the kernel will build it, so a bad configuration fails the stage's start.
        Config::parse(config)?;
        let c: Config = panoptes_operator_sdk::config(config)?;
        let tensor = match c.output {
            OutputKind::Image => None,
            OutputKind::Tensor => Some(match (c.mean, c.std) {
                (None, None) => None,
                (mean, std) => Some(Normalization::new(
                    mean.unwrap_or([0.0; 3]),
                    std.unwrap_or([1.0; 3]),
                )),
            }),
        };
        Ok(Self {
            width: c.width,
            height: c.height,
            tensor,
        })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<KernelOutput, Error> {
        let where_ = || format!("frame {} of camera {}", frame.seq(), frame.camera());
        match (&input, frame.format()) {
            (Input::Frame, PixelFormat::Rgb8) => {}
            (Input::Frame, other) => {
                return Err(Error::InvalidInput(format!(
                    "{}: resize needs an rgb8 frame, got {other:?}; convert or decode it first",
                    where_()
                )));
            }
            (other, _) => {
                return Err(Error::InvalidInput(format!(
                    "{}: resize takes the frame as input, got {}",
                    where_(),
                    input_kind(other)
                )));
            }
        }
        match self.tensor {
            None => Ok(KernelOutput::HostImage(kernels::resize_image(
                frame,
                self.width,
                self.height,
            )?)),
            Some(normalization) => {
                let (tensor, transform) =
                    kernels::resize_tensor(frame, self.width, self.height, normalization)?;
                Ok(KernelOutput::host_tensors(vec![tensor], Some(transform)))
            }
        }
    }
}

fn input_kind(input: &Input) -> &'static str {
    match input {
        Input::Frame => "the frame",
        Input::Tensors(_) => "tensors",
        Input::Detections(_) => "detections",
    }
}

panoptes_operator_sdk::export_kernel_operator!(ResizeOperator, accepts: [Rgb8]);

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(json: &str) -> String {
        match Config::parse(json) {
            Err(Error::InvalidConfig(m)) => m,
            Err(other) => panic!("{json}: expected InvalidConfig, got {other:?}"),
            Ok(_) => panic!("{json}: accepted"),
        }
    }

    #[test]
    fn parses_both_output_kinds() {
        let (r, norm) = Config::parse(r#"{"width": 320, "height": 200}"#).unwrap();
        assert_eq!(r.size(), (320, 200));
        assert_eq!(norm, None);
        let (r, norm) =
            Config::parse(r#"{"width": 64, "height": 32, "output": "tensor"}"#).unwrap();
        assert_eq!(r.tensor_shape(), [1, 3, 32, 64]);
        assert_eq!(norm, Some(Normalize::RAW));
        let (_, norm) = Config::parse(
            r#"{"width": 64, "height": 32, "output": "tensor", "std": [0.5, 0.5, 0.5]}"#,
        )
        .unwrap();
        assert_eq!(norm, Some(Normalize::new([0.0; 3], [0.5; 3]).unwrap()));
    }

    #[test]
    fn bad_config_names_the_field() {
        assert!(config_error(r#"{"width": 64}"#).contains("missing field `height`"));
        assert!(config_error(r#"{"width": 64, "height": 8, "heigth": 3}"#).contains("heigth"));
        assert!(config_error(r#"{"width": 0, "height": 8}"#).contains("`width`/`height`"));
        assert!(
            config_error(r#"{"width": 4, "height": 8, "output": "png"}"#)
                .contains("unknown variant `png`")
        );
        assert!(config_error(r#"{"width": 4, "height": 8, "mean": [0, 0, 0]}"#).contains("`mean`"));
        assert!(
            config_error(r#"{"width": 4, "height": 8, "output": "tensor", "std": [1, 0, 1]}"#)
                .contains("std[1]")
        );
    }
}
