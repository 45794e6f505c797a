//! The HTTP side: the page and its assets (embedded), the JSON it polls, frames pushed over a
//! WebSocket at a capped rate, clips and snapshots read from the Object Store, and the token
//! check in front of all of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use panoptes_contracts::frame::PixelFormat;
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;

use crate::intake::Lease;
use crate::model::{Deployment, Picture, ShownFrame};

/// The largest clip the view hands out; larger ones are fetched with `panoptes clips get`.
const MAX_OBJECT_BYTES: u64 = 256 << 20;
/// A browser that takes longer than this to accept one frame is disconnected (its page
/// reconnects), so a stalled browser holds at most one frame of the server's memory.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// JPEG quality of sampled raw frames encoded for browsers (cameras without previews), and
/// their width at most (a grid tile is smaller; the browser scales the boxes, which stay in
/// frame pixels).
const JPEG_QUALITY: u8 = 75;
const JPEG_MAX_WIDTH: u32 = 640;
const COOKIE: &str = "panoptes_view";

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

pub struct Shared {
    pub namespace: String,
    pub model: Arc<Mutex<Deployment>>,
    pub leases: Arc<Mutex<Vec<Lease>>>,
    pub client: async_nats::Client,
    pub token: Option<String>,
    pub max_fps: f64,
    pub jaeger: Option<String>,
    /// `panoptes graph --format json` of the topology, when the view knows it.
    pub graph: Option<serde_json::Value>,
    /// Per camera of the topology: its zones and lines.
    pub places: serde_json::Value,
    /// Ends every WebSocket when the view stops (graceful shutdown waits for connections).
    pub stop: tokio_util::sync::CancellationToken,
    /// Browsers connected for frames: frames are sampled only while there is one.
    pub watching: tokio::sync::watch::Sender<usize>,
}

/// Counts a connected browser for as long as it lives.
struct Watching(tokio::sync::watch::Sender<usize>);

impl Watching {
    fn new(count: &tokio::sync::watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Shared {
    fn model(&self) -> std::sync::MutexGuard<'_, Deployment> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript") }),
        )
        .route("/style.css", get(|| async { asset(STYLE, "text/css") }))
        .route("/api/state", get(state))
        .route("/api/config", get(config))
        .route("/api/objects/{name}", get(object))
        .route("/ws", get(frames))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .with_state(shared)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// With a token configured, every request carries it: `Authorization: Bearer`, the cookie the
/// page got, or `?token=` (the link the start-up line prints; it sets the cookie).
async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<TokenQuery>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = shared.token.as_deref() else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = cookie(headers, COOKIE);
    let from_query = query.token.as_deref();
    let ok = [bearer, cookie.as_deref(), from_query]
        .into_iter()
        .flatten()
        .any(|given| same(given.as_bytes(), expected.as_bytes()));
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this view needs its token: open the link `panoptes view` printed (…/?token=…)\n",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    if from_query.is_some()
        && let Ok(value) = HeaderValue::from_str(&format!(
            "{COOKIE}={expected}; HttpOnly; SameSite=Strict; Path=/"
        ))
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

#[derive(Deserialize)]
struct StateQuery {
    /// Timeline entries after this ID only.
    #[serde(default)]
    after: u64,
}

async fn state(State(shared): State<Arc<Shared>>, Query(q): Query<StateQuery>) -> Response {
    let now = Instant::now();
    let leases = shared
        .leases
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let body = {
        let model = shared.model();
        serde_json::json!({
            "cameras": model.cameras(now),
            "events": model.events_after(q.after),
            "skipped": model.skipped(),
            "leases": leases,
        })
    };
    axum::Json(body).into_response()
}

async fn config(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(serde_json::json!({
        "namespace": shared.namespace,
        "max_fps": shared.max_fps,
        "jaeger": shared.jaeger,
        "graph": shared.graph,
        "places": shared.places,
    }))
    .into_response()
}

/// A clip or snapshot, only if the view saw it announced on `<ns>.clips.*`.
async fn object(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let Some(content_type) = shared.model().announced(&name) else {
        return (StatusCode::NOT_FOUND, "no such clip\n").into_response();
    };
    let js = async_nats::jetstream::new(shared.client.clone());
    let bucket = panoptes_recorder::store::bucket_name(&shared.namespace);
    let read = async {
        let store = js.get_object_store(&bucket).await.ok()?;
        let object = store.get(&name).await.ok()?;
        let mut body = Vec::new();
        object
            .take(MAX_OBJECT_BYTES + 1)
            .read_to_end(&mut body)
            .await
            .ok()?;
        Some(body)
    };
    match read.await {
        Some(body) if body.len() as u64 > MAX_OBJECT_BYTES => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "clip too large for the view: use `panoptes clips get`\n",
        )
            .into_response(),
        Some(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        None => (StatusCode::NOT_FOUND, "clip no longer stored\n").into_response(),
    }
}

async fn frames(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| push_frames(shared, socket))
}

/// Sends each camera's newest shown frame at most `max_fps` times a second, one message at a
/// time: a 4-byte big-endian header length, the header JSON (camera, seq, detections, trails),
/// then the JPEG.
async fn push_frames(shared: Arc<Shared>, mut socket: WebSocket) {
    let _watching = Watching::new(&shared.watching);
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / shared.max_fps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        }
        let shown = shared.model().frames_to_show(&sent, Instant::now());
        for frame in shown {
            let camera = frame.camera.clone();
            let seq = frame.seq;
            let encoding = shared.clone();
            let Ok(Some(message)) =
                tokio::task::spawn_blocking(move || encode(&encoding, frame)).await
            else {
                continue;
            };
            sent.insert(camera, seq);
            match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Binary(message))).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

fn encode(shared: &Shared, shown: ShownFrame) -> Option<Bytes> {
    let jpeg = match (shown.jpeg, shown.picture) {
        (Some(jpeg), _) | (None, Picture::Jpeg(jpeg)) => jpeg,
        (None, Picture::Frame(frame)) if frame.format == PixelFormat::Jpeg => {
            Bytes::copy_from_slice(frame.pixels.as_slice())
        }
        (None, Picture::Frame(frame)) => {
            let (jpeg, _, _) = panoptes_op_preprocess::jpeg::thumbnail(
                frame.pixels.as_slice(),
                frame.width,
                frame.height,
                JPEG_MAX_WIDTH,
                JPEG_QUALITY,
            )
            .ok()?;
            let jpeg = Bytes::from(jpeg);
            shared
                .model()
                .encoded(&shown.camera, shown.seq, jpeg.clone());
            jpeg
        }
    };
    let header = serde_json::to_vec(&shown.header).ok()?;
    let len = u32::try_from(header.len()).ok()?;
    let mut out = Vec::with_capacity(4 + header.len() + jpeg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&jpeg);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; panoptes_view=tok; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
