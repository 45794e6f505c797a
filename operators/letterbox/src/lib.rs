//! Wasm operator component: letterbox + normalise a frame into a detector input tensor.
//!
//! Built with `--target wasm32-wasip2` this crate is the `letterbox` component; natively it is
//! the same operator code, so configuration parsing is unit-tested on the host.

use panoptes_op_preprocess::{Letterbox, Normalize, PreprocessError};
use panoptes_operator_sdk::{
    Error, Frame, Input, Operator, Output, PixelFormat, Tensor, Transform,
};
use serde::Deserialize;

/// Operator configuration, passed by the host to `init` as JSON. Every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Output tensor width (with `shape: frame`, the most).
    pub width: u32,
    /// Output tensor height (with `shape: frame`, the most).
    pub height: u32,
    /// `fixed`: every tensor is `width` x `height`; `frame`: the frame's aspect ratio within
    /// those limits, each side padded only up to a multiple of `multiple` (for models with
    /// dynamic height and width, such as PP-OCR's detector: a 16:9 frame under 640 gives
    /// 640x384, not 640x640).
    pub shape: Shape,
    /// With `shape: frame`, each side is a multiple of this (width and height must be too).
    pub multiple: u32,
    /// Per-channel (R, G, B) mean, in the 0..1 range of `value / 255`.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation; must be non-zero.
    pub std: [f32; 3],
    /// The 8-bit grey level of the padding (YOLO models are trained with 114); black by default.
    pub pad: u8,
    /// Channel order of the tensor: `rgb`, or `bgr` for models trained on OpenCV images.
    pub channels: Channels,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    #[default]
    Fixed,
    Frame,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    #[default]
    Rgb,
    Bgr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            width: 640,
            height: 640,
            shape: Shape::Fixed,
            multiple: 32,
            mean: [0.5; 3],
            std: [0.5; 3],
            pad: 0,
            channels: Channels::Rgb,
        }
    }
}

impl Config {
    /// Parses the JSON configuration; an empty string means "all defaults" so a topology can omit
    /// `config` entirely.
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(json).map_err(|e| format!("invalid letterbox config: {e}"))
    }

    /// Validates the configuration and builds the reusable letterbox state.
    pub fn build(&self) -> Result<Letterbox, String> {
        let norm = Normalize::new(self.mean, self.std)
            .map_err(|e| format!("invalid letterbox config: {e}"))?;
        let letterbox = Letterbox::new(self.width, self.height, norm)
            .map_err(|e| format!("invalid letterbox config: {e}"))?
            .with_pad_value(self.pad)
            .with_bgr(self.channels == Channels::Bgr);
        match self.shape {
            Shape::Fixed => Ok(letterbox),
            Shape::Frame => letterbox
                .shaped_to_frame(self.multiple)
                .map_err(|e| format!("invalid letterbox config: {e}")),
        }
    }
}

/// The operator: frame in, `[1, 3, height, width]` tensor and its transform out.
pub struct LetterboxOperator {
    letterbox: Letterbox,
    /// Reused between frames so the pixel copy does not allocate each time.
    pixels: Vec<u8>,
}

impl Operator for LetterboxOperator {
    fn init(config: &str) -> Result<Self, Error> {
        let letterbox = Config::parse(config)
            .and_then(|c| c.build())
            .map_err(Error::InvalidConfig)?;
        Ok(Self {
            letterbox,
            pixels: Vec::new(),
        })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<Output, Error> {
        let (width, height) = (frame.width(), frame.height());
        let where_ = || format!("frame {} of camera {}", frame.seq(), frame.camera());
        match (input, frame.format()) {
            (Input::Frame, PixelFormat::Rgb8) => {}
            (Input::Frame, other) => {
                return Err(Error::InvalidInput(format!(
                    "{}: letterbox needs rgb8 pixels, got {other:?}; convert first",
                    where_()
                )));
            }
            (other, _) => {
                return Err(Error::InvalidInput(format!(
                    "{}: letterbox takes the frame as input, got {}",
                    where_(),
                    input_kind(&other)
                )));
            }
        }
        self.pixels = frame.pixels();
        let mut data = Vec::new();
        let t = self
            .letterbox
            .run(&self.pixels, width, height, &mut data)
            .map_err(|e| match e {
                PreprocessError::BufferSize { .. } | PreprocessError::Size { .. } => {
                    Error::InvalidInput(format!("{}: {e}", where_()))
                }
                other => Error::Internal(other.to_string()),
            })?;
        let tensor = Tensor::new("", &self.letterbox.output_shape(), data)?;
        Ok(Output::tensors(
            vec![tensor],
            Some(Transform {
                scale_x: t.scale_x,
                scale_y: t.scale_y,
                offset_x: t.offset_x,
                offset_y: t.offset_y,
            }),
        ))
    }
}

fn input_kind(input: &Input) -> &'static str {
    match input {
        Input::Frame => "the frame",
        Input::Tensors(_) => "tensors",
        Input::Detections(_) => "detections",
    }
}

panoptes_operator_sdk::export_operator!(LetterboxOperator, accepts: [Rgb8]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_missing_fields() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("{}").unwrap(), Config::default());
        let c = Config::parse(r#"{"width": 320, "std": [0.2, 0.3, 0.4]}"#).unwrap();
        assert_eq!(c.width, 320);
        assert_eq!(c.height, 640);
        assert_eq!(c.mean, [0.5; 3]);
        assert_eq!(c.std, [0.2, 0.3, 0.4]);
        let lb = c.build().unwrap();
        assert_eq!(lb.output_shape(), [1, 3, 640, 320]);
        let c = Config::parse(r#"{"pad": 114, "channels": "bgr"}"#).unwrap();
        assert_eq!((c.pad, c.channels), (114, Channels::Bgr));
        let c = Config::parse(r#"{"shape": "frame"}"#).unwrap();
        assert_eq!((c.shape, c.multiple), (Shape::Frame, 32));
        let e = Config::parse(r#"{"shape": "frame", "width": 650}"#)
            .unwrap()
            .build()
            .unwrap_err();
        assert!(e.contains("multiples of 32"), "{e}");
    }

    #[test]
    fn pads_with_the_grey_level_and_orders_planes_as_asked() {
        // A 2x1 frame, red then green, into a 2x2 tensor: the bottom row is padding.
        let src = [255, 0, 0, 0, 255, 0];
        let raw = r#"{"width": 2, "height": 2, "mean": [0, 0, 0], "std": [1, 1, 1], "pad": 114"#;
        let run = |json: String| {
            let mut lb = Config::parse(&json).unwrap().build().unwrap();
            let mut out = Vec::new();
            lb.run(&src, 2, 1, &mut out).unwrap();
            out
        };
        let rgb = run(format!("{raw}}}"));
        // As Normalize computes it: v * (1 / 255) + 0.
        let pad = 114.0 * (1.0f32 / 255.0);
        assert_eq!(
            rgb,
            [1.0, 0.0, pad, pad, 0.0, 1.0, pad, pad, 0.0, 0.0, pad, pad]
        );
        let bgr = run(format!(r#"{raw}, "channels": "bgr"}}"#));
        assert_eq!(
            bgr,
            [0.0, 0.0, pad, pad, 0.0, 1.0, pad, pad, 1.0, 0.0, pad, pad]
        );
    }

    #[test]
    fn rejects_bad_config_with_a_clear_message() {
        let e = Config::parse(r#"{"widht": 320}"#).unwrap_err();
        assert!(e.contains("unknown field `widht`"), "{e}");
        let e = Config::parse(r#"{"mean": [0.5, 0.5]}"#).unwrap_err();
        assert!(e.contains("invalid letterbox config"), "{e}");
        let e = Config::parse(r#"{"std": [0.5, 0.0, 0.5]}"#)
            .unwrap()
            .build()
            .unwrap_err();
        assert!(e.contains("std[1]"), "{e}");
        let e = Config::parse(r#"{"width": 0}"#)
            .unwrap()
            .build()
            .unwrap_err();
        assert!(e.contains("destination size 0x640"), "{e}");
    }
}
