//! Topology files (YAML): cameras, the chain of stages frames go through, and where results go.
//! Relative paths in a topology are resolved against the directory of the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::camera::CameraId;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read topology {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: invalid topology:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub nats: NatsConfig,
    pub cameras: Vec<CameraConfig>,
    /// Frames go through these stages in order.
    pub stages: Vec<StageConfig>,
    /// Directory relative paths are resolved against (the topology file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_namespace() -> String {
    crate::Subjects::DEFAULT_NAMESPACE.to_owned()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// A NATS server to use. Without one, `panoptes run` starts its own local nats-server.
    pub url: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: CameraId,
    pub source: SourceConfig,
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
}

fn default_fps() -> u32 {
    10
}
fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A synthetic camera: a solid background with text drawn by GStreamer's textoverlay.
    TestPattern(TestPatternConfig),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestPatternConfig {
    pub text: String,
    /// Pango font description, e.g. "Sans Bold 48".
    #[serde(default)]
    pub font: Option<String>,
    /// Text position as a fraction of the frame (textoverlay `xpos`/`ypos`).
    #[serde(default = "half")]
    pub xpos: f64,
    #[serde(default = "half")]
    pub ypos: f64,
    /// Background colour as `#RRGGBB`.
    #[serde(default)]
    pub background: Option<String>,
}

fn half() -> f64 {
    0.5
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    /// A Wasm operator component run in the sandbox.
    Operator {
        id: String,
        wasm: PathBuf,
        /// Passed to the operator's `init` as JSON.
        #[serde(default)]
        config: serde_json::Value,
        /// Per-call time limit in milliseconds.
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// Linear-memory cap per instance, in MiB.
        #[serde(default)]
        memory_mib: Option<u64>,
    },
    /// An ONNX model run by a host kernel.
    Model {
        id: String,
        model: PathBuf,
        /// Name reported in detection messages; defaults to the file stem.
        #[serde(default)]
        name: Option<String>,
        /// Intra-op threads (0 or absent: let the backend decide).
        #[serde(default)]
        threads: Option<usize>,
    },
    /// Turns model output into detections.
    Postprocess {
        id: String,
        postprocessor: String,
        #[serde(default)]
        params: serde_json::Value,
        /// Label given to every detection.
        #[serde(default)]
        label: Option<String>,
    },
}

impl StageConfig {
    pub fn id(&self) -> &str {
        match self {
            StageConfig::Operator { id, .. }
            | StageConfig::Model { id, .. }
            | StageConfig::Postprocess { id, .. } => id,
        }
    }
}

impl Topology {
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// Parses and validates a topology; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Self, TopologyError> {
        let mut topology: Topology =
            serde_saphyr::from_str(text).map_err(|e| TopologyError::Parse {
                path: origin.to_owned(),
                message: e.to_string(),
            })?;
        topology.base_dir = base_dir.to_path_buf();
        let problems = topology.problems();
        if !problems.is_empty() {
            return Err(TopologyError::Invalid {
                path: origin.to_owned(),
                problems,
            });
        }
        Ok(topology)
    }

    /// Resolves a path from the topology against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if CameraId::new(&self.namespace).is_err() {
            problems.push(format!(
                "namespace {:?} must be one NATS token (letters, digits, '-', '_')",
                self.namespace
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for cam in &self.cameras {
            if !seen.insert(cam.id.as_str()) {
                problems.push(format!("camera ID {:?} is used twice", cam.id.as_str()));
            }
            if cam.fps == 0 || cam.width == 0 || cam.height == 0 {
                problems.push(format!(
                    "camera {:?}: fps, width and height must be > 0",
                    cam.id.as_str()
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for stage in &self.stages {
            if !seen.insert(stage.id()) {
                problems.push(format!("stage ID {:?} is used twice", stage.id()));
            }
        }
        if self.stages.is_empty() {
            problems.push("no stages: a topology needs at least one".to_owned());
        }
        if !matches!(
            self.stages.last(),
            None | Some(StageConfig::Postprocess { .. })
        ) {
            problems.push(format!(
                "the last stage ({:?}) must be a postprocess stage, which produces detections",
                self.stages.last().map(StageConfig::id).unwrap_or_default()
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cameras:
  - id: cam-a
    source: { test_pattern: { text: "HELLO" } }
stages:
  - { id: pre, kind: operator, wasm: op.wasm, config: { width: 640 } }
  - { id: det, kind: model, model: det.onnx }
  - { id: boxes, kind: postprocess, postprocessor: db }
"#;

    #[test]
    fn parses_and_resolves() {
        let t = Topology::parse(GOOD, "t.yaml", Path::new("/topo")).expect("valid");
        assert_eq!(t.namespace, "panoptes");
        assert_eq!(t.cameras[0].fps, 10);
        assert_eq!(t.stages.len(), 3);
        let StageConfig::Operator { wasm, config, .. } = &t.stages[0] else {
            panic!("not an operator: {:?}", t.stages[0]);
        };
        assert_eq!(t.resolve(wasm), Path::new("/topo/op.wasm"));
        assert_eq!(config["width"], 640);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_ids() {
        let bad = GOOD.replace("text:", "txet:");
        let err = Topology::parse(&bad, "t.yaml", Path::new(".")).expect_err("accepted");
        assert!(err.to_string().contains("txet"), "{err}");

        let bad = GOOD.replace("cam-a", "cam.a");
        let err = Topology::parse(&bad, "t.yaml", Path::new(".")).expect_err("accepted");
        assert!(err.to_string().contains("one NATS token"), "{err}");

        let bad = GOOD.replace("postprocessor: db", "postprocessor: db, colour: red");
        let err = Topology::parse(&bad, "t.yaml", Path::new(".")).expect_err("accepted");
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let bad = GOOD.replace("id: det", "id: pre").replace(
            "  - { id: boxes, kind: postprocess, postprocessor: db }\n",
            "",
        );
        let err = Topology::parse(&bad, "t.yaml", Path::new(".")).expect_err("accepted");
        let text = err.to_string();
        assert!(
            text.contains("used twice") && text.contains("last stage"),
            "{text}"
        );
    }
}
