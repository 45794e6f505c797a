//! Running a topology in this process, whole or as one unit of a distributed deployment: a
//! [`Role`] says whether that is everything (`panoptes run`: ingest nodes, a stage worker and,
//! without a NATS URL, a local nats-server), only the worker, or only some ingest nodes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use panoptes_contracts::{BatchStats, PartitionSet, Subjects};
use panoptes_pipeline::durable::DurableConfig;
use panoptes_pipeline::lease::{LeaseConfig, LeaseManager, Ownership};
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_pipeline::worker::{Delivery, StatsSnapshot, Worker, WorkerError, WorkerStats};
use panoptes_topology::{CameraConfig, TopologyFile};
use tokio_util::sync::CancellationToken;

use panoptes_ingest::cameras::CameraSet;

/// Which part of a topology this process runs.
#[derive(Clone, Debug)]
pub enum Role {
    /// Everything the topology declares; starts a local nats-server when no URL is configured.
    All,
    /// Only the stage worker: the stages in `stages` (`None`: all of them), for the cameras of
    /// `partitions` (`None`: the partitions it leases, shared with the unit's other workers).
    Worker {
        partitions: Option<PartitionSet>,
        stages: Option<Vec<String>>,
    },
    /// Only ingest nodes, for the cameras named (`None`: every camera of the topology).
    Ingest { cameras: Option<Vec<String>> },
    /// Only outputs (webhooks, MQTT), those named (`None`: every output of the topology).
    Sink { outputs: Option<Vec<String>> },
    /// Only the recorder (clips and snapshots of events, `record:`), for the cameras it
    /// leases, shared with the deployment's other recorders.
    Record,
}

impl Role {
    fn runs_worker(&self) -> bool {
        matches!(self, Role::All | Role::Worker { .. })
    }

    fn runs_ingest(&self) -> bool {
        matches!(self, Role::All | Role::Ingest { .. })
    }

    fn runs_outputs(&self) -> bool {
        matches!(self, Role::All | Role::Sink { .. })
    }

    fn runs_recorder(&self) -> bool {
        matches!(self, Role::All | Role::Record)
    }

    /// What joins a NATS server, as the missing-URL error names it.
    fn joiner(&self) -> Option<&'static str> {
        match self {
            Role::All => None,
            Role::Worker { .. } => Some("a worker"),
            Role::Ingest { .. } => Some("an ingest node"),
            Role::Sink { .. } => Some("a sink"),
            Role::Record => Some("a recorder"),
        }
    }
}

/// A topology (or part of one) running in this process. Stop it with [`Running::stop`].
pub struct Running {
    pub nats_url: String,
    /// Cancelled when the worker stopped on its own because of an error.
    pub failed: CancellationToken,
    pub subjects: Subjects,
    pub client: async_nats::Client,
    worker: Option<RunningWorker>,
    /// The cameras this process ingests, changed at runtime through the camera control
    /// subjects; `None` for a worker-only process.
    cameras: Option<RunningCameras>,
    /// The outputs this process runs (webhooks, MQTT); `None` when it runs none.
    outputs: Option<panoptes_outputs::Outputs>,
    /// The recorder (clips of events); `None` when this process records nothing.
    recorder: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
    /// Background tasks readiness watches (partition leases, the recorder).
    tasks: Vec<(&'static str, crate::health::Alive)>,
    server: Option<NatsServer>,
}

/// Messages a recorder's subscriptions buffer: every frame of its cameras must reach it (a
/// missing frame is a gap in a clip), while a frame worker's hold 64 and keep the newest.
const RECORDER_SUBSCRIPTION_CAPACITY: usize = 1024;

/// How long a stop leaves live outputs to deliver what their queues hold.
const OUTPUT_DRAIN: Duration = Duration::from_secs(3);

struct RunningWorker {
    task: tokio::task::JoinHandle<Result<StatsSnapshot, WorkerError>>,
    /// Renews the partition leases; cancelled first at stop, so partitions are handed back
    /// while the worker still finishes the frames it holds.
    leases: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
    stats: Arc<WorkerStats>,
    cancel: CancellationToken,
    /// The operator reload subject's server; `None` when the topology leaves control off.
    control: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    control_cancel: CancellationToken,
    batch_stats: Vec<(String, Arc<BatchStats>)>,
}

struct RunningCameras {
    set: Arc<CameraSet>,
    control: tokio::task::JoinHandle<()>,
    control_cancel: CancellationToken,
}

/// The inference calls of one model stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageBatches {
    pub stage: String,
    pub calls: u64,
    /// Rows (frames, or crops in a cascade) over all calls.
    pub rows: u64,
    /// `(rows in a call, calls)` for every size seen.
    pub sizes: Vec<(usize, u64)>,
}

/// What a finished run did.
#[derive(Debug)]
pub struct Summary {
    /// All zero when this process ran no worker.
    pub worker: StatsSnapshot,
    /// Frames the ingest nodes published.
    pub published: u64,
    /// Frames the ingest nodes dropped because NATS could not keep up.
    pub ingest_dropped: u64,
    /// Frames NATS refused (e.g. over the server's max_payload).
    pub ingest_failed: u64,
    /// Per model stage of the worker.
    pub batches: Vec<StageBatches>,
}

impl Running {
    /// Starts `role` of the topology. `nats_url` overrides the topology's; with neither,
    /// [`Role::All`] starts a local nats-server that stops with the run, and the other roles
    /// fail: they are meant to join the server the rest of the deployment uses.
    pub async fn start(
        topology: &TopologyFile,
        nats_url: Option<&str>,
        role: Role,
    ) -> anyhow::Result<Self> {
        let cameras = cameras_of(topology, &role)?;
        let scope = crate::validate::Scope {
            cameras: role.runs_ingest(),
            stages: role.runs_worker(),
            only_stages: match &role {
                Role::Worker {
                    stages: Some(stages),
                    ..
                } => Some(stages.as_slice()),
                _ => None,
            },
        };
        let refused = crate::validate::unsupported(topology, scope);
        if !refused.is_empty() {
            return Err(anyhow::Error::new(topology.diagnostics(refused)));
        }
        let url = nats_url
            .map(str::to_owned)
            .or_else(|| topology.nats.url.clone());
        let (server, url) = match (url, role.joiner()) {
            (Some(url), _) => (None, url),
            (None, Some(joiner)) => {
                bail!("{joiner} joins an existing NATS server: give --nats or set nats.url")
            }
            (None, None) => {
                // The server partitions frames itself, as docs/nats.md asks of users' servers.
                let options = NatsServerOptions {
                    partition_mapping: Some((topology.namespace.clone(), topology.partitions)),
                    ..NatsServerOptions::default()
                };
                let server = tokio::task::spawn_blocking(move || NatsServer::start(&options))
                    .await?
                    .context("cannot start the embedded nats-server")?;
                let url = server.url().to_owned();
                (Some(server), url)
            }
        };
        // The topology's credentials and TLS belong to its server, not to the embedded one.
        let client = match &server {
            Some(_) => crate::connect(&url).await?,
            // A worker or ingest node may start before the server it joins: wait for it.
            None if role.joiner().is_some() => {
                crate::connect::connect_retrying(&url, &topology.nats, &topology.base_dir).await?
            }
            None => crate::connect_with(&url, &topology.nats, &topology.base_dir).await?,
        };
        let subjects = Subjects::new(topology.namespace.clone());
        let guard = panoptes_client::control::ControlGuard::from_topology(topology)?;

        // Outputs first: they subscribe before anything publishes, so they miss nothing.
        let outputs = if role.runs_outputs() && !topology.outputs.is_empty() {
            let only = match &role {
                Role::Sink { outputs } => outputs.as_deref(),
                _ => None,
            };
            let config = panoptes_outputs::OutputsConfig {
                durable: topology.delivery == panoptes_topology::Delivery::Durable,
                ..Default::default()
            };
            // Live outputs read core NATS: their subscriptions must absorb a burst as large as
            // their queues, or the client drops events before the output sees them. The frame
            // client's subscriptions hold 64; the outputs get a client of their own.
            let live_queue = topology
                .outputs
                .iter()
                .filter(|o| only.is_none_or(|only| only.iter().any(|id| id == o.id())))
                .map(|o| o.queue())
                .max()
                .unwrap_or(0);
            let outputs_client =
                if config.durable || live_queue <= crate::connect::FRAME_SUBSCRIPTION_CAPACITY {
                    client.clone()
                } else {
                    let nats = match &server {
                        Some(_) => panoptes_topology::NatsConfig::default(),
                        None => topology.nats.clone(),
                    };
                    crate::connect::connect_buffered(&url, &nats, &topology.base_dir, live_queue)
                        .await?
                };
            Some(
                panoptes_outputs::Outputs::start(
                    &outputs_client,
                    &subjects,
                    &topology.outputs,
                    only,
                    &config,
                )
                .await?,
            )
        } else {
            None
        };
        if matches!(role, Role::Sink { .. }) && outputs.is_none() {
            bail!("the topology declares no outputs");
        }

        let mut tasks = Vec::new();
        // The recorder next, for the same reason: its pre-roll starts with the first frame.
        let recorder = match panoptes_recorder::RecorderConfig::from_topology(topology) {
            Some(config) if role.runs_recorder() => {
                let nats = match &server {
                    Some(_) => panoptes_topology::NatsConfig::default(),
                    None => topology.nats.clone(),
                };
                let recorder_client = crate::connect::connect_buffered(
                    &url,
                    &nats,
                    &topology.base_dir,
                    RECORDER_SUBSCRIPTION_CAPACITY,
                )
                .await?;
                let cancel = CancellationToken::new();
                let stop = cancel.clone();
                let (alive, guard) = crate::health::Alive::pair();
                tasks.push(("recorder", alive));
                let task = tokio::spawn(async move {
                    let _running = guard;
                    if let Err(e) = panoptes_recorder::run(recorder_client, config, stop).await {
                        tracing::error!(error = %e, "the recorder stopped");
                    }
                });
                Some((task, cancel))
            }
            _ => None,
        };
        if matches!(role, Role::Record) && recorder.is_none() {
            bail!("the topology records nothing: add `record:` with rules or continuous recording");
        }

        let failed = CancellationToken::new();
        let worker = if role.runs_worker() {
            let only = match &role {
                Role::Worker {
                    stages: Some(stages),
                    ..
                } => Some(stages.clone()),
                _ => None,
            };
            let (built, unit) = {
                let topology = topology.clone();
                tokio::task::spawn_blocking(move || {
                    crate::registry::build_part(&topology, only.as_deref())
                })
                .await??
            };
            let control_cancel = CancellationToken::new();
            let control = match &guard {
                Some(guard) => {
                    // Subscribed before `start` returns, so a reload sent right after start is heard.
                    let control_sub = crate::operator_reload::subscribe(&client, &subjects).await?;
                    Some(tokio::spawn(crate::operator_reload::serve(
                        client.clone(),
                        control_sub,
                        built.operators,
                        built.candidates,
                        guard.clone(),
                        control_cancel.clone(),
                    )))
                }
                None => None,
            };
            let delivery = match topology.delivery {
                panoptes_topology::Delivery::Live => Delivery::Live,
                panoptes_topology::Delivery::Durable => Delivery::Durable(DurableConfig {
                    ack_wait: Duration::from_millis(topology.workers.ack_wait_ms),
                    max_bytes: i64::try_from(
                        topology.workers.stream_max_mib.saturating_mul(1 << 20),
                    )
                    .unwrap_or(i64::MAX),
                    ..DurableConfig::default()
                }),
            };
            let (ownership, leases) = match &role {
                Role::Worker {
                    partitions: Some(partitions),
                    ..
                } => (Arc::new(Ownership::fixed(partitions)), None),
                _ => {
                    let ownership = Arc::new(Ownership::leased(topology.partitions));
                    let config = LeaseConfig {
                        ttl: Duration::from_millis(topology.workers.lease_ttl_ms),
                    };
                    match LeaseManager::open(
                        &client,
                        &topology.namespace,
                        &unit.name,
                        config,
                        ownership.clone(),
                    )
                    .await
                    {
                        Ok(manager) => {
                            tracing::info!(worker = manager.worker(), unit = %unit.name, "leasing partitions");
                            let cancel = CancellationToken::new();
                            let (alive, guard) = crate::health::Alive::pair();
                            tasks.push(("leases", alive));
                            let run = manager.run(cancel.clone());
                            let task = tokio::spawn(async move {
                                let _running = guard;
                                run.await;
                            });
                            (ownership, Some((task, cancel)))
                        }
                        // `panoptes run` alone on a server without JetStream still works: it
                        // is the only worker, so it serves everything.
                        Err(e)
                            if matches!(role, Role::All)
                                && topology.delivery == panoptes_topology::Delivery::Live =>
                        {
                            tracing::warn!(error = %e, "no leases; this process serves every partition");
                            let all = PartitionSet::all(topology.partitions)?;
                            (Arc::new(Ownership::fixed(&all)), None)
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let worker = Worker::with_graph(client.clone(), subjects.clone(), built.graph)
                .with_ownership(ownership)
                .with_delivery(delivery)
                .with_input(unit.input, unit.name)
                .with_limits(panoptes_pipeline::camera_state::CameraLimits {
                    max_cameras: topology.workers.max_cameras,
                    idle_ttl: Duration::from_millis(topology.workers.camera_idle_ttl_ms),
                });
            let stats = worker.stats();
            let cancel = CancellationToken::new();
            // A worker that fails (e.g. JetStream refuses its streams) says so at once and ends
            // the process, instead of leaving it running without serving anything.
            let task = {
                let (cancel, failed) = (cancel.clone(), failed.clone());
                tokio::spawn(async move {
                    let result = worker.run(cancel).await;
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "the worker stopped");
                        failed.cancel();
                    }
                    result
                })
            };
            Some(RunningWorker {
                task,
                leases,
                stats,
                cancel,
                control,
                control_cancel,
                batch_stats: built.batch_stats,
            })
        } else {
            None
        };

        // Retention before the cameras start, so their first frames are kept.
        if let Some(retain) = &topology.retain
            && role.runs_ingest()
        {
            if topology.delivery == panoptes_topology::Delivery::Durable {
                bail!(
                    "retain: keeps frames in stream {}, but `delivery: durable` keeps them in its own and JetStream gives a subject to one stream only; retention works with `delivery: live`",
                    panoptes_replay::retain::stream_name(&topology.namespace)
                );
            }
            let js = async_nats::jetstream::new(client.clone());
            panoptes_replay::retain::ensure(&js, &topology.namespace, retain).await?;
        }

        let cameras = if role.runs_ingest() {
            let selected = match &role {
                Role::Ingest { cameras } => cameras.clone(),
                _ => None,
            };
            let set = Arc::new(CameraSet::new(
                client.clone(),
                subjects.clone(),
                topology.base_dir.clone(),
                selected,
            ));
            for cam in cameras {
                set.add(cam).await?;
            }
            let subs = match &guard {
                Some(_) => panoptes_ingest::cameras::subscribe(&client, &subjects).await?,
                None => Vec::new(),
            };
            let control_cancel = CancellationToken::new();
            let control = tokio::spawn(panoptes_ingest::cameras::serve(
                set.clone(),
                subs,
                guard.clone(),
                control_cancel.clone(),
            ));
            Some(RunningCameras {
                set,
                control,
                control_cancel,
            })
        } else {
            None
        };
        let camera_count = match &cameras {
            Some(c) => c.set.len().await,
            None => 0,
        };
        tracing::info!(nats = %url, ?role, cameras = camera_count, stages = topology.stages.len(), "topology running");
        let running = Self {
            failed,
            nats_url: url,
            subjects,
            client,
            worker,
            cameras,
            outputs,
            recorder,
            tasks,
            server,
        };
        crate::health::global().started(running.probe());
        Ok(running)
    }

    /// What `/readyz` watches in this process: its NATS connection, the worker and the
    /// background tasks it started.
    pub fn probe(&self) -> crate::health::Probe {
        let probe = self.tasks.iter().fold(
            crate::health::Probe::new(self.client.clone()),
            |probe, (name, alive)| probe.with_task(name, alive.clone()),
        );
        match &self.worker {
            Some(_) => probe.failing_with(self.failed.clone()),
            None => probe,
        }
    }

    /// Whether this process records clips.
    pub fn records(&self) -> bool {
        self.recorder.is_some()
    }

    /// How many outputs this process runs.
    pub fn outputs(&self) -> usize {
        self.outputs
            .as_ref()
            .map_or(0, panoptes_outputs::Outputs::len)
    }

    /// Makes `reload` (camera control subject, SIGHUP) re-read the topology at `path`.
    pub fn reload_from(&self, path: &std::path::Path) {
        if let Some(c) = &self.cameras {
            c.set.reload_from(path.to_path_buf(), camera_refusals);
        }
    }

    /// The worker's counters so far (all zero when this process runs no worker).
    pub fn worker_stats(&self) -> StatsSnapshot {
        self.worker
            .as_ref()
            .map(|w| w.stats.snapshot())
            .unwrap_or_default()
    }

    /// Stops ingest first (no new frames), then the worker, then the embedded server.
    pub async fn stop(self) -> anyhow::Result<Summary> {
        crate::health::global().stopping();
        let (mut published, mut ingest_dropped, mut ingest_failed) = (0, 0, 0);
        if let Some(cameras) = self.cameras {
            // No camera may be added while the others stop.
            cameras.control_cancel.cancel();
            let _ = cameras.control.await;
            // Stopping publishes what was queued, so the counters are read after it.
            for stats in cameras.set.stop_all().await {
                published += stats.published.load(Ordering::Relaxed);
                ingest_dropped += stats.dropped.load(Ordering::Relaxed);
                ingest_failed += stats.failed.load(Ordering::Relaxed);
            }
        }
        let mut batches = Vec::new();
        let worker = match self.worker {
            Some(w) => {
                for (stage, stats) in &w.batch_stats {
                    let b = StageBatches {
                        stage: stage.clone(),
                        calls: stats.batches.load(Ordering::Relaxed),
                        rows: stats.items.load(Ordering::Relaxed),
                        sizes: stats.histogram(),
                    };
                    tracing::info!(stage, calls = b.calls, rows = b.rows, mean = %format!("{:.2}", stats.mean_size()), sizes = ?b.sizes, "model stage batches");
                    batches.push(b);
                }
                if let Some((task, cancel)) = w.leases {
                    cancel.cancel();
                    let _ = task.await;
                }
                w.control_cancel.cancel();
                if let Some(control) = w.control
                    && let Err(e) = control.await?
                {
                    tracing::warn!(error = %format!("{e:#}"), "the control subscription failed");
                }
                w.cancel.cancel();
                w.task.await?.context("worker failed")?
            }
            None => StatsSnapshot::default(),
        };
        // After the worker, open clips are stored with the frames and detections that came;
        // before the outputs, so their announcements (`clips/v1`) are still delivered.
        if let Some((task, cancel)) = self.recorder {
            cancel.cancel();
            let _ = task.await;
        }
        // After the worker and the recorder: their last messages still reach the outputs.
        if let Some(outputs) = self.outputs {
            outputs.stop(OUTPUT_DRAIN).await;
        }
        let _ = self.client.flush().await;
        drop(self.client);
        if let Some(server) = self.server {
            tokio::task::spawn_blocking(move || server.stop()).await?;
        }
        Ok(Summary {
            worker,
            published,
            ingest_dropped,
            ingest_failed,
            batches,
        })
    }
}

/// The cameras `role` ingests, in topology order; unknown names are an error.
fn cameras_of<'a>(
    topology: &'a TopologyFile,
    role: &Role,
) -> anyhow::Result<Vec<&'a CameraConfig>> {
    match role {
        Role::All => Ok(topology.cameras.iter().collect()),
        Role::Worker { .. } | Role::Sink { .. } | Role::Record => Ok(Vec::new()),
        Role::Ingest { cameras: None } => {
            if topology.cameras.is_empty() {
                bail!("the topology has no cameras to ingest");
            }
            Ok(topology.cameras.iter().collect())
        }
        Role::Ingest {
            cameras: Some(wanted),
        } => {
            let known = || {
                topology
                    .cameras
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if wanted.is_empty() {
                bail!("no cameras selected (the topology has: {})", known());
            }
            for id in wanted {
                if !topology.cameras.iter().any(|c| &c.id == id) {
                    bail!("the topology has no camera {id:?} (it has: {})", known());
                }
            }
            Ok(topology
                .cameras
                .iter()
                .filter(|c| wanted.contains(&c.id))
                .collect())
        }
    }
}

/// What a reloaded topology's cameras must pass: what `start` refuses of cameras.
fn camera_refusals(topology: &TopologyFile) -> Vec<panoptes_topology::Diagnostic> {
    crate::validate::unsupported(
        topology,
        crate::validate::Scope {
            cameras: true,
            stages: false,
            only_stages: None,
        },
    )
}
