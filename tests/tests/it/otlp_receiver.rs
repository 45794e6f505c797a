//! The in-process OTLP receiver, fed by the real opentelemetry-otlp exporter over both
//! transports: spans, parents, attributes, links and status must come back as they were sent.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use opentelemetry::trace::{
    Link, Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use panoptes_tests::otlp::{OtlpReceiver, ReceivedSpan};

/// Only a bound for a broken receiver; the spans are normally there when shutdown returns.
const WAIT: Duration = Duration::from_secs(30);

/// What one export round sent: ids as the SDK saw them, to compare with what arrived.
struct Sent {
    trace_id: String,
    root_id: String,
    child_id: String,
    linked: (String, String),
}

/// The HTTP exporter's reqwest client has no TLS provider of its own in this workspace (see
/// the CLI's `trace_layer`); the process default is what panoptes installs too.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Exports a linked root span, then a server root with a consumer child that links to it,
/// through `exporter` with the batch processor (as panoptes does), and shuts the provider down.
async fn export_spans(exporter: SpanExporter, service: &str) -> Sent {
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder_empty()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("otlp-receiver-test");

    let mut linked = tracer.start("linked");
    let linked_cx = linked.span_context().clone();
    linked.end();

    let root = tracer
        .span_builder("root")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("camera", "cam-1"),
            KeyValue::new("seq", 42_i64),
            KeyValue::new("keyframe", true),
            KeyValue::new("score", 0.5),
            KeyValue::new("sizes", Value::Array(Array::I64(vec![1, 2]))),
        ])
        .start(&tracer);
    let root_cx = root.span_context().clone();
    let cx = opentelemetry::Context::current_with_span(root);
    let mut child = tracer
        .span_builder("child")
        .with_kind(SpanKind::Consumer)
        .with_attributes([KeyValue::new("stage", "detect")])
        .with_links(vec![Link::with_context(linked_cx.clone())])
        .start_with_context(&tracer, &cx);
    let child_cx = child.span_context().clone();
    child.set_status(Status::error("boom"));
    child.end();
    cx.span().end();

    // The batch processor exports from its own thread and, for gRPC, needs this runtime to
    // drive tonic's channel meanwhile: block elsewhere, never on a runtime worker.
    let shut = tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .expect("shutdown task");
    shut.expect("provider shutdown (exports what is queued)");

    Sent {
        trace_id: root_cx.trace_id().to_string(),
        root_id: root_cx.span_id().to_string(),
        child_id: child_cx.span_id().to_string(),
        linked: (
            linked_cx.trace_id().to_string(),
            linked_cx.span_id().to_string(),
        ),
    }
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

/// The three spans `export_spans` sent, checked field by field.
fn check(spans: &[ReceivedSpan], sent: &Sent, service: &str, protocol: &str) {
    assert_eq!(spans.len(), 3, "{spans:#?}");
    for s in spans {
        assert_eq!(s.service, service);
        assert_eq!(s.protocol, protocol);
        assert_eq!(s.trace_id.len(), 32, "{s:?}");
        assert_eq!(s.span_id.len(), 16, "{s:?}");
        assert!(s.start_ns > 0 && s.end_ns >= s.start_ns, "{s:?}");
    }

    let linked = named(spans, "linked");
    assert_eq!(
        (linked.trace_id.clone(), linked.span_id.clone()),
        sent.linked
    );
    assert_eq!(linked.parent_span_id, None);

    let root = named(spans, "root");
    assert_eq!(root.trace_id, sent.trace_id);
    assert_eq!(root.span_id, sent.root_id);
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(root.attr("camera"), Some("cam-1"));
    assert_eq!(root.attr("seq"), Some("42"));
    assert_eq!(root.attr("keyframe"), Some("true"));
    assert_eq!(root.attr("score"), Some("0.5"));
    assert_eq!(root.attr("sizes"), Some("[1,2]"));
    assert_eq!(root.attr("missing"), None);
    assert!(root.links.is_empty());
    assert_eq!(root.status_code, 0, "unset");

    let child = named(spans, "child");
    assert_eq!(child.trace_id, sent.trace_id);
    assert_eq!(child.span_id, sent.child_id);
    assert_eq!(child.parent_span_id.as_deref(), Some(sent.root_id.as_str()));
    assert_eq!(child.kind, 5, "SPAN_KIND_CONSUMER");
    assert_eq!(child.attr("stage"), Some("detect"));
    assert_eq!(child.links, vec![sent.linked.clone()]);
    assert_eq!(child.status_code, 2, "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exporter_spans_arrive_decoded() {
    let _machine = crate::shared_machine();
    install_tls_provider();
    let rx = OtlpReceiver::start().await.expect("receiver");
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(rx.grpc_endpoint())
        .build()
        .expect("gRPC exporter");
    let sent = export_spans(exporter, "grpc-svc").await;

    let spans = rx.wait_for(WAIT, |s| s.len() >= 3).await;
    check(&spans, &sent, "grpc-svc", "grpc");
    assert!(rx.requests("grpc") >= 1);
    assert_eq!(rx.requests("http"), 0);
    assert!(rx.rejected().is_empty(), "{:?}", rx.rejected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_exporter_spans_arrive_decoded() {
    let _machine = crate::shared_machine();
    install_tls_provider();
    let rx = OtlpReceiver::start().await.expect("receiver");
    // `with_endpoint` is used verbatim (unlike OTEL_EXPORTER_OTLP_ENDPOINT), so it takes the
    // full traces URL.
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(rx.http_traces_url())
        .build()
        .expect("HTTP exporter");
    let sent = export_spans(exporter, "http-svc").await;

    let spans = rx.wait_for(WAIT, |s| s.len() >= 3).await;
    check(&spans, &sent, "http-svc", "http");
    assert!(rx.requests("http") >= 1);
    assert_eq!(rx.requests("grpc"), 0);
    assert!(rx.rejected().is_empty(), "{:?}", rx.rejected());
}

/// Both transports into one receiver, from two "processes" (providers) of one trace: the
/// receiver keeps them apart by protocol and service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_share_one_receiver() {
    let _machine = crate::shared_machine();
    install_tls_provider();
    let rx = OtlpReceiver::start().await.expect("receiver");
    let grpc = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(rx.grpc_endpoint())
        .build()
        .expect("gRPC exporter");
    let http = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(rx.http_traces_url())
        .build()
        .expect("HTTP exporter");
    let sent_grpc = export_spans(grpc, "a").await;
    let sent_http = export_spans(http, "b").await;

    let spans = rx.wait_for(WAIT, |s| s.len() >= 6).await;
    let (over_grpc, over_http): (Vec<_>, Vec<_>) =
        spans.into_iter().partition(|s| s.protocol == "grpc");
    check(&over_grpc, &sent_grpc, "a", "grpc");
    check(&over_http, &sent_http, "b", "http");
    assert!(rx.requests("grpc") >= 1 && rx.requests("http") >= 1);
}

/// One HTTP/1.1 request over a plain socket; returns the status code.
fn post(addr: std::net::SocketAddr, path: &str, content_type: &str, body: &[u8]) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read reply");
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"))
}

/// Requests that a real collector would refuse are refused here too, and listed, so a test of a
/// misconfigured exporter fails with a reason instead of just "no spans".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misdirected_requests_are_refused_and_listed() {
    let _machine = crate::shared_machine();
    install_tls_provider();
    let rx = OtlpReceiver::start().await.expect("receiver");

    // The exporter given the base URL posts to "/" (with_endpoint is verbatim).
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(rx.http_endpoint())
        .build()
        .expect("HTTP exporter");
    export_spans(exporter, "misdirected").await;

    let addr = rx.addr();
    let codes = tokio::task::spawn_blocking(move || {
        [
            post(addr, "/v1/traces", "application/json", b"{}"),
            post(
                addr,
                "/v1/traces",
                "application/x-protobuf",
                b"\xff\xff\xff",
            ),
            // An empty body is a valid (empty) ExportTraceServiceRequest.
            post(addr, "/v1/traces", "application/x-protobuf", b""),
        ]
    })
    .await
    .expect("raw HTTP client");
    assert_eq!(codes, [415, 400, 200]);

    assert!(rx.spans().is_empty(), "{:#?}", rx.spans());
    assert_eq!(rx.requests("http"), 1, "only the empty request decoded");
    let rejected = rx.rejected();
    assert!(
        rejected.iter().any(|r| r.starts_with("POST / -> 404")),
        "{rejected:?}"
    );
    assert!(
        rejected.iter().any(|r| r.ends_with("-> 415")),
        "{rejected:?}"
    );
    assert!(
        rejected.iter().any(|r| r.ends_with("-> 400")),
        "{rejected:?}"
    );
}
