//! Adaptive batching across cameras: how many frames the next pass takes and when a batch
//! stops waiting, learnt from how long passes of each size actually take, and the per-call
//! counters model stages keep.
//!
//! The worker gathers frames from several cameras into one pass through its stages, so a model
//! stage sees them together and runs them as one inference call. Whether that pays depends on
//! the device: on a GPU a batch of 8 costs little more than one frame; on a CPU each frame in a
//! batch costs as much as alone or more (measured here: ONNX Runtime +20% per frame, tract
//! 4×). So the size is not fixed: the [`Batcher`] keeps the size whose per-frame cost is lowest
//! by trying the next size up and down now and then (hill climbing on measured cost), never
//! beyond what the latency target allows. A batch closes when it has that many frames, when no
//! other camera is expected to deliver, or when waiting longer would make the oldest frame miss
//! the latency target.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a stage wants its inputs grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most frames per pass (at least 1).
    pub max_batch: usize,
    /// Longest the first frame of a batch waits for others.
    pub max_wait: Duration,
    /// The frame-to-result time the stage should keep: a pass takes no more frames than it can
    /// process within it (by measured cost), and waiting is cut short so that the oldest frame
    /// of the batch still makes it.
    pub latency_target: Option<Duration>,
    /// Learn the batch size with the lowest cost per frame (true), or always fill batches up to
    /// `max_batch` (for devices where batching is known to pay).
    pub adaptive: bool,
}

impl BatchPolicy {
    /// The default wait when a topology gives `max_batch` but no `max_wait_ms`.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(10);

    pub fn new(max_batch: usize) -> Self {
        Self {
            max_batch: max_batch.max(1),
            max_wait: Self::DEFAULT_MAX_WAIT,
            latency_target: None,
            adaptive: true,
        }
    }

    /// The policy for stages that batch differently: the largest batch and the shortest wait
    /// and target of any of them (a batch must suit its most impatient stage); adaptive if any
    /// of them is.
    pub fn merge(self, other: BatchPolicy) -> BatchPolicy {
        BatchPolicy {
            max_batch: self.max_batch.max(other.max_batch),
            max_wait: self.max_wait.min(other.max_wait),
            latency_target: match (self.latency_target, other.latency_target) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            adaptive: self.adaptive || other.adaptive,
        }
    }
}

/// Learns the cost of a pass by its size, chooses the size of the next pass and says how long a
/// forming batch may still wait.
#[derive(Debug)]
pub struct Batcher {
    policy: BatchPolicy,
    /// Smoothed processing time per batch size (index = size - 1).
    cost: Vec<Option<Duration>>,
    /// The size the controller settled on (adaptive), or `max_batch`.
    target: usize,
    passes: u64,
}

/// Weight of a new measurement in the running estimate: recent enough to follow load changes,
/// smooth enough that one slow batch (a page fault, a busy neighbour) does not swing it.
const EMA_WEIGHT: f64 = 0.2;
/// Every this many passes the controller tries one size up, and (half-way) one size down.
const EXPLORE_EVERY: u64 = 10;
/// A larger batch must be this much cheaper per frame to be kept: on a tie, the smaller one
/// wins, for its latency.
const MIN_GAIN: f64 = 0.05;

impl Batcher {
    pub fn new(policy: BatchPolicy) -> Self {
        let max = policy.max_batch.max(1);
        Self {
            cost: vec![None; max],
            // Adaptive starts unbatched: the right choice on CPUs, and on a GPU it climbs.
            target: if policy.adaptive { 1 } else { max },
            passes: 0,
            policy,
        }
    }

    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// The batch size the controller has settled on.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Most frames the next pass takes: the settled size, one more or one less on exploring
    /// passes, never more than fits the latency target by measured cost.
    pub fn size_limit(&self) -> usize {
        let mut n = self.target;
        if self.policy.adaptive {
            let phase = self.passes % EXPLORE_EVERY;
            if phase == EXPLORE_EVERY - 1 && n < self.policy.max_batch {
                n += 1;
            } else if phase == EXPLORE_EVERY / 2 - 1 && n > 1 {
                n -= 1;
            }
        }
        while n > 1 && !self.fits(n) {
            n -= 1;
        }
        n
    }

    /// Records that a pass of `size` frames took `took`, and moves the settled size towards
    /// the cheapest per frame.
    pub fn observe(&mut self, size: usize, took: Duration) {
        let Some(slot) = size.checked_sub(1).and_then(|i| self.cost.get_mut(i)) else {
            return;
        };
        *slot = Some(match *slot {
            None => took,
            Some(prev) => prev.mul_f64(1.0 - EMA_WEIGHT) + took.mul_f64(EMA_WEIGHT),
        });
        self.passes += 1;
        if !self.policy.adaptive {
            return;
        }
        let t = self.target;
        // One up, kept if clearly cheaper per frame; one down, kept unless the current size is
        // clearly cheaper (on a tie the smaller batch wins, for its latency).
        let up = size == t + 1 && self.fits(size) && self.cheaper(size, t);
        let down = size + 1 == t && !self.cheaper(t, size);
        if up || down {
            self.target = size;
        }
        while self.target > 1 && !self.fits(self.target) {
            self.target -= 1;
        }
    }

    /// Whether a batch of `a` frames has been measured cheaper per frame than one of `b`, by at
    /// least [`MIN_GAIN`].
    fn cheaper(&self, a: usize, b: usize) -> bool {
        let per_frame = |n: usize| {
            self.cost
                .get(n.wrapping_sub(1))
                .copied()
                .flatten()
                .map(|c| c.as_secs_f64() / n as f64)
        };
        match (per_frame(a), per_frame(b)) {
            (Some(a), Some(b)) => a < b * (1.0 - MIN_GAIN),
            _ => false,
        }
    }

    /// Whether a pass of `size` frames is expected to finish within the latency target.
    fn fits(&self, size: usize) -> bool {
        self.policy
            .latency_target
            .is_none_or(|target| self.estimate(size) <= target)
    }

    /// Expected time to process a batch of `size` frames: the measurement for that size, else a
    /// line through the two nearest measured sizes (a fixed cost plus a cost per frame), else
    /// proportional to the one measured size, else zero (nothing known yet).
    pub fn estimate(&self, size: usize) -> Duration {
        let size = size.clamp(1, self.policy.max_batch.max(1));
        if let Some(Some(d)) = self.cost.get(size - 1) {
            return *d;
        }
        let mut measured: Vec<(usize, f64)> = self
            .cost
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (i + 1, c.as_secs_f64())))
            .collect();
        measured.sort_by_key(|(n, _)| n.abs_diff(size));
        let secs = match measured.as_slice() {
            [] => 0.0,
            [(n, c)] => c * size as f64 / *n as f64,
            [(n1, c1), (n2, c2), ..] => {
                let slope = ((c2 - c1) / (*n2 as f64 - *n1 as f64)).max(0.0);
                (c1 + slope * (size as f64 - *n1 as f64)).max(0.0)
            }
        };
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    /// How long after its first frame arrived a batch now holding `size` frames may stay open
    /// for one more: `max_wait`, cut so that `waited + cost(size + 1)` stays within the latency
    /// target. Zero when the batch has reached [`Batcher::size_limit`].
    pub fn wait_budget(&self, size: usize) -> Duration {
        if size >= self.size_limit() {
            return Duration::ZERO;
        }
        let mut budget = self.policy.max_wait;
        if let Some(target) = self.policy.latency_target {
            budget = budget.min(target.saturating_sub(self.estimate(size + 1)));
        }
        budget
    }
}

/// Counters of the batches one stage ran: how many, how many items in them, and a histogram of
/// their sizes. Shared (`Arc`) between the stage and whoever reports metrics.
#[derive(Debug)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub items: AtomicU64,
    /// Nanoseconds spent in the batched calls.
    pub busy_ns: AtomicU64,
    /// `sizes[n - 1]` counts batches of `n` items; the last bucket also counts larger ones.
    sizes: Vec<AtomicU64>,
}

impl BatchStats {
    pub fn new(max_batch: usize) -> Self {
        Self {
            batches: AtomicU64::new(0),
            items: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            sizes: (0..max_batch.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn record(&self, size: usize, took: Duration) {
        if size == 0 {
            return;
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(size as u64, Ordering::Relaxed);
        self.busy_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let bucket = (size - 1).min(self.sizes.len() - 1);
        self.sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// `(size, count)` for every size seen.
    pub fn histogram(&self) -> Vec<(usize, u64)> {
        self.sizes
            .iter()
            .enumerate()
            .map(|(i, c)| (i + 1, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    /// Mean items per batch (0 before the first).
    pub fn mean_size(&self) -> f64 {
        let batches = self.batches.load(Ordering::Relaxed);
        if batches == 0 {
            return 0.0;
        }
        self.items.load(Ordering::Relaxed) as f64 / batches as f64
    }
}

/// Which cameras delivered recently: a batch only waits when another camera is expected.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    last: HashMap<String, std::time::Instant>,
}

/// A camera that has not delivered for this long is not waited for.
const ACTIVE_WINDOW: Duration = Duration::from_secs(1);

impl Activity {
    pub fn saw(&mut self, camera: &str, at: std::time::Instant) {
        match self.last.get_mut(camera) {
            Some(t) => *t = at,
            None => {
                self.last.insert(camera.to_owned(), at);
            }
        }
    }

    /// Forgets cameras not heard from for ten windows (they count as inactive anyway).
    pub fn prune(&mut self, now: std::time::Instant) {
        self.last
            .retain(|_, t| now.saturating_duration_since(*t) <= ACTIVE_WINDOW * 10);
    }

    /// Cameras heard from within the window before `now`.
    pub fn active(&mut self, now: std::time::Instant) -> usize {
        self.prune(now);
        self.last
            .values()
            .filter(|t| now.saturating_duration_since(**t) <= ACTIVE_WINDOW)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn fixed(max_batch: usize, max_wait: Duration, latency_target: Option<Duration>) -> Batcher {
        Batcher::new(BatchPolicy {
            max_batch,
            max_wait,
            latency_target,
            adaptive: false,
        })
    }

    #[test]
    fn estimates_follow_measurements_and_extrapolate_per_frame() {
        let mut b = fixed(8, ms(50), Some(ms(100)));
        assert_eq!(b.estimate(3), Duration::ZERO, "nothing measured yet");
        b.observe(2, ms(40));
        assert_eq!(b.estimate(2), ms(40));
        assert_eq!(b.estimate(4), ms(80), "20 ms per frame from the batch of 2");
        b.observe(2, ms(90));
        assert_eq!(b.estimate(2), ms(50), "0.8 * 40 + 0.2 * 90");
        b.observe(4, ms(70));
        assert_eq!(b.estimate(3), ms(60), "between the batches of 2 and 4");
        assert_eq!(b.estimate(6), ms(90), "a fixed cost plus 10 ms per frame");
        b.observe(0, ms(1));
        b.observe(9, ms(1));
        assert_eq!(b.estimate(2), ms(50), "out-of-range sizes are ignored");
    }

    #[test]
    fn the_wait_shrinks_as_the_next_batch_gets_costlier() {
        let mut b = fixed(4, ms(30), Some(ms(100)));
        assert_eq!(b.wait_budget(1), ms(30), "unknown cost: max_wait");
        b.observe(2, ms(80));
        assert_eq!(b.wait_budget(1), ms(20), "100 - 80");
        b.observe(3, ms(120));
        assert_eq!(b.size_limit(), 2, "a batch of 3 misses the target");
        assert_eq!(b.wait_budget(2), Duration::ZERO);
        let free = fixed(4, BatchPolicy::DEFAULT_MAX_WAIT, None);
        assert_eq!(free.wait_budget(1), BatchPolicy::DEFAULT_MAX_WAIT);
        assert_eq!(free.wait_budget(4), Duration::ZERO, "full");
    }

    /// Passes at saturation (frames always waiting) with `cost(n)` per pass; returns the sizes
    /// the controller chose.
    fn saturate(b: &mut Batcher, passes: usize, cost: impl Fn(usize) -> Duration) -> Vec<usize> {
        (0..passes)
            .map(|_| {
                let n = b.size_limit();
                b.observe(n, cost(n));
                n
            })
            .collect()
    }

    #[test]
    fn adaptive_batches_grow_where_they_pay_and_stay_small_where_they_do_not() {
        // GPU-like: a fixed launch cost, little per frame.
        let mut gpu = Batcher::new(BatchPolicy::new(8));
        assert_eq!(gpu.target(), 1, "starts unbatched");
        saturate(&mut gpu, 200, |n| ms(20 + 2 * n as u64));
        assert_eq!(gpu.target(), 8);
        // CPU-like (measured here with ONNX Runtime): each frame costs 20% more in a batch.
        let mut cpu = Batcher::new(BatchPolicy::new(8));
        let sizes = saturate(&mut cpu, 200, |n| {
            ms(if n == 1 { 80 } else { 96 * n as u64 })
        });
        assert_eq!(cpu.target(), 1);
        let batched = sizes.iter().filter(|n| **n > 1).count();
        assert!(
            batched <= 20,
            "only exploring passes batch: {batched} of 200"
        );
    }

    #[test]
    fn adaptive_batches_shrink_when_larger_ones_stop_paying() {
        let mut b = Batcher::new(BatchPolicy::new(8));
        saturate(&mut b, 200, |n| ms(20 + 2 * n as u64));
        assert_eq!(b.target(), 8);
        // The device gets busy: now every frame costs the same alone or batched.
        saturate(&mut b, 400, |n| ms(30 * n as u64));
        assert!(b.target() <= 2, "target {}", b.target());
    }

    #[test]
    fn the_latency_target_caps_the_batch() {
        let policy = BatchPolicy {
            latency_target: Some(ms(50)),
            ..BatchPolicy::new(8)
        };
        let mut b = Batcher::new(policy);
        saturate(&mut b, 300, |n| ms(20 + 5 * n as u64));
        // 20 + 5n <= 50 holds up to n = 6.
        assert_eq!(b.target(), 6);
        let mut f = Batcher::new(BatchPolicy {
            adaptive: false,
            ..policy
        });
        assert_eq!(f.size_limit(), 8, "nothing measured: full batches");
        saturate(&mut f, 3, |n| ms(20 + 5 * n as u64));
        assert_eq!(f.size_limit(), 6, "then only what fits the target");
    }

    #[test]
    fn merged_policies_take_the_largest_batch_and_shortest_waits() {
        let a = BatchPolicy {
            max_batch: 4,
            max_wait: ms(20),
            latency_target: None,
            adaptive: false,
        };
        let b = BatchPolicy {
            max_batch: 16,
            max_wait: ms(5),
            latency_target: Some(ms(80)),
            adaptive: true,
        };
        assert_eq!(
            a.merge(b),
            BatchPolicy {
                max_batch: 16,
                max_wait: ms(5),
                latency_target: Some(ms(80)),
                adaptive: true,
            }
        );
    }

    #[test]
    fn stats_count_batches_and_sizes() {
        let s = BatchStats::new(4);
        s.record(1, ms(1));
        s.record(3, ms(2));
        s.record(9, ms(3));
        s.record(0, ms(3));
        assert_eq!(s.batches.load(Ordering::Relaxed), 3);
        assert_eq!(s.items.load(Ordering::Relaxed), 13);
        assert_eq!(s.histogram(), vec![(1, 1), (3, 1), (4, 1)]);
        assert!((s.mean_size() - 13.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn only_recent_cameras_count_as_active() {
        let mut a = Activity::default();
        let t0 = std::time::Instant::now();
        a.saw("a", t0);
        a.saw("b", t0);
        assert_eq!(a.active(t0 + ms(500)), 2);
        a.saw("b", t0 + ms(900));
        assert_eq!(a.active(t0 + ms(1500)), 1);
    }
}
