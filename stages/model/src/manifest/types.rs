//! The manifest's parts (model source, tensor specs, preprocessing, postprocessor, backend
//! hints) as the YAML spells them, and the first input's normalisation with defaults applied.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::graph::ElementType;

/// Where a model file comes from. Informative: provenance for people and tools.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// A PyPI requirement pinning the wheel that carries the file, e.g. `rapidocr-onnxruntime==1.4.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pypi: Option<String>,
    /// sha256 of that wheel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wheel_sha256: Option<String>,
    /// A download URL, for files that do not come in a wheel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The file's path inside the wheel (or archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One dimension of a declared shape: a fixed size, or a name for a dynamic dimension
/// (`batch`, `height`, …). The same name in several places means the same size.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(usize),
    Dynamic(String),
}

impl Dim {
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Dynamic(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Dynamic(name) => f.write_str(name),
        }
    }
}

impl Serialize for Dim {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dim::Fixed(n) => s.serialize_u64(*n as u64),
            Dim::Dynamic(name) => s.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DimVisitor;
        impl Visitor<'_> for DimVisitor {
            type Value = Dim;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a dimension: a size (a positive integer) or a name for a dynamic one")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dim, E> {
                match usize::try_from(v) {
                    Ok(n) if n > 0 => Ok(Dim::Fixed(n)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dim, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dim, E> {
                let ok = v.chars().next().is_some_and(char::is_alphabetic)
                    && v.chars().all(|c| c.is_alphanumeric() || c == '_');
                if ok {
                    Ok(Dim::Dynamic(v.to_owned()))
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(DimVisitor)
    }
}

/// How the axes of an image input are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// batch, channels, height, width
    Nchw,
    /// batch, height, width, channels
    Nhwc,
}

impl Layout {
    /// The axis of each of (channels, height, width).
    pub const fn axes(self) -> (usize, usize, usize) {
        match self {
            Layout::Nchw => (1, 2, 3),
            Layout::Nhwc => (3, 1, 2),
        }
    }
}

/// The channel order an image input takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    /// Camera frames' own order.
    #[default]
    Rgb,
    /// Models trained on OpenCV images (`cv2.imread`).
    Bgr,
    /// One channel.
    Gray,
}

/// `value = (pixel * scale - mean[c]) / std[c]`, pixels being 0..=255.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    #[serde(default = "one")]
    pub scale: f32,
    /// One value for every channel, or one per channel.
    #[serde(default = "zero_list")]
    pub mean: Vec<f32>,
    /// One value for every channel, or one per channel.
    #[serde(default = "one_list")]
    pub std: Vec<f32>,
}

fn one() -> f32 {
    1.0
}
fn zero_list() -> Vec<f32> {
    vec![0.0]
}
fn one_list() -> Vec<f32> {
    vec![1.0]
}

/// How a frame (or crop) is brought to the input's height and width.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Keep the aspect ratio and pad the rest with `pad`.
    #[default]
    Letterbox,
    /// Scale each axis to fit exactly.
    Stretch,
}

/// Where a letterboxed image sits in its padded input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Align {
    #[default]
    Center,
    /// Padding on the right and bottom only (YOLOX, PP-OCR recognition).
    TopLeft,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    #[serde(default)]
    pub mode: ResizeMode,
    #[serde(default)]
    pub align: Align,
    /// The padding's pixel value (0..=255, before normalisation).
    #[serde(default)]
    pub pad: f32,
    /// For dynamic height and width: sizes are rounded to a multiple of this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_of: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    /// Sizes, or names for dynamic dimensions: `[batch, 3, height, width]`.
    pub shape: Vec<Dim>,
    #[serde(default = "f32_type")]
    pub dtype: ElementType,
    /// For image inputs (rank 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Channel order of an image input (default `rgb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorOrder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<Resize>,
}

fn f32_type() -> ElementType {
    ElementType::F32
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub shape: Vec<Dim>,
    #[serde(default = "f32_type")]
    pub dtype: ElementType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The postprocessors a manifest can name: the topology's own kind (`panoptes_contracts::kinds`),
/// so a manifest and a postprocess stage can only name the same set.
pub use panoptes_contracts::kinds::Postprocessor as PostprocessorKind;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostprocessorSpec {
    pub kind: PostprocessorKind,
    /// The postprocessor's settings, as its topology stage takes them (`threshold`, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Facts about running the model on a backend. Informative: the backends find them out
/// themselves, the manifest records them for people.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendHints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tract: Option<TractHints>,
}

impl BackendHints {
    pub(super) fn is_empty(&self) -> bool {
        self.tract.is_none()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TractHints {
    /// tract cannot analyse the graph with symbolic shapes: it plans per concrete input shape
    /// (and caches the plans).
    #[serde(default)]
    pub concrete_shapes: bool,
}

/// The first input's preprocessing with defaults applied: `(pixel * scale - mean[c]) / std[c]`
/// in `color` order.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    pub color: ColorOrder,
    pub scale: f32,
    /// One per channel where the channel count is known, else as written (one value: every
    /// channel).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// A pixel value (0..=255) of channel `c` as the model takes it.
    pub fn apply(&self, c: usize, pixel: f32) -> f32 {
        let pick = |v: &[f32], default: f32| match v {
            [] => default,
            [one] => *one,
            many => many.get(c).copied().unwrap_or(default),
        };
        (pixel * self.scale - pick(&self.mean, 0.0)) / pick(&self.std, 1.0)
    }
}

impl InputSpec {
    /// The channel count, where the layout and a fixed channel dimension say it.
    pub fn channels(&self) -> Option<usize> {
        let (c, _, _) = self.layout?.axes();
        self.shape.get(c).and_then(Dim::fixed)
    }
}
