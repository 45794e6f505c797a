//! A time range of the retention stream: its frames one by one in stream order, and the
//! detections stored for them. Reading acknowledges and removes nothing.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use bytes::Bytes;
use futures::StreamExt as _;
use panoptes_contracts::detection::DetectionMessage;
use panoptes_contracts::frame::Frame;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::compare::ByFrame;
use crate::{ReplayError, js_error};

/// How long after a range's end its frames' detections may still have been stored.
const DETECTIONS_GRACE: Duration = Duration::from_secs(30);
/// A read that hands out nothing for this long has nothing more to give: a guard against a
/// hang only, since reading ends at the last message stored when it began.
const QUIET: Duration = Duration::from_secs(30);

/// From when to when frames were stored (by their arrival in the stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

impl Range {
    /// `--from`/`--to` (RFC 3339) or `--last` (up to now).
    pub fn new(
        from: Option<&str>,
        to: Option<&str>,
        last: Option<Duration>,
    ) -> Result<Self, ReplayError> {
        let now = OffsetDateTime::now_utc();
        let parse = |what: &str, s: &str| {
            OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
                ReplayError::Range(format!(
                    "--{what} {s:?} is not an RFC 3339 time such as 2026-12-06T21:30:00Z: {e}"
                ))
            })
        };
        let to = match to {
            Some(t) => parse("to", t)?,
            None => now,
        };
        let from = match (from, last) {
            (Some(f), None) => parse("from", f)?,
            (None, Some(d)) => to - d,
            (None, None) => {
                return Err(ReplayError::Range(
                    "say which frames: --last DURATION, or --from TIME [--to TIME]".into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ReplayError::Range(
                    "--from and --last exclude each other".into(),
                ));
            }
        };
        if from >= to {
            return Err(ReplayError::Range(format!(
                "the range is empty: it starts at {from} and ends at {to}"
            )));
        }
        Ok(Self { from, to })
    }
}

/// A frame as stored.
#[derive(Clone, Debug)]
pub struct StoredFrame {
    pub camera: String,
    pub seq: u64,
    pub capture_ts_ns: u64,
    /// The Arrow `frame/v1` payload, as published.
    pub payload: Bytes,
}

/// Whether `subject` is a frames or detections subject of `namespace` for `cameras`, and
/// which.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Frame,
    Detections,
}

fn kind_of(namespace: &str, subject: &str, cameras: Option<&[String]>) -> Option<Kind> {
    let rest = subject.strip_prefix(namespace)?.strip_prefix('.')?;
    let (kind, rest) = rest.split_once('.')?;
    let camera = rest.split('.').next()?;
    if cameras.is_some_and(|c| !c.iter().any(|c| c == camera)) {
        return None;
    }
    match kind {
        "frames" => Some(Kind::Frame),
        "detections" if !rest.contains('.') => Some(Kind::Detections),
        _ => None,
    }
}

/// A time range of the retention stream, read message by message by stream sequence (a direct
/// get each: a replay that takes its time never makes a consumer fall behind). Frames come
/// out one by one; the detections met on the way, and those stored up to
/// [`DETECTIONS_GRACE`] after the range, are kept for [`Retained::detections`].
pub struct Retained {
    stream: Stream,
    namespace: String,
    cameras: Option<Vec<String>>,
    range: Range,
    next: u64,
    /// The stream's last message when the read began: later ones are not read.
    last: u64,
    frames_done: bool,
    detections: ByFrame,
}

impl Retained {
    pub async fn open(
        stream: &Stream,
        namespace: &str,
        range: Range,
        cameras: Option<&[String]>,
    ) -> Result<Self, ReplayError> {
        let state = stream.clone().info().await.map_err(js_error)?.state.clone();
        let mut retained = Self {
            stream: stream.clone(),
            namespace: namespace.to_owned(),
            cameras: cameras.map(<[String]>::to_vec),
            range,
            next: 0,
            last: state.last_sequence,
            frames_done: true,
            detections: ByFrame::new(),
        };
        if state.messages == 0 {
            return Ok(retained);
        }
        // The first message stored at or after the range's start.
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartTime {
                    start_time: range.from,
                },
                ..Default::default()
            })
            .await
            .map_err(js_error)?;
        let mut messages = consumer.messages().await.map_err(js_error)?;
        if let Ok(Some(first)) = tokio::time::timeout(QUIET, messages.next()).await {
            let first = first.map_err(js_error)?;
            retained.next = first.info().map_err(js_error)?.stream_sequence;
            retained.frames_done = false;
        }
        Ok(retained)
    }

    /// The next stored message of the range's cameras, until `until`.
    async fn message(
        &mut self,
        until: OffsetDateTime,
    ) -> Result<Option<async_nats::jetstream::message::StreamMessage>, ReplayError> {
        while self.next != 0 && self.next <= self.last {
            let seq = self.next;
            // A direct get: the payload as stored (a frame near max_payload fits), from any
            // replica.
            let message = match self.stream.direct_get(seq).await {
                Ok(m) => m,
                // Removed since (limits, or a deleted message): nothing to replay there.
                Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => {
                    self.next += 1;
                    continue;
                }
                Err(e) => return Err(js_error(e)),
            };
            if message.time > until {
                return Ok(None);
            }
            self.next += 1;
            return Ok(Some(message));
        }
        Ok(None)
    }

    fn keep_detections(&mut self, payload: &[u8]) {
        if let Ok(d) = serde_json::from_slice::<DetectionMessage>(payload) {
            self.detections
                .entry((d.camera.clone(), d.seq))
                .or_default()
                .push(d);
        }
    }

    /// The next frame of the range; `None` at its end. A stored frame that does not decode is
    /// skipped with a warning.
    pub async fn next_frame(&mut self) -> Result<Option<StoredFrame>, ReplayError> {
        if self.frames_done {
            return Ok(None);
        }
        while let Some(m) = self.message(self.range.to).await? {
            match kind_of(&self.namespace, &m.subject, self.cameras.as_deref()) {
                Some(Kind::Detections) => self.keep_detections(&m.payload),
                Some(Kind::Frame) => match Frame::decode(m.payload.clone(), None) {
                    Ok(f) => {
                        return Ok(Some(StoredFrame {
                            camera: f.camera.to_string(),
                            seq: f.seq,
                            capture_ts_ns: f.capture_ts_ns,
                            payload: m.payload,
                        }));
                    }
                    Err(e) => {
                        tracing::warn!(subject = %m.subject, error = %e, "stored frame does not decode; skipped");
                    }
                },
                None => {}
            }
        }
        self.frames_done = true;
        Ok(None)
    }

    /// The detection messages stored for the range's frames, by camera and seq (reading past
    /// the frames that were not taken).
    pub async fn detections(mut self) -> Result<ByFrame, ReplayError> {
        while self.next_frame().await?.is_some() {}
        while let Some(m) = self.message(self.range.to + DETECTIONS_GRACE).await? {
            if kind_of(&self.namespace, &m.subject, self.cameras.as_deref())
                == Some(Kind::Detections)
            {
                self.keep_detections(&m.payload);
            }
        }
        Ok(self.detections)
    }
}

/// The detection messages stored for `range`'s frames of `cameras` (all when `None`).
pub async fn detections(
    stream: &Stream,
    namespace: &str,
    range: Range,
    cameras: Option<&[String]>,
) -> Result<ByFrame, ReplayError> {
    Retained::open(stream, namespace, range, cameras)
        .await?
        .detections()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_from_the_flags() {
        let r = Range::new(
            Some("2026-12-06T21:00:00Z"),
            Some("2026-12-06T21:10:00Z"),
            None,
        )
        .expect("range");
        assert_eq!((r.to - r.from).whole_seconds(), 600);
        let r = Range::new(None, None, Some(Duration::from_secs(90))).expect("range");
        assert_eq!((r.to - r.from).whole_seconds(), 90);
        for bad in [
            Range::new(None, None, None),
            Range::new(Some("yesterday"), None, None),
            Range::new(
                Some("2026-12-06T21:00:00Z"),
                None,
                Some(Duration::from_secs(1)),
            ),
            Range::new(
                Some("2026-12-06T21:10:00Z"),
                Some("2026-12-06T21:00:00Z"),
                None,
            ),
        ] {
            assert!(bad.is_err());
        }
    }

    #[test]
    fn subjects_are_told_apart_by_kind_and_camera() {
        let cams = ["a".to_owned()];
        assert_eq!(kind_of("ns", "ns.frames.a", None), Some(Kind::Frame));
        assert_eq!(
            kind_of("ns", "ns.frames.a.3", Some(&cams)),
            Some(Kind::Frame)
        );
        assert_eq!(
            kind_of("ns", "ns.detections.a", Some(&cams)),
            Some(Kind::Detections)
        );
        assert_eq!(kind_of("ns", "ns.detections.b", Some(&cams)), None);
        assert_eq!(kind_of("ns", "ns.events.a", None), None);
        assert_eq!(kind_of("ns", "other.frames.a", None), None);
    }
}
