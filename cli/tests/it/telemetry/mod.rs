//! Traces and metrics of real `panoptes` processes: an ingest process and a worker process
//! export OTLP to an in-process receiver, and one frame's spans must form one trace across both
//! (ingest → frame → every stage → publish, the model's batch span linked to every frame it
//! served); `/metrics` must count exactly the frames published and the detections received.
//!
//! This module holds what every test here shares: the topology, and `panoptes` child processes
//! with their logs.

mod faults;
pub(crate) mod metrics;
mod traces;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use panoptes_tests::{repo_root, require_setup};

use crate::child::Logged;

const GUARD: Duration = Duration::from_secs(60);
const STAGES: [&str; 3] = ["preprocess", "detect", "text-boxes"];

/// Tests here start several processes that each want a core: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_panoptes"))
}

/// `header` first (namespace, telemetry, partitions), then two cameras from `cameras`, then
/// letterbox 160 → PP-OCRv4 det (frames of both cameras batched) → DB.
fn write_topology(dir: &Path, header: &str, cameras: &str) -> PathBuf {
    let root = require_setup();
    let root = root.canonicalize().unwrap_or(root);
    let text = format!(
        r#"{header}
models:
  det: {{ manifest: {root}/models/ppocr-v4-det.yaml }}
cameras:
{cameras}
stages:
  - id: preprocess
    kind: operator
    wasm: {root}/operators/dist/letterbox.wasm
    config: {{ width: 160, height: 160, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], channels: bgr }}
    timeout_ms: 5000
  - id: detect
    kind: model
    model: det
    threads: 1
    batching: {{ max_batch: 2, max_wait_ms: 400, adaptive: false }}
  - id: text-boxes
    kind: postprocess
    postprocessor: db
    label: text
"#,
        root = root.display()
    );
    let path = dir.join("topology.yaml");
    std::fs::write(&path, text).expect("write topology");
    path
}

fn test_pattern_cameras() -> String {
    ["cam-a", "cam-b"]
        .iter()
        .map(|id| {
            format!(
                "  - {{ id: {id}, fps: 4, width: 320, height: 240, source: {{ test_pattern: {{ text: \"TRACE {id}\", font: \"Sans Bold 24\" }} }} }}\n"
            )
        })
        .collect()
}

/// A `panoptes` child process logging to `<dir>/<name>.log`; killed when dropped.
struct Process(Logged);

impl Process {
    fn start(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(binary());
        command
            .current_dir(repo_root())
            .args(args)
            .env("RUST_LOG", "info,ort=warn");
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_SERVICE_NAME",
            "OTEL_SDK_DISABLED",
            "PANOPTES_METRICS",
        ] {
            command.env_remove(var);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        Self(Logged::spawn(&mut command, log))
    }

    fn log(&self) -> String {
        self.0.log()
    }

    /// SIGTERM, then waits for a clean exit (spans queued in the exporter are flushed).
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.0.child.try_wait() {
                Ok(Some(status)) => {
                    assert!(status.success(), "exit {status}:\n{}", self.log());
                    return;
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => panic!("did not stop within 20 s:\n{}", self.log()),
            }
        }
    }

    /// `panoptes worker` on all partitions of a one-partition topology, once it subscribed.
    async fn worker(
        dir: &Path,
        topology: &str,
        url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut args = vec!["worker", topology, "--nats", url, "--partitions", "0"];
        args.extend_from_slice(extra);
        let worker = Self::start(dir, "worker", &args, env);
        worker.wait_for_log("worker subscribed").await;
        worker
    }

    async fn wait_for_log(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + GUARD;
        while !self.log().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
