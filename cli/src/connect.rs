//! Connecting to NATS the way a topology's `nats` section says: credentials (user + password,
//! token, a `.creds` file or an nkey seed file) and TLS (extra CA roots, a client certificate
//! for mutual TLS). Every connection also gets the small capacities frame traffic needs.
//!
//! Files are read and checked here, before async-nats sees them, because its own errors for a
//! missing or malformed file do not say which file was wrong.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use async_nats::{ConnectErrorKind, ConnectOptions};
use panoptes_topology::{AuthConfig, NatsConfig, TlsConfig};

/// Connects to NATS without credentials or TLS beyond what the URL itself asks for.
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    connect_with(url, &NatsConfig::default(), Path::new(".")).await
}

/// Connects to NATS at `url` with the `auth` and `tls` settings of `nats`; relative file paths
/// in them resolve against `base_dir` (the topology file's directory). `nats.url` is ignored:
/// the caller decides the URL, which may be an override.
///
/// TLS is required when `nats.tls` is given or the URL uses `tls://`, so a server that does not
/// offer TLS is refused instead of being talked to in plain text.
pub async fn connect_with(
    url: &str,
    nats: &NatsConfig,
    base_dir: &Path,
) -> anyhow::Result<async_nats::Client> {
    // Capacities count messages, not bytes: keep them small for multi-megabyte frames so a
    // burst cannot queue seconds of video (DESIGN.md §10).
    connect_buffered(url, nats, base_dir, FRAME_SUBSCRIPTION_CAPACITY).await
}

/// Messages a subscription of [`connect_with`]'s client buffers before the client drops the
/// next ones (async-nats' slow-consumer rule).
pub const FRAME_SUBSCRIPTION_CAPACITY: usize = 64;

/// [`connect_with`] for a client whose subscriptions carry small messages in bursts (results,
/// analytics events): each subscription buffers up to `subscription_capacity` messages before
/// the client drops any.
pub async fn connect_buffered(
    url: &str,
    nats: &NatsConfig,
    base_dir: &Path,
    subscription_capacity: usize,
) -> anyhow::Result<async_nats::Client> {
    let mut opts = ConnectOptions::new()
        .name("panoptes")
        .client_capacity(64)
        .subscription_capacity(subscription_capacity.max(1))
        // async-nats doubles its reconnect delay up to 4 s; a worker back a few seconds late
        // after a server restart delays every camera it serves, so retry at least every second.
        .reconnect_delay_callback(|attempts| {
            std::time::Duration::from_millis(100)
                .saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX))
                .min(std::time::Duration::from_secs(1))
        });
    // The first `Connected` is the initial connection; every later one is a reconnect.
    let connected_before = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    opts = opts.event_callback(move |event| {
        let connected_before = connected_before.clone();
        async move {
            use panoptes_contracts::meter;
            match event {
                async_nats::Event::Connected => {
                    if connected_before.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        metrics::counter!(meter::NATS_RECONNECTS).increment(1);
                        tracing::info!("reconnected to NATS");
                    }
                }
                async_nats::Event::Disconnected => {
                    metrics::counter!(meter::NATS_DISCONNECTS).increment(1);
                    tracing::warn!("disconnected from NATS");
                }
                other => tracing::debug!(event = %other, "NATS connection event"),
            }
        }
    });
    if let Some(auth) = &nats.auth {
        opts = with_auth(opts, auth, base_dir).await?;
    }
    if let Some(tls) = &nats.tls {
        opts = with_tls(opts, tls, base_dir)?;
    }
    if nats.tls.is_some() || uses_tls_scheme(url) {
        opts = opts.require_tls(true);
    }
    opts.connect(url).await.map_err(|e| {
        let cause = match e.kind() {
            ConnectErrorKind::AuthorizationViolation => {
                "authorization failed: the server refused the credentials (nats.auth)"
            }
            ConnectErrorKind::Authentication => {
                "authorization failed: could not sign the server's challenge with the nkey or credentials"
            }
            ConnectErrorKind::Tls => "TLS setup or handshake failed (nats.tls)",
            _ => "connection failed",
        };
        anyhow::Error::new(e).context(format!("cannot connect to NATS at {url}: {cause}"))
    })
}

/// [`connect_with`], tried again with exponential back-off (jittered, up to
/// [`RETRY_MAX_DELAY`] apart, for as long as it takes) while the server cannot be reached, so a
/// worker or ingest node started before NATS joins once it is up. Each retry is logged. Refusals
/// that waiting cannot fix (credentials, TLS, a malformed URL, an unreadable file) are returned
/// at once.
pub async fn connect_retrying(
    url: &str,
    nats: &NatsConfig,
    base_dir: &Path,
) -> anyhow::Result<async_nats::Client> {
    use backon::BackoffBuilder as _;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN_DELAY)
        .with_max_delay(RETRY_MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build();
    let mut attempt = 1u32;
    loop {
        match connect_with(url, nats, base_dir).await {
            Ok(client) => {
                if attempt > 1 {
                    tracing::info!(url, attempt, "connected to NATS");
                }
                return Ok(client);
            }
            Err(e) if worth_retrying(&e) => {
                let delay = delays.next().unwrap_or(RETRY_MAX_DELAY);
                tracing::warn!(url, attempt, retry_in = ?delay, error = %format!("{e:#}"), "NATS is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                attempt = attempt.saturating_add(1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// First delay of [`connect_retrying`]; it doubles (plus jitter) up to [`RETRY_MAX_DELAY`].
pub const RETRY_MIN_DELAY: std::time::Duration = std::time::Duration::from_millis(200);
/// Longest delay between two attempts of [`connect_retrying`].
pub const RETRY_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a [`connect_with`] error may go away by itself: the server is not up or not
/// reachable yet. Errors raised before connecting (files, settings) carry no connect error.
fn worth_retrying(e: &anyhow::Error) -> bool {
    e.downcast_ref::<async_nats::ConnectError>()
        .is_some_and(|e| {
            matches!(
                e.kind(),
                ConnectErrorKind::Io
                    | ConnectErrorKind::TimedOut
                    | ConnectErrorKind::Dns
                    | ConnectErrorKind::MaxReconnects
            )
        })
}

/// Whether any of the (comma-separated) server URLs uses the `tls://` scheme.
fn uses_tls_scheme(url: &str) -> bool {
    url.split(',').any(|u| {
        u.trim()
            .get(..6)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("tls://"))
    })
}

fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

async fn with_auth(
    opts: ConnectOptions,
    auth: &AuthConfig,
    base_dir: &Path,
) -> anyhow::Result<ConnectOptions> {
    // The topology check allows exactly one method; this only guards against a hand-built
    // config, so the message names the keys rather than a location.
    let methods = [
        auth.user.is_some() || auth.password.is_some(),
        auth.token.is_some(),
        auth.credentials.is_some(),
        auth.nkey.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        bail!("nats.auth takes one method: user + password, token, credentials or nkey");
    }
    if let Some(token) = &auth.token {
        return Ok(opts.token(token.clone()));
    }
    if let Some(creds) = &auth.credentials {
        let path = resolve(base_dir, creds);
        // Read here, bounded and without blocking, rather than by async-nats's unbounded read.
        let creds = panoptes_files::read_to_string_bounded(&path, panoptes_files::KEY_MAX)
            .map_err(|e| anyhow::anyhow!("cannot use NATS credentials file {e}"))?;
        return opts
            .credentials(&creds)
            .with_context(|| format!("cannot use NATS credentials file {}", path.display()));
    }
    if let Some(nkey) = &auth.nkey {
        let path = resolve(base_dir, nkey);
        let seed = read_nkey_seed(&path)?;
        return Ok(opts.nkey(seed));
    }
    match (&auth.user, &auth.password) {
        (Some(user), Some(password)) => Ok(opts.user_and_password(user.clone(), password.clone())),
        (Some(_), None) => bail!("nats.auth.user needs a password"),
        (None, Some(_)) => bail!("nats.auth.password needs a user"),
        (None, None) => {
            bail!("nats.auth is empty: use user + password, token, credentials or nkey")
        }
    }
}

/// Reads an nkey seed file (the seed alone, as `nk -gen user` writes it) and checks that it
/// holds a usable seed. The seed itself never appears in an error.
fn read_nkey_seed(path: &Path) -> anyhow::Result<String> {
    let text = panoptes_files::read_to_string_bounded(path, panoptes_files::KEY_MAX)
        .map_err(|e| anyhow::anyhow!("cannot read NATS nkey seed file {e}"))?;
    // Tools such as nsc write comment lines around the seed; the seed is the line starting `S`.
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('S'))
        .with_context(|| {
            format!(
                "NATS nkey seed file {} holds no seed (a line starting with `S`)",
                path.display()
            )
        })?;
    nkeys::KeyPair::from_seed(seed).map_err(|e| {
        anyhow::anyhow!(
            "NATS nkey seed file {} holds an invalid seed: {e}",
            path.display()
        )
    })?;
    Ok(seed.to_owned())
}

fn with_tls(
    opts: ConnectOptions,
    tls: &TlsConfig,
    base_dir: &Path,
) -> anyhow::Result<ConnectOptions> {
    let mut opts = opts;
    if let Some(ca) = &tls.ca {
        let path = resolve(base_dir, ca);
        check_pem(&path, "CA", Pem::Certificates)?;
        opts = opts.add_root_certificates(path);
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (resolve(base_dir, cert), resolve(base_dir, key));
            check_pem(&cert, "client certificate", Pem::Certificates)?;
            check_pem(&key, "client key", Pem::PrivateKey)?;
            opts = opts.add_client_certificate(cert, key);
        }
        (Some(_), None) => bail!("nats.tls.cert needs a key"),
        (None, Some(_)) => bail!("nats.tls.key needs a cert"),
        (None, None) => {}
    }
    Ok(opts)
}

/// What a TLS file must hold, as async-nats will read it (rustls-pki-types' PEM parser).
#[derive(Clone, Copy)]
enum Pem {
    /// One or more `CERTIFICATE` blocks, all of them well-formed.
    Certificates,
    /// A PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key block.
    PrivateKey,
}

impl Pem {
    /// The PEM label named in errors.
    fn label(self) -> &'static str {
        match self {
            Pem::Certificates => "CERTIFICATE",
            Pem::PrivateKey => "PRIVATE KEY",
        }
    }
}

/// Checks that `path` is readable and holds what `kind` says, parsed by the same PEM parser
/// async-nats uses later, so a file it would refuse is refused here with the file named.
fn check_pem(path: &Path, what: &str, kind: Pem) -> anyhow::Result<()> {
    use async_nats::rustls::pki_types::pem::{self, PemObject as _};
    use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    // A CA bundle holds every root a system trusts: a few hundred KiB.
    const PEM_MAX: u64 = 4 << 20;
    let bytes = panoptes_files::read_bounded(path, PEM_MAX)
        .map_err(|e| anyhow::anyhow!("cannot read TLS {what} file {e}"))?;
    let parsed = match kind {
        Pem::Certificates => CertificateDer::pem_slice_iter(&bytes)
            .try_fold(0usize, |n, cert| cert.map(|_| n + 1))
            .and_then(|n| {
                if n == 0 {
                    Err(pem::Error::NoItemsFound)
                } else {
                    Ok(())
                }
            }),
        Pem::PrivateKey => PrivateKeyDer::from_pem_slice(&bytes).map(drop),
    };
    let label = kind.label();
    match parsed {
        Ok(()) => Ok(()),
        Err(pem::Error::NoItemsFound) => bail!(
            "TLS {what} file {} holds no PEM `{label}` block",
            path.display()
        ),
        // Described by kind only: the parser's own message may quote a line of the file, and a
        // key file's lines are secret.
        Err(e) => bail!(
            "TLS {what} file {} is not valid PEM: {}",
            path.display(),
            pem_problem(&e)
        ),
    }
}

/// What is wrong with a PEM file, without quoting it.
fn pem_problem(e: &async_nats::rustls::pki_types::pem::Error) -> &'static str {
    use async_nats::rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a block has no END line",
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        Error::Base64Decode(_) => "a block is not valid base64",
        Error::SectionTooLarge => "a block is too large",
        _ => "it cannot be parsed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
    use panoptes_tests::ServerControls as _;

    fn server(extra_config: String) -> NatsServer {
        let opts = NatsServerOptions {
            jetstream: false,
            extra_config,
            ..NatsServerOptions::default()
        };
        NatsServer::start(&opts).expect("start nats-server")
    }

    fn auth(a: AuthConfig) -> NatsConfig {
        NatsConfig {
            auth: Some(a),
            ..NatsConfig::default()
        }
    }

    /// Connects and proves the server accepted us with a round trip.
    async fn accepted(url: &str, nats: &NatsConfig, base_dir: &Path) {
        let client = match connect_with(url, nats, base_dir).await {
            Ok(c) => c,
            Err(e) => panic!("connect failed: {e:#}"),
        };
        client.flush().await.expect("flush");
    }

    async fn refused(url: &str, nats: &NatsConfig, base_dir: &Path) -> String {
        match connect_with(url, nats, base_dir).await {
            Ok(_) => panic!("connect succeeded but should have been refused"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[tokio::test]
    async fn token_auth() {
        let server = server("authorization { token: \"s3cret\" }".to_owned());
        let here = Path::new(".");
        let token = |t: &str| {
            auth(AuthConfig {
                token: Some(t.to_owned()),
                ..AuthConfig::default()
            })
        };
        accepted(server.url(), &token("s3cret"), here).await;
        let wrong = refused(server.url(), &token("guess"), here).await;
        assert!(wrong.contains("authorization failed"), "{wrong}");
        let none = refused(server.url(), &NatsConfig::default(), here).await;
        assert!(none.contains("authorization failed"), "{none}");
    }

    #[tokio::test]
    async fn user_and_password_auth() {
        let server = server("authorization { user: cam, password: \"p w\" }".to_owned());
        let here = Path::new(".");
        let login = |user: &str, password: &str| {
            auth(AuthConfig {
                user: Some(user.to_owned()),
                password: Some(password.to_owned()),
                ..AuthConfig::default()
            })
        };
        accepted(server.url(), &login("cam", "p w"), here).await;
        let wrong = refused(server.url(), &login("cam", "pw"), here).await;
        assert!(wrong.contains("authorization failed"), "{wrong}");
        assert!(wrong.contains(server.url()), "{wrong}");
    }

    #[tokio::test]
    async fn nkey_auth_reads_the_seed_file_relative_to_the_topology() {
        let user = nkeys::KeyPair::new_user();
        let server = server(format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}",
            user.public_key()
        ));
        let dir = tempfile::tempdir().expect("temp dir");
        let seed = user.seed().expect("seed");
        std::fs::write(dir.path().join("cam.nk"), format!("{seed}\n")).expect("write seed");
        let other = nkeys::KeyPair::new_user().seed().expect("seed");
        std::fs::write(dir.path().join("other.nk"), other).expect("write seed");
        std::fs::write(dir.path().join("junk.nk"), "SUnot-a-seed\n").expect("write junk");
        let nkey = |file: &str| {
            auth(AuthConfig {
                nkey: Some(PathBuf::from(file)),
                ..AuthConfig::default()
            })
        };
        accepted(server.url(), &nkey("cam.nk"), dir.path()).await;
        let wrong = refused(server.url(), &nkey("other.nk"), dir.path()).await;
        assert!(wrong.contains("authorization failed"), "{wrong}");
        let junk = refused(server.url(), &nkey("junk.nk"), dir.path()).await;
        assert!(
            junk.contains("junk.nk") && junk.contains("invalid seed") && !junk.contains("SUnot"),
            "{junk}"
        );
        let missing = refused(server.url(), &nkey("absent.nk"), dir.path()).await;
        assert!(
            missing.contains(&*dir.path().join("absent.nk").to_string_lossy()),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn a_missing_credentials_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let creds = auth(AuthConfig {
            credentials: Some(PathBuf::from("ops.creds")),
            ..AuthConfig::default()
        });
        // Fails before any connection is tried, so no server is needed.
        let e = refused("nats://127.0.0.1:1", &creds, dir.path()).await;
        assert!(
            e.contains("credentials file") && e.contains("ops.creds"),
            "{e}"
        );
    }

    /// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
    fn write_pki(dir: &Path) {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "panoptes test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).expect("sign");
            std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write cert");
            std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem())
                .expect("write key");
        };
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write CA");
        leaf(
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(
            vec!["panoptes".to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
    }

    #[test]
    fn tls_files_are_parsed_as_async_nats_will_and_never_quoted() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_pki(dir.path());
        let path = |name: &str| dir.path().join(name);
        check_pem(&path("ca.pem"), "CA", Pem::Certificates).expect("CA");
        check_pem(&path("client.pem"), "client certificate", Pem::Certificates).expect("cert");
        check_pem(&path("client-key.pem"), "client key", Pem::PrivateKey).expect("key");
        let err = |name: &str, kind: Pem| {
            check_pem(&path(name), "x", kind)
                .expect_err("refused")
                .to_string()
        };
        let e = err("client-key.pem", Pem::Certificates);
        assert!(
            e.contains("client-key.pem") && e.contains("no PEM `CERTIFICATE` block"),
            "{e}"
        );
        let e = err("client.pem", Pem::PrivateKey);
        assert!(e.contains("no PEM `PRIVATE KEY` block"), "{e}");
        // A key whose base64 is damaged: refused, named, and no line of it is repeated.
        let key = std::fs::read_to_string(path("client-key.pem")).expect("key");
        let secret = key.lines().nth(1).expect("a base64 line").to_owned();
        let damaged = key.replacen(&secret, &format!("!{}", &secret[1..]), 1);
        std::fs::write(path("damaged-key.pem"), damaged).expect("write");
        let e = err("damaged-key.pem", Pem::PrivateKey);
        assert!(
            e.contains("damaged-key.pem") && e.contains("not valid PEM"),
            "{e}"
        );
        assert!(!e.contains(&secret[1..]), "{e}");
        // A bundle whose second certificate is cut short fails as a whole, as it would later.
        let ca = std::fs::read_to_string(path("ca.pem")).expect("CA");
        let cut = format!("{ca}{}", &ca[..ca.len() / 2]);
        std::fs::write(path("cut.pem"), cut).expect("write");
        let e = err("cut.pem", Pem::Certificates);
        assert!(e.contains("cut.pem") && e.contains("no END line"), "{e}");
        assert!(err("missing.pem", Pem::Certificates).contains("cannot read TLS x file"));
    }

    #[tokio::test]
    async fn mutual_tls() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_pki(dir.path());
        let file = |name: &str| format!("{:?}", dir.path().join(name).display().to_string());
        let server = server(format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n}}",
            file("server.pem"),
            file("server-key.pem"),
            file("ca.pem")
        ));
        let tls = |ca: Option<&str>, client: bool| NatsConfig {
            tls: Some(TlsConfig {
                ca: ca.map(PathBuf::from),
                cert: client.then(|| PathBuf::from("client.pem")),
                key: client.then(|| PathBuf::from("client-key.pem")),
            }),
            ..NatsConfig::default()
        };
        accepted(server.url(), &tls(Some("ca.pem"), true), dir.path()).await;
        // The server's CA is not trusted by default.
        let untrusted = refused(server.url(), &tls(None, true), dir.path()).await;
        assert!(untrusted.contains("UnknownIssuer"), "{untrusted}");
        // `verify: true` demands a client certificate.
        refused(server.url(), &tls(Some("ca.pem"), false), dir.path()).await;
        // A key file in place of a certificate is caught before connecting, and named.
        let mut swapped = tls(Some("ca.pem"), true);
        if let Some(t) = &mut swapped.tls {
            t.cert = Some(PathBuf::from("client-key.pem"));
        }
        let e = refused(server.url(), &swapped, dir.path()).await;
        assert!(
            e.contains("client-key.pem") && e.contains("CERTIFICATE"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn tls_scheme_requires_tls() {
        // A plain server: a `tls://` URL must not fall back to plain text.
        let server = server(String::new());
        let url = server.url().replacen("nats://", "tls://", 1);
        assert!(url.starts_with("tls://"), "{url}");
        refused(&url, &NatsConfig::default(), Path::new(".")).await;
        accepted(server.url(), &NatsConfig::default(), Path::new(".")).await;
    }

    #[tokio::test]
    async fn retrying_joins_a_server_that_comes_up_later() {
        let mut server = server(String::new());
        let url = server.url().to_owned();
        // Its port is known, but nothing listens there yet.
        server.pause();
        let connecting = tokio::spawn(async move {
            connect_retrying(&url, &NatsConfig::default(), Path::new(".")).await
        });
        // Long enough for a few refused attempts; plain `connect_with` gives up after one.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(
            !connecting.is_finished(),
            "gave up while the server was down"
        );
        let server = tokio::task::spawn_blocking(move || server.resume().map(|()| server))
            .await
            .expect("join")
            .expect("resume");
        let client =
            match tokio::time::timeout(std::time::Duration::from_secs(60), connecting).await {
                Ok(joined) => joined.expect("join").expect("connected"),
                Err(_) => panic!("not connected to {} within 60 s of its start", server.url()),
            };
        client.flush().await.expect("flush");
    }

    #[tokio::test]
    async fn retrying_gives_up_at_once_on_refused_credentials() {
        let server = server("authorization { token: \"s3cret\" }".to_owned());
        let nats = NatsConfig::default();
        let attempt = connect_retrying(server.url(), &nats, Path::new("."));
        // Waiting cannot fix credentials: no retry, so no hang.
        match tokio::time::timeout(std::time::Duration::from_secs(60), attempt).await {
            Ok(Ok(_)) => panic!("connected without the token"),
            Ok(Err(e)) => assert!(format!("{e:#}").contains("authorization failed"), "{e:#}"),
            Err(_) => panic!("refused credentials were retried"),
        }
    }

    #[test]
    fn tls_scheme_detection() {
        assert!(uses_tls_scheme("TLS://a:4222"));
        assert!(uses_tls_scheme("nats://a:4222, tls://b:4222"));
        assert!(!uses_tls_scheme("nats://tls:4222"));
    }
}
