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
use std::time::Duration;

use panoptes_contracts::batching::BatchPolicy;

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
