//! Checks the schema cannot express: references between stages, cameras and models, cycles,
//! duplicate IDs, NATS tokens, what each stage consumes and produces, and files that must
//! exist. They read the spanned tree, so they run (and point at lines) even when other parts
//! of the file are malformed.

mod cameras;
mod edges;
mod models;
mod outputs;
mod places;
mod record;
mod settings;
mod stages;

use std::path::Path;

use panoptes_contracts::CameraId;
use panoptes_files::FileError;

use crate::diagnostic::Diagnostic;
use crate::yaml::{Node, Span};

pub fn check(root: &Node, base_dir: &Path) -> Vec<Diagnostic> {
    let mut c = Checker {
        base_dir,
        out: Vec::new(),
    };
    c.namespace(root);
    c.nats(root.get("nats"));
    c.telemetry(root.get("telemetry"));
    c.control(root.get("control"));
    let models = c.models(root.get("models"));
    c.cameras(root.get("cameras"));
    let analytics = root.get("stages").is_some_and(|s| {
        s.items()
            .iter()
            .any(|st| str_at(Some(st), "kind").is_some_and(|(k, _)| k == "analytics"))
    });
    c.places(root.get("cameras"), analytics);
    c.stages(root.get("stages"), &models);
    c.outputs(root.get("outputs"));
    c.record(root.get("record"), root.get("cameras"), analytics);
    c.out
}

/// The checks [`check`] makes of each camera, for one camera on its own (a camera added at
/// runtime); `root` is the camera's mapping.
pub fn check_camera(root: &Node, base_dir: &Path) -> Vec<Diagnostic> {
    let mut c = Checker {
        base_dir,
        out: Vec::new(),
    };
    c.cameras(Some(&Node {
        span: root.span,
        value: crate::yaml::Value::Seq(vec![root.clone()]),
    }));
    c.out
}

struct Checker<'a> {
    base_dir: &'a Path,
    out: Vec<Diagnostic>,
}

fn str_at<'n>(node: Option<&'n Node>, key: &str) -> Option<(&'n str, Span)> {
    let n = node?.get(key)?;
    Some((n.as_str()?, n.span))
}

/// What flows along an edge.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flow {
    Frames,
    Tensors,
    Detections,
    Nothing,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::Frames => "frames",
            Flow::Tensors => "tensors",
            Flow::Detections => "detections",
            Flow::Nothing => "nothing (it publishes)",
        }
    }
}

struct StageInfo<'n> {
    id: &'n str,
    id_span: Span,
    kind: Option<&'n str>,
    kind_span: Span,
    input: &'n str,
    input_span: Option<Span>,
    /// A model stage run on crops at the boxes of its input.
    crops: bool,
    /// What an operator stage says it produces (`None`: a value the schema refuses), and where
    /// it says so.
    emits: Option<Flow>,
    emits_span: Option<Span>,
}

impl Checker<'_> {
    fn file_exists(&mut self, node: Option<&Node>, key: &str, what: &str) {
        let Some((p, span)) = str_at(node, key) else {
            return;
        };
        let path = Path::new(p);
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        };
        // Files the pipeline reads itself must be regular files (a FIFO would block the read, a
        // device never end it); a video file is GStreamer's to open and may be a pipe.
        let refused = if what == "video file" {
            (!full.exists()).then(|| FileError::NotFound { path: full.clone() })
        } else {
            panoptes_files::check_regular(&full).err()
        };
        match refused {
            None => {}
            Some(FileError::NotFound { .. }) => self.out.push(
                Diagnostic::at(span, format!("{what} `{p}` does not exist"))
                    .label("no such file")
                    .help("relative paths are resolved against the topology file's directory"),
            ),
            Some(e) => self.out.push(
                Diagnostic::at(span, format!("{what} `{p}` {}", e.reason()))
                    .label("not a file that can be read"),
            ),
        }
    }

    fn token(&mut self, value: &str, span: Span, what: &str) -> bool {
        match CameraId::new(value) {
            Ok(_) => true,
            Err(e) => {
                self.out.push(
                    Diagnostic::at(
                        span,
                        format!("{what} {value:?} is not a single NATS token: {}", e.reason),
                    )
                    .label("used as a subject token"),
                );
                false
            }
        }
    }

    fn url(&mut self, node: Option<&Node>, key: &str, schemes: &[&str], what: &str) {
        let Some((url, span)) = str_at(node, key) else {
            return;
        };
        let ok = schemes.iter().any(|s| {
            url.strip_prefix(s)
                .and_then(|r| r.strip_prefix("://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
        });
        if !ok {
            let list: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            self.out.push(
                Diagnostic::at(
                    span,
                    format!("{what} {url:?} must start with {}", list.join(" or ")),
                )
                .label("bad URL"),
            );
        }
    }
}
