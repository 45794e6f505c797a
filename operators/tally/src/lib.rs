//! Tally: counts, per camera, the frames it saw and the detections of each label, for the
//! camera's whole life rather than one worker's: the counts are the camera's state in the
//! stateful world (`panoptes:operator/stateful-operator@0.2.0`), saved by the host and restored
//! on the camera's next owner. Each frame's output is its input detections, unchanged, plus one
//! box over the whole frame labelled `label` (default `tally`) whose text is the counts as
//! JSON: `{"frames":57,"labels":{"person":102}}`.
//! Invariant: counts only grow while a camera stays known; a state it cannot read is refused.

use std::collections::BTreeMap;

use panoptes_operator_sdk::{Detection, Error, Frame, Input, Operator, Output};
use panoptes_operator_sdk_stateful::{IdRange, Stateful};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_label")]
    pub label: String,
}

fn default_label() -> String {
    "tally".into()
}

/// One camera's counts: what a snapshot carries (with [`STATE_VERSION`]).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub frames: u64,
    pub labels: BTreeMap<String, u64>,
}

/// Version of the snapshot format; a state of another version is refused.
pub const STATE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    counts: Counts,
}

pub struct Tally {
    label: String,
    cameras: BTreeMap<String, Counts>,
}

impl Tally {
    pub fn counts(&self, camera: &str) -> Option<&Counts> {
        self.cameras.get(camera)
    }

    /// Counts a frame of `camera` with `detections`; returns the summary box's text.
    pub fn count(&mut self, camera: &str, detections: &[Detection]) -> String {
        let counts = self.cameras.entry(camera.to_owned()).or_default();
        counts.frames += 1;
        for d in detections {
            *counts.labels.entry(d.label.clone()).or_default() += 1;
        }
        serde_json::to_string(counts).unwrap_or_default()
    }
}

impl Operator for Tally {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Config = panoptes_operator_sdk::config(config)?;
        Ok(Self {
            label: config.label,
            cameras: BTreeMap::new(),
        })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<Output, Error> {
        let mut detections = match input {
            Input::Detections(d) => d,
            Input::Frame => Vec::new(),
            Input::Tensors(_) => {
                return Err(Error::InvalidInput(
                    "tally counts frames and detections, not tensors".into(),
                ));
            }
        };
        let text = self.count(&frame.camera(), &detections);
        detections.push(Detection {
            x1: 0.0,
            y1: 0.0,
            x2: frame.width() as f32,
            y2: frame.height() as f32,
            score: 1.0,
            label: self.label.clone(),
            text: Some(text),
        });
        Ok(Output::Detections(detections))
    }
}

impl Stateful for Tally {
    fn snapshot(&self, camera: &str) -> Option<Vec<u8>> {
        let counts = self.cameras.get(camera)?.clone();
        serde_json::to_vec(&Saved {
            version: STATE_VERSION,
            counts,
        })
        .ok()
    }

    fn restore(
        &mut self,
        camera: &str,
        state: Option<Vec<u8>>,
        _ids: IdRange,
    ) -> Result<(), String> {
        let counts = match state {
            None => Counts::default(),
            Some(bytes) => {
                let saved: Saved = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("not a tally state: {e}"))?;
                if saved.version != STATE_VERSION {
                    return Err(format!(
                        "tally state version {} (this build reads {STATE_VERSION})",
                        saved.version
                    ));
                }
                saved.counts
            }
        };
        self.cameras.insert(camera.to_owned(), counts);
        Ok(())
    }

    fn forget(&mut self, camera: &str) {
        self.cameras.remove(camera);
    }
}

panoptes_operator_sdk_stateful::export_stateful_operator!(Tally);

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> IdRange {
        IdRange { first: 1, end: 10 }
    }

    #[test]
    fn counts_survive_a_snapshot_and_restore() {
        let mut a = Tally::init("{}").expect("init");
        a.count("cam", &[]);
        a.count("cam", &[]);
        let saved = a.snapshot("cam").expect("state");
        let mut b = Tally::init("{}").expect("init");
        b.restore("cam", Some(saved), ids()).expect("restore");
        assert_eq!(b.count("cam", &[]), r#"{"frames":3,"labels":{}}"#);
        assert!(b.snapshot("other").is_none());
    }

    #[test]
    fn another_version_or_garbage_is_refused() {
        let mut t = Tally::init("{}").expect("init");
        let old = br#"{"version":0,"counts":{"frames":1,"labels":{}}}"#.to_vec();
        assert!(
            t.restore("cam", Some(old), ids())
                .unwrap_err()
                .contains("version 0")
        );
        assert!(t.restore("cam", Some(b"\xff".to_vec()), ids()).is_err());
        t.restore("cam", None, ids()).expect("fresh start");
        t.forget("cam");
        assert!(t.counts("cam").is_none());
    }
}
