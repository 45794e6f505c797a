//! Model manifests: a YAML file next to an ONNX model that says what the graph takes and gives
//! (tensor names, layouts, shapes, element types), how frames become its input (colour order,
//! normalisation, resizing), its labels and which postprocessor decodes it. `docs/models.md`
//! describes the format.
//!
//! A manifest is read with [`ModelManifest::load`] (syntax, unknown keys and internal
//! consistency) and held against the real graph with [`ModelManifest::check`]. Every error
//! names the manifest file and the field, e.g.
//! `models/ppocr-v4-det.yaml: inputs[0].shape[1]: the manifest says 4, but ch_PP-OCRv4_det_infer.onnx fixes it to 3`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use panoptes_files::{FileError, MANIFEST_MAX};

use crate::ModelError;
use crate::graph::{ElementType, Graph, GraphOptions, TensorInfo, fmt_dims};
use crate::registry::load_checked;

/// Everything that can be wrong with a manifest: it cannot be read, it is not valid YAML of the
/// manifest schema, or a field is inconsistent (with itself or with the model file).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Missing, not a regular file, too large or not UTF-8 (the message never quotes it).
    #[error("cannot read model manifest {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: FileError,
    },
    /// Not YAML, or not the manifest schema (unknown key, missing key, wrong type). The message
    /// is the YAML reader's, with the line and column and the key concerned; lines of the file
    /// are shown only once it is known to be a YAML mapping (a manifest-like file), so naming
    /// any other file as a manifest does not print its content.
    #[error("model manifest {}: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
    /// A field that parsed but does not hold: `field` is its path, e.g. `inputs[0].shape[2]`.
    #[error("model manifest {}: {field}: {message}", .path.display())]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl ManifestError {
    /// The manifest file concerned.
    pub fn path(&self) -> &Path {
        match self {
            ManifestError::Read { path, .. }
            | ManifestError::Parse { path, .. }
            | ManifestError::Field { path, .. } => path,
        }
    }

    /// The field concerned (`inputs[0].shape[2]`), where one is known.
    pub fn field(&self) -> Option<&str> {
        match self {
            ManifestError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A model manifest (`models/<name>.yaml`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// The model's name (by convention the manifest's file stem).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The ONNX file, relative to the manifest's directory (see [`ModelManifest::file_path`]).
    pub file: PathBuf,
    /// sha256 of the ONNX file (64 hex digits); checked when the model loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where the file comes from (informative; `models/fetch.sh` does the fetching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ModelSource>,
    /// Every input of the graph.
    pub inputs: Vec<InputSpec>,
    /// The outputs the postprocessor reads (a graph may have more).
    pub outputs: Vec<OutputSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postprocessor: Option<PostprocessorSpec>,
    #[serde(default, skip_serializing_if = "BackendHints::is_empty")]
    pub backends: BackendHints,
    /// The manifest file itself (set by [`ModelManifest::load`]).
    #[serde(skip)]
    path: PathBuf,
}

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

/// Class names: written out, read from a key of the ONNX file's metadata (newline-separated,
/// like PP-OCR's `character`), or read from a text file (one per line, relative to the
/// manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Labels {
    List(Vec<String>),
    Metadata(String),
    File(PathBuf),
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Labels::List(list) => list.serialize(s),
            Labels::Metadata(key) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("metadata", key)?;
                m.end()
            }
            Labels::File(path) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("file", path)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        enum Source {
            Metadata(String),
            File(PathBuf),
        }
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of labels, `{ metadata: <key> }` or `{ file: <path> }`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Labels, A::Error> {
                Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(Labels::List)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Labels, A::Error> {
                Ok(
                    match Source::deserialize(de::value::MapAccessDeserializer::new(map))? {
                        Source::Metadata(key) => Labels::Metadata(key),
                        Source::File(path) => Labels::File(path),
                    },
                )
            }
        }
        d.deserialize_any(LabelsVisitor)
    }
}

/// The postprocessors a manifest can name (those of the topology's postprocess stages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PostprocessorKind {
    /// DB text boxes from a probability map.
    Db,
    /// YOLO-family boxes with NMS (`params.layout`: `yolox`, `v5`, `v8`).
    Yolo,
    /// Classifier top-k.
    Topk,
    /// CTC text recognition.
    Ctc,
}

impl PostprocessorKind {
    pub const fn name(self) -> &'static str {
        match self {
            PostprocessorKind::Db => "db",
            PostprocessorKind::Yolo => "yolo",
            PostprocessorKind::Topk => "topk",
            PostprocessorKind::Ctc => "ctc",
        }
    }
}

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
    fn is_empty(&self) -> bool {
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

/// Labels files: one class name a line; large vocabularies (OCR dictionaries) run to a few
/// hundred KiB.
const LABELS_MAX: u64 = 16 << 20;

/// The keys every manifest has (serde refuses one without them).
const REQUIRED_KEYS: [&str; 4] = ["name", "file", "inputs", "outputs"];

/// The shape of a YAML document's top level, read without keeping (or quoting) any of it.
enum TopLevel {
    /// A mapping, and how many of its keys are [`REQUIRED_KEYS`].
    Mapping { manifest_keys: usize },
    /// What it is instead, in words.
    Other(&'static str),
}

/// Whether a mapping key is one of [`REQUIRED_KEYS`]; any key is read, none is kept.
struct RequiredKey(bool);

impl<'de> Deserialize<'de> for RequiredKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl<'de> Visitor<'de> for Key {
            type Value = RequiredKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<RequiredKey, E> {
                Ok(RequiredKey(REQUIRED_KEYS.contains(&key)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequiredKey, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(RequiredKey(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RequiredKey, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(RequiredKey(false))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_none<E: de::Error>(self) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RequiredKey, D::Error> {
                d.deserialize_any(Key)
            }
        }
        d.deserialize_any(Key)
    }
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> Visitor<'de> for Shape {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut manifest_keys = 0;
                while let Some((RequiredKey(required), de::IgnoredAny)) = map.next_entry()? {
                    manifest_keys += usize::from(required);
                }
                Ok(TopLevel::Mapping { manifest_keys })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other("a list"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("text"))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("bytes"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("nothing"))
            }
            fn visit_none<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("nothing"))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<TopLevel, D::Error> {
                d.deserialize_any(Shape)
            }
        }
        d.deserialize_any(Shape)
    }
}

impl ModelManifest {
    /// Reads and validates a manifest: YAML syntax, the schema (unknown keys are refused) and
    /// what the manifest can check on its own (sha256 format, unique names, layouts against
    /// ranks, normalisation against channels). Does not open the model file: see
    /// [`check`](Self::check).
    pub fn load(path: &Path) -> Result<ModelManifest, ManifestError> {
        let text =
            panoptes_files::read_to_string_bounded(path, MANIFEST_MAX).map_err(|source| {
                ManifestError::Read {
                    path: path.to_owned(),
                    source,
                }
            })?;
        Self::parse(&text, path)
    }

    /// Like [`load`](Self::load), from text; `path` names the manifest in errors and anchors
    /// its relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<ModelManifest, ManifestError> {
        // First only the shape, quoting nothing: a file that is not YAML, or that is not a
        // mapping with a manifest's required keys, is not a manifest anyone wrote (say,
        // `/etc/shadow` named as one: YAML reads each of its lines as a key), and the reader's
        // snippet or its "unknown field `root:…`" would print its lines.
        let plain = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
        match serde_saphyr::from_str::<TopLevel>(text) {
            Ok(TopLevel::Mapping { manifest_keys }) if manifest_keys > 0 => {}
            Ok(TopLevel::Mapping { .. }) => {
                return Err(ManifestError::Parse {
                    path: path.to_owned(),
                    message: format!(
                        "not a model manifest: none of its top-level keys is one a manifest \
                         must have ({})",
                        REQUIRED_KEYS.join(", ")
                    ),
                });
            }
            Ok(TopLevel::Other(kind)) => {
                return Err(ManifestError::Parse {
                    path: path.to_owned(),
                    message: format!(
                        "not a model manifest: the file holds {kind}, not a YAML mapping of keys"
                    ),
                });
            }
            Err(e) => {
                return Err(ManifestError::Parse {
                    path: path.to_owned(),
                    message: format!("not valid YAML: {}", e.render_with_options(plain)),
                });
            }
        }
        let mut manifest: ModelManifest = serde_saphyr::from_str(text).map_err(|e| {
            let name = path.display().to_string();
            ManifestError::Parse {
                path: path.to_owned(),
                // The message with the line, a snippet and the manifest's name over it.
                message: e.render_with_options(serde_saphyr::render_options! {
                    source_name: Some(name.as_str()),
                }),
            }
        })?;
        manifest.path = path.to_owned();
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory relative paths in the manifest are resolved against.
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The ONNX file, resolved against the manifest's directory.
    pub fn file_path(&self) -> PathBuf {
        self.resolve(&self.file)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.dir().join(p)
        }
    }

    /// The first input (a manifest has at least one).
    pub fn first_input(&self) -> &InputSpec {
        &self.inputs[0]
    }

    /// The largest batch the model takes: the first input's first dimension when it is fixed.
    pub fn max_batch(&self) -> Option<usize> {
        self.first_input().shape.first().and_then(Dim::fixed)
    }

    /// The first input's normalisation and colour order, defaults applied (scale 1, mean 0,
    /// std 1, RGB).
    pub fn normalization(&self) -> Normalization {
        let input = self.first_input();
        let channels = input.channels();
        let expand = |v: &[f32]| match (v, channels) {
            ([one], Some(c)) => vec![*one; c],
            _ => v.to_vec(),
        };
        let (scale, mean, std) = match &input.normalize {
            Some(n) => (n.scale, expand(&n.mean), expand(&n.std)),
            None => (1.0, expand(&[0.0]), expand(&[1.0])),
        };
        Normalization {
            color: input.color.unwrap_or_default(),
            scale,
            mean,
            std,
        }
    }

    fn field_error(&self, field: impl Into<String>, message: impl Into<String>) -> ManifestError {
        ManifestError::Field {
            path: self.path.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// What the manifest can check without the model file.
    fn validate(&self) -> Result<(), ManifestError> {
        if self.name.trim().is_empty() {
            return Err(self.field_error("name", "is empty"));
        }
        if self.file.as_os_str().is_empty() {
            return Err(self.field_error("file", "is empty"));
        }
        if let Some(sha) = &self.sha256
            && !is_sha256(sha)
        {
            return Err(self.field_error("sha256", "must be 64 hexadecimal digits"));
        }
        if self.inputs.is_empty() {
            return Err(self.field_error("inputs", "a model takes at least one input"));
        }
        if self.outputs.is_empty() {
            return Err(
                self.field_error("outputs", "declare the output(s) the postprocessor reads")
            );
        }
        let mut names = HashSet::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let at = format!("inputs[{i}]");
            if !names.insert(input.name.as_str()) {
                return Err(self.field_error(
                    format!("{at}.name"),
                    format!("input `{}` is declared twice", input.name),
                ));
            }
            self.validate_input(&at, input)?;
        }
        let mut names = HashSet::new();
        for (i, output) in self.outputs.iter().enumerate() {
            if !names.insert(output.name.as_str()) {
                return Err(self.field_error(
                    format!("outputs[{i}].name"),
                    format!("output `{}` is declared twice", output.name),
                ));
            }
        }
        if let Some(Labels::List(list)) = &self.labels
            && list.is_empty()
        {
            return Err(self.field_error("labels", "an empty list; leave `labels` out instead"));
        }
        Ok(())
    }

    fn validate_input(&self, at: &str, input: &InputSpec) -> Result<(), ManifestError> {
        let rank = input.shape.len();
        if let Some(layout) = input.layout
            && rank != 4
        {
            return Err(self.field_error(
                format!("{at}.layout"),
                format!(
                    "{} needs a shape of rank 4, but `shape` has rank {rank}",
                    format!("{layout:?}").to_lowercase()
                ),
            ));
        }
        let channels = input.channels();
        if input.layout.is_none()
            && (input.color.is_some() || input.normalize.is_some() || input.resize.is_some())
        {
            let key = if input.color.is_some() {
                "color"
            } else if input.normalize.is_some() {
                "normalize"
            } else {
                "resize"
            };
            return Err(self.field_error(
                format!("{at}.{key}"),
                "applies to image inputs: give the input a `layout` (nchw or nhwc)",
            ));
        }
        if let (Some(color), Some(c)) = (input.color, channels) {
            let want = if color == ColorOrder::Gray { 1 } else { 3 };
            if c != want {
                return Err(self.field_error(
                    format!("{at}.color"),
                    format!(
                        "{} images have {want} channel(s), but the shape has {c}",
                        format!("{color:?}").to_lowercase()
                    ),
                ));
            }
        }
        if let Some(n) = &input.normalize {
            if !(n.scale.is_finite() && n.scale > 0.0) {
                return Err(
                    self.field_error(format!("{at}.normalize.scale"), "must be a positive number")
                );
            }
            for (key, values) in [("mean", &n.mean), ("std", &n.std)] {
                let ok_len = values.len() == 1 || channels.is_none_or(|c| values.len() == c);
                if values.is_empty() || !ok_len {
                    return Err(self.field_error(
                        format!("{at}.normalize.{key}"),
                        format!(
                            "has {} values; give one, or one per channel{}",
                            values.len(),
                            channels.map_or_else(String::new, |c| format!(" ({c})"))
                        ),
                    ));
                }
                if let Some(j) = values
                    .iter()
                    .position(|v| !v.is_finite() || (key == "std" && *v == 0.0))
                {
                    return Err(self.field_error(
                        format!("{at}.normalize.{key}[{j}]"),
                        if key == "std" {
                            "must be a non-zero number"
                        } else {
                            "must be a number"
                        },
                    ));
                }
            }
        }
        if let Some(r) = &input.resize {
            if !(0.0..=255.0).contains(&r.pad) {
                return Err(
                    self.field_error(format!("{at}.resize.pad"), "is a pixel value: 0 to 255")
                );
            }
            if r.multiple_of == Some(0) {
                return Err(
                    self.field_error(format!("{at}.resize.multiple_of"), "must be at least 1")
                );
            }
        }
        Ok(())
    }

    /// Loads the model file the manifest describes, the way a topology's models load: the file
    /// must exist and match `sha256` (when given); then [`check`](Self::check) holds the
    /// manifest against it. Errors name the manifest and the field (`file`, `sha256`, …).
    pub fn load_model(&self, opts: &GraphOptions) -> Result<Graph, ManifestError> {
        let path = self.file_path();
        match panoptes_files::check_regular(&path) {
            Ok(_) => {}
            Err(FileError::NotFound { .. }) => {
                return Err(self.field_error(
                    "file",
                    format!(
                        "{} does not exist (relative to the manifest's directory); run models/fetch.sh",
                        path.display()
                    ),
                ));
            }
            // A directory, FIFO or device is said to be one, not "does not exist".
            Err(e) => return Err(self.field_error("file", e.to_string())),
        }
        let graph = load_checked(&self.name, &path, self.sha256.as_deref(), opts).map_err(|e| {
            let field = match e {
                ModelError::Checksum { .. } => "sha256",
                _ => "file",
            };
            self.field_error(field, e.to_string())
        })?;
        self.check(&graph)?;
        Ok(graph)
    }

    /// Holds the manifest against the loaded model file: every input of the graph is declared
    /// (and nothing else), every declared output exists, ranks match, every dimension the file
    /// fixes is the manifest's (the manifest may fix one the file leaves dynamic) and element
    /// types match. Labels are resolved and counted against the first output's class axis
    /// where the postprocessor defines one (`ctc`, `topk`, `yolo` with a `layout`).
    pub fn check(&self, graph: &Graph) -> Result<(), ManifestError> {
        let file = self.file.display().to_string();
        for (i, spec) in self.inputs.iter().enumerate() {
            let at = format!("inputs[{i}]");
            let Some(info) = graph.inputs().iter().find(|t| t.name == spec.name) else {
                return Err(self.field_error(
                    format!("{at}.name"),
                    format!(
                        "{file} has no input `{}`; its inputs are {}",
                        spec.name,
                        names(graph.inputs())
                    ),
                ));
            };
            self.check_tensor(&at, &file, &spec.shape, spec.dtype, info)?;
        }
        if let Some(missing) = graph
            .inputs()
            .iter()
            .find(|t| !self.inputs.iter().any(|s| s.name == t.name))
        {
            return Err(self.field_error(
                "inputs",
                format!(
                    "{file} also takes input `{}` {} ({}), which the manifest does not declare",
                    missing.name,
                    fmt_dims(&missing.shape),
                    missing.ty
                ),
            ));
        }
        for (i, spec) in self.outputs.iter().enumerate() {
            let at = format!("outputs[{i}]");
            let Some(info) = graph.outputs().iter().find(|t| t.name == spec.name) else {
                return Err(self.field_error(
                    format!("{at}.name"),
                    format!(
                        "{file} has no output `{}`; its outputs are {}",
                        spec.name,
                        names(graph.outputs())
                    ),
                ));
            };
            self.check_tensor(&at, &file, &spec.shape, spec.dtype, info)?;
        }
        if let Some(labels) = self.labels(graph)? {
            self.check_classes(labels.len())?;
        }
        Ok(())
    }

    fn check_tensor(
        &self,
        at: &str,
        file: &str,
        shape: &[Dim],
        dtype: ElementType,
        info: &TensorInfo,
    ) -> Result<(), ManifestError> {
        let name = &info.name;
        if dtype != info.ty {
            return Err(self.field_error(
                format!("{at}.dtype"),
                format!(
                    "the manifest says {dtype}, but `{name}` in {file} is {}",
                    info.ty
                ),
            ));
        }
        // A file that declares no shape leaves it to the backend.
        if info.shape.is_empty() {
            return Ok(());
        }
        if shape.len() != info.shape.len() {
            return Err(self.field_error(
                format!("{at}.shape"),
                format!(
                    "has rank {}, but `{name}` in {file} is {} (rank {})",
                    shape.len(),
                    fmt_dims(&info.shape),
                    info.shape.len()
                ),
            ));
        }
        for (axis, (want, got)) in shape.iter().zip(&info.shape).enumerate() {
            let Some(got) = got else { continue };
            if want.fixed() != Some(*got) {
                let says = match want {
                    Dim::Fixed(n) => format!("the manifest says {n}"),
                    Dim::Dynamic(d) => format!("the manifest calls it dynamic (`{d}`)"),
                };
                return Err(self.field_error(
                    format!("{at}.shape[{axis}]"),
                    format!(
                        "{says}, but {file} fixes it to {got} (`{name}` is {})",
                        fmt_dims(&info.shape)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Labels against the class axis of the first output, where the postprocessor defines one
    /// and the manifest fixes its size.
    fn check_classes(&self, labels: usize) -> Result<(), ManifestError> {
        let Some(post) = &self.postprocessor else {
            return Ok(());
        };
        let shape = &self.outputs[0].shape;
        let last = shape.len().checked_sub(1);
        // (axis, class counts that fit, how the labels make them)
        let (axis, fits, how): (Option<usize>, Vec<usize>, &str) = match post.kind {
            // Class 0 is the blank; PaddleOCR models may add a space as the last class.
            PostprocessorKind::Ctc => (
                last,
                vec![labels + 1, labels + 2],
                "the CTC blank, the labels and possibly a space",
            ),
            PostprocessorKind::Topk => (last, vec![labels], "one per label"),
            PostprocessorKind::Yolo => {
                match post
                    .params
                    .get("layout")
                    .and_then(serde_json::Value::as_str)
                {
                    // [N, boxes, 4 + 1 + classes]
                    Some("yolox" | "v5") => (
                        last,
                        vec![labels + 5],
                        "a box (4), objectness (1) and one score per label",
                    ),
                    // [N, 4 + classes, boxes]
                    Some("v8") => (
                        Some(1),
                        vec![labels + 4],
                        "a box (4) and one score per label",
                    ),
                    _ => return Ok(()),
                }
            }
            PostprocessorKind::Db => return Ok(()),
        };
        let Some(axis) = axis else { return Ok(()) };
        let Some(got) = shape.get(axis).and_then(Dim::fixed) else {
            return Ok(());
        };
        if !fits.contains(&got) {
            let fits: Vec<String> = fits.iter().map(usize::to_string).collect();
            return Err(self.field_error(
                "labels",
                format!(
                    "{labels} labels make {} values ({how}) for the {} postprocessor, but `{}` has {got} (outputs[0].shape[{axis}])",
                    fits.join(" or "),
                    post.kind.name(),
                    self.outputs[0].name
                ),
            ));
        }
        Ok(())
    }

    /// The class names, from the list, the model file's metadata or the labels file; `None`
    /// when the manifest declares none.
    pub fn labels(&self, graph: &Graph) -> Result<Option<Vec<String>>, ManifestError> {
        let Some(labels) = &self.labels else {
            return Ok(None);
        };
        let list = match labels {
            Labels::List(list) => list.clone(),
            Labels::Metadata(key) => {
                let Some(text) = graph.metadata(key) else {
                    let keys: Vec<String> =
                        graph.metadata_keys().map(|k| format!("`{k}`")).collect();
                    return Err(self.field_error(
                        "labels.metadata",
                        format!(
                            "{} has no metadata key `{key}` (its keys: {})",
                            self.file.display(),
                            if keys.is_empty() {
                                "none".to_owned()
                            } else {
                                keys.join(", ")
                            }
                        ),
                    ));
                };
                split_lines(&text)
            }
            Labels::File(file) => {
                let path = self.resolve(file);
                let text = panoptes_files::read_to_string_bounded(&path, LABELS_MAX)
                    .map_err(|e| self.field_error("labels.file", format!("cannot read {e}")))?;
                split_lines(&text)
            }
        };
        if list.is_empty() {
            return Err(self.field_error("labels", "resolves to no labels"));
        }
        Ok(Some(list))
    }
}

impl InputSpec {
    /// The channel count, where the layout and a fixed channel dimension say it.
    pub fn channels(&self) -> Option<usize> {
        let (c, _, _) = self.layout?.axes();
        self.shape.get(c).and_then(Dim::fixed)
    }
}

/// One label per line (`\n` or `\r\n`); a trailing newline adds no label.
fn split_lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn names(infos: &[TensorInfo]) -> String {
    let names: Vec<String> = infos
        .iter()
        .map(|i| format!("`{}` {}", i.name, fmt_dims(&i.shape)))
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelManifest, ManifestError> {
        ModelManifest::parse(text, Path::new("models/m.yaml"))
    }

    #[test]
    fn a_file_that_is_not_a_manifest_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.yaml");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        // Nothing writes to it: a blocking open would never return.
        let err = ModelManifest::load(&fifo).unwrap_err();
        assert!(matches!(err, ManifestError::Read { .. }), "{err}");
        assert!(
            err.to_string().ends_with("is a FIFO, not a regular file"),
            "{err}"
        );
        let err = ModelManifest::load(Path::new("/dev/zero")).unwrap_err();
        assert!(
            err.to_string().ends_with("is a device, not a regular file"),
            "{err}"
        );
        let cases: [(&str, &[u8], &str); 4] = [
            // /etc/shadow's shape: YAML reads it as one multi-line string.
            (
                "shadow",
                b"root:$6$SECRETSALT$SECRETHASH:19000:0:99999:7:::\ndaemon:*:19000::::::\n",
                "not a model manifest: none of its top-level keys",
            ),
            ("broken", b"SECRET: [unclosed\n  - {\n", "not valid YAML"),
            (
                "text",
                b"just SECRET text\n",
                "not a model manifest: the file holds text",
            ),
            ("binary", b"SECRET\xff\xfe", "is not UTF-8 text"),
        ];
        for (name, content, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write");
            let err = ModelManifest::load(&path).unwrap_err();
            let message = format!("{err:#}");
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("SECRET"), "content quoted: {message}");
            assert!(!message.contains("daemon"), "content quoted: {message}");
            assert!(message.contains(name), "{message}");
        }
        // A real manifest with a mistake still gets its snippet: it is a manifest.
        let err = parse("name: m\nfile: m.onnx\ninputs: 3\noutputs: []\n").unwrap_err();
        assert!(err.to_string().contains("inputs: 3"), "{err}");
    }

    const MINIMAL: &str = "
name: m
file: files/m.onnx
inputs:
  - name: x
    layout: nchw
    shape: [batch, 3, 48, width]
    normalize: { scale: 0.00392156862745098, mean: [0.5], std: [0.5, 0.5, 0.5] }
outputs:
  - { name: y, shape: [batch, time, 10] }
";

    #[test]
    fn a_minimal_manifest_reads_with_defaults() {
        let m = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.file_path(), Path::new("models/files/m.onnx"));
        assert_eq!(m.inputs[0].dtype, ElementType::F32);
        assert_eq!(
            m.inputs[0].shape,
            vec![
                Dim::Dynamic("batch".into()),
                Dim::Fixed(3),
                Dim::Fixed(48),
                Dim::Dynamic("width".into())
            ]
        );
        assert_eq!(m.max_batch(), None);
        let n = m.normalization();
        assert_eq!(n.color, ColorOrder::Rgb);
        assert_eq!(n.mean, vec![0.5; 3]);
        assert!((n.apply(0, 255.0) - 1.0).abs() < 1e-6);
        assert!((n.apply(2, 0.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn labels_take_three_forms() {
        for (yaml, want) in [
            ("[a, b]", Labels::List(vec!["a".into(), "b".into()])),
            (
                "{ metadata: character }",
                Labels::Metadata("character".into()),
            ),
            ("{ file: labels.txt }", Labels::File("labels.txt".into())),
        ] {
            let m = parse(&format!("{MINIMAL}labels: {yaml}\n")).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.labels, Some(want));
        }
        let err = parse(&format!("{MINIMAL}labels: {{ metadat: character }}\n")).unwrap_err();
        assert!(err.to_string().contains("metadat"), "{err}");
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases = [
            (
                MINIMAL.replace("[batch, 3, 48, width]", "[batch, 3, 48]"),
                "inputs[0].layout",
            ),
            (
                MINIMAL.replace("mean: [0.5]", "mean: [0.5, 0.5]"),
                "inputs[0].normalize.mean",
            ),
            (
                MINIMAL.replace("std: [0.5, 0.5, 0.5]", "std: [0]"),
                "inputs[0].normalize.std[0]",
            ),
            (format!("{MINIMAL}sha256: abc\n"), "sha256"),
            (
                format!("{MINIMAL}  - {{ name: y, shape: [1] }}\n"),
                "outputs[1].name",
            ),
        ];
        for (text, field) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("models/m.yaml") && msg.contains(field),
                "{msg}"
            );
        }
        for (text, what) in [
            (format!("{MINIMAL}colour: rgb\n"), "colour"),
            (MINIMAL.replace("file: files/m.onnx\n", ""), "file"),
            (
                MINIMAL.replace("[batch, 3, 48, width]", "[batch, -3, 48, width]"),
                "dimension",
            ),
        ] {
            let err = parse(&text).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, ManifestError::Parse { .. }), "{msg}");
            assert!(msg.contains("models/m.yaml") && msg.contains(what), "{msg}");
        }
    }

    #[test]
    fn manifests_round_trip() {
        let text = format!(
            "{MINIMAL}labels: [a]\npostprocessor: {{ kind: ctc, params: {{ min_score: 0.5 }} }}\n"
        );
        let m = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let value = serde_json::to_value(&m).expect("serialises");
        let mut back: ModelManifest = serde_json::from_value(value).expect("reads back");
        back.path = m.path.clone();
        assert_eq!(back, m);
    }
}
