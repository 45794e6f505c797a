//! Adaptive batching across cameras: how many frames the next pass takes and when a batch
//! stops waiting, learnt from how long passes of each size actually take, and the per-call
//! counters model stages keep.
//!
//! The worker gathers frames from several cameras into one pass through its stages, so a model
//! stage sees them together and runs them as one inference call. Whether that pays depends on
//! the device: on a GPU a batch of 8 costs little more than one frame; on a CPU each frame in a
//! batch costs as much as alone or more (measured here: ONNX Runtime +10–20% per frame, tract
//! 4×). So the size is not fixed: the [`Batcher`] keeps the size whose per-frame cost is lowest
//! by trying the next size up and down now and then (hill climbing on measured cost), never
//! beyond what the latency target allows.
//!
//! Each trial is weighed against the pass of the settled size just before it, not against a
//! long-run average: on a shared machine whose speed drifts, a trial taken in a quiet moment
//! would otherwise look cheaper than an average that includes the busy ones. The settled size
//! moves only when its trials' mean clears the margin by more than their standard error; once
//! eight trials agree that the size above is dearer, it is tried four times less often. The
//! first pass of each size counts for nothing: a runtime plans and allocates for a new input
//! shape on its first call (ONNX Runtime here: +20–90 ms for a batch of 2, +300–450 ms for 3),
//! which says nothing about what the size costs afterwards.
//!
//! A batch closes when it has that many frames, when no other camera is expected to deliver,
//! or when waiting longer would make the oldest frame miss the latency target.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use panoptes_contracts::batching::BatchPolicy;

/// Learns the cost of a pass by its size, chooses the size of the next pass and says how long a
/// forming batch may still wait.
#[derive(Debug)]
pub struct Batcher {
    policy: BatchPolicy,
    /// Smoothed processing time per batch size (index = size - 1), from its second pass on.
    cost: Vec<Option<Duration>>,
    /// Whether a size has had its first pass (index = size - 1).
    warmed: Vec<bool>,
    /// The size the controller settled on (adaptive), or `max_batch`.
    target: usize,
    passes: u64,
    /// The latest pass of the settled size: its pass number and how long it took.
    last_settled: Option<(u64, Duration)>,
    /// Trials of one size up and one size down, each against the settled size's pass before it.
    up: Trials,
    down: Trials,
}

/// The latest trials of one neighbouring size since the settled size last changed: each the
/// trial's per-frame cost over that of the settled size's pass just before it.
#[derive(Clone, Debug, Default)]
struct Trials {
    ratios: VecDeque<f64>,
}

impl Trials {
    fn add(&mut self, ratio: f64) {
        if self.ratios.len() == TRIAL_WINDOW {
            self.ratios.pop_front();
        }
        self.ratios.push_back(ratio);
    }

    /// The trials' mean ratio and its standard error, from the second trial on.
    fn mean(&self) -> Option<(f64, f64)> {
        let n = self.ratios.len();
        if n < 2 {
            return None;
        }
        let mean = self.ratios.iter().sum::<f64>() / n as f64;
        let var = self.ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Some((mean, (var / n as f64).sqrt()))
    }

    /// The upper end of the trials' ratio: their mean plus its standard error.
    fn upper(&self) -> Option<f64> {
        self.mean().map(|(mean, se)| mean + se)
    }

    /// Whether a full window of trials shows the size dearer per frame, beyond their noise.
    fn clearly_dearer(&self) -> bool {
        self.ratios.len() == TRIAL_WINDOW && self.mean().is_some_and(|(mean, se)| mean - se > 1.0)
    }
}

/// Weight of a new measurement in the running estimate: recent enough to follow load changes,
/// smooth enough that one slow batch (a page fault, a busy neighbour) does not swing it.
const EMA_WEIGHT: f64 = 0.2;
/// Every this many passes the controller tries one size up, and (half-way) one size down.
const EXPLORE_EVERY: u64 = 10;
/// Trials of the size above come this many times less often once a full window of them shows
/// it dearer per frame (a CPU): each costs a little, and the answer is known.
const SETTLED_BACKOFF: u64 = 4;
/// A larger batch must be this much cheaper per frame to be kept: on a tie, the smaller one
/// wins, for its latency.
const MIN_GAIN: f64 = 0.05;
/// Trials of a size kept for the decision: one trial on a noisy machine can be 15% off either
/// way, and older ones describe a machine that may have changed.
const TRIAL_WINDOW: usize = 8;

impl Batcher {
    pub fn new(policy: BatchPolicy) -> Self {
        let max = policy.max_batch.max(1);
        Self {
            cost: vec![None; max],
            warmed: vec![false; max],
            // Adaptive starts unbatched: the right choice on CPUs, and on a GPU it climbs.
            target: if policy.adaptive { 1 } else { max },
            passes: 0,
            last_settled: None,
            up: Trials::default(),
            down: Trials::default(),
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
            let up_every = if self.up.clearly_dearer() {
                EXPLORE_EVERY * SETTLED_BACKOFF
            } else {
                EXPLORE_EVERY
            };
            if self.passes % up_every == up_every - 1 && n < self.policy.max_batch {
                n += 1;
            } else if self.passes % EXPLORE_EVERY == EXPLORE_EVERY / 2 - 1 && n > 1 {
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
        let Some(i) = size.checked_sub(1).filter(|i| *i < self.cost.len()) else {
            return;
        };
        self.passes += 1;
        if !std::mem::replace(&mut self.warmed[i], true) {
            return;
        }
        self.cost[i] = Some(match self.cost[i] {
            None => took,
            Some(prev) => prev.mul_f64(1.0 - EMA_WEIGHT) + took.mul_f64(EMA_WEIGHT),
        });
        if !self.policy.adaptive {
            return;
        }
        let t = self.target;
        if size == t {
            self.last_settled = Some((self.passes, took));
        } else if size == t + 1 || size + 1 == t {
            // Only a settled pass close before the trial is a fair comparison: the machine's
            // speed may have changed since an older one.
            if let Some((at, settled)) = self.last_settled
                && self.passes - at <= EXPLORE_EVERY
                && !settled.is_zero()
            {
                let ratio = (took.as_secs_f64() / size as f64) / (settled.as_secs_f64() / t as f64);
                if size > t {
                    &mut self.up
                } else {
                    &mut self.down
                }
                .add(ratio);
            }
        }
        // One up when its trials show it clearly cheaper per frame; one down when its trials
        // show it clearly within the margin of the settled size (on a tie the smaller batch
        // wins, for its latency).
        let up = self.up.upper().is_some_and(|r| r < 1.0 - MIN_GAIN) && self.fits(t + 1);
        let down = self
            .down
            .upper()
            .is_some_and(|r| r <= 1.0 / (1.0 - MIN_GAIN));
        let mut next = if up {
            t + 1
        } else if down {
            t - 1
        } else {
            t
        };
        while next > 1 && !self.fits(next) {
            next -= 1;
        }
        if next != t {
            self.target = next;
            self.up = Trials::default();
            self.down = Trials::default();
            self.last_settled = None;
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
        b.observe(2, ms(400));
        assert_eq!(
            b.estimate(2),
            Duration::ZERO,
            "a size's first pass is a warm-up"
        );
        b.observe(2, ms(40));
        assert_eq!(b.estimate(2), ms(40));
        assert_eq!(b.estimate(4), ms(80), "20 ms per frame from the batch of 2");
        b.observe(2, ms(90));
        assert_eq!(b.estimate(2), ms(50), "0.8 * 40 + 0.2 * 90");
        b.observe(4, ms(900));
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
        b.observe(2, ms(800));
        assert_eq!(
            b.wait_budget(1),
            ms(30),
            "still unknown after the warm-up pass"
        );
        b.observe(2, ms(80));
        assert_eq!(b.wait_budget(1), ms(20), "100 - 80");
        b.observe(3, ms(1200));
        b.observe(3, ms(120));
        assert_eq!(b.size_limit(), 2, "a batch of 3 misses the target");
        assert_eq!(b.wait_budget(2), Duration::ZERO);
        let free = fixed(4, BatchPolicy::DEFAULT_MAX_WAIT, None);
        assert_eq!(free.wait_budget(1), BatchPolicy::DEFAULT_MAX_WAIT);
        assert_eq!(free.wait_budget(4), Duration::ZERO, "full");
    }

    /// Passes at saturation (frames always waiting) with `cost(n)` per pass; returns the sizes
    /// the controller chose.
    fn saturate(
        b: &mut Batcher,
        passes: usize,
        mut cost: impl FnMut(usize) -> Duration,
    ) -> Vec<usize> {
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
        saturate(&mut gpu, 300, |n| ms(20 + 2 * n as u64));
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

    /// A noisy, drifting machine: a pass of `n` frames costs `work(n)` milliseconds, ±15% at
    /// random, and the whole machine runs 1.6× slower for stretches (a busy neighbour), as on
    /// a shared VM; the first pass of each size costs 300 ms more (a new input shape).
    fn noisy(seed: u64, work: impl Fn(usize) -> f64) -> impl FnMut(usize) -> Duration {
        let (mut state, mut pass) = (seed, 0u64);
        let mut shapes = std::collections::HashSet::new();
        move |n| {
            let first = if shapes.insert(n) { 300.0 } else { 0.0 };
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let jitter = 0.85 + 0.3 * ((state >> 33) as f64 / (1u64 << 31) as f64);
            let slow = if (pass / 13) % 3 == 0 { 1.6 } else { 1.0 };
            pass += 1;
            Duration::from_secs_f64((work(n) * jitter * slow + first) / 1e3)
        }
    }

    #[test]
    fn noise_and_drift_do_not_make_batches_that_cost_more_look_cheaper() {
        for seed in 1..=20 {
            // CPU-like: a frame in a batch costs 15% more than alone.
            let mut cpu = Batcher::new(BatchPolicy::new(4));
            let cost = noisy(seed, |n| if n == 1 { 70.0 } else { 80.5 * n as f64 });
            let sizes = saturate(&mut cpu, 2000, cost);
            let batched = sizes.iter().filter(|n| **n > 1).count();
            // Trials every 10 passes until eight of them agree, then every 40: about 57.
            assert!(
                batched <= 80,
                "seed {seed}: {batched} of 2000 passes batched"
            );
            // GPU-like: batches still grow through the same noise.
            let mut gpu = Batcher::new(BatchPolicy::new(8));
            let sizes = saturate(&mut gpu, 2000, noisy(seed, |n| 20.0 + 2.0 * n as f64));
            let late = &sizes[1000..];
            let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
            assert!(
                mean >= 6.5,
                "seed {seed}: mean batch {mean:.2} once settled"
            );
        }
    }

    #[test]
    fn trials_come_less_often_once_they_agree_and_still_catch_a_change() {
        let mut b = Batcher::new(BatchPolicy::new(8));
        let cpu = |n: usize| ms(if n == 1 { 80 } else { 92 * n as u64 });
        let sizes = saturate(&mut b, 400, cpu);
        assert_eq!(b.target(), 1);
        let late = sizes[200..].iter().filter(|n| **n > 1).count();
        assert_eq!(
            late, 5,
            "one trial every 40 passes once eight of them agree"
        );
        // The device starts paying for batches (a GPU freed by another tenant).
        saturate(&mut b, 600, |n| ms(20 + 2 * n as u64));
        assert_eq!(b.target(), 8);
    }

    #[test]
    fn adaptive_batches_shrink_when_larger_ones_stop_paying() {
        let mut b = Batcher::new(BatchPolicy::new(8));
        saturate(&mut b, 300, |n| ms(20 + 2 * n as u64));
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
