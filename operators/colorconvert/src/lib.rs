//! Wasm operator component: NV12 or I420 frames to RGB8 images (BT.601 or BT.709, limited or
//! full range), for cameras and decoders that deliver YUV.
//!
//! The RGB8 image replaces the frame for later stages; its size is the frame's, so coordinates
//! are unchanged.

use panoptes_op_preprocess::color::{Matrix, Range, YuvToRgb};
use panoptes_operator_sdk::kernels::{self, ColorMatrix, ColorRange, KernelOperator, KernelOutput};
use panoptes_operator_sdk::{Error, Frame, Input, PixelFormat};
use serde::Deserialize;

/// The YUV matrix, as written in the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatrixName {
    /// SD video and JPEG.
    #[default]
    Bt601,
    /// HD video.
    Bt709,
}

/// The code range, as written in the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeName {
    /// 16..235 luma (cameras, video codecs).
    #[default]
    Limited,
    /// 0..255.
    Full,
}

/// Operator configuration (JSON). Every field is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub matrix: MatrixName,
    pub range: RangeName,
}

impl Config {
    /// Parses the configuration into a converter.
    pub fn parse(json: &str) -> Result<YuvToRgb, Error> {
        let c: Config = panoptes_operator_sdk::config(json)?;
        let matrix = match c.matrix {
            MatrixName::Bt601 => Matrix::Bt601,
            MatrixName::Bt709 => Matrix::Bt709,
        };
        let range = match c.range {
            RangeName::Limited => Range::Limited,
            RangeName::Full => Range::Full,
        };
        Ok(YuvToRgb::new(matrix, range))
    }
}

/// The operator: an NV12 or I420 frame in, an RGB8 image out, converted by the host's kernel on
/// the frame the host holds (the image stays on the host).
pub struct ColorConvertOperator {
    matrix: ColorMatrix,
    range: ColorRange,
}

impl KernelOperator for ColorConvertOperator {
    fn init(config: &str) -> Result<Self, Error> {
        let c: Config = panoptes_operator_sdk::config(config)?;
        Ok(Self {
            matrix: match c.matrix {
                MatrixName::Bt601 => ColorMatrix::Bt601,
                MatrixName::Bt709 => ColorMatrix::Bt709,
            },
            range: match c.range {
                RangeName::Limited => ColorRange::Limited,
                RangeName::Full => ColorRange::Full,
            },
        })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<KernelOutput, Error> {
        let where_ = || format!("frame {} of camera {}", frame.seq(), frame.camera());
        if !matches!(input, Input::Frame) {
            return Err(Error::InvalidInput(format!(
                "{}: colorconvert takes the frame as input, got {}",
                where_(),
                match input {
                    Input::Tensors(_) => "tensors",
                    _ => "detections",
                }
            )));
        }
        match frame.format() {
            PixelFormat::Nv12 | PixelFormat::I420 => {}
            other => {
                return Err(Error::InvalidInput(format!(
                    "{}: colorconvert needs an nv12 or i420 frame, got {other:?}",
                    where_()
                )));
            }
        }
        let image = kernels::convert_color(frame, self.matrix, self.range)?;
        Ok(KernelOutput::HostImage(image))
    }
}

panoptes_operator_sdk::export_kernel_operator!(ColorConvertOperator, accepts: [Nv12, I420]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_others() {
        assert_eq!(
            panoptes_operator_sdk::config::<Config>("").unwrap(),
            Config::default()
        );
        let c: Config =
            panoptes_operator_sdk::config(r#"{"matrix": "bt709", "range": "full"}"#).unwrap();
        assert_eq!((c.matrix, c.range), (MatrixName::Bt709, RangeName::Full));
        for (json, needle) in [
            (r#"{"matrix": "bt2020"}"#, "unknown variant `bt2020`"),
            (r#"{"range": "tv"}"#, "unknown variant `tv`"),
            (r#"{"ragne": "full"}"#, "unknown field `ragne`"),
        ] {
            match Config::parse(json) {
                Err(Error::InvalidConfig(m)) => assert!(m.contains(needle), "{json}: {m}"),
                Err(other) => panic!("{json}: {other:?}"),
                Ok(_) => panic!("{json}: accepted"),
            }
        }
    }
}
