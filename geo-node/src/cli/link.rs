//! How a secondary reaches its primary and keeps its own state: the flags `secondary` and
//! `backfill` share, and the one way both open what they name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use geo_diesel::db::DbPool;
use geo_diesel::geo_core::blob_store::LocalBlobStore;

use super::{DatabaseUrl, SecretArg};
use crate::auth::Credentials;
use crate::client::{HttpConfig, HttpSource};

/// The primary, the secondary's tracking database and blob directory, and its key.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct LinkArgs {
    /// The primary's base URL.
    #[arg(long, env = "GEO_PRIMARY_URL")]
    pub primary: String,
    /// The tracking database (SQLite path or postgres://…).
    #[arg(long, env = "GEO_TRACKING_DATABASE_URL")]
    pub database_url: DatabaseUrl,
    /// The secondary's blob store directory.
    #[arg(long, env = "GEO_BLOB_DIR")]
    pub blob_dir: PathBuf,
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

    /// The HTTP source reading the primary with `creds`.
    pub fn source(&self, creds: Credentials) -> HttpSource {
        let mut http = HttpConfig::new(&self.primary, creds);
        http.connect_timeout = Duration::from_secs(self.connect_timeout_secs.max(1));
        http.read_timeout = self.read_timeout();
        HttpSource::new(http)
    }

    /// The tracking database, migrated, with `pool` connections.
    pub fn tracking(&self, pool: u32) -> Result<DbPool> {
        super::open_secondary_db(&self.database_url, pool)
    }

    /// The blob store.
    pub fn store(&self) -> Result<Arc<LocalBlobStore>> {
        Ok(Arc::new(LocalBlobStore::new(&self.blob_dir).with_context(
            || format!("opening the blob store {}", self.blob_dir.display()),
        )?))
    }
}
