//! Wasm operator component: letterbox + normalise a frame into a detector input tensor.
//!
//! Built with `--target wasm32-wasip2` this crate is the `letterbox` component; natively it is
//! the same operator code, so configuration parsing is unit-tested on the host.

use panoptes_op_preprocess::{Letterbox, Normalize};
use panoptes_operator_sdk::kernels::{
    self, ChannelOrder, KernelOperator, KernelOutput, LetterboxParams, LetterboxShape,
};
use panoptes_operator_sdk::{Error, Frame, Input};
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

impl Config {
    /// The host kernel's parameters for this configuration.
    pub fn params(&self) -> LetterboxParams {
        let [m0, m1, m2] = self.mean;
        let [s0, s1, s2] = self.std;
        LetterboxParams {
            width: self.width,
            height: self.height,
            shape: match self.shape {
                Shape::Fixed => LetterboxShape::Fixed,
                Shape::Frame => LetterboxShape::Frame(self.multiple),
            },
            mean: (m0, m1, m2),
            std: (s0, s1, s2),
            pad: self.pad,
            channels: match self.channels {
                Channels::Rgb => ChannelOrder::Rgb,
                Channels::Bgr => ChannelOrder::Bgr,
            },
        }
    }
}

/// The operator: frame in, `[1, 3, height, width]` tensor and its transform out. The letterbox
/// runs in the host's kernel (the same `panoptes-op-preprocess` code, native) on the frame the
/// host holds, and the tensor stays on the host.
pub struct LetterboxOperator {
    params: LetterboxParams,
}

impl KernelOperator for LetterboxOperator {
    fn init(config: &str) -> Result<Self, Error> {
        let config = Config::parse(config).map_err(Error::InvalidConfig)?;
        // Checked here, so a bad configuration fails the stage's start, not every frame.
        config.build().map_err(Error::InvalidConfig)?;
        Ok(Self {
            params: config.params(),
        })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<KernelOutput, Error> {
        if !matches!(input, Input::Frame) {
            return Err(Error::InvalidInput(format!(
                "frame {} of camera {}: letterbox takes the frame as input, got {}",
                frame.seq(),
                frame.camera(),
                input_kind(&input)
            )));
        }
        let (tensor, transform) = kernels::letterbox(frame, self.params)?;
        Ok(KernelOutput::host_tensors(vec![tensor], Some(transform)))
    }
}

fn input_kind(input: &Input) -> &'static str {
    match input {
        Input::Frame => "the frame",
        Input::Tensors(_) => "tensors",
        Input::Detections(_) => "detections",
    }
}

panoptes_operator_sdk::export_kernel_operator!(LetterboxOperator, accepts: [Rgb8]);

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
