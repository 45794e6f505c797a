//! Delays between delivery attempts: exponential from `initial_ms`, doubling, with jitter (so
//! outputs of many processes do not hit a recovering endpoint together), capped at `max_ms`.

use std::time::Duration;

use backon::BackoffBuilder as _;
use panoptes_topology::RetryConfig;

/// The delays of one message's attempts, or of reconnects to a broker.
pub struct Backoff {
    delays: backon::ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub fn new(cfg: &RetryConfig) -> Self {
        let max = Duration::from_millis(cfg.max_ms.max(1));
        let delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(cfg.initial_ms.max(1)))
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        Self { delays, max }
    }

    /// The next delay; never more than `max_ms` (backon caps before adding jitter).
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max).min(self.max)
    }
}
