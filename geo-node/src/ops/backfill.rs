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

use anyhow::{Context, Result, bail};
use geo_diesel::geo_core::clock::Env;
use geo_diesel::secondary::{Secondary, SecondaryConfig};

use crate::cli::{LinkArgs, SecondaryTunables, SelectiveArgs};

/// `backfill`.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct BackfillArgs {
    /// The primary, the tracking database, the blob directory and the key (as `secondary`).
    #[command(flatten)]
    pub link: LinkArgs,
    /// Remove the orphans even when they are more than the allowed share of a type's rows
    /// (the operator's confirmation of a refused sweep).
    #[arg(long)]
    pub allow_mass_removal: bool,
    /// Batch sizes and the share the guard allows (as `secondary`).
    #[command(flatten, next_help_heading = "Tunables")]
    pub tuning: SecondaryTunables,
    /// The selection to sweep for (as `secondary`): a sweep under a changed selection removes
    /// the deselected records, and `--allow-mass-removal` confirms that.
    #[command(flatten)]
    pub selective: SelectiveArgs,
}

/// Runs `backfill`.
pub fn run_backfill(args: BackfillArgs) -> Result<ExitCode> {
    let creds = args.link.credentials()?;
    let tracking = args.link.tracking(4)?;
    let store = args.link.store()?;
    let config = args
        .selective
        .apply(args.tuning.apply(SecondaryConfig::default()))
        .allow_mass_removal(args.allow_mass_removal);
    let secondary = Secondary::new(
        tracking,
        Arc::new(args.link.source(creds)?),
        store.shared(),
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
