//! The measured runs: one nats-server and the paced cameras for the whole bench, and per
//! configuration and round a fresh OTLP receiver and worker, with throughput, CPU and spans
//! counted over the window.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use futures::StreamExt as _;
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_tests::otlp::{OtlpReceiver, ReceivedSpan};
use panoptes_tests::procstat::{clock_ticks, cpu_ticks, find_server_pid, machine_busy_ticks};
use tokio_util::sync::CancellationToken;

use crate::worker::{Summary, Worker};
use crate::{CONFIGS, NAMESPACE, Options, PARTITIONS, min_max, pct};

/// One worker's run: one configuration in one round.
pub(crate) struct Sample {
    pub(crate) det_per_s: f64,
    pub(crate) offered_per_s: f64,
    /// Of one core (1.0 = one core busy), over the window.
    pub(crate) worker_cpu: f64,
    pub(crate) bench_cpu: f64,
    pub(crate) server_cpu: Option<f64>,
    /// Machine busy time not accounted to the worker, this bench or nats-server.
    pub(crate) other_cpu: Option<f64>,
    /// Of which steal (the hypervisor ran something else), of one core.
    pub(crate) steal: Option<f64>,
    /// Lowest and highest det/s of the window's one-second slices.
    pub(crate) slice_range: (f64, f64),
    /// Spans that arrived during the window, per second (export batches make this lumpy at
    /// low rates).
    pub(crate) window_spans_per_s: f64,
    /// The worker's whole life, after it flushed.
    pub(crate) summary: Option<Summary>,
    pub(crate) spans: SpanCounts,
}

impl Sample {
    pub(crate) fn cpu_ms_per_det(&self) -> f64 {
        self.worker_cpu / self.det_per_s * 1e3
    }
}

/// Spans the receiver got from one worker over its whole life.
#[derive(Clone, Copy, Default)]
pub(crate) struct SpanCounts {
    pub(crate) total: usize,
    pub(crate) frame: usize,
    /// Frame spans of frames live delivery dropped (`outcome = dropped`).
    pub(crate) dropped_frame: usize,
    pub(crate) stage: usize,
    pub(crate) batch: usize,
    pub(crate) publish: usize,
    /// Requests the receiver turned away (should be 0).
    pub(crate) rejected: usize,
}

impl SpanCounts {
    fn of(spans: &[ReceivedSpan], rejected: usize) -> Self {
        let mut c = Self {
            total: spans.len(),
            rejected,
            ..Self::default()
        };
        for s in spans {
            match s.name.as_str() {
                "frame" => {
                    c.frame += 1;
                    if s.attr("outcome") == Some("dropped") {
                        c.dropped_frame += 1;
                    }
                }
                "stage" => c.stage += 1,
                "batch" => c.batch += 1,
                "publish" => c.publish += 1,
                _ => {}
            }
        }
        c
    }

    pub(crate) fn add(self, o: Self) -> Self {
        Self {
            total: self.total + o.total,
            frame: self.frame + o.frame,
            dropped_frame: self.dropped_frame + o.dropped_frame,
            stage: self.stage + o.stage,
            batch: self.batch + o.batch,
            publish: self.publish + o.publish,
            rejected: self.rejected + o.rejected,
        }
    }
}

struct Bench<'a> {
    options: &'a Options,
    topology: &'a Path,
    url: &'a str,
    dir: &'a Path,
    detections: Arc<AtomicU64>,
    published: Arc<AtomicU64>,
    server_pid: Option<u32>,
    ticks: f64,
}

impl Bench<'_> {
    /// One run: a fresh receiver and worker, wait until subscribed, warm up, one measured
    /// window, stop.
    async fn run(&self, name: &str, ratio: Option<f64>, round: usize) -> anyhow::Result<Sample> {
        let receiver = OtlpReceiver::start().await?;
        let endpoint = receiver.grpc_endpoint();
        let log = self.dir.join(format!(
            "worker-r{round}-{}.log",
            name.trim_end_matches('%')
        ));
        let mut worker = Worker::start(
            self.topology,
            self.url,
            ratio.map(|r| (endpoint.as_str(), r)),
            log,
        )?;
        worker.wait_subscribed().await?;
        let exporting = worker.log_text().contains("exporting traces over OTLP");
        if exporting != ratio.is_some() {
            bail!(
                "configuration {name}: the worker {} exporting traces:\n{}",
                if exporting { "is" } else { "is not" },
                worker.log_text()
            );
        }
        tokio::time::sleep(self.options.warmup).await;

        let pid = worker.child.id();
        let me = std::process::id();
        // Spans counted first and last, so that cloning them is outside the CPU window.
        let spans0 = receiver.spans().len();
        let (t0, d0, p0, w0, b0, s0, m0) = (
            Instant::now(),
            self.detections.load(Ordering::Relaxed),
            self.published.load(Ordering::Relaxed),
            cpu_ticks(pid),
            cpu_ticks(me),
            self.server_pid.and_then(cpu_ticks),
            machine_busy_ticks(),
        );
        // The window in slices of about a second, to show how steady the rate was within it.
        let slices = self.options.window.as_secs_f64().round().max(1.0) as u32;
        let mut slice_rates = Vec::with_capacity(slices as usize);
        let mut before = d0;
        for _ in 0..slices {
            let start = Instant::now();
            tokio::time::sleep(self.options.window / slices).await;
            let now = self.detections.load(Ordering::Relaxed);
            slice_rates.push(now.saturating_sub(before) as f64 / start.elapsed().as_secs_f64());
            before = now;
        }
        let (secs, d1, p1, w1, b1, s1, m1) = (
            t0.elapsed().as_secs_f64(),
            self.detections.load(Ordering::Relaxed),
            self.published.load(Ordering::Relaxed),
            cpu_ticks(pid),
            cpu_ticks(me),
            self.server_pid.and_then(cpu_ticks),
            machine_busy_ticks(),
        );
        let spans1 = receiver.spans().len();

        let delta = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
        let Some(worker_ticks) = delta(w0, w1) else {
            bail!(
                "the worker's CPU time is unreadable:\n{}",
                worker.log_text()
            );
        };
        let (bench_ticks, server_ticks) = (delta(b0, b1), delta(s0, s1));
        let share = |ticks: u64| ticks as f64 / self.ticks / secs;
        let machine = m0.zip(m1).map(|(a, b)| {
            (
                b.busy.saturating_sub(a.busy),
                b.steal.saturating_sub(a.steal),
            )
        });
        let other_cpu = machine.map(|(busy, _)| {
            let ours = worker_ticks + bench_ticks.unwrap_or(0) + server_ticks.unwrap_or(0);
            share(busy.saturating_sub(ours))
        });
        let steal = machine.map(|(_, steal)| share(steal));

        let summary = worker.stop().await?;
        // The worker flushed before it exited, and an export is answered only once recorded.
        let spans = SpanCounts::of(&receiver.spans(), receiver.rejected().len());
        Ok(Sample {
            det_per_s: d1.saturating_sub(d0) as f64 / secs,
            offered_per_s: p1.saturating_sub(p0) as f64 / secs,
            worker_cpu: share(worker_ticks),
            bench_cpu: bench_ticks.map_or(f64::NAN, share),
            server_cpu: server_ticks.map(share),
            other_cpu,
            steal,
            slice_range: min_max(&slice_rates),
            window_spans_per_s: spans1.saturating_sub(spans0) as f64 / secs,
            summary,
            spans,
        })
    }
}

/// Starts the cameras (`panoptes_tests::spawn_paced_cameras`) on the connection ingest nodes use.
async fn start_cameras(
    url: &str,
    frames: &[(String, Bytes)],
    fps: f64,
    published: &Arc<AtomicU64>,
    stop: &CancellationToken,
) -> anyhow::Result<(async_nats::Client, Vec<tokio::task::JoinHandle<()>>)> {
    let publisher = panoptes::connect(url).await?;
    let cameras =
        panoptes_tests::spawn_paced_cameras(&publisher, NAMESPACE, frames, fps, published, stop);
    Ok((publisher, cameras))
}

fn report(label: &str, s: &Sample, took: Duration) {
    eprintln!(
        "  {label}: {:6.1} det/s (1 s slices {:.0}–{:.0}), offered {:.0}/s, worker CPU {:.0}%, other {}, steal {}, {:.0} spans/s in the window, {} spans in all ({:.0} s)",
        s.det_per_s,
        s.slice_range.0,
        s.slice_range.1,
        s.offered_per_s,
        s.worker_cpu * 100.0,
        pct(s.other_cpu.unwrap_or(f64::NAN)),
        pct(s.steal.unwrap_or(f64::NAN)),
        s.window_spans_per_s,
        s.spans.total,
        took.as_secs_f64()
    );
}

/// All rounds; `samples[config][round]`.
pub(crate) async fn measure(
    options: &Options,
    frames: &[(String, Bytes)],
    dir: &Path,
) -> anyhow::Result<Vec<Vec<Sample>>> {
    let server =
        tokio::task::spawn_blocking(|| NatsServer::start(&NatsServerOptions::default())).await??;
    let server_pid = find_server_pid(&server.store_dir().join("nats.conf"));
    if server_pid.is_none() {
        eprintln!("warning: nats-server's process not found in /proc; its CPU is not reported");
    }
    let url = server.url().to_owned();
    let mut topology = panoptes_tests::detector_topology(options.side, 1);
    topology.config.namespace = NAMESPACE.to_owned();
    topology.config.partitions = PARTITIONS;
    let topology = panoptes_tests::write_topology(dir, NAMESPACE, &topology);

    // Detections: a connection with default capacities (thousands of messages), so the counting
    // side never drops.
    let client = async_nats::connect(&url).await?;
    let mut subscription = client
        .subscribe(format!("{NAMESPACE}.detections.*"))
        .await?;
    client.flush().await?;
    let detections = Arc::new(AtomicU64::new(0));
    let counter = {
        let detections = detections.clone();
        tokio::spawn(async move {
            while subscription.next().await.is_some() {
                detections.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let published = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (publisher, cameras) = start_cameras(&url, frames, options.fps, &published, &stop).await?;

    let bench = Bench {
        options,
        topology: &topology,
        url: &url,
        dir,
        detections,
        published,
        server_pid,
        ticks: clock_ticks(),
    };
    // One run not counted first: the first worker of a session starts on cold caches.
    let started = Instant::now();
    let s = bench.run("warm-up", None, 0).await?;
    report("warm-up run, off (not counted)", &s, started.elapsed());
    let mut samples: Vec<Vec<Sample>> = CONFIGS.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        for k in 0..CONFIGS.len() {
            let c = (round + k) % CONFIGS.len();
            let (name, ratio) = CONFIGS[c];
            let started = Instant::now();
            let s = bench.run(name, ratio, round).await?;
            let label = format!("round {}/{} {name:>4}", round + 1, options.rounds);
            report(&label, &s, started.elapsed());
            if let Some(list) = samples.get_mut(c) {
                list.push(s);
            }
        }
    }

    stop.cancel();
    for c in cameras {
        c.await?;
    }
    publisher.flush().await?;
    counter.abort();
    drop(client);
    tokio::task::spawn_blocking(move || server.stop()).await?;
    Ok(samples)
}
