//! Reads the deployment from NATS into the [`Deployment`]: detections, analytics, events and
//! clips by subscription; pictures only while a browser watches: the ingest nodes' previews
//! (`<ns>.preview.*`, which they publish only while someone subscribes there) and, for cameras
//! that send none (a publisher other than Panoptes' ingest, previews turned off), frames
//! sampled at the capped rate (a subscription per camera that the server ends after one
//! frame); which worker holds which partition from the lease bucket. Subscribes and reads
//! only: nothing here publishes or writes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use async_nats::jetstream;
use futures::StreamExt;
use panoptes_contracts::Subjects;
use panoptes_contracts::headers::TRACEPARENT;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::ViewError;
use crate::model::Deployment;

/// How often the lease bucket is read, and how long one reading may take (a key listing of a
/// bucket whose entries expire can wait forever, nats-server#3481).
const LEASES_EVERY: Duration = Duration::from_secs(2);
/// How often, while a browser watches, the view looks for cameras it does not know yet (any
/// camera's frames for a moment), and how long it looks.
const DISCOVER_EVERY: Duration = Duration::from_secs(10);
const DISCOVER_FOR: Duration = Duration::from_millis(300);
/// A camera whose ingest sent no preview and no probe for this long (counted from when a
/// browser started watching) has its frames sampled instead. Longer than the ingest's probe
/// period, so a camera with previews is never sampled while they start or while its share of
/// its node's preview budget has not come round.
const PREVIEW_WITHIN: Duration = Duration::from_secs(5);

/// How often frames are sampled.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    /// Frames per second per camera.
    pub per_camera: f64,
    /// Frames per second over all cameras (each camera gets its share).
    pub total: f64,
}

impl Rates {
    /// The time between two samples of each of `cameras` cameras.
    pub fn period(&self, cameras: usize) -> Duration {
        let share = self.total / cameras.max(1) as f64;
        Duration::from_secs_f64(1.0 / self.per_camera.min(share).max(0.01))
    }
}

/// A partition lease: which worker of which unit holds it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Lease {
    pub unit: String,
    pub partition: u32,
    pub worker: String,
}

/// Subscribes to the namespace's subjects and feeds `model` until `cancel`; samples frames
/// while `watching` (the number of browsers) is above zero. Each subscription buffers what the
/// client's `subscription_capacity` allows: a view that falls behind loses messages of its own
/// and slows nobody (core NATS drops for a slow subscriber).
pub async fn run(
    client: async_nats::Client,
    namespace: String,
    model: Arc<Mutex<Deployment>>,
    leases: Arc<Mutex<Vec<Lease>>>,
    watching: watch::Receiver<usize>,
    rates: Rates,
    cancel: CancellationToken,
) -> Result<(), ViewError> {
    let subjects = Subjects::new(namespace.clone());
    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| ViewError::Nats(format!("cannot subscribe to {subject}: {e}")))
        }
    };
    let mut detections = subscribe(subjects.all_detections()).await?;
    let mut analytics = subscribe(subjects.all_analytics()).await?;
    let mut events = subscribe(subjects.all_events()).await?;
    let mut clips = subscribe(subjects.all_clips()).await?;
    let mut tasks = JoinSet::new();
    tasks.spawn(read_leases(
        client.clone(),
        namespace.clone(),
        leases,
        cancel.clone(),
    ));
    tasks.spawn(read_previews(
        client.clone(),
        subjects.clone(),
        model.clone(),
        watching.clone(),
        cancel.clone(),
    ));
    tasks.spawn(sample_frames(
        client.clone(),
        namespace.clone(),
        model.clone(),
        watching,
        rates,
        cancel.clone(),
    ));
    let lock = || model.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(m) = detections.next() => {
                let camera = subjects.camera_of(&m.subject).unwrap_or_default();
                lock().detections(camera, &m.payload, Instant::now());
            }
            Some(m) = analytics.next() => {
                let camera = subjects.camera_of(&m.subject).unwrap_or_default();
                lock().analytics(camera, &m.payload);
            }
            Some(m) = events.next() => {
                let camera = subjects.camera_of(&m.subject).unwrap_or_default();
                lock().event(camera, &m.payload, Instant::now());
            }
            Some(m) = clips.next() => {
                let camera = subjects.camera_of(&m.subject).unwrap_or_default();
                lock().clip(camera, &m.payload);
            }
            else => break,
        }
    }
    tasks.abort_all();
    Ok(())
}

/// The camera token of a frames subject: `<ns>.frames.<camera>` or, with the partition
/// mapping, `<ns>.frames.<camera>.<partition>`.
fn frame_camera<'a>(namespace: &str, subject: &'a str) -> Option<&'a str> {
    subject
        .strip_prefix(namespace)?
        .strip_prefix(".frames.")?
        .split('.')
        .next()
}

fn take_frame(model: &Mutex<Deployment>, namespace: &str, m: &async_nats::Message) {
    let Some(camera) = frame_camera(namespace, &m.subject) else {
        return;
    };
    let trace = trace_of(m.headers.as_ref());
    model.lock().unwrap_or_else(PoisonError::into_inner).frame(
        camera,
        m.payload.clone(),
        trace,
        Instant::now(),
    );
}

/// While a browser watches: every period, one frame of each known camera that sends no
/// previews, and now and then (while no camera sends previews) a look for cameras not known
/// yet. Frames cost the pipeline nothing when nobody watches, and at most the capped rate when
/// someone does.
async fn sample_frames(
    client: async_nats::Client,
    namespace: String,
    model: Arc<Mutex<Deployment>>,
    mut watching: watch::Receiver<usize>,
    rates: Rates,
    cancel: CancellationToken,
) {
    let mut discovered: Option<Instant> = None;
    let mut since: Option<Instant> = None;
    loop {
        if *watching.borrow_and_update() == 0 {
            discovered = None;
            since = None;
            if !browser_arrives(&mut watching, &cancel).await {
                return;
            }
            continue;
        }
        let started = tokio::time::Instant::now();
        let now = Instant::now();
        let watched_for = now.duration_since(*since.get_or_insert(now));
        let lock = || model.lock().unwrap_or_else(PoisonError::into_inner);
        if watched_for < PREVIEW_WITHIN {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(PREVIEW_WITHIN - watched_for) => {}
            }
            continue;
        }
        let any_previews = lock().previewed_any(now, PREVIEW_WITHIN);
        if !any_previews && discovered.is_none_or(|t| t.elapsed() >= DISCOVER_EVERY) {
            discovered = Some(Instant::now());
            if let Ok(mut any) = client.subscribe(format!("{namespace}.frames.>")).await {
                let until = tokio::time::Instant::now() + DISCOVER_FOR;
                while let Ok(Some(m)) = tokio::time::timeout_at(until, any.next()).await {
                    take_frame(&model, &namespace, &m);
                }
            }
        }
        let cameras = lock().camera_ids();
        let period = rates.period(cameras.len());
        let cameras: Vec<String> = {
            let model = lock();
            cameras
                .into_iter()
                .filter(|c| !model.previewed(c, now, PREVIEW_WITHIN))
                .collect()
        };
        let mut samples = JoinSet::new();
        for camera in cameras {
            samples.spawn(sample_one(
                client.clone(),
                namespace.clone(),
                camera,
                period,
            ));
        }
        while let Some(sampled) = samples.join_next().await {
            if let Ok(Some(m)) = sampled {
                take_frame(&model, &namespace, &m);
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(started + period) => {}
        }
    }
}

/// While a browser watches, the ingest nodes' previews of every camera; the subscription
/// ends when the last browser leaves, and with it the ingest nodes' previews.
async fn read_previews(
    client: async_nats::Client,
    subjects: Subjects,
    model: Arc<Mutex<Deployment>>,
    mut watching: watch::Receiver<usize>,
    cancel: CancellationToken,
) {
    loop {
        if *watching.borrow_and_update() == 0 {
            if !browser_arrives(&mut watching, &cancel).await {
                return;
            }
            continue;
        }
        let Ok(mut previews) = client.subscribe(subjects.all_previews()).await else {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = watching.changed() => {
                    if changed.is_err() { return }
                    if *watching.borrow_and_update() == 0 { break }
                }
                next = previews.next() => {
                    let Some(m) = next else { break };
                    let camera = subjects.camera_of(&m.subject).unwrap_or_default();
                    // An ingest node's interest probe: the camera has previews coming.
                    if m.payload.is_empty() {
                        model
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .probed(camera, Instant::now());
                        continue;
                    }
                    let headers = m.headers.as_ref();
                    let trace = trace_of(headers);
                    model.lock().unwrap_or_else(PoisonError::into_inner).preview(
                        camera,
                        |name| headers.and_then(|h| h.get(name)).map(|v| v.as_str()),
                        m.payload.clone(),
                        trace,
                        Instant::now(),
                    );
                }
            }
        }
        let _ = previews.unsubscribe().await;
    }
}

/// The next frame of `camera`, published within `wait`: subscriptions (with and without the
/// partition suffix) that the server ends after one message.
async fn sample_one(
    client: async_nats::Client,
    namespace: String,
    camera: String,
    wait: Duration,
) -> Option<async_nats::Message> {
    let mut plain = client
        .subscribe(format!("{namespace}.frames.{camera}"))
        .await
        .ok()?;
    let mut mapped = client
        .subscribe(format!("{namespace}.frames.{camera}.*"))
        .await
        .ok()?;
    let _ = plain.unsubscribe_after(1).await;
    let _ = mapped.unsubscribe_after(1).await;
    tokio::time::timeout(wait, async {
        tokio::select! {
            Some(m) = plain.next() => Some(m),
            Some(m) = mapped.next() => Some(m),
            else => None,
        }
    })
    .await
    .ok()
    .flatten()
}

/// Waits for the number of watching browsers to change (callers check it is above zero);
/// false when the view stops.
async fn browser_arrives(
    watching: &mut watch::Receiver<usize>,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        changed = watching.changed() => changed.is_ok(),
    }
}

/// The sampled trace a message's headers carry, if any.
fn trace_of(headers: Option<&async_nats::HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get(TRACEPARENT))
        .and_then(|v| sampled_trace(v.as_str()))
}

/// The trace ID of a W3C `traceparent` whose sampled flag is set.
fn sampled_trace(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, trace, _span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
    (sampled && trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| trace.to_owned())
}

/// Reads `lease.<unit>.<partition>` keys of the lease bucket every [`LEASES_EVERY`]. The bucket
/// is looked up, never created: a deployment without leased workers shows none.
async fn read_leases(
    client: async_nats::Client,
    namespace: String,
    leases: Arc<Mutex<Vec<Lease>>>,
    cancel: CancellationToken,
) {
    let js = jetstream::new(client);
    let bucket = panoptes_pipeline::lease::bucket_name(&namespace);
    let mut tick = tokio::time::interval(LEASES_EVERY);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let reading = async {
            let kv = js.get_key_value(&bucket).await.ok()?;
            let mut keys = kv.keys().await.ok()?;
            let mut found = Vec::new();
            while let Some(Ok(key)) = keys.next().await {
                let Some(rest) = key.strip_prefix("lease.") else {
                    continue;
                };
                let Some((unit, partition)) = rest.rsplit_once('.') else {
                    continue;
                };
                let Ok(partition) = partition.parse() else {
                    continue;
                };
                found.push((unit.to_owned(), partition, key));
            }
            let mut out = Vec::new();
            for (unit, partition, key) in found.into_iter().take(4096) {
                if let Ok(Some(worker)) = kv.get(&key).await {
                    out.push(Lease {
                        unit,
                        partition,
                        worker: String::from_utf8_lossy(&worker).into_owned(),
                    });
                }
            }
            out.sort_by(|a, b| (&a.unit, a.partition).cmp(&(&b.unit, b.partition)));
            Some(out)
        };
        if let Ok(Some(found)) = tokio::time::timeout(LEASES_EVERY, reading).await {
            *leases.lock().unwrap_or_else(PoisonError::into_inner) = found;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_subjects_name_their_camera_with_or_without_a_partition() {
        assert_eq!(frame_camera("ns", "ns.frames.cam-1"), Some("cam-1"));
        assert_eq!(frame_camera("ns", "ns.frames.cam-1.3"), Some("cam-1"));
        assert_eq!(frame_camera("ns", "other.frames.cam-1"), None);
    }

    #[test]
    fn the_rate_is_shared_by_the_cameras() {
        let rates = Rates {
            per_camera: 5.0,
            total: 12.0,
        };
        assert_eq!(rates.period(1), Duration::from_millis(200));
        assert_eq!(rates.period(2), Duration::from_millis(200));
        assert_eq!(rates.period(16), Duration::from_secs_f64(16.0 / 12.0));
    }

    #[test]
    fn only_sampled_traces_are_linked() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            sampled_trace(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        assert_eq!(sampled_trace(&format!("00-{id}-00f067aa0ba902b7-00")), None);
        assert_eq!(sampled_trace("00-zz-00f067aa0ba902b7-01"), None);
        assert_eq!(sampled_trace("garbage"), None);
    }
}
