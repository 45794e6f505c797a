//! Per-camera stage state in NATS KV, so a camera's state (a tracker's tracks) follows it to its
//! next owner: `<ns>-state` holds the latest snapshot per unit, stage and camera (expiring after
//! [`STATE_TTL`] without a write: the state of a camera that stays silent goes), `<ns>-tenures`
//! counts each camera's tenures per unit (never expiring), so every owner hands out IDs from a
//! range no other owner of the camera had ([`IdRange::of_tenure`]).

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::lease::{Ownership, token};
use panoptes_contracts::stage::IdRange;

/// How long a saved state outlives its last write.
pub const STATE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Tries of a tenure claim that lost a race with another writer before giving up.
const CLAIM_TRIES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open KV bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
    #[error("KV {key}: {message}")]
    Kv { key: String, message: String },
}

/// The state buckets of a namespace, for one unit.
#[derive(Clone)]
pub struct StateStore {
    state: kv::Store,
    tenures: kv::Store,
    unit: String,
}

pub fn state_bucket(namespace: &str) -> String {
    format!("{}-state", token(namespace))
}

pub fn tenure_bucket(namespace: &str) -> String {
    format!("{}-tenures", token(namespace))
}

impl StateStore {
    /// Opens (or creates) the namespace's state buckets for `unit`.
    pub async fn open(
        js: &jetstream::Context,
        namespace: &str,
        unit: &str,
    ) -> Result<Self, StateError> {
        let state = open_bucket(
            js,
            kv::Config {
                bucket: state_bucket(namespace),
                description:
                    "panoptes: per-camera stage state (tracks) for the camera's next owner".into(),
                history: 1,
                max_age: STATE_TTL,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        let tenures = open_bucket(
            js,
            kv::Config {
                bucket: tenure_bucket(namespace),
                description: "panoptes: tenures of each camera per unit (ID ranges of its owners)"
                    .into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self {
            state,
            tenures,
            unit: token(unit),
        })
    }

    /// The key of `stage`'s state of `camera`.
    pub fn key(&self, stage: &str, camera: &str) -> String {
        format!("{}.{}.{}", self.unit, token(stage), token(camera))
    }

    /// Claims the next tenure of `camera` (compare-and-set on its counter): the IDs this
    /// owner may hand out for it. No two claims get the same range.
    pub async fn claim(&self, camera: &str) -> Result<IdRange, StateError> {
        let key = format!("{}.{}", self.unit, token(camera));
        let fail = |message: String| StateError::Kv {
            key: key.clone(),
            message,
        };
        for _ in 0..CLAIM_TRIES {
            let entry = self
                .tenures
                .entry(&key)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let (held, revision) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or_else(|| fail("tenure counter is not a number".into()))?,
                    Some(e.revision),
                ),
                _ => (0, entry.as_ref().map(|e| e.revision)),
            };
            let next = Bytes::from((held + 1).to_string());
            let written = match revision {
                Some(revision) => self.tenures.update(&key, next, revision).await.is_ok(),
                None => self.tenures.create(&key, next).await.is_ok(),
            };
            if written {
                return Ok(IdRange::of_tenure(held));
            }
        }
        Err(fail(format!(
            "lost {CLAIM_TRIES} races for the tenure counter"
        )))
    }

    pub async fn load(&self, key: &str) -> Result<Option<Bytes>, StateError> {
        self.state.get(key).await.map_err(|e| StateError::Kv {
            key: key.to_owned(),
            message: e.to_string(),
        })
    }

    pub async fn save(&self, key: &str, state: Bytes) -> Result<(), StateError> {
        self.state
            .put(key, state)
            .await
            .map(|_| ())
            .map_err(|e| StateError::Kv {
                key: key.to_owned(),
                message: e.to_string(),
            })
    }

    pub async fn remove(&self, key: &str) -> Result<(), StateError> {
        self.state.delete(key).await.map_err(|e| StateError::Kv {
            key: key.to_owned(),
            message: e.to_string(),
        })
    }
}

async fn open_bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, StateError> {
    let name = config.bucket.clone();
    if let Ok(kv) = js.get_key_value(&name).await {
        return Ok(kv);
    }
    match js.create_key_value(config).await {
        Ok(kv) => Ok(kv),
        // Another worker may have created it meanwhile.
        Err(e) => js
            .get_key_value(&name)
            .await
            .map_err(|_| StateError::Bucket {
                bucket: name,
                message: e.to_string(),
            }),
    }
}

/// A write for the state writer, done in order.
pub(crate) enum StateWrite {
    Save {
        key: String,
        state: Vec<u8>,
    },
    Remove {
        key: String,
    },
    /// Every state of `partition` was queued before this: its release may go on.
    HandedOff(u32),
}

/// Writes states in the order they were queued, until every sender is gone. A failed write
/// is logged and counted; the camera's next snapshot tries again.
pub(crate) async fn write_loop(
    store: Option<StateStore>,
    ownership: std::sync::Arc<Ownership>,
    mut rx: mpsc::UnboundedReceiver<StateWrite>,
) {
    while let Some(write) = rx.recv().await {
        match write {
            StateWrite::Save { key, state } => {
                let Some(store) = &store else { continue };
                if let Err(e) = store.save(&key, state.into()).await {
                    metrics::counter!(panoptes_contracts::meter::STATE_WRITE_ERRORS).increment(1);
                    tracing::warn!(error = %e, "stage state not saved");
                }
            }
            StateWrite::Remove { key } => {
                let Some(store) = &store else { continue };
                if let Err(e) = store.remove(&key).await {
                    tracing::debug!(error = %e, "stage state not removed; it expires");
                }
            }
            StateWrite::HandedOff(partition) => ownership.handed_off(partition),
        }
    }
}
