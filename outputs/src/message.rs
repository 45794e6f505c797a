//! A message an output delivers, made from a payload read on NATS: parsed (bounded), checked
//! against the output's filter, and named by the ID receivers drop duplicates by.

use bytes::Bytes;
use panoptes_contracts::analytics::{AnalyticsEvent, AnalyticsKind};
use panoptes_contracts::clip::{ClipKind, ClipMessage};
use panoptes_contracts::detection::DetectionMessage;
use panoptes_topology::{OutputFilter, OutputSource};

/// Largest payload an output reads; larger ones are skipped as malformed.
pub const MAX_PAYLOAD: usize = 4 << 20;

/// One message to deliver.
#[derive(Clone, Debug)]
pub struct Message {
    pub source: OutputSource,
    pub camera: String,
    /// The analytics kind (`zone_enter`, …) or `detections`.
    pub kind: &'static str,
    /// The object's label (analytics events).
    pub label: Option<String>,
    /// Unique per message and the same for every delivery of it.
    pub id: String,
    /// The JSON delivered: the payload as published, or without the detections the filter
    /// left out.
    pub body: Bytes,
}

/// Why a payload could not be read as a message of its subject.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("not a {what} message: {error}")]
    Json {
        what: &'static str,
        error: serde_json::Error,
    },
    #[error("schema {0:?} is not one this output reads")]
    Schema(String),
    #[error("its camera {inside:?} is not the subject's {subject:?}")]
    Camera { inside: String, subject: String },
}

/// An output's filter, ready to apply.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    cameras: Vec<String>,
    labels: Vec<String>,
    kinds: Vec<AnalyticsKind>,
}

impl From<&OutputFilter> for Filter {
    fn from(f: &OutputFilter) -> Self {
        Self {
            cameras: f.cameras.clone(),
            labels: f.labels.clone(),
            kinds: f.kinds.clone(),
        }
    }
}

impl Filter {
    /// The cameras it keeps (empty: all), for subject filters.
    pub fn cameras(&self) -> &[String] {
        &self.cameras
    }

    fn camera(&self, camera: &str) -> bool {
        self.cameras.is_empty() || self.cameras.iter().any(|c| c == camera)
    }

    fn label(&self, label: &str) -> bool {
        self.labels.is_empty() || self.labels.iter().any(|l| l == label)
    }

    /// The message `payload` (read on `camera`'s subject of `source`) makes, `None` when the
    /// filter leaves it out.
    pub fn admit(
        &self,
        source: OutputSource,
        camera: &str,
        payload: &Bytes,
    ) -> Result<Option<Message>, Malformed> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Malformed::TooLarge(payload.len()));
        }
        if !self.camera(camera) {
            return Ok(None);
        }
        let same_camera = |inside: &str| {
            if inside == camera {
                Ok(())
            } else {
                Err(Malformed::Camera {
                    inside: inside.to_owned(),
                    subject: camera.to_owned(),
                })
            }
        };
        match source {
            OutputSource::Analytics => {
                let event: AnalyticsEvent =
                    serde_json::from_slice(payload).map_err(|error| Malformed::Json {
                        what: "analytics/v1",
                        error,
                    })?;
                if !event.schema.starts_with("analytics/v1") {
                    return Err(Malformed::Schema(event.schema));
                }
                same_camera(&event.camera)?;
                if !self.kinds.is_empty() && !self.kinds.contains(&event.kind) {
                    return Ok(None);
                }
                if !self.label(&event.label) {
                    return Ok(None);
                }
                Ok(Some(Message {
                    source,
                    camera: event.camera,
                    kind: event.kind.name(),
                    label: Some(event.label),
                    id: event.id,
                    body: payload.clone(),
                }))
            }
            OutputSource::Detections => {
                let mut msg: DetectionMessage =
                    serde_json::from_slice(payload).map_err(|error| Malformed::Json {
                        what: "detections/v1",
                        error,
                    })?;
                if !msg.schema.starts_with("detections/v1") {
                    return Err(Malformed::Schema(msg.schema));
                }
                same_camera(&msg.camera)?;
                let id =
                    panoptes_contracts::output::detections_id(&msg.camera, msg.seq, &msg.pipeline);
                let body = if self.labels.is_empty() {
                    payload.clone()
                } else {
                    let before = msg.detections.len();
                    msg.detections.retain(|d| self.label(&d.label));
                    if msg.detections.is_empty() {
                        return Ok(None);
                    }
                    if msg.detections.len() == before {
                        payload.clone()
                    } else {
                        serde_json::to_vec(&msg).map(Bytes::from).map_err(|error| {
                            Malformed::Json {
                                what: "detections/v1",
                                error,
                            }
                        })?
                    }
                };
                Ok(Some(Message {
                    source,
                    camera: msg.camera,
                    kind: "detections",
                    label: None,
                    id,
                    body,
                }))
            }
            OutputSource::Clips => {
                let clip: ClipMessage =
                    serde_json::from_slice(payload).map_err(|error| Malformed::Json {
                        what: "clips/v1",
                        error,
                    })?;
                if !clip.schema.starts_with("clips/v1") {
                    return Err(Malformed::Schema(clip.schema));
                }
                same_camera(&clip.camera)?;
                // `kinds`: clips holding an event of one of them (segments hold none).
                if !self.kinds.is_empty()
                    && !clip
                        .events
                        .iter()
                        .any(|e| self.kinds.iter().any(|k| k.name() == e.kind))
                {
                    return Ok(None);
                }
                Ok(Some(Message {
                    source,
                    camera: clip.camera,
                    kind: match clip.kind {
                        ClipKind::Clip => "clip",
                        ClipKind::Segment => "segment",
                    },
                    label: None,
                    id: clip.object,
                    body: payload.clone(),
                }))
            }
        }
    }
}
