//! The `panoptes` command as a library, so tests and benchmarks drive exactly what users run.
//! [`runner`] runs a whole topology in one process; [`ingest_node`] publishes a camera's frames;
//! [`registry`] turns topology stage entries into stage implementations.

pub mod ingest_node;
pub mod registry;
pub mod runner;

/// Connects to NATS with the settings frame traffic needs.
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    use anyhow::Context as _;
    async_nats::ConnectOptions::new()
        .name("panoptes")
        // Capacities count messages, not bytes: keep them small for multi-megabyte frames so a
        // burst cannot queue seconds of video (DESIGN.md §10).
        .client_capacity(64)
        .subscription_capacity(64)
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))
}
