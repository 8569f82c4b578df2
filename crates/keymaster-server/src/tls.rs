//! HTTPS: the certificate and key of `tls_cert` and `tls_key`, and their reload.
//!
//! The accept loop (`startup`) asks [`Tls::acceptor`] for the configuration of the moment at
//! each new connection; [`Tls::reload`] (on `SIGHUP`) reads the files again and, only when both
//! parse and match, makes them the configuration of the connections accepted from then on.
//! Connections already open keep the session they have, so a reload drops none; a reload that
//! fails keeps the old certificate. HTTP/1.1 only, like the plain listener.
//!
//! Not here: the choice between TLS and a proxy in front (docs/operations.md), and client
//! certificates (none are asked for).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key could not be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// The TLS configuration of the listener, swapped as a whole on reload.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: watch::Sender<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the certificate chain `cert` and private key `key` (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: watch::Sender::new(config),
        })
    }

    /// Reads both files again; on success new connections use them, on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        self.current.send_replace(config);
        Ok(())
    }

    /// The acceptor for the next connection, with the configuration of the moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.borrow().clone())
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{}: no certificate in it",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| TlsError(format!("{}: no usable private key: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            TlsError(format!(
                "{} and {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
