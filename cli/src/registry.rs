//! Builds the stage graph a topology declares: each `kind` maps to the crate that implements it.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use panoptes_model::{ModelOptions, ModelStage, OrtModel};
use panoptes_pipeline::StageGraph;
use panoptes_pipeline::stage::{Item, Payload, Stage, StageError};
use panoptes_pipeline::tensor::{Tensor, Transform};
use panoptes_postprocess::DbStage;
use panoptes_topology::{FRAMES, Postprocessor, StageConfig, TopologyFile};
use panoptes_wasm::{
    EngineOptions, FrameInfo, OperatorEngine, OperatorInstance, PixelFormat, WasmError, signature,
};
use sha2::{Digest as _, Sha256};

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex sha256 of a file, read in chunks (model files are tens of MB).
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a hex sha256 is the one a topology declares (`sha256:<hex>` or bare hex).
pub fn digest_matches(got: &str, declared: &str) -> bool {
    got.eq_ignore_ascii_case(declared.trim_start_matches("sha256:"))
}

/// The engine operators of a topology run in, with the on-disk compile cache.
pub fn operator_engine() -> Result<OperatorEngine, WasmError> {
    OperatorEngine::new(EngineOptions {
        cache_dir: Some(operator_cache_dir()),
        ..EngineOptions::default()
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
    let mut engine: Option<OperatorEngine> = None;
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
            let stage = build_stage(topology, cfg, &mut engine)?;
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
    Ok(graph)
}

fn build_stage(
    topology: &TopologyFile,
    cfg: &StageConfig,
    engine: &mut Option<OperatorEngine>,
) -> anyhow::Result<Box<dyn Stage>> {
    let stage: Box<dyn Stage> = match cfg {
        StageConfig::Operator(panoptes_topology::OperatorStage {
            id,
            wasm,
            signed_by,
            digest,
            config,
            timeout_ms,
            memory_mib,
            ..
        }) => {
            let engine = match engine {
                Some(e) => e,
                None => engine.insert(operator_engine().context("cannot create the Wasm engine")?),
            };
            let path = topology.resolve(wasm);
            // Compile exactly the bytes whose signature or digest was checked, so the file
            // cannot be swapped between the check and loading.
            let checked = match (signed_by, digest) {
                (Some(key), _) => Some(
                    signature::verify_file(&path, &topology.resolve(key))
                        .with_context(|| format!("stage {id:?}: refusing operator"))?,
                ),
                (None, Some(_)) => Some(std::fs::read(&path).with_context(|| {
                    format!("stage {id:?}: cannot read operator {}", path.display())
                })?),
                (None, None) => None,
            };
            if let (Some(want), Some(bytes)) = (digest, &checked) {
                let got = sha256_hex(bytes);
                anyhow::ensure!(
                    digest_matches(&got, want),
                    "stage {id:?}: refusing operator {}: its digest is sha256:{got}, not the declared {want}",
                    path.display()
                );
            }
            let module = match &checked {
                Some(bytes) => engine.load_bytes(&path, bytes),
                None => engine.load(&path),
            }
            .with_context(|| format!("stage {id:?}: cannot load operator"))?;
            let mut instance = module
                .instantiate(&operator_config_json(config))
                .with_context(|| {
                    format!("stage {id:?}: operator {} failed to start", path.display())
                })?;
            if let Some(ms) = timeout_ms {
                instance.set_deadline(Duration::from_millis(*ms));
            }
            if let Some(mib) = memory_mib {
                let bytes = usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
                instance
                    .set_max_memory_bytes(bytes)
                    .with_context(|| format!("stage {id:?}: memory_mib {mib}"))?;
            }
            Box::new(OperatorStage {
                id: id.clone(),
                instance,
            })
        }
        StageConfig::Model(panoptes_topology::ModelStage {
            id, model, threads, ..
        }) => {
            let Some(declared) = topology.models.get(model) else {
                anyhow::bail!("stage {id:?}: unknown model {model:?}");
            };
            let path = topology.resolve(&declared.file);
            if let Some(want) = &declared.sha256 {
                let got = sha256_file(&path).with_context(|| {
                    format!("stage {id:?}: cannot read model {}", path.display())
                })?;
                anyhow::ensure!(
                    got.eq_ignore_ascii_case(want),
                    "stage {id:?}: refusing model {}: its sha256 is {got}, not the declared {want}",
                    path.display()
                );
            }
            let mut m = OrtModel::load(
                &path,
                &ModelOptions {
                    threads: threads.unwrap_or(0),
                },
            )
            .with_context(|| format!("stage {id:?}"))?;
            m.set_name(model);
            Box::new(ModelStage::new(id.clone(), m))
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

/// A Wasm operator as a stage: frame in, tensor (and its transform) out.
pub struct OperatorStage {
    id: String,
    instance: OperatorInstance,
}

impl Stage for OperatorStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn process(&mut self, mut item: Item) -> Result<Item, StageError> {
        let Payload::Frame(frame) = &item.payload else {
            return Err(StageError::WrongInput {
                expected: "frame",
                got: item.payload.kind(),
            });
        };
        let info = FrameInfo {
            camera: frame.camera.to_string(),
            seq: frame.seq,
            width: frame.width,
            height: frame.height,
            format: PixelFormat::Rgb8,
        };
        let out = self
            .instance
            .process(&info, frame.pixels.as_slice())
            .map_err(|e| match e {
                WasmError::Timeout { .. } => StageError::Timeout(self.instance.deadline()),
                WasmError::Trap { .. } => StageError::Trap(e.to_string()),
                other => StageError::Failed(other.to_string()),
            })?;
        let tensor = Tensor::new(out.shape, out.data).map_err(|e| {
            StageError::Failed(format!("operator returned a malformed tensor: {e}"))
        })?;
        if let Some(t) = out.transform {
            item.transform = Transform {
                scale_x: t.scale_x,
                scale_y: t.scale_y,
                offset_x: t.offset_x,
                offset_y: t.offset_y,
            };
        }
        item.payload = Payload::Tensor(tensor);
        Ok(item)
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
                "file: ../models/files/ch_PP-OCRv4_det_infer.onnx",
                &format!(
                    "file: ../models/files/ch_PP-OCRv4_det_infer.onnx\n    sha256: \"{zeros}\""
                ),
            )
        });
        let err = error_of(&t);
        assert!(
            err.contains("refusing model") && err.contains("ch_PP-OCRv4_det_infer.onnx"),
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
