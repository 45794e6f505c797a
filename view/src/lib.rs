//! panoptes-view: the live web view. It owns what a browser sees of a deployment: the model
//! built from NATS messages (`model.rs`: each camera's recent frames matched with their
//! detections by seq, track trails, health and counters, the event timeline), reading NATS
//! (`intake.rs`: frames, detections, analytics, events and clips by subscription, partition
//! leases from the lease bucket), and the HTTP server (`server.rs`: the page and its assets
//! embedded in the binary, JSON for the page, frames over a WebSocket at a capped rate, clips
//! and snapshots from the Object Store, a token check).
//!
//! Invariant: the view reads and never writes: it publishes nothing on NATS and creates no
//! bucket, so any node can serve it. What it holds is bounded (frames per camera, cameras,
//! timeline entries, one frame in flight per browser), so a browser that stops reading or a
//! flood of cameras costs it nothing more.

pub mod intake;
pub mod model;
pub mod server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use panoptes_topology::Topology;
use tokio_util::sync::CancellationToken;

pub use model::{Deployment, Limits};

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
    #[error(
        "the view would listen on {0}, beyond this machine, without a token: set --view-token (or PANOPTES_VIEW_TOKEN), or put it behind a reverse proxy that authenticates (docs/view.md)"
    )]
    OpenWithoutToken(SocketAddr),
    #[error("{0}")]
    Nats(String),
}

/// How the view serves.
#[derive(Clone, Debug)]
pub struct ViewConfig {
    pub listen: SocketAddr,
    /// Required when `listen` is not a loopback address.
    pub token: Option<String>,
    /// Frames per second per camera sent to each browser.
    pub max_fps: f64,
    /// Frames per second over all cameras the view samples (each camera gets its share).
    pub max_total_fps: f64,
    /// Jaeger's UI, for links to sampled frames' traces (`<jaeger>/trace/<id>`).
    pub jaeger: Option<String>,
    pub namespace: String,
    pub limits: Limits,
}

/// A running view.
pub struct View {
    pub addr: SocketAddr,
    pub token: Option<String>,
    task: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
}

impl View {
    /// The address to open in a browser (with the token, when there is one).
    pub fn url(&self) -> String {
        match &self.token {
            Some(token) => format!("http://{}/?token={token}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Starts the view: subscribes, binds `config.listen`, serves until [`View::stop`]. With a
/// topology it also draws the graph and the cameras' zones and lines.
pub async fn start(
    client: async_nats::Client,
    config: ViewConfig,
    topology: Option<&Topology>,
) -> Result<View, ViewError> {
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(ViewError::OpenWithoutToken(config.listen));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ViewError::Listen {
            addr: config.listen,
            message: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| ViewError::Listen {
        addr: config.listen,
        message: e.to_string(),
    })?;
    let mut deployment = Deployment::new(config.limits);
    for camera in topology.iter().flat_map(|t| &t.cameras) {
        deployment.know(&camera.id);
    }
    let model = Arc::new(Mutex::new(deployment));
    let (watching, watchers) = tokio::sync::watch::channel(0usize);
    let rates = intake::Rates {
        per_camera: config.max_fps.clamp(0.1, 30.0),
        total: config.max_total_fps.clamp(0.1, 240.0),
    };
    let leases = Arc::new(Mutex::new(Vec::new()));
    let graph = topology.and_then(|t| {
        serde_json::from_str(&panoptes_topology::graph::render(
            t,
            panoptes_topology::graph::Format::Json,
        ))
        .ok()
    });
    let places: serde_json::Map<String, serde_json::Value> = topology
        .map(|t| {
            t.cameras
                .iter()
                .filter(|c| !c.zones.is_empty() || !c.lines.is_empty())
                .map(|c| {
                    (
                        c.id.clone(),
                        serde_json::json!({ "zones": c.zones, "lines": c.lines }),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let cancel = CancellationToken::new();
    let shared = Arc::new(server::Shared {
        namespace: config.namespace.clone(),
        model: model.clone(),
        leases: leases.clone(),
        client: client.clone(),
        token: config.token.clone(),
        max_fps: config.max_fps.clamp(0.1, 30.0),
        jaeger: config.jaeger.clone(),
        graph,
        places: serde_json::Value::Object(places),
        stop: cancel.clone(),
        watching,
    });
    let intake_cancel = cancel.clone();
    let namespace = config.namespace.clone();
    let mut intake = tokio::spawn(async move {
        let read = intake::run(
            client,
            namespace,
            model,
            leases,
            watchers,
            rates,
            intake_cancel,
        );
        if let Err(e) = read.await {
            tracing::error!(error = %e, "the view stopped reading NATS");
        }
    });
    let serve_cancel = cancel.clone();
    let app = server::router(shared);
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { serve_cancel.cancelled().await });
        tokio::select! {
            result = server => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "the view's server stopped");
                }
            }
            _ = &mut intake => {}
        }
        intake.abort();
    });
    tracing::info!(%addr, "view listening");
    Ok(View {
        addr,
        token: config.token,
        task,
        cancel,
    })
}
