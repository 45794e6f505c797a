//! The worker's control subject: `<ns>.control.operators.reload` swaps an operator stage's
//! module without restarting the worker, or promotes the stage's shadow candidate to live. Requests are checked by the topology's
//! [`ControlGuard`] (signed, confined); bodies are `panoptes_client::control`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;
use panoptes_client::control::{ControlGuard, ReloadReply, ReloadRequest};
use panoptes_contracts::Subjects;
use panoptes_wasm::{OperatorSlot, Reloaded, WasmError};
use tokio_util::sync::CancellationToken;

/// Subscribes to the reload subject (and makes sure the server has the subscription).
pub async fn subscribe(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> anyhow::Result<async_nats::Subscriber> {
    let sub = client.subscribe(subjects.operator_reload()).await?;
    client.flush().await?;
    Ok(sub)
}

/// Answers reload and promote requests for `slots` (and their shadow `candidates`, by live
/// stage ID) until `cancel` fires.
pub async fn serve(
    client: async_nats::Client,
    mut sub: async_nats::Subscriber,
    slots: Vec<OperatorSlot>,
    candidates: Vec<(String, OperatorSlot)>,
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
                Some(slot) if req.promote => {
                    let candidate = candidates.iter().find(|(stage, _)| *stage == req.stage);
                    match (&req.wasm, candidate) {
                        (Some(_), _) => ReloadReply::failed(
                            &req.stage,
                            "a promote request names no module: the stage's shadow candidate becomes live".into(),
                        ),
                        (None, None) => ReloadReply::failed(
                            &req.stage,
                            format!("stage {:?} runs no shadow candidate in this worker", req.stage),
                        ),
                        (None, Some((_, candidate))) => {
                            let (slot, candidate) = (slot.clone(), candidate.clone());
                            let done =
                                tokio::task::spawn_blocking(move || slot.adopt(&candidate)).await;
                            answer(&req.stage, done, "promoted")
                        }
                    }
                }
                Some(slot) => match allowed_module(&guard, &homes, &req) {
                    Err(e) => ReloadReply::failed(&req.stage, e),
                    Ok(path) => {
                        let slot = slot.clone();
                        // Compiling and initialising takes milliseconds to seconds: off the runtime.
                        let done =
                            tokio::task::spawn_blocking(move || slot.reload(path.as_deref())).await;
                        answer(&req.stage, done, "swapped")
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

/// The reply to a swap of `stage`'s module; `swapped` names what a change was.
fn answer(
    stage: &str,
    done: Result<Result<Reloaded, WasmError>, tokio::task::JoinError>,
    swapped: &str,
) -> ReloadReply {
    match done {
        Ok(Ok(Reloaded::Swapped { sha256, generation })) => ReloadReply {
            ok: true,
            stage: stage.to_owned(),
            outcome: Some(swapped.into()),
            sha256: Some(sha256),
            generation: Some(generation),
            error: None,
        },
        Ok(Ok(Reloaded::Unchanged { sha256 })) => ReloadReply {
            ok: true,
            stage: stage.to_owned(),
            outcome: Some("unchanged".into()),
            sha256: Some(sha256),
            generation: None,
            error: None,
        },
        Ok(Err(e)) => ReloadReply::failed(stage, reply_error(&e)),
        Err(e) => ReloadReply::failed(stage, format!("reload panicked: {e}")),
    }
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
