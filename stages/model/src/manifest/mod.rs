//! Model manifests: a YAML file next to an ONNX model that says what the graph takes and gives
//! (tensor names, layouts, shapes, element types), how frames become its input (colour order,
//! normalisation, resizing), its labels and which postprocessor decodes it. `docs/models.md`
//! describes the format.
//!
//! A manifest is read with [`ModelManifest::load`] (syntax, unknown keys and internal
//! consistency) and held against the real graph with [`ModelManifest::check`]. Every error
//! names the manifest file and the field, e.g.
//! `models/ppocr-v4-det.yaml: inputs[0].shape[1]: the manifest says 4, but ch_PP-OCRv4_det_infer.onnx fixes it to 3`.

mod check;
mod graph_check;
mod labels;
mod top_level;
mod types;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use panoptes_files::{FileError, MANIFEST_MAX};

use top_level::{REQUIRED_KEYS, TopLevel};

pub use labels::Labels;
pub use types::{
    Align, BackendHints, ColorOrder, Dim, InputSpec, Layout, ModelSource, Normalization, Normalize,
    OutputSpec, PostprocessorKind, PostprocessorSpec, Resize, ResizeMode, TractHints,
};

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ElementType;

    pub(super) fn parse(text: &str) -> Result<ModelManifest, ManifestError> {
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

    pub(super) const MINIMAL: &str = "
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
