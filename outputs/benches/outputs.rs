//! Output throughput (events/s) to a webhook and to an MQTT broker, each beside a baseline
//! measured in the same run against the same endpoint: a bare client doing the same work (a
//! reqwest client POSTing the same signed bodies one at a time; a rumqttc client publishing the
//! same messages at QoS 1 with the same 64 in flight). Real parts: a nats-server, Debian's
//! mosquitto, an in-process hyper receiver answering 204.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! cargo bench -p panoptes-outputs --bench outputs                 # --events N --runs R
//! ```
//!
//! Through Panoptes, `analytics/v1` events are published into the analytics stream (durable
//! delivery: the output's JetStream consumer, 64 unacknowledged at most, each acknowledged after
//! delivery; a burst on core NATS would lose messages to the slow-consumer limit instead) and
//! the clock runs from the first publish until the receiver (webhook) or a subscriber (MQTT)
//! has every one. The baseline's clock runs from its
//! first request until the same point. Medians of `--runs`; the ratio is Panoptes ÷ baseline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use panoptes_contracts::Subjects;
use panoptes_contracts::analytics::{AnalyticsEvent, AnalyticsKind};
use panoptes_outputs::{Outputs, OutputsConfig};
use panoptes_tests::mqtt::Mosquitto;
use panoptes_topology::{
    MqttOutput, OutputConfig, OutputFilter, OutputSource, Qos, RetryConfig, WebhookOutput,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::Notify;

#[derive(clap::Parser)]
struct Args {
    /// Events per run.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    events: u64,
    /// Runs per case (medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    runs: u64,
    /// Set by `cargo bench`. Without it (`cargo test --benches`) each case runs a few events once.
    #[arg(long, hide = true)]
    bench: bool,
}

const SECRET_ENV: &str = "PANOPTES_BENCH_WEBHOOK_SECRET";
const SECRET: &str = "bench-secret";

fn event(n: u64) -> Bytes {
    let e = AnalyticsEvent {
        schema: "analytics/v1".into(),
        id: format!("cam-{}:places:line_cross:gate:{n}:{n}", n % 4),
        kind: AnalyticsKind::LineCross,
        camera: format!("cam-{}", n % 4),
        stage: "places".into(),
        zone: None,
        line: Some("gate".into()),
        direction: Some(panoptes_contracts::analytics::Direction::In),
        track_id: n,
        label: "person".into(),
        seq: n,
        capture_ts_ns: n,
        ts_ns: n,
        dwell_ms: None,
        ended: false,
        point: [1.0, 2.0],
    };
    Bytes::from(serde_json::to_vec(&e).unwrap_or_default())
}

/// Counts what arrives (POSTs answered 204, MQTT messages).
struct Counter {
    count: AtomicU64,
    target: AtomicU64,
}

impl Counter {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            count: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
        })
    }

    fn reset(&self, target: u64) {
        self.count.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
    }

    fn hit(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }
}

async fn receiver(counter: Arc<Counter>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            let _ = req.into_body().collect().await;
                            counter.hit();
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(204)
                                    .body(http_body_util::Empty::<Bytes>::new())
                                    .unwrap_or_default(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// A QoS 1 subscriber on `bench/#` counting messages.
async fn mqtt_counter(broker: &Mosquitto, counter: Arc<Counter>) -> AsyncClient {
    let mut options = MqttOptions::new("bench-sub", "127.0.0.1", broker.port);
    options.set_credentials(broker.user.clone(), broker.password.clone());
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 64);
    let subscribed = Arc::new(Notify::new());
    {
        let subscribed = subscribed.clone();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => counter.hit(),
                    Ok(Event::Incoming(Packet::SubAck(_))) => subscribed.notify_one(),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
    }
    client
        .subscribe("bench/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    subscribed.notified().await;
    client
}

async fn wait(counter: &Counter, what: &str) {
    let target = counter.target.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(300);
    while counter.count.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} of {target} arrived",
            counter.count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bare reqwest: the same signed POSTs, one at a time.
async fn webhook_baseline(url: &str, bodies: &[Bytes], counter: &Counter) -> f64 {
    // The same TLS set-up as the output's (rustls with ring), unused on plain http.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client");
    counter.reset(bodies.len() as u64);
    let start = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-panoptes-id", i.to_string())
            .header(
                panoptes_outputs::SIGNATURE_HEADER,
                panoptes_outputs::sign(SECRET.as_bytes(), body),
            )
            .body(body.clone())
            .send()
            .await
            .expect("post");
        assert!(response.status().is_success());
    }
    wait(counter, "webhook baseline").await;
    bodies.len() as f64 / start.elapsed().as_secs_f64()
}

/// Bare rumqttc: the same messages at QoS 1, 64 in flight, until the subscriber has them all.
async fn mqtt_baseline(broker: &Mosquitto, bodies: &[Bytes], counter: &Counter) -> f64 {
    let mut options = MqttOptions::new("bench-pub", "127.0.0.1", broker.port);
    options.set_credentials(broker.user.clone(), broker.password.clone());
    options.set_inflight(64);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 72);
    let driver = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    counter.reset(bodies.len() as u64);
    let start = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        client
            .publish(
                format!("bench/cam-{}/line_cross", i % 4),
                QoS::AtLeastOnce,
                false,
                body.to_vec(),
            )
            .await
            .expect("publish");
    }
    wait(counter, "mqtt baseline").await;
    let rate = bodies.len() as f64 / start.elapsed().as_secs_f64();
    let _ = client.disconnect().await;
    driver.abort();
    rate
}

/// Through an output: publish every event on NATS, until the endpoint has them all.
async fn through(
    client: &async_nats::Client,
    output: OutputConfig,
    bodies: &[Bytes],
    counter: &Counter,
) -> f64 {
    let subjects = Subjects::default();
    let config = OutputsConfig {
        durable: true,
        ..OutputsConfig::default()
    };
    let outputs = Outputs::start(client, &subjects, &[output], None, &config)
        .await
        .expect("outputs start");
    let js = async_nats::jetstream::new(client.clone());
    counter.reset(bodies.len() as u64);
    let start = Instant::now();
    let mut acks = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}-{i}", start.elapsed().as_nanos()).as_str(),
        );
        acks.push(
            js.publish_with_headers(
                format!("panoptes.analytics.cam-{}", i % 4),
                headers,
                body.clone(),
            )
            .await
            .expect("publish"),
        );
        if acks.len() >= 256 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
    wait(counter, "through panoptes").await;
    let rate = bodies.len() as f64 / start.elapsed().as_secs_f64();
    outputs.stop(Duration::from_secs(1)).await;
    rate
}

fn retry() -> RetryConfig {
    RetryConfig::default()
}

#[tokio::main]
async fn main() {
    let args: Args = clap::Parser::parse();
    let (events, runs) = if args.bench {
        (args.events, args.runs)
    } else {
        (50, 1)
    };
    // SAFETY: set before any other thread of this process reads the environment.
    unsafe { std::env::set_var(SECRET_ENV, SECRET) };
    let server = panoptes_tests::nats_server();
    let client = async_nats::connect(server.url()).await.expect("nats");
    let broker = Mosquitto::start();
    let posts = Counter::new();
    let port = receiver(posts.clone()).await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let delivered = Counter::new();
    let _sub = mqtt_counter(&broker, delivered.clone()).await;
    let bodies: Vec<Bytes> = (0..events).map(event).collect();
    let queue = usize::try_from(events).unwrap_or(usize::MAX);

    let webhook = OutputConfig::Webhook(WebhookOutput {
        id: "hook".into(),
        from: vec![OutputSource::Analytics],
        filter: OutputFilter::default(),
        url: url.clone(),
        secret_env: Some(SECRET_ENV.into()),
        ca: None,
        timeout_ms: 5000,
        retry: retry(),
        queue,
    });
    let mqtt = OutputConfig::Mqtt(MqttOutput {
        id: "broker".into(),
        from: vec![OutputSource::Analytics],
        filter: OutputFilter::default(),
        url: broker.url(),
        topic: "bench/{camera}/{kind}".into(),
        qos: Qos::AtLeastOnce,
        username: Some(broker.user.clone()),
        password_env: Some("PANOPTES_BENCH_MQTT_PASSWORD".into()),
        ca: None,
        client_id: None,
        retry: retry(),
        queue,
    });
    // SAFETY: as above; no other thread reads the environment.
    unsafe { std::env::set_var("PANOPTES_BENCH_MQTT_PASSWORD", &broker.password) };

    let (mut wb, mut wp, mut mb, mut mp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        wb.push(webhook_baseline(&url, &bodies, &posts).await);
        wp.push(through(&client, webhook.clone(), &bodies, &posts).await);
        mb.push(mqtt_baseline(&broker, &bodies, &delivered).await);
        mp.push(through(&client, mqtt.clone(), &bodies, &delivered).await);
    }
    println!(
        "{events} events per run, {runs} run(s), medians; loadavg {}",
        panoptes_tests::loadavg()
    );
    println!(
        "{:<8} {:>16} {:>16} {:>8}",
        "endpoint", "baseline ev/s", "panoptes ev/s", "ratio"
    );
    for (name, b, p) in [("webhook", wb, wp), ("mqtt", mb, mp)] {
        let (b, p) = (median(b), median(p));
        println!("{name:<8} {b:>16.0} {p:>16.0} {:>8.2}", p / b);
    }
}
