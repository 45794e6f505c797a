//! A topology's `kind: model` stages and `models:` as built things: where each model comes
//! from (file or manifest), the process's shared graphs, and the model stage with its batching
//! and cascade crops. What postprocess stages learn from the model upstream of them is here too,
//! because only the model's manifest knows it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use panoptes_contracts::BatchPolicy;
use panoptes_contracts::kinds::Postprocessor;
use panoptes_topology::{FRAMES, StageConfig, TopologyFile};

use crate::{
    Backend, ColorOrder, CropError, CropSpec, Crops, Device, Graph, GraphOptions, ManifestError,
    ModelError, ModelManifest, ModelRegistry, ModelStage, Orientation, load_checked,
};

/// Why a model or a model stage could not be built. Each names the model or stage concerned;
/// the cause follows as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    #[error(
        "model `{0}` needs exactly one of `file` and `manifest` (validation should have caught this)"
    )]
    FileOrManifest(String),
    #[error("model `{model}`")]
    Manifest {
        model: String,
        #[source]
        source: ManifestError,
    },
    #[error(
        "model `{model}`: the topology's sha256 {ours} is not the sha256 {theirs} that {manifest} declares for {file}"
    )]
    Sha256Conflict {
        model: String,
        ours: String,
        theirs: String,
        manifest: String,
        file: String,
    },
    #[error(
        "model `{0}` is declared with `file:`; crops need its normalisation, so declare it with a `manifest:` (docs/models.md)"
    )]
    CropsNeedManifest(String),
    #[error("{0}: normalize.scale must be positive")]
    Scale(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Crop(#[from] CropError),
    #[error(transparent)]
    Check(#[from] ManifestError),
    /// Where in the topology: `stage "det"`, `stage "det": orientation`, `model `det``.
    #[error("{at}")]
    At {
        at: String,
        #[source]
        source: Box<BuildError>,
    },
}

impl BuildError {
    fn at(at: impl Into<String>) -> impl FnOnce(BuildError) -> BuildError {
        let at = at.into();
        move |e| BuildError::At {
            at,
            source: Box::new(e),
        }
    }
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
pub fn resolve_model(topology: &TopologyFile, name: &str) -> Result<ResolvedModel, BuildError> {
    let Some(model) = topology.models.get(name) else {
        return Err(BuildError::UnknownModel(name.to_owned()));
    };
    match (&model.file, &model.manifest) {
        (Some(file), None) => Ok(ResolvedModel {
            path: topology.resolve(file),
            sha256: model.sha256.clone(),
            manifest: None,
        }),
        (None, Some(manifest)) => {
            let manifest = ModelManifest::load(&topology.resolve(manifest)).map_err(|source| {
                BuildError::Manifest {
                    model: name.to_owned(),
                    source,
                }
            })?;
            let sha256 = match (&model.sha256, &manifest.sha256) {
                (Some(ours), Some(theirs)) if !ours.trim().eq_ignore_ascii_case(theirs.trim()) => {
                    return Err(BuildError::Sha256Conflict {
                        model: name.to_owned(),
                        ours: ours.clone(),
                        theirs: theirs.clone(),
                        manifest: manifest.path().display().to_string(),
                        file: manifest.file.display().to_string(),
                    });
                }
                (ours, theirs) => ours.clone().or_else(|| theirs.clone()),
            };
            Ok(ResolvedModel {
                path: manifest.file_path(),
                sha256,
                manifest: Some(Arc::new(manifest)),
            })
        }
        _ => Err(BuildError::FileOrManifest(name.to_owned())),
    }
}

/// The process's models, by name, for model stages and model operators (`wasi:nn`): each
/// loads on first use and is shared by every user. ONNX Runtime on the CPU unless a model stage
/// of the same model asks for another backend or device. Fails on a manifest that cannot be
/// read or that disagrees with the topology (see [`resolve_model`]).
pub fn model_registry(topology: &TopologyFile) -> Result<Arc<ModelRegistry>, BuildError> {
    let registry = ModelRegistry::new();
    for name in topology.models.keys() {
        let resolved = resolve_model(topology, name)?;
        let opts = shared_options(topology, name);
        registry.declare(name.clone(), resolved.path, resolved.sha256, opts);
    }
    Ok(Arc::new(registry))
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
            panoptes_topology::Backend::Ort => Backend::Ort,
            panoptes_topology::Backend::Tract => Backend::Tract,
        },
        device: match m.device {
            panoptes_topology::Device::Cpu => Device::Cpu,
            panoptes_topology::Device::Cuda => Device::Cuda,
            panoptes_topology::Device::Tensorrt => Device::TensorRt,
            panoptes_topology::Device::Openvino => Device::OpenVino,
        },
        threads: m.threads.unwrap_or(0),
    }
}

/// The loaded graph of model `name` under `opts`: the process's shared one when the options
/// are the ones it is shared under, else a separate load.
fn model_graph(
    topology: &TopologyFile,
    name: &str,
    opts: &GraphOptions,
    models: &ModelRegistry,
) -> Result<Graph, BuildError> {
    if shared_options(topology, name) == *opts {
        return Ok(models.get(name)?);
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

/// A model stage: its graph (shared with model operators when the options match), batching,
/// and for cascades the crops (with the orientation classifier) cut by the model's manifest.
pub fn model_stage(
    topology: &TopologyFile,
    m: &panoptes_topology::ModelStage,
    models: &ModelRegistry,
) -> Result<ModelStage, BuildError> {
    let stage = format!("stage {:?}", m.id);
    let graph = model_graph(topology, &m.model, &graph_options(m), models)
        .map_err(BuildError::at(&stage))?;
    // A manifest that disagrees with the file (names, ranks, fixed dims) would feed the model
    // wrongly shaped or normalised input: refuse it at start, not only in `validate --env`.
    let manifest = resolve_model(topology, &m.model)?.manifest;
    if let Some(manifest) = &manifest {
        manifest
            .check(&graph)
            .map_err(BuildError::from)
            .map_err(BuildError::at(format!("{stage}: model `{}`", m.model)))?;
    }
    let mut built = ModelStage::new(m.id.clone(), graph);
    if let Some(b) = &m.batching {
        built = built.with_batching(batch_policy(b));
    }
    if let Some(c) = &m.crops {
        let crops = (|| {
            let spec = crop_spec(
                &m.model,
                manifest.as_deref(),
                c.width,
                c.height,
                c.keep_aspect,
            )?;
            Ok::<_, BuildError>(Crops::new(CropSpec {
                max_width: c.max_width,
                max_crops: c.max_crops as usize,
                ..spec
            })?)
        })()
        .map_err(BuildError::at(&stage))?;
        let crops = match &c.orientation {
            None => crops,
            Some(o) => (|| {
                let resolved = resolve_model(topology, &o.model)?;
                let graph = model_graph(
                    topology,
                    &o.model,
                    &shared_options(topology, &o.model),
                    models,
                )?;
                let spec = crop_spec(
                    &o.model,
                    resolved.manifest.as_deref(),
                    o.width,
                    o.height,
                    true,
                )?;
                Ok::<_, BuildError>(crops.with_orientation(Orientation {
                    graph,
                    spec,
                    threshold: o.threshold,
                })?)
            })()
            .map_err(BuildError::at(format!("{stage}: orientation")))?,
        };
        built = built.with_crops(crops);
    }
    Ok(built)
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
) -> Result<CropSpec, BuildError> {
    let Some(manifest) = manifest else {
        return Err(BuildError::CropsNeedManifest(name.to_owned()));
    };
    let n = manifest.normalization();
    if !(n.scale.is_finite() && n.scale > 0.0) {
        return Err(BuildError::Scale(manifest.path().display().to_string()));
    }
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
        bgr: n.color == ColorOrder::Bgr,
    })
}

/// What the model whose output a postprocess stage reads says about its postprocessing.
#[derive(Debug, Default)]
pub struct Upstream {
    /// Class names (for `ctc`: the character list).
    pub labels: Option<Vec<String>>,
    /// The manifest's params for this postprocessor.
    pub params: Option<serde_json::Value>,
}

/// The nearest model stage upstream of stage `id`, by its manifest (`labels`, and the
/// `postprocessor` params when it names `kind`); without a manifest, a `ctc` stage reads the
/// PP-OCR `character` key of the model file's metadata.
pub fn upstream_of(
    topology: &TopologyFile,
    id: &str,
    kind: Postprocessor,
    models: &ModelRegistry,
) -> Result<Upstream, BuildError> {
    let inputs = topology.stage_inputs();
    let index = |id: &str| topology.stages.iter().position(|s| s.id() == id);
    let mut at = index(id);
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
    let graph = model_graph(topology, &model.model, &graph_options(model), models)?;
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
