//! Adaptive batching across cameras: when to close a batch of frames, learnt from how long
//! batches of each size actually take, and the per-batch counters model stages keep.
//!
//! The worker gathers frames from several cameras into one pass through its stages, so a model
//! stage sees them together and runs them as one inference call. A batch closes when it is full
//! (`max_batch`), when no other camera is expected to deliver in time, or when waiting any longer
//! would make the oldest frame miss the latency target given the measured cost of a bigger batch.

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
    /// The frame-to-result time the stage should keep; waiting is cut short so that the oldest
    /// frame of the batch still makes it, by the measured cost of the batch.
    pub latency_target: Option<Duration>,
}

impl BatchPolicy {
    /// The default wait when a topology gives `max_batch` but no `max_wait_ms`.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(10);

    pub fn new(max_batch: usize) -> Self {
        Self {
            max_batch: max_batch.max(1),
            max_wait: Self::DEFAULT_MAX_WAIT,
            latency_target: None,
        }
    }

    /// The policy for stages that batch differently: the largest batch and the shortest wait
    /// and target of any of them (a batch must suit its most impatient stage).
    pub fn merge(self, other: BatchPolicy) -> BatchPolicy {
        BatchPolicy {
            max_batch: self.max_batch.max(other.max_batch),
            max_wait: self.max_wait.min(other.max_wait),
            latency_target: match (self.latency_target, other.latency_target) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// Learns the cost of a batch by its size and says how long a forming batch may still wait.
#[derive(Debug)]
pub struct Batcher {
    policy: BatchPolicy,
    /// Smoothed processing time per batch size (index = size - 1).
    cost: Vec<Option<Duration>>,
}

/// Weight of a new measurement in the running estimate: recent enough to follow load changes,
/// smooth enough that one slow batch (a page fault, a GC elsewhere) does not swing it.
const EMA_WEIGHT: f64 = 0.2;

impl Batcher {
    pub fn new(policy: BatchPolicy) -> Self {
        Self {
            cost: vec![None; policy.max_batch],
            policy,
        }
    }

    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Records that a batch of `size` frames took `took` to process.
    pub fn observe(&mut self, size: usize, took: Duration) {
        let Some(slot) = size.checked_sub(1).and_then(|i| self.cost.get_mut(i)) else {
            return;
        };
        *slot = Some(match *slot {
            None => took,
            Some(prev) => prev.mul_f64(1.0 - EMA_WEIGHT) + took.mul_f64(EMA_WEIGHT),
        });
    }

    /// Expected time to process a batch of `size` frames: the measurement for that size, else
    /// extrapolated per frame from the nearest measured size, else zero (nothing known yet).
    pub fn estimate(&self, size: usize) -> Duration {
        let size = size.clamp(1, self.policy.max_batch);
        if let Some(Some(d)) = self.cost.get(size - 1) {
            return *d;
        }
        let nearest = self
            .cost
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (i + 1, c)))
            .min_by_key(|(n, _)| n.abs_diff(size));
        match nearest {
            Some((n, c)) => c.mul_f64(size as f64 / n as f64),
            None => Duration::ZERO,
        }
    }

    /// How long after its first frame arrived a batch now holding `size` frames may stay open
    /// for one more: `max_wait`, cut so that `waited + cost(size + 1)` stays within the latency
    /// target. Zero when the batch is full.
    pub fn wait_budget(&self, size: usize) -> Duration {
        if size >= self.policy.max_batch {
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

    /// Cameras heard from within the window before `now`.
    pub fn active(&mut self, now: std::time::Instant) -> usize {
        self.last
            .retain(|_, t| now.saturating_duration_since(*t) <= ACTIVE_WINDOW * 10);
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

    #[test]
    fn estimates_follow_measurements_and_extrapolate_per_frame() {
        let mut b = Batcher::new(BatchPolicy {
            max_batch: 8,
            max_wait: ms(50),
            latency_target: Some(ms(100)),
        });
        assert_eq!(b.estimate(3), Duration::ZERO, "nothing measured yet");
        b.observe(2, ms(40));
        assert_eq!(b.estimate(2), ms(40));
        assert_eq!(b.estimate(4), ms(80), "20 ms per frame from the batch of 2");
        b.observe(2, ms(90));
        assert_eq!(b.estimate(2), ms(50), "0.8 * 40 + 0.2 * 90");
        b.observe(0, ms(1));
        b.observe(9, ms(1));
        assert_eq!(b.estimate(2), ms(50), "out-of-range sizes are ignored");
    }

    #[test]
    fn the_wait_shrinks_as_the_next_batch_gets_costlier() {
        let mut b = Batcher::new(BatchPolicy {
            max_batch: 4,
            max_wait: ms(30),
            latency_target: Some(ms(100)),
        });
        assert_eq!(b.wait_budget(1), ms(30), "unknown cost: max_wait");
        b.observe(2, ms(80));
        assert_eq!(b.wait_budget(1), ms(20), "100 - 80");
        b.observe(3, ms(120));
        assert_eq!(
            b.wait_budget(2),
            Duration::ZERO,
            "a batch of 3 misses the target"
        );
        assert_eq!(b.wait_budget(4), Duration::ZERO, "full");
        let free = Batcher::new(BatchPolicy::new(4));
        assert_eq!(free.wait_budget(1), BatchPolicy::DEFAULT_MAX_WAIT);
    }

    #[test]
    fn merged_policies_take_the_largest_batch_and_shortest_waits() {
        let a = BatchPolicy {
            max_batch: 4,
            max_wait: ms(20),
            latency_target: None,
        };
        let b = BatchPolicy {
            max_batch: 16,
            max_wait: ms(5),
            latency_target: Some(ms(80)),
        };
        assert_eq!(
            a.merge(b),
            BatchPolicy {
                max_batch: 16,
                max_wait: ms(5),
                latency_target: Some(ms(80)),
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
