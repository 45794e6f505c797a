//! A synthetic test-pattern camera: text on a colour, still or moving (`motion`, `overlays`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestPatternSource {
    pub text: String,
    /// Pango font description, e.g. "Sans Bold 48" (scaled with the frame width).
    #[serde(default)]
    pub font: Option<String>,
    /// Text position as a fraction of the frame (textoverlay `xpos`/`ypos`).
    #[serde(default = "half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub xpos: f64,
    #[serde(default = "half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub ypos: f64,
    /// Background colour as `#RRGGBB`.
    #[serde(default)]
    pub background: Option<String>,
    /// Moves the text: a scene whose ground truth is known in every frame.
    #[serde(default)]
    pub motion: Option<TextMotion>,
    /// Further texts on the same frames (same font), each with its place and motion.
    #[serde(default)]
    pub overlays: Vec<TextOverlay>,
}

/// How a test pattern's text moves: its centre travels `dx` frame widths and `dy` frame
/// heights per second of stream time and bounces off the edges.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextMotion {
    #[serde(default)]
    #[schemars(range(min = -10.0, max = 10.0))]
    pub dx: f64,
    #[serde(default)]
    #[schemars(range(min = -10.0, max = 10.0))]
    pub dy: f64,
}

/// A further text of a test pattern.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextOverlay {
    pub text: String,
    #[serde(default = "half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub xpos: f64,
    #[serde(default = "half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub ypos: f64,
    #[serde(default)]
    pub motion: Option<TextMotion>,
}

fn half() -> f64 {
    0.5
}
