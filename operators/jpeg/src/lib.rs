//! Wasm operator component: JPEG frames (baseline or progressive) decoded to RGB8 images, which
//! replace the frame for later stages. RGB8 frames pass through as the same RGB8 image, so
//! cameras that send JPEG (`encoding: jpeg` or `auto`) and cameras that send raw frames can
//! share one chain with this operator first.
//!
//! The bytes come from cameras and other publishers, so they are treated as hostile: the decoded
//! size is capped (`max_pixels`) before anything is allocated for it, and a damaged file is an
//! `invalid-input` error naming the camera and frame, never a trap. The decoding is the host's
//! `decode-jpeg` kernel (world `kernel-operator@0.3.0`): the file is not copied into the
//! operator, and the image is not copied out.

use panoptes_op_preprocess::jpeg::{DEFAULT_MAX_PIXELS, JpegOptions};
use panoptes_operator_sdk::kernels::{self, KernelOperator, KernelOutput};
use panoptes_operator_sdk::{Error, Frame, Image, Input, Output, PixelFormat};
use serde::Deserialize;

/// The largest `max_pixels` accepted: 16384 x 16384, the largest frame the pipeline carries.
pub const MAX_PIXELS_LIMIT: u64 = 16_384 * 16_384;

/// Operator configuration (JSON). Every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Largest decoded `width * height`; larger images are refused from their header.
    /// Defaults to 8K UHD (7680 x 4320).
    pub max_pixels: u64,
    /// Refuse damaged files (truncated data, stray markers). `false` decodes what it can and
    /// fills the rest with grey.
    pub strict: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            strict: true,
        }
    }
}

impl Config {
    /// Parses and validates the configuration.
    pub fn parse(json: &str) -> Result<JpegOptions, Error> {
        let c: Config = panoptes_operator_sdk::config(json)?;
        if c.max_pixels == 0 || c.max_pixels > MAX_PIXELS_LIMIT {
            return Err(Error::InvalidConfig(format!(
                "invalid jpeg config: `max_pixels` is {}, must be between 1 and {MAX_PIXELS_LIMIT}",
                c.max_pixels
            )));
        }
        Ok(JpegOptions {
            max_pixels: c.max_pixels,
            strict: c.strict,
        })
    }
}

/// The operator: a JPEG or RGB8 frame in, an RGB8 image out. JPEG files are decoded by the
/// host's kernel (the same `panoptes-op-preprocess` decoder, native) from the bytes the host
/// holds, and the image stays on the host.
pub struct JpegOperator {
    options: JpegOptions,
}

impl KernelOperator for JpegOperator {
    fn init(config: &str) -> Result<Self, Error> {
        Ok(Self {
            options: Config::parse(config)?,
        })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<KernelOutput, Error> {
        let where_ = || format!("frame {} of camera {}", frame.seq(), frame.camera());
        if !matches!(input, Input::Frame) {
            return Err(Error::InvalidInput(format!(
                "{}: jpeg takes the frame as input, got {}",
                where_(),
                match input {
                    Input::Tensors(_) => "tensors",
                    _ => "detections",
                }
            )));
        }
        let format = frame.format();
        match format {
            PixelFormat::Jpeg => {}
            PixelFormat::Rgb8 => {
                return passthrough(frame)
                    .map(KernelOutput::Output)
                    .map_err(|m| Error::InvalidInput(format!("{}: {m}", where_())));
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{}: jpeg needs a jpeg or rgb8 frame, got {format:?}",
                    where_()
                )));
            }
        }
        // Later stages (and the boxes they report) go by the frame's declared size, so the
        // kernel refuses a JPEG of any other size, from its header, before its pixels are
        // allocated.
        let options = kernels::JpegOptions {
            max_pixels: self.options.max_pixels,
            strict: self.options.strict,
        };
        Ok(KernelOutput::HostImage(kernels::decode_jpeg(
            frame, options,
        )?))
    }
}

/// An RGB8 frame as the image a decoded JPEG would be. The host has checked the frame's size
/// against its declared geometry already; checked again because a short image would only fail
/// later, in a stage that cannot name the cause.
fn passthrough(frame: &Frame) -> Result<Output, String> {
    let (width, height) = (frame.width(), frame.height());
    let pixels = frame.pixels();
    let expected = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(3));
    if expected != Some(pixels.len()) {
        return Err(format!(
            "an rgb8 frame of {width}x{height} has {} bytes",
            pixels.len()
        ));
    }
    Ok(Output::Image(Image {
        width,
        height,
        format: PixelFormat::Rgb8,
        pixels,
    }))
}

// JPEG is decoded; RGB8 passes through unchanged, so raw and JPEG cameras share a chain.
panoptes_operator_sdk::export_kernel_operator!(JpegOperator, accepts: [Rgb8, Jpeg]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_limits() {
        assert_eq!(Config::parse("").unwrap(), JpegOptions::default());
        let o = Config::parse(r#"{"max_pixels": 1000, "strict": false}"#).unwrap();
        assert_eq!((o.max_pixels, o.strict), (1000, false));
        for (json, needle) in [
            (r#"{"max_pixels": 0}"#, "`max_pixels` is 0"),
            (r#"{"max_pixels": 268435457}"#, "`max_pixels` is 268435457"),
            (r#"{"max_pixels": -1}"#, "invalid value"),
            (r#"{"strcit": true}"#, "unknown field `strcit`"),
        ] {
            match Config::parse(json) {
                Err(Error::InvalidConfig(m)) => assert!(m.contains(needle), "{json}: {m}"),
                Err(other) => panic!("{json}: {other:?}"),
                Ok(_) => panic!("{json}: accepted"),
            }
        }
    }
}
