//! B9: what capture by the database costs a writer. N single-row inserts through Diesel's DSL,
//! 1,000 per transaction, three ways on the same primary, interleaved within every repetition:
//!
//! - a plain table of the same shape with no triggers (the floor: the insert alone);
//! - `widgets` with its event triggers (`events = "triggers"`): the insert writes the event and
//!   the pending states row by itself;
//! - `widgets` with the triggers dropped and the two statements `publish_created` runs for an
//!   `events = "manual"` type ([`insert_event_if_enabled`] and [`mark_verification_pending`])
//!   called after each insert, as an application publishing by hand does.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use diesel::prelude::*;
use geo_diesel::db::DbConn;
use geo_diesel::geo_core::Backend;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::primary::triggers::event_triggers;
use geo_diesel::primary::{EventKind, insert_event_if_enabled, mark_verification_pending};
use geo_diesel::secondary::SecondaryConfig;
use geo_diesel::{AsDbConn, DbPool};

use super::data::{exec, ident, open, widget, without_events_sql};
use super::report::{Aim, BenchResult, Figure, Peer, PeerKind, PeerOutcome};
use super::{BenchId, BenchOptions};

diesel::table! {
    /// The floor's table: `widgets`' shape, no triggers.
    bench_plain_widgets (id) {
        id -> BigInt,
        file_path -> Text,
        name -> Text,
        tenant_id -> BigInt,
    }
}

/// Rows per transaction.
const PER_TRANSACTION: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Plain,
    Triggers,
    Manual,
}

fn plain_table_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "CREATE TABLE IF NOT EXISTS bench_plain_widgets (id INTEGER PRIMARY KEY AUTOINCREMENT \
             NOT NULL, file_path TEXT NOT NULL, name TEXT NOT NULL, tenant_id INTEGER NOT NULL DEFAULT 0)"
        }
        Backend::Postgres => {
            "CREATE TABLE IF NOT EXISTS bench_plain_widgets (id BIGSERIAL PRIMARY KEY, \
             file_path TEXT NOT NULL, name TEXT NOT NULL, tenant_id BIGINT NOT NULL DEFAULT 0)"
        }
    }
}

/// One run: `n` inserts the given way; returns the seconds taken.
fn insert_run(pool: &DbPool, way: Way, n: usize) -> Result<f64> {
    use crate::widgets::dsl as w;
    use bench_plain_widgets::dsl as p;
    let d = widget();
    let env = Env::system();
    let mut conn = pool.get()?;
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let rows = PER_TRANSACTION.min(n - done);
        macro_rules! chunk {
            ($c:expr) => {
                $c.transaction::<_, anyhow::Error, _>(|c| {
                    for i in done..done + rows {
                        let path = format!("b9/{:03}/{i:06}.bin", i % 97);
                        match way {
                            Way::Plain => {
                                diesel::insert_into(p::bench_plain_widgets)
                                    .values((p::file_path.eq(&path), p::name.eq("bench")))
                                    .execute(c)?;
                            }
                            Way::Triggers => {
                                diesel::insert_into(w::widgets)
                                    .values((w::file_path.eq(&path), w::name.eq("bench")))
                                    .execute(c)?;
                            }
                            Way::Manual => {
                                let id: i64 = diesel::insert_into(w::widgets)
                                    .values((w::file_path.eq(&path), w::name.eq("bench")))
                                    .returning(w::id)
                                    .get_result(c)?;
                                let payload = serde_json::json!({"model_record_id": id, "partition": 0});
                                insert_event_if_enabled(
                                    c,
                                    d,
                                    EventKind::Created,
                                    id,
                                    &payload,
                                    env.now(),
                                )?;
                                mark_verification_pending(c, d, id)?;
                            }
                        }
                    }
                    Ok(())
                })?
            };
        }
        match conn.db() {
            DbConn::Sqlite(c) => chunk!(c),
            DbConn::Pg(c) => chunk!(c),
        }
        done += rows;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Empties the tables a run writes (with the flag off, so deleting fires no events).
fn reset(pool: &DbPool) -> Result<()> {
    let d = widget();
    let states = d
        .tables
        .verification
        .map(|(t, _)| format!("DELETE FROM {};", ident(t)))
        .unwrap_or_default();
    exec(
        pool,
        &without_events_sql(&format!(
            "DELETE FROM {}; DELETE FROM bench_plain_widgets; DELETE FROM geo_events; {states}",
            ident(d.tables.model)
        )),
    )
}

fn count(pool: &DbPool, sql: &str) -> Result<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = pool.get()?;
    let rows: Vec<N> = match conn.db() {
        DbConn::Sqlite(c) => diesel::sql_query(sql).load(c)?,
        DbConn::Pg(c) => diesel::sql_query(sql).load(c)?,
    };
    Ok(rows.first().map_or(0, |r| r.n))
}

/// B9: plain inserts vs inserts captured by triggers vs inserts published by hand.
pub(super) fn bench_trigger_overhead(opts: &BenchOptions, dir: &Path) -> Result<BenchResult> {
    let n = opts.sizes.b9_inserts;
    ensure!(n > 0, "B9 needs inserts");
    let sites = open(opts, dir, SecondaryConfig::default())?;
    let pool = &sites.primary_db;
    let backend = pool.backend();
    let d = widget();
    let triggers = event_triggers(d, backend)
        .ok_or_else(|| anyhow::anyhow!("the widget type must use events = \"triggers\""))?;
    exec(pool, plain_table_sql(backend))?;
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    let events = || count(pool, "SELECT COUNT(*) AS n FROM geo_events");
    for _ in 0..opts.repeat {
        for (k, way) in [Way::Plain, Way::Triggers, Way::Manual]
            .into_iter()
            .enumerate()
        {
            reset(pool)?;
            if way == Way::Manual {
                exec(pool, &triggers.down)?;
            }
            let secs = insert_run(pool, way, n);
            if way == Way::Manual {
                exec(pool, &triggers.up)?;
            }
            samples[k].push(secs?);
            let expected = if way == Way::Plain { 0 } else { n as i64 };
            let got = events()?;
            ensure!(
                got == expected,
                "B9 {way:?}: {got} events after {n} inserts, expected {expected}"
            );
        }
    }
    reset(pool)?;
    let [plain, trig, manual] = samples;
    let fig = |label: &str, samples: Vec<f64>| Figure {
        label: label.to_string(),
        samples,
        items: n as f64,
        item_unit: "inserts",
        bytes: None,
    };
    let (plain, trig, manual) = (
        fig("plain table, no triggers", plain),
        fig("insert captured by triggers", trig),
        fig("insert + manual publish calls", manual),
    );
    let us = |f: &Figure| f.median() / n as f64 * 1e6;
    let notes = vec![
        format!(
            "µs per insert: plain {:.1}, triggers {:.1}, manual publish {:.1}",
            us(&plain),
            us(&trig),
            us(&manual)
        ),
        format!(
            "triggers / plain {:.2}×, manual / plain {:.2}×, triggers / manual {:.2}×",
            trig.median() / plain.median(),
            manual.median() / plain.median(),
            trig.median() / manual.median()
        ),
        format!(
            "one row per INSERT, {PER_TRANSACTION} per transaction; every run checked: \
             {n} events (none for the plain table)"
        ),
    ];
    Ok(BenchResult {
        id: BenchId::B9,
        what: "write overhead of capture by the database (events = \"triggers\")".to_string(),
        data: format!("{n} single-row inserts through Diesel's DSL"),
        ours: vec![trig],
        peers: vec![
            Peer {
                kind: PeerKind::Floor,
                name: "plain table, no triggers".to_string(),
                outcome: PeerOutcome::Measured(plain),
            },
            Peer {
                kind: PeerKind::Tool,
                name: "manual publish calls".to_string(),
                outcome: PeerOutcome::Measured(manual),
            },
        ],
        aim: Aim::NotSlowerThan("manual publish calls".to_string()),
        notes,
    })
}
