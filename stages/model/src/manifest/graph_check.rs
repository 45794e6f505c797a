//! The manifest held against the loaded model file: tensor names, ranks, fixed dimensions and
//! element types, and the label count against the postprocessor's class axis.

use panoptes_files::FileError;

use super::{Dim, ManifestError, ModelManifest, PostprocessorKind};
use crate::ModelError;
use crate::graph::{ElementType, Graph, GraphOptions, TensorInfo, fmt_dims};
use crate::registry::load_checked;

impl ModelManifest {
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
}

fn names(infos: &[TensorInfo]) -> String {
    let names: Vec<String> = infos
        .iter()
        .map(|i| format!("`{}` {}", i.name, fmt_dims(&i.shape)))
        .collect();
    names.join(", ")
}
