//! `panoptes`: run video-analytics topologies and watch their results.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use panoptes::nats_args::NatsArgs;
use panoptes::roles::{Signals, StopError};
use panoptes::runner::{Role, Running};
use panoptes::telemetry::{ServiceRole, metrics_address, trace_export};
use panoptes_client::{DetectionSubscriber, Received};
use panoptes_contracts::{CameraId, Subjects};
use panoptes_topology::{TelemetryConfig, TopologyFile};

#[derive(Parser)]
#[command(
    name = "panoptes",
    version,
    about = "Distributed video analytics on WebAssembly"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "PANOPTES_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Serve Prometheus metrics on http://ADDR/metrics, and health on /healthz (alive) and
    /// /readyz (started, connected to NATS) (run, worker, ingest, sink, record, view);
    /// default: the topology's `telemetry.metrics`. Each process needs its own address.
    #[arg(long, global = true, env = "PANOPTES_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
    /// More log lines on stderr: -v adds the libraries' info lines (NATS connection events),
    /// -vv debug, -vvv trace. `RUST_LOG`, when set, decides instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Seconds a stop (Ctrl-C, SIGTERM) of run, worker or ingest may take; then what is left
    /// (e.g. waiting on an unreachable NATS server) is abandoned and the exit status is 1. A
    /// second Ctrl-C stops at once (exit status 130).
    #[arg(
        long,
        global = true,
        env = "PANOPTES_STOP_TIMEOUT",
        value_name = "SECS",
        default_value_t = panoptes::roles::DEFAULT_STOP_TIMEOUT.as_secs()
    )]
    stop_timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Json,
    Table,
}

#[derive(Subcommand)]
enum Command {
    /// Run a topology: ingest, stage worker, and (without a NATS URL) a local nats-server.
    Run {
        #[arg(env = "PANOPTES_TOPOLOGY")]
        topology: PathBuf,
        /// NATS server (default: the topology's, else a local nats-server is started) and
        /// how to connect; flags win over the topology's `nats` section.
        #[command(flatten)]
        nats: NatsArgs,
        /// The web view (its URL is printed at start).
        #[command(flatten)]
        view: panoptes::view_cmd::ViewOptions,
        /// Run without the web view.
        #[arg(long, env = "PANOPTES_NO_VIEW")]
        no_view: bool,
    },
    /// Check topology files: structure, references, files (exit status 1 on any problem).
    Validate {
        #[arg(required = true)]
        topologies: Vec<PathBuf>,
        /// Also check the environment: NATS answers, models and operators load, digests match,
        /// signatures verify, and this build supports everything asked for.
        #[arg(long, env = "PANOPTES_VALIDATE_ENV")]
        env: bool,
        /// NATS server to try with --env (default: the topology's), and how.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Print a JSON Schema: of topology files (the default; for editors: yaml-language-server),
    /// or of the detection or event messages Panoptes publishes.
    Schema {
        #[arg(value_enum, default_value_t = SchemaOf::Topology)]
        of: SchemaOf,
    },
    /// Print detection messages as they arrive, one JSON object per line.
    Subscribe {
        /// Only this camera's detections.
        #[arg(long, env = "PANOPTES_CAMERA")]
        camera: Option<String>,
        /// NATS server (default nats://127.0.0.1:4222) and how to connect.
        #[command(flatten)]
        nats: NatsArgs,
        #[arg(long, env = "PANOPTES_NAMESPACE", default_value = Subjects::DEFAULT_NAMESPACE)]
        namespace: String,
        #[arg(long, env = "PANOPTES_FORMAT", default_value = "json")]
        format: OutputFormat,
        /// Exit after this many messages.
        #[arg(long, env = "PANOPTES_COUNT")]
        count: Option<u64>,
    },
    /// Run only a topology's stage worker, joining an existing NATS server.
    Worker(panoptes::roles::WorkerArgs),
    /// Run only a topology's ingest nodes, joining an existing NATS server.
    Ingest(panoptes::roles::IngestArgs),
    /// Run only a topology's outputs (webhooks, MQTT), joining an existing NATS server, so
    /// they scale and fail apart from the pipeline.
    Sink(panoptes::roles::SinkArgs),
    /// Run only a topology's recorder (clips and snapshots of events, `record:`), joining an
    /// existing NATS server; recorders share the cameras like workers.
    Record(panoptes::roles::RecordArgs),
    /// Serve the web view of a deployment (cameras with boxes, tracks, zones and lines,
    /// per-camera health, events with clips, the topology and the workers), joining an
    /// existing NATS server. It only reads.
    View(panoptes::view_cmd::ViewArgs),
    /// Run retained frames (`retain:`) of a time range through the topology's stages, or
    /// with one operator stage replaced, and compare the detections frame by frame with the
    /// stored ones. Publishes nothing on the live subjects.
    Replay(panoptes::replay_cmd::ReplayArgs),
    /// List, fetch and remove stored clips and snapshots (NATS Object Store `<ns>-clips`).
    #[command(subcommand)]
    Clips(panoptes::clips_cmd::ClipsCommand),
    /// Publish frames of an image, a video or a test pattern as a camera (sequence numbers
    /// start at 0 on every run).
    Publish(panoptes::publish::PublishArgs),
    /// Draw a topology as Graphviz DOT or Mermaid: cameras, subjects, stages and where results go.
    Graph(panoptes::graph::GraphArgs),
    /// Sign operator modules and check their signatures (see `signed_by` in topologies).
    #[command(subcommand)]
    Operator(panoptes::operator_cmd::OperatorCommand),
    /// Add, remove and list the cameras of running ingest processes, or make them reload
    /// their topology files.
    #[command(subcommand)]
    Camera(panoptes::camera_cmd::CameraCommand),
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The log filter without `RUST_LOG`: warnings only for commands that print reports (`quiet`),
/// panoptes' own info lines for the others; each `-v` one step more. NATS client (async-nats)
/// and ONNX Runtime info lines (every connection says "connected") take one `-v` more.
fn default_log_filter(quiet: bool, verbose: u8) -> &'static str {
    const STEPS: [&str; 5] = [
        "warn",
        "info,async_nats=warn,ort=warn",
        "info",
        "debug",
        "trace",
    ];
    let step = usize::from(!quiet) + usize::from(verbose);
    STEPS[step.min(STEPS.len() - 1)]
}

/// Logs on stderr (`RUST_LOG` wins; otherwise `default`, see [`default_log_filter`]) and, when
/// configured, frame spans exported over OTLP. Frame spans (target `panoptes::trace`) are for
/// the exporter, not the log, unless `RUST_LOG` names them.
fn init_logging(format: LogFormat, default: &str, traces: Option<BoxedLayer>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let mut directives = from_env.unwrap_or_else(|| default.to_owned());
    if !directives.contains(panoptes_telemetry::trace::TARGET) {
        directives.push_str(",panoptes::trace=off");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: BoxedLayer = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    let mut layers = vec![fmt];
    layers.extend(traces);
    tracing_subscriber::registry().with(layers).init();
}

/// The telemetry settings of the topology a command runs, if it runs one (read leniently: a
/// topology that does not load is reported by the command itself).
fn telemetry_of(
    command: &Command,
) -> (
    Option<ServiceRole>,
    Option<TelemetryConfig>,
    Option<std::time::Duration>,
) {
    let (role, path) = match command {
        Command::Run { topology, .. } => (ServiceRole::All, Some(topology)),
        Command::Worker(args) => (ServiceRole::Worker, Some(&args.topology)),
        Command::Ingest(args) => (ServiceRole::Ingest, Some(&args.topology)),
        Command::Sink(args) => (ServiceRole::Sink, Some(&args.topology)),
        Command::Record(args) => (ServiceRole::Record, Some(&args.topology)),
        Command::View(args) => (ServiceRole::View, args.topology.as_ref()),
        Command::Publish(_) => (ServiceRole::Publish, None),
        _ => return (None, None, None),
    };
    let topology = path.and_then(|p| TopologyFile::load(p).ok());
    let config = topology.as_ref().map(|t| t.telemetry.clone());
    // Metric series of a camera expire when the worker forgets the camera.
    let idle = topology
        .as_ref()
        .map(|t| std::time::Duration::from_millis(t.workers.camera_idle_ttl_ms));
    (Some(role), config, idle)
}

/// Which JSON Schema `panoptes schema` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SchemaOf {
    /// Topology files (`schema/topology.schema.json`).
    Topology,
    /// `detections/v1.1` messages (`docs/detections.schema.json`).
    Detections,
    /// `events/v1.2` messages (`docs/events.schema.json`).
    Events,
    /// `analytics/v1` events (`docs/analytics.schema.json`).
    Analytics,
    /// `output-events/v1`, outputs' status events (`docs/output-events.schema.json`).
    OutputEvents,
    /// `clips/v1`, stored clips and segments (`docs/clips.schema.json`).
    Clips,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Validate { .. }
            | Command::Schema { .. }
            | Command::Graph(_)
            | Command::Operator(_)
            | Command::Camera(_)
    );
    let (role, telemetry, idle) = telemetry_of(&cli.command);
    let export = match role {
        Some(role) => trace_export(telemetry.as_ref(), role, |k| std::env::var(k).ok())?,
        None => None,
    };
    let (traces, tracing_guard) = match &export {
        Some(export) => {
            let (layer, guard) = panoptes::telemetry::trace_layer(export)?;
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    init_logging(
        cli.log_format,
        default_log_filter(quiet, cli.verbose),
        traces,
    );
    if let Some(export) = &export {
        tracing::info!(endpoint = %export.endpoint, protocol = ?export.protocol, sampler = ?export.sampler, service = %export.service, "exporting traces over OTLP");
    }
    if role.is_some_and(|r| r != ServiceRole::Publish)
        && let Some(addr) = metrics_address(cli.metrics.as_deref(), telemetry.as_ref())?
    {
        match idle {
            Some(idle) => panoptes::telemetry::serve_metrics_with(addr, idle)?,
            None => panoptes::telemetry::serve_metrics(addr)?,
        }
    }
    let stop_timeout = std::time::Duration::from_secs(cli.stop_timeout);
    let result = dispatch(cli.command, stop_timeout).await;
    if let Err(e) = &result
        && let Some(stop) = e.downcast_ref::<StopError>()
    {
        // A stop cut short waits on nothing more: not on tasks it abandoned (dropping the
        // runtime would), not on the exporter's last spans.
        eprintln!("panoptes: {stop}");
        std::process::exit(match stop {
            StopError::Interrupted => 130,
            StopError::TimedOut(_) => 1,
        });
    }
    if let Some(guard) = tracing_guard {
        guard.shutdown().await;
    }
    result
}

async fn dispatch(command: Command, stop_timeout: std::time::Duration) -> anyhow::Result<()> {
    match command {
        Command::Run {
            topology,
            nats,
            view,
            no_view,
        } => run(&topology, &nats, (!no_view).then_some(&view), stop_timeout).await,
        Command::Validate {
            topologies,
            env,
            nats,
        } => {
            if !validate(&topologies, env, &nats).await {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Schema { of } => {
            let schema = match of {
                SchemaOf::Topology => panoptes_topology::json_schema(),
                SchemaOf::Detections => panoptes_contracts::detection::json_schema(),
                SchemaOf::Events => panoptes_contracts::event::json_schema(),
                SchemaOf::Analytics => panoptes_contracts::analytics::json_schema(),
                SchemaOf::OutputEvents => panoptes_contracts::output::json_schema(),
                SchemaOf::Clips => panoptes_contracts::clip::json_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(())
        }
        Command::Subscribe {
            camera,
            nats,
            namespace,
            format,
            count,
        } => subscribe(camera.as_deref(), &nats, namespace, format, count).await,
        Command::Worker(args) => panoptes::roles::worker(args, stop_timeout).await,
        Command::Ingest(args) => panoptes::roles::ingest(args, stop_timeout).await,
        Command::Sink(args) => panoptes::roles::sink(args, stop_timeout).await,
        Command::Record(args) => panoptes::roles::record(args, stop_timeout).await,
        Command::Clips(command) => panoptes::clips_cmd::run(command).await,
        Command::View(args) => panoptes::view_cmd::run(args).await,
        Command::Replay(args) => panoptes::replay_cmd::run(args).await,
        Command::Publish(args) => panoptes::publish::run(args, wait_for_shutdown()).await,
        Command::Graph(args) => panoptes::graph::run(&args),
        Command::Operator(command) => panoptes::operator_cmd::run(command).await,
        Command::Camera(command) => panoptes::camera_cmd::run(command).await,
    }
}

async fn run(
    path: &std::path::Path,
    nats: &NatsArgs,
    view: Option<&panoptes::view_cmd::ViewOptions>,
    stop_timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let mut topology = TopologyFile::load(path)?;
    topology.nats = nats.settings(Some(&topology.nats));
    let running = Running::start(&topology, nats.url.as_deref(), Role::All).await?;
    running.reload_from(path);
    let view = match view {
        Some(options) => Some(
            options
                .start_in_run(running.client.clone(), &topology)
                .await?,
        ),
        None => None,
    };
    // Listening before the banner (once it says how to stop, Ctrl-C stops); a second signal
    // during the stop ends it at once.
    let mut signals = Signals::listen()?;
    eprintln!(
        "panoptes: running {} with {} camera(s){} on {}{}\n  watch results: panoptes subscribe --nats {}{}\n  stop: Ctrl-C",
        path.display(),
        topology.cameras.len(),
        match running.outputs() {
            0 => String::new(),
            n => format!(" and {n} output(s)"),
        },
        running.nats_url,
        view.as_ref()
            .map(|v| format!("\n  view: {}", v.url()))
            .unwrap_or_default(),
        running.nats_url,
        if running.records() {
            format!(
                "\n  clips of events: panoptes clips list --nats {} --namespace {}",
                running.nats_url, topology.namespace
            )
        } else {
            String::new()
        }
    );
    let failed = running.failed.clone();
    tokio::select! {
        () = signals.recv() => eprintln!("panoptes: stopping"),
        () = failed.cancelled() => eprintln!("panoptes: the worker failed; stopping"),
    }
    if let Some(view) = view {
        view.stop().await;
    }
    let summary = panoptes::roles::stop_within(running, stop_timeout, signals.recv()).await?;
    eprintln!(
        "panoptes: published {} frames; worker received {}, produced {} detection messages, dropped {} (live mode keeps the newest), failed {}",
        summary.published,
        summary.worker.received,
        summary.worker.processed,
        summary.worker.dropped,
        summary.worker.failed
    );
    Ok(())
}

/// Validates each file; prints `ok` lines on stdout and diagnostics on stderr.
async fn validate(paths: &[PathBuf], env: bool, nats: &NatsArgs) -> bool {
    use std::io::IsTerminal as _;
    let color = std::io::stderr().is_terminal();
    let mut all_ok = true;
    for path in paths {
        let mut topology = match TopologyFile::load(path) {
            Ok(t) => t,
            Err(d) => {
                eprintln!("{}", d.render(color));
                all_ok = false;
                continue;
            }
        };
        let labels = panoptes::validate::unknown_labels(&topology);
        if !labels.is_empty() {
            eprintln!("{}", topology.diagnostics(labels).render(color));
            all_ok = false;
            continue;
        }
        if env {
            topology.nats = nats.settings(Some(&topology.nats));
            let problems = panoptes::validate::environment(&topology, nats.url.as_deref()).await;
            if !problems.is_empty() {
                eprintln!("{}", topology.diagnostics(problems).render(color));
                all_ok = false;
                continue;
            }
        }
        println!(
            "ok: {} ({} camera(s), {} stage(s){})",
            path.display(),
            topology.cameras.len(),
            topology.stages.len(),
            if env { ", environment checked" } else { "" }
        );
    }
    all_ok
}

async fn wait_for_shutdown() {
    match Signals::listen() {
        Ok(mut signals) => signals.recv().await,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn subscribe(
    camera: Option<&str>,
    nats: &NatsArgs,
    namespace: String,
    format: OutputFormat,
    count: Option<u64>,
) -> anyhow::Result<()> {
    let camera = camera.map(CameraId::new).transpose()?;
    let client = nats.connect().await?;
    let subjects = Subjects::new(namespace);
    let mut sub = DetectionSubscriber::new(&client, &subjects, camera.as_ref()).await?;
    let mut seen = 0u64;
    loop {
        let next = tokio::select! {
            m = sub.next() => m,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(received) = next else { break };
        match received {
            Received::Message(m) => match format {
                OutputFormat::Json => println!("{}", serde_json::to_string(&m).context("encode")?),
                OutputFormat::Table => println!("{}", panoptes_client::table_row(&m)),
            },
            Received::Invalid { subject, error } => {
                eprintln!("panoptes: ignoring message on {subject}: {error}")
            }
        }
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}
