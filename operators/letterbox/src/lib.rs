//! Wasm operator component: letterbox + normalise a frame into a detector input tensor.
//!
//! The component glue (`component` module) only exists on wasm32; on the host this crate is just
//! the configuration parser, so the workspace still builds, tests and lints natively.

use panoptes_op_preprocess::{Letterbox, Normalize};
use serde::Deserialize;

/// Operator configuration, passed by the host to `init` as JSON. Every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Output tensor width.
    pub width: u32,
    /// Output tensor height.
    pub height: u32,
    /// Per-channel (R, G, B) mean, in the 0..1 range of `value / 255`.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation; must be non-zero.
    pub std: [f32; 3],
}

impl Default for Config {
    fn default() -> Self {
        Self {
            width: 640,
            height: 640,
            mean: [0.5; 3],
            std: [0.5; 3],
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
        Letterbox::new(self.width, self.height, norm)
            .map_err(|e| format!("invalid letterbox config: {e}"))
    }
}

#[cfg(target_arch = "wasm32")]
// The generated lowering glue takes one argument per flattened field.
#[allow(clippy::too_many_arguments)]
mod component {
    //! The `panoptes:operator` world exported through wit-bindgen.

    use std::cell::RefCell;

    use panoptes_op_preprocess::{Letterbox, PreprocessError};

    use super::Config;

    wit_bindgen::generate!({
        world: "operator",
        path: "../wit",
    });

    use panoptes::operator::types::{PixelFormat, Tensor, Transform};

    thread_local! {
        // Component instances are single-threaded; the host calls `init` once, then `process`.
        static STATE: RefCell<Option<Letterbox>> = const { RefCell::new(None) };
    }

    struct LetterboxOperator;

    impl Guest for LetterboxOperator {
        fn init(config: String) -> Result<(), Error> {
            let letterbox = Config::parse(&config)
                .and_then(|c| c.build())
                .map_err(Error::InvalidConfig)?;
            STATE.with_borrow_mut(|s| *s = Some(letterbox));
            Ok(())
        }

        fn process(info: FrameInfo, pixels: Vec<u8>) -> Result<Output, Error> {
            match info.format {
                PixelFormat::Rgb8 => {}
            }
            STATE.with_borrow_mut(|state| {
                let letterbox = state
                    .as_mut()
                    .ok_or_else(|| Error::Internal("process called before init".into()))?;
                let mut data = Vec::new();
                let t = letterbox
                    .run(&pixels, info.width, info.height, &mut data)
                    .map_err(|e| match e {
                        PreprocessError::BufferSize { .. } | PreprocessError::Size { .. } => {
                            Error::InvalidInput(format!(
                                "frame {} of camera {}: {e}",
                                info.seq, info.camera
                            ))
                        }
                        other => Error::Internal(other.to_string()),
                    })?;
                let shape = letterbox.output_shape().map(|d| d as u32).to_vec();
                Ok(Output {
                    tensor: Tensor { shape, data },
                    transform: Some(Transform {
                        scale_x: t.scale_x,
                        scale_y: t.scale_y,
                        offset_x: t.offset_x,
                        offset_y: t.offset_y,
                    }),
                })
            })
        }
    }

    export!(LetterboxOperator);
}

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
