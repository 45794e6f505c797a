//! What the web view costs the pipeline: the quickstart's detector pipeline on 16 cameras
//! (copies of the quickstart's first camera, 1 fps each; `--fps 2` offers more than it can
//! take, so its throughput is its capacity); measured in alternating windows without the view
//! and with the view serving a browser-like WebSocket client that reads every frame it is
//! sent. Then a client that stops reading: the process's resident memory before and after.
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
    /// Frames per second of each camera. On a 2-core machine 16 cameras at 1 fps offer about
    /// what the pipeline takes (15–16 msg/s), at 2 fps more than it takes (about 12 msg/s: the
    /// raw frames cost ingest and NATS too); at the quickstart's 10 fps, rendering and moving
    /// 430 MB/s of raw frames would take the machine from the detector.
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

/// CPU seconds `pid` (`self` for this process) has used, user and system.
fn cpu_s(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command (which may hold spaces): state is the 3rd field, utime
            // the 14th, stime the 15th.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            Some(ticks as f64 / hz.max(1) as f64)
        })
        .unwrap_or(0.0)
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
    panoptes_tests::copy_first_camera(&mut topology, options.cameras, options.fps);
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
    // Messages per second, and the CPU cores this process and nats-server kept busy.
    let server_pid = nats.pid().to_string();
    let measure = || {
        let received = received.clone();
        let server_pid = server_pid.clone();
        async move {
            let cpu = || cpu_s("self") + cpu_s(&server_pid);
            let start = (Instant::now(), received.load(Ordering::Relaxed), cpu());
            tokio::time::sleep(window).await;
            let secs = start.0.elapsed().as_secs_f64();
            (
                (received.load(Ordering::Relaxed) - start.1) as f64 / secs,
                (cpu() - start.2) / secs,
            )
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
    let mut cpu_per_msg = (Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        let (bare, bare_cpu) = measure().await;
        let view = view_options
            .start_in_run(running.client.clone(), &topology)
            .await?;
        let frames = Arc::new(AtomicU64::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let reader = tokio::spawn(client(view.url(), true, frames.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = frames.load(Ordering::Relaxed);
        let (viewed, viewed_cpu) = measure().await;
        let sent = (frames.load(Ordering::Relaxed) - before) as f64 / window.as_secs_f64();
        stop.cancel();
        let _ = reader.await;
        view.stop().await;
        println!(
            "round {round}: without the view {bare:.2} msg/s, {bare_cpu:.2} cores busy; with it \
             {viewed:.2} msg/s, {viewed_cpu:.2} cores (browser shown {sent:.1} frames/s)"
        );
        cpu_per_msg.0.push(bare_cpu * 1e3 / bare.max(1e-9));
        cpu_per_msg.1.push(viewed_cpu * 1e3 / viewed.max(1e-9));
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
        median(shown.clone())
    );
    let (ca, cb) = (median(cpu_per_msg.0), median(cpu_per_msg.1));
    println!(
        "CPU per detection message (this process and nats-server): median without {ca:.0} ms, with {cb:.0} ms, ratio {:.3}",
        ca / cb
    );

    // What a preview costs its ingest node, on one of these cameras' frames.
    let mut one = counter.subscribe("panoptes.frames.>").await?;
    let frame = loop {
        let m = one
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("no frame"))?;
        if let Ok(f) = panoptes_contracts::Frame::decode(m.payload, None) {
            break f;
        }
    };
    drop(one);
    let preview = topology.config.cameras[0].preview;
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..31 {
        let t = Instant::now();
        let (jpeg, _, _) = panoptes_op_preprocess::jpeg::thumbnail(
            frame.pixels.as_slice(),
            frame.width,
            frame.height,
            preview.width,
            preview.quality,
        )?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        size = jpeg.len();
    }
    let ms = median(times);
    println!(
        "a preview of a {}x{} frame ({} px wide, quality {}, {} KB) takes {ms:.2} ms to make \
         (on this busy machine): at the {:.1} previews/s shown, {:.1}% of one core",
        frame.width,
        frame.height,
        preview.width,
        preview.quality,
        size / 1024,
        median(shown.clone()),
        ms * median(shown.clone()) / 10.0
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
