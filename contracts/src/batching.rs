//! How a stage wants frames grouped ([`BatchPolicy`], merged across the stages of a worker) and
//! the counters of the batches a stage ran ([`BatchStats`]). The batcher that acts on the policy
//! lives in the worker (`panoptes-pipeline`).

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
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
}
