//! Wasm operator component for cascades: detections in, one `[N, 3, height, width]` f32 tensor
//! of their crops out (each resized, optionally keeping its aspect ratio, and normalised), with
//! one transform per crop mapping its coordinates back to the frame.
//!
//! The frame (rgb8) stays on the host: for each box only the rows it touches are copied in, with
//! `frame.read`, so a few small boxes on a large frame cost a fraction of a full-frame copy.

use panoptes_op_preprocess::crop::{self, Crop};
use panoptes_op_preprocess::{Normalize, PreprocessError};
use panoptes_operator_sdk::{
    Error, Frame, Input, Operator, Output, PixelFormat, Tensor, TensorOutput, Transform,
};
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
    crop: Crop,
    max_crops: usize,
}

impl Operator for CropOperator {
    fn init(config: &str) -> Result<Self, Error> {
        let (crop, max_crops) = Config::parse(config)?;
        Ok(Self { crop, max_crops })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<Output, Error> {
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
        let expected = u64::from(width) * u64::from(height) * 3;
        let actual = frame.byte_len();
        if actual != expected {
            return Err(Error::InvalidInput(format!(
                "{}: pixel buffer has {actual} bytes, but a {width}x{height} RGB8 frame needs \
                 {expected} bytes",
                where_()
            )));
        }
        let regions = crop::select(
            detections
                .iter()
                .map(|d| ([d.x1, d.y1, d.x2, d.y2], d.score)),
            width,
            height,
            self.max_crops,
        );
        let mut data = Vec::with_capacity(regions.len() * self.crop.crop_len());
        let mut transforms = Vec::with_capacity(regions.len());
        for region in &regions {
            let rows = region.row_range(width);
            let bytes = frame
                .read(rows.start as u64, rows.len() as u64)
                .map_err(|e| Error::InvalidInput(format!("{}: {e}", where_())))?;
            let t = self.crop.append(&bytes, width, region, &mut data).map_err(
                |e: PreprocessError| {
                    if e.is_input() {
                        Error::InvalidInput(format!("{}: {e}", where_()))
                    } else {
                        Error::Internal(e.to_string())
                    }
                },
            )?;
            transforms.push(Transform {
                scale_x: t.scale_x,
                scale_y: t.scale_y,
                offset_x: t.offset_x,
                offset_y: t.offset_y,
            });
        }
        let tensor = Tensor::new("", &self.crop.output_shape(regions.len()), data)?;
        Ok(Output::Tensors(TensorOutput {
            tensors: vec![tensor],
            transforms,
        }))
    }
}

// It takes detections, and crops them from the frame's RGB8 pixels.
panoptes_operator_sdk::export_operator!(CropOperator, accepts: [Rgb8]);

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
