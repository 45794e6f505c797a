//! `panoptes replay`: a time range of retained frames (`retain:`, stream `<ns>-retain`) run
//! through the topology's stages, or through them with one operator or model stage replaced,
//! as fast as the stages take them, then compared frame by frame with the detections stored
//! for them.
//!
//! The replay runs the same stage graph in a worker of its own, in a namespace of its own
//! (`<ns>-replay-<pid>-<n>`): nothing is published on the live subjects, and live workers
//! never see a replayed frame. Each camera has one frame in flight (a live worker keeps only a
//! camera's newest frame, and stateful stages need order), cameras run side by side.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use panoptes_contracts::detection::DetectionMessage;
use panoptes_contracts::{Event, PartitionSet, Subjects, headers};
use panoptes_pipeline::lease::Ownership;
use panoptes_pipeline::worker::{Delivery, Worker};
use panoptes_replay::compare::{ByFrame, Comparison, DEFAULT_IOU};
use panoptes_replay::read::{Range, Retained};
use panoptes_topology::{StageConfig, TopologyFile};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::nats_args::NatsArgs;

/// A frame whose stages give no result in this long counts as without result.
const FRAME_PATIENCE: Duration = Duration::from_secs(20);
/// After the last frame, how long late results (other branches) may still come.
const DRAIN: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The topology whose retained frames (its `retain:` section) are replayed through its
    /// stages.
    #[arg(env = "PANOPTES_TOPOLOGY")]
    pub topology: PathBuf,
    /// NATS server (default: the topology's `nats.url`) and how to connect.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The frames stored in this last stretch of time, e.g. `10m`, `2h`, `90s`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub last: Option<Duration>,
    /// The frames stored from this time on (RFC 3339, e.g. `2026-12-06T21:30:00Z`).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// … until this time (default: now).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only these cameras, comma-separated (default: all).
    #[arg(long, value_name = "ID,ID", value_delimiter = ',')]
    pub cameras: Option<Vec<String>>,
    /// Replace this stage for the replay: an operator stage's module and/or config, or a
    /// model stage's model.
    #[arg(long, value_name = "ID")]
    pub stage: Option<String>,
    /// The candidate module for an operator `--stage`.
    #[arg(long, value_name = "FILE", requires = "stage")]
    pub wasm: Option<PathBuf>,
    /// The candidate config for an operator `--stage`, JSON (replaces the stage's `config`).
    #[arg(long, value_name = "JSON", requires = "stage")]
    pub config: Option<String>,
    /// The candidate model for a model `--stage`: a name from the topology's `models`.
    #[arg(long, value_name = "NAME", requires = "stage", conflicts_with_all = ["wasm", "config"])]
    pub model: Option<String>,
    /// Writes the comparison with every differing frame as JSON here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The overlap two boxes need to count as the same object.
    #[arg(long, default_value_t = DEFAULT_IOU, value_name = "IOU")]
    pub iou: f32,
}

/// What replaces a stage in a replay.
#[derive(Clone, Debug, Default)]
pub struct Candidate {
    /// An operator stage's new module.
    pub wasm: Option<PathBuf>,
    /// An operator stage's new `config`.
    pub config: Option<serde_json::Value>,
    /// A model stage's new model (a name from the topology's `models`).
    pub model: Option<String>,
}

/// The topology the replay runs: the stages (with the candidate in place), in a namespace of
/// its own, without cameras, outputs, recording, retention, control or shadow candidates.
pub fn replay_topology(
    topology: &TopologyFile,
    namespace: &str,
    stage: Option<&str>,
    candidate: Candidate,
) -> anyhow::Result<TopologyFile> {
    let mut t = topology.clone();
    t.namespace = namespace.to_owned();
    t.delivery = panoptes_topology::Delivery::Live;
    t.cameras.clear();
    t.outputs.clear();
    t.record = None;
    t.retain = None;
    t.control.enabled = false;
    for s in &mut t.stages {
        match s {
            StageConfig::Operator(op) => op.shadow = None,
            StageConfig::Model(m) => m.shadow = None,
            _ => {}
        }
    }
    let Some(id) = stage else {
        return Ok(t);
    };
    let known_model = |name: &str| t.models.contains_key(name);
    if let Some(model) = &candidate.model
        && !known_model(model)
    {
        bail!("--model {model:?} is not in the topology's `models`");
    }
    let Some(found) = t.stages.iter_mut().find(|s| s.id() == id) else {
        bail!("the topology has no stage {id:?}");
    };
    let Candidate {
        wasm,
        config,
        model,
    } = candidate;
    match found {
        StageConfig::Model(m) => {
            if wasm.is_some() || config.is_some() {
                bail!("stage {id:?} is a model stage: give --model, not --wasm or --config");
            }
            if let Some(model) = model {
                m.model = model;
            }
        }
        StageConfig::Operator(_) if model.is_some() => {
            bail!("stage {id:?} is an operator stage: give --wasm or --config, not --model");
        }
        StageConfig::Operator(op) => {
            if let Some(wasm) = wasm {
                let wasm = std::path::absolute(&wasm)
                    .with_context(|| format!("cannot resolve {}", wasm.display()))?;
                op.wasm = wasm;
                // The candidate is another module: the stage's pinned digest and signer are the
                // live module's.
                op.digest = None;
                op.signed_by = None;
            }
            if let Some(config) = config {
                op.config = config;
            }
        }
        other => bail!(
            "stage {id:?} is a {} stage: only operator and model stages can be replaced",
            other.kind()
        ),
    }
    Ok(t)
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let report_path = args.report.clone();
    let comparison = replay(args).await?;
    println!("{comparison}");
    if let Some(path) = report_path {
        let json = serde_json::to_vec_pretty(&comparison)?;
        std::fs::write(&path, json)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        println!("  report: {}", path.display());
    }
    Ok(())
}

/// Runs the replay and compares; prints nothing.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<Comparison> {
    let mut topology =
        TopologyFile::load(&args.topology).map_err(|d| anyhow::anyhow!("{}", d.render(false)))?;
    topology.nats = args.nats.settings(Some(&topology.nats));
    let range = Range::new(args.from.as_deref(), args.to.as_deref(), args.last)?;
    let config = args
        .config
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .context("--config is not JSON")?;
    let url = topology
        .nats
        .url
        .clone()
        .context("give --nats or set nats.url: replay reads the server that kept the frames")?;
    let client = crate::connect_with(&url, &topology.nats, &topology.base_dir).await?;
    let candidate = Candidate {
        wasm: args.wasm,
        config,
        model: args.model,
    };
    replay_with(
        &client,
        &topology,
        range,
        args.cameras.as_deref(),
        args.stage.as_deref(),
        candidate,
        args.iou,
    )
    .await
}

static REPLAYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`replay`] on a connected client.
pub async fn replay_with(
    client: &async_nats::Client,
    topology: &TopologyFile,
    range: Range,
    cameras: Option<&[String]>,
    stage: Option<&str>,
    candidate: Candidate,
    iou: f32,
) -> anyhow::Result<Comparison> {
    let live = topology.namespace.clone();
    let js = async_nats::jetstream::new(client.clone());
    let stream = panoptes_replay::retain::open(&js, &live).await?;

    let n = REPLAYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let namespace = format!("{live}-replay-{}-{n}", std::process::id());
    let replay = replay_topology(topology, &namespace, stage, candidate)?;
    let (built, unit) = {
        let replay = replay.clone();
        tokio::task::spawn_blocking(move || crate::registry::build_part(&replay, None)).await??
    };
    let subjects = Subjects::new(namespace.clone());
    // Results and frame faults of the replay, subscribed before any frame goes out.
    let mut results = client.subscribe(subjects.all_detections()).await?;
    let mut events = client.subscribe(subjects.all_events()).await?;
    client.flush().await?;
    let all = PartitionSet::all(replay.partitions)?;
    let worker = Worker::with_graph(client.clone(), subjects.clone(), built.graph)
        .with_ownership(Arc::new(Ownership::fixed(&all)))
        .with_delivery(Delivery::Live)
        .with_input(unit.input, unit.name);
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(worker.run(cancel.clone()));

    // Collects what the replay produced; tells the feeder which frames are done.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, u64)>();
    let collected: Arc<std::sync::Mutex<ByFrame>> = Arc::default();
    let collector = {
        let collected = collected.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(m) = results.next() => {
                        if let Ok(d) = serde_json::from_slice::<DetectionMessage>(&m.payload) {
                            let key = (d.camera.clone(), d.seq);
                            collected.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
                                .entry(key.clone()).or_default().push(d);
                            let _ = done_tx.send(key);
                        }
                    }
                    Some(m) = events.next() => {
                        if let Ok(e) = serde_json::from_slice::<Event>(&m.payload)
                            && let Some(seq) = e.seq
                        {
                            let _ = done_tx.send((e.camera, seq));
                        }
                    }
                    else => break,
                }
            }
        })
    };

    let mut frames = Retained::open(&stream, &live, range, cameras).await?;
    let mut in_flight: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut replayed: Vec<(String, u64)> = Vec::new();
    let mut latencies: Vec<f64> = Vec::new();
    let started = Instant::now();
    let mut finish = |key: (String, u64), in_flight: &mut HashMap<String, (u64, Instant)>| {
        if let Some((seq, at)) = in_flight.get(&key.0)
            && *seq == key.1
        {
            latencies.push(at.elapsed().as_secs_f64() * 1e3);
            in_flight.remove(&key.0);
        }
    };
    while let Some(frame) = frames.next_frame().await? {
        // One frame per camera in flight: wait for this camera's previous one.
        while let Some((_, at)) = in_flight.get(&frame.camera) {
            let wait = FRAME_PATIENCE.saturating_sub(at.elapsed());
            match tokio::time::timeout(wait, done_rx.recv()).await {
                Ok(Some(key)) => finish(key, &mut in_flight),
                Ok(None) => bail!("the replay's result reader ended"),
                Err(_) => {
                    tracing::warn!(camera = %frame.camera, "a replayed frame gave no result in time");
                    in_flight.remove(&frame.camera);
                }
            }
        }
        let mut map = async_nats::HeaderMap::new();
        let (seq, ts) = (frame.seq.to_string(), frame.capture_ts_ns.to_string());
        map.insert(headers::CAMERA, frame.camera.as_str());
        map.insert(headers::SEQ, seq.as_str());
        map.insert(headers::CAPTURE_TS_NS, ts.as_str());
        map.insert(headers::SCHEMA, panoptes_contracts::frame::FRAME_SCHEMA);
        let subject = format!("{namespace}.frames.{}", frame.camera);
        client
            .publish_with_headers(subject, map, frame.payload)
            .await
            .context("cannot hand a frame to the replay")?;
        in_flight.insert(frame.camera.clone(), (frame.seq, Instant::now()));
        replayed.push((frame.camera, frame.seq));
    }
    // The last frames of each camera.
    let deadline = tokio::time::Instant::now() + FRAME_PATIENCE;
    while !in_flight.is_empty() {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(key)) => finish(key, &mut in_flight),
            _ => break,
        }
    }
    let elapsed = started.elapsed();
    let stored = frames.detections().await?;
    tokio::time::sleep(DRAIN).await;
    cancel.cancel();
    match worker.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the replay's worker stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the replay's worker failed"),
    }
    collector.abort();
    let after = std::mem::take(
        &mut *collected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mut comparison = Comparison::of(&replayed, &stored, &after, iou);
    comparison.frames_per_s = replayed.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    latencies.sort_by(f64::total_cmp);
    comparison.ms_per_frame_p50 = latencies.get(latencies.len() / 2).copied();
    Ok(comparison)
}
