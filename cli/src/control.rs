//! The worker's control subject: `<ns>.control.operators.reload` swaps an operator stage's
//! module without restarting the worker. Requests and replies are JSON.

use std::path::PathBuf;

use futures::StreamExt as _;
use panoptes_pipeline::Subjects;
use panoptes_wasm::{OperatorSlot, Reloaded};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

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
    cancel: CancellationToken,
) -> anyhow::Result<()> {
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
                Some(slot) => {
                    let slot = slot.clone();
                    let path = req.wasm.clone();
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
                        Ok(Err(e)) => ReloadReply::failed(&req.stage, e.to_string()),
                        Err(e) => ReloadReply::failed(&req.stage, format!("reload panicked: {e}")),
                    }
                }
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

/// Publishes `body` on `subject` with a reply inbox and collects the JSON replies for up to
/// `wait` (or until `expect` arrived): the request side of every control subject, which may
/// have many responders. `who` names them in the error for a malformed reply.
pub async fn collect_replies<T: serde::de::DeserializeOwned>(
    nats: &str,
    subject: String,
    body: Vec<u8>,
    wait: std::time::Duration,
    expect: Option<usize>,
    who: &str,
) -> anyhow::Result<Vec<T>> {
    use anyhow::Context as _;
    let client = crate::connect(nats).await?;
    let inbox = client.new_inbox();
    let mut replies_sub = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(subject, inbox, body.into())
        .await?;
    client.flush().await?;
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while expect.is_none_or(|n| replies.len() < n) {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies_sub.next()).await else {
            break;
        };
        let reply: T = serde_json::from_slice(&msg.payload)
            .with_context(|| format!("{who} sent a malformed reply"))?;
        replies.push(reply);
    }
    Ok(replies)
}
