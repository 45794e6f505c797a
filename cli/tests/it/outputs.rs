//! Outputs over real parts: a nats-server, Debian's mosquitto (with mosquitto_sub as the
//! subscriber), and the webhook receiver of docs/outputs.md (`examples/python/webhook_receiver.py`,
//! standard-library Python that checks the HMAC and drops duplicates by ID).
//!
//! - The door example (`topologies/door.yaml`, run whole by `panoptes run`, in durable
//!   delivery): its crossings and
//!   its dwell alert reach the webhook, every analytics event reaches MQTT, each exactly the
//!   set published on NATS.
//! - Durable delivery through `panoptes sink`: the broker stopped for 10 s and restarted, the
//!   receiver answering 500 three times; every event still arrives, duplicates carry the same
//!   ID, every signature verifies, and the outage is told as `output_down` / `output_up`.
//! - Endpoints that cannot work (a host that does not resolve, a broker refusing the
//!   credentials) are told as `output_down` events at start, and the other outputs of the same
//!   process deliver everything, a malformed message on the subject notwithstanding.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use panoptes_contracts::analytics::{AnalyticsEvent, AnalyticsKind, Direction};
use panoptes_contracts::output::{OutputEvent, OutputEventKind};
use panoptes_tests::mqtt::Mosquitto;
use panoptes_tests::nats_server;

/// Failure guard only.
const GUARD: Duration = Duration::from_secs(90);
const SECRET: &str = "it-secret-0123456789abcdef";

/// One test at a time: each runs brokers, receivers and a panoptes process.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn python() -> PathBuf {
    panoptes_files::paths::venv().join("bin").join("python")
}

/// The receiver of docs/outputs.md on a free port, printing JSON lines to a file.
pub(crate) struct Receiver {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Receiver {
    pub(crate) fn start(dir: &Path, fail_first: u32) -> Self {
        let out = dir.join("receiver.jsonl");
        let child = Command::new(python())
            .arg(panoptes_tests::repo_root().join("examples/python/webhook_receiver.py"))
            .args(["--port", "0", "--fail-first", &fail_first.to_string()])
            .env("PANOPTES_WEBHOOK_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("receiver output"))
            .stderr(Stdio::null())
            .spawn()
            .expect("python webhook receiver (run scripts/setup.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = lines(&out)
                .iter()
                .find_map(|l| l.get("listening").and_then(serde_json::Value::as_u64))
            {
                break port as u16;
            }
            assert!(Instant::now() < deadline, "the receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { child, out, port }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/panoptes", self.port)
    }

    /// IDs it took (each once: it drops duplicates), by kind.
    pub(crate) fn received(&self) -> BTreeMap<String, String> {
        lines(&self.out)
            .iter()
            .filter_map(|l| {
                Some((
                    l.get("id")?.as_str()?.to_owned(),
                    l.get("kind")?.as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    fn answered(&self, code: u64) -> usize {
        lines(&self.out)
            .iter()
            .filter(|l| l.get("answered").and_then(serde_json::Value::as_u64) == Some(code))
            .count()
    }

    fn duplicates(&self) -> usize {
        lines(&self.out)
            .iter()
            .filter(|l| l.get("duplicate").is_some())
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// IDs in mosquitto_sub's `topic payload` lines, with their topics (each ID once).
fn mqtt_received(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (topic, payload) = l.split_once(' ')?;
            let event: AnalyticsEvent = serde_json::from_str(payload).ok()?;
            Some((event.id, topic.to_owned()))
        })
        .collect()
}

/// A mosquitto_sub process, killed and reaped when dropped.
struct Sub(Child);

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts mosquitto_sub and waits until it receives (its subscription is in place).
fn subscriber(broker: &Mosquitto, id: &str, topic_root: &str, out: &Path) -> Sub {
    let child = Sub(broker.subscribe(id, &format!("{topic_root}/#"), out));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        broker.publish(&format!("{topic_root}/probe"), "probe");
        std::thread::sleep(Duration::from_millis(200));
        if std::fs::read_to_string(out)
            .unwrap_or_default()
            .contains("probe")
        {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto_sub did not subscribe: {}",
            broker.log()
        );
    }
}

/// A panoptes process with its stderr in a file; SIGKILLed when dropped.
pub(crate) struct Panoptes {
    child: Child,
    log: PathBuf,
}

impl Panoptes {
    pub(crate) fn spawn(args: &[&str], env: &[(&str, String)], log: PathBuf) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_panoptes"));
        cmd.current_dir(panoptes_tests::repo_root())
            .args(args)
            .env("RUST_LOG", "info")
            .env("PANOPTES_WEBHOOK_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("panoptes");
        Self { child, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn wait_for(&self, line: &str) {
        let deadline = Instant::now() + GUARD;
        while !self.log().contains(line) {
            assert!(
                Instant::now() < deadline,
                "panoptes never said {line:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ctrl-C, then the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after Ctrl-C:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Panoptes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Output status events seen on `<ns>.outputs.*`.
fn collect_output_events(
    client: &async_nats::Client,
) -> tokio::sync::mpsc::UnboundedReceiver<OutputEvent> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = client.clone();
    tokio::spawn(async move {
        let Ok(mut sub) = client.subscribe("panoptes.outputs.*").await else {
            return;
        };
        while let Some(m) = sub.next().await {
            if let Ok(e) = serde_json::from_slice::<OutputEvent>(&m.payload)
                && tx.send(e).is_err()
            {
                break;
            }
        }
    });
    rx
}

fn drain<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>, into: &mut Vec<T>) {
    while let Ok(e) = rx.try_recv() {
        into.push(e);
    }
}

/// An analytics event as a worker would raise it.
fn event(camera: &str, n: u64) -> AnalyticsEvent {
    let kind = [
        AnalyticsKind::ZoneEnter,
        AnalyticsKind::LineCross,
        AnalyticsKind::ZoneExit,
    ][(n % 3) as usize];
    AnalyticsEvent {
        schema: "analytics/v1".into(),
        id: format!("{camera}:places:{}:gate:{n}:{n}", kind.name()),
        kind,
        camera: camera.into(),
        stage: "places".into(),
        zone: (kind != AnalyticsKind::LineCross).then(|| "walk".into()),
        line: (kind == AnalyticsKind::LineCross).then(|| "gate".into()),
        direction: (kind == AnalyticsKind::LineCross).then_some(Direction::In),
        track_id: n,
        label: "person".into(),
        seq: n,
        capture_ts_ns: n * 100_000_000,
        ts_ns: n * 100_000_000,
        dwell_ms: (kind == AnalyticsKind::ZoneExit).then_some(1200),
        ended: false,
        point: [10.0, 20.0],
    }
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/outputs.yaml")
}

pub(crate) async fn wait_until(
    what: &str,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + GUARD;
    while !done() {
        assert!(Instant::now() < deadline, "{what}:\n{}", context());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn door_example_delivers_crossings_dwell_and_every_event() {
    let _serial = SERIAL.lock().await;
    panoptes_tests::require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut analytics = client.subscribe("panoptes.analytics.*").await.expect("sub");
    let broker = Mosquitto::start();
    let mqtt_out = dir.path().join("mqtt.txt");
    let _sub = subscriber(&broker, "door-it", "panoptes", &mqtt_out);
    let receiver = Receiver::start(dir.path(), 0);
    let mut run = Panoptes::spawn(
        &["run", "topologies/door.yaml", "--nats", server.url()],
        &[
            ("DOOR_WEBHOOK_URL", receiver.url()),
            ("DOOR_MQTT_URL", broker.url()),
            ("DOOR_MQTT_PASSWORD", broker.password.clone()),
            ("DOOR_DWELL_S", "2".into()),
            // Durable: analytics events go through JetStream, outputs acknowledge deliveries.
            ("DOOR_DELIVERY", "durable".into()),
        ],
        dir.path().join("run.log"),
    );
    run.wait_for("and 2 output(s)");
    let published = std::sync::Arc::new(std::sync::Mutex::new(
        BTreeMap::<String, AnalyticsEvent>::new(),
    ));
    let collector = {
        let published = published.clone();
        tokio::spawn(async move {
            while let Some(m) = analytics.next().await {
                if let Ok(e) = serde_json::from_slice::<AnalyticsEvent>(&m.payload)
                    && let Ok(mut p) = published.lock()
                {
                    p.insert(e.id.clone(), e);
                }
            }
        })
    };
    // The text walks in (a crossing `in`), stays inside past 2 s (a dwell alert), bounces
    // back out.
    wait_until(
        "the webhook got no inward crossing and no dwell alert",
        || {
            let got = receiver.received();
            got.values().any(|k| k == "line_cross") && got.values().any(|k| k == "dwell")
        },
        || format!("{:?}\n{}", receiver.received(), run.log()),
    )
    .await;
    let status = run.interrupt();
    assert!(status.success(), "panoptes run failed:\n{}", run.log());
    // Published before the stop; delivered within its drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    collector.abort();
    let published = published.lock().map(|p| p.clone()).unwrap_or_default();
    let crossings_in = published
        .values()
        .filter(|e| e.kind == AnalyticsKind::LineCross && e.direction == Some(Direction::In));
    assert!(crossings_in.count() >= 1, "{published:?}");
    let alerts: BTreeSet<String> = published
        .values()
        .filter(|e| matches!(e.kind, AnalyticsKind::LineCross | AnalyticsKind::Dwell))
        .map(|e| e.id.clone())
        .collect();
    let everything: BTreeSet<String> = published.keys().cloned().collect();
    wait_until(
        "MQTT did not get every analytics event",
        || {
            mqtt_received(&mqtt_out)
                .keys()
                .cloned()
                .collect::<BTreeSet<_>>()
                == everything
        },
        || {
            format!(
                "published {everything:?}\nmqtt {:?}\n{}",
                mqtt_received(&mqtt_out),
                run.log()
            )
        },
    )
    .await;
    let hooked: BTreeSet<String> = receiver.received().into_keys().collect();
    assert_eq!(
        hooked, alerts,
        "the webhook gets crossings and dwell alerts, exactly"
    );
    assert_eq!(receiver.answered(401), 0, "every signature verifies");
    for (id, topic) in mqtt_received(&mqtt_out) {
        let kind = published[&id].kind.name();
        assert_eq!(topic, format!("panoptes/door/{kind}"));
    }
    // The same crossings and alerts made clips (`record:`), stored when the run stopped if
    // not before; each names the events it holds.
    let clips = crate::recording::list_clips(server.url(), "panoptes", &[]);
    assert!(
        !clips.is_empty(),
        "no clip of the door's events:\n{}",
        run.log()
    );
    for clip in &clips {
        assert_eq!(clip.camera, "door");
        assert!(clip.frames > 0 && clip.snapshot.is_some(), "{clip:?}");
        for e in &clip.events {
            assert!(
                alerts.contains(&e.id),
                "clip {} names {} which is no alert",
                clip.id,
                e.id
            );
        }
    }
    assert!(
        clips
            .iter()
            .flat_map(|c| &c.events)
            .any(|e| e.kind == "line_cross"),
        "{clips:?}"
    );
    // And MQTT got each clip's announcement (`from: [analytics, clips]`) on panoptes/door/clip.
    let announced: BTreeSet<String> = std::fs::read_to_string(&mqtt_out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (topic, payload) = l.split_once(' ')?;
            let clip: panoptes_contracts::clip::ClipMessage = serde_json::from_str(payload).ok()?;
            (topic == "panoptes/door/clip").then_some(clip.object)
        })
        .collect();
    let stored: BTreeSet<String> = clips.iter().map(|c| c.object.clone()).collect();
    assert_eq!(announced, stored, "clip announcements on MQTT");
    eprintln!(
        "door: {} analytics events ({} crossings or alerts) on NATS, all on MQTT and the webhook",
        everything.len(),
        alerts.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_outputs_lose_nothing_across_a_broker_restart_and_endpoint_errors() {
    let _serial = SERIAL.lock().await;
    panoptes_tests::require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client.clone());
    let mut status_rx = collect_output_events(&client);
    let mut broker = Mosquitto::start();
    let mqtt_out = dir.path().join("mqtt.txt");
    let _sub = subscriber(&broker, "durable-it", "it", &mqtt_out);
    let receiver = Receiver::start(dir.path(), 3);
    let sink = Panoptes::spawn(
        &[
            "sink",
            fixture().to_str().expect("utf-8 path"),
            "--nats",
            server.url(),
            "--outputs",
            "hook,broker",
        ],
        &[
            ("OUT_DELIVERY", "durable".into()),
            ("HOOK_URL", receiver.url()),
            ("MQTT_URL", broker.url()),
            ("MQTT_PASSWORD", broker.password.clone()),
        ],
        dir.path().join("sink.log"),
    );
    sink.wait_for("sink running 2 output(s)");

    let publish = |range: std::ops::Range<u64>| {
        let js = js.clone();
        async move {
            for n in range {
                let e = event(&format!("cam-{}", n % 2), n);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", e.id.as_str());
                let body = serde_json::to_vec(&e).expect("json");
                js.publish_with_headers(
                    format!("panoptes.analytics.{}", e.camera),
                    headers,
                    body.into(),
                )
                .await
                .expect("publish")
                .await
                .expect("stored");
            }
        }
    };
    publish(0..20).await;
    // The broker goes away for 10 s while events keep coming.
    wait_until(
        "the first events never reached MQTT",
        || mqtt_received(&mqtt_out).len() >= 5,
        || sink.log(),
    )
    .await;
    broker.stop();
    publish(20..40).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.restart();
    publish(40..50).await;

    let all: BTreeSet<String> = (0..50)
        .map(|n| event(&format!("cam-{}", n % 2), n).id)
        .collect();
    wait_until(
        "the webhook did not get every event",
        || receiver.received().into_keys().collect::<BTreeSet<_>>() == all,
        || format!("{:?}\n{}", receiver.received().len(), sink.log()),
    )
    .await;
    // mosquitto_sub reconnects on its own, and its persistent session kept what was published
    // to it meanwhile.
    wait_until(
        "MQTT did not get every event",
        || {
            mqtt_received(&mqtt_out)
                .into_keys()
                .collect::<BTreeSet<_>>()
                == all
        },
        || {
            let got: BTreeSet<String> = mqtt_received(&mqtt_out).into_keys().collect();
            format!(
                "missing {:?}\n{}\n{}",
                all.difference(&got).collect::<Vec<_>>(),
                sink.log(),
                broker.log()
            )
        },
    )
    .await;
    assert_eq!(
        receiver.answered(500),
        3,
        "the receiver failed three requests"
    );
    assert_eq!(receiver.answered(401), 0, "every signature verifies");
    let mut events = Vec::new();
    drain(&mut status_rx, &mut events);
    let of = |output: &str, kind: OutputEventKind| {
        events
            .iter()
            .filter(|e| e.output == output && e.kind == kind)
            .count()
    };
    assert!(of("broker", OutputEventKind::OutputDown) >= 1, "{events:?}");
    assert!(of("broker", OutputEventKind::OutputUp) >= 1, "{events:?}");
    assert!(of("hook", OutputEventKind::OutputDown) >= 1, "{events:?}");
    assert_eq!(of("hook", OutputEventKind::OutputGaveUp), 0, "{events:?}");

    // An output removed from the topology leaves no consumer behind at the next start; the
    // declared outputs' consumers and anyone else's stay.
    let stream = js.get_stream("panoptes-analytics").await.expect("stream");
    for name in ["output-retired-analytics", "reports"] {
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(name.into()),
                ..Default::default()
            })
            .await
            .expect("consumer");
    }
    let mut sink = sink;
    assert!(sink.interrupt().success(), "{}", sink.log());
    let again = Panoptes::spawn(
        &[
            "sink",
            fixture().to_str().expect("utf-8 path"),
            "--nats",
            server.url(),
            "--outputs",
            "hook",
        ],
        &[
            ("OUT_DELIVERY", "durable".into()),
            ("HOOK_URL", receiver.url()),
        ],
        dir.path().join("sink-again.log"),
    );
    again.wait_for("sink running 1 output(s)");
    let mut consumers: Vec<String> = stream
        .consumer_names()
        .map(|n| n.expect("consumer name"))
        .collect()
        .await;
    consumers.sort();
    assert_eq!(
        consumers,
        [
            "output-broker-analytics",
            "output-hook-analytics",
            "reports"
        ],
        "{}",
        again.log()
    );
    assert!(
        again.log().contains("output-retired-analytics"),
        "the removal is logged: {}",
        again.log()
    );

    eprintln!(
        "durable: 50 events to both outputs; webhook duplicates dropped by the receiver: {}; status events: {:?}",
        receiver.duplicates(),
        events
            .iter()
            .map(|e| (&e.output, e.kind))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoints_are_reported_and_the_other_outputs_deliver() {
    let _serial = SERIAL.lock().await;
    panoptes_tests::require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut status_rx = collect_output_events(&client);
    let broker = Mosquitto::start();
    let mqtt_out = dir.path().join("mqtt.txt");
    let _sub = subscriber(&broker, "live-it", "it", &mqtt_out);
    let receiver = Receiver::start(dir.path(), 0);
    let sink = Panoptes::spawn(
        &[
            "sink",
            fixture().to_str().expect("utf-8 path"),
            "--nats",
            server.url(),
        ],
        &[
            ("HOOK_URL", receiver.url()),
            ("MQTT_URL", broker.url()),
            ("MQTT_PASSWORD", broker.password.clone()),
            ("WRONG_MQTT_PASSWORD", "not-the-password".into()),
        ],
        dir.path().join("sink.log"),
    );
    sink.wait_for("sink running 4 output(s)");

    let mut events = Vec::new();
    wait_until(
        "no output_down for the unreachable endpoints",
        || {
            drain(&mut status_rx, &mut events);
            ["nowhere", "refused"].iter().all(|o| {
                events
                    .iter()
                    .any(|e| e.output == *o && e.kind == OutputEventKind::OutputDown)
            })
        },
        || sink.log(),
    )
    .await;
    let down = |o: &str| {
        events
            .iter()
            .find(|e| e.output == o && e.kind == OutputEventKind::OutputDown)
            .map(|e| e.message.clone())
            .unwrap_or_default()
    };
    assert!(
        down("nowhere").contains("cannot resolve host `no-such-host.invalid`"),
        "{}",
        down("nowhere")
    );
    assert!(
        down("refused").contains("refused the connection"),
        "{}",
        down("refused")
    );
    assert!(
        !down("refused").contains("not-the-password"),
        "a secret in an event: {}",
        down("refused")
    );

    // A malformed message on the subject is skipped; the 30 events around it all arrive.
    for n in 0..30 {
        if n == 10 {
            client
                .publish("panoptes.analytics.cam-0", "{not json".into())
                .await
                .expect("publish");
        }
        let e = event("cam-0", n);
        client
            .publish(
                format!("panoptes.analytics.{}", e.camera),
                serde_json::to_vec(&e).expect("json").into(),
            )
            .await
            .expect("publish");
    }
    let all: BTreeSet<String> = (0..30).map(|n| event("cam-0", n).id).collect();
    wait_until(
        "the working webhook did not get every event",
        || receiver.received().into_keys().collect::<BTreeSet<_>>() == all,
        || sink.log(),
    )
    .await;
    wait_until(
        "the working MQTT output did not get every event",
        || {
            mqtt_received(&mqtt_out)
                .into_keys()
                .collect::<BTreeSet<_>>()
                == all
        },
        || sink.log(),
    )
    .await;
    for (id, topic) in mqtt_received(&mqtt_out) {
        assert!(topic.starts_with("it/cam-0/"), "{id} on {topic}");
    }
    drain(&mut status_rx, &mut events);
    assert!(
        events
            .iter()
            .filter(|e| e.output == "hook" || e.output == "broker")
            .all(|e| e.kind != OutputEventKind::OutputDown),
        "{events:?}"
    );
    // The unreachable ones keep failing; only their first failure is an event, their give-ups
    // name each message.
    let log = sink.log();
    let reader = BufReader::new(log.as_bytes());
    assert!(
        reader
            .lines()
            .map_while(Result::ok)
            .all(|l| !l.contains(SECRET)),
        "the webhook secret in the log"
    );
}

/// Live delivery reads core NATS: a burst as large as the output's queue (1024 by default)
/// reaches the endpoint whole, none of it dropped by the client before the output sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_burst_within_the_queue_is_delivered_whole() {
    let _serial = SERIAL.lock().await;
    panoptes_tests::require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut status_rx = collect_output_events(&client);
    let receiver = Receiver::start(dir.path(), 0);
    let sink = Panoptes::spawn(
        &[
            "sink",
            fixture().to_str().expect("utf-8 path"),
            "--nats",
            server.url(),
            "--outputs",
            "hook",
        ],
        &[("HOOK_URL", receiver.url())],
        dir.path().join("sink.log"),
    );
    sink.wait_for("sink running 1 output(s)");

    const BURST: u64 = 1000;
    let mut all = BTreeSet::new();
    for n in 0..BURST {
        let e = event(&format!("cam-{}", n % 4), n);
        all.insert(e.id.clone());
        let body = serde_json::to_vec(&e).expect("json");
        client
            .publish(format!("panoptes.analytics.{}", e.camera), body.into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    wait_until(
        "the webhook did not get the whole burst",
        || receiver.received().len() as u64 >= BURST,
        || format!("{} of {BURST}\n{}", receiver.received().len(), sink.log()),
    )
    .await;
    assert_eq!(
        receiver.received().into_keys().collect::<BTreeSet<_>>(),
        all
    );
    let mut events = Vec::new();
    drain(&mut status_rx, &mut events);
    assert!(
        !events
            .iter()
            .any(|e| e.kind == OutputEventKind::OutputDropped),
        "{events:?}"
    );
}
