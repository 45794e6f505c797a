//! Builds the stage graph a topology declares: each `kind` maps to the crate that implements it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use panoptes_contracts::stage::Stage;
use panoptes_contracts::{BatchPolicy, BatchStats};
use panoptes_model::{
    CropSpec, Crops, GraphOptions, ModelManifest, ModelRegistry, ModelStage, Orientation,
    load_checked,
};
use panoptes_pipeline::StageGraph;
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
/// model asks for another backend or device. Fails on a manifest that cannot be read or that
/// disagrees with the topology (see [`resolve_model`]).
pub fn model_registry(topology: &TopologyFile) -> anyhow::Result<Arc<ModelRegistry>> {
    let registry = ModelRegistry::new();
    for name in topology.models.keys() {
        let resolved = resolve_model(topology, name)?;
        let opts = shared_options(topology, name);
        registry.declare(name.clone(), resolved.path, resolved.sha256, opts);
    }
    Ok(Arc::new(registry))
}

/// Where a topology's model comes from, with its manifest when it has one.
#[derive(Clone, Debug)]
pub struct ResolvedModel {
    /// The ONNX file: the topology's `file`, or the manifest's `file` (relative to the
    /// manifest).
    pub path: PathBuf,
    /// The sha256 the file must have: the topology's, else the manifest's.
    pub sha256: Option<String>,
    pub manifest: Option<Arc<ModelManifest>>,
}

/// Resolves the model called `name`: its `file`, or its `manifest` (read and validated here).
/// A sha256 given both in the topology and in the manifest must be the same.
pub fn resolve_model(topology: &TopologyFile, name: &str) -> anyhow::Result<ResolvedModel> {
    let Some(model) = topology.models.get(name) else {
        anyhow::bail!("unknown model `{name}`");
    };
    match (&model.file, &model.manifest) {
        (Some(file), None) => Ok(ResolvedModel {
            path: topology.resolve(file),
            sha256: model.sha256.clone(),
            manifest: None,
        }),
        (None, Some(manifest)) => {
            let manifest = ModelManifest::load(&topology.resolve(manifest))
                .with_context(|| format!("model `{name}`"))?;
            let sha256 = match (&model.sha256, &manifest.sha256) {
                (Some(ours), Some(theirs)) if !ours.trim().eq_ignore_ascii_case(theirs.trim()) => {
                    anyhow::bail!(
                        "model `{name}`: the topology's sha256 {ours} is not the sha256 {theirs} that {} declares for {}",
                        manifest.path().display(),
                        manifest.file.display()
                    )
                }
                (ours, theirs) => ours.clone().or_else(|| theirs.clone()),
            };
            Ok(ResolvedModel {
                path: manifest.file_path(),
                sha256,
                manifest: Some(Arc::new(manifest)),
            })
        }
        _ => anyhow::bail!(
            "model `{name}` needs exactly one of `file` and `manifest` (validation should have caught this)"
        ),
    }
}

#[cfg(test)]
mod resolve_tests {
    use super::*;

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
    panoptes_files::paths::panoptes_home().join("wasm-cache")
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
    /// Each model stage's inference-call counters, by stage ID.
    pub batch_stats: Vec<(String, Arc<BatchStats>)>,
}

/// Like [`build_graph`], keeping the operator slots and models.
pub fn build(topology: &TopologyFile) -> anyhow::Result<Built> {
    build_part(topology, None).map(|(built, _)| built)
}

/// The stages one worker process runs and what it reads: the topology's stages it runs are
/// fused (items pass in memory); the stages outside it run in other processes, so the items
/// they read are forwarded on `<ns>.<stage>.<camera>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// `frames`, or the stage (in another process) whose forwarded items this unit reads.
    pub input: String,
    /// Names the unit's leases and durable consumers: its stage IDs, joined by `_`.
    pub name: String,
}

/// Builds the graph of the stages in `only` (all stages when `None`).
pub fn build_part(
    topology: &TopologyFile,
    only: Option<&[String]>,
) -> anyhow::Result<(Built, Unit)> {
    let inputs = topology.stage_inputs();
    let runs = |id: &str| only.is_none_or(|o| o.iter().any(|s| s == id));
    if let Some(only) = only {
        let known: Vec<&str> = topology
            .stages
            .iter()
            .filter(|s| !matches!(s, StageConfig::Sink(_)))
            .map(StageConfig::id)
            .collect();
        anyhow::ensure!(
            !only.is_empty(),
            "no stages selected (the topology has: {})",
            known.join(", ")
        );
        for id in only {
            anyhow::ensure!(
                known.contains(&id.as_str()),
                "the topology has no stage {id:?} to run (it has: {})",
                known.join(", ")
            );
        }
    }
    // What the unit's first stages read: one input for all of them.
    let mut entry: Vec<&str> = Vec::new();
    for (i, cfg) in topology.stages.iter().enumerate() {
        if matches!(cfg, StageConfig::Sink(_)) || !runs(cfg.id()) {
            continue;
        }
        if (inputs[i] == FRAMES || !runs(inputs[i])) && !entry.contains(&inputs[i]) {
            entry.push(inputs[i]);
        }
    }
    anyhow::ensure!(
        entry.len() == 1,
        "the stages of one worker must start from one input; these start from {}: run them in separate workers",
        entry
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    let unit = Unit {
        input: entry[0].to_owned(),
        name: topology
            .stages
            .iter()
            .filter(|s| !matches!(s, StageConfig::Sink(_)) && runs(s.id()))
            .map(StageConfig::id)
            .collect::<Vec<_>>()
            .join("_"),
    };
    let mut cx = BuildContext {
        engine: None,
        models: model_registry(topology)?,
        slots: Vec::new(),
        batch_stats: Vec::new(),
    };
    let mut graph = StageGraph::new();
    // Node index of each stage (by ID) once added; a stage's input may come later in the file.
    let mut added: HashMap<&str, usize> = HashMap::new();
    let mut sinks = Vec::new();
    let mut remaining: Vec<usize> = (0..topology.stages.len())
        .filter(|&i| {
            matches!(topology.stages[i], StageConfig::Sink(_)) || runs(topology.stages[i].id())
        })
        .collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        let mut still = Vec::new();
        for i in remaining {
            let cfg = &topology.stages[i];
            let input = match inputs[i] {
                id if id == unit.input && !matches!(cfg, StageConfig::Sink(_)) => None,
                FRAMES => None,
                id => match added.get(id) {
                    Some(node) => Some(*node),
                    // A sink of a stage another process runs: that process publishes it.
                    None if !runs(id) => continue,
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
    // Stages of this unit read by stages that run elsewhere forward their items.
    for (i, cfg) in topology.stages.iter().enumerate() {
        if matches!(cfg, StageConfig::Sink(_)) || runs(cfg.id()) {
            continue;
        }
        if let Some(&node) = added.get(inputs[i]) {
            graph.forward(node)?;
        }
    }
    Ok((
        Built {
            graph,
            operators: cx.slots,
            models: cx.models,
            batch_stats: cx.batch_stats,
        },
        unit,
    ))
}

/// What stages of one topology share while being built.
struct BuildContext {
    engine: Option<OperatorEngine>,
    models: Arc<ModelRegistry>,
    slots: Vec<OperatorSlot>,
    batch_stats: Vec<(String, Arc<BatchStats>)>,
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
            let stage = model_stage(topology, m, cx)?;
            cx.batch_stats.push((m.id.clone(), stage.stats()));
            Box::new(stage)
        }
        StageConfig::Postprocess(p) => {
            let id = &p.id;
            let upstream = upstream_model(topology, cfg, p.postprocessor, cx)
                .with_context(|| format!("stage {id:?}"))?;
            // No `params`: the model's manifest's, when it names this postprocessor.
            let params = match (&p.params, upstream.params) {
                (serde_json::Value::Null, Some(params)) => params,
                (given, _) => given.clone(),
            };
            panoptes_postprocess::build(
                id,
                p.postprocessor,
                &params,
                p.label.as_deref(),
                upstream.labels,
            )
            .with_context(|| format!("stage {id:?}"))?
        }
        other => anyhow::bail!(
            "stage {:?}: {} stages are not supported by this build yet",
            other.id(),
            other.kind()
        ),
    };
    Ok(stage)
}

/// A model stage: its graph (shared with model operators when the options match), batching,
/// and for cascades the crops (with the orientation classifier) cut by the model's manifest.
fn model_stage(
    topology: &TopologyFile,
    m: &panoptes_topology::ModelStage,
    cx: &mut BuildContext,
) -> anyhow::Result<ModelStage> {
    let id = &m.id;
    let graph = model_graph(topology, &m.model, &graph_options(m), cx)
        .with_context(|| format!("stage {id:?}"))?;
    // A manifest that disagrees with the file (names, ranks, fixed dims) would feed the model
    // wrongly shaped or normalised input: refuse it at start, not only in `validate --env`.
    let manifest = resolve_model(topology, &m.model)?.manifest;
    if let Some(manifest) = &manifest {
        manifest
            .check(&graph)
            .with_context(|| format!("stage {id:?}: model `{}`", m.model))?;
    }
    let mut stage = ModelStage::new(id.clone(), graph);
    if let Some(b) = &m.batching {
        stage = stage.with_batching(batch_policy(b));
    }
    if let Some(c) = &m.crops {
        let spec = crop_spec(
            &m.model,
            manifest.as_deref(),
            c.width,
            c.height,
            c.keep_aspect,
        )
        .with_context(|| format!("stage {id:?}"))?;
        let mut crops = Crops::new(CropSpec {
            max_width: c.max_width,
            max_crops: c.max_crops as usize,
            ..spec
        })
        .with_context(|| format!("stage {id:?}"))?;
        if let Some(o) = &c.orientation {
            let resolved = resolve_model(topology, &o.model)?;
            let graph = model_graph(topology, &o.model, &shared_options(topology, &o.model), cx)
                .with_context(|| format!("stage {id:?}: orientation"))?;
            let spec = crop_spec(
                &o.model,
                resolved.manifest.as_deref(),
                o.width,
                o.height,
                true,
            )
            .with_context(|| format!("stage {id:?}: orientation"))?;
            crops = crops
                .with_orientation(Orientation {
                    graph,
                    spec,
                    threshold: o.threshold,
                })
                .with_context(|| format!("stage {id:?}: orientation"))?;
        }
        stage = stage.with_crops(crops);
    }
    Ok(stage)
}

/// The loaded graph of model `name` under `opts`: the process's shared one when the options
/// are the ones it is shared under, else a separate load.
fn model_graph(
    topology: &TopologyFile,
    name: &str,
    opts: &GraphOptions,
    cx: &BuildContext,
) -> anyhow::Result<panoptes_model::Graph> {
    if shared_options(topology, name) == *opts {
        return Ok(cx.models.get(name)?);
    }
    let resolved = resolve_model(topology, name)?;
    Ok(load_checked(
        name,
        &resolved.path,
        resolved.sha256.as_deref(),
        opts,
    )?)
}

/// A topology's `batching:` as the worker's policy.
pub fn batch_policy(b: &panoptes_topology::BatchingConfig) -> BatchPolicy {
    let mut policy = BatchPolicy::new(b.max_batch as usize);
    policy.adaptive = b.adaptive;
    if let Some(ms) = b.max_wait_ms {
        policy.max_wait = Duration::from_millis(u64::from(ms));
    }
    if let Some(ms) = b.latency_target_ms {
        let target = Duration::from_millis(u64::from(ms));
        policy.latency_target = Some(target);
        // The target bounds the wait; max_wait is not given alongside it.
        policy.max_wait = target;
    }
    policy
}

/// How crops for model `name` are cut and normalised: by its manifest's first input (scale,
/// mean, std, colour order, padding). A model without a manifest cannot be cropped for,
/// because nothing says how its input is normalised.
fn crop_spec(
    name: &str,
    manifest: Option<&ModelManifest>,
    width: u32,
    height: u32,
    keep_aspect: bool,
) -> anyhow::Result<CropSpec> {
    let Some(manifest) = manifest else {
        anyhow::bail!(
            "model `{name}` is declared with `file:`; crops need its normalisation, so declare it with a `manifest:` (docs/models.md)"
        );
    };
    let n = manifest.normalization();
    anyhow::ensure!(
        n.scale.is_finite() && n.scale > 0.0,
        "{}: normalize.scale must be positive",
        manifest.path().display()
    );
    let per_channel = |v: &[f32], default: f32| -> [f32; 3] {
        std::array::from_fn(|c| match v {
            [] => default,
            [one] => *one,
            many => many.get(c).copied().unwrap_or(default),
        })
    };
    let (mean, std) = (per_channel(&n.mean, 0.0), per_channel(&n.std, 1.0));
    // (v * scale - mean) / std  ==  (v / 255 - mean') / std'  with  x' = x / (255 scale).
    let to_unit = 255.0 * n.scale;
    let pad = manifest
        .first_input()
        .resize
        .as_ref()
        .map(|r| std::array::from_fn(|c| (r.pad * n.scale - mean[c]) / std[c]));
    Ok(CropSpec {
        width,
        height,
        keep_aspect,
        max_width: None,
        max_crops: usize::MAX,
        mean: mean.map(|m| m / to_unit),
        std: std.map(|s| s / to_unit),
        pad,
        bgr: n.color == panoptes_model::ColorOrder::Bgr,
    })
}

/// What the model whose output a postprocess stage reads says about its postprocessing.
#[derive(Default)]
struct Upstream {
    /// Class names (for `ctc`: the character list).
    labels: Option<Vec<String>>,
    /// The manifest's params for this postprocessor.
    params: Option<serde_json::Value>,
}

/// The nearest model stage upstream of a postprocess stage, by its manifest (`labels`, and the
/// `postprocessor` params when it names the same postprocessor); without a manifest, a `ctc`
/// stage reads the PP-OCR `character` key of the model file's metadata.
fn upstream_model(
    topology: &TopologyFile,
    cfg: &StageConfig,
    kind: Postprocessor,
    cx: &BuildContext,
) -> anyhow::Result<Upstream> {
    let inputs = topology.stage_inputs();
    let index = |id: &str| topology.stages.iter().position(|s| s.id() == id);
    let mut at = index(cfg.id());
    let model = loop {
        let Some(i) = at else {
            return Ok(Upstream::default());
        };
        if let StageConfig::Model(m) = &topology.stages[i] {
            break m;
        }
        at = match inputs[i] {
            FRAMES => None,
            input => index(input),
        };
    };
    let graph = model_graph(topology, &model.model, &graph_options(model), cx)?;
    match resolve_model(topology, &model.model)?.manifest {
        Some(manifest) => Ok(Upstream {
            labels: manifest.labels(&graph)?,
            params: manifest
                .postprocessor
                .as_ref()
                .filter(|p| p.kind == kind)
                .map(|p| serde_json::Value::Object(p.params.clone())),
        }),
        None if kind == Postprocessor::Ctc => Ok(Upstream {
            labels: graph
                .metadata("character")
                .map(|text| text.lines().map(str::to_owned).collect()),
            params: None,
        }),
        None => Ok(Upstream::default()),
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
