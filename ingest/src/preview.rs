//! Previews (`preview/v1`): while someone subscribes to `<ns>.preview.<camera>`, a camera's
//! frames are sampled at a capped rate, scaled down and published there as JPEG, so a view
//! never pulls full raw frames through NATS.
//!
//! Interest is found out without anyone publishing back: every [`PROBE_EVERY`] the node sends an
//! empty request on the subject; nats-server answers "no responders" at once when nobody
//! subscribes, and a listener that never replies lets it time out. Nobody listening costs a
//! probe per camera every two seconds. Encoding runs off the capture thread, one frame at a
//! time; a frame offered while one is being encoded is not taken.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::RequestErrorKind;
use bytes::Bytes;
use panoptes_contracts::CameraId;
use panoptes_contracts::frame::{Frame, PixelFormat};
use panoptes_contracts::meter::{self, count_camera};
use panoptes_contracts::preview::PreviewMeta;
use panoptes_topology::PreviewConfig;

use crate::node::IngestStats;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often interest is probed, and how long a probe waits for "no responders".
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_WAIT: Duration = Duration::from_millis(500);

/// Previews per second an ingest process makes over all its cameras while they are watched;
/// each camera gets its share. It bounds what watching costs the node whatever the number of
/// cameras (about 4 to 6 ms of CPU per 1280x720 frame's preview on a 2-core machine).
pub const NODE_PREVIEWS_PER_S: f64 = 8.0;

/// The ingest process's preview budget, shared by its cameras' taps: `per_s` previews a second
/// on average, with bursts of up to a second's worth (cameras started together offer their
/// frames together). A generic cell rate algorithm on one atomic.
#[derive(Debug)]
pub struct Budget {
    started: Instant,
    period_ns: u64,
    /// How far ahead of time turns may be taken: a second's worth, less one.
    burst_ns: u64,
    /// The theoretical time of the next turn, in ns since `started`.
    next_ns: AtomicU64,
}

impl Budget {
    pub fn new(per_s: f64) -> Self {
        let per_s = per_s.clamp(0.01, 1000.0);
        let period_ns =
            u64::try_from(Duration::from_secs_f64(1.0 / per_s).as_nanos()).unwrap_or(u64::MAX);
        Self {
            started: Instant::now(),
            period_ns,
            burst_ns: period_ns.saturating_mul((per_s.ceil() as u64).saturating_sub(1)),
            next_ns: AtomicU64::new(0),
        }
    }

    fn take(&self) -> bool {
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.take_at(now)
    }

    /// Takes a preview's turn at `now_ns` (ns since the budget began), if one is left.
    pub fn take_at(&self, now_ns: u64) -> bool {
        let next = self.next_ns.load(Ordering::Relaxed);
        now_ns.saturating_add(self.burst_ns) >= next
            && self
                .next_ns
                .compare_exchange(
                    next,
                    next.max(now_ns).saturating_add(self.period_ns),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// The capture thread's side: offers frames while someone listens, at most at the rate.
pub(crate) struct Tap {
    interest: AtomicBool,
    started: Instant,
    period_ns: u64,
    /// When the last frame was taken, in ns since `started` (0: never).
    last_ns: AtomicU64,
    budget: Arc<Budget>,
    tx: mpsc::Sender<Offered>,
}

/// A frame taken for a preview: its wire payload and its trace context (so a view links the
/// preview of a sampled frame to its trace).
struct Offered {
    payload: Bytes,
    trace: Option<async_nats::HeaderMap>,
}

impl Tap {
    /// Offers a frame's wire payload and its span; cheap when nobody listens or it is not time
    /// yet.
    pub(crate) fn offer(&self, payload: &Bytes, span: &tracing::Span) {
        if !self.interest.load(Ordering::Relaxed) {
            return;
        }
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_ns.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.period_ns {
            return;
        }
        if self.tx.capacity() == 0 || !self.budget.take() {
            return;
        }
        let offered = Offered {
            payload: payload.clone(),
            trace: panoptes_telemetry::trace::headers_for(span),
        };
        if self.tx.try_send(offered).is_ok() {
            self.last_ns.store(now.max(1), Ordering::Relaxed);
        }
    }
}

/// Starts `camera`'s previews: the probe and the encoder, until `cancel`. Returns the tap the
/// capture thread offers frames to.
pub(crate) fn start(
    client: async_nats::Client,
    subject: String,
    camera: CameraId,
    config: PreviewConfig,
    stats: Arc<IngestStats>,
    budget: Arc<Budget>,
    cancel: CancellationToken,
) -> Arc<Tap> {
    let (tx, rx) = mpsc::channel(1);
    let tap = Arc::new(Tap {
        interest: AtomicBool::new(false),
        started: Instant::now(),
        period_ns: u64::try_from(
            Duration::from_secs_f64(1.0 / config.fps.clamp(0.01, 60.0)).as_nanos(),
        )
        .unwrap_or(u64::MAX),
        last_ns: AtomicU64::new(0),
        budget,
        tx,
    });
    tokio::spawn(probe(
        client.clone(),
        subject.clone(),
        tap.clone(),
        cancel.clone(),
    ));
    tokio::spawn(publish(client, subject, camera, config, stats, rx, cancel));
    tap
}

/// Whether anyone subscribes to `subject`: `None` when NATS could not say (disconnected).
pub async fn has_listeners(client: &async_nats::Client, subject: String) -> Option<bool> {
    let probe = async_nats::Request::new()
        .payload(Bytes::new())
        .timeout(Some(PROBE_WAIT));
    match client.send_request(subject, probe).await {
        Ok(_) => Some(true),
        Err(e) => match e.kind() {
            RequestErrorKind::NoResponders => Some(false),
            RequestErrorKind::TimedOut => Some(true),
            _ => None,
        },
    }
}

async fn probe(
    client: async_nats::Client,
    subject: String,
    tap: Arc<Tap>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(listening) = has_listeners(&client, subject.clone()).await {
            tap.interest.store(listening, Ordering::Relaxed);
        }
    }
}

async fn publish(
    client: async_nats::Client,
    subject: String,
    camera: CameraId,
    config: PreviewConfig,
    stats: Arc<IngestStats>,
    mut rx: mpsc::Receiver<Offered>,
    cancel: CancellationToken,
) {
    loop {
        let Offered { payload, trace } = tokio::select! {
            () = cancel.cancelled() => return,
            next = rx.recv() => match next {
                Some(p) => p,
                None => return,
            },
        };
        let made = tokio::task::spawn_blocking(move || make(payload, config)).await;
        let (meta, jpeg) = match made {
            Ok(Ok(preview)) => preview,
            Ok(Err(e)) => {
                tracing::debug!(%camera, error = %e, "no preview of this frame");
                continue;
            }
            Err(_) => continue,
        };
        let mut headers = trace.unwrap_or_default();
        for (name, value) in meta.headers() {
            headers.insert(name, value.as_str());
        }
        if client
            .publish_with_headers(subject.clone(), headers, jpeg)
            .await
            .is_ok()
        {
            stats.previews.fetch_add(1, Ordering::Relaxed);
            count_camera(meter::INGEST_PREVIEWS, camera.as_str(), 1);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewMakeError {
    #[error("{0}")]
    Frame(#[from] panoptes_contracts::FrameError),
    #[error("{0}")]
    Image(#[from] panoptes_op_preprocess::PreprocessError),
    #[error("frames in {0} get no preview")]
    Format(&'static str),
}

/// The preview of a frame's wire payload: RGB scaled and encoded, a JPEG frame as it is.
pub fn make(
    payload: Bytes,
    config: PreviewConfig,
) -> Result<(PreviewMeta, Bytes), PreviewMakeError> {
    let frame = Frame::decode(payload, None)?;
    let meta = PreviewMeta {
        camera: frame.camera.to_string(),
        seq: frame.seq,
        capture_ts_ns: frame.capture_ts_ns,
        frame_width: frame.width,
        frame_height: frame.height,
    };
    let jpeg = match frame.format {
        PixelFormat::Jpeg => Bytes::copy_from_slice(frame.pixels.as_slice()),
        PixelFormat::Rgb8 => {
            let (file, _, _) = panoptes_op_preprocess::jpeg::thumbnail(
                frame.pixels.as_slice(),
                frame.width,
                frame.height,
                config.width,
                config.quality,
            )?;
            Bytes::from(file)
        }
        other => return Err(PreviewMakeError::Format(other.as_str())),
    };
    Ok((meta, jpeg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_gives_a_seconds_worth_at_once_and_its_rate_on_average() {
        let budget = Budget::new(8.0);
        let ms = |m: u64| m * 1_000_000;
        // Sixteen cameras offering at once: eight get a turn.
        let at_once = (0..16).filter(|_| budget.take_at(ms(0))).count();
        assert_eq!(at_once, 8);
        // Then one turn every 125 ms.
        assert!(!budget.take_at(ms(124)));
        assert!(budget.take_at(ms(125)));
        assert!(!budget.take_at(ms(126)));
        // Turns are saved up to a second's worth, no more.
        let after_quiet = (0..16).filter(|_| budget.take_at(ms(5000))).count();
        assert_eq!(after_quiet, 8);
        // Over ten seconds of constant asking: the rate.
        let taken = (5001..15000).filter(|&t| budget.take_at(ms(t))).count();
        assert!((78..=81).contains(&taken), "{taken}");
    }
}
