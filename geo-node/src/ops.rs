//! The operator's CLI actions `resync`, `reverify`, `flags` and `backfill` (see
//! [`BackfillArgs`]), run against a site's database
//! on the same code paths as GraphQL ([`geo_diesel::admin`]). Mount [`OpsCommand`] with
//! `#[command(flatten)]` in the application's subcommand enum.
//!
//! The database's role comes from its migration ledger ([`admin::detect_role`]): a secondary's
//! tracking database gets the registry actions, the primary's database the checksum actions.
//! `--id N` acts on one record at once; `--failed` and `--all` record a durable bulk job
//! ([`admin::enqueue`]) and run it to the end in the foreground with a progress bar. A running
//! node's bulk worker may step the same job meanwhile: every batch still runs once.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use geo_diesel::DbPool;
use geo_diesel::admin::{
    self, AdminError, BulkAction, BulkFilter, FlagState, RecordFilter, RegistryFilter,
};
use geo_diesel::geo_core::{
    ReplicableDescriptor, ReplicationState, Role, VerificationState, find_replicable, replicables,
};
use geo_diesel::registry::{Action, Registry};

use crate::cli::DatabaseUrl;
mod backfill;

pub use backfill::BackfillArgs;

/// `resync`, `reverify`, `flags`: operator actions on a site's database, on the same code paths
/// as GraphQL.
#[derive(Debug, clap::Subcommand)]
pub enum OpsCommand {
    /// Download records again (secondary tracking database).
    Resync(ActionArgs),
    /// Verify records again (a secondary's registry, or the primary's checksums).
    Reverify(ActionArgs),
    /// List, enable or disable the replication feature flags `geo_<name>_replication` (primary
    /// database).
    Flags {
        /// What to do.
        #[command(subcommand)]
        action: FlagsAction,
    },
    /// One full backfill sweep of a secondary against its primary; with
    /// `--allow-mass-removal`, the operator's confirmation of a sweep the mass-removal guard
    /// refused.
    Backfill(Box<BackfillArgs>),
}

/// Which records `resync` / `reverify` act on.
#[derive(Debug, Clone, clap::Args)]
#[command(group(
    clap::ArgGroup::new("which").required(true).args(["id", "failed", "all"])
))]
pub struct ActionArgs {
    /// The replicable type, e.g. `widget`.
    #[arg(long = "type")]
    pub replicable: String,
    /// One record: its model record id (acts at once).
    #[arg(long)]
    pub id: Option<i64>,
    /// Every failed record (replication failed for `resync`, verification failed for
    /// `reverify`), as a bulk job run to the end.
    #[arg(long)]
    pub failed: bool,
    /// Every record, as a bulk job run to the end.
    #[arg(long)]
    pub all: bool,
    /// The site's database: a secondary's tracking database or the primary's (SQLite path or
    /// postgres://…).
    #[arg(long, env = "GEO_DATABASE_URL")]
    pub database_url: DatabaseUrl,
}

/// `flags list|enable|disable`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FlagsAction {
    /// Show every replicable's flag: on or off, and whether that is the stored value or the
    /// default.
    List {
        /// The database (SQLite path or postgres://…).
        #[arg(long, env = "GEO_DATABASE_URL")]
        database_url: DatabaseUrl,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Turn replication of a type on.
    Enable {
        /// `geo_<name>_replication` or the bare replicable name.
        name: String,
        /// The database (SQLite path or postgres://…).
        #[arg(long, env = "GEO_DATABASE_URL")]
        database_url: DatabaseUrl,
    },
    /// Turn replication of a type off.
    Disable {
        /// `geo_<name>_replication` or the bare replicable name.
        name: String,
        /// The database (SQLite path or postgres://…).
        #[arg(long, env = "GEO_DATABASE_URL")]
        database_url: DatabaseUrl,
    },
}

impl OpsCommand {
    /// Runs the command; prints what happened on stdout (progress on stderr).
    pub fn run(self) -> Result<ExitCode> {
        match self {
            OpsCommand::Resync(args) => act(Action::Resync, args),
            OpsCommand::Reverify(args) => act(Action::Reverify, args),
            OpsCommand::Flags { action } => run_flags(action),
            OpsCommand::Backfill(args) => backfill::run_backfill(*args),
        }
    }
}

fn replicable(name: &str) -> Result<&'static ReplicableDescriptor> {
    find_replicable(name).ok_or_else(|| {
        let known: Vec<&str> = replicables().iter().map(|d| d.name).collect();
        anyhow!(
            "unknown type {name:?}; known types: {}",
            if known.is_empty() {
                "none (no replicable is compiled in)".to_owned()
            } else {
                known.join(", ")
            }
        )
    })
}

/// Opens `url` and reads its role from the ledger.
fn open(url: &str) -> Result<(DbPool, Role)> {
    let db = DbPool::connect(url, 2).context("opening the database")?;
    let mut conn = db.get().context("connecting to the database")?;
    let role = admin::detect_role(&mut conn)?.ok_or_else(|| {
        anyhow!(
            "{url} has no Geo migrations: it is neither a primary's database nor a secondary's \
             tracking database (start the node on it once, or run the migrations)"
        )
    })?;
    Ok((db, role))
}

fn act(action: Action, args: ActionArgs) -> Result<ExitCode> {
    let d = replicable(&args.replicable)?;
    let (db, role) = open(&args.database_url)?;
    if action == Action::Resync && role == Role::Primary {
        bail!(
            "resync is for secondaries: {} is a primary's database",
            args.database_url
        );
    }
    if action == Action::Reverify && !d.verifies() {
        bail!("{} has no verification: nothing to reverify", d.name);
    }
    let mut conn = db.get()?;
    if let Some(id) = args.id {
        return act_on_one(&mut conn, role, d, action, id);
    }
    // A database migrated before `geo_bulk_updates` existed gets it now (idempotent).
    db.migrate(role).context("applying Geo's migrations")?;
    let filter = match (args.failed, action, role) {
        (false, _, _) => BulkFilter::default(),
        (true, Action::Resync, _) => BulkFilter {
            replication_state: Some(ReplicationState::Failed),
            ..BulkFilter::default()
        },
        (true, Action::Reverify, _) => BulkFilter {
            verification_state: Some(VerificationState::Failed),
            ..BulkFilter::default()
        },
    };
    let total = match role {
        Role::Secondary => Registry::of(d).count_matching(
            &mut conn,
            &RegistryFilter {
                replication_state: filter.replication_state,
                verification_state: filter.verification_state,
                ..RegistryFilter::default()
            },
        )?,
        Role::Primary => admin::count_records_matching(
            &mut conn,
            d,
            &RecordFilter {
                verification_state: filter.verification_state,
                ..RecordFilter::default()
            },
        )?,
    };
    let bulk = match action {
        Action::Resync => BulkAction::ResyncAll,
        Action::Reverify => BulkAction::ReverifyAll,
    };
    let job = admin::enqueue(&mut conn, role, d, bulk, filter)?;
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} rows ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("{} {}", verb(action), d.name));
    let done = admin::run_job_to_end(
        &mut conn,
        role,
        admin::batch_for(db.backend()),
        job,
        &mut |j| {
            bar.set_length(bar.length().unwrap_or(0).max(j.processed.max(0) as u64));
            bar.set_position(j.processed.max(0) as u64);
        },
    )?;
    bar.finish_and_clear();
    let what = match action {
        Action::Resync => "now pending",
        Action::Reverify => "now verification pending",
    };
    println!(
        "{} {}: {} rows looked at, {} {what} (bulk update {})",
        d.name,
        verb(action),
        done.processed,
        done.changed,
        done.id
    );
    Ok(ExitCode::SUCCESS)
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Resync => "resync",
        Action::Reverify => "reverify",
    }
}

fn act_on_one(
    conn: &mut geo_diesel::PooledConn,
    role: Role,
    d: &'static ReplicableDescriptor,
    action: Action,
    id: i64,
) -> Result<ExitCode> {
    let name = d.name;
    let mut out = std::io::stdout().lock();
    if role == Role::Primary {
        let Some(before) = admin::get_record(conn, d, id)? else {
            writeln!(out, "no such {name} record {id}")?;
            return Ok(ExitCode::FAILURE);
        };
        admin::reverify_record(conn, d, id)?;
        let was = before
            .verification_state
            .map_or("no verification state yet", VerificationState::as_str);
        writeln!(out, "{name} {id}: verification pending (was {was})")?;
        return Ok(ExitCode::SUCCESS);
    }
    let reg = Registry::of(d);
    let Some(before) = reg.get_by_model_id(conn, id)? else {
        writeln!(out, "no such {name} registry row for record {id}")?;
        return Ok(ExitCode::FAILURE);
    };
    let changed = match reg.act_on_registry_id(conn, before.id, action) {
        Ok(c) => c,
        Err(AdminError::BadArgument(m)) => bail!(m),
        Err(e) => return Err(e.into()),
    };
    match (action, changed) {
        (Action::Resync, true) => {
            writeln!(out, "{name} {id}: pending (was {})", before.state.as_str())?;
        }
        (Action::Resync, false) => {
            writeln!(
                out,
                "{name} {id} is being synced right now; nothing changed"
            )?;
        }
        (Action::Reverify, true) => writeln!(
            out,
            "{name} {id}: verification pending (was {})",
            before.verification_state.as_str()
        )?,
        (Action::Reverify, false) if before.state != ReplicationState::Synced => writeln!(
            out,
            "{name} {id} is {} (not synced); nothing to reverify",
            before.state.as_str()
        )?,
        (Action::Reverify, false) => {
            writeln!(
                out,
                "{name} {id} is being verified right now; nothing changed"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_flag(out: &mut impl Write, f: &FlagState) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<40} {:<8} {}",
        f.name,
        if f.enabled { "enabled" } else { "disabled" },
        if f.stored { "(stored)" } else { "(default)" }
    )
}

fn run_flags(action: FlagsAction) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match action {
        FlagsAction::List { database_url, json } => {
            let (db, _) = open(&database_url)?;
            let all = admin::flags(&mut db.get()?)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &all)?;
                writeln!(out)?;
            } else {
                for f in &all {
                    print_flag(&mut out, f)?;
                }
            }
        }
        FlagsAction::Enable { name, database_url } => set(&mut out, &name, &database_url, true)?,
        FlagsAction::Disable { name, database_url } => {
            set(&mut out, &name, &database_url, false)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn set(out: &mut impl Write, name: &str, url: &str, enabled: bool) -> Result<()> {
    let (db, _) = open(url)?;
    let f = admin::set_flag(&mut db.get()?, name, enabled)?;
    print_flag(out, &f)?;
    Ok(())
}
