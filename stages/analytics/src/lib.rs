//! Zones, lines and dwell: what tracked objects do in the places a camera's topology names.
//!
//! Owns the rules of one camera in pixels (`rules.rs`: zones and lines from the topology,
//! scaled to the frame), what each track is doing against them (`camera.rs`: inside which
//! zones since when, which side of each line, missing for how long) and the `analytics` stage
//! (`stage.rs`: events on `<ns>.analytics.<camera>`, time rules on the tick, occupancy and
//! crossing metrics, state that follows the camera to its next worker).
//!
//! Invariant: per track and zone, events alternate `zone_enter`, (`dwell` at most once),
//! `zone_exit`, and a track that ends inside a zone exits it; a line crossing is reported once
//! per change of side.

mod camera;
mod rules;
mod stage;

pub use camera::{CameraAnalytics, Limits, Observed};
pub use rules::{Line, Rules, Zone};
pub use stage::{AnalyticsStage, BuildError, TICK, build};
