//! `panoptes`: run video-analytics topologies and watch their results.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use panoptes::runner::Running;
use panoptes_topology::TopologyFile;
use panoptes_pipeline::{CameraId, Subjects};
use panoptes_sink::{DetectionSubscriber, Received};

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
        topology: PathBuf,
        /// NATS server URL; default: the topology's, else start a local nats-server.
        #[arg(long, env = "PANOPTES_NATS_URL")]
        nats: Option<String>,
    },
    /// Print detection messages as they arrive, one JSON object per line.
    Subscribe {
        /// Only this camera's detections.
        #[arg(long, env = "PANOPTES_CAMERA")]
        camera: Option<String>,
        #[arg(
            long,
            env = "PANOPTES_NATS_URL",
            default_value = "nats://127.0.0.1:4222"
        )]
        nats: String,
        #[arg(long, env = "PANOPTES_NAMESPACE", default_value = Subjects::DEFAULT_NAMESPACE)]
        namespace: String,
        #[arg(long, env = "PANOPTES_FORMAT", default_value = "json")]
        format: OutputFormat,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { topology, nats } => run(&topology, nats.as_deref()).await,
        Command::Subscribe {
            camera,
            nats,
            namespace,
            format,
            count,
        } => subscribe(camera.as_deref(), &nats, namespace, format, count).await,
    }
}

async fn run(path: &std::path::Path, nats: Option<&str>) -> anyhow::Result<()> {
    let topology = TopologyFile::load(path)?;
    let running = Running::start(&topology, nats).await?;
    eprintln!(
        "panoptes: running {} with {} camera(s) on {}\n  watch results: panoptes subscribe --nats {}\n  stop: Ctrl-C",
        path.display(),
        topology.cameras.len(),
        running.nats_url,
        running.nats_url
    );
    wait_for_shutdown().await;
    eprintln!("panoptes: stopping");
    let summary = running.stop().await?;
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

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn subscribe(
    camera: Option<&str>,
    nats: &str,
    namespace: String,
    format: OutputFormat,
    count: Option<u64>,
) -> anyhow::Result<()> {
    let camera = camera.map(CameraId::new).transpose()?;
    let client = panoptes::connect(nats).await?;
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
                OutputFormat::Table => println!("{}", panoptes_sink::table_row(&m)),
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
