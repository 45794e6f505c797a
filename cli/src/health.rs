//! Liveness and readiness of a long-running process, served beside `/metrics` for Kubernetes
//! probes and Compose healthchecks: `/healthz` answers while the process runs, `/readyz` once
//! it has started its part and while its NATS connection and its background tasks are up.
//!
//! The answers name conditions, never values: no address, subject, setting or error text of the
//! process reaches whoever can reach the port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;
use tokio_util::sync::CancellationToken;

/// What `/readyz` looks at, given once the process has started its part.
#[derive(Clone)]
pub struct Probe {
    client: async_nats::Client,
    /// Cancelled when the process's main task (the worker) stopped on an error.
    failed: Option<CancellationToken>,
    /// Background tasks that must keep running (partition leases, the recorder), by name.
    tasks: Vec<(&'static str, Alive)>,
}

impl Probe {
    /// A probe of the NATS connection `client`.
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            client,
            failed: None,
            tasks: Vec::new(),
        }
    }

    /// Not ready once `failed` is cancelled.
    pub fn failing_with(mut self, failed: CancellationToken) -> Self {
        self.failed = Some(failed);
        self
    }

    /// Not ready once the task holding `alive`'s guard ends.
    pub fn with_task(mut self, name: &'static str, alive: Alive) -> Self {
        self.tasks.push((name, alive));
        self
    }
}

/// Whether a background task still runs: true until its [`AliveGuard`] is dropped (the task
/// returned, failed or panicked).
#[derive(Clone, Debug)]
pub struct Alive(Arc<AtomicBool>);

impl Alive {
    /// A flag and the guard to move into the task.
    pub fn pair() -> (Self, AliveGuard) {
        let flag = Arc::new(AtomicBool::new(true));
        (Self(flag.clone()), AliveGuard(flag))
    }

    pub fn is_alive(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Held by a task for as long as it runs; see [`Alive`].
#[derive(Debug)]
pub struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[derive(Default)]
enum Phase {
    #[default]
    Starting,
    Started(Probe),
    Stopping,
}

/// The process's health. One per process ([`global`]), like the metrics recorder it sits beside.
#[derive(Default)]
pub struct Health {
    phase: Mutex<Phase>,
}

/// `/readyz`'s answer: ready or not, and each condition's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<(&'static str, &'static str)>,
}

impl Readiness {
    pub fn to_json(&self) -> serde_json::Value {
        let checks: serde_json::Map<String, serde_json::Value> = self
            .checks
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        json!({ "ready": self.ready, "checks": checks })
    }
}

impl Health {
    pub const fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Starting),
        }
    }

    /// The process has started its part (connected, models and operators loaded, cameras
    /// started, leases being taken): ready while `probe` says so.
    pub fn started(&self, probe: Probe) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = Phase::Started(probe);
    }

    /// The process is stopping: not ready again, so traffic and scaling look elsewhere while it
    /// hands its partitions back.
    pub fn stopping(&self) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = Phase::Stopping;
    }

    pub fn readiness(&self) -> Readiness {
        let phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let probe = match &*phase {
            Phase::Starting => {
                return Readiness {
                    ready: false,
                    checks: vec![("process", "starting")],
                };
            }
            Phase::Stopping => {
                return Readiness {
                    ready: false,
                    checks: vec![("process", "stopping")],
                };
            }
            Phase::Started(probe) => probe,
        };
        let mut checks = vec![("process", "started")];
        let mut ready = true;
        let nats = match probe.client.connection_state() {
            async_nats::connection::State::Connected => "connected",
            async_nats::connection::State::Pending => "reconnecting",
            async_nats::connection::State::Disconnected => "disconnected",
        };
        ready &= nats == "connected";
        checks.push(("nats", nats));
        if let Some(failed) = &probe.failed {
            let failed = failed.is_cancelled();
            ready &= !failed;
            checks.push(("worker", if failed { "failed" } else { "running" }));
        }
        for (name, alive) in &probe.tasks {
            let alive = alive.is_alive();
            ready &= alive;
            checks.push((name, if alive { "running" } else { "stopped" }));
        }
        Readiness { ready, checks }
    }
}

static HEALTH: Health = Health::new();

/// This process's health.
pub fn global() -> &'static Health {
    &HEALTH
}

/// The routes `/healthz` and `/readyz` answer on, for the metrics listener.
pub fn routes(health: &'static Health) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || async move {
                let readiness = health.readiness();
                let status = if readiness.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, axum::Json(readiness.to_json()))
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_while_starting_or_stopping() {
        let health = Health::new();
        assert_eq!(
            health.readiness(),
            Readiness {
                ready: false,
                checks: vec![("process", "starting")]
            }
        );
        health.stopping();
        assert_eq!(
            health.readiness().to_json(),
            json!({ "ready": false, "checks": { "process": "stopping" } })
        );
    }

    #[test]
    fn an_ended_task_is_seen_through_its_flag() {
        let (alive, guard) = Alive::pair();
        assert!(alive.is_alive());
        let clone = alive.clone();
        drop(guard);
        assert!(!alive.is_alive() && !clone.is_alive());
    }
}
