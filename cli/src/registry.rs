//! Builds the stage graph a topology declares: each `kind` maps to the crate that implements it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use panoptes_model::{GraphOptions, ModelRegistry, ModelStage, load_checked};
use panoptes_pipeline::StageGraph;
use panoptes_pipeline::stage::Stage;
use panoptes_postprocess::DbStage;
use panoptes_topology::{Emits, FRAMES, Postprocessor, StageConfig, TopologyFile};
use panoptes_wasm::{
    Capabilities, DirGrant, EngineOptions, InstanceSpec, ModuleSpec, OperatorEngine, OperatorSlot,
    OperatorStage, OutputKind, WasmError,
};

// One file hasher and one digest comparison for models and operators.
pub use panoptes_model::sha256_file;
pub use panoptes_wasm::digest_matches;

/// How often operator files with `watch: true` are checked for changes.
const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// The engine operators of a topology run in, with the on-disk compile cache; model operators
/// load from `models`.
pub fn operator_engine(models: Option<Arc<ModelRegistry>>) -> Result<OperatorEngine, WasmError> {
    OperatorEngine::with_models(
        EngineOptions {
            cache_dir: Some(operator_cache_dir()),
            ..EngineOptions::default()
        },
        models,
    )
}

/// The process's models, by name, for model operators (`wasi:nn`): each loads on first use
/// and is shared by every instance. ONNX Runtime on the CPU unless a model stage of the same
/// model asks for another backend or device.
pub fn model_registry(topology: &TopologyFile) -> Arc<ModelRegistry> {
    let registry = ModelRegistry::new();
    for (name, model) in &topology.models {
        let opts = shared_options(topology, name);
        registry.declare(
            name.clone(),
            topology.resolve(&model.file),
            model.sha256.clone(),
            opts,
        );
    }
    Arc::new(registry)
}

/// The options a model is shared under: those of the first model stage that runs it, else
/// ONNX Runtime on the CPU.
fn shared_options(topology: &TopologyFile, name: &str) -> GraphOptions {
    topology
        .stages
        .iter()
        .find_map(|s| match s {
            StageConfig::Model(m) if m.model == name => Some(graph_options(m)),
            _ => None,
        })
        .unwrap_or_default()
}

/// A model stage's backend, device and threads.
pub fn graph_options(m: &panoptes_topology::ModelStage) -> GraphOptions {
    GraphOptions {
        backend: match m.backend {
            panoptes_topology::Backend::Ort => panoptes_model::Backend::Ort,
            panoptes_topology::Backend::Tract => panoptes_model::Backend::Tract,
        },
        device: match m.device {
            panoptes_topology::Device::Cpu => panoptes_model::Device::Cpu,
            panoptes_topology::Device::Cuda => panoptes_model::Device::Cuda,
            panoptes_topology::Device::Tensorrt => panoptes_model::Device::TensorRt,
            panoptes_topology::Device::Openvino => panoptes_model::Device::OpenVino,
        },
        threads: m.threads.unwrap_or(0),
    }
}

/// Where an operator stage's module comes from and what it must prove.
pub fn module_spec(topology: &TopologyFile, op: &panoptes_topology::OperatorStage) -> ModuleSpec {
    ModuleSpec {
        path: topology.resolve(&op.wasm),
        digest: op.digest.clone(),
        signed_by: op.signed_by.as_ref().map(|k| topology.resolve(k)),
    }
}

/// How an operator stage's instances are made: config, grants, limits.
pub fn instance_spec(
    topology: &TopologyFile,
    op: &panoptes_topology::OperatorStage,
) -> anyhow::Result<InstanceSpec> {
    let grants = &op.grants;
    let capabilities = Capabilities {
        clock: grants.clock,
        logs: grants.logs,
        env: grants
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        dirs: grants
            .dirs
            .iter()
            .map(|d| DirGrant {
                host: topology.resolve(&d.host),
                guest: d.guest.clone(),
                writable: d.writable,
            })
            .collect(),
        models: op.models.clone(),
    };
    let max_memory_bytes = match op.memory_mib {
        Some(mib) => Some(
            usize::try_from(mib.saturating_mul(1 << 20)).with_context(|| {
                format!(
                    "stage {:?}: memory_mib {mib} does not fit this machine",
                    op.id
                )
            })?,
        ),
        None => None,
    };
    Ok(InstanceSpec {
        config: operator_config_json(&op.config),
        capabilities: Arc::new(capabilities),
        deadline: op.timeout_ms.map(Duration::from_millis),
        max_memory_bytes,
    })
}

/// An operator's `config` as the JSON its `init` receives (`{}` when none is given).
pub fn operator_config_json(config: &serde_json::Value) -> String {
    if config.is_null() {
        "{}".to_owned()
    } else {
        config.to_string()
    }
}

/// Where compiled Wasm operators are cached between runs.
pub fn operator_cache_dir() -> std::path::PathBuf {
    panoptes_pipeline::paths::panoptes_home().join("wasm-cache")
}

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
    pub models: Arc<ModelRegistry>,
}

/// Like [`build_graph`], keeping the operator slots and models.
pub fn build(topology: &TopologyFile) -> anyhow::Result<Built> {
    let mut cx = BuildContext {
        engine: None,
        models: model_registry(topology),
        slots: Vec::new(),
    };
    let inputs = topology.stage_inputs();
    let mut graph = StageGraph::new();
    // Node index of each stage (by ID) once added; a stage's input may come later in the file.
    let mut added: HashMap<&str, usize> = HashMap::new();
    let mut sinks = Vec::new();
    let mut remaining: Vec<usize> = (0..topology.stages.len()).collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        let mut still = Vec::new();
        for i in remaining {
            let cfg = &topology.stages[i];
            let input = match inputs[i] {
                FRAMES => None,
                id => match added.get(id) {
                    Some(node) => Some(*node),
                    None => {
                        still.push(i);
                        continue;
                    }
                },
            };
            if let StageConfig::Sink(sink) = cfg {
                sinks.push((input, sink));
                continue;
            }
            let stage = build_stage(topology, cfg, &mut cx)?;
            let node = graph.add(stage, input)?;
            added.insert(cfg.id(), node);
        }
        anyhow::ensure!(
            still.len() < before,
            "stages {:?} do not lead back to `frames` (validation should have caught this)",
            still
                .iter()
                .map(|i| topology.stages[*i].id())
                .collect::<Vec<_>>()
        );
        remaining = still;
    }
    for (input, sink) in sinks {
        let Some(node) = input else {
            anyhow::bail!("sink {:?} reads camera frames, not detections", sink.id);
        };
        graph.publish(node, sink.subject.clone(), sink.id.clone())?;
    }
    Ok(Built {
        graph,
        operators: cx.slots,
        models: cx.models,
    })
}

/// What stages of one topology share while being built.
struct BuildContext {
    engine: Option<OperatorEngine>,
    models: Arc<ModelRegistry>,
    slots: Vec<OperatorSlot>,
}

fn build_stage(
    topology: &TopologyFile,
    cfg: &StageConfig,
    cx: &mut BuildContext,
) -> anyhow::Result<Box<dyn Stage>> {
    let stage: Box<dyn Stage> = match cfg {
        StageConfig::Operator(op) => {
            let engine = match &cx.engine {
                Some(e) => e.clone(),
                None => cx
                    .engine
                    .insert(
                        operator_engine(Some(cx.models.clone()))
                            .context("cannot create the Wasm engine")?,
                    )
                    .clone(),
            };
            let id = &op.id;
            let spec = module_spec(topology, op);
            let (slot, instance) =
                OperatorSlot::load(id.clone(), engine, spec, instance_spec(topology, op)?)
                    .with_context(|| format!("stage {id:?}: cannot start operator"))?;
            let mut stage = OperatorStage::new(slot.clone(), instance).expecting(match op.emits {
                Emits::Tensors => OutputKind::Tensors,
                Emits::Frames => OutputKind::Frames,
                Emits::Detections => OutputKind::Detections,
            });
            if op.watch {
                stage = stage.with_watcher(
                    slot.watch(WATCH_PERIOD)
                        .with_context(|| format!("stage {id:?}"))?,
                );
            }
            cx.slots.push(slot);
            Box::new(stage)
        }
        StageConfig::Model(m) => {
            let id = &m.id;
            let opts = graph_options(m);
            // Shared with model operators when the options match the registry's declaration.
            let graph = if shared_options(topology, &m.model) == opts {
                cx.models.get(&m.model)
            } else {
                let Some(declared) = topology.models.get(&m.model) else {
                    anyhow::bail!("stage {id:?}: unknown model {:?}", m.model);
                };
                let path = topology.resolve(&declared.file);
                load_checked(&m.model, &path, declared.sha256.as_deref(), &opts)
            }
            .with_context(|| format!("stage {id:?}"))?;
            Box::new(ModelStage::new(id.clone(), graph))
        }
        StageConfig::Postprocess(panoptes_topology::PostprocessStage {
            id,
            postprocessor,
            params,
            label,
            ..
        }) => match postprocessor {
            Postprocessor::Db => Box::new(
                DbStage::from_config(id, "db", params, label.as_deref())
                    .with_context(|| format!("stage {id:?}"))?,
            ),
            other => anyhow::bail!(
                "stage {id:?}: the {other:?} postprocessor is not supported by this build yet"
            ),
        },
        other => anyhow::bail!(
            "stage {:?}: {} stages are not supported by this build yet",
            other.id(),
            other.kind()
        ),
    };
    Ok(stage)
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
                "file: ../models/files/ch_PP-OCRv4_det_infer.onnx",
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
