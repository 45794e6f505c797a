//! The stages of a worker wired as a tree: each stage reads camera frames or one other stage's
//! output (chains and fan-out), and every branch ends in one or more publications.

use std::time::Duration;

use panoptes_contracts::Subjects;
use panoptes_contracts::camera::CameraId;
use panoptes_contracts::stage::{Stage, StageError};

/// The subject results go to when a branch names none.
pub const DEFAULT_RESULT_SUBJECT: &str = "{namespace}.detections.{camera}";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("stage {stage:?} reads node {input}, which is not added yet (add inputs first)")]
    InputNotAdded { stage: String, input: usize },
    #[error("no node {0} to publish from")]
    NoSuchNode(usize),
    #[error(
        "a shadow of stage {stage:?} with {stages} stages cannot be compared at node {compare_at}: it must be that many stages down from the shadowed one"
    )]
    ShadowPath {
        stage: String,
        stages: usize,
        compare_at: usize,
    },
}

pub(crate) struct Node {
    pub stage: Box<dyn Stage>,
    pub input: Option<usize>,
    pub children: Vec<usize>,
    pub outputs: Vec<Output>,
    /// `a>b>c`: the stages from the frame to this one, reported in detection messages.
    pub path: String,
    /// The first model on the path, reported in detection messages.
    pub model: Option<String>,
}

/// Where a branch publishes: a subject pattern (`{namespace}`, `{camera}`, `{stage}`) and the
/// name `{stage}` stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub pattern: String,
    pub name: String,
    /// The whole item goes to a stage in another process (`<ns>.<stage>.<camera>`), not
    /// detections to a result subject.
    pub forward: bool,
}

impl Output {
    pub fn subject(&self, subjects: &Subjects, camera: &str) -> String {
        self.pattern
            .replace("{namespace}", subjects.namespace())
            .replace("{camera}", camera)
            .replace("{stage}", &self.name)
    }
}

#[derive(Default)]
pub struct StageGraph {
    pub(crate) nodes: Vec<Node>,
    /// Candidates run beside live nodes: (shadowed node, node compared at, candidate).
    pub(crate) shadows: Vec<(usize, usize, crate::shadow::Shadow)>,
}

impl StageGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stages in a line, the last publishing on the default subject.
    pub fn chain(stages: Vec<Box<dyn Stage>>) -> Self {
        let mut graph = Self::new();
        let mut prev = None;
        for stage in stages {
            // Each input is the node added just before, so this cannot fail.
            prev = graph.add(stage, prev).ok();
        }
        graph
    }

    /// Adds a stage reading `input` (`None`: camera frames) and returns its node index. Inputs
    /// must be added first, which rules out cycles by construction.
    pub fn add(
        &mut self,
        stage: Box<dyn Stage>,
        input: Option<usize>,
    ) -> Result<usize, GraphError> {
        let (path, model) = match input {
            None => (stage.id().to_owned(), stage.model().map(str::to_owned)),
            Some(i) => {
                let Some(parent) = self.nodes.get(i) else {
                    return Err(GraphError::InputNotAdded {
                        stage: stage.id().to_owned(),
                        input: i,
                    });
                };
                (
                    format!("{}>{}", parent.path, stage.id()),
                    parent
                        .model
                        .clone()
                        .or_else(|| stage.model().map(str::to_owned)),
                )
            }
        };
        let index = self.nodes.len();
        if let Some(i) = input {
            self.nodes[i].children.push(index);
        }
        self.nodes.push(Node {
            stage,
            input,
            children: Vec::new(),
            outputs: Vec::new(),
            path,
            model,
        });
        Ok(index)
    }

    /// Publishes `node`'s results on `pattern` (a sink).
    pub fn publish(
        &mut self,
        node: usize,
        pattern: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<(), GraphError> {
        let n = self
            .nodes
            .get_mut(node)
            .ok_or(GraphError::NoSuchNode(node))?;
        n.outputs.push(Output {
            pattern: pattern.into(),
            name: name.into(),
            forward: false,
        });
        Ok(())
    }

    /// Sends `node`'s output items to `<ns>.<stage>.<camera>`, for the stages reading it that
    /// run in another process (stages not fused with this one).
    pub fn forward(&mut self, node: usize) -> Result<(), GraphError> {
        let n = self
            .nodes
            .get_mut(node)
            .ok_or(GraphError::NoSuchNode(node))?;
        let name = n.stage.id().to_owned();
        if !n.outputs.iter().any(|o| o.forward) {
            n.outputs.push(Output {
                pattern: "{namespace}.{stage}.{camera}".to_owned(),
                name,
                forward: true,
            });
        }
        Ok(())
    }

    /// The stages whose output this graph forwards to other processes.
    pub fn forwarded(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| n.outputs.iter().filter(|o| o.forward))
            .map(|o| o.name.clone())
            .collect()
    }

    /// Runs `shadow` beside node `at` on its sampled inputs; its last stage's outputs are
    /// compared with those of node `compare_at`, which is `at` itself for a one-stage
    /// candidate, or the node as many stages further down as the candidate has copies of.
    pub fn shadow(
        &mut self,
        at: usize,
        compare_at: usize,
        shadow: crate::shadow::Shadow,
    ) -> Result<(), GraphError> {
        let n = self.nodes.get(at).ok_or(GraphError::NoSuchNode(at))?;
        let mut steps = 0;
        let mut node = Some(compare_at);
        while let Some(i) = node
            && i != at
        {
            steps += 1;
            node = self.nodes.get(i).and_then(|n| n.input);
        }
        if node != Some(at) || steps + 1 != shadow.stages.len() {
            return Err(GraphError::ShadowPath {
                stage: n.stage.id().to_owned(),
                stages: shadow.stages.len(),
                compare_at,
            });
        }
        self.shadows.push((at, compare_at, shadow));
        Ok(())
    }

    /// Gives every leaf without a sink the default result subject.
    pub(crate) fn finish(&mut self) {
        for n in &mut self.nodes {
            if n.children.is_empty() && n.outputs.is_empty() {
                let name = n.stage.id().to_owned();
                n.outputs.push(Output {
                    pattern: DEFAULT_RESULT_SUBJECT.to_owned(),
                    name,
                    forward: false,
                });
            }
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub(crate) fn roots(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].input.is_none())
            .collect()
    }

    /// Starts every stage, inputs first. On a failure the stages already started are stopped
    /// and the one that failed is named. Returns the nodes whose stages want ticks, with how
    /// often.
    pub(crate) fn start(&mut self) -> Result<Vec<(usize, Duration)>, (String, StageError)> {
        for i in 0..self.nodes.len() {
            if let Err(e) = self.nodes[i].stage.start() {
                for started in self.nodes[..i].iter_mut().rev() {
                    started.stage.stop();
                }
                return Err((self.nodes[i].stage.id().to_owned(), e));
            }
        }
        Ok(self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.stage.tick_interval().map(|every| (i, every)))
            .collect())
    }

    /// Every stage drops what it keeps of `camera`.
    pub(crate) fn forget(&mut self, camera: &CameraId) {
        for n in &mut self.nodes {
            n.stage.forget(camera);
        }
    }

    /// Stops every stage, successors before their inputs (the reverse of [`Self::start`]).
    pub(crate) fn stop(&mut self) {
        for n in self.nodes.iter_mut().rev() {
            n.stage.stop();
        }
    }

    /// `a>b>c` for the one-line log of what the worker runs.
    pub fn describe(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.children.is_empty())
            .map(|n| n.path.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_contracts::stage::{Item, StageError};

    /// A stage that passes items through: only the wiring is under test here.
    struct Pass(&'static str);

    impl Stage for Pass {
        fn id(&self) -> &str {
            self.0
        }
        fn process(&mut self, item: Item) -> Result<Item, StageError> {
            Ok(item)
        }
    }

    #[test]
    fn inputs_must_exist_and_leaves_get_the_default_subject() {
        let mut g = StageGraph::new();
        let a = g.add(Box::new(Pass("a")), None).expect("root");
        let err = g.add(Box::new(Pass("x")), Some(5)).expect_err("no node 5");
        assert_eq!(
            err,
            GraphError::InputNotAdded {
                stage: "x".into(),
                input: 5
            }
        );
        let b = g.add(Box::new(Pass("b")), Some(a)).expect("b");
        let c = g.add(Box::new(Pass("c")), Some(a)).expect("c");
        g.publish(c, "{namespace}.out.{stage}.{camera}", "sink")
            .expect("publish");
        g.finish();
        assert_eq!(g.describe(), "a>b, a>c");
        assert!(
            g.nodes[a].outputs.is_empty(),
            "an inner node publishes nothing"
        );
        let subjects = Subjects::new("ns");
        assert_eq!(
            g.nodes[b].outputs[0].subject(&subjects, "cam"),
            "ns.detections.cam"
        );
        assert_eq!(
            g.nodes[c].outputs[0].subject(&subjects, "cam"),
            "ns.out.sink.cam"
        );
        assert_eq!(g.roots(), vec![a]);
    }
}
