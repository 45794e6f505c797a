//! What each track of one camera does against the camera's rules: which zones it is in and
//! since when, which side of each line it is on, how long it has been missing. Serialisable:
//! it is the state that follows the camera to its next worker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use panoptes_contracts::analytics::{AnalyticsKind, Direction};
use panoptes_topology::Side;
use panoptes_topology::geometry::{Point, contains, cross, segments_intersect};

use crate::rules::Rules;

/// Something a track did, before the stage dresses it as an `analytics/v1` event.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub kind: AnalyticsKind,
    /// The zone's or line's ID.
    pub place: String,
    pub direction: Option<Direction>,
    pub track_id: u64,
    pub label: String,
    /// The frame that showed it (the track's last one for events raised by time).
    pub seq: u64,
    pub capture_ts_ns: u64,
    /// When it happened (capture time).
    pub ts_ns: u64,
    pub dwell_ms: Option<u64>,
    pub ended: bool,
    pub point: Point,
}

/// When a missing track counts as ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Frames of the camera without the track.
    pub max_age: u32,
    /// Capture time without the track (also applied on the tick).
    pub max_age_ms: Option<u64>,
}

/// Every track of a camera against its rules.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CameraAnalytics {
    tracks: BTreeMap<u64, TrackState>,
    last_ts_ns: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrackState {
    label: String,
    point: Point,
    seq: u64,
    ts_ns: u64,
    missing: u32,
    /// Zones it is in: since when, and whether its dwell fired.
    inside: BTreeMap<String, Visit>,
    /// Per line: the side it was last strictly on (+1 right, -1 left) and where.
    sides: BTreeMap<String, (i8, Point)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Visit {
    since_ts_ns: u64,
    dwelt: bool,
}

fn side_of(from: Point, to: Point, p: Point) -> i8 {
    let c = cross(from, to, p);
    if c > 0.0 {
        1
    } else if c < 0.0 {
        -1
    } else {
        0
    }
}

impl TrackState {
    fn observed(&self, id: u64, kind: AnalyticsKind, place: &str, ts_ns: u64) -> Observed {
        Observed {
            kind,
            place: place.to_owned(),
            direction: None,
            track_id: id,
            label: self.label.clone(),
            seq: self.seq,
            capture_ts_ns: self.ts_ns,
            ts_ns,
            dwell_ms: None,
            ended: false,
            point: self.point,
        }
    }

    /// Dwell events due by `now_ts_ns`, each once per visit.
    fn dwell(&mut self, id: u64, rules: &Rules, now_ts_ns: u64, out: &mut Vec<Observed>) {
        for zone in &rules.zones {
            let Some(dwell_ms) = zone.dwell_ms else {
                continue;
            };
            let Some(visit) = self.inside.get(&zone.id) else {
                continue;
            };
            let due = visit
                .since_ts_ns
                .saturating_add(dwell_ms.saturating_mul(1_000_000));
            if visit.dwelt || now_ts_ns < due {
                continue;
            }
            let mut o = self.observed(id, AnalyticsKind::Dwell, &zone.id, due);
            o.dwell_ms = Some(dwell_ms);
            out.push(o);
            if let Some(visit) = self.inside.get_mut(&zone.id) {
                visit.dwelt = true;
            }
        }
    }

    /// The track ended: it leaves every zone it was in, at its last sighting.
    fn end(self, id: u64, out: &mut Vec<Observed>) {
        for (zone, visit) in &self.inside {
            let mut o = self.observed(id, AnalyticsKind::ZoneExit, zone, self.ts_ns);
            o.dwell_ms = Some(self.ts_ns.saturating_sub(visit.since_ts_ns) / 1_000_000);
            o.ended = true;
            out.push(o);
        }
    }
}

impl CameraAnalytics {
    /// Tracks followed now.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Capture time of the newest frame seen.
    pub fn last_ts_ns(&self) -> Option<u64> {
        self.last_ts_ns
    }

    /// One frame: `tracked` holds each tracked box's track ID, label and anchor point.
    pub fn frame(
        &mut self,
        rules: &Rules,
        limits: Limits,
        seq: u64,
        ts_ns: u64,
        tracked: &[(u64, &str, Point)],
    ) -> Vec<Observed> {
        let mut out = Vec::new();
        self.last_ts_ns = Some(self.last_ts_ns.map_or(ts_ns, |t| t.max(ts_ns)));
        for t in self.tracks.values_mut() {
            t.missing = t.missing.saturating_add(1);
        }
        for &(id, label, p) in tracked {
            let t = self.tracks.entry(id).or_insert_with(|| TrackState {
                label: label.to_owned(),
                point: p,
                seq,
                ts_ns,
                missing: 0,
                inside: BTreeMap::new(),
                sides: BTreeMap::new(),
            });
            t.point = p;
            t.seq = seq;
            t.ts_ns = ts_ns;
            t.missing = 0;
            for line in &rules.lines {
                if !line.counts(&t.label) {
                    continue;
                }
                let side = side_of(line.from, line.to, p);
                if side == 0 {
                    continue;
                }
                let before = t.sides.insert(line.id.clone(), (side, p));
                if let Some((was, at)) = before
                    && was != side
                    && segments_intersect(at, p, line.from, line.to)
                {
                    let onto_in = match line.in_side {
                        Side::Right => side > 0,
                        Side::Left => side < 0,
                    };
                    let mut o = t.observed(id, AnalyticsKind::LineCross, &line.id, ts_ns);
                    o.direction = Some(if onto_in {
                        Direction::In
                    } else {
                        Direction::Out
                    });
                    out.push(o);
                }
            }
            for zone in &rules.zones {
                let now_in = zone.counts(&t.label) && contains(&zone.polygon, p);
                match (now_in, t.inside.contains_key(&zone.id)) {
                    (true, false) => {
                        t.inside.insert(
                            zone.id.clone(),
                            Visit {
                                since_ts_ns: ts_ns,
                                dwelt: false,
                            },
                        );
                        out.push(t.observed(id, AnalyticsKind::ZoneEnter, &zone.id, ts_ns));
                    }
                    (false, true) => {
                        if let Some(visit) = t.inside.remove(&zone.id) {
                            let mut o = t.observed(id, AnalyticsKind::ZoneExit, &zone.id, ts_ns);
                            o.dwell_ms = Some(ts_ns.saturating_sub(visit.since_ts_ns) / 1_000_000);
                            out.push(o);
                        }
                    }
                    _ => {}
                }
            }
            t.dwell(id, rules, ts_ns, &mut out);
        }
        let ended: Vec<u64> = self
            .tracks
            .iter()
            .filter(|(_, t)| {
                t.missing > limits.max_age
                    || limits
                        .max_age_ms
                        .is_some_and(|max| ts_ns.saturating_sub(t.ts_ns) / 1_000_000 > max)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in ended {
            if let Some(t) = self.tracks.remove(&id) {
                t.end(id, &mut out);
            }
        }
        out
    }

    /// Time alone, at capture time `now_ts_ns`: dwell thresholds that ran out, and tracks
    /// missing longer than `max_age_ms`, which end (leaving their zones).
    pub fn tick(
        &mut self,
        rules: &Rules,
        max_age_ms: Option<u64>,
        now_ts_ns: u64,
    ) -> Vec<Observed> {
        let mut out = Vec::new();
        for (&id, t) in &mut self.tracks {
            t.dwell(id, rules, now_ts_ns, &mut out);
        }
        if let Some(max) = max_age_ms {
            let ended: Vec<u64> = self
                .tracks
                .iter()
                .filter(|(_, t)| now_ts_ns.saturating_sub(t.ts_ns) / 1_000_000 > max)
                .map(|(&id, _)| id)
                .collect();
            for id in ended {
                if let Some(t) = self.tracks.remove(&id) {
                    t.end(id, &mut out);
                }
            }
        }
        out
    }

    /// Tracks inside each zone now, per label: `(zone, label, count)` for every zone and
    /// every label seen in it (zeros included, so gauges fall back).
    pub fn occupancy<'r>(&self, rules: &'r Rules) -> Vec<(&'r str, String, usize)> {
        let mut counts: BTreeMap<(&str, String), usize> = BTreeMap::new();
        for zone in &rules.zones {
            for label in &zone.labels {
                counts.insert((zone.id.as_str(), label.clone()), 0);
            }
        }
        for t in self.tracks.values() {
            for zone in &rules.zones {
                if t.inside.contains_key(&zone.id) {
                    *counts
                        .entry((zone.id.as_str(), t.label.clone()))
                        .or_insert(0) += 1;
                }
            }
        }
        counts
            .into_iter()
            .map(|((zone, label), n)| (zone, label, n))
            .collect()
    }
}
