//! A local `nats-server` child (`panoptes run`'s default, and the tests'): loopback port chosen
//! once and kept across restarts, store in a temp dir, killed with its handle. The child is in
//! its own process group (a terminal's Ctrl-C reaches only its owner, which stops it in order)
//! and dies with its owner (no orphan server); store dirs of owners that died are removed.

mod config;
mod process;
mod store;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use config::ANY_PORT;
use process::Launcher;
use store::{DIR_PREFIX, OWNER_FILE, owner_of_this_process, remove_stale_dirs};

pub use config::partition_mapping;
pub use process::find_binary;

#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    #[error(
        "no nats-server binary found (looked at $PANOPTES_NATS_SERVER, {venv}, $PATH and /usr/sbin); run scripts/setup.sh"
    )]
    NotFound { venv: String },
    #[error("could not start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("nats-server exited during start-up ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("nats-server did not report its port within {0:?}")]
    Timeout(Duration),
    #[error("nats-server reported {0:?}, which names no port")]
    NoPort(String),
    #[error("port {port} is in use, so nats-server cannot listen on it again; its log:\n{log}")]
    PortInUse { port: u16, log: String },
    #[error("nats-server I/O: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug)]
pub struct NatsServerOptions {
    /// Explicit binary; otherwise [`find_binary`].
    pub binary: Option<PathBuf>,
    pub jetstream: bool,
    /// Largest message the server accepts. 1280×720 RGB frames need ~2.7 MB; NATS defaults to 1 MB.
    pub max_payload: String,
    /// `(namespace, partitions)`: adds [`partition_mapping`], so frames published to
    /// `<ns>.frames.<camera>` arrive on `<ns>.frames.<camera>.<partition>`. A `mappings` block in
    /// `extra_config` would silently replace it (nats-server keeps the last one): merge them.
    pub partition_mapping: Option<(String, u32)>,
    /// Appended verbatim to the generated config, e.g. an `authorization { … }` or `tls { … }`
    /// block; lets tests run a server that demands credentials or TLS.
    pub extra_config: String,
}

impl Default for NatsServerOptions {
    fn default() -> Self {
        Self {
            binary: None,
            jetstream: true,
            max_payload: "8MB".to_owned(),
            partition_mapping: None,
            extra_config: String::new(),
        }
    }
}

/// A running nats-server child. [`NatsServer::relaunch`] brings a server whose process ended back
/// on the same URL with the same JetStream store (the test kit's pause/resume build on it).
pub struct NatsServer {
    child: Child,
    url: String,
    /// The port the first start was given; later starts listen on it again.
    port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
    launcher: Launcher,
}

impl NatsServer {
    pub fn start(opts: &NatsServerOptions) -> Result<Self, NatsServerError> {
        let binary = match &opts.binary {
            Some(b) => b.clone(),
            None => find_binary()?,
        };
        remove_stale_dirs(&std::env::temp_dir());
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir()?;
        // Written first, so a dir without an owner is one being made (left alone) or a stranger's.
        if let Some(owner) = owner_of_this_process() {
            std::fs::write(dir.path().join(OWNER_FILE), owner)?;
        }
        let ports_dir = dir.path().join("ports");
        std::fs::create_dir(&ports_dir)?;
        std::fs::write(
            dir.path().join("nats.conf"),
            config::render(opts, dir.path(), &ports_dir),
        )?;
        let launcher = Launcher::new()?;
        let (child, url) = launcher.launch(&binary, dir.path())?;
        let mut server = Self {
            child,
            url,
            port: 0,
            binary,
            dir,
            launcher,
        };
        // An error here drops `server`, which kills the child.
        server.port = server
            .url
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .ok_or_else(|| NatsServerError::NoPort(server.url.clone()))?;
        tracing::info!(url = %server.url, pid = server.pid(), binary = %server.binary.display(), "started local nats-server");
        Ok(server)
    }

    /// The process ID of the server (of its latest start).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is still alive (not paused, not crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts the server again, on the port of its first start with the same config and
    /// JetStream store, after its process ended (it crashed or was killed), so clients reconnect
    /// to the URL they know. Does nothing while it runs. One attempt: a port someone else took
    /// meanwhile is [`NatsServerError::PortInUse`].
    pub fn relaunch(&mut self) -> Result<(), NatsServerError> {
        if self.is_running() {
            return Ok(());
        }
        let conf_path = self.dir.path().join("nats.conf");
        let conf = std::fs::read_to_string(&conf_path)?;
        if conf.contains(ANY_PORT) {
            let fixed = format!("listen: \"127.0.0.1:{}\"", self.port);
            std::fs::write(&conf_path, conf.replacen(ANY_PORT, &fixed, 1))?;
        }
        match self.launcher.launch(&self.binary, self.dir.path()) {
            Ok((child, _)) => {
                self.child = child;
                tracing::info!(url = %self.url, pid = self.pid(), "relaunched local nats-server");
                Ok(())
            }
            // nats-server exits at once on a failed bind.
            Err(NatsServerError::Exited { log, .. }) if log.contains("address already in use") => {
                Err(NatsServerError::PortInUse {
                    port: self.port,
                    log,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
