//! Builds the stage graph a topology declares for one worker process: the topology's [`Plan`]
//! says which stages run, in what order and reading what; each `kind` is built by the crate
//! that implements it (`panoptes_wasm::build`, `panoptes_model::build`, `panoptes_postprocess`),
//! and this file only dispatches on the kind and wires the results into a [`StageGraph`].

use std::sync::Arc;

use anyhow::Context as _;
use panoptes_contracts::BatchStats;
use panoptes_contracts::stage::{Input, Stage};
use panoptes_model::ModelRegistry;
use panoptes_model::build::{model_registry, model_stage, upstream_of};
use panoptes_pipeline::{Shadow, StageGraph};
use panoptes_topology::{Plan, StageConfig, TopologyFile};
use panoptes_wasm::build::operator_stage;
use panoptes_wasm::{OperatorEngine, OperatorSlot};

// One file hasher and one digest comparison for models and operators.
pub use panoptes_model::sha256_file;
pub use panoptes_wasm::digest_matches;
// What `validate` checks the same way start-up builds.
pub use panoptes_model::build::{graph_options, resolve_model};
pub use panoptes_wasm::build::{instance_spec, module_spec, operator_engine};

/// Builds the stage graph of `topology`: every stage wired to its input, sinks as publications
/// of the stage they read. Loading models and compiling operators happens here, so a bad file
/// fails start-up with its path rather than the first frame.
pub fn build_graph(topology: &TopologyFile) -> anyhow::Result<StageGraph> {
    Ok(build(topology)?.graph)
}

/// What [`build`] made: the graph, the operator slots (for reloads by control message) and the
/// process's model registry.
pub struct Built {
    pub graph: StageGraph,
    pub operators: Vec<OperatorSlot>,
    /// Shadow candidates of operator stages, by the live stage's ID: what
    /// `operator promote` makes live.
    pub candidates: Vec<(String, OperatorSlot)>,
    pub models: Arc<ModelRegistry>,
    /// Each model stage's inference-call counters, by stage ID.
    pub batch_stats: Vec<(String, Arc<BatchStats>)>,
}

/// Like [`build_graph`], keeping the operator slots and models.
pub fn build(topology: &TopologyFile) -> anyhow::Result<Built> {
    build_part(topology, None).map(|(built, _)| built)
}

/// What one worker process reads and is called (see [`Plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub input: Input,
    /// Names the unit's leases and durable consumers: its stage IDs, joined by `_`.
    pub name: String,
}

/// Builds the graph of the stages in `only` (all stages when `None`), as the topology's plan
/// orders them.
pub fn build_part(
    topology: &TopologyFile,
    only: Option<&[String]>,
) -> anyhow::Result<(Built, Unit)> {
    let plan = Plan::new(topology, only)?;
    let mut cx = BuildContext {
        engine: None,
        models: model_registry(topology)?,
        slots: Vec::new(),
        candidates: Vec::new(),
        batch_stats: Vec::new(),
    };
    let mut graph = StageGraph::new();
    // The graph's node of each step.
    let mut nodes: Vec<usize> = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let stage = build_stage(topology, step.stage, &mut cx)?;
        let input = step.input.and_then(|s| nodes.get(s).copied());
        nodes.push(graph.add(stage, input)?);
    }
    let node = |step: usize| {
        nodes
            .get(step)
            .copied()
            .context("the plan names a step it does not have")
    };
    for (step, sink) in &plan.sinks {
        graph.publish(node(*step)?, sink.subject.clone(), sink.id.clone())?;
    }
    for step in &plan.forwards {
        graph.forward(node(*step)?)?;
    }
    // Candidates never stop the live stages from starting: one that cannot be built is
    // reported and left out.
    for (i, step) in plan.steps.iter().enumerate() {
        let readers: Vec<usize> = (0..plan.steps.len())
            .filter(|j| plan.steps[*j].input == Some(i))
            .collect();
        match build_shadow(topology, step.stage, i, &readers, &plan, &mut cx) {
            Ok(None) => {}
            Ok(Some((shadow, compare_step))) => {
                graph.shadow(node(i)?, node(compare_step)?, shadow)?
            }
            Err(e) => tracing::error!(
                stage = step.stage.id(),
                error = format!("{e:#}"),
                "the shadow candidate cannot be built; the live stage runs without it"
            ),
        }
    }
    Ok((
        Built {
            graph,
            operators: cx.slots,
            candidates: cx.candidates,
            models: cx.models,
            batch_stats: cx.batch_stats,
        },
        Unit {
            input: plan.input,
            name: plan.name,
        },
    ))
}

/// What stages of one topology share while being built.
struct BuildContext {
    engine: Option<OperatorEngine>,
    models: Arc<ModelRegistry>,
    slots: Vec<OperatorSlot>,
    candidates: Vec<(String, OperatorSlot)>,
    batch_stats: Vec<(String, Arc<BatchStats>)>,
}

impl BuildContext {
    /// The process's one Wasm engine, made on first use.
    fn engine(&mut self) -> anyhow::Result<OperatorEngine> {
        Ok(match &self.engine {
            Some(e) => e.clone(),
            None => self
                .engine
                .insert(
                    operator_engine(Some(self.models.clone()))
                        .context("cannot create the Wasm engine")?,
                )
                .clone(),
        })
    }
}

/// The ID a candidate's stages run under (in their metrics and logs), apart from the live ones.
fn candidate_id(id: &str) -> String {
    format!("{id}/shadow")
}

/// The candidate `cfg` (plan step `at`) declares (`shadow:`), if any, with the step whose output
/// it is compared at: the stage itself, or for a model read by exactly one `postprocess` step
/// (`readers`), that step, through a copy of it fed by the candidate model.
fn build_shadow(
    topology: &TopologyFile,
    cfg: &StageConfig,
    at: usize,
    readers: &[usize],
    plan: &Plan,
    cx: &mut BuildContext,
) -> anyhow::Result<Option<(Shadow, usize)>> {
    match cfg {
        StageConfig::Operator(op) => {
            let Some(shadow) = &op.shadow else {
                return Ok(None);
            };
            let candidate = panoptes_topology::OperatorStage {
                id: candidate_id(&op.id),
                wasm: shadow.wasm.clone(),
                digest: shadow.digest.clone(),
                config: shadow.config.clone().unwrap_or_else(|| op.config.clone()),
                timeout_ms: shadow.timeout_ms.or(op.timeout_ms),
                memory_mib: shadow.memory_mib.or(op.memory_mib),
                watch: false,
                shadow: None,
                ..op.clone()
            };
            let engine = cx.engine()?;
            let (slot, stage) = operator_stage(topology, &candidate, engine)?;
            cx.candidates.push((op.id.clone(), slot));
            Ok(Some((
                Shadow::new(vec![Box::new(stage)], shadow.sample),
                at,
            )))
        }
        StageConfig::Model(m) => {
            let Some(shadow) = &m.shadow else {
                return Ok(None);
            };
            // One intra-op thread: the model runs on the candidate's own low-priority thread.
            let candidate = panoptes_topology::ModelStage {
                id: candidate_id(&m.id),
                model: shadow.model.clone(),
                threads: Some(1),
                shadow: None,
                ..m.clone()
            };
            let model = model_stage(topology, &candidate, &cx.models)?;
            let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(model)];
            let mut compare_at = at;
            if let [reader] = readers
                && let StageConfig::Postprocess(p) = plan.steps[*reader].stage
            {
                // The postprocessor as it would read the candidate model.
                let mut swapped = topology.clone();
                for s in &mut swapped.stages {
                    if let StageConfig::Model(live) = s
                        && live.id == m.id
                    {
                        live.model = shadow.model.clone();
                    }
                }
                let upstream = upstream_of(&swapped, &p.id, p.postprocessor, &cx.models)
                    .with_context(|| format!("stage {:?}", p.id))?;
                let copy = panoptes_topology::PostprocessStage {
                    id: candidate_id(&p.id),
                    ..p.clone()
                };
                stages.push(panoptes_postprocess::from_config(
                    &copy,
                    upstream.params,
                    upstream.labels,
                )?);
                compare_at = *reader;
            }
            Ok(Some((Shadow::new(stages, shadow.sample), compare_at)))
        }
        _ => Ok(None),
    }
}

/// The one place a stage's `kind` picks the crate that builds it.
fn build_stage(
    topology: &TopologyFile,
    cfg: &StageConfig,
    cx: &mut BuildContext,
) -> anyhow::Result<Box<dyn Stage>> {
    let stage: Box<dyn Stage> = match cfg {
        StageConfig::Operator(op) => {
            let engine = cx.engine()?;
            let (slot, stage) = operator_stage(topology, op, engine)?;
            cx.slots.push(slot);
            Box::new(stage)
        }
        StageConfig::Model(m) => {
            let stage = model_stage(topology, m, &cx.models)?;
            cx.batch_stats.push((m.id.clone(), stage.stats()));
            Box::new(stage)
        }
        StageConfig::Postprocess(p) => {
            let upstream = upstream_of(topology, &p.id, p.postprocessor, &cx.models)
                .with_context(|| format!("stage {:?}", p.id))?;
            panoptes_postprocess::from_config(p, upstream.params, upstream.labels)?
        }
        StageConfig::Tracker(t) => Box::new(panoptes_tracker::build(t)?),
        StageConfig::Analytics(a) => Box::new(panoptes_analytics::build(a, &topology.cameras)?),
        other => anyhow::bail!(
            "stage {:?}: {} stages are not supported by this build yet",
            other.id(),
            other.kind()
        ),
    };
    Ok(stage)
}

#[cfg(test)]
mod resolve_tests {
    use super::*;
    use std::path::PathBuf;

    const DET_SHA256: &str = "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9";

    fn topology(models: &str, dir: &std::path::Path) -> TopologyFile {
        let text = format!(
            "models:\n{models}\nstages:\n  - {{ id: pre, kind: operator, wasm: {wasm} }}\n  - {{ id: det, kind: model, model: det }}\n  - {{ id: boxes, kind: postprocess, postprocessor: db }}\n",
            wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../operators/dist/letterbox.wasm")
                .display()
        );
        TopologyFile::parse(&text, "t.yaml", dir, &panoptes_topology::process_env)
            .unwrap_or_else(|d| panic!("{d}"))
    }

    fn repo() -> PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn a_manifest_gives_the_file_and_its_sha256() {
        let t = topology("  det: { manifest: models/ppocr-v4-det.yaml }", &repo());
        let r = resolve_model(&t, "det").unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            r.path.ends_with("models/files/ch_PP-OCRv4_det_infer.onnx"),
            "{r:?}"
        );
        assert_eq!(r.sha256.as_deref(), Some(DET_SHA256));
        assert_eq!(
            r.manifest.map(|m| m.name.clone()).as_deref(),
            Some("ppocr-v4-det")
        );
        // The same sha256 in the topology is fine; another one is refused, naming both.
        let t = topology(
            &format!(
                "  det: {{ manifest: models/ppocr-v4-det.yaml, sha256: {} }}",
                DET_SHA256.to_uppercase()
            ),
            &repo(),
        );
        assert!(resolve_model(&t, "det").is_ok());
        let zeros = "0".repeat(64);
        let t = topology(
            &format!("  det: {{ manifest: models/ppocr-v4-det.yaml, sha256: \"{zeros}\" }}"),
            &repo(),
        );
        let err = format!("{:#}", resolve_model(&t, "det").unwrap_err());
        assert!(
            err.contains(&zeros) && err.contains(DET_SHA256) && err.contains("ppocr-v4-det.yaml"),
            "{err}"
        );
        let err = match build_graph(&t) {
            Ok(_) => panic!("a conflicting sha256 was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("model `det`"), "{err}");
        let t = topology(
            "  det: { file: models/files/ch_PP-OCRv4_det_infer.onnx }",
            &repo(),
        );
        let r = resolve_model(&t, "det").unwrap_or_else(|e| panic!("{e:#}"));
        assert!(r.manifest.is_none() && r.sha256.is_none());
    }

    #[test]
    fn a_broken_manifest_fails_start_up_with_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("m.yaml"),
            "name: m\nfile: m.onnx\ninputs: []\noutputs: []\ncolour: rgb\n",
        )
        .expect("writable");
        let t = topology("  det: { manifest: m.yaml }", dir.path());
        let err = match build_graph(&t) {
            Ok(_) => panic!("a broken manifest was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("m.yaml") && err.contains("colour"), "{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quickstart_with(edit: impl Fn(String) -> String) -> TopologyFile {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
        let text = std::fs::read_to_string(dir.join("quickstart.yaml")).expect("quickstart");
        TopologyFile::parse(
            &edit(text),
            "quickstart.yaml",
            &dir,
            &panoptes_topology::process_env,
        )
        .unwrap_or_else(|d| panic!("{d}"))
    }

    fn error_of(t: &TopologyFile) -> String {
        match build_graph(t) {
            Ok(_) => panic!("a changed file was accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn declared_digests_are_enforced_at_start() {
        let zeros = "0".repeat(64);
        let t = quickstart_with(|s| {
            s.replace(
                "timeout_ms: 500",
                &format!("timeout_ms: 500\n    digest: sha256:{zeros}"),
            )
        });
        let err = error_of(&t);
        assert!(
            err.contains("refusing operator") && err.contains("letterbox.wasm"),
            "{err}"
        );

        let t = quickstart_with(|s| {
            s.replace(
                "manifest: ../models/ppocr-v4-det.yaml",
                &format!(
                    "file: ../models/files/ch_PP-OCRv4_det_infer.onnx\n    sha256: \"{zeros}\""
                ),
            )
        });
        let err = error_of(&t);
        assert!(
            err.contains("refusing") && err.contains("ch_PP-OCRv4_det_infer.onnx"),
            "{err}"
        );
    }

    #[test]
    fn a_matching_digest_loads() {
        let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../operators/dist/letterbox.wasm");
        let real = sha256_file(&wasm).expect("run scripts/setup.sh: letterbox.wasm is missing");
        let t = quickstart_with(|s| {
            s.replace(
                "timeout_ms: 500",
                &format!("timeout_ms: 500\n    digest: sha256:{real}"),
            )
        });
        let graph = build_graph(&t).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(graph.len(), 3);
    }
}
