//! `panoptes` as a process, the way users start and stop it: Ctrl-C typed in a terminal (the
//! line discipline signals the whole foreground process group) stops `panoptes run` and the
//! nats-server it started, with a zero exit status; a killed run leaves no server and the next
//! run removes its store; a second Ctrl-C during a stop that waits on a dead server ends it at
//! once; a stop that cannot finish ends at its deadline; a worker started before NATS joins it
//! once it is up; NATS client log lines stay off stderr unless asked for.

use panoptes_tests::ServerControls as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A hang detector, not a timing assertion: a stop that works takes a few seconds.
const HANG: Duration = Duration::from_secs(60);
/// Start-up builds the detector and the Wasm operator, slow on a loaded machine.
const START: Duration = Duration::from_secs(180);

/// Each test runs a whole topology; one at a time keeps a small machine responsive.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn root() -> PathBuf {
    panoptes_tests::require_setup()
}

/// A `panoptes` child with its output read line by line; killed and reaped when dropped, and so
/// is any nats-server it left behind (so a failing test cleans up after itself).
struct Panoptes {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    servers: Vec<u32>,
}

impl Panoptes {
    /// `panoptes <args>` with stdin, stdout and stderr on a new pseudo-terminal whose
    /// controlling process it is, in the terminal's foreground process group, as a shell runs
    /// it. Returns the terminal's master side: writing 0x03 to it is typing Ctrl-C.
    fn on_terminal(args: &[&str], temp: &Path) -> (Self, std::fs::File) {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty fills in two new descriptors, which are owned right below.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        for fd in [master, slave] {
            // Not inherited beyond stdin/stdout/stderr: a stray copy of the terminal in the
            // child (or its nats-server) would keep it open after the child is gone.
            // SAFETY: fcntl on descriptors this function owns.
            let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            assert_eq!(rc, 0, "fcntl: {}", std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty"));
        let mut command = command(args, temp);
        command
            .stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: setsid and ioctl are async-signal-safe and nothing here allocates.
        unsafe {
            command.pre_exec(|| {
                // A new session whose controlling terminal is the pty (on stdin): its process
                // group is the terminal's foreground group, which Ctrl-C signals.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn panoptes");
        // Only the child holds the slave now: its exit ends the reads of the master.
        drop(command);
        drop(slave);
        let master = std::fs::File::from(master);
        let reader = master.try_clone().expect("dup master");
        (Self::reading(child, reader), master)
    }

    /// `panoptes <args>` with its output (stdout and stderr) on a pipe.
    fn piped(args: &[&str], temp: &Path) -> Self {
        Self::piped_with(command(args, temp))
    }

    fn piped_with(mut command: Command) -> Self {
        let (reader, writer) = std::io::pipe().expect("pipe");
        command
            .stdin(Stdio::null())
            .stdout(writer.try_clone().expect("dup pipe"))
            .stderr(writer);
        let child = command.spawn().expect("spawn panoptes");
        // `command` still holds the write side; dropping it lets the reader see the end.
        drop(command);
        Self::reading(child, reader)
    }

    fn reading(child: Child, output: impl Read + Send + 'static) -> Self {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // A terminal ends lines with \r\n; a pty master reports EIO once the child is gone.
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if tx.send(line.trim_end_matches('\r').to_owned()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            servers: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one satisfies `wanted`; panics with the output so far after `limit`.
    fn wait_for_line(
        &mut self,
        what: &str,
        limit: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no {what} ({e}); output:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for the start-up banner; returns the NATS URL it names and the pid of the
    /// nats-server `panoptes run` started.
    fn started_run(&mut self) -> (String, u32) {
        let line = self.wait_for_line("start-up banner", START, |l| {
            l.starts_with("panoptes: running") && l.contains(" on nats://")
        });
        let url = line
            .rsplit(" on ")
            .next()
            .expect("URL in the banner")
            .trim()
            .to_owned();
        let server = server_of(self.pid())
            .unwrap_or_else(|| panic!("no nats-server child of panoptes {}", self.pid()));
        self.servers.push(server);
        (url, server)
    }

    /// Waits for the exit; panics (and kills it) if it hangs.
    fn wait_exit(&mut self, after: &str) -> ExitStatus {
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.drain();
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain();
                panic!(
                    "panoptes still running {HANG:?} after {after}; output:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After the exit: the lines still on their way, up to the end of the output.
    fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    fn signal(&self, signal: i32) {
        send(self.pid(), signal);
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Panoptes {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for &server in &self.servers {
            if running(server) {
                send(server, libc::SIGKILL);
            }
        }
    }
}

/// `panoptes <args>` in the repository, its temp dir `temp` (where the local nats-server's store
/// goes), logging at the default level.
fn command(args: &[&str], temp: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_panoptes"));
    command
        .args(args)
        .current_dir(root())
        .env("TMPDIR", temp)
        // Plain log lines, whatever the output is.
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("PANOPTES_NATS_URL")
        .env_remove("PANOPTES_STOP_TIMEOUT");
    command
}

fn send(pid: u32, signal: i32) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}

/// State letter and parent pid of `pid` (`None` once it is gone).
fn stat(pid: u32) -> Option<(char, u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent, name))
}

/// Whether `pid` is a live process (zombies are dead).
fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _, _)| !matches!(state, 'Z' | 'X'))
}

/// The nats-server child of `parent`.
fn server_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let (state, ppid, name) = stat(pid)?;
        (ppid == parent && name == "nats-server" && state != 'Z').then_some(pid)
    })
}

/// Waits until `pid` is no longer running; `false` if it still is after [`HANG`].
fn ends(pid: u32) -> bool {
    let deadline = Instant::now() + HANG;
    while running(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The local nats-server store dirs in `temp`.
fn store_dirs(temp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(temp)
        .expect("read temp dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("panoptes-nats-")
        })
        .map(|e| e.path())
        .collect()
}

fn clean_summary(output: &str) -> bool {
    output
        .lines()
        .any(|l| l.contains("published") && l.contains("failed 0"))
}

#[test]
fn ctrl_c_typed_in_a_terminal_stops_the_run_and_its_nats_server() {
    let _one = one_at_a_time();
    let temp = tempfile::tempdir().expect("temp dir");
    let (mut run, mut terminal) =
        Panoptes::on_terminal(&["run", "topologies/quickstart.yaml"], temp.path());
    let (url, server) = run.started_run();
    let addr = url.trim_start_matches("nats://").to_owned();
    std::net::TcpStream::connect(&addr).expect("embedded nats-server reachable while running");
    assert_eq!(
        store_dirs(temp.path()).len(),
        1,
        "one store dir while running"
    );
    // Frames flow through the server when Ctrl-C comes.
    run.wait_for_line("a camera up", START, |l| l.contains("camera source up"));

    // What the terminal does with Ctrl-C: SIGINT to every process of its foreground group.
    terminal.write_all(&[0x03]).expect("type Ctrl-C");
    let status = run.wait_exit("Ctrl-C in its terminal");
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        run.output()
    );
    assert!(
        clean_summary(&run.output()),
        "no clean summary in:\n{}",
        run.output()
    );
    assert!(ends(server), "nats-server {server} outlived panoptes");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "something still listens on {addr}"
    );
    assert_eq!(
        store_dirs(temp.path()),
        Vec::<PathBuf>::new(),
        "store left behind"
    );
}

#[test]
fn a_killed_run_leaves_no_server_and_the_next_run_removes_its_store() {
    let _one = one_at_a_time();
    let temp = tempfile::tempdir().expect("temp dir");
    let mut first = Panoptes::piped(&["run", "topologies/quickstart.yaml"], temp.path());
    let (_, server) = first.started_run();
    let stale = store_dirs(temp.path());
    assert_eq!(stale.len(), 1, "one store dir while running");

    first.child.kill().expect("kill -9 panoptes");
    first.child.wait().expect("reap panoptes");
    assert!(
        ends(server),
        "nats-server {server} outlived the panoptes that was killed"
    );
    assert_eq!(
        store_dirs(temp.path()),
        stale,
        "a killed run cannot clean up"
    );

    let mut second = Panoptes::piped(&["run", "topologies/quickstart.yaml"], temp.path());
    second.started_run();
    let now = store_dirs(temp.path());
    assert_eq!(now.len(), 1, "only the new run's store: {now:?}");
    assert_ne!(now, stale, "the dead run's store is still there");
    second.signal(libc::SIGINT);
    let status = second.wait_exit("SIGINT");
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        second.output()
    );
    assert_eq!(store_dirs(temp.path()), Vec::<PathBuf>::new());
}

/// A run whose nats-server died under it, then was told to stop: its stop waits on NATS.
fn stopping_without_nats(stop_timeout: &str, temp: &Path) -> Panoptes {
    let mut command = command(&["run", "topologies/quickstart.yaml"], temp);
    command.env("PANOPTES_STOP_TIMEOUT", stop_timeout);
    let mut run = Panoptes::piped_with(command);
    let (_, server) = run.started_run();
    send(server, libc::SIGKILL);
    assert!(ends(server), "nats-server {server} survived SIGKILL");
    run.signal(libc::SIGINT);
    run.wait_for_line("stopping line", HANG, |l| l == "panoptes: stopping");
    run
}

#[test]
fn a_second_ctrl_c_ends_a_stop_that_waits_on_a_dead_server() {
    let _one = one_at_a_time();
    let temp = tempfile::tempdir().expect("temp dir");
    // A deadline far beyond the hang detector: only the second signal can end this stop.
    let mut run = stopping_without_nats("3600", temp.path());
    run.signal(libc::SIGINT);
    ended_with(
        &mut run,
        "a second SIGINT",
        130,
        "interrupted again",
        temp.path(),
    );
}

#[test]
fn a_stop_that_waits_on_a_dead_server_ends_at_its_deadline() {
    let _one = one_at_a_time();
    let temp = tempfile::tempdir().expect("temp dir");
    let mut run = stopping_without_nats("2", temp.path());
    ended_with(
        &mut run,
        "SIGINT with a 2 s stop deadline",
        1,
        "did not finish within 2s",
        temp.path(),
    );
}

/// `run` exits (after `what`) with `code`, says `says`, and leaves no nats-server store in
/// `temp`.
fn ended_with(run: &mut Panoptes, what: &str, code: i32, says: &str, temp: &Path) {
    let status = run.wait_exit(what);
    assert_eq!(status.code(), Some(code), "output:\n{}", run.output());
    assert!(run.output().contains(says), "output:\n{}", run.output());
    assert_eq!(store_dirs(temp), Vec::<PathBuf>::new(), "store left behind");
}

#[test]
fn a_worker_started_before_nats_joins_once_it_is_up() {
    let _one = one_at_a_time();
    let temp = tempfile::tempdir().expect("temp dir");
    // The server's port is chosen, then the server stopped: nothing listens there yet.
    let mut server = panoptes_tests::nats_server();
    let url = server.url().to_owned();
    server.pause();
    let mut worker = Panoptes::piped(
        &["worker", "topologies/quickstart.yaml", "--nats", &url],
        temp.path(),
    );
    // Two failed attempts: it retries instead of exiting.
    for attempt in ["attempt=1", "attempt=2"] {
        worker.wait_for_line("retry log line", START, |l| {
            l.contains("NATS is not reachable yet") && l.contains(attempt)
        });
    }
    assert!(
        worker.child.try_wait().expect("wait").is_none(),
        "the worker exited:\n{}",
        worker.output()
    );
    server.resume().expect("start nats-server");
    worker.wait_for_line("worker banner", START, |l| {
        l.starts_with("panoptes: worker for") && l.contains(&url)
    });
    worker.signal(libc::SIGINT);
    let status = worker.wait_exit("SIGINT");
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        worker.output()
    );
}

#[tokio::test]
async fn nats_client_log_lines_need_verbose() {
    let server = panoptes_tests::nats_server();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let temp = tempfile::tempdir().expect("temp dir");
    for verbose in [None, Some("-v")] {
        let mut args: Vec<&str> = verbose.into_iter().collect();
        args.extend(["subscribe", "--nats", server.url(), "--count", "1"]);
        let mut subscriber = Panoptes::piped(&args, temp.path());
        // Any message on a detections subject ends `--count 1`, so publish until it exits.
        let deadline = Instant::now() + HANG;
        while subscriber.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "subscribe did not exit");
            client
                .publish("panoptes.detections.cam", "{}".into())
                .await
                .expect("publish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = subscriber.wait_exit("its message");
        let output = subscriber.output();
        assert!(status.success(), "{status}: {output}");
        // async-nats logs every connection ("connected successfully") at info.
        match verbose {
            None => assert!(
                !output.contains("async_nats"),
                "NATS client lines by default:\n{output}"
            ),
            Some(_) => assert!(
                output.contains("async_nats"),
                "-v shows no NATS client lines:\n{output}"
            ),
        }
    }
}
