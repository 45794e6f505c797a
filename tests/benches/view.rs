//! What the web view costs the pipeline: the quickstart's detector pipeline on 16 cameras
//! (copies of the quickstart's first camera, 1 fps each), offered more frames than it can take, so its
//! throughput is its capacity; measured in alternating windows without the view and with the
//! view serving a browser-like WebSocket client that reads every frame it is sent. Then a
//! client that stops reading: the process's resident memory before and after.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! export CARGO_TARGET_DIR=/root/.cache/panoptes/target
//! cargo bench -p panoptes-tests --bench view                      # 5 rounds of 20 s windows
//! cargo bench -p panoptes-tests --bench view -- --rounds 5 --window-s 30
//! ```
//!
//! Prints detection messages per second per window, their medians and the ratio with/without
//! (the target: at least 0.97), and the memory. Nothing here asserts a speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser as _;
use futures::StreamExt as _;
use panoptes::runner::{Role, Running};
use panoptes::view_cmd::ViewOptions;
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_topology::TopologyFile;

#[derive(clap::Parser, Debug)]
struct Options {
    /// Cameras (copies of the quickstart's first, at its size).
    #[arg(long, env = "PANOPTES_BENCH_CAMERAS", default_value_t = 16)]
    cameras: usize,
    /// Frames per second of each camera. 16 cameras at 1 fps offer several times what the
    /// detector takes here; at the quickstart's 10 fps, rendering and moving 430 MB/s of raw
    /// frames would take the machine from the detector, and the bench would measure ingest.
    #[arg(long, env = "PANOPTES_BENCH_FPS", default_value_t = 1)]
    fps: u32,
    /// Pairs of windows (without, with the view).
    #[arg(long, env = "PANOPTES_BENCH_ROUNDS", default_value_t = 5)]
    rounds: usize,
    #[arg(long, env = "PANOPTES_BENCH_WINDOW_S", default_value_t = 20)]
    window_s: u64,
    /// cargo bench passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// A browser that reads every frame (`read`) or none after connecting.
async fn client(
    url: String,
    read: bool,
    frames: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) {
    let ws_url = url.replacen("http://", "ws://", 1) + "ws";
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(ws_url).await else {
        eprintln!("cannot connect to the view");
        return;
    };
    if !read {
        stop.cancelled().await;
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            m = ws.next() => match m {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(_))) => {
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    }
    let _ = ws.close(None).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let root = panoptes_tests::require_setup();
    panoptes_tests::gst();
    let nats = NatsServer::start(&NatsServerOptions::default())?;
    let mut topology = TopologyFile::load(&root.join("topologies/quickstart.yaml"))
        .map_err(|d| anyhow::anyhow!(d.render(false)))?;
    let first = topology.config.cameras[0].clone();
    topology.config.cameras = (0..options.cameras)
        .map(|i| {
            let mut c = first.clone();
            c.id = format!("cam-{i:02}");
            c.fps = options.fps;
            c
        })
        .collect();
    let running = Running::start(&topology, Some(nats.url()), Role::All).await?;
    let counter = async_nats::connect(nats.url()).await?;
    let mut results = counter.subscribe("panoptes.detections.*").await?;
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while results.next().await.is_some() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    eprintln!("warming up (30 s: model load, first batches)…");
    tokio::time::sleep(Duration::from_secs(30)).await;

    let window = Duration::from_secs(options.window_s);
    let measure = || {
        let received = received.clone();
        async move {
            let start = (Instant::now(), received.load(Ordering::Relaxed));
            tokio::time::sleep(window).await;
            (received.load(Ordering::Relaxed) - start.1) as f64 / start.0.elapsed().as_secs_f64()
        }
    };
    let view_options = ViewOptions {
        view_listen: "127.0.0.1:0".parse()?,
        view_token: None,
        view_max_fps: 5.0,
        view_max_total_fps: 12.0,
        jaeger_url: None,
    };
    let (mut without, mut with, mut shown) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        let bare = measure().await;
        let view = view_options
            .start_in_run(running.client.clone(), &topology)
            .await?;
        let frames = Arc::new(AtomicU64::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let reader = tokio::spawn(client(view.url(), true, frames.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = frames.load(Ordering::Relaxed);
        let viewed = measure().await;
        let sent = (frames.load(Ordering::Relaxed) - before) as f64 / window.as_secs_f64();
        stop.cancel();
        let _ = reader.await;
        view.stop().await;
        println!(
            "round {round}: without the view {bare:.2} msg/s; with it {viewed:.2} msg/s \
             (browser shown {sent:.1} frames/s)"
        );
        without.push(bare);
        with.push(viewed);
        shown.push(sent);
    }
    let (a, b) = (median(without), median(with));
    println!(
        "\n{} cameras, {} rounds of {} s: median without {a:.2} msg/s, with {b:.2} msg/s, ratio {:.3} (target ≥ 0.97); browser {:.1} frames/s",
        options.cameras,
        options.rounds,
        options.window_s,
        b / a,
        median(shown)
    );

    // A browser that stops reading: the view's memory stays put.
    let view = view_options
        .start_in_run(running.client.clone(), &topology)
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = rss_kib();
    let stop = tokio_util::sync::CancellationToken::new();
    let stalled = tokio::spawn(client(view.url(), false, Arc::default(), stop.clone()));
    tokio::time::sleep(window).await;
    let rss_after = rss_kib();
    stop.cancel();
    let _ = stalled.await;
    view.stop().await;
    println!(
        "a browser that stopped reading for {} s: resident memory {} MiB before, {} MiB after",
        options.window_s,
        rss_before / 1024,
        rss_after / 1024
    );
    running.stop().await?;
    Ok(())
}
