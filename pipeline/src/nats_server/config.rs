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

    #[test]
    fn mapping_snippet_is_what_the_docs_show() {
        // docs/nats.md quotes this block for users' own servers.
        assert_eq!(
            partition_mapping("panoptes", 16),
            "mappings = {\n  \"panoptes.frames.*\": \"panoptes.frames.{{wildcard(1)}}.{{partition(16,1)}}\"\n}\n"
        );
        assert!(partition_mapping("ns", 0).contains("{{partition(1,1)}}"));
    }
}
