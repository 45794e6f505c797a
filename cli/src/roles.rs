//! `panoptes worker` and `panoptes ingest`: one part of a topology each, the units a distributed
//! deployment runs on many machines around one NATS server.

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context as _;
use panoptes_pipeline::PartitionSet;
use panoptes_topology::TopologyFile;

use crate::runner::{Role, Running};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The topology whose stages this worker runs (its cameras are ignored).
    #[arg(env = "PANOPTES_TOPOLOGY")]
    pub topology: PathBuf,
    /// NATS server to join; default: the topology's `nats.url`.
    #[arg(long, env = "PANOPTES_NATS_URL")]
    pub nats: Option<String>,
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
    /// NATS server to join; default: the topology's `nats.url`.
    #[arg(long, env = "PANOPTES_NATS_URL")]
    pub nats: Option<String>,
    /// Only these cameras, comma-separated (default: every camera of the topology).
    #[arg(
        long,
        env = "PANOPTES_CAMERAS",
        value_name = "ID,ID",
        value_delimiter = ','
    )]
    pub cameras: Option<Vec<String>>,
}

/// A comma-separated ID list as given: trimmed, empty items left out.
fn id_list(ids: Vec<String>) -> Vec<String> {
    ids.into_iter()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect()
}

/// Runs the stage worker until `shutdown` completes, then prints a summary on stderr.
pub async fn worker(args: WorkerArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let topology = TopologyFile::load(&args.topology)?;
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
        args.nats.as_deref(),
        Role::Worker { partitions, stages },
    )
    .await?;
    eprintln!(
        "panoptes: worker for {} ({} stage(s), {serving}) on {}\n  stop: Ctrl-C",
        args.topology.display(),
        topology.stages.len(),
        running.nats_url
    );
    let failed = running.failed.clone();
    tokio::select! {
        () = shutdown => eprintln!("panoptes: stopping"),
        () = failed.cancelled() => eprintln!("panoptes: the worker failed; stopping"),
    }
    let w = running.stop().await?.worker;
    eprintln!(
        "panoptes: worker received {} frames, produced {} detection messages, dropped {} (live mode keeps the newest), failed {}, skipped {} (other partitions), handed back {} (partitions moved), lost {} (published while their partition had no live worker)",
        w.received, w.processed, w.dropped, w.failed, w.skipped, w.handed_back, w.lost
    );
    Ok(())
}

/// Runs the ingest nodes until `shutdown` completes, then prints a summary on stderr.
pub async fn ingest(args: IngestArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let topology = TopologyFile::load(&args.topology)?;
    let cameras = args.cameras.map(id_list);
    let count = cameras.as_ref().map_or(topology.cameras.len(), Vec::len);
    let running = Running::start(&topology, args.nats.as_deref(), Role::Ingest { cameras }).await?;
    running.reload_from(&args.topology);
    eprintln!(
        "panoptes: ingesting {count} camera(s) of {} on {}\n  stop: Ctrl-C",
        args.topology.display(),
        running.nats_url
    );
    shutdown.await;
    eprintln!("panoptes: stopping");
    let summary = running.stop().await?;
    eprintln!(
        "panoptes: published {} frames from {count} camera(s), dropped {} (NATS could not keep up), failed {}",
        summary.published, summary.ingest_dropped, summary.ingest_failed
    );
    Ok(())
}
