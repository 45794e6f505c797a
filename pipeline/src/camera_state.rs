//! What a worker remembers per camera, kept in one table so that an idle camera is forgotten
//! everywhere at once and a flood of camera IDs cannot grow the worker: admission under a cap,
//! idle expiry, the durable ordering watermark, and live loss accounting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Bounds on a worker's per-camera state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CameraLimits {
    /// The most cameras one worker keeps state for; frames of further cameras are refused
    /// (counted, reported in `frames_refused` events) until others expire.
    pub max_cameras: usize,
    /// A camera without a frame for this long (and none inside the worker) is forgotten: its
    /// queue, counters and watermark (its metric series expire after the exporter's idle
    /// timeout). Longer than durable `ack_wait`, so a redelivered frame still meets the
    /// watermark of its camera.
    pub idle_ttl: Duration,
}

impl Default for CameraLimits {
    fn default() -> Self {
        Self {
            max_cameras: 1024,
            idle_ttl: Duration::from_secs(300),
        }
    }
}

/// The newest frame of a camera fed to the stages (durable delivery): its sequence number and
/// capture time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub seq: u64,
    pub capture_ts_ns: u64,
}

impl Mark {
    /// Whether a frame comes too late to be fed after this mark: neither its sequence number
    /// nor its capture time is newer. A camera whose publisher restarted counts from 0 again
    /// with newer capture times, so its frames are not late.
    pub fn is_late(&self, seq: u64, capture_ts_ns: u64) -> bool {
        seq <= self.seq && capture_ts_ns <= self.capture_ts_ns
    }

    /// Moves the mark past a frame fed (or a mark learned from another worker).
    pub fn advance(&mut self, seq: u64, capture_ts_ns: u64) {
        if seq < self.seq && capture_ts_ns > self.capture_ts_ns {
            // The publisher restarted: its new count is the one to follow.
            *self = Mark { seq, capture_ts_ns };
        } else {
            self.seq = self.seq.max(seq);
            self.capture_ts_ns = self.capture_ts_ns.max(capture_ts_ns);
        }
    }
}

/// Live delivery: frames of a camera that arrived while its partition's lease had lapsed, not
/// yet known to be lost here or another worker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LapsedRun {
    pub partition: u32,
    /// [`crate::lease::Ownership::handovers`] when the first of them arrived.
    pub handovers: u64,
    /// Members counted one by one: frames given up inside the worker (accounted for when they
    /// entered it), and arrivals whose sequence number could not be read or was at or below
    /// what this worker had accounted for.
    pub singles: u64,
    /// Arrivals above what this worker had accounted for; `first..=last` are their lowest and
    /// highest sequence numbers. Settled as lost, every sequence number from the last one
    /// accounted for up to `last` is lost, those that never arrived (dropped on the way while
    /// the worker stalled) included.
    pub arrived: u64,
    pub first: Option<u64>,
    pub last: Option<u64>,
}

impl LapsedRun {
    /// Frames that reached this worker and were not processed.
    pub fn members(&self) -> u64 {
        self.singles + self.arrived
    }

    /// The run settled as lost, `accounted` being the highest sequence number this worker
    /// accounted for: every frame after it up to the newest that arrived is lost, those that
    /// arrived and those that never reached the worker (published while NATS was down for it,
    /// or dropped on the way while it stalled), besides the members counted one by one.
    pub fn settle(&self, accounted: Option<u64>) -> Settled {
        let span = match (self.first, self.last) {
            (Some(first), Some(last)) => {
                Some((accounted.map_or(first, |a| a.saturating_add(1)), last))
            }
            _ => None,
        };
        let spanned = span.map_or(0, |(from, last)| (last + 1).saturating_sub(from));
        Settled {
            lost: self.singles + spanned.max(self.arrived),
            never: spanned.saturating_sub(self.arrived),
            span,
        }
    }
}

/// A lapsed run settled as lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settled {
    pub lost: u64,
    /// Of them, frames that never reached this worker.
    pub never: u64,
    /// The sequence numbers lost, when the arrivals' could be read.
    pub span: Option<(u64, u64)>,
}

/// One camera's state.
#[derive(Debug)]
pub(crate) struct CameraState {
    last_seen: Instant,
    /// Frames of the camera admitted and not yet out of the worker; a camera with any is not
    /// forgotten.
    pub in_worker: u64,
    /// The ownership epoch of the camera's partition when its last frame was admitted: a
    /// different one means a new tenure (the first frame is checked for a gap).
    pub epoch: Option<u64>,
    /// Live: the highest sequence number that entered this worker or was counted lost here,
    /// so a gap check never counts a frame twice.
    pub accounted: Option<u64>,
    /// Durable: the newest frame fed to the stages (the watermark).
    pub mark: Option<Mark>,
    /// Durable: the newest frame whose results were stored (what a new owner starts from).
    pub stored: Option<Mark>,
    /// Live: frames dropped since the last `frames_dropped` event, and when that was.
    pub drops: (Instant, u64),
    pub lapsed: Option<LapsedRun>,
}

impl CameraState {
    fn new(now: Instant) -> Self {
        Self {
            last_seen: now,
            in_worker: 0,
            epoch: None,
            accounted: None,
            mark: None,
            stored: None,
            // So that the first drop is reported at once.
            drops: (now.checked_sub(DROP_REPORT).unwrap_or(now), 0),
            lapsed: None,
        }
    }

    /// Durable: whether a frame about to be fed to the stages is late (at or below the
    /// watermark); if not, it becomes the watermark.
    pub fn feed(&mut self, seq: u64, capture_ts_ns: u64) -> bool {
        match &mut self.mark {
            Some(m) if m.is_late(seq, capture_ts_ns) => true,
            Some(m) => {
                m.advance(seq, capture_ts_ns);
                false
            }
            None => {
                self.mark = Some(Mark { seq, capture_ts_ns });
                false
            }
        }
    }

    /// Durable: a frame fed earlier had its results stored (or another worker's record says
    /// one was).
    pub fn stored(&mut self, mark: Mark) {
        for m in [&mut self.stored, &mut self.mark] {
            match m {
                Some(m) => m.advance(mark.seq, mark.capture_ts_ns),
                None => *m = Some(mark),
            }
        }
    }

    /// Durable: a frame fed earlier goes back to JetStream without stored results (they were
    /// refused, or its partition moved). If no newer frame of the camera was fed since, the
    /// watermark returns to the last stored frame, so the redelivered frame is processed
    /// rather than dropped as late; otherwise order wins and it will be late.
    pub fn unstored(&mut self, mark: Mark) {
        if self.mark == Some(mark) {
            self.mark = self.stored;
        }
    }

    /// Raises [`CameraState::accounted`] to `seq`.
    pub fn account(&mut self, seq: u64) {
        self.accounted = Some(self.accounted.map_or(seq, |a| a.max(seq)));
    }

    /// Counts a dropped frame; returns the count to report when an event is due (one per
    /// camera per second).
    pub fn dropped(&mut self, now: Instant) -> Option<u64> {
        self.drops.1 += 1;
        if now.duration_since(self.drops.0) >= DROP_REPORT {
            let count = self.drops.1;
            self.drops = (now, 0);
            Some(count)
        } else {
            None
        }
    }
}

/// How often a camera's drops are reported at most.
const DROP_REPORT: Duration = Duration::from_secs(1);

/// Every camera a worker keeps state for.
#[derive(Debug)]
pub(crate) struct CameraTable {
    limits: CameraLimits,
    inner: Mutex<HashMap<String, CameraState>>,
    /// How many cameras are tracked now (read by [`crate::worker::WorkerStats`]).
    tracked: std::sync::Arc<AtomicU64>,
}

impl CameraTable {
    pub fn new(limits: CameraLimits, tracked: std::sync::Arc<AtomicU64>) -> Self {
        Self {
            limits,
            inner: Mutex::default(),
            tracked,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CameraState>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on `camera`'s state, created if the camera is new and the cap allows it;
    /// `None` when the cap refuses the camera. Marks the camera as seen at `now`.
    pub fn admit<R>(
        &self,
        camera: &str,
        now: Instant,
        f: impl FnOnce(&mut CameraState) -> R,
    ) -> Option<R> {
        let mut inner = self.lock();
        if let Some(state) = inner.get_mut(camera) {
            state.last_seen = now;
            return Some(f(state));
        }
        if inner.len() >= self.limits.max_cameras {
            return None;
        }
        let mut state = CameraState::new(now);
        let out = f(&mut state);
        inner.insert(camera.to_owned(), state);
        self.tracked.store(inner.len() as u64, Ordering::Relaxed);
        Some(out)
    }

    /// Runs `f` on `camera`'s state if it is tracked.
    pub fn with<R>(&self, camera: &str, f: impl FnOnce(&mut CameraState) -> R) -> Option<R> {
        self.lock().get_mut(camera).map(f)
    }

    /// A frame of `camera` left the worker (published, dropped, handed back, late).
    pub fn left(&self, camera: &str) {
        if let Some(state) = self.lock().get_mut(camera) {
            state.in_worker = state.in_worker.saturating_sub(1);
        }
    }

    /// Every tracked camera with frames still unresolved after a lapse, with those frames.
    pub fn lapsed(&self) -> Vec<(String, LapsedRun)> {
        self.lock()
            .iter()
            .filter_map(|(camera, s)| s.lapsed.map(|l| (camera.clone(), l)))
            .collect()
    }

    /// Drops not yet reported, per camera, clearing them (at stop).
    pub fn unreported_drops(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter_mut()
            .filter(|(_, s)| s.drops.1 > 0)
            .map(|(camera, s)| (camera.clone(), std::mem::take(&mut s.drops.1)))
            .collect()
    }

    /// Forgets the cameras idle for the TTL with nothing inside the worker and no lapsed
    /// frames to settle; returns them with their last state (drops not yet reported).
    pub fn expire(&self, now: Instant) -> Vec<(String, CameraState)> {
        let mut inner = self.lock();
        let idle: Vec<String> = inner
            .iter()
            .filter(|(_, s)| {
                s.in_worker == 0
                    && s.lapsed.is_none()
                    && now.saturating_duration_since(s.last_seen) >= self.limits.idle_ttl
            })
            .map(|(camera, _)| camera.clone())
            .collect();
        let out = idle
            .into_iter()
            .filter_map(|camera| inner.remove(&camera).map(|s| (camera, s)))
            .collect();
        self.tracked.store(inner.len() as u64, Ordering::Relaxed);
        out
    }

    pub fn limits(&self) -> CameraLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_cameras: usize, ttl_ms: u64) -> (CameraTable, std::sync::Arc<AtomicU64>) {
        let tracked = std::sync::Arc::new(AtomicU64::new(0));
        let limits = CameraLimits {
            max_cameras,
            idle_ttl: Duration::from_millis(ttl_ms),
        };
        (CameraTable::new(limits, tracked.clone()), tracked)
    }

    fn run(singles: u64, arrived: u64, first: Option<u64>, last: Option<u64>) -> LapsedRun {
        LapsedRun {
            partition: 0,
            handovers: 0,
            singles,
            arrived,
            first,
            last,
        }
    }

    #[test]
    fn a_settled_run_counts_the_frames_that_never_arrived_inside_and_before_it() {
        // 6 accounted for; 34 of 7..=51 arrived (11 dropped on the way while it stalled).
        let settled = run(0, 34, Some(7), Some(51)).settle(Some(6));
        assert_eq!(
            settled,
            Settled {
                lost: 45,
                never: 11,
                span: Some((7, 51))
            }
        );
        // Frames published while NATS was down for the worker, before the first arrival.
        let settled = run(0, 5, Some(20), Some(24)).settle(Some(6));
        assert_eq!((settled.lost, settled.never), (18, 13));
    }

    #[test]
    fn frames_given_up_inside_the_worker_are_counted_once_besides_the_span() {
        // Frames 5 and 6 were accounted for at intake and given up; 7..=9 arrived lapsed.
        let settled = run(2, 3, Some(7), Some(9)).settle(Some(6));
        assert_eq!((settled.lost, settled.never), (5, 0));
        // Nothing accounted for yet: the span starts at the first arrival.
        let settled = run(0, 2, Some(3), Some(6)).settle(None);
        assert_eq!(settled.span, Some((3, 6)));
        assert_eq!((settled.lost, settled.never), (4, 2));
        // Unreadable sequence numbers: counted one by one.
        assert_eq!(run(4, 0, None, None).settle(Some(6)).lost, 4);
    }

    #[test]
    fn the_cap_refuses_new_cameras_until_idle_ones_expire() {
        let (t, tracked) = table(2, 1000);
        let t0 = Instant::now();
        assert!(t.admit("a", t0, |_| ()).is_some());
        assert!(t.admit("b", t0, |s| s.in_worker += 1).is_some());
        assert!(t.admit("c", t0, |_| ()).is_none(), "over the cap");
        assert!(t.admit("a", t0, |_| ()).is_some(), "known cameras pass");
        assert_eq!(tracked.load(Ordering::Relaxed), 2);
        // Not idle long enough yet.
        assert!(t.expire(t0 + Duration::from_millis(999)).is_empty());
        // `b` still has a frame inside: only `a` goes.
        let gone: Vec<String> = t
            .expire(t0 + Duration::from_millis(1000))
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(gone, ["a"]);
        assert_eq!(tracked.load(Ordering::Relaxed), 1);
        assert!(t.admit("c", t0, |_| ()).is_some(), "room again");
        t.left("b");
        assert_eq!(t.expire(t0 + Duration::from_secs(2)).len(), 2);
        assert_eq!(tracked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn late_frames_are_those_not_newer_in_seq_or_capture_time() {
        let mut m = Mark {
            seq: 99,
            capture_ts_ns: 9_900,
        };
        // Redelivered after newer frames were fed: late, the very frame again too.
        assert!(m.is_late(49, 4_900));
        assert!(m.is_late(99, 9_900));
        // The next frame is not.
        assert!(!m.is_late(100, 10_000));
        // A publisher that restarted counts from 0 with newer capture times: not late, and
        // the mark follows the new count.
        assert!(!m.is_late(0, 20_000));
        m.advance(0, 20_000);
        assert_eq!(
            m,
            Mark {
                seq: 0,
                capture_ts_ns: 20_000
            }
        );
        assert!(m.is_late(0, 20_000), "the new life's frames are late again");
        assert!(m.is_late(0, 9_800), "the old life's frame 0 too");
        // A mark learned from another worker that is behind changes nothing.
        m.advance(0, 19_000);
        assert_eq!(m.capture_ts_ns, 20_000);
        m.advance(5, 20_500);
        assert_eq!((m.seq, m.capture_ts_ns), (5, 20_500));
    }

    #[test]
    fn a_frame_whose_results_were_not_stored_is_fed_again_unless_a_newer_one_was() {
        let (t, _) = table(4, 1000);
        let now = Instant::now();
        let m = |seq| Mark {
            seq,
            capture_ts_ns: seq * 100,
        };
        t.admit("a", now, |s| {
            assert!(!s.feed(1, 100));
            s.stored(m(1));
            assert!(!s.feed(2, 200));
            // Frame 2's results are refused: it may come again.
            s.unstored(m(2));
            assert!(!s.feed(2, 200), "redelivered, fed again");
            assert!(!s.feed(3, 300));
            // Frame 2 failed again, but 3 was fed since: 2 would now come after 3.
            s.unstored(m(2));
            assert!(s.feed(2, 200), "late");
            s.stored(m(3));
            assert_eq!(s.mark, Some(m(3)));
            // A watermark read from another worker's record moves both.
            s.stored(m(9));
            assert!(s.feed(8, 800));
        })
        .expect("admitted");
    }

    #[test]
    fn drops_are_reported_once_per_second_with_their_count() {
        let (t, _) = table(4, 1000);
        let t0 = Instant::now();
        let report = |at| t.admit("a", at, |s| s.dropped(at)).flatten();
        assert_eq!(report(t0), Some(1), "the first drop at once");
        assert_eq!(report(t0 + Duration::from_millis(10)), None);
        assert_eq!(report(t0 + Duration::from_millis(20)), None);
        assert_eq!(report(t0 + Duration::from_millis(1010)), Some(3));
    }
}
