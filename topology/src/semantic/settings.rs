//! The top-level settings: the namespace, the NATS connection (URL, auth, TLS files),
//! telemetry endpoints and who may send control requests.

use super::{Checker, str_at};
use crate::diagnostic::Diagnostic;
use crate::yaml::Node;

impl Checker<'_> {
    pub(super) fn namespace(&mut self, root: &Node) {
        if let Some((ns, span)) = str_at(Some(root), "namespace") {
            self.token(ns, span, "namespace");
        }
    }

    pub(super) fn nats(&mut self, nats: Option<&Node>) {
        let Some(nats) = nats else { return };
        self.url(Some(nats), "url", &["nats", "tls"], "nats.url");
        if let Some(auth_entry) = nats.entry("auth") {
            let auth = &auth_entry.value;
            let methods: Vec<&str> = ["user", "token", "credentials", "nkey"]
                .into_iter()
                .filter(|k| auth.get(k).is_some())
                .collect();
            if methods.len() > 1 {
                self.out.push(
                    Diagnostic::at(
                        auth_entry.key_span,
                        format!(
                            "nats.auth takes one method, but {} are given",
                            methods.join(", ")
                        ),
                    )
                    .label("several methods")
                    .help("use user + password, token, credentials or nkey"),
                );
            }
            if methods.is_empty() && auth.get("password").is_none() {
                self.out.push(
                    Diagnostic::at(auth_entry.key_span, "nats.auth is empty")
                        .help("use user + password, token, credentials or nkey"),
                );
            }
            match (auth.entry("user"), auth.entry("password")) {
                (Some(u), None) => self.out.push(
                    Diagnostic::at(u.key_span, "nats.auth.user needs a password")
                        .label("no password"),
                ),
                (None, Some(p)) => self.out.push(
                    Diagnostic::at(p.key_span, "nats.auth.password needs a user").label("no user"),
                ),
                _ => {}
            }
            self.file_exists(Some(auth), "credentials", "NATS credentials file");
            self.file_exists(Some(auth), "nkey", "NATS nkey seed file");
        }
        if let Some(tls) = nats.get("tls") {
            for key in ["ca", "cert", "key"] {
                self.file_exists(Some(tls), key, "TLS file");
            }
            match (tls.entry("cert"), tls.entry("key")) {
                (Some(c), None) => self
                    .out
                    .push(Diagnostic::at(c.key_span, "nats.tls.cert needs a key").label("no key")),
                (None, Some(k)) => self
                    .out
                    .push(Diagnostic::at(k.key_span, "nats.tls.key needs a cert").label("no cert")),
                _ => {}
            }
        }
    }

    pub(super) fn telemetry(&mut self, t: Option<&Node>) {
        let Some(t) = t else { return };
        self.url(
            Some(t),
            "otlp_endpoint",
            &["http", "https"],
            "telemetry.otlp_endpoint",
        );
        if let Some((addr, span)) = str_at(Some(t), "metrics")
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            self.out.push(
                Diagnostic::at(
                    span,
                    format!("telemetry.metrics {addr:?} is not an address like 0.0.0.0:9464"),
                )
                .label("not ip:port"),
            );
        }
    }

    /// Control needs someone to obey: enabled without keys would accept nothing, which is
    /// never what the author meant.
    pub(super) fn control(&mut self, c: Option<&Node>) {
        let Some(c) = c else { return };
        if let Some(keys) = c.get("keys") {
            for (i, k) in keys.items().iter().enumerate() {
                if let Some(p) = k.as_str() {
                    let full = self.base_dir.join(p);
                    if !full.exists() {
                        self.out.push(
                            Diagnostic::at(k.span, format!("control key `{p}` does not exist"))
                                .label(format!("control.keys[{i}]: no such file"))
                                .help("make a key pair with `panoptes operator keygen --out admin.key` and list admin.key.pub here"),
                        );
                    }
                }
            }
        }
        let enabled = c.get("enabled");
        let on = matches!(
            enabled.map(|n| &n.value),
            Some(crate::yaml::Value::Bool(true))
        );
        let no_keys = c.get("keys").is_none_or(|k| k.items().is_empty());
        if on && no_keys {
            let span = enabled.map_or(c.span, |n| n.span);
            self.out.push(
                Diagnostic::at(span, "control is enabled but lists no keys")
                    .label("no request could be accepted")
                    .help("add the public key files of the people allowed to send control requests under control.keys"),
            );
        }
        for host in c.get("allow_hosts").map(Node::items).unwrap_or_default() {
            if let Some(h) = host.as_str()
                && (h.is_empty() || h.contains(['/', '@', ' ']))
            {
                self.out.push(
                    Diagnostic::at(host.span, format!("{h:?} is not a host name or address"))
                        .label("write the host alone, e.g. cam1.example.net or 10.0.0.5"),
                );
            }
        }
    }
}
