//! The node commands an application mounts in its own command line:
//! `primary`, `secondary`, `status`, `resync`, `reverify`, `flags` ([`crate::ops`]) and
//! `keys generate`.
//!
//! ```ignore
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     // … the application's own commands …
//!     #[command(flatten)]
//!     Node(geo_node::cli::NodeCommand),
//! }
//! // in main:
//! Command::Node(cmd) => cmd.run(&geo_node::cli::App::new().primary_setup(|c| Ok(my_app::create_schema(c)?))),
//! ```
//!
//! Every flag also reads an environment variable (shown by `--help`); secrets are best passed
//! that way (`GEO_SECRET`), since flags show in the process list. Logs go through `tracing`
//! (the application installs the subscriber; [`init_tracing`] is one).

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use geo_diesel::MigrationReport;
use geo_diesel::admin::BulkWorker;
use geo_diesel::db::{DbPool, PooledConn};
use geo_diesel::geo_core::Role;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};

use crate::server::{NodeState, PrimaryService, SecondaryService, ServerHandle};

mod keys;
mod link;
mod prune;
mod secret;
mod selective;
mod serve;
mod status;
mod store;
mod tunables;

pub use keys::{KeysAction, load_keys};
pub use link::{ClientTlsArgs, LinkArgs};
pub use prune::{Bound, PruneTunables};
pub use secret::{DatabaseUrl, SecretArg};
pub use selective::SelectiveArgs;
pub use serve::ServerArgs;
pub use status::{StatusArgs, render_status};
pub use store::StoreArgs;
pub use tunables::{PrimaryTunables, SecondaryTunables, ServerTunables, Span};

/// How often the bulk worker looks for a queued bulk update when it has none.
const BULK_IDLE: Duration = Duration::from_millis(250);

/// Error type of an application's setup hook.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Creates the application's own tables on the primary before Geo's migrations run.
pub type SetupHook = fn(&mut PooledConn) -> Result<(), BoxError>;

/// What the application contributes to the node commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct App {
    primary_setup: Option<SetupHook>,
}

impl App {
    /// No hooks.
    pub fn new() -> Self {
        App::default()
    }

    /// Runs `hook` on the primary database before Geo's primary migrations (which need the
    /// model tables).
    pub fn primary_setup(mut self, hook: SetupHook) -> Self {
        self.primary_setup = Some(hook);
        self
    }
}

/// The node commands. Mount with `#[command(flatten)]` in the application's subcommand enum.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Serve a primary site: the Geo HTTP API over its database and files, plus its
    /// verification workers.
    Primary(PrimaryArgs),
    /// Run a secondary site replicating from a primary over HTTP; serves its own status and
    /// metrics.
    Secondary(SecondaryArgs),
    /// Show a site's status (GET /api/geo/status).
    Status(StatusArgs),
    /// Operators' actions on a site's database: `resync`, `reverify`, `flags`.
    #[command(flatten)]
    Ops(crate::ops::OpsCommand),
    /// Manage secondaries' access keys and operators' admin tokens.
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: KeysAction,
    },
}

/// `primary`.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct PrimaryArgs {
    /// Address to listen on.
    #[arg(long, env = "GEO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The application's database (SQLite path or postgres://…).
    #[arg(long, env = "GEO_DATABASE_URL")]
    pub database_url: DatabaseUrl,
    /// The primary's blob store (`--blob-store` or `--blob-dir`).
    #[command(flatten)]
    pub store: StoreArgs,
    /// File of accepted keys: a secondary's `ACCESS_KEY SECRET [name]` per line, and operators'
    /// `admin SCOPE SHA256 [name]` (see `keys generate`).
    #[arg(long, env = "GEO_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// Accepted secondary keys as `ACCESS_KEY:SECRET`, comma-separated (prefer the file).
    #[arg(long, env = "GEO_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub keys: Vec<SecretArg>,
    /// The site's name (the `name` label of its metrics).
    #[arg(long, env = "GEO_NODE_NAME", default_value = "primary")]
    pub name: String,
    /// Clock leeway for tokens, in seconds.
    #[arg(long, env = "GEO_TOKEN_LEEWAY_SECS", default_value_t = crate::auth::DEFAULT_LEEWAY)]
    pub token_leeway_secs: i64,
    /// Do not run the verification workers (another process runs them).
    #[arg(long)]
    pub no_verify: bool,
    /// HTTP worker threads.
    #[arg(long, env = "GEO_HTTP_THREADS", default_value_t = 2)]
    pub http_threads: usize,
    /// Database connections.
    #[arg(long, env = "GEO_DB_POOL", default_value_t = 16)]
    pub db_pool: u32,
    /// HTTPS, the metrics listener and the server's limits.
    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerArgs,
    /// The verification workers' batch size, threads, interval and timeout.
    #[command(flatten, next_help_heading = "Tunables")]
    pub tuning: PrimaryTunables,
    /// Event pruning: retention bound, interval, batch size.
    #[command(flatten, next_help_heading = "Event pruning")]
    pub pruning: PruneTunables,
}

/// `secondary`.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct SecondaryArgs {
    /// The primary, the tracking database, the blob directory and the key.
    #[command(flatten)]
    pub link: LinkArgs,
    /// Keys file of the secondary's own server: admin tokens for GraphQL and the admin page
    /// (`keys generate --admin --append-to FILE`); site keys in it may read its status.
    #[arg(long, env = "GEO_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// Address of the secondary's own status and metrics server.
    #[arg(long, env = "GEO_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// The site's name (the `name` label of its metrics).
    #[arg(long, env = "GEO_NODE_NAME", default_value = "secondary")]
    pub name: String,
    /// Clock leeway for tokens on the status server, in seconds.
    #[arg(long, env = "GEO_TOKEN_LEEWAY_SECS", default_value_t = crate::auth::DEFAULT_LEEWAY)]
    pub token_leeway_secs: i64,
    /// Before running, reconcile with the primary as it is now: follow its identity from its
    /// event-id high-water mark, mark every synced file for reverification against its
    /// checksums, and run a full backfill (under the mass-removal guard). The way out of a halt.
    #[arg(long)]
    pub reconcile: bool,
    /// Download blobs into this site's object storage (GitLab's `sync_object_storage`). Off
    /// (the default), a secondary whose `--blob-store` is object storage leaves the copying to
    /// the storage provider's own replication: it only tracks each blob and verifies the
    /// object already in its store against the primary's checksum (a missing object is a
    /// failure, retried with backoff). A local store always downloads.
    #[arg(long, env = "GEO_SYNC_OBJECT_STORAGE")]
    pub sync_object_storage: bool,
    /// HTTPS, the metrics listener and the limits of the secondary's own server.
    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerArgs,
    /// The workers' capacities, batch sizes and timeouts.
    #[command(flatten, next_help_heading = "Tunables")]
    pub tuning: SecondaryTunables,
    /// Which partitions to replicate.
    #[command(flatten)]
    pub selective: SelectiveArgs,
}

/// Installs a `tracing` subscriber writing to stderr, filtered by `RUST_LOG` (default `info`).
/// Does nothing when one is installed already.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

impl NodeCommand {
    /// Runs the command. `primary` and `secondary` run until SIGINT or SIGTERM.
    pub fn run(self, app: &App) -> Result<ExitCode> {
        match self {
            NodeCommand::Primary(args) => run_primary(args, app),
            NodeCommand::Secondary(args) => run_secondary(args),
            NodeCommand::Status(args) => status::run_status(args),
            NodeCommand::Ops(cmd) => cmd.run(),
            NodeCommand::Keys { action } => action.run(),
        }
    }
}

fn wait_for_signal() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await
        }
    })?;
    tracing::info!("stopping");
    Ok(())
}

fn announce(server: &ServerHandle, role: &str) {
    // One line on stdout, so scripts and tests learn the port when listening on :0 (and one
    // for the metrics listener, when there is one).
    println!("geo-node {role} listening on {}", server.url());
    if let Some(m) = server.metrics_addr() {
        println!("geo-node {role} metrics on http://{m}/metrics");
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

/// Opens and migrates the primary database (running the application's setup hook first).
pub fn open_primary_db(url: &str, pool: u32, app: &App) -> Result<DbPool> {
    let db = DbPool::connect(url, pool).context("opening the primary database")?;
    if let Some(hook) = app.primary_setup {
        let mut conn = db.get()?;
        hook(&mut conn).map_err(|e| anyhow::anyhow!("application setup: {e}"))?;
    }
    let report = migrate(&db, Role::Primary)?;
    tracing::info!(applied = report.applied.len(), "primary migrations");
    Ok(db)
}

/// Opens and migrates a secondary's tracking database.
pub fn open_secondary_db(url: &str, pool: u32) -> Result<DbPool> {
    let db = DbPool::connect(url, pool).context("opening the tracking database")?;
    let report = migrate(&db, Role::Secondary)?;
    tracing::info!(applied = report.applied.len(), "secondary migrations");
    Ok(db)
}

/// Applies Geo's migrations for `role` to the database behind `db`.
fn migrate(db: &DbPool, role: Role) -> Result<MigrationReport> {
    Ok(db.migrate(role)?)
}

fn run_primary(args: PrimaryArgs, app: &App) -> Result<ExitCode> {
    let keys = load_keys(args.keys_file.as_deref(), &args.keys)?;
    if keys.is_empty() {
        bail!("no secondary keys: give --keys-file (see `keys generate --append-to`) or GEO_KEYS");
    }
    let options = args.server.serve_options(args.http_threads)?;
    let db = open_primary_db(&args.database_url, args.db_pool, app)?;
    let store = args.store.open()?.shared();
    let verifier = Arc::new(PrimaryVerifier::new(
        db.clone(),
        store.clone(),
        Env::system(),
        args.tuning.apply(PrimaryConfig::default()),
    ));
    let workers = if args.no_verify {
        None
    } else {
        Some(verifier.spawn()?)
    };
    let bulk = BulkWorker::spawn(db.clone(), Role::Primary, BULK_IDLE)?;
    let pruner = if args.pruning.no_prune {
        None
    } else {
        let config = args
            .pruning
            .apply(geo_diesel::primary::prune::PruneConfig::default());
        Some(geo_diesel::primary::prune::PruneWorker::spawn(
            db.clone(),
            Env::system(),
            config,
        )?)
    };
    let state = NodeState::new(args.name, keys)
        .with_leeway(args.token_leeway_secs)
        .with_primary(PrimaryService::direct(db, store, Some(verifier)));
    let state = args.server.apply_state(state);
    let server = ServerHandle::start_with(&args.listen, Arc::new(state), options)?;
    announce(&server, "primary");
    wait_for_signal()?;
    server.stop();
    bulk.stop();
    drop(pruner);
    drop(workers);
    Ok(ExitCode::SUCCESS)
}

fn run_secondary(args: SecondaryArgs) -> Result<ExitCode> {
    let options = args.server.serve_options(1)?;
    let creds = args.link.credentials()?;
    let tracking = args.link.tracking(16)?;
    let store = args.link.store()?;
    let source = Arc::new(args.link.source(creds.clone())?);
    let link = source.stats();
    let config = args
        .selective
        .apply(args.tuning.apply(SecondaryConfig::default()))
        .sync_object_storage(args.sync_object_storage);
    let secondary = Arc::new(Secondary::new(
        tracking,
        source.clone(),
        store.shared(),
        Env::system(),
        config,
    ));
    // The state first: it times the secondary's downloads from the first one.
    let mut keys = load_keys(args.keys_file.as_deref(), &[])?;
    keys.insert(creds);
    let bulk = BulkWorker::spawn(secondary.tracking().clone(), Role::Secondary, BULK_IDLE)?;
    let state = NodeState::new(args.name, keys)
        .with_leeway(args.token_leeway_secs)
        .with_secondary(SecondaryService::new(Arc::clone(&secondary), source).with_link(link));
    let state = args.server.apply_state(state);
    // Temporary files of interrupted downloads: all of them when no other `secondary` process
    // runs on this tracking database; otherwise (they may share the blob directory) only those
    // untouched for longer than a live download ever leaves its file (twice the read timeout,
    // and a lease period).
    let stale_after = if secondary.other_processes_running()? {
        (args.link.read_timeout() * 2).max(args.tuning.lease_period.0)
    } else {
        Duration::ZERO
    };
    let removed = store.remove_stale_temp_files(stale_after)?;
    if removed > 0 {
        tracing::info!(removed, "removed temporary files of interrupted downloads");
    }
    if args.reconcile {
        let r = secondary
            .reconcile()
            .context("reconciling with the primary")?;
        tracing::info!(
            identity = r.identity.as_deref().unwrap_or("none"),
            cursor = r.cursor,
            reverify = r.reverify,
            created = r.created,
            removed = r.removed,
            refused = r.refused.len(),
            "reconciled"
        );
    }
    let workers = secondary.spawn()?;
    let server = ServerHandle::start_with(&args.listen, Arc::new(state), options)?;
    announce(&server, "secondary");
    wait_for_signal()?;
    server.stop();
    bulk.stop();
    workers.stop();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Srv {
        #[command(flatten)]
        s: ServerArgs,
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key_or_neither() {
        let both = Srv::try_parse_from(["x", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
            .unwrap()
            .s;
        assert_eq!(both.tls_cert.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(both.tls_key.as_deref(), Some(Path::new("k.pem")));
        assert!(Srv::try_parse_from(["x"]).unwrap().s.tls_cert.is_none());
        for one in [["x", "--tls-cert", "c.pem"], ["x", "--tls-key", "k.pem"]] {
            let e = Srv::try_parse_from(one).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            let text = e.to_string();
            let missing = if one[1] == "--tls-cert" {
                "--tls-key"
            } else {
                "--tls-cert"
            };
            assert!(text.contains(missing), "{one:?}: {text}");
        }
    }

    #[test]
    fn bad_tls_files_fail_at_startup_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = tmp.path().join("cert.pem");
        std::fs::write(&cert, "nothing here\n").unwrap();
        let args = Srv::try_parse_from([
            "x",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .unwrap()
        .s;
        let e = args.serve_options(1).unwrap_err().to_string();
        assert!(e.contains("cert.pem"), "{e}");
    }
}
