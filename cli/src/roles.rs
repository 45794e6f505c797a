//! `panoptes worker`, `panoptes ingest` and `panoptes sink`: one part of a topology each, the units a distributed
//! deployment runs on many machines around one NATS server. Also how these and `panoptes run`
//! stop: on SIGINT or SIGTERM, within a deadline, and at once on a second signal.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use panoptes_contracts::PartitionSet;
use panoptes_topology::TopologyFile;

use crate::nats_args::NatsArgs;
use crate::runner::{Role, Running, Summary};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The topology whose stages this worker runs (its cameras are ignored).
    #[arg(env = "PANOPTES_TOPOLOGY")]
    pub topology: PathBuf,
    /// NATS server to join (default: the topology's `nats.url`) and how; flags win over the
    /// topology's `nats` section.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Serve only these partitions, e.g. `0-3,7` (default: all). A camera's partition is
    /// FNV-1a-32(camera ID) mod the topology's `partitions`, as in NATS's `partition()` mapping.
    /// Without it, the worker leases partitions in the NATS KV bucket `<namespace>-leases`,
    /// sharing them with the other workers of the same stages and taking over a dead one's.
    #[arg(long, env = "PANOPTES_PARTITIONS", value_name = "LIST")]
    pub partitions: Option<String>,
    /// Run only these stages, comma-separated (default: all). Stages run by one worker are
    /// fused (no NATS hop between them); a stage read by a stage of another worker publishes
    /// its items on `<namespace>.<stage>.<camera>`.
    #[arg(
        long,
        env = "PANOPTES_STAGES",
        value_name = "ID,ID",
        value_delimiter = ','
    )]
    pub stages: Option<Vec<String>>,
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// The topology whose cameras this process ingests (its stages are ignored).
    #[arg(env = "PANOPTES_TOPOLOGY")]
    pub topology: PathBuf,
    /// NATS server to join (default: the topology's `nats.url`) and how; flags win over the
    /// topology's `nats` section.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Only these cameras, comma-separated (default: every camera of the topology).
    #[arg(
        long,
        env = "PANOPTES_CAMERAS",
        value_name = "ID,ID",
        value_delimiter = ','
    )]
    pub cameras: Option<Vec<String>>,
}

#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// The topology whose outputs this process runs (its cameras and stages are ignored).
    #[arg(env = "PANOPTES_TOPOLOGY")]
    pub topology: PathBuf,
    /// NATS server to join (default: the topology's `nats.url`) and how; flags win over the
    /// topology's `nats` section.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Only these outputs, comma-separated (default: every output of the topology). Sinks of
    /// one output share its messages (a queue group, or its durable JetStream consumer).
    #[arg(
        long,
        env = "PANOPTES_OUTPUTS",
        value_name = "ID,ID",
        value_delimiter = ','
    )]
    pub outputs: Option<Vec<String>>,
}

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The topology whose `record:` section this process records (its stages are ignored).
    #[arg(env = "PANOPTES_TOPOLOGY")]
    pub topology: PathBuf,
    /// NATS server to join (default: the topology's `nats.url`) and how; flags win over the
    /// topology's `nats` section.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// A comma-separated ID list as given: trimmed, empty items left out.
fn id_list(ids: Vec<String>) -> Vec<String> {
    ids.into_iter()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect()
}

/// SIGINT (Ctrl-C) and SIGTERM, heard from the moment [`Signals::listen`] returns. Commands
/// listen once they have started, so a signal during start-up still ends the process at once;
/// from then on every signal is heard (the first stops, the second forces the exit).
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long a stop may take by default: enough to finish the frames in flight and hand leases
/// back; only a stop that waits on an unreachable NATS server comes near it.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a stop ended before [`Running::stop`] finished.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// A second SIGINT or SIGTERM came during the stop; `main` exits with status 130.
    #[error("interrupted again while stopping; stopped at once")]
    Interrupted,
    #[error(
        "the stop did not finish within {0:?} (is NATS reachable?); what was left of it was abandoned"
    )]
    TimedOut(Duration),
}

/// [`Running::stop`] (ingest, then the worker, then the embedded nats-server), given at most
/// `deadline` and ended early when `interrupt` completes. Flushes, lease hand-backs and the
/// worker's drain all wait on NATS, which may be gone; when the stop is cut short, what it
/// still held is dropped: an embedded nats-server not stopped yet is killed and its store
/// removed.
pub async fn stop_within(
    running: Running,
    deadline: Duration,
    interrupt: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let mut stop = Box::pin(running.stop());
    let outcome = tokio::select! {
        result = tokio::time::timeout(deadline, &mut stop) => {
            result.map_err(|_| StopError::TimedOut(deadline))
        }
        () = interrupt => Err(StopError::Interrupted),
    };
    drop(stop);
    outcome?
}

/// Runs the stage worker until SIGINT or SIGTERM, stops it within `stop_timeout`, then prints a
/// summary on stderr.
pub async fn worker(args: WorkerArgs, stop_timeout: Duration) -> anyhow::Result<()> {
    let mut topology = TopologyFile::load(&args.topology)?;
    topology.nats = args.nats.settings(Some(&topology.nats));
    let partitions = args
        .partitions
        .as_deref()
        .map(|spec| {
            PartitionSet::parse(spec, topology.partitions)
                .with_context(|| format!("invalid --partitions {spec:?}"))
        })
        .transpose()?;
    let serving = partitions.as_ref().map_or_else(
        || "leased partitions".to_owned(),
        |p| format!("partitions {p}"),
    );
    let stages = args.stages.map(id_list);
    let running = Running::start(
        &topology,
        args.nats.url.as_deref(),
        Role::Worker { partitions, stages },
    )
    .await?;
    // Listening before the banner: once it says how to stop, Ctrl-C stops.
    let mut signals = Signals::listen()?;
    eprintln!(
        "panoptes: worker for {} ({} stage(s), {serving}) on {}\n  stop: Ctrl-C",
        args.topology.display(),
        topology.stages.len(),
        running.nats_url
    );
    let failed = running.failed.clone();
    tokio::select! {
        () = signals.recv() => eprintln!("panoptes: stopping"),
        () = failed.cancelled() => eprintln!("panoptes: the worker failed; stopping"),
    }
    let w = stop_within(running, stop_timeout, signals.recv())
        .await?
        .worker;
    eprintln!(
        "panoptes: worker received {} frames, produced {} detection messages, dropped {} (live mode keeps the newest), failed {}, skipped {} (other partitions), handed back {} (partitions moved), lost {} (published while their partition had no live worker)",
        w.received, w.processed, w.dropped, w.failed, w.skipped, w.handed_back, w.lost
    );
    Ok(())
}

/// Runs the outputs until SIGINT or SIGTERM, then stops them within `stop_timeout` (live
/// outputs deliver what their queues hold first).
pub async fn sink(args: SinkArgs, stop_timeout: Duration) -> anyhow::Result<()> {
    let mut topology = TopologyFile::load(&args.topology)?;
    topology.nats = args.nats.settings(Some(&topology.nats));
    let outputs = args.outputs.map(id_list);
    let running =
        Running::start(&topology, args.nats.url.as_deref(), Role::Sink { outputs }).await?;
    // Listening before the banner: once it says how to stop, Ctrl-C stops.
    let mut signals = Signals::listen()?;
    eprintln!(
        "panoptes: sink running {} output(s) of {} on {}\n  status events: {}\n  stop: Ctrl-C",
        running.outputs(),
        args.topology.display(),
        running.nats_url,
        running.subjects.all_output_events(),
    );
    signals.recv().await;
    eprintln!("panoptes: stopping");
    stop_within(running, stop_timeout, signals.recv()).await?;
    Ok(())
}

/// Records clips of events until SIGINT or SIGTERM, then stores what is open within
/// `stop_timeout`.
pub async fn record(args: RecordArgs, stop_timeout: Duration) -> anyhow::Result<()> {
    let mut topology = TopologyFile::load(&args.topology)?;
    topology.nats = args.nats.settings(Some(&topology.nats));
    let running = Running::start(&topology, args.nats.url.as_deref(), Role::Record).await?;
    // Listening before the banner: once it says how to stop, Ctrl-C stops.
    let mut signals = Signals::listen()?;
    eprintln!(
        "panoptes: recording clips of {} on {}\n  stored clips: {}\n  stop: Ctrl-C",
        args.topology.display(),
        running.nats_url,
        running.subjects.all_clips(),
    );
    signals.recv().await;
    eprintln!("panoptes: stopping");
    stop_within(running, stop_timeout, signals.recv()).await?;
    Ok(())
}

/// Runs the ingest nodes until SIGINT or SIGTERM, stops them within `stop_timeout`, then prints
/// a summary on stderr.
pub async fn ingest(args: IngestArgs, stop_timeout: Duration) -> anyhow::Result<()> {
    let mut topology = TopologyFile::load(&args.topology)?;
    topology.nats = args.nats.settings(Some(&topology.nats));
    let cameras = args.cameras.map(id_list);
    let count = cameras.as_ref().map_or(topology.cameras.len(), Vec::len);
    let running = Running::start(
        &topology,
        args.nats.url.as_deref(),
        Role::Ingest { cameras },
    )
    .await?;
    running.reload_from(&args.topology);
    // Listening before the banner: once it says how to stop, Ctrl-C stops.
    let mut signals = Signals::listen()?;
    eprintln!(
        "panoptes: ingesting {count} camera(s) of {} on {}\n  stop: Ctrl-C",
        args.topology.display(),
        running.nats_url
    );
    signals.recv().await;
    eprintln!("panoptes: stopping");
    let summary = stop_within(running, stop_timeout, signals.recv()).await?;
    eprintln!(
        "panoptes: published {} frames from {count} camera(s), dropped {} (NATS could not keep up), failed {}",
        summary.published, summary.ingest_dropped, summary.ingest_failed
    );
    Ok(())
}
