//! MQTT: each message is published to its topic (made from the output's template) over one
//! connection (rumqttc), several in flight. With QoS 1 a message counts as delivered when the
//! broker acknowledged it (PUBACK); a message in flight when the connection breaks is published
//! again after the reconnect (clean sessions: the broker keeps nothing of ours across them, so
//! this task, not rumqttc, owns what is unacknowledged). Reconnects back off with jitter; a
//! refused connection (bad credentials, not authorised) is told as the output going down.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use panoptes_topology::{MqttOutput, Qos, RetryConfig};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::intake::Delivery;
use crate::message::Message;
use crate::retry::Backoff;
use crate::run::OutputError;
use crate::status::Status;

/// Messages published and not yet acknowledged, at most.
const WINDOW: usize = 64;

pub(crate) struct Mqtt {
    publisher: Publisher,
    events: EventLoop,
}

/// What publishing needs (shared with the connection's event loop, which is not `Sync`).
struct Publisher {
    client: AsyncClient,
    topic: String,
    namespace: String,
    output: String,
    qos: QoS,
    /// `host:port`, as status messages name the broker.
    shown: String,
}

impl Mqtt {
    pub(crate) fn new(cfg: &MqttOutput, namespace: &str) -> Result<Self, OutputError> {
        let bad = |reason: String| OutputError::Config {
            output: cfg.id.clone(),
            reason,
        };
        let (tls, rest) = if let Some(rest) = cfg.url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = cfg.url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad("the URL must be mqtt:// or mqtts://".into()));
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(bad(
                "put the user in `username` and the password in the variable `password_env` names, not in the URL".into(),
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| bad(format!("port {p:?} is not a number")))?;
                (h.trim_matches(['[', ']']).to_owned(), port)
            }
            _ => (authority.to_owned(), if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(bad("the URL names no host".into()));
        }
        let client_id = cfg
            .client_id
            .clone()
            .unwrap_or_else(|| format!("panoptes-{}-{:08x}", cfg.id, rand::random::<u32>()));
        let mut options = MqttOptions::new(client_id, host.clone(), port);
        options
            .set_keep_alive(Duration::from_secs(15))
            .set_clean_session(true)
            .set_inflight(WINDOW as u16)
            .set_max_packet_size(crate::message::MAX_PAYLOAD + 64 * 1024, 64 * 1024);
        if let Some(user) = &cfg.username {
            let password = match &cfg.password_env {
                Some(name) => std::env::var(name).map_err(|_| {
                    bad(format!(
                        "environment variable {name} (password_env) is not set"
                    ))
                })?,
                None => String::new(),
            };
            options.set_credentials(user.clone(), password);
        } else if cfg.password_env.is_some() {
            return Err(bad("password_env needs a username".into()));
        }
        if tls {
            let config =
                crate::tls::client_config(cfg.ca.as_deref()).map_err(|e| bad(e.to_string()))?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        let (client, events) = AsyncClient::new(options, WINDOW + 8);
        let publisher = Publisher {
            client,
            topic: cfg.topic.clone(),
            namespace: namespace.to_owned(),
            output: cfg.id.clone(),
            qos: match cfg.qos {
                Qos::AtMostOnce => QoS::AtMostOnce,
                Qos::AtLeastOnce => QoS::AtLeastOnce,
            },
            shown: format!("{host}:{port}"),
        };
        Ok(Self { publisher, events })
    }
}

impl Publisher {
    fn topic_of(&self, msg: &Message) -> String {
        self.topic
            .replace("{namespace}", &self.namespace)
            .replace("{camera}", &msg.camera)
            .replace("{kind}", msg.kind)
            .replace("{label}", msg.label.as_deref().unwrap_or("detections"))
            .replace("{output}", &self.output)
    }
}

/// A message published and not yet acknowledged.
struct InFlight {
    /// The packet ID rumqttc gave it, once it went out.
    pkid: Option<u16>,
    attempts: u32,
    d: Delivery,
}

/// Why a connection attempt or connection failed, in words for the output's users.
fn describe(e: &ConnectionError, broker: &str) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorised",
                ConnectReturnCode::BadClientId => "client ID refused",
                ConnectReturnCode::ServiceUnavailable => "service unavailable",
                ConnectReturnCode::RefusedProtocolVersion => "protocol version refused",
                ConnectReturnCode::Success => "refused",
            };
            format!("MQTT broker {broker} refused the connection: {why}")
        }
        other => format!("MQTT broker {broker}: {other}"),
    }
}

/// Publishes the queue's messages until the queue closes and nothing is left in flight, or
/// `cancel` and `drain` ran out.
pub(crate) async fn drive(
    mqtt: Mqtt,
    mut rx: mpsc::Receiver<Delivery>,
    status: Arc<Status>,
    retry: RetryConfig,
    cancel: CancellationToken,
) {
    let Mqtt {
        publisher: mqtt,
        mut events,
    } = mqtt;
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    // Messages to publish again (their connection broke before the broker acknowledged them).
    let mut again: VecDeque<InFlight> = VecDeque::new();
    let mut connected = false;
    let mut closed = false;
    let mut reconnect = Backoff::new(&retry);
    loop {
        if closed && inflight.is_empty() && again.is_empty() {
            break;
        }
        // Publish what waits for another attempt first, in order.
        while connected && inflight.len() < WINDOW {
            let Some(mut f) = again.pop_front() else {
                break;
            };
            f.pkid = None;
            f.attempts += 1;
            publish(&mqtt, f, &mut inflight, &status, &retry).await;
        }
        let room = connected && again.is_empty() && inflight.len() < WINDOW && !closed;
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    reconnect = Backoff::new(&retry);
                    status.up(&format!("connected to MQTT broker {}", mqtt.shown)).await;
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(f) = inflight.iter_mut().find(|f| f.pkid.is_none()) {
                        f.pkid = Some(pkid);
                    }
                    // QoS 0 is done once it is written.
                    if mqtt.qos == QoS::AtMostOnce
                        && let Some(f) = inflight.pop_front()
                    {
                        delivered(f, &status).await;
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(i) = inflight.iter().position(|f| f.pkid == Some(ack.pkid))
                        && let Some(f) = inflight.remove(i)
                    {
                        delivered(f, &status).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    connected = false;
                    let cause = describe(&e, &mqtt.shown);
                    status.down(&cause).await;
                    // Everything unacknowledged goes out again, in its order, after the reconnect.
                    while let Some(f) = inflight.pop_back() {
                        status.failed_attempt();
                        again.push_front(f);
                    }
                    let wait = reconnect.next_delay();
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            },
            next = rx.recv(), if room => match next {
                Some(d) => {
                    let f = InFlight { pkid: None, attempts: 1, d };
                    publish(&mqtt, f, &mut inflight, &status, &retry).await;
                }
                None => closed = true,
            },
            // Connected, a stop drains the queue (the intake closes it); disconnected, it ends
            // at once (live: what is left is lost, durable: JetStream redelivers it).
            () = cancel.cancelled(), if !connected => break,
        }
    }
    // In live delivery what is left is lost with the process; durable delivery redelivers it.
    for f in inflight.into_iter().chain(again) {
        if !f.d.ack.durable() {
            status
                .gave_up(&f.d.msg, f.attempts, "the output stopped", false)
                .await;
        }
    }
    let _ = mqtt.client.try_disconnect();
}

async fn publish(
    mqtt: &Publisher,
    f: InFlight,
    inflight: &mut VecDeque<InFlight>,
    status: &Status,
    retry: &RetryConfig,
) {
    if f.attempts > retry.max_attempts {
        let kept = f.d.ack.durable();
        status
            .gave_up(
                &f.d.msg,
                f.attempts - 1,
                "no acknowledgement from the broker",
                kept,
            )
            .await;
        f.d.ack.later(Duration::from_millis(retry.max_ms)).await;
        return;
    }
    let topic = mqtt.topic_of(&f.d.msg);
    match mqtt
        .client
        .try_publish(topic, mqtt.qos, false, f.d.msg.body.to_vec())
    {
        Ok(()) => inflight.push_back(f),
        Err(e) => {
            // Only a topic MQTT refuses gets here (the channel has room for the window).
            status.failed_attempt();
            status
                .gave_up(&f.d.msg, f.attempts, &format!("cannot publish: {e}"), false)
                .await;
            f.d.ack.refuse().await;
        }
    }
}

async fn delivered(f: InFlight, status: &Status) {
    status.delivered(f.d.since.elapsed());
    f.d.ack.done().await;
}
