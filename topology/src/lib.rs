//! Topology files: the YAML language users declare pipelines in, validated with located
//! diagnostics (`file:line:column` and a caret snippet), its JSON Schema, and its graph.
//!
//! Loading goes: YAML → spanned tree (`yaml`, with `${VAR}` interpolation) → structural check
//! against the JSON Schema generated from [`config`] (`schema_check`) → semantic checks on the
//! tree (`semantic`) → typed [`Topology`]. Every problem found in one pass is reported.
//! [`Plan`] compiles a topology for one worker process: its stages in build order and what
//! flows along each edge.

pub mod config;
mod de;
pub mod diagnostic;
pub mod geometry;
pub mod graph;
mod operator;
pub mod outputs;
mod paths;
mod places;
pub mod plan;
pub mod record;
mod schema_check;
mod semantic;
mod shadow;
mod test_pattern;
mod tracking;
pub mod yaml;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::*;
pub use diagnostic::{Diagnostic, Diagnostics, SourceFile};
pub use plan::{Plan, PlanError, Step};
pub use yaml::PathSeg;

/// A topology that passed validation, with what is needed to point back into its file.
#[derive(Clone, Debug)]
pub struct TopologyFile {
    pub config: Topology,
    /// Relative paths in the topology are resolved against this (the file's directory).
    pub base_dir: PathBuf,
    pub source: Arc<SourceFile>,
    tree: yaml::Node,
}

impl Deref for TopologyFile {
    type Target = Topology;
    fn deref(&self) -> &Topology {
        &self.config
    }
}

impl DerefMut for TopologyFile {
    fn deref_mut(&mut self) -> &mut Topology {
        &mut self.config
    }
}

/// Where `${VAR}` values come from.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`TopologyFile::parse`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl TopologyFile {
    /// Reads, interpolates and validates a topology file.
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        // Bounded and non-blocking: a FIFO, a device or a huge file named as a topology is
        // refused by what it is, before anything is parsed.
        let text = panoptes_files::read_to_string_bounded(path, panoptes_files::TOPOLOGY_MAX)
            .map_err(|e| {
                Diagnostics::single(
                    SourceFile::new(path.display().to_string(), String::new()),
                    Diagnostic::new(format!("cannot read topology {e}")),
                )
            })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self::parse(&text, &path.display().to_string(), &base, &process_env)
    }

    /// Validates topology text; `origin` names it in diagnostics, `base_dir` anchors relative
    /// paths, `env` answers `${VAR}`.
    pub fn parse(
        text: &str,
        origin: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
    ) -> Result<Self, Diagnostics> {
        let source = Arc::new(SourceFile::new(origin.to_owned(), text.to_owned()));
        let fail = |items: Vec<Diagnostic>| Diagnostics::new(source.clone(), items);
        let (tree, mut problems) = match yaml::parse(text, env) {
            Ok(parsed) => parsed,
            Err(d) => return Err(fail(vec![*d])),
        };
        problems.extend(schema_check::check(schema(), &tree));
        problems.extend(semantic::check(&tree, base_dir));
        if !problems.is_empty() {
            problems.sort_by_key(|d| d.span.map(|s| s.start).unwrap_or(0));
            return Err(fail(problems));
        }
        // What the schema admits but the types do not (a number out of a field's range, say)
        // is reported at the value, like every other problem.
        let config: Topology = de::read(&tree).map_err(|e| fail(vec![e.into_diagnostic()]))?;
        Ok(Self {
            config,
            base_dir: base_dir.to_path_buf(),
            source,
            tree,
        })
    }

    /// Validates one camera given on its own (YAML or JSON, as an entry of `cameras:`), as a
    /// topology file's cameras are: schema, ID, URLs, files. For cameras added at runtime.
    pub fn parse_camera(
        text: &str,
        origin: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
    ) -> Result<CameraConfig, Diagnostics> {
        let source = Arc::new(SourceFile::new(origin.to_owned(), text.to_owned()));
        let fail = |items: Vec<Diagnostic>| Diagnostics::new(source.clone(), items);
        let (tree, mut problems) = match yaml::parse(text, env) {
            Ok(parsed) => parsed,
            Err(d) => return Err(fail(vec![*d])),
        };
        problems.extend(schema_check::check(camera_schema(), &tree));
        problems.extend(semantic::check_camera(&tree, base_dir));
        if !problems.is_empty() {
            problems.sort_by_key(|d| d.span.map(|s| s.start).unwrap_or(0));
            return Err(fail(problems));
        }
        de::read(&tree).map_err(|e| fail(vec![e.into_diagnostic()]))
    }

    /// Resolves a path from the topology against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Each stage's input, in stage order, with defaults applied.
    pub fn stage_inputs(&self) -> Vec<&str> {
        stage_inputs(&self.config)
    }

    /// A diagnostic pointing at the node at `path` (or the closest ancestor that exists), for
    /// problems found after loading: environment checks, runtime limits, start-up failures.
    pub fn diagnostic_at(&self, path: &[PathSeg], message: impl Into<String>) -> Diagnostic {
        let span = self.tree.find(path).map(|n| n.span);
        Diagnostic {
            span,
            ..Diagnostic::new(message)
        }
    }

    /// Wraps diagnostics made by [`Self::diagnostic_at`] for rendering against this file.
    pub fn diagnostics(&self, mut items: Vec<Diagnostic>) -> Diagnostics {
        items.sort_by_key(|d| d.span.map(|s| s.start).unwrap_or(0));
        Diagnostics::new(self.source.clone(), items)
    }
}

/// Each stage's input with defaults applied: the stage above it, or `frames` for the first.
pub fn stage_inputs(config: &Topology) -> Vec<&str> {
    let mut out = Vec::with_capacity(config.stages.len());
    for (i, stage) in config.stages.iter().enumerate() {
        let input = match stage.input() {
            Some(input) => input,
            None if i == 0 => FRAMES,
            None => config.stages[i - 1].id(),
        };
        out.push(input);
    }
    out
}

/// The JSON Schema of topology files, generated from [`config::Topology`].
pub fn json_schema() -> serde_json::Value {
    schema().clone()
}

/// The schema of one camera: the topology schema's definitions, rooted at `CameraConfig`.
fn camera_schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        serde_json::json!({
            "$ref": "#/$defs/CameraConfig",
            "$defs": schema().get("$defs").cloned().unwrap_or_default(),
        })
    });
    &SCHEMA
}

/// Generated once per process: every load walks it.
fn schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        let schema = schemars::schema_for!(Topology);
        serde_json::to_value(&schema).unwrap_or(serde_json::Value::Bool(true))
    });
    &SCHEMA
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TopologyFile, Diagnostics> {
        TopologyFile::parse(text, "t.yaml", Path::new("."), &|_| None)
    }

    /// The one diagnostic of a refused topology, with the text under its span.
    fn refused(text: &str) -> (String, String) {
        let err = parse(text).expect_err("refused");
        assert_eq!(err.items.len(), 1, "{}", err.render(false));
        let d = &err.items[0];
        let span = d.span.expect("located");
        (d.message.clone(), text[span.start..span.end].to_owned())
    }

    const STAGES: &str = "stages:\n  - id: s\n    kind: sink\n";

    #[test]
    fn numbers_past_a_fields_type_are_reported_at_the_value() {
        // u64: past i64 the tree cannot hold the number exactly.
        let text = format!(
            "{}models:\n  m: {{ file: m.onnx, max_batch: 18446744073709551615 }}\n",
            STAGES
        );
        let err = parse(&text).expect_err("refused");
        let d = err
            .items
            .iter()
            .find(|d| d.message.contains("max_batch"))
            .unwrap_or_else(|| panic!("{}", err.render(false)));
        let span = d.span.expect("located");
        assert_eq!(&text[span.start..span.end], "18446744073709551615");
        assert!(
            d.message.contains("must be at most 4294967295"),
            "{}",
            d.message
        );
        // u32 (`partitions` also has a schema maximum; `max_batch` has only its type).
        let text = format!(
            "{}models:\n  m: {{ file: m.onnx, max_batch: 4294967296 }}\n",
            STAGES
        );
        let err = parse(&text).expect_err("refused");
        let d = err
            .items
            .iter()
            .find(|d| d.message.contains("max_batch"))
            .unwrap_or_else(|| panic!("{}", err.render(false)));
        let span = d.span.expect("located");
        assert_eq!(&text[span.start..span.end], "4294967296");
    }

    #[test]
    fn a_timeout_past_u64_is_reported_at_the_value() {
        let text = format!(
            "{STAGES}  - id: op\n    kind: operator\n    input: frames\n    wasm: x.wasm\n    timeout_ms: 18446744073709551615\n"
        );
        let err = parse(&text).expect_err("refused");
        let d = err
            .items
            .iter()
            .find(|d| d.message.contains("timeout_ms"))
            .unwrap_or_else(|| panic!("{}", err.render(false)));
        let span = d.span.expect("located");
        assert_eq!(&text[span.start..span.end], "18446744073709551615");
        assert!(
            d.message
                .contains("stages[1].timeout_ms must be at most 9223372036854775807"),
            "{}",
            d.message
        );
    }

    #[test]
    fn an_alias_bomb_is_one_located_diagnostic() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..=9 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                [prev.as_str(); 10].join(", ")
            ));
        }
        let (message, at) = refused(&text);
        assert!(message.contains("aliases expand this file"), "{message}");
        assert!(at.starts_with("*a"), "{at}");
    }
}
