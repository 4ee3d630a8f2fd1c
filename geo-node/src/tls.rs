//! HTTPS on the server side: a site's certificate chain and private key (PEM files) turned into
//! a rustls [`ServerConfig`](rustls::ServerConfig) with the *ring* crypto provider, HTTP/1.1
//! only (ALPN `http/1.1`).
//!
//! Every failure names the file it comes from: a file that cannot be read, one without a
//! certificate or a key, a malformed PEM block, or a key that does not belong to the
//! certificate. The client side (a secondary reaching an `https://` primary) builds its own
//! configuration in [`crate::client`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol a site's server speaks.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read or holds a malformed PEM block.
    #[error("reading the TLS certificate {path}: {message}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("the TLS certificate file {path} holds no PEM CERTIFICATE block")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file could not be read, holds a malformed PEM block, or no private key.
    #[error("reading the TLS private key {path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key is not the certificate's, or rustls refused the pair.
    #[error("the TLS private key {key} does not match the certificate {cert}: {source}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

/// A server's TLS configuration, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads a certificate chain (`cert`: PEM, the site's certificate first, then its
    /// intermediates) and its private key (`key`: PEM, PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_chain(cert)?;
        let private = read_key(key)?;
        let config = server_config(chain, private).map_err(|source| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// Wraps a configuration built elsewhere (its ALPN list is used as it is).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        ServerTls { config }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    /// An acceptor for incoming connections.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// The certificates of a PEM file, in order.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::Certificate {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_message(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_message(e)))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The first private key of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM PRIVATE KEY block (PKCS#8, RSA or EC)".to_owned()
            }
            e => pem_message(e),
        },
    })
}

fn pem_message(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        e => format!("malformed PEM: {e}"),
    }
}

/// TLS 1.2 and 1.3 with ring's safe defaults, no client certificates, HTTP/1.1.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}
