//! Topology diagrams: cameras → stages → subjects, as Graphviz DOT or Mermaid.
//!
//! Both formats draw one graph: cameras publish to their frames subjects, stages follow their
//! inputs (chains and fan-out), and every branch ends at the subject its results are published on.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{
    Emits, FRAMES, OutputConfig, SourceConfig, StageConfig, Topology, WireEncoding,
};
use crate::stage_inputs;

/// The diagram language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Graphviz (`dot -Tsvg`).
    Dot,
    /// Mermaid `flowchart LR` (Markdown renderers on GitHub, GitLab, …).
    Mermaid,
    /// The same drawing as data, for programs (the web view draws it): `groups` left to
    /// right, each with `key`, `title` and `nodes` (`id`, `lines`, `shape`), then `edges`
    /// as `[from, to]` node IDs.
    Json,
}

/// Draws a validated topology; the output depends only on the topology, so it is stable.
/// (`&TopologyFile` works too: it dereferences to [`Topology`].)
pub fn render(t: &Topology, format: Format) -> String {
    let graph = Graph::build(t);
    match format {
        Format::Dot => graph.dot(),
        Format::Mermaid => graph.mermaid(),
        Format::Json => graph.json(),
    }
}

/// The topology as a Graphviz digraph.
pub fn dot(t: &Topology) -> String {
    render(t, Format::Dot)
}

/// The topology as a Mermaid flowchart.
pub fn mermaid(t: &Topology) -> String {
    render(t, Format::Mermaid)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Camera,
    Publisher,
    Subject,
    Stage,
    Output,
}

impl Shape {
    const ALL: [Shape; 5] = [
        Shape::Camera,
        Shape::Publisher,
        Shape::Subject,
        Shape::Stage,
        Shape::Output,
    ];

    fn class(self) -> &'static str {
        match self {
            Shape::Camera => "camera",
            Shape::Publisher => "publisher",
            Shape::Subject => "subject",
            Shape::Stage => "stage",
            Shape::Output => "output",
        }
    }

    fn dot_attrs(self) -> &'static str {
        match self {
            Shape::Camera => r##"shape=box, style="rounded,filled", fillcolor="#dbe9f6""##,
            Shape::Publisher => r##"shape=ellipse, style=dashed"##,
            Shape::Subject => r##"shape=cds, style=filled, fillcolor="#fdf1d6""##,
            Shape::Stage => r##"shape=box, style=filled, fillcolor="#e3f2e1""##,
            Shape::Output => r##"shape=hexagon, style=filled, fillcolor="#f3e1f2""##,
        }
    }

    fn mermaid_style(self) -> &'static str {
        match self {
            Shape::Camera => "fill:#dbe9f6,stroke:#3d6a99",
            Shape::Publisher => "fill:#ffffff,stroke:#888888,stroke-dasharray:4 3",
            Shape::Subject => "fill:#fdf1d6,stroke:#b07a1f",
            Shape::Stage => "fill:#e3f2e1,stroke:#3b7a3b",
            Shape::Output => "fill:#f3e1f2,stroke:#7a3b78",
        }
    }

    /// Opening and closing delimiters of a Mermaid node of this shape.
    fn mermaid_brackets(self) -> (&'static str, &'static str) {
        match self {
            Shape::Camera => ("([", "])"),
            Shape::Publisher => ("((", "))"),
            Shape::Subject => ("[/", "/]"),
            Shape::Stage => ("[", "]"),
            Shape::Output => ("{{", "}}"),
        }
    }
}

struct Node {
    /// A safe identifier in both formats: ASCII letters, digits and `_`, starting with a letter.
    id: String,
    lines: Vec<String>,
    shape: Shape,
}

/// A titled group of nodes (a DOT cluster, a Mermaid subgraph); untitled groups are drawn loose.
struct Group {
    key: &'static str,
    title: Option<String>,
    nodes: Vec<Node>,
}

/// The drawing, format-independent: groups in left-to-right order, then edges.
struct Graph {
    groups: Vec<Group>,
    edges: Vec<(String, String)>,
}

/// Hands out unique safe node IDs.
#[derive(Default)]
struct Ids {
    used: HashSet<String>,
}

impl Ids {
    /// `prefix_` + `raw` with every character outside `[A-Za-z0-9_]` as `_`; a suffix keeps
    /// IDs that sanitise alike (`text-boxes`, `text_boxes`) apart.
    fn make(&mut self, prefix: &str, raw: &str) -> String {
        let mut base = format!("{prefix}_");
        base.extend(
            raw.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
        let mut id = base.clone();
        let mut n = 2;
        while !self.used.insert(id.clone()) {
            id = format!("{base}_{n}");
            n += 1;
        }
        id
    }
}

/// The YAML spelling of a unit enum value (`tcp`, `cuda`, `db`, …).
fn spelling<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from("?"),
    }
}

fn camera_lines(cam: &crate::config::CameraConfig) -> Vec<String> {
    let source = match &cam.source {
        SourceConfig::Rtsp(s) => format!("rtsp ({})", spelling(&s.transport)),
        SourceConfig::File(f) => {
            let name = f
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.path.display().to_string());
            let looping = if f.looping { ", loop" } else { "" };
            format!("file {name}{looping}")
        }
        SourceConfig::V4l2(v) => format!("v4l2 {}", v.device.display()),
        SourceConfig::Http(_) => String::from("http"),
        SourceConfig::TestPattern(_) => String::from("test_pattern"),
    };
    let mut size = format!("{}x{} @ {} fps", cam.width, cam.height, cam.fps);
    match cam.encoding {
        WireEncoding::Raw => {}
        WireEncoding::Jpeg => {
            let _ = write!(size, ", jpeg q{}", cam.jpeg_quality);
        }
        // Which one is decided by the server's max_payload when the ingest node connects.
        WireEncoding::Auto => {
            let _ = write!(size, ", raw or jpeg q{}", cam.jpeg_quality);
        }
    }
    vec![cam.id.clone(), source, size]
}

fn stage_lines(stage: &StageConfig) -> Vec<String> {
    let mut lines = vec![stage.id().to_owned()];
    match stage {
        StageConfig::Operator(op) => {
            let name = op
                .wasm
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| op.wasm.display().to_string());
            lines.push(format!("operator: {name}"));
            if op.emits != Emits::Tensors {
                lines.push(format!("emits {}", spelling(&op.emits)));
            }
            if !op.models.is_empty() {
                lines.push(format!("models: {}", op.models.join(", ")));
            }
        }
        StageConfig::Model(m) => {
            lines.push(format!("model: {}", m.model));
            let mut detail = vec![format!("{}/{}", spelling(&m.backend), spelling(&m.device))];
            if let Some(c) = &m.crops {
                detail.push(format!("crops {}x{}", c.width, c.height));
            }
            if let Some(b) = &m.batching {
                detail.push(format!("batch {}", b.max_batch));
            }
            lines.push(detail.join(", "));
            if let Some(o) = m.crops.as_ref().and_then(|c| c.orientation.as_ref()) {
                lines.push(format!("upright by: {}", o.model));
            }
        }
        StageConfig::Postprocess(p) => {
            lines.push(format!("postprocess: {}", spelling(&p.postprocessor)));
            if let Some(label) = &p.label {
                lines.push(format!("label: {label}"));
            }
        }
        StageConfig::Tracker(t) => {
            lines.push(format!(
                "tracker: iou {}, max age {}",
                t.iou_threshold,
                t.max_age_ms.map_or_else(
                    || format!("{} frames", t.max_age),
                    |ms| format!("{} frames or {ms} ms", t.max_age)
                )
            ));
        }
        StageConfig::Analytics(_) => lines.push("analytics: zones, lines".to_owned()),
        StageConfig::Sink(s) => lines.push(format!("sink: {}", spelling(&s.format))),
    }
    lines
}

/// A sink's subject pattern as a subscription: `{camera}` becomes `*`.
fn sink_subject(pattern: &str, namespace: &str, stage: &str) -> String {
    pattern
        .replace("{namespace}", namespace)
        .replace("{stage}", stage)
        .replace("{camera}", "*")
}

/// The node of `subject` among the results, added if new.
fn subject_node(results: &mut Group, ids: &mut Ids, subject: &str) -> String {
    if let Some(n) = results.nodes.iter().find(|n| n.lines[0] == subject) {
        return n.id.clone();
    }
    let id = ids.make("r", &(results.nodes.len() + 1).to_string());
    results.nodes.push(Node {
        id: id.clone(),
        lines: vec![subject.to_owned()],
        shape: Shape::Subject,
    });
    id
}

/// A URL without what may be a credential (user, password, query).
fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = match rest.split_once('/') {
        Some((authority, path)) => format!(
            "{}/{path}",
            authority.rsplit_once('@').map_or(authority, |(_, h)| h)
        ),
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_owned(),
    };
    format!("{scheme}://{rest}")
}

impl Graph {
    fn json(&self) -> String {
        let groups: Vec<serde_json::Value> = self
            .groups
            .iter()
            .filter(|g| !g.nodes.is_empty())
            .map(|g| {
                let nodes: Vec<serde_json::Value> = g
                    .nodes
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "id": n.id,
                            "lines": n.lines,
                            "shape": n.shape.class(),
                        })
                    })
                    .collect();
                serde_json::json!({ "key": g.key, "title": g.title, "nodes": nodes })
            })
            .collect();
        let mut out = serde_json::json!({ "groups": groups, "edges": self.edges }).to_string();
        out.push('\n');
        out
    }

    fn build(t: &Topology) -> Graph {
        let ns = t.namespace.as_str();
        let mut ids = Ids::default();
        let mut edges = Vec::new();

        // Where frames come from, and the subjects they are published on.
        let mut sources = Group {
            key: "ingest",
            title: None,
            nodes: Vec::new(),
        };
        let mut frames = Group {
            key: "frames",
            title: None,
            nodes: Vec::new(),
        };
        if t.cameras.is_empty() {
            let publisher = ids.make("any", "publisher");
            let subject = ids.make("f", "all");
            sources.nodes.push(Node {
                id: publisher.clone(),
                lines: vec![String::from("any publisher")],
                shape: Shape::Publisher,
            });
            frames.nodes.push(Node {
                id: subject.clone(),
                lines: vec![format!("{ns}.frames.*")],
                shape: Shape::Subject,
            });
            edges.push((publisher, subject));
        } else {
            sources.title = Some(String::from("cameras (panoptes ingest)"));
            for cam in &t.cameras {
                let camera = ids.make("c", &cam.id);
                let subject = ids.make("f", &cam.id);
                sources.nodes.push(Node {
                    id: camera.clone(),
                    lines: camera_lines(cam),
                    shape: Shape::Camera,
                });
                frames.nodes.push(Node {
                    id: subject.clone(),
                    lines: vec![format!("{ns}.frames.{}", cam.id)],
                    shape: Shape::Subject,
                });
                edges.push((camera, subject));
            }
        }
        let frame_ids: Vec<String> = frames.nodes.iter().map(|n| n.id.clone()).collect();

        // Stages, following their inputs.
        let stage_ids: Vec<String> = t.stages.iter().map(|s| ids.make("s", s.id())).collect();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, s) in t.stages.iter().enumerate() {
            index.entry(s.id()).or_insert(i);
        }
        let mut has_child = vec![false; t.stages.len()];
        for (i, input) in stage_inputs(t).into_iter().enumerate() {
            if input == FRAMES {
                for f in &frame_ids {
                    edges.push((f.clone(), stage_ids[i].clone()));
                }
            } else if let Some(&parent) = index.get(input) {
                has_child[parent] = true;
                edges.push((stage_ids[parent].clone(), stage_ids[i].clone()));
            }
        }
        let stages = Group {
            key: "worker",
            title: Some(format!(
                "stages (panoptes worker, {} delivery, {} partitions)",
                spelling(&t.delivery),
                t.partitions
            )),
            nodes: t
                .stages
                .iter()
                .zip(&stage_ids)
                .map(|(s, id)| Node {
                    id: id.clone(),
                    lines: stage_lines(s),
                    shape: Shape::Stage,
                })
                .collect(),
        };

        // Results: sinks publish on their subject, other leaves on the default one.
        let mut results = Group {
            key: "results",
            title: None,
            nodes: Vec::new(),
        };
        for (i, stage) in t.stages.iter().enumerate() {
            let subject = match stage {
                StageConfig::Sink(s) => sink_subject(&s.subject, ns, &s.id),
                _ if !has_child[i] => format!("{ns}.detections.*"),
                _ => continue,
            };
            let existing = results.nodes.iter().find(|n| n.lines[0] == subject);
            let target = match existing {
                Some(n) => n.id.clone(),
                None => {
                    let id = ids.make("r", &(results.nodes.len() + 1).to_string());
                    results.nodes.push(Node {
                        id: id.clone(),
                        lines: vec![subject],
                        shape: Shape::Subject,
                    });
                    id
                }
            };
            edges.push((stage_ids[i].clone(), target));
        }

        // Analytics stages also publish their events.
        let analytics_subject = format!("{ns}.analytics.*");
        for (i, stage) in t.stages.iter().enumerate() {
            if matches!(stage, StageConfig::Analytics(_)) {
                let target = subject_node(&mut results, &mut ids, &analytics_subject);
                edges.push((stage_ids[i].clone(), target));
            }
        }

        // Outputs read result subjects and deliver elsewhere.
        let mut outputs = Group {
            key: "outputs",
            title: (!t.outputs.is_empty())
                .then(|| String::from("outputs (panoptes run or panoptes sink)")),
            nodes: Vec::new(),
        };
        for o in &t.outputs {
            let id = ids.make("o", o.id());
            let to = match o {
                OutputConfig::Webhook(w) => format!("webhook: {}", shown_url(&w.url)),
                OutputConfig::Mqtt(m) => format!("mqtt: {} {}", shown_url(&m.url), m.topic),
            };
            outputs.nodes.push(Node {
                id: id.clone(),
                lines: vec![o.id().to_owned(), to],
                shape: Shape::Output,
            });
            for source in o.from() {
                let subject = format!("{ns}.{}.*", source.name());
                let from = subject_node(&mut results, &mut ids, &subject);
                edges.push((from, id.clone()));
            }
        }

        Graph {
            groups: vec![sources, frames, stages, results, outputs],
            edges,
        }
    }

    fn dot(&self) -> String {
        let mut out = String::from("digraph topology {\n");
        out.push_str("  rankdir=LR;\n");
        out.push_str("  node [fontname=\"Helvetica\", fontsize=11];\n");
        out.push_str("  edge [color=\"#555555\"];\n");
        for group in &self.groups {
            if group.nodes.is_empty() {
                continue;
            }
            out.push('\n');
            let indent = match &group.title {
                Some(title) => {
                    let _ = writeln!(out, "  subgraph cluster_{} {{", group.key);
                    let _ = writeln!(out, "    label=\"{}\";", dot_escape(title));
                    out.push_str("    style=\"rounded,dashed\";\n");
                    out.push_str("    fontname=\"Helvetica\";\n");
                    "    "
                }
                None => "  ",
            };
            for node in &group.nodes {
                let label: Vec<String> = node.lines.iter().map(|l| dot_escape(l)).collect();
                let _ = writeln!(
                    out,
                    "{indent}{} [{}, label=\"{}\"];",
                    node.id,
                    node.shape.dot_attrs(),
                    label.join("\\n")
                );
            }
            if group.title.is_some() {
                out.push_str("  }\n");
            }
        }
        out.push('\n');
        for (from, to) in &self.edges {
            let _ = writeln!(out, "  {from} -> {to};");
        }
        out.push_str("}\n");
        out
    }

    fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for group in &self.groups {
            if group.nodes.is_empty() {
                continue;
            }
            let indent = match &group.title {
                Some(title) => {
                    let _ = writeln!(
                        out,
                        "  subgraph {}[\"{}\"]",
                        group.key,
                        mermaid_escape(title)
                    );
                    "    "
                }
                None => "  ",
            };
            for node in &group.nodes {
                let label: Vec<String> = node.lines.iter().map(|l| mermaid_escape(l)).collect();
                let (open, close) = node.shape.mermaid_brackets();
                let _ = writeln!(
                    out,
                    "{indent}{}{open}\"{}\"{close}",
                    node.id,
                    label.join("<br>")
                );
            }
            if group.title.is_some() {
                out.push_str("  end\n");
            }
        }
        for (from, to) in &self.edges {
            let _ = writeln!(out, "  {from} --> {to}");
        }
        for shape in Shape::ALL {
            let members: Vec<&str> = self
                .groups
                .iter()
                .flat_map(|g| &g.nodes)
                .filter(|n| n.shape == shape)
                .map(|n| n.id.as_str())
                .collect();
            if members.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "  classDef {} {}",
                shape.class(),
                shape.mermaid_style()
            );
            let _ = writeln!(out, "  class {} {}", members.join(","), shape.class());
        }
        out
    }
}

/// Text inside a DOT double-quoted string: quotes and backslashes escaped, line breaks as `\n`.
fn dot_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Text inside a Mermaid quoted label: characters Mermaid or its HTML labels would read as
/// syntax become entity codes (`#quot;`, `#lt;`, …).
fn mermaid_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '`' => out.push_str("#96;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
