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

use panoptes_tests::repo_root;
use panoptes_topology::{BatchingConfig, StageConfig, TopologyFile};

use crate::child::Logged;

const GUARD: Duration = Duration::from_secs(60);
const STAGES: [&str; 3] = ["preprocess", "detect", "text-boxes"];

/// Tests here start several processes that each want a core: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_panoptes"))
}

/// The detector fixture (letterbox 160 → PP-OCRv4 det, frames of both cameras batched → DB)
/// in namespace `ns` with one partition and `cameras` (topology camera entries as JSON); the
/// caller sets the telemetry.
fn topology(ns: &str, cameras: &[serde_json::Value]) -> TopologyFile {
    let mut topology = panoptes_tests::detector_topology(160, 1);
    topology.config.namespace = ns.to_owned();
    topology.config.partitions = 1;
    topology.config.cameras = cameras
        .iter()
        .map(|c| panoptes_tests::camera_config(c.clone()))
        .collect();
    for stage in &mut topology.config.stages {
        if let StageConfig::Model(m) = stage {
            m.batching = Some(BatchingConfig {
                max_batch: 2,
                max_wait_ms: Some(400),
                latency_target_ms: None,
                adaptive: false,
            });
        }
    }
    topology
}

fn write_topology(dir: &Path, topology: &TopologyFile) -> PathBuf {
    panoptes_tests::write_topology(dir, "topology", topology)
}

fn test_pattern_cameras() -> Vec<serde_json::Value> {
    ["cam-a", "cam-b"]
        .map(|id| {
            serde_json::json!({
                "id": id, "fps": 4, "width": 320, "height": 240,
                "source": {"test_pattern": {"text": format!("TRACE {id}"), "font": "Sans Bold 24"}},
            })
        })
        .to_vec()
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
