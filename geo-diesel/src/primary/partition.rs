//! Selective sync on the primary's side: the model ids of a range whose partition key
//! (`#[replicable(partition)]`) is among a secondary's selection, for the backfill of a
//! secondary with `--selective-sync` ([`geo_core::selective`]).

use std::collections::BTreeSet;

use geo_core::ReplicableDescriptor;

use super::{PrimaryError, q};
use crate::db::AsDbConn;
use crate::sql::{IdRow, Sql};

/// The model ids in `[from, to]` whose partition key is one of `partitions`, ascending. A
/// record whose partition is `NULL` is in no partition and never listed. A type without a
/// partition field has nothing to filter on: every id of the range is listed
/// ([`super::model_ids`]).
///
/// The keys are bound as one parameter (`json_each` on SQLite, `unnest` on PostgreSQL), so a
/// selection of any size is one statement.
pub fn model_ids_in_partitions(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    from: i64,
    to: i64,
    partitions: &BTreeSet<i64>,
) -> Result<Vec<i64>, PrimaryError> {
    let Some(column) = d.tables.partition else {
        return super::model_ids(conn, d, from, to);
    };
    let id = d.tables.model_id;
    let keys: Vec<i64> = partitions.iter().copied().collect();
    let mut sql = Sql::new();
    sql.push("SELECT CAST(")
        .ident(id)
        .push(" AS BIGINT) AS id FROM ")
        .ident(d.tables.model)
        .push(" WHERE ")
        .ident(id)
        .push(" BETWEEN ")
        .bind_i64(from)
        .push(" AND ")
        .bind_i64(to)
        .push(" AND ")
        .ident(column)
        .push(" IN (")
        .id_set(&keys)
        .push(") ORDER BY ")
        .ident(id);
    let rows: Vec<IdRow> = sql
        .load(conn)
        .map_err(q("reading model ids of selected partitions", d))?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}
