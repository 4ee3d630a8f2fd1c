//! B6: log-cursor events per second ([`Secondary::cursor_pass`]) vs one set-based upsert.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use geo_diesel::AsDbConn;
use geo_diesel::geo_core::Backend;
use geo_diesel::registry;
use geo_diesel::secondary::{Secondary, SecondaryConfig};

use super::data::{
    exec, insert_series_sql, open, registry_counts, reset_secondary, secondary_with, widget,
};
use super::report::{Aim, BenchResult, Figure, Peer, PeerKind, PeerOutcome};
use super::{BenchId, BenchOptions};

/// B6: log-cursor passes until caught up with N `created` events.
pub(super) fn bench_cursor(opts: &BenchOptions, dir: &Path) -> Result<BenchResult> {
    let n = opts.sizes.b6_events;
    ensure!(n > 0, "B6 needs events");
    let sites = open(opts, dir, SecondaryConfig::default())?;
    let d = widget();
    let backend = sites.primary_db.backend();
    let payload = match backend {
        Backend::Sqlite => {
            "'{\"model_record_id\":' || x || '}', strftime('%Y-%m-%dT%H:%M:%fZ','now')"
        }
        Backend::Postgres => "jsonb_build_object('model_record_id', x), now()",
    };
    let t = Instant::now();
    exec(
        &sites.primary_db,
        &insert_series_sql(
            backend,
            "geo_events (replicable_name, event_name, model_record_id, payload, created_at)",
            &format!("'{}', 'created', x, {payload}", d.name),
            n,
        ),
    )?;
    let setup = t.elapsed().as_secs_f64();
    let secondaries: Vec<(usize, Secondary)> = opts
        .sizes
        .b6_batches
        .iter()
        .map(|&b| {
            (
                b,
                secondary_with(&sites, SecondaryConfig::default().cursor_batch(b)),
            )
        })
        .collect();
    let ids: Vec<i64> = (1..=n).collect();
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); secondaries.len()];
    let mut floor = Vec::new();
    for _ in 0..opts.repeat {
        for (i, (batch, s)) in secondaries.iter().enumerate() {
            reset_secondary(&sites)?;
            let mut applied = 0;
            let t = Instant::now();
            loop {
                let p = s.cursor_pass()?;
                applied += p.applied;
                if p.read < *batch {
                    break;
                }
            }
            ours[i].push(t.elapsed().as_secs_f64());
            let c = registry_counts(&sites)?;
            ensure!(
                applied == n as usize && c.pending == n,
                "the cursor applied {applied} events and left {} pending rows, expected {n}",
                c.pending
            );
        }
        reset_secondary(&sites)?;
        let t = Instant::now();
        {
            let mut conn = sites.secondary.tracking().get()?;
            conn.db().transaction::<_, anyhow::Error, _>(|c| {
                registry::Registry::of(d).upsert_pending(c, &ids)?;
                Ok(())
            })?;
        }
        floor.push(t.elapsed().as_secs_f64());
    }
    let fig = |label: String, samples: Vec<f64>| Figure {
        label,
        samples,
        items: n as f64,
        item_unit: "events",
        bytes: None,
    };
    Ok(BenchResult {
        id: BenchId::B6,
        what: "log cursor (cursor_pass until caught up)".to_string(),
        data: format!("{n} `created` events in geo_events"),
        ours: secondaries
            .iter()
            .zip(ours)
            .map(|((b, _), s)| fig(format!("cursor_pass, cursor_batch {b}"), s))
            .collect(),
        peers: vec![Peer {
            kind: PeerKind::Floor,
            name: "upsert_pending of the ids (one transaction)".to_string(),
            outcome: PeerOutcome::Measured(fig("upsert_pending".to_string(), floor)),
        }],
        // Issue aims: 50k/s on SQLite, 20k/s on PostgreSQL.
        aim: Aim::MinItemsPerSec(if backend == Backend::Postgres {
            20_000.0
        } else {
            50_000.0
        }),
        notes: vec![format!(
            "setup (bulk insert of {n} events) {setup:.1} s, not timed"
        )],
    })
}
