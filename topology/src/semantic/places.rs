//! Each camera's zones and lines: IDs that are tokens and unique within the camera, points
//! inside the frame, polygons of at least three corners whose edges do not cross, lines of
//! some length; and an `analytics` stage to watch them.

use std::collections::HashMap;

use super::{Checker, str_at};
use crate::diagnostic::Diagnostic;
use crate::geometry::{Point, self_intersection};
use crate::yaml::{Node, Span};

impl Checker<'_> {
    /// `analytics`: whether the topology has an analytics stage (zones and lines of a
    /// topology without one would be ignored).
    pub(super) fn places(&mut self, cameras: Option<&Node>, analytics: bool) {
        let Some(cameras) = cameras else { return };
        for cam in cameras.items() {
            let size = [
                cam.get("width").and_then(Node::as_u64).unwrap_or(1280) as f64,
                cam.get("height").and_then(Node::as_u64).unwrap_or(720) as f64,
            ];
            let mut ids: HashMap<&str, Span> = HashMap::new();
            for (key, what) in [("zones", "zone"), ("lines", "line")] {
                let Some(entry) = cam.entry(key) else {
                    continue;
                };
                if !analytics && !entry.value.items().is_empty() {
                    self.out.push(
                        Diagnostic::at(
                            entry.key_span,
                            format!("this camera's {key} are used by no stage"),
                        )
                        .label("no analytics stage")
                        .help(
                            "add a stage `kind: analytics` after a tracker to get events for them",
                        ),
                    );
                }
                for place in entry.value.items() {
                    if let Some((id, span)) = str_at(Some(place), "id")
                        && self.token(id, span, &format!("{what} ID"))
                    {
                        if let Some(first) = ids.get(id) {
                            self.out.push(
                                Diagnostic::at(
                                    span,
                                    format!("`{id}` names two zones or lines of this camera"),
                                )
                                .label("second use")
                                .related(*first, "first used here"),
                            );
                        }
                        ids.entry(id).or_insert(span);
                    }
                    let normalized =
                        str_at(Some(place), "units").is_some_and(|(u, _)| u == "normalized");
                    let bound = if normalized { [1.0, 1.0] } else { size };
                    let mut point = |node: &Node| -> Option<Point> {
                        let xy = node.items();
                        let (x, y) = (xy.first()?.as_f64()?, xy.get(1)?.as_f64()?);
                        if !(0.0..=bound[0]).contains(&x) || !(0.0..=bound[1]).contains(&y) {
                            let frame = if normalized {
                                "0–1 (units: normalized)".to_owned()
                            } else {
                                format!("the {}x{} frame", size[0], size[1])
                            };
                            self.out.push(
                                Diagnostic::at(
                                    node.span,
                                    format!("point [{x}, {y}] is outside {frame}"),
                                )
                                .label("outside the frame"),
                            );
                        }
                        Some([x, y])
                    };
                    if what == "zone" {
                        let Some(polygon) = place.get("polygon") else {
                            continue;
                        };
                        let corners: Vec<Point> =
                            polygon.items().iter().filter_map(&mut point).collect();
                        if corners.len() != polygon.items().len() {
                            continue;
                        }
                        if corners.len() < 3 {
                            self.out.push(
                                Diagnostic::at(
                                    polygon.span,
                                    format!(
                                        "a zone needs at least 3 corners, not {}",
                                        corners.len()
                                    ),
                                )
                                .label("not a polygon"),
                            );
                        } else if let Some((a, b)) = self_intersection(&corners) {
                            let n = corners.len();
                            self.out.push(
                                Diagnostic::at(
                                    polygon.span,
                                    format!(
                                        "the zone's edges cross: corners {a}→{} and {b}→{} meet",
                                        (a + 1) % n,
                                        (b + 1) % n
                                    ),
                                )
                                .label("crosses itself")
                                .help("list the corners in order around the zone"),
                            );
                        }
                    } else {
                        let from = place.get("from").and_then(&mut point);
                        let to = place.get("to").and_then(&mut point);
                        if let (Some(from), Some(to)) = (from, to)
                            && from == to
                            && let Some(node) = place.get("to")
                        {
                            self.out.push(
                                Diagnostic::at(node.span, "a line needs two different points")
                                    .label("same as `from`"),
                            );
                        }
                    }
                }
            }
        }
    }
}
