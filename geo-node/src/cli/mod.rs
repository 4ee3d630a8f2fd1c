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

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use geo_diesel::MigrationReport;
use geo_diesel::admin::BulkWorker;
use geo_diesel::db::{DbPool, PooledConn};
use geo_diesel::geo_core::Role;
use geo_diesel::geo_core::blob_store::LocalBlobStore;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};

use geo_diesel::geo_core::status::ReplicableStatuses;

use crate::api::NodeStatus;
use crate::auth::Credentials;
use crate::client::{HttpConfig, NodeClient};
use crate::server::{NodeState, PrimaryService, SecondaryService, ServerHandle};

mod keys;
mod link;
mod secret;
mod tunables;

pub use keys::{KeysAction, load_keys};
pub use link::{ClientTlsArgs, LinkArgs};
pub use secret::{DatabaseUrl, SecretArg};
pub use tunables::{PrimaryTunables, SecondaryTunables, Span};

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
    /// The primary's blob store directory.
    #[arg(long, env = "GEO_BLOB_DIR")]
    pub blob_dir: PathBuf,
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
    /// The verification workers' batch size, threads, interval and timeout.
    #[command(flatten, next_help_heading = "Tunables")]
    pub tuning: PrimaryTunables,
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
    /// The workers' capacities, batch sizes and timeouts.
    #[command(flatten, next_help_heading = "Tunables")]
    pub tuning: SecondaryTunables,
}

/// `status`.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct StatusArgs {
    /// The site's base URL.
    #[arg(long, env = "GEO_NODE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An access key the site accepts.
    #[arg(long, env = "GEO_ACCESS_KEY")]
    pub access_key: String,
    /// Its secret (prefer the environment variable).
    #[arg(long, env = "GEO_SECRET", hide_env_values = true)]
    pub secret: SecretArg,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
    /// How the site is verified.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
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
            NodeCommand::Status(args) => run_status(args),
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
    // One line on stdout, so scripts and tests learn the port when listening on :0.
    println!("geo-node {role} listening on {}", server.url());
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
    let db = open_primary_db(&args.database_url, args.db_pool, app)?;
    let store = Arc::new(
        LocalBlobStore::new(&args.blob_dir)
            .with_context(|| format!("opening the blob store {}", args.blob_dir.display()))?,
    );
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
    let state = NodeState::new(args.name, keys)
        .with_leeway(args.token_leeway_secs)
        .with_primary(PrimaryService::direct(db, store, Some(verifier)));
    let server = ServerHandle::start(&args.listen, Arc::new(state), args.http_threads)?;
    announce(&server, "primary");
    wait_for_signal()?;
    server.stop();
    bulk.stop();
    drop(workers);
    Ok(ExitCode::SUCCESS)
}

fn run_secondary(args: SecondaryArgs) -> Result<ExitCode> {
    let creds = args.link.credentials()?;
    let tracking = args.link.tracking(16)?;
    let store = args.link.store()?;
    let source = Arc::new(args.link.source(creds.clone())?);
    let link = source.stats();
    let config = args.tuning.apply(SecondaryConfig::default());
    let secondary = Arc::new(Secondary::new(
        tracking,
        source.clone(),
        store.clone(),
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
    let server = ServerHandle::start(&args.listen, Arc::new(state), 1)?;
    announce(&server, "secondary");
    wait_for_signal()?;
    server.stop();
    bulk.stop();
    workers.stop();
    Ok(ExitCode::SUCCESS)
}

fn run_status(args: StatusArgs) -> Result<ExitCode> {
    let creds = Credentials::new(&args.access_key, args.secret.expose())
        .context("--access-key/--secret (GEO_ACCESS_KEY/GEO_SECRET)")?;
    let client = NodeClient::try_new(args.tls.apply(HttpConfig::new(&args.url, creds)))
        .with_context(|| format!("--url {}", args.url))?;
    let status = client.status().context("asking the site's status")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render_status(&status));
    }
    Ok(if status.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A status as a short table per role: the event log position, then every per-type field that
/// applies, by name.
pub fn render_status(status: &NodeStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} ({}): {}", status.name, status.role, status.health);
    let show = |v: Option<i64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
    let mut section = |role: &str, lines: Vec<(&str, String)>, types: &ReplicableStatuses| {
        let _ = writeln!(out, "{role}:");
        for (k, v) in lines {
            let _ = writeln!(out, "  {k}: {v}");
        }
        let mut fields: Vec<(String, serde_json::Value)> =
            types.fields().filter(|(_, v)| !v.is_null()).collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in fields {
            let _ = writeln!(out, "  {k}: {v}");
        }
    };
    if let Some(p) = &status.primary {
        let mut lines = Vec::new();
        if let Some(last) = p.last_event_id {
            lines.push(("last_event_id", show(last)));
        }
        section("primary", lines, &p.replicables);
    }
    if let Some(s) = &status.secondary {
        let mut lines = vec![("last_event_id", show(s.last_event_id))];
        if let Some(c) = &s.cursor {
            lines.push(("cursor_last_event_id", c.cursor_last_event_id.to_string()));
            lines.push(("open_gaps_count", c.open_gaps_count.to_string()));
        }
        lines.push((
            "cursor_skipped_events_count",
            s.cursor_skipped_events_count.to_string(),
        ));
        section("secondary", lines, &s.replicables);
    }
    if !status.replicables.is_empty() {
        let _ = writeln!(out, "replicables: {}", status.replicables.join(", "));
    }
    out
}
