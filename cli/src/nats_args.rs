//! The NATS connection options every command takes (URL, credentials, TLS), declared once and
//! flattened into each command, so a deployment that needs credentials can use every command.

use std::path::{Path, PathBuf};

use panoptes_topology::{AuthConfig, NatsConfig, TlsConfig};

/// Where the NATS server is when nothing says otherwise (the commands that only join one).
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How to reach NATS. Flags win over a topology's `nats` section: a credentials flag replaces
/// its `auth`, a TLS flag its `tls`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL (several: comma-separated); `tls://` requires TLS.
    #[arg(long = "nats", env = "PANOPTES_NATS_URL", value_name = "URL")]
    pub url: Option<String>,
    /// User name (with --nats-password).
    #[arg(long, env = "PANOPTES_NATS_USER", value_name = "USER")]
    pub nats_user: Option<String>,
    #[arg(
        long,
        env = "PANOPTES_NATS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// Token authentication.
    #[arg(
        long,
        env = "PANOPTES_NATS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,
    /// A `.creds` file (JWT and nkey seed, as `nsc` writes it).
    #[arg(long, env = "PANOPTES_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding an nkey seed.
    #[arg(long, env = "PANOPTES_NATS_NKEY", value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// PEM file of CA certificates to trust for the server's TLS certificate.
    #[arg(long, env = "PANOPTES_NATS_CA", value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --nats-cert-key).
    #[arg(long, env = "PANOPTES_NATS_CERT", value_name = "FILE")]
    pub nats_cert: Option<PathBuf>,
    #[arg(long, env = "PANOPTES_NATS_CERT_KEY", value_name = "FILE")]
    pub nats_cert_key: Option<PathBuf>,
}

impl NatsArgs {
    /// Only a URL, as tests and embedders build it.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// The credentials the flags give, if any.
    fn auth(&self) -> Option<AuthConfig> {
        let auth = AuthConfig {
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            credentials: self.nats_creds.clone(),
            nkey: self.nats_nkey.clone(),
        };
        let any = auth.user.is_some()
            || auth.password.is_some()
            || auth.token.is_some()
            || auth.credentials.is_some()
            || auth.nkey.is_some();
        any.then_some(auth)
    }

    fn tls(&self) -> Option<TlsConfig> {
        let tls = TlsConfig {
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone(),
            key: self.nats_cert_key.clone(),
        };
        (tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some()).then_some(tls)
    }

    /// The settings to connect with: the topology's, overridden by the flags given. Relative
    /// paths in flags are the caller's (current directory); make them absolute so they keep
    /// meaning that when the topology's base directory is used for the rest.
    pub fn settings(&self, topology: Option<&NatsConfig>) -> NatsConfig {
        let mut out = topology.cloned().unwrap_or_default();
        if let Some(url) = &self.url {
            out.url = Some(url.clone());
        }
        if let Some(mut auth) = self.auth() {
            auth.credentials = auth.credentials.map(absolute);
            auth.nkey = auth.nkey.map(absolute);
            out.auth = Some(auth);
        }
        if let Some(mut tls) = self.tls() {
            tls.ca = tls.ca.map(absolute);
            tls.cert = tls.cert.map(absolute);
            tls.key = tls.key.map(absolute);
            out.tls = Some(tls);
        }
        out
    }

    /// The URL to use for a command that joins a server: the flag, else [`DEFAULT_URL`].
    pub fn url_or_default(&self) -> String {
        self.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned())
    }

    /// Connects with the flags alone (commands that run no topology).
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        crate::connect_with(&self.url_or_default(), &self.settings(None), Path::new(".")).await
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        return p;
    }
    std::env::current_dir().map_or(p.clone(), |d| d.join(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        nats: NatsArgs,
    }

    #[test]
    fn flags_replace_the_topology_sections_they_name() {
        let topology = NatsConfig {
            url: Some("nats://a:4222".into()),
            auth: Some(AuthConfig {
                token: Some("t".into()),
                ..AuthConfig::default()
            }),
            tls: Some(TlsConfig {
                ca: Some("ca.pem".into()),
                ..TlsConfig::default()
            }),
        };
        let cmd =
            Cmd::try_parse_from(["x", "--nats-user", "u", "--nats-password", "p"]).expect("parse");
        let s = cmd.nats.settings(Some(&topology));
        assert_eq!(s.url.as_deref(), Some("nats://a:4222"));
        let auth = s.auth.expect("auth");
        assert_eq!(
            (auth.user.as_deref(), auth.password.as_deref(), auth.token),
            (Some("u"), Some("p"), None)
        );
        assert_eq!(
            s.tls.and_then(|t| t.ca),
            Some(PathBuf::from("ca.pem")),
            "TLS untouched"
        );
        let cmd = Cmd::try_parse_from(["x", "--nats", "tls://b:1", "--nats-ca", "/x/ca.pem"])
            .expect("parse");
        let s = cmd.nats.settings(Some(&topology));
        assert_eq!(s.url.as_deref(), Some("tls://b:1"));
        assert!(s.auth.and_then(|a| a.token).is_some(), "auth untouched");
        assert_eq!(s.tls.and_then(|t| t.ca), Some(PathBuf::from("/x/ca.pem")));
    }
}
