//! The worker's control subject: `<ns>.control.operators.reload` swaps an operator stage's
//! module without restarting the worker. Requests and replies are JSON; requests are signed
//! ([`crate::control_auth`]) and may only name modules the topology allows ([`crate::confine`]).
//! Also the request side every control command shares ([`collect_replies`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;
use panoptes_pipeline::Subjects;
use panoptes_topology::TopologyFile;
use panoptes_wasm::{OperatorSlot, Reloaded, WasmError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::confine::Confinement;
use crate::control_auth::{Refusal, Signer, Verifier};
use crate::nats_args::NatsArgs;

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
            crate::control_auth::now_ms(),
        )
    }
}

/// A reload request: the stage, and optionally a new module file (otherwise the stage's file is
/// re-read). The new module goes through the stage's signature and digest checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<PathBuf>,
}

/// One worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReply {
    pub ok: bool,
    pub stage: String,
    /// `swapped` or `unchanged` when `ok`.
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
    fn failed(stage: &str, error: String) -> Self {
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

/// Subscribes to the reload subject (and makes sure the server has the subscription).
pub async fn subscribe(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> anyhow::Result<async_nats::Subscriber> {
    let sub = client.subscribe(subjects.operator_reload()).await?;
    client.flush().await?;
    Ok(sub)
}

/// Answers reload requests for `slots` until `cancel` fires.
pub async fn serve(
    client: async_nats::Client,
    mut sub: async_nats::Subscriber,
    slots: Vec<OperatorSlot>,
    guard: Arc<ControlGuard>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    // A reload may name files beside each stage's module as configured at start (not as a
    // previous reload left it, or one accepted path would widen what the next may name).
    let homes: Vec<(String, Option<PathBuf>)> = slots
        .iter()
        .map(|s| {
            (
                s.stage().to_owned(),
                s.path().parent().map(Path::to_path_buf),
            )
        })
        .collect();
    loop {
        let msg = tokio::select! {
            () = cancel.cancelled() => break,
            msg = sub.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        let Some(reply_to) = msg.reply.clone() else {
            tracing::warn!(subject = %msg.subject, "reload request without a reply subject; ignored");
            continue;
        };
        if let Err(refusal) = guard.admit(&msg) {
            tracing::warn!(%refusal, "operator reload request refused");
            let reply = ReloadReply::failed("", format!("refused: {refusal}"));
            if let Ok(body) = serde_json::to_vec(&reply) {
                let _ = client.publish(reply_to, body.into()).await;
            }
            continue;
        }
        let reply = match serde_json::from_slice::<ReloadRequest>(&msg.payload) {
            Err(e) => ReloadReply::failed("", format!("malformed reload request: {e}")),
            Ok(req) => match slots.iter().find(|s| s.stage() == req.stage) {
                None => {
                    let known: Vec<&str> = slots.iter().map(|s| s.stage()).collect();
                    ReloadReply::failed(
                        &req.stage,
                        format!(
                            "no operator stage {:?} in this worker (operator stages: {})",
                            req.stage,
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    )
                }
                Some(slot) => match allowed_module(&guard, &homes, &req) {
                    Err(e) => ReloadReply::failed(&req.stage, e),
                    Ok(path) => {
                        let slot = slot.clone();
                        // Compiling and initialising takes milliseconds to seconds: off the runtime.
                        let done =
                            tokio::task::spawn_blocking(move || slot.reload(path.as_deref())).await;
                        match done {
                            Ok(Ok(Reloaded::Swapped { sha256, generation })) => ReloadReply {
                                ok: true,
                                stage: req.stage.clone(),
                                outcome: Some("swapped".into()),
                                sha256: Some(sha256),
                                generation: Some(generation),
                                error: None,
                            },
                            Ok(Ok(Reloaded::Unchanged { sha256 })) => ReloadReply {
                                ok: true,
                                stage: req.stage.clone(),
                                outcome: Some("unchanged".into()),
                                sha256: Some(sha256),
                                generation: None,
                                error: None,
                            },
                            Ok(Err(e)) => ReloadReply::failed(&req.stage, reply_error(&e)),
                            Err(e) => {
                                ReloadReply::failed(&req.stage, format!("reload panicked: {e}"))
                            }
                        }
                    }
                },
            },
        };
        if !reply.ok {
            tracing::warn!(stage = %reply.stage, error = reply.error.as_deref().unwrap_or(""),
                "operator reload refused; the running module stays");
        }
        let body = serde_json::to_vec(&reply)?;
        if let Err(e) = client.publish(reply_to, body.into()).await {
            tracing::warn!(error = %e, "cannot send the reload reply");
        }
    }
    Ok(())
}

/// The module a reload request may load: `None` (the stage's own file again) or a path inside
/// `control.allow_dirs` or beside the stage's configured module.
fn allowed_module(
    guard: &ControlGuard,
    homes: &[(String, Option<PathBuf>)],
    req: &ReloadRequest,
) -> Result<Option<PathBuf>, String> {
    let Some(wasm) = &req.wasm else {
        return Ok(None);
    };
    let mut confinement = guard.confinement.clone();
    if let Some((_, Some(home))) = homes.iter().find(|(s, _)| *s == req.stage) {
        confinement = confinement.with_dir(home);
    }
    confinement
        .path(&guard.base_dir, wasm, "operator module")
        .map(Some)
}

/// A refused reload as the requester sees it: what failed, never the bytes of the file (a
/// compiler's message may quote them); the worker's log keeps the full cause.
fn reply_error(e: &WasmError) -> String {
    match e {
        WasmError::Compile { path, message } => {
            tracing::warn!(path = %path.display(), %message, "reloaded module does not compile");
            format!(
                "cannot compile operator module {}: not a valid operator component (the worker's log has the compiler's message)",
                path.display()
            )
        }
        other => other.to_string(),
    }
}

/// Publishes `body` on `subject` with a reply inbox, signed by `signer` when given, and
/// collects the JSON replies for up to `wait` (or until `expect` arrived): the request side of
/// every control subject, which may have many responders. `who` names them in the error for a
/// malformed reply.
pub async fn collect_replies<T: serde::de::DeserializeOwned>(
    nats: &NatsArgs,
    signer: Option<&Signer>,
    subject: String,
    body: Vec<u8>,
    wait: std::time::Duration,
    expect: Option<usize>,
    who: &str,
) -> anyhow::Result<Vec<T>> {
    use anyhow::Context as _;
    let client = nats.connect().await?;
    let inbox = client.new_inbox();
    let mut replies_sub = client.subscribe(inbox.clone()).await?;
    let headers = signer.map(|s| s.headers(&subject, &body, crate::control_auth::now_ms()));
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
