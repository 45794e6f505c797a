//! What a stateful operator stage keeps around its instance: each camera's tenure (its ID
//! range and the state last saved), so the guest's per-camera state survives what replaces
//! the guest inside one worker (a trap, a hot reload) as it survives a move to another worker.

use std::collections::BTreeMap;

use panoptes_contracts::camera::CameraId;
use panoptes_contracts::stage::IdRange;

use crate::error::WasmError;
use crate::instance::OperatorInstance;

struct Tenure {
    ids: IdRange,
    /// The state last saved (or restored): what a rebuilt guest starts from.
    saved: Option<Vec<u8>>,
}

/// The stage's instance and, for a stateful operator, the tenures it serves.
pub(super) struct Guest {
    pub(super) instance: OperatorInstance,
    tenures: BTreeMap<CameraId, Tenure>,
}

impl Guest {
    pub(super) fn new(instance: OperatorInstance) -> Self {
        Self {
            instance,
            tenures: BTreeMap::new(),
        }
    }

    /// Before a frame: a stateful guest discarded by a fault is started again with every
    /// camera's last saved state, so a trap costs what happened since the last save, not
    /// the camera's whole history.
    pub(super) fn ready(&mut self, stage: &str) -> Result<(), WasmError> {
        if !self.instance.is_stateful() || self.instance.is_live() {
            return Ok(());
        }
        self.instance.revive()?;
        for (camera, tenure) in &self.tenures {
            restore_or_start_afresh(
                &mut self.instance,
                stage,
                camera,
                tenure.saved.as_deref(),
                tenure.ids,
            );
        }
        Ok(())
    }

    /// Switches to a reloaded module's instance, handing every camera's current state from
    /// the old guest to the new one.
    pub(super) fn replace(&mut self, stage: &str, mut next: OperatorInstance) {
        if next.is_stateful() != self.instance.is_stateful() {
            tracing::warn!(
                stage,
                stateful = next.is_stateful(),
                "the reloaded operator differs from the running one in keeping state; \
                 whether states are saved is decided when the worker starts"
            );
        }
        if next.is_stateful() {
            for (camera, tenure) in &mut self.tenures {
                let current = match self.instance.snapshot(camera.as_str()) {
                    Ok(state) => state,
                    Err(e) => {
                        tracing::warn!(stage, camera = %camera, error = %e,
                            "cannot take the state from the replaced operator; handing over the last saved one");
                        tenure.saved.clone()
                    }
                };
                restore_or_start_afresh(&mut next, stage, camera, current.as_deref(), tenure.ids);
                tenure.saved = current;
            }
        }
        self.instance = next;
    }

    pub(super) fn snapshot(&mut self, stage: &str, camera: &CameraId) -> Option<Vec<u8>> {
        match self.instance.snapshot(camera.as_str()) {
            Ok(state) => {
                if let Some(tenure) = self.tenures.get_mut(camera) {
                    tenure.saved.clone_from(&state);
                }
                state
            }
            Err(e) => {
                // The previous save stays in KV.
                tracing::warn!(stage, camera = %camera, error = %e, "operator state not saved");
                None
            }
        }
    }

    pub(super) fn restore(
        &mut self,
        camera: &CameraId,
        state: Option<&[u8]>,
        ids: IdRange,
    ) -> Result<(), WasmError> {
        self.tenures.insert(
            camera.clone(),
            Tenure {
                ids,
                saved: state.map(<[u8]>::to_vec),
            },
        );
        self.instance.restore(camera.as_str(), state, ids)
    }

    pub(super) fn forget(&mut self, stage: &str, camera: &CameraId) {
        self.tenures.remove(camera);
        if let Err(e) = self.instance.forget(camera.as_str()) {
            tracing::warn!(stage, camera = %camera, error = %e, "operator failed to forget a camera");
        }
    }
}

fn restore_or_start_afresh(
    instance: &mut OperatorInstance,
    stage: &str,
    camera: &CameraId,
    state: Option<&[u8]>,
    ids: IdRange,
) {
    if let Err(e) = instance.restore(camera.as_str(), state, ids) {
        tracing::warn!(stage, camera = %camera, error = %e, "operator state not carried over; the camera starts afresh");
        if let Err(e) = instance.restore(camera.as_str(), None, ids) {
            tracing::error!(stage, camera = %camera, error = %e, "operator refused a fresh start");
        }
    }
}
