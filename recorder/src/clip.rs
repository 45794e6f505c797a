//! A camera's clip being recorded, as a state machine over frames, triggers and time (pure:
//! time is the caller's, so tests drive it): a trigger opens a clip from its pre-roll (taken
//! from the buffer) to its post-roll; a trigger while the clip is open extends it, up to its
//! longest length; the first frame past the end closes it, or time does when the camera goes
//! silent. A plan (no frames) is what a new owner needs to go on with a clip.

use panoptes_contracts::clip::ClipEvent;
use serde::{Deserialize, Serialize};

use crate::buffer::{BufferedFrame, PreRoll};
use crate::rules::Trigger;

/// Everything about a clip but its frames: kept in KV while it records, so the camera's next
/// owner goes on with it after a crash or a hand-back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipPlan {
    /// `<camera>-<start ms>`; a part recorded by a later owner adds `-p<part>`.
    pub id: String,
    pub camera: String,
    pub start_ns: u64,
    /// Frames captured before this belong to the clip.
    pub end_ns: u64,
    /// The end no trigger may extend past (`start + max_length`).
    pub limit_ns: u64,
    pub draw: bool,
    /// 1 for the clip's first owner, then 2, 3, … for the parts of later owners.
    pub part: u32,
    pub events: Vec<ClipEvent>,
    pub rules: Vec<String>,
}

impl ClipPlan {
    /// The object name stem of this part.
    pub fn object_id(&self) -> String {
        if self.part <= 1 {
            self.id.clone()
        } else {
            format!("{}-p{}", self.id, self.part)
        }
    }
}

/// A clip whose frames are all in: what the encoder gets.
#[derive(Debug)]
pub struct FinishedClip {
    pub plan: ClipPlan,
    /// The frames captured in `[start, end)`, in order.
    pub frames: Vec<BufferedFrame>,
    /// The frame the snapshot shows: the first event's, or the one nearest it.
    pub snapshot_seq: Option<u64>,
}

#[derive(Debug)]
struct Open {
    plan: ClipPlan,
    frames: Vec<BufferedFrame>,
}

/// One camera's clip recording.
#[derive(Debug, Default)]
pub struct Recording {
    open: Option<Open>,
}

fn event(t: &Trigger) -> ClipEvent {
    ClipEvent {
        id: t.event_id.clone(),
        kind: t.kind.clone(),
        seq: t.seq,
        capture_ts_ns: t.capture_ts_ns,
        track_id: t.track_id,
    }
}

impl Recording {
    pub fn plan(&self) -> Option<&ClipPlan> {
        self.open.as_ref().map(|o| &o.plan)
    }

    /// An event asks for its clip. It extends the open clip when its pre-roll reaches into
    /// it and the clip may grow that long; otherwise the open clip is finished (returned)
    /// and a new one starts with the buffer's frames from the event's pre-roll on. Returns
    /// the finished clip and whether the plan changed (to be saved for the next owner).
    pub fn trigger(&mut self, t: &Trigger, buffer: &PreRoll) -> (Option<FinishedClip>, bool) {
        let start = t.capture_ts_ns.saturating_sub(t.pre_ns);
        let end = t.capture_ts_ns.saturating_add(t.post_ns);
        if let Some(open) = &mut self.open {
            let plan = &mut open.plan;
            if plan.events.iter().any(|e| e.id == t.event_id) {
                return (None, false);
            }
            if start <= plan.end_ns && t.capture_ts_ns < plan.limit_ns {
                plan.end_ns = plan.end_ns.max(end).min(plan.limit_ns);
                plan.draw |= t.draw;
                plan.events.push(event(t));
                for rule in &t.rules {
                    if !plan.rules.contains(rule) {
                        plan.rules.push(rule.clone());
                    }
                }
                return (None, true);
            }
        }
        let finished = self.finish();
        let limit = start.saturating_add(t.max_ns.max(t.pre_ns + t.post_ns));
        let plan = ClipPlan {
            id: format!("{}-{}", t.camera, start / 1_000_000),
            camera: t.camera.clone(),
            start_ns: start,
            end_ns: end.min(limit),
            limit_ns: limit,
            draw: t.draw,
            part: 1,
            events: vec![event(t)],
            rules: t.rules.clone(),
        };
        let frames = buffer.since(start).cloned().collect();
        self.open = Some(Open { plan, frames });
        (finished, true)
    }

    /// A new frame of the camera: kept while the clip runs; the first one past its end
    /// finishes it (and is not part of it).
    pub fn frame(&mut self, frame: &BufferedFrame) -> Option<FinishedClip> {
        let open = self.open.as_mut()?;
        if frame.capture_ts_ns >= open.plan.end_ns {
            return self.finish();
        }
        if frame.capture_ts_ns >= open.plan.start_ns
            && open
                .frames
                .last()
                .is_none_or(|last| frame.capture_ts_ns > last.capture_ts_ns)
        {
            open.frames.push(frame.clone());
        }
        None
    }

    /// The camera sent nothing past the clip's end, and `now_ns` is `grace_ns` beyond it:
    /// the clip ends with what it has.
    pub fn expire(&mut self, now_ns: u64, grace_ns: u64) -> Option<FinishedClip> {
        let end = self.open.as_ref()?.plan.end_ns;
        if now_ns > end.saturating_add(grace_ns) {
            self.finish()
        } else {
            None
        }
    }

    /// Ends the open clip now (the camera is handed back, the recorder stops).
    pub fn finish(&mut self) -> Option<FinishedClip> {
        let Open { plan, mut frames } = self.open.take()?;
        frames.retain(|f| f.capture_ts_ns >= plan.start_ns && f.capture_ts_ns < plan.end_ns);
        let first = plan
            .events
            .first()
            .map(|e| e.capture_ts_ns)
            .unwrap_or(plan.start_ns);
        let snapshot_seq = frames
            .iter()
            .min_by_key(|f| f.capture_ts_ns.abs_diff(first))
            .map(|f| f.seq);
        Some(FinishedClip {
            plan,
            frames,
            snapshot_seq,
        })
    }

    /// Goes on with a clip a previous owner started (its plan, from KV), as its next part,
    /// with what this owner has of the camera from `buffer`.
    pub fn resume(&mut self, mut plan: ClipPlan, buffer: &PreRoll) {
        plan.part += 1;
        let frames = buffer.since(plan.start_ns).cloned().collect();
        self.open = Some(Open { plan, frames });
    }
}

/// Continuous recording of a camera in segments of `segment_ns`.
#[derive(Debug)]
pub struct Segments {
    segment_ns: u64,
    start_ns: Option<u64>,
    frames: Vec<BufferedFrame>,
}

impl Segments {
    pub fn new(segment_ns: u64) -> Self {
        Self {
            segment_ns: segment_ns.max(1),
            start_ns: None,
            frames: Vec::new(),
        }
    }

    /// Adds a frame; returns the finished segment (its start and frames) when this frame
    /// begins the next one.
    pub fn frame(&mut self, frame: &BufferedFrame) -> Option<(u64, Vec<BufferedFrame>)> {
        let start = *self.start_ns.get_or_insert(frame.capture_ts_ns);
        if frame.capture_ts_ns >= start + self.segment_ns {
            let done = std::mem::take(&mut self.frames);
            self.start_ns = Some(frame.capture_ts_ns);
            self.frames.push(frame.clone());
            return Some((start, done));
        }
        self.frames.push(frame.clone());
        None
    }

    /// The segment so far (the camera went silent, or is handed back).
    pub fn flush(&mut self) -> Option<(u64, Vec<BufferedFrame>)> {
        let start = self.start_ns.take()?;
        let frames = std::mem::take(&mut self.frames);
        (!frames.is_empty()).then_some((start, frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const MS: u64 = 1_000_000;

    fn frame(seq: u64) -> BufferedFrame {
        BufferedFrame {
            seq,
            capture_ts_ns: seq * 100 * MS,
            width: 4,
            height: 4,
            jpeg: Bytes::from_static(b"jpeg"),
        }
    }

    fn trigger(id: &str, seq: u64) -> Trigger {
        Trigger {
            event_id: id.into(),
            kind: "zone_enter".into(),
            camera: "cam".into(),
            seq,
            capture_ts_ns: seq * 100 * MS,
            track_id: Some(7),
            rules: vec!["r".into()],
            pre_ns: 2_000 * MS,
            post_ns: 3_000 * MS,
            max_ns: 10_000 * MS,
            draw: true,
        }
    }

    /// Frames 0.. at 10 fps; the event at frame 30 arrives when frame `seen` is in.
    fn run(events: &[(&str, u64, u64)], frames: u64) -> Vec<FinishedClip> {
        let mut buffer = PreRoll::new(5_000 * MS, usize::MAX);
        let mut rec = Recording::default();
        let mut out = Vec::new();
        for seq in 0..frames {
            let f = frame(seq);
            buffer.push(f.clone());
            out.extend(rec.frame(&f));
            for (id, at, seen) in events {
                if *seen == seq {
                    out.extend(rec.trigger(&trigger(id, *at), &buffer).0);
                }
            }
        }
        out
    }

    #[test]
    fn one_event_makes_pre_roll_plus_post_roll() {
        let clips = run(&[("e1", 30, 33)], 100);
        assert_eq!(clips.len(), 1);
        let c = &clips[0];
        let seqs: Vec<u64> = c.frames.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, (10..60).collect::<Vec<_>>());
        assert_eq!(c.snapshot_seq, Some(30));
        assert_eq!(c.plan.id, "cam-1000");
    }

    #[test]
    fn overlapping_events_extend_one_clip() {
        let clips = run(&[("e1", 30, 33), ("e2", 45, 47), ("e2", 45, 48)], 100);
        assert_eq!(clips.len(), 1);
        let c = &clips[0];
        assert_eq!(c.frames.first().map(|f| f.seq), Some(10));
        assert_eq!(c.frames.last().map(|f| f.seq), Some(74));
        let ids: Vec<&str> = c.plan.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2"]);
    }

    #[test]
    fn events_apart_make_two_clips_and_the_limit_holds() {
        let clips = run(&[("e1", 10, 11), ("e2", 90, 91)], 140);
        assert_eq!(clips.len(), 2);
        assert_eq!(clips[1].frames.first().map(|f| f.seq), Some(70));
        // A clip extended again and again stops at max_length (10 s = 100 frames).
        let events: Vec<(String, u64, u64)> = (0..20)
            .map(|i| (format!("e{i}"), 20 + i * 10, 21 + i * 10))
            .collect();
        let refs: Vec<(&str, u64, u64)> = events
            .iter()
            .map(|(id, a, s)| (id.as_str(), *a, *s))
            .collect();
        let clips = run(&refs, 300);
        assert_eq!(clips[0].frames.len(), 100);
    }

    #[test]
    fn a_silent_camera_ends_its_clip_after_the_grace() {
        let mut buffer = PreRoll::new(5_000 * MS, usize::MAX);
        let mut rec = Recording::default();
        for seq in 0..35 {
            buffer.push(frame(seq));
        }
        let _ = rec.trigger(&trigger("e1", 30), &buffer);
        let end = rec.plan().map(|p| p.end_ns).unwrap_or_default();
        assert!(rec.expire(end + 500 * MS, 1_000 * MS).is_none());
        let clip = rec.expire(end + 1_001 * MS, 1_000 * MS).expect("expired");
        assert_eq!(clip.frames.len(), 25);
    }

    #[test]
    fn a_resumed_clip_is_the_next_part() {
        let mut buffer = PreRoll::new(5_000 * MS, usize::MAX);
        let mut first = Recording::default();
        for seq in 0..35 {
            buffer.push(frame(seq));
        }
        let _ = first.trigger(&trigger("e1", 30), &buffer);
        let plan = first.plan().cloned().expect("plan");
        let mut next = Recording::default();
        let mut other = PreRoll::new(5_000 * MS, usize::MAX);
        for seq in 40..45 {
            other.push(frame(seq));
        }
        next.resume(plan, &other);
        let mut done = None;
        for seq in 45..70 {
            done = done.or(next.frame(&frame(seq)));
        }
        let clip = done.expect("finished");
        assert_eq!(clip.plan.object_id(), "cam-1000-p2");
        assert_eq!(clip.frames.first().map(|f| f.seq), Some(40));
        assert_eq!(clip.frames.last().map(|f| f.seq), Some(59));
    }

    #[test]
    fn segments_cut_at_their_length() {
        let mut s = Segments::new(1_000 * MS);
        let mut done = Vec::new();
        for seq in 0..25 {
            done.extend(s.frame(&frame(seq)));
        }
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].1.len(), 10);
        assert_eq!(s.flush().map(|(_, f)| f.len()), Some(5));
    }
}
