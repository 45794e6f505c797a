//! The control plane as an attacker with NATS access meets it: real `panoptes ingest` and
//! `panoptes worker` processes, a real nats-server, hand-made requests. Control is off unless
//! the topology enables it; requests must be signed by a listed key, fresh and new; what a
//! request names is confined; no reply carries the process's environment or a file's content.
//! Also the NATS permission config of docs/security.md, as a server runs it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt as _;
use panoptes::nats_args::NatsArgs;
use panoptes_client::control::auth::Signer;
use panoptes_client::control::cameras::ControlReply;
use panoptes_client::control::{ReloadReply, ReloadRequest};
use panoptes_contracts::Subjects;
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};

use crate::child::Logged;

const SECRET: &str = "s3cr3t-7f1c9a";

/// `panoptes ARGS…` in `dir`, logging to `<dir>/<first arg>.log`.
fn start_panoptes(dir: &Path, args: &[&str]) -> Logged {
    let root = panoptes_tests::require_setup();
    Logged::spawn(
        Command::new(env!("CARGO_BIN_EXE_panoptes"))
            .args(args)
            .current_dir(dir)
            .env("PANOPTES_OPERATORS", root.join("operators/dist"))
            .env("SECRET_TOKEN", SECRET)
            .env("RUST_LOG", "info"),
        dir.join(format!("{}.log", args[0])),
    )
}

/// Peak resident memory (VmHWM) of `p` in KiB.
fn peak_rss_kib(p: &Logged) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).expect("child status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A nats-server and one `panoptes ROLE topology.yaml` process, in a temp dir holding the
/// fixture `name`, the key pair `admin.key`(`.pub`) and `videos/`. Destructured in the tests;
/// the process is declared last, so it is killed before the server stops.
struct Deployment {
    server: NatsServer,
    dir: tempfile::TempDir,
    signer: Signer,
    process: Logged,
}

fn deployment(name: &str, role: &str) -> Deployment {
    let server = panoptes_tests::nats_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::copy(&fixture, dir.path().join("topology.yaml")).expect("copy fixture");
    panoptes_client::keys::generate_key_files(&dir.path().join("admin.key")).expect("keygen");
    std::fs::create_dir(dir.path().join("videos")).expect("videos dir");
    let signer = Signer::read(&dir.path().join("admin.key")).expect("key");
    let process = start_panoptes(dir.path(), &[role, "topology.yaml", "--nats", server.url()]);
    Deployment {
        server,
        dir,
        signer,
        process,
    }
}

/// Sends `body` on `subject` with `headers` and returns the first reply within `wait`, if any.
async fn ask<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    headers: Option<async_nats::HeaderMap>,
    body: &[u8],
    wait: Duration,
) -> Vec<T> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.expect("subscribe");
    match headers {
        Some(h) => client
            .publish_with_reply_and_headers(subject.to_owned(), inbox, h, body.to_vec().into())
            .await
            .expect("publish"),
        None => client
            .publish_with_reply(subject.to_owned(), inbox, body.to_vec().into())
            .await
            .expect("publish"),
    }
    client.flush().await.expect("flush");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
        // The server's "no responders" status (nobody subscribed yet) has no body.
        if msg.status.is_some() && msg.payload.is_empty() {
            continue;
        }
        out.push(serde_json::from_slice(&msg.payload).expect("JSON reply"));
        // One process answers in these tests; waiting for more would only cost time.
        break;
    }
    out
}

/// A signed camera control request through the command's own request path.
async fn camera(url: &str, signer: &Signer, op: &str, body: serde_json::Value) -> ControlReply {
    let replies = panoptes::camera_cmd::request(
        &NatsArgs::url(url),
        Some(signer),
        &Subjects::new("ctl"),
        op,
        serde_json::to_vec(&body).expect("json"),
        Duration::from_secs(30),
        Some(1),
    )
    .await
    .expect("request");
    assert_eq!(replies.len(), 1, "{op}: {replies:?}");
    replies.into_iter().next().expect("reply")
}

async fn reload(url: &str, signer: &Signer, wasm: &Path) -> ReloadReply {
    let replies = panoptes::operator_cmd::reload(
        &NatsArgs::url(url),
        Some(signer),
        &Subjects::new("ctl"),
        &ReloadRequest {
            stage: "probe".into(),
            wasm: Some(wasm.to_owned()),
            promote: false,
        },
        Duration::from_secs(30),
        Some(1),
    )
    .await
    .expect("reload request");
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.into_iter().next().expect("reply")
}

/// Waits until the process answers a signed `list` (it subscribed), bounded in attempts.
async fn wait_ready(url: &str, signer: &Signer, p: &Logged) {
    let client = panoptes::connect(url).await.expect("connect");
    for _ in 0..120 {
        let subject = "ctl.control.cameras.list";
        let h = signer.headers(subject, b"{}", panoptes_client::control::auth::now_ms());
        let replies: Vec<ControlReply> =
            ask(&client, subject, Some(h), b"{}", Duration::from_millis(500)).await;
        if !replies.is_empty() {
            return;
        }
    }
    panic!("ingest never answered; log:\n{}", p.log());
}

/// The camera IDs a `list` reply names.
fn camera_ids(listed: ControlReply) -> Vec<String> {
    listed
        .cameras
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

fn error_of(reply: &ControlReply) -> String {
    assert!(!reply.ok, "expected a refusal: {reply:?}");
    reply.error.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_is_off_unless_the_topology_enables_it() {
    let Deployment {
        server,
        dir: _dir,
        signer,
        process: ingest,
    } = deployment("control-off.yaml", "ingest");
    let client = panoptes::connect(server.url()).await.expect("connect");
    // Running: its camera's frames arrive.
    let mut frames = client.subscribe("ctl.frames.lobby").await.expect("sub");
    tokio::time::timeout(Duration::from_secs(60), frames.next())
        .await
        .unwrap_or_else(|_| panic!("no frame; log:\n{}", ingest.log()))
        .expect("frame");
    for op in ["list", "add", "remove", "reload"] {
        let subject = format!("ctl.control.cameras.{op}");
        let h = signer.headers(&subject, b"{}", panoptes_client::control::auth::now_ms());
        let replies: Vec<serde_json::Value> =
            ask(&client, &subject, Some(h), b"{}", Duration::from_secs(2)).await;
        assert!(replies.is_empty(), "{op} answered: {replies:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_foreign_replayed_and_stale_requests_are_refused() {
    let Deployment {
        server,
        dir: _dir,
        signer,
        process: ingest,
    } = deployment("control.yaml", "ingest");
    wait_ready(server.url(), &signer, &ingest).await;
    let client = panoptes::connect(server.url()).await.expect("connect");
    let subject = "ctl.control.cameras.remove";
    let body = br#"{"camera":"lobby"}"#;
    let wait = Duration::from_secs(10);
    let first = |r: Vec<ControlReply>| r.into_iter().next().expect("a reply");

    let unsigned = first(ask(&client, subject, None, body, wait).await);
    assert!(error_of(&unsigned).contains("unsigned"), "{unsigned:?}");

    let stranger_dir = tempfile::tempdir().expect("dir");
    let stranger_key = stranger_dir.path().join("k");
    panoptes_client::keys::generate_key_files(&stranger_key).expect("keygen");
    let stranger = Signer::read(&stranger_key).expect("key");
    let h = stranger.headers(subject, body, panoptes_client::control::auth::now_ms());
    let foreign = first(ask(&client, subject, Some(h), body, wait).await);
    assert!(error_of(&foreign).contains("not one of"), "{foreign:?}");

    let stale_at = panoptes_client::control::auth::now_ms() - 10 * 60 * 1000;
    let h = signer.headers(subject, body, stale_at);
    let stale = first(ask(&client, subject, Some(h), body, wait).await);
    assert!(error_of(&stale).contains("clock"), "{stale:?}");

    // A request for another subject does not verify here (the subject is signed).
    let h = signer.headers(
        "ctl.control.cameras.list",
        body,
        panoptes_client::control::auth::now_ms(),
    );
    let moved = first(ask(&client, subject, Some(h), body, wait).await);
    assert!(error_of(&moved).contains("does not verify"), "{moved:?}");

    // None of the refused requests removed the camera.
    let listed = camera(server.url(), &signer, "list", serde_json::json!({})).await;
    let ids = camera_ids(listed);
    assert_eq!(ids, ["lobby"]);

    // A captured valid request works once, and replaying it is refused.
    let h = signer.headers(subject, body, panoptes_client::control::auth::now_ms());
    let once = first(ask(&client, subject, Some(h.clone()), body, wait).await);
    assert!(once.ok && once.removed == ["lobby"], "{once:?}");
    // `remove` of a camera nobody runs gets no answer, so replay an `add` instead.
    let add_subject = "ctl.control.cameras.add";
    let add = serde_json::to_vec(&serde_json::json!({"camera": {
        "id": "gate", "source": {"test_pattern": {"text": "GATE"}}, "width": 160, "height": 120, "fps": 2
    }}))
    .expect("json");
    let h = signer.headers(add_subject, &add, panoptes_client::control::auth::now_ms());
    let added = first(ask(&client, add_subject, Some(h.clone()), &add, wait).await);
    assert!(added.ok, "{added:?}");
    let replayed = first(ask(&client, add_subject, Some(h), &add, wait).await);
    assert!(
        error_of(&replayed).contains("already received"),
        "{replayed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_cameras_cannot_read_the_environment_files_or_arbitrary_hosts() {
    let Deployment {
        server,
        dir,
        signer,
        process: ingest,
    } = deployment("control.yaml", "ingest");
    wait_ready(server.url(), &signer, &ingest).await;
    let url = server.url();
    let add = |id: &str, extra: serde_json::Value| {
        let mut cam = serde_json::json!({"id": id, "width": 160, "height": 120});
        if let (Some(cam), Some(extra)) = (cam.as_object_mut(), extra.as_object()) {
            cam.extend(extra.clone());
        }
        serde_json::json!({ "camera": cam })
    };

    // ${VAR} is not expanded, set or not: one answer, no secret, no oracle.
    let set = camera(
        url,
        &signer,
        "add",
        add(
            "a",
            serde_json::json!({
        "fps": "${SECRET_TOKEN}", "source": {"test_pattern": {"text": "x"}}}),
        ),
    )
    .await;
    let unset = camera(
        url,
        &signer,
        "add",
        add(
            "a",
            serde_json::json!({
        "fps": "${NOT_SET_ANYWHERE}", "source": {"test_pattern": {"text": "x"}}}),
        ),
    )
    .await;
    let (set, unset) = (error_of(&set), error_of(&unset));
    assert!(
        !set.contains(SECRET) && set.contains("no ${VAR} expansion"),
        "{set}"
    );
    assert_eq!(set, unset);
    let in_text = camera(
        url,
        &signer,
        "add",
        add(
            "a",
            serde_json::json!({
        "source": {"test_pattern": {"text": "${SECRET_TOKEN}"}}}),
        ),
    )
    .await;
    assert!(!error_of(&in_text).contains(SECRET));

    // Files outside control.allow_dirs: refused alike whether they exist or not.
    let file = |path: &str| serde_json::json!({"source": {"file": {"path": path}}});
    let shadow = error_of(&camera(url, &signer, "add", add("f", file("/etc/shadow"))).await);
    let missing = error_of(&camera(url, &signer, "add", add("f", file("/etc/no-such-file"))).await);
    assert!(shadow.contains("outside the directories"), "{shadow}");
    assert_eq!(
        shadow.replace("/etc/shadow", "P"),
        missing.replace("/etc/no-such-file", "P")
    );
    let escape = error_of(
        &camera(
            url,
            &signer,
            "add",
            add("f", file("videos/../topology.yaml")),
        )
        .await,
    );
    assert!(escape.contains("outside the directories"), "{escape}");
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("videos/link.mp4")).expect("symlink");
    let link = error_of(&camera(url, &signer, "add", add("f", file("videos/link.mp4"))).await);
    assert!(
        link.contains("outside the directories") && !link.contains("root:"),
        "{link}"
    );

    // A FIFO inside an allowed directory is refused without blocking the control loop.
    let fifo = dir.path().join("videos/pipe.mp4");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let refused = error_of(&camera(url, &signer, "add", add("f", file("videos/pipe.mp4"))).await);
    assert!(
        refused.contains("FIFO") || refused.contains("not a regular file"),
        "{refused}"
    );
    let listed = camera(url, &signer, "list", serde_json::json!({})).await;
    assert!(listed.ok, "the control loop still answers: {listed:?}");

    // Hosts outside control.allow_hosts are never contacted.
    let http =
        serde_json::json!({"source": {"http": {"url": "http://169.254.169.254/latest/meta-data"}}});
    let ssrf = error_of(&camera(url, &signer, "add", add("h", http)).await);
    assert!(ssrf.contains("allow_hosts"), "{ssrf}");
    let listed = camera(url, &signer, "list", serde_json::json!({})).await;
    let ids = camera_ids(listed);
    assert_eq!(ids, ["lobby"], "nothing refused was started");
    assert!(
        !ingest.log().contains(SECRET),
        "the log never shows the secret either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reloads_are_signed_confined_and_bounded() {
    let Deployment {
        server,
        dir,
        signer,
        process: worker,
    } = deployment("control.yaml", "worker");
    let url = server.url();
    // Ready once it answers a reload of its own module (unchanged).
    let client = panoptes::connect(url).await.expect("connect");
    let subject = "ctl.control.operators.reload";
    let body = br#"{"stage":"probe"}"#;
    let mut ready = false;
    for _ in 0..120 {
        let h = signer.headers(subject, body, panoptes_client::control::auth::now_ms());
        let r: Vec<ReloadReply> =
            ask(&client, subject, Some(h), body, Duration::from_millis(500)).await;
        if let Some(r) = r.first() {
            assert!(r.ok, "{r:?}");
            ready = true;
            break;
        }
    }
    assert!(ready, "worker never answered; log:\n{}", worker.log());
    let before = peak_rss_kib(&worker);

    let unsigned: Vec<ReloadReply> =
        ask(&client, subject, None, body, Duration::from_secs(10)).await;
    assert!(
        unsigned.len() == 1
            && !unsigned[0].ok
            && unsigned[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("unsigned"),
        "{unsigned:?}"
    );

    for outside in ["/dev/zero", "/etc/shadow", "/etc/passwd"] {
        let r = reload(url, &signer, Path::new(outside)).await;
        let e = r.error.clone().unwrap_or_default();
        assert!(
            !r.ok && e.contains("outside the directories"),
            "{outside}: {r:?}"
        );
        assert!(!e.contains("root:"), "{e}");
    }
    // Inside an allowed directory: a FIFO, a device behind a symlink and a huge sparse file
    // are refused without reading them.
    let videos = dir.path().join("videos");
    assert!(
        Command::new("mkfifo")
            .arg(videos.join("pipe.wasm"))
            .status()
            .expect("mkfifo")
            .success()
    );
    std::os::unix::fs::symlink("/dev/zero", videos.join("zero.wasm")).expect("symlink");
    let huge = std::fs::File::create(videos.join("huge.wasm")).expect("create");
    huge.set_len(64 << 30).expect("sparse file");
    for name in ["pipe.wasm", "zero.wasm", "huge.wasm"] {
        let r = reload(url, &signer, &videos.join(name)).await;
        assert!(!r.ok, "{name}: {r:?}");
    }
    // A file that is not a module: refused, and its bytes are not echoed.
    std::fs::write(videos.join("secret.wasm"), format!("TOKEN={SECRET}\n")).expect("write");
    let r = reload(url, &signer, &videos.join("secret.wasm")).await;
    let e = r.error.clone().unwrap_or_default();
    assert!(!r.ok && !e.contains(SECRET) && !e.contains("TOKEN"), "{e}");
    // Still serving: its own module reloads (unchanged).
    let h = signer.headers(subject, body, panoptes_client::control::auth::now_ms());
    let own: Vec<ReloadReply> = ask(&client, subject, Some(h), body, Duration::from_secs(30)).await;
    assert!(own.len() == 1 && own[0].ok, "{own:?}");
    let after = peak_rss_kib(&worker);
    eprintln!("worker peak RSS: {before} KiB before the requests, {after} KiB after");
    assert!(
        after < before + 256 * 1024,
        "the refused reloads grew the worker from {before} to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_permissions_keep_each_role_to_its_subjects() {
    let root = panoptes_tests::repo_root();
    let conf = std::fs::read_to_string(root.join("deploy/nats/permissions.conf"))
        .expect("deploy/nats/permissions.conf");
    let server = NatsServer::start(&NatsServerOptions {
        extra_config: conf,
        ..NatsServerOptions::default()
    })
    .expect("nats-server with the documented permissions");
    let login = |user: &str| {
        let mut args = NatsArgs::url(server.url());
        args.nats_user = Some(user.to_owned());
        args.nats_password = Some(format!("change-me-{user}"));
        args
    };
    // What arrives on a subject, in order: a forbidden publish never does, so the allowed
    // marker sent after it (once the forbidden one was flushed) is the first message. Fresh
    // connections for every check, so one check's refused publish cannot affect the next;
    // the marker is repeated until something arrives (a loaded machine may be slow), which
    // cannot let the forbidden message arrive first.
    let first_arrival = async |watcher: &str, subject: &str, forbidden: &str, allowed: &str| {
        let watcher = login(watcher).connect().await.expect("watcher");
        let forbidden = login(forbidden).connect().await.expect("forbidden user");
        let allowed = login(allowed).connect().await.expect("allowed user");
        let mut sub = watcher
            .subscribe(subject.to_owned())
            .await
            .expect("subscribe");
        watcher.flush().await.expect("flush");
        let _ = forbidden
            .publish(subject.to_owned(), "forbidden".into())
            .await;
        let _ = forbidden.flush().await;
        for _ in 0..20 {
            allowed
                .publish(subject.to_owned(), "allowed".into())
                .await
                .expect("publish");
            allowed.flush().await.expect("flush");
            if let Ok(msg) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
                let msg = msg.expect("subscription open");
                return String::from_utf8_lossy(&msg.payload).into_owned();
            }
        }
        panic!("nothing arrived on {subject}");
    };

    // An ingest user cannot reload operators (the worker would never see it)…
    assert_eq!(
        first_arrival(
            "worker",
            "panoptes.control.operators.reload",
            "ingest",
            "admin"
        )
        .await,
        "allowed"
    );
    // …nor can a viewer publish frames, which an ingest user can.
    assert_eq!(
        first_arrival("worker", "panoptes.frames.lobby", "viewer", "ingest").await,
        "allowed"
    );
    // Previews come from ingest, never from a worker, and a viewer may read them.
    assert_eq!(
        first_arrival("viewer", "panoptes.preview.lobby", "worker", "ingest").await,
        "allowed"
    );
    // A viewer cannot send camera control requests either.
    assert_eq!(
        first_arrival("ingest", "panoptes.control.cameras.add", "viewer", "admin").await,
        "allowed"
    );
    let viewer = login("viewer").connect().await.expect("viewer user");
    let admin = login("admin").connect().await.expect("admin user");
    // A viewer may not read control traffic.
    let mut sub = viewer
        .subscribe("panoptes.control.>")
        .await
        .expect("subscribe");
    viewer.flush().await.expect("flush");
    admin
        .publish("panoptes.control.cameras.list", "{}".into())
        .await
        .expect("publish");
    admin.flush().await.expect("flush");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), sub.next())
            .await
            .is_err(),
        "a viewer received control traffic"
    );
}
