//! [`ServerArgs`]: how a site's server listens (HTTPS, `/metrics`, limits), shared by `primary`
//! and `secondary`.

use std::path::PathBuf;

use anyhow::Result;

use super::ServerTunables;
use crate::server::{NodeState, ServeOptions};
use crate::tls::ServerTls;

/// How a site's server listens: HTTPS, `/metrics` on its own address, and its limits (shared by
/// `primary` and `secondary`).
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct ServerArgs {
    /// Serve HTTPS only, with this certificate chain (PEM, the site's certificate first). Give
    /// --tls-key with it.
    #[arg(long, env = "GEO_TLS_CERT", value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC). Give --tls-cert with it.
    #[arg(long, env = "GEO_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve GET /metrics (plain HTTP, unauthenticated, for Prometheus) on this address, and
    /// not on the main listener. Without it, /metrics is on the main listener only when that
    /// listens on a loopback address.
    #[arg(long, env = "GEO_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Timeouts, the connection cap, the per-key limit and the status cache.
    #[command(flatten)]
    pub limits: ServerTunables,
}

impl ServerArgs {
    /// The server's options with `threads` workers; reads the TLS files (a bad file is an
    /// error naming it).
    pub fn serve_options(&self, threads: usize) -> Result<ServeOptions> {
        let mut options = self.limits.apply(ServeOptions::default().threads(threads));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.tls(ServerTls::from_pem_files(cert, key)?);
        }
        if let Some(addr) = &self.metrics_listen {
            options = options.metrics_listen(addr.clone());
        }
        Ok(options)
    }

    /// `state` with the per-key limit and the status cache of the flags.
    pub fn apply_state(&self, state: NodeState) -> NodeState {
        self.limits.apply_state(state)
    }
}
