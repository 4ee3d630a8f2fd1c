//! How a secondary reaches its primary and keeps its own state: the flags `secondary` and
//! `backfill` share, and the one way both open what they name; and [`ClientTlsArgs`], the TLS
//! flags of every command that reaches another site (`status` too).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use geo_diesel::db::DbPool;

use super::{DatabaseUrl, SecretArg, StoreArgs};
use crate::auth::Credentials;
use crate::client::{HttpConfig, HttpSource};

/// How a command verifies the site it reaches: `https://` against the system roots or
/// `--ca-file`; plain `http://` only to loopback unless `--allow-insecure-http`.
#[derive(Debug, Clone, Default, clap::Args)]
#[non_exhaustive]
pub struct ClientTlsArgs {
    /// PEM file of the CA certificates the site's certificate is verified against, instead of
    /// the system roots.
    #[arg(long, env = "GEO_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Allow plain http:// to a host that is not loopback (tokens and content then cross the
    /// network unencrypted).
    #[arg(long, env = "GEO_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
}

impl ClientTlsArgs {
    /// Applies the flags to `config`.
    pub fn apply(&self, mut config: HttpConfig) -> HttpConfig {
        config.ca_file.clone_from(&self.ca_file);
        config.allow_insecure_http = self.allow_insecure_http;
        config
    }
}

/// The primary, the secondary's tracking database and blob directory, and its key.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct LinkArgs {
    /// The primary's base URL (`https://…`; plain `http://` only to loopback unless
    /// `--allow-insecure-http`).
    #[arg(long, env = "GEO_PRIMARY_URL")]
    pub primary: String,
    /// The tracking database (SQLite path or postgres://…).
    #[arg(long, env = "GEO_TRACKING_DATABASE_URL")]
    pub database_url: DatabaseUrl,
    /// The secondary's blob store (`--blob-store` or `--blob-dir`).
    #[command(flatten)]
    pub store: StoreArgs,
    /// This secondary's access key.
    #[arg(long, env = "GEO_ACCESS_KEY")]
    pub access_key: String,
    /// This secondary's secret (prefer the environment variable).
    #[arg(long, env = "GEO_SECRET", hide_env_values = true)]
    pub secret: SecretArg,
    /// TCP connect timeout to the primary, in seconds.
    #[arg(long, env = "GEO_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub connect_timeout_secs: u64,
    /// Longest wait for an answer, or for each piece of a blob, in seconds.
    #[arg(long, env = "GEO_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub read_timeout_secs: u64,
    /// How the primary is verified.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

impl LinkArgs {
    /// The key pair, validated.
    pub fn credentials(&self) -> Result<Credentials> {
        Credentials::new(&self.access_key, self.secret.expose())
            .context("--access-key/--secret (GEO_ACCESS_KEY/GEO_SECRET)")
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_secs.max(1))
    }

    /// The HTTP configuration of the link to the primary with `creds`.
    pub fn http_config(&self, creds: Credentials) -> HttpConfig {
        let mut http = self.tls.apply(HttpConfig::new(&self.primary, creds));
        http.connect_timeout = Duration::from_secs(self.connect_timeout_secs.max(1));
        http.read_timeout = self.read_timeout();
        http
    }

    /// The HTTP source reading the primary with `creds`; refused when the TLS flags are
    /// (plain HTTP to a host that is not loopback, an unreadable CA file).
    pub fn source(&self, creds: Credentials) -> Result<HttpSource> {
        HttpSource::try_new(self.http_config(creds))
            .with_context(|| format!("--primary {}", self.primary))
    }

    /// The tracking database, migrated, with `pool` connections.
    pub fn tracking(&self, pool: u32) -> Result<DbPool> {
        super::open_secondary_db(&self.database_url, pool)
    }

    /// The blob store.
    pub fn store(&self) -> Result<crate::store::SiteStore> {
        self.store.open()
    }
}
