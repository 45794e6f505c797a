//! Which analytics events and detection messages start (or extend) a clip: the topology's
//! `record.rules`, matched per camera.

use panoptes_contracts::analytics::AnalyticsEvent;
use panoptes_contracts::detection::DetectionMessage;
use panoptes_topology::RecordRule;

/// An event that asks for a clip, with what the clip needs of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    /// The analytics event's ID, or `<camera>:<seq>:detections` for a detection message.
    pub event_id: String,
    /// `zone_enter`, `line_cross`, …, or `detection`.
    pub kind: String,
    pub camera: String,
    pub seq: u64,
    pub capture_ts_ns: u64,
    pub track_id: Option<u64>,
    /// The rules that matched.
    pub rules: Vec<String>,
    /// The longest pre- and post-roll and clip length of those rules, in nanoseconds, and
    /// whether any of them draws.
    pub pre_ns: u64,
    pub post_ns: u64,
    pub max_ns: u64,
    pub draw: bool,
}

/// The rules of a topology.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<RecordRule>,
}

fn ns(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1e9) as u64
}

fn allows(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == value)
}

impl Rules {
    pub fn new(rules: Vec<RecordRule>) -> Self {
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The longest pre-roll of any rule, in nanoseconds.
    pub fn longest_pre_ns(&self) -> u64 {
        self.rules
            .iter()
            .map(|r| ns(r.pre_roll_s))
            .max()
            .unwrap_or(0)
    }

    fn trigger(
        &self,
        matched: Vec<&RecordRule>,
        event_id: String,
        kind: &str,
        (camera, seq, capture_ts_ns): (&str, u64, u64),
        track_id: Option<u64>,
    ) -> Option<Trigger> {
        if matched.is_empty() {
            return None;
        }
        Some(Trigger {
            event_id,
            kind: kind.to_owned(),
            camera: camera.to_owned(),
            seq,
            capture_ts_ns,
            track_id,
            rules: matched.iter().map(|r| r.id.clone()).collect(),
            pre_ns: matched.iter().map(|r| ns(r.pre_roll_s)).max().unwrap_or(0),
            post_ns: matched.iter().map(|r| ns(r.post_roll_s)).max().unwrap_or(0),
            max_ns: matched
                .iter()
                .map(|r| ns(r.max_length_s))
                .max()
                .unwrap_or(0),
            draw: matched.iter().any(|r| r.draw),
        })
    }

    /// The trigger an analytics event makes, if any rule without `detections` matches it.
    pub fn analytics(&self, e: &AnalyticsEvent) -> Option<Trigger> {
        let place = e.zone.as_deref().or(e.line.as_deref()).unwrap_or("");
        let matched: Vec<&RecordRule> = self
            .rules
            .iter()
            .filter(|r| {
                r.detections.is_empty()
                    && allows(&r.cameras, &e.camera)
                    && (r.kinds.is_empty() || r.kinds.contains(&e.kind))
                    && allows(&r.places, place)
                    && allows(&r.labels, &e.label)
            })
            .collect();
        self.trigger(
            matched,
            e.id.clone(),
            e.kind.name(),
            (&e.camera, e.seq, e.capture_ts_ns),
            Some(e.track_id),
        )
    }

    /// The trigger a detection message makes, if a rule's `detections` names a label in it.
    pub fn detections(&self, m: &DetectionMessage) -> Option<Trigger> {
        let matched: Vec<&RecordRule> = self
            .rules
            .iter()
            .filter(|r| {
                !r.detections.is_empty()
                    && allows(&r.cameras, &m.camera)
                    && m.detections.iter().any(|d| r.detections.contains(&d.label))
            })
            .collect();
        let track = m
            .detections
            .iter()
            .find(|d| matched.iter().any(|r| r.detections.contains(&d.label)))
            .and_then(|d| d.track.as_ref().map(|t| t.track_id));
        self.trigger(
            matched,
            format!("{}:{}:{}", m.camera, m.seq, m.pipeline),
            "detection",
            (&m.camera, m.seq, m.capture_ts_ns),
            track,
        )
    }
}
