//! `widgets`: the example application's command line.
//!
//! `widgets demo` runs a primary and a secondary on this machine and replicates until every
//! record is synced and verified; `widgets migrations print|write` shows the SQL Geo applies.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use geo_diesel::geo_core::{Backend, Role};
use geo_diesel::migrations::{migration_plan, write_diesel_cli_migrations};
use geo_node::cli::DatabaseUrl;

#[derive(Parser, Debug)]
#[command(
    name = "widgets",
    version,
    about = "Geo for Rust example: widgets and gadgets replicated between sites"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Node commands: `primary`, `secondary`, `status`, `resync`, `reverify`, `flags`,
    /// `keys generate` (geo-node).
    #[command(flatten)]
    Node(Box<geo_node::cli::NodeCommand>),
    /// Create demo records with files on a primary's database and blob folder (for a primary
    /// running as its own process); every change publishes its event.
    Seed {
        /// The primary's database (a SQLite file path or postgres://…).
        #[arg(long, env = "GEO_DATABASE_URL")]
        database_url: DatabaseUrl,
        /// The primary's blob folder.
        #[arg(long, env = "GEO_BLOB_DIR")]
        blob_dir: PathBuf,
        /// Records to create.
        #[arg(long, default_value_t = 300)]
        count: usize,
        /// Random seed for the file contents.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run a primary and a secondary on this machine and replicate until converged.
    Demo {
        /// Records to create.
        #[arg(long, default_value_t = 300)]
        count: usize,
        /// Print the final status as JSON.
        #[arg(long)]
        json: bool,
        /// Keep the databases and files in this directory (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Give up (exit 1) when not converged after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// Run on PostgreSQL: a server URL; two databases are created there.
        #[arg(long, env = "GEO_DATABASE_URL")]
        database_url: Option<DatabaseUrl>,
    },
    /// Measure the runtime against peers (b3sum, sha256sum, rsync) run on the same data.
    Bench {
        /// Run only these benchmarks (comma-separated: B1,B2,B3,B5,B6,B7,B8).
        #[arg(long, value_delimiter = ',')]
        only: Vec<widgets::bench::BenchId>,
        /// Small sizes and one run: a smoke test in seconds, not a measurement.
        #[arg(long)]
        quick: bool,
        /// Runs of every measurement (the median is reported); default 3, 1 with --quick.
        #[arg(long)]
        repeat: Option<usize>,
        /// B1: number of files (default 8).
        #[arg(long)]
        b1_files: Option<usize>,
        /// B1: size of each file in MiB (default 128).
        #[arg(long)]
        b1_mib: Option<u64>,
        /// Threads for our verification and for b3sum (default: available cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Parent folder of the data (default: /dev/shm when it is tmpfs, else the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Run on PostgreSQL: a server URL; databases are created there.
        #[arg(long)]
        database_url: Option<DatabaseUrl>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show or write the migrations Geo applies.
    Migrations {
        #[command(subcommand)]
        action: MigrationsAction,
    },
}

#[derive(Subcommand, Debug)]
enum MigrationsAction {
    /// Print the SQL (framework first, then each replicable).
    Print {
        /// Database backend.
        #[arg(long, value_enum, default_value_t = BackendArg::Sqlite)]
        backend: BackendArg,
        /// Database role.
        #[arg(long, value_enum, default_value_t = RoleArg::Primary)]
        role: RoleArg,
        /// Print the `down` SQL instead of `up`.
        #[arg(long)]
        down: bool,
    },
    /// Write diesel_cli migration folders (`<version>_<name>/up.sql`, `down.sql`) into DIR.
    Write {
        /// Database backend.
        #[arg(long, value_enum, default_value_t = BackendArg::Sqlite)]
        backend: BackendArg,
        /// Database role.
        #[arg(long, value_enum, default_value_t = RoleArg::Primary)]
        role: RoleArg,
        /// Target directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Primary,
    Secondary,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Sqlite => Backend::Sqlite,
            BackendArg::Postgres => Backend::Postgres,
        }
    }
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Primary => Role::Primary,
            RoleArg::Secondary => Role::Secondary,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers log what they do (info); one-shot commands only warnings. RUST_LOG overrides.
    // The demo's updates race its own syncs on purpose (a sync that read a file just replaced
    // fails its checksum and is retried): its table says how that ended, so only errors show.
    let default = match cli.command {
        Command::Node(_) => "info",
        Command::Demo { .. } => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // Naming the models links them, so `geo_core::replicables()` sees both.
    let _ = (
        <widgets::Widget as geo_diesel::geo_core::Replicable>::DESCRIPTOR.name,
        <widgets::Gadget as geo_diesel::geo_core::Replicable>::DESCRIPTOR.name,
    );
    match cli.command {
        Command::Demo {
            count,
            json,
            dir,
            timeout_secs,
            database_url,
        } => {
            let opts = widgets::demo::DemoOptions {
                count,
                dir,
                json,
                timeout: Duration::from_secs(timeout_secs),
                database_url: database_url.map(|u| u.as_str().to_owned()),
                progress: !json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let report = widgets::demo::run(&opts)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&widgets::demo::render_json(&report))?
                );
            } else {
                print!("{}", widgets::demo::render_table(&report));
            }
            Ok(if report.converged {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Node(cmd) => (*cmd).run(
            &geo_node::cli::App::new().primary_setup(|c| Ok(widgets::app::create_app_schema(c)?)),
        ),
        Command::Seed {
            database_url,
            blob_dir,
            count,
            seed,
        } => {
            let r = widgets::demo::seed(&database_url, &blob_dir, count, seed)?;
            println!(
                "seeded: {} created, {} updated, {} deleted",
                r.created, r.updated, r.deleted
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            only,
            quick,
            repeat,
            b1_files,
            b1_mib,
            threads,
            dir,
            database_url,
            json,
        } => {
            use widgets::bench::{self, BenchOptions};
            let mut opts = if quick {
                BenchOptions::quick()
            } else {
                BenchOptions::full()
            };
            opts.only = only.into_iter().collect();
            opts.repeat = repeat.unwrap_or(opts.repeat);
            opts.sizes.b1_files = b1_files.unwrap_or(opts.sizes.b1_files);
            opts.sizes.b1_file_bytes = b1_mib.map_or(opts.sizes.b1_file_bytes, |m| m << 20);
            opts.threads = threads.unwrap_or(opts.threads);
            opts.dir = dir;
            opts.database_url = database_url.map(|u| u.as_str().to_owned());
            bench::run_and_print(&opts, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrations {
            action:
                MigrationsAction::Print {
                    backend,
                    role,
                    down,
                },
        } => {
            for m in migration_plan(backend.into(), role.into()) {
                println!("-- {} ({})", m.name, m.version);
                println!("{}\n", if down { &m.down } else { &m.up }.trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrations {
            action: MigrationsAction::Write { backend, role, dir },
        } => {
            for path in write_diesel_cli_migrations(&dir, backend.into(), role.into())? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
