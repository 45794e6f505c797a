//! The view's server over a real nats-server: with a token, no request gets anything without
//! it; beyond loopback it needs one; it serves only clips it saw announced; it creates nothing
//! on the server and publishes nothing on the namespace's subjects.

use std::time::Duration;

use futures::StreamExt as _;
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_view::{Limits, ViewConfig, ViewError};

/// reqwest is built without a TLS provider; the binary installs ring, so do the tests.
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn config(listen: &str, token: Option<&str>) -> ViewConfig {
    ViewConfig {
        listen: listen.parse().expect("address"),
        token: token.map(str::to_owned),
        max_fps: 5.0,
        max_total_fps: 12.0,
        jaeger: None,
        namespace: "viewtest".into(),
        limits: Limits::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_request() {
    let nats = NatsServer::start(&NatsServerOptions::default()).expect("nats-server");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let view = panoptes_view::start(client, config("127.0.0.1:0", Some("t0ken")), None)
        .await
        .expect("start");
    let base = format!("http://{}", view.addr);
    let http = http();
    for path in [
        "/",
        "/app.js",
        "/api/state",
        "/api/config",
        "/ws",
        "/api/objects/x",
    ] {
        let bare = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(bare.status(), 401, "{path} without the token");
        let wrong = http
            .get(format!("{base}{path}"))
            .bearer_auth("t0keN")
            .send()
            .await
            .expect("get");
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    let linked = http
        .get(format!("{base}/?token=t0ken"))
        .send()
        .await
        .expect("get");
    assert_eq!(linked.status(), 200);
    let cookie = linked
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair");
    let with_cookie = http
        .get(format!("{base}/api/state"))
        .header("cookie", pair)
        .send()
        .await
        .expect("get");
    assert_eq!(with_cookie.status(), 200);
    let state: serde_json::Value = with_cookie.json().await.expect("json");
    assert!(
        state["cameras"].as_array().is_some_and(Vec::is_empty),
        "{state}"
    );
    let bearer = http
        .get(format!("{base}/api/config"))
        .bearer_auth("t0ken")
        .send()
        .await
        .expect("get");
    assert_eq!(bearer.status(), 200);
    // Only clips it saw announced: any other name is not found, token or not.
    let other = http
        .get(format!("{base}/api/objects/secret.mp4"))
        .bearer_auth("t0ken")
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 404);
    view.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_only_with_a_token() {
    let nats = NatsServer::start(&NatsServerOptions::default()).expect("nats-server");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let refused = panoptes_view::start(client.clone(), config("0.0.0.0:0", None), None).await;
    assert!(
        matches!(refused, Err(ViewError::OpenWithoutToken(_))),
        "{:?}",
        refused.err()
    );
    let view = panoptes_view::start(client, config("0.0.0.0:0", Some("t")), None)
        .await
        .expect("with a token");
    view.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_creates_and_publishes_nothing() {
    let nats = NatsServer::start(&NatsServerOptions::default()).expect("nats-server");
    let watcher = async_nats::connect(nats.url()).await.expect("connect");
    let mut everything = watcher.subscribe("viewtest.>").await.expect("subscribe");
    // The view's look-ups of the lease bucket (at start, then every 2 s), as JetStream API
    // requests: whatever it reads, it must not create.
    let mut lookups = watcher
        .subscribe("$JS.API.STREAM.INFO.KV_viewtest-leases")
        .await
        .expect("subscribe");
    watcher.flush().await.expect("flush");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let view = panoptes_view::start(client, config("127.0.0.1:0", None), None)
        .await
        .expect("start");
    let state = http()
        .get(format!("http://{}/api/state", view.addr))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(state.contains("\"cameras\":[]"), "{state}");
    // Two look-ups: the one at start and a periodic one after it.
    for n in 1..=2 {
        let seen = tokio::time::timeout(Duration::from_secs(10), lookups.next()).await;
        assert!(
            matches!(seen, Ok(Some(_))),
            "look-up {n} of the lease bucket"
        );
    }
    view.stop().await;
    let js = async_nats::jetstream::new(watcher.clone());
    let streams: Vec<String> = js
        .stream_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    assert!(streams.is_empty(), "the view created {streams:?}");
    watcher.flush().await.expect("flush");
    let published = tokio::time::timeout(Duration::from_millis(200), everything.next()).await;
    assert!(published.is_err(), "the view published {published:?}");
}
