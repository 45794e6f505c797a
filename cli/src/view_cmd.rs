//! `panoptes view` and the view inside `panoptes run`: the web page of a deployment's cameras,
//! detections, events, topology and workers (the `panoptes-view` crate), with its options
//! declared once.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use panoptes_contracts::Subjects;
use panoptes_topology::TopologyFile;

use crate::nats_args::NatsArgs;

/// Where the view listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";

/// How the web view serves (shared by `panoptes view` and `panoptes run`).
#[derive(Debug, Clone, clap::Args)]
pub struct ViewOptions {
    /// Address of the web view. Anything but a loopback address needs --view-token (or a
    /// reverse proxy that authenticates and terminates TLS: docs/view.md).
    #[arg(long, env = "PANOPTES_VIEW_LISTEN", default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub view_listen: SocketAddr,
    /// A token every request must carry (the printed link carries it once, then a cookie).
    #[arg(
        long,
        env = "PANOPTES_VIEW_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub view_token: Option<String>,
    /// Frames per second per camera sent to each browser (the pipeline is never slowed: the
    /// view keeps only recent frames and skips the rest).
    #[arg(
        long,
        env = "PANOPTES_VIEW_MAX_FPS",
        default_value_t = 5.0,
        value_name = "FPS"
    )]
    pub view_max_fps: f64,
    /// Frames per second the view samples over all cameras that send no previews; with many
    /// cameras each gets its share. Frames are sampled only while a browser watches.
    #[arg(
        long,
        env = "PANOPTES_VIEW_MAX_TOTAL_FPS",
        default_value_t = 12.0,
        value_name = "FPS"
    )]
    pub view_max_total_fps: f64,
    /// Jaeger's UI (e.g. http://127.0.0.1:16686), for links from events to sampled traces.
    #[arg(long, env = "PANOPTES_JAEGER_URL", value_name = "URL")]
    pub jaeger_url: Option<String>,
}

impl ViewOptions {
    fn config(&self, namespace: &str, listen: SocketAddr) -> panoptes_view::ViewConfig {
        panoptes_view::ViewConfig {
            listen,
            token: self.view_token.clone(),
            max_fps: self.view_max_fps,
            max_total_fps: self.view_max_total_fps,
            jaeger: self.jaeger_url.clone(),
            namespace: namespace.to_owned(),
            limits: panoptes_view::Limits::default(),
        }
    }

    /// Starts the view for `panoptes run`: when the default address is taken (another
    /// Panoptes on this machine), it takes a free port instead and says so in the URL.
    pub async fn start_in_run(
        &self,
        client: async_nats::Client,
        topology: &TopologyFile,
    ) -> anyhow::Result<panoptes_view::View> {
        let config = self.config(&topology.namespace, self.view_listen);
        match panoptes_view::start(client.clone(), config, Some(topology)).await {
            Err(panoptes_view::ViewError::Listen { .. })
                if self.view_listen.to_string() == DEFAULT_LISTEN =>
            {
                let mut free = self.view_listen;
                free.set_port(0);
                let config = self.config(&topology.namespace, free);
                Ok(panoptes_view::start(client, config, Some(topology)).await?)
            }
            other => Ok(other?),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    /// The topology shown (its namespace, NATS server, graph, zones and lines); without it,
    /// --namespace and --nats say what to show.
    #[arg(env = "PANOPTES_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// NATS server (default: the topology's, else nats://127.0.0.1:4222) and how to connect.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Namespace shown when no topology is given.
    #[arg(long, env = "PANOPTES_NAMESPACE", default_value = Subjects::DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub view: ViewOptions,
}

/// Serves the view until SIGINT or SIGTERM.
pub async fn run(args: ViewArgs) -> anyhow::Result<()> {
    let topology = match &args.topology {
        Some(path) => Some(TopologyFile::load(path).map_err(|d| anyhow::anyhow!(d.render(false)))?),
        None => None,
    };
    let (client, namespace) = match &topology {
        Some(t) => {
            let settings = args.nats.settings(Some(&t.nats));
            let url = args
                .nats
                .url
                .clone()
                .or_else(|| t.nats.url.clone())
                .unwrap_or_else(|| args.nats.url_or_default());
            let client = crate::connect::connect_buffered(&url, &settings, &t.base_dir, 256)
                .await
                .with_context(|| format!("cannot connect to NATS at {url}"))?;
            (client, t.namespace.clone())
        }
        None => (args.nats.connect().await?, args.namespace.clone()),
    };
    let mut signals = crate::roles::Signals::listen()?;
    let config = args.view.config(&namespace, args.view.view_listen);
    let probe = crate::health::Probe::new(client.clone());
    let view = panoptes_view::start(client, config, topology.as_deref()).await?;
    crate::health::global().started(probe);
    eprintln!(
        "panoptes: view of namespace {namespace:?} at {}\n  stop: Ctrl-C",
        view.url()
    );
    signals.recv().await;
    crate::health::global().stopping();
    view.stop().await;
    Ok(())
}
