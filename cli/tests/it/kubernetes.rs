//! The Helm chart (`deploy/helm/panoptes`): it renders with Helm's own engine (the
//! helm-python-sdk wheel) for the default values and the split-unit GPU example, every manifest
//! validates against the Kubernetes API schemas (kubernetes-validate), inconsistent values are
//! refused at render time, and the NATS configuration it hands the NATS chart partitions frames
//! exactly as Panoptes computes partitions, on a real nats-server started with that config.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt as _;
use panoptes_contracts::partition::partition_of;

fn python() -> PathBuf {
    panoptes_files::paths::venv().join("bin").join("python")
}

fn check_script() -> PathBuf {
    panoptes_tests::repo_root().join("deploy/helm/check.py")
}

#[test]
fn the_chart_renders_and_every_manifest_validates() {
    let out = Command::new(python())
        .arg(check_script())
        .arg("render")
        .current_dir(panoptes_tests::repo_root())
        .output()
        .expect("run deploy/helm/check.py (scripts/setup.sh installs its packages)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check.py render failed:\n{stdout}\n{stderr}"
    );
    // Both value sets were rendered, and the kinds a deployment needs are among the manifests.
    for kind in [
        "ConfigMap/",
        "Deployment/",
        "PodDisruptionBudget/",
        "Service/",
        "ScaledObject/",
    ] {
        assert!(stdout.contains(kind), "no {kind} rendered:\n{stdout}");
    }
    assert!(
        !stdout.contains("FAIL"),
        "a manifest failed validation:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_nats_config_partitions_frames_as_panoptes_does() {
    let temp = tempfile::tempdir().expect("temp dir");
    let conf = temp.path().join("nats.conf");
    let store = temp.path().join("store");
    let port = panoptes_tests::free_port();
    let out = Command::new(python())
        .arg(check_script())
        .args(["nats-conf".as_ref(), conf.as_os_str()])
        .args(["--port", &port.to_string()])
        .arg("--store")
        .arg(&store)
        .current_dir(panoptes_tests::repo_root())
        .output()
        .expect("run check.py nats-conf");
    assert!(
        out.status.success(),
        "check.py nats-conf failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = panoptes_pipeline::nats_server::find_binary().expect("nats-server");
    let mut server = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nats-server with the chart's config");
    let url = format!("nats://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = async_nats::connect(&url).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = client.unwrap_or_else(|| {
        let _ = server.kill();
        panic!("nats-server with the chart's config did not start")
    });
    let mut sub = client
        .subscribe("panoptes.frames.*.*")
        .await
        .expect("subscribe");
    let cameras: Vec<String> = (0..24).map(|i| format!("cam-{i}")).collect();
    for camera in &cameras {
        client
            .publish(format!("panoptes.frames.{camera}"), "x".into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let mut seen = Vec::new();
    while seen.len() < cameras.len() {
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .ok()
            .flatten();
        let Some(msg) = msg else { break };
        seen.push(msg.subject.to_string());
    }
    let _ = server.kill();
    let _ = server.wait();
    let want: Vec<String> = cameras
        .iter()
        .map(|c| format!("panoptes.frames.{c}.{}", partition_of(c, 16)))
        .collect();
    assert_eq!(
        seen, want,
        "the chart's mapping disagrees with Panoptes' partitions"
    );
}
