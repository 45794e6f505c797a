//! The config file a local server runs on: listen address, payload limit, ports file,
//! JetStream store, the frame partition mapping and the caller's extra settings.

use std::path::Path;

use super::NatsServerOptions;

/// The first start's listen line: the kernel picks a free port, reported in the ports file.
pub(super) const ANY_PORT: &str = "listen: \"127.0.0.1:-1\"";

/// The config of a server whose store dir is `dir`; ports files go to `ports_dir`.
pub(super) fn render(opts: &NatsServerOptions, dir: &Path, ports_dir: &Path) -> String {
    let mut conf = format!(
        "{ANY_PORT}\nmax_payload: {}\nports_file_dir: {}\n",
        opts.max_payload,
        quote(ports_dir)
    );
    if opts.jetstream {
        conf.push_str(&format!(
            "jetstream {{\n  store_dir: {}\n}}\n",
            quote(&dir.join("js"))
        ));
    }
    if let Some((namespace, partitions)) = &opts.partition_mapping {
        conf.push_str(&partition_mapping(namespace, *partitions));
    }
    conf.push_str(&opts.extra_config);
    conf.push('\n');
    conf
}

/// The nats-server config block that maps `<ns>.frames.<camera>` to
/// `<ns>.frames.<camera>.<partition>`, the partition being [`panoptes_contracts::partition::partition_of`]
/// (nats-server's `partition()` is FNV-1a 32 mod P too). A publisher that knows nothing of
/// partitions thus lands on a partitioned subject; subjects that already carry a partition have
/// four tokens and pass unmapped. `partitions` below 1 counts as 1, as in `partition_of`.
pub fn partition_mapping(namespace: &str, partitions: u32) -> String {
    let partitions = partitions.max(1);
    let from = format!("{namespace}.frames.*");
    let to = format!("{namespace}.frames.{{{{wildcard(1)}}}}.{{{{partition({partitions},1)}}}}");
    format!(
        "mappings = {{\n  {}: {}\n}}\n",
        quote_str(&from),
        quote_str(&to)
    )
}

fn quote(p: &Path) -> String {
    quote_str(&p.display().to_string())
}

/// A double-quoted string as nats-server's config parser reads it (JSON escaping suffices).
fn quote_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats_server::tests::{binaries, next, start};
    use panoptes_contracts::partition::partition_of;

    #[test]
    fn mapping_snippet_is_what_the_docs_show() {
        // docs/nats.md quotes this block for users' own servers.
        assert_eq!(
            partition_mapping("panoptes", 16),
            "mappings = {\n  \"panoptes.frames.*\": \"panoptes.frames.{{wildcard(1)}}.{{partition(16,1)}}\"\n}\n"
        );
        assert!(partition_mapping("ns", 0).contains("{{partition(1,1)}}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_mapping_partitions_cameras_as_partition_of_does() {
        let mut cameras: Vec<String> = ["cam-alpha", "cam-bravo", "cam-pub", "gate_2", "X", "0"]
            .map(String::from)
            .into();
        cameras.extend((0..100).map(|i| format!("cam-{i}")));
        for binary in binaries() {
            let server = start(
                &binary,
                NatsServerOptions {
                    jetstream: false,
                    partition_mapping: Some(("ns".to_owned(), 16)),
                    ..NatsServerOptions::default()
                },
            );
            let client = async_nats::connect(server.url()).await.expect("connect");
            let mut sub = client.subscribe("ns.frames.>").await.expect("subscribe");
            client.flush().await.expect("flush");
            for camera in &cameras {
                client
                    .publish(format!("ns.frames.{camera}"), camera.clone().into())
                    .await
                    .expect("publish");
            }
            // A subject that already names its partition has four tokens: not mapped again.
            client
                .publish("ns.frames.cam-alpha.9", "direct".into())
                .await
                .expect("publish");
            client.flush().await.expect("flush");

            let mut seen = [false; 16];
            for camera in &cameras {
                let msg = next(&mut sub).await;
                let partition = partition_of(camera, 16);
                assert_eq!(
                    msg.subject.as_str(),
                    format!("ns.frames.{camera}.{partition}"),
                    "{}",
                    binary.display()
                );
                assert_eq!(msg.payload, camera.as_bytes());
                seen[partition as usize] = true;
            }
            assert!(seen.iter().all(|&s| s), "every partition is exercised");
            assert_eq!(
                next(&mut sub).await.subject.as_str(),
                "ns.frames.cam-alpha.9"
            );
            // The values partition.rs pins, as the server computes them.
            for (camera, partition) in [("cam-alpha", 5), ("cam-bravo", 13), ("cam-pub", 2)] {
                assert_eq!(partition_of(camera, 16), partition);
            }
        }
    }
}
