//! B5: backfill of registry rows ([`Secondary::backfill_all`]) vs one `INSERT … SELECT`.

use std::path::Path;
use std::time::Instant;

use super::data::ident;
use anyhow::{Result, ensure};
use geo_diesel::geo_core::Backend;
use geo_diesel::secondary::{Secondary, SecondaryConfig};

use super::data::{
    clear_tables_sql, exec, insert_series_sql, open, registry_counts, secondary_with, widget,
    without_events_sql,
};
use super::report::{Aim, BenchResult, Figure, Peer, PeerKind, PeerOutcome};
use super::{BenchId, BenchOptions};

/// B5: `Secondary::backfill_all` over a model table of N ids into an empty registry.
pub(super) fn bench_backfill(opts: &BenchOptions, dir: &Path) -> Result<BenchResult> {
    let n = opts.sizes.b5_rows;
    ensure!(n > 0, "B5 needs rows");
    let sites = open(opts, dir, SecondaryConfig::default())?;
    let d = widget();
    let backend = sites.primary_db.backend();
    let t = Instant::now();
    exec(
        &sites.primary_db,
        &without_events_sql(&insert_series_sql(
            backend,
            &format!(
                "{} ({}, {}, \"name\")",
                ident(d.tables.model),
                ident(d.tables.model_id),
                ident(d.tables.model_file)
            ),
            "x, 'widgets/' || x || '.bin', 'bench'",
            n,
        )),
    )?;
    let setup = t.elapsed().as_secs_f64();
    let registry_table = ident(d.tables.registry);
    let clear = clear_tables_sql(backend, std::slice::from_ref(&registry_table));
    let floor_sql = insert_series_sql(
        backend,
        &format!("{registry_table} ({})", ident(d.tables.registry_model_id)),
        "x",
        n,
    );
    let secondaries: Vec<(i64, Secondary)> = opts
        .sizes
        .b5_batches
        .iter()
        .map(|&b| {
            (
                b,
                secondary_with(&sites, SecondaryConfig::default().backfill_batch(b)),
            )
        })
        .collect();
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); secondaries.len()];
    let mut floor = Vec::new();
    for _ in 0..opts.repeat {
        for (i, (_, s)) in secondaries.iter().enumerate() {
            exec(s.tracking(), &clear)?;
            let t = Instant::now();
            let (created, removed) = s.backfill_all()?;
            ours[i].push(t.elapsed().as_secs_f64());
            ensure!(
                created == n as usize && removed == 0,
                "backfill created {created} and removed {removed} rows, expected {n} and 0"
            );
        }
        exec(sites.secondary.tracking(), &clear)?;
        let t = Instant::now();
        exec(sites.secondary.tracking(), &floor_sql)?;
        floor.push(t.elapsed().as_secs_f64());
        let c = registry_counts(&sites)?;
        ensure!(c.registry == n, "the floor inserted {} rows", c.registry);
    }
    let fig = |label: String, samples: Vec<f64>| Figure {
        label,
        samples,
        items: n as f64,
        item_unit: "rows",
        bytes: None,
    };
    Ok(BenchResult {
        id: BenchId::B5,
        what: "backfill of registry rows (Secondary::backfill_all, empty tracking database)"
            .to_string(),
        data: format!("{n} model ids on the primary"),
        ours: secondaries
            .iter()
            .zip(ours)
            .map(|((b, _), s)| fig(format!("backfill_all, backfill_batch {b}"), s))
            .collect(),
        peers: vec![Peer {
            kind: PeerKind::Floor,
            name: "INSERT … SELECT of the ids (one statement)".to_string(),
            outcome: PeerOutcome::Measured(fig("INSERT … SELECT".to_string(), floor)),
        }],
        // Issue aims: 3 s on SQLite, 8 s on PostgreSQL.
        aim: Aim::MaxSeconds(if backend == Backend::Postgres {
            8.0
        } else {
            3.0
        }),
        notes: vec![format!(
            "setup (bulk insert of {n} model rows) {setup:.1} s, not timed"
        )],
    })
}
