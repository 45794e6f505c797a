//! Clips, segments and snapshots in the NATS Object Store bucket `<ns>-clips`: each object
//! carries its clip's metadata (camera, clip ID, time range, frames, events, tracks), so
//! `panoptes clips` and any other client can filter without downloading. An object is listed
//! only once its last chunk and its description are stored (Object Store writes the
//! description last), so a recorder that dies mid-upload leaves nothing that reads as a clip.
//! Retention removes whole clips (video and snapshot together): older than the age limit, and
//! the oldest while the bucket is over its size limit.

use std::collections::{BTreeMap, HashMap};

use async_nats::jetstream::{self, object_store};
use futures::StreamExt;
use panoptes_contracts::clip::{ClipEvent, ClipKind, ClipMessage};
use panoptes_topology::Retention;
use tokio::io::AsyncWriteExt;

use crate::RecordError;

/// The bucket of a namespace.
pub fn bucket_name(namespace: &str) -> String {
    format!("{}-clips", panoptes_pipeline::lease::token(namespace))
}

/// Metadata keys of stored objects.
mod key {
    pub const ROLE: &str = "panoptes-role";
    pub const CLIP: &str = "clip";
    pub const MESSAGE: &str = "clip-message";
}

/// What an object is to its clip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Video,
    Snapshot,
}

/// An object of the bucket, with its clip's description.
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub name: String,
    pub role: Role,
    pub size: u64,
    /// The object store's own digest (`SHA-256=<base64url>`).
    pub digest: Option<String>,
    /// The description of the clip it belongs to.
    pub clip: ClipMessage,
}

impl StoredObject {
    fn from_info(info: &object_store::ObjectInfo) -> Option<Self> {
        if info.deleted {
            return None;
        }
        let role = match info.metadata.get(key::ROLE).map(String::as_str) {
            Some("video") => Role::Video,
            Some("snapshot") => Role::Snapshot,
            _ => return None,
        };
        let clip: ClipMessage = serde_json::from_str(info.metadata.get(key::MESSAGE)?).ok()?;
        Some(Self {
            name: info.name.clone(),
            role,
            size: info.size as u64,
            digest: info.digest.clone(),
            clip,
        })
    }
}

/// Object names: `<camera>/<clip id>.<ext>`, snapshots `<camera>/<clip id>.jpg`.
pub fn object_name(camera: &str, id: &str, extension: &str) -> String {
    format!("{camera}/{id}.{extension}")
}

/// The bucket `<ns>-clips`.
#[derive(Clone)]
pub struct ClipStore {
    store: object_store::ObjectStore,
}

fn store_error(what: &str, e: impl std::fmt::Display) -> RecordError {
    RecordError::Store(format!("{what}: {e}"))
}

impl ClipStore {
    /// Opens the bucket, creating it (file storage) if it is missing. Its messages expire an
    /// hour after the age limit: clips are removed by the sweep before that, and the chunks
    /// of an upload a crash cut short (never listed) do not stay for ever.
    pub async fn open(
        client: &async_nats::Client,
        namespace: &str,
        retention: &Retention,
    ) -> Result<Self, RecordError> {
        let js = jetstream::new(client.clone());
        let bucket = bucket_name(namespace);
        let store = match js.get_object_store(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    description: Some("panoptes clips, segments and snapshots".into()),
                    storage: jetstream::stream::StorageType::File,
                    max_age: std::time::Duration::from_secs_f64(retention.max_age_h * 3600.0 + 3600.0),
                    ..Default::default()
                })
                .await
                .map_err(|e| store_error(&format!("cannot open the object store {bucket:?} (it needs JetStream on the NATS server)"), e))?,
        };
        Ok(Self { store })
    }

    /// Opens the bucket if it exists (`panoptes clips` on a deployment that recorded
    /// nothing yet says so rather than making a bucket).
    pub async fn existing(
        client: &async_nats::Client,
        namespace: &str,
    ) -> Result<Self, RecordError> {
        let js = jetstream::new(client.clone());
        let bucket = bucket_name(namespace);
        let store = js.get_object_store(&bucket).await.map_err(|e| {
            store_error(
                &format!("no clips yet: cannot open the object store {bucket:?}"),
                e,
            )
        })?;
        Ok(Self { store })
    }

    /// Stores a clip's video and (for clips) snapshot, each with the clip's description; the
    /// snapshot first, so a listed video's snapshot is always there.
    pub async fn put(
        &self,
        clip: &ClipMessage,
        video: Vec<u8>,
        snapshot: Option<Vec<u8>>,
    ) -> Result<(), RecordError> {
        let message =
            serde_json::to_string(clip).map_err(|e| store_error("cannot describe the clip", e))?;
        let mut objects = Vec::new();
        if let (Some(name), Some(bytes)) = (&clip.snapshot, snapshot) {
            objects.push((name.clone(), "snapshot", bytes));
        }
        objects.push((clip.object.clone(), "video", video));
        for (name, role, bytes) in objects {
            let meta = object_store::ObjectMetadata {
                name: name.clone(),
                description: Some(format!("{} of {}", role, clip.id)),
                metadata: HashMap::from([
                    (key::ROLE.to_owned(), role.to_owned()),
                    (key::CLIP.to_owned(), clip.id.clone()),
                    (key::MESSAGE.to_owned(), message.clone()),
                ]),
                ..Default::default()
            };
            self.store
                .put(meta, &mut bytes.as_slice())
                .await
                .map_err(|e| store_error(&format!("cannot store {name}"), e))?;
        }
        Ok(())
    }

    /// Every clip object of the bucket (objects it did not write are left out).
    pub async fn list(&self) -> Result<Vec<StoredObject>, RecordError> {
        let mut list = self
            .store
            .list()
            .await
            .map_err(|e| store_error("cannot list clips", e))?;
        let mut out = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| store_error("cannot list clips", e))?;
            out.extend(StoredObject::from_info(&info));
        }
        out.sort_by(|a, b| (a.clip.start_ns, &a.name).cmp(&(b.clip.start_ns, &b.name)));
        Ok(out)
    }

    /// Writes the object `name` to `out`; returns its size.
    pub async fn get_to(
        &self,
        name: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, RecordError> {
        let mut object = self
            .store
            .get(name)
            .await
            .map_err(|e| store_error(&format!("no object {name:?}"), e))?;
        let n = tokio::io::copy(&mut object, out)
            .await
            .map_err(|e| store_error(&format!("cannot read {name:?}"), e))?;
        out.flush()
            .await
            .map_err(|e| store_error("cannot write", e))?;
        Ok(n)
    }

    pub async fn remove(&self, name: &str) -> Result<(), RecordError> {
        self.store
            .delete(name)
            .await
            .map_err(|e| store_error(&format!("cannot remove {name:?}"), e))
    }

    /// Applies `retention` at `now_ns`: removes clips stored longer ago than the age limit,
    /// then the oldest (by start) while the bucket holds more than the size limit. Returns
    /// the object names removed.
    pub async fn sweep(
        &self,
        retention: &Retention,
        now_ns: u64,
    ) -> Result<Vec<String>, RecordError> {
        let objects = self.list().await?;
        // Whole clips: video and snapshot together, oldest first.
        let mut clips: BTreeMap<(u64, String), Vec<StoredObject>> = BTreeMap::new();
        for o in objects {
            clips
                .entry((o.clip.start_ns, format!("{}/{}", o.clip.camera, o.clip.id)))
                .or_default()
                .push(o);
        }
        let max_age_ns = (retention.max_age_h * 3600.0 * 1e9) as u64;
        let max_bytes = retention.max_mib.saturating_mul(1 << 20);
        let mut total: u64 = clips.values().flatten().map(|o| o.size).sum();
        let mut removed = Vec::new();
        for group in clips.values() {
            let stored = group.iter().map(|o| o.clip.stored_ns).max().unwrap_or(0);
            let too_old = now_ns.saturating_sub(stored) > max_age_ns;
            if !too_old && total <= max_bytes {
                continue;
            }
            for o in group {
                self.remove(&o.name).await?;
                total = total.saturating_sub(o.size);
                removed.push(o.name.clone());
            }
        }
        Ok(removed)
    }
}

/// The `clips/v1` description of a finished clip or segment.
#[allow(clippy::too_many_arguments)]
pub fn describe(
    kind: ClipKind,
    id: &str,
    camera: &str,
    (object, content_type): (String, &str),
    snapshot: Option<String>,
    (start_ns, end_ns, frames, bytes): (u64, u64, u64, u64),
    part: u32,
    events: Vec<ClipEvent>,
    rules: Vec<String>,
    tracks: Vec<u64>,
) -> ClipMessage {
    ClipMessage {
        schema: panoptes_contracts::clip::CLIPS_SCHEMA.to_owned(),
        kind,
        id: id.to_owned(),
        camera: camera.to_owned(),
        object,
        content_type: content_type.to_owned(),
        snapshot,
        start_ns,
        end_ns,
        frames,
        bytes,
        part,
        events,
        rules,
        tracks,
        stored_ns: panoptes_contracts::time::now_ns(),
    }
}
