//! The `record:` section: rule IDs that are tokens and unique, cameras the topology declares
//! (when it declares any), places those cameras have, analytics rules only where an
//! analytics stage raises events, and a `max_length_s` that holds pre- and post-roll.

use std::collections::{BTreeSet, HashMap};

use super::{Checker, str_at};
use crate::diagnostic::Diagnostic;
use crate::yaml::{Node, Span};

impl Checker<'_> {
    pub(super) fn record(
        &mut self,
        record: Option<&Node>,
        cameras: Option<&Node>,
        analytics: bool,
    ) {
        let Some(record) = record else { return };
        let declared: Vec<&str> = cameras
            .map(|c| {
                c.items()
                    .iter()
                    .filter_map(|c| str_at(Some(c), "id"))
                    .map(|(id, _)| id)
                    .collect()
            })
            .unwrap_or_default();
        // Zones and lines per camera.
        let mut places: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for cam in cameras.map(Node::items).unwrap_or_default() {
            let Some((id, _)) = str_at(Some(cam), "id") else {
                continue;
            };
            let set = places.entry(id).or_default();
            for key in ["zones", "lines"] {
                for place in cam.get(key).map(Node::items).unwrap_or_default() {
                    if let Some((p, _)) = str_at(Some(place), "id") {
                        set.insert(p);
                    }
                }
            }
        }
        let mut ids: HashMap<&str, Span> = HashMap::new();
        for rule in record.get("rules").map(Node::items).unwrap_or_default() {
            if let Some((id, span)) = str_at(Some(rule), "id")
                && self.token(id, span, "record rule ID")
            {
                if let Some(first) = ids.get(id) {
                    self.out.push(
                        Diagnostic::at(span, format!("`{id}` names two record rules"))
                            .label("second use")
                            .related(*first, "first used here"),
                    );
                }
                ids.entry(id).or_insert(span);
            }
            let rule_cameras = self.record_cameras(rule, &declared);
            let on_detections = rule
                .get("detections")
                .is_some_and(|d| !d.items().is_empty());
            if !on_detections && !analytics {
                let span = str_at(Some(rule), "id").map_or(rule.span, |(_, s)| s);
                self.out.push(
                    Diagnostic::at(span, "this rule waits for analytics events no stage raises")
                        .label("no analytics stage")
                        .help("add a stage `kind: analytics` after a tracker, or match `detections: [label]`"),
                );
            }
            for place in rule.get("places").map(Node::items).unwrap_or_default() {
                let Some(p) = place.as_str() else { continue };
                let cams: Vec<&str> = if rule_cameras.is_empty() {
                    declared.clone()
                } else {
                    rule_cameras.clone()
                };
                if !declared.is_empty()
                    && !cams
                        .iter()
                        .any(|c| places.get(c).is_some_and(|s| s.contains(p)))
                {
                    self.out.push(
                        Diagnostic::at(
                            place.span,
                            format!("no camera of this rule has a zone or line `{p}`"),
                        )
                        .label("unknown place"),
                    );
                }
            }
            let secs =
                |key: &str, default: f64| rule.get(key).and_then(Node::as_f64).unwrap_or(default);
            let (pre, post, max) = (
                secs("pre_roll_s", 5.0),
                secs("post_roll_s", 5.0),
                secs("max_length_s", 120.0),
            );
            if pre + post > max {
                let span = rule.get("max_length_s").map_or(rule.span, |n| n.span);
                self.out.push(
                    Diagnostic::at(span, format!("a clip of this rule is at least {} s (pre- and post-roll), longer than `max_length_s` {max}", pre + post))
                        .label("too short"),
                );
            }
        }
        for cont in record
            .get("continuous")
            .map(Node::items)
            .unwrap_or_default()
        {
            self.record_cameras(cont, &declared);
        }
    }

    /// The cameras an entry names, each checked against the declared ones.
    fn record_cameras<'n>(&mut self, entry: &'n Node, declared: &[&str]) -> Vec<&'n str> {
        let mut out = Vec::new();
        for cam in entry.get("cameras").map(Node::items).unwrap_or_default() {
            let Some(id) = cam.as_str() else { continue };
            if self.token(id, cam.span, "camera ID") {
                if !declared.is_empty() && !declared.contains(&id) {
                    self.out.push(
                        Diagnostic::at(cam.span, format!("no camera `{id}` in this topology"))
                            .label("unknown camera"),
                    );
                }
                out.push(id);
            }
        }
        out
    }
}
