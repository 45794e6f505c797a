//! Hostile inputs named by a topology, run through the real `panoptes` binary: a YAML alias bomb,
//! `/dev/zero` as a module or manifest, FIFOs and directories where files belong, a file that is
//! not a manifest named as one, and a number no field can hold. Each must be refused with a
//! located, content-free message, by a process that exits on its own with bounded memory.
//!
//! Peak memory is the child's own high-water mark, from `wait4`'s resource usage. The child runs
//! under `RLIMIT_DATA` so a regression fails the test instead of driving the machine into the
//! OOM killer, and a watchdog kills a child that never exits (a read blocked on a FIFO); neither
//! is a timing assertion: the tests assert that the child exited by itself.

use std::ffi::CString;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Far above what a refused input costs (a `validate` run peaks at a few tens of MiB) and far
/// below what the unbounded reads reached (gigabytes).
const PEAK_BOUND_KIB: i64 = 256 * 1024;
/// The child's data limit: a regression dies here instead of taking the machine with it.
const DATA_LIMIT: u64 = 2 << 30;
/// Only to end a child that hangs; the tests assert it was not needed.
const WATCHDOG: Duration = Duration::from_secs(120);

struct Finished {
    code: Option<i32>,
    signal: Option<i32>,
    killed_by_watchdog: bool,
    peak_kib: i64,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn describe(&self) -> String {
        format!(
            "exit code {:?}, signal {:?}, watchdog {}, peak {} KiB\nstdout: {}\nstderr: {}",
            self.code,
            self.signal,
            self.killed_by_watchdog,
            self.peak_kib,
            self.stdout,
            self.stderr
        )
    }

    /// Its stderr says `text`.
    fn says(&self, text: &str) {
        assert!(self.stderr.contains(text), "{}", self.describe());
    }

    /// Its stderr does not say `text`.
    fn never_says(&self, text: &str) {
        assert!(!self.stderr.contains(text), "{}", self.describe());
    }

    /// Refused: exited by itself with status 1, within the memory bound.
    fn assert_refused(&self) {
        assert!(
            !self.killed_by_watchdog,
            "never exited: {}",
            self.describe()
        );
        assert_eq!(self.code, Some(1), "{}", self.describe());
        assert!(
            self.peak_kib < PEAK_BOUND_KIB,
            "peak memory {} KiB is over {PEAK_BOUND_KIB} KiB: {}",
            self.peak_kib,
            self.describe()
        );
    }
}

/// Runs `panoptes args…` in `dir` and reaps it with `wait4`, for its own peak memory.
// The child is reaped by `wait4` below, which `Child::wait` cannot stand in for: it does not
// return the child's resource usage.
#[allow(clippy::zombie_processes)]
fn panoptes(dir: &Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_panoptes"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("PANOPTES_NATS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: DATA_LIMIT,
                rlim_max: DATA_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("panoptes starts");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut killed_by_watchdog = false;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our unreaped child; the pointers are to live locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break (status, usage);
        }
        assert_eq!(reaped, 0, "wait4: {}", std::io::Error::last_os_error());
        if !killed_by_watchdog && started.elapsed() > WATCHDOG {
            // SAFETY: the child is not reaped yet, so `pid` is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed_by_watchdog = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        killed_by_watchdog,
        // ru_maxrss is in KiB on Linux.
        peak_kib: usage.ru_maxrss,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn repo() -> PathBuf {
    panoptes_tests::require_setup()
        .canonicalize()
        .expect("repository root")
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// The detector chain with `model` as the `det` model's entry and `wasm` as the operator.
fn topology(dir: &Path, model: &str, wasm: &str) -> &'static str {
    let text = format!(
        r#"models:
  det: {model}
stages:
  - id: preprocess
    kind: operator
    wasm: {wasm}
    config: {{ width: 640, height: 640, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] }}
  - id: detect
    kind: model
    model: det
  - id: text-boxes
    kind: postprocess
    postprocessor: db
    label: text
"#
    );
    std::fs::write(dir.join("t.yaml"), text).expect("write topology");
    "t.yaml"
}

fn letterbox() -> String {
    repo()
        .join("operators/dist/letterbox.wasm")
        .display()
        .to_string()
}

fn det_manifest() -> String {
    format!(
        "{{ manifest: {} }}",
        repo().join("models/ppocr-v4-det.yaml").display()
    )
}

/// About 600 bytes that expand to 10^9 strings if every alias is copied ("billion laughs").
fn billion_laughs() -> String {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..=9 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    text
}

#[test]
fn an_alias_bomb_is_refused_at_its_alias_with_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bomb = billion_laughs();
    std::fs::write(dir.path().join("bomb.yaml"), &bomb).expect("write");
    let run = panoptes(dir.path(), &["validate", "bomb.yaml"]);
    run.assert_refused();
    run.says("aliases expand this file by more than");
    // Located: the diagnostic names a line of the file, at an alias.
    let at = run
        .stderr
        .split_once("bomb.yaml:")
        .map(|(_, rest)| rest.split(':').next().unwrap_or(""))
        .expect("a location");
    let line: usize = at.parse().expect("a line number");
    assert!(
        bomb.lines().nth(line - 1).is_some_and(|l| l.contains('*')),
        "line {line} has no alias: {}",
        run.describe()
    );
    eprintln!(
        "alias bomb ({} bytes): refused, peak {} KiB",
        bomb.len(),
        run.peak_kib
    );
}

#[test]
fn dev_zero_as_a_module_or_a_manifest_is_refused_with_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let wasm = topology(d, &det_manifest(), "/dev/zero");
    let run = panoptes(d, &["validate", "--env", wasm]);
    run.assert_refused();
    run.says("`/dev/zero` is a device, not a regular file");
    run.says("t.yaml:6:11");
    eprintln!("wasm: /dev/zero: refused, peak {} KiB", run.peak_kib);

    let manifest = topology(d, "{ manifest: /dev/zero }", &letterbox());
    let run = panoptes(d, &["validate", "--env", manifest]);
    run.assert_refused();
    run.says("`/dev/zero` is a device, not a regular file");
    eprintln!("manifest: /dev/zero: refused, peak {} KiB", run.peak_kib);
}

#[test]
fn a_fifo_as_a_manifest_is_refused_by_validate_and_worker_without_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    mkfifo(&d.join("manifest.fifo"));
    let t = topology(d, "{ manifest: manifest.fifo }", &letterbox());
    // Nothing ever writes to the FIFO: a blocking open or read would wait forever.
    let run = panoptes(d, &["validate", "--env", t]);
    run.assert_refused();
    run.says("model manifest `manifest.fifo` is a FIFO, not a regular file");
    let run = panoptes(d, &["worker", t, "--nats", "nats://127.0.0.1:9"]);
    assert!(!run.killed_by_watchdog, "never exited: {}", run.describe());
    assert_ne!(run.code, Some(0), "{}", run.describe());
    run.says("is a FIFO, not a regular file");
}

#[test]
fn a_file_that_is_not_a_manifest_is_refused_without_printing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Shaped like /etc/shadow: YAML reads it as one plain string.
    std::fs::write(
        d.join("shadow"),
        "root:$6$SECRETSALT$SECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
    )
    .expect("write");
    // And a file that is not YAML at all.
    std::fs::write(d.join("binary"), b"SECRET\tkey: [unclosed\n\x01: {").expect("write");
    for name in ["shadow", "binary"] {
        let t = topology(d, &format!("{{ manifest: {name} }}"), &letterbox());
        let run = panoptes(d, &["validate", "--env", t]);
        run.assert_refused();
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !all.contains("SECRET"),
            "content echoed: {}",
            run.describe()
        );
        assert!(
            !all.contains("daemon"),
            "content echoed: {}",
            run.describe()
        );
        // Located in the topology, at the `manifest` value.
        assert!(all.contains("t.yaml:2:20"), "{}", run.describe());
        assert!(
            all.contains("not a model manifest") || all.contains("not valid YAML"),
            "{}",
            run.describe()
        );
    }
}

#[test]
fn a_fifo_or_a_directory_as_a_model_file_is_named_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    mkfifo(&d.join("model.fifo"));
    std::fs::create_dir(d.join("model.dir")).expect("mkdir");
    for (file, kind) in [("model.fifo", "a FIFO"), ("model.dir", "a directory")] {
        let t = topology(d, &format!("{{ file: {file} }}"), &letterbox());
        let run = panoptes(d, &["validate", t]);
        run.assert_refused();
        run.says(&format!(
            "model file `{file}` is {kind}, not a regular file"
        ));
        run.never_says("does not exist");
        run.says("t.yaml:2:16");
    }
}

#[test]
fn a_number_no_field_can_hold_is_reported_at_the_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let t = topology(d, &det_manifest(), &letterbox());
    let text = std::fs::read_to_string(d.join(t)).expect("read");
    let text = text.replace(
        "    kind: operator\n",
        "    kind: operator\n    timeout_ms: 18446744073709551615\n",
    );
    std::fs::write(d.join(t), text).expect("write");
    let run = panoptes(d, &["validate", t]);
    run.assert_refused();
    assert!(
        !run.stderr.contains("typed reader"),
        "unlocated: {}",
        run.describe()
    );
    // Line 6, column 17: the value after `timeout_ms: `.
    run.says("t.yaml:6:17");
    run.says("stages[0].timeout_ms must be at most");
}
