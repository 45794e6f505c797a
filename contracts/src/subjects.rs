//! NATS subject names (contract v1): `<ns>.frames.<camera>`, `<ns>.detections.<camera>`,
//! `<ns>.events.<camera>`, `<ns>.analytics.<camera>`, `<ns>.outputs.<output>`,
//! `<ns>.clips.<camera>`, `<ns>.preview.<camera>`.

use crate::camera::CameraId;

#[derive(Clone, Debug)]
pub struct Subjects {
    ns: String,
}

impl Subjects {
    pub const DEFAULT_NAMESPACE: &'static str = "panoptes";

    pub fn new(ns: impl Into<String>) -> Self {
        Self { ns: ns.into() }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    pub fn frames(&self, camera: &CameraId) -> String {
        format!("{}.frames.{camera}", self.ns)
    }

    /// Every camera's frames.
    pub fn all_frames(&self) -> String {
        format!("{}.frames.*", self.ns)
    }

    pub fn detections(&self, camera: &CameraId) -> String {
        format!("{}.detections.{camera}", self.ns)
    }

    pub fn all_detections(&self) -> String {
        format!("{}.detections.*", self.ns)
    }

    pub fn events(&self, camera: &CameraId) -> String {
        format!("{}.events.{camera}", self.ns)
    }

    pub fn all_events(&self) -> String {
        format!("{}.events.*", self.ns)
    }

    /// Request/reply subject for reloading an operator stage's module (hot reload). Every
    /// worker subscribes (no queue group), so all of them swap.
    pub fn operator_reload(&self) -> String {
        format!("{}.control.operators.reload", self.ns)
    }

    /// Request/reply subject of the ingest processes' camera control: `add` (one ingest
    /// process takes it, queue group [`Self::CAMERA_CONTROL_GROUP`]), `remove`, `list` and
    /// `reload` (every ingest process; see docs/ingest.md).
    pub fn camera_control(&self, op: &str) -> String {
        format!("{}.control.cameras.{op}", self.ns)
    }

    /// Queue group of the `add` control subject, so exactly one ingest process starts a camera.
    pub const CAMERA_CONTROL_GROUP: &'static str = "panoptes-ingest";

    /// Like [`Self::detections`] for a camera token taken from a subject.
    pub fn detections_for(&self, camera: &str) -> String {
        format!("{}.detections.{camera}", self.ns)
    }

    /// Analytics events of a camera (`analytics/v1`).
    pub fn analytics_for(&self, camera: &str) -> String {
        format!("{}.analytics.{camera}", self.ns)
    }

    pub fn all_analytics(&self) -> String {
        format!("{}.analytics.*", self.ns)
    }

    /// Status events of an output (`output-events/v1`): its endpoint went down or came back,
    /// it gave up a message or dropped some.
    pub fn output_events(&self, output: &str) -> String {
        format!("{}.outputs.{output}", self.ns)
    }

    /// Clips and segments of a camera once stored (`clips/v1`).
    pub fn clips_for(&self, camera: &str) -> String {
        format!("{}.clips.{camera}", self.ns)
    }

    pub fn all_clips(&self) -> String {
        format!("{}.clips.*", self.ns)
    }

    /// Small JPEGs of a camera's frames (`preview/v1`), published only while someone listens.
    pub fn preview_for(&self, camera: &str) -> String {
        format!("{}.preview.{camera}", self.ns)
    }

    pub fn all_previews(&self) -> String {
        format!("{}.preview.*", self.ns)
    }

    /// Where a shadow stage reports each frame its candidate ran (`shadow/v1`).
    pub fn shadow_for(&self, stage: &str, camera: &str) -> String {
        format!("{}.shadow.{stage}.{camera}", self.ns)
    }

    /// Every shadow stage's reports.
    pub fn all_shadows(&self) -> String {
        format!("{}.shadow.>", self.ns)
    }

    /// Every output's status events.
    pub fn all_output_events(&self) -> String {
        format!("{}.outputs.*", self.ns)
    }

    /// Like [`Self::events`] for a camera token taken from a subject (not necessarily a valid
    /// [`CameraId`]: errors about such frames must still reach someone).
    pub fn events_for(&self, camera: &str) -> String {
        format!("{}.events.{camera}", self.ns)
    }

    /// The camera token of a `<ns>.<kind>.<camera>` subject, if it has that shape.
    pub fn camera_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(self.ns.as_str())?.strip_prefix('.')?;
        let (_, camera) = rest.split_once('.')?;
        (!camera.contains('.')).then_some(camera)
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(Self::DEFAULT_NAMESPACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = Subjects::default();
        let cam = CameraId::new("gate-2").expect("valid");
        assert_eq!(s.frames(&cam), "panoptes.frames.gate-2");
        assert_eq!(s.detections(&cam), "panoptes.detections.gate-2");
        assert_eq!(s.events(&cam), "panoptes.events.gate-2");
        assert_eq!(s.camera_of("panoptes.frames.gate-2"), Some("gate-2"));
        assert_eq!(s.camera_of("other.frames.gate-2"), None);
        assert_eq!(s.camera_of("panoptes.frames.a.b"), None);
    }
}
