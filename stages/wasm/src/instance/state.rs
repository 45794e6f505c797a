//! The `panoptes:operator@0.2.0` exports of a stateful operator (`snapshot`, `restore`,
//! `forget`: `operators/wit-stateful/`), found by name on an instance of the 0.1.0 bindings:
//! the two worlds share every import and type, so one linker serves both.

use panoptes_contracts::stage::IdRange;
use wasmtime::Store;
use wasmtime::component::{Instance, TypedFunc};

use super::{HostState, OperatorInstance};
use crate::error::WasmError;

type Snapshot = TypedFunc<(String,), (Option<Vec<u8>>,)>;
type Restore = TypedFunc<(String, Option<Vec<u8>>, u64, u64), (Result<(), String>,)>;
type Forget = TypedFunc<(String,), ()>;

#[derive(Clone, Copy)]
pub(super) struct StateExports {
    snapshot: Snapshot,
    restore: Restore,
    forget: Forget,
}

impl StateExports {
    /// The three exports when the component has them all with 0.2.0's signatures; `None` for
    /// a component of the 0.1.0 worlds. Some but not all, or another signature, is an error.
    pub(super) fn find(
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> Result<Option<Self>, String> {
        let names = ["snapshot", "restore", "forget"];
        let present: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| instance.get_func(&mut *store, name).is_some())
            .collect();
        if present.is_empty() {
            return Ok(None);
        }
        if present.len() < names.len() {
            return Err(format!(
                "it exports {} but not all of snapshot, restore and forget \
                 (world panoptes:operator/stateful-operator@0.2.0)",
                present.join(", ")
            ));
        }
        let signature = |name: &str, e: wasmtime::Error| {
            format!(
                "its `{name}` export does not have the signature of \
                 panoptes:operator/stateful-operator@0.2.0: {e:#}"
            )
        };
        Ok(Some(Self {
            snapshot: instance
                .get_typed_func(&mut *store, "snapshot")
                .map_err(|e| signature("snapshot", e))?,
            restore: instance
                .get_typed_func(&mut *store, "restore")
                .map_err(|e| signature("restore", e))?,
            forget: instance
                .get_typed_func(&mut *store, "forget")
                .map_err(|e| signature("forget", e))?,
        }))
    }
}

impl OperatorInstance {
    /// Whether the operator keeps per-camera state (world `stateful-operator@0.2.0`), which
    /// the host saves and restores through [`snapshot`](Self::snapshot) and
    /// [`restore`](Self::restore).
    pub fn is_stateful(&self) -> bool {
        self.stateful
    }

    /// Whether a guest is running: `false` after a trap, timeout or memory failure discarded
    /// it (the next call starts a fresh one, with no state).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Starts a fresh guest now if the last one was discarded, so its state can be restored
    /// before the next frame.
    pub fn revive(&mut self) -> Result<(), WasmError> {
        if self.live.is_none() {
            self.live = Some(self.start()?);
            self.rebuilds += 1;
        }
        Ok(())
    }

    /// The guest's state of `camera`; `None` from a stateless operator or when it keeps
    /// nothing of the camera. A trap here discards the guest like one in `process`.
    pub fn snapshot(&mut self, camera: &str) -> Result<Option<Vec<u8>>, WasmError> {
        let out = self.call_state(|exports, store| {
            exports
                .snapshot
                .call(store, (camera.to_owned(),))
                .map(|(state,)| state)
        })?;
        Ok(out.flatten())
    }

    /// Begins a tenure of `camera` on the guest with a saved `state` and the tenure's IDs. A
    /// guest that refuses the state answers [`WasmError::StateRefused`]; nothing happens on a
    /// stateless operator.
    pub fn restore(
        &mut self,
        camera: &str,
        state: Option<&[u8]>,
        ids: IdRange,
    ) -> Result<(), WasmError> {
        let out = self.call_state(|exports, store| {
            exports
                .restore
                .call(
                    store,
                    (
                        camera.to_owned(),
                        state.map(<[u8]>::to_vec),
                        ids.first,
                        ids.end,
                    ),
                )
                .map(|(result,)| result)
        })?;
        match out {
            Some(Err(message)) => Err(WasmError::StateRefused {
                operator: self.name().to_owned(),
                message,
            }),
            Some(Ok(())) | None => Ok(()),
        }
    }

    /// Tells the guest `camera` is no longer its own.
    pub fn forget(&mut self, camera: &str) -> Result<(), WasmError> {
        self.call_state(|exports, store| exports.forget.call(store, (camera.to_owned(),)))?;
        Ok(())
    }

    /// Runs one state export under the same deadline and fault handling as `process`;
    /// `Ok(None)` for a stateless operator.
    fn call_state<R>(
        &mut self,
        call: impl FnOnce(&StateExports, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<Option<R>, WasmError> {
        if !self.stateful {
            return Ok(None);
        }
        self.revive()?;
        let Some(mut live) = self.live.take() else {
            return Ok(None);
        };
        let Some(exports) = live.state else {
            self.live = Some(live);
            return Ok(None);
        };
        live.store.data_mut().begin_call();
        live.store
            .set_epoch_deadline(self.module.deadline_ticks(self.deadline));
        let result = call(&exports, &mut live.store);
        self.flush_logs(&live.store);
        match result {
            Ok(out) => {
                self.live = Some(live);
                Ok(Some(out))
            }
            Err(err) => Err(self.classify(err, live.store.data())),
        }
    }
}
