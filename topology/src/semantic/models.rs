//! The top-level `models`: names that are NATS tokens, exactly one model source each, files
//! that exist and sha256 digests; and the message for a reference to a model not declared.

use std::collections::HashMap;

use super::{Checker, str_at};
use crate::diagnostic::Diagnostic;
use crate::schema_check::did_you_mean;
use crate::yaml::{Node, Span};

impl Checker<'_> {
    /// Model names with their declared max batch, for stage references.
    pub(super) fn models<'n>(&mut self, models: Option<&'n Node>) -> HashMap<&'n str, Option<u64>> {
        let mut out = HashMap::new();
        let Some(models) = models else { return out };
        for e in models.entries() {
            self.token(&e.key, e.key_span, "model name");
            self.file_exists(Some(&e.value), "file", "model file");
            self.file_exists(Some(&e.value), "manifest", "model manifest");
            // Not a mapping: the schema check says so.
            if matches!(e.value.value, crate::yaml::Value::Map(_)) {
                match (e.value.entry("file"), e.value.entry("manifest")) {
                    (Some(_), Some(m)) => self.out.push(
                        Diagnostic::at(
                            m.key_span,
                            format!("model `{}` has both `file` and `manifest`", e.key),
                        )
                        .label("second source")
                        .related(
                            e.value.entry("file").map_or(m.key_span, |f| f.key_span),
                            "`file` given here",
                        )
                        .help("the manifest names the file: keep one of the two"),
                    ),
                    (None, None) => self.out.push(
                        Diagnostic::at(
                            e.key_span,
                            format!("model `{}` needs a `file` or a `manifest`", e.key),
                        )
                        .label("no model file")
                        .help("e.g. `manifest: ../models/ppocr-v4-det.yaml` or `file: model.onnx`"),
                    ),
                    _ => {}
                }
            }
            if let Some((sha, span)) = str_at(Some(&e.value), "sha256")
                && !(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                self.out.push(
                    Diagnostic::at(span, "sha256 must be 64 hexadecimal digits")
                        .label("not a sha256"),
                );
            }
            out.insert(
                e.key.as_str(),
                e.value.get("max_batch").and_then(Node::as_u64),
            );
        }
        out
    }

    pub(super) fn unknown_model(
        &mut self,
        model: &str,
        span: Span,
        models: &HashMap<&str, Option<u64>>,
    ) {
        let mut names: Vec<&str> = models.keys().copied().collect();
        names.sort_unstable();
        let mut d =
            Diagnostic::at(span, format!("unknown model `{model}`")).label("not in `models`");
        d = match did_you_mean(model, names.iter().copied()) {
            Some(best) => d.help(format!("did you mean `{best}`?")),
            None if names.is_empty() => d.help("declare it under the top-level `models:`"),
            None => d.help(format!("declared models: {}", names.join(", "))),
        };
        self.out.push(d);
    }
}
