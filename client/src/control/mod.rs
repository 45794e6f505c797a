//! The control plane's shared half: the signed-request check every serving process applies
//! ([`ControlGuard`]), the request and reply bodies of `<ns>.control.operators.reload`, and the
//! request side of every control subject ([`collect_replies`]). Cameras' request and reply
//! bodies are [`cameras`]'s.

pub mod auth;
pub mod cameras;
pub mod confine;

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt as _;
use panoptes_topology::TopologyFile;
use serde::{Deserialize, Serialize};

use auth::{Refusal, Signer, Verifier};
use confine::Confinement;

/// The most a control request body may be; larger ones are refused unread.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What a process checks of every control request: who signed it, and what it may name.
pub struct ControlGuard {
    pub verifier: Verifier,
    pub confinement: Confinement,
    /// The topology's directory: relative paths in requests resolve against it.
    pub base_dir: PathBuf,
}

impl ControlGuard {
    /// The guard the topology's `control` section asks for; `None` when control is off (the
    /// process then does not subscribe to control subjects at all).
    pub fn from_topology(topology: &TopologyFile) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(verifier) = Verifier::from_config(&topology.control, &topology.base_dir)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Self {
            verifier,
            confinement: Confinement::from_config(&topology.control, &topology.base_dir),
            base_dir: topology.base_dir.clone(),
        })))
    }

    /// Accepts a request message or says why not.
    pub fn admit(&self, msg: &async_nats::Message) -> Result<(), Refusal> {
        if msg.payload.len() > MAX_REQUEST_BYTES {
            return Err(Refusal::Malformed("body (over 64 KiB)"));
        }
        self.verifier.check(
            msg.subject.as_str(),
            msg.headers.as_ref(),
            &msg.payload,
            auth::now_ms(),
        )
    }
}

/// A reload request: the stage, and optionally a new module file (otherwise the stage's file is
/// re-read), or `promote`: the stage's shadow candidate, with its config and limits, becomes
/// live. The new module goes through the stage's signature and digest checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote: bool,
}

/// One worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReply {
    pub ok: bool,
    pub stage: String,
    /// `swapped`, `unchanged` or `promoted` when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReloadReply {
    /// A refusal for `stage` (empty when the request named none).
    pub fn failed(stage: &str, error: String) -> Self {
        Self {
            ok: false,
            stage: stage.to_owned(),
            outcome: None,
            sha256: None,
            generation: None,
            error: Some(error),
        }
    }
}

/// Publishes `body` on `subject` with a reply inbox, signed by `signer` when given, and
/// collects the JSON replies for up to `wait` (or until `expect` arrived): the request side of
/// every control subject, which may have many responders. `who` names them in the error for a
/// malformed reply.
pub async fn collect_replies<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    signer: Option<&Signer>,
    subject: String,
    body: Vec<u8>,
    wait: std::time::Duration,
    expect: Option<usize>,
    who: &str,
) -> anyhow::Result<Vec<T>> {
    use anyhow::Context as _;
    let inbox = client.new_inbox();
    let mut replies_sub = client.subscribe(inbox.clone()).await?;
    let headers = signer.map(|s| s.headers(&subject, &body, auth::now_ms()));
    match headers {
        Some(headers) => {
            client
                .publish_with_reply_and_headers(subject, inbox, headers, body.into())
                .await?
        }
        None => {
            client
                .publish_with_reply(subject, inbox, body.into())
                .await?
        }
    }
    client.flush().await?;
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while expect.is_none_or(|n| replies.len() < n) {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies_sub.next()).await else {
            break;
        };
        // "No responders": nothing listens on the subject (no such process, or control off).
        if msg.status.is_some() && msg.payload.is_empty() {
            continue;
        }
        let reply: T = serde_json::from_slice(&msg.payload)
            .with_context(|| format!("{who} sent a malformed reply"))?;
        replies.push(reply);
    }
    Ok(replies)
}
