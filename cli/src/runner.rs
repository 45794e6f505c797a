//! `panoptes run`: everything a topology declares, in one process tree — a local nats-server
//! when no NATS URL is configured, one ingest node per camera, and a stage worker.

use anyhow::Context as _;
use panoptes_pipeline::Subjects;
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_topology::TopologyFile;
use panoptes_pipeline::worker::{StatsSnapshot, Worker, WorkerStats};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::ingest_node::IngestNode;

/// A topology running in this process. Stop it with [`Running::stop`].
pub struct Running {
    pub nats_url: String,
    pub subjects: Subjects,
    pub client: async_nats::Client,
    worker: tokio::task::JoinHandle<Result<StatsSnapshot, panoptes_pipeline::worker::WorkerError>>,
    worker_stats: Arc<WorkerStats>,
    ingest: Vec<IngestNode>,
    cancel: CancellationToken,
    server: Option<NatsServer>,
}

/// What a finished run did.
#[derive(Debug)]
pub struct Summary {
    pub worker: StatsSnapshot,
    pub published: u64,
}

impl Running {
    /// Starts the topology. `nats_url` overrides the topology's; with neither, a local
    /// nats-server is started and stopped with the run.
    pub async fn start(topology: &TopologyFile, nats_url: Option<&str>) -> anyhow::Result<Self> {
        let url = nats_url
            .map(str::to_owned)
            .or_else(|| topology.nats.url.clone());
        let (server, url) = match url {
            Some(url) => (None, url),
            None => {
                let server =
                    tokio::task::spawn_blocking(
                        || NatsServer::start(&NatsServerOptions::default()),
                    )
                    .await?
                    .context("cannot start the embedded nats-server")?;
                let url = server.url().to_owned();
                (Some(server), url)
            }
        };
        let client = crate::connect(&url).await?;
        let subjects = Subjects::new(topology.namespace.clone());

        let stages = {
            let topology = topology.clone();
            tokio::task::spawn_blocking(move || crate::registry::build_stages(&topology)).await??
        };
        let worker = Worker::new(client.clone(), subjects.clone(), stages);
        let worker_stats = worker.stats();
        let cancel = CancellationToken::new();
        let worker = tokio::spawn(worker.run(cancel.clone()));

        let mut ingest = Vec::new();
        for cam in &topology.cameras {
            ingest.push(IngestNode::start(cam, client.clone(), subjects.clone())?);
        }
        tracing::info!(nats = %url, cameras = ingest.len(), stages = topology.stages.len(), "topology running");
        Ok(Self {
            nats_url: url,
            subjects,
            client,
            worker,
            worker_stats,
            ingest,
            cancel,
            server,
        })
    }

    pub fn worker_stats(&self) -> StatsSnapshot {
        self.worker_stats.snapshot()
    }

    /// Stops ingest first (no new frames), then the worker, then the embedded server.
    pub async fn stop(self) -> anyhow::Result<Summary> {
        let mut published = 0;
        for node in self.ingest {
            published += node
                .stats()
                .published
                .load(std::sync::atomic::Ordering::Relaxed);
            node.stop().await;
        }
        self.cancel.cancel();
        let worker = self.worker.await?.context("worker failed")?;
        let _ = self.client.flush().await;
        drop(self.client);
        if let Some(server) = self.server {
            tokio::task::spawn_blocking(move || server.stop()).await?;
        }
        Ok(Summary { worker, published })
    }
}
