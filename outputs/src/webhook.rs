//! Webhooks: each message is POSTed as JSON, signed with HMAC-SHA256 over the body
//! (`X-Panoptes-Signature: sha256=<hex>`), one at a time in order, retried with back-off on a
//! timeout, a connection failure, 408, 429 or 5xx; another 4xx refuses it for good. Redirects
//! are not followed (a signed body goes where it was configured to, or nowhere).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use panoptes_topology::{RetryConfig, WebhookOutput};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::intake::Delivery;
use crate::message::Message;
use crate::retry::Backoff;
use crate::run::OutputError;
use crate::status::Status;

/// Header carrying the body's signature, `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-panoptes-signature";
/// Header carrying the message's ID (receivers drop duplicates by it).
pub const ID_HEADER: &str = "x-panoptes-id";
/// Header carrying the analytics kind, or `detections`.
pub const KIND_HEADER: &str = "x-panoptes-kind";
pub const CAMERA_HEADER: &str = "x-panoptes-camera";
/// Header carrying the attempt number (from 1).
pub const ATTEMPT_HEADER: &str = "x-panoptes-attempt";

/// The signature header's value for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={:x}", mac.finalize().into_bytes())
}

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt (timeout, connection, 408, 429, 5xx).
    Retry(String),
    /// The endpoint refused the message for good (another 4xx, a redirect).
    Refused(String),
}

pub(crate) struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL as errors show it: no user, password or query (they may hold credentials).
    shown: String,
    secret: Option<Vec<u8>>,
}

/// `url` without what may be a credential.
fn redact(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// An error and its causes, one line (reqwest's Display alone says only "error sending request").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl Webhook {
    pub(crate) fn new(cfg: &WebhookOutput) -> Result<Self, OutputError> {
        let bad = |reason: String| OutputError::Config {
            output: cfg.id.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| bad(format!("URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("the URL must be http:// or https:// with a host".into()));
        }
        let secret = match &cfg.secret_env {
            Some(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Some(v.into_bytes()),
                _ => {
                    return Err(bad(format!(
                        "environment variable {name} (secret_env) is not set"
                    )));
                }
            },
            None => None,
        };
        let tls = crate::tls::client_config(cfg.ca.as_deref()).map_err(|e| bad(e.to_string()))?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("panoptes/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured((*tls).clone())
            .build()
            .map_err(|e| bad(chain(&e)))?;
        Ok(Self {
            client,
            shown: redact(&url),
            url,
            secret,
        })
    }

    /// Whether the host resolves: a misspelt or unknown host is told at start, not at the
    /// first event.
    pub(crate) async fn check(&self) -> Result<(), String> {
        let host = self.url.host_str().unwrap_or_default().to_owned();
        let port = self.url.port_or_known_default().unwrap_or(80);
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        match tokio::time::timeout(Duration::from_secs(10), lookup)
            .await
            .map(|r| r.map(|mut addrs| addrs.next().is_some()))
        {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(format!("{}: host `{host}` has no address", self.shown)),
            Ok(Err(e)) => Err(format!("{}: cannot resolve host `{host}`: {e}", self.shown)),
            Err(_) => Err(format!(
                "{}: resolving host `{host}` took over 10 s",
                self.shown
            )),
        }
    }

    pub(crate) async fn post(&self, msg: &Message, attempt: u32) -> Result<(), Failure> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, msg.id.as_str())
            .header(KIND_HEADER, msg.kind)
            .header(CAMERA_HEADER, msg.camera.as_str())
            .header(ATTEMPT_HEADER, attempt.to_string());
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, sign(secret, &msg.body));
        }
        let response = request.body(msg.body.clone()).send().await.map_err(|e| {
            let e = e.without_url();
            let what = if e.is_timeout() {
                "timed out".to_owned()
            } else {
                chain(&e)
            };
            Failure::Retry(format!("POST {}: {what}", self.shown))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let said = format!("POST {}: HTTP {status}", self.shown);
        if status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            Err(Failure::Retry(said))
        } else {
            Err(Failure::Refused(said))
        }
    }
}

/// Delivers the queue's messages one at a time, in order, until the queue closes.
pub(crate) async fn drive(
    hook: Webhook,
    mut rx: mpsc::Receiver<Delivery>,
    status: Arc<Status>,
    retry: RetryConfig,
    cancel: CancellationToken,
) {
    while let Some(d) = rx.recv().await {
        deliver(&hook, d, &status, &retry, &cancel).await;
    }
}

async fn deliver(
    hook: &Webhook,
    d: Delivery,
    status: &Status,
    retry: &RetryConfig,
    cancel: &CancellationToken,
) {
    let mut backoff = Backoff::new(retry);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match hook.post(&d.msg, attempt).await {
            Ok(()) => {
                status.up(&format!("POST {}: delivered", hook.shown)).await;
                status.delivered(d.since.elapsed());
                d.ack.done().await;
                return;
            }
            Err(Failure::Refused(cause)) => {
                status.failed_attempt();
                status.gave_up(&d.msg, attempt, &cause, false).await;
                d.ack.refuse().await;
                return;
            }
            Err(Failure::Retry(cause)) => {
                status.failed_attempt();
                status.down(&cause).await;
                if attempt >= retry.max_attempts || cancel.is_cancelled() {
                    let kept = d.ack.durable();
                    status.gave_up(&d.msg, attempt, &cause, kept).await;
                    d.ack.later(Duration::from_millis(retry.max_ms)).await;
                    return;
                }
                d.ack.progress().await;
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}
