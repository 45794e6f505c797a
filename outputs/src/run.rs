//! Starting and stopping a topology's outputs: each gets its endpoint (checked at start), its
//! status reporter, a bounded queue, a driver delivering from it and an intake filling it.

use std::sync::Arc;
use std::time::Duration;

use panoptes_contracts::Subjects;
use panoptes_topology::OutputConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::intake::Intake;
use crate::message::Filter;
use crate::status::Status;

/// Why outputs could not start.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output {output}: {reason}")]
    Config { output: String, reason: String },
    #[error("output {output}: cannot subscribe: {source}")]
    Subscribe {
        output: String,
        source: async_nats::SubscribeError,
    },
    #[error("output {output}: {source}")]
    Durable {
        output: String,
        source: panoptes_pipeline::durable::DurableError,
    },
    #[error("no output named {0:?} in the topology")]
    Unknown(String),
}

/// How the outputs read: live (core NATS) or durable (JetStream, acknowledged after delivery).
#[derive(Clone, Debug)]
pub struct OutputsConfig {
    pub durable: bool,
    /// Durable: how long JetStream waits for a message's acknowledgement before delivering it
    /// again (a message being retried is kept from that by progress acknowledgements).
    pub ack_wait: Duration,
}

impl Default for OutputsConfig {
    fn default() -> Self {
        Self {
            durable: false,
            ack_wait: Duration::from_secs(60),
        }
    }
}

/// Durable: messages of one output unacknowledged at most (the rest wait in JetStream).
const DURABLE_WINDOW: usize = 64;

struct Running {
    intake: JoinHandle<()>,
    driver: JoinHandle<()>,
    status: Arc<Status>,
}

/// A topology's outputs, running. Stop them with [`Outputs::stop`].
pub struct Outputs {
    running: Vec<Running>,
    cancel: CancellationToken,
}

impl Outputs {
    /// Starts `outputs` (those named in `only`, when given). A configuration that cannot work
    /// (a secret's variable unset, a bad URL, an unreadable CA file) fails the start, naming
    /// the output; an endpoint that cannot be reached is told as an `output_down` event and
    /// tried again, and the other outputs run on.
    pub async fn start(
        client: &async_nats::Client,
        subjects: &Subjects,
        outputs: &[OutputConfig],
        only: Option<&[String]>,
        config: &OutputsConfig,
    ) -> Result<Self, OutputError> {
        if let Some(only) = only {
            for id in only {
                if !outputs.iter().any(|o| o.id() == id) {
                    return Err(OutputError::Unknown(id.clone()));
                }
            }
        }
        let chosen: Vec<&OutputConfig> = outputs
            .iter()
            .filter(|o| only.is_none_or(|only| only.iter().any(|id| id == o.id())))
            .collect();
        // Every endpoint is made before anything starts, so a bad one starts nothing.
        enum Endpoint {
            Webhook(Box<crate::webhook::Webhook>),
            Mqtt(Box<crate::mqtt::Mqtt>),
        }
        let mut endpoints = Vec::new();
        for o in &chosen {
            endpoints.push(match o {
                OutputConfig::Webhook(w) => {
                    Endpoint::Webhook(Box::new(crate::webhook::Webhook::new(w)?))
                }
                OutputConfig::Mqtt(m) => {
                    Endpoint::Mqtt(Box::new(crate::mqtt::Mqtt::new(m, subjects.namespace())?))
                }
            });
        }
        if config.durable {
            let declared: Vec<(String, panoptes_topology::OutputSource)> = outputs
                .iter()
                .flat_map(|o| o.from().iter().map(|s| (o.id().to_owned(), *s)))
                .collect();
            crate::intake::prune_consumers(client, subjects, &declared).await;
        }
        let cancel = CancellationToken::new();
        let mut running = Vec::new();
        for (o, endpoint) in chosen.into_iter().zip(endpoints) {
            let id = o.id().to_owned();
            let status = Arc::new(Status::new(
                client.clone(),
                subjects.output_events(&id),
                &id,
            ));
            let capacity = if config.durable {
                o.queue().min(DURABLE_WINDOW)
            } else {
                o.queue()
            }
            .max(1);
            let (tx, rx) = mpsc::channel(capacity);
            let retry = o.retry().clone();
            let driver = match endpoint {
                Endpoint::Webhook(hook) => {
                    let (status, cancel) = (status.clone(), cancel.clone());
                    tokio::spawn(async move {
                        if let Err(cause) = hook.check().await {
                            status.down(&cause).await;
                        }
                        crate::webhook::drive(*hook, rx, status, retry, cancel).await;
                    })
                }
                Endpoint::Mqtt(mqtt) => tokio::spawn(crate::mqtt::drive(
                    *mqtt,
                    rx,
                    status.clone(),
                    retry,
                    cancel.clone(),
                )),
            };
            let intake = Intake {
                client: client.clone(),
                subjects: subjects.clone(),
                output: id.clone(),
                sources: o.from().to_vec(),
                filter: Filter::from(o.filter()),
                tx,
                status: status.clone(),
            };
            let started = if config.durable {
                intake
                    .durable(capacity, config.ack_wait, cancel.child_token())
                    .await
                    .map_err(|source| OutputError::Durable {
                        output: id.clone(),
                        source,
                    })
            } else {
                intake
                    .live(cancel.child_token())
                    .await
                    .map_err(|source| OutputError::Subscribe {
                        output: id.clone(),
                        source,
                    })
            };
            let intake = match started {
                Ok(task) => task,
                Err(e) => {
                    cancel.cancel();
                    driver.abort();
                    for r in running {
                        let r: Running = r;
                        r.intake.abort();
                        r.driver.abort();
                    }
                    return Err(e);
                }
            };
            tracing::info!(output = %id, kind = o.kind_name(), durable = config.durable, "output started");
            running.push(Running {
                intake,
                driver,
                status,
            });
        }
        Ok(Self { running, cancel })
    }

    /// How many outputs run.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Stops reading, then gives the drivers up to `drain` to deliver what their queues hold
    /// (live delivery; in durable delivery JetStream redelivers what was not acknowledged).
    pub async fn stop(self, drain: Duration) {
        self.cancel.cancel();
        for r in self.running {
            let _ = r.intake.await;
            let mut driver = r.driver;
            if tokio::time::timeout(drain, &mut driver).await.is_err() {
                driver.abort();
                tracing::warn!(output = %r.status.output(), "output stopped before its queue was delivered");
            }
            r.status.flush_dropped().await;
        }
    }
}
