//! A topology's `kind: operator` stages as built things: the process's engine with its compile
//! cache, where each module comes from and what it must prove, and the instances' config,
//! grants and limits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use panoptes_model::ModelRegistry;
use panoptes_topology::{Emits, TopologyFile};

use crate::{
    Capabilities, DirGrant, EngineOptions, InstanceSpec, ModuleSpec, OperatorEngine, OperatorSlot,
    OperatorStage, OutputKind, WasmError,
};

/// How often operator files with `watch: true` are checked for changes.
const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// Why an operator stage could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("stage {stage:?}: memory_mib {mib} does not fit this machine")]
    Memory { stage: String, mib: u64 },
    #[error("stage {stage:?}: cannot start operator")]
    Start {
        stage: String,
        #[source]
        source: WasmError,
    },
    #[error("stage {stage:?}")]
    Watch {
        stage: String,
        #[source]
        source: WasmError,
    },
}

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

/// Where compiled Wasm operators are cached between runs.
pub fn operator_cache_dir() -> PathBuf {
    panoptes_files::paths::panoptes_home().join("wasm-cache")
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
) -> Result<InstanceSpec, BuildError> {
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
    let max_memory_bytes =
        match op.memory_mib {
            Some(mib) => Some(usize::try_from(mib.saturating_mul(1 << 20)).map_err(|_| {
                BuildError::Memory {
                    stage: op.id.clone(),
                    mib,
                }
            })?),
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

/// An operator stage on `engine`: its module loaded (digest and signature checked) and a first
/// instance made, so a bad file fails start-up with its path rather than the first frame. The
/// slot is what control requests reload.
pub fn operator_stage(
    topology: &TopologyFile,
    op: &panoptes_topology::OperatorStage,
    engine: OperatorEngine,
) -> Result<(OperatorSlot, OperatorStage), BuildError> {
    let id = &op.id;
    let spec = module_spec(topology, op);
    let (slot, instance) =
        OperatorSlot::load(id.clone(), engine, spec, instance_spec(topology, op)?).map_err(
            |source| BuildError::Start {
                stage: id.clone(),
                source,
            },
        )?;
    let mut stage = OperatorStage::new(slot.clone(), instance)
        .expecting(match op.emits {
            Emits::Tensors => OutputKind::Tensors,
            Emits::Frames => OutputKind::Frames,
            Emits::Detections => OutputKind::Detections,
        })
        .snapshot_every(std::time::Duration::from_millis(
            op.snapshot_interval_ms.max(100),
        ));
    if op.watch {
        let watcher = slot
            .watch(WATCH_PERIOD)
            .map_err(|source| BuildError::Watch {
                stage: id.clone(),
                source,
            })?;
        stage = stage.with_watcher(watcher);
    }
    Ok((slot, stage))
}
