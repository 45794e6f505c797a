//! The cameras an ingest process runs, changed while it runs: the camera control subjects
//! (`<ns>.control.cameras.{add,remove,list,reload}`, JSON request/reply, signed: see
//! `panoptes_client::control::auth`) and topology reload (also on SIGHUP). Workers need no change: they
//! serve whatever camera publishes frames.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt as _;
use panoptes_contracts::Subjects;
use panoptes_topology::{CameraConfig, Diagnostic, TopologyFile};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use panoptes_client::control::ControlGuard;
use panoptes_client::control::cameras::{AddRequest, CameraEntry, ControlReply, RemoveRequest};
use panoptes_client::control::confine::Confinement;

use crate::node::{IngestNode, IngestStats};

/// What a reloaded topology must pass besides the language's own checks before its cameras
/// start: the runner's refusals of what this build cannot run (e.g. JPEG cameras whose frames
/// no stage reads), so a reload refuses exactly what a start would.
pub type ReloadCheck = fn(&TopologyFile) -> Vec<Diagnostic>;

/// The cameras of one process, by ID.
pub struct CameraSet {
    nodes: Mutex<BTreeMap<String, IngestNode>>,
    client: async_nats::Client,
    subjects: Subjects,
    base_dir: PathBuf,
    /// The topology file `reload` re-reads and what it must pass (see [`Self::reload_from`]).
    topology: std::sync::OnceLock<(PathBuf, ReloadCheck)>,
    /// The cameras of the file this process runs (`--cameras`); `None`: all of them.
    selected: Option<Vec<String>>,
    process: String,
    /// Previews of all cameras here share it ([`crate::preview::NODE_PREVIEWS_PER_S`]).
    previews: Arc<crate::preview::Budget>,
}

impl CameraSet {
    pub fn new(
        client: async_nats::Client,
        subjects: Subjects,
        base_dir: PathBuf,
        selected: Option<Vec<String>>,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        Self {
            nodes: Mutex::new(BTreeMap::new()),
            client,
            subjects,
            base_dir,
            topology: std::sync::OnceLock::new(),
            selected,
            process: format!("{host}:{}", std::process::id()),
            previews: Arc::new(crate::preview::Budget::new(
                crate::preview::NODE_PREVIEWS_PER_S,
            )),
        }
    }

    /// Names the topology file `reload` re-reads and the check it must pass; without one,
    /// reload is refused.
    pub fn reload_from(&self, path: PathBuf, check: ReloadCheck) {
        let _ = self.topology.set((path, check));
    }

    /// Starts `cam`; an ID already running here is refused.
    pub async fn add(&self, cam: &CameraConfig) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().await;
        if nodes.contains_key(&cam.id) {
            anyhow::bail!("camera {} is already running in this process", cam.id);
        }
        let node = self.start(cam).await?;
        nodes.insert(cam.id.clone(), node);
        Ok(())
    }

    async fn start(&self, cam: &CameraConfig) -> anyhow::Result<IngestNode> {
        let (cam, base, client, subjects, previews) = (
            cam.clone(),
            self.base_dir.clone(),
            self.client.clone(),
            self.subjects.clone(),
            self.previews.clone(),
        );
        // Starting a pipeline blocks on GStreamer state changes; the spawned node's tasks need
        // the runtime, hence the handle.
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _guard = runtime.enter();
            IngestNode::start(&cam, &base, client, subjects, previews)
        })
        .await?
    }

    /// Stops the camera `id`; `None` when this process does not run it.
    pub async fn remove(&self, id: &str) -> Option<Arc<IngestStats>> {
        let node = self.nodes.lock().await.remove(id)?;
        let stats = node.stats();
        node.stop().await;
        Some(stats)
    }

    pub async fn list(&self) -> Vec<CameraEntry> {
        let nodes = self.nodes.lock().await;
        nodes
            .values()
            .map(|n| {
                let s = n.stats();
                CameraEntry {
                    id: n.camera().to_string(),
                    state: serde_json::to_value(n.state()).unwrap_or_default(),
                    published: s.published.load(Ordering::Relaxed),
                    dropped: s.dropped.load(Ordering::Relaxed),
                    failed: s.failed.load(Ordering::Relaxed),
                    reconnects: s.reconnects.load(Ordering::Relaxed),
                    previews: s.previews.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    pub async fn len(&self) -> usize {
        self.nodes.lock().await.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Makes the running cameras those of the topology file (as this process's `--cameras`
    /// selects them): new ones start, changed ones restart, others stop, including cameras
    /// added at runtime. An invalid file changes nothing.
    pub async fn reload(&self) -> ControlReply {
        let Some((path, check)) = self.topology.get() else {
            return self.failed("this process was not started from a topology file".into());
        };
        let (path, selected) = (path.clone(), &self.selected);
        let loaded = tokio::task::spawn_blocking(move || TopologyFile::load(&path)).await;
        let topology = match loaded {
            Ok(Ok(t)) => t,
            Ok(Err(d)) => {
                return self.failed(format!("the topology is invalid:\n{}", d.render(false)));
            }
            Err(e) => return self.failed(format!("reading the topology panicked: {e}")),
        };
        let refused = check(&topology);
        if !refused.is_empty() {
            return self.failed(topology.diagnostics(refused).render(false));
        }
        let wanted: Vec<&CameraConfig> = topology
            .cameras
            .iter()
            .filter(|c| selected.as_ref().is_none_or(|s| s.contains(&c.id)))
            .collect();
        let mut reply = ControlReply {
            ok: true,
            process: self.process.clone(),
            ..ControlReply::default()
        };
        let mut nodes = self.nodes.lock().await;
        let gone: Vec<String> = nodes
            .keys()
            .filter(|id| !wanted.iter().any(|c| &c.id == *id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(node) = nodes.remove(&id) {
                node.stop().await;
                reply.removed.push(id);
            }
        }
        let mut errors = Vec::new();
        for cam in wanted {
            let changed = match nodes.get(&cam.id) {
                None => false,
                Some(node) if same(node.config(), cam) => continue,
                Some(_) => true,
            };
            if let Some(node) = nodes.remove(&cam.id) {
                node.stop().await;
            }
            match self.start(cam).await {
                Ok(node) => {
                    nodes.insert(cam.id.clone(), node);
                    if changed {
                        reply.restarted.push(cam.id.clone());
                    } else {
                        reply.added.push(cam.id.clone());
                    }
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if !errors.is_empty() {
            reply.ok = false;
            reply.error = Some(errors.join("; "));
        }
        tracing::info!(added = ?reply.added, removed = ?reply.removed, restarted = ?reply.restarted, "topology reloaded");
        reply
    }

    /// Stops every camera, returning their counters.
    pub async fn stop_all(&self) -> Vec<Arc<IngestStats>> {
        let nodes = std::mem::take(&mut *self.nodes.lock().await);
        let mut out = Vec::new();
        for node in nodes.into_values() {
            out.push(node.stats());
            node.stop().await;
        }
        out
    }

    fn failed(&self, error: String) -> ControlReply {
        ControlReply {
            ok: false,
            process: self.process.clone(),
            error: Some(error),
            ..ControlReply::default()
        }
    }

    /// Answers one request; `None` means stay silent (another process may run the camera).
    async fn handle(
        &self,
        op: &str,
        payload: &[u8],
        confinement: &Confinement,
    ) -> Option<ControlReply> {
        match op {
            "add" => Some(match serde_json::from_slice::<AddRequest>(payload) {
                Err(e) => self.failed(format!("malformed add request: {e}")),
                Ok(req) => match self.parse_camera(&req.camera, confinement) {
                    Err(e) => self.failed(e),
                    Ok(cam) => match self.add(&cam).await {
                        Ok(()) => ControlReply {
                            ok: true,
                            process: self.process.clone(),
                            added: vec![cam.id],
                            ..ControlReply::default()
                        },
                        Err(e) => self.failed(format!("{e:#}")),
                    },
                },
            }),
            "remove" => match serde_json::from_slice::<RemoveRequest>(payload) {
                Err(e) => Some(self.failed(format!("malformed remove request: {e}"))),
                Ok(req) => self.remove(&req.camera).await.map(|_| ControlReply {
                    ok: true,
                    process: self.process.clone(),
                    removed: vec![req.camera],
                    ..ControlReply::default()
                }),
            },
            "list" => Some(ControlReply {
                ok: true,
                process: self.process.clone(),
                cameras: Some(self.list().await),
                ..ControlReply::default()
            }),
            "reload" => Some(self.reload().await),
            other => Some(self.failed(format!(
                "unknown camera control operation {other:?} (add, remove, list, reload)"
            ))),
        }
    }

    /// Checks a camera as a topology file's would be, with the errors rendered for the reply.
    /// What the camera names is confined first, before any check looks at the filesystem, so
    /// the reply says nothing about files outside the allowed directories.
    fn parse_camera(
        &self,
        value: &serde_json::Value,
        confinement: &Confinement,
    ) -> Result<CameraConfig, String> {
        if mentions_variable(value) {
            return Err("a camera added at runtime takes no ${VAR} expansion (only topology files do): write the value itself".into());
        }
        let str_at = |pointer: &str| value.pointer(pointer).and_then(serde_json::Value::as_str);
        if let Some(p) = str_at("/source/file/path") {
            confinement.path(&self.base_dir, std::path::Path::new(p), "camera file")?;
        }
        if let Some(p) = str_at("/source/v4l2/device") {
            confinement.path(&self.base_dir, std::path::Path::new(p), "camera device")?;
        }
        for pointer in ["/source/rtsp/url", "/source/http/url"] {
            if let Some(url) = str_at(pointer) {
                confinement.url(url)?;
            }
        }
        let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
        let cam = TopologyFile::parse_camera(&text, "camera", &self.base_dir, &|_| None)
            .map_err(|d| format!("invalid camera:\n{}", d.render(false)))?;
        if let panoptes_topology::SourceConfig::File(file) = &cam.source {
            // GStreamer's filesrc would block on a FIFO (and the control loop with it) and
            // read devices forever: only regular files play.
            let path = confinement.path(&self.base_dir, &file.path, "camera file")?;
            panoptes_files::check_regular(&path).map_err(|e| format!("camera file: {e}"))?;
        }
        if cam.encoding != panoptes_topology::WireEncoding::Raw {
            // The camera's frames reach workers whose first stage must take JPEG; the
            // topology's validation cannot see a camera added here, so say what it needs.
            tracing::info!(camera = %cam.id, encoding = ?cam.encoding, "camera added with a JPEG-capable encoding; the workers' first stage must be a `jpeg` operator");
        }
        Ok(cam)
    }
}

/// Whether any string in `value` holds a `${...}` reference.
fn mentions_variable(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains("${"),
        serde_json::Value::Array(items) => items.iter().any(mentions_variable),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains("${") || mentions_variable(v)),
        _ => false,
    }
}

/// Whether a camera's configuration is unchanged (compared as the file would write it).
fn same(a: &CameraConfig, b: &CameraConfig) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Subscribes to the camera control subjects; subscribed before it returns, so a request sent
/// right after start is heard.
pub async fn subscribe(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> anyhow::Result<Vec<(String, async_nats::Subscriber)>> {
    let mut subs = Vec::new();
    // One process takes an `add`; the rest reach every process.
    subs.push((
        "add".to_owned(),
        client
            .queue_subscribe(
                subjects.camera_control("add"),
                Subjects::CAMERA_CONTROL_GROUP.to_owned(),
            )
            .await?,
    ));
    for op in ["remove", "list", "reload"] {
        subs.push((
            op.to_owned(),
            client.subscribe(subjects.camera_control(op)).await?,
        ));
    }
    client.flush().await?;
    Ok(subs)
}

/// Answers camera control requests (when `guard` is given: control is enabled), and reloads
/// the topology on SIGHUP, until `cancel` fires.
pub async fn serve(
    set: Arc<CameraSet>,
    subs: Vec<(String, async_nats::Subscriber)>,
    guard: Option<Arc<ControlGuard>>,
    cancel: CancellationToken,
) {
    let mut requests = futures::stream::select_all(
        subs.into_iter()
            .map(|(op, sub)| sub.map(move |msg| (op.clone(), msg)).boxed()),
    );
    let mut hangup = hangups();
    // Without control subjects (control off) only SIGHUP is served.
    let listening = !requests.is_empty();
    loop {
        let (op, msg) = tokio::select! {
            () = cancel.cancelled() => break,
            () = next_hangup(&mut hangup) => {
                let reply = set.reload().await;
                if !reply.ok {
                    tracing::error!(error = reply.error.as_deref().unwrap_or(""), "reload on SIGHUP failed");
                }
                continue;
            }
            next = requests.next(), if listening => match next {
                Some(next) => next,
                None => break,
            },
        };
        let Some(reply_to) = msg.reply.clone() else {
            tracing::warn!(subject = %msg.subject, "camera control request without a reply subject; ignored");
            continue;
        };
        let Some(guard) = &guard else { continue };
        let reply = match guard.admit(&msg) {
            Err(refusal) => Some(set.failed(format!("refused: {refusal}"))),
            Ok(()) => set.handle(&op, &msg.payload, &guard.confinement).await,
        };
        let Some(reply) = reply else {
            continue;
        };
        if !reply.ok {
            tracing::warn!(
                op,
                error = reply.error.as_deref().unwrap_or(""),
                "camera control request refused"
            );
        }
        match serde_json::to_vec(&reply) {
            Ok(body) => {
                if let Err(e) = set.client.publish(reply_to, body.into()).await {
                    tracing::warn!(error = %e, "cannot send the camera control reply");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode the camera control reply"),
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangups) {
    match h {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending().await
}
