//! Class names: the `labels` key's three forms (a list, a metadata key of the model file, a
//! labels file) and their resolution to a list.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{ManifestError, ModelManifest};
use crate::graph::Graph;

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

/// Labels files: one class name a line; large vocabularies (OCR dictionaries) run to a few
/// hundred KiB.
const LABELS_MAX: u64 = 16 << 20;

impl ModelManifest {
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

impl ModelManifest {
    /// The class names where they can be known without loading the model: written out or in a
    /// labels file. `None` when they are in the model's metadata or not declared.
    pub fn labels_without_model(&self) -> Result<Option<Vec<String>>, ManifestError> {
        match &self.labels {
            Some(Labels::List(list)) => Ok(Some(list.clone())),
            Some(Labels::File(file)) => {
                let path = self.resolve(file);
                let text = panoptes_files::read_to_string_bounded(&path, LABELS_MAX)
                    .map_err(|e| self.field_error("labels.file", format!("cannot read {e}")))?;
                Ok(Some(split_lines(&text)))
            }
            Some(Labels::Metadata(_)) | None => Ok(None),
        }
    }
}

/// One label per line (`\n` or `\r\n`); a trailing newline adds no label.
fn split_lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::{MINIMAL, parse};

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
}
