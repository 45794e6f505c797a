//! A topology compiled for one worker process: which stages it runs, what its first stages
//! read, the order they are built in (each after the stage it reads), and what flows along each
//! edge: items in memory between fused stages, publications to sinks, forwards to the stages
//! other processes run.

use std::collections::HashMap;

use panoptes_contracts::stage::Input;

use crate::config::{FRAMES, SinkStage, StageConfig, Topology};
use crate::stage_inputs;

/// Why a selection of stages cannot run in one worker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("no stages selected (the topology has: {})", .known.join(", "))]
    NoneSelected { known: Vec<String> },
    #[error("the topology has no stage {id:?} to run (it has: {})", .known.join(", "))]
    UnknownStage { id: String, known: Vec<String> },
    #[error(
        "the stages of one worker must start from one input; these start from {}: run them in separate workers",
        .inputs.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(" and ")
    )]
    SeveralInputs { inputs: Vec<String> },
    #[error("stages {0:?} do not lead back to `frames` (validation should have caught this)")]
    Unreachable(Vec<String>),
    #[error("sink {0:?} reads camera frames, not detections")]
    SinkOfFrames(String),
}

/// One stage this process runs.
#[derive(Clone, Copy, Debug)]
pub struct Step<'t> {
    pub stage: &'t StageConfig,
    /// The step whose items it reads; `None`: the unit's [`Plan::input`].
    pub input: Option<usize>,
}

/// What one worker process runs of a topology. Stages it runs are fused (items pass in
/// memory); stages outside it run in other processes, so the items they read are forwarded on
/// `<ns>.<stage>.<camera>`.
#[derive(Clone, Debug)]
pub struct Plan<'t> {
    /// What the unit's first stages read: one input for all of them.
    pub input: Input,
    /// Names the unit's leases and durable consumers: its stage IDs, joined by `_`.
    pub name: String,
    /// The stages it runs, each after the step it reads.
    pub steps: Vec<Step<'t>>,
    /// Sinks of the steps it runs, which this process publishes.
    pub sinks: Vec<(usize, &'t SinkStage)>,
    /// Steps whose items a stage run elsewhere reads.
    pub forwards: Vec<usize>,
}

impl<'t> Plan<'t> {
    /// The plan for the stages in `only` (every stage when `None`).
    pub fn new(topology: &'t Topology, only: Option<&[String]>) -> Result<Self, PlanError> {
        let inputs = stage_inputs(topology);
        let is_sink = |cfg: &StageConfig| matches!(cfg, StageConfig::Sink(_));
        let runs = |id: &str| only.is_none_or(|o| o.iter().any(|s| s == id));
        if let Some(only) = only {
            let known: Vec<String> = topology
                .stages
                .iter()
                .filter(|s| !is_sink(s))
                .map(|s| s.id().to_owned())
                .collect();
            if only.is_empty() {
                return Err(PlanError::NoneSelected { known });
            }
            if let Some(id) = only.iter().find(|id| !known.contains(id)) {
                return Err(PlanError::UnknownStage {
                    id: id.clone(),
                    known,
                });
            }
        }
        let mut entry: Vec<&str> = Vec::new();
        for (i, cfg) in topology.stages.iter().enumerate() {
            if is_sink(cfg) || !runs(cfg.id()) {
                continue;
            }
            if (inputs[i] == FRAMES || !runs(inputs[i])) && !entry.contains(&inputs[i]) {
                entry.push(inputs[i]);
            }
        }
        let [input] = entry[..] else {
            return Err(PlanError::SeveralInputs {
                inputs: entry.iter().map(|e| (*e).to_owned()).collect(),
            });
        };
        let name = topology
            .stages
            .iter()
            .filter(|s| !is_sink(s) && runs(s.id()))
            .map(StageConfig::id)
            .collect::<Vec<_>>()
            .join("_");

        // A stage's input may come later in the file: passes until every stage is placed.
        let mut steps: Vec<Step<'t>> = Vec::new();
        let mut placed: HashMap<&str, usize> = HashMap::new();
        let mut sinks = Vec::new();
        let mut remaining: Vec<usize> = (0..topology.stages.len())
            .filter(|&i| is_sink(&topology.stages[i]) || runs(topology.stages[i].id()))
            .collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            let mut still = Vec::new();
            for i in remaining {
                let cfg = &topology.stages[i];
                let from = match inputs[i] {
                    id if id == input && !is_sink(cfg) => None,
                    FRAMES => None,
                    id => match placed.get(id) {
                        Some(step) => Some(*step),
                        // A sink of a stage another process runs: that process publishes it.
                        None if !runs(id) => continue,
                        None => {
                            still.push(i);
                            continue;
                        }
                    },
                };
                if let StageConfig::Sink(sink) = cfg {
                    let step = from.ok_or_else(|| PlanError::SinkOfFrames(sink.id.clone()))?;
                    sinks.push((step, sink));
                    continue;
                }
                placed.insert(cfg.id(), steps.len());
                steps.push(Step {
                    stage: cfg,
                    input: from,
                });
            }
            if still.len() == before {
                return Err(PlanError::Unreachable(
                    still
                        .iter()
                        .map(|i| topology.stages[*i].id().to_owned())
                        .collect(),
                ));
            }
            remaining = still;
        }
        let mut forwards = Vec::new();
        for (i, cfg) in topology.stages.iter().enumerate() {
            if is_sink(cfg) || runs(cfg.id()) {
                continue;
            }
            if let Some(&step) = placed.get(inputs[i])
                && !forwards.contains(&step)
            {
                forwards.push(step);
            }
        }
        Ok(Plan {
            input: Input::from(input),
            name,
            steps,
            sinks,
            forwards,
        })
    }
}
