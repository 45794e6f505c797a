//! An in-process OTLP trace receiver (gRPC and HTTP/protobuf on one loopback port), so tests can
//! point `panoptes` processes' exporters at it and assert on the spans they sent.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tonic::body::Body;
use tonic::codegen::Service as _;

/// The path OTLP/HTTP exporters post traces to (the base endpoint plus `/v1/traces`).
pub const HTTP_TRACES_PATH: &str = "/v1/traces";

/// One span as it arrived, decoded into plain values tests can compare.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The resource attribute `service.name` ("" when absent).
    pub service: String,
    /// `"grpc"` or `"http"`: which OTLP transport delivered it.
    pub protocol: &'static str,
    /// Lowercase hex, 32 digits.
    pub trace_id: String,
    /// Lowercase hex, 16 digits.
    pub span_id: String,
    /// `None` for a root span (empty, or all zeros, on the wire).
    pub parent_span_id: Option<String>,
    pub name: String,
    /// The OTLP `SpanKind` (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Every attribute rendered as a string: ints in decimal, strings as-is, bools as
    /// `true`/`false`, doubles via `Display`, bytes as hex, arrays as `[a,b]`, maps as `{k=v}`.
    pub attributes: BTreeMap<String, String>,
    /// `(trace_id, span_id)` of each link, in hex.
    pub links: Vec<(String, String)>,
    /// The OTLP status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What the server's tasks share with the handle.
#[derive(Default)]
struct State {
    spans: Mutex<Vec<ReceivedSpan>>,
    grpc_requests: AtomicUsize,
    http_requests: AtomicUsize,
    rejected: Mutex<Vec<String>>,
    /// Woken whenever spans arrive, so `wait_for` need not sleep-poll.
    arrived: Notify,
}

impl State {
    fn record(&self, protocol: &'static str, request: ExportTraceServiceRequest) {
        let counter = if protocol == "grpc" {
            &self.grpc_requests
        } else {
            &self.http_requests
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let decoded = decode(protocol, request);
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(decoded);
        self.arrived.notify_waiters();
    }

    fn reject(&self, what: String) {
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(what);
    }
}

/// The gRPC side: tonic's generated `TraceService`.
struct Collector(Arc<State>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.record("grpc", request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running receiver on `127.0.0.1`; the server (listener and open connections) stops when it
/// is dropped. Needs a Tokio runtime; use a multi-thread one when the exporter runs in-process,
/// since the SDK's batch processor blocks a thread while the runtime must still drive its sends.
pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Binds a free loopback port and starts serving OTLP/gRPC and OTLP/HTTP on it.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot bind the OTLP receiver's port")?;
        let addr = listener
            .local_addr()
            .context("cannot read the OTLP receiver's address")?;
        let state = Arc::new(State::default());
        let server = tokio::spawn(serve(listener, Arc::clone(&state)));
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OTLP/gRPC endpoint, e.g. `http://127.0.0.1:PORT` (plaintext HTTP/2).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OTLP/HTTP base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it: exporters append
    /// `/v1/traces`. Note that opentelemetry-otlp's `with_endpoint` uses its URL verbatim, so
    /// code configuring it in-process must pass [`Self::http_traces_url`] instead.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full OTLP/HTTP traces URL (`http_endpoint()` + `/v1/traces`).
    pub fn http_traces_url(&self) -> String {
        format!("http://{}{HTTP_TRACES_PATH}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `pred` holds for the spans received so far, or until `timeout`; returns the
    /// spans at that point either way (the caller asserts on them).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so spans arriving between the check and the wait
            // still wake us.
            let arrived = self.state.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.spans();
            }
        }
    }

    /// How many export requests arrived and decoded over `protocol` (`"grpc"` or `"http"`).
    pub fn requests(&self, protocol: &str) -> usize {
        match protocol {
            "grpc" => self.state.grpc_requests.load(Ordering::SeqCst),
            "http" => self.state.http_requests.load(Ordering::SeqCst),
            _ => 0,
        }
    }

    /// Requests the receiver turned away (wrong path, content type or encoding, undecodable
    /// body), one line each, e.g. `"POST / -> 404"`: for failure messages when spans are missing.
    pub fn rejected(&self) -> Vec<String> {
        self.state
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every open connection.
        self.server.abort();
    }
}

/// Accepts connections until aborted; each speaks HTTP/1.1 or h2c, whichever the client opens
/// with (gRPC clients send the HTTP/2 preface, OTLP/HTTP exporters usually HTTP/1.1).
async fn serve(listener: TcpListener, state: Arc<State>) {
    let grpc = TraceServiceServer::new(Collector(Arc::clone(&state)));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Transient (e.g. out of file descriptors); the exporter will retry.
                    continue;
                };
                let grpc = grpc.clone();
                let state = Arc::clone(&state);
                let service = hyper::service::service_fn(move |req| {
                    route(req, grpc.clone(), Arc::clone(&state))
                });
                connections.spawn(async move {
                    // A client hanging up mid-request is its business, not the test's.
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reaps finished connections so the set does not grow for the receiver's lifetime.
            Some(_) = connections.join_next() => {}
        }
    }
}

/// gRPC requests (by content type) go to tonic's service, `POST /v1/traces` to the OTLP/HTTP
/// handler, anything else is a 404.
async fn route(
    req: Request<Incoming>,
    mut grpc: TraceServiceServer<Collector>,
    state: Arc<State>,
) -> Result<Response<Body>, Infallible> {
    let content_type = header(&req, CONTENT_TYPE);
    if content_type.starts_with("application/grpc") {
        // The generated server is always ready (poll_ready returns Ready), so no readiness wait.
        return grpc.call(req).await;
    }
    if req.uri().path() != HTTP_TRACES_PATH || req.method() != Method::POST {
        state.reject(format!("{} {} -> 404", req.method(), req.uri()));
        return Ok(plain(StatusCode::NOT_FOUND, "not an OTLP traces endpoint"));
    }
    Ok(http_export(req, &content_type, &state).await)
}

/// OTLP/HTTP with a binary protobuf body (JSON and compressed bodies are refused with 415, so a
/// test notices an exporter configured differently from what it expects).
async fn http_export(req: Request<Incoming>, content_type: &str, state: &State) -> Response<Body> {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    let encoding = header(&req, CONTENT_ENCODING);
    if mime != "application/x-protobuf" || !(encoding.is_empty() || encoding == "identity") {
        state.reject(format!(
            "POST {HTTP_TRACES_PATH} content-type {content_type:?} content-encoding {encoding:?} -> 415"
        ));
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only uncompressed application/x-protobuf is accepted",
        );
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            state.reject(format!("POST {HTTP_TRACES_PATH}: body not read: {e}"));
            return plain(StatusCode::BAD_REQUEST, "cannot read the body");
        }
    };
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            state.reject(format!(
                "POST {HTTP_TRACES_PATH}: not a trace request: {e} -> 400"
            ));
            return plain(StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest");
        }
    };
    state.record("http", request);
    let mut response = Response::new(Body::new(Full::new(Bytes::from(
        ExportTraceServiceResponse::default().encode_to_vec(),
    ))));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

fn header<B>(req: &Request<B>, name: hyper::header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Flattens an export request into one `ReceivedSpan` per span.
fn decode(protocol: &'static str, request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .map(render)
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                let parent = (!span.parent_span_id.iter().all(|b| *b == 0))
                    .then(|| hex(&span.parent_span_id));
                out.push(ReceivedSpan {
                    service: service.clone(),
                    protocol,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: parent,
                    name: span.name,
                    kind: span.kind,
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    status_code: span.status.map(|s| s.code).unwrap_or_default(),
                });
            }
        }
    }
    out
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = kv.value.as_ref().map(render).unwrap_or_default();
            (kv.key.clone(), value)
        })
        .collect()
}

fn render(value: &AnyValue) -> String {
    use any_value::Value;
    match &value.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(render).collect();
            format!("[{}]", items.join(","))
        }
        Some(Value::KvlistValue(m)) => {
            let items: Vec<String> = m
                .values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(render).unwrap_or_default();
                    format!("{}={v}", kv.key)
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        // Only meaningful in the profiling signal (an index into its string table).
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
    }
}

/// Lowercase hex, as OTLP/JSON and W3C `traceparent` write trace and span IDs.
fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}
