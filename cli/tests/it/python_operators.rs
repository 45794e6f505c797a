//! Operators written in Python (componentize-py components, `operators/python/examples`) in
//! whole topologies run by `panoptes run`, on real frames of test-pattern cameras through the
//! real PP-OCR models:
//!
//! - `topologies/plates.yaml`: the zone filter keeps only the text in the lower half, the OCR
//!   cascade reads it, the plate normaliser turns "AB12 CDE" into the plate `AB12CDE`; the sign
//!   above ("EXIT ONLY") is never read.
//! - `topologies/crowd.yaml`: three texts in the frame, more than the rule's two, so every
//!   frame carries a `crowd` detection, and the webhook filtered on that label posts it.
//!
//! - The plates topology again with the zone filter written in JavaScript
//!   (`cli/tests/fixtures/plates-js.yaml`): the same readings.
//!
//! And `panoptes operator build` itself: a .py file in, a component out that runs; a file that
//! is no operator is refused with the reason.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use panoptes_contracts::detection::DetectionMessage;
use panoptes_tests::nats_server;

use crate::outputs::{Panoptes, Receiver, SERIAL, wait_until};

const GUARD: Duration = Duration::from_secs(120);

/// Detection messages of `subject` until `done` holds for what arrived (or the guard).
async fn collect(
    sub: &mut async_nats::Subscriber,
    run: &Panoptes,
    mut done: impl FnMut(&[DetectionMessage]) -> bool,
) -> Vec<DetectionMessage> {
    let deadline = Instant::now() + GUARD;
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{} messages\n{}", got.len(), run.log());
        if let Ok(Some(m)) = tokio::time::timeout(left, sub.next()).await {
            got.push(serde_json::from_slice(&m.payload).expect("detections/v1"));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_operators_filter_and_normalise_plates_on_the_ocr_cascade() {
    plates("topologies/plates.yaml").await;
}

/// The same with the zone filter written in JavaScript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_zone_filter_does_the_same_on_the_ocr_cascade() {
    plates("cli/tests/fixtures/plates-js.yaml").await;
}

async fn plates(topology: &str) {
    let _serial = SERIAL.lock().await;
    panoptes_tests::require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut sub = client
        .subscribe("panoptes.detections.gate")
        .await
        .expect("sub");
    let run = Panoptes::spawn(
        &["run", topology, "--nats", server.url()],
        &[],
        dir.path().join("run.log"),
    );
    let got = collect(&mut sub, &run, |got| got.len() >= 4).await;
    let mut readings: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for m in &got {
        for d in &m.detections {
            *readings
                .entry((d.label.clone(), d.text.clone()))
                .or_default() += 1;
        }
    }
    // Every frame reads the plate, and only the plate.
    assert_eq!(
        readings,
        BTreeMap::from([(("plate".into(), Some("AB12CDE".into())), got.len())]),
        "{}",
        run.log()
    );
    for m in &got {
        let d = &m.detections[0];
        // Where the test pattern draws it: in the lower half (`ypos: 0.75`).
        assert!(d.bbox[1] > 240.0, "{d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_alert_rule_reaches_a_webhook_filtered_on_its_label() {
    let _serial = SERIAL.lock().await;
    panoptes_tests::require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = nats_server();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut sub = client
        .subscribe("panoptes.detections.lobby")
        .await
        .expect("sub");
    let receiver = Receiver::start(dir.path(), 0);
    let run = Panoptes::spawn(
        &["run", "topologies/crowd.yaml", "--nats", server.url()],
        &[("CROWD_WEBHOOK_URL", receiver.url())],
        dir.path().join("run.log"),
    );
    let got = collect(&mut sub, &run, |got| got.len() >= 3).await;
    for m in &got {
        let texts = m.detections.iter().filter(|d| d.label == "text").count();
        let alerts: Vec<_> = m.detections.iter().filter(|d| d.label == "crowd").collect();
        assert_eq!(texts, 3, "{m:?}");
        assert_eq!(alerts.len(), 1, "{m:?}");
        assert_eq!(alerts[0].text.as_deref(), Some("3 text > 2"));
        assert_eq!(
            (alerts[0].bbox[2], alerts[0].bbox[3]),
            (640.0, 480.0),
            "the whole frame"
        );
    }
    wait_until(
        "the webhook got no crowd alert",
        || receiver.received().values().any(|k| k == "detections"),
        || run.log(),
    )
    .await;
}

/// `panoptes operator build ARGS`.
fn build(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(["operator", "build"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("panoptes operator build")
}

#[test]
fn operator_build_makes_a_component_or_says_why_not() {
    panoptes_tests::require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("only_text.py");
    std::fs::write(
        &source,
        "from panoptes_operator import Detections, Operator\n\n\
         class OnlyText(Operator):\n    def process(self, frame, input):\n        \
         return Detections(d for d in input.detections or [] if d.label == 'text')\n",
    )
    .expect("write");
    let out = build(&[source.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let wasm = dir.path().join("only_text.wasm");
    let bytes = std::fs::read(&wasm).expect("the component");
    // A component (layer 1), not a core module.
    assert_eq!(&bytes[..8], b"\0asm\x0d\0\x01\0");

    // No Operator subclass: componentize-py's pre-initialisation runs the entry and fails.
    let none = dir.path().join("no_class.py");
    std::fs::write(&none, "X = 1\n").expect("write");
    let out = build(&[none.to_str().expect("utf-8"), "-o", "nothing.wasm"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("must define exactly one subclass of panoptes_operator.Operator"),
        "{stderr}"
    );
    assert!(!dir.path().join("nothing.wasm").exists());

    let bad_name = dir.path().join("my-op.py");
    std::fs::write(&bad_name, "").expect("write");
    let out = build(&[bad_name.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot be imported as a Python module"),
        "{stderr}"
    );
}

#[test]
fn operator_build_makes_a_javascript_component_or_says_why_not() {
    panoptes_tests::require_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("only_text.js");
    std::fs::write(
        &source,
        "import { Operator } from \"panoptes_operator\";\n\n\
         export default class OnlyText extends Operator {\n  process(frame, input) {\n    \
         return (input.detections ?? []).filter((d) => d.label === \"text\");\n  }\n}\n",
    )
    .expect("write");
    let out = build(&[source.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let bytes = std::fs::read(dir.path().join("only_text.wasm")).expect("the component");
    assert_eq!(&bytes[..8], b"\0asm\x0d\0\x01\0");

    let none = dir.path().join("no_class.js");
    std::fs::write(&none, "export const x = 1;\n").expect("write");
    let out = build(&[none.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("must `export default class <Name> extends Operator`"),
        "{stderr}"
    );
}
