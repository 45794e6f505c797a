//! The options every control command shares (`panoptes camera …`, `panoptes operator reload`
//! and `promote`): where the running processes are, who asks, and how long to wait for replies.

use std::path::PathBuf;
use std::time::Duration;

use panoptes_client::control::auth::Signer;
use panoptes_contracts::Subjects;

use crate::nats_args::NatsArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Secret key that signs the request (`panoptes operator keygen`); its public half must be
    /// in the topology's `control.keys`.
    #[arg(long, env = "PANOPTES_CONTROL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    #[arg(long, env = "PANOPTES_NAMESPACE", default_value = Subjects::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// How long to collect replies, in milliseconds [default: 10000 for `camera` commands
    /// (starting a camera may take seconds), 3000 for `operator` commands].
    #[arg(long, env = "PANOPTES_WAIT_MS")]
    pub wait_ms: Option<u64>,
    /// Stop waiting as soon as this many processes answered (`camera add` and `remove`: 1).
    #[arg(long, env = "PANOPTES_EXPECT")]
    pub expect: Option<usize>,
}

impl ControlArgs {
    /// The reply window: `--wait-ms`, or the command's `default_ms`.
    pub fn wait(&self, default_ms: u64) -> Duration {
        Duration::from_millis(self.wait_ms.unwrap_or(default_ms))
    }

    /// The request's signer, read from `--key`.
    pub fn signer(&self) -> anyhow::Result<Option<Signer>> {
        self.key.as_deref().map(Signer::read).transpose()
    }
}
