//! What a manifest can check on its own, without the model file: required fields, the sha256
//! format, unique tensor names, layouts against ranks and preprocessing against channels.

use std::collections::HashSet;

use super::{ColorOrder, InputSpec, Labels, ManifestError, ModelManifest};

impl ModelManifest {
    /// What the manifest can check without the model file.
    pub(super) fn validate(&self) -> Result<(), ManifestError> {
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
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use crate::manifest::ManifestError;
    use crate::manifest::tests::{MINIMAL, parse};

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
}
