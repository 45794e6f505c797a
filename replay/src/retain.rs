//! The retention stream `<ns>-retain`: frames (`<ns>.frames.>`, with or without the partition
//! token) and detections (`<ns>.detections.*`) as published, limits retention by age and bytes,
//! so what is kept never depends on who processed what.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use panoptes_topology::RetainConfig;

use crate::{ReplayError, js_error};

pub fn stream_name(namespace: &str) -> String {
    format!("{namespace}-retain")
}

pub fn subjects(namespace: &str) -> Vec<String> {
    vec![
        format!("{namespace}.frames.>"),
        format!("{namespace}.detections.*"),
    ]
}

/// The stream's configuration for `config`.
pub fn stream_config(namespace: &str, config: &RetainConfig) -> stream::Config {
    let max_bytes = (config.max_gib * f64::from(1u32 << 30)).clamp(1.0, i64::MAX as f64) as i64;
    stream::Config {
        name: stream_name(namespace),
        description: Some(
            "Panoptes: frames and their detections kept for `panoptes replay`".into(),
        ),
        subjects: subjects(namespace),
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs_f64(config.max_age_h.clamp(0.001, 1e6) * 3600.0),
        max_bytes,
        // Replays read message by message (direct gets).
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the stream, or updates its limits to `config`'s.
pub async fn ensure(
    js: &jetstream::Context,
    namespace: &str,
    config: &RetainConfig,
) -> Result<(), ReplayError> {
    js.create_or_update_stream(stream_config(namespace, config))
        .await
        .map(|_| ())
        .map_err(|e| {
            ReplayError::JetStream(format!(
                "cannot keep frames in stream {}: {e} (retention needs JetStream, and no other stream may take {}'s frames: `delivery: durable` keeps them in its own)",
                stream_name(namespace),
                namespace
            ))
        })
}

/// The stream, which must exist.
pub async fn open(js: &jetstream::Context, namespace: &str) -> Result<stream::Stream, ReplayError> {
    let name = stream_name(namespace);
    match js.get_stream(&name).await {
        Ok(s) => Ok(s),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Err(ReplayError::NotRetained {
                    namespace: namespace.to_owned(),
                    stream: name,
                })
            }
            _ => Err(js_error(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_keeps_frames_and_detections_by_age_and_size() {
        let c = stream_config(
            "site",
            &RetainConfig {
                max_age_h: 2.0,
                max_gib: 0.5,
            },
        );
        assert_eq!(c.name, "site-retain");
        assert_eq!(c.subjects, ["site.frames.>", "site.detections.*"]);
        assert_eq!(c.max_age, Duration::from_secs(7200));
        assert_eq!(c.max_bytes, 512 << 20);
        assert_eq!(c.retention, stream::RetentionPolicy::Limits);
        assert_eq!(c.discard, stream::DiscardPolicy::Old);
        assert!(c.allow_direct);
    }
}
