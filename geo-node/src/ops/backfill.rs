//! `backfill`: one full backfill sweep of every enabled type against the primary, run in the
//! foreground with the connection flags of `secondary`. Its use is the operator's confirmation
//! of a sweep the mass-removal guard refused: with `--allow-mass-removal` the sweep removes the
//! orphans whatever their share. Without it, it runs under the guard like the running
//! secondary's own backfill and exits non-zero when a sweep is refused.
//!
//! The running secondary (on the same tracking database) needs no restart: its next sweep finds
//! nothing left to remove and its refusal clears. A halted secondary (another primary identity,
//! or ids gone backwards) is not backfilled: `secondary --reconcile` is its way back.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use geo_diesel::geo_core::blob_store::LocalBlobStore;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::secondary::{Secondary, SecondaryConfig};

use crate::auth::Credentials;
use crate::client::{HttpConfig, HttpSource};

/// `backfill`.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct BackfillArgs {
    /// The primary's base URL.
    #[arg(long, env = "GEO_PRIMARY_URL")]
    pub primary: String,
    /// The secondary's tracking database (SQLite path or postgres://…).
    #[arg(long, env = "GEO_TRACKING_DATABASE_URL")]
    pub database_url: String,
    /// The secondary's blob store directory.
    #[arg(long, env = "GEO_BLOB_DIR")]
    pub blob_dir: std::path::PathBuf,
    /// This secondary's access key.
    #[arg(long, env = "GEO_ACCESS_KEY")]
    pub access_key: String,
    /// This secondary's secret (prefer the environment variable).
    #[arg(long, env = "GEO_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Remove the orphans even when they are more than the allowed share of a type's rows
    /// (the operator's confirmation of a refused sweep).
    #[arg(long)]
    pub allow_mass_removal: bool,
    /// TCP connect timeout to the primary, in seconds.
    #[arg(long, env = "GEO_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub connect_timeout_secs: u64,
    /// Longest wait for an answer, in seconds.
    #[arg(long, env = "GEO_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub read_timeout_secs: u64,
}

/// Runs `backfill`.
pub fn run_backfill(args: BackfillArgs) -> Result<ExitCode> {
    let creds = Credentials::new(&args.access_key, &args.secret)
        .context("--access-key/--secret (GEO_ACCESS_KEY/GEO_SECRET)")?;
    let tracking = crate::cli::open_secondary_db(&args.database_url, 4)?;
    let store = Arc::new(
        LocalBlobStore::new(&args.blob_dir)
            .with_context(|| format!("opening the blob store {}", args.blob_dir.display()))?,
    );
    let mut http = HttpConfig::new(&args.primary, creds);
    http.connect_timeout = Duration::from_secs(args.connect_timeout_secs.max(1));
    http.read_timeout = Duration::from_secs(args.read_timeout_secs.max(1));
    let config = SecondaryConfig::default().allow_mass_removal(args.allow_mass_removal);
    let secondary = Secondary::new(
        tracking,
        Arc::new(HttpSource::new(http)),
        store,
        Env::system(),
        config,
    );
    if let Some(halt) = secondary.halt()? {
        bail!("{halt}");
    }
    let (created, removed) = secondary
        .backfill_all()
        .context("backfilling from the primary")?;
    if let Some(halt) = secondary.halt()? {
        bail!("{halt}");
    }
    println!("backfill: {created} rows created, {removed} removed");
    let refused = secondary.mass_removal_refusals();
    for r in &refused {
        println!("{r}");
    }
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
