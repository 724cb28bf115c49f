//! TLS on keygate's own listener (config `tls`), so nothing has to stand in front of it: the API,
//! the console and the gateway are served over one certificate, HTTP/2 offered by ALPN next to
//! HTTP/1.1.
//!
//! The certificate is read again on SIGHUP. A connection takes the configuration current when it
//! is accepted and keeps it, so a swap reaches new connections while open ones finish on the old
//! certificate; a file that cannot be used leaves the old one in place. The private key is never
//! logged, and an error about it names the file, never its contents.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// ALPN names, HTTP/2 preferred.
pub const H2: &[u8] = b"h2";
const HTTP_1_1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_path `{path}`: {why}")]
    Certificate { path: String, why: String },
    #[error("tls.key_path `{path}`: {why}")]
    Key { path: String, why: String },
    #[error("the key in tls.key_path does not go with the certificate in tls.cert_path: {0}")]
    Mismatch(String),
}

/// The certificate and key being served; replaced whole on reload.
pub struct Tls {
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the configured files; `None` when TLS is not configured.
    pub fn load(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert_path, &config.key_path) else {
            return Ok(None);
        };
        Ok(Some(Self {
            current: RwLock::new(Arc::new(server_config(cert, key)?)),
        }))
    }

    /// Reads the files again; on failure the certificate served so far stays.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let (Some(cert), Some(key)) = (&config.cert_path, &config.key_path) else {
            return Ok(());
        };
        let fresh = Arc::new(server_config(cert, key)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// What a connection accepted now is served with.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn server_config(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, TlsError> {
    let certificate = |why: String| TlsError::Certificate {
        path: cert_path.display().to_string(),
        why,
    };
    let key_error = |why: String| TlsError::Key {
        path: key_path.display().to_string(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| certificate(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(certificate("holds no PEM certificate".into()));
    }
    // The parse error of a key file could quote it: only its kind is said.
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        key_error(match e {
            rustls_pki_types::pem::Error::Io(io) => io.to_string(),
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into()
            }
            _ => "is not a readable PEM private key".into(),
        })
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![H2.to_vec(), HTTP_1_1.to_vec()];
    Ok(config)
}
