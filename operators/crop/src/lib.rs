//! Wasm operator component for cascades: detections in, one `[N, 3, height, width]` f32 tensor
//! of their crops out (each resized, optionally keeping its aspect ratio, and normalised), with
//! one transform per crop mapping its coordinates back to the frame.
//!
//! The operator picks the boxes (those inside the frame, the best `max_crops`); the host's `crop`
//! kernel crops them from the frame it holds, and the batch stays on the host, so neither the
//! frame nor the crops are copied through the operator.

use panoptes_op_preprocess::Normalize;
use panoptes_op_preprocess::crop::{self, Crop};
use panoptes_operator_sdk::kernels::{
    self, CropParams, HostTensorOutput, KernelOperator, KernelOutput, Normalization,
};
use panoptes_operator_sdk::{Error, Frame, Input, PixelFormat};
use serde::Deserialize;

/// Most crops `max_crops` may ask for.
pub const MAX_CROPS_LIMIT: u32 = 1024;

/// Operator configuration (JSON).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Width of each crop in the tensor (required).
    pub width: u32,
    /// Height of each crop in the tensor (required).
    pub height: u32,
    /// Scale each box to fit and pad right and bottom (black before normalisation), instead of
    /// stretching it.
    #[serde(default)]
    pub keep_aspect: bool,
    /// Per-channel (R, G, B) mean in the 0..1 range of `value / 255`. Without `mean` and `std`
    /// the tensor holds the 0..255 values; with either one it holds `(value / 255 - mean) / std`,
    /// `mean` defaulting to 0 and `std` to 1.
    #[serde(default)]
    pub mean: Option<[f32; 3]>,
    /// Per-channel standard deviation (non-zero).
    #[serde(default)]
    pub std: Option<[f32; 3]>,
    /// Most boxes cropped per frame; with more, the highest-scoring are kept (in input order).
    #[serde(default = "default_max_crops")]
    pub max_crops: u32,
}

fn default_max_crops() -> u32 {
    32
}

impl Config {
    /// Parses and validates the configuration.
    pub fn parse(json: &str) -> Result<(Crop, usize), Error> {
        let c: Config = panoptes_operator_sdk::config(json)?;
        let invalid = |e: String| Error::InvalidConfig(format!("invalid crop config: {e}"));
        let norm = match (c.mean, c.std) {
            (None, None) => Normalize::RAW,
            (mean, std) => Normalize::new(mean.unwrap_or([0.0; 3]), std.unwrap_or([1.0; 3]))
                .map_err(|e| invalid(e.to_string()))?,
        };
        let crop = Crop::new(c.width, c.height, c.keep_aspect, norm)
            .map_err(|e| invalid(format!("`width`/`height`: {e}")))?;
        if c.max_crops == 0 || c.max_crops > MAX_CROPS_LIMIT {
            return Err(invalid(format!(
                "`max_crops` is {}, must be between 1 and {MAX_CROPS_LIMIT}",
                c.max_crops
            )));
        }
        // The whole batch must stay addressable in 32-bit Wasm memory (2 GiB of f32 at most).
        let batch_bytes = u64::from(c.max_crops) * crop.crop_len() as u64 * 4;
        if batch_bytes > 1 << 31 {
            return Err(invalid(format!(
                "`max_crops` x `width` x `height` makes a {batch_bytes}-byte batch, over 2 GiB"
            )));
        }
        Ok((crop, c.max_crops as usize))
    }
}

/// The operator: detections plus the frame in, a batch of crops out.
pub struct CropOperator {
    params: CropParams,
    max_crops: usize,
}

impl KernelOperator for CropOperator {
    fn init(config: &str) -> Result<Self, Error> {
        // Validated as the kernel will build it, so a bad configuration fails the stage's start.
        let (_, max_crops) = Config::parse(config)?;
        let c: Config = panoptes_operator_sdk::config(config)?;
        let normalization = match (c.mean, c.std) {
            (None, None) => None,
            (mean, std) => Some(Normalization::new(
                mean.unwrap_or([0.0; 3]),
                std.unwrap_or([1.0; 3]),
            )),
        };
        Ok(Self {
            params: CropParams {
                width: c.width,
                height: c.height,
                keep_aspect: c.keep_aspect,
                normalization,
            },
            max_crops,
        })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<KernelOutput, Error> {
        let where_ = || format!("frame {} of camera {}", frame.seq(), frame.camera());
        let detections = match input {
            Input::Detections(d) => d,
            other => {
                return Err(Error::InvalidInput(format!(
                    "{}: crop takes detections as input, got {}",
                    where_(),
                    if matches!(other, Input::Frame) {
                        "the frame"
                    } else {
                        "tensors"
                    }
                )));
            }
        };
        let format = frame.format();
        if format != PixelFormat::Rgb8 {
            return Err(Error::InvalidInput(format!(
                "{}: crop needs an rgb8 frame, got {format:?}; convert or decode it first",
                where_()
            )));
        }
        let (width, height) = (frame.width(), frame.height());
        let boxes: Vec<[f32; 4]> = detections
            .iter()
            .map(|d| [d.x1, d.y1, d.x2, d.y2])
            .collect();
        let kept = crop::select_indexed(
            boxes.iter().zip(&detections).map(|(b, d)| (*b, d.score)),
            width,
            height,
            self.max_crops,
        );
        let picked: Vec<(f32, f32, f32, f32)> = kept
            .iter()
            .filter_map(|(i, _)| boxes.get(*i))
            .map(|&[x1, y1, x2, y2]| (x1, y1, x2, y2))
            .collect();
        let (tensor, transforms) = kernels::crop(frame, &picked, self.params)?;
        Ok(KernelOutput::HostTensors(HostTensorOutput {
            tensors: vec![tensor],
            transforms,
        }))
    }
}

panoptes_operator_sdk::export_kernel_operator!(CropOperator, accepts: [Rgb8]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        let (crop, max) = Config::parse(r#"{"width": 48, "height": 32}"#).unwrap();
        assert_eq!(max, 32);
        assert_eq!(crop.output_shape(2), [2, 3, 32, 48]);
        let (_, max) = Config::parse(
            r#"{"width": 8, "height": 8, "keep_aspect": true, "mean": [0.5, 0.5, 0.5],
                "max_crops": 4}"#,
        )
        .unwrap();
        assert_eq!(max, 4);
    }

    #[test]
    fn bad_config_names_the_field() {
        for (json, needle) in [
            (r#"{"width": 8}"#, "missing field `height`"),
            (
                r#"{"width": 8, "height": 8, "max_crop": 3}"#,
                "unknown field `max_crop`",
            ),
            (
                r#"{"width": 8, "height": 8, "max_crops": 0}"#,
                "`max_crops` is 0",
            ),
            (r#"{"width": 8, "height": 0}"#, "`width`/`height`"),
            (r#"{"width": 8, "height": 8, "std": [0, 1, 1]}"#, "std[0]"),
            (
                r#"{"width": 16384, "height": 16384, "max_crops": 1024}"#,
                "over 2 GiB",
            ),
        ] {
            match Config::parse(json) {
                Err(Error::InvalidConfig(m)) => assert!(m.contains(needle), "{json}: {m}"),
                Err(other) => panic!("{json}: {other:?}"),
                Ok(_) => panic!("{json}: accepted"),
            }
        }
    }
}
