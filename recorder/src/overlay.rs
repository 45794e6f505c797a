//! What is drawn on a recorded frame, as an SVG document for GStreamer's `rsvgoverlay`: the
//! camera's zones and lines, and each detection's box with its label, track ID and score.
//! Every text from a message is XML-escaped: a label is data, never markup (an SVG that
//! references files or URLs would have librsvg read them).

use std::fmt::Write as _;

use panoptes_contracts::detection::Detection;
use panoptes_topology::{LineConfig, Units, ZoneConfig};

/// The colour of a track's box (the same track, the same colour, in every clip).
pub fn track_colour(track_id: Option<u64>) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 6] = [
        [0, 255, 0],
        [255, 0, 255],
        [0, 255, 255],
        [255, 128, 0],
        [255, 255, 0],
        [255, 0, 0],
    ];
    match track_id {
        None => PALETTE[0],
        Some(id) => PALETTE[(id % PALETTE.len() as u64) as usize],
    }
}

fn hex([r, g, b]: [u8; 3]) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// `text` with the five XML special characters escaped and control characters dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The places of one camera, drawn on each of its frames.
#[derive(Clone, Debug, Default)]
pub struct Places {
    pub zones: Vec<ZoneConfig>,
    pub lines: Vec<LineConfig>,
}

fn scale(units: Units, [x, y]: [f64; 2], w: u32, h: u32) -> (f64, f64) {
    match units {
        Units::Pixels => (x, y),
        Units::Normalized => (x * f64::from(w), y * f64::from(h)),
    }
}

/// The SVG drawn over a `width`×`height` frame.
pub fn svg(width: u32, height: u32, places: &Places, detections: &[Detection]) -> String {
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    let font = r#"font-family="DejaVu Sans" font-size="16" font-weight="bold""#;
    for zone in &places.zones {
        let points: Vec<String> = zone
            .polygon
            .iter()
            .map(|&p| {
                let (x, y) = scale(zone.units, p, width, height);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            s,
            r##"<polygon points="{}" fill="#3080ff" fill-opacity="0.15" stroke="#3080ff" stroke-width="2"/>"##,
            points.join(" ")
        );
        if let Some(&first) = zone.polygon.first() {
            let (x, y) = scale(zone.units, first, width, height);
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" {font} fill="#3080ff">{}</text>"##,
                x + 4.0,
                y + 18.0,
                escape(&zone.id)
            );
        }
    }
    for line in &places.lines {
        let (x1, y1) = scale(line.units, line.from, width, height);
        let (x2, y2) = scale(line.units, line.to, width, height);
        let _ = write!(
            s,
            r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#ffd000" stroke-width="3"/><text x="{:.1}" y="{:.1}" {font} fill="#ffd000">{}</text>"##,
            x1 + 4.0,
            y1 - 6.0,
            escape(&line.id)
        );
    }
    for d in detections {
        let [x1, y1, x2, y2] = d.bbox;
        if !(x1.is_finite() && y1.is_finite() && x2.is_finite() && y2.is_finite()) {
            continue;
        }
        let track = d.track.as_ref().map(|t| t.track_id);
        let colour = hex(track_colour(track));
        let mut caption = escape(&d.label);
        if let Some(id) = track {
            let _ = write!(caption, " #{id}");
        }
        let _ = write!(caption, " {:.2}", d.score);
        if let Some(text) = &d.text {
            let _ = write!(caption, " “{}”", escape(text));
        }
        let _ = write!(
            s,
            r#"<rect x="{x1:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="{colour}" stroke-width="3"/><text x="{x1:.1}" y="{:.1}" {font} fill="{colour}">{caption}</text>"#,
            (x2 - x1).max(0.0),
            (y2 - y1).max(0.0),
            (y1 - 5.0).max(14.0),
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_cannot_become_markup() {
        let d = Detection {
            bbox: [1.0, 2.0, 11.0, 12.0],
            polygon: None,
            label: r#"x"/><image href="file:///etc/passwd"/>"#.into(),
            score: 0.5,
            text: Some("<script>".into()),
            track: None,
        };
        let s = svg(64, 48, &Places::default(), &[d]);
        assert!(!s.contains("<image"), "{s}");
        assert!(!s.contains("<script"), "{s}");
        assert!(s.contains("&lt;image"), "{s}");
    }

    #[test]
    fn normalised_places_scale_to_the_frame() {
        let zone = ZoneConfig {
            id: "bay".into(),
            polygon: vec![[0.0, 0.0], [0.5, 0.0], [0.5, 0.5]],
            units: Units::Normalized,
            labels: vec![],
            dwell_s: None,
        };
        let s = svg(
            200,
            100,
            &Places {
                zones: vec![zone],
                lines: vec![],
            },
            &[],
        );
        assert!(
            s.contains(r#"points="0.0,0.0 100.0,0.0 100.0,50.0""#),
            "{s}"
        );
    }
}
