//! TLS client settings of webhooks (https) and MQTT brokers (mqtts): rustls with ring (the
//! provider async-nats already uses), trusting the system's CA roots or a PEM file's.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Why TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] panoptes_files::FileError),
    #[error("{path}: no PEM certificate could be read ({reason})")]
    Pem { path: String, reason: String },
    #[error("no CA certificate found on this system (install ca-certificates, or give `ca`)")]
    NoRoots,
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting `ca` (a PEM file) or, without it, the system's roots.
pub(crate) fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let bytes = panoptes_files::read_bounded(path, panoptes_files::KEY_MAX)?;
            let certs: Result<Vec<CertificateDer<'static>>, _> =
                CertificateDer::pem_slice_iter(&bytes).collect();
            let pem_error = |reason: String| TlsError::Pem {
                path: path.display().to_string(),
                reason,
            };
            let certs = certs.map_err(|e| pem_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(pem_error("the file holds none".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| pem_error(e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root rustls cannot parse is skipped, as browsers do.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
