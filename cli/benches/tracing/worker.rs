//! One `panoptes worker` child for one configuration: started with its `OTEL_*` environment,
//! waited for until it subscribes, stopped with SIGTERM and its summary line read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use panoptes_tests::count_after;

use crate::{GUARD, PARTITIONS};

/// What a worker's summary line (printed at SIGTERM) says.
#[derive(Clone, Copy, Default)]
pub(crate) struct Summary {
    pub(crate) received: u64,
    pub(crate) processed: u64,
    pub(crate) dropped: u64,
}

/// One `panoptes worker` process, its OTEL_* environment set for one configuration; killed and
/// reaped if still running when dropped.
pub(crate) struct Worker {
    pub(crate) child: Child,
    log: PathBuf,
}

impl Worker {
    pub(crate) fn start(
        topology: &Path,
        url: &str,
        endpoint: Option<(&str, f64)>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_panoptes"));
        command
            .current_dir(panoptes_tests::repo_root())
            .arg("worker")
            .arg(topology)
            .args([
                "--nats",
                url,
                "--partitions",
                &format!("0-{}", PARTITIONS - 1),
            ])
            // Info, for the "worker subscribed" and "exporting traces" lines (a few lines per
            // run; nothing per frame).
            .env("RUST_LOG", "info,ort=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        // Nothing inherited may change what a configuration means: no OTEL_* but ours, and no
        // PANOPTES_* (partitions, stages, metrics, log format) at all.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("OTEL_") || k.starts_with("PANOPTES_") {
                command.env_remove(&key);
            }
        }
        if let Some((endpoint, ratio)) = endpoint {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                .env("OTEL_TRACES_SAMPLER_ARG", ratio.to_string());
        }
        let child = command.spawn().context("cannot start `panoptes worker`")?;
        Ok(Self { child, log })
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the "worker subscribed" log line.
    pub(crate) async fn wait_subscribed(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if self.log_text().contains("worker subscribed") {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the worker exited with {status}:\n{}", self.log_text());
            }
            if start.elapsed() > GUARD {
                bail!("the worker did not subscribe in time:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit (it flushes its spans first); returns its summary.
    pub(crate) async fn stop(mut self) -> anyhow::Result<Option<Summary>> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the worker exited with {status}:\n{}", self.log_text());
                }
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the worker did not stop after SIGTERM:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let text = self.log_text();
        Ok(text
            .lines()
            .rev()
            .find(|l| l.contains("worker received"))
            .and_then(|l| {
                Some(Summary {
                    received: count_after(l, "received ")?,
                    processed: count_after(l, "produced ")?,
                    dropped: count_after(l, "dropped ")?,
                })
            }))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
