//! The operator's CLI actions (`geo_node::ops`), run in-process against SQLite files migrated
//! with the `docs` test model: what each command changes in the database, its exit code, and
//! how clap refuses a bad command line.

mod common;

use std::process::ExitCode;

use clap::Parser;
use geo_diesel::DbPool;
use geo_diesel::admin::{self, RegistryFilter};
use geo_diesel::db::AsDbConn;
use geo_diesel::geo_core::{Replicable, ReplicationState as R, Role, VerificationState as V};
use geo_diesel::registry::Registry;
use geo_node::ops::{ActionArgs, FlagsAction, OpsCommand};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: OpsCommand,
}

fn doc() -> &'static geo_diesel::geo_core::ReplicableDescriptor {
    <common::Doc as Replicable>::DESCRIPTOR
}

/// A tracking database with `n` doc registry rows: row `i` tracks record `i`, state `i % 4`,
/// verification `i % 5`.
fn tracking(n: i64) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().join("tracking.sqlite3").display().to_string();
    let db = DbPool::connect(&url, 1).expect("pool");
    db.migrate(Role::Secondary).expect("migrate");
    let values: Vec<String> = (1..=n)
        .map(|i| format!("({i}, {i}, {}, {})", i % 4, i % 5))
        .collect();
    if values.is_empty() {
        return (dir, url);
    }
    db.get()
        .expect("conn")
        .db()
        .batch_execute(&format!(
            "INSERT INTO \"{}\" (id, \"{}\", state, verification_state) VALUES {}",
            doc().tables.registry,
            doc().tables.registry_model_id,
            values.join(", ")
        ))
        .expect("seed");
    (dir, url)
}

fn args(url: &str, id: Option<i64>, failed: bool, all: bool) -> ActionArgs {
    ActionArgs {
        replicable: common::doc_name().to_owned(),
        id,
        failed,
        all,
        database_url: url.parse().unwrap(),
    }
}

fn state(url: &str, model_id: i64) -> (R, V) {
    let db = DbPool::connect(url, 1).expect("pool");
    let r = Registry::of(doc())
        .get_by_model_id(&mut db.get().expect("conn"), model_id)
        .expect("get")
        .expect("row");
    (r.state, r.verification_state)
}

fn count(url: &str, replication_state: Option<R>, verification_state: Option<V>) -> i64 {
    let db = DbPool::connect(url, 1).expect("pool");
    Registry::of(doc())
        .count_matching(
            &mut db.get().expect("conn"),
            &RegistryFilter {
                replication_state,
                verification_state,
                ..RegistryFilter::default()
            },
        )
        .expect("count")
}

#[test]
fn resync_one_record_follows_the_rules() {
    let (_dir, url) = tracking(10);
    // Record 3 failed: pending now.
    let code = OpsCommand::Resync(args(&url, Some(3), false, false))
        .run()
        .expect("resync 3");
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(state(&url, 3).0, R::Pending);
    // Record 5 is started: left alone, still success.
    assert_eq!(state(&url, 5).0, R::Started);
    let code = OpsCommand::Resync(args(&url, Some(5), false, false))
        .run()
        .expect("resync 5");
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(state(&url, 5).0, R::Started);
    // No such record: exit 1.
    let code = OpsCommand::Resync(args(&url, Some(99), false, false))
        .run()
        .expect("resync 99");
    assert_eq!(code, ExitCode::FAILURE);
}

#[test]
fn resync_failed_and_all_run_a_bulk_job_to_the_end() {
    let (_dir, url) = tracking(2500);
    assert_eq!(count(&url, Some(R::Failed), None), 625);
    let code = OpsCommand::Resync(args(&url, None, true, false))
        .run()
        .expect("resync failed");
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(count(&url, Some(R::Failed), None), 0);
    let db = DbPool::connect(&url, 1).expect("pool");
    let jobs = admin::jobs(&mut db.get().expect("conn"), false).expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].processed, jobs[0].changed), (625, 625));
    assert!(jobs[0].finished_at.is_some());

    // Reverify all: every synced row not being verified becomes verification pending.
    let synced_not_started = (1..=2500).filter(|i| i % 4 == 2 && i % 5 != 1).count() as i64;
    let code = OpsCommand::Reverify(args(&url, None, false, true))
        .run()
        .expect("reverify all");
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(
        count(&url, Some(R::Synced), Some(V::Pending)),
        synced_not_started
    );
    // Resync all: every row not started is pending.
    OpsCommand::Resync(args(&url, None, false, true))
        .run()
        .expect("resync all");
    assert_eq!(count(&url, Some(R::Pending), None), 2500 - 625);
    assert_eq!(count(&url, Some(R::Started), None), 625);
}

#[test]
fn reverify_one_record_on_a_secondary() {
    let (_dir, url) = tracking(10);
    // Record 2: synced, verification succeeded.
    assert_eq!(state(&url, 2), (R::Synced, V::Succeeded));
    OpsCommand::Reverify(args(&url, Some(2), false, false))
        .run()
        .expect("reverify 2");
    assert_eq!(state(&url, 2), (R::Synced, V::Pending));
    // Record 4 is pending: nothing to do.
    OpsCommand::Reverify(args(&url, Some(4), false, false))
        .run()
        .expect("reverify 4");
    assert_eq!(state(&url, 4), (R::Pending, V::Disabled));
}

#[test]
fn unknown_types_and_unmigrated_databases_are_clear_errors() {
    let (_dir, url) = tracking(1);
    let mut a = args(&url, Some(1), false, false);
    a.replicable = "sprocket".into();
    let err = OpsCommand::Resync(a).run().expect_err("unknown type");
    let msg = err.to_string();
    assert!(msg.contains("sprocket") && msg.contains("doc"), "{msg}");

    let empty = tempfile::tempdir().expect("tempdir");
    let path = empty.path().join("empty.sqlite3").display().to_string();
    let err = OpsCommand::Resync(args(&path, Some(1), false, false))
        .run()
        .expect_err("no migrations");
    assert!(err.to_string().contains("no Geo migrations"), "{err}");
}

#[test]
fn resync_on_a_primary_database_is_refused_and_reverify_marks_the_checksum_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().join("primary.sqlite3").display().to_string();
    let db = DbPool::connect(&url, 2).expect("pool");
    {
        let mut conn = db.get().expect("conn");
        common::create_schema(&mut conn).expect("schema");
        db.migrate(Role::Primary).expect("migrate");
        conn.db()
            .batch_execute(
                "INSERT INTO docs (id, path, title) VALUES (1, 'a.bin', 'a'), (2, 'b.bin', 'b')",
            )
            .expect("docs");
    }
    let err = OpsCommand::Resync(args(&url, Some(1), false, false))
        .run()
        .expect_err("resync on a primary");
    assert!(
        err.to_string().contains("resync is for secondaries"),
        "{err}"
    );
    let code = OpsCommand::Reverify(args(&url, Some(1), false, false))
        .run()
        .expect("reverify");
    assert_eq!(code, ExitCode::SUCCESS);
    let r = admin::get_record(&mut db.get().expect("conn"), doc(), 1)
        .expect("get")
        .expect("doc 1");
    assert_eq!(r.verification_state, Some(V::Pending));
    let code = OpsCommand::Reverify(args(&url, Some(9), false, false))
        .run()
        .expect("reverify missing");
    assert_eq!(code, ExitCode::FAILURE);
    // Reverify all on the primary: both records' checksums pending.
    OpsCommand::Reverify(args(&url, None, false, true))
        .run()
        .expect("reverify all");
}

#[test]
fn flags_enable_disable_and_list() {
    let (_dir, url) = tracking(0);
    let run = |action| OpsCommand::Flags { action }.run().expect("flags");
    assert_eq!(
        run(FlagsAction::Disable {
            name: "geo_doc_replication".into(),
            database_url: url.parse().unwrap()
        }),
        ExitCode::SUCCESS
    );
    let db = DbPool::connect(&url, 1).expect("pool");
    let flags = admin::flags(&mut db.get().expect("conn")).expect("flags");
    let f = flags
        .iter()
        .find(|f| f.replicable == "doc")
        .expect("doc flag");
    assert!(!f.enabled && f.stored);
    run(FlagsAction::Enable {
        name: "doc".into(),
        database_url: url.parse().unwrap(),
    });
    let flags = admin::flags(&mut db.get().expect("conn")).expect("flags");
    assert!(
        flags
            .iter()
            .find(|f| f.replicable == "doc")
            .expect("doc")
            .enabled
    );
    run(FlagsAction::List {
        database_url: url.parse().unwrap(),
        json: true,
    });
    let err = OpsCommand::Flags {
        action: FlagsAction::Enable {
            name: "nope".into(),
            database_url: url.parse().unwrap(),
        },
    }
    .run()
    .expect_err("unknown flag");
    assert!(err.to_string().contains("geo_doc_replication"), "{err}");
}

#[test]
fn clap_wants_exactly_one_of_id_failed_all() {
    let base = ["x", "resync", "--type", "doc", "--database-url", "db"];
    let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
    assert!(parse(&[]).is_err(), "none given");
    assert!(parse(&["--id", "3", "--all"]).is_err(), "two given");
    assert!(parse(&["--failed", "--all"]).is_err(), "two given");
    match parse(&["--id", "3"]).expect("one").command {
        OpsCommand::Resync(a) => assert_eq!((a.id, a.failed, a.all), (Some(3), false, false)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Cli::try_parse_from(["x", "flags", "list", "--database-url", "db", "--json"])
            .expect("flags list")
            .command,
        OpsCommand::Flags {
            action: FlagsAction::List { json: true, .. }
        }
    ));
}
