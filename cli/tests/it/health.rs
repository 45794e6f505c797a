//! `/healthz` and `/readyz` on the metrics listener, as Kubernetes probes and Compose
//! healthchecks read them: a worker started before NATS is alive but not ready, turns ready once
//! the server is up, not ready when it goes away and ready again when it is back; an ingest node
//! is ready once its cameras run; answers name conditions, not settings.

use std::path::Path;
use std::time::{Duration, Instant};

use panoptes_tests::nats::ServerControls as _;
use panoptes_tests::{WorkerProcesses, free_port, http_get};

const WAIT: Duration = Duration::from_secs(60);

/// Polls `path` on `addr` until `want` holds for its answer; the last answer otherwise.
async fn wait_for(
    addr: &str,
    path: &str,
    what: &str,
    procs: &WorkerProcesses,
    want: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((status, body)) = http_get(addr, path).await {
            let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            if want(status, &json) {
                return json;
            }
            last = Some((status, json));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: {path} on {addr} last answered {last:?}\nlogs:\n{}",
        procs.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_ready_only_while_connected_to_nats() {
    let temp = tempfile::tempdir().expect("temp dir");
    // The server's port is chosen, then the server stopped: nothing listens there yet.
    let mut server = panoptes_tests::nats_server();
    let url = server.url().to_owned();
    server.pause();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut procs = WorkerProcesses::new();
    procs
        .spawn(
            Path::new(env!("CARGO_BIN_EXE_panoptes")),
            Path::new("topologies/quickstart.yaml"),
            &url,
            &["--metrics", &metrics],
            "info",
            (temp.path(), "worker"),
        )
        .expect("spawn worker");

    // Alive at once, while it still waits for NATS.
    wait_for(&metrics, "/healthz", "alive", &procs, |s, _| s == 200).await;
    let waiting = wait_for(&metrics, "/readyz", "not ready", &procs, |s, _| s == 503).await;
    assert_eq!(waiting["ready"], false, "{waiting}");

    server.resume().expect("start nats-server");
    let ready = wait_for(&metrics, "/readyz", "ready", &procs, |s, _| s == 200).await;
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["checks"]["nats"], "connected", "{ready}");
    assert_eq!(ready["checks"]["worker"], "running", "{ready}");
    assert_eq!(ready["checks"]["leases"], "running", "{ready}");
    // Conditions only: neither the server's address nor the topology's settings.
    assert!(!ready.to_string().contains("127.0.0.1"), "{ready}");

    server.pause();
    let lost = wait_for(
        &metrics,
        "/readyz",
        "not ready without NATS",
        &procs,
        |s, _| s == 503,
    )
    .await;
    assert_ne!(lost["checks"]["nats"], "connected", "{lost}");
    assert_eq!(
        http_get(&metrics, "/healthz").await.map(|(s, _)| s),
        Some(200),
        "a worker waiting for NATS is still alive"
    );

    server.resume().expect("restart nats-server");
    wait_for(&metrics, "/readyz", "ready again", &procs, |s, _| s == 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_node_is_ready_once_its_cameras_run() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = panoptes_tests::nats_server();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut procs = WorkerProcesses::new();
    procs
        .spawn_role(
            Path::new(env!("CARGO_BIN_EXE_panoptes")),
            "ingest",
            Path::new("topologies/quickstart.yaml"),
            server.url(),
            &["--metrics", &metrics],
            "info",
            (temp.path(), "ingest"),
        )
        .expect("spawn ingest");
    let ready = wait_for(&metrics, "/readyz", "ready", &procs, |s, _| s == 200).await;
    assert_eq!(ready["checks"]["nats"], "connected", "{ready}");
    // An ingest node runs no worker and takes no leases.
    assert!(ready["checks"].get("worker").is_none(), "{ready}");
    assert!(ready["checks"].get("leases").is_none(), "{ready}");
    // /metrics is still served beside them.
    wait_for(&metrics, "/metrics", "metrics", &procs, |s, page| {
        s == 200 && page.as_str().is_some_and(|p| p.contains("panoptes_"))
    })
    .await;
}
